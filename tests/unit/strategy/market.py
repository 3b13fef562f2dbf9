"""A realistic market for strategy tests: sample NIFTY chains (Black-76 off a skewed smile, tick-rounded,
spreads widening into the wings) through the real analytics engine, so the VolSnapshot strategy reads
is the one analytics would publish. Scenario tests then script the signals they need on top of it."""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.unit.analytics.chains import real_history
from volguard_analytics.domain.calendar import EventCalendar
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import clock
from volguard_common.clock import IST
from volguard_common.events import (
    Bucket,
    BucketState,
    ChainSnapshot,
    PortfolioSnapshot,
    TradingState,
    TradingStateKind,
)
from volguard_common.events.vol import (
    PremiumSignal,
    Quality,
    Regime,
    TermSignal,
    VolSnapshot,
)
from volguard_common.events_samples import sample_chain_snapshot

TS = datetime(2025, 12, 17, 10, 30, tzinfo=IST)  # a Wednesday; weekly 23 Dec, monthly 30 Dec
EXPIRIES = (date(2025, 12, 23), date(2025, 12, 30), date(2026, 1, 6), date(2026, 1, 27))
SPOT = 25_800.0


def chain_set(ts: datetime = TS, spot: float = SPOT, atm_vol: float = 0.13) -> dict[date, ChainSnapshot]:
    return {
        expiry: sample_chain_snapshot(
            121, expiry=expiry, ts_event=ts, spot=spot, atm_vol=atm_vol, lot_size=clock.lot_size(expiry)
        )
        for expiry in EXPIRIES
    }


@functools.cache
def _engine_snapshot(
    ts: datetime, spot: float, atm_vol: float
) -> tuple[VolSnapshot, dict[date, ChainSnapshot]]:
    chains = chain_set(ts, spot, atm_vol)
    engine = VolEngine(AnalyticsConfig(), real_history(), EventCalendar(()))
    ordered = [chains[e] for e in EXPIRIES]
    engine.observe_chain_set(ordered)
    return engine.snapshot(ordered), chains


def market(
    ts: datetime = TS, spot: float = SPOT, atm_vol: float = 0.13, **signals: Any
) -> tuple[VolSnapshot, dict[date, ChainSnapshot]]:
    """The engine's snapshot with scripted signals: premium, regime, vix_spike, term, quality,
    event score/severity, percentiles (keywords below). Defaults script a calm, rich-premium market."""
    snapshot, chains = _engine_snapshot(ts, spot, atm_vol)
    premium = snapshot.premium.model_copy(update={"signal": signals.get("premium", PremiumSignal.SELL_SMALL)})
    regime = snapshot.regime.model_copy(
        update={
            "regime": signals.get("regime", Regime.MEAN_REVERSION),
            "vix_spike": signals.get("vix_spike", False),
        }
    )
    if "trend_direction" in signals:
        regime = regime.model_copy(
            update={"trend_direction": signals["trend_direction"], "trend_strength": 1.0}
        )
    term = snapshot.term.model_copy(update={"signal": signals.get("term", TermSignal.STEEP)})
    skew = snapshot.skew.model_copy(update={"signal": signals.get("skew", snapshot.skew.signal)})
    percentiles = snapshot.percentiles.model_copy(
        update={
            "atm_iv_percentile": signals.get("iv_percentile", 60.0),
            "atm_iv_rank": signals.get("iv_rank", 55.0),
            "vix_percentile": signals.get("vix_percentile", 50.0),
        }
    )
    event_risk = snapshot.event_risk.model_copy(
        update={
            "score": signals.get("event_score", 0),
            "severity": signals.get("severity"),
            "events": ["scripted"] if signals.get("severity") else [],
        }
    )
    quality = signals.get("quality", Quality.GOOD)
    update: dict[str, Any] = {
        "premium": premium,
        "regime": regime,
        "term": term,
        "skew": skew,
        "percentiles": percentiles,
        "event_risk": event_risk,
        "quality": quality,
        "quality_reasons": [] if quality is Quality.GOOD else ["scripted: feed stale"],
    }
    return snapshot.model_copy(update=update), chains


def running(ts: datetime = TS) -> TradingState:
    return TradingState(
        ts_event=ts,
        source="risk/test",
        state=TradingStateKind.RUNNING,
        previous=None,
        reason="scripted",
        since=ts,
    )


def paused(ts: datetime = TS) -> TradingState:
    return TradingState(
        ts_event=ts, source="risk/test", state=TradingStateKind.PAUSED, previous=TradingStateKind.RUNNING,
        reason="scripted", since=ts,
    )  # fmt: skip


def empty_portfolio(ts: datetime = TS, used: Decimal = Decimal(0), **kwargs: Any) -> PortfolioSnapshot:
    allocated = {
        Bucket.WEEKLY: Decimal(800_000),
        Bucket.MONTHLY: Decimal(1_000_000),
        Bucket.INTRADAY: Decimal(200_000),
    }
    fields: dict[str, Any] = {
        "ts_event": ts,
        "source": "risk/test",
        "account_capital": Decimal(2_000_000),
        "positions": [],
        "trades": [],
        "buckets": [
            BucketState(
                bucket=b,
                capital_allocated=a,
                capital_used=min(used, a),
                realised_pnl=Decimal(0),
                unrealised_pnl=Decimal(0),
                open_trades=0,
            )
            for b, a in allocated.items()
        ],
        "net_greeks": None,
        "realised_pnl": Decimal(0),
        "unrealised_pnl": Decimal(0),
        "day_pnl": Decimal(0),
        "margin_used": Decimal(0),
        "margin_available": Decimal(2_000_000),
        "reconciled": True,
    }
    fields.update(kwargs)
    return PortfolioSnapshot(**fields)


def later(seconds: float) -> datetime:
    return TS + timedelta(seconds=seconds)
