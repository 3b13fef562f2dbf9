"""The dashboard's picture of the system: the newest of each snapshot and the recent facts (no I/O).

Each replica keeps its own view from every stream it reads. What has not arrived yet is None (or an
empty list): the page shows "unknown", never a made-up figure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from volguard_common import events

# How many of each fact the view keeps in memory for the tables and the WebSocket's first picture.
RECENT = 500


@dataclass
class StreamCount:
    received: int = 0
    last_entry_id: str | None = None
    last_ts_event: datetime | None = None


@dataclass
class LiveView:
    vol: events.VolSnapshot | None = None
    portfolio: events.PortfolioSnapshot | None = None
    trading_state: events.TradingState | None = None
    feed: events.FeedStatus | None = None
    broker: events.BrokerHealth | None = None
    # Strategy's newest ranked proposals (st.recommendations), with why the other buckets wait.
    recommendations: events.StrategyRecommendations | None = None
    spot_tick: events.Tick | None = None
    vix_tick: events.Tick | None = None
    orders: dict[str, events.OrderUpdate] = field(default_factory=dict)
    fills: deque[events.Fill] = field(default_factory=lambda: deque(maxlen=RECENT))
    baskets: deque[events.BasketResult] = field(default_factory=lambda: deque(maxlen=RECENT))
    decisions: deque[events.RiskDecision] = field(default_factory=lambda: deque(maxlen=RECENT))
    alerts: deque[events.Alert] = field(default_factory=lambda: deque(maxlen=RECENT))
    # Account P&L as the portfolio snapshots reported it: (ts_event, day P&L, realised, unrealised).
    pnl: deque[tuple[datetime, float | None, float, float | None]] = field(
        default_factory=lambda: deque(maxlen=5_000)
    )
    counts: dict[str, StreamCount] = field(default_factory=dict)

    def apply(self, event: events.Event, stream: str, entry_id: str) -> bool:
        """Take one event in; False when it is older than what the view already shows (a replayed
        snapshot read at start-up after a newer one arrived)."""
        count = self.counts.setdefault(stream, StreamCount())
        count.received += 1
        count.last_entry_id = entry_id
        count.last_ts_event = event.ts_event
        match event:
            case events.VolSnapshot():
                if self.vol is not None and event.ts_event < self.vol.ts_event:
                    return False
                self.vol = event
            case events.PortfolioSnapshot():
                if self.portfolio is not None and event.ts_event < self.portfolio.ts_event:
                    return False
                self.portfolio = event
                self.pnl.append(
                    (
                        event.ts_event,
                        _float(event.day_pnl),
                        float(event.realised_pnl),
                        _float(event.unrealised_pnl),
                    )
                )
            case events.TradingState():
                if self.trading_state is not None and event.ts_event < self.trading_state.ts_event:
                    return False
                self.trading_state = event
            case events.StrategyRecommendations():
                if self.recommendations is not None and event.ts_event < self.recommendations.ts_event:
                    return False
                self.recommendations = event
            case events.FeedStatus():
                self.feed = event
            case events.BrokerHealth():
                self.broker = event
            case events.Tick():
                if event.kind is events.InstrumentKind.VIX:
                    self.vix_tick = event
                elif event.kind is events.InstrumentKind.INDEX:
                    self.spot_tick = event
            case events.OrderUpdate():
                self.orders[event.client_order_id] = event
                if len(self.orders) > RECENT:
                    del self.orders[next(iter(self.orders))]
            case events.Fill():
                self.fills.append(event)
            case events.BasketResult():
                self.baskets.append(event)
            case events.RiskDecision():
                self.decisions.append(event)
            case events.Alert():
                self.alerts.append(event)
        return True

    def last_update(self) -> datetime | None:
        """Exchange time of the newest event of any kind: the page's "as of"."""
        times = [c.last_ts_event for c in self.counts.values() if c.last_ts_event is not None]
        return max(times) if times else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def vol_summary(vol: events.VolSnapshot) -> dict[str, Any]:
    """The KPI figures of a VolSnapshot: what the header and the live feed need, not the surface."""
    front = vol.expiries[0]
    return {
        "ts_event": vol.ts_event.isoformat(),
        "event_id": vol.event_id,
        "spot": vol.spot,
        "vix": vol.vix,
        "atm_iv": front.atm_iv,
        "iv_percentile": vol.percentiles.atm_iv_percentile,
        "vix_percentile": vol.percentiles.vix_percentile,
        "regime": vol.regime.regime.value,
        "regime_confidence": vol.regime.confidence,
        "event_risk": vol.event_risk.score,
        "event_risk_severity": None if vol.event_risk.severity is None else vol.event_risk.severity.value,
        "pcr": front.pcr_oi,
        "max_pain": front.max_pain,
        "days_to_expiry": front.days_to_expiry,
        "front_expiry": front.expiry.isoformat(),
        "straddle": front.straddle_price,
        "expected_move": None if front.expected_move is None else front.expected_move.points,
        "realised_yang_zhang": vol.realised.yang_zhang,
        "garch": None if vol.garch is None else vol.garch.vol,
        "quality": vol.quality.value,
    }
