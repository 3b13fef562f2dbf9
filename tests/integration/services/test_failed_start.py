"""A service whose start fails half-way leaves nothing behind (no task, no open connection), and one
whose background loop dies stops acting instead of looking healthy."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.support.waiting import eventually
from volguard_common.service import ServiceContext, ServiceSpec, start_service, stop_service
from volguard_common.settings import Settings


async def _connections_to(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name
            )
        )
    finally:
        await admin.close()


@pytest.mark.parametrize("single_active", [False, True])
async def test_a_setup_that_fails_closes_the_pool_and_cancels_what_start_began(
    redis: Redis, settings: Settings, fresh_database_url: str, single_active: bool
) -> None:
    async def setup(context: ServiceContext) -> None:
        # Something the start began before the failure: it must not outlive the failed start.
        context.tasks.append(asyncio.create_task(asyncio.Event().wait(), name="begun-by-setup"))
        raise RuntimeError("the broker refused the token")

    spec = ServiceSpec(
        name="risk", schema=None, migrations_package=None, setup=setup, single_active=single_active
    )
    before = {t for t in asyncio.all_tasks() if not t.done()}
    with pytest.raises(RuntimeError, match="refused the token"):
        await start_service(spec, settings.model_copy(update={"database_url": fresh_database_url}), redis)
    left = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], f"tasks left running after a failed start: {left}"
    assert await _connections_to(fresh_database_url) == 0


async def test_a_background_loop_that_dies_stops_the_replica_acting(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    # Reconciliation, a broker stream: a loop that ends on an unexpected error must not leave a
    # replica that looks healthy while part of its job silently stopped.
    async def reconcile_forever() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("the broker answered something nobody expected")

    async def setup(context: ServiceContext) -> None:
        context.spawn(reconcile_forever(), "reconcile")

    spec = ServiceSpec(
        name="execution", schema=None, migrations_package=None, setup=setup, single_active=True
    )
    context = await start_service(
        spec, settings.model_copy(update={"database_url": fresh_database_url}), redis
    )
    try:
        failure = await eventually(
            lambda: asyncio.sleep(0, context.failure), what="the replica to stop acting"
        )
        assert "reconcile" in failure
        assert "nobody expected" in failure
    finally:
        await stop_service(context)
