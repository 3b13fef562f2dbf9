"""The rule table, row by row: each row is the first match for a scripted market, and the structure it
names is what the strategist proposes (or waits with the row's reason) on a scripted VolSnapshot."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.unit.strategy.market import empty_portfolio, market, running
from volguard_common.events import Bucket, IntentKind, Structure
from volguard_common.events.vol import (
    EventSeverity,
    PremiumSignal,
    Quality,
    Regime,
    SkewSignal,
    TermSignal,
    TrendDirection,
)
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import Signals, read_signals
from volguard_strategy.domain.rules import RULES, choose, rule_table_markdown
from volguard_strategy.domain.strategist import Strategist

CALM = Signals(
    quality=Quality.GOOD,
    quality_reasons=(),
    regime=Regime.MEAN_REVERSION,
    trend_direction=None,
    atm_iv_percentile=60.0,
    atm_iv_rank=55.0,
    vix_percentile=50.0,
    premium=PremiumSignal.NEUTRAL,
    iv_rv_spread=0.01,
    iv_garch_spread=0.01,
    term=TermSignal.STEEP,
    skew=SkewSignal.NEUTRAL,
    event_score=0,
    event_severity=None,
    vix_spike=False,
    is_expiry_day=False,
)
UNDEFINED = StrategyConfig(allow_undefined_risk=True)

# rule name -> (changes to the calm market, bucket, config): the market in which that row decides.
SCENARIOS: dict[str, tuple[dict[str, Any], Bucket, StrategyConfig]] = {
    "bad_data": (
        {"quality": Quality.BAD, "quality_reasons": ("feed stale",)},
        Bucket.WEEKLY,
        StrategyConfig(),
    ),
    "vix_spike": ({"vix_spike": True}, Bucket.WEEKLY, StrategyConfig()),
    "premium_avoid": ({"premium": PremiumSignal.AVOID}, Bucket.MONTHLY, StrategyConfig()),
    "term_inverted": ({"term": TermSignal.INVERTED}, Bucket.WEEKLY, StrategyConfig()),
    "term_unknown": ({"term": None}, Bucket.WEEKLY, StrategyConfig()),
    "event_risk": ({"event_score": 3, "event_severity": EventSeverity.B}, Bucket.MONTHLY, StrategyConfig()),
    "trend_up": ({"regime": Regime.TREND, "trend_direction": "UP"}, Bucket.WEEKLY, StrategyConfig()),
    "trend_down": ({"regime": Regime.TREND, "trend_direction": "DOWN"}, Bucket.WEEKLY, StrategyConfig()),
    "trend_direction_unknown": ({"regime": Regime.TREND}, Bucket.WEEKLY, StrategyConfig()),
    "cheap_premium_calendar": ({"atm_iv_percentile": 10.0}, Bucket.MONTHLY, StrategyConfig()),
    "cheap_premium_diagonal": (
        {"atm_iv_percentile": 10.0, "skew": SkewSignal.PUT_SKEWED},
        Bucket.WEEKLY,
        StrategyConfig(),
    ),
    "cheap_premium_intraday": ({"atm_iv_percentile": 10.0}, Bucket.INTRADAY, StrategyConfig()),
    "gamma_pin": ({"regime": Regime.GAMMA_PIN}, Bucket.INTRADAY, StrategyConfig()),
    "rich_straddle": (
        {"premium": PremiumSignal.SELL_BIG, "atm_iv_percentile": 90.0},
        Bucket.MONTHLY,
        UNDEFINED,
    ),
    "rich_strangle": (
        {"premium": PremiumSignal.SELL_BIG, "atm_iv_percentile": 90.0, "regime": Regime.HIGH_VOL},
        Bucket.WEEKLY,
        UNDEFINED,
    ),
    "sell_premium": ({"premium": PremiumSignal.SELL_SMALL}, Bucket.WEEKLY, StrategyConfig()),
    "default": ({}, Bucket.WEEKLY, StrategyConfig()),
}


def test_every_row_has_a_scenario() -> None:
    assert set(SCENARIOS) == {rule.name for rule in RULES}
    assert set(SNAPSHOT_SCRIPTS) == {rule.name for rule in RULES}


@pytest.mark.parametrize("name", [rule.name for rule in RULES])
def test_each_row_decides_its_scenario(name: str) -> None:
    changes, bucket, config = SCENARIOS[name]
    rule = choose(dataclasses.replace(CALM, **changes), bucket, config)
    assert rule.name == name
    assert rule.reason


def test_undefined_risk_needs_the_setting_and_never_goes_intraday() -> None:
    rich = dataclasses.replace(CALM, premium=PremiumSignal.SELL_BIG, atm_iv_percentile=95.0)
    for bucket in Bucket:
        assert choose(rich, bucket, StrategyConfig()).structure is Structure.IRON_CONDOR
    assert choose(rich, Bucket.INTRADAY, UNDEFINED).structure is Structure.IRON_CONDOR
    assert choose(rich, Bucket.WEEKLY, UNDEFINED).structure is Structure.STRADDLE


def test_low_iv_percentile_buys_premium_instead_of_selling_a_strangle() -> None:
    # The original sold naked strangles when IV percentile was low; the table owns vega there instead,
    # and says that it overrules the original.
    cheap = dataclasses.replace(CALM, atm_iv_percentile=5.0)
    for bucket in (Bucket.WEEKLY, Bucket.MONTHLY):
        rule = choose(cheap, bucket, UNDEFINED)
        assert rule.structure is Structure.CALENDAR
        assert "OVERRULES" in rule.reason


def test_the_table_prints_for_the_docs() -> None:
    table = rule_table_markdown()
    for rule in RULES:
        assert f"`{rule.name}`" in table
        assert rule.structure.value in table


# ---- the same rows through the strategist on scripted VolSnapshots ---------------------------------

SNAPSHOT_SCRIPTS: dict[str, tuple[dict[str, Any], Bucket, StrategyConfig]] = {
    "bad_data": ({"quality": Quality.DEGRADED}, Bucket.WEEKLY, StrategyConfig()),
    "vix_spike": ({"vix_spike": True}, Bucket.WEEKLY, StrategyConfig()),
    "premium_avoid": ({"premium": PremiumSignal.AVOID}, Bucket.MONTHLY, StrategyConfig()),
    "term_inverted": ({"term": TermSignal.INVERTED}, Bucket.WEEKLY, StrategyConfig()),
    "term_unknown": ({"term": None}, Bucket.WEEKLY, StrategyConfig()),
    "event_risk": ({"event_score": 3, "severity": EventSeverity.C}, Bucket.MONTHLY, StrategyConfig()),
    "trend_up": (
        {"regime": Regime.TREND, "trend_direction": TrendDirection.UP},
        Bucket.WEEKLY,
        StrategyConfig(),
    ),
    "trend_down": (
        {"regime": Regime.TREND, "trend_direction": TrendDirection.DOWN},
        Bucket.MONTHLY,
        StrategyConfig(),
    ),
    "trend_direction_unknown": ({"regime": Regime.TREND}, Bucket.WEEKLY, StrategyConfig()),
    "cheap_premium_calendar": (
        {"premium": PremiumSignal.NEUTRAL, "iv_percentile": 10.0, "skew": SkewSignal.NEUTRAL},
        Bucket.MONTHLY,
        StrategyConfig(),
    ),
    "cheap_premium_diagonal": (
        {"premium": PremiumSignal.NEUTRAL, "iv_percentile": 10.0, "skew": SkewSignal.PUT_SKEWED},
        Bucket.WEEKLY,
        StrategyConfig(),
    ),
    "cheap_premium_intraday": (
        {"premium": PremiumSignal.NEUTRAL, "iv_percentile": 10.0},
        Bucket.INTRADAY,
        StrategyConfig(),
    ),
    "gamma_pin": ({"regime": Regime.GAMMA_PIN}, Bucket.INTRADAY, StrategyConfig()),
    "rich_straddle": ({"premium": PremiumSignal.SELL_BIG, "iv_percentile": 90.0}, Bucket.MONTHLY, UNDEFINED),
    "rich_strangle": (
        {"premium": PremiumSignal.SELL_BIG, "iv_percentile": 90.0, "regime": Regime.HIGH_VOL},
        Bucket.WEEKLY,
        UNDEFINED,
    ),
    "sell_premium": ({"premium": PremiumSignal.SELL_SMALL}, Bucket.WEEKLY, StrategyConfig()),
    "default": ({"premium": PremiumSignal.NEUTRAL}, Bucket.MONTHLY, StrategyConfig()),
}


@pytest.mark.parametrize("name", sorted(SNAPSHOT_SCRIPTS))
def test_scripted_snapshot_follows_the_row(name: str) -> None:
    script, bucket, config = SNAPSHOT_SCRIPTS[name]
    snapshot, chains = market(**script)
    rule = next(r for r in RULES if r.name == name)
    assert choose(read_signals(snapshot), bucket, config) is rule
    strategist = Strategist(config)
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    evaluation = strategist.on_vol(snapshot, chains)
    decision = next(d for d in evaluation.decisions if d.bucket is bucket)
    assert decision.rule == name
    assert any(rule.reason in reason for reason in decision.reasons)
    entries = [i for i in evaluation.intents if i.bucket is bucket and i.kind is IntentKind.ENTRY]
    if rule.structure is Structure.WAIT:
        assert decision.structure is Structure.WAIT
        assert not entries
    else:
        # A trade row proposes its structure unless sizing or a filter says why not, in the journal.
        if entries:
            assert [i.structure for i in entries] == [rule.structure]
            assert decision.intent_id == entries[0].intent_id
        else:
            assert decision.structure is Structure.WAIT
            assert len(decision.reasons) > 1


def test_bad_data_waits_with_the_snapshots_reason() -> None:
    snapshot, chains = market(quality=Quality.BAD)
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    evaluation = strategist.on_vol(snapshot, chains)
    assert not evaluation.intents
    for decision in evaluation.decisions:
        assert decision.structure is Structure.WAIT
        assert "data: scripted: feed stale" in decision.reasons
    assert not evaluation.recommendations.recommendations
    assert len(evaluation.recommendations.waits) == 3


def test_missing_expiry_chain_waits_saying_which() -> None:
    snapshot, chains = market()
    partial = {e: c for e, c in chains.items() if e != min(chains)}
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    evaluation = strategist.on_vol(snapshot, partial)
    weekly = next(d for d in evaluation.decisions if d.bucket is Bucket.WEEKLY)
    assert weekly.structure is Structure.WAIT
    assert str(min(chains)) in weekly.reasons[-1]
    monthly = next(d for d in evaluation.decisions if d.bucket is Bucket.MONTHLY)
    assert monthly.structure is not Structure.WAIT


def test_the_docs_print_the_table_the_code_runs() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "strategy.md").read_text()
    printed = doc.split("<!-- rule-table:start -->\n", 1)[1].split("\n<!-- rule-table:end -->", 1)[0]
    assert printed == rule_table_markdown()


def test_config_from_settings_carries_the_documented_defaults() -> None:
    from volguard_common.settings import Settings

    config = StrategyConfig.from_settings(Settings())
    assert config.risk_budget(Bucket.WEEKLY) == 8000
    assert config.risk_budget(Bucket.MONTHLY) == 10000
    assert config.risk_budget(Bucket.INTRADAY) == 4000
    assert [config.buckets[b].short_delta for b in (Bucket.WEEKLY, Bucket.MONTHLY, Bucket.INTRADAY)] == [
        0.16,
        0.12,
        0.25,
    ]
    assert config.cooldown_seconds == 300.0
    assert not config.allow_undefined_risk
    assert config == dataclasses.replace(
        StrategyConfig(), margin=config.margin, timed_rules=config.timed_rules
    )
