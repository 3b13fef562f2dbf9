"""Risk's own actions: loss stops, operator commands and time-based forced exits (issue 16, Stops).

- Loss stops read the day's P&L (event time, from the book): a loss of at least the soft stop % of the
  account raises SOFT_STOP (REDUCING), the hard stop % HARD_STOP and the daily loss limit %
  DAILY_LOSS_LIMIT (both FLATTENING -> HALTED, with a `FlattenAll`). An unknown day P&L raises nothing
  and clears nothing: the service raises STALE_DATA for the missing marks instead.
- Commands map onto the state machine's rules; KILL_SWITCH, hard stop and daily loss send `FlattenAll`
  (execution cancels resting orders and closes every position, shorts bought back before wings sold).
- Forced exits are `ExecuteBasket`s with the exact legs, URGENT, and a reason: expiring legs of every
  trade from `expiry_flatten_before_close` before the dated close on their expiry day, and every open
  intraday trade from `intraday_flat_before_close` before it. EXTERNAL trades (adopted from the broker)
  are never closed on a timer: only FlattenAll closes them. A basket id is derived from the trade,
  the rule and the day, so a replay or a failover issues the same basket, never a second one.
- Per-trade forced exit (STOP_LOSS): a trade whose net P&L (realised less charges plus its open legs at
  their marks) has lost at least the max loss it was approved with is closed whole, whatever the time.
  Strategy's own stops (2x credit) normally act first; this is risk's backstop. An unmarked trade's
  P&L is unknown, and unknown is not a loss: the stale-data rules handle missing marks.

Pure: no I/O, no clock; the caller passes the event time and the day's dated close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from math import gcd

from volguard_common.events import (
    BasketLeg,
    Bucket,
    Command,
    CommandKind,
    ExecuteBasket,
    ExitReason,
    FlattenAll,
    IntentKind,
    Side,
    TradingCause,
    Urgency,
    client_order_id,
)
from volguard_risk.domain.capital import CapitalError, CapitalLedger, Movement
from volguard_risk.domain.portfolio import LegPosition, Portfolio, Trade, TradeOrigin
from volguard_risk.domain.trading_state import TradingStateMachine, Transition

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class StopLevels:
    account: Decimal
    soft_stop_pct: Decimal = Decimal(2)
    hard_stop_pct: Decimal = Decimal(3)
    daily_loss_limit_pct: Decimal = Decimal(3)


@dataclass(slots=True)
class Effects:
    """What one event made risk do: state transitions, ledger rows, commands to execution, refusals."""

    transitions: list[Transition] = field(default_factory=list)
    movements: list[Movement] = field(default_factory=list)
    flatten: list[FlattenAll] = field(default_factory=list)
    baskets: list[ExecuteBasket] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def add(self, transition: Transition | None) -> None:
        if transition is not None:
            self.transitions.append(transition)


def loss_stops(
    day_pnl: Decimal | None, levels: StopLevels, machine: TradingStateMachine, at: datetime, source: str
) -> Effects:
    """Raise the stops the day's loss has reached; a FLATTENING stop sends one FlattenAll."""
    effects = Effects()
    if day_pnl is None:
        return effects
    loss = -day_pnl
    rows = (
        (TradingCause.SOFT_STOP, levels.soft_stop_pct, None),
        (TradingCause.HARD_STOP, levels.hard_stop_pct, ExitReason.HARD_STOP),
        (TradingCause.DAILY_LOSS_LIMIT, levels.daily_loss_limit_pct, ExitReason.DAILY_LOSS),
    )
    for cause, pct, exit_reason in rows:
        threshold = levels.account * pct / HUNDRED
        if loss < threshold:
            continue
        transition = machine.raise_cause(cause, at, f"day loss {loss} Rs >= {pct} % of {levels.account} Rs")
        effects.add(transition)
        if transition is not None and exit_reason is not None and not effects.flatten:
            effects.flatten.append(
                FlattenAll(ts_event=at, source=source, reason=exit_reason, message=transition.reason)
            )
    return effects


def apply_command(
    command: Command,
    machine: TradingStateMachine,
    ledger: CapitalLedger,
    account: Decimal,
    at: datetime,
    source: str,
) -> Effects:
    """An operator command, in event time. `account` is the account size now (SET_CAPITAL may change it)."""
    effects = Effects()
    who = command.issued_by
    kind = command.command
    correlation = command.correlation_id
    if kind is CommandKind.KILL_SWITCH:
        effects.add(machine.raise_cause(TradingCause.KILL_SWITCH, at, f"by {who}: {command.reason}"))
        effects.flatten.append(
            FlattenAll(
                ts_event=at,
                source=source,
                reason=ExitReason.KILL_SWITCH,
                message=command.reason,
                correlation_id=correlation,
            )
        )
    elif kind is CommandKind.FLATTEN:
        effects.flatten.append(
            FlattenAll(
                ts_event=at,
                source=source,
                reason=ExitReason.OPERATOR,
                bucket=command.bucket,
                message=command.reason,
                correlation_id=correlation,
            )
        )
    elif kind is CommandKind.PAUSE:
        effects.add(machine.raise_cause(TradingCause.OPERATOR_PAUSE, at, f"by {who}: {command.reason}"))
    elif kind is CommandKind.CIRCUIT_BREAKER:
        effects.add(machine.raise_cause(TradingCause.CIRCUIT_BREAKER, at, f"by {who}: {command.reason}"))
    elif kind is CommandKind.RESUME:
        effects.add(machine.operator_resume(at, who))
    elif kind is CommandKind.ACKNOWLEDGE:
        effects.add(machine.operator_acknowledge(at, who))
    elif kind is CommandKind.SET_CAPITAL:
        _set_capital(command, ledger, account, at, effects)
    return effects


def _set_capital(
    command: Command, ledger: CapitalLedger, account: Decimal, at: datetime, effects: Effects
) -> None:
    percentages = command.percentages
    if percentages is None:
        # Keep the current split: each bucket's share of what is allocated now.
        allocated = {b: ledger.balance(b).allocated for b in Bucket}
        total = sum(allocated.values(), Decimal(0))
        if total == 0:
            effects.refused.append("SET_CAPITAL without percentages needs an existing allocation to keep")
            return
        percentages = {b: allocated[b] * HUNDRED / total for b in Bucket}
    if command.bucket is not None:
        effects.refused.append(
            "SET_CAPITAL for one bucket: give the account and all three percentages instead"
        )
        return
    new_account = command.capital if command.capital is not None else account
    try:
        effects.movements += ledger.allocate(
            new_account, percentages, at, f"SET_CAPITAL by {command.issued_by}: {command.reason}"
        )
    except CapitalError as refused:
        effects.refused.append(str(refused))


# ---- time-based forced exits --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ForcedExitTimes:
    close: datetime  # the day's dated close of the F&O market
    expiry_flatten_before_close: timedelta = timedelta(minutes=60)
    intraday_flat_before_close: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Unpriced:
    """A forced exit that is due but has a leg with no mark: it cannot be priced, and must be alerted."""

    trade_id: str
    instrument_keys: tuple[str, ...]
    reason: ExitReason


def forced_exit_basket_id(trade_id: str, reason: ExitReason, day: date) -> str:
    return f"fx-{reason.value.lower()}-{day:%Y%m%d}-{trade_id}"[:64]


def forced_exits(
    portfolio: Portfolio, now: datetime, times: ForcedExitTimes, issued: set[str], source: str
) -> tuple[list[ExecuteBasket], list[Unpriced]]:
    """Baskets due at `now` that have not been issued yet (their ids are in `issued` once sent)."""
    today = now.date()
    baskets: list[ExecuteBasket] = []
    unpriced: list[Unpriced] = []
    expiry_due = now >= times.close - times.expiry_flatten_before_close
    intraday_due = now >= times.close - times.intraday_flat_before_close
    for trade in portfolio.open_trades():
        if trade.origin is TradeOrigin.EXTERNAL:
            # Not VolGuard's to close on a timer: the operator opened it and is told of it (REDUCING
            # until acknowledged); it is counted in the Greeks and margin, and a kill switch or a hard
            # stop (FlattenAll) still closes it with everything else.
            continue
        stop = per_trade_stop(trade, portfolio.marks)
        if stop is not None:
            legs, reason, why = trade.open_legs(), ExitReason.STOP_LOSS, stop
        elif intraday_due and trade.bucket is Bucket.INTRADAY:
            legs, reason = trade.open_legs(), ExitReason.EOD_FLATTEN
            why = f"intraday bucket flat {times.intraday_flat_before_close} before the close"
        elif expiry_due:
            expiring = [leg for leg in trade.open_legs() if leg.contract.expiry == today]
            if not any(leg.quantity < 0 for leg in expiring):
                continue
            legs, reason = expiring, ExitReason.EXPIRY_FLATTEN
            why = f"expiring shorts flat {times.expiry_flatten_before_close} before the close"
        else:
            continue
        if reason is not ExitReason.STOP_LOSS:
            why += f" ({times.close:%H:%M} IST on {today})"
        basket_id = forced_exit_basket_id(trade.trade_id, reason, today)
        if basket_id in issued or not legs:
            continue
        missing = tuple(
            leg.contract.instrument_key for leg in legs if leg.contract.instrument_key not in portfolio.marks
        )
        if missing:
            unpriced.append(Unpriced(trade.trade_id, missing, reason))
            continue
        baskets.append(_closing_basket(trade, legs, portfolio, basket_id, reason, why, now, source))
    return baskets, unpriced


def per_trade_stop(trade: Trade, marks: Mapping[str, Decimal]) -> str | None:
    """Why `trade` must be closed now because it lost its max loss; None while it has not (or the
    loss is unknown, or nobody set a max loss: an EXTERNAL trade)."""
    if trade.max_loss is None:
        return None
    pnl = trade.pnl(marks)
    if pnl is None or pnl > -trade.max_loss:
        return None
    return (
        f"trade {trade.trade_id} lost Rs {-pnl:.2f} net of charges, at least the Rs {trade.max_loss:.2f} "
        "max loss it was approved with"
    )


def _closing_basket(
    trade: Trade,
    legs: list[LegPosition],
    portfolio: Portfolio,
    basket_id: str,
    reason: ExitReason,
    why: str,
    now: datetime,
    source: str,
) -> ExecuteBasket:
    # Shorts are bought back (BUY, sequence 0) before the wings are sold (SELL, sequence 1).
    ordered = sorted(legs, key=lambda leg: (leg.quantity > 0, leg.contract.instrument_key))
    basket_legs = [
        BasketLeg(
            instrument_key=leg.contract.instrument_key,
            expiry=leg.contract.expiry,
            strike=float(leg.contract.strike),
            option_type=leg.contract.option_type,
            side=Side.BUY if leg.quantity < 0 else Side.SELL,
            quantity=abs(leg.quantity),
            limit_price=portfolio.marks[leg.contract.instrument_key],
            leg_index=index,
            sequence=0 if leg.quantity < 0 else 1,
            client_order_id=client_order_id(basket_id, index, 0),
        )
        for index, leg in enumerate(ordered)
    ]
    lot_size = _lot_size(legs)
    return ExecuteBasket(
        ts_event=now,
        source=source,
        basket_id=basket_id,
        intent_id=None,
        purpose=IntentKind.EXIT,
        exit_reason=reason,
        trade_id=trade.trade_id,
        bucket=trade.bucket,
        structure=trade.structure,
        lot_size=lot_size,
        legs=basket_legs,
        urgency=Urgency.URGENT,
        reason=why,
    )


def _lot_size(legs: list[LegPosition]) -> int:
    # The book keeps units, not lots (a fill carries no lot size). What execution needs is a lot size
    # that divides every leg so its slices are whole lots; the greatest common divisor of the open
    # quantities always does, also for a position opened before a lot-size change.
    size = 0
    for leg in legs:
        size = gcd(size, abs(leg.quantity))
    return size
