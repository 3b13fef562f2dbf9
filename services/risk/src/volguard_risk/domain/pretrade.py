"""Pre-trade checks: every rule an intent must pass, each with its value and limit (issue 16).

An intent is approved only when every check passes; the decision lists all of them, passed or not, so a
rejection says which numbers broke which limits. The checks, in order:

- trading_state: what the state table allows the intent's action;
- market_window: event time inside the dated session's entry window;
- feed_fresh / vol_fresh: feed and VolSnapshot age in event time (s) vs their staleness limits;
- duplicate_intent: an intent id is decided once;
- valid_until: event time vs the intent's valid_until;
- leg_prices_fresh: the oldest leg quote's age (s), and every leg limit within a tolerance of its mid;
- per_trade_budget: max loss (Rs; priced by stress when the intent gives none) vs the bucket's budget;
- bucket_capital: capital to reserve (the margin the trade adds, Rs) vs the bucket's free capital;
- delta / gamma / vega / theta: the book's Greeks after the trade, in limit units, vs the limits;
- margin: SPAN + exposure of the book with the trade (Rs) vs funds available;
- stress: worst loss of book + trade over the gap and black-swan scenarios vs the stress budget (Rs);
- daily_loss_headroom: the trade's max loss vs the daily loss limit less today's loss (Rs);
- order_budget: orders after freeze slicing plus those already sent in the window vs the rate limits.
- assessment: fails alone, with the error, when a figure cannot be computed (the intent is rejected).

Exits (strategy's management exits) reduce risk: they are checked for state, duplicates, validity,
that they close what the trade holds, and the order budget; Greeks, margin and stress are not asked of
them, because refusing to close a position on a limit would make the limit the cause of the loss.

Pure: the caller passes the book, market and clocks it knows; an unknown figure fails its check with
"unknown", it is never read as zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from volguard_common.events import (
    BasketLeg,
    ExecuteBasket,
    IntentKind,
    OrderLeg,
    RiskCheck,
    RiskDecision,
    Side,
    TradeIntent,
    Urgency,
    client_order_id,
)
from volguard_common.quant.book_greeks import BookGreeks, book_greeks
from volguard_common.quant.margin import MarginLeg, MarginParameters, ScanRanges, portfolio_margin
from volguard_common.quant.stress import PRE_TRADE_SCENARIOS, OptionLeg, StressScenario, stress_pnl
from volguard_common.settings import Settings
from volguard_risk.domain.trading_state import Action, TradingStateMachine

HUNDRED = Decimal(100)
RUPEE = Decimal(1)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits in the units the checks use (see `volguard_common.quant.book_greeks` for Greeks)."""

    account: Decimal = Decimal("2000000")
    max_delta: float = 200.0  # NIFTY units
    max_gamma: float = 500.0  # change of that delta for a 1 % move
    max_vega: float = 1000.0  # Rs per vol point
    min_theta: float = -1000.0  # Rs per day: the book may pay at most this much for time
    stress_budget_pct: Decimal = Decimal(5)
    daily_loss_limit_pct: Decimal = Decimal(3)
    # Per-trade risk budget in percent of the bucket's allocation (strategy sizes to the same figures).
    per_trade_budget_pct: Mapping[str, Decimal] = field(
        default_factory=lambda: {"WEEKLY": Decimal(1), "MONTHLY": Decimal(1), "INTRADAY": Decimal(2)}
    )
    feed_stale_after: timedelta = timedelta(seconds=10)
    vol_stale_after: timedelta = timedelta(seconds=60)
    quote_stale_after: timedelta = timedelta(seconds=10)
    # A leg's limit further than this share of its mid from the latest mid was priced on a market that
    # has moved on.
    leg_price_tolerance: Decimal = Decimal("0.25")
    orders_per_minute: int = 500
    orders_per_30_minutes: int = 2000
    scenarios: tuple[StressScenario, ...] = PRE_TRADE_SCENARIOS

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskLimits:
        return cls(
            account=settings.account_size,
            max_delta=settings.max_delta,
            max_gamma=settings.max_gamma,
            max_vega=settings.max_vega,
            daily_loss_limit_pct=settings.daily_loss_limit_pct,
            feed_stale_after=timedelta(seconds=settings.feed_stale_after_s),
            orders_per_minute=settings.upstox_orders_per_minute,
            orders_per_30_minutes=settings.upstox_orders_per_30_minutes,
        )

    @property
    def stress_budget(self) -> Decimal:
        return self.account * self.stress_budget_pct / HUNDRED

    @property
    def daily_loss_limit(self) -> Decimal:
        return self.account * self.daily_loss_limit_pct / HUNDRED


@dataclass(frozen=True, slots=True)
class LegMarket:
    """What the latest chain says about one instrument: mid (Rs), when, and what prices it."""

    mid: Decimal
    quoted_at: datetime
    vol: float | None  # None: no vol reproduces the mid (or no forward to solve it on)
    forward: float | None  # None: the snapshot carries none and parity could not give one
    t: float  # years to expiry
    expiry: date


@dataclass(frozen=True, slots=True)
class MarketView:
    """Event-time facts about the market the checks need."""

    now: datetime
    spot: float | None  # None: no chain yet; Greeks and margin are then unknown
    entries_open: bool
    window: str  # e.g. "entries 09:30-15:25 IST on 2026-12-07", for the decision's message
    feed_at: datetime | None
    vol_at: datetime | None
    legs: Mapping[str, LegMarket]
    scan_ranges: ScanRanges | None  # from the underlying's EWMA vol; None while unknown
    freeze_quantity: int | None  # from the instrument master; None while unknown


@dataclass(frozen=True, slots=True)
class BookLeg:
    """One open position of the book, for Greeks, margin and stress."""

    instrument_key: str
    strike: float
    is_call: bool
    quantity: int  # signed units


@dataclass(frozen=True, slots=True)
class Context:
    """Everything but the market: the book, the bucket, the day and the order windows."""

    book: Sequence[BookLeg]
    bucket_allocated: Decimal
    bucket_free: Decimal
    margin_available: Decimal
    day_pnl: Decimal | None
    orders_last_minute: int
    orders_last_30_minutes: int
    seen_intent: bool
    # For an EXIT: the signed units the trade holds per instrument.
    trade_holds: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One rule: exact Decimal for rupees, floats for Greeks, with the unit the numbers are in."""

    name: str
    passed: bool
    value: Decimal | float | None
    limit: Decimal | float | None
    unit: str
    message: str

    def event(self) -> RiskCheck:
        return RiskCheck(
            name=self.name,
            passed=self.passed,
            value=None if self.value is None else float(self.value),
            limit=None if self.limit is None else float(self.limit),
            message=self.message,
            unit=self.unit,
            exact_value=self.value if isinstance(self.value, Decimal) else None,
            exact_limit=self.limit if isinstance(self.limit, Decimal) else None,
        )


@dataclass(frozen=True, slots=True)
class Assessment:
    """The checks, and the figures an approval needs (capital to reserve, the trade's Greeks)."""

    checks: tuple[Check, ...]
    reserve: Decimal | None
    greeks_after: BookGreeks | None

    @property
    def approved(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _signed(leg: OrderLeg) -> int:
    return leg.quantity if leg.side is Side.BUY else -leg.quantity


def _option_legs(book: Sequence[BookLeg], market: MarketView) -> list[OptionLeg] | None:
    legs: list[OptionLeg] = []
    for leg in book:
        quote = market.legs.get(leg.instrument_key)
        if quote is None or quote.vol is None or quote.forward is None:
            return None
        legs.append(
            OptionLeg(leg.strike, quote.t, leg.is_call, float(leg.quantity), quote.vol, quote.forward)
        )
    return legs


def _margin_legs(book: Sequence[BookLeg], market: MarketView) -> list[MarginLeg] | None:
    legs: list[MarginLeg] = []
    for leg in book:
        quote = market.legs.get(leg.instrument_key)
        if quote is None or quote.vol is None or quote.forward is None:
            return None
        legs.append(
            MarginLeg(
                leg.strike, quote.expiry, leg.is_call, float(leg.quantity), quote.vol, quote.forward, quote.t
            )
        )
    return legs


def rupees(value: float) -> Decimal:
    """A float figure (margin, stress) as whole rupees, rounded up: a requirement is never understated."""
    return Decimal(repr(value)).quantize(RUPEE, rounding=ROUND_CEILING)


def orders_needed(intent: TradeIntent, freeze_quantity: int) -> int:
    """Exchange orders the basket needs once each leg is sliced at the freeze quantity (whole lots)."""
    per_order = (freeze_quantity // intent.lot_size) * intent.lot_size
    if per_order == 0:
        raise ValueError(f"freeze quantity {freeze_quantity} is below one lot of {intent.lot_size}")
    return sum(math.ceil(leg.quantity / per_order) for leg in intent.legs)


def assess(
    intent: TradeIntent,
    state: TradingStateMachine,
    market: MarketView,
    context: Context,
    limits: RiskLimits,
    margin_parameters: MarginParameters,
) -> Assessment:
    """Every check of the table above, for one intent; a figure that cannot be computed (a leg of the
    book past its expiry, a number the kernels refuse) is a failed check that says why.

    An error here would fail the message: the intent is retried, dead-lettered and never answered, and
    strategy waits on a decision that does not come. A rejection with the reason is the answer a risk
    engine owes when it cannot vouch for the numbers.
    """
    try:
        return _assess(intent, state, market, context, limits, margin_parameters)
    except (ValueError, ArithmeticError) as error:
        failed = Check("assessment", False, None, None, "", f"the checks could not be computed: {error}")
        return Assessment((failed,), None, None)


def _assess(
    intent: TradeIntent,
    state: TradingStateMachine,
    market: MarketView,
    context: Context,
    limits: RiskLimits,
    margin_parameters: MarginParameters,
) -> Assessment:
    now = market.now
    checks: list[Check] = []
    action = Action.ENTRY if intent.kind is IntentKind.ENTRY else Action.MANAGEMENT_EXIT
    allowed = state.allows(action)
    checks.append(
        Check(
            "trading_state",
            allowed,
            None,
            None,
            "",
            f"{state.state.value} {'allows' if allowed else 'does not allow'} {action.value}",
        )
    )
    checks.append(
        Check(
            "duplicate_intent",
            not context.seen_intent,
            None,
            None,
            "",
            f"intent {intent.intent_id} {'was already decided' if context.seen_intent else 'is new'}",
        )
    )
    checks.append(
        Check(
            "valid_until",
            now <= intent.valid_until,
            None,
            None,
            "",
            f"event time {now.isoformat()} vs valid until {intent.valid_until.isoformat()}",
        )
    )
    checks.append(_leg_prices(intent, market, limits))
    checks.append(_order_budget(intent, market, context, limits))
    if intent.kind is IntentKind.EXIT:
        checks.append(_closes_only(intent, context))
        return Assessment(tuple(checks), None, None)

    checks.append(
        Check(
            "market_window",
            market.entries_open,
            None,
            None,
            "",
            f"{now.isoformat()} {'inside' if market.entries_open else 'outside'} {market.window}",
        )
    )
    checks.append(_age("feed_fresh", now, market.feed_at, limits.feed_stale_after, "the feed"))
    checks.append(_age("vol_fresh", now, market.vol_at, limits.vol_stale_after, "the VolSnapshot"))

    trade_book = [
        BookLeg(leg.instrument_key, leg.strike, leg.option_type.value == "CE", _signed(leg))
        for leg in intent.legs
    ]
    after_book = list(context.book) + trade_book
    trade_legs = _option_legs(trade_book, market)
    after_legs = _option_legs(after_book, market)

    # Stress of the trade alone prices an unbounded max loss; of the book with it, the stress budget.
    trade_worst = _worst_loss(trade_legs, limits)
    max_loss = intent.max_loss if intent.max_loss is not None else trade_worst
    checks.append(
        _at_most(
            "per_trade_budget",
            max_loss,
            context.bucket_allocated * limits.per_trade_budget_pct[intent.bucket.value] / HUNDRED,
            "Rs",
            "max loss" if intent.max_loss is not None else "max loss priced by stress (strategy gave none)",
        )
    )
    margin_before = _margin(context.book, market, margin_parameters)
    margin_after = _margin(after_book, market, margin_parameters)
    reserve = (
        None if margin_before is None or margin_after is None else max(margin_after - margin_before, RUPEE)
    )
    checks.append(_at_most("bucket_capital", reserve, context.bucket_free, "Rs", "margin the trade adds"))

    greeks_after: BookGreeks | None = None
    if after_legs is not None and market.spot is not None:
        greeks_after = book_greeks(after_legs, market.spot)
    checks.extend(_greek_checks(greeks_after, limits))
    checks.append(
        _at_most("margin", margin_after, context.margin_available, "Rs", "SPAN + exposure with the trade")
    )
    checks.append(
        _at_most("stress", _worst_loss(after_legs, limits), limits.stress_budget, "Rs", "worst scenario loss")
    )
    headroom = None if context.day_pnl is None else limits.daily_loss_limit + min(context.day_pnl, Decimal(0))
    checks.append(
        _at_most("daily_loss_headroom", max_loss, headroom, "Rs", "max loss vs what the day has left")
    )
    return Assessment(tuple(checks), reserve, greeks_after)


def _age(name: str, now: datetime, at: datetime | None, limit: timedelta, what: str) -> Check:
    if at is None:
        return Check(name, False, None, limit.total_seconds(), "s", f"{what}: no data yet (unknown age)")
    age = (now - at).total_seconds()
    return Check(name, age <= limit.total_seconds(), age, limit.total_seconds(), "s", f"{what} age")


def _at_most(name: str, value: Decimal | None, limit: Decimal | None, unit: str, what: str) -> Check:
    if value is None or limit is None:
        return Check(name, False, value, limit, unit, f"{what}: unknown")
    return Check(name, value <= limit, value, limit, unit, f"{what} {value} {unit} vs limit {limit} {unit}")


def _greek_checks(greeks: BookGreeks | None, limits: RiskLimits) -> list[Check]:
    if greeks is None:
        return [
            Check(name, False, None, None, unit, "a leg has no vol/forward to price it: unknown")
            for name, unit in (("delta", "NIFTY units"), ("gamma", "delta per 1 %"), ("vega", "Rs/vol pt"))
        ] + [Check("theta", False, None, limits.min_theta, "Rs/day", "unknown")]
    rows = (
        ("delta", greeks.delta, limits.max_delta, "NIFTY units"),
        ("gamma", greeks.gamma, limits.max_gamma, "delta per 1 %"),
        ("vega", greeks.vega, limits.max_vega, "Rs/vol pt"),
    )
    checks = [
        Check(
            name,
            abs(value) <= limit,
            value,
            limit,
            unit,
            f"book {name} after the trade {value:.1f} {unit}, limit ±{limit:g}",
        )
        for name, value, limit, unit in rows
    ]
    checks.append(
        Check(
            "theta",
            greeks.theta >= limits.min_theta,
            greeks.theta,
            limits.min_theta,
            "Rs/day",
            f"book theta after the trade {greeks.theta:.1f} Rs/day, at least {limits.min_theta:g}",
        )
    )
    return checks


def _worst_loss(legs: Sequence[OptionLeg] | None, limits: RiskLimits) -> Decimal | None:
    if legs is None:
        return None
    worst = min((s.pnl for s in stress_pnl(legs, limits.scenarios)), default=0.0)
    return rupees(max(-worst, 0.0))


def _margin(book: Sequence[BookLeg], market: MarketView, params: MarginParameters) -> Decimal | None:
    legs = _margin_legs(book, market)
    if legs is None or market.spot is None or market.scan_ranges is None:
        return None
    return rupees(portfolio_margin(legs, market.spot, market.scan_ranges, market.now.date(), params).total)


def _leg_prices(intent: TradeIntent, market: MarketView, limits: RiskLimits) -> Check:
    stale: list[str] = []
    ages: list[float] = []
    for leg in intent.legs:
        quote = market.legs.get(leg.instrument_key)
        if quote is None:
            stale.append(f"{leg.instrument_key} has no quote")
            continue
        age = (market.now - quote.quoted_at).total_seconds()
        ages.append(age)
        if age > limits.quote_stale_after.total_seconds():
            stale.append(f"{leg.instrument_key} quoted {age:.0f} s ago")
        if abs(leg.limit_price - quote.mid) > quote.mid * limits.leg_price_tolerance:
            stale.append(f"{leg.instrument_key} limit {leg.limit_price} vs mid {quote.mid}")
    oldest = max(ages) if ages else None
    message = "; ".join(stale) if stale else "every leg priced on the latest chain"
    return Check(
        "leg_prices_fresh", not stale, oldest, limits.quote_stale_after.total_seconds(), "s", message
    )


def _order_budget(intent: TradeIntent, market: MarketView, context: Context, limits: RiskLimits) -> Check:
    if market.freeze_quantity is None:
        return Check(
            "order_budget", False, None, limits.orders_per_minute, "orders/min", "freeze quantity unknown"
        )
    needed = orders_needed(intent, market.freeze_quantity)
    minute = context.orders_last_minute + needed
    half_hour = context.orders_last_30_minutes + needed
    passed = minute <= limits.orders_per_minute and half_hour <= limits.orders_per_30_minutes
    return Check(
        "order_budget",
        passed,
        minute,
        limits.orders_per_minute,
        "orders/min",
        f"{needed} orders after freeze slicing; {minute}/{limits.orders_per_minute} a minute, "
        f"{half_hour}/{limits.orders_per_30_minutes} per 30 minutes",
    )


def _closes_only(intent: TradeIntent, context: Context) -> Check:
    holds = context.trade_holds
    if holds is None:
        return Check("closes_only", False, None, None, "", f"trade {intent.trade_id} is not in the book")
    wrong = [
        leg.instrument_key
        for leg in intent.legs
        if holds.get(leg.instrument_key, 0) == 0
        or (holds[leg.instrument_key] > 0) == (_signed(leg) > 0)
        or abs(_signed(leg)) > abs(holds[leg.instrument_key])
    ]
    return Check(
        "closes_only",
        not wrong,
        None,
        None,
        "",
        f"legs that do not close trade {intent.trade_id}: {wrong}" if wrong else "every leg closes the trade",
    )


# ---- decisions and baskets --------------------------------------------------------------------------
def basket_id_for(intent_id: str) -> str:
    """One intent, one basket id, the same after a failover (so a decision is never doubled)."""
    return f"bk-{intent_id}"[:64]


def execute_basket(
    intent: TradeIntent, basket_id: str, *, at: datetime, source: str, trade_id: str | None
) -> ExecuteBasket:
    """The approved intent as one basket: hedges (BUY legs) sequenced before the SELL legs."""
    legs = [
        BasketLeg(
            instrument_key=leg.instrument_key,
            expiry=leg.expiry,
            strike=leg.strike,
            option_type=leg.option_type,
            side=leg.side,
            quantity=leg.quantity,
            limit_price=leg.limit_price,
            leg_index=index,
            sequence=0 if leg.side is Side.BUY else 1,
            client_order_id=client_order_id(basket_id, index, 0),
        )
        for index, leg in enumerate(intent.legs)
    ]
    return ExecuteBasket(
        ts_event=at,
        source=source,
        correlation_id=intent.correlation_id,
        basket_id=basket_id,
        intent_id=intent.intent_id,
        purpose=intent.kind,
        exit_reason=intent.exit_reason,
        trade_id=trade_id if intent.kind is IntentKind.EXIT else None,
        bucket=intent.bucket,
        structure=intent.structure,
        lot_size=intent.lot_size,
        legs=legs,
        urgency=Urgency.NORMAL,
        reason=intent.reason,
    )


def decision(
    intent: TradeIntent, assessment: Assessment, *, at: datetime, source: str
) -> tuple[RiskDecision, ExecuteBasket | None]:
    """The verdict every intent gets, and the basket when it is approved."""
    # A structure's size is its largest leg in lots (a 2-lot condor has four legs of 2 lots each).
    lots = max(leg.quantity for leg in intent.legs) // intent.lot_size
    if assessment.approved:
        basket_id = basket_id_for(intent.intent_id)
        basket = execute_basket(intent, basket_id, at=at, source=source, trade_id=intent.trade_id)
        verdict = RiskDecision(
            ts_event=at,
            source=source,
            correlation_id=intent.correlation_id,
            intent_id=intent.intent_id,
            approved=True,
            reasons=["every check passed"],
            checks=[c.event() for c in assessment.checks],
            requested_lots=lots,
            approved_lots=lots,
            basket_id=basket_id,
        )
        return verdict, basket
    verdict = RiskDecision(
        ts_event=at,
        source=source,
        correlation_id=intent.correlation_id,
        intent_id=intent.intent_id,
        approved=False,
        reasons=[f"{c.name}: {c.message}" for c in assessment.failed],
        checks=[c.event() for c in assessment.checks],
        requested_lots=lots,
        approved_lots=0,
    )
    return verdict, None


__all__ = [
    "Assessment",
    "BookLeg",
    "Check",
    "Context",
    "LegMarket",
    "MarketView",
    "RiskLimits",
    "assess",
    "decision",
    "execute_basket",
    "orders_needed",
]
