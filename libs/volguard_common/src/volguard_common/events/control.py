"""Portfolio and trading state (rk.portfolio, rk.state), operator commands (ctl.commands),
alerts (sys.alerts) and broker health (ex.health)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from volguard_common import streams
from volguard_common.events._base import (
    Bucket,
    EventBase,
    Greeks,
    Identifier,
    InstrumentKey,
    IstDatetime,
    Money,
    Name,
    NonNegativeFloat,
    NonNegativeMoney,
    OptionType,
    Part,
    PositiveFloat,
    PositiveMoney,
    Quantity,
    Text,
    UnitInterval,
)
from volguard_common.events.orders import Structure

SignedQuantity = Annotated[int, Field(ge=-10_000_000, le=10_000_000)]


class Position(Part):
    """Net position in one contract. quantity is signed units: negative is short."""

    instrument_key: InstrumentKey
    expiry: date
    strike: PositiveFloat
    option_type: OptionType
    quantity: SignedQuantity
    avg_price: NonNegativeMoney
    # None when no usable mark: unknown, never zero.
    mark: PositiveMoney | None
    unrealised_pnl: Money | None
    realised_pnl: Money


class OpenTrade(Part):
    """One structure risk opened, with what strategy needs to manage it (profit target, stops)."""

    trade_id: Identifier
    intent_id: Identifier | None
    bucket: Bucket
    structure: Structure
    opened_at: IstDatetime
    nearest_expiry: date
    legs: list[Position]
    # Net credit received at entry (negative for a debit), rupees.
    entry_credit: Money
    # Rupees to buy the structure back at current marks; None if any leg is unmarked.
    cost_to_close: Money | None
    unrealised_pnl: Money | None
    greeks: Greeks | None


class BucketState(Part):
    """One capital bucket on rk.portfolio.

    `capital_used` is everything taken from free capital: committed to fills plus `capital_reserved` for
    approved baskets still working (PortfolioSnapshot version 3 adds the reserved part and the
    performance below; a version-2 snapshot has none of them and reads with them None / 0).
    Performance counts the bucket's closed trades: realised P&L net of charges, the share of them that
    made money, the average winning and losing trade (a loss is negative) and the return on the capital
    those trades committed. None while the bucket has closed no trade (or committed nothing).
    """

    bucket: Bucket
    capital_allocated: NonNegativeMoney
    capital_used: NonNegativeMoney
    realised_pnl: Money
    unrealised_pnl: Money | None
    open_trades: Quantity
    capital_reserved: NonNegativeMoney | None = None
    closed_trades: Quantity = 0
    win_rate: UnitInterval | None = None
    average_win: Money | None = None
    average_loss: Money | None = None
    roi: float | None = None


class PortfolioSnapshot(EventBase):
    """Risk's view of the account. Figures that cannot be known now (no mark, no broker margin) are None."""

    STREAM: ClassVar[str] = streams.RK_PORTFOLIO.name
    # Schema 2: an open trade's structure may be one of those added to Structure in its schema 2.
    # Schema 3: each BucketState carries its reserved capital and its performance.
    SCHEMA_VERSION: ClassVar[int] = 3
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2, 3})
    type: Literal["PortfolioSnapshot"] = "PortfolioSnapshot"
    schema_version: int = Field(default=3, ge=1)

    account_capital: NonNegativeMoney
    positions: list[Position]
    trades: list[OpenTrade]
    buckets: list[BucketState]
    net_greeks: Greeks | None
    realised_pnl: Money
    unrealised_pnl: Money | None
    day_pnl: Money | None
    margin_used: NonNegativeMoney | None
    margin_available: Money | None
    # Risk agrees with execution's reconciled broker positions; False blocks new entries.
    reconciled: bool

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioSnapshot:
        buckets = [b.bucket for b in self.buckets]
        if len(set(buckets)) != len(buckets):
            raise ValueError(f"PortfolioSnapshot: duplicate bucket in {[b.value for b in buckets]}")
        keys = [p.instrument_key for p in self.positions]
        if len(set(keys)) != len(keys):
            raise ValueError("PortfolioSnapshot: positions must be net, one per instrument_key")
        return self


class TradingStateKind(StrEnum):
    """What risk allows now, from least to most restrictive (issue: risk's trading-state table).

    Schema v1 called HALTED "KILLED"; v1 payloads are read with KILLED as HALTED.
    """

    RUNNING = "RUNNING"  # everything
    PAUSED = "PAUSED"  # operator pause or dashboard circuit breaker: exits and adjustments, no entries
    REDUCING = "REDUCING"  # a risk cause (soft stop, stale data, ...): exits and adjustments, no entries
    FLATTENING = "FLATTENING"  # hard stop, daily loss limit or kill switch: forced exits only
    HALTED = "HALTED"  # flat after FLATTENING: nothing until the cause clears


# The order of restriction: when several causes hold, the strictest state wins.
TRADING_STATE_RANK: dict[TradingStateKind, int] = {kind: rank for rank, kind in enumerate(TradingStateKind)}


class TradingCause(StrEnum):
    """Why trading is restricted; each cause clears by its own rule (volguard_risk.domain.trading_state)."""

    OPERATOR_PAUSE = "OPERATOR_PAUSE"
    CIRCUIT_BREAKER = "CIRCUIT_BREAKER"
    SOFT_STOP = "SOFT_STOP"
    STALE_DATA = "STALE_DATA"
    VIX_SPIKE = "VIX_SPIKE"
    BROKER_UNHEALTHY = "BROKER_UNHEALTHY"
    UNRECONCILED = "UNRECONCILED"
    EXTERNAL_POSITIONS = "EXTERNAL_POSITIONS"
    STUCK_BASKET = "STUCK_BASKET"
    HARD_STOP = "HARD_STOP"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    KILL_SWITCH = "KILL_SWITCH"


class ActiveCause(Part):
    cause: TradingCause
    since: IstDatetime
    detail: Text


class TradingState(EventBase):
    STREAM: ClassVar[str] = streams.RK_STATE.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["TradingState"] = "TradingState"

    schema_version: int = Field(default=2, ge=1)
    state: TradingStateKind
    previous: TradingStateKind | None
    reason: Text
    since: IstDatetime
    # Every cause in force, each with when it started (v2); v1 payloads carry none.
    causes: list[ActiveCause] = Field(default_factory=list)

    @field_validator("state", "previous", mode="before")
    @classmethod
    def _v1_killed(cls, value: object, info: ValidationInfo) -> object:
        # v1 named the kill switch's end state KILLED; strict validation needs the enum member itself.
        if value == "KILLED" and info.data.get("schema_version") == 1:
            return TradingStateKind.HALTED
        return value

    @model_validator(mode="after")
    def _unique_causes(self) -> TradingState:
        names = [c.cause for c in self.causes]
        if len(set(names)) != len(names):
            raise ValueError(f"TradingState: duplicate cause in {[n.value for n in names]}")
        return self

    @property
    def entries_allowed(self) -> bool:
        return self.state is TradingStateKind.RUNNING

    @property
    def exits_allowed(self) -> bool:
        """Strategy's management exits and adjustments (forced exits are risk's own and always run)."""
        return self.state in (TradingStateKind.RUNNING, TradingStateKind.PAUSED, TradingStateKind.REDUCING)


class CommandKind(StrEnum):
    KILL_SWITCH = "KILL_SWITCH"
    FLATTEN = "FLATTEN"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    SET_CAPITAL = "SET_CAPITAL"
    # Pause new entries at once from the dashboard (PAUSED until an operator resumes).
    CIRCUIT_BREAKER = "CIRCUIT_BREAKER"
    # The operator has looked at EXTERNAL positions or a STUCK basket: clears those causes.
    ACKNOWLEDGE = "ACKNOWLEDGE"
    # Live mode: market_data reloads the instrument master and the holiday calendar.
    REFRESH_DATA = "REFRESH_DATA"


class Command(EventBase):
    """An operator command from the dashboard or CLI.

    Arguments are typed fields rather than a free-form dict: SET_CAPITAL needs `capital` (rupees, for
    `bucket` or the whole account when bucket is None) and/or a re-allocation; FLATTEN may name a
    `bucket`; the others take no arguments.

    Version 2 adds the re-allocation: `weekly_pct`, `monthly_pct` and `intraday_pct` travel together
    (all three or none) on a SET_CAPITAL; risk accepts them only when they sum to 100 and no bucket drops
    below what it already holds. A version-1 command has none of them and reads as before.
    """

    STREAM: ClassVar[str] = streams.CTL_COMMANDS.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["Command"] = "Command"
    schema_version: int = Field(default=2, ge=1)

    command: CommandKind
    issued_by: Name
    reason: Text
    capital: PositiveMoney | None = None
    bucket: Bucket | None = None
    weekly_pct: Annotated[Decimal, Field(ge=0, le=100)] | None = None
    monthly_pct: Annotated[Decimal, Field(ge=0, le=100)] | None = None
    intraday_pct: Annotated[Decimal, Field(ge=0, le=100)] | None = None

    @property
    def percentages(self) -> dict[Bucket, Decimal] | None:
        """The re-allocation by bucket, or None when the command carries none."""
        if self.weekly_pct is None or self.monthly_pct is None or self.intraday_pct is None:
            return None
        return {
            Bucket.WEEKLY: self.weekly_pct,
            Bucket.MONTHLY: self.monthly_pct,
            Bucket.INTRADAY: self.intraday_pct,
        }

    @model_validator(mode="after")
    def _arguments(self) -> Command:
        given = [p is not None for p in (self.weekly_pct, self.monthly_pct, self.intraday_pct)]
        if any(given) and not all(given):
            raise ValueError("Command: a re-allocation carries all three bucket percentages")
        if self.command is CommandKind.SET_CAPITAL:
            if self.capital is None and not any(given):
                raise ValueError("Command: SET_CAPITAL needs capital or a re-allocation")
            if any(given) and self.bucket is not None:
                raise ValueError("Command: a re-allocation is for the whole account, not one bucket")
        else:
            if self.capital is not None:
                raise ValueError(f"Command: {self.command.value} takes no capital")
            if any(given):
                raise ValueError(f"Command: {self.command.value} takes no re-allocation")
        if self.bucket is not None and self.command not in (CommandKind.SET_CAPITAL, CommandKind.FLATTEN):
            raise ValueError(f"Command: {self.command.value} takes no bucket")
        return self


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


_ALERT_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
DetailKey = Annotated[str, Field(min_length=1, max_length=64)]
DetailValue = str | int | float | bool | None


class Alert(EventBase):
    STREAM: ClassVar[str] = streams.SYS_ALERTS.name
    type: Literal["Alert"] = "Alert"

    severity: Severity
    code: str  # UPPER_SNAKE, stable: dashboards and runbooks key on it
    message: Text
    details: dict[DetailKey, DetailValue] = Field(default_factory=dict)

    @field_validator("code")
    @classmethod
    def _upper_snake(cls, code: str) -> str:
        if not _ALERT_CODE.match(code):
            raise ValueError(f"Alert code {code!r} must be UPPER_SNAKE (A-Z, 0-9, _), at most 64 chars")
        return code


class RateLimitHeadroom(Part):
    """Orders still allowed in each Upstox rate-limit window (limits 10/s, 500/min, 2000/30 min)."""

    per_second: Quantity
    per_minute: Quantity
    per_30_minutes: Quantity


class BrokerHealth(EventBase):
    """Execution's view of the broker.

    Version 2 adds `positions`: the reconciled net position per instrument (signed units) when
    `reconciled`, so risk can compare its book built from fills with the broker's. None means not
    reported, which is not evidence of a flat book.
    """

    STREAM: ClassVar[str] = streams.EX_HEALTH.name
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    type: Literal["BrokerHealth"] = "BrokerHealth"
    schema_version: int = Field(default=2, ge=1)

    broker: Name  # "upstox" or "paper"
    connected: bool
    latency_ms: NonNegativeFloat | None  # None when no round trip has been measured
    rate_limit: RateLimitHeadroom
    token_expires_at: IstDatetime | None  # None for brokers without a token (paper)
    open_orders: Quantity
    in_flight_unknown: Quantity  # submits whose outcome is not yet resolved
    # Execution has reconciled orders, fills and positions with the broker since (re)connecting.
    reconciled: bool
    message: Text = ""
    positions: dict[InstrumentKey, int] | None = None
