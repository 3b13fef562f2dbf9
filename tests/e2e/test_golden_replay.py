"""Golden test (issue 5): a recorded short simulated session, replayed twice through analytics,
gives identical an.vol payloads, byte for byte."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_analytics.app import SPEC as ANALYTICS
from volguard_common import clock, events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings
from volguard_market_data.adapters.replay_source import ReplaySource
from volguard_market_data.adapters.sim_source import SimSource
from volguard_market_data.feed import FeedLoop
from volguard_market_data.recording import Recorder

START = datetime(2026, 2, 4, 11, 0, tzinfo=clock.IST)
INSTANTS = 25


def _feed(source: object, redis: Redis, settings: Settings, *, replay: bool) -> FeedLoop:
    config = BusConfig.from_settings(settings)
    return FeedLoop(
        source,  # type: ignore[arg-type]
        Publisher(redis, config, service="market_data", source="market_data/test"),
        redis,
        config,
        speed=0.0,
        lockstep=False,
        lockstep_max_lag=0,
        mode=events.MarketMode.REPLAY if replay else events.MarketMode.SIM,
        source_name="replay" if replay else "sim",
        publish_status=not replay,
    )


async def _record_session(redis: Redis, settings: Settings, directory: Path) -> None:
    sim = settings.model_copy(update={"feed": "sim", "stream_namespace": settings.stream_namespace + "rec:"})
    await _feed(SimSource(sim, seed=5, start=START, steps=INSTANTS), redis, sim, replay=False).run()
    recorder = Recorder(redis, BusConfig.from_settings(sim), directory, from_start=True, feed="sim")
    await recorder.start()
    summary = await recorder.stop()
    assert summary.entries > INSTANTS * 7


async def _replay_through_analytics(
    redis: Redis, settings: Settings, directory: Path, run: str
) -> list[bytes]:
    replay = settings.model_copy(
        update={
            "feed": "replay",
            "replay_dir": directory,
            "stream_namespace": f"{settings.stream_namespace}{run}:",
        }
    )
    key = BusConfig.from_settings(replay).key("an.vol")
    async with running_service(ANALYTICS, replay, redis):
        await _feed(ReplaySource(directory), redis, replay, replay=True).run()
        entries = await eventually(
            lambda: _at_least(redis, key, INSTANTS), what=f"{INSTANTS} VolSnapshots from run {run}"
        )
    return [fields[b"event"] for _, fields in entries]


async def _at_least(redis: Redis, key: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]] | None:
    entries = await redis.xrange(key)
    return entries if len(entries) >= count else None


async def test_a_recorded_session_replayed_twice_gives_identical_vol_snapshots(
    redis: Redis, settings: Settings, fresh_database_url: str, tmp_path: Path
) -> None:
    database_url = fresh_database_url
    settings = settings.model_copy(update={"database_url": database_url})
    recording = tmp_path / "session"
    await _record_session(redis, settings, recording)
    first = await _replay_through_analytics(redis, settings, recording, "a")
    conn = await asyncpg.connect(database_url)
    try:
        # The second run starts from the same persisted state as the first.
        await conn.execute("truncate analytics.vol_snapshots")
    finally:
        await conn.close()
    second = await _replay_through_analytics(redis, settings, recording, "b")
    assert len(first) == INSTANTS
    assert first == second
    snapshots = [events.parse_event(p) for p in first]
    assert all(isinstance(s, events.VolSnapshot) and len(s.expiries) >= 6 for s in snapshots)
