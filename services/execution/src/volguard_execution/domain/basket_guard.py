"""The multi-leg guard: one basket, worked leg by leg so that no short option is ever without its hedge.

Hedges first. Legs go in stages by `sequence` (risk sequences every BUY before every SELL): on entry the
wings are bought before the body is sold, on exit the shorts are bought back before the wings are sold.
A stage starts only when every earlier stage has filled in full — by the fills known, not by hope — so a
partly filled basket is over-hedged, never naked.

Within a stage every leg works its adaptive fill schedule (`fill_schedule`). The stage has
`partial_fill_timeout_s` from its start; the slowest schedule ends inside it (settings check that), so:
- every leg fills: the next stage starts (or the basket is FILLED);
- a leg was rejected or its schedule ended unfilled: the guard *repairs* it once (a new attempt for the
  missing quantity, priced at the edge of the slippage budget against the mid at submission) and raises
  an Alert; the repair rests until the stage's deadline;
- otherwise the stage is abandoned: every working order is cancelled, and once nothing is live (an
  UNKNOWN submit is resolved first — it may have traded) the guard *unwinds* what filled: the filled legs
  are reversed with marketable limits, buys first (buying back shorts before selling wings), each
  reversal again a stage with the same deadline.
- A submit the broker refused before taking it (throttled, no connection, broker closed: a retryable
  refusal) is not a rejection: the order stays NEW, unsent, and is sent again with the same key (the same
  client order id, attempt and slice) after `resend_after_s`, at the price its schedule has reached. It
  counts as working, so the stage waits for it exactly as for an order resting at the exchange, and a
  later stage (the shorts) cannot start. When its attempt ends unsent it is withdrawn (CANCELLED, never
  sent) and the stage goes on as for an order that did not fill.
- An unwind that cannot complete ends the basket STUCK: what remains is hedged (the buy-backs go first,
  and the wings are sold only after every short is bought back), and an Alert asks for an operator.

The guard is pure: it takes exchange time and evidence (acks, rejects, unknown outcomes, broker reports,
trades, order-book answers, quotes) and answers with actions (`Place`, `Modify`, `Cancel`, `Resolve`,
`RaiseAlert`) for its caller — the execution service, or the backtest engine — to carry out. It keeps the
`WorkingOrders` invariants: at most one live broker order per (client order id, attempt, slice), and no
new attempt at a leg while an earlier one is live (an UNKNOWN submit is never re-sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from volguard_common.events._base import Side
from volguard_common.events.orders import (
    BasketStatus,
    ExecuteBasket,
    IntentKind,
    OrderStatus,
    Urgency,
)
from volguard_common.settings import Settings
from volguard_execution.domain.fill_schedule import (
    FillScheduleConfig,
    LegSchedule,
    Touch,
    price_at,
    slippage,
    slippage_budget,
)
from volguard_execution.domain.orders import (
    BrokerReport,
    DuplicateTrade,
    Order,
    OrderKey,
    Trade,
    WorkingOrders,
    slice_quantities,
)

_HUNDRED = Decimal(100)
_SLIPPAGE_PLACES = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class GuardConfig:
    partial_fill_timeout_s: float
    fill: FillScheduleConfig
    # Repair attempts per leg of the basket itself before the guard unwinds instead.
    max_repairs: int = 1
    # Attempts at each reversal of an unwind before the basket is STUCK.
    max_unwind_attempts: int = 3
    # A working order that has been asked to cancel (or an UNKNOWN submit) and has said nothing for this
    # long is looked up in the broker's order book (an accepted-then-silent order is found that way).
    resolve_after_s: float = 2.0
    # An order refused before the broker took it (retryable) is sent again, same key, after this long.
    resend_after_s: float = 1.0
    # An UNKNOWN submit is taken as never arrived only when the broker's order book and order history by
    # tag have both not shown it on repeated reads spread over this long (setting
    # `unknown_order_absent_after_s`): a book that lags the exchange must not make the guard place the leg
    # again while the first order is on its way (DESIGN §3: an unknown outcome is never re-sent blindly).
    absent_after_s: float = 30.0

    def __post_init__(self) -> None:
        slowest = max(self.fill.duration_s(urgency) for urgency in Urgency)
        if slowest > self.partial_fill_timeout_s:
            raise ValueError(
                f"the slowest fill schedule ({slowest} s) must end inside partial_fill_timeout_s "
                f"({self.partial_fill_timeout_s} s): the guard, not the timeout, decides"
            )
        if (
            self.max_repairs < 0
            or self.max_unwind_attempts < 1
            or self.resolve_after_s <= 0
            or self.resend_after_s <= 0
            or self.absent_after_s < self.resolve_after_s
        ):
            raise ValueError(
                "max_repairs ≥ 0, max_unwind_attempts ≥ 1, resolve_after_s > 0, resend_after_s > 0 and "
                "absent_after_s ≥ resolve_after_s (an order is given up only after more than one read)"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardConfig:
        return cls(
            settings.partial_fill_timeout_s,
            FillScheduleConfig.from_settings(settings),
            absent_after_s=settings.unknown_order_absent_after_s,
        )


@dataclass(frozen=True, slots=True)
class Contract:
    """What the exchange needs to know of the basket's contracts (one tick and freeze for the chain)."""

    tick_size: Decimal
    freeze_quantity: int


# ---- actions --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    key: OrderKey
    instrument_key: str
    side: Side
    quantity: int
    limit_price: Decimal


@dataclass(frozen=True, slots=True)
class Modify:
    key: OrderKey
    broker_order_id: str
    limit_price: Decimal


@dataclass(frozen=True, slots=True)
class Cancel:
    key: OrderKey
    broker_order_id: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """Look the order up at the broker (order history by tag, order book, trades) and call `resolved`."""

    key: OrderKey


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """An unsent order (refused before the broker took it) that the guard gave up: it is CANCELLED and
    was never at the broker. Nothing to do there; the caller records the order's new state."""

    key: OrderKey


class AlertLevel(StrEnum):
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    code: str
    level: AlertLevel
    message: str


Action = Place | Modify | Cancel | Resolve | Withdrawn | RaiseAlert


# ---- the guard -------------------------------------------------------------------------------------


class ItemKind(StrEnum):
    LEG = "LEG"  # a leg of the basket as risk sent it
    UNWIND = "UNWIND"  # the reversal of what a leg filled


@dataclass(slots=True)
class _Item:
    """One leg's work within a stage: reach `target` units on `side`."""

    kind: ItemKind
    leg_index: int
    instrument_key: str
    side: Side
    target: int
    urgency: Urgency
    reference_price: Decimal  # priced from this when the book shows no two-sided quote
    attempts: list[int] = field(default_factory=list)
    repairs: int = 0
    schedule: LegSchedule | None = None
    shown_step: int = 0
    attempt_ends_at: datetime | None = None  # for fixed-price attempts (repairs, unwinds)
    abandoned: bool = False


@dataclass(slots=True)
class _Stage:
    items: list[_Item]
    deadline: datetime
    abandoned: bool = False


@dataclass(slots=True)
class _Asked:
    """When we last asked the broker about an order (cancel or resolve), to ask again if it stays silent."""

    cancel_at: datetime | None = None
    resolve_at: datetime | None = None
    # An UNKNOWN submit the broker's reads have not shown: since when, and on how many reads.
    absent_since: datetime | None = None
    absent_reads: int = 0


@dataclass(frozen=True, slots=True)
class LegOutcome:
    leg_index: int
    client_order_id: str  # of the last attempt
    attempts: int
    status: OrderStatus
    # Net units in the leg's own direction that remain filled (0 after an unwind).
    filled_qty: int
    avg_price: Decimal | None
    # Fill quality (None when unknown): the mid when the leg's first attempt went out, the rupees per
    # unit the fills lost against it, and the exchange seconds from that submission to the last fill.
    mid_at_submission: Decimal | None = None
    slippage: Decimal | None = None
    time_to_fill_s: float | None = None


@dataclass(frozen=True, slots=True)
class BasketOutcome:
    status: BasketStatus
    legs: list[LegOutcome]
    # Rupees: sells' notional minus buys' notional over every fill of the basket (unwinds included).
    net_premium: Decimal
    message: str


class BasketGuard:
    def __init__(
        self, basket: ExecuteBasket, *, contract: Contract, config: GuardConfig, now: datetime
    ) -> None:
        self.basket = basket
        self.contract = contract
        self.config = config
        self.orders = WorkingOrders()
        self.started_at = now
        self.outcome: BasketOutcome | None = None
        self._touches: dict[str, Touch] = {}
        self._next_attempt: dict[int, int] = {leg.leg_index: 0 for leg in basket.legs}
        self._asked: dict[OrderKey, _Asked] = {}
        # Orders refused before the broker took them, and when each may be sent again (same key).
        self._unsent: dict[OrderKey, datetime] = {}
        self._cancel_requested: str | None = None
        self._recovered: str | None = None  # why a basket of an earlier process is being finished here
        self._unwinding = False
        self._alerted_unwind = False
        # Per leg: the mid at its first submission and when that was (what fill quality is measured from).
        self._first_submission: dict[int, tuple[Decimal, datetime]] = {}
        sequences = sorted({leg.sequence for leg in basket.legs})
        self._pending_stages: list[list[_Item]] = [
            [
                _Item(
                    ItemKind.LEG,
                    leg.leg_index,
                    leg.instrument_key,
                    leg.side,
                    leg.quantity,
                    basket.urgency,
                    leg.limit_price,
                )
                for leg in basket.legs_in_order()
                if leg.sequence == sequence
            ]
            for sequence in sequences
        ]
        self._stage: _Stage | None = None

    @classmethod
    def recover(
        cls,
        basket: ExecuteBasket,
        orders: Iterable[Order],
        *,
        contract: Contract,
        config: GuardConfig,
        now: datetime,
        reason: str,
    ) -> BasketGuard:
        """A basket another process was working when it died (failover, restart), from its persisted
        orders (reconciled with the broker by the caller). Its stage plan died with that process, so it
        is not resumed: whatever is still working is cancelled, then what filled is unwound (an exit is
        not reversed: it ends STUCK, hedged, for an operator), exactly as an abandoned stage."""
        guard = cls(basket, contract=contract, config=config, now=now)
        guard._pending_stages = []
        guard._recovered = reason
        # Every leg is in the recovery stage, those never placed too: a basket that had in fact filled
        # in full ends FILLED, and one that had not is unwound from what filled.
        items = {
            leg.leg_index: _Item(
                ItemKind.LEG,
                leg.leg_index,
                leg.instrument_key,
                leg.side,
                leg.quantity,
                basket.urgency,
                leg.limit_price,
                abandoned=True,
            )
            for leg in basket.legs
        }
        for order in orders:
            if order.status is OrderStatus.NEW:
                # Recorded before its submit and nothing after: the process died around the submit, so
                # the order may be at the broker. Only the broker's history by tag can tell.
                order.submit_outcome_unknown("the process working it died around its submit")
            guard.orders.adopt(order)
            leg_index = order.key.leg_index
            guard._next_attempt[leg_index] = max(guard._next_attempt[leg_index], order.key.attempt + 1)
            if order.key.attempt not in items[leg_index].attempts:
                items[leg_index].attempts.append(order.key.attempt)
        guard._stage = _Stage(list(items.values()), now, abandoned=True)
        return guard

    # -- what the caller feeds in -----------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def start(self, now: datetime) -> list[Action]:
        return self.progress(now)

    def on_quote(self, instrument_key: str, bid: Decimal | None, ask: Decimal | None) -> None:
        if bid is not None and ask is not None and 0 < bid <= ask:
            self._touches[instrument_key] = Touch(bid, ask)
        else:
            # A one-sided or empty book: no mid to price from until it is two-sided again.
            self._touches.pop(instrument_key, None)

    def acknowledged(self, key: OrderKey, broker_order_id: str) -> None:
        self.orders[key].acknowledge(broker_order_id)

    def submit_rejected(self, key: OrderKey, message: str) -> None:
        self.orders[key].reject(message)

    def submit_refused(self, key: OrderKey, message: str, now: datetime) -> None:
        """The broker refused the submit before taking it (retryable: throttled, no connection, broker
        closed). Nothing was placed, so the order stays NEW and goes again, same key, after
        `resend_after_s` — never a second order under its key, since the first does not exist."""
        order = self.orders[key]
        if order.status is not OrderStatus.NEW:
            raise ValueError(f"order {key}: refused before it was sent, but it is {order.status}")
        order.message = message
        self._unsent[key] = now + timedelta(seconds=self.config.resend_after_s)

    def unsent(self, key: OrderKey) -> bool:
        """Refused before the broker took it and not sent since: nothing of it exists at the broker, so
        no update, history entry or trade can be its (a sibling slice under the same tag may be)."""
        return key in self._unsent

    def submit_unknown(self, key: OrderKey, reason: str) -> None:
        self.orders[key].submit_outcome_unknown(reason)

    def report(self, key: OrderKey, report: BrokerReport) -> None:
        self.orders[key].apply_report(report)

    def trade(self, key: OrderKey, trade: Trade, broker_order_id: str | None = None) -> bool:
        """Record a trade; False when it was already known (it arrives from the stream and the book).
        A trade can overtake the ack (or be the only answer to an UNKNOWN submit): it names the order."""
        if broker_order_id is not None:
            self.orders[key].acknowledge(broker_order_id)
        try:
            self.orders[key].add_trade(trade)
        except DuplicateTrade:
            return False
        return True

    def resolved(
        self, key: OrderKey, report: BrokerReport | None, trades: Iterable[Trade], now: datetime
    ) -> None:
        """The broker answered a `Resolve`: None means neither its order book nor its history by tag shows
        the order. One such answer proves nothing (the book may lag the exchange, the order may still be
        on its way): an UNKNOWN submit stays UNKNOWN, and its leg waits, until reads spread over
        `absent_after_s` have all come back empty; only then did it never arrive."""
        order = self.orders[key]
        asked = self._asked.setdefault(key, _Asked())
        asked.resolve_at = None
        if report is None:
            if order.status is OrderStatus.UNKNOWN:
                if asked.absent_since is None:
                    asked.absent_since = now
                asked.absent_reads += 1
                waited = (now - asked.absent_since).total_seconds()
                if asked.absent_reads >= 2 and waited >= self.config.absent_after_s:
                    order.absent_at_broker(
                        f"not in the broker's order book or history on {asked.absent_reads} reads over "
                        f"{waited:.0f} s"
                    )
            return
        asked.absent_since = None
        asked.absent_reads = 0
        for trade in trades:
            self.trade(key, trade)
        if order.broker_order_id is None and report.broker_order_id is not None:
            order.acknowledge(report.broker_order_id)
        order.apply_report(report)

    def stuck(self, reason: str) -> list[Action]:
        """The broker's evidence cannot be applied (a report or trade that contradicts an order's final
        state): what the basket holds is no longer known, so nothing more is decided here. The basket
        ends STUCK with a CRITICAL Alert, and an operator reconciles it with the broker."""
        if self.outcome is not None:
            return []
        self.outcome = BasketOutcome(BasketStatus.STUCK, self._leg_outcomes(), self.net_premium(), reason)
        return [
            RaiseAlert(
                "BASKET_STUCK",
                AlertLevel.CRITICAL,
                f"basket {self.basket.basket_id} is STUCK: {reason}; the fills known give "
                f"{self._net_by_leg()} by leg, the broker's book may differ: an operator must reconcile",
            )
        ]

    def cancel(self, now: datetime, reason: str) -> list[Action]:
        """CancelOrders for this basket: stop working it; what filled is unwound."""
        # An unwind in progress is itself the way out; a cancel does not stop it.
        if self._cancel_requested is None and not self._unwinding:
            self._cancel_requested = reason
        return self.progress(now)

    # -- the decision loop --------------------------------------------------------------------------

    def progress(self, now: datetime) -> list[Action]:
        """Everything that should happen at `now`, given what is known. Call after every piece of
        evidence and on a timer."""
        actions: list[Action] = []
        if self.outcome is not None:
            return actions
        # Each step is idempotent at a given time once nothing changes, and a basket has at most four
        # stage transitions to make at one instant (finish a stage, start the next, abandon, unwind).
        for _ in range(6):
            self._step(now, actions)
            if self.outcome is not None:
                break
        return actions

    def _step(self, now: datetime, actions: list[Action]) -> None:
        if self._stage is None:
            if self._cancel_requested is not None:
                self._finish_abandoned(now, actions, self._cancel_requested)
                return
            if not self._pending_stages:
                self._finish(now, actions)
                return
            items = self._pending_stages.pop(0)
            self._stage = _Stage(items, now + timedelta(seconds=self.config.partial_fill_timeout_s))
        stage = self._stage
        stop = self._cancel_requested is not None or now >= stage.deadline
        if stop and not stage.abandoned:
            stage.abandoned = True
        for item in stage.items:
            self._work(item, stage, now, actions)
        if any(item.abandoned for item in stage.items):
            stage.abandoned = True
        if stage.abandoned:
            for item in stage.items:
                item.abandoned = True
        orders = [order for item in stage.items for order in self._orders_of(item)]
        if any(order.live for order in orders):
            return
        # A report can say an order filled before its trades arrive: the stage (and the basket's result)
        # waits for them, so every Fill is told before the basket's end; if they stay away, the book is read.
        untraded = [order for order in orders if order.traded_qty < order.filled_qty]
        for order in untraded:
            self._resolve_if_silent(order, now, actions)
        if untraded:
            return
        if all(self._filled(item) >= item.target for item in stage.items):
            self._stage = None
            return
        if not stage.abandoned:
            return
        # The stage failed: nothing of it is live any more, so what filled is final.
        self._stage = None
        self._finish_abandoned(
            now, actions, self._cancel_requested or self._recovered or "a stage did not fill in time"
        )

    def _work(self, item: _Item, stage: _Stage, now: datetime, actions: list[Action]) -> None:
        orders = [order for order in self._orders_of(item) if order.live]
        filled = self._filled(item)
        if orders:
            attempt_over = (
                stage.abandoned
                or item.abandoned
                or (item.schedule is not None and item.schedule.over(now))
                or (item.attempt_ends_at is not None and now >= item.attempt_ends_at)
            )
            for order in orders:
                if order.key in self._unsent:
                    self._unsent_order(order, now, actions, give_up=attempt_over)
                elif attempt_over:
                    self._cancel(order, now, actions)
                elif order.status is OrderStatus.UNKNOWN:
                    self._resolve_if_silent(order, now, actions)
            if not attempt_over:
                self._reprice(item, [o for o in orders if o.live], now, actions)
            if any(order.live for order in orders):
                return
            filled = self._filled(item)
        if filled >= item.target or item.abandoned or stage.abandoned:
            return
        # Nothing live and still short of the target: the first attempt, a repair, or give up.
        if not item.attempts:
            self._place(item, item.target, now, actions, repair=False)
            return
        if item.kind is ItemKind.LEG:
            if item.repairs < self.config.max_repairs:
                item.repairs += 1
                self._place(item, item.target - filled, now, actions, repair=True)
                actions.append(
                    RaiseAlert(
                        "BASKET_LEG_REPAIR",
                        AlertLevel.WARNING,
                        f"basket {self.basket.basket_id} leg {item.leg_index}: attempt "
                        f"{item.attempts[-2]} ended with {filled}/{item.target} filled; repairing the "
                        f"missing {item.target - filled} inside the slippage budget",
                    )
                )
                return
        elif len(item.attempts) < self.config.max_unwind_attempts:
            self._place(item, item.target - filled, now, actions, repair=False)
            return
        item.abandoned = True

    # -- orders ----------------------------------------------------------------------------------

    def _orders_of(self, item: _Item) -> list[Order]:
        return [
            order
            for order in self.orders
            if order.key.leg_index == item.leg_index and order.key.attempt in item.attempts
        ]

    def _filled(self, item: _Item) -> int:
        # Signed: a recovered leg may hold the orders of its unwind too, which take away from it.
        return sum(
            order.filled_qty if order.side is item.side else -order.filled_qty
            for order in self._orders_of(item)
        )

    def _place(
        self, item: _Item, quantity: int, now: datetime, actions: list[Action], *, repair: bool
    ) -> None:
        attempt = self._next_attempt[item.leg_index]
        self._next_attempt[item.leg_index] = attempt + 1
        item.attempts.append(attempt)
        tick = self.contract.tick_size
        touch = self._touches.get(item.instrument_key)
        mid = touch.mid if touch is not None else item.reference_price
        if item.kind is ItemKind.LEG and not repair:
            item.schedule = LegSchedule(item.side, item.urgency, mid, tick, now, self.config.fill)
            self._first_submission.setdefault(item.leg_index, (item.schedule.mid_at_submission, now))
            item.shown_step = 0
            item.attempt_ends_at = None
            price = (
                item.schedule.price(0, touch).price if touch is not None else _on_tick(mid, tick, item.side)
            )
        elif item.kind is ItemKind.LEG:
            # A repair: at the edge of the slippage budget against the first attempt's mid, resting until
            # the stage's deadline; if the market is beyond that, the basket unwinds instead.
            anchor = item.schedule.mid_at_submission if item.schedule is not None else mid
            budget = slippage_budget(anchor, tick, self.config.fill)
            limit = anchor + budget if item.side is Side.BUY else anchor - budget
            if touch is not None:
                marketable = price_at(
                    self.config.fill.max_reprices,
                    side=item.side,
                    touch=touch,
                    mid_at_submission=anchor,
                    tick=tick,
                    urgency=item.urgency,
                    config=self.config.fill,
                ).price
                limit = min(limit, marketable) if item.side is Side.BUY else max(limit, marketable)
            price = _on_tick(limit, tick, item.side)
            item.schedule = None
            assert self._stage is not None
            item.attempt_ends_at = self._stage.deadline
        else:
            # An unwind: a marketable limit inside the protection band, renewed after two urgent waits.
            if touch is not None:
                base = touch.ask if item.side is Side.BUY else touch.bid
            else:
                base = item.reference_price
            band = max(base * self.config.fill.protection_band_pct / _HUNDRED, tick)
            price = _on_tick(base + band if item.side is Side.BUY else base - band, tick, item.side)
            item.schedule = None
            item.attempt_ends_at = now + timedelta(seconds=2 * self.config.fill.wait_s[Urgency.URGENT])
        for slice_index, units in enumerate(
            slice_quantities(quantity, self.contract.freeze_quantity, self.basket.lot_size)
        ):
            key = OrderKey(self.basket.basket_id, item.leg_index, attempt, slice_index)
            self.orders.place(
                key, instrument_key=item.instrument_key, side=item.side, quantity=units, limit_price=price
            )
            actions.append(Place(key, item.instrument_key, item.side, units, price))

    def _reprice(self, item: _Item, orders: list[Order], now: datetime, actions: list[Action]) -> None:
        schedule = item.schedule
        touch = self._touches.get(item.instrument_key)
        if schedule is None or touch is None:
            return
        due = schedule.due_step(now)
        if due <= item.shown_step:
            return
        item.shown_step = due
        price = schedule.price(due, touch).price
        for order in orders:
            if order.key in self._unsent:
                # Not at the broker: it goes out at the new price when it is sent again.
                order.repriced(price)
            elif (
                order.broker_order_id is not None
                and order.status is not OrderStatus.UNKNOWN
                and order.limit_price != price
            ):
                actions.append(Modify(order.key, order.broker_order_id, price))

    def _unsent_order(self, order: Order, now: datetime, actions: list[Action], *, give_up: bool) -> None:
        if give_up:
            del self._unsent[order.key]
            order.withdraw_unsent(f"never sent: {order.message}" if order.message else "never sent")
            actions.append(Withdrawn(order.key))
            return
        if now >= self._unsent[order.key]:
            del self._unsent[order.key]
            actions.append(
                Place(order.key, order.instrument_key, order.side, order.quantity, order.limit_price)
            )

    def _cancel(self, order: Order, now: datetime, actions: list[Action]) -> None:
        asked = self._asked.setdefault(order.key, _Asked())
        if order.broker_order_id is None:
            # Nothing to cancel by id yet (an UNKNOWN submit, or one whose trades overtook its lost ack):
            # the broker's book names it.
            self._resolve_if_silent(order, now, actions, at_once=True)
            return
        if asked.cancel_at is None:
            asked.cancel_at = now
            actions.append(Cancel(order.key, order.broker_order_id))
            return
        if (now - asked.cancel_at).total_seconds() >= self.config.resolve_after_s:
            # Asked to cancel and heard nothing: the order may be silent; its book entry tells.
            asked.cancel_at = now
            actions.append(Cancel(order.key, order.broker_order_id))
            self._resolve_if_silent(order, now, actions, at_once=True)

    def _resolve_if_silent(
        self, order: Order, now: datetime, actions: list[Action], *, at_once: bool = False
    ) -> None:
        asked = self._asked.setdefault(order.key, _Asked())
        if asked.resolve_at is not None and (
            (now - asked.resolve_at).total_seconds() < self.config.resolve_after_s
        ):
            return
        if asked.resolve_at is None and not at_once:
            # The submit's answer was lost just now; give the update stream a moment first.
            asked.resolve_at = now - timedelta(seconds=self.config.resolve_after_s / 2)
            return
        asked.resolve_at = now
        actions.append(Resolve(order.key))

    # -- ending -------------------------------------------------------------------------------------

    def _net_by_leg(self) -> dict[int, int]:
        """Units each leg still holds in the leg's own direction, from every attempt (unwinds included)."""
        net = {leg.leg_index: 0 for leg in self.basket.legs}
        sides = {leg.leg_index: leg.side for leg in self.basket.legs}
        for order in self.orders:
            signed = order.filled_qty if order.side is sides[order.key.leg_index] else -order.filled_qty
            net[order.key.leg_index] += signed
        return net

    def _finish_abandoned(self, now: datetime, actions: list[Action], reason: str) -> None:
        net = self._net_by_leg()
        if not any(net.values()):
            status = BasketStatus.UNWOUND if self._unwinding else self._nothing_filled_status()
            self._end(status, reason, actions)
            return
        if self._unwinding or self.basket.purpose is IntentKind.EXIT:
            # Reversing a partial exit would re-open the risk the exit was sent to close; the buy-backs
            # ran first, so what remains of a failed exit is hedged, and an operator decides the rest.
            # The unwind itself failed: stop here. The buy-backs ran first, so what remains is hedged.
            what = "unwind incomplete" if self._unwinding else "exit incomplete"
            self._end(BasketStatus.STUCK, f"{what}: {reason}", actions)
            return
        self._unwinding = True
        self._cancel_requested = None  # the unwind runs even when the basket was cancelled
        legs = {leg.leg_index: leg for leg in self.basket.legs}
        unwind: list[_Item] = []
        for leg_index, units in net.items():
            if units == 0:
                continue
            leg = legs[leg_index]
            side = leg.side if units < 0 else (Side.SELL if leg.side is Side.BUY else Side.BUY)
            reference = self._avg_fill(leg_index, leg.side) or leg.limit_price
            unwind.append(
                _Item(
                    ItemKind.UNWIND,
                    leg_index,
                    leg.instrument_key,
                    side,
                    abs(units),
                    Urgency.URGENT,
                    reference,
                )
            )
        # Buy back shorts before selling wings: the same hedges-first rule as the basket itself.
        buys = [item for item in unwind if item.side is Side.BUY]
        sells = [item for item in unwind if item.side is Side.SELL]
        self._pending_stages = [stage for stage in (buys, sells) if stage]
        actions.append(
            RaiseAlert(
                "BASKET_UNWIND",
                AlertLevel.WARNING,
                f"basket {self.basket.basket_id}: {reason}; unwinding "
                + ", ".join(f"leg {i} {'+' if u > 0 else ''}{u}" for i, u in net.items() if u),
            )
        )

    def _nothing_filled_status(self) -> BasketStatus:
        if self._cancel_requested is not None or self._recovered is not None:
            return BasketStatus.CANCELLED
        return BasketStatus.REJECTED

    def _finish(self, now: datetime, actions: list[Action]) -> None:
        if self._unwinding:
            net = self._net_by_leg()
            status = BasketStatus.UNWOUND if not any(net.values()) else BasketStatus.STUCK
            self._end(status, "every filled leg reversed", actions)
        else:
            self._end(BasketStatus.FILLED, "every leg filled", actions)

    def _end(self, status: BasketStatus, message: str, actions: list[Action]) -> None:
        if status is BasketStatus.STUCK:
            actions.append(
                RaiseAlert(
                    "BASKET_STUCK",
                    AlertLevel.CRITICAL,
                    f"basket {self.basket.basket_id} is STUCK: {message}; positions remain "
                    f"{self._net_by_leg()} (hedged) and need an operator",
                )
            )
        self.outcome = BasketOutcome(status, self._leg_outcomes(), self.net_premium(), message)

    def _avg_fill(self, leg_index: int, side: Side) -> Decimal | None:
        units = 0
        notional = Decimal(0)
        for order in self.orders:
            if order.key.leg_index == leg_index and order.side is side and order.filled_qty:
                avg = order.avg_price
                assert avg is not None
                units += order.filled_qty
                notional += avg * order.filled_qty
        return notional / units if units else None

    def _leg_outcomes(self) -> list[LegOutcome]:
        net = self._net_by_leg()
        outcomes: list[LegOutcome] = []
        for leg in sorted(self.basket.legs, key=lambda leg: leg.leg_index):
            attempts = sorted({o.key.attempt for o in self.orders if o.key.leg_index == leg.leg_index})
            last = (
                [o for o in self.orders if o.key.leg_index == leg.leg_index and o.key.attempt == attempts[-1]]
                if attempts
                else []
            )
            status = _combined_status(last) if last else OrderStatus.CANCELLED
            held = max(net[leg.leg_index], 0)
            avg = self._avg_fill(leg.leg_index, leg.side) if held else None
            first = self._first_submission.get(leg.leg_index)
            mid = first[0] if first is not None else None
            lost = (
                slippage(leg.side, avg, mid).quantize(_SLIPPAGE_PLACES)
                if avg is not None and mid is not None
                else None
            )
            outcomes.append(
                LegOutcome(
                    leg.leg_index,
                    last[0].client_order_id if last else leg.client_order_id,
                    max(len(attempts), 1),
                    status,
                    held,
                    avg,
                    mid,
                    lost,
                    self._time_to_fill(leg.leg_index, leg.side, leg.quantity, held),
                )
            )
        return outcomes

    def _time_to_fill(self, leg_index: int, side: Side, quantity: int, held: int) -> float | None:
        first = self._first_submission.get(leg_index)
        if first is None or held < quantity:
            return None
        fills = [
            trade.ts_event
            for order in self.orders
            if order.key.leg_index == leg_index and order.side is side
            for trade in order.trades.values()
        ]
        if not fills:
            return None  # filled by reports alone: when is not known
        return max((max(fills) - first[1]).total_seconds(), 0.0)

    def net_premium(self) -> Decimal:
        total = Decimal(0)
        for order in self.orders:
            avg = order.avg_price
            if order.filled_qty and avg is not None:
                notional = avg * order.filled_qty
                total += notional if order.side is Side.SELL else -notional
        return total

    def positions(self) -> dict[str, int]:
        """Signed units per instrument from the trades alone."""
        return self.orders.positions()

    def touches(self) -> Mapping[str, Touch]:
        return dict(self._touches)


def _on_tick(price: Decimal, tick: Decimal, side: Side) -> Decimal:
    # Buys round down and sells up: never a worse price than computed.
    ticks = (price / tick).to_integral_value(rounding=ROUND_FLOOR if side is Side.BUY else ROUND_CEILING)
    return max(ticks, Decimal(1)) * tick


def _combined_status(orders: list[Order]) -> OrderStatus:
    statuses = {order.status for order in orders}
    if len(statuses) == 1:
        return statuses.pop()
    if any(order.live for order in orders):
        return OrderStatus.PARTIALLY_FILLED if any(o.filled_qty for o in orders) else OrderStatus.OPEN
    if any(order.filled_qty for order in orders):
        return OrderStatus.PARTIALLY_FILLED if OrderStatus.FILLED not in statuses else OrderStatus.FILLED
    return OrderStatus.CANCELLED if OrderStatus.CANCELLED in statuses else OrderStatus.REJECTED
