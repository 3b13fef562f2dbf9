"""Golden tests: a recorded short simulated session, replayed twice through analytics, gives identical
an.vol payloads, byte for byte (issue 5), and the same sys.alerts (issue 14)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_analytics.app import SPEC as ANALYTICS
from volguard_common import clock, events, streams
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings
from volguard_market_data.adapters.replay_source import ReplaySource
from volguard_market_data.adapters.sim_source import SimSource
from volguard_market_data.feed import FeedLoop
from volguard_market_data.ports import MarketBatch, Publication
from volguard_market_data.recording import Recorder

START = datetime(2026, 2, 4, 11, 0, tzinfo=clock.IST)
INSTANTS = 25


def _feed(
    source: object, redis: Redis, settings: Settings, *, replay: bool, lockstep: bool = False
) -> FeedLoop:
    config = BusConfig.from_settings(settings)
    return FeedLoop(
        source,  # type: ignore[arg-type]
        Publisher(redis, config, service="market_data", source="market_data/test"),
        redis,
        config,
        speed=0.0,
        lockstep=lockstep,
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


# ---- alerts replay identically (issue 14) --------------------------------------------------------

# Seed 5's vix_spike session on Wednesday 4 Feb 2026: India VIX jumps ~14 % between 12:15 and 12:16.
SPIKE_START = datetime(2026, 2, 4, 12, 13, tzinfo=clock.IST)
SPIKE_INSTANTS = 25
SPIKE_INTERVAL_S = 10.0
# The recorded feed goes stale for three instants from the batch whose VIX print turns the spike on
# (12:15:40): market_data's FEED_STALE and analytics' VIX_SPIKE are about the same batch.
STALE_FROM, STALE_UNTIL = 16, 19


class _FeedThatGoesStale:
    """The simulated market, whose batches at STALE_FROM..STALE_UNTIL carry the feed's own md.status
    saying STALE and then CONNECTED again: what a live feed's recording holds after a quiet spell."""

    name = "sim"

    def __init__(self, sim: SimSource) -> None:
        self._sim = sim

    async def batches(self) -> AsyncIterator[MarketBatch]:
        k = 0
        async for batch in self._sim.batches():
            if STALE_FROM <= k <= STALE_UNTIL:
                state = events.FeedState.CONNECTED if k == STALE_UNTIL else events.FeedState.STALE
                status = events.FeedStatus(
                    ts_event=batch.ts_event,
                    ts_init=batch.ts_event,
                    source="market_data/recorded",
                    feed="sim",
                    mode=events.MarketMode.SIM,
                    state=state,
                    last_tick_at=batch.ts_event,
                    subscribed_instruments=batch.instruments,
                    message="no update from the exchange" if state is events.FeedState.STALE else "",
                )
                publication = Publication(
                    streams.MD_STATUS.name, status.type, status.model_dump_json().encode()
                )
                batch = MarketBatch(batch.ts_event, (*batch.publications, publication), batch.instruments)
            k += 1
            yield batch

    async def close(self) -> None:
        await self._sim.close()


def _alert_facts(payload: bytes) -> tuple[object, ...]:
    """Everything an alert says except its id and the wall time it was created."""
    alert = events.parse_event(payload)
    assert isinstance(alert, events.Alert)
    facts = alert.model_dump(mode="json", exclude={"event_id", "ts_init"})
    return tuple(sorted((key, json.dumps(value, sort_keys=True)) for key, value in facts.items()))


async def _replay_alerts(redis: Redis, settings: Settings, directory: Path, run: str) -> list[bytes]:
    replay = settings.model_copy(
        update={
            "feed": "replay",
            "replay_dir": directory,
            "stream_namespace": f"{settings.stream_namespace}{run}:",
        }
    )
    config = BusConfig.from_settings(replay)
    async with running_service(ANALYTICS, replay, redis):
        # In lockstep (`volguard replay --lockstep`): market_data publishes a batch only once analytics
        # has handled the one before, so the two processes' alerts interleave the same way every run.
        await _feed(ReplaySource(directory), redis, replay, replay=True, lockstep=True).run()
        await eventually(
            lambda: _at_least(redis, config.key("an.vol"), SPIKE_INSTANTS),
            what=f"{SPIKE_INSTANTS} VolSnapshots from run {run}",
        )
    return [fields[b"event"] for _, fields in await redis.xrange(config.key(streams.SYS_ALERTS.name))]


def _in_stream_order(payloads: list[bytes]) -> list[tuple[object, ...]]:
    return [_alert_facts(p) for p in payloads]


async def test_a_recorded_session_replayed_twice_gives_identical_alerts(
    redis: Redis, settings: Settings, fresh_database_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    recording = tmp_path / "spike"
    sim = settings.model_copy(
        update={
            "feed": "sim",
            "sim_scenario": "vix_spike",
            "sim_snapshot_interval_s": SPIKE_INTERVAL_S,
            "stream_namespace": settings.stream_namespace + "rec:",
        }
    )
    market = SimSource(sim, seed=5, start=SPIKE_START, steps=SPIKE_INSTANTS)
    await _feed(_FeedThatGoesStale(market), redis, sim, replay=False).run()
    recorder = Recorder(redis, BusConfig.from_settings(sim), recording, from_start=True, feed="sim")
    await recorder.start()
    await recorder.stop()

    first = await _replay_alerts(redis, settings, recording, "a")
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("truncate analytics.vol_snapshots")
    finally:
        await conn.close()
    second = await _replay_alerts(redis, settings, recording, "b")

    alerts = [events.parse_event(p) for p in first]
    assert all(isinstance(a, events.Alert) for a in alerts)
    codes = [(a.code, a.ts_event) for a in alerts if isinstance(a, events.Alert)]
    stale_at = SPIKE_START + timedelta(seconds=STALE_FROM * SPIKE_INTERVAL_S)
    recovered_at = SPIKE_START + timedelta(seconds=STALE_UNTIL * SPIKE_INTERVAL_S)
    # Each alert carries the event time of what caused it: the recorded statuses, the spiking chain set.
    assert ("FEED_STALE", stale_at) in codes
    assert ("FEED_RECOVERED", recovered_at) in codes
    spikes = [ts for code, ts in codes if code == "VIX_SPIKE"]
    assert len(spikes) == 1
    assert SPIKE_START + timedelta(minutes=2) <= spikes[0] <= SPIKE_START + timedelta(minutes=4)
    # The same alerts in the same order as sys.alerts holds them (ids and wall-clock fields aside).
    assert _in_stream_order(first) == _in_stream_order(second)
    # ... and that order is event time: no alert about a later batch before one about an earlier.
    times = [a.ts_event for a in alerts]
    assert times == sorted(times)
