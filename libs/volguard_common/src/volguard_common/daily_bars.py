"""The one reader of daily NIFTY and India VIX bars (`market.daily_bars`, owned by market_data).

market_data writes the table (file imports, the simulator's seed); analytics reads it for realised
vol, GARCH and percentiles. Both read through this function so they see the same rows: bars strictly
before a day (what is known when that day's session opens), the most recent `limit` of them, oldest
first.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from volguard_common import db

DAILY_BARS_SQL = """
SELECT trade_date, open::float8 AS open, high::float8 AS high, low::float8 AS low,
       close::float8 AS close, volume, source
FROM market.daily_bars
WHERE symbol = $1 AND ($2::date IS NULL OR trade_date < $2::date)
ORDER BY trade_date DESC
LIMIT $3
"""

_PRICE_COLUMNS = ("open", "high", "low", "close")


async def read_daily_bars(
    pool: db.Pool,
    symbol: str,
    *,
    before: date | None = None,
    limit: int | None = None,
    with_source: bool = False,
) -> pd.DataFrame:
    """Daily bars of `symbol` dated strictly before `before` (all of them when None), the last `limit`
    of them, oldest first.

    Indexed by a DatetimeIndex named `date` (as `parse_daily_csv` returns); columns open, high, low,
    close (float64) and volume (float64, NaN where unknown — India VIX has none); with `with_source`
    also source (str, who wrote the row: an import, the simulator's seed). An empty frame when the
    table holds nothing for the symbol.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    async with pool.acquire() as conn:
        rows = list(reversed(await conn.fetch(DAILY_BARS_SQL, symbol, before, limit)))
    columns: dict[str, Any] = {
        name: np.array([row[name] for row in rows], dtype=np.float64) for name in _PRICE_COLUMNS
    }
    columns["volume"] = np.array(
        [np.nan if row["volume"] is None else float(row["volume"]) for row in rows], dtype=np.float64
    )
    if with_source:
        columns["source"] = np.array([row["source"] for row in rows], dtype=object)
    index = pd.DatetimeIndex(pd.to_datetime([row["trade_date"] for row in rows]), name="date")
    return pd.DataFrame(columns, index=index)
