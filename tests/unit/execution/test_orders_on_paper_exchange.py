"""Working orders driven by the paper exchange, the way the paper broker and the backtest will drive them.

Legs are sliced at the freeze quantity; the exchange injects partial fills (fill caps), rejects,
delays and silent orders; submits can lose their answer (UNKNOWN); the report channel delivers out of
order and duplicates. Invariants after every step:
- at most one live order per (client order id, attempt, slice), and no attempt while another is live;
- filled never above the order quantity, nor above what the exchange really filled;
- positions equal the sum of the fills delivered;
and at the end, after every report is delivered and every UNKNOWN or silent order is resolved from the
exchange's order book, positions equal the exchange's own trades.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from volguard_common.clock import IST, nse_calendar
from volguard_common.events._base import Side
from volguard_execution.domain.orders import DuplicateTrade, OrderKey, WorkingOrders, slice_quantities
from volguard_execution.domain.paper_exchange import (
    InstrumentRules,
    OrderType,
    PaperExchange,
    PaperOrder,
    Quote,
    Report,
    Traded,
    apply_report,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
LOT = 65
FREEZE = 1800
TICK = Decimal("0.05")
BASKET = "basket-paper"
LEGS = {0: ("NSE_FO|WING", Side.BUY), 1: ("NSE_FO|SHORT", Side.SELL)}


class UnlimitedMargin:
    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        return None


class OrdersOnThePaperExchange(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        rules = {
            key: InstrumentRules(key, LOT, TICK, FREEZE, TICK, Decimal(1000)) for key, _ in LEGS.values()
        }
        self.exchange = PaperExchange(
            instruments=rules,
            calendar=nse_calendar(),
            margin=UnlimitedMargin(),
            latency=timedelta(milliseconds=20),
        )
        self.book = WorkingOrders()
        self.now = T0
        self.attempts: dict[int, int] = {}
        self.routes: dict[str, OrderKey] = {}  # exchange order id → order (the broker adapter's table)
        self.channel: list[Report] = []
        self.delivered: dict[str, Traded] = {}
        for key, _ in LEGS.values():
            self._requote(key, 1000, 10, 650, 650)

    # -- helpers ----------------------------------------------------------------------------------

    def _tick(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)

    def _requote(
        self, instrument: str, bid_ticks: int, spread_ticks: int, bid_qty: int, ask_qty: int
    ) -> None:
        quote = Quote(
            instrument, bid_ticks * TICK, (bid_ticks + spread_ticks) * TICK, bid_qty, ask_qty, self.now
        )
        self.channel.extend(self.exchange.on_quote(quote))

    def _deliver(self, report: Report) -> None:
        order = self.book[self.routes[report.exchange_order_id]]
        if isinstance(report, Traded) and report.trade_id in order.trades:
            with pytest.raises(DuplicateTrade):
                apply_report(order, report)
            return
        apply_report(order, report)
        if isinstance(report, Traded):
            self.delivered[report.trade_id] = report

    def _live_leg(self, leg: int) -> bool:
        return any(o.live for o in self.book if o.key.leg_index == leg)

    # -- rules ----------------------------------------------------------------------------------------

    @precondition(lambda self: not all(self._live_leg(leg) for leg in LEGS))
    @rule(
        leg=st.sampled_from(sorted(LEGS)),
        lots=st.integers(1, 60),
        offset_ticks=st.integers(-20, 20),
        fault=st.sampled_from(["none", "none", "reject", "cap", "silent", "delay"]),
        answer_lost=st.booleans(),
    )
    def place_leg(self, leg: int, lots: int, offset_ticks: int, fault: str, answer_lost: bool) -> None:
        if self._live_leg(leg):
            return
        instrument, side = LEGS[leg]
        attempt = self.attempts.get(leg, 0)
        self.attempts[leg] = attempt + 1
        touch = self.exchange.quote(instrument)
        assert touch is not None
        assert touch.bid is not None
        assert touch.ask is not None
        base = touch.ask if side is Side.BUY else touch.bid
        price = max(TICK, base + offset_ticks * TICK)
        for slice_index, quantity in enumerate(slice_quantities(lots * LOT, FREEZE, LOT)):
            key = OrderKey(BASKET, leg, attempt, slice_index)
            order = self.book.place(
                key, instrument_key=instrument, side=side, quantity=quantity, limit_price=price
            )
            tag = key.client_order_id
            if fault == "reject":
                self.exchange.faults.reject[tag] = "forced"
            elif fault == "cap":
                self.exchange.faults.fill_cap[tag] = LOT
            elif fault == "silent":
                self.exchange.faults.silent.add(tag)
            elif fault == "delay":
                self.exchange.faults.delay[tag] = timedelta(seconds=2)
            exchange_order_id, due = self.exchange.submit(
                PaperOrder(tag, instrument, side, quantity, OrderType.LIMIT, price), self.now
            )
            self.channel.extend(due)
            self.routes[exchange_order_id] = key
            if answer_lost:
                order.submit_outcome_unknown("timeout waiting for the place answer")
            else:
                order.acknowledge(exchange_order_id)

    @rule(
        leg=st.sampled_from(sorted(LEGS)),
        move_ticks=st.integers(-15, 15),
        spread_ticks=st.integers(1, 20),
        bid_lots=st.integers(0, 40),
        ask_lots=st.integers(0, 40),
        ms=st.integers(1, 3000),
    )
    def market_moves(
        self, leg: int, move_ticks: int, spread_ticks: int, bid_lots: int, ask_lots: int, ms: int
    ) -> None:
        self._tick(ms)
        instrument, _ = LEGS[leg]
        current = self.exchange.quote(instrument)
        assert current is not None
        assert current.bid is not None
        bid_ticks = max(1, int(current.bid / TICK) + move_ticks)
        self._requote(instrument, bid_ticks, spread_ticks, bid_lots * LOT, ask_lots * LOT)

    @precondition(lambda self: any(o.live and o.broker_order_id for o in self.book))
    @rule(data=st.data())
    def cancel_one(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from([o for o in self.book if o.live and o.broker_order_id]))
        assert order.broker_order_id is not None
        self.channel.extend(self.exchange.cancel(order.broker_order_id, self.now))

    @precondition(lambda self: any(o.live and o.broker_order_id for o in self.book))
    @rule(data=st.data(), ticks=st.integers(-10, 10))
    def reprice_one(self, data: st.DataObject, ticks: int) -> None:
        order = data.draw(st.sampled_from([o for o in self.book if o.live and o.broker_order_id]))
        assert order.broker_order_id is not None
        price = max(TICK, order.limit_price + ticks * TICK)
        self.channel.extend(self.exchange.modify(order.broker_order_id, price, self.now))

    @precondition(lambda self: bool(self.channel))
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver_one(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.channel) - 1))
        report = self.channel[index] if duplicate else self.channel.pop(index)
        self._deliver(report)

    @rule()
    def reconcile_with_the_order_book(self) -> None:
        """What the service does for UNKNOWN submits and orders gone quiet: ask the broker's book."""
        for exchange_order_id, key in self.routes.items():
            order = self.book[key]
            if order.live:
                order.apply_report(self.exchange.entry(exchange_order_id).broker_report())

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def one_live_order_per_tag_attempt_and_slice(self) -> None:
        live_slots = [(o.client_order_id, o.key.slice_index) for o in self.book if o.live]
        assert len(live_slots) == len(set(live_slots))
        for leg in LEGS:
            assert len({o.key.attempt for o in self.book if o.live and o.key.leg_index == leg}) <= 1

    @invariant()
    def filled_is_bounded(self) -> None:
        for exchange_order_id, key in self.routes.items():
            order = self.book[key]
            assert order.filled_qty <= order.quantity
            assert order.filled_qty <= self.exchange.entry(exchange_order_id).filled_qty

    @invariant()
    def every_order_is_publishable(self) -> None:
        for order in self.book:
            order.to_order_update(ts_event=self.now, source="execution/test", correlation_id="c-1")

    @invariant()
    def positions_equal_the_sum_of_delivered_fills(self) -> None:
        assert self.book.positions() == _net(self.delivered.values())

    def teardown(self) -> None:
        # Everything in flight arrives, every report is delivered, the book settles what went silent.
        self._tick(10_000)
        self.channel.extend(self.exchange.advance(self.now))
        while self.channel:
            self._deliver(self.channel.pop(0))
        silent_trades = [t for t in self.exchange.trades() if t.trade_id not in self.delivered]
        for trade in silent_trades:
            # Upstox's trades-by-order endpoint; the paper exchange's own trade list here.
            apply_report(self.book[self.routes[trade.exchange_order_id]], trade)
            self.delivered[trade.trade_id] = trade
        self.reconcile_with_the_order_book()
        assert self.book.positions() == _net(self.exchange.trades())
        for exchange_order_id, key in self.routes.items():
            entry = self.exchange.entry(exchange_order_id)
            order = self.book[key]
            assert order.filled_qty == entry.filled_qty
            assert order.status is entry.broker_report().status


def _net(trades: Iterable[Traded]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for trade in trades:
        signed = trade.quantity if trade.side is Side.BUY else -trade.quantity
        positions[trade.instrument_key] = positions.get(trade.instrument_key, 0) + signed
    return {k: v for k, v in positions.items() if v}


TestOrdersOnThePaperExchange = OrdersOnThePaperExchange.TestCase
