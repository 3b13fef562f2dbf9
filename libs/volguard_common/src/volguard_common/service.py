"""What every VolGuard process shares: one `AsgiFastStream` app wired to the bus and Postgres.

A service module declares a `ServiceSpec` (its name, where its migrations live, and a `setup` that
subscribes handlers and starts its own tasks) and calls `run(spec)`. This module supplies the rest:
settings and logging, the database and the service's migrations (under the advisory lock), the
FastStream `RedisBroker` whose connection the bus uses, `/health`, `/ready` and `/metrics`, declared
publishers (so the AsyncAPI document shows the real wiring), and a graceful stop on SIGTERM: uvicorn
turns the signal into the lifespan shutdown, where the consumer finishes and acknowledges what is in
flight before the process exits.

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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import asyncpg
import structlog
import uvicorn
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.response import JSONResponse
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI
from redis.asyncio import Redis

from volguard_common import db, events, metrics, streams
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher
from volguard_common.instance import InstanceClaim, claim_instance
from volguard_common.logging import adopt_stdlib_logger, configure_logging
from volguard_common.settings import INSTANCE_AUTO, Settings, load_settings_or_exit

log = structlog.get_logger("volguard.service")

# Shares of VOLGUARD_STOP_GRACE_S (see the module docstring); what is left after both (25 %) closes the
# service's tasks, its teardown and the pool.
HTTP_DRAIN_SHARE = 0.15
CONSUMER_STOP_SHARE = 0.6
# Exit status of a replica that lost its claimed instance name: not a clean stop, restart it.
EXIT_INSTANCE_LOST = 4
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
    # The instance name claimed in Redis when VOLGUARD_INSTANCE=auto (then `settings.instance` is it).
    instance_claim: InstanceClaim | None = None

    @property
    def source(self) -> str:
        return self.publisher.source


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


async def log_received(event: events.Event, delivery: Delivery) -> None:
    """Default handler of a subscribed stream the service does not handle yet: say what arrived."""
    log.info(
        "received",
        stream=delivery.stream,
        event_type=event.type,
        entry_id=delivery.entry_id,
        deliveries=delivery.deliveries,
    )


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
        # Another replica may consume under our name now: stop taking entries at once, and exit non-zero.
        log.error("instance name lost; stopping", reason=reason)
        process.exit_code = EXIT_INSTANCE_LOST
        os.kill(os.getpid(), signal.SIGTERM)

    async def on_startup() -> None:
        configure_logging(spec.name, fmt=settings.log_format, level=settings.log_level)
        redis: Redis = await broker.connect()
        process.context = await start_service(
            spec, settings, redis, broker=broker, on_instance_lost=instance_lost
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
        """Liveness: the process answers."""
        instance = process.context.settings.instance if process.context is not None else settings.instance
        return JSONResponse({"service": spec.name, "instance": instance, "status": "ok"})

    @get(include_in_schema=False)
    async def ready(scope: Any) -> AsgiResponse:
        """Readiness: Redis and Postgres reachable, migrations applied, consumer running."""
        checks = await readiness(process)
        ok = all(checks.values())
        return JSONResponse(
            {"service": spec.name, "ready": ok, "checks": checks}, status_code=200 if ok else 503
        )

    return AsgiFastStream(
        broker,
        asgi_routes=[("/health", health), ("/ready", ready), ("/metrics", metrics.metrics_asgi_app())],
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        asyncapi_path="/docs/asyncapi",
        specification=AsyncAPI(title=f"volguard {spec.name}", description=spec.description),
    )


async def start_service(
    spec: ServiceSpec,
    settings: Settings,
    redis: Redis,
    *,
    broker: RedisBroker | None = None,
    on_instance_lost: Callable[[str], None] | None = None,
) -> ServiceContext:
    """Instance name, database and migrations, bus, the service's own setup, then the consumer.

    The ASGI app calls this at startup; integration tests call it directly to run a service in-process
    against real Redis and Postgres. With VOLGUARD_INSTANCE=auto the replica first claims its name
    (volguard_common.instance) and keeps it while it runs; `on_instance_lost` is called if it loses it.
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
    context = ServiceContext(
        spec, settings, broker or RedisBroker(settings.redis_url), redis, pool, publisher, consumer
    )
    if claim is not None:
        context.instance_claim = claim

        def _lost(reason: str) -> None:
            log.error("instance name lost", instance=settings.instance, reason=reason)
            if on_instance_lost is not None:
                on_instance_lost(reason)

        context.tasks.append(asyncio.create_task(claim.keep(_lost), name=f"instance-claim:{claim.instance}"))
    if spec.setup is not None:
        await spec.setup(context)
    for stream in streams.SUBSCRIPTIONS[spec.name]:
        if stream not in consumer.streams:
            consumer.subscribe(stream, log_received)
    await consumer.start()
    log.info("started", service=spec.name, subscriptions=list(consumer.streams))
    return context


async def stop_service(context: ServiceContext) -> None:
    """Finish and acknowledge in-flight messages, stop the service's tasks, close the pool."""
    spec = context.spec
    log.info("stopping", service=spec.name)
    await context.consumer.stop(grace_s=context.settings.stop_grace_s * CONSUMER_STOP_SHARE)
    for task in context.tasks:
        task.cancel()
    await asyncio.gather(*context.tasks, return_exceptions=True)
    if spec.teardown is not None:
        await spec.teardown(context)
    await context.pool.close()
    if context.instance_claim is not None:
        # Last: until the consumer stopped, the name was still in use.
        await context.instance_claim.release()
    log.info("stopped", service=spec.name)


async def readiness(state: _State) -> dict[str, bool]:
    context = state.context
    if context is None:
        return {"started": False, "redis": False, "postgres": False, "migrations": state.migrations_ok}
    checks = {"started": True, "migrations": state.migrations_ok}
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
