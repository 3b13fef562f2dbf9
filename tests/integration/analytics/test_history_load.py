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


async def test_atm_iv_copied_from_market_data_follows_a_later_import_but_a_measured_close_stays(
    pool: db.Pool,
) -> None:
    nifty = [
        Bar("NIFTY", date(2026, 1, 2), 23900.0, 24010.0, 23880.0, 24000.0, 900),
        Bar("NIFTY", date(2026, 1, 5), 24000.0, 24100.0, 23950.0, 24050.25, 1000),
    ]
    atm_iv = [
        Bar("NIFTYATMIV", date(2026, 1, 2), 13.0, 13.5, 12.9, 13.2, None),
        Bar("NIFTYATMIV", date(2026, 1, 5), 13.2, 14.0, 13.1, 13.8, None),
    ]
    await write_daily_bars(pool, [*nifty, *atm_iv], "simulator:5")
    # Analytics measured 5 January itself: its own close.
    await pool.execute(
        "insert into analytics.atm_iv_daily (trade_date, atm_iv, source) values ($1, 0.125, 'analytics')",
        date(2026, 1, 5),
    )
    first = await load_history(pool, date(2026, 1, 6))
    assert first is not None
    assert first.atm_iv_close is not None
    assert first.atm_iv_close.tolist() == pytest.approx([0.132, 0.125])

    # A later import of measured history replaces the copied day, never analytics' own close.
    await write_daily_bars(
        pool,
        [
            Bar("NIFTYATMIV", date(2026, 1, 2), 12.0, 12.5, 11.9, 12.1, None),
            Bar("NIFTYATMIV", date(2026, 1, 5), 12.1, 12.9, 12.0, 12.6, None),
        ],
        "import:nifty_atm_iv_daily.csv",
    )
    second = await load_history(pool, date(2026, 1, 6))
    assert second is not None
    assert second.atm_iv_close is not None
    assert second.atm_iv_close.tolist() == pytest.approx([0.121, 0.125])
    sources = dict(await pool.fetch("select trade_date, source from analytics.atm_iv_daily"))
    assert sources == {
        date(2026, 1, 2): "market.daily_bars:import:nifty_atm_iv_daily.csv",
        date(2026, 1, 5): "analytics",
    }
