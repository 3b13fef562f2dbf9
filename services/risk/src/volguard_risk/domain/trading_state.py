"""Risk's trading state: which causes hold, the strictest state they demand, and how each one clears.

The table below is the whole rule (issue "Risk and capital service", trading states). Several causes may
hold at once; the strictest state wins and each cause clears on its own rule, so a soft stop that clears
at the next trading day does not lift a kill switch, and an operator resume does not lift a soft stop.

| cause                                    | state                 | clears when                            |
|------------------------------------------|-----------------------|----------------------------------------|
| operator pause, dashboard circuit breaker| PAUSED                | operator resume                        |
| soft stop (day loss >= soft stop %)      | REDUCING              | next trading day                       |
| stale data, VIX spike, broker unhealthy, | REDUCING              | the cause clears                       |
| unreconciled book                        |                       |                                        |
| EXTERNAL positions, a STUCK basket       | REDUCING              | operator acknowledges                  |
| hard stop, daily loss limit              | FLATTENING -> HALTED  | next trading day's open, or resume     |
| kill switch                              | FLATTENING -> HALTED  | operator resume only                   |

FLATTENING becomes HALTED once the book is flat (no position, no working order) after the flattening
cause was raised; a further flattening cause raised while HALTED flattens again.

Pure and event-time only: no I/O, no wall clock. The service persists each transition (Postgres row
and `rk.state` event) and restores the machine from the last one after a restart or failover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from volguard_common.events import (
    TRADING_STATE_RANK,
    ActiveCause,
    TradingCause,
    TradingState,
    TradingStateKind,
)


class ClearRule(StrEnum):
    OPERATOR_RESUME = "operator resume"
    NEXT_TRADING_DAY = "next trading day"
    CAUSE_CLEARS = "the cause clears"
    OPERATOR_ACKNOWLEDGES = "operator acknowledges"
    NEXT_OPEN_OR_RESUME = "next trading day's open, or operator resume"
    OPERATOR_RESUME_ONLY = "operator resume only"


class Action(StrEnum):
    """What a proposal or command would do, as the state table allows it."""

    ENTRY = "ENTRY"  # a new trade
    MANAGEMENT_EXIT = "MANAGEMENT_EXIT"  # strategy's profit target, stops, regime exit
    ADJUSTMENT = "ADJUSTMENT"  # a hedge or roll of an open trade
    FORCED_EXIT = "FORCED_EXIT"  # risk's own: stops, kill switch, expiry and intraday flatten


@dataclass(frozen=True, slots=True)
class CauseRule:
    state: TradingStateKind
    clears: ClearRule


RULES: dict[TradingCause, CauseRule] = {
    TradingCause.OPERATOR_PAUSE: CauseRule(TradingStateKind.PAUSED, ClearRule.OPERATOR_RESUME),
    TradingCause.CIRCUIT_BREAKER: CauseRule(TradingStateKind.PAUSED, ClearRule.OPERATOR_RESUME),
    TradingCause.SOFT_STOP: CauseRule(TradingStateKind.REDUCING, ClearRule.NEXT_TRADING_DAY),
    TradingCause.STALE_DATA: CauseRule(TradingStateKind.REDUCING, ClearRule.CAUSE_CLEARS),
    TradingCause.VIX_SPIKE: CauseRule(TradingStateKind.REDUCING, ClearRule.CAUSE_CLEARS),
    TradingCause.BROKER_UNHEALTHY: CauseRule(TradingStateKind.REDUCING, ClearRule.CAUSE_CLEARS),
    TradingCause.UNRECONCILED: CauseRule(TradingStateKind.REDUCING, ClearRule.CAUSE_CLEARS),
    TradingCause.EXTERNAL_POSITIONS: CauseRule(TradingStateKind.REDUCING, ClearRule.OPERATOR_ACKNOWLEDGES),
    TradingCause.STUCK_BASKET: CauseRule(TradingStateKind.REDUCING, ClearRule.OPERATOR_ACKNOWLEDGES),
    TradingCause.HARD_STOP: CauseRule(TradingStateKind.FLATTENING, ClearRule.NEXT_OPEN_OR_RESUME),
    TradingCause.DAILY_LOSS_LIMIT: CauseRule(TradingStateKind.FLATTENING, ClearRule.NEXT_OPEN_OR_RESUME),
    TradingCause.KILL_SWITCH: CauseRule(TradingStateKind.FLATTENING, ClearRule.OPERATOR_RESUME_ONLY),
}
assert set(RULES) == set(TradingCause), "every cause needs a row in the table"

ALLOWED: dict[TradingStateKind, frozenset[Action]] = {
    TradingStateKind.RUNNING: frozenset(Action),
    TradingStateKind.PAUSED: frozenset({Action.MANAGEMENT_EXIT, Action.ADJUSTMENT, Action.FORCED_EXIT}),
    TradingStateKind.REDUCING: frozenset({Action.MANAGEMENT_EXIT, Action.ADJUSTMENT, Action.FORCED_EXIT}),
    TradingStateKind.FLATTENING: frozenset({Action.FORCED_EXIT}),
    TradingStateKind.HALTED: frozenset(),
}

_CLEARED_BY_RESUME = frozenset(
    {ClearRule.OPERATOR_RESUME, ClearRule.NEXT_OPEN_OR_RESUME, ClearRule.OPERATOR_RESUME_ONLY}
)
_CLEARED_BY_NEW_DAY = frozenset({ClearRule.NEXT_TRADING_DAY, ClearRule.NEXT_OPEN_OR_RESUME})


class ClearRuleError(ValueError):
    """A cause was asked to clear by a rule that is not its own (e.g. a kill switch by the calendar)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state or of the causes in force: one `rk.state` event and one Postgres row."""

    at: datetime
    state: TradingStateKind
    previous: TradingStateKind
    reason: str
    causes: tuple[ActiveCause, ...]

    def event(self, *, source: str, correlation_id: str | None = None) -> TradingState:
        fields: dict[str, object] = {}
        if correlation_id is not None:
            fields["correlation_id"] = correlation_id
        return TradingState(
            ts_event=self.at,
            source=source,
            state=self.state,
            previous=self.previous,
            reason=self.reason,
            since=self.at,
            causes=list(self.causes),
            **fields,  # type: ignore[arg-type]
        )


class TradingStateMachine:
    """The causes in force and the state they demand; every method returns the transition it caused."""

    def __init__(self, *, causes: Iterable[ActiveCause] = (), flat: bool = False) -> None:
        self._causes: dict[TradingCause, ActiveCause] = {}
        for active in causes:
            if active.cause in self._causes:
                raise ValueError(f"cause {active.cause.value} given twice")
            self._causes[active.cause] = active
        # The book has been flat since the last flattening cause was raised (FLATTENING -> HALTED).
        self._flat = flat

    @classmethod
    def restore(cls, last: TradingState | None) -> TradingStateMachine:
        """The machine as the last persisted transition left it (RUNNING with no causes if none)."""
        if last is None:
            return cls()
        return cls(causes=last.causes, flat=last.state is TradingStateKind.HALTED)

    # ---- reading ------------------------------------------------------------------------------
    @property
    def state(self) -> TradingStateKind:
        if not self._causes:
            return TradingStateKind.RUNNING
        strictest = max((RULES[c].state for c in self._causes), key=TRADING_STATE_RANK.__getitem__)
        if strictest is TradingStateKind.FLATTENING and self._flat:
            return TradingStateKind.HALTED
        return strictest

    @property
    def causes(self) -> tuple[ActiveCause, ...]:
        """In force, in the table's order (stable, so two replays give the same events)."""
        return tuple(self._causes[c] for c in TradingCause if c in self._causes)

    def holds(self, cause: TradingCause) -> bool:
        return cause in self._causes

    def allows(self, action: Action) -> bool:
        return action in ALLOWED[self.state]

    # ---- changing -----------------------------------------------------------------------------
    def raise_cause(self, cause: TradingCause, at: datetime, detail: str) -> Transition | None:
        """A cause now holds. Raising one that already holds changes nothing (its start stays)."""
        if cause in self._causes:
            return None
        return self._change(
            at,
            f"{cause.value}: {detail}",
            add=ActiveCause(cause=cause, since=at, detail=detail),
            reflatten=RULES[cause].state is TradingStateKind.FLATTENING,
        )

    def cause_cleared(self, cause: TradingCause, at: datetime, detail: str) -> Transition | None:
        """A condition-type cause (stale data, VIX spike, broker, reconciliation) no longer holds."""
        rule = RULES[cause].clears
        if rule is not ClearRule.CAUSE_CLEARS:
            raise ClearRuleError(f"{cause.value} clears on {rule.value}, not when its condition ends")
        if cause not in self._causes:
            return None
        return self._change(at, f"{cause.value} cleared: {detail}", remove=(cause,))

    def operator_resume(self, at: datetime, by: str) -> Transition | None:
        """Lifts pauses, circuit breaker, hard stop, daily loss limit and kill switch; nothing else."""
        return self._clear_by(_CLEARED_BY_RESUME, at, f"operator resume by {by}")

    def operator_acknowledge(self, at: datetime, by: str) -> Transition | None:
        """The operator has seen the EXTERNAL positions / STUCK basket."""
        return self._clear_by(frozenset({ClearRule.OPERATOR_ACKNOWLEDGES}), at, f"acknowledged by {by}")

    def new_trading_day(self, at: datetime) -> Transition | None:
        """The next trading day's open: soft stop, hard stop and daily loss clear; a kill switch stays."""
        return self._clear_by(_CLEARED_BY_NEW_DAY, at, f"new trading day {at.date().isoformat()}")

    def book_flat(self, at: datetime) -> Transition | None:
        """Execution reports no position and no working order: FLATTENING ends in HALTED."""
        if self._flat:
            return None
        before = self.state
        self._flat = True
        if self.state is before:
            return None
        return Transition(at, self.state, before, "book flat after flattening", self.causes)

    def _clear_by(self, rules: frozenset[ClearRule], at: datetime, reason: str) -> Transition | None:
        gone = tuple(c for c in self._causes if RULES[c].clears in rules)
        if not gone:
            return None
        return self._change(at, f"{reason}: {', '.join(c.value for c in gone)} cleared", remove=gone)

    def _change(
        self,
        at: datetime,
        reason: str,
        *,
        add: ActiveCause | None = None,
        remove: tuple[TradingCause, ...] = (),
        reflatten: bool = False,
    ) -> Transition:
        before = self.state
        for cause in remove:
            del self._causes[cause]
        if add is not None:
            self._causes[add.cause] = add
        if reflatten:
            self._flat = False
        return Transition(at, self.state, before, reason, self.causes)
