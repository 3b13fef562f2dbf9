"""A fresh stack knows its ATM IV percentile and rank from the first VolSnapshot (issue 14): market_data
seeds the simulated market's history, its 30-day ATM IV included, and analytics seeds its own ATM IV
history from it before the first snapshot."""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_analytics.app import SPEC as ANALYTICS
from volguard_common import clock, events
from volguard_common.bus import BusConfig
from volguard_common.settings import Settings
from volguard_market_data.app import SPEC as MARKET_DATA

START = datetime(2026, 12, 2, 9, 15, tzinfo=clock.IST)


async def _first(redis: Redis, key: str) -> bytes | None:
    entries = await redis.xrange(key, count=1)
    return entries[0][1][b"event"] if entries else None


async def test_first_vol_snapshot_of_a_fresh_stack_has_atm_iv_percentile_and_rank(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    fresh = settings.model_copy(
        update={
            "feed": "sim",
            "sim_start": START,
            "speed": 0.0,
            "sim_seed": 5,
            "database_url": fresh_database_url,
        }
    )
    config = BusConfig.from_settings(fresh)
    async with (
        running_service(MARKET_DATA, fresh, redis),
        running_service(ANALYTICS, fresh, redis) as analytics,
    ):
        payload = await eventually(lambda: _first(redis, config.key("an.vol")), what="the first VolSnapshot")
        seeded = await analytics.pool.fetch(
            "select source, count(*) as days from analytics.atm_iv_daily group by source"
        )
    snapshot = events.parse_event(payload)
    assert isinstance(snapshot, events.VolSnapshot)
    percentiles = snapshot.percentiles
    assert percentiles.atm_iv_30d is not None
    assert percentiles.atm_iv_percentile is not None
    assert percentiles.atm_iv_rank is not None
    assert percentiles.vix_percentile is not None
    # Its history is the simulated market's, copied into analytics' own table with where it came from.
    by_source = {r["source"]: r["days"] for r in seeded}
    assert by_source.get("market.daily_bars:simulator:5", 0) > 400
    # The simulator's 30-day ATM vol is VIX/100: the snapshot's 30-day ATM IV sits by today's VIX.
    assert snapshot.vix is not None
    assert abs(percentiles.atm_iv_30d - snapshot.vix / 100.0) < 0.01
