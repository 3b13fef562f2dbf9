"""Trading events: proposals (st.intents), risk decisions (rk.decisions), execution commands
(ex.commands) and execution reports (ex.reports).

Following NautilusTrader, commands (ExecuteBasket, CancelOrders, FlattenAll), events (Fill) and
venue reports (OrderUpdate, BasketResult) are different messages with different names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from volguard_common import streams
from volguard_common.events._base import (
    Bucket,
    EventBase,
    Greeks,
    Identifier,
    InstrumentKey,
    IstDatetime,
    LotSize,
    Money,
    Name,
    NonNegativeFloat,
    NonNegativeMoney,
    OptionType,
    Part,
    PositiveFloat,
    PositiveMoney,
    PositiveQuantity,
    Quantity,
    Side,
    Text,
)

# Upstox order tags are at most 20 characters.
CLIENT_ORDER_ID_LENGTH = 20
_CLIENT_ORDER_ID_PREFIX = "vg"
MAX_LEGS = 8
LegIndex = Annotated[int, Field(ge=0, lt=MAX_LEGS)]
Attempt = Annotated[int, Field(ge=0, le=99)]
ClientOrderId = Annotated[str, Field(min_length=1, max_length=CLIENT_ORDER_ID_LENGTH)]


def client_order_id(basket_id: str, leg_index: int, attempt: int) -> str:
    """The deterministic client order id (Upstox tag) of one attempt at one leg of a basket.

    "vg" + 18 hex digits of BLAKE2b over (basket, leg, attempt): 20 characters, alphanumeric, 72 bits,
    so a collision across every order VolGuard will ever place is negligible. Determinism is the point:
    after a crash the same (basket, leg, attempt) maps to the same tag, so execution finds the order in
    the broker's book instead of sending it twice.
    """
    if not basket_id:
        raise ValueError("basket_id must not be empty")
    if not 0 <= leg_index < MAX_LEGS:
        raise ValueError(f"leg_index {leg_index} outside 0..{MAX_LEGS - 1}")
    if not 0 <= attempt <= 99:
        raise ValueError(f"attempt {attempt} outside 0..99")
    digest = hashlib.blake2b(f"{basket_id}\x1f{leg_index}\x1f{attempt}".encode(), digest_size=9).hexdigest()
    return f"{_CLIENT_ORDER_ID_PREFIX}{digest}"


class Structure(StrEnum):
    """What a trade is, in the trader's words. Every value of schema 1 is kept so older events read;
    the values after CUSTOM came with schema 2 of the events that carry a structure (TradeIntent,
    ExecuteBasket, PortfolioSnapshot, StrategyRecommendations)."""

    IRON_CONDOR = "IRON_CONDOR"
    IRON_FLY = "IRON_FLY"
    # Short strangle and short straddle: undefined risk, proposed only when a setting enables them.
    STRANGLE = "STRANGLE"
    STRADDLE = "STRADDLE"
    CREDIT_SPREAD = "CREDIT_SPREAD"
    DEBIT_SPREAD = "DEBIT_SPREAD"
    CALENDAR = "CALENDAR"
    # Risk-forced exits of an arbitrary set of positions.
    CUSTOM = "CUSTOM"
    # Schema 2.
    DEFENSIVE_IRON_CONDOR = "DEFENSIVE_IRON_CONDOR"  # shorts and wings further out, around events
    BULL_PUT_SPREAD = "BULL_PUT_SPREAD"
    BEAR_CALL_SPREAD = "BEAR_CALL_SPREAD"
    DIAGONAL = "DIAGONAL"
    # A hedge added to an open trade (an ADJUST intent's legs).
    HEDGE = "HEDGE"
    # Strategy's decision not to trade: it appears in the journal and recommendations, never in an intent.
    WAIT = "WAIT"


# Structures whose loss at expiry has no bound: sized on the stress grid, proposed only when enabled.
UNDEFINED_RISK_STRUCTURES = frozenset({Structure.STRANGLE, Structure.STRADDLE})


class IntentKind(StrEnum):
    ENTRY = "ENTRY"
    EXIT = "EXIT"
    # Schema 2: a hedge for an open trade (buy a protective option, roll the untested side). Its legs
    # belong to `trade_id`; its capital is charged to the intraday bucket.
    ADJUST = "ADJUST"


class ExitReason(StrEnum):
    PROFIT_TARGET = "PROFIT_TARGET"
    STOP_LOSS = "STOP_LOSS"
    GREEK_STOP = "GREEK_STOP"
    REGIME_CHANGE = "REGIME_CHANGE"
    TIME_EXIT = "TIME_EXIT"
    DAILY_LOSS = "DAILY_LOSS"
    HARD_STOP = "HARD_STOP"
    KILL_SWITCH = "KILL_SWITCH"
    EXPIRY_FLATTEN = "EXPIRY_FLATTEN"
    EOD_FLATTEN = "EOD_FLATTEN"
    OPERATOR = "OPERATOR"


class Urgency(StrEnum):
    PASSIVE = "PASSIVE"  # work the order at or inside mid
    NORMAL = "NORMAL"
    URGENT = "URGENT"  # forced exits: cross the spread within the limit


class OrderLeg(Part):
    """One option leg. Quantity in units (lots × lot size); limit price in rupees per unit."""

    instrument_key: InstrumentKey
    expiry: date
    strike: PositiveFloat
    option_type: OptionType
    side: Side
    quantity: PositiveQuantity
    limit_price: PositiveMoney


def _check_lot_multiples(owner: str, legs: Sequence[OrderLeg], lot_size: int) -> None:
    for i, leg in enumerate(legs):
        if leg.quantity % lot_size:
            raise ValueError(
                f"{owner}: leg {i} quantity {leg.quantity} is not a multiple of lot_size {lot_size}"
            )


Probability = Annotated[float, Field(ge=0, le=1)]


class IntentPricing(Part):
    """What strategy's model says of a proposal, for the whole quantity (rupees) unless said otherwise.

    Probabilities come from the risk-neutral density of the expiry's fitted SABR smile (Breeden-
    Litzenberger), not from a flat-vol normal. `expected_value` is the payoff's expectation under that
    density plus the net premium, less `costs` (the charges schedule, a round trip at the leg limits).
    """

    max_profit: NonNegativeMoney | None  # None: unbounded (a calendar's far leg can be worth more)
    breakevens: list[PositiveFloat]
    probability_of_profit: Probability
    # Of NIFTY touching any short strike before expiry (reflection principle on the smile's density).
    probability_of_touch: Probability | None
    expected_value: Money
    costs: NonNegativeMoney
    margin_required: NonNegativeMoney
    # How max loss was found: "expiry payoff", "stress grid" (undefined risk) or "near expiry, far leg
    # on the smile" (calendars and diagonals).
    max_loss_basis: Name


class TradeIntent(EventBase):
    """Strategy's proposal. Only risk turns it into orders.

    Schema 2 added ADJUST intents, the structures after CUSTOM, `pricing` and `reasons` (the why of
    every choice, one line each); all default so schema 1 payloads read as "not said".
    """

    STREAM: ClassVar[str] = streams.ST_INTENTS.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["TradeIntent"] = "TradeIntent"
    schema_version: int = Field(default=2, ge=1)

    intent_id: Identifier
    kind: IntentKind
    exit_reason: ExitReason | None = None
    # The risk-ledger trade an EXIT closes or an ADJUST hedges; None for entries.
    trade_id: Identifier | None = None
    bucket: Bucket
    structure: Structure
    lot_size: LotSize
    legs: Annotated[list[OrderLeg], Field(min_length=1, max_length=MAX_LEGS)]
    # Net premium in rupees at the leg limits: positive is a credit received, negative a debit paid.
    expected_credit: Money
    # Worst-case loss in rupees at expiry; None means unbounded (naked short), which risk must price itself.
    max_loss: NonNegativeMoney | None
    greeks: Greeks | None = None
    # After this exchange time the market has moved on; risk rejects the intent.
    valid_until: IstDatetime
    reason: Text
    pricing: IntentPricing | None = None
    reasons: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TradeIntent:
        if self.kind is IntentKind.EXIT and (self.exit_reason is None or self.trade_id is None):
            raise ValueError("TradeIntent: an EXIT needs exit_reason and trade_id")
        if self.kind is IntentKind.ENTRY and (self.exit_reason is not None or self.trade_id is not None):
            raise ValueError("TradeIntent: an ENTRY has no exit_reason or trade_id")
        if self.kind is IntentKind.ADJUST and (self.exit_reason is not None or self.trade_id is None):
            raise ValueError("TradeIntent: an ADJUST names the trade it hedges and has no exit_reason")
        if self.structure is Structure.WAIT:
            raise ValueError("TradeIntent: WAIT is a decision not to trade, never an intent")
        if self.valid_until < self.ts_event:
            raise ValueError("TradeIntent: valid_until is before ts_event")
        _check_lot_multiples("TradeIntent", self.legs, self.lot_size)
        return self


class RiskCheck(Part):
    """One rule risk evaluated. value/limit are None for checks without a number (e.g. trading state).

    Rupee figures (capital, margin, stress, loss headroom) also travel exact in `exact_value` /
    `exact_limit` (Decimal, serialised as strings), with `unit` naming what the numbers are in
    (RiskDecision v2); a v1 decision has neither.
    """

    name: Name
    passed: bool
    value: float | None = None
    limit: float | None = None
    message: Text = ""
    unit: Text = ""
    exact_value: Money | None = None
    exact_limit: Money | None = None


class RiskDecision(EventBase):
    """Risk's verdict on every intent, approved or not."""

    STREAM: ClassVar[str] = streams.RK_DECISIONS.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["RiskDecision"] = "RiskDecision"
    schema_version: int = Field(default=2, ge=1)

    intent_id: Identifier
    approved: bool
    reasons: list[Text]
    checks: list[RiskCheck]
    requested_lots: Quantity
    approved_lots: Quantity
    # Per-leg units after sizing, aligned with the intent's legs; None when approved as requested
    # or rejected.
    adjusted_quantities: list[PositiveQuantity] | None = None
    # The ExecuteBasket issued for an approved intent.
    basket_id: Identifier | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RiskDecision:
        if self.approved:
            if self.basket_id is None or self.approved_lots == 0:
                raise ValueError("RiskDecision: an approval needs a basket_id and approved_lots > 0")
            if self.approved_lots > self.requested_lots:
                raise ValueError("RiskDecision: approved_lots exceeds requested_lots")
        else:
            if self.basket_id is not None or self.approved_lots != 0 or self.adjusted_quantities is not None:
                raise ValueError("RiskDecision: a rejection has no basket, lots or quantities")
            if not self.reasons:
                raise ValueError("RiskDecision: a rejection needs at least one reason")
        return self


class BasketLeg(OrderLeg):
    """A leg to execute. `sequence` orders execution: legs with a lower sequence complete first;
    equal sequences may go in parallel."""

    leg_index: LegIndex
    sequence: Quantity
    client_order_id: ClientOrderId  # of attempt 0; retries derive client_order_id(basket, leg, n)


class ExecuteBasket(EventBase):
    """Risk's order to execution: place these legs as one all-or-nothing basket.

    Hedges first, always: every BUY leg has a lower sequence than every SELL leg. On entry that buys
    the wings before selling the body (never naked, and the margin benefit applies); on exit it buys
    back the shorts before selling the wings.
    """

    STREAM: ClassVar[str] = streams.EX_COMMANDS.name
    # Schema 2: ADJUST purpose and the structures after CUSTOM (see Structure).
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["ExecuteBasket"] = "ExecuteBasket"
    schema_version: int = Field(default=2, ge=1)

    basket_id: Identifier
    intent_id: Identifier | None  # None for risk-forced exits
    purpose: IntentKind
    exit_reason: ExitReason | None = None
    trade_id: Identifier | None = None
    bucket: Bucket
    structure: Structure
    lot_size: LotSize
    legs: Annotated[list[BasketLeg], Field(min_length=1, max_length=MAX_LEGS)]
    urgency: Urgency
    reason: Text

    @model_validator(mode="after")
    def _consistent(self) -> ExecuteBasket:
        indices = [leg.leg_index for leg in self.legs]
        if sorted(indices) != list(range(len(self.legs))):
            raise ValueError(
                f"ExecuteBasket: leg_index values must be 0..{len(self.legs) - 1}, got {indices}"
            )
        for leg in self.legs:
            expected = client_order_id(self.basket_id, leg.leg_index, 0)
            if leg.client_order_id != expected:
                raise ValueError(
                    f"ExecuteBasket: leg {leg.leg_index} client_order_id {leg.client_order_id!r} is not "
                    f"client_order_id(basket_id, {leg.leg_index}, 0) = {expected!r}"
                )
        buys = [leg.sequence for leg in self.legs if leg.side is Side.BUY]
        sells = [leg.sequence for leg in self.legs if leg.side is Side.SELL]
        if buys and sells and max(buys) >= min(sells):
            raise ValueError(
                "ExecuteBasket: every BUY leg must be sequenced before every SELL leg (hedges first)"
            )
        if self.purpose is IntentKind.EXIT and (self.exit_reason is None or self.trade_id is None):
            raise ValueError("ExecuteBasket: an EXIT needs exit_reason and trade_id")
        if self.purpose is IntentKind.ENTRY and (self.exit_reason is not None or self.trade_id is not None):
            raise ValueError("ExecuteBasket: an ENTRY has no exit_reason or trade_id")
        _check_lot_multiples("ExecuteBasket", self.legs, self.lot_size)
        return self

    def legs_in_order(self) -> list[BasketLeg]:
        return sorted(self.legs, key=lambda leg: (leg.sequence, leg.leg_index))


class CancelOrders(EventBase):
    """Cancel the named open orders, or every open order of a basket."""

    STREAM: ClassVar[str] = streams.EX_COMMANDS.name
    type: Literal["CancelOrders"] = "CancelOrders"

    basket_id: Identifier | None = None
    client_order_ids: list[ClientOrderId] = Field(default_factory=list)
    reason: Text

    @model_validator(mode="after")
    def _has_target(self) -> CancelOrders:
        if self.basket_id is None and not self.client_order_ids:
            raise ValueError("CancelOrders: name a basket_id or at least one client_order_id")
        return self


class FlattenAll(EventBase):
    """Cancel open orders and close every position (of one bucket, or all when bucket is None)."""

    STREAM: ClassVar[str] = streams.EX_COMMANDS.name
    type: Literal["FlattenAll"] = "FlattenAll"

    reason: ExitReason
    bucket: Bucket | None = None
    message: Text = ""


class OrderStatus(StrEnum):
    NEW = "NEW"  # created, not yet acknowledged by the broker
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    # Submit outcome unknown (timeout, disconnect): in flight until the broker's book resolves it.
    UNKNOWN = "UNKNOWN"


class OrderUpdate(EventBase):
    """Execution's report of an order's state at the broker.

    Version 2 adds `slice_index`: an attempt above the freeze quantity goes out as several exchange
    orders under one client order id, each reported on its own. A version-1 update (no slicing yet)
    reads as slice 0.
    """

    STREAM: ClassVar[str] = streams.EX_REPORTS.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["OrderUpdate"] = "OrderUpdate"
    schema_version: int = Field(default=2, ge=1)

    client_order_id: ClientOrderId
    broker_order_id: Identifier | None  # None until the broker acknowledges
    basket_id: Identifier
    leg_index: LegIndex
    attempt: Attempt
    slice_index: Annotated[int, Field(ge=0, le=999)] = 0
    instrument_key: InstrumentKey
    side: Side
    quantity: PositiveQuantity
    limit_price: PositiveMoney
    status: OrderStatus
    filled_qty: Quantity
    avg_price: PositiveMoney | None  # None while nothing is filled
    message: Text = ""

    @model_validator(mode="after")
    def _consistent(self) -> OrderUpdate:
        if self.filled_qty > self.quantity:
            raise ValueError(f"OrderUpdate: filled_qty {self.filled_qty} exceeds quantity {self.quantity}")
        if (self.filled_qty > 0) != (self.avg_price is not None):
            raise ValueError("OrderUpdate: avg_price is present exactly when filled_qty > 0")
        if self.status is OrderStatus.FILLED and self.filled_qty != self.quantity:
            raise ValueError("OrderUpdate: FILLED with filled_qty below quantity")
        if self.status is OrderStatus.PARTIALLY_FILLED and not 0 < self.filled_qty < self.quantity:
            raise ValueError("OrderUpdate: PARTIALLY_FILLED needs 0 < filled_qty < quantity")
        return self


class Fill(EventBase):
    """One execution at the exchange. The audit trail rebuilds positions and PnL from fills alone."""

    STREAM: ClassVar[str] = streams.EX_REPORTS.name
    type: Literal["Fill"] = "Fill"

    fill_id: Identifier  # the broker's trade id
    client_order_id: ClientOrderId
    broker_order_id: Identifier
    basket_id: Identifier
    leg_index: LegIndex
    instrument_key: InstrumentKey
    expiry: date
    strike: PositiveFloat
    option_type: OptionType
    side: Side
    quantity: PositiveQuantity
    price: PositiveMoney
    fees: NonNegativeMoney


class BasketStatus(StrEnum):
    FILLED = "FILLED"  # every leg filled in full
    REJECTED = "REJECTED"  # nothing filled
    CANCELLED = "CANCELLED"  # cancelled before anything filled
    UNWOUND = "UNWOUND"  # some legs filled, then reversed: no position remains
    # Some legs filled and the unwind did not complete: a position remains that needs an operator.
    STUCK = "STUCK"


class LegResult(Part):
    """How one leg ended. The fill quality fields (schema 2 of BasketResult) are None in a version-1
    result, and whenever they are not known: no mid at submission (a basket recovered from another
    process), nothing held, or (time to fill) the leg not filled in full."""

    leg_index: LegIndex
    client_order_id: ClientOrderId  # of the last attempt
    attempts: Annotated[int, Field(ge=1, le=100)]
    status: OrderStatus
    filled_qty: Quantity
    avg_price: PositiveMoney | None
    # The mid of the leg's contract when its first attempt was placed: what slippage is measured from.
    mid_at_submission: PositiveMoney | None = None
    # Rupees per unit worse than mid_at_submission (negative when the fills beat it), at avg_price.
    slippage: Money | None = None
    # Seconds of exchange time from the leg's first submission to the fill that completed it.
    time_to_fill_s: NonNegativeFloat | None = None


class BasketResult(EventBase):
    """How a basket ended.

    Version 2 adds each leg's fill quality (`mid_at_submission`, `slippage`, `time_to_fill_s`); a
    version-1 result reads with them unknown (None).
    """

    STREAM: ClassVar[str] = streams.EX_REPORTS.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["BasketResult"] = "BasketResult"
    schema_version: int = Field(default=2, ge=1)

    basket_id: Identifier
    intent_id: Identifier | None
    status: BasketStatus
    legs: list[LegResult]
    # Realised net premium in rupees: positive is credit received.
    net_premium: Money
    fees: NonNegativeMoney
    message: Text = ""

    @model_validator(mode="after")
    def _consistent(self) -> BasketResult:
        indices = [leg.leg_index for leg in self.legs]
        if len(set(indices)) != len(indices):
            raise ValueError(f"BasketResult: duplicate leg_index in {indices}")
        for leg in self.legs:
            if (leg.filled_qty > 0) != (leg.avg_price is not None):
                raise ValueError(
                    f"BasketResult: leg {leg.leg_index} avg_price is present exactly when filled_qty > 0"
                )
            if leg.slippage is not None and (leg.avg_price is None or leg.mid_at_submission is None):
                raise ValueError(
                    f"BasketResult: leg {leg.leg_index} slippage needs avg_price and mid_at_submission"
                )
            if leg.time_to_fill_s is not None and leg.avg_price is None:
                raise ValueError(f"BasketResult: leg {leg.leg_index} time_to_fill_s with nothing filled")
            if self.schema_version == 1 and (
                leg.mid_at_submission is not None
                or leg.slippage is not None
                or leg.time_to_fill_s is not None
            ):
                raise ValueError("BasketResult: schema_version 1 has no fill quality fields")
        return self
