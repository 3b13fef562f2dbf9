"""A paper exchange: limit orders rest and fill against the quotes of the simulated (or live) book.

Driven entirely by event time. `submit` and `cancel` take the exchange time of the request; they take
effect `latency` later, when the caller advances the exchange (`advance`, or implicitly with the next
quote). Every call returns the exchange reports that became due, in time order, so the service and the
backtest engine drive it the same way.

`modify` re-prices a working limit order (Upstox's modify): the order loses its time priority and, if
the new price crosses, trades at once as an incoming order would.

Matching rules, kept close to NSE's for a retail-sized order:
- an incoming buy limit at or above the offer trades at the offer, up to the displayed offer quantity;
  the rest rests (and a sell likewise against the bid);
- a resting buy trades at its own limit when a later quote's offer reaches it, again up to the
  displayed quantity; displayed quantity taken by one order is gone for the next until a new quote
  for that instrument arrives;
- checks an exchange or the broker's RMS makes, in that order: market closed (the calendar's dated
  session), unknown instrument, market order on an option (NSE rejects algo market orders in F&O),
  quantity not whole lots, quantity above the freeze quantity, price off the tick grid, price outside
  the day's price band, insufficient margin (a port: the margin model is not the exchange's business).

Order and trade ids look like an exchange's (16- and 9-digit strings) and are deterministic from the
seed and a counter, so a replay gives the same ids.

Charges are not computed here: each `Traded` says whether it is the order's first fill, which is what the
dated charges schedule needs (brokerage is charged once per executed order, on its first fill).

`faults` lets tests force a reject, cap an order's fills (a partial fill that never completes), delay an
order's arrival, or make an order go silent: accepted and working at the exchange but with none of its
reports delivered — only the order book (`order_book`, `trades`) shows what happened to it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Protocol

from volguard_common.clock import to_ist
from volguard_common.events._base import Side
from volguard_common.events.market import ChainSnapshot
from volguard_common.events.orders import OrderStatus
from volguard_execution.domain.orders import BrokerReport, Order, ReportOutcome, Trade


class SessionCalendar(Protocol):
    """The dated session (volguard_common.clock.TradingCalendar)."""

    def market_open(self, ts: datetime) -> bool: ...


class MarginPort(Protocol):
    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        """Why the account cannot carry `order` (insufficient margin), or None when it can."""
        ...


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class RejectReason(StrEnum):
    MARKET_CLOSED = "MARKET_CLOSED"
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    MARKET_ORDER_ON_OPTION = "MARKET_ORDER_ON_OPTION"
    NOT_WHOLE_LOTS = "NOT_WHOLE_LOTS"
    ABOVE_FREEZE_QUANTITY = "ABOVE_FREEZE_QUANTITY"
    BAD_TICK = "BAD_TICK"
    OUTSIDE_PRICE_BAND = "OUTSIDE_PRICE_BAND"
    INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
    FORCED = "FORCED"  # a test hook


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    """What the exchange checks per contract; from the instrument master, dated by the caller."""

    instrument_key: str
    lot_size: int
    tick_size: Decimal
    freeze_quantity: int
    # The day's operating range for the contract (NSE's dynamic price band for options).
    lower_price_band: Decimal
    upper_price_band: Decimal
    is_option: bool = True

    def __post_init__(self) -> None:
        if self.lot_size <= 0 or self.freeze_quantity < self.lot_size:
            raise ValueError(
                f"{self.instrument_key}: lot {self.lot_size} / freeze {self.freeze_quantity} invalid"
            )
        if self.tick_size <= 0 or not 0 < self.lower_price_band <= self.upper_price_band:
            raise ValueError(f"{self.instrument_key}: tick or price band invalid")


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid and offer of one instrument; a missing side is None with quantity 0."""

    instrument_key: str
    bid: Decimal | None
    ask: Decimal | None
    bid_qty: int
    ask_qty: int
    ts_event: datetime

    def __post_init__(self) -> None:
        for price in (self.bid, self.ask):
            if price is not None and (not price.is_finite() or price <= 0):
                raise ValueError(f"{self.instrument_key}: quote price {price} must be positive")
        if (self.bid is None and self.bid_qty) or (self.ask is None and self.ask_qty):
            raise ValueError(f"{self.instrument_key}: quantity on a side without a price")
        if self.bid_qty < 0 or self.ask_qty < 0:
            raise ValueError(f"{self.instrument_key}: negative displayed quantity")


@dataclass(frozen=True, slots=True)
class PaperOrder:
    """An order as sent to the paper exchange."""

    client_order_id: str
    instrument_key: str
    side: Side
    quantity: int
    order_type: OrderType
    limit_price: Decimal | None

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError(f"order {self.client_order_id}: quantity {self.quantity} must be positive")
        if (self.order_type is OrderType.LIMIT) != (self.limit_price is not None):
            raise ValueError(f"order {self.client_order_id}: a limit price exactly for LIMIT orders")


# ---- reports -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    exchange_order_id: str
    client_order_id: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    exchange_order_id: str
    client_order_id: str
    reason: RejectReason
    message: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class Traded:
    trade_id: str
    exchange_order_id: str
    client_order_id: str
    instrument_key: str
    side: Side
    quantity: int
    price: Decimal
    first_fill_of_order: bool
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class Cancelled:
    exchange_order_id: str
    client_order_id: str
    filled_qty: int
    avg_price: Decimal | None
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class CancelRefused:
    exchange_order_id: str
    client_order_id: str
    message: str
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class Modified:
    """The order now shows `limit_price` (and has lost its time priority, as on NSE)."""

    exchange_order_id: str
    client_order_id: str
    limit_price: Decimal
    ts_event: datetime


@dataclass(frozen=True, slots=True)
class ModifyRefused:
    """The modification was refused (Upstox "not modified"); the order works on unchanged."""

    exchange_order_id: str
    client_order_id: str
    message: str
    ts_event: datetime


Report = Accepted | Rejected | Traded | Cancelled | CancelRefused | Modified | ModifyRefused


class PaperOrderState(Enum):
    IN_TRANSIT = "in transit"  # sent, not yet arrived at the exchange
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


@dataclass(slots=True)
class BookEntry:
    """The exchange's record of one order: what the broker's order book would show."""

    exchange_order_id: str
    order: PaperOrder
    submitted_at: datetime
    state: PaperOrderState = PaperOrderState.IN_TRANSIT
    filled_qty: int = 0
    notional: Decimal = Decimal(0)
    message: str = ""

    @property
    def avg_price(self) -> Decimal | None:
        return self.notional / self.filled_qty if self.filled_qty else None

    @property
    def remaining(self) -> int:
        return self.order.quantity - self.filled_qty

    def broker_report(self) -> BrokerReport:
        """This order as the broker's order book shows it: how an UNKNOWN submit or a silent order is
        resolved. An order still in transit is at the broker, so it is in flight, not missing."""
        if self.state is PaperOrderState.FILLED:
            status = OrderStatus.FILLED
        elif self.state is PaperOrderState.CANCELLED:
            status = OrderStatus.CANCELLED
        elif self.state is PaperOrderState.REJECTED:
            status = OrderStatus.REJECTED
        else:
            status = OrderStatus.PARTIALLY_FILLED if self.filled_qty else OrderStatus.OPEN
        return BrokerReport(status, self.filled_qty, self.avg_price, self.exchange_order_id, self.message)


@dataclass(slots=True)
class Faults:
    """Test hooks, keyed by client order id."""

    reject: dict[str, str] = field(default_factory=dict)  # tag → message
    fill_cap: dict[str, int] = field(default_factory=dict)  # tag → most units that will ever fill
    delay: dict[str, timedelta] = field(default_factory=dict)  # tag → extra latency
    silent: set[str] = field(default_factory=set)  # tags whose reports are never delivered


@dataclass(order=True, slots=True)
class _Pending:
    due: datetime
    seq: int
    kind: str = field(compare=False)  # "arrive" | "cancel" | "modify"
    exchange_order_id: str = field(compare=False)
    limit_price: Decimal | None = field(default=None, compare=False)  # of a modify


def _ids(prefix: int, width: int, seed: int) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}{seed:04d}{n:0{width}d}"


class PaperExchange:
    def __init__(
        self,
        *,
        instruments: Mapping[str, InstrumentRules],
        calendar: SessionCalendar,
        margin: MarginPort,
        latency: timedelta = timedelta(milliseconds=50),
        seed: int = 0,
    ) -> None:
        if latency < timedelta(0):
            raise ValueError(f"latency {latency} must be ≥ 0")
        if not 0 <= seed <= 9999:
            raise ValueError(f"seed {seed} outside 0..9999")
        self._instruments = dict(instruments)
        self._calendar = calendar
        self._margin = margin
        self.latency = latency
        self.faults = Faults()
        self._order_ids = _ids(1, 11, seed)  # 1 + 4 + 11 = 16 digits, like NSE order numbers
        self._trade_ids = _ids(5, 4, seed)  # 9 digits
        self._book: dict[str, BookEntry] = {}
        self._resting: dict[str, list[str]] = {}  # instrument → exchange order ids in time priority
        self._quotes: dict[str, Quote] = {}
        # Displayed quantity still available at the current quote (taken by earlier fills).
        self._available: dict[str, tuple[int, int]] = {}
        self._pending: list[_Pending] = []
        self._seq = 0
        self._now: datetime | None = None
        self._trades: list[Traded] = []

    def add_instruments(self, instruments: Mapping[str, InstrumentRules]) -> None:
        """Contracts listed later in the day (the instrument master grows); known ones keep their rules."""
        for key, rules in instruments.items():
            self._instruments.setdefault(key, rules)

    # -- reading the book (what reconciliation and UNKNOWN resolution ask a broker) ---------------

    def order_book(self) -> list[BookEntry]:
        return list(self._book.values())

    def entry(self, exchange_order_id: str) -> BookEntry:
        return self._book[exchange_order_id]

    def by_client_order_id(self, client_order_id: str) -> list[BookEntry]:
        return [e for e in self._book.values() if e.order.client_order_id == client_order_id]

    def trades(self) -> list[Traded]:
        return list(self._trades)

    def quote(self, instrument_key: str) -> Quote | None:
        return self._quotes.get(instrument_key)

    # -- requests ------------------------------------------------------------------------------

    def _clock(self, ts_event: datetime) -> datetime:
        ts = to_ist(ts_event)
        if self._now is not None and ts < self._now:
            raise ValueError(f"exchange time went backwards: {ts.isoformat()} < {self._now.isoformat()}")
        return ts

    def _schedule(
        self, due: datetime, kind: str, exchange_order_id: str, limit_price: Decimal | None = None
    ) -> None:
        self._seq += 1
        heapq.heappush(self._pending, _Pending(due, self._seq, kind, exchange_order_id, limit_price))

    def submit(self, order: PaperOrder, ts_event: datetime) -> tuple[str, list[Report]]:
        """Send `order` at `ts_event`; returns its exchange order id (the broker's synchronous answer)
        and the reports due up to `ts_event`. The order arrives `latency` later."""
        reports = self.advance(ts_event)
        exchange_order_id = next(self._order_ids)
        self._book[exchange_order_id] = BookEntry(exchange_order_id, order, self._clock(ts_event))
        delay = self.latency + self.faults.delay.get(order.client_order_id, timedelta(0))
        self._schedule(self._clock(ts_event) + delay, "arrive", exchange_order_id)
        return exchange_order_id, reports

    def cancel(self, exchange_order_id: str, ts_event: datetime) -> list[Report]:
        """Ask to cancel; takes effect `latency` later (after the order itself has arrived)."""
        reports = self.advance(ts_event)
        if exchange_order_id not in self._book:
            raise KeyError(f"no order {exchange_order_id} at the paper exchange")
        self._schedule(self._clock(ts_event) + self.latency, "cancel", exchange_order_id)
        return reports

    def modify(self, exchange_order_id: str, limit_price: Decimal, ts_event: datetime) -> list[Report]:
        """Ask to re-price a limit order (how the fill engine steps toward the touch without a new
        order); takes effect `latency` later."""
        reports = self.advance(ts_event)
        if exchange_order_id not in self._book:
            raise KeyError(f"no order {exchange_order_id} at the paper exchange")
        self._schedule(self._clock(ts_event) + self.latency, "modify", exchange_order_id, limit_price)
        return reports

    def expire_day_orders(self, ts_event: datetime) -> list[Report]:
        """The session closed: every DAY order still working is cancelled by the exchange (VolGuard
        sends only DAY orders). The caller calls this at the calendar's close for the day."""
        reports = self._advance(ts_event)
        now = self._clock(ts_event)
        for entry in self._book.values():
            if entry.state is PaperOrderState.OPEN:
                reports.extend(self._cancel(entry, now))
        return self._deliver(reports)

    def on_quote(self, quote: Quote) -> list[Report]:
        """A new best bid/offer: first everything due before it, then resting orders that it reaches."""
        reports = self._advance(quote.ts_event)
        self._quotes[quote.instrument_key] = quote
        self._available[quote.instrument_key] = (quote.bid_qty, quote.ask_qty)
        for exchange_order_id in list(self._resting.get(quote.instrument_key, ())):
            reports.extend(self._match(self._book[exchange_order_id], quote.ts_event, resting=True))
        return self._deliver(reports)

    def on_chain(self, snapshot: ChainSnapshot) -> list[Report]:
        """Every call and put quote of a chain snapshot, as quotes at the snapshot's time."""
        reports: list[Report] = []
        for quote in chain_quotes(snapshot):
            reports.extend(self.on_quote(quote))
        return reports

    def advance(self, ts_event: datetime) -> list[Report]:
        """Process every arrival and cancel due at or before `ts_event`."""
        return self._deliver(self._advance(ts_event))

    def _advance(self, ts_event: datetime) -> list[Report]:
        now = self._clock(ts_event)
        reports: list[Report] = []
        while self._pending and self._pending[0].due <= now:
            pending = heapq.heappop(self._pending)
            self._now = pending.due
            entry = self._book[pending.exchange_order_id]
            if pending.kind == "arrive":
                reports.extend(self._arrive(entry, pending.due))
            elif entry.state is PaperOrderState.IN_TRANSIT:
                # The request overtook the order; it is handled once the order has arrived.
                self._schedule(
                    pending.due + self.latency, pending.kind, pending.exchange_order_id, pending.limit_price
                )
            elif pending.kind == "cancel":
                reports.extend(self._cancel(entry, pending.due))
            else:
                assert pending.limit_price is not None
                reports.extend(self._modify(entry, pending.limit_price, pending.due))
        self._now = now
        return reports

    def _deliver(self, reports: list[Report]) -> list[Report]:
        return [r for r in reports if r.client_order_id not in self.faults.silent]

    # -- the matching engine --------------------------------------------------------------------

    def _arrive(self, entry: BookEntry, ts: datetime) -> list[Report]:
        order = entry.order
        problem = self._check(order, ts)
        if problem is not None:
            reason, message = problem
            entry.state = PaperOrderState.REJECTED
            entry.message = message
            return [Rejected(entry.exchange_order_id, order.client_order_id, reason, message, ts)]
        entry.state = PaperOrderState.OPEN
        reports: list[Report] = [Accepted(entry.exchange_order_id, order.client_order_id, ts)]
        self._resting.setdefault(order.instrument_key, []).append(entry.exchange_order_id)
        reports.extend(self._match(entry, ts, resting=False))
        return reports

    def _check(self, order: PaperOrder, ts: datetime) -> tuple[RejectReason, str] | None:
        forced = self.faults.reject.get(order.client_order_id)
        if forced is not None:
            return RejectReason.FORCED, forced
        if not self._calendar.market_open(ts):
            return RejectReason.MARKET_CLOSED, f"market closed at {ts.isoformat()}"
        rules = self._instruments.get(order.instrument_key)
        if rules is None:
            return RejectReason.UNKNOWN_INSTRUMENT, f"no contract {order.instrument_key}"
        if order.order_type is OrderType.MARKET and rules.is_option:
            return RejectReason.MARKET_ORDER_ON_OPTION, "market orders are not accepted on options"
        if order.quantity % rules.lot_size:
            return (
                RejectReason.NOT_WHOLE_LOTS,
                f"quantity {order.quantity} is not a multiple of {rules.lot_size}",
            )
        if order.quantity > rules.freeze_quantity:
            return (
                RejectReason.ABOVE_FREEZE_QUANTITY,
                f"quantity {order.quantity} above the freeze quantity {rules.freeze_quantity}",
            )
        if order.limit_price is not None:
            price_problem = _check_price(order.limit_price, rules)
            if price_problem is not None:
                return price_problem
        shortfall = self._margin.shortfall(order, ts)
        if shortfall is not None:
            return RejectReason.INSUFFICIENT_MARGIN, shortfall
        return None

    def _match(self, entry: BookEntry, ts: datetime, *, resting: bool) -> list[Report]:
        order = entry.order
        quote = self._quotes.get(order.instrument_key)
        if entry.state is not PaperOrderState.OPEN or quote is None:
            return []
        buy = order.side is Side.BUY
        opposite = quote.ask if buy else quote.bid
        if opposite is None:
            return []
        limit = order.limit_price
        if limit is not None and (opposite > limit if buy else opposite < limit):
            return []
        bid_left, ask_left = self._available.get(order.instrument_key, (0, 0))
        displayed = ask_left if buy else bid_left
        cap = self.faults.fill_cap.get(order.client_order_id)
        allowed = entry.remaining if cap is None else max(0, min(entry.remaining, cap - entry.filled_qty))
        quantity = min(allowed, displayed)
        if quantity <= 0:
            return []
        # A resting order is reached by the market and trades at its own price; an incoming one takes
        # the displayed price (price improvement), as on the exchange.
        price = limit if resting and limit is not None else opposite
        if buy:
            self._available[order.instrument_key] = (bid_left, ask_left - quantity)
        else:
            self._available[order.instrument_key] = (bid_left - quantity, ask_left)
        first = entry.filled_qty == 0
        entry.filled_qty += quantity
        entry.notional += price * quantity
        if entry.remaining == 0:
            entry.state = PaperOrderState.FILLED
            self._resting[order.instrument_key].remove(entry.exchange_order_id)
        traded = Traded(
            next(self._trade_ids),
            entry.exchange_order_id,
            order.client_order_id,
            order.instrument_key,
            order.side,
            quantity,
            price,
            first,
            ts,
        )
        self._trades.append(traded)
        return [traded]

    def _modify(self, entry: BookEntry, limit_price: Decimal, ts: datetime) -> list[Report]:
        order = entry.order
        if entry.state is not PaperOrderState.OPEN:
            return [
                ModifyRefused(
                    entry.exchange_order_id, order.client_order_id, f"order is {entry.state.value}", ts
                )
            ]
        if order.order_type is not OrderType.LIMIT:
            return [ModifyRefused(entry.exchange_order_id, order.client_order_id, "not a limit order", ts)]
        problem = _check_price(limit_price, self._instruments[order.instrument_key])
        if problem is not None:
            return [ModifyRefused(entry.exchange_order_id, order.client_order_id, problem[1], ts)]
        entry.order = replace(order, limit_price=limit_price)
        resting = self._resting[order.instrument_key]
        resting.remove(entry.exchange_order_id)
        resting.append(entry.exchange_order_id)
        reports: list[Report] = [Modified(entry.exchange_order_id, order.client_order_id, limit_price, ts)]
        reports.extend(self._match(entry, ts, resting=False))
        return reports

    def _cancel(self, entry: BookEntry, ts: datetime) -> list[Report]:
        client_order_id = entry.order.client_order_id
        if entry.state is not PaperOrderState.OPEN:
            message = f"order is {entry.state.value}"
            return [CancelRefused(entry.exchange_order_id, client_order_id, message, ts)]
        entry.state = PaperOrderState.CANCELLED
        self._resting[entry.order.instrument_key].remove(entry.exchange_order_id)
        return [Cancelled(entry.exchange_order_id, client_order_id, entry.filled_qty, entry.avg_price, ts)]


def _check_price(price: Decimal, rules: InstrumentRules) -> tuple[RejectReason, str] | None:
    if price % rules.tick_size:
        return RejectReason.BAD_TICK, f"price {price} is not a multiple of {rules.tick_size}"
    if not rules.lower_price_band <= price <= rules.upper_price_band:
        return (
            RejectReason.OUTSIDE_PRICE_BAND,
            f"price {price} outside {rules.lower_price_band}..{rules.upper_price_band}",
        )
    return None


def _price(value: float) -> Decimal | None:
    # Chain columns carry NaN (or 0 for an empty side) where there is no quote.
    if math.isnan(value) or value <= 0:
        return None
    return Decimal(repr(value))


def chain_quotes(snapshot: ChainSnapshot) -> list[Quote]:
    """The quotes of every call and put in a chain snapshot that has an instrument key."""
    arrays = snapshot.to_numpy()
    quotes: list[Quote] = []
    sides = (
        (
            arrays.call_instrument_key,
            arrays.call_bid,
            arrays.call_ask,
            arrays.call_bid_qty,
            arrays.call_ask_qty,
        ),
        (arrays.put_instrument_key, arrays.put_bid, arrays.put_ask, arrays.put_bid_qty, arrays.put_ask_qty),
    )
    for keys, bids, asks, bid_qtys, ask_qtys in sides:
        for i, key in enumerate(keys):
            if not key:
                continue
            bid, ask = _price(float(bids[i])), _price(float(asks[i]))
            quotes.append(
                Quote(
                    key,
                    bid,
                    ask,
                    int(bid_qtys[i]) if bid is not None else 0,
                    int(ask_qtys[i]) if ask is not None else 0,
                    snapshot.ts_event,
                )
            )
    return quotes


def apply_report(order: Order, report: Report) -> ReportOutcome:
    """Fold one paper-exchange report into the order it belongs to (the paper broker's translation)."""
    if isinstance(report, Accepted):
        order.acknowledge(report.exchange_order_id)
        return ReportOutcome.APPLIED
    if isinstance(report, Traded):
        order.add_trade(Trade(report.trade_id, report.quantity, report.price, report.ts_event))
        return ReportOutcome.APPLIED
    if isinstance(report, Rejected):
        return order.apply_report(
            BrokerReport(OrderStatus.REJECTED, 0, None, report.exchange_order_id, report.message)
        )
    if isinstance(report, Cancelled):
        return order.apply_report(
            BrokerReport(OrderStatus.CANCELLED, report.filled_qty, report.avg_price, report.exchange_order_id)
        )
    if isinstance(report, Modified):
        return order.repriced(report.limit_price)
    # A refused cancel or modification says nothing new: fills and the final state come separately.
    return ReportOutcome.STALE
