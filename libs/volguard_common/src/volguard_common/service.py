"""What every VolGuard process shares: one `AsgiFastStream` app wired to the bus and Postgres.

A service module declares a `ServiceSpec` (its name, where its migrations live, and a `setup` that
subscribes handlers and starts its own tasks) and calls `run(spec)`. This module supplies the rest:
settings and logging, the database and the service's migrations (under the advisory lock), the
FastStream `RedisBroker` whose connection the bus uses, `/health`, `/ready` and `/metrics`, declared
publishers (so the AsyncAPI document shows the real wiring), and a graceful stop on SIGTERM: uvicorn
turns the signal into the lifespan shutdown, where the consumer finishes and acknowledges what is in
flight before the process exits.

Every active service also runs the outbox relay of what it publishes through
`volguard_common.outbox` and the periodic trim of log streams below every group's acknowledgement.

Single-active services (`ServiceSpec(single_active=True)`: market_data, analytics, strategy, risk,
execution) keep per-process state, so one replica per account acts and the others stand by
(`volguard_common.lease`). A standby is up and ready (/health and /ready answer with `role:
standby`) and polls for the lease; only the holder runs the service's setup, its consumer, relay and
tasks. The holder first writes its fencing token to Postgres, so a stale holder's next write is
refused, and when a renewal fails it stops consuming at once and the process exits with
`LEASE_LOST_EXIT_CODE`, for the supervisor to restart it as a standby. A clean stop releases the
lease, so a standby takes over without waiting for the ttl.
The stop is bounded by `VOLGUARD_STOP_GRACE_S` (20 s), which every orchestrator's own grace exceeds
(supervisor 35 s, compose 40 s, Kubernetes 45 s) so a service is never SIGKILLed in the middle of its
teardown: open HTTP connections get HTTP_DRAIN_SHARE of it, the consumer's in-flight handlers
CONSUMER_STOP_SHARE, and the rest is for the service's tasks, its teardown and closing the pool.
A handler still running when the consumer's share is over is cancelled; its entry stays pending and
the replica (or a peer) handles it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import asyncpg
import structlog
import uvicorn
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.response import JSONResponse
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI
from redis.asyncio import Redis
from redis.exceptions import RedisError

from volguard_common import clock, db, events, live_calendar, metrics, outbox, streams
from volguard_common.bus import BusConfig, Consumer, Publisher
from volguard_common.instance import InstanceClaim, claim_instance
from volguard_common.lease import Fence, Lease
from volguard_common.logging import adopt_stdlib_logger, configure_logging
from volguard_common.settings import INSTANCE_AUTO, Settings, load_settings_or_exit

log = structlog.get_logger("volguard.service")

# Exit status of a replica that stopped acting and must be restarted (it comes back, as a standby if
# single-active): its lease was lost, its activation failed, its consumer, relay or trimmer failed
# beyond retrying, or another replica took its instance name. One status for one meaning: the cause
# is in the log line before the exit.
EXIT_RESTART = 4
LEASE_LOST_EXIT_CODE = EXIT_RESTART

Role = Literal["active", "standby"]
# Shares of VOLGUARD_STOP_GRACE_S (see the module docstring); what is left after both (25 %) closes the
# service's tasks, its teardown and the pool.
HTTP_DRAIN_SHARE = 0.15
CONSUMER_STOP_SHARE = 0.6
EXIT_INSTANCE_LOST = EXIT_RESTART
# Exit status of a stop that overran VOLGUARD_STOP_GRACE_S: not clean, so not 0.
EXIT_STOP_OVERRAN = 5


@dataclass
class ServiceContext:
    """Everything a service's setup needs, built once at start."""

    spec: ServiceSpec
    settings: Settings
    broker: RedisBroker
    redis: Redis
    pool: asyncpg.Pool
    publisher: Publisher
    consumer: Consumer
    # Background tasks the service starts; cancelled (after the consumer stopped) at shutdown.
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # Single-active services only: this replica's view of the lease, and the task that waits for it
    # and then keeps it.
    lease: Lease | None = None
    lease_task: asyncio.Task[None] | None = None
    relay: outbox.OutboxRelay | None = None
    role: Role = "standby"
    # Why this replica stopped acting (lease lost, activation failed, relay died); None while all is well.
    failure: str | None = None
    # Called once the replica stopped acting after a failure; the process exits there.
    on_failure: Callable[[ServiceContext], None] | None = None
    # The instance name claimed in Redis when VOLGUARD_INSTANCE=auto (then `settings.instance` is it).
    instance_claim: InstanceClaim | None = None
    # What a service's setup builds for its own edge (the dashboard's live view), by name.
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.publisher.source

    @property
    def group(self) -> str:
        """The service's consumer group: the dedup key of everything it handles."""
        return streams.group_name(self.spec.name)

    @property
    def fence(self) -> Fence | None:
        """The fencing token every write of a single-active holder carries; None for other services."""
        return None if self.lease is None else self.lease.fence

    @property
    def fencing_token(self) -> int | None:
        return None if self.lease is None else self.lease.token

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background loop of the service (a timer, a broker stream, reconciliation) until stop.
        It is supervised: a loop that ends by itself, by an error or otherwise, stops the replica acting
        and the process exits for its supervisor to restart it, never a process that silently stopped
        doing part of its job."""
        task = asyncio.create_task(work, name=name)
        _watch(self, task)
        self.tasks.append(task)
        return task

    def handle_once(
        self, event_id: str
    ) -> contextlib.AbstractAsyncContextManager[outbox.OutboxTransaction | None]:
        """Effects, processed-event record and publications of one handled event in one transaction,
        fenced for a single-active service (see `volguard_common.outbox.handle_once`)."""
        return outbox.handle_once(
            self.pool, group=self.group, event_id=event_id, publisher=self.spec.name, fence=self.fence
        )


Setup = Callable[[ServiceContext], Awaitable[None]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    # The Postgres schema this service owns (DESIGN §1) and the package holding its
    # `migrations/NNNN_*.sql`; both None for a service that owns none.
    schema: str | None
    migrations_package: str | None
    setup: Setup | None = None
    teardown: Setup | None = None
    description: str = ""
    # One active replica per account, the others hot standbys (volguard_common.lease).
    single_active: bool = False
    # An ASGI app for every other HTTP path and WebSocket (the dashboard's REST API, web page and
    # /ws), built with a getter of the running context (None until start-up completes).
    edge: Callable[[Callable[[], ServiceContext | None]], Any] | None = None


@dataclass
class _State:
    context: ServiceContext | None = None
    migrations_ok: bool = False
    startup_error: str | None = None
    # Set when the process must end with this status instead of 0 (the supervisor restarts it).
    exit_code: int | None = None


def _schema_of(stream: str) -> Any:
    """The event type (or union of types) a stream carries, for the AsyncAPI document."""
    types = events.EVENTS_ON[stream]
    return types[0] if len(types) == 1 else Union[types]  # noqa: UP007 - a runtime union of classes


def consumer_name(service: str, instance: str) -> str:
    """Stable per replica: a restarted replica drains the pending entries it left behind.

    An instance that already names its service (`risk-0` from `volguard up`, a claimed slot) is the
    consumer name as it is; any other (a host name, a pod name) is prefixed with the service.
    """
    return instance if instance.startswith(f"{service}-") else f"{service}-{instance}"


# A consumer failed beyond retrying (3 is a failed startup): restarted, where a stuck process would
# look alive while handling nothing.
EXIT_CONSUMER_FAILED = EXIT_RESTART


def build_app(spec: ServiceSpec, settings: Settings, state: _State | None = None) -> AsgiFastStream:
    """The service's ASGI app: FastStream lifespan + health, readiness and metrics routes."""
    broker = RedisBroker(settings.redis_url, logger=adopt_stdlib_logger("faststream.access.redis"))
    # Declared for the AsyncAPI document only: the bus's Publisher does the actual XADDs.
    for stream in streams.PUBLICATIONS[spec.name]:
        broker.publisher(
            stream=settings.stream_namespace + stream,
            title=f"{spec.name}:{stream}",
            description=streams.spec(stream).description,
            schema=_schema_of(stream),
        )
    process = _State() if state is None else state

    def instance_lost(reason: str) -> None:
        # Another replica may consume under our name now: stop taking entries at once (not after the
        # graceful drain a SIGTERM would give), and exit non-zero.
        log.error("instance name lost; stopping", reason=reason)
        process.exit_code = EXIT_INSTANCE_LOST
        if process.context is None:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        context = process.context
        context.tasks.append(
            asyncio.get_running_loop().create_task(
                _stop_acting(context, f"instance name lost: {reason}"), name="stop-acting"
            )
        )

    async def on_startup() -> None:
        configure_logging(
            spec.name, fmt=settings.log_format, level=settings.log_level, secrets=settings.secret_values()
        )
        install_holidays_file(settings)
        redis: Redis = await broker.connect()
        process.context = await start_service(
            spec, settings, redis, broker=broker, on_failure=_exit_at_once, on_instance_lost=instance_lost
        )
        process.migrations_ok = True

    async def on_shutdown() -> None:
        if process.context is None:
            return
        budget_s = settings.stop_grace_s * (1 - HTTP_DRAIN_SHARE)
        try:
            await asyncio.wait_for(stop_service(process.context), timeout=budget_s)
        except TimeoutError:
            # Exit before the orchestrator's SIGKILL; what was not acked stays pending for a redelivery.
            log.error("stop took longer than its grace; exiting anyway", grace_s=budget_s)
            process.exit_code = process.exit_code or EXIT_STOP_OVERRAN

    @get(include_in_schema=False)
    async def health(scope: Any) -> AsgiResponse:
        """Liveness: the process answers; `role` says whether it acts or stands by."""
        instance = process.context.settings.instance if process.context is not None else settings.instance
        return JSONResponse({"service": spec.name, "instance": instance, "status": "ok", **_role_of(process)})

    @get(include_in_schema=False)
    async def ready(scope: Any) -> AsgiResponse:
        """Readiness: Redis and Postgres reachable, migrations applied, active, consumer healthy."""
        checks = await readiness(process)
        ok = all(checks.values())
        return JSONResponse(
            {"service": spec.name, "ready": ok, "checks": checks, **_role_of(process)},
            status_code=200 if ok else 503,
        )

    app_class = AsgiFastStream if spec.edge is None else _with_edge(spec.edge(lambda: process.context))
    return app_class(
        broker,
        asgi_routes=[("/health", health), ("/ready", ready), ("/metrics", metrics.metrics_asgi_app())],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        asyncapi_path="/docs/asyncapi",
        specification=AsyncAPI(title=f"volguard {spec.name}", description=spec.description),
    )


def _with_edge(edge: Any) -> type[AsgiFastStream]:
    """FastStream's app routes exact HTTP paths only: everything else (other paths, WebSockets) goes
    to the service's edge app; the lifespan stays FastStream's."""

    class _EdgeApp(AsgiFastStream):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            own = scope["type"] == "lifespan" or (
                scope["type"] == "http" and any(scope["path"] == path for path, _ in self.routes)
            )
            if own:
                await super().__call__(scope, receive, send)
            else:
                await edge(scope, receive, send)

    return _EdgeApp


async def start_service(
    spec: ServiceSpec,
    settings: Settings,
    redis: Redis,
    *,
    broker: RedisBroker | None = None,
    on_failure: Callable[[ServiceContext], None] | None = None,
    on_instance_lost: Callable[[str], None] | None = None,
) -> ServiceContext:
    """Instance name, database and migrations, bus, then - once active - the service's own setup, relay
    and consumer.

    With VOLGUARD_INSTANCE=auto the replica first claims its name (volguard_common.instance) and keeps
    it while it runs; `on_instance_lost` is called if it loses it.

    A single-active service that finds its lease free returns active; otherwise it returns as a
    standby and activates in the background once it holds the lease. `on_failure` is called after a
    lost lease or a failed activation has stopped the consumer (the process exits there); in-process
    tests leave it None and read `context.failure`. The ASGI app calls this at startup; integration
    tests call it directly to run a service in-process against real Redis and Postgres.
    """
    claim: InstanceClaim | None = None
    if settings.instance == INSTANCE_AUTO:
        claim = await claim_instance(redis, settings.stream_namespace, spec.name)
        settings = settings.model_copy(update={"instance": claim.instance})
    log.info(
        "starting", service=spec.name, instance=settings.instance, mode=settings.mode, feed=settings.feed
    )
    await db.ensure_database(settings.database_url)
    pool = await db.create_pool(settings.database_url)
    started: list[ServiceContext] = []
    try:
        return await _start_on(
            spec, settings, redis, pool, claim, broker, on_failure, on_instance_lost, started
        )
    except BaseException:
        # A start that fails or is cancelled half-way leaves nothing running or open behind it: no
        # task, no pooled connection, no claimed name (a later start tries again from scratch).
        if started:
            context = started[0]
            pending = [*context.tasks, *([context.lease_task] if context.lease_task else [])]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await context.consumer.stop(grace_s=0)
        pool.terminate()
        if claim is not None:
            await claim.release()
        raise


async def _start_on(
    spec: ServiceSpec,
    settings: Settings,
    redis: Redis,
    pool: db.Pool,
    claim: InstanceClaim | None,
    broker: RedisBroker | None,
    on_failure: Callable[[ServiceContext], None] | None,
    on_instance_lost: Callable[[str], None] | None,
    started: list[ServiceContext],
) -> ServiceContext:
    async with pool.acquire() as conn:
        await db.ensure_core_schema(conn)
        if spec.schema is not None and spec.migrations_package is not None:
            await db.apply_migrations(conn, spec.schema, db.load_migrations(spec.migrations_package))
    bus_config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, bus_config, service=spec.name, source=f"{spec.name}/{settings.instance}")
    consumer = Consumer(
        redis,
        bus_config,
        publisher,
        service=spec.name,
        consumer_name=consumer_name(spec.name, settings.instance),
    )
    if spec.name in streams.GROUP_PER_REPLICA:
        # Every replica sees every entry: a group of its own rather than a share of the service's.
        consumer.group = streams.replica_group_name(spec.name, settings.instance)
    context = ServiceContext(
        spec, settings, broker or RedisBroker(settings.redis_url), redis, pool, publisher, consumer
    )
    started.append(context)
    if claim is not None:
        context.instance_claim = claim

        def _lost(reason: str) -> None:
            log.error("instance name lost", instance=settings.instance, reason=reason)
            if on_instance_lost is not None:
                on_instance_lost(reason)

        context.tasks.append(asyncio.create_task(claim.keep(_lost), name=f"instance-claim:{claim.instance}"))
    context.on_failure = on_failure
    await follow_live_calendar(context)
    context.relay = outbox.OutboxRelay(
        pool,
        redis,
        bus_config,
        publisher=spec.name,
        database_url=settings.database_url,
        poll_interval_ms=settings.outbox_poll_interval_ms,
        sent_ttl_s=settings.outbox_sent_ttl_s,
    )
    if not spec.single_active:
        await _activate(context)
        return context
    context.lease = Lease(
        redis,
        namespace=settings.stream_namespace,
        service=spec.name,
        account=settings.account_id,
        holder=consumer_name(spec.name, settings.instance),
        ttl_ms=settings.lease_ttl_ms,
        poll_interval_ms=settings.lease_poll_interval_ms,
    )
    # One attempt before returning: a replica that finds the lease free (the only one, the first to
    # start) is active when start-up completes, as every other service is.
    lease = context.lease
    keeper: asyncio.Task[None] | None = None
    if await lease.try_acquire(floor=await Fence.highest(pool, lease.name)) is not None:
        keeper = asyncio.create_task(lease.keep(), name="lease-keeper")
        try:
            await _take_over(context)
        except BaseException:
            keeper.cancel()
            raise
    else:
        log.info("standing by for the lease", service=spec.name, lease=lease.name)
    context.lease_task = asyncio.create_task(_hold_lease(context, keeper), name="lease")
    return context


async def _activate(context: ServiceContext) -> None:
    """The service's setup, its relay and log-stream trimmer, then its consumer."""
    spec, settings = context.spec, context.settings
    if spec.setup is not None:
        await spec.setup(context)
    for stream in streams.SUBSCRIPTIONS[spec.name]:
        if stream not in context.consumer.streams:
            # Not handled yet: the group is created (its backlog and lag stay visible) but nothing is
            # read, so a command waits, unacknowledged, for the handler that will act on it.
            context.consumer.declare(stream)
    assert context.relay is not None
    relay = asyncio.create_task(context.relay.run(), name="outbox-relay")
    trim = asyncio.create_task(
        outbox.trim_periodically(
            context.redis,
            BusConfig.from_settings(settings),
            settings.stream_trim_interval_ms,
            settings.log_stream_retention_h * 3_600_000,
        ),
        name="log-stream-trim",
    )
    for task in (relay, trim):
        _watch(context, task)
        context.tasks.append(task)
    # The single active replica starts where its predecessor stopped: its unacknowledged entries first.
    await context.consumer.start(take_over_pending=spec.single_active)
    # A consumer that fails beyond retrying stops this replica acting, like a lost lease: the process
    # exits non-zero for its supervisor to restart it, never a live process that handles nothing.
    watcher = asyncio.create_task(_stop_acting_when_consumer_fails(context), name="consumer-watch")
    context.tasks.append(watcher)
    context.role = "active"
    unhandled = [s for s in streams.SUBSCRIPTIONS[spec.name] if s not in context.consumer.streams]
    log.info(
        "started",
        service=spec.name,
        subscriptions=list(context.consumer.streams),
        unhandled=unhandled,
        fencing_token=context.fencing_token,
    )


async def _take_over(context: ServiceContext) -> None:
    """Write our fencing token, then activate: the previous holder, if it still runs, has every
    later write refused from here on."""
    lease = context.lease
    assert lease is not None
    assert lease.acquisition is not None
    async with context.pool.acquire() as conn, conn.transaction():
        await lease.fence.check(conn)
    log.info(
        "lease taken; activating",
        lease=lease.name,
        token=lease.acquisition.token,
        takeover_gap_ms=lease.acquisition.takeover_gap_ms,
    )
    await _activate(context)


async def _hold_lease(context: ServiceContext, keeper: asyncio.Task[None] | None) -> None:
    """Wait for the lease unless held already, activate, keep it; on loss stop consuming at once and
    report the failure."""
    lease = context.lease
    assert lease is not None
    try:
        if keeper is None:
            # The floor keeps tokens above any Postgres has seen, even if Redis lost its counter.
            await lease.wait_for(floor=await Fence.highest(context.pool, lease.name))
            keeper = asyncio.create_task(lease.keep(), name="lease-keeper")
            await _take_over(context)
        await keeper
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a lost lease or a failed activation: escalated, the process exits non-zero
        log.exception("single-active service stops acting", lease=lease.name)
        await _stop_acting(context, f"{type(exc).__name__}: {exc}")
    finally:
        if keeper is not None:
            keeper.cancel()


async def _stop_acting(context: ServiceContext, failure: str) -> None:
    """Stop consuming at once and stop every task, then hand over to `on_failure` (the exit)."""
    if context.failure is not None:
        return
    context.failure = failure
    context.role = "standby"
    await context.consumer.stop(grace_s=0)
    current = asyncio.current_task()
    others = [t for t in context.tasks if t is not current]
    if context.lease_task is not None and context.lease_task is not current:
        others.append(context.lease_task)
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    if context.lease is not None:
        # Hand over now rather than after the ttl: releasing is compare-and-delete, so a lease that
        # is already someone else's is left alone.
        try:
            await asyncio.wait_for(context.lease.release(), timeout=2)
        except (OSError, TimeoutError, RedisError) as exc:
            log.warning("could not release the lease; the standby waits for its ttl", error=repr(exc))
    if context.on_failure is not None:
        context.on_failure(context)


async def _stop_acting_when_consumer_fails(context: ServiceContext) -> None:
    await context.consumer.failed.wait()
    await _stop_acting(context, f"consumer failed: {context.consumer.failure}")


def _watch(context: ServiceContext, task: asyncio.Task[Any]) -> None:
    """A background task (relay, trimmer, a service's own loops) that ends by itself has failed: never
    let it die quietly."""

    def done(finished: asyncio.Task[Any]) -> None:
        if finished.cancelled() or context.failure is not None:
            return
        error = finished.exception()
        failure = f"task {finished.get_name()} ended: {error!r}"
        log.error("service task died; the replica stops acting", task=finished.get_name(), error=repr(error))
        context.tasks.append(asyncio.create_task(_stop_acting(context, failure), name="stop-acting"))

    task.add_done_callback(done)


def _exit_at_once(context: ServiceContext) -> None:
    # Not a graceful shutdown: the lease is gone (another replica may already act; anything this one
    # still did would be a stale holder's work, refused by the fence anyway) or a task it cannot run
    # without died. The supervisor restarts the process.
    log.critical("the replica stopped acting; exiting", service=context.spec.name, error=context.failure)
    os._exit(LEASE_LOST_EXIT_CODE)


def _role_of(state: _State) -> dict[str, Any]:
    context = state.context
    if context is None:
        return {"role": "standby", "fencing_token": None}
    role: dict[str, Any] = {"role": context.role, "fencing_token": context.fencing_token}
    if context.lease is not None and context.lease.acquisition is not None:
        # Redis time from the previous holder's last renewal to our acquisition: the takeover
        # actually achieved, against the documented bound of ttl + poll interval.
        role["takeover_gap_ms"] = context.lease.acquisition.takeover_gap_ms
    return role


async def stop_service(context: ServiceContext) -> None:
    """Finish and acknowledge in-flight messages, stop the service's tasks, close the pool."""
    spec = context.spec
    log.info("stopping", service=spec.name)
    if context.lease_task is not None and context.role != "active":
        # A standby stops waiting first, so it cannot take the lease while it stops.
        context.lease_task.cancel()
        await asyncio.gather(context.lease_task, return_exceptions=True)
    # The holder keeps renewing its lease while in-flight handlers finish: a lease lapsing mid-drain
    # would fence their last commits and hand their entries to a standby as leftovers.
    await context.consumer.stop(grace_s=context.settings.stop_grace_s * CONSUMER_STOP_SHARE)
    if context.lease_task is not None:
        context.lease_task.cancel()
        await asyncio.gather(context.lease_task, return_exceptions=True)
    for task in context.tasks:
        task.cancel()
    await asyncio.gather(*context.tasks, return_exceptions=True)
    if spec.teardown is not None and context.role == "active":
        await spec.teardown(context)
    if context.lease is not None and context.role == "active":
        await context.lease.release()
    await context.pool.close()
    if context.instance_claim is not None:
        # Last: until the consumer stopped, the name was still in use.
        await context.instance_claim.release()
    log.info("stopped", service=spec.name)


async def readiness(state: _State) -> dict[str, bool]:
    context = state.context
    if context is None:
        return {"started": False, "redis": False, "postgres": False, "migrations": state.migrations_ok}
    # A healthy hot standby is ready too: ready to take over is its whole job, and an orchestrator's
    # rolling update waits for each replaced pod to be Ready (a standby that never is would stall it).
    # The body's `role` says which replica acts. An active replica is ready only while it consumes.
    checks = {"started": True, "migrations": state.migrations_ok, "acting": context.failure is None}
    if context.role == "active" or context.failure is not None:
        checks["consumer"] = context.consumer.healthy
    try:
        checks["redis"] = bool(await asyncio.wait_for(context.redis.ping(), timeout=2))  # type: ignore[arg-type]
    except (OSError, TimeoutError, ConnectionError) as exc:
        log.warning("readiness: redis unreachable", error=repr(exc))
        checks["redis"] = False
    try:
        async with context.pool.acquire(timeout=2) as conn:
            checks["postgres"] = await conn.fetchval("select 1") == 1
            spec = context.spec
            if spec.schema is not None and spec.migrations_package is not None:
                checks["migrations"] = await db.migrations_applied(
                    conn, spec.schema, db.load_migrations(spec.migrations_package)
                )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        log.warning("readiness: postgres unreachable", error=repr(exc))
        checks["postgres"] = False
    return checks


def local_calendar(settings: Settings) -> clock.TradingCalendar:
    """The calendar this machine knows without the broker: the bundled one, with the holidays of an
    imported NSE holiday file (`volguard calendar import`) when there is one."""
    path = settings.holidays_file_in_use()
    if path is None:
        return clock.bundled_nse_calendar()
    return clock.calendar_with_holidays(clock.holidays_from_csv(path.read_text(encoding="utf-8")))


def install_holidays_file(settings: Settings) -> None:
    """Trade by an imported NSE holiday file when there is one (`volguard calendar import`)."""
    path = settings.holidays_file_in_use()
    if path is None:
        return
    calendar = local_calendar(settings)
    clock.install_calendar(calendar)
    log.info("holiday file in use", path=str(path), covered_to=str(calendar.last_day))


async def follow_live_calendar(context: ServiceContext) -> None:
    """With the Upstox feed, trade by the broker-corrected calendar market_data shares: installed now
    (before the service's setup, so its first decision uses it) and whenever it changes."""
    settings = context.settings
    if settings.feed != "upstox":
        return
    follower = live_calendar.CalendarFollower(
        context.redis, settings.stream_namespace, poll_s=settings.calendar_poll_s, publisher=context.publisher
    )
    try:
        await follower.sync()
    except (RedisError, OSError) as exc:
        log.warning("shared calendar not read at start; the follower retries", error=repr(exc))
    task = asyncio.create_task(follower.run(), name="live-calendar")
    _watch(context, task)
    context.tasks.append(task)
    context.extensions["live_calendar"] = follower


def run(spec: ServiceSpec) -> None:
    """`python -m volguard_<name>`: serve the app until SIGINT/SIGTERM."""
    settings = load_settings_or_exit()
    loop = "asyncio" if importlib.util.find_spec("uvloop") is None else "uvloop"
    state = _State()
    app = build_app(spec, settings, state)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.own_port(spec.name),
        log_config=None,
        access_log=False,
        loop=loop,
        lifespan="on",
        # The dashboard's /ws: websockets' current implementation, not its deprecated legacy one.
        ws="websockets-sansio",
        # Open connections (health probes, dashboard WebSockets) get this share; the lifespan shutdown
        # (stop_service) has the rest of VOLGUARD_STOP_GRACE_S.
        timeout_graceful_shutdown=max(1, round(settings.stop_grace_s * HTTP_DRAIN_SHARE)),
    )
    server = _GracefulServer(config)
    server.run()
    if not server.started:
        # Startup failed (Redis/Postgres unreachable, a migration refused): the supervisor restarts us.
        raise SystemExit(3)
    if state.exit_code is not None:
        raise SystemExit(state.exit_code)


class _GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop would look like a kill.

    Here a shutdown that completed exits 0; the supervisor and orchestrators can then tell a clean
    stop from a crash.
    """

    def _reraise_captured_signals(self) -> None:
        self._captured_signals.clear()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._reraise_captured_signals()
