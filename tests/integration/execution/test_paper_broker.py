"""The paper broker behind the broker port, driven by the basket runner the service uses, in exchange time.

- a 4-leg condor becomes a filled basket: wings first, every order reported, positions = the fills;
- a submit whose answer is lost is found in the book by its tag and never sent twice;
- paper positions persist in Postgres across a restart, and an order working when the process died is
  CANCELLED with what it filled;
- forced faults: a synchronous refusal is retryable, a broker that is down fails reads instead of
  answering "nothing", and the probe says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

import pytest

from tests.unit.execution.test_basket_guard import CONFIG, CONTRACTS, FREEZE, LOT, T0, TICK, condor
from volguard_common import db
from volguard_common.clock import nse_calendar
from volguard_common.events._base import Side
from volguard_common.events.orders import BasketStatus, IntentKind, OrderStatus, Urgency
from volguard_common.lease import Fence, StaleLeaseError
from volguard_execution.adapters.paper_broker import MemoryPaperStore, PaperBroker, PaperStore
from volguard_execution.adapters.paper_store import PostgresPaperStore
from volguard_execution.domain.basket_guard import BasketGuard, Contract, RaiseAlert
from volguard_execution.domain.orders import Order, OrderKey
from volguard_execution.domain.paper_exchange import InstrumentRules, PaperOrder, Quote
from volguard_execution.ports import (
    Broker,
    BrokerTrade,
    BrokerUnavailable,
    OrderRequest,
    SubmitAck,
    SubmitOutcomeUnknown,
    SubmitRejected,
)
from volguard_execution.runner import BasketRunner


class UnlimitedMargin:
    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        return None


@dataclass
class Recorder:
    """The journal: what the service would persist and publish."""

    changes: list[tuple[OrderKey, OrderStatus, int]] = field(default_factory=list)
    fills: list[BrokerTrade] = field(default_factory=list)
    alerts: list[RaiseAlert] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    async def order_changed(self, guard: BasketGuard, order: Order) -> None:
        self.changes.append((order.key, order.status, order.filled_qty))

    async def filled(self, guard: BasketGuard, order: Order, trade: BrokerTrade) -> None:
        self.fills.append(trade)

    async def alert(self, guard: BasketGuard, alert: RaiseAlert) -> None:
        self.alerts.append(alert)

    async def basket_ended(self, guard: BasketGuard) -> None:
        self.ended.append(guard.basket.basket_id)


class Market:
    """Exchange time and the simulated book, as market data would drive them."""

    def __init__(self) -> None:
        self.now = T0

    def clock(self) -> datetime:
        return self.now

    async def quote_all(self, broker: PaperBroker, runner: BasketRunner | None = None) -> None:
        for contract in CONTRACTS.values():
            bid, ask = (contract.mid_ticks - 2) * TICK, (contract.mid_ticks + 2) * TICK
            await broker.on_quote(Quote(contract.key, bid, ask, 650, 650, self.now))
            if runner is not None:
                for guard in runner.guards.values():
                    guard.on_quote(contract.key, bid, ask)


RULES = {c.key: InstrumentRules(c.key, LOT, TICK, FREEZE, TICK, Decimal(5000)) for c in CONTRACTS.values()}


async def open_broker(market: Market, store: PaperStore) -> PaperBroker:
    return await PaperBroker.open(
        instruments=RULES,
        calendar=nse_calendar(),
        margin=UnlimitedMargin(),
        store=store,
        clock=market.clock,
        latency=timedelta(milliseconds=20),
    )


async def drain(broker: PaperBroker, runner: BasketRunner) -> None:
    updates = broker.updates()
    while not broker._updates.empty():
        await runner.on_update(await anext(updates))


async def run_until_ended(
    market: Market, broker: PaperBroker, runner: BasketRunner, guard: BasketGuard
) -> None:
    # Event time advances in 100 ms steps with a fresh book each step; bounded by the basket's own
    # deadlines (four stages of 10 s at most), not by the wall clock.
    for _ in range(600):
        if guard.ended:
            return
        market.now += timedelta(milliseconds=100)
        await market.quote_all(broker, runner)
        await broker.advance()
        await drain(broker, runner)
        await runner.tick()
    raise AssertionError(f"basket never ended: {[(o.key, o.status) for o in guard.orders]}")


def new_guard(market: Market, basket_id: str = "basket-1") -> BasketGuard:
    return BasketGuard(
        condor(basket_id, IntentKind.ENTRY, 3, Urgency.NORMAL),
        contract=Contract(TICK, FREEZE),
        config=CONFIG,
        now=market.now,
    )


async def test_a_condor_becomes_a_filled_paper_basket_wings_first() -> None:
    market = Market()
    broker = await open_broker(market, MemoryPaperStore())
    journal = Recorder()
    runner = BasketRunner(broker, journal, market.clock)
    await market.quote_all(broker)
    guard = new_guard(market)
    await market.quote_all(broker, runner)
    runner.guards[guard.basket.basket_id] = guard
    await market.quote_all(broker, runner)
    await runner.start(guard)
    # 3 lots with a freeze of 2 lots: two slices per leg, and only the wings go out first.
    placed = {key for key, status, _ in journal.changes if status is OrderStatus.NEW}
    assert {guard.orders[k].side for k in placed} == {Side.BUY}
    assert len(placed) == 4
    await run_until_ended(market, broker, runner, guard)
    assert guard.outcome is not None
    assert guard.outcome.status is BasketStatus.FILLED
    assert journal.ended == ["basket-1"]
    positions = {p.instrument_key: p.net_quantity for p in await broker.positions()}
    assert positions == guard.positions()
    assert positions == {
        leg.instrument_key: (195 if leg.side is Side.BUY else -195) for leg in guard.basket.legs
    }
    # Every fill was told once, and the first fill of each order says so (brokerage once per order).
    assert len({f.trade.trade_id for f in journal.fills}) == len(journal.fills) == len(await broker.trades())
    first = {f.broker_order_id for f in journal.fills if f.first_fill_of_order}
    assert first == {f.broker_order_id for f in journal.fills}


async def test_a_lost_submit_answer_is_found_by_its_tag_and_not_sent_again() -> None:
    market = Market()
    broker = await open_broker(market, MemoryPaperStore())
    journal = Recorder()
    runner = BasketRunner(broker, journal, market.clock)
    guard = new_guard(market)
    runner.guards[guard.basket.basket_id] = guard
    await market.quote_all(broker, runner)
    broker.faults.lose_answer.add(guard.basket.legs[0].client_order_id)
    await runner.start(guard)
    assert {o.status for o in guard.orders if o.key.leg_index == 0} == {OrderStatus.UNKNOWN}
    await run_until_ended(market, broker, runner, guard)
    assert guard.outcome is not None
    assert guard.outcome.status is BasketStatus.FILLED
    leg0 = [o for o in await broker.order_book() if o.client_order_id == guard.basket.legs[0].client_order_id]
    assert len(leg0) == 2  # its two slices, each sent once
    assert {p.instrument_key: p.net_quantity for p in await broker.positions()} == guard.positions()


async def test_paper_positions_persist_across_a_restart_and_working_orders_die_with_the_session(
    fresh_database_url: str,
) -> None:
    await db.ensure_database(fresh_database_url)
    pool = await db.create_pool(fresh_database_url)
    try:
        async with pool.acquire() as conn:
            await db.ensure_core_schema(conn)
            await db.apply_migrations(conn, "execution", db.load_migrations("volguard_execution"))
        market = Market()
        broker = await open_broker(market, PostgresPaperStore(pool, Fence("execution:paper-test", 1)))
        await market.quote_all(broker)
        wing, short = CONTRACTS["CE_WING"], CONTRACTS["CE_SHORT"]
        filled = OrderRequest(OrderKey("b", 0, 0), wing.key, Side.BUY, 130, (wing.mid_ticks + 2) * TICK)
        resting = OrderRequest(OrderKey("b", 1, 0), short.key, Side.SELL, 130, (short.mid_ticks + 10) * TICK)
        first_ack = await broker.submit(filled)
        await broker.submit(resting)
        market.now += timedelta(seconds=1)
        await broker.advance()
        before = {p.instrument_key: p.net_quantity for p in await broker.positions()}
        assert before == {wing.key: 130}
        old_ids = {o.broker_order_id for o in await broker.order_book()}
        await broker.close()

        market.now += timedelta(seconds=5)
        again = await open_broker(market, PostgresPaperStore(pool, Fence("execution:paper-test", 2)))
        assert {p.instrument_key: p.net_quantity for p in await again.positions()} == before
        book = {o.client_order_id: o for o in await again.order_book()}
        assert book[filled.client_order_id].report.status is OrderStatus.FILLED
        assert book[resting.client_order_id].report.status is OrderStatus.CANCELLED
        # A new session's order ids never repeat the last one's.
        await again.on_quote(
            Quote(wing.key, (wing.mid_ticks - 2) * TICK, (wing.mid_ticks + 2) * TICK, 650, 650, market.now)
        )
        ack = await again.submit(
            OrderRequest(OrderKey("c", 0, 0), wing.key, Side.BUY, 65, wing.mid_ticks * TICK)
        )
        assert first_ack.broker_order_id in old_ids
        assert ack.broker_order_id not in old_ids
    finally:
        await pool.close()


async def test_a_replica_that_lost_the_lease_cannot_write_the_paper_account(fresh_database_url: str) -> None:
    await db.ensure_database(fresh_database_url)
    pool = await db.create_pool(fresh_database_url)
    try:
        async with pool.acquire() as conn:
            await db.ensure_core_schema(conn)
            await db.apply_migrations(conn, "execution", db.load_migrations("volguard_execution"))
        market = Market()
        stale = await open_broker(market, PostgresPaperStore(pool, Fence("execution:paper-fenced", 1)))
        await market.quote_all(stale)
        # The standby takes over (a larger token) and opens the account: the old holder is fenced off.
        await open_broker(market, PostgresPaperStore(pool, Fence("execution:paper-fenced", 2)))
        wing = CONTRACTS["CE_WING"]
        request = OrderRequest(OrderKey("z", 0, 0), wing.key, Side.BUY, 65, (wing.mid_ticks + 2) * TICK)
        with pytest.raises(StaleLeaseError):
            await stale.submit(request)
        market.now += timedelta(seconds=1)
        with pytest.raises(StaleLeaseError):
            await stale.advance()
        assert await pool.fetchval("select count(*) from execution.paper_orders") == 0
        assert await pool.fetchval("select count(*) from execution.paper_trades") == 0
        assert await pool.fetchval("select count(*) from execution.paper_sessions") == 2
    finally:
        await pool.close()


async def test_forced_faults_refuse_fail_and_show_in_the_probe() -> None:
    market = Market()
    broker: Broker = await open_broker(market, MemoryPaperStore())
    assert isinstance(broker, PaperBroker)
    request = OrderRequest(OrderKey("f", 0, 0), CONTRACTS["CE_WING"].key, Side.BUY, 65, Decimal(20))
    broker.faults.refuse.add(request.client_order_id)
    with pytest.raises(SubmitRejected) as refused:
        await broker.submit(request)
    assert refused.value.retryable
    assert await broker.order_history(request.client_order_id) == []
    assert (await broker.probe()).ok
    broker.faults.down = True
    probe = await broker.probe()
    assert not probe.ok
    assert probe.latency_ms is None
    with pytest.raises(BrokerUnavailable):
        await broker.positions()
    with pytest.raises(BrokerUnavailable):
        await broker.order_book()


class RefuseOneSliceLoseAnother:
    """The paper broker behind a flaky line: one slice's submit is refused before the broker takes it
    (a 429), the answer to another slice of the same tag is lost after it was placed."""

    def __init__(self, inner: PaperBroker, refuse: OrderKey, lose: OrderKey) -> None:
        self.inner = inner
        self.refuse: set[OrderKey] = {refuse}
        self.lose = lose
        self.sent: list[OrderKey] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def submit(self, request: OrderRequest) -> SubmitAck:
        if request.key in self.refuse:
            self.refuse.discard(request.key)
            raise SubmitRejected("429 too many requests", retryable=True)
        self.sent.append(request.key)
        ack = await self.inner.submit(request)
        if request.key == self.lose:
            raise SubmitOutcomeUnknown("read timeout after sending")
        return ack


async def test_an_update_for_a_slice_whose_answer_was_lost_never_lands_on_an_unsent_sibling(
    fresh_database_url: str,
) -> None:
    await db.ensure_database(fresh_database_url)
    pool = await db.create_pool(fresh_database_url)
    try:
        async with pool.acquire() as conn:
            await db.ensure_core_schema(conn)
            await db.apply_migrations(conn, "execution", db.load_migrations("volguard_execution"))
        market = Market()
        paper = await open_broker(market, PostgresPaperStore(pool, Fence("execution:paper-slices", 1)))
        guard = new_guard(market)  # 3 lots, freeze 2 lots: slices of 130 and 65 under one tag
        first_slice, second_slice = OrderKey("basket-1", 0, 0, 0), OrderKey("basket-1", 0, 0, 1)
        broker = RefuseOneSliceLoseAnother(paper, refuse=first_slice, lose=second_slice)
        journal = Recorder()
        runner = BasketRunner(cast(Broker, broker), journal, market.clock)
        runner.guards[guard.basket.basket_id] = guard
        await market.quote_all(paper, runner)
        await runner.start(guard)
        assert guard.orders[first_slice].status is OrderStatus.NEW  # refused, unsent
        assert guard.orders[second_slice].status is OrderStatus.UNKNOWN
        await run_until_ended(market, paper, runner, guard)
        assert guard.outcome is not None
        assert guard.outcome.status is BasketStatus.FILLED
        # Each slice reached the exchange once, under its own key; the refused one went again later.
        assert sorted(k for k in broker.sent if k.leg_index == 0) == [first_slice, second_slice]
        book = [o for o in await paper.order_book() if o.client_order_id == first_slice.client_order_id]
        assert sorted(o.quantity for o in book) == [65, 130]
        assert {guard.orders[first_slice].broker_order_id, guard.orders[second_slice].broker_order_id} == {
            o.broker_order_id for o in book
        }
        assert {p.instrument_key: p.net_quantity for p in await paper.positions()} == guard.positions()
    finally:
        await pool.close()
