"""At-least-once delivery over Redis Streams (DESIGN §3), once for every service.

FastStream's stream subscriber is not at-least-once on its own (checked with 0.7.8): a nack sends
nothing to Redis, a restarted consumer never re-reads its own pending list, there is no retry limit or
dead-letter stream, and a lost group (NOGROUP after a flush) restarts in a hot loop (ag2ai/faststream
#2611, #3106; #2694 for a backlog published before the group exists). So the consume loop lives here,
on the Redis connection of the service's FastStream `RedisBroker`:

- one consumer group per service, one stable consumer name per replica; a service subscribes only to
  the streams it handles (the group of a declared but unhandled stream is created and left unread,
  so a command waits for its real handler instead of being acknowledged by a skeleton);
- Redis >= 7.0 or Valkey >= 7.2 is checked at start (INFO server) with a clear error otherwise;
- on start a consumer drains its own pending entries, then reads new ones (`>`);
- an entry is owned from XREADGROUP/XCLAIM until it is acknowledged or dead-lettered, including
  while it waits behind other entries: a refresher task, which never runs handlers, confirms each
  owned entry every quarter of `claim_idle_ms` with a Lua check that this consumer is still its owner
  before XCLAIM ... JUSTID. An entry a peer took over meanwhile (this consumer stalled) is logged,
  counted and left to the peer: never taken back, handled or acknowledged here;
- an entry is acknowledged only after its handler returned; a handler running past its timeout
  (`handler_timeout_ms`, per stream in `subscribe`) is cancelled and counts as a failed delivery;
- ordered streams (`StreamSpec.ordered`: ctl.commands, st.intents, ex.commands, ex.reports,
  rk.decisions) are handled in stream order per consumer: a failed entry is retried in place with
  back-off (its delivery count kept in Redis) and blocks the entries behind it until it succeeds or,
  after `max_deliveries`, moves to `dlq.<stream>` with an Alert; then the next one proceeds. Across
  replicas the order holds when one replica is active (single-active services);
- other streams leave a failed entry pending; the claimer re-delivers entries idle longer than
  `claim_idle_ms` (XPENDING IDLE + XCLAIM) and hands them to the stream's reader, the only task that runs that
  stream's handlers; after `max_deliveries` (counted per entry with XPENDING) the entry moves to the
  DLQ with the last error, is acknowledged and an Alert is published;
- snapshot streams may conflate: within a batch only the newest entry per key is handled;
- a malformed event cannot succeed on retry: it goes to the DLQ at once;
- NOGROUP (a flush, XGROUP DESTROY, failover to a replica without the group) recreates the group -
  log streams from 0, relying on idempotent handlers, snapshot streams from `$` - with an Alert and a
  growing back-off, never a hot loop;
- reader, claimer and refresher are supervised: passing Redis trouble (connection refused or reset,
  timeouts, READONLY, LOADING, OOM, BUSY, MASTERDOWN, TRYAGAIN) is retried with capped back-off and
  counted (`bus_transient_errors_total`); anything else, an error inside group recovery included,
  fails the consumer (`Consumer.failure`, `healthy`, `failed`): the service's /ready turns false and
  its process exits non-zero for its supervisor to restart it;
- consumers of the group other than this one, idle far beyond `claim_idle_ms` with nothing pending,
  are removed (XGROUP DELCONSUMER, checked and removed atomically);
- `stop()` lets in-flight handlers finish and acknowledge, then returns (SIGTERM path).

Idempotent side effects are the handler's job, with `volguard_common.db.once` recording the
`event_id` in the same Postgres transaction as the effect.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from volguard_common import events, metrics, streams
from volguard_common.clock import IST
from volguard_common.logging import bind_message_context

log = structlog.get_logger("volguard.bus")

EVENT_FIELD = b"event"


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Delivery tuning; production values come from Settings, tests shorten the timings."""

    namespace: str = ""
    block_ms: int = 1000
    batch: int = 32
    claim_idle_ms: int = 30_000
    claim_interval_ms: int = 5_000
    max_deliveries: int = 5
    # A handler running longer than this is cancelled: a failed delivery (subscribe() may override it
    # per stream). A hung broker call must not hold a command forever while /ready stays green.
    handler_timeout_ms: int = 20_000
    # Another consumer idle this long with nothing pending is removed from the group (a replica
    # renamed or gone for good); None: ten claim idle times.
    dead_consumer_idle_ms: int | None = None
    # Upper bound of the back-off after NOGROUP, a lost connection or an ordered entry's failure.
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
            handler_timeout_ms=settings.bus_handler_timeout_ms,
        )

    @property
    def dead_consumer_after_ms(self) -> int:
        if self.dead_consumer_idle_ms is not None:
            return self.dead_consumer_idle_ms
        return 10 * self.claim_idle_ms

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


# Confirms, atomically per entry, that this consumer still owns it before touching it: XCLAIM with
# min-idle 0 would otherwise take back an entry a peer legitimately claimed while we were slow, and two
# replicas would handle it at once. Mode "fresh" resets the idle time only (JUSTID, count unchanged);
# mode "retry" also counts one more delivery (an ordered stream's in-place retry), so the count that
# decides the DLQ survives a restart. Returns {owned ids, their delivery counts, ids another consumer
# now owns}; an id no longer pending at all (acknowledged, dead-lettered) is in neither list.
_CONFIRM_OWNERSHIP = """
local owned, counts, lost = {}, {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)[1]
  if row then
    if row[2] == ARGV[2] then
      local count = tonumber(row[4])
      if ARGV[3] == 'retry' then
        count = count + 1
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'RETRYCOUNT', count, 'JUSTID')
      else
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
      end
      owned[#owned + 1] = id
      counts[#counts + 1] = count
    else
      lost[#lost + 1] = id
    end
  end
end
return {owned, counts, lost}
"""

# Checked and removed in one step: a consumer that reads between a separate check and DELCONSUMER
# would lose its new pending entries with it (DELCONSUMER drops them from the group).
_REMOVE_DEAD_CONSUMERS = """
local removed = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #row, 2 do fields[row[i]] = row[i + 1] end
  if fields['name'] ~= ARGV[2] and fields['pending'] == 0 and fields['idle'] > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed[#removed + 1] = fields['name']
  end
end
return removed
"""

# The oldest servers whose stream behaviour this module relies on (XINFO GROUPS lag, XCLAIM dropping
# entries trimmed while pending): Redis 7.0, and Valkey from its first 7.2 release. Redis 6 cannot be
# installed here to test its reply shapes, so it is refused rather than claimed.
MIN_REDIS = (7, 0)
MIN_VALKEY = (7, 2)


class UnsupportedServer(RuntimeError):
    """The Redis server is older than the bus supports."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def check_server(info: dict[str, Any]) -> str:
    """The server's name and version from INFO server, or UnsupportedServer saying what is needed.

    Valkey reports `valkey_version` next to a frozen `redis_version` of 7.2.x, so Valkey is judged on
    its own version.
    """
    valkey = info.get("valkey_version")
    if valkey is not None:
        if _version(str(valkey)) < MIN_VALKEY:
            raise UnsupportedServer(f"Valkey {valkey} is too old for VolGuard's bus: Valkey >= 7.2 is needed")
        return f"valkey {valkey}"
    redis_version = info.get("redis_version")
    if redis_version is None:
        raise UnsupportedServer("the server did not report redis_version in INFO server")
    if _version(str(redis_version)) < MIN_REDIS:
        raise UnsupportedServer(
            f"Redis {redis_version} is too old for VolGuard's bus: Redis >= 7.0 (or Valkey >= 7.2) is "
            "needed (XINFO GROUPS lag, XCLAIM dropping trimmed entries)"
        )
    return f"redis {redis_version}"


def transient_kind(exc: BaseException) -> str | None:
    """What kind of passing Redis trouble `exc` is, or None when retrying cannot help.

    A failover (READONLY, MASTERDOWN), a restart (LOADING, connection refused or reset), memory
    pressure (OOM), a long script (BUSY) or a resharding (TRYAGAIN) clears by itself; a wrong password
    or an unexpected reply does not, and is a failure of the consumer.
    """
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return None
    if isinstance(exc, BusyLoadingError):
        return "LOADING"
    if isinstance(exc, (RedisConnectionError, ConnectionError)):
        return "connection"
    if isinstance(exc, (RedisTimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, OSError):
        return "connection"
    if isinstance(exc, ReadOnlyError):
        return "READONLY"
    if isinstance(exc, OutOfMemoryError):
        return "OOM"
    if isinstance(exc, MasterDownError):
        return "MASTERDOWN"
    if isinstance(exc, TryAgainError):
        return "TRYAGAIN"
    if isinstance(exc, ResponseError) and str(exc).startswith("BUSY "):
        return "BUSY"
    return None


def _is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


@dataclass
class _Subscription:
    stream: str
    handler: Handler
    conflate_key: ConflateKey | None
    ordered: bool
    handler_timeout_s: float
    key: str = ""
    # Entries this consumer owns, from XREADGROUP/XCLAIM until acknowledged or dead-lettered, with
    # the monotonic time until which no peer may claim them (last confirmation + claim idle time).
    owned: dict[str, float] = field(default_factory=dict)
    # Owned entries the refresher found in another consumer's hands: never handled or acked here.
    lost: set[str] = field(default_factory=set)
    # Entries the claimer took over, waiting for this stream's reader to handle them (with counts).
    claimed: list[tuple[bytes, dict[bytes, bytes]]] = field(default_factory=list)
    drained: bool = False
    nogroup_streak: int = 0


class Consumer:
    """One service replica's consumer: a group per service, a stable name per replica.

    Tasks: one reader per stream (the only task that runs that stream's handlers, so a stream's
    events reach its handler one at a time in the order this consumer took them), a claimer (takes
    over entries idle past `claim_idle_ms`, hands them to the reader, removes dead consumers) and a
    refresher (never runs handlers; keeps every owned entry fresh so no peer claims it). Each task is
    supervised: passing Redis trouble is retried with capped back-off and counted; anything else
    fails the consumer (`failure`, `healthy`, `failed`), which the service turns into a failed
    readiness check and a non-zero exit.
    """

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
        # Streams whose group is created (so their backlog and lag are kept and visible) but that
        # nobody here reads yet: an unhandled command must stay unacknowledged for its real handler.
        self._declared: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Our tasks while parked in a blocking read or a back-off sleep (never in a handler): the only
        # moments stop() may cancel them.
        self._parked: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._started = False
        self._confirm = redis.register_script(_CONFIRM_OWNERSHIP)
        self._remove_dead = redis.register_script(_REMOVE_DEAD_CONSUMERS)
        self.server: str | None = None
        self.group_recoveries = 0
        self.claim_cycles = 0
        self.refresh_cycles = 0
        self.transient_errors = 0
        self.consumers_removed = 0
        # Why the consumer failed (task and exception), None while it is healthy.
        self.failure: str | None = None
        self.failed = asyncio.Event()
        # Called with (stream, entry ids) after each acknowledgement: instrumentation and benchmarks.
        self.ack_listeners: list[Callable[[str, Sequence[str]], None]] = []

    # ---- wiring -------------------------------------------------------------------------------
    def subscribe(
        self,
        stream: str,
        handler: Handler,
        *,
        conflate_key: ConflateKey | None = None,
        handler_timeout_s: float | None = None,
    ) -> None:
        """Handle every event on `stream` with `handler`.

        `conflate_key` is for snapshot streams only: within one batch read while behind, only the
        newest event per key is handled (the older ones are acknowledged unhandled), so a slow
        consumer catches up instead of working through stale snapshots. A handler running longer
        than `handler_timeout_s` (default `BusConfig.handler_timeout_ms`) is cancelled and counts as
        a failed delivery.
        """
        spec = streams.spec(stream)
        if conflate_key is not None and spec.retention is not streams.Retention.SNAPSHOT:
            raise ValueError(f"{stream} is a log stream: every entry must be handled, none conflated")
        if stream in self._subs:
            raise ValueError(f"{self.service} already subscribes to {stream}")
        timeout_s = (
            handler_timeout_s if handler_timeout_s is not None else self._config.handler_timeout_ms / 1000
        )
        if timeout_s <= 0:
            raise ValueError(f"handler timeout for {stream} must be positive, got {timeout_s}")
        self._subs[stream] = _Subscription(
            stream,
            handler,
            conflate_key,
            ordered=spec.ordered,
            handler_timeout_s=timeout_s,
            key=self._config.key(stream),
        )
        self._declared.pop(stream, None)

    def declare(self, stream: str) -> None:
        """Create this service's group on `stream` at start without reading it (not handled yet)."""
        streams.spec(stream)
        if stream not in self._subs:
            self._declared[stream] = self._config.key(stream)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._subs)

    @property
    def healthy(self) -> bool:
        """Started, and no task failed in a way retrying cannot mend."""
        return self._started and self.failure is None

    async def start(self, *, take_over_pending: bool = False) -> None:
        """Check the server, create missing groups, then start the readers, claimer and refresher.

        `take_over_pending` is for the one active replica of a single-active service: every entry its
        predecessor read but never acknowledged becomes this consumer's at once, so the first drain
        handles it in stream order before anything newer. Left to the claimer, it would wait
        `claim_idle_ms` and be overtaken by the entries behind it (a `resume` by its `kill_switch`'s
        successor). Safe because the predecessor is fenced: the lease is ours.
        """
        if self._started:
            raise RuntimeError("consumer already started")
        self.server = check_server(await self._redis.info("server"))
        for sub in self._subs.values():
            await self._ensure_group(sub)
            if take_over_pending:
                await self._take_over_pending(sub)
        for stream, key in self._declared.items():
            await self._create_group(key, stream)
        metrics.initialise(self.service, self._subs, streams.PUBLICATIONS.get(self.service, ()))
        # Lag, pending and DLQ size measured now, not first at the claimer's next cycle.
        for stream, key in (*((sub.stream, sub.key) for sub in self._subs.values()), *self._declared.items()):
            await self._record_backlog(stream, key)
        self._started = True
        for sub in self._subs.values():
            self._spawn(f"read:{sub.stream}", functools.partial(self._read_step, sub))
        if self._subs or self._declared:
            self._spawn("claimer", self._claim_step)
        if self._subs:
            self._spawn("refresher", self._refresh_step)
        log.info(
            "consumer started",
            group=self.group,
            consumer=self.name,
            streams=list(self._subs),
            declared=list(self._declared),
            server=self.server,
        )

    async def _take_over_pending(self, sub: _Subscription) -> None:
        """Move every other consumer's pending entries of `sub` to this consumer (XCLAIM JUSTID)."""
        start = "-"
        while True:
            rows = await self._redis.xpending_range(
                sub.key, self.group, min=start, max="+", count=max(self._config.batch, 100)
            )
            if not rows:
                return
            theirs = [_text(row["message_id"]) for row in rows if _text(row["consumer"]) != self.name]
            if theirs:
                await self._redis.xclaim(
                    sub.key, self.group, self.name, min_idle_time=0, message_ids=list(theirs), justid=True
                )
                log.info("took over a predecessor's pending entries", stream=sub.stream, count=len(theirs))
            last = _text(rows[-1]["message_id"])
            start = "(" + last

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
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        log.info("consumer stopped", group=self.group, consumer=self.name, forced=len(pending))

    # ---- supervision --------------------------------------------------------------------------
    def _spawn(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, step), name=name))

    async def _supervise(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` until stopped: passing Redis trouble backs off and retries, anything else fails
        the consumer (a dead task that nobody notices would stop a service's trading silently)."""
        failures = 0
        while not self._stopping:
            try:
                await step()
                failures = 0
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as exc:  # noqa: BLE001 - classified: retried when passing, else the consumer fails
                kind = transient_kind(exc)
                if kind is None:
                    self._fail(name, exc)
                    return
                failures += 1
                self.transient_errors += 1
                metrics.bus_transient_error(self.service, name, kind)
                log.warning(
                    "redis trouble; backing off", task=name, kind=kind, error=repr(exc), attempt=failures
                )
                try:
                    await self._backoff(failures)
                except asyncio.CancelledError:
                    if self._stopping:
                        return
                    raise

    def _fail(self, task: str, exc: BaseException) -> None:
        self.failure = f"{task}: {_describe(exc)}"
        metrics.bus_consumer_failed(self.service, task)
        log.critical(
            "consumer failed; the process must restart",
            task=task,
            group=self.group,
            consumer=self.name,
            error=repr(exc),
            exc_info=exc,
        )
        # The other tasks stop taking new entries; handlers in flight still finish and acknowledge.
        self._stopping = True
        for parked in list(self._parked):
            parked.cancel()
        self.failed.set()

    # ---- groups -------------------------------------------------------------------------------
    def _group_start_id(self, stream: str) -> str:
        # Log streams: a new group starts at the beginning, so commands published before the first
        # start are not lost (faststream #2694); their handlers are idempotent (`db.once`), so a
        # recreated group replaying what the lost one had handled changes nothing. Snapshot streams:
        # only what comes next matters.
        return "0" if streams.spec(stream).retention is streams.Retention.LOG else "$"

    async def _ensure_group(self, sub: _Subscription) -> bool:
        """Create the group of a subscribed stream if missing; True when it had to be created."""
        return await self._create_group(sub.key, sub.stream)

    async def _create_group(self, key: str, stream: str) -> bool:
        """Create the group if missing; True when it had to be created."""
        try:
            await self._redis.xgroup_create(key, self.group, id=self._group_start_id(stream), mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def _recover_group(self, sub: _Subscription) -> None:
        """NOGROUP: the group vanished (a flush, XGROUP DESTROY, a failover to a replica without it)."""
        sub.nogroup_streak += 1
        created = await self._ensure_group(sub)
        # What this consumer held belonged to the old group: the new one delivers it again.
        sub.owned.clear()
        sub.lost.clear()
        sub.claimed.clear()
        sub.drained = False
        self.group_recoveries += 1
        metrics.group_recovered(self.service, sub.stream)
        log.warning("consumer group lost; recreated", stream=sub.stream, group=self.group, created=created)
        if created:
            await self._publisher.alert(
                events.Severity.WARNING,
                "BUS_GROUP_RECREATED",
                f"consumer group {self.group} on {sub.stream} vanished (NOGROUP) and was recreated from "
                f"{self._group_start_id(sub.stream)}; idempotent handlers absorb what is delivered again",
                # A fault of the bus itself: it happens in wall time, not in the market's.
                ts_event=_now_ist(),
                details={"stream": sub.stream, "group": self.group},
            )
        await self._backoff(sub.nogroup_streak)

    async def _backoff(self, attempt: int) -> None:
        delay = min(self._config.max_backoff_s, 0.05 * (2 ** min(attempt, 16)))
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
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise asyncio.CancelledError
        self._parked.add(task)
        try:
            return await awaitable
        finally:
            self._parked.discard(task)

    # ---- ownership ----------------------------------------------------------------------------
    def _own(self, sub: _Subscription, entry_ids: Sequence[str]) -> None:
        fresh_until = time.monotonic() + self._config.claim_idle_ms / 1000
        for entry_id in entry_ids:
            sub.owned[entry_id] = fresh_until

    def _release(self, sub: _Subscription, entry_ids: Sequence[str]) -> None:
        for entry_id in entry_ids:
            sub.owned.pop(entry_id, None)
            sub.lost.discard(entry_id)

    async def _confirm_owned(
        self, sub: _Subscription, entry_ids: Sequence[str], *, retry: bool
    ) -> dict[str, int]:
        """Refresh the entries still ours (see _CONFIRM_OWNERSHIP); mark the ones a peer took as lost.

        Returns the delivery count of each entry still owned.
        """
        confirmed_at = time.monotonic()
        owned, counts, lost = await self._confirm(
            keys=[sub.key], args=[self.group, self.name, "retry" if retry else "fresh", *entry_ids]
        )
        fresh_until = confirmed_at + self._config.claim_idle_ms / 1000
        result: dict[str, int] = {}
        for raw_id, count in zip(owned, counts, strict=True):
            entry_id = _text(raw_id)
            if entry_id in sub.owned:
                sub.owned[entry_id] = fresh_until
            result[entry_id] = int(count)
        for raw_id in lost:
            entry_id = _text(raw_id)
            if sub.owned.pop(entry_id, None) is not None:
                sub.lost.add(entry_id)
                metrics.bus_entry_lost(self.service, sub.stream)
                log.error(
                    "entry taken over by another consumer; it will not be handled or acknowledged here",
                    stream=sub.stream,
                    entry_id=entry_id,
                )
        return result

    async def _refresh_step(self) -> None:
        # Four refreshes per claim idle time: three can be missed (a stall, a slow Redis) before a peer
        # may claim what this consumer is working on.
        await self._parked_call(asyncio.sleep(self._config.claim_idle_ms / 4000))
        for sub in list(self._subs.values()):
            if sub.owned:
                try:
                    await self._confirm_owned(sub, list(sub.owned), retry=False)
                except ResponseError as exc:
                    if not _is_nogroup(exc):
                        raise
                    # The reader recreates the group; entries of the lost one are nobody's now.
        self.refresh_cycles += 1

    # ---- reading ------------------------------------------------------------------------------
    async def _read_step(self, sub: _Subscription) -> None:
        try:
            if not sub.drained:
                await self._drain_own_pending(sub)
                sub.drained = True
            elif sub.claimed:
                batch, sub.claimed = sorted(sub.claimed, key=lambda entry: _entry_order(entry[0])), []
                counts = await self._delivery_counts(sub, [_text(eid) for eid, _ in batch])
                await self._handle_batch(sub, batch, deliveries=counts)
            else:
                response = await self._parked_call(
                    self._redis.xreadgroup(
                        self.group,
                        self.name,
                        {sub.key: ">"},
                        count=self._config.batch,
                        block=self._config.block_ms,
                    )
                )
                entries = response[0][1] if response else []
                if entries:
                    self._own(sub, [_text(eid) for eid, _ in entries])
                    await self._handle_batch(sub, entries, deliveries=None)
            sub.nogroup_streak = 0
        except ResponseError as exc:
            if not _is_nogroup(exc):
                sub.drained = False
                raise
            await self._recover_group(sub)
        except Exception:
            # Redis trouble mid-batch: what this consumer read but did not acknowledge is still pending
            # on it, in order. Drain it first when reading resumes (handled entries whose ack was lost
            # come again; idempotent handlers absorb them), rather than holding it until a claim.
            sub.drained = False
            raise

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
            ids = [_text(eid) for eid, _ in entries]
            self._own(sub, ids)
            counts = await self._delivery_counts(sub, ids)
            log.info("draining own pending entries", stream=sub.stream, count=len(entries))
            await self._handle_batch(sub, entries, deliveries=counts)

    async def _delivery_counts(self, sub: _Subscription, entry_ids: Sequence[str]) -> dict[str, int]:
        """Each entry's own delivery count (XPENDING per id: a range would be cut short by the other
        consumers' entries in between)."""
        if not entry_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(sub.key, self.group, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        return {_text(row["message_id"]): int(row["times_delivered"]) for reply in replies for row in reply}

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
                self._release(sub, list(skip))
                metrics.conflated(self.service, sub.stream, len(skip))

        handled: list[tuple[str, int]] = []
        try:
            for entry_id, fields, event, problem in parsed:
                if entry_id in skip:
                    continue
                if self._stopping:
                    # Not started: stays pending on this consumer, drained at its next start.
                    return
                if entry_id in sub.lost or entry_id not in sub.owned:
                    # A peer claimed it while it waited here (this consumer stalled): theirs now.
                    sub.lost.discard(entry_id)
                    continue
                count = 1 if deliveries is None else deliveries.get(entry_id, 1)
                if event is None:
                    await self._dead_letter(sub, entry_id, fields, problem or "unreadable", count)
                elif count > self._config.max_deliveries:
                    error = await self._last_error(sub, entry_id)
                    await self._dead_letter(sub, entry_id, fields, error, count)
                else:
                    succeeded_at = await self._deliver(sub, entry_id, fields, event, count)
                    if succeeded_at is not None:
                        handled.append((entry_id, succeeded_at))
        finally:
            # Every entry is acknowledged only after its own handler returned; one round trip a batch.
            if handled:
                await self._ack(sub, handled)

    async def _deliver(
        self,
        sub: _Subscription,
        entry_id: str,
        fields: dict[bytes, bytes],
        event: events.Event,
        deliveries: int,
    ) -> int | None:
        """Hand the event to the handler; its delivery count when it succeeded (ack it), else None.

        Ordered streams retry a failed entry in place, with back-off, before anything behind it: a
        `resume` must not overtake its `kill_switch`. Other streams leave a failed entry pending for
        the claimer, and carry on.
        """
        while True:
            # Waited long behind slower entries while refreshes were late: make sure it is still ours
            # before acting on it.
            stale = sub.owned.get(entry_id, 0.0) - time.monotonic() < self._config.claim_idle_ms / 2000
            if stale and entry_id not in await self._confirm_owned(sub, [entry_id], retry=False):
                return None
            error = await self._run_handler(sub, entry_id, event, deliveries)
            if error is None:
                return deliveries
            await self._record_error(sub, entry_id, error)
            if deliveries >= self._config.max_deliveries:
                await self._dead_letter(sub, entry_id, fields, error, deliveries)
                return None
            if not sub.ordered:
                # Released: the claimer (ours or a peer's) delivers it again after the claim idle time.
                self._release(sub, [entry_id])
                return None
            await self._backoff(deliveries)
            counts = await self._confirm_owned(sub, [entry_id], retry=True)
            if entry_id not in counts:
                return None
            deliveries = counts[entry_id]

    async def _run_handler(
        self, sub: _Subscription, entry_id: str, event: events.Event, deliveries: int
    ) -> str | None:
        """Run the handler under its timeout; None on success, else the failure described."""
        delivery = Delivery(sub.stream, entry_id, deliveries, self.name)
        started = time.perf_counter()
        metrics.event_in(self.service, sub.stream, event.type, redelivered=deliveries > 1)
        with bind_message_context(
            correlation_id=event.correlation_id, event_id=event.event_id, stream=sub.stream
        ):
            try:
                async with asyncio.timeout(sub.handler_timeout_s):
                    await sub.handler(event, delivery)
            except TimeoutError as exc:
                elapsed = time.perf_counter() - started
                metrics.handler_error(self.service, sub.stream, "HandlerTimeout")
                log.error(
                    "handler timed out; a failed delivery",
                    entry_id=entry_id,
                    deliveries=deliveries,
                    timeout_s=sub.handler_timeout_s,
                    elapsed_s=round(elapsed, 3),
                )
                if elapsed >= sub.handler_timeout_s:
                    return f"HandlerTimeout: no result within {sub.handler_timeout_s} s"
                return _describe(exc)
            except Exception as exc:  # any handler failure is a failed delivery (no default returned)
                metrics.handler_error(self.service, sub.stream, type(exc).__name__)
                log.exception(
                    "handler failed",
                    entry_id=entry_id,
                    deliveries=deliveries,
                    max_deliveries=self._config.max_deliveries,
                    ordered=sub.ordered,
                )
                return _describe(exc)
        metrics.handler_latency(self.service, sub.stream, event.type, time.perf_counter() - started)
        metrics.handled(self.service, sub.stream, event)
        return None

    async def _ack(self, sub: _Subscription, handled: Sequence[tuple[str, int]]) -> None:
        # One taken over by a peer while its handler ran is theirs to acknowledge (DESIGN §3: their
        # delivery meets our recorded effect in `db.once`).
        ids = [entry_id for entry_id, _ in handled if entry_id not in sub.lost]
        retried = [
            entry_id for entry_id, deliveries in handled if deliveries > 1 and entry_id not in sub.lost
        ]
        self._release(sub, [entry_id for entry_id, _ in handled])
        if not ids:
            return
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

    async def _record_error(self, sub: _Subscription, entry_id: str, error: str) -> None:
        await self._redis.hset(self._errors_key(sub), entry_id, error)  # type: ignore[misc]

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
        self._release(sub, [entry_id])
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
    async def _claim_step(self) -> None:
        await self._parked_call(asyncio.sleep(self._config.claim_interval_ms / 1000))
        for stream, key in self._declared.items():
            await self._record_backlog(stream, key)
        for sub in list(self._subs.values()):
            if self._stopping:
                return
            try:
                await self._record_backlog(sub.stream, sub.key)
                await self._claim_idle(sub)
                await self._remove_dead_consumers(sub)
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise
                # The reader recreates the group; the claimer only waits for it.
        self.claim_cycles += 1

    async def _record_backlog(self, stream: str, key: str) -> None:
        """consumer_lag / consumer_pending for this service's group and the size of the stream's DLQ
        (dashboards, alerts, lockstep views)."""
        metrics.dlq_entries(
            self.service, stream, int(await self._redis.xlen(self._config.key(streams.dlq_name(stream))))
        )
        if not await self._redis.exists(key):
            return
        for group in await self._redis.xinfo_groups(key):
            if _text(group["name"]) == self.group:
                lag = group.get("lag")
                metrics.consumer_backlog(
                    self.service,
                    stream,
                    self.group,
                    lag=None if lag is None else int(lag),
                    pending=int(group["pending"]),
                )

    async def _claim_idle(self, sub: _Subscription) -> None:
        """Take over entries idle past the claim time (a dead peer's, or this consumer's released
        failures) and queue them for the stream's reader, which handles them before new entries."""
        if sub.claimed:
            return  # the reader has not taken the last ones yet
        # XPENDING IDLE then XCLAIM rather than XAUTOCLAIM: an entry this consumer owns but refreshed
        # late (a stall) is skipped instead of claimed from itself, which would count a delivery that
        # never happened and queue it a second time.
        start = "-"
        while not self._stopping:
            rows = await self._redis.xpending_range(
                sub.key,
                self.group,
                min=start,
                max="+",
                count=self._config.batch,
                idle=self._config.claim_idle_ms,
            )
            candidates = [
                _text(row["message_id"])
                for row in rows
                if not (_text(row["consumer"]) == self.name and _text(row["message_id"]) in sub.owned)
            ]
            if candidates:
                # min_idle_time again: an entry its owner refreshed since the XPENDING is left alone.
                claimed = await self._redis.xclaim(
                    sub.key,
                    self.group,
                    self.name,
                    min_idle_time=self._config.claim_idle_ms,
                    message_ids=list(candidates),
                )
                # Entries trimmed away while pending (a capped snapshot stream) are dropped from the
                # pending list by XCLAIM and not returned: nothing is left to deliver.
                entries = [(eid, fields) for eid, fields in claimed if fields]
                if entries:
                    ids = [_text(eid) for eid, _ in entries]
                    self._own(sub, ids)
                    sub.lost.difference_update(ids)
                    sub.claimed.extend(entries)
                    log.info("claimed idle entries", stream=sub.stream, count=len(entries))
            if len(rows) < self._config.batch:
                return
            start = "(" + _text(rows[-1]["message_id"])

    async def _remove_dead_consumers(self, sub: _Subscription) -> None:
        """XGROUP DELCONSUMER the consumers gone long ago with nothing pending.

        Consumer names change when a replica is rescheduled under a new name; the old ones would
        accumulate in every group. One with pending entries is left until the claimer took them; a
        live one touches the group at least every block interval, far inside the threshold.
        """
        removed = await self._remove_dead(
            keys=[sub.key], args=[self.group, self.name, self._config.dead_consumer_after_ms]
        )
        for raw_name in removed:
            self.consumers_removed += 1
            log.info(
                "removed dead consumer", stream=sub.stream, group=self.group, dead_consumer=_text(raw_name)
            )


def _entry_order(raw_id: bytes | str) -> tuple[int, int]:
    millis, _, seq = _text(raw_id).partition("-")
    return int(millis), int(seq or 0)


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
