"""The book as fills made it (issue "Risk and capital service", Portfolio).

Positions exist only because fills say so: an approved basket names the trade its fills belong to, and
each `Fill` moves one leg of that trade. Every fill books its cash flow and its charges from the shared
dated schedule (`volguard_common.charges`), so the audit trail rebuilds the same P&L from fills alone.

Money is exact `Decimal` rupees:
- cash flow of a fill: + price x quantity for a sale, - for a purchase;
- charges of a fill: `fill_charges(...).total` (the schedule's components rounded once, to the paisa),
  brokerage on the first fill of each exchange order (a freeze-quantity slice is its own order, and has
  its own broker order id);
- realised P&L of a leg matches closing units against the oldest open units (FIFO): closing q units
  opened at a realises (exit - a) x q for a long and (a - exit) x q for a short;
- unrealised P&L marks every open leg to its chain mid. A leg with no mark makes the figure unknown
  (None), never zero: a missing quote is not a price.

So, at every step, realised + unrealised - charges == sum of cash flows + sum of (signed quantity x mark)
- sum of charges, to the paisa; `tests/unit/risk/test_portfolio.py` checks it on random fill sequences.

Pure: no I/O and no clock. Times are event times the caller passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from volguard_common.charges import ChargeSchedule, exercise_charges, fill_charges, nse_option_charges
from volguard_common.events import (
    Bucket,
    BucketState,
    Fill,
    Greeks,
    OpenTrade,
    OptionType,
    PortfolioSnapshot,
    Position,
    Side,
    Structure,
)
from volguard_risk.domain.capital import BucketPerformance, CapitalLedger, performance

ZERO = Decimal(0)


class TradeOrigin(StrEnum):
    VOLGUARD = "VOLGUARD"  # opened by a basket risk approved
    EXTERNAL = "EXTERNAL"  # found at the broker, not opened by VolGuard: adopted, counted, alerted


class PortfolioError(ValueError):
    """A fill or instruction the ledger refuses (unknown basket, a fill seen twice with other figures)."""


@dataclass(frozen=True, slots=True)
class Contract:
    """What an instrument key is: NIFTY option of one expiry, strike and type."""

    instrument_key: str
    expiry: date
    strike: Decimal
    option_type: OptionType


@dataclass(slots=True)
class LegPosition:
    """One instrument inside one trade. `quantity` is signed units (short one lot of 65 = -65).

    Open units are kept as first-in-first-out lots at their fill prices, not as an average: an average
    of prices is a division that does not terminate, and the ledger must agree with the fills to the
    paisa.
    """

    contract: Contract
    quantity: int = 0
    realised: Decimal = ZERO
    # (signed units, price) of each still-open lot, oldest first; every lot has the position's sign.
    lots: list[tuple[int, Decimal]] = field(default_factory=list)

    @property
    def cost(self) -> Decimal:
        """What the open units cost (negative for a short: premium received)."""
        return sum((price * units for units, price in self.lots), ZERO)

    @property
    def average_price(self) -> Decimal | None:
        """For display only; None when flat."""
        return None if self.quantity == 0 else self.cost / self.quantity

    def apply(self, side: Side, quantity: int, price: Decimal) -> Decimal:
        """Move the leg by one fill; returns the P&L this fill realised (before charges)."""
        signed = quantity if side is Side.BUY else -quantity
        realised = ZERO
        left = signed
        while left != 0 and self.lots and (self.lots[0][0] > 0) != (left > 0):
            units, opened_at = self.lots[0]
            matched = min(abs(units), abs(left))
            sign = 1 if units > 0 else -1
            # A long closed at `price` gains price - opened_at per unit; a short the opposite.
            realised += (price - opened_at) * matched * sign
            remaining = units - sign * matched
            if remaining == 0:
                self.lots.pop(0)
            else:
                self.lots[0] = (remaining, opened_at)
            left += sign * matched
        if left != 0:
            self.lots.append((left, price))
        self.quantity += signed
        self.realised += realised
        return realised

    def unrealised(self, mark: Decimal) -> Decimal:
        return mark * self.quantity - self.cost


@dataclass(slots=True)
class Trade:
    """A structure risk approved (or adopted): its legs, charges and realised P&L, all from fills."""

    trade_id: str
    bucket: Bucket
    structure: Structure
    origin: TradeOrigin
    opened_at: datetime
    legs: dict[str, LegPosition] = field(default_factory=dict)
    charges: Decimal = ZERO
    closed_at: datetime | None = None
    # The most it was approved to lose (the per-trade budget check's figure): risk forces it out there.
    # None for an EXTERNAL trade, which nobody approved.
    max_loss: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return any(leg.quantity != 0 for leg in self.legs.values())

    @property
    def realised_gross(self) -> Decimal:
        return sum((leg.realised for leg in self.legs.values()), ZERO)

    @property
    def realised_net(self) -> Decimal:
        """Realised P&L less every charge the trade has paid so far."""
        return self.realised_gross - self.charges

    def pnl(self, marks: Mapping[str, Decimal]) -> Decimal | None:
        """Net P&L so far: realised less charges plus the open legs at their marks; None when unmarked."""
        unrealised = self.unrealised(marks)
        return None if unrealised is None else self.realised_net + unrealised

    def unrealised(self, marks: Mapping[str, Decimal]) -> Decimal | None:
        """Open legs at their marks; None when any open leg has no mark."""
        total = ZERO
        for key, leg in self.legs.items():
            if leg.quantity == 0:
                continue
            mark = marks.get(key)
            if mark is None:
                return None
            total += leg.unrealised(mark)
        return total

    def open_legs(self) -> list[LegPosition]:
        return [leg for leg in self.legs.values() if leg.quantity != 0]


@dataclass(frozen=True, slots=True)
class BookedFill:
    """What one fill did to the ledger: its cash flow, charges and realised P&L, for the audit rows."""

    fill_id: str
    trade_id: str
    cash_flow: Decimal
    charges: Decimal
    realised: Decimal
    closed_trade: bool


@dataclass(frozen=True, slots=True)
class Settlement:
    """A leg closed by its expiry, not by a fill: cash-settled at its intrinsic value against the index
    level `basis` names; a long in the money pays STT on exercise (`charges`), a short pays nothing."""

    trade_id: str
    instrument_key: str
    quantity: int  # the signed units the leg held, now closed
    price: Decimal  # intrinsic value per unit, >= 0
    charges: Decimal
    at: datetime
    basis: str


@dataclass(frozen=True, slots=True)
class Difference:
    """One instrument where risk's book and execution's reconciled broker view disagree."""

    instrument_key: str
    risk_quantity: int
    broker_quantity: int | None  # None: the broker view does not mention it (not evidence of flat)

    def describe(self) -> str:
        broker = "not reported" if self.broker_quantity is None else str(self.broker_quantity)
        return f"{self.instrument_key}: risk {self.risk_quantity}, broker {broker}"


class Portfolio:
    """Trades and their legs from fills; equity, peak and drawdown from marks."""

    def __init__(
        self,
        account: Decimal,
        *,
        brokerage_per_order: Decimal,
        schedule: ChargeSchedule | None = None,
    ) -> None:
        self.account = account
        self._brokerage = brokerage_per_order
        self._schedule = schedule or nse_option_charges()
        self._trades: dict[str, Trade] = {}
        self._basket_trade: dict[str, str] = {}
        self._fills: dict[str, Fill] = {}
        self._orders_seen: set[str] = set()
        self._marks: dict[str, Decimal] = {}
        self.peak: Decimal | None = None
        self._day: date | None = None
        self._day_open_equity: Decimal | None = None
        self._day_open_realised: Decimal = ZERO

    # ---- trades -------------------------------------------------------------------------------
    def open_trade(
        self,
        trade_id: str,
        bucket: Bucket,
        structure: Structure,
        at: datetime,
        *,
        origin: TradeOrigin,
        max_loss: Decimal | None = None,
    ) -> Trade:
        if trade_id in self._trades:
            raise PortfolioError(f"trade {trade_id} already exists")
        trade = Trade(trade_id, bucket, structure, origin, at, max_loss=max_loss)
        self._trades[trade_id] = trade
        return trade

    def expect_basket(self, basket_id: str, trade_id: str) -> None:
        """Fills of `basket_id` belong to `trade_id` (an entry opens it, an exit closes it)."""
        if trade_id not in self._trades:
            raise PortfolioError(f"basket {basket_id} names unknown trade {trade_id}")
        known = self._basket_trade.get(basket_id)
        if known is not None and known != trade_id:
            raise PortfolioError(f"basket {basket_id} already belongs to trade {known}")
        self._basket_trade[basket_id] = trade_id

    def trade(self, trade_id: str) -> Trade:
        return self._trades[trade_id]

    def known_baskets(self) -> set[str]:
        """Every basket whose fills the book expects (issued entries, exits and forced exits)."""
        return set(self._basket_trade)

    def baskets_of(self, trade_id: str) -> list[str]:
        return [basket for basket, trade in self._basket_trade.items() if trade == trade_id]

    def trade_of_basket(self, basket_id: str) -> str | None:
        return self._basket_trade.get(basket_id)

    @property
    def trades(self) -> tuple[Trade, ...]:
        return tuple(self._trades.values())

    def open_trades(self, bucket: Bucket | None = None) -> list[Trade]:
        return [t for t in self._trades.values() if t.is_open and (bucket is None or t.bucket is bucket)]

    # ---- fills --------------------------------------------------------------------------------
    def apply_fill(self, fill: Fill) -> BookedFill | None:
        """Book one fill. A redelivered fill (same id, same figures) changes nothing and returns None."""
        seen = self._fills.get(fill.fill_id)
        if seen is not None:
            if _fill_figures(seen) != _fill_figures(fill):
                raise PortfolioError(f"fill {fill.fill_id} seen twice with different figures")
            return None
        trade_id = self._basket_trade.get(fill.basket_id)
        if trade_id is None:
            raise PortfolioError(f"fill {fill.fill_id} of unknown basket {fill.basket_id}")
        trade = self._trades[trade_id]
        price = fill.price
        first = fill.broker_order_id not in self._orders_seen
        charges = fill_charges(
            fill.side,
            price,
            fill.quantity,
            fill.ts_event.date(),
            first_fill_of_order=first,
            brokerage_per_order=self._brokerage,
            schedule=self._schedule,
        ).total
        leg = trade.legs.get(fill.instrument_key)
        if leg is None:
            contract = Contract(fill.instrument_key, fill.expiry, Decimal(str(fill.strike)), fill.option_type)
            leg = trade.legs[fill.instrument_key] = LegPosition(contract)
        was_open = trade.is_open
        realised = leg.apply(fill.side, fill.quantity, price)
        trade.charges += charges
        self._fills[fill.fill_id] = fill
        self._orders_seen.add(fill.broker_order_id)
        closed = was_open and not trade.is_open
        if closed:
            trade.closed_at = fill.ts_event
        elif trade.is_open:
            trade.closed_at = None
        cash = price * fill.quantity * (1 if fill.side is Side.SELL else -1)
        return BookedFill(fill.fill_id, trade_id, cash, charges, realised, closed)

    def expired_settlements(
        self, today: date, at: datetime, settlement_level: Callable[[date], tuple[Decimal, str] | None]
    ) -> list[Settlement]:
        """Every open leg whose expiry is before `today`, settled at its intrinsic value on the index
        level `settlement_level` gives for its expiry (with what that level is); a leg it gives none for
        stays open. NIFTY options settle in cash: no fill will ever close them, and margin and Greeks
        refuse a leg past its expiry."""
        found: list[Settlement] = []
        for trade in self.open_trades():
            for leg in trade.open_legs():
                contract = leg.contract
                level = None if contract.expiry >= today else settlement_level(contract.expiry)
                if level is None:
                    continue
                spot, basis = level
                if contract.option_type is OptionType.CE:
                    intrinsic = max(spot - contract.strike, ZERO)
                else:
                    intrinsic = max(contract.strike - spot, ZERO)
                charges = (
                    exercise_charges(intrinsic, leg.quantity, contract.expiry, schedule=self._schedule).total
                    if leg.quantity > 0
                    else ZERO
                )
                found.append(
                    Settlement(
                        trade.trade_id, contract.instrument_key, leg.quantity, intrinsic, charges, at, basis
                    )
                )
        return found

    def settle(self, settlement: Settlement) -> bool:
        """Close the leg as `settlement` says; returns whether its trade closed with it."""
        trade = self._trades[settlement.trade_id]
        leg = trade.legs[settlement.instrument_key]
        if leg.quantity != settlement.quantity:
            raise PortfolioError(
                f"settlement of {settlement.instrument_key} in {settlement.trade_id} is for "
                f"{settlement.quantity} units, the book holds {leg.quantity}"
            )
        was_open = trade.is_open
        side = Side.SELL if settlement.quantity > 0 else Side.BUY
        leg.apply(side, abs(settlement.quantity), settlement.price)
        trade.charges += settlement.charges
        closed = was_open and not trade.is_open
        if closed:
            trade.closed_at = settlement.at
        return closed

    def adopt_external(
        self, trade_id: str, contract: Contract, quantity: int, average_price: Decimal, at: datetime
    ) -> Trade:
        """A position the broker holds that VolGuard did not open: counted from now on, never hidden.

        It is booked at `average_price` as if bought or sold then (the broker's own cost is not known to
        risk), so its P&L counts from the adoption. No fill opened it, so no charges are booked.
        """
        if quantity == 0:
            raise PortfolioError("an EXTERNAL position of zero units is not a position")
        trade = self.open_trade(trade_id, Bucket.INTRADAY, Structure.CUSTOM, at, origin=TradeOrigin.EXTERNAL)
        leg = trade.legs[contract.instrument_key] = LegPosition(contract)
        leg.apply(Side.BUY if quantity > 0 else Side.SELL, abs(quantity), average_price)
        return trade

    # ---- marks and figures --------------------------------------------------------------------
    def mark(self, marks: Mapping[str, Decimal]) -> None:
        """Latest chain mids by instrument key (a later chain replaces an earlier mark)."""
        self._marks.update(marks)

    @property
    def marks(self) -> Mapping[str, Decimal]:
        return self._marks

    def net_positions(self) -> dict[str, int]:
        """Signed units per instrument across every trade (flat instruments left out)."""
        net: dict[str, int] = {}
        for trade in self._trades.values():
            for key, leg in trade.legs.items():
                net[key] = net.get(key, 0) + leg.quantity
        return {key: qty for key, qty in net.items() if qty != 0}

    def realised_net(self, bucket: Bucket | None = None) -> Decimal:
        return sum(
            (t.realised_net for t in self._trades.values() if bucket is None or t.bucket is bucket), ZERO
        )

    def unrealised(self, bucket: Bucket | None = None) -> Decimal | None:
        total = ZERO
        for trade in self._trades.values():
            if bucket is not None and trade.bucket is not bucket:
                continue
            value = trade.unrealised(self._marks)
            if value is None:
                return None
            total += value
        return total

    def equity(self) -> Decimal | None:
        unrealised = self.unrealised()
        if unrealised is None:
            return None
        return self.account + self.realised_net() + unrealised

    @property
    def day(self) -> date | None:
        return self._day

    def start_day(self, day: date) -> None:
        """The trading day's open: day P&L counts from the equity now (or realised P&L while unmarked)."""
        self._day = day
        self._day_open_equity = self.equity()
        self._day_open_realised = self.realised_net()

    def restore_day(self, day: date, open_equity: Decimal) -> None:
        """The day's open as recorded before a restart: its P&L keeps the losses already taken."""
        self._day = day
        self._day_open_equity = open_equity

    @property
    def day_open_equity(self) -> Decimal | None:
        return self._day_open_equity

    def open_day_if_unknown(self) -> Decimal | None:
        """The day's opening equity, taken now if it was unknown (a leg was unmarked at the open) and
        every open leg now has a mark; returns it only when it was taken by this call."""
        if self._day is None or self._day_open_equity is not None:
            return None
        self._day_open_equity = self.equity()
        return self._day_open_equity

    def day_pnl(self) -> Decimal | None:
        """Equity now less equity at the day's open; None while either is unknown."""
        now = self.equity()
        if now is None or self._day_open_equity is None:
            return None
        return now - self._day_open_equity

    def observe_equity(self) -> Decimal | None:
        """Record the peak; returns the drawdown from it (None while equity is unknown)."""
        now = self.equity()
        if now is None:
            return None
        if self.peak is None or now > self.peak:
            self.peak = now
        return self.peak - now

    # ---- reconciliation -----------------------------------------------------------------------
    def compare(self, broker: Mapping[str, int]) -> list[Difference]:
        """Instruments where the broker's reconciled view differs from the book (both ways)."""
        ours = self.net_positions()
        differences = [
            Difference(key, qty, broker.get(key)) for key, qty in ours.items() if broker.get(key) != qty
        ]
        differences += [
            Difference(key, 0, qty) for key, qty in broker.items() if qty != 0 and key not in ours
        ]
        return sorted(differences, key=lambda d: d.instrument_key)


def _fill_figures(fill: Fill) -> tuple[object, ...]:
    return (fill.basket_id, fill.instrument_key, fill.side, fill.quantity, fill.price, fill.broker_order_id)


def replay(portfolio: Portfolio, fills: Iterable[Fill]) -> list[BookedFill]:
    """Book fills in order (after a restart: the same ledger as before it)."""
    return [booked for fill in fills if (booked := portfolio.apply_fill(fill)) is not None]


def _paisa(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))


def bucket_performance(portfolio: Portfolio, ledger: CapitalLedger, bucket: Bucket) -> BucketPerformance:
    """Performance of `bucket` from its closed trades: each trade's realised P&L net of charges, and the
    capital it used (what the ledger committed to its baskets' fills)."""
    committed = ledger.committed_by_reference(bucket)
    return performance(
        (
            trade.realised_net,
            sum((committed.get(basket, ZERO) for basket in portfolio.baskets_of(trade.trade_id)), ZERO),
        )
        for trade in portfolio.trades
        if trade.bucket is bucket and not trade.is_open and trade.closed_at is not None
    )


def bucket_state(portfolio: Portfolio, ledger: CapitalLedger, bucket: Bucket) -> BucketState:
    """One bucket on rk.portfolio: its capital, P&L and performance (averages to the paisa for display)."""
    balance = ledger.balance(bucket)
    stats = bucket_performance(portfolio, ledger, bucket)
    return BucketState(
        bucket=bucket,
        capital_allocated=balance.allocated,
        capital_used=balance.used + balance.reserved,
        capital_reserved=balance.reserved,
        realised_pnl=portfolio.realised_net(bucket),
        unrealised_pnl=portfolio.unrealised(bucket),
        open_trades=len(portfolio.open_trades(bucket)),
        closed_trades=stats.trades,
        win_rate=None if stats.win_rate is None else float(stats.win_rate),
        average_win=None if stats.average_win is None else _paisa(stats.average_win),
        average_loss=None if stats.average_loss is None else _paisa(stats.average_loss),
        roi=None if stats.return_on_capital is None else float(stats.return_on_capital),
    )


def portfolio_snapshot(
    portfolio: Portfolio,
    ledger: CapitalLedger,
    *,
    at: datetime,
    source: str,
    correlation_id: str,
    reconciled: bool,
    greeks_of: Callable[[Sequence[LegPosition]], Greeks | None] = lambda legs: None,
) -> PortfolioSnapshot:
    """The book as `rk.portfolio` shows it: unknown figures (no mark, no vol) are None, never zero.

    Averages are rounded to the paisa for display only; the ledger keeps exact lots.
    """
    marks = portfolio.marks
    net: dict[str, list[LegPosition]] = {}
    for trade in portfolio.trades:
        for key, leg in trade.legs.items():
            net.setdefault(key, []).append(leg)
    positions: list[Position] = []
    for key, legs in sorted(net.items()):
        quantity = sum(leg.quantity for leg in legs)
        realised = sum((leg.realised for leg in legs), ZERO)
        if quantity == 0:
            continue
        cost = sum((leg.cost for leg in legs), ZERO)
        mark = marks.get(key)
        contract = legs[0].contract
        positions.append(
            Position(
                instrument_key=key,
                expiry=contract.expiry,
                strike=float(contract.strike),
                option_type=contract.option_type,
                quantity=quantity,
                avg_price=_paisa(abs(cost / quantity)),
                mark=mark,
                unrealised_pnl=None if mark is None else mark * quantity - cost,
                realised_pnl=realised,
            )
        )
    trades: list[OpenTrade] = []
    for trade in portfolio.open_trades():
        legs = trade.open_legs()
        unrealised = trade.unrealised(marks)
        values = [marks.get(leg.contract.instrument_key) for leg in legs]
        cost_to_close = (
            None
            if any(v is None for v in values)
            else -sum((v * leg.quantity for v, leg in zip(values, legs, strict=True) if v is not None), ZERO)
        )
        trades.append(
            OpenTrade(
                trade_id=trade.trade_id,
                intent_id=None,
                bucket=trade.bucket,
                structure=trade.structure,
                opened_at=trade.opened_at,
                nearest_expiry=min(leg.contract.expiry for leg in legs),
                legs=[p for p in positions if p.instrument_key in trade.legs],
                entry_credit=-sum((leg.cost for leg in legs), ZERO),
                cost_to_close=cost_to_close,
                unrealised_pnl=unrealised,
                greeks=greeks_of(legs),
            )
        )
    buckets = [bucket_state(portfolio, ledger, bucket) for bucket in Bucket]
    all_legs = [leg for trade in portfolio.open_trades() for leg in trade.open_legs()]
    return PortfolioSnapshot(
        ts_event=at,
        source=source,
        correlation_id=correlation_id,
        account_capital=portfolio.account,
        positions=positions,
        trades=trades,
        buckets=buckets,
        net_greeks=greeks_of(all_legs),
        realised_pnl=portfolio.realised_net(),
        unrealised_pnl=portfolio.unrealised(),
        day_pnl=portfolio.day_pnl(),
        margin_used=None,
        margin_available=None,
        reconciled=reconciled,
    )
