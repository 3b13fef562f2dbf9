"""Upstox order statuses → OrderStatus: every documented status explicitly, unknown ones in flight."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volguard_common.events._base import Side
from volguard_common.events.orders import OrderStatus
from volguard_execution.domain.orders import Order, OrderKey
from volguard_execution.domain.upstox_status import MEANING, Meaning, UpstoxOrderStatus, map_upstox_order

IN_FLIGHT = [
    "put order req received",
    "validation pending",
    "open pending",
    "open",
    "trigger pending",
    "modify validation pending",
    "modify pending",
    "modified",
    "not modified",
    "cancel pending",
    "not cancelled",
    "after market order req received",
    "modify after market order req received",
]


def mapped(status: str, filled: int, quantity: int = 130) -> OrderStatus:
    return map_upstox_order(
        status=status,
        quantity=quantity,
        filled_quantity=filled,
        average_price=Decimal("101.5") if filled else Decimal(0),
        order_id="250101000000001",
    ).status


def test_every_documented_status_has_an_explicit_meaning() -> None:
    assert set(MEANING) == set(UpstoxOrderStatus)
    assert len(UpstoxOrderStatus) == 17


@pytest.mark.parametrize("status", IN_FLIGHT)
def test_in_flight_statuses_are_open_or_partially_filled(status: str) -> None:
    assert MEANING[UpstoxOrderStatus(status)] is Meaning.IN_FLIGHT
    assert mapped(status, 0) is OrderStatus.OPEN
    assert mapped(status, 65) is OrderStatus.PARTIALLY_FILLED


def test_final_statuses() -> None:
    assert mapped("complete", 130) is OrderStatus.FILLED
    assert mapped("cancelled", 0) is OrderStatus.CANCELLED
    assert mapped("cancelled", 65) is OrderStatus.CANCELLED
    assert mapped("cancelled after market order", 0) is OrderStatus.CANCELLED
    assert mapped("rejected", 0) is OrderStatus.REJECTED


def test_the_quantities_overrule_the_string() -> None:
    # Everything traded: nothing is left to cancel or reject, whatever the status says.
    assert mapped("cancel pending", 130) is OrderStatus.FILLED
    assert mapped("not cancelled", 130) is OrderStatus.FILLED
    # "complete" with units missing is not believed: the order stays in flight.
    assert mapped("complete", 65) is OrderStatus.PARTIALLY_FILLED
    # A rejection after a partial fill kills only the rest.
    assert mapped("rejected", 65) is OrderStatus.CANCELLED


def test_case_and_spacing_are_tolerated() -> None:
    assert mapped("  Open   Pending ", 0) is OrderStatus.OPEN
    assert mapped("COMPLETE", 130) is OrderStatus.FILLED


def test_an_unknown_status_is_logged_and_in_flight_never_filled_or_dead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert mapped("exchange mood swing", 0) is OrderStatus.OPEN
        assert mapped("exchange mood swing", 65) is OrderStatus.PARTIALLY_FILLED
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]


def test_report_carries_fill_price_and_ids() -> None:
    report = map_upstox_order(
        status="open",
        quantity=130,
        filled_quantity=65,
        average_price=Decimal("101.5"),
        order_id="250101000000001",
        status_message="",
    )
    assert report.filled_qty == 65
    assert report.avg_price == Decimal("101.5")
    assert report.broker_order_id == "250101000000001"


def test_a_fill_without_a_price_or_beyond_the_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="average_price is 0"):
        map_upstox_order(
            status="open", quantity=130, filled_quantity=65, average_price=Decimal(0), order_id="1"
        )
    with pytest.raises(ValueError, match=r"outside 0\.\.130"):
        map_upstox_order(
            status="open", quantity=130, filled_quantity=195, average_price=Decimal(1), order_id="1"
        )


# ---- a stream of Upstox updates, shuffled and duplicated, folded into an order -----------------

QUANTITY = 4 * 65


@st.composite
def upstox_lives(draw: st.DrawFn) -> list[tuple[str, int]]:
    """A plausible order life as (status, filled) updates, in the order Upstox produced them."""
    life = [("put order req received", 0), ("validation pending", 0), ("open pending", 0), ("open", 0)]
    filled = 0
    for _ in range(draw(st.integers(0, 3))):
        if filled == QUANTITY:
            break
        filled += 65 * draw(st.integers(1, (QUANTITY - filled) // 65))
        status = draw(st.sampled_from(["open", "modified", "not modified", "not cancelled"]))
        life.append(("complete" if filled == QUANTITY else status, filled))
    if filled < QUANTITY:
        life.append(
            draw(st.sampled_from([("cancel pending", filled), ("cancelled", filled), ("open", filled)]))
        )
        if life[-1][0] == "cancel pending":
            life.append(("cancelled", filled))
        if filled == 0 and draw(st.booleans()):
            life[-1] = ("rejected", 0)
    return life


@given(life=upstox_lives(), data=st.data())
def test_shuffled_and_duplicated_updates_end_where_the_last_one_does(
    life: list[tuple[str, int]], data: st.DataObject
) -> None:
    updates = [
        map_upstox_order(
            status=status,
            quantity=QUANTITY,
            filled_quantity=filled,
            average_price=Decimal("100") if filled else Decimal(0),
            order_id="250101000000001",
        )
        for status, filled in life
    ]
    delivered = data.draw(
        st.permutations(updates + data.draw(st.lists(st.sampled_from(updates), max_size=5)))
    )
    order = Order(OrderKey("basket-upstox", 0, 0), "NSE_FO|1", Side.SELL, QUANTITY, Decimal(100))
    order.submit_outcome_unknown("timeout")
    for update in delivered:
        order.apply_report(update)
        assert order.filled_qty <= QUANTITY
    final = updates[-1]
    assert order.filled_qty == final.filled_qty
    assert order.status is final.status
