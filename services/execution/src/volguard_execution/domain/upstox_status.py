"""Upstox order statuses, mapped explicitly to `OrderStatus`.

The list is Upstox's order-status table (checked against the status constants of an Upstox API client,
rishabh9/riko `OrderStatus.java`, and Upstox's published status guide: placement, modify, cancel and
after-market lifecycles). The same lower-case strings are the `status` of the order book
`/v2/order/retrieve-all`, order details and history, and portfolio-stream order updates:

    put order req received, validation pending, open pending, open, trigger pending,
    modify validation pending, modify pending, modified, not modified,
    cancel pending, not cancelled, cancelled, complete, rejected,
    after market order req received, modify after market order req received,
    cancelled after market order

Upstox has no "partially filled" status: a partial fill is `open` (or any in-flight status) with a
filled quantity above zero. What the status string cannot tell, the quantities can: an order whose whole
quantity traded is FILLED whatever the string says, because nothing is left to cancel or reject.

A status not in the list is logged and treated as in flight (OPEN, or PARTIALLY_FILLED when something
filled): never as filled and never as dead, since either guess could leave a naked leg or double one.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from enum import Enum, StrEnum

from volguard_common.events.orders import OrderStatus
from volguard_execution.domain.orders import BrokerReport

log = logging.getLogger(__name__)


class UpstoxOrderStatus(StrEnum):
    PUT_ORDER_REQ_RECEIVED = "put order req received"
    VALIDATION_PENDING = "validation pending"
    OPEN_PENDING = "open pending"
    OPEN = "open"
    TRIGGER_PENDING = "trigger pending"
    MODIFY_VALIDATION_PENDING = "modify validation pending"
    MODIFY_PENDING = "modify pending"
    MODIFIED = "modified"
    NOT_MODIFIED = "not modified"
    CANCEL_PENDING = "cancel pending"
    NOT_CANCELLED = "not cancelled"
    CANCELLED = "cancelled"
    COMPLETE = "complete"
    REJECTED = "rejected"
    AFTER_MARKET_ORDER_REQ_RECEIVED = "after market order req received"
    MODIFY_AFTER_MARKET_ORDER_REQ_RECEIVED = "modify after market order req received"
    CANCELLED_AFTER_MARKET_ORDER = "cancelled after market order"


class Meaning(Enum):
    IN_FLIGHT = "in flight"  # the order lives at Upstox or the exchange and may still trade
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


MEANING: dict[UpstoxOrderStatus, Meaning] = {
    # Received by Upstox, not yet at the exchange: acknowledged, may still be rejected by RMS or NSE.
    UpstoxOrderStatus.PUT_ORDER_REQ_RECEIVED: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.VALIDATION_PENDING: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.OPEN_PENDING: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.OPEN: Meaning.IN_FLIGHT,
    # Stop orders waiting for their trigger; VolGuard places none, but one adopted from the book maps.
    UpstoxOrderStatus.TRIGGER_PENDING: Meaning.IN_FLIGHT,
    # A modification in progress or its outcome says nothing about whether the order still lives.
    UpstoxOrderStatus.MODIFY_VALIDATION_PENDING: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.MODIFY_PENDING: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.MODIFIED: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.NOT_MODIFIED: Meaning.IN_FLIGHT,
    # A cancel is only done when Upstox says "cancelled": until then the order can still trade.
    UpstoxOrderStatus.CANCEL_PENDING: Meaning.IN_FLIGHT,
    # The cancel was refused: the order lives on (or has just completed, which its quantities show).
    UpstoxOrderStatus.NOT_CANCELLED: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.CANCELLED: Meaning.CANCELLED,
    UpstoxOrderStatus.COMPLETE: Meaning.FILLED,
    UpstoxOrderStatus.REJECTED: Meaning.REJECTED,
    # After-market orders wait at Upstox for the next open; VolGuard sends is_amo=false, but map them.
    UpstoxOrderStatus.AFTER_MARKET_ORDER_REQ_RECEIVED: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.MODIFY_AFTER_MARKET_ORDER_REQ_RECEIVED: Meaning.IN_FLIGHT,
    UpstoxOrderStatus.CANCELLED_AFTER_MARKET_ORDER: Meaning.CANCELLED,
}


def normalise_status(raw: str) -> str:
    """Upstox sends lower case with single spaces; be tolerant of case and spacing, nothing else."""
    return " ".join(raw.lower().split())


def meaning_of(raw_status: str) -> Meaning | None:
    """What an Upstox status string means, or None when Upstox sent one we do not know."""
    try:
        return MEANING[UpstoxOrderStatus(normalise_status(raw_status))]
    except ValueError:
        return None


def _in_flight(filled_qty: int) -> OrderStatus:
    return OrderStatus.PARTIALLY_FILLED if filled_qty else OrderStatus.OPEN


def map_upstox_order(
    *,
    status: str,
    quantity: int,
    filled_quantity: int,
    average_price: Decimal | None,
    order_id: str | None,
    status_message: str = "",
) -> BrokerReport:
    """One Upstox order (book row or portfolio-stream update) as a `BrokerReport`.

    `quantity` and `filled_quantity` are units as Upstox reports them; `average_price` is read only when
    something filled (Upstox sends 0 before the first fill).
    """
    if quantity <= 0:
        raise ValueError(f"Upstox order {order_id}: quantity {quantity} must be positive")
    if not 0 <= filled_quantity <= quantity:
        raise ValueError(f"Upstox order {order_id}: filled_quantity {filled_quantity} outside 0..{quantity}")
    avg: Decimal | None = None
    if filled_quantity:
        if average_price is None or not average_price.is_finite() or average_price <= 0:
            raise ValueError(
                f"Upstox order {order_id}: {filled_quantity} filled but average_price is {average_price}"
            )
        avg = average_price
    meaning = meaning_of(status)
    if meaning is None:
        log.warning(
            "unknown Upstox order status %r for order %s: treated as in flight (%s filled of %s)",
            status,
            order_id,
            filled_quantity,
            quantity,
        )
        meaning = Meaning.IN_FLIGHT
    if filled_quantity == quantity:
        mapped = OrderStatus.FILLED
    elif meaning is Meaning.IN_FLIGHT:
        mapped = _in_flight(filled_quantity)
    elif meaning is Meaning.FILLED:
        # "complete" with units missing contradicts itself; the quantities are the safer evidence and
        # leave the order in flight until a consistent report arrives.
        log.warning(
            "Upstox order %s is 'complete' with %s of %s filled: kept in flight",
            order_id,
            filled_quantity,
            quantity,
        )
        mapped = _in_flight(filled_quantity)
    elif meaning is Meaning.REJECTED and filled_quantity:
        # What traded stays traded; only the rest is dead, which is what CANCELLED says.
        log.warning("Upstox order %s rejected after %s filled: the rest is dead", order_id, filled_quantity)
        mapped = OrderStatus.CANCELLED
    elif meaning is Meaning.REJECTED:
        mapped = OrderStatus.REJECTED
    else:
        mapped = OrderStatus.CANCELLED
    return BrokerReport(
        status=mapped,
        filled_qty=filled_quantity,
        avg_price=avg,
        broker_order_id=order_id or None,
        message=status_message,
    )
