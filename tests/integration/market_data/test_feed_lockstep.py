"""Lockstep: the next snapshot waits until every consumer group has caught up (real Redis, real bus)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from redis.asyncio import Redis

from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher
from volguard_common.clock import IST
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_common.settings import Settings
from volguard_market_data.adapters.sim_source import SimSource
from volguard_market_data.feed import FeedLoop
from volguard_market_data.ports import MarketBatch, Publication


class ListSource:
    """A MarketSource over prepared batches (our own port; no infrastructure is faked)."""

    name = "list"

    def __init__(self, batches: list[MarketBatch]) -> None:
        self._batches = batches
        self.closed = False

    async def batches(self) -> AsyncIterator[MarketBatch]:
        for batch in self._batches:
            yield batch

    async def close(self) -> None:
        self.closed = True


def make_feed(
    source: ListSource,
    redis: Redis,
    settings: Settings,
    *,
    lockstep: bool = False,
    mode: events.MarketMode = events.MarketMode.SIM,
    publish_status: bool = True,
) -> FeedLoop:
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    return FeedLoop(
        source,
        publisher,
        redis,
        config,
        speed=0.0,
        lockstep=lockstep,
        lockstep_max_lag=0,
        mode=mode,
        source_name="list",
        publish_status=publish_status,
    )


def chain_batches(count: int) -> list[MarketBatch]:
    out = []
    for i in range(count):
        ts = DEFAULT_TS_EVENT + timedelta(seconds=i)
        snapshot = sample_chain_snapshot(11, ts_event=ts)
        out.append(
            MarketBatch(ts, (Publication("md.chain", snapshot.type, snapshot.model_dump_json().encode()),))
        )
    return out


async def test_lockstep_publishes_the_next_snapshot_only_after_every_group_caught_up(
    redis: Redis, settings: Settings
) -> None:
    config = BusConfig.from_settings(settings)
    analytics_pub = Publisher(redis, config, service="analytics", source="analytics/test")
    consumer = Consumer(redis, config, analytics_pub, service="analytics", consumer_name="analytics-test")
    chain_key = config.key("md.chain")
    lengths_seen: list[int] = []

    async def slow_analytics(event: events.Event, delivery: Delivery) -> None:
        # While this snapshot is being handled, the feed must not have published the next one.
        lengths_seen.append(int(await redis.xlen(chain_key)))

    consumer.subscribe("md.chain", slow_analytics)
    await consumer._ensure_group(consumer._subs["md.chain"])
    source = ListSource(chain_batches(15))
    feed = make_feed(source, redis, settings, lockstep=True)
    await consumer.start()
    try:
        stats = await asyncio.wait_for(feed.run(), timeout=120)
        await eventually(lambda: _async(len(lengths_seen) == 15), what="all snapshots handled")
    finally:
        await consumer.stop()
    assert lengths_seen == list(range(1, 16))
    assert stats.by_stream["md.chain"] == 15
    assert source.closed


async def test_without_lockstep_the_feed_runs_ahead_of_a_slow_consumer(
    redis: Redis, settings: Settings
) -> None:
    config = BusConfig.from_settings(settings)
    await redis.xgroup_create(config.key("md.chain"), "analytics", id="$", mkstream=True)
    feed = make_feed(ListSource(chain_batches(10)), redis, settings)
    await feed.run()
    backlog = await feed.consumer_backlog()
    assert backlog[("md.chain", "analytics")] == 10


async def test_status_is_published_with_the_feed(redis: Redis, settings: Settings) -> None:
    config = BusConfig.from_settings(settings)
    feed = make_feed(ListSource(chain_batches(12)), redis, settings)
    await feed.run()
    entries = await redis.xrange(config.key("md.status"))
    statuses = [events.parse_event(fields[b"event"]) for _, fields in entries]
    assert [s.ts_event for s in statuses] == [
        DEFAULT_TS_EVENT,
        DEFAULT_TS_EVENT + timedelta(seconds=5),
        DEFAULT_TS_EVENT + timedelta(seconds=10),
    ]
    assert all(isinstance(s, events.FeedStatus) and s.state is events.FeedState.CONNECTED for s in statuses)


async def _async(value: object) -> object:
    return value


async def test_a_stale_source_raises_one_alert_and_one_on_recovery(redis: Redis, settings: Settings) -> None:
    config = BusConfig.from_settings(settings)
    states = [
        events.FeedState.CONNECTED,
        events.FeedState.STALE,
        events.FeedState.STALE,
        events.FeedState.CONNECTED,
        events.FeedState.CONNECTED,
    ]
    batches = []
    for i, state in enumerate(states):
        ts = DEFAULT_TS_EVENT + timedelta(seconds=i)
        status = events.FeedStatus(
            ts_event=ts,
            source="market_data/test",
            feed="upstox",
            mode=events.MarketMode.LIVE,
            state=state,
            last_tick_at=DEFAULT_TS_EVENT,
            subscribed_instruments=250,
        )
        batches.append(
            MarketBatch(ts, (Publication("md.status", status.type, status.model_dump_json().encode()),))
        )
    feed = make_feed(ListSource(batches), redis, settings, mode=events.MarketMode.LIVE, publish_status=False)
    await feed.run()
    alerts = [events.parse_event(f[b"event"]) for _, f in await redis.xrange(config.key("sys.alerts"))]
    assert [(a.code, a.severity) for a in alerts if isinstance(a, events.Alert)] == [
        ("FEED_STALE", events.Severity.CRITICAL),
        ("FEED_RECOVERED", events.Severity.INFO),
    ]
    # Each alert is stamped with the event time of the status that caused it, not the wall clock.
    assert [a.ts_event for a in alerts] == [
        DEFAULT_TS_EVENT + timedelta(seconds=1),
        DEFAULT_TS_EVENT + timedelta(seconds=3),
    ]
    # The source's own statuses went out unchanged and the loop added none.
    assert await redis.xlen(config.key("md.status")) == len(states)


async def test_simulated_status_reports_what_was_measured(redis: Redis, settings: Settings) -> None:
    config = BusConfig.from_settings(settings)
    sim = settings.model_copy(update={"sim_strikes_each_side": 5, "sim_weeklies": 1})
    start = datetime(2026, 12, 2, 10, 0, tzinfo=IST)
    # Unpaced: there is no wall time to be behind, so the lag is unknown; the instruments are counted.
    source = SimSource(sim, seed=5, start=start, steps=3)
    await make_feed(source, redis, settings).run()  # type: ignore[arg-type]
    unpaced = events.parse_event((await redis.xrange(config.key("md.status")))[-1][1][b"event"])
    assert isinstance(unpaced, events.FeedStatus)
    assert unpaced.schema_version == 2
    assert unpaced.lag_ms is None
    expiries = len(source.market.advance().chains)
    assert unpaced.subscribed_instruments == 3 + expiries * 2 * 11
    # Paced: the lag is how far publication ran behind the pace, a measured number of milliseconds.
    paced_settings = settings.model_copy(update={"stream_namespace": settings.stream_namespace + "paced:"})
    paced_config = BusConfig.from_settings(paced_settings)
    feed = FeedLoop(
        SimSource(sim, seed=5, start=start, steps=3),
        Publisher(redis, paced_config, service="market_data", source="market_data/test"),
        redis,
        paced_config,
        speed=1000.0,
        lockstep=False,
        lockstep_max_lag=0,
        mode=events.MarketMode.SIM,
        source_name="sim",
    )
    await feed.run()
    paced = events.parse_event((await redis.xrange(paced_config.key("md.status")))[-1][1][b"event"])
    assert isinstance(paced, events.FeedStatus)
    assert paced.lag_ms is not None
    assert paced.subscribed_instruments == unpaced.subscribed_instruments
