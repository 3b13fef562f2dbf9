"""The analytics service in-process: chain sets in on md.chain, VolSnapshots out on an.vol."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg
from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_analytics.app import SPEC
from volguard_common import db, events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_common.settings import Settings

EXPIRIES = (date(2026, 2, 10), date(2026, 2, 17), date(2026, 2, 24))


def chain_sets(instants: int) -> list[list[events.ChainSnapshot]]:
    """Deterministic sets (fixed event ids): each instant, every expiry, spot drifting a little."""
    sets = []
    for i in range(instants):
        ts = DEFAULT_TS_EVENT + timedelta(seconds=i)
        sets.append(
            [
                sample_chain_snapshot(
                    41,
                    spot=24_000.0 + 3 * i,
                    ts_event=ts,
                    expiry=expiry,
                    event_id=f"01950000-0000-7000-8000-{i:06d}{k:06d}",
                ).model_copy(update={"expiries_in_set": len(EXPIRIES)})
                for k, expiry in enumerate(EXPIRIES)
            ]
        )
    return sets


async def run_analytics(
    redis: Redis, settings: Settings, sets: list[list[events.ChainSnapshot]]
) -> list[bytes]:
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    async with running_service(SPEC, settings, redis):
        for chain_set in sets:
            for snapshot in chain_set:
                await publisher.publish(snapshot)
        entries = await eventually(
            lambda: _entries_when(redis, config.key("an.vol"), len(sets)), what=f"{len(sets)} VolSnapshots"
        )
    return [fields[b"event"] for _, fields in entries]


async def _entries_when(redis: Redis, key: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]] | None:
    entries = await redis.xrange(key)
    return entries if len(entries) >= count else None


async def test_every_complete_chain_set_becomes_one_vol_snapshot(redis: Redis, settings: Settings) -> None:
    sets = chain_sets(3)
    payloads = await run_analytics(redis, settings, sets)
    snapshots = [events.parse_event(p) for p in payloads]
    assert all(isinstance(s, events.VolSnapshot) for s in snapshots)
    assert [s.ts_event for s in snapshots] == [chain_set[0].ts_event for chain_set in sets]
    for snapshot, chain_set in zip(snapshots, sets, strict=True):
        assert isinstance(snapshot, events.VolSnapshot)
        assert [e.expiry for e in snapshot.expiries] == list(EXPIRIES)
        assert snapshot.correlation_id == chain_set[0].correlation_id
        for block in snapshot.expiries:
            assert block.atm_iv is not None
            assert 0.05 < block.atm_iv < 0.5
    # Persisted once per minute of exchange time: the first of three one-second-apart sets.
    pool = await db.create_pool(settings.database_url)
    try:
        rows = await pool.fetch(
            "select ts_event, event_id from analytics.vol_snapshots where ts_event between $1 and $2 "
            "order by ts_event",
            snapshots[0].ts_event,
            snapshots[-1].ts_event,
        )
    finally:
        await pool.close()
    assert [(r["ts_event"], r["event_id"]) for r in rows] == [(snapshots[0].ts_event, snapshots[0].event_id)]


async def test_same_chain_sets_twice_give_identical_payloads(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    sets = chain_sets(4)
    first = await run_analytics(redis, settings, sets)
    # A second run from scratch: fresh namespace and an empty vol_snapshots table.
    await _truncate(fresh_database_url)
    second_settings = settings.model_copy(update={"stream_namespace": settings.stream_namespace + "again:"})
    second = await run_analytics(redis, second_settings, sets)
    assert first == second


async def _truncate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("truncate analytics.vol_snapshots")
    finally:
        await conn.close()


async def test_a_set_whose_first_processing_failed_is_processed_on_redelivery(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    # Issue 13 item 8. The first processing of the set fails transiently: the engine's first load reads
    # analytics.event_calendar, which the test moves away for that moment. The entry that completed the
    # set stays pending; its redelivery must give the VolSnapshot, not be dropped as late.
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    (chain_set,) = chain_sets(1)
    errors_key = f"{config.namespace}bus:errors:md.chain:analytics"
    conn = await asyncpg.connect(fresh_database_url)
    try:
        async with running_service(SPEC, settings, redis):
            await conn.execute("alter table analytics.event_calendar rename to event_calendar_away")
            for snapshot in chain_set:
                await publisher.publish(snapshot)
            await eventually(lambda: _hash_not_empty(redis, errors_key), what="the first attempt to fail")
            await conn.execute("alter table analytics.event_calendar_away rename to event_calendar")
            entries = await eventually(
                lambda: _entries_when(redis, config.key("an.vol"), 1), what="the set's VolSnapshot"
            )
            assert await redis.xlen(config.key("dlq.md.chain")) == 0
    finally:
        await conn.close()
    assert entries is not None
    (published,) = [events.parse_event(fields[b"event"]) for _, fields in entries]
    assert isinstance(published, events.VolSnapshot)
    assert published.ts_event == chain_set[0].ts_event
    assert published.chain_event_ids == [s.event_id for s in chain_set]


async def _hash_not_empty(redis: Redis, key: str) -> bool:
    return bool(await redis.hlen(key))  # type: ignore[misc]
