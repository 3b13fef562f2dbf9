"""At-least-once delivery over Redis Streams (DESIGN §3), once for every service.

FastStream's stream subscriber is not at-least-once on its own (checked with 0.7.8): a nack sends
nothing to Redis, a restarted consumer never re-reads its own pending list, there is no retry limit or
dead-letter stream, and a lost group (NOGROUP after a flush) restarts in a hot loop (ag2ai/faststream
#2611, #3106; #2694 for a backlog published before the group exists). So the consume loop lives here,
on the Redis connection of the service's FastStream `RedisBroker`:

- one consumer group per service, one stable consumer name per replica;
- on start a consumer drains its own pending entries, then reads new ones (`>`);
- an entry is acknowledged only after its handler returned; on failure it stays pending;
- a claimer re-delivers entries idle longer than `claim_idle_ms` (XAUTOCLAIM) — including this
  consumer's own failed ones — and after `max_deliveries` deliveries moves the entry to
  `dlq.<stream>` with the last error, acknowledges it and publishes an Alert;
- entries being handled are kept fresh (XCLAIM JUSTID) so a slow handler is not stolen mid-flight;
- a malformed event cannot succeed on retry: it goes to the DLQ at once;
- NOGROUP is answered by recreating the group from the start of the stream, with an Alert and a
  growing back-off, never a hot loop;
- `stop()` lets in-flight handlers finish and acknowledge, then returns (SIGTERM path).

Idempotent side effects are the handler's job, with `volguard_common.db.once` recording the
`event_id` in the same Postgres transaction as the effect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from volguard_common import events, metrics, streams
from volguard_common.clock import IST
from volguard_common.logging import bind_message_context

log = structlog.get_logger("volguard.bus")

EVENT_FIELD = b"event"
_TRANSIENT_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Delivery tuning; production values come from Settings, tests shorten the timings."""

    namespace: str = ""
    block_ms: int = 1000
    batch: int = 32
    claim_idle_ms: int = 30_000
    claim_interval_ms: int = 5_000
    max_deliveries: int = 5
    # Upper bound of the back-off after NOGROUP or a lost connection.
    max_backoff_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any) -> BusConfig:
        return cls(
            namespace=settings.stream_namespace,
            block_ms=settings.bus_block_ms,
            batch=settings.bus_batch,
            claim_idle_ms=settings.bus_claim_idle_ms,
            claim_interval_ms=settings.bus_claim_interval_ms,
            max_deliveries=settings.bus_max_deliveries,
        )

    def key(self, stream: str) -> str:
        """The Redis key of a logical stream name."""
        return f"{self.namespace}{stream}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where and how often the event in hand was delivered."""

    stream: str
    entry_id: str
    deliveries: int
    consumer: str


Handler = Callable[[events.Event, Delivery], Awaitable[None]]
ConflateKey = Callable[[events.Event], Hashable]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now_ist() -> datetime:
    return datetime.now(IST)


class Publisher:
    """Publishes typed events to their streams, capping snapshot streams at publish time."""

    def __init__(self, redis: Redis, config: BusConfig, *, service: str, source: str) -> None:
        self._redis = redis
        self._config = config
        self._service = service
        self.source = source

    async def publish(self, event: events.Event, stream: str | None = None) -> str:
        """XADD `event` to `stream` (default: the stream its type travels on); returns the entry id."""
        name = stream if stream is not None else type(event).STREAM
        spec = streams.spec(name) if not name.startswith(streams.DLQ_PREFIX) else None
        payload = event.model_dump_json().encode()
        maxlen = spec.maxlen if spec is not None else None
        entry_id = await self._redis.xadd(
            self._config.key(name), {EVENT_FIELD: payload}, maxlen=maxlen, approximate=maxlen is not None
        )
        metrics.events_out(self._service, name, event.type)
        return _text(entry_id)

    async def publish_raw(self, stream: str, payload: bytes, event_type: str) -> str:
        """XADD an already-serialised event unchanged (replay: byte-for-byte the recorded session).

        The caller vouches that `payload` is a valid event; consumers still validate it on arrival.
        """
        spec = streams.spec(stream)
        entry_id = await self._redis.xadd(
            self._config.key(stream),
            {EVENT_FIELD: payload},
            maxlen=spec.maxlen,
            approximate=spec.maxlen is not None,
        )
        metrics.events_out(self._service, stream, event_type)
        return _text(entry_id)

    async def publish_many(self, publications: Sequence[tuple[str, bytes, str]]) -> list[str]:
        """XADD several serialised events (stream, payload, event type) in one pipelined round trip.

        In order, not atomically: a crash part-way publishes a prefix, as sequential publishes would.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, payload, _ in publications:
                spec = streams.spec(stream)
                pipe.xadd(
                    self._config.key(stream),
                    {EVENT_FIELD: payload},
                    maxlen=spec.maxlen,
                    approximate=spec.maxlen is not None,
                )
            entry_ids = await pipe.execute()
        for stream, _, event_type in publications:
            metrics.events_out(self._service, stream, event_type)
        return [_text(entry_id) for entry_id in entry_ids]

    async def alert(
        self,
        severity: events.Severity,
        code: str,
        message: str,
        *,
        ts_event: datetime,
        correlation_id: str | None = None,
        details: dict[str, str | int | float | bool | None] | None = None,
    ) -> None:
        """Publish an Alert about something that happened at `ts_event`: the event time of what caused
        it (the chain set with the VIX spike, the feed status that went stale), so a replay raises the
        same alerts at the same times. Only faults of the process itself happen in wall time."""
        if correlation_id is None:
            alert = events.Alert(
                ts_event=ts_event,
                source=self.source,
                severity=severity,
                code=code,
                message=message,
                details=details or {},
            )
        else:
            alert = events.Alert(
                ts_event=ts_event,
                source=self.source,
                severity=severity,
                code=code,
                message=message,
                details=details or {},
                correlation_id=correlation_id,
            )
        await self.publish(alert, streams.SYS_ALERTS.name)


@dataclass
class _Subscription:
    stream: str
    handler: Handler
    conflate_key: ConflateKey | None
    key: str = ""
    # Entries this consumer holds right now; kept fresh so no other replica claims them mid-handler.
    in_flight: set[str] = field(default_factory=set)
    # One handler at a time per stream: the reader and the claimer never interleave, so a stream's
    # events reach the handler in the order this consumer took them.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Consumer:
    """One service replica's consumer: a group per service, a stable name per replica."""

    def __init__(
        self,
        redis: Redis,
        config: BusConfig,
        publisher: Publisher,
        *,
        service: str,
        consumer_name: str,
    ) -> None:
        self._redis = redis
        self._config = config
        self._publisher = publisher
        self.service = service
        self.group = streams.group_name(service)
        self.name = consumer_name
        self._subs: dict[str, _Subscription] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Our tasks while parked in a blocking read or a back-off sleep (never in a handler): the only
        # moments stop() may cancel them.
        self._parked: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._started = False
        self.group_recoveries = 0
        self.claim_cycles = 0
        # Called with (stream, entry ids) after each acknowledgement: instrumentation and benchmarks.
        self.ack_listeners: list[Callable[[str, Sequence[str]], None]] = []

    # ---- wiring -------------------------------------------------------------------------------
    def subscribe(self, stream: str, handler: Handler, *, conflate_key: ConflateKey | None = None) -> None:
        """Handle every event on `stream` with `handler`.

        `conflate_key` is for snapshot streams only: within one batch read while behind, only the
        newest event per key is handled (the older ones are acknowledged unhandled), so a slow
        consumer catches up instead of working through stale snapshots.
        """
        spec = streams.spec(stream)
        if conflate_key is not None and spec.retention is not streams.Retention.SNAPSHOT:
            raise ValueError(f"{stream} is a log stream: every entry must be handled, none conflated")
        if stream in self._subs:
            raise ValueError(f"{self.service} already subscribes to {stream}")
        self._subs[stream] = _Subscription(stream, handler, conflate_key, key=self._config.key(stream))

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._subs)

    async def start(self) -> None:
        """Create missing groups, then start one reader per stream and the claimer."""
        if self._started:
            raise RuntimeError("consumer already started")
        self._started = True
        for sub in self._subs.values():
            await self._ensure_group(sub)
        for sub in self._subs.values():
            self._tasks.append(asyncio.create_task(self._read_loop(sub), name=f"read:{sub.stream}"))
        if self._subs:
            self._tasks.append(asyncio.create_task(self._claim_loop(), name="claimer"))
        log.info("consumer started", group=self.group, consumer=self.name, streams=list(self._subs))

    async def stop(self, grace_s: float = 30.0) -> None:
        """Finish the handlers in flight (and acknowledge them), then stop reading.

        Entries read but not yet started stay pending on this consumer; its next start drains them.
        After `grace_s` the remaining handlers are cancelled and their entries stay pending too.
        """
        self._stopping = True
        for task in list(self._parked):
            task.cancel()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("consumer task failed", task=task.get_name(), error=repr(result))
        self._tasks.clear()
        log.info("consumer stopped", group=self.group, consumer=self.name, forced=len(pending))

    # ---- groups -------------------------------------------------------------------------------
    def _group_start_id(self, sub: _Subscription) -> str:
        # Log streams: a new group starts at the beginning, so commands published before the first
        # start are not lost (faststream #2694). Snapshot streams: only what comes next matters.
        return "0" if streams.spec(sub.stream).retention is streams.Retention.LOG else "$"

    async def _ensure_group(self, sub: _Subscription, start_id: str | None = None) -> bool:
        """Create the group if missing; True when it had to be created."""
        try:
            await self._redis.xgroup_create(
                sub.key, self.group, id=start_id or self._group_start_id(sub), mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def _recover_group(self, sub: _Subscription, attempt: int) -> None:
        # After a flush the stream is new: everything in it arrived after the loss, so start at 0.
        created = await self._ensure_group(sub, start_id="0")
        self.group_recoveries += 1
        metrics.group_recovered(self.service, sub.stream)
        log.warning("consumer group lost; recreated", stream=sub.stream, group=self.group, created=created)
        if created:
            await self._publisher.alert(
                events.Severity.WARNING,
                "BUS_GROUP_RECREATED",
                f"consumer group {self.group} on {sub.stream} vanished (NOGROUP) and was recreated; "
                "entries added before the loss are gone",
                # A fault of the bus itself: it happens in wall time, not in the market's.
                ts_event=_now_ist(),
                details={"stream": sub.stream, "group": self.group},
            )
        await self._backoff(attempt)

    async def _backoff(self, attempt: int) -> None:
        delay = min(self._config.max_backoff_s, 0.05 * (2**attempt))
        await self._parked_call(asyncio.sleep(delay))

    async def _parked_call(self, awaitable: Awaitable[Any]) -> Any:
        """Await something `stop()` may cancel (a blocking read or a sleep, never a handler).

        The calling task itself is marked parked, rather than wrapping the read in a task of its own:
        a wrapper costs an extra event-loop turn on every wake-up, the hop latency the bus is about.
        A cancel landing just as a read returns only leaves those entries pending on this consumer,
        where its next start drains them.
        """
        task = asyncio.current_task()
        assert task is not None
        if self._stopping:
            raise asyncio.CancelledError
        self._parked.add(task)
        try:
            return await awaitable
        finally:
            self._parked.discard(task)

    # ---- reading ------------------------------------------------------------------------------
    async def _read_loop(self, sub: _Subscription) -> None:
        failures = 0
        drained = False
        while not self._stopping:
            try:
                if not drained:
                    await self._drain_own_pending(sub)
                    drained = True
                    continue
                response = await self._parked_call(
                    self._redis.xreadgroup(
                        self.group,
                        self.name,
                        {sub.key: ">"},
                        count=self._config.batch,
                        block=self._config.block_ms,
                    )
                )
                failures = 0
                entries = response[0][1] if response else []
                if entries:
                    async with sub.lock:
                        await self._handle_batch(sub, entries, deliveries=None)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                failures += 1
                await self._recover_group(sub, failures)
            except _TRANSIENT_REDIS_ERRORS as exc:
                failures += 1
                log.warning("redis unavailable; backing off", stream=sub.stream, error=repr(exc))
                await self._backoff(failures)

    async def _drain_own_pending(self, sub: _Subscription) -> None:
        """Re-handle what this consumer read before a restart but never acknowledged."""
        last_id = "0"
        while not self._stopping:
            response = await self._redis.xreadgroup(
                self.group, self.name, {sub.key: last_id}, count=self._config.batch
            )
            history = response[0][1] if response else []
            if not history:
                return
            last_id = _text(history[-1][0])
            # A pending entry trimmed from the stream comes back with no fields: nothing to deliver.
            trimmed = [_text(eid) for eid, fields in history if not fields]
            if trimmed:
                log.warning(
                    "own pending entries were trimmed before delivery", stream=sub.stream, count=len(trimmed)
                )
                await self._redis.xack(sub.key, self.group, *trimmed)
            entries = [(eid, fields) for eid, fields in history if fields]
            counts = await self._delivery_counts(sub, [_text(eid) for eid, _ in entries])
            log.info("draining own pending entries", stream=sub.stream, count=len(entries))
            async with sub.lock:
                await self._handle_batch(sub, entries, deliveries=counts)

    async def _delivery_counts(self, sub: _Subscription, entry_ids: Sequence[str]) -> dict[str, int]:
        if not entry_ids:
            return {}
        rows = await self._redis.xpending_range(
            sub.key, self.group, min=entry_ids[0], max=entry_ids[-1], count=len(entry_ids) + 64
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def _handle_batch(
        self,
        sub: _Subscription,
        entries: Sequence[tuple[bytes, dict[bytes, bytes]]],
        deliveries: dict[str, int] | None,
    ) -> None:
        parsed: list[tuple[str, dict[bytes, bytes], events.Event | None, str | None]] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            raw = fields.get(EVENT_FIELD)
            if raw is None:
                parsed.append((entry_id, fields, None, f"entry has no {EVENT_FIELD.decode()!r} field"))
                continue
            try:
                parsed.append((entry_id, fields, events.parse_event(raw), None))
            except ValidationError as exc:
                parsed.append((entry_id, fields, None, f"malformed event: {exc}"))

        skip: set[str] = set()
        if sub.conflate_key is not None and len(parsed) > 1:
            newest: dict[Hashable, str] = {}
            for entry_id, _, event, _ in parsed:
                if event is not None:
                    newest[sub.conflate_key(event)] = entry_id
            skip = {eid for eid, _, ev, _ in parsed if ev is not None and eid not in newest.values()}
            if skip:
                await self._redis.xack(sub.key, self.group, *skip)
                metrics.conflated(self.service, sub.stream, len(skip))

        # The whole batch is held from now until acknowledged: kept fresh against XAUTOCLAIM, so entries
        # waiting behind a slow handler are not claimed back and handled twice.
        held = [entry_id for entry_id, _, _, _ in parsed if entry_id not in skip]
        sub.in_flight.update(held)
        handled: list[tuple[str, int]] = []
        try:
            for entry_id, fields, event, problem in parsed:
                if entry_id in skip:
                    continue
                if self._stopping:
                    # Not started: stays pending on this consumer, drained at its next start.
                    return
                count = 1 if deliveries is None else deliveries.get(entry_id, 1)
                if event is None:
                    await self._dead_letter(sub, entry_id, fields, problem or "unreadable", count)
                elif count > self._config.max_deliveries:
                    error = await self._last_error(sub, entry_id)
                    await self._dead_letter(sub, entry_id, fields, error, count)
                elif await self._handle(sub, entry_id, fields, event, count):
                    handled.append((entry_id, count))
        finally:
            try:
                # Every entry is acknowledged only after its own handler returned; one round trip a batch.
                if handled:
                    await self._ack(sub, handled)
            finally:
                sub.in_flight.difference_update(held)

    async def _handle(
        self,
        sub: _Subscription,
        entry_id: str,
        fields: dict[bytes, bytes],
        event: events.Event,
        deliveries: int,
    ) -> bool:
        """Run the handler; True when it succeeded and the entry may be acknowledged."""
        delivery = Delivery(sub.stream, entry_id, deliveries, self.name)
        started = time.perf_counter()
        metrics.event_in(self.service, sub.stream, event.type, redelivered=deliveries > 1)
        with bind_message_context(
            correlation_id=event.correlation_id, event_id=event.event_id, stream=sub.stream
        ):
            try:
                await sub.handler(event, delivery)
            except Exception as exc:  # any handler failure leaves the entry pending (no default returned)
                metrics.handler_error(self.service, sub.stream, type(exc).__name__)
                log.exception(
                    "handler failed; entry stays pending",
                    entry_id=entry_id,
                    deliveries=deliveries,
                    max_deliveries=self._config.max_deliveries,
                )
                await self._record_error(sub, entry_id, exc)
                if deliveries >= self._config.max_deliveries:
                    await self._dead_letter(sub, entry_id, fields, _describe(exc), deliveries)
                return False
        metrics.handler_latency(self.service, sub.stream, event.type, time.perf_counter() - started)
        return True

    async def _ack(self, sub: _Subscription, handled: Sequence[tuple[str, int]]) -> None:
        ids = [entry_id for entry_id, _ in handled]
        retried = [entry_id for entry_id, deliveries in handled if deliveries > 1]
        if retried:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(sub.key, self.group, *ids)
                pipe.hdel(self._errors_key(sub), *retried)
                await pipe.execute()
        else:
            await self._redis.xack(sub.key, self.group, *ids)
        for listener in self.ack_listeners:
            listener(sub.stream, ids)

    # ---- failures -----------------------------------------------------------------------------
    def _errors_key(self, sub: _Subscription) -> str:
        return f"{self._config.namespace}bus:errors:{sub.stream}:{self.group}"

    async def _record_error(self, sub: _Subscription, entry_id: str, exc: BaseException) -> None:
        await self._redis.hset(self._errors_key(sub), entry_id, _describe(exc))  # type: ignore[misc]

    async def _last_error(self, sub: _Subscription, entry_id: str) -> str:
        error = await self._redis.hget(self._errors_key(sub), entry_id)  # type: ignore[misc]
        if error is None:
            return "no handler error recorded (the consumer holding it died mid-handler)"
        return _text(error)

    async def _dead_letter(
        self, sub: _Subscription, entry_id: str, fields: dict[bytes, bytes], error: str, deliveries: int
    ) -> None:
        dlq = streams.dlq_name(sub.stream)
        entry: dict[Any, Any] = {
            **fields,
            b"dlq_stream": sub.stream.encode(),
            b"dlq_entry_id": entry_id.encode(),
            b"dlq_group": self.group.encode(),
            b"dlq_consumer": self.name.encode(),
            b"dlq_deliveries": str(deliveries).encode(),
            b"dlq_error": error[:8000].encode(),
            b"dlq_at": _now_ist().isoformat().encode(),
        }
        # Copy and acknowledge atomically: the entry is never both lost and unacknowledged.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._config.key(dlq), entry)
            pipe.xack(sub.key, self.group, entry_id)
            pipe.hdel(self._errors_key(sub), entry_id)
            await pipe.execute()
        metrics.dead_lettered(self.service, sub.stream)
        log.error("entry moved to dead-letter stream", entry_id=entry_id, dlq=dlq, deliveries=deliveries)
        await self._publisher.alert(
            events.Severity.CRITICAL,
            "BUS_DEAD_LETTER",
            f"{sub.stream} entry {entry_id} moved to {dlq} after {deliveries} deliveries: {error[:300]}",
            # A delivery fault: wall time (the entry's own time is unknown when it does not parse).
            ts_event=_now_ist(),
            details={"stream": sub.stream, "entry_id": entry_id, "group": self.group, "dlq": dlq},
        )

    # ---- claiming -----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._parked_call(asyncio.sleep(self._config.claim_interval_ms / 1000))
                for sub in list(self._subs.values()):
                    if self._stopping:
                        return
                    await self._keep_in_flight_fresh(sub)
                    await self._record_backlog(sub)
                    await self._claim_idle(sub)
                self.claim_cycles += 1
                failures = 0
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The reader recreates the group; the claimer only waits for it.
                failures += 1
                await self._backoff(failures)
            except _TRANSIENT_REDIS_ERRORS as exc:
                failures += 1
                log.warning("claimer: redis unavailable; backing off", error=repr(exc))
                await self._backoff(failures)

    async def _record_backlog(self, sub: _Subscription) -> None:
        """consumer_lag / consumer_pending for this service's group (dashboards, alerts, lockstep views)."""
        for group in await self._redis.xinfo_groups(sub.key):
            if _text(group["name"]) == self.group:
                lag = group.get("lag")
                metrics.consumer_backlog(
                    self.service,
                    sub.stream,
                    self.group,
                    lag=None if lag is None else int(lag),
                    pending=int(group["pending"]),
                )

    async def _keep_in_flight_fresh(self, sub: _Subscription) -> None:
        if sub.in_flight:
            await self._redis.xclaim(
                sub.key, self.group, self.name, min_idle_time=0, message_ids=list(sub.in_flight), justid=True
            )

    async def _claim_idle(self, sub: _Subscription) -> None:
        cursor = "0-0"
        while not self._stopping:
            next_cursor, claimed, deleted = await self._redis.xautoclaim(
                sub.key,
                self.group,
                self.name,
                min_idle_time=self._config.claim_idle_ms,
                start_id=cursor,
                count=self._config.batch,
            )
            if deleted:
                # Trimmed away while pending (a capped snapshot stream): nothing left to deliver.
                log.warning(
                    "pending entries were trimmed before delivery", stream=sub.stream, count=len(deleted)
                )
            entries = [(eid, fields) for eid, fields in claimed if fields and _text(eid) not in sub.in_flight]
            if entries:
                counts = await self._delivery_counts(sub, [_text(eid) for eid, _ in entries])
                log.info("claimed idle entries", stream=sub.stream, count=len(entries))
                async with sub.lock:
                    await self._handle_batch(sub, entries, deliveries=counts)
            cursor = _text(next_cursor)
            if cursor == "0-0":
                return


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class GroupReport:
    group: str
    consumers: int
    pending: int
    # Entries not yet delivered to the group (Redis 7 XINFO GROUPS `lag`); None when Redis can't tell.
    lag: int | None
    last_delivered_id: str
    oldest_pending_idle_ms: int | None


@dataclass(frozen=True, slots=True)
class StreamReport:
    stream: str
    length: int
    last_id: str | None
    dlq_length: int
    groups: tuple[GroupReport, ...]


async def stream_report(redis: Redis, config: BusConfig, stream: str) -> StreamReport:
    """Length, last id, DLQ length and, per group, lag, pending and the oldest pending entry's age."""
    key = config.key(stream)
    dlq_length = int(await redis.xlen(config.key(streams.dlq_name(stream))))
    if not await redis.exists(key):
        return StreamReport(stream, 0, None, dlq_length, ())
    info = await redis.xinfo_stream(key)
    groups: list[GroupReport] = []
    for group in await redis.xinfo_groups(key):
        name = _text(group["name"])
        oldest_idle: int | None = None
        if int(group["pending"]) > 0:
            oldest = await redis.xpending_range(key, name, min="-", max="+", count=1)
            oldest_idle = int(oldest[0]["time_since_delivered"]) if oldest else None
        lag = group.get("lag")
        groups.append(
            GroupReport(
                group=name,
                consumers=int(group["consumers"]),
                pending=int(group["pending"]),
                lag=None if lag is None else int(lag),
                last_delivered_id=_text(group["last-delivered-id"]),
                oldest_pending_idle_ms=oldest_idle,
            )
        )
    last_id = info.get("last-generated-id")
    return StreamReport(
        stream=stream,
        length=int(info["length"]),
        last_id=None if last_id is None else _text(last_id),
        dlq_length=dlq_length,
        groups=tuple(groups),
    )
