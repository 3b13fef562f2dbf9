"""Daily NIFTY, India VIX and NIFTY ATM IV history in `market.daily_bars`: file imports, the simulator's
seed, reads.

NIFTY ATM IV (symbol NIFTYATMIV) is daily OHLC of the at-the-money implied vol in percent, as
`nifty_atm_iv_daily.csv`-style downloads give it. It is market data like the others; analytics
copies it into its own ATM IV history (`analytics.atm_iv_daily`), next to the closes it measures.

Imports are idempotent upserts keyed by (symbol, trade_date): importing the same file twice changes
nothing the second time and says so (0 new, N unchanged); a corrected value in a later download
updates the row and is counted as updated. Rows the parser rejects are reported with their file line
numbers and reasons; the good rows of the same file are still imported, because one broken line in a
year of history should be visible, not fatal.

Everyone reads the table through `volguard_common.daily_bars.read_daily_bars`, the one reader.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from volguard_common import db
from volguard_common.file_rows import BadRow
from volguard_market_data.history_files import parse_daily_csv

NIFTY = "NIFTY"
INDIAVIX = "INDIAVIX"
NIFTY_ATM_IV = "NIFTYATMIV"
SYMBOLS: tuple[str, ...] = (NIFTY, INDIAVIX, NIFTY_ATM_IV)

_PRICE_COLUMNS = ("open", "high", "low", "close")
# NSE's index download calls the day's volume "Shares Traded"; hand-made files say "Volume".
_VOLUME_COLUMNS = ("shares_traded", "volume")
# India VIX has lived between ~8 and ~90 since it was launched; NIFTY has been above 1,000 since
# 1996. A close between the two bands is neither, and guessing would put one series inside the other.
_VIX_MAX_CLOSE = 150.0
_NIFTY_MIN_CLOSE = 1_000.0

_UPSERT_SQL = """
INSERT INTO market.daily_bars AS bars (symbol, trade_date, open, high, low, close, volume, source)
SELECT $1::text, d, o, h, l, c, v, $8::text
FROM unnest($2::date[], $3::numeric[], $4::numeric[], $5::numeric[], $6::numeric[], $7::bigint[])
    AS rows (d, o, h, l, c, v)
ON CONFLICT (symbol, trade_date) DO UPDATE
SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, source = excluded.source, imported_at = now()
WHERE (bars.open, bars.high, bars.low, bars.close, bars.volume)
    IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close, excluded.volume)
RETURNING (xmax = 0) AS inserted
"""


class SymbolInferenceError(ValueError):
    """The file does not say clearly whether it holds NIFTY or India VIX; pass the symbol explicitly."""


class DailyBar(Protocol):
    """What `write_daily_bars` needs of a bar (the simulator's seed bars have these attributes)."""

    @property
    def symbol(self) -> str: ...
    @property
    def trade_date(self) -> date: ...
    @property
    def open(self) -> float | Decimal: ...
    @property
    def high(self) -> float | Decimal: ...
    @property
    def low(self) -> float | Decimal: ...
    @property
    def close(self) -> float | Decimal: ...
    @property
    def volume(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    inserted: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What one file import did: counts of new, updated and unchanged days, and every rejected line."""

    path: Path
    symbol: str
    source: str
    inserted: int
    updated: int
    unchanged: int
    bad_rows: tuple[BadRow, ...]
    first_date: date | None
    last_date: date | None

    @property
    def rows(self) -> int:
        """Good rows in the file (each one inserted, updated or unchanged)."""
        return self.inserted + self.updated + self.unchanged

    @property
    def ok(self) -> bool:
        return not self.bad_rows


def _check_symbol(symbol: str) -> str:
    normalised = symbol.strip().upper().replace(" ", "")
    if normalised == "INDIA_VIX":
        normalised = INDIAVIX
    if normalised in ("NIFTY_ATM_IV", "ATMIV", "ATM_IV"):
        normalised = NIFTY_ATM_IV
    if normalised not in SYMBOLS:
        raise ValueError(f"unknown symbol {symbol!r}; known: {', '.join(SYMBOLS)}")
    return normalised


def _symbol_from_name(path: Path) -> str | None:
    name = re.sub(r"[^a-z0-9]+", "", path.name.lower())
    if "atmiv" in name:
        return NIFTY_ATM_IV
    if "vix" in name:
        return INDIAVIX
    if "nifty" in name:
        return NIFTY
    return None


def _symbol_from_content(frame: pd.DataFrame) -> str | None:
    if any(column in frame.columns for column in _VOLUME_COLUMNS):
        # Index downloads carry traded volume; the VIX download never does.
        return NIFTY
    if frame.empty:
        return None
    median_close = float(frame["close"].median())
    if median_close >= _NIFTY_MIN_CLOSE:
        return NIFTY
    if median_close <= _VIX_MAX_CLOSE:
        return INDIAVIX
    return None


def infer_symbol(path: Path, frame: pd.DataFrame) -> str:
    """NIFTY or INDIAVIX from the file name and the content; they must agree when both speak."""
    by_name = _symbol_from_name(path)
    by_content = _symbol_from_content(frame)
    if by_name == NIFTY_ATM_IV and by_content == INDIAVIX:
        # An implied vol in percent looks like India VIX (which is one); the name decides.
        by_content = NIFTY_ATM_IV
    if by_name is not None and by_content is not None and by_name != by_content:
        raise SymbolInferenceError(
            f"{path.name}: the file name says {by_name} but the content looks like {by_content}; "
            "pass the symbol explicitly if the name is wrong"
        )
    symbol = by_content or by_name
    if symbol is None:
        raise SymbolInferenceError(
            f"{path.name}: cannot tell whether this is NIFTY or INDIAVIX history; pass the symbol explicitly"
        )
    return symbol


def _decimal(value: float | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        return value
    # repr is the shortest string that round-trips, so 25951.5 is stored as 25951.5, not 25951.4999...
    return Decimal(repr(float(value)))


def _volumes(frame: pd.DataFrame) -> list[int | None]:
    column = next((name for name in _VOLUME_COLUMNS if name in frame.columns), None)
    if column is None:
        return [None] * len(frame)
    values = frame[column].to_numpy(dtype=np.float64)
    out: list[int | None] = []
    for day, value in zip(frame.index, values, strict=True):
        if value < 0 or value != np.floor(value):
            raise ValueError(f"{column} on {day.date()} is {value}, not a whole non-negative number")
        out.append(int(value))
    return out


async def _upsert(
    conn: db.Connection,
    symbol: str,
    source: str,
    days: Sequence[date],
    prices: Sequence[Sequence[Decimal]],
    volumes: Sequence[int | None],
) -> UpsertCounts:
    if not days:
        return UpsertCounts(0, 0, 0)
    opens, highs, lows, closes = (list(column) for column in zip(*prices, strict=True))
    rows = await conn.fetch(
        _UPSERT_SQL, symbol, list(days), opens, highs, lows, closes, list(volumes), source
    )
    inserted = sum(1 for row in rows if row["inserted"])
    updated = len(rows) - inserted
    return UpsertCounts(inserted, updated, len(days) - len(rows))


async def import_daily_bars(pool: db.Pool, path: Path | str, symbol: str | None = None) -> ImportReport:
    """Parse an NSE (or ISO-date) daily CSV and upsert its good rows into `market.daily_bars`.

    The symbol is inferred from the file (see `infer_symbol`) unless given. Raises ValueError when
    the file has no header, no Date column or lacks one of open/high/low/close; rows the parser
    rejects are not an exception but `bad_rows` in the report.
    """
    path = Path(path)
    parsed = await asyncio.to_thread(parse_daily_csv, path)
    frame = parsed.frame
    missing = [name for name in _PRICE_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: no {', '.join(missing)} column(s); found {list(frame.columns)}")
    resolved = _check_symbol(symbol) if symbol is not None else infer_symbol(path, frame)
    source = f"nse-csv:{path.name}"
    days = [timestamp.date() for timestamp in frame.index]
    prices = [
        [_decimal(value) for value in row]
        for row in frame[list(_PRICE_COLUMNS)].itertuples(index=False, name=None)
    ]
    volumes = _volumes(frame)
    async with pool.acquire() as conn, conn.transaction():
        counts = await _upsert(conn, resolved, source, days, prices, volumes)
    return ImportReport(
        path=path,
        symbol=resolved,
        source=source,
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        bad_rows=tuple(parsed.bad_rows),
        first_date=days[0] if days else None,
        last_date=days[-1] if days else None,
    )


async def write_daily_bars(pool: db.Pool, bars: Iterable[DailyBar], source: str) -> UpsertCounts:
    """Upsert bars (any objects with symbol, trade_date, open, high, low, close, volume) in one transaction.

    The simulator seeds its history this way; the same seed written twice changes nothing.
    """
    grouped: dict[str, dict[date, tuple[list[Decimal], int | None]]] = {}
    for bar in bars:
        symbol = _check_symbol(bar.symbol)
        by_day = grouped.setdefault(symbol, {})
        if bar.trade_date in by_day:
            # Two different bars for one day would make the upsert's outcome depend on row order.
            raise ValueError(f"two bars for {symbol} on {bar.trade_date.isoformat()}")
        prices = [_decimal(bar.open), _decimal(bar.high), _decimal(bar.low), _decimal(bar.close)]
        by_day[bar.trade_date] = (prices, bar.volume)
    inserted = updated = unchanged = 0
    async with pool.acquire() as conn, conn.transaction():
        for symbol, by_day in grouped.items():
            days = sorted(by_day)
            counts = await _upsert(
                conn,
                symbol,
                source,
                days,
                [by_day[day][0] for day in days],
                [by_day[day][1] for day in days],
            )
            inserted += counts.inserted
            updated += counts.updated
            unchanged += counts.unchanged
    return UpsertCounts(inserted, updated, unchanged)
