"""The broker port: everything execution needs from a broker, and nothing else.

Two adapters implement it: the paper broker (`adapters/paper_broker.py`, the default, filling against the
simulated book) and Upstox (live). The execution service and the basket guard only ever see this port,
so the same basket logic runs against either.

Rules every adapter keeps:
- One `submit` is one exchange order: VolGuard slices at the freeze quantity itself (`slice_quantities`),
  so each slice is its own `OrderRequest` with its own `OrderKey`. All slices of an attempt share the
  attempt's client order id (the Upstox `tag`); the adapter tells them apart by broker order id.
- `submit` answers in exactly one of three ways: an ack (`SubmitAck`, the broker named the order), a
  synchronous refusal (`SubmitRejected`: the order certainly does not exist), or `SubmitOutcomeUnknown`
  (timeout, disconnect, 5xx after sending): the order may or may not exist. The caller marks it UNKNOWN
  and never re-sends it; `order_history(tag)` or the update stream resolves it. A rate-limit refusal
  (HTTP 429) before the order was accepted is a `SubmitRejected` with `retryable=True`: the order's
  identity is kept and a later submit of the same key is allowed because nothing was placed.
- `modify` and `cancel` are requests; their effect arrives as updates (a refused cancel because the order
  already filled is normal, not an error).
- Updates (`updates()`) arrive duplicated and out of order; `Order.apply_report` and `Order.add_trade`
  already treat that. A trade carries its trade id; the same trade may also be reported by `trades()`.
- Reads (`order_book`, `order_history`, `trades`, `positions`) raise `BrokerUnavailable` when the broker
  cannot answer. They never answer "nothing" for "don't know": a failed positions read is not a flat book.

Quantities are units; prices rupees per unit as Decimal; times tz-aware (exchange time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from volguard_common.events._base import Side
from volguard_execution.domain.orders import BrokerReport, OrderKey, Trade


class Product(StrEnum):
    """Upstox product: `D` carries forward (weekly and monthly trades and their adjustments); `I` is
    intraday and squared off by the broker at the end of the day (only the intraday bucket's trades)."""

    DELIVERY = "D"
    INTRADAY = "I"


class Validity(StrEnum):
    DAY = "DAY"
    IOC = "IOC"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One limit order for one slice of one attempt at one basket leg. Market orders do not exist here:
    exchanges reject algo market orders in F&O, so an order that must get done is a marketable limit."""

    key: OrderKey
    instrument_key: str
    side: Side
    quantity: int
    limit_price: Decimal
    product: Product = Product.DELIVERY
    validity: Validity = Validity.DAY

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError(f"{self.key}: quantity {self.quantity} must be positive")
        if not self.limit_price.is_finite() or self.limit_price <= 0:
            raise ValueError(f"{self.key}: limit_price {self.limit_price} must be positive")

    @property
    def client_order_id(self) -> str:
        return self.key.client_order_id


@dataclass(frozen=True, slots=True)
class SubmitAck:
    broker_order_id: str
    # Broker-reported processing latency when it gives one (Upstox `metadata.latency`), else None.
    broker_latency_ms: float | None = None
    # Every exchange order the broker made of this one request when it sliced it itself (Upstox's
    # `slice`: `data.order_ids`), `broker_order_id` first; () for one order.
    slice_order_ids: tuple[str, ...] = ()


class BrokerError(Exception):
    """A broker call failed; subclasses say what is known about the order afterwards."""


class SubmitRejected(BrokerError):
    """The broker refused the order synchronously: it certainly does not exist."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # True for refusals before the order was taken (rate limit): the same key may be submitted again.
        self.retryable = retryable


class SubmitOutcomeUnknown(BrokerError):
    """The submit may or may not have reached the exchange (timeout, disconnect, 5xx after sending)."""


class BrokerUnavailable(BrokerError):
    """The broker could not answer a read or a request at all (nothing was sent or nothing is known)."""


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """One exchange order as the broker's order book, order history or update stream shows it."""

    broker_order_id: str
    client_order_id: str  # the tag it was placed under; "" for orders VolGuard did not place
    instrument_key: str
    side: Side
    quantity: int
    limit_price: Decimal | None
    report: BrokerReport
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class BrokerTrade:
    """One execution, as the broker's trade book or update stream shows it."""

    broker_order_id: str
    client_order_id: str
    instrument_key: str
    side: Side
    trade: Trade
    # Brokerage is charged once per executed order, on its first fill (the dated charges schedule).
    first_fill_of_order: bool


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """Net position in one instrument: signed units (long positive)."""

    instrument_key: str
    net_quantity: int
    average_price: Decimal | None


@dataclass(frozen=True, slots=True)
class OrderUpdateReceived:
    order: BrokerOrder


@dataclass(frozen=True, slots=True)
class TradeReceived:
    trade: BrokerTrade


@dataclass(frozen=True, slots=True)
class UpdatesInterrupted:
    """The update stream dropped: updates may have been missed until it resumes, so open orders must be
    read back from the order book (the service reconciles)."""

    reason: str


BrokerUpdate = OrderUpdateReceived | TradeReceived | UpdatesInterrupted


@dataclass(frozen=True, slots=True)
class HealthProbe:
    """One health check: a round trip to the broker and whether its update stream is connected."""

    ok: bool
    latency_ms: float | None
    updates_connected: bool
    message: str = ""


@runtime_checkable
class Broker(Protocol):
    """The one thing execution talks to a broker through."""

    @property
    def name(self) -> str:
        """ "paper" or "upstox", as BrokerHealth.broker reports it."""
        ...

    async def submit(self, request: OrderRequest) -> SubmitAck:
        """Place one order. Raises `SubmitRejected` or `SubmitOutcomeUnknown` (see module doc)."""
        ...

    async def modify(self, broker_order_id: str, limit_price: Decimal) -> None:
        """Ask to re-price a working limit order; the outcome arrives as an update."""
        ...

    async def cancel(self, broker_order_id: str) -> None:
        """Ask to cancel a working order; the outcome arrives as an update."""
        ...

    async def order_book(self) -> list[BrokerOrder]:
        """Today's orders at the broker, every state."""
        ...

    async def order_history(self, client_order_id: str) -> list[BrokerOrder]:
        """Every exchange order placed under one tag (resolves UNKNOWN submits); [] when none exists."""
        ...

    async def trades(self) -> list[BrokerTrade]:
        """Today's executions."""
        ...

    async def positions(self) -> list[BrokerPosition]:
        """Open short-term positions (F&O). Raises `BrokerUnavailable` rather than answer [] unknowingly."""
        ...

    async def probe(self) -> HealthProbe:
        """One health check round trip (never raises for a broker that is down: `ok=False` says so)."""
        ...

    def updates(self) -> AsyncIterator[BrokerUpdate]:
        """Order and trade updates as they happen (the Upstox portfolio stream; the paper exchange's
        reports). One iterator per process; it ends only when the broker is closed."""
        ...

    async def close(self) -> None: ...
