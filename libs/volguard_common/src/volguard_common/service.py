"""What every VolGuard process shares: one `AsgiFastStream` app wired to the bus and Postgres.

A service module declares a `ServiceSpec` (its name, where its migrations live, and a `setup` that
subscribes handlers and starts its own tasks) and calls `run(spec)`. This module supplies the rest:
settings and logging, the database and the service's migrations (under the advisory lock), the
FastStream `RedisBroker` whose connection the bus uses, `/health`, `/ready` and `/metrics`, declared
publishers (so the AsyncAPI document shows the real wiring), and a graceful stop on SIGTERM: uvicorn
turns the signal into the lifespan shutdown, where the consumer finishes and acknowledges what is in
flight before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
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
from volguard_common.bus import BusConfig, Consumer, Publisher
from volguard_common.logging import adopt_stdlib_logger, configure_logging
from volguard_common.settings import Settings, load_settings_or_exit

log = structlog.get_logger("volguard.service")


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
    watcher: asyncio.Task[None] | None = None


async def _watch_consumer(consumer: Consumer, on_failure: Callable[[str], None]) -> None:
    await consumer.failed.wait()
    on_failure(consumer.failure or "consumer failed")


def _schema_of(stream: str) -> Any:
    """The event type (or union of types) a stream carries, for the AsyncAPI document."""
    types = events.EVENTS_ON[stream]
    return types[0] if len(types) == 1 else Union[types]  # noqa: UP007 - a runtime union of classes


def consumer_name(service: str, instance: str) -> str:
    """Stable per replica: a restarted replica drains the pending entries it left behind."""
    return f"{service}-{instance}"


# Exit status of a process whose consumer failed beyond retrying (3 is a failed startup): the
# supervisor restarts it, where a stuck process would look alive while handling nothing.
EXIT_CONSUMER_FAILED = 4


def build_app(
    spec: ServiceSpec, settings: Settings, *, on_consumer_failure: Callable[[str], None] | None = None
) -> AsgiFastStream:
    """The service's ASGI app: FastStream lifespan + health, readiness and metrics routes.

    `on_consumer_failure` is told why when the consumer fails for good (`run` stops the server then).
    """
    broker = RedisBroker(settings.redis_url, logger=adopt_stdlib_logger("faststream.access.redis"))
    # Declared for the AsyncAPI document only: the bus's Publisher does the actual XADDs.
    for stream in streams.PUBLICATIONS[spec.name]:
        broker.publisher(
            stream=settings.stream_namespace + stream,
            title=f"{spec.name}:{stream}",
            description=streams.spec(stream).description,
            schema=_schema_of(stream),
        )
    state = _State()

    async def on_startup() -> None:
        configure_logging(spec.name, fmt=settings.log_format, level=settings.log_level)
        redis: Redis = await broker.connect()
        state.context = await start_service(spec, settings, redis, broker=broker)
        state.migrations_ok = True
        if on_consumer_failure is not None:
            state.watcher = asyncio.create_task(_watch_consumer(state.context.consumer, on_consumer_failure))

    async def on_shutdown() -> None:
        if state.watcher is not None:
            state.watcher.cancel()
        if state.context is not None:
            await stop_service(state.context)

    @get(include_in_schema=False)
    async def health(scope: Any) -> AsgiResponse:
        """Liveness: the process answers."""
        return JSONResponse({"service": spec.name, "instance": settings.instance, "status": "ok"})

    @get(include_in_schema=False)
    async def ready(scope: Any) -> AsgiResponse:
        """Readiness: Redis and Postgres reachable, migrations applied, consumer healthy."""
        checks = await readiness(state)
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
    spec: ServiceSpec, settings: Settings, redis: Redis, *, broker: RedisBroker | None = None
) -> ServiceContext:
    """Database and migrations, bus, the service's own setup, then the consumer: a running service.

    The ASGI app calls this at startup; integration tests call it directly to run a service in-process
    against real Redis and Postgres.
    """
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
    if spec.setup is not None:
        await spec.setup(context)
    for stream in streams.SUBSCRIPTIONS[spec.name]:
        if stream not in consumer.streams:
            # Not handled yet: the group is created (its backlog and lag stay visible) but nothing is
            # read, so a command waits, unacknowledged, for the handler that will act on it.
            consumer.declare(stream)
    await consumer.start()
    unhandled = [s for s in streams.SUBSCRIPTIONS[spec.name] if s not in consumer.streams]
    log.info("started", service=spec.name, subscriptions=list(consumer.streams), unhandled=unhandled)
    return context


async def stop_service(context: ServiceContext) -> None:
    """Finish and acknowledge in-flight messages, stop the service's tasks, close the pool."""
    spec = context.spec
    log.info("stopping", service=spec.name)
    await context.consumer.stop()
    for task in context.tasks:
        task.cancel()
    await asyncio.gather(*context.tasks, return_exceptions=True)
    if spec.teardown is not None:
        await spec.teardown(context)
    await context.pool.close()
    log.info("stopped", service=spec.name)


async def readiness(state: _State) -> dict[str, bool]:
    context = state.context
    if context is None:
        return {
            "started": False,
            "redis": False,
            "postgres": False,
            "migrations": state.migrations_ok,
            "consumer": False,
        }
    # A consumer task that failed beyond retrying: not ready, whatever else answers (the process is
    # on its way out to be restarted).
    checks = {"started": True, "migrations": state.migrations_ok, "consumer": context.consumer.healthy}
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
    consumer_failures: list[str] = []

    def consumer_failed(reason: str) -> None:
        consumer_failures.append(reason)
        log.critical("consumer failed; stopping the service to be restarted", reason=reason)
        server.should_exit = True

    app = build_app(spec, settings, on_consumer_failure=consumer_failed)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.port_for(spec.name),
        log_config=None,
        access_log=False,
        loop=loop,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = _GracefulServer(config)
    server.run()
    if not server.started:
        # Startup failed (Redis/Postgres unreachable, a migration refused): the supervisor restarts us.
        raise SystemExit(3)
    if consumer_failures:
        raise SystemExit(EXIT_CONSUMER_FAILED)


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
