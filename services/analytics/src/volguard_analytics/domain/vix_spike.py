"""India VIX spike filter: VIX more than `vix_spike_pct` % above its low of the last `vix_spike_window_s`
seconds of event time. The service turns a new spike into an Alert; regime reads it as EVENT_CRUSH."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import NamedTuple


class VixSpike(NamedTuple):
    """The state after one VIX print. `started` is True only on the print that turned the spike on.

    A NamedTuple rather than a frozen dataclass: one is built for every chain set (its VIX is a print).
    """

    active: bool
    started: bool
    vix: float
    window_low: float
    change_pct: float


class VixSpikeDetector:
    """Keeps the VIX prints of the trailing window (event time); one `update` per VIX tick."""

    def __init__(self, window_s: float, threshold_pct: float) -> None:
        if window_s <= 0 or threshold_pct <= 0:
            raise ValueError("VIX spike window and threshold must be positive")
        self._window = timedelta(seconds=window_s)
        self._threshold = threshold_pct
        # Monotonic deque of (ts, vix) with increasing vix: the front is the window's low.
        self._lows: deque[tuple[datetime, float]] = deque()
        self._last_ts: datetime | None = None
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def update(self, ts_event: datetime, vix: float) -> VixSpike:
        if not vix > 0.0:
            raise ValueError(f"VIX must be positive, got {vix}")
        if self._last_ts is not None and ts_event < self._last_ts:
            raise ValueError(f"VIX print at {ts_event.isoformat()} is older than {self._last_ts.isoformat()}")
        self._last_ts = ts_event
        while self._lows and self._lows[0][0] < ts_event - self._window:
            self._lows.popleft()
        while self._lows and self._lows[-1][1] >= vix:
            self._lows.pop()
        self._lows.append((ts_event, vix))
        low = self._lows[0][1]
        change_pct = 100.0 * (vix / low - 1.0)
        was_active = self._active
        self._active = change_pct > self._threshold
        return VixSpike(
            active=self._active,
            started=self._active and not was_active,
            vix=vix,
            window_low=low,
            change_pct=change_pct,
        )
