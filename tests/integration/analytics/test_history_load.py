"""Analytics reads daily history through the one daily-bars reader (real Postgres)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date

import pytest

from volguard_analytics.service import load_history
from volguard_common import db
from volguard_market_data.history import write_daily_bars


@dataclass(frozen=True)
class Bar:
    symbol: str
    trade_date: date
    open: float
    high: float
    low: float
    close: float
    volume: int | None


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[db.Pool]:
    created = await db.create_pool(fresh_database_url, min_size=1, max_size=2)
    await db.ensure_core_schema(created)
    await db.apply_migrations(created, "market", db.load_migrations("volguard_market_data"))
    await db.apply_migrations(created, "analytics", db.load_migrations("volguard_analytics"))
    yield created
    await created.close()


async def test_history_is_what_was_known_before_the_session(pool: db.Pool) -> None:
    assert await load_history(pool, date(2026, 1, 7)) is None  # nothing imported yet
    await write_daily_bars(
        pool,
        [
            Bar("NIFTY", date(2026, 1, 2), 23900.0, 24010.0, 23880.0, 24000.0, 900),
            Bar("NIFTY", date(2026, 1, 5), 24000.0, 24100.0, 23950.0, 24050.25, 1000),
            Bar("NIFTY", date(2026, 1, 6), 24050.0, 24060.0, 23900.0, 23920.5, None),
            Bar("INDIAVIX", date(2026, 1, 5), 13.1, 13.9, 12.8, 13.4, None),
            Bar("INDIAVIX", date(2026, 1, 6), 13.4, 14.2, 13.3, 14.05, None),
        ],
        "test",
    )
    history = await load_history(pool, date(2026, 1, 6))
    assert history is not None
    # The day's own bar is not known when its session runs.
    assert history.index_bars["trade_date"].tolist() == [date(2026, 1, 2), date(2026, 1, 5)]
    assert history.index_bars["close"].tolist() == [24000.0, 24050.25]
    assert history.vix_close is not None
    assert history.vix_close.tolist() == [13.4]
