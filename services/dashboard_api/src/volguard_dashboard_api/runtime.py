"""One dashboard replica at run time: its live view, its WebSocket clients and its notifier."""

from __future__ import annotations

import json
from collections import deque
from datetime import datetime
from typing import Any

import structlog

from volguard_common import clock, events
from volguard_common.bus import Delivery
from volguard_dashboard_api.domain.view import LiveView, vol_summary
from volguard_dashboard_api.live import Hub
from volguard_dashboard_api.notify import Notifier

log = structlog.get_logger("volguard.dashboard")

# What each event becomes on the WebSocket ("kind"); ticks only move the header, they are not pushed.
KIND_OF: dict[type[events.EventBase], str] = {
    events.VolSnapshot: "vol",
    events.PortfolioSnapshot: "portfolio",
    events.TradingState: "state",
    events.OrderUpdate: "order",
    events.Fill: "fill",
    events.BasketResult: "basket",
    events.RiskDecision: "decision",
    events.Alert: "alert",
    events.FeedStatus: "feed",
    events.BrokerHealth: "broker",
    events.StrategyRecommendations: "recommendations",
}


class Dashboard:
    def __init__(self, *, ws_queue: int, notifier: Notifier | None) -> None:
        self.view = LiveView()
        self.hub = Hub(ws_queue)
        self.notifier = notifier
        # The volatility history this replica saw (analytics persists one a minute; the page wants more).
        self.vol_points: deque[tuple[datetime, dict[str, Any]]] = deque(maxlen=5_000)

    def exchange_now(self) -> datetime:
        """Exchange time for a Command: the market's own time in simulation/replay (the newest event
        seen), the wall clock in IST before any event arrived."""
        seen = self.view.last_update()
        return seen if seen is not None else clock.to_ist(datetime.now(clock.IST))

    async def handle(self, event: events.Event, delivery: Delivery) -> None:
        if not self.view.apply(event, delivery.stream, delivery.entry_id):
            return
        if isinstance(event, events.VolSnapshot):
            summary = vol_summary(event)
            self.vol_points.append(
                (
                    event.ts_event,
                    {
                        key: summary[key]
                        for key in ("ts_event", "atm_iv", "vix", "regime", "straddle", "expected_move")
                    }
                    | {"realised": summary["realised_yang_zhang"], "garch": summary["garch"]},
                )
            )
        if isinstance(event, events.Alert) and self.notifier is not None:
            await self.notifier.notify(event)
        kind = KIND_OF.get(type(event))
        if kind is None:
            return
        data = vol_summary(event) if isinstance(event, events.VolSnapshot) else event.model_dump(mode="json")
        self.hub.broadcast(
            json.dumps({"kind": kind, "stream": delivery.stream, "entry_id": delivery.entry_id, "data": data})
        )

    def kpis(self) -> dict[str, Any]:
        """The header: every figure null until its source has published it."""
        view = self.view
        vol = view.vol
        portfolio = view.portfolio
        state = view.trading_state
        last = view.last_update()
        return {
            "volatility": None if vol is None else vol_summary(vol),
            "spot": view.spot_tick.ltp if view.spot_tick is not None else (None if vol is None else vol.spot),
            "vix": view.vix_tick.ltp if view.vix_tick is not None else (None if vol is None else vol.vix),
            "day_pnl": None if portfolio is None or portfolio.day_pnl is None else str(portfolio.day_pnl),
            "trading_state": None if state is None else state.state.value,
            "trading_causes": [] if state is None else [c.cause.value for c in state.causes],
            "feed": None if view.feed is None else view.feed.state.value,
            "broker_connected": None if view.broker is None else view.broker.connected,
            "last_update": None if last is None else last.isoformat(),
        }

    def hello(self) -> str:
        """The first WebSocket message: the current picture, so a client needs no REST call first."""
        return json.dumps({"kind": "hello", "stream": None, "entry_id": None, "data": self.kpis()})
