"""At-least-once delivery against real Redis (and Postgres for idempotency): DESIGN §3."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import asyncpg
import pytest
import structlog
from redis.asyncio import Redis

from tests.support.samples import alert_codes, sample_intent, sample_tick
from tests.support.waiting import eventually
from volguard_common import db, events, metrics
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher, stream_report
from volguard_common.settings import Settings

HERE = Path(__file__).resolve().parent


def make_bus(
    redis: Redis, settings: Settings, *, service: str = "risk", name: str = "risk-a", **overrides: int
) -> tuple[Publisher, Consumer]:
    config = dataclasses.replace(BusConfig.from_settings(settings), **overrides)
    publisher = Publisher(redis, config, service=service, source=f"{service}/{name}")
    return publisher, Consumer(redis, config, publisher, service=service, consumer_name=name)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(settings.database_url)
    async with pool.acquire() as conn:
        await db.ensure_core_schema(conn)
        await conn.execute("create table if not exists bus_effects (event_id text, note text)")
    yield pool
    await pool.close()


async def test_handler_that_raises_gets_the_message_again(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings)
    seen: list[int] = []

    async def flaky(event: events.Event, delivery: Delivery) -> None:
        seen.append(delivery.deliveries)
        if len(seen) == 1:
            raise RuntimeError("broker timed out")

    consumer.subscribe("st.intents", flaky)
    await consumer.start()
    try:
        await publisher.publish(sample_intent())
        await eventually(lambda: _async(len(seen) >= 2), what="second delivery")
        await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="ack")
    finally:
        await consumer.stop()
    assert seen[:2] == [1, 2]


async def test_consumer_killed_mid_handler_is_claimed_and_finished_by_another(
    redis: Redis, settings: Settings
) -> None:
    publisher, survivor = make_bus(redis, settings, name="risk-b")
    victim = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "consumer_process.py"),
            settings.redis_url,
            settings.stream_namespace,
            "risk-a",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        intent = sample_intent()
        # A log stream's group starts at 0, so the victim gets this even if it starts after the publish.
        await publisher.publish(intent)
        held = await eventually(lambda: _held(redis, settings), what="victim holds the entry")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        finished: list[tuple[str, str, int]] = []

        async def finish(event: events.Event, delivery: Delivery) -> None:
            finished.append((event.event_id, delivery.entry_id, delivery.deliveries))

        survivor.subscribe("st.intents", finish)
        await survivor.start()
        try:
            await eventually(lambda: _async(finished), what="survivor finishes the entry")
        finally:
            await survivor.stop()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    event_id, entry_id, deliveries = finished[0]
    assert (event_id, entry_id) == (intent.event_id, held)
    assert deliveries == 2
    await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="acked")


async def test_message_that_always_fails_lands_in_dlq_with_alert(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings)
    attempts: list[int] = []

    async def always_fails(event: events.Event, delivery: Delivery) -> None:
        attempts.append(delivery.deliveries)
        raise ValueError("strike not in chain")

    consumer.subscribe("st.intents", always_fails)
    await consumer.start()
    try:
        intent = sample_intent()
        await publisher.publish(intent)
        dlq_key = f"{settings.stream_namespace}dlq.st.intents"
        entries = await eventually(lambda: redis.xrange(dlq_key), what="entry in dlq.st.intents")
    finally:
        await consumer.stop()
    assert attempts == list(range(1, settings.bus_max_deliveries + 1))
    fields = entries[0][1]
    assert events.parse_event(fields[b"event"]) == intent
    assert fields[b"dlq_deliveries"] == str(settings.bus_max_deliveries).encode()
    assert b"ValueError: strike not in chain" in fields[b"dlq_error"]
    assert "BUS_DEAD_LETTER" in await alert_codes(redis, settings.stream_namespace)
    await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="acked after DLQ")


async def test_malformed_event_goes_to_dlq_at_once(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings)
    handled: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        handled.append(event.event_id)

    consumer.subscribe("st.intents", handler)
    await consumer.start()
    try:
        key = f"{settings.stream_namespace}st.intents"
        await redis.xadd(key, {b"event": b'{"type": "TradeIntent", "legs": "not a list"}'})
        good = sample_intent()
        await publisher.publish(good)
        entries = await eventually(
            lambda: redis.xrange(f"{settings.stream_namespace}dlq.st.intents"), what="malformed entry in DLQ"
        )
        await eventually(lambda: _async(handled), what="the good event after it is still handled")
    finally:
        await consumer.stop()
    assert entries[0][1][b"dlq_deliveries"] == b"1"
    assert b"malformed event" in entries[0][1][b"dlq_error"]
    assert handled == [good.event_id]


async def test_same_event_twice_produces_one_side_effect(
    redis: Redis, settings: Settings, pool: asyncpg.Pool
) -> None:
    publisher, consumer = make_bus(redis, settings)
    calls: list[str] = []
    crash_after_commit = {"armed": True}

    async def record(event: events.Event, delivery: Delivery) -> None:
        calls.append(delivery.entry_id)
        async with db.once(pool, "risk", event.event_id) as conn:
            if conn is not None:
                await conn.execute("insert into bus_effects values ($1, 'booked')", event.event_id)
        if crash_after_commit["armed"]:
            # The effect is committed but the process "dies" before the ack: redelivery must not repeat it.
            crash_after_commit["armed"] = False
            raise ConnectionResetError("lost the connection before the ack")

    consumer.subscribe("st.intents", record)
    await consumer.start()
    try:
        intent = sample_intent()
        await publisher.publish(intent)
        await publisher.publish(intent)  # a duplicate publish of the same event (same event_id)
        await eventually(
            lambda: _async(len(calls) >= 3), what="first, redelivered and duplicate entries handled"
        )
        await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked")
    finally:
        await consumer.stop()
    rows = await pool.fetch("select note from bus_effects where event_id = $1", intent.event_id)
    assert [r["note"] for r in rows] == ["booked"]


async def test_restarted_consumer_drains_its_own_pending_first(redis: Redis, settings: Settings) -> None:
    # The claimer is kept out of the way: only the restart's drain can deliver the entry again.
    publisher, first = make_bus(redis, settings, claim_idle_ms=3_600_000)
    release = asyncio.Event()
    started = asyncio.Event()

    async def stuck(event: events.Event, delivery: Delivery) -> None:
        started.set()
        await release.wait()

    first.subscribe("st.intents", stuck)
    await first.start()
    intent = sample_intent()
    await publisher.publish(intent)
    await asyncio.wait_for(started.wait(), timeout=60)
    await first.stop(grace_s=0.05)  # the handler is cut off: its entry stays pending on risk-a

    _, second = make_bus(redis, settings, claim_idle_ms=3_600_000)
    drained: list[tuple[str, int]] = []

    async def finish(event: events.Event, delivery: Delivery) -> None:
        drained.append((event.event_id, delivery.deliveries))

    second.subscribe("st.intents", finish)
    await second.start()
    try:
        await eventually(lambda: _async(drained), what="restart drains its pending entry")
    finally:
        await second.stop()
    assert drained[0][0] == intent.event_id
    assert drained[0][1] >= 2


async def test_graceful_stop_finishes_in_flight_then_acks(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings)
    release = asyncio.Event()
    started = asyncio.Event()
    finished: list[str] = []

    async def slow(event: events.Event, delivery: Delivery) -> None:
        started.set()
        await release.wait()
        finished.append(event.event_id)

    consumer.subscribe("st.intents", slow)
    await consumer.start()
    await publisher.publish(sample_intent())
    await asyncio.wait_for(started.wait(), timeout=60)
    stopping = asyncio.create_task(consumer.stop())
    await eventually(lambda: _async(not stopping.done()), what="stop waits for the handler")
    release.set()
    await stopping
    assert len(finished) == 1
    assert await _pending(redis, settings, "st.intents", "risk", want=0)


async def test_backlog_published_before_the_group_exists_is_delivered(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings)
    early = [sample_intent() for _ in range(3)]
    for intent in early:
        await publisher.publish(intent)
    seen: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        seen.append(event.event_id)

    consumer.subscribe("st.intents", handler)
    await consumer.start()
    try:
        await eventually(lambda: _async(len(seen) == 3), what="backlog delivered")
    finally:
        await consumer.stop()
    assert seen == [i.event_id for i in early]


async def test_snapshot_stream_conflates_to_the_newest_per_key_when_behind(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings, service="analytics", name="analytics-a")
    seen: list[float] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        assert isinstance(event, events.Tick)
        seen.append(event.ltp)

    consumer.subscribe("md.ticks", handler, conflate_key=lambda e: getattr(e, "instrument", None))
    await consumer._ensure_group(consumer._subs["md.ticks"])  # group exists before the burst
    for i in range(10):
        await publisher.publish(sample_tick(ltp=24000.0 + i))
    await consumer.start()
    try:
        await eventually(lambda: _async(seen), what="newest tick handled")
        await eventually(lambda: _pending(redis, settings, "md.ticks", "analytics", want=0), what="all acked")
    finally:
        await consumer.stop()
    assert seen == [24009.0]


async def test_lost_group_after_flushall_recovers_without_a_hot_loop(
    private_redis: Callable[[], Redis], settings: Settings
) -> None:
    redis = private_redis()
    publisher, consumer = make_bus(redis, settings)
    seen: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        seen.append(event.event_id)

    consumer.subscribe("st.intents", handler)
    await consumer.start()
    try:
        await publisher.publish(sample_intent())
        await eventually(lambda: _async(len(seen) == 1), what="first event")
        await redis.flushall()  # a private server: the only thing flushed is this test's
        await redis.config_resetstat()
        after = sample_intent()
        await publisher.publish(after)
        await eventually(lambda: _async(after.event_id in seen), what="event after the flush handled")
        calls = await _command_calls(redis, "xreadgroup")
    finally:
        await consumer.stop()
    assert consumer.group_recoveries in (1, 2, 3)
    assert "BUS_GROUP_RECREATED" in await alert_codes(redis, settings.stream_namespace)
    # A hot loop would issue thousands of reads; a healthy loop a handful per block interval.
    assert calls < 200


async def test_stream_report_shows_lag_pending_and_dlq(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings)
    consumer.subscribe("st.intents", _never_called)
    await consumer._ensure_group(consumer._subs["st.intents"])
    for _ in range(4):
        await publisher.publish(sample_intent())
    report = await stream_report(redis, BusConfig.from_settings(settings), "st.intents")
    assert report.length == 4
    assert report.dlq_length == 0
    (group,) = report.groups
    assert (group.group, group.pending, group.lag) == ("risk", 0, 4)


async def test_handler_runs_with_the_message_ids_bound_and_the_outer_context_comes_back(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings, name="risk-context")
    message_keys = ("correlation_id", "event_id", "stream")
    inside: list[dict[str, object]] = []
    after_ack: list[dict[str, object]] = []

    async def fails_once(event: events.Event, delivery: Delivery) -> None:
        inside.append(structlog.contextvars.get_contextvars())
        if len(inside) == 1:
            # The failure path logs inside the same context; the ids must still be bound after it.
            raise RuntimeError("broker timed out")

    def on_ack(stream: str, ids: Sequence[str]) -> None:
        # Runs in the reader task right after the handler: the message's ids must be gone again.
        after_ack.append(structlog.contextvars.get_contextvars())

    consumer.subscribe("st.intents", fails_once)
    consumer.ack_listeners.append(on_ack)
    # Bound before start: the reader task inherits it, so this is what must come back.
    tokens = structlog.contextvars.bind_contextvars(stream="outer", request="bench-7")
    try:
        await consumer.start()
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    try:
        intent = sample_intent()
        await publisher.publish(intent)
        await eventually(lambda: _async(after_ack), what="redelivered and acknowledged")
    finally:
        await consumer.stop()
    expected = {"correlation_id": intent.correlation_id, "event_id": intent.event_id, "stream": "st.intents"}
    assert [{k: seen[k] for k in message_keys} for seen in inside[:2]] == [expected, expected]
    assert inside[0]["request"] == "bench-7"
    assert after_ack[0] == {"stream": "outer", "request": "bench-7"}


async def _never_called(event: events.Event, delivery: Delivery) -> None:
    raise AssertionError("not started")


async def _async(value: object) -> object:
    return value


async def _pending(redis: Redis, settings: Settings, stream: str, group: str, *, want: int) -> bool:
    summary = await redis.xpending(f"{settings.stream_namespace}{stream}", group)
    return int(summary["pending"]) == want


async def _held(redis: Redis, settings: Settings) -> str | None:
    held = await redis.get(f"{settings.stream_namespace}held")
    return held.decode() if held else None


async def _command_calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_entries_queued_behind_a_slow_handler_are_not_claimed_back(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings)
    release = asyncio.Event()
    seen: list[tuple[str, int]] = []

    async def slow_first(event: events.Event, delivery: Delivery) -> None:
        seen.append((event.event_id, delivery.deliveries))
        if len(seen) == 1:
            await release.wait()

    consumer.subscribe("st.intents", slow_first)
    intents = [sample_intent() for _ in range(3)]
    for intent in intents:
        await publisher.publish(intent)
    await consumer.start()
    try:
        await eventually(lambda: _async(len(seen) == 1), what="first handler running")
        # Several claimer passes, each long after the queued entries' claim idle time (300 ms).
        cycles = consumer.claim_cycles
        await eventually(lambda: _async(consumer.claim_cycles >= cycles + 5), what="claimer passes")
        release.set()
        await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked")
    finally:
        await consumer.stop()
    assert seen == [(intent.event_id, 1) for intent in intents]


async def test_consumer_reports_its_backlog_as_metrics(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings, name="risk-metrics")
    release = asyncio.Event()

    async def held(event: events.Event, delivery: Delivery) -> None:
        await release.wait()

    consumer.subscribe("st.intents", held)
    for _ in range(3):
        await publisher.publish(sample_intent())
    await consumer.start()
    try:
        # A log stream's new group starts at 0: one read takes all three; one sits in the handler and two
        # wait behind it, all pending, none left undelivered.
        await eventually(
            lambda: _async(_gauge("volguard_consumer_pending", stream="st.intents") == 3.0),
            what="pending gauge",
        )
        assert _gauge("volguard_consumer_lag", stream="st.intents") == 0.0
    finally:
        release.set()
        await consumer.stop()


def _gauge(name: str, **labels: str) -> float | None:
    value = metrics.REGISTRY.get_sample_value(name, {"service": "risk", "group": "risk", **labels})
    return value
