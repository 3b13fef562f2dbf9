"""The transactional outbox against real Redis and Postgres: one downstream entry per committed event,
whatever moment the publishing process dies at."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.samples import sample_intent
from tests.support.waiting import eventually
from volguard_common import db, events, outbox
from volguard_common.bus import EVENT_FIELD, BusConfig, Publisher
from volguard_common.lease import Fence, StaleLeaseError
from volguard_common.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[db.Pool]:
    created = await db.create_pool(fresh_database_url, min_size=1, max_size=6)
    await db.ensure_core_schema(created)
    yield created
    await created.close()


def _decision(intent_id: str, reason: str = "test") -> events.RiskDecision:
    return events.RiskDecision(
        ts_event=sample_intent().ts_event,
        source="risk/test",
        intent_id=intent_id,
        approved=False,
        reasons=[reason],
        checks=[],
        requested_lots=1,
        approved_lots=0,
    )


async def _entries(redis: Redis, settings: Settings, stream: str) -> list[tuple[str, events.Event]]:
    rows = await redis.xrange(settings.stream_namespace + stream)
    return [(eid.decode(), events.parse_event(fields[EVENT_FIELD])) for eid, fields in rows]


def _relay(
    pool: db.Pool, redis: Redis, settings: Settings, database_url: str, **kw: int
) -> outbox.OutboxRelay:
    return outbox.OutboxRelay(
        pool,
        redis,
        BusConfig(namespace=settings.stream_namespace),
        publisher="risk",
        database_url=database_url,
        **kw,
    )


# ------------------------------------------------------------------------------------- crash points


def _run_program(settings: Settings, database_url: str, crash_point: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.outbox_program",
            settings.redis_url,
            database_url,
            settings.stream_namespace,
            crash_point,
        ],
        cwd=ROOT,
    )


@pytest.mark.parametrize("crash_point", ["before_commit", "after_commit", "after_xadd", "after_ack"])
async def test_a_sigkill_at_any_point_gives_one_downstream_event_with_a_stable_id_and_one_effect(
    crash_point: str, redis: Redis, settings: Settings, fresh_database_url: str, pool: db.Pool
) -> None:
    intent = sample_intent()
    await Publisher(
        redis, BusConfig(namespace=settings.stream_namespace), service="strategy", source="strategy/test"
    ).publish(intent)

    crashing = _run_program(settings, fresh_database_url, crash_point)
    code = await asyncio.get_running_loop().run_in_executor(None, crashing.wait)
    assert code == -signal.SIGKILL, f"the program should have killed itself at {crash_point}, exited {code}"

    restarted = _run_program(settings, fresh_database_url, "none")
    try:

        async def settled() -> bool:
            unsent = await pool.fetchval("SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")
            rows = await pool.fetchval("SELECT count(*) FROM public.outbox")
            pending = (await redis.xpending(settings.stream_namespace + "st.intents", "risk"))["pending"]
            return rows >= 1 and unsent == 0 and pending == 0

        await eventually(settled, what="the intent handled, acknowledged and its decision relayed")
    finally:
        restarted.send_signal(signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, restarted.wait)

    downstream = await _entries(redis, settings, "rk.decisions")
    assert len(downstream) == 1, downstream
    entry_id, decision = downstream[0]
    assert isinstance(decision, events.RiskDecision)
    assert decision.intent_id == intent.intent_id
    row = await pool.fetchrow("SELECT event_id, entry_id FROM public.outbox")
    # The id fixed in the committed transaction is the one downstream sees, at the entry recorded.
    assert (decision.event_id, entry_id) == (row["event_id"], row["entry_id"])
    assert await pool.fetchval("SELECT count(*) FROM public.crash_effects") == 1
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM public.processed_events WHERE consumer = 'risk' AND event_id = $1",
            intent.event_id,
        )
        == 1
    )


# ------------------------------------------------------------------------------------- in process


async def test_a_rolled_back_transaction_publishes_nothing_and_a_committed_one_in_commit_order(
    redis: Redis, settings: Settings, fresh_database_url: str, pool: db.Pool
) -> None:
    relay = _relay(pool, redis, settings, fresh_database_url)

    async def rolled_back() -> None:
        async with outbox.handle_once(pool, group="risk", event_id="evt-rolled-back", publisher="risk") as tx:
            assert tx is not None
            await tx.publish(_decision("intent-rolled-back"))
            raise RuntimeError("risk check crashed")

    with pytest.raises(RuntimeError, match="risk check crashed"):
        await rolled_back()
    assert await pool.fetchval("SELECT count(*) FROM public.outbox") == 0

    # Two handlers overlap: the first to publish holds the publisher's order until it commits, so
    # the second commits after it, and the relay's id order is the commit order.
    commits: list[str] = []
    slow_published = asyncio.Event()

    async def slow() -> None:
        async with outbox.transaction(pool, publisher="risk") as tx:
            await tx.publish(_decision("intent-slow"))
            slow_published.set()
            await eventually(lambda: _blocked_on_order(pool), what="the other publisher waits for the order")
            assert await relay.relay_pending() == 0  # nothing committed yet
        commits.append("intent-slow")

    async def fast() -> None:
        await slow_published.wait()
        async with outbox.transaction(pool, publisher="risk") as tx:
            await tx.publish(_decision("intent-fast"))
        commits.append("intent-fast")

    await asyncio.gather(slow(), fast())
    committed = [r["event_id"] for r in await pool.fetch("SELECT event_id FROM public.outbox ORDER BY id")]
    assert await relay.relay_pending() == 2
    downstream = await _entries(redis, settings, "rk.decisions")
    assert [event.event_id for _, event in downstream] == committed
    assert [event.intent_id for _, event in downstream if isinstance(event, events.RiskDecision)] == commits
    assert await relay.relay_pending() == 0
    assert len(await _entries(redis, settings, "rk.decisions")) == 2


async def _blocked_on_order(pool: db.Pool) -> bool:
    return bool(
        await pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    )


async def test_notify_wakes_the_relay_without_waiting_for_its_poll(
    redis: Redis, settings: Settings, fresh_database_url: str, pool: db.Pool
) -> None:
    # A poll interval of an hour: only the NOTIFY of the commit can bring the event out in time.
    relay = _relay(pool, redis, settings, fresh_database_url, poll_interval_ms=3_600_000)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _listening(pool), what="the relay LISTENs")
        async with outbox.transaction(pool, publisher="risk") as tx:
            await tx.publish(_decision("intent-notified"))
        await eventually(lambda: _async(relay.sent == 1), what="the committed decision relayed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await _length(redis, settings, "rk.decisions") == 1


async def _listening(pool: db.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    )


async def _async(value: bool) -> bool:
    return value


async def _length(redis: Redis, settings: Settings, stream: str) -> int:
    return int(await redis.xlen(settings.stream_namespace + stream))


async def test_a_publisher_may_publish_only_on_its_own_streams(pool: db.Pool) -> None:
    async with outbox.transaction(pool, publisher="strategy") as tx:
        with pytest.raises(ValueError, match=r"strategy does not publish on rk\.decisions"):
            await tx.publish(_decision("intent-wrong-stream"))
    with pytest.raises(ValueError, match="unknown publisher"):
        async with outbox.transaction(pool, publisher="risk-replica-2"):
            pass


async def test_a_stale_fencing_token_is_refused_inside_the_outbox_transaction(pool: db.Pool) -> None:
    old, new = Fence("risk:main", 7), Fence("risk:main", 8)
    async with outbox.transaction(pool, publisher="risk", fence=old) as tx:
        await tx.publish(_decision("intent-old-holder"))
    async with outbox.transaction(pool, publisher="risk", fence=new) as tx:
        await tx.publish(_decision("intent-new-holder"))

    async def late_write() -> None:
        async with outbox.handle_once(
            pool, group="risk", event_id="evt-late", publisher="risk", fence=old
        ) as tx:
            assert tx is not None
            await tx.publish(_decision("intent-too-late"))

    with pytest.raises(StaleLeaseError, match="token 7 is stale, token 8 has already written"):
        await late_write()
    intents = [r["payload"] for r in await pool.fetch("SELECT payload FROM public.outbox ORDER BY id")]
    assert [events.parse_event(p).intent_id for p in intents] == ["intent-old-holder", "intent-new-holder"]  # type: ignore[union-attr]
    assert await pool.fetchval("SELECT count(*) FROM public.processed_events") == 0
    assert await Fence.highest(pool, "risk:main") == 8


# ------------------------------------------------------------------------------------- trimming


async def test_log_streams_are_trimmed_only_below_what_every_subscribing_group_acknowledged(
    redis: Redis, settings: Settings
) -> None:
    config = BusConfig(namespace=settings.stream_namespace)
    key = config.key("ctl.commands")  # read by market_data and risk
    ids = [(await redis.xadd(key, {b"event": b"{}"})).decode() for _ in range(6)]
    await redis.xgroup_create(key, "risk", id="0")
    await redis.xreadgroup("risk", "risk-a", {key: ">"}, count=6)
    await redis.xack(key, "risk", *ids)
    # market_data has no group yet: it will start at 0 and must still find every command.
    assert await outbox.trim_log_streams(redis, config) == {}
    await redis.xgroup_create(key, "market_data", id="0")
    assert (await outbox.trim_log_streams(redis, config)).get("ctl.commands", 0) == 0

    # market_data has read four and acknowledged the first three.
    await redis.xreadgroup("market_data", "md-a", {key: ">"}, count=4)
    await redis.xack(key, "market_data", *ids[:3])
    assert (await outbox.trim_log_streams(redis, config))["ctl.commands"] == 3
    assert [eid.decode() for eid, _ in await redis.xrange(key)] == ids[3:]  # its pending entry stays
    await redis.xack(key, "market_data", ids[3])
    await outbox.trim_log_streams(redis, config)
    # Its last-delivered entry bounds the trim now: the two it was never delivered stay.
    assert [eid.decode() for eid, _ in await redis.xrange(key)] == ids[3:]
    await redis.xreadgroup("market_data", "md-a", {key: ">"}, count=2)
    await redis.xack(key, "market_data", *ids[4:])
    await outbox.trim_log_streams(redis, config)
    assert [eid.decode() for eid, _ in await redis.xrange(key)] == ids[5:]


async def test_a_dashboard_replica_group_does_not_hold_the_trim_back(
    redis: Redis, settings: Settings
) -> None:
    config = BusConfig(namespace=settings.stream_namespace)
    key = config.key("ex.reports")  # read by risk and, one group per replica, the dashboard
    ids = [(await redis.xadd(key, {b"event": b"{}"})).decode() for _ in range(3)]
    await redis.xgroup_create(key, "dashboard_api.gone", id="0")  # a replica that never came back
    await redis.xgroup_create(key, "risk", id="0")
    await redis.xreadgroup("risk", "risk-a", {key: ">"}, count=3)
    await redis.xack(key, "risk", *ids[:2])
    assert (await outbox.trim_log_streams(redis, config))["ex.reports"] == 2
    assert [eid.decode() for eid, _ in await redis.xrange(key)] == ids[2:]


async def test_snapshot_and_dead_letter_streams_are_not_trimmed_by_acknowledgement(
    redis: Redis, settings: Settings
) -> None:
    config = BusConfig(namespace=settings.stream_namespace)
    for stream in ("md.chain", "dlq.ex.commands"):
        key = config.key(stream)
        first = await redis.xadd(key, {b"event": b"{}"})
        await redis.xadd(key, {b"event": b"{}"})
        await redis.xgroup_create(key, "analytics", id="$")
        assert first is not None
    await outbox.trim_log_streams(redis, config)
    assert await redis.xlen(config.key("md.chain")) == 2
    assert await redis.xlen(config.key("dlq.ex.commands")) == 2


async def test_a_stream_only_the_dashboard_reads_keeps_its_retention_and_no_more(
    redis: Redis, settings: Settings
) -> None:
    config = BusConfig(namespace=settings.stream_namespace)
    key = config.key("sys.alerts")  # only the dashboard's per-replica groups read it
    seconds, _ = await redis.time()
    now_ms = int(seconds) * 1000
    old = [await redis.xadd(key, {b"event": b"{}"}, id=f"{now_ms - 7_200_000 + i}-0") for i in range(3)]
    recent = [(await redis.xadd(key, {b"event": b"{}"})).decode() for _ in range(2)]
    await redis.xgroup_create(key, "dashboard_api.gone", id="0")  # never read: must not pin it
    assert all(old)
    # Without a retention nothing is trimmed, as before.
    assert "sys.alerts" not in await outbox.trim_log_streams(redis, config)
    assert (await outbox.trim_log_streams(redis, config, retention_ms=3_600_000))["sys.alerts"] == 3
    assert [eid.decode() for eid, _ in await redis.xrange(key)] == recent
