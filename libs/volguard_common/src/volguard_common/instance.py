"""A replica's stable instance name when nothing outside gives it one (`VOLGUARD_INSTANCE=auto`).

The instance name is the replica's Redis consumer name, and only a consumer that comes back under the
same name drains the pending entries it left behind (DESIGN §3). Where the name comes from:

- `volguard up` names its replicas `<service>-<n>` itself (VOLGUARD_INSTANCE per process);
- Kubernetes runs the services as StatefulSets, whose pod names `<name>-<ordinal>` survive reschedules;
- `docker compose up --scale` gives containers no stable ordinal, so each replica claims one here: the
  lowest free slot `<service>-<n>` in Redis, held with a TTL that the running replica renews.

A claim is a Redis key `instance:<service>:<n>` holding who claims it (host, pid, a random token). A
replica restarted on the same host (the same container after a crash, or the same machine) takes back a
slot whose holder was itself or is a dead process of that host, so it gets its old name back at once;
a slot held from another host frees only when its TTL lapses. A replica that finds its claim gone (it
was paused longer than the TTL and another took the slot) must stop: two consumers under one name
would take each other's entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger("volguard.instance")

CLAIM_TTL_S = 15.0
RENEW_EVERY_S = 5.0
# More replicas of one service than this on one Redis is a misconfiguration, not a scale-out.
MAX_SLOTS = 64

# Renew only a claim that is still ours; 0 tells the holder it lost the slot.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Take over a slot only if it still holds what we judged stale (no race with its holder's renewal).
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class InstanceClaimError(RuntimeError):
    """No instance name could be claimed, or a held claim was lost."""


def slot_key(namespace: str, service: str, slot: int) -> str:
    return f"{namespace}instance:{service}:{slot}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Claims this process holds now: a claim with our pid that is not among them was left by an earlier
# process that had the same pid (a container's PID 1 after a restart).
_held_here: set[str] = set()


def _stale_on_this_host(raw: bytes | str, host: str, pid: int) -> bool:
    """A claim left by this process's earlier life or by a dead process of this host."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if text in _held_here:
        return False
    try:
        holder = json.loads(text)
        holder_host, holder_pid = holder["host"], int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return False  # not ours to judge: wait for its TTL
    if holder_host != host:
        return False
    return holder_pid == pid or not _process_alive(holder_pid)


@dataclass
class InstanceClaim:
    """A held slot: `instance` is `<service>-<slot>`. `keep()` renews it until `release()`."""

    redis: Redis
    key: str
    instance: str
    holder: str
    ttl_s: float = CLAIM_TTL_S

    async def renew(self) -> bool:
        """Extend the claim; False when it is no longer ours."""
        renewed = await self.redis.eval(_RENEW, 1, self.key, self.holder, int(self.ttl_s * 1000))  # type: ignore[misc]
        return bool(renewed)

    async def keep(self, on_lost: Callable[[str], None], every_s: float = RENEW_EVERY_S) -> None:
        """Renew every `every_s` until cancelled. Calls `on_lost` once and returns when the claim is
        gone, or when Redis stayed unreachable until the claim's TTL ran out (another replica may hold
        the name by then)."""
        loop = asyncio.get_running_loop()
        held_until = loop.time() + self.ttl_s
        while True:
            await asyncio.sleep(every_s)
            try:
                if not await self.renew():
                    _held_here.discard(self.holder)
                    on_lost(f"instance {self.instance} was claimed by another replica")
                    return
                held_until = loop.time() + self.ttl_s
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if loop.time() >= held_until:
                    _held_here.discard(self.holder)
                    on_lost(f"instance {self.instance} could not be renewed before its TTL ran out: {exc!r}")
                    return
                log.warning(
                    "instance claim renewal failed; retrying", instance=self.instance, error=repr(exc)
                )

    async def release(self) -> None:
        """Free the slot at a clean stop, so a restarted replica gets the lowest name again at once."""
        _held_here.discard(self.holder)
        await self.redis.eval(_RELEASE, 1, self.key, self.holder)  # type: ignore[misc]


async def claim_instance(
    redis: Redis,
    namespace: str,
    service: str,
    *,
    ttl_s: float = CLAIM_TTL_S,
    host: str | None = None,
    pid: int | None = None,
) -> InstanceClaim:
    """Claim the lowest free `<service>-<n>`; see the module docstring for what counts as free."""
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    holder = json.dumps({"host": host, "pid": pid, "token": uuid.uuid4().hex})
    ttl_ms = int(ttl_s * 1000)
    for slot in range(MAX_SLOTS):
        key = slot_key(namespace, service, slot)
        claimed = await redis.set(key, holder, nx=True, px=ttl_ms)
        if not claimed:
            current = await redis.get(key)
            if current is None:  # expired between the two calls
                claimed = await redis.set(key, holder, nx=True, px=ttl_ms)
                if not claimed:
                    continue
        if not claimed:
            assert current is not None
            if not _stale_on_this_host(current, host, pid):
                continue
            claimed = bool(await redis.eval(_TAKE_OVER, 1, key, current, holder, ttl_ms))  # type: ignore[misc]
            if not claimed:
                continue
        _held_here.add(holder)
        instance = f"{service}-{slot}"
        log.info("instance claimed", instance=instance, host=host, pid=pid)
        return InstanceClaim(redis, key, instance, holder, ttl_s)
    raise InstanceClaimError(
        f"all {MAX_SLOTS} instance names of {service} are held in Redis; set VOLGUARD_INSTANCE explicitly "
        "or stop some replicas"
    )
