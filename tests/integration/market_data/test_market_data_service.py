"""market_data in-process on the simulated market: history seeded, md.* flowing, chains sane."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import clock, events
from volguard_common.bus import BusConfig
from volguard_common.quant import iv
from volguard_common.settings import Settings
from volguard_market_data.app import SPEC

START = datetime(2026, 1, 13, 9, 15, tzinfo=clock.IST)


async def _chains(redis: Redis, key: str, want: int) -> list[events.ChainSnapshot] | None:
    entries = await redis.xrange(key, count=want)
    if len(entries) < want:
        return None
    return [events.parse_event(fields[b"event"]) for _, fields in entries]  # type: ignore[misc]


async def test_simulated_market_seeds_history_and_publishes_sane_chains(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    # A first start: a database with no history, which the service seeds.
    sim = settings.model_copy(
        update={
            "feed": "sim",
            "sim_start": START,
            "speed": 0.0,
            "sim_seed": 11,
            "database_url": fresh_database_url,
        }
    )
    config = BusConfig.from_settings(sim)
    async with running_service(SPEC, sim, redis) as ctx:
        chains = await eventually(lambda: _chains(redis, config.key("md.chain"), 21), what="three instants")
        assert await redis.xlen(config.key("md.ticks")) >= 3
        assert await redis.xlen(config.key("md.status")) >= 1
        seeded = await ctx.pool.fetch(
            "select symbol, count(*) as days, max(trade_date) as last from market.daily_bars group by symbol"
        )
    by_symbol = {r["symbol"]: r for r in seeded}
    assert set(by_symbol) == {"NIFTY", "INDIAVIX", "NIFTYATMIV"}
    # The simulated market's 30-day ATM IV history: its VIX history read as one (VIX/100 by construction).
    assert by_symbol["NIFTYATMIV"]["days"] == by_symbol["INDIAVIX"]["days"]
    assert by_symbol["NIFTY"]["days"] > 480  # two years of trading days
    assert by_symbol["NIFTY"]["last"] == clock.previous_trading_day(START.date())

    first_instant = [c for c in chains if c.ts_event == chains[0].ts_event]
    assert len(first_instant) >= 6
    assert all(c.expiries_in_set == len(first_instant) for c in first_instant)
    for chain in first_instant:
        _assert_no_arbitrage_and_recoverable_vols(chain)


def _assert_no_arbitrage_and_recoverable_vols(chain: events.ChainSnapshot) -> None:
    strike = chain.strike
    mid = (chain.call_bid + chain.call_ask) / 2  # NaN where a side is missing
    quoted = np.isfinite(mid)
    k, c = strike[quoted], mid[quoted]
    tick = chain.tick_size
    # Mids are model prices rounded to the tick: monotone and convex within a tick's rounding.
    assert (np.diff(c) <= tick).all()
    # Convex: slopes rise with strike (strikes need not be evenly spaced where wings are missing).
    slopes = np.diff(c) / np.diff(k)
    assert (np.diff(slopes) >= -2 * tick / np.diff(k).min()).all()
    assert chain.forward is not None
    assert (c <= chain.forward + tick).all()
    t = (clock.expiry_cutoff(chain.expiry) - chain.ts_event).total_seconds() / (365 * 86400)
    discount = np.exp(-Settings().risk_free_rate * t)
    vols = iv.implied_vol(c, chain.forward, k, t, True, discount)
    # Out-of-the-money calls with real premium: an in-the-money quote at intrinsic (expiry day) has no
    # identifiable vol, and the solver rightly says so.
    otm = (k >= chain.forward) & (np.log(k / chain.forward) < 0.05) & (c >= 1.0)
    assert otm.sum() >= 3
    assert np.isfinite(vols[otm]).all()
    assert ((vols[otm] > 0.05) & (vols[otm] < 0.6)).all()
