"""The transactional outbox (DESIGN §3): a handler's effects, its dedup record and what it publishes
commit together, and a relay moves what committed to Redis exactly once.

Writing: `handle_once(pool, group=..., event_id=..., publisher=...)` opens one Postgres transaction
that checks the lease fence (single-active services), records the handled event for the consumer
group (`db.mark_processed`) and hands the body an `OutboxTransaction`: its `conn` for the effects and
`publish(event)` to add events to `public.outbox`. Published events get their ids when they are
built, inside that transaction, and `pg_notify` wakes the relay when it commits. A crash before the
commit leaves nothing (the redelivery does it all again); after it, the rows are there to relay.

Order: the first `publish` of a transaction takes a per-publisher transaction lock, held until
commit, so rows get their `id` in commit order and the relay sends them in that order.

Relaying: `OutboxRelay.run()` waits for NOTIFY (with a polling fallback), reads unsent rows of its
publisher in `id` order and adds each to its stream through a Lua script that first looks up
`<namespace>outbox:sent:<event_id>`: an event already added is not added again and its first entry
id is returned. Then the rows are marked sent. A relay killed between XADD and marking sent
therefore resends nothing: exactly one stream entry per event, with the event's own id. The
marker lives `outbox_sent_ttl_s` (a day by default), far longer than a relay restart takes.
Sent rows are deleted once their marker has expired.

Trimming: `trim_log_streams` trims each log stream (commands, reports, alerts) with XTRIM MINID at
the oldest entry some subscribing group has not acknowledged (its oldest pending entry, else its
last-delivered id), and only when every subscribing service's group exists: an entry is never
trimmed while a group can still be delivered it. The dashboard's per-replica groups do not count
(no effects to protect; a replica gone for good would pin the stream), so a stream only the
dashboard reads (rk.decisions, sys.alerts) is not trimmed at all. Snapshot streams are capped at
publish time and dead-letter streams are never trimmed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from volguard_common import db, events, metrics, streams
from volguard_common.bus import EVENT_FIELD, BusConfig
from volguard_common.lease import Fence

log = structlog.get_logger("volguard.outbox")

# KEYS: stream, sent marker. ARGV: payload, marker ttl s, maxlen ('0': uncapped log stream).
_ADD_ONCE = """
local done = redis.call('GET', KEYS[2])
if done then return done end
local id
if ARGV[3] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[1])
else
  id = redis.call('XADD', KEYS[1], '*', ARGV[4], ARGV[1])
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return id
"""

# Outages the relay and the trimmer wait out (and log) rather than die of; anything else ends the
# task, which the service treats as fatal (the process exits for its supervisor to restart it). The
# Redis ones are the consumer's passing trouble too (bus.transient_kind): a failover (READONLY,
# MASTERDOWN), a restart (LOADING), memory pressure (OOM), a resharding (TRYAGAIN).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    MasterDownError,
    OutOfMemoryError,
    TryAgainError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

# Called with a crash-point name at the moments a crash test needs to reach ("after_xadd": the
# entries are in Redis, the rows not yet marked sent).
CrashHook = Callable[[str], None]


def _lock_key(purpose: str, publisher: str) -> int:
    digest = hashlib.sha256(f"volguard.outbox.{purpose}:{publisher}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def notify_channel(publisher: str) -> str:
    """The Postgres channel a commit with outbox rows of `publisher` notifies."""
    return f"volguard_outbox_{publisher}"


def _check_publisher(publisher: str) -> None:
    if publisher not in streams.SERVICES:
        raise ValueError(f"unknown publisher {publisher!r}; known: {streams.SERVICES}")


@dataclass
class OutboxTransaction:
    """The handler's side of one outbox transaction: `conn` for its effects, `publish` for its events."""

    conn: db.Connection
    publisher: str
    published: list[events.Event] = field(default_factory=list)

    async def publish(self, event: events.Event, stream: str | None = None) -> None:
        """Add `event` to the outbox; it reaches its stream only if this transaction commits."""
        name = stream if stream is not None else type(event).STREAM
        if name not in streams.PUBLICATIONS[self.publisher]:
            raise ValueError(f"{self.publisher} does not publish on {name}")
        if not self.published:
            # Held until commit: ids follow commit order, so the relay never sends a later commit first.
            await self.conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key("order", self.publisher))
        await self.conn.execute(
            "INSERT INTO public.outbox (publisher, stream, event_id, event_type, payload) "
            "VALUES ($1, $2, $3, $4, $5)",
            self.publisher,
            name,
            event.event_id,
            event.type,
            event.model_dump_json().encode(),
        )
        self.published.append(event)


@asynccontextmanager
async def transaction(
    pool: db.Pool, *, publisher: str, fence: Fence | None = None
) -> AsyncIterator[OutboxTransaction]:
    """One transaction for effects and publications that answer no event (a timer, a start-up)."""
    _check_publisher(publisher)
    async with pool.acquire() as conn, conn.transaction():
        if fence is not None:
            await fence.check(conn)
        tx = OutboxTransaction(conn, publisher)
        yield tx
        if tx.published:
            await conn.execute("SELECT pg_notify($1, '')", notify_channel(publisher))


@asynccontextmanager
async def handle_once(
    pool: db.Pool, *, group: str, event_id: str, publisher: str, fence: Fence | None = None
) -> AsyncIterator[OutboxTransaction | None]:
    """`async with handle_once(...) as tx:` — None when the group already handled `event_id`;
    otherwise effects (`tx.conn`), the processed-event record and publications (`tx.publish`) in one
    transaction, refused with `StaleLeaseError` when `fence` is stale."""
    _check_publisher(publisher)
    async with pool.acquire() as conn, conn.transaction():
        if fence is not None:
            await fence.check(conn)
        if not await db.mark_processed(conn, group, event_id):
            yield None
            return
        tx = OutboxTransaction(conn, publisher)
        yield tx
        if tx.published:
            await conn.execute("SELECT pg_notify($1, '')", notify_channel(publisher))


class OutboxRelay:
    """Moves one publisher's committed outbox rows to their streams, in order, exactly once."""

    def __init__(
        self,
        pool: db.Pool,
        redis: Redis,
        config: BusConfig,
        *,
        publisher: str,
        database_url: str,
        poll_interval_ms: int = 1000,
        sent_ttl_s: int = 86400,
        batch: int = 64,
        crash_hook: CrashHook | None = None,
    ) -> None:
        _check_publisher(publisher)
        self._pool = pool
        self._redis = redis
        self._config = config
        self.publisher = publisher
        self._database_url = database_url
        self._poll_s = poll_interval_ms / 1000
        self._sent_ttl_s = sent_ttl_s
        self._batch = batch
        self._crash_hook = crash_hook
        self._add_once = redis.register_script(_ADD_ONCE)
        self._wake = asyncio.Event()
        self.sent = 0
        self.outages = 0
        # Called with the event ids of each relayed batch right after their XADDs (benchmarks, tests).
        self.sent_listeners: list[Callable[[Sequence[str]], None]] = []

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled: at each NOTIFY, and every poll interval in case one was missed."""
        listener: asyncpg.Connection[Any] | None = None
        channel = notify_channel(self.publisher)
        try:
            while True:
                if listener is None or listener.is_closed():
                    listener = await self._listen(channel)
                self._wake.clear()
                try:
                    while await self.relay_pending() == self._batch:
                        pass
                except TRANSIENT_ERRORS as exc:
                    # Committed rows stay unsent and are sent after the outage, in order.
                    self.outages += 1
                    log.warning("outbox relay: Redis or Postgres unavailable; retrying", error=repr(exc))
                    await asyncio.sleep(self._poll_s)
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                except TimeoutError:
                    try:
                        await self._delete_expired()
                    except TRANSIENT_ERRORS as exc:
                        log.warning("outbox relay: cannot delete expired rows now", error=repr(exc))
        finally:
            if listener is not None and not listener.is_closed():
                # terminate, not close: close awaits the server, and a second cancellation (a stop
                # grace running out) during that await would leave the connection open.
                listener.terminate()

    async def _listen(self, channel: str) -> asyncpg.Connection[Any] | None:
        try:
            listener = await asyncpg.connect(self._database_url, timeout=10)
            try:
                await listener.add_listener(channel, self._on_notify)
            except BaseException:
                listener.terminate()  # never left open behind a failed or cancelled LISTEN
                raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Polling still relays everything, only later; the next round tries to listen again.
            log.warning("outbox relay cannot LISTEN; polling only", channel=channel, error=repr(exc))
            return None
        return listener

    async def relay_pending(self) -> int:
        """Send up to one batch of unsent rows in order; returns how many were sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One relay per publisher at a time (replicas each run one): order stays whole.
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", _lock_key("relay", self.publisher)
            ):
                return 0
            rows = await conn.fetch(
                "SELECT id, stream, event_id, event_type, payload FROM public.outbox "
                "WHERE publisher = $1 AND sent_at IS NULL ORDER BY id LIMIT $2",
                self.publisher,
                self._batch,
            )
            if not rows:
                return 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    spec = streams.spec(row["stream"])
                    await self._add_once(
                        keys=[self._config.key(row["stream"]), self._sent_key(row["event_id"])],
                        args=[row["payload"], self._sent_ttl_s, spec.maxlen or 0, EVENT_FIELD],
                        client=pipe,
                    )
                entry_ids = await pipe.execute()
            event_ids = [row["event_id"] for row in rows]
            for listener in self.sent_listeners:
                listener(event_ids)
            if self._crash_hook is not None:
                self._crash_hook("after_xadd")
            await conn.execute(
                "UPDATE public.outbox AS o SET sent_at = now(), entry_id = u.entry_id "
                "FROM unnest($1::bigint[], $2::text[]) AS u(id, entry_id) WHERE o.id = u.id",
                [row["id"] for row in rows],
                [e.decode() if isinstance(e, bytes) else str(e) for e in entry_ids],
            )
        for row in rows:
            metrics.events_out(self.publisher, row["stream"], row["event_type"])
        self.sent += len(rows)
        return len(rows)

    def _sent_key(self, event_id: str) -> str:
        return f"{self._config.namespace}outbox:sent:{event_id}"

    async def _delete_expired(self) -> None:
        # A row whose Redis marker has expired could no longer be deduplicated anyway; it was sent.
        await self._pool.execute(
            "DELETE FROM public.outbox WHERE publisher = $1 AND sent_at < now() - make_interval(secs => $2)",
            self.publisher,
            float(self._sent_ttl_s),
        )


# --------------------------------------------------------------------------------------------------
# Trimming log streams below what every group acknowledged


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _acting_subscribers(stream: str) -> list[str]:
    # Per-replica groups (the dashboard's) do not hold the trim back: they have no effects to protect,
    # and a replica that is gone for good would otherwise pin the stream forever.
    return [
        s
        for s in streams.SERVICES
        if stream in streams.SUBSCRIPTIONS[s] and s not in streams.GROUP_PER_REPLICA
    ]


async def log_stream_floor(redis: Redis, config: BusConfig, stream: str) -> str | None:
    """The id below which every subscribing group has acknowledged `stream`; None when unknown
    (a subscribing service has no group there yet, the stream does not exist, or no service acts on
    it: see `trim_log_streams`)."""
    key = config.key(stream)
    if not await redis.exists(key):
        return None
    subscribers = _acting_subscribers(stream)
    if not subscribers:
        return None
    groups = {_text(g["name"]): g for g in await redis.xinfo_groups(key)}
    floor: str | None = None
    for service in subscribers:
        group = groups.get(streams.group_name(service))
        if group is None:
            return None
        if int(group["pending"]) > 0:
            summary = await redis.xpending(key, streams.group_name(service))
            oldest = _text(summary["min"])
        else:
            oldest = _text(group["last-delivered-id"])
        if floor is None or _id_key(oldest) < _id_key(floor):
            floor = oldest
    return floor


async def trim_log_streams(
    redis: Redis, config: BusConfig, retention_ms: int | None = None
) -> dict[str, int]:
    """XTRIM MINID each log stream at its `log_stream_floor`; a log stream no service acts on (only
    the dashboard's per-replica groups read it) is trimmed to the last `retention_ms` of entries by
    their ids' Redis time instead, when a retention is given. Returns entries removed per stream."""
    removed: dict[str, int] = {}
    now_ms: int | None = None
    for spec in streams.ALL_STREAMS:
        if spec.retention is not streams.Retention.LOG:
            continue
        if not _acting_subscribers(spec.name):
            if retention_ms is None:
                continue
            if now_ms is None:
                seconds, micros = await redis.time()
                now_ms = int(seconds) * 1000 + int(micros) // 1000
            floor: str | None = f"{max(now_ms - retention_ms, 0)}-0"
        else:
            floor = await log_stream_floor(redis, config, spec.name)
        if floor is None or floor == "0-0":
            continue
        # Exact MINID: an approximate trim could only keep more, never less, but exact is cheap here.
        removed[spec.name] = int(await redis.xtrim(config.key(spec.name), minid=floor, approximate=False))
    return removed


async def trim_periodically(
    redis: Redis, config: BusConfig, interval_ms: int, retention_ms: int | None = None
) -> None:
    """Run `trim_log_streams` every `interval_ms` until cancelled."""
    while True:
        await asyncio.sleep(interval_ms / 1000)
        try:
            removed = await trim_log_streams(redis, config, retention_ms)
        except TRANSIENT_ERRORS as exc:
            log.warning("log-stream trim: Redis unavailable; next round retries", error=repr(exc))
            continue
        if any(removed.values()):
            log.info("log streams trimmed below every group's acknowledgement", removed=removed)
