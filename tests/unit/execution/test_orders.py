"""The order state machine, one transition at a time, and freeze-quantity slicing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from volguard_common.clock import IST
from volguard_common.events._base import Side
from volguard_common.events.orders import OrderStatus, client_order_id
from volguard_execution.domain.orders import (
    BrokerReport,
    ConflictingReport,
    DuplicateTrade,
    IllegalTransition,
    LiveOrderExists,
    Order,
    OrderKey,
    Overfill,
    ReportOutcome,
    Trade,
    WorkingOrders,
    max_units_per_order,
    slice_quantities,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
KEY = OrderKey("basket-1", 0, 0)


def new_order(quantity: int = 130) -> Order:
    return Order(KEY, "NSE_FO|1", Side.SELL, quantity, Decimal("101.05"))


def trade(trade_id: str, quantity: int, price: str = "101.05") -> Trade:
    return Trade(trade_id, quantity, Decimal(price), T0)


def report(status: OrderStatus, filled: int, avg: str | None = None) -> BrokerReport:
    return BrokerReport(status, filled, None if avg is None else Decimal(avg), "1000000000000001")


def test_nifty_freeze_quantity_allows_27_lots_of_65() -> None:
    assert max_units_per_order(1800, 65) == 1755
    assert slice_quantities(65 * 60, 1800, 65) == [1755, 1755, 390]
    assert slice_quantities(1755, 1800, 65) == [1755]


def test_slicing_refuses_part_lots_and_a_freeze_below_one_lot() -> None:
    with pytest.raises(ValueError, match="not a multiple of lot_size 65"):
        slice_quantities(100, 1800, 65)
    with pytest.raises(ValueError, match="below one lot"):
        max_units_per_order(50, 65)


def test_every_slice_of_an_attempt_shares_the_tag_and_attempts_differ() -> None:
    slices = [OrderKey("basket-1", 2, 1, i) for i in range(3)]
    assert {k.client_order_id for k in slices} == {client_order_id("basket-1", 2, 1)}
    assert OrderKey("basket-1", 2, 2).client_order_id != slices[0].client_order_id
    assert len(slices[0].client_order_id) == 20


def test_a_fill_walks_new_open_partial_filled() -> None:
    order = new_order()
    order.acknowledge("1000000000000001")
    assert order.status is OrderStatus.OPEN
    order.add_trade(trade("t1", 65, "100"))
    assert order.status is OrderStatus.PARTIALLY_FILLED
    order.add_trade(trade("t2", 65, "101"))
    assert order.status is OrderStatus.FILLED
    assert order.filled_qty == 130
    assert order.avg_price == Decimal("100.5")


def test_a_duplicate_trade_id_is_refused_and_changes_nothing() -> None:
    order = new_order()
    order.add_trade(trade("t1", 65))
    with pytest.raises(DuplicateTrade, match="trade t1 already recorded"):
        order.add_trade(trade("t1", 65))
    assert order.filled_qty == 65
    assert order.status is OrderStatus.PARTIALLY_FILLED


def test_fills_never_exceed_the_order_quantity() -> None:
    order = new_order()
    order.add_trade(trade("t1", 65))
    with pytest.raises(Overfill, match="above the order quantity 130"):
        order.add_trade(trade("t2", 130))
    with pytest.raises(Overfill):
        order.apply_report(report(OrderStatus.PARTIALLY_FILLED, 195, "101"))
    assert order.filled_qty == 65


@pytest.mark.parametrize("final", [OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED])
def test_a_final_order_refuses_every_transition(final: OrderStatus) -> None:
    order = new_order()
    if final is OrderStatus.FILLED:
        order.add_trade(trade("t1", 130))
    elif final is OrderStatus.CANCELLED:
        order.apply_report(report(OrderStatus.CANCELLED, 0))
    else:
        order.reject("margin")
    with pytest.raises(IllegalTransition):
        order.submit_outcome_unknown("timeout")
    if final is not OrderStatus.FILLED:
        with pytest.raises(IllegalTransition):
            order.reject("again")
    assert order.status is final


def test_rejection_after_a_fill_is_illegal() -> None:
    order = new_order()
    order.add_trade(trade("t1", 65))
    with pytest.raises(IllegalTransition, match="rejected after 65 filled"):
        order.reject("too late")


def test_unknown_submit_is_resolved_by_the_book() -> None:
    order = new_order()
    order.submit_outcome_unknown("read timeout")
    assert order.status is OrderStatus.UNKNOWN
    assert order.live
    assert order.apply_report(report(OrderStatus.PARTIALLY_FILLED, 65, "101")) is ReportOutcome.APPLIED
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert order.broker_order_id == "1000000000000001"


def test_out_of_order_and_duplicate_reports_are_stale() -> None:
    order = new_order()
    assert order.apply_report(report(OrderStatus.FILLED, 130, "101")) is ReportOutcome.APPLIED
    assert order.apply_report(report(OrderStatus.OPEN, 0)) is ReportOutcome.STALE
    assert order.apply_report(report(OrderStatus.PARTIALLY_FILLED, 65, "101")) is ReportOutcome.STALE
    assert order.apply_report(report(OrderStatus.FILLED, 130, "101")) is ReportOutcome.STALE
    assert order.status is OrderStatus.FILLED
    assert order.filled_qty == 130
    # Trades for a FILLED order learnt from the report still arrive and are recorded.
    order.add_trade(trade("t1", 130, "101"))
    assert order.traded_qty == 130


def test_filled_never_goes_backwards() -> None:
    order = new_order()
    order.apply_report(report(OrderStatus.PARTIALLY_FILLED, 65, "101"))
    assert order.apply_report(report(OrderStatus.OPEN, 0)) is ReportOutcome.STALE
    assert order.filled_qty == 65
    assert order.status is OrderStatus.PARTIALLY_FILLED


def test_contradictions_of_a_final_state_are_errors() -> None:
    order = new_order()
    order.apply_report(report(OrderStatus.CANCELLED, 65, "101"))
    with pytest.raises(ConflictingReport, match="after final CANCELLED"):
        order.apply_report(report(OrderStatus.PARTIALLY_FILLED, 100, "101"))
    with pytest.raises(ConflictingReport, match="REJECTED reported after final CANCELLED"):
        order.apply_report(report(OrderStatus.REJECTED, 0))
    assert order.apply_report(report(OrderStatus.CANCELLED, 65, "101")) is ReportOutcome.STALE
    order.add_trade(trade("t1", 65))
    with pytest.raises(ConflictingReport, match="above the 65 the final CANCELLED report said"):
        order.add_trade(trade("t2", 65))


def test_a_final_report_below_known_fills_is_a_conflict() -> None:
    order = new_order()
    order.add_trade(trade("t1", 65))
    with pytest.raises(ConflictingReport, match="65 are known to have filled"):
        order.apply_report(report(OrderStatus.CANCELLED, 0))
    assert order.status is OrderStatus.PARTIALLY_FILLED


def test_a_late_ack_changes_nothing_but_a_different_broker_id_is_a_conflict() -> None:
    order = new_order()
    order.apply_report(report(OrderStatus.REJECTED, 0))
    order.acknowledge("1000000000000001")
    assert order.status is OrderStatus.REJECTED
    with pytest.raises(ConflictingReport, match="already known as 1000000000000001"):
        order.acknowledge("1000000000000002")


def test_no_second_attempt_while_the_first_is_live_or_unknown() -> None:
    book = WorkingOrders()
    first = book.place(KEY, instrument_key="NSE_FO|1", side=Side.BUY, quantity=65, limit_price=Decimal(10))
    first.submit_outcome_unknown("disconnect")
    retry = OrderKey("basket-1", 0, 1)
    with pytest.raises(LiveOrderExists, match="attempt 0 is still UNKNOWN"):
        book.place(retry, instrument_key="NSE_FO|1", side=Side.BUY, quantity=65, limit_price=Decimal(10))
    with pytest.raises(LiveOrderExists, match="already exists"):
        book.place(KEY, instrument_key="NSE_FO|1", side=Side.BUY, quantity=65, limit_price=Decimal(10))
    # Another slice of the same leg is a different exchange order and may go.
    book.place(
        OrderKey("basket-1", 0, 0, 1),
        instrument_key="NSE_FO|1",
        side=Side.BUY,
        quantity=65,
        limit_price=Decimal(10),
    )
    first.apply_report(report(OrderStatus.CANCELLED, 0))
    book.place(retry, instrument_key="NSE_FO|1", side=Side.BUY, quantity=65, limit_price=Decimal(10))
    assert len(book.by_client_order_id(KEY.client_order_id)) == 2


def test_a_confirmed_reprice_moves_the_limit_only_while_live() -> None:
    order = new_order()
    order.acknowledge("1000000000000001")
    assert order.repriced(Decimal("100.55")) is ReportOutcome.APPLIED
    assert order.limit_price == Decimal("100.55")
    order.add_trade(trade("t1", 130))
    assert order.repriced(Decimal("99")) is ReportOutcome.STALE
    assert order.limit_price == Decimal("100.55")


def test_a_report_with_everything_filled_is_filled_whatever_its_status() -> None:
    order = new_order()
    order.apply_report(report(OrderStatus.OPEN, 130, "101"))
    assert order.status is OrderStatus.FILLED


def test_the_order_as_an_order_update() -> None:
    order = Order(OrderKey("basket-1", 1, 2, 1), "NSE_FO|1", Side.BUY, 130, Decimal("5.05"))
    order.acknowledge("1000000000000003")
    order.add_trade(trade("t1", 65, "5"))
    update = order.to_order_update(ts_event=T0, source="execution/test", correlation_id="c-1")
    assert (update.client_order_id, update.attempt, update.slice_index) == (
        client_order_id("basket-1", 1, 2),
        2,
        1,
    )
    assert (update.status, update.filled_qty, update.avg_price) == (
        OrderStatus.PARTIALLY_FILLED,
        65,
        Decimal(5),
    )


def test_a_report_naming_another_broker_order_changes_nothing() -> None:
    order = new_order()
    order.acknowledge("1000000000000009")
    with pytest.raises(ConflictingReport, match="already known as 1000000000000009"):
        order.apply_report(report(OrderStatus.PARTIALLY_FILLED, 65, "101"))
    assert order.status is OrderStatus.OPEN
    assert order.filled_qty == 0


def test_only_an_unknown_submit_can_be_found_absent() -> None:
    order = new_order()
    with pytest.raises(IllegalTransition, match="not UNKNOWN"):
        order.absent_at_broker("order history by tag is empty")
    order.submit_outcome_unknown("timeout")
    order.absent_at_broker("order history by tag is empty")
    assert order.status is OrderStatus.REJECTED
    assert not order.live


def test_only_an_unsent_order_can_be_withdrawn() -> None:
    unsent = new_order()
    unsent.withdraw_unsent("never sent: 429 too many requests")
    assert unsent.status is OrderStatus.CANCELLED
    assert not unsent.live
    sent = new_order()
    sent.acknowledge("B1")
    with pytest.raises(IllegalTransition, match="not NEW"):
        sent.withdraw_unsent("too late")
    assert sent.status is OrderStatus.OPEN
    maybe_sent = new_order()
    maybe_sent.submit_outcome_unknown("timeout")
    with pytest.raises(IllegalTransition, match="not NEW"):
        maybe_sent.withdraw_unsent("it may be at the broker")
    assert maybe_sent.status is OrderStatus.UNKNOWN
