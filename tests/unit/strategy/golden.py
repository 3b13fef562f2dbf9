"""A fixed scripted sequence of strategy inputs and the Evaluations the strategy component gave for it,
recorded once to JSON (`golden_evaluations.json`) so that speed work on the domain can be checked to
change no result: every decision, intent (ids, legs, prices, pricing figures, reasons) and
recommendation must come out identical.

The inputs are stored with the outputs (VolSnapshots, portfolio snapshots and trading states as their
JSON; chain snapshots as the sample-chain parameters that rebuild them), so the replay does not depend
on the analytics engine staying numerically the same.

Re-record (only when a change is MEANT to alter results): .venv/bin/python -m tests.unit.strategy.golden
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from tests.unit.analytics.chains import real_history
from tests.unit.strategy.market import TS, empty_portfolio, later, market, paused, running
from volguard_analytics.domain.calendar import EventCalendar
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import clock
from volguard_common.events import (
    Bucket,
    ChainSnapshot,
    Greeks,
    OpenTrade,
    OptionType,
    PortfolioSnapshot,
    Position,
    Side,
    TradeIntent,
    TradingState,
)
from volguard_common.events.vol import (
    EventSeverity,
    PremiumSignal,
    Quality,
    Regime,
    SkewSignal,
    TermSignal,
    TrendDirection,
    VolSnapshot,
)
from volguard_common.events_samples import sample_chain_snapshot
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.strategist import Evaluation, Strategist

GOLDEN = Path(__file__).with_name("golden_evaluations.json")
MARKET_EXPIRIES = (date(2025, 12, 23), date(2025, 12, 30), date(2026, 1, 6), date(2026, 1, 27))
BENCH_EXPIRIES = (
    date(2025, 12, 23),
    date(2025, 12, 30),
    date(2026, 1, 6),
    date(2026, 1, 13),
    date(2026, 1, 27),
    date(2026, 3, 31),
)


def chains_of(spec: dict[str, Any]) -> dict[date, ChainSnapshot]:
    ts = datetime.fromisoformat(spec["ts"]).astimezone(clock.IST)
    return {
        expiry: sample_chain_snapshot(
            121, expiry=expiry, ts_event=ts, spot=spec["spot"], atm_vol=spec["atm_vol"],
            lot_size=clock.lot_size(expiry),
        )
        for expiry in (date.fromisoformat(e) for e in spec["expiries"])
    }  # fmt: skip


def evaluation_content(evaluation: Evaluation) -> dict[str, Any]:
    """Everything an Evaluation says, in JSON form; only the wall-clock `ts_init` is left out."""
    return {
        "ts_event": evaluation.ts_event.isoformat(),
        "vol_event_id": evaluation.vol_event_id,
        "decisions": [
            {
                "bucket": d.bucket.value,
                "structure": d.structure.value,
                "rule": d.rule,
                "reasons": list(d.reasons),
                "intent_id": d.intent_id,
            }
            for d in evaluation.decisions
        ],
        "intents": [i.model_dump(mode="json", exclude={"ts_init"}) for i in evaluation.intents],
        "recommendations": evaluation.recommendations.model_dump(mode="json", exclude={"ts_init"}),
    }


@dataclass
class Script:
    """Feeds one Strategist and writes down each input and each evaluation's content."""

    config: dict[str, Any]
    strategist: Strategist = field(init=False)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.strategist = Strategist(StrategyConfig(**self.config))

    def state(self, state: TradingState) -> None:
        self.strategist.on_trading_state(state)
        self.steps.append({"op": "state", "event": state.model_dump(mode="json")})

    def portfolio(self, snapshot: PortfolioSnapshot) -> None:
        self.strategist.on_portfolio(snapshot)
        self.steps.append({"op": "portfolio", "event": snapshot.model_dump(mode="json")})

    def vol(self, snapshot: VolSnapshot, spec: dict[str, Any]) -> Evaluation:
        evaluation = self.strategist.on_vol(snapshot, chains_of(spec))
        self.steps.append(
            {
                "op": "vol",
                "event": snapshot.model_dump(mode="json"),
                "chains": spec,
                "evaluation": evaluation_content(evaluation),
            }
        )
        return evaluation


def replay(scenario: dict[str, Any], blocks: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(recorded, replayed) evaluation content per VolSnapshot of one scenario; `blocks` holds the
    snapshots' per-expiry blocks by key (most steps share them)."""
    strategist = Strategist(StrategyConfig(**scenario["config"]))
    out = []
    for step in scenario["steps"]:
        if step["op"] == "state":
            strategist.on_trading_state(TradingState.model_validate_json(json.dumps(step["event"])))
        elif step["op"] == "portfolio":
            strategist.on_portfolio(PortfolioSnapshot.model_validate_json(json.dumps(step["event"])))
        else:
            event = {**step["event"], "expiries": blocks[step["event"]["expiries"]]}
            evaluation = strategist.on_vol(
                VolSnapshot.model_validate_json(json.dumps(event)), chains_of(step["chains"])
            )
            out.append((step["evaluation"], evaluation_content(evaluation)))
    return out


# -- recording ------------------------------------------------------------------------------------


def _spec(ts: datetime, spot: float, expiries: tuple[date, ...], atm_vol: float = 0.13) -> dict[str, Any]:
    return {
        "ts": ts.isoformat(),
        "spot": spot,
        "atm_vol": atm_vol,
        "expiries": [e.isoformat() for e in expiries],
    }


def _trade_of(intent: TradeIntent, trade_id: str, cost_to_close: Decimal, delta: float) -> OpenTrade:
    legs = [
        Position(
            instrument_key=leg.instrument_key, expiry=leg.expiry, strike=leg.strike,
            option_type=leg.option_type,
            quantity=leg.quantity if leg.side is Side.BUY else -leg.quantity, avg_price=leg.limit_price,
            mark=leg.limit_price, unrealised_pnl=Decimal(0), realised_pnl=Decimal(0),
        )
        for leg in intent.legs
    ]  # fmt: skip
    credit = intent.expected_credit
    return OpenTrade(
        trade_id=trade_id, intent_id=intent.intent_id, bucket=intent.bucket, structure=intent.structure,
        opened_at=intent.ts_event, nearest_expiry=min(leg.expiry for leg in intent.legs), legs=legs,
        entry_credit=credit, cost_to_close=cost_to_close, unrealised_pnl=credit - cost_to_close,
        greeks=Greeks(delta=delta, gamma=0.0, vega=0.0, theta=0.0),
    )  # fmt: skip


def _book(ts: datetime, trades: list[OpenTrade], net_delta: float) -> PortfolioSnapshot:
    return empty_portfolio(
        ts,
        positions=[p for t in trades for p in t.legs],
        trades=trades,
        net_greeks=Greeks(delta=net_delta, gamma=0.0, vega=0.0, theta=0.0),
    )


def _benchmark_path() -> Script:
    """The benchmark's data: six expiries, spot on a random walk one second apart, through the real
    analytics engine, an open weekly condor on the book, no cooldown."""
    script = Script({"cooldown_seconds": 0.0})
    engine = VolEngine(AnalyticsConfig(), real_history(), EventCalendar(()))
    rng = np.random.default_rng(20251217)
    spot = 25_800.0
    script.state(running())
    script.portfolio(empty_portfolio())
    for i in range(8):
        ts = TS + timedelta(seconds=i)
        spec = _spec(ts, spot, BENCH_EXPIRIES)
        chains = chains_of(spec)
        ordered = [chains[e] for e in BENCH_EXPIRIES]
        engine.observe_chain_set(ordered)
        snapshot = engine.snapshot(ordered)
        evaluation = script.vol(snapshot, spec)
        if i == 1:
            weekly = next(x for x in evaluation.intents if x.bucket is Bucket.WEEKLY)
            trade = _trade_of(weekly, "bench", weekly.expected_credit * Decimal("0.9"), 5.0)
            script.portfolio(_book(ts, [trade], 5.0))
        spot += 4.0 * float(rng.standard_normal())
    return script


# Scripted signals covering the rule table's rows, the data-quality WAIT and event severities.
SIGNALS: list[dict[str, Any]] = [
    {},
    {"premium": PremiumSignal.SELL_BIG},
    {"premium": PremiumSignal.NEUTRAL, "iv_percentile": 10.0, "skew": SkewSignal.NEUTRAL},
    {"premium": PremiumSignal.AVOID},
    {"regime": Regime.GAMMA_PIN},
    {"regime": Regime.RISING_VOL},
    {"regime": Regime.HIGH_VOL, "iv_percentile": 95.0},
    {"regime": Regime.FALLING_VOL},
    {"regime": Regime.EVENT_CRUSH},
    {"regime": Regime.LOW_VOL, "iv_percentile": 5.0, "iv_rank": 5.0},
    {"regime": Regime.TREND, "trend_direction": TrendDirection.UP},
    {"regime": Regime.TREND, "trend_direction": TrendDirection.DOWN},
    {"vix_spike": True},
    {"term": TermSignal.INVERTED},
    {"term": TermSignal.FLAT, "skew": SkewSignal.PUT_SKEWED},
    {"skew": SkewSignal.CALL_SKEWED},
    {"severity": EventSeverity.A, "event_score": 3},
    {"severity": EventSeverity.B, "event_score": 2},
    {"severity": EventSeverity.C, "event_score": 1},
    {"quality": Quality.DEGRADED},
    {"quality": Quality.BAD},
]


def _rule_table() -> Script:
    script = Script({"cooldown_seconds": 0.0})
    for k, signals in enumerate(SIGNALS):
        ts = later(60 * k)
        script.state(running(ts))
        script.portfolio(empty_portfolio(ts))
        snapshot, _ = market(**signals)
        script.vol(snapshot.model_copy(update={"ts_event": ts}), _spec(TS, 25_800.0, MARKET_EXPIRIES))
    for k, (spot, atm_vol) in enumerate(((25_500.0, 0.18), (26_100.0, 0.10))):
        ts = later(3_000 + 60 * k)
        script.portfolio(empty_portfolio(ts))
        snapshot, _ = market(TS, spot, atm_vol)
        script.vol(snapshot.model_copy(update={"ts_event": ts}), _spec(TS, spot, MARKET_EXPIRIES, atm_vol))
    return script


def _management() -> Script:
    """Entries, then a book managed through profit target, tested strike hedge, delta drift, Greek
    stop and regime change, with a pause in the middle; default cooldown."""
    script = Script({})
    spec = _spec(TS, 25_800.0, MARKET_EXPIRIES)
    script.state(running())
    script.portfolio(empty_portfolio())
    snapshot, _ = market()
    first = script.vol(snapshot, spec)
    weekly = next(i for i in first.intents if i.bucket is Bucket.WEEKLY)
    monthly = next(i for i in first.intents if i.bucket is Bucket.MONTHLY)
    a = _trade_of(weekly, "t-1", weekly.expected_credit, 0.0)
    b = _trade_of(monthly, "t-2", monthly.expected_credit, 180.0)
    script.portfolio(_book(later(5), [a, b], 180.0))
    script.vol(snapshot.model_copy(update={"ts_event": later(5)}), spec)
    short_put = next(leg for leg in weekly.legs if leg.side is Side.SELL and leg.option_type is OptionType.PE)
    script.vol(snapshot.model_copy(update={"ts_event": later(6), "spot": short_put.strike + 40}), spec)
    script.state(paused(later(7)))
    script.vol(snapshot.model_copy(update={"ts_event": later(8), "spot": short_put.strike + 30}), spec)
    script.state(running(later(9)))
    a = _trade_of(weekly, "t-1", weekly.expected_credit * Decimal("0.6"), -20.0)
    b = _trade_of(monthly, "t-2", monthly.expected_credit, -250.0)
    script.portfolio(_book(later(10), [a, b], -270.0))
    script.vol(snapshot.model_copy(update={"ts_event": later(10)}), spec)
    rising, _ = market(regime=Regime.RISING_VOL)
    script.vol(rising.model_copy(update={"ts_event": later(400)}), spec)
    c = _trade_of(monthly, "t-3", monthly.expected_credit * 3, 10.0)
    script.portfolio(_book(later(401), [c], 10.0))
    script.vol(snapshot.model_copy(update={"ts_event": later(401)}), spec)
    return script


def record() -> None:
    scenarios = {
        "benchmark_path": _benchmark_path(),
        "rule_table": _rule_table(),
        "management": _management(),
    }
    blocks: dict[str, Any] = {}
    for script in scenarios.values():
        for step in script.steps:
            if step["op"] == "vol":
                text = json.dumps(step["event"]["expiries"], sort_keys=True)
                key = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
                blocks[key] = step["event"]["expiries"]
                step["event"]["expiries"] = key
    payload = {
        "scenarios": {name: {"config": s.config, "steps": s.steps} for name, s in scenarios.items()},
        "expiry_blocks": blocks,
    }
    GOLDEN.write_text(json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    record()
