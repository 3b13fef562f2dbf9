"""What a backtest keeps of a run: plain values in event time, compared by content across runs.

Ids (event ids, broker order ids) are not part of a record's content: two runs of the same inputs give
the same records field for field, which is what determinism means here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class FillRecord:
    ts_event: datetime
    trade_id: str
    basket_id: str
    purpose: str  # ENTRY, EXIT, ADJUST
    exit_reason: str | None
    bucket: str
    structure: str
    instrument_key: str
    expiry: date
    strike: float
    option_type: str
    side: str  # BUY or SELL
    quantity: int  # units
    price: Decimal
    fees: Decimal
    mid: Decimal | None  # the leg's mid when the basket was issued, for slippage

    @property
    def cash_flow(self) -> Decimal:
        """Premium received (+) or paid (-), before charges."""
        signed = self.price * self.quantity
        return signed if self.side == "SELL" else -signed

    @property
    def slippage(self) -> Decimal | None:
        """Rupees given up against the mid at issue (positive is worse than mid)."""
        if self.mid is None:
            return None
        per_unit = self.price - self.mid if self.side == "BUY" else self.mid - self.price
        return per_unit * self.quantity


@dataclass(frozen=True, slots=True)
class SettlementRecord:
    """An option still held at its expiry's close, settled in cash against the settlement price."""

    ts_event: datetime
    trade_id: str
    bucket: str
    structure: str
    instrument_key: str
    expiry: date
    strike: float
    option_type: str
    quantity: int  # signed units held at the close (long > 0)
    settlement_price: float  # the underlying's settlement price (the close's spot)
    intrinsic: Decimal  # per unit
    stt: Decimal  # STT on exercise, charged to an exercised long

    @property
    def cash_flow(self) -> Decimal:
        return self.intrinsic * self.quantity


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    ts_event: datetime
    bucket: str
    structure: str  # WAIT when the bucket proposed nothing
    rule: str
    reasons: tuple[str, ...]
    regime: str
    intent_id: str | None


@dataclass(frozen=True, slots=True)
class RiskEventRecord:
    ts_event: datetime
    kind: str  # REJECTED, APPROVED, STATE, FLATTEN, FORCED_EXIT, BASKET, ALERT
    detail: str
    checks: tuple[str, ...] = ()  # the failed checks of a rejection


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts_event: datetime
    realised: Decimal  # net of charges
    unrealised: Decimal | None

    @property
    def equity_pnl(self) -> Decimal:
        return self.realised + (self.unrealised if self.unrealised is not None else Decimal(0))


@dataclass(frozen=True, slots=True)
class TradeRecord:
    trade_id: str
    bucket: str
    structure: str
    opened_at: datetime
    closed_at: datetime | None
    entry_reason: str
    exit_reasons: tuple[str, ...]
    lot_size: int


@dataclass
class RunRecords:
    """Everything a run produced, in the order it happened."""

    fills: list[FillRecord] = field(default_factory=list)
    settlements: list[SettlementRecord] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    risk_events: list[RiskEventRecord] = field(default_factory=list)
    equity: list[EquityPoint] = field(default_factory=list)
    trades: dict[str, TradeRecord] = field(default_factory=dict)
    # The book's own figures at the end (risk's Portfolio), which the report reconciles against.
    book_realised_net: Decimal = Decimal(0)
    book_unrealised: Decimal | None = None
    # Per trade as the book has it: (realised net of charges, charges) at the end.
    book_trades: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    # What the open positions are worth at their last marks (units x mark), None if any lacks a mark.
    open_market_value: Decimal | None = Decimal(0)
    account: Decimal = Decimal(0)
    snapshots: int = 0
    vol_snapshots: int = 0
    orders: int = 0
    intents: int = 0
