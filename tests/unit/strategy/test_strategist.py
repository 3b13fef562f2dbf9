"""The strategy component end to end in memory: determinism, sizing properties, entry gates, exits once
per trade and rule, the tested-strike hedge and the recommendations."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.strategy.market import TS, empty_portfolio, later, market, paused, running
from volguard_common.events import (
    Bucket,
    Greeks,
    IntentKind,
    OpenTrade,
    OptionType,
    Position,
    Side,
    Structure,
    TradeIntent,
)
from volguard_common.events.orders import UNDEFINED_RISK_STRUCTURES, ExitReason
from volguard_common.events.vol import EventSeverity, PremiumSignal, Regime, SkewSignal
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.strategist import Evaluation, Strategist

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _content(intent: TradeIntent) -> dict[str, Any]:
    return intent.model_dump(exclude={"ts_init"})


def _run(config: StrategyConfig, steps: list[tuple[datetime, dict[str, Any]]]) -> list[Evaluation]:
    strategist = Strategist(config)
    out = []
    for ts, script in steps:
        strategist.on_trading_state(running(ts))
        strategist.on_portfolio(empty_portfolio(ts))
        snapshot, chains = market(**script)
        out.append(strategist.on_vol(snapshot.model_copy(update={"ts_event": ts}), chains))
    return out


def test_same_inputs_twice_give_the_same_intents() -> None:
    steps = [
        (TS, {}),
        (later(60), {"premium": PremiumSignal.NEUTRAL, "iv_percentile": 10.0, "skew": SkewSignal.NEUTRAL}),
        (later(400), {"regime": Regime.GAMMA_PIN}),
    ]
    first = _run(StrategyConfig(), steps)
    second = _run(StrategyConfig(), steps)
    a = [_content(i) for e in first for i in e.intents]
    b = [_content(i) for e in second for i in e.intents]
    assert a
    assert a == b
    assert [e.decisions for e in first] == [e.decisions for e in second]
    assert [e.recommendations.model_dump(exclude={"ts_init"}) for e in first] == [
        e.recommendations.model_dump(exclude={"ts_init"}) for e in second
    ]


def test_entries_trace_to_the_snapshot_and_expire_after_30_seconds() -> None:
    snapshot, _ = market()
    evaluation = _run(StrategyConfig(), [(TS, {})])[0]
    assert {i.bucket for i in evaluation.intents} == set(Bucket)
    for intent in evaluation.intents:
        assert intent.correlation_id == snapshot.correlation_id
        assert intent.valid_until - intent.ts_event == timedelta(seconds=30)
        assert intent.pricing is not None
        assert intent.reasons


@PROPERTY
@given(
    account=st.integers(2, 400).map(lambda lakhs: Decimal(lakhs * 100_000)),
    premium=st.sampled_from([PremiumSignal.SELL_BIG, PremiumSignal.SELL_SMALL, PremiumSignal.NEUTRAL]),
    regime=st.sampled_from([Regime.MEAN_REVERSION, Regime.GAMMA_PIN, Regime.HIGH_VOL]),
    iv_percentile=st.floats(0.0, 100.0),
    skew=st.sampled_from(SkewSignal),
    severity=st.sampled_from([None, EventSeverity.A, EventSeverity.B, EventSeverity.C]),
    event_score=st.integers(0, 5),
    undefined=st.booleans(),
)
def test_every_entry_fits_its_budget_in_whole_lots_on_the_grid_with_valid_quotes(
    account: Decimal,
    premium: PremiumSignal,
    regime: Regime,
    iv_percentile: float,
    skew: SkewSignal,
    severity: EventSeverity | None,
    event_score: int,
    undefined: bool,
) -> None:
    config = StrategyConfig(account_size=account, allow_undefined_risk=undefined)
    snapshot, chains = market(
        premium=premium, regime=regime, iv_percentile=iv_percentile, skew=skew, severity=severity,
        event_score=event_score,
    )  # fmt: skip
    strategist = Strategist(config)
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio(account_capital=account))
    evaluation = strategist.on_vol(snapshot, chains)
    for intent in evaluation.intents:
        assert intent.kind is IntentKind.ENTRY
        assert intent.max_loss is not None
        multiplier = 1.0 if severity is None else config.severity_multipliers[severity]
        assert intent.max_loss <= config.risk_budget(intent.bucket) * Decimal(repr(multiplier)) + Decimal(
            "0.01"
        )
        if intent.structure in UNDEFINED_RISK_STRUCTURES:
            assert undefined
            assert intent.bucket is not Bucket.INTRADAY
        lots = {leg.quantity // intent.lot_size for leg in intent.legs}
        assert all(leg.quantity % intent.lot_size == 0 for leg in intent.legs)
        assert min(lots) >= 1
        for leg in intent.legs:
            chain = chains[leg.expiry]
            row = list(chain.strike).index(leg.strike)  # on the chain's strike grid
            assert leg.strike % 50 == 0
            call = leg.option_type is OptionType.CE
            bid = (chain.call_bid if call else chain.put_bid)[row]
            ask = (chain.call_ask if call else chain.put_ask)[row]
            flags = int((chain.call_flags if call else chain.put_flags)[row])
            assert flags == 0
            assert bid > 0
            assert ask >= bid
            assert abs(float(leg.limit_price) - 0.5 * (bid + ask)) <= chain.tick_size / 2 + 1e-9
            assert float(leg.limit_price / Decimal(str(chain.tick_size))).is_integer()


def test_gates_cooldown_state_and_the_close() -> None:
    config = StrategyConfig()
    strategist = Strategist(config)
    snapshot, chains = market()
    # Nothing from risk yet: entries wait, saying why.
    first = strategist.on_vol(snapshot, chains)
    assert not first.intents
    assert all("no trading state" in d.reasons[-1] for d in first.decisions)
    strategist.on_trading_state(paused())
    strategist.on_portfolio(empty_portfolio())
    assert not strategist.on_vol(snapshot, chains).intents
    strategist.on_trading_state(running(later(1)))
    entered = strategist.on_vol(snapshot.model_copy(update={"ts_event": later(2)}), chains)
    assert {i.bucket for i in entered.intents} == set(Bucket)
    cooling = strategist.on_vol(snapshot.model_copy(update={"ts_event": later(200)}), chains)
    assert not cooling.intents
    assert all("cooldown" in d.reasons[-1] for d in cooling.decisions)
    assert strategist.on_vol(snapshot.model_copy(update={"ts_event": later(302)}), chains).intents
    # 14:50 on a 15:30 close: the intraday flat (15 min before) would close an intraday entry within 30 min.
    late = TS.replace(hour=14, minute=50)
    fresh = Strategist(config)
    fresh.on_trading_state(running(late))
    fresh.on_portfolio(empty_portfolio(late))
    evening = fresh.on_vol(snapshot.model_copy(update={"ts_event": late}), chains)
    assert {i.bucket for i in evening.intents} == {Bucket.WEEKLY, Bucket.MONTHLY}
    assert "intraday flat" in next(d for d in evening.decisions if d.bucket is Bucket.INTRADAY).reasons[-1]


def test_no_free_capital_no_entry() -> None:
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio(used=Decimal(2_000_000)))
    snapshot, chains = market()
    evaluation = strategist.on_vol(snapshot, chains)
    assert not evaluation.intents
    assert all("free capital" in d.reasons[-1] or "zero lots" in d.reasons[-1] for d in evaluation.decisions)


def _condor_trade(
    intent: TradeIntent, credit: Decimal, cost_to_close: Decimal, delta: float = 0.0
) -> OpenTrade:
    legs = [
        Position(
            instrument_key=leg.instrument_key, expiry=leg.expiry, strike=leg.strike,
            option_type=leg.option_type,
            quantity=leg.quantity if leg.side is Side.BUY else -leg.quantity, avg_price=leg.limit_price,
            mark=leg.limit_price, unrealised_pnl=Decimal(0), realised_pnl=Decimal(0),
        )
        for leg in intent.legs
    ]  # fmt: skip
    return OpenTrade(
        trade_id="t-1", intent_id=intent.intent_id, bucket=intent.bucket, structure=intent.structure,
        opened_at=intent.ts_event, nearest_expiry=min(leg.expiry for leg in intent.legs), legs=legs,
        entry_credit=credit, cost_to_close=cost_to_close, unrealised_pnl=credit - cost_to_close,
        greeks=Greeks(delta=delta, gamma=0.0, vega=0.0, theta=0.0),
    )  # fmt: skip


def _with_trade(strategist: Strategist, trade: OpenTrade, ts: datetime, net_delta: float = 0.0) -> None:
    positions = trade.legs
    strategist.on_portfolio(
        empty_portfolio(
            ts,
            positions=positions,
            trades=[trade],
            net_greeks=Greeks(delta=net_delta, gamma=0.0, vega=0.0, theta=0.0),
        )
    )


def test_profit_target_and_stop_are_proposed_once_per_trade_and_rule() -> None:
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    snapshot, chains = market()
    condor = next(i for i in strategist.on_vol(snapshot, chains).intents if i.bucket is Bucket.WEEKLY)
    credit = condor.expected_credit
    _with_trade(strategist, _condor_trade(condor, credit, credit * Decimal("0.6")), later(10))
    exits = [
        i
        for i in strategist.on_vol(snapshot.model_copy(update={"ts_event": later(10)}), chains).intents
        if i.kind is IntentKind.EXIT
    ]
    assert [(i.exit_reason, i.trade_id) for i in exits] == [(ExitReason.PROFIT_TARGET, "t-1")]
    assert "35" in exits[0].reason
    # Closing buys back the shorts and sells the wings: every leg reversed, same quantity.
    assert sorted((leg.strike, leg.side) for leg in exits[0].legs) == sorted(
        (leg.strike, Side.BUY if leg.side is Side.SELL else Side.SELL) for leg in condor.legs
    )
    again = strategist.on_vol(snapshot.model_copy(update={"ts_event": later(11)}), chains)
    assert not [i for i in again.intents if i.kind is IntentKind.EXIT]
    # A loss of twice the credit trips the stop, once.
    _with_trade(strategist, _condor_trade(condor, credit, credit * 3), later(12))
    stops = [
        i
        for i in strategist.on_vol(snapshot.model_copy(update={"ts_event": later(12)}), chains).intents
        if i.kind is IntentKind.EXIT
    ]
    assert [i.exit_reason for i in stops] == [ExitReason.STOP_LOSS]


def test_regime_change_exit_names_both_regimes() -> None:
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    snapshot, chains = market()
    condor = next(i for i in strategist.on_vol(snapshot, chains).intents if i.bucket is Bucket.MONTHLY)
    _with_trade(strategist, _condor_trade(condor, condor.expected_credit, condor.expected_credit), later(5))
    strategist.on_vol(snapshot.model_copy(update={"ts_event": later(5)}), chains)
    rising, _ = market(regime=Regime.RISING_VOL)
    exits = [
        i
        for i in strategist.on_vol(rising.model_copy(update={"ts_event": later(6)}), chains).intents
        if i.kind is IntentKind.EXIT
    ]
    assert [i.exit_reason for i in exits] == [ExitReason.REGIME_CHANGE]
    assert "MEAN_REVERSION" in exits[0].reason
    assert "RISING_VOL" in exits[0].reason


def test_a_tested_short_strike_gets_a_priced_hedge_charged_to_the_intraday_bucket() -> None:
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    snapshot, chains = market()
    condor = next(i for i in strategist.on_vol(snapshot, chains).intents if i.bucket is Bucket.WEEKLY)
    short_put = next(leg for leg in condor.legs if leg.side is Side.SELL and leg.option_type is OptionType.PE)
    trade = _condor_trade(condor, condor.expected_credit, condor.expected_credit)
    _with_trade(strategist, trade, later(5))
    # NIFTY falls to 40 points above the short put: within a quarter of the expected move.
    tested = snapshot.model_copy(update={"ts_event": later(5), "spot": short_put.strike + 40})
    adjustments = [i for i in strategist.on_vol(tested, chains).intents if i.kind is IntentKind.ADJUST]
    assert len(adjustments) == 1
    hedge = adjustments[0]
    assert hedge.trade_id == "t-1"
    assert hedge.bucket is Bucket.INTRADAY
    assert hedge.structure is Structure.HEDGE
    (leg,) = hedge.legs
    assert leg.side is Side.BUY
    assert leg.option_type is OptionType.PE
    assert leg.strike == short_put.strike + 50
    assert leg.quantity == short_put.quantity
    assert hedge.max_loss == leg.limit_price * leg.quantity
    assert hedge.pricing is not None
    assert hedge.pricing.breakevens == [round(leg.strike - float(leg.limit_price), 2)]
    assert hedge.pricing.margin_required == 0
    assert hedge.pricing.costs > 0
    assert "within 0.25 of the expected" in hedge.reason
    repeat = strategist.on_vol(tested.model_copy(update={"ts_event": later(6)}), chains)
    assert not [i for i in repeat.intents if i.kind is IntentKind.ADJUST]
    # Exits and hedges still go out while risk pauses entries.
    pausing = Strategist(StrategyConfig())
    pausing.on_trading_state(paused())
    _with_trade(pausing, trade, later(5))
    assert [i.kind for i in pausing.on_vol(tested, chains).intents] == [IntentKind.ADJUST]


def test_portfolio_delta_drift_buys_options_against_it() -> None:
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    snapshot, chains = market()
    condor = next(i for i in strategist.on_vol(snapshot, chains).intents if i.bucket is Bucket.MONTHLY)
    # 180 is past 75 % of the 200 limit (drift to hedge), not past the limit (a Greek stop).
    trade = _condor_trade(condor, condor.expected_credit, condor.expected_credit, delta=180.0)
    _with_trade(strategist, trade, later(5), net_delta=180.0)
    adjustments = [
        i
        for i in strategist.on_vol(snapshot.model_copy(update={"ts_event": later(5)}), chains).intents
        if i.kind is IntentKind.ADJUST
    ]
    assert len(adjustments) == 1
    (leg,) = adjustments[0].legs
    assert leg.side is Side.BUY
    assert leg.option_type is OptionType.PE
    assert "delta +180" in adjustments[0].reason


def test_recommendations_rank_proposals_across_buckets_by_the_models_figures() -> None:
    evaluation = _run(StrategyConfig(), [(TS, {})])[0]
    recommendations = evaluation.recommendations.recommendations
    assert 3 <= len(recommendations) <= 5
    assert {r.bucket for r in recommendations} >= {Bucket.WEEKLY, Bucket.MONTHLY}
    scores = [r.suitability for r in recommendations]
    assert scores == sorted(scores, reverse=True)
    by_bucket = {i.bucket: i for i in evaluation.intents}
    for r in recommendations:
        intent = by_bucket[r.bucket]
        if r.structure is intent.structure:
            assert intent.pricing is not None
            assert r.expected_return == intent.pricing.expected_value
            assert r.capital_required == intent.pricing.margin_required


def test_portfolio_delta_beyond_its_limit_closes_the_trade_carrying_it() -> None:
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    snapshot, chains = market()
    condor = next(i for i in strategist.on_vol(snapshot, chains).intents if i.bucket is Bucket.MONTHLY)
    trade = _condor_trade(condor, condor.expected_credit, condor.expected_credit, delta=-260.0)
    _with_trade(strategist, trade, later(5), net_delta=-260.0)
    later_snapshot = snapshot.model_copy(update={"ts_event": later(5)})
    exits = [i for i in strategist.on_vol(later_snapshot, chains).intents if i.kind is not IntentKind.ENTRY]
    assert [(i.kind, i.exit_reason) for i in exits] == [(IntentKind.EXIT, ExitReason.GREEK_STOP)]
    assert "portfolio delta -260 beyond the limit 200" in exits[0].reason
    again = strategist.on_vol(later_snapshot.model_copy(update={"ts_event": later(6)}), chains)
    assert not [i for i in again.intents if i.kind is not IntentKind.ENTRY]
