"""Risk's trading-state table, transition by transition, by rule and by command only."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from volguard_common.clock import IST
from volguard_common.events import (
    TRADING_STATE_RANK,
    TradingCause,
    TradingState,
    TradingStateKind,
    parse_event,
)
from volguard_risk.domain.trading_state import (
    ALLOWED,
    RULES,
    Action,
    ClearRule,
    ClearRuleError,
    TradingStateMachine,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
S = TradingStateKind

PAUSING = (TradingCause.OPERATOR_PAUSE, TradingCause.CIRCUIT_BREAKER)
CONDITIONS = (
    TradingCause.STALE_DATA,
    TradingCause.VIX_SPIKE,
    TradingCause.BROKER_UNHEALTHY,
    TradingCause.UNRECONCILED,
)
ACKNOWLEDGED = (TradingCause.EXTERNAL_POSITIONS, TradingCause.STUCK_BASKET)
DAILY_FLATTEN = (TradingCause.HARD_STOP, TradingCause.DAILY_LOSS_LIMIT)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_a_fresh_machine_runs_and_allows_everything() -> None:
    machine = TradingStateMachine()
    assert machine.state is S.RUNNING
    assert all(machine.allows(action) for action in Action)


@pytest.mark.parametrize("cause", PAUSING)
def test_pause_and_circuit_breaker_allow_exits_only_until_operator_resume(cause: TradingCause) -> None:
    machine = TradingStateMachine()
    transition = machine.raise_cause(cause, at(0), "operator")
    assert transition is not None
    assert (transition.previous, transition.state) == (S.RUNNING, S.PAUSED)
    assert not machine.allows(Action.ENTRY)
    assert machine.allows(Action.MANAGEMENT_EXIT)
    assert machine.allows(Action.ADJUSTMENT)
    # Neither the calendar nor an acknowledgement lifts a pause.
    assert machine.new_trading_day(at(1)) is None
    assert machine.operator_acknowledge(at(2), "ops") is None
    with pytest.raises(ClearRuleError):
        machine.cause_cleared(cause, at(3), "no")
    resumed = machine.operator_resume(at(4), "ops")
    assert resumed is not None
    assert resumed.state is S.RUNNING
    assert resumed.previous is S.PAUSED


def test_soft_stop_reduces_until_the_next_trading_day_and_resume_does_not_lift_it() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.SOFT_STOP, at(0), "day loss 2.1 %")
    assert machine.state is S.REDUCING
    assert machine.operator_resume(at(1), "ops") is None
    assert machine.state is S.REDUCING
    cleared = machine.new_trading_day(at(24 * 60))
    assert cleared is not None
    assert cleared.state is S.RUNNING


@pytest.mark.parametrize("cause", CONDITIONS)
def test_condition_causes_reduce_until_the_condition_clears(cause: TradingCause) -> None:
    machine = TradingStateMachine()
    machine.raise_cause(cause, at(0), "seen")
    assert machine.state is S.REDUCING
    assert not machine.allows(Action.ENTRY)
    assert machine.allows(Action.MANAGEMENT_EXIT)
    # Neither a resume, an acknowledgement nor a new day lifts a condition that still holds.
    assert machine.operator_resume(at(1), "ops") is None
    assert machine.operator_acknowledge(at(1), "ops") is None
    assert machine.new_trading_day(at(2)) is None
    cleared = machine.cause_cleared(cause, at(3), "fresh again")
    assert cleared is not None
    assert cleared.state is S.RUNNING
    assert machine.cause_cleared(cause, at(4), "again") is None


@pytest.mark.parametrize("cause", ACKNOWLEDGED)
def test_external_positions_and_stuck_baskets_reduce_until_acknowledged(cause: TradingCause) -> None:
    machine = TradingStateMachine()
    machine.raise_cause(cause, at(0), "found")
    assert machine.state is S.REDUCING
    assert machine.operator_resume(at(1), "ops") is None
    assert machine.new_trading_day(at(2)) is None
    with pytest.raises(ClearRuleError):
        machine.cause_cleared(cause, at(3), "no")
    cleared = machine.operator_acknowledge(at(4), "ops")
    assert cleared is not None
    assert cleared.state is S.RUNNING


@pytest.mark.parametrize("cause", DAILY_FLATTEN)
@pytest.mark.parametrize("clear", ["new_day", "resume"])
def test_hard_stop_and_daily_loss_flatten_then_halt_until_next_open_or_resume(
    cause: TradingCause, clear: str
) -> None:
    machine = TradingStateMachine()
    machine.raise_cause(cause, at(0), "day loss 3.2 %")
    assert machine.state is S.FLATTENING
    assert machine.allows(Action.FORCED_EXIT)
    assert not machine.allows(Action.MANAGEMENT_EXIT)
    assert not machine.allows(Action.ADJUSTMENT)
    halted = machine.book_flat(at(1))
    assert halted is not None
    assert (halted.previous, halted.state) == (S.FLATTENING, S.HALTED)
    assert not any(machine.allows(action) for action in Action)
    cleared = (
        machine.new_trading_day(at(24 * 60)) if clear == "new_day" else machine.operator_resume(at(5), "ops")
    )
    assert cleared is not None
    assert cleared.state is S.RUNNING


def test_kill_switch_clears_by_operator_resume_only() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.KILL_SWITCH, at(0), "cli")
    assert machine.state is S.FLATTENING
    machine.book_flat(at(1))
    assert machine.state is S.HALTED
    assert machine.new_trading_day(at(24 * 60)) is None
    assert machine.operator_acknowledge(at(24 * 60 + 1), "ops") is None
    with pytest.raises(ClearRuleError):
        machine.cause_cleared(TradingCause.KILL_SWITCH, at(24 * 60 + 2), "no")
    assert machine.state is S.HALTED
    resumed = machine.operator_resume(at(24 * 60 + 3), "ops")
    assert resumed is not None
    assert (resumed.previous, resumed.state) == (S.HALTED, S.RUNNING)


def test_the_strictest_state_wins_and_each_cause_clears_on_its_own_rule() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.OPERATOR_PAUSE, at(0), "lunch")
    machine.raise_cause(TradingCause.STALE_DATA, at(1), "feed 20 s old")
    assert machine.state is S.REDUCING
    machine.raise_cause(TradingCause.KILL_SWITCH, at(2), "cli")
    machine.book_flat(at(3))
    assert machine.state is S.HALTED
    # Resume lifts the pause and the kill switch; the stale feed still holds.
    resumed = machine.operator_resume(at(4), "ops")
    assert resumed is not None
    assert resumed.state is S.REDUCING
    assert [c.cause for c in resumed.causes] == [TradingCause.STALE_DATA]
    cleared = machine.cause_cleared(TradingCause.STALE_DATA, at(5), "fresh")
    assert cleared is not None
    assert cleared.state is S.RUNNING


def test_a_new_flattening_cause_while_halted_flattens_again() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.HARD_STOP, at(0), "3 %")
    machine.book_flat(at(1))
    transition = machine.raise_cause(TradingCause.KILL_SWITCH, at(2), "cli")
    assert transition is not None
    assert (transition.previous, transition.state) == (S.HALTED, S.FLATTENING)


def test_raising_a_cause_that_holds_changes_nothing_and_keeps_its_start() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.VIX_SPIKE, at(0), "VIX +25 %")
    assert machine.raise_cause(TradingCause.VIX_SPIKE, at(5), "VIX +30 %") is None
    assert machine.causes[0].since == at(0)


def test_a_transition_is_a_trading_state_event_that_restores_the_machine_after_a_restart() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.EXTERNAL_POSITIONS, at(0), "2 positions")
    machine.raise_cause(TradingCause.KILL_SWITCH, at(1), "cli")
    last = machine.book_flat(at(2))
    assert last is not None
    event = last.event(source="risk/test")
    wire = parse_event(event.model_dump_json().encode())
    assert isinstance(wire, TradingState)
    restored = TradingStateMachine.restore(wire)
    assert restored.state is S.HALTED
    assert restored.causes == machine.causes
    # After the restart the rules still apply: resume lifts the kill switch, not the EXTERNAL positions.
    resumed = restored.operator_resume(at(3), "ops")
    assert resumed is not None
    assert resumed.state is S.REDUCING
    assert TradingStateMachine.restore(None).state is S.RUNNING


def test_v1_killed_is_read_as_halted() -> None:
    v1 = (
        '{"event_id":"01a251e7-b20c-74ea-b933-aa8a74afdfb6","schema_version":1,'
        '"ts_event":"2026-12-07T10:00:00+05:30","ts_init":"2026-12-07T10:00:00+05:30","source":"risk/x",'
        '"correlation_id":"c","type":"TradingState","state":"KILLED","previous":"RUNNING",'
        '"reason":"kill","since":"2026-12-07T10:00:00+05:30"}'
    )
    event = parse_event(v1.encode())
    assert isinstance(event, TradingState)
    assert event.state is S.HALTED
    assert event.causes == []


def test_the_table_covers_every_cause_with_a_non_running_state() -> None:
    assert set(RULES) == set(TradingCause)
    assert all(rule.state is not S.RUNNING for rule in RULES.values())
    assert ALLOWED[S.HALTED] == frozenset()


class TradingStateModel(RuleBasedStateMachine):
    """Any sequence of causes, clears, commands and flat books: the state is always the table's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = TradingStateMachine()
        self.minutes = 0
        self.held: set[TradingCause] = set()
        self.flat = False

    def _now(self) -> datetime:
        self.minutes += 1
        return at(self.minutes)

    @rule(cause=st.sampled_from(TradingCause))
    def raise_cause(self, cause: TradingCause) -> None:
        self.machine.raise_cause(cause, self._now(), "model")
        if cause not in self.held and RULES[cause].state is S.FLATTENING:
            self.flat = False
        self.held.add(cause)

    @rule(cause=st.sampled_from(CONDITIONS))
    def condition_ends(self, cause: TradingCause) -> None:
        self.machine.cause_cleared(cause, self._now(), "model")
        self.held.discard(cause)

    @rule()
    def resume(self) -> None:
        self.machine.operator_resume(self._now(), "model")
        self.held = {
            c
            for c in self.held
            if RULES[c].clears
            not in (ClearRule.OPERATOR_RESUME, ClearRule.NEXT_OPEN_OR_RESUME, ClearRule.OPERATOR_RESUME_ONLY)
        }

    @rule()
    def acknowledge(self) -> None:
        self.machine.operator_acknowledge(self._now(), "model")
        self.held = {c for c in self.held if RULES[c].clears is not ClearRule.OPERATOR_ACKNOWLEDGES}

    @rule()
    def new_day(self) -> None:
        self.machine.new_trading_day(self._now())
        self.held = {
            c
            for c in self.held
            if RULES[c].clears not in (ClearRule.NEXT_TRADING_DAY, ClearRule.NEXT_OPEN_OR_RESUME)
        }

    @rule()
    def flat_book(self) -> None:
        self.machine.book_flat(self._now())
        self.flat = True

    @invariant()
    def state_is_the_strictest_cause(self) -> None:
        assert {c.cause for c in self.machine.causes} == self.held
        if not self.held:
            expected = S.RUNNING
        else:
            expected = max((RULES[c].state for c in self.held), key=TRADING_STATE_RANK.__getitem__)
            if expected is S.FLATTENING and self.flat:
                expected = S.HALTED
        assert self.machine.state is expected

    @invariant()
    def kill_switch_never_allows_an_entry(self) -> None:
        if TradingCause.KILL_SWITCH in self.held:
            assert not self.machine.allows(Action.ENTRY)
            assert not self.machine.allows(Action.MANAGEMENT_EXIT)


TestTradingStateModel = TradingStateModel.TestCase
