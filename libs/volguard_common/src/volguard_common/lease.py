"""Single-active services: a Redis lease per (service, account) with a fencing token (DESIGN §1).

Strategy, risk, execution (and market_data, analytics) keep per-process state, so exactly one
replica per account may act; the others are hot standbys. The lease is a Redis key
`<namespace>lease:<service>:<account>` holding `<holder>|<token>` with a time to live:

- acquiring it (SET NX in a Lua script) takes a fencing token from a counter (INCR), so every new
  holder has a larger token than every earlier one;
- the holder renews it every third of the ttl with a compare-and-renew script; a renewal that finds
  someone else's value (or no value) means the lease is lost, and so do two thirds of a ttl without
  a successful renewal (Redis unreachable or too slow), before the key can expire: the holder must
  stop at once;
- a standby tries to acquire every `poll_interval`. When the holder dies (SIGKILL, a lost host) its
  key expires at most `ttl` after its last renewal, so a standby holds the lease at most
  **ttl + poll_interval** after the holder's last renewal (plus the standby's own scheduling delay);
- two holders can still overlap in time (a holder paused longer than the ttl wakes believing it
  holds the lease). What they may not do is both write: every Postgres write of a single-active
  service runs `Fence.check` in its transaction, which moves `public.fencing(name, token)` up to the
  writer's token and refuses (`StaleLeaseError`) a token lower than one that has already written.
  The row lock it takes also orders the old holder's last transaction before the new holder's first.

The token counter lives in Redis, so a Redis that lost its data would hand out small tokens again;
`acquire` therefore takes the highest token Postgres has seen as a floor (`Fence.highest`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from volguard_common import db, metrics

log = structlog.get_logger("volguard.lease")

# KEYS: lease, token counter, last-renewal time. ARGV: holder, ttl ms, token floor.
# Returns the new token, or false when someone holds the lease.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local floor = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < floor then redis.call('SET', KEYS[2], floor) end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local previous = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], now_ms)
return {token, now_ms, previous or false}
"""

# KEYS: lease, last-renewal time. ARGV: expected value, ttl ms. 1 renewed, 0 lost.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local now = redis.call('TIME')
redis.call('SET', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000))
return 1
"""

# KEYS: lease, last-renewal time. ARGV: expected value. Deletes only our own lease; a clean hand-over
# has no takeover gap to report, so the renewal time goes too.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
"""


class StaleLeaseError(RuntimeError):
    """A write carried a fencing token lower than one that has already written: this holder is stale."""


class LeaseLostError(RuntimeError):
    """The holder could not renew its lease (taken over, expired, or Redis unreachable for a ttl)."""


def lease_name(service: str, account: str) -> str:
    """The name of the lease (and of its fencing row) of `service` trading `account`."""
    return f"{service}:{account}"


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease name and the token its current holder got; checked inside every write transaction."""

    name: str
    token: int

    async def check(self, conn: db.Connection) -> None:
        """Raise `StaleLeaseError` unless no writer with a larger token has written under this lease.

        Must run inside the writer's transaction: the row stays locked until it ends, so a newer
        holder's first write waits for this transaction and then refuses every later one of ours.
        """
        if not conn.is_in_transaction():
            raise db.NotInTransactionError("a fencing check outside a transaction would guard nothing")
        accepted = await conn.fetchval(
            "INSERT INTO public.fencing AS f (name, token) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET token = EXCLUDED.token WHERE f.token <= EXCLUDED.token "
            "RETURNING token",
            self.name,
            self.token,
        )
        if accepted is None:
            newest = await conn.fetchval("SELECT token FROM public.fencing WHERE name = $1", self.name)
            raise StaleLeaseError(
                f"lease {self.name}: token {self.token} is stale, token {newest} has already written; "
                "another replica holds the lease"
            )

    @staticmethod
    async def highest(pool_or_conn: db.Pool | db.Connection, name: str) -> int:
        """The largest token that has written under `name` (0 if none)."""
        token = await pool_or_conn.fetchval("SELECT token FROM public.fencing WHERE name = $1", name)
        return 0 if token is None else int(token)


@dataclass(frozen=True, slots=True)
class Acquisition:
    token: int
    # Redis server time (ms) of the acquisition, and of the previous holder's last renewal (None if
    # there was no holder before): their difference is how long the lease stood without a holder.
    acquired_at_ms: int
    previous_renewal_ms: int | None

    @property
    def takeover_gap_ms(self) -> int | None:
        """Redis time from the previous holder's last renewal to this acquisition."""
        return None if self.previous_renewal_ms is None else self.acquired_at_ms - self.previous_renewal_ms


class Lease:
    """One replica's view of the lease of (service, account)."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        service: str,
        account: str,
        holder: str,
        ttl_ms: int,
        poll_interval_ms: int,
    ) -> None:
        if ttl_ms < 3:
            raise ValueError("the lease ttl must be at least 3 ms (it is renewed every third of it)")
        self.name = lease_name(service, account)
        self._redis = redis
        self.key = f"{namespace}lease:{self.name}"
        self._token_key = f"{self.key}:token"
        self._renewed_key = f"{self.key}:renewed_at"
        self.holder = holder
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self.acquisition: Acquisition | None = None
        metrics.lease_constructed(self.name, holder)

    @property
    def takeover_bound_ms(self) -> int:
        """How long after the holder's last renewal a polling standby holds the lease at the latest."""
        return self.ttl_ms + self.poll_interval_ms

    @property
    def token(self) -> int | None:
        return None if self.acquisition is None else self.acquisition.token

    @property
    def fence(self) -> Fence:
        if self.acquisition is None:
            raise LeaseLostError(f"lease {self.name} is not held by {self.holder}")
        return Fence(self.name, self.acquisition.token)

    def _value(self) -> str:
        assert self.acquisition is not None
        return f"{self.holder}|{self.acquisition.token}"

    async def try_acquire(self, floor: int = 0) -> Acquisition | None:
        """Take the lease if nobody holds it; the token is larger than `floor` and every earlier one."""
        result = await self._acquire(
            keys=[self.key, self._token_key, self._renewed_key], args=[self.holder, self.ttl_ms, floor]
        )
        if not result:
            return None
        token, now_ms, previous = result
        self.acquisition = Acquisition(int(token), int(now_ms), None if previous is None else int(previous))
        metrics.lease_acquired(self.name, self.holder)
        log.info("lease acquired", lease=self.name, holder=self.holder, token=int(token))
        return self.acquisition

    async def wait_for(self, floor: int = 0) -> Acquisition:
        """Poll every `poll_interval_ms` until the lease is ours (a standby waiting to take over)."""
        while True:
            try:
                acquisition = await self.try_acquire(floor)
            except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
                # A standby acts on nothing: it waits the outage out and keeps polling.
                log.warning("lease poll failed; retrying", lease=self.name, error=repr(exc))
                acquisition = None
            if acquisition is not None:
                return acquisition
            await asyncio.sleep(self.poll_interval_ms / 1000)

    async def renew(self) -> bool:
        """Extend our lease by a ttl; False when it is no longer ours."""
        return bool(await self._renew(keys=[self.key, self._renewed_key], args=[self._value(), self.ttl_ms]))

    async def keep(self) -> None:
        """Renew every third of the ttl until the lease is lost, then raise `LeaseLostError`.

        A renewal that fails for a Redis reason (unreachable, too slow) is retried, but after two
        thirds of the ttl without a successful one the holder gives up: its key may expire in the
        remaining third and a standby take over, and it must have stopped before that.
        """
        interval = self.ttl_ms / 3000
        # Counted from the moment the last successful renewal was SENT: Redis may have applied it any
        # time after that, so counting from its answer would overstate how long the key still lives.
        deadline = time.monotonic() + 2 * interval
        while True:
            await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
            sent = time.monotonic()
            try:
                # Always try, even late (a loop stalled by start-up work): the compare-and-renew tells
                # the truth about the key. What is bounded is a renewal that does not answer: it may
                # not carry the holder past the point where the key can expire unnoticed.
                renewed = await asyncio.wait_for(
                    self.renew(), timeout=max(0.05, min(interval, deadline - sent))
                )
            except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() >= deadline:
                    metrics.lease_given_up(self.name, self.holder)
                    raise LeaseLostError(
                        f"lease {self.name}: no renewal for two thirds of the ttl ({self.ttl_ms} ms): {exc!r}"
                    ) from exc
                log.warning("lease renewal failed; retrying", lease=self.name, error=repr(exc))
                continue
            if not renewed:
                metrics.lease_given_up(self.name, self.holder)
                raise LeaseLostError(f"lease {self.name}: token {self.token} was taken over or expired")
            deadline = sent + 2 * interval

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby need not wait for the ttl."""
        if self.acquisition is not None:
            await self._release(keys=[self.key, self._renewed_key], args=[self._value()])
            metrics.lease_given_up(self.name, self.holder)
            log.info("lease released", lease=self.name, holder=self.holder, token=self.acquisition.token)
