"""Loss stops, operator commands and time-based forced exits, in event time."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from volguard_common.clock import IST
from volguard_common.events import (
    Bucket,
    Command,
    CommandKind,
    ExitReason,
    Fill,
    OptionType,
    Side,
    Structure,
    TradingCause,
    TradingStateKind,
    Urgency,
)
from volguard_risk.domain.capital import CapitalLedger
from volguard_risk.domain.controls import (
    ForcedExitTimes,
    StopLevels,
    apply_command,
    forced_exit_basket_id,
    forced_exits,
    loss_stops,
)
from volguard_risk.domain.portfolio import Contract, Portfolio, TradeOrigin
from volguard_risk.domain.trading_state import TradingStateMachine

T0 = datetime(2026, 12, 8, 10, 0, tzinfo=IST)
CLOSE = datetime(2026, 12, 8, 15, 30, tzinfo=IST)
ACCOUNT = Decimal(2000000)
SPLIT = {Bucket.WEEKLY: Decimal(40), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(10)}
LEVELS = StopLevels(ACCOUNT)


def command(kind: CommandKind, **arguments: object) -> Command:
    return Command(ts_event=T0, source="cli/test", command=kind, issued_by="ops", reason="test", **arguments)  # type: ignore[arg-type]


def ledger() -> CapitalLedger:
    book = CapitalLedger()
    book.allocate(ACCOUNT, SPLIT, T0, "start")
    return book


def test_a_kill_switch_flattens_and_only_resume_clears_it() -> None:
    machine = TradingStateMachine()
    kill = command(CommandKind.KILL_SWITCH)
    effects = apply_command(kill, machine, ledger(), ACCOUNT, T0, "risk/test")
    assert machine.state is TradingStateKind.FLATTENING
    assert [(f.reason, f.correlation_id) for f in effects.flatten] == [
        (ExitReason.KILL_SWITCH, kill.correlation_id)
    ]
    machine.new_trading_day(T0 + timedelta(days=1))
    assert machine.holds(TradingCause.KILL_SWITCH)
    apply_command(command(CommandKind.RESUME), machine, ledger(), ACCOUNT, T0, "risk/test")
    assert machine.state is TradingStateKind.RUNNING


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        (CommandKind.PAUSE, TradingCause.OPERATOR_PAUSE),
        (CommandKind.CIRCUIT_BREAKER, TradingCause.CIRCUIT_BREAKER),
    ],
)
def test_pause_and_circuit_breaker_stop_entries_until_resume(kind: CommandKind, cause: TradingCause) -> None:
    machine = TradingStateMachine()
    effects = apply_command(command(kind), machine, ledger(), ACCOUNT, T0, "risk/test")
    assert (machine.state, effects.flatten) == (TradingStateKind.PAUSED, [])
    assert machine.holds(cause)
    apply_command(command(CommandKind.RESUME), machine, ledger(), ACCOUNT, T0, "risk/test")
    assert machine.state is TradingStateKind.RUNNING


def test_acknowledge_clears_external_positions_but_not_a_pause() -> None:
    machine = TradingStateMachine()
    machine.raise_cause(TradingCause.EXTERNAL_POSITIONS, T0, "NSE_FO|X -65")
    machine.raise_cause(TradingCause.OPERATOR_PAUSE, T0, "ops")
    apply_command(command(CommandKind.ACKNOWLEDGE), machine, ledger(), ACCOUNT, T0, "risk/test")
    assert machine.causes[0].cause is TradingCause.OPERATOR_PAUSE
    assert len(machine.causes) == 1


def test_flatten_names_the_bucket_and_changes_no_state() -> None:
    machine = TradingStateMachine()
    effects = apply_command(
        command(CommandKind.FLATTEN, bucket=Bucket.INTRADAY), machine, ledger(), ACCOUNT, T0, "risk/test"
    )
    assert [(f.reason, f.bucket) for f in effects.flatten] == [(ExitReason.OPERATOR, Bucket.INTRADAY)]
    assert machine.state is TradingStateKind.RUNNING


def test_reallocation_carries_all_three_percentages_and_must_sum_to_100() -> None:
    book = ledger()
    effects = apply_command(
        command(
            CommandKind.SET_CAPITAL,
            weekly_pct=Decimal(30),
            monthly_pct=Decimal(60),
            intraday_pct=Decimal(10),
        ),
        TradingStateMachine(),
        book,
        ACCOUNT,
        T0,
        "risk/test",
    )
    assert effects.refused == []
    assert book.balance(Bucket.MONTHLY).allocated == Decimal(1200000)
    refused = apply_command(
        command(
            CommandKind.SET_CAPITAL, weekly_pct=Decimal(30), monthly_pct=Decimal(60), intraday_pct=Decimal(5)
        ),
        TradingStateMachine(),
        book,
        ACCOUNT,
        T0,
        "risk/test",
    )
    assert refused.movements == []
    assert "sum to 100" in refused.refused[0]


def test_reallocation_is_refused_when_a_bucket_would_drop_below_what_it_holds() -> None:
    book = ledger()
    book.reserve(Bucket.INTRADAY, "bk-1", Decimal(150000), T0, "test")
    effects = apply_command(
        command(
            CommandKind.SET_CAPITAL, weekly_pct=Decimal(45), monthly_pct=Decimal(50), intraday_pct=Decimal(5)
        ),
        TradingStateMachine(),
        book,
        ACCOUNT,
        T0,
        "risk/test",
    )
    assert effects.movements == []
    assert "INTRADAY would get 100000" in effects.refused[0]


def test_a_command_with_some_percentages_is_refused_at_the_boundary() -> None:
    with pytest.raises(ValidationError, match="all three"):
        command(CommandKind.SET_CAPITAL, weekly_pct=Decimal(50), monthly_pct=Decimal(50))
    with pytest.raises(ValidationError, match="takes no re-allocation"):
        command(CommandKind.PAUSE, weekly_pct=Decimal(40), monthly_pct=Decimal(50), intraday_pct=Decimal(10))


def test_a_version_1_command_still_reads() -> None:
    old = command(CommandKind.SET_CAPITAL, capital=Decimal(2500000)).model_dump(mode="json")
    old["schema_version"] = 1
    assert Command.model_validate_json(json.dumps(old)).percentages is None


@pytest.mark.parametrize(
    ("loss", "causes", "flattens"),
    [
        (Decimal(39999), [], False),
        (Decimal(40000), [TradingCause.SOFT_STOP], False),
        (
            Decimal(60000),
            [TradingCause.SOFT_STOP, TradingCause.HARD_STOP, TradingCause.DAILY_LOSS_LIMIT],
            True,
        ),
    ],
)
def test_loss_stops_by_the_days_loss(loss: Decimal, causes: list[TradingCause], flattens: bool) -> None:
    machine = TradingStateMachine()
    effects = loss_stops(-loss, LEVELS, machine, T0, "risk/test")
    assert [c.cause for c in machine.causes] == causes
    assert len(effects.flatten) == (1 if flattens else 0)


def test_an_unknown_day_pnl_raises_no_stop() -> None:
    machine = TradingStateMachine()
    loss_stops(None, LEVELS, machine, T0, "risk/test")
    assert machine.state is TradingStateKind.RUNNING


TODAY = T0.date()
NEXT_WEEK = date(2026, 12, 15)


def fill(n: int, basket: str, key: str, expiry: date, strike: float, kind: OptionType, side: Side) -> Fill:
    return Fill(
        ts_event=T0,
        source="execution/test",
        fill_id=f"f{n}",
        client_order_id=f"c{n}",
        broker_order_id=f"o{n}",
        basket_id=basket,
        leg_index=0,
        instrument_key=key,
        expiry=expiry,
        strike=strike,
        option_type=kind,
        side=side,
        quantity=65,
        price=Decimal("50"),
        fees=Decimal(0),
    )


def book() -> Portfolio:
    portfolio = Portfolio(ACCOUNT, brokerage_per_order=Decimal(20))
    portfolio.open_trade("weekly-1", Bucket.WEEKLY, Structure.CREDIT_SPREAD, T0, origin=TradeOrigin.VOLGUARD)
    portfolio.expect_basket("b1", "weekly-1")
    portfolio.apply_fill(fill(1, "b1", "P1", TODAY, 23800.0, OptionType.PE, Side.BUY))
    portfolio.apply_fill(fill(2, "b1", "P2", TODAY, 23900.0, OptionType.PE, Side.SELL))
    portfolio.open_trade("intra-1", Bucket.INTRADAY, Structure.CREDIT_SPREAD, T0, origin=TradeOrigin.VOLGUARD)
    portfolio.expect_basket("b2", "intra-1")
    portfolio.apply_fill(fill(3, "b2", "C1", NEXT_WEEK, 24200.0, OptionType.CE, Side.SELL))
    portfolio.apply_fill(fill(4, "b2", "C2", NEXT_WEEK, 24300.0, OptionType.CE, Side.BUY))
    portfolio.mark({k: Decimal("40") for k in ("P1", "P2", "C1", "C2")})
    return portfolio


TIMES = ForcedExitTimes(close=CLOSE)


def test_nothing_is_forced_before_the_offsets() -> None:
    at = CLOSE - timedelta(minutes=61)
    assert forced_exits(book(), at, TIMES, set(), "risk/test") == ([], [])


def test_expiring_shorts_are_closed_60_minutes_before_the_close_shorts_first() -> None:
    baskets, unpriced = forced_exits(book(), CLOSE - timedelta(minutes=60), TIMES, set(), "risk/test")
    assert unpriced == []
    assert [b.trade_id for b in baskets] == ["weekly-1"]
    basket = baskets[0]
    assert (basket.exit_reason, basket.urgency) == (ExitReason.EXPIRY_FLATTEN, Urgency.URGENT)
    assert [(leg.instrument_key, leg.side, leg.sequence) for leg in basket.legs_in_order()] == [
        ("P2", Side.BUY, 0),
        ("P1", Side.SELL, 1),
    ]
    assert basket.basket_id == forced_exit_basket_id("weekly-1", ExitReason.EXPIRY_FLATTEN, TODAY)


def test_the_intraday_bucket_is_flat_15_minutes_before_the_close_and_each_basket_goes_once() -> None:
    at = CLOSE - timedelta(minutes=15)
    portfolio = book()
    issued = {forced_exit_basket_id("weekly-1", ExitReason.EXPIRY_FLATTEN, TODAY)}
    baskets, _ = forced_exits(portfolio, at, TIMES, issued, "risk/test")
    assert [(b.trade_id, b.exit_reason) for b in baskets] == [("intra-1", ExitReason.EOD_FLATTEN)]
    issued.add(baskets[0].basket_id)
    assert forced_exits(portfolio, at + timedelta(minutes=1), TIMES, issued, "risk/test") == ([], [])


def test_an_external_position_is_never_closed_on_a_timer() -> None:
    # An operator's own short expiring today, adopted from the broker: counted and alerted, but the
    # expiry and intraday timers are VolGuard's rules for VolGuard's trades.
    portfolio = book()
    portfolio.adopt_external(
        "ext-1", Contract("X1", TODAY, Decimal(23700), OptionType.PE), -65, Decimal("30"), T0
    )
    portfolio.mark({"X1": Decimal("35")})
    for at in (CLOSE - timedelta(minutes=60), CLOSE - timedelta(minutes=15)):
        baskets, unpriced = forced_exits(portfolio, at, TIMES, set(), "risk/test")
        assert "ext-1" not in {b.trade_id for b in baskets} | {u.trade_id for u in unpriced}
        assert baskets  # VolGuard's own trades are still closed at those times


def test_a_due_exit_without_a_mark_is_reported_not_priced_at_a_guess() -> None:
    portfolio = Portfolio(ACCOUNT, brokerage_per_order=Decimal(20))
    portfolio.open_trade("w", Bucket.WEEKLY, Structure.CREDIT_SPREAD, T0, origin=TradeOrigin.VOLGUARD)
    portfolio.expect_basket("b1", "w")
    portfolio.apply_fill(fill(1, "b1", "P2", TODAY, 23900.0, OptionType.PE, Side.SELL))
    baskets, unpriced = forced_exits(portfolio, CLOSE - timedelta(minutes=30), TIMES, set(), "risk/test")
    assert baskets == []
    assert [(u.trade_id, u.instrument_keys) for u in unpriced] == [("w", ("P2",))]


def short_put_trade(max_loss: Decimal | None, origin: TradeOrigin = TradeOrigin.VOLGUARD) -> Portfolio:
    """One short put sold at 50 (65 units), approved to lose at most `max_loss`."""
    portfolio = Portfolio(ACCOUNT, brokerage_per_order=Decimal(20))
    portfolio.open_trade("w", Bucket.WEEKLY, Structure.CUSTOM, T0, origin=origin, max_loss=max_loss)
    portfolio.expect_basket("b1", "w")
    portfolio.apply_fill(fill(1, "b1", "P2", NEXT_WEEK, 23900.0, OptionType.PE, Side.SELL))
    return portfolio


def test_a_trade_that_lost_its_max_loss_is_closed_whole_at_any_time_of_day_once() -> None:
    portfolio = short_put_trade(Decimal(1000))
    portfolio.mark({"P2": Decimal(60)})  # lost 650 plus charges: inside the budget
    assert forced_exits(portfolio, T0, TIMES, set(), "risk/test") == ([], [])
    portfolio.mark({"P2": Decimal(70)})  # lost 1300 plus charges
    baskets, unpriced = forced_exits(portfolio, T0, TIMES, set(), "risk/test")
    assert unpriced == []
    [basket] = baskets
    assert (basket.trade_id, basket.exit_reason, basket.urgency) == (
        "w",
        ExitReason.STOP_LOSS,
        Urgency.URGENT,
    )
    assert [(leg.instrument_key, leg.side, leg.quantity, leg.limit_price) for leg in basket.legs] == [
        ("P2", Side.BUY, 65, Decimal(70))
    ]
    assert "max loss" in basket.reason
    assert forced_exits(portfolio, T0, TIMES, {basket.basket_id}, "risk/test") == ([], [])


def test_no_per_trade_stop_on_an_unknown_pnl_or_without_a_max_loss() -> None:
    unmarked = short_put_trade(Decimal(1000))
    assert forced_exits(unmarked, T0, TIMES, set(), "risk/test") == ([], [])
    external = short_put_trade(None, TradeOrigin.EXTERNAL)
    external.mark({"P2": Decimal(500)})
    assert forced_exits(external, T0, TIMES, set(), "risk/test") == ([], [])
