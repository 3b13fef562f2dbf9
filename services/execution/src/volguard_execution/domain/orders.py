"""The order state machine: one broker order (one slice of one attempt at one basket leg) from creation
to FILLED, CANCELLED or REJECTED.

    NEW ──► OPEN ──► PARTIALLY_FILLED ──► FILLED
     │  ╲     │  ╲          │
     │   ╲    │   ╲         └──► CANCELLED (the rest of the order)
     │    ╲   │    └──► CANCELLED / REJECTED
     │     ╲  └──► FILLED
     └──► UNKNOWN ──► (whatever the broker's book says)

UNKNOWN is a submit whose outcome is not known (timeout, disconnect): the order may or may not be at the
exchange, so it stays live until the broker's order book, the order history by tag or the portfolio
stream resolves it, and it is never re-sent blindly (`WorkingOrders` refuses a new attempt while it is
live). A fill or an ack may overtake each other on the wire, so NEW and UNKNOWN may jump straight to
PARTIALLY_FILLED or FILLED.

Two kinds of evidence arrive and both are kept:
- broker status reports (`BrokerReport`) carry the cumulative filled quantity and average price; they
  arrive duplicated and out of order, so a report that would move the order backwards is stale and is
  ignored, and one that contradicts a final state is an error;
- trades (`Trade`, the exchange's executions) are what positions are built from; a trade id seen twice
  is refused, and trades never add up to more than the order's quantity.

Quantities are units (lots × lot size); prices are rupees per unit as Decimal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum

from volguard_common.events._base import Side
from volguard_common.events.orders import OrderStatus, OrderUpdate, client_order_id

LIVE_STATUSES = frozenset(
    {OrderStatus.NEW, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN}
)
FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})

_ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset(
        {
            OrderStatus.OPEN,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
            OrderStatus.UNKNOWN,
        }
    ),
    OrderStatus.UNKNOWN: frozenset(
        {
            OrderStatus.OPEN,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
        }
    ),
    # An order the broker acknowledged can still be rejected by the exchange (Upstox's "open pending"
    # is acknowledged by Upstox, not yet by NSE).
    OrderStatus.OPEN: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED}
    ),
    # Once anything traded the exchange cannot reject the order; only the rest can be cancelled.
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}

# How far along its life an order is; a report of a lower rank with no more filled is stale.
_RANK: dict[OrderStatus, int] = {
    OrderStatus.NEW: 0,
    OrderStatus.UNKNOWN: 0,
    OrderStatus.OPEN: 1,
    OrderStatus.PARTIALLY_FILLED: 2,
    OrderStatus.FILLED: 3,
    OrderStatus.CANCELLED: 3,
    OrderStatus.REJECTED: 3,
}


class OrderError(ValueError):
    """Evidence about an order that cannot be applied; the order is left unchanged."""


class IllegalTransition(OrderError):
    pass


class DuplicateTrade(OrderError):
    pass


class Overfill(OrderError):
    pass


class ConflictingReport(OrderError):
    """The broker contradicts what it said before (e.g. more filled after a final CANCELLED)."""


class LiveOrderExists(OrderError):
    pass


def max_units_per_order(freeze_quantity: int, lot_size: int) -> int:
    """The largest whole-lot quantity the exchange accepts in one order.

    `freeze_quantity` comes from the instrument master (Upstox `freeze_quantity`, NSE's quantity freeze
    limit), never a constant: NSE revises it. NIFTY's 1,800 with a lot of 65 gives 27 lots = 1,755 units.
    """
    if freeze_quantity <= 0 or lot_size <= 0:
        raise ValueError(f"freeze_quantity {freeze_quantity} and lot_size {lot_size} must be positive")
    units = (freeze_quantity // lot_size) * lot_size
    if units == 0:
        raise ValueError(f"freeze_quantity {freeze_quantity} is below one lot of {lot_size}")
    return units


def slice_quantities(quantity: int, freeze_quantity: int, lot_size: int) -> list[int]:
    """Split `quantity` units into exchange orders of at most the freeze limit, whole lots each.

    Full slices first, the remainder last, so slice i of a given leg always has the same size after a
    restart (the slice index is part of the order's identity).
    """
    if quantity <= 0:
        raise ValueError(f"quantity {quantity} must be positive")
    if quantity % lot_size:
        raise ValueError(f"quantity {quantity} is not a multiple of lot_size {lot_size}")
    per_order = max_units_per_order(freeze_quantity, lot_size)
    full, rest = divmod(quantity, per_order)
    return [per_order] * full + ([rest] if rest else [])


@dataclass(frozen=True, slots=True, order=True)
class OrderKey:
    """Who an order is: one slice of one attempt at one leg of a basket."""

    basket_id: str
    leg_index: int
    attempt: int
    slice_index: int = 0

    def __post_init__(self) -> None:
        if self.slice_index < 0:
            raise ValueError(f"slice_index {self.slice_index} must be ≥ 0")
        # Validates basket, leg and attempt the same way the tag does.
        client_order_id(self.basket_id, self.leg_index, self.attempt)

    @property
    def client_order_id(self) -> str:
        """The Upstox tag; every slice of an attempt shares it, as Upstox's own slicing does."""
        return client_order_id(self.basket_id, self.leg_index, self.attempt)

    @property
    def leg(self) -> tuple[str, int, int]:
        """(basket, leg, slice): the place attempts succeed each other."""
        return (self.basket_id, self.leg_index, self.slice_index)


@dataclass(frozen=True, slots=True)
class Trade:
    """One execution at the exchange against an order."""

    trade_id: str
    quantity: int
    price: Decimal
    ts_event: datetime

    def __post_init__(self) -> None:
        if not self.trade_id:
            raise ValueError("trade_id must not be empty")
        if self.quantity <= 0:
            raise ValueError(f"trade {self.trade_id}: quantity {self.quantity} must be positive")
        if not self.price.is_finite() or self.price <= 0:
            raise ValueError(f"trade {self.trade_id}: price {self.price} must be positive")


@dataclass(frozen=True, slots=True)
class BrokerReport:
    """The broker's view of an order at one moment, already mapped to `OrderStatus`."""

    status: OrderStatus
    filled_qty: int
    avg_price: Decimal | None
    broker_order_id: str | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if self.status in (OrderStatus.NEW, OrderStatus.UNKNOWN):
            raise ValueError(f"a broker report cannot say {self.status}: that is our own bookkeeping")
        if self.filled_qty < 0:
            raise ValueError(f"filled_qty {self.filled_qty} must be ≥ 0")
        if (self.filled_qty > 0) != (self.avg_price is not None):
            raise ValueError("avg_price is present exactly when filled_qty > 0")
        if self.status is OrderStatus.PARTIALLY_FILLED and self.filled_qty == 0:
            raise ValueError("PARTIALLY_FILLED with nothing filled")
        if self.status is OrderStatus.REJECTED and self.filled_qty:
            raise ValueError("REJECTED with a filled quantity")


class ReportOutcome(Enum):
    APPLIED = "applied"
    STALE = "stale"  # older than what is known (out of order) or a duplicate: ignored


@dataclass(slots=True)
class Order:
    """One broker order and everything known about it. Methods either apply evidence or raise
    `OrderError` leaving the order as it was."""

    key: OrderKey
    instrument_key: str
    side: Side
    quantity: int
    limit_price: Decimal
    status: OrderStatus = OrderStatus.NEW
    broker_order_id: str | None = None
    # Cumulative filled quantity and average price as the broker last reported them (monotone).
    reported_filled_qty: int = 0
    reported_avg_price: Decimal | None = None
    message: str = ""
    trades: dict[str, Trade] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError(f"order {self.key}: quantity {self.quantity} must be positive")
        if not self.limit_price.is_finite() or self.limit_price <= 0:
            raise ValueError(f"order {self.key}: limit_price {self.limit_price} must be positive")

    @property
    def client_order_id(self) -> str:
        return self.key.client_order_id

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def traded_qty(self) -> int:
        return sum(trade.quantity for trade in self.trades.values())

    @property
    def filled_qty(self) -> int:
        """The most that is known to have filled, by either report or trades."""
        return max(self.reported_filled_qty, self.traded_qty)

    @property
    def avg_price(self) -> Decimal | None:
        """Volume-weighted price of the fills; from the trades when they account for every fill."""
        traded = self.traded_qty
        if traded and traded >= self.reported_filled_qty:
            notional = sum((t.price * t.quantity for t in self.trades.values()), Decimal(0))
            return notional / traded
        return self.reported_avg_price

    @property
    def remaining_qty(self) -> int:
        return self.quantity - self.filled_qty

    def to_order_update(self, *, ts_event: datetime, source: str, correlation_id: str) -> OrderUpdate:
        """The order as execution reports it on `ex.reports`."""
        return OrderUpdate(
            ts_event=ts_event,
            source=source,
            correlation_id=correlation_id,
            client_order_id=self.client_order_id,
            broker_order_id=self.broker_order_id,
            basket_id=self.key.basket_id,
            leg_index=self.key.leg_index,
            attempt=self.key.attempt,
            slice_index=self.key.slice_index,
            instrument_key=self.instrument_key,
            side=self.side,
            quantity=self.quantity,
            limit_price=self.limit_price,
            status=self.status,
            filled_qty=self.filled_qty,
            avg_price=self.avg_price,
            message=self.message,
        )

    # -- transitions ----------------------------------------------------------------------------

    def _move(self, to: OrderStatus) -> None:
        if to not in _ALLOWED[self.status]:
            raise IllegalTransition(
                f"order {self.client_order_id}/{self.key.slice_index}: {self.status} → {to}"
            )
        self.status = to

    def submit_outcome_unknown(self, reason: str) -> None:
        """The submit timed out or the connection dropped: the order may or may not exist."""
        self._move(OrderStatus.UNKNOWN)
        self.message = reason

    def acknowledge(self, broker_order_id: str) -> None:
        """The broker accepted the order and named it."""
        if not broker_order_id:
            raise ValueError("broker_order_id must not be empty")
        self._record_broker_order_id(broker_order_id)
        # Anywhere else the ack is late: a fill, a cancel or the exchange's rejection overtook it, and
        # it changes nothing (the broker accepting the order does not mean the exchange did).
        if self.status in (OrderStatus.NEW, OrderStatus.UNKNOWN):
            self._move(OrderStatus.OPEN)

    def repriced(self, limit_price: Decimal) -> ReportOutcome:
        """The broker confirmed a modification to `limit_price`. A confirmation that arrives after the
        order ended changes nothing."""
        if not limit_price.is_finite() or limit_price <= 0:
            raise ValueError(f"order {self.client_order_id}: limit_price {limit_price} must be positive")
        if not self.live:
            return ReportOutcome.STALE
        self.limit_price = limit_price
        return ReportOutcome.APPLIED

    def absent_at_broker(self, evidence: str) -> None:
        """An UNKNOWN submit that the broker's order history by tag does not know: it never arrived,
        so it is over (REJECTED) and the next attempt may go. Only for UNKNOWN: an order the broker
        acknowledged does not vanish, and its absence from a listing is a broker problem to raise."""
        if self.status is not OrderStatus.UNKNOWN:
            raise IllegalTransition(
                f"order {self.client_order_id}: absent at the broker while {self.status}, not UNKNOWN"
            )
        self._move(OrderStatus.REJECTED)
        self.message = evidence

    def withdraw_unsent(self, reason: str) -> None:
        """An order the broker refused before taking it (a retryable refusal: throttled, no connection,
        broker closed) and that is no longer wanted: it never existed at the broker, so it is over
        (CANCELLED by us). Only for NEW: anything the broker may have seen must be cancelled there."""
        if self.status is not OrderStatus.NEW:
            raise IllegalTransition(
                f"order {self.client_order_id}/{self.key.slice_index}: withdrawn while {self.status}, "
                "not NEW (unsent)"
            )
        self._move(OrderStatus.CANCELLED)
        self.message = reason

    def reject(self, reason: str) -> None:
        """The broker or exchange refused the order (synchronously, at submit)."""
        if self.filled_qty:
            raise IllegalTransition(f"order {self.client_order_id}: rejected after {self.filled_qty} filled")
        self._move(OrderStatus.REJECTED)
        self.message = reason

    def _record_broker_order_id(self, broker_order_id: str) -> None:
        if self.broker_order_id is not None and self.broker_order_id != broker_order_id:
            raise ConflictingReport(
                f"order {self.client_order_id}/{self.key.slice_index}: broker order id {broker_order_id} "
                f"but already known as {self.broker_order_id}"
            )
        self.broker_order_id = broker_order_id

    def add_trade(self, trade: Trade) -> None:
        """Record an execution. Refuses a trade id seen before and trades beyond the order's quantity."""
        if trade.trade_id in self.trades:
            raise DuplicateTrade(f"order {self.client_order_id}: trade {trade.trade_id} already recorded")
        traded = self.traded_qty + trade.quantity
        if traded > self.quantity:
            raise Overfill(
                f"order {self.client_order_id}: trade {trade.trade_id} of {trade.quantity} takes the fills "
                f"to {traded}, above the order quantity {self.quantity}"
            )
        if self.status is OrderStatus.REJECTED:
            raise ConflictingReport(
                f"order {self.client_order_id}: trade {trade.trade_id} on a rejected order"
            )
        if self.status is OrderStatus.CANCELLED and traded > self.reported_filled_qty:
            raise ConflictingReport(
                f"order {self.client_order_id}: trade {trade.trade_id} takes the fills to {traded}, above "
                f"the {self.reported_filled_qty} the final CANCELLED report said"
            )
        target = self._status_for_fill(traded)
        if target is not None and target is not self.status:
            self._move(target)
        self.trades[trade.trade_id] = trade

    def _status_for_fill(self, filled: int) -> OrderStatus | None:
        """The status a fill of `filled` units implies, or None when the current one stands."""
        if self.status in FINAL_STATUSES:
            return None
        if filled >= self.quantity:
            return OrderStatus.FILLED
        return OrderStatus.PARTIALLY_FILLED

    def apply_report(self, report: BrokerReport) -> ReportOutcome:
        """Fold in a broker status report; duplicates and out-of-order reports are stale, not errors."""
        if report.filled_qty > self.quantity:
            raise Overfill(
                f"order {self.client_order_id}: broker reports {report.filled_qty} filled of {self.quantity}"
            )
        if report.status is OrderStatus.FILLED and report.filled_qty != self.quantity:
            raise ConflictingReport(
                f"order {self.client_order_id}: FILLED with {report.filled_qty} of {self.quantity} filled"
            )
        if self.status in FINAL_STATUSES:
            return self._report_after_final(report)
        if report.status in FINAL_STATUSES and report.filled_qty < self.filled_qty:
            raise ConflictingReport(
                f"order {self.client_order_id}: final {report.status} with {report.filled_qty} filled, but "
                f"{self.filled_qty} are known to have filled"
            )
        if report.filled_qty < self.filled_qty or (
            report.filled_qty == self.filled_qty and _RANK[report.status] <= _RANK[self.status]
        ):
            return ReportOutcome.STALE
        target = report.status
        if report.filled_qty == self.quantity:
            # Nothing is left to cancel or reject: whatever the status says, the order is done.
            target = OrderStatus.FILLED
        elif target is OrderStatus.OPEN and report.filled_qty:
            target = OrderStatus.PARTIALLY_FILLED
        if target is OrderStatus.REJECTED and self.filled_qty:
            raise IllegalTransition(f"order {self.client_order_id}: rejected after {self.filled_qty} filled")
        if target is not self.status and target not in _ALLOWED[self.status]:
            raise IllegalTransition(f"order {self.client_order_id}: {self.status} → {target}")
        # Every check is done before anything changes: a refused report leaves the order as it was.
        if report.broker_order_id is not None:
            self._record_broker_order_id(report.broker_order_id)
        if target is not self.status:
            self._move(target)
        self.reported_filled_qty = report.filled_qty
        self.reported_avg_price = report.avg_price
        if report.message:
            self.message = report.message
        return ReportOutcome.APPLIED

    def _report_after_final(self, report: BrokerReport) -> ReportOutcome:
        if report.filled_qty > self.filled_qty and self.status is not OrderStatus.FILLED:
            raise ConflictingReport(
                f"order {self.client_order_id}: {report.filled_qty} filled reported after final "
                f"{self.status} with {self.filled_qty}"
            )
        if report.status in FINAL_STATUSES and report.status is not self.status:
            raise ConflictingReport(
                f"order {self.client_order_id}: {report.status} reported after final {self.status}"
            )
        if self.status is OrderStatus.FILLED and report.filled_qty > self.reported_filled_qty:
            # The final report of a FILLED order we learnt about from trades: keep the broker's average.
            self.reported_filled_qty = report.filled_qty
            self.reported_avg_price = report.avg_price
            return ReportOutcome.APPLIED
        return ReportOutcome.STALE


class WorkingOrders:
    """Every order of this session, keyed by identity.

    Holds the execution invariants: at most one order per (client order id, attempt, slice), and no
    new attempt at a leg slice while an earlier attempt is still live — an UNKNOWN submit included,
    because re-sending it blindly could double the position.
    """

    def __init__(self) -> None:
        self._orders: dict[OrderKey, Order] = {}

    def __iter__(self) -> Iterator[Order]:
        return iter(self._orders.values())

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, key: OrderKey) -> Order | None:
        return self._orders.get(key)

    def __getitem__(self, key: OrderKey) -> Order:
        return self._orders[key]

    def live_attempt(self, basket_id: str, leg_index: int, slice_index: int) -> Order | None:
        for order in self._orders.values():
            if order.key.leg == (basket_id, leg_index, slice_index) and order.live:
                return order
        return None

    def place(
        self, key: OrderKey, *, instrument_key: str, side: Side, quantity: int, limit_price: Decimal
    ) -> Order:
        """Create a NEW order; the caller sends it to the broker next."""
        if key in self._orders:
            raise LiveOrderExists(f"order {key} already exists ({self._orders[key].status})")
        earlier = self.live_attempt(key.basket_id, key.leg_index, key.slice_index)
        if earlier is not None:
            raise LiveOrderExists(
                f"attempt {key.attempt} at basket {key.basket_id} leg {key.leg_index} slice "
                f"{key.slice_index} while attempt {earlier.key.attempt} is still {earlier.status}"
            )
        order = Order(key, instrument_key, side, quantity, limit_price)
        self._orders[key] = order
        return order

    def adopt(self, order: Order) -> None:
        """An order known from before (persisted by an earlier process), with its state as it was."""
        if order.key in self._orders:
            raise LiveOrderExists(f"order {order.key} already exists ({self._orders[order.key].status})")
        self._orders[order.key] = order

    def by_client_order_id(self, tag: str) -> list[Order]:
        """Every slice placed under one Upstox tag, in slice order."""
        return sorted((o for o in self._orders.values() if o.client_order_id == tag), key=lambda o: o.key)

    def positions(self) -> dict[str, int]:
        """Signed units per instrument from the trades alone (buys positive)."""
        return net_positions(self._orders.values())


def net_positions(orders: Iterable[Order]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for order in orders:
        signed = order.traded_qty if order.side is Side.BUY else -order.traded_qty
        if signed:
            positions[order.instrument_key] = positions.get(order.instrument_key, 0) + signed
    return positions
