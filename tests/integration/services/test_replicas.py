"""Replicas in-process: a single-active standby does nothing until it holds the lease; dashboard
replicas each see every entry."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tests.support.samples import sample_tick
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Delivery, Publisher
from volguard_common.service import ServiceContext, ServiceSpec, start_service, stop_service
from volguard_common.settings import Settings


async def _async(value: object) -> object:
    return value


async def test_a_standby_runs_no_setup_and_no_consumer_until_the_holder_lets_go(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(
        update={"database_url": fresh_database_url, "lease_ttl_ms": 60_000, "lease_poll_interval_ms": 50}
    )
    set_up: list[str] = []

    async def setup(context: ServiceContext) -> None:
        set_up.append(context.settings.instance)

    spec = ServiceSpec(name="risk", schema=None, migrations_package=None, setup=setup, single_active=True)
    first = await start_service(spec, settings.model_copy(update={"instance": "a"}), redis)
    second: ServiceContext | None = None
    try:
        await eventually(lambda: _async(first.role == "active"), what="the first replica active")
        second = await start_service(spec, settings.model_copy(update={"instance": "b"}), redis)
        # The second has tried (it polls every 50 ms) and stands by: no setup, no consumer.
        await eventually(
            lambda: _async(second is not None and second.lease is not None and second.lease.token is None),
            what="the second replica polling",
        )
        assert second.role == "standby"
        assert set_up == ["a"]
        assert first.fencing_token == 1
        # A clean stop releases the lease: the standby need not wait for the minute-long ttl.
        await stop_service(first)
        await eventually(lambda: _async(second is not None and second.role == "active"), what="b took over")
        assert set_up == ["a", "b"]
        assert second.fencing_token == 2
        assert second.lease is not None
        assert second.lease.acquisition is not None
        assert second.lease.acquisition.takeover_gap_ms is None  # handed over, not taken over
    finally:
        if first.lease_task is not None and not first.lease_task.done():
            await stop_service(first)
        if second is not None:
            await stop_service(second)


async def test_every_dashboard_replica_sees_every_snapshot(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    seen: dict[str, list[str]] = {"d1": [], "d2": []}

    async def setup(context: ServiceContext) -> None:
        async def show(event: events.Event, delivery: Delivery) -> None:
            seen[context.settings.instance].append(event.event_id)

        context.consumer.subscribe("md.ticks", show)

    spec = ServiceSpec(name="dashboard_api", schema=None, migrations_package=None, setup=setup)
    base = settings.model_copy(update={"database_url": fresh_database_url})
    replicas = [
        await start_service(spec, base.model_copy(update={"instance": i}), redis) for i in ("d1", "d2")
    ]
    try:
        publisher = Publisher(
            redis, BusConfig(namespace=settings.stream_namespace), service="market_data", source="md/t"
        )
        ticks = [sample_tick(24000.0 + i) for i in range(3)]
        for tick in ticks:
            await publisher.publish(tick)
        want = [tick.event_id for tick in ticks]
        await eventually(lambda: _async(seen == {"d1": want, "d2": want}), what="both replicas saw all three")
    finally:
        await asyncio.gather(*(stop_service(replica) for replica in replicas))
    groups = sorted(
        g["name"].decode() for g in await redis.xinfo_groups(settings.stream_namespace + "md.ticks")
    )
    assert groups == ["dashboard_api.d1", "dashboard_api.d2"]


async def test_a_relay_that_dies_stops_the_replica_instead_of_leaving_it_consuming(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url, "outbox_poll_interval_ms": 50})
    failed: list[str | None] = []
    spec = ServiceSpec(name="strategy", schema=None, migrations_package=None)
    context = await start_service(spec, settings, redis, on_failure=lambda c: failed.append(c.failure))
    try:
        assert context.role == "active"
        # Not an outage to wait out: the relay cannot work at all, so the replica must not go on.
        await context.pool.execute("DROP TABLE public.outbox")
        await eventually(lambda: _async(failed), what="the failure reported")
        assert context.role == "standby"
        assert failed[0] is not None
        assert "outbox-relay" in failed[0]
        assert "UndefinedTableError" in failed[0]
    finally:
        await stop_service(context)
