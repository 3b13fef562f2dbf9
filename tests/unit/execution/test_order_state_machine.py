"""The order state machine against a broker that fills partly, rejects, cancels, loses submits, and
delivers its messages duplicated and out of order.

The broker's truth is kept beside the working orders: what really traded, and each order's final state.
Messages (acks, trades, status reports) go into a queue that is delivered in random order, with random
duplicates. Invariants, after every step:
- at most one live order per (basket, leg, slice) — attempts never overlap, an UNKNOWN one included;
- no order ever shows more filled than its quantity, or than the broker really filled;
- positions equal the sum of the fills delivered so far;
and once every message has been delivered, every order agrees with the broker's truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from volguard_common.clock import IST
from volguard_common.events._base import Side
from volguard_common.events.orders import OrderStatus
from volguard_execution.domain.orders import (
    BrokerReport,
    DuplicateTrade,
    LiveOrderExists,
    OrderKey,
    Trade,
    WorkingOrders,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
LOT = 65
BASKET = "basket-sm"
LEGS = {0: ("NSE_FO|WING", Side.BUY), 1: ("NSE_FO|SHORT", Side.SELL)}
SLICES = (0, 1)


@dataclass
class Truth:
    """What the broker really did with one order."""

    quantity: int
    reached_broker: bool
    filled: int = 0
    notional: Decimal = Decimal(0)
    final: OrderStatus | None = None

    def report(self, broker_order_id: str) -> BrokerReport:
        avg = self.notional / self.filled if self.filled else None
        if self.final is not None:
            status = self.final
        else:
            status = OrderStatus.PARTIALLY_FILLED if self.filled else OrderStatus.OPEN
        return BrokerReport(status, self.filled, avg, broker_order_id)


@dataclass
class Message:
    key: OrderKey
    ack: str | None = None
    trade: Trade | None = None
    report: BrokerReport | None = None


@dataclass
class Model:
    truth: dict[OrderKey, Truth] = field(default_factory=dict)
    attempts: dict[tuple[int, int], int] = field(default_factory=dict)
    queue: list[Message] = field(default_factory=list)
    delivered_trades: dict[str, tuple[OrderKey, Trade]] = field(default_factory=dict)
    trade_counter: int = 0


class OrdersAgainstAnUnreliableBroker(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = WorkingOrders()
        self.model = Model()

    # -- helpers ----------------------------------------------------------------------------------

    def _broker_id(self, key: OrderKey) -> str:
        return f"10000000{key.leg_index}{key.slice_index}{key.attempt:06d}"

    def _working_at_broker(self) -> list[OrderKey]:
        return sorted(k for k, t in self.model.truth.items() if t.reached_broker and t.final is None)

    def _enqueue_report(self, key: OrderKey) -> None:
        self.model.queue.append(Message(key, report=self.model.truth[key].report(self._broker_id(key))))

    def _deliver(self, message: Message) -> None:
        order = self.book[message.key]
        if message.ack is not None:
            order.acknowledge(message.ack)
        elif message.trade is not None:
            if message.trade.trade_id in order.trades:
                with pytest.raises(DuplicateTrade):
                    order.add_trade(message.trade)
            else:
                order.add_trade(message.trade)
                self.model.delivered_trades[message.trade.trade_id] = (message.key, message.trade)
        else:
            assert message.report is not None
            order.apply_report(message.report)

    # -- rules --------------------------------------------------------------------------------------

    @rule(
        leg=st.sampled_from(sorted(LEGS)),
        slice_index=st.sampled_from(SLICES),
        lots=st.integers(1, 4),
        outcome=st.sampled_from(["ack", "unknown-reached", "unknown-lost", "rejected"]),
    )
    def place(self, leg: int, slice_index: int, lots: int, outcome: str) -> None:
        attempt = self.model.attempts.get((leg, slice_index), 0)
        key = OrderKey(BASKET, leg, attempt, slice_index)
        instrument, side = LEGS[leg]
        if self.book.live_attempt(BASKET, leg, slice_index) is not None:
            with pytest.raises(LiveOrderExists):
                self.book.place(
                    key, instrument_key=instrument, side=side, quantity=lots * LOT, limit_price=Decimal(5)
                )
            return
        order = self.book.place(
            key, instrument_key=instrument, side=side, quantity=lots * LOT, limit_price=Decimal(5)
        )
        self.model.attempts[(leg, slice_index)] = attempt + 1
        truth = Truth(lots * LOT, reached_broker=outcome in ("ack", "unknown-reached"))
        self.model.truth[key] = truth
        if outcome == "rejected":
            order.reject("RMS: insufficient margin")
            truth.final = OrderStatus.REJECTED
        elif outcome == "ack":
            # The synchronous answer to the place request; the stream repeats it later.
            order.acknowledge(self._broker_id(key))
            self.model.queue.append(Message(key, ack=self._broker_id(key)))
            self._enqueue_report(key)
        else:
            order.submit_outcome_unknown("read timeout after send")
            if truth.reached_broker:
                self._enqueue_report(key)

    @precondition(lambda self: bool(self._working_at_broker()))
    @rule(data=st.data())
    def exchange_fills(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self._working_at_broker()))
        truth = self.model.truth[key]
        lots = data.draw(st.integers(1, (truth.quantity - truth.filled) // LOT))
        price = Decimal(data.draw(st.integers(50, 500))) / 10
        self.model.trade_counter += 1
        trade = Trade(f"T{self.model.trade_counter:06d}", lots * LOT, price, T0)
        truth.filled += trade.quantity
        truth.notional += trade.price * trade.quantity
        if truth.filled == truth.quantity:
            truth.final = OrderStatus.FILLED
        self.model.queue.append(Message(key, trade=trade))
        self._enqueue_report(key)

    @precondition(lambda self: bool(self._working_at_broker()))
    @rule(data=st.data())
    def exchange_cancels(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self._working_at_broker()))
        self.model.truth[key].final = OrderStatus.CANCELLED
        self._enqueue_report(key)

    @precondition(lambda self: any(self.model.truth[k].filled == 0 for k in self._working_at_broker()))
    @rule(data=st.data())
    def exchange_rejects(self, data: st.DataObject) -> None:
        key = data.draw(
            st.sampled_from([k for k in self._working_at_broker() if self.model.truth[k].filled == 0])
        )
        self.model.truth[key].final = OrderStatus.REJECTED
        self._enqueue_report(key)

    @precondition(lambda self: bool(self.model.queue))
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver_any(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.model.queue) - 1))
        message = self.model.queue[index] if duplicate else self.model.queue.pop(index)
        self._deliver(message)

    @rule()
    def resolve_lost_submits(self) -> None:
        """The broker's book by tag shows nothing for a lost submit: it never existed."""
        for key, truth in self.model.truth.items():
            order = self.book[key]
            if not truth.reached_broker and order.status is OrderStatus.UNKNOWN:
                order.absent_at_broker("no order with this tag in the broker's order history")
                truth.final = OrderStatus.REJECTED

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def one_live_order_per_leg_slice(self) -> None:
        live: dict[tuple[int, int], int] = {}
        for order in self.book:
            if order.live:
                slot = (order.key.leg_index, order.key.slice_index)
                live[slot] = live.get(slot, 0) + 1
        assert all(count == 1 for count in live.values()), live

    @invariant()
    def filled_is_bounded_by_quantity_and_truth(self) -> None:
        for order in self.book:
            truth = self.model.truth[order.key]
            assert 0 <= order.filled_qty <= order.quantity
            assert order.filled_qty <= truth.filled
            assert order.traded_qty <= order.filled_qty

    @invariant()
    def every_order_is_publishable(self) -> None:
        # OrderUpdate validates its own consistency (filled vs status vs average price).
        for order in self.book:
            update = order.to_order_update(ts_event=T0, source="execution/test", correlation_id="c-1")
            assert (update.status, update.filled_qty) == (order.status, order.filled_qty)

    @invariant()
    def positions_equal_the_sum_of_fills(self) -> None:
        expected: dict[str, int] = {}
        for key, trade in self.model.delivered_trades.values():
            instrument, side = LEGS[key.leg_index]
            signed = trade.quantity if side is Side.BUY else -trade.quantity
            expected[instrument] = expected.get(instrument, 0) + signed
        assert self.book.positions() == {k: v for k, v in expected.items() if v}

    def teardown(self) -> None:
        self.resolve_lost_submits()
        while self.model.queue:
            self._deliver(self.model.queue.pop(0))
        for order in self.book:
            truth = self.model.truth[order.key]
            assert order.filled_qty == truth.filled
            assert order.traded_qty == truth.filled
            if truth.final is not None:
                assert order.status is truth.final
            else:
                assert order.status is (OrderStatus.PARTIALLY_FILLED if truth.filled else OrderStatus.OPEN)
            if truth.filled:
                assert order.avg_price == truth.notional / truth.filled


TestOrdersAgainstAnUnreliableBroker = OrdersAgainstAnUnreliableBroker.TestCase
