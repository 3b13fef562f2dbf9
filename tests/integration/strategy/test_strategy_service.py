"""The strategy service in-process against real Redis and Postgres: scripted md.chain, an.vol,
rk.portfolio and rk.state in; intents, recommendations and the journal out; a redelivery and a
restart."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from tests.unit.strategy.market import TS, empty_portfolio, market, paused, running
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST
from volguard_common.events import Bucket, ChainSnapshot, IntentKind, Structure, TradeIntent
from volguard_common.events.strategy import StrategyRecommendations
from volguard_common.events.vol import VolSnapshot
from volguard_common.settings import Settings
from volguard_strategy.app import SPEC as STRATEGY
from volguard_strategy.ports import Journal, StrategistState
from volguard_strategy.service import StrategyService

E = TypeVar("E", bound=events.Event)


@pytest.fixture
def strategy_settings(settings: Settings, fresh_database_url: str) -> Settings:
    # A database of the test's own: the journal and the restart see only what this test's strategy wrote.
    return settings.model_copy(update={"database_url": fresh_database_url})


def publisher(redis: Redis, settings: Settings, service: str) -> Publisher:
    return Publisher(redis, BusConfig.from_settings(settings), service=service, source=f"{service}/test")


async def on_stream(redis: Redis, settings: Settings, stream: str, kind: type[E]) -> list[E]:
    entries = await redis.xrange(f"{settings.stream_namespace}{stream}")
    found = [events.parse_event(fields[b"event"]) for _, fields in entries]
    return [e for e in found if isinstance(e, kind)]


async def handled_all(redis: Redis, settings: Settings, stream: str) -> bool:
    """Strategy's group has read and acknowledged every entry of `stream`."""
    groups = await redis.xinfo_groups(f"{settings.stream_namespace}{stream}")
    mine = [g for g in groups if g["name"] == b"strategy"]
    return bool(mine) and mine[0]["lag"] == 0 and mine[0]["pending"] == 0


async def journal(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def decisions_of(settings: Settings, vol: VolSnapshot) -> list[asyncpg.Record]:
    return await journal(
        settings,
        "select bucket, structure, rule, reasons, intent_id, correlation_id from strategy.decisions "
        "where vol_event_id = $1 order by bucket",
        vol.event_id,
    )


def at(snapshot: VolSnapshot, seconds: float) -> VolSnapshot:
    """The scripted snapshot `seconds` later in event time, as a new VolSnapshot (a new event id)."""
    return snapshot.model_copy(
        update={"ts_event": TS + timedelta(seconds=seconds), "event_id": events.new_event_id()}
    )


async def test_intents_for_several_buckets_traced_once_and_every_wait_journalled(
    redis: Redis, strategy_settings: Settings
) -> None:
    base, chains = market()
    analytics = publisher(redis, strategy_settings, "analytics")
    market_data = publisher(redis, strategy_settings, "market_data")
    risk = publisher(redis, strategy_settings, "risk")
    blind, first, again = base, at(base, 60), at(base, 120)
    async with running_service(STRATEGY, strategy_settings, redis):
        await _publish_chains(market_data, chains)
        # No trading state or portfolio from risk yet: nothing is proposed, and the journal says why.
        await analytics.publish(blind)
        waits = await eventually(lambda: decisions_of(strategy_settings, blind), what="the blind journal")
        assert {r["bucket"] for r in waits} == {b.value for b in Bucket}
        for row in waits:
            assert row["structure"] == Structure.WAIT.value
            assert row["intent_id"] is None
            assert "no trading state from risk yet" in row["reasons"][-1]
            assert row["correlation_id"] == blind.correlation_id
        # The dashboard's view of the journal (/api/strategy/journal) carries the evaluation with it.
        viewed = await journal(
            strategy_settings,
            "select quality, spot, premium_signal from strategy.journal where vol_event_id = $1",
            blind.event_id,
        )
        assert [tuple(r) for r in viewed] == [("GOOD", blind.spot, blind.premium.signal.value)] * 3

        # Risk's start-up transition carries the wall time (it answers no event), the next ones exchange
        # time: strategy follows risk's order on the stream, not the timestamps.
        await risk.publish(paused(datetime.now(IST)))
        await risk.publish(running(TS))
        await risk.publish(empty_portfolio(TS))
        for stream in ("rk.state", "rk.portfolio"):
            await eventually(lambda s=stream: handled_all(redis, strategy_settings, s), what=f"{stream} read")
        await analytics.publish(first)
        intents = await eventually(
            lambda: on_stream(redis, strategy_settings, "st.intents", TradeIntent), what="intents"
        )
        entries = [i for i in intents if i.kind is IntentKind.ENTRY]
        assert len({i.bucket for i in entries}) >= 2
        # Traced to the chain set that caused them: the VolSnapshot's correlation id is its front chain's.
        front = chains[min(chains)]
        assert {i.correlation_id for i in intents} == {front.correlation_id}
        journalled = await decisions_of(strategy_settings, first)
        assert {r["intent_id"] for r in journalled if r["intent_id"]} == {i.intent_id for i in entries}
        recommendations = await eventually(
            lambda: on_stream(redis, strategy_settings, "st.recommendations", StrategyRecommendations),
            what="recommendations",
        )
        assert recommendations[-1].vol_event_id == first.event_id
        assert recommendations[-1].recommendations

        # The same VolSnapshot delivered again (a producer retry, a lost ack): no second intent.
        await analytics.publish(first)
        await eventually(lambda: handled_all(redis, strategy_settings, "an.vol"), what="the redelivery")
        assert await on_stream(redis, strategy_settings, "st.intents", TradeIntent) == intents
        assert len(await journal(strategy_settings, "select 1 from strategy.evaluations")) == 2

    # A restart (a standby taking over) inside the cooldown: it remembers the entries and waits.
    async with running_service(STRATEGY, strategy_settings, redis):
        await _publish_chains(market_data, chains)
        await analytics.publish(again)
        cooled = await eventually(
            lambda: decisions_of(strategy_settings, again), what="the restarted journal"
        )
        for row in cooled:
            if row["bucket"] in {i.bucket.value for i in entries}:
                assert row["structure"] == Structure.WAIT.value
                assert row["reasons"][-1].startswith("cooldown: last"), row["reasons"]
        # It read risk's trading state back from rk.state: no "no trading state" wait after the restart.
        assert not any("no trading state" in r["reasons"][-1] for r in cooled)
    assert await on_stream(redis, strategy_settings, "st.intents", TradeIntent) == intents


async def _publish_chains(market_data: Publisher, chains: dict[date, ChainSnapshot]) -> None:
    for expiry in sorted(chains):
        await market_data.publish(chains[expiry])


class JournalFailingOnce:
    """The real journal, except that its first write fails (a lost connection mid-transaction)."""

    def __init__(self, real: Journal) -> None:
        self.real = real
        self.failures = 0

    async def restore(self) -> StrategistState:
        return await self.real.restore()

    async def record(self, *args: Any) -> None:
        if self.failures == 0:
            self.failures += 1
            raise ConnectionResetError("scripted: the journal write was cut off")
        await self.real.record(*args)


async def test_a_failed_transaction_leaves_no_cooldown_behind_and_the_redelivery_proposes(
    redis: Redis, strategy_settings: Settings
) -> None:
    snapshot, chains = market()
    risk = publisher(redis, strategy_settings, "risk")
    await risk.publish(running(TS))
    await risk.publish(empty_portfolio(TS))
    async with running_service(STRATEGY, strategy_settings, redis) as ctx:
        service = ctx.extensions["strategy"]
        assert isinstance(service, StrategyService)
        journal = JournalFailingOnce(service.journal)
        service.journal = journal
        await _publish_chains(publisher(redis, strategy_settings, "market_data"), chains)
        await publisher(redis, strategy_settings, "analytics").publish(snapshot)
        intents = await eventually(
            lambda: on_stream(redis, strategy_settings, "st.intents", TradeIntent), what="intents"
        )
        await eventually(lambda: handled_all(redis, strategy_settings, "an.vol"), what="an.vol acknowledged")
    # Had the failed attempt kept its cooldowns, the redelivery would have waited on them instead.
    assert journal.failures == 1
    assert {i.bucket for i in intents if i.kind is IntentKind.ENTRY} == set(Bucket)
    assert len(intents) == len({i.intent_id for i in intents})
    assert service.strategist.last_entry == {b: snapshot.ts_event for b in Bucket}
