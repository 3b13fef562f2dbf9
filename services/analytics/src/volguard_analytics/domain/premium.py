"""Volatility premium: ATM IV against realised and GARCH-forecast vol, with a signal and a confidence.

The implied leg is the 30-day constant-maturity ATM IV (the measure the thresholds are calibrated on:
30-day implied vol minus 21-session realised vol), the GARCH leg a 21-trading-day forecast; the
snapshot falls back to the reference expiry's ATM IV, with a quality reason, when 30 days is unknown.

Rules (thresholds in vol points from Settings):
- The binding spread is the smaller of IV-RV and IV-GARCH that are known: selling vol needs implied to
  be rich against both what happened and what the model expects.
- binding >= sell_big -> SELL_BIG; >= sell_small -> SELL_SMALL; <= avoid -> AVOID; else NEUTRAL.
- Trend: if the binding spread fell by more than `premium_trend_pts` over the trend window (event time
  of earlier snapshots), a SELL signal weakens one step: the premium is being repriced away.
- Confidence: 0.5 + 0.5 x (distance from the nearest signal boundary / 2 vol points, capped at 1), x0.7
  when only one spread is known, x0.8 when the two spreads fall in different bands, x0.8 after a trend
  downgrade. With no spread at all: NEUTRAL with confidence 0 (the spreads say None).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common.events.vol import PremiumSignal, VolPremium

_WEAKER = {
    PremiumSignal.SELL_BIG: PremiumSignal.SELL_SMALL,
    PremiumSignal.SELL_SMALL: PremiumSignal.NEUTRAL,
    PremiumSignal.NEUTRAL: PremiumSignal.NEUTRAL,
    PremiumSignal.AVOID: PremiumSignal.AVOID,
}
_CONFIDENCE_SCALE_PTS = 2.0
# The premium's implied leg is the 30-day constant-maturity ATM IV; its GARCH leg is forecast over
# the same 30 calendar days, 252 x 30 / 365 = 20.7, about 21 trading days (also the realised window).
PREMIUM_HORIZON_TRADING_DAYS = 21


def band(spread_pts: float, config: AnalyticsConfig) -> PremiumSignal:
    if spread_pts >= config.iv_rv_sell_big_pts:
        return PremiumSignal.SELL_BIG
    if spread_pts >= config.iv_rv_sell_small_pts:
        return PremiumSignal.SELL_SMALL
    if spread_pts <= config.iv_rv_avoid_pts:
        return PremiumSignal.AVOID
    return PremiumSignal.NEUTRAL


def _boundary_distance(spread_pts: float, config: AnalyticsConfig) -> float:
    return min(
        abs(spread_pts - config.iv_rv_sell_big_pts),
        abs(spread_pts - config.iv_rv_sell_small_pts),
        abs(spread_pts - config.iv_rv_avoid_pts),
    )


class PremiumTracker:
    """Computes VolPremium and remembers the binding spread of earlier snapshots for the trend."""

    def __init__(self, config: AnalyticsConfig) -> None:
        self._config = config
        self._trend_window = timedelta(seconds=config.premium_trend_window_s)
        self._history: deque[tuple[datetime, float]] = deque()

    def evaluate(
        self, ts_event: datetime, atm_iv: float | None, realised: float | None, garch_vol: float | None
    ) -> VolPremium:
        config = self._config
        iv_rv = atm_iv - realised if atm_iv is not None and realised is not None else None
        iv_garch = atm_iv - garch_vol if atm_iv is not None and garch_vol is not None else None
        known = [100.0 * s for s in (iv_rv, iv_garch) if s is not None]
        if not known:
            return VolPremium(
                iv_rv_spread=iv_rv, iv_garch_spread=iv_garch, signal=PremiumSignal.NEUTRAL, confidence=0.0
            )
        binding = min(known)
        signal = band(binding, config)
        confidence = 0.5 + 0.5 * min(1.0, _boundary_distance(binding, config) / _CONFIDENCE_SCALE_PTS)
        if len(known) == 1:
            confidence *= 0.7
        elif band(known[0], config) is not band(known[1], config):
            confidence *= 0.8

        horizon = ts_event - self._trend_window
        while self._history and self._history[0][0] < horizon:
            self._history.popleft()
        if self._history:
            change = binding - self._history[0][1]
            if change < -config.premium_trend_pts and signal in (
                PremiumSignal.SELL_BIG,
                PremiumSignal.SELL_SMALL,
            ):
                signal = _WEAKER[signal]
                confidence *= 0.8
        self._history.append((ts_event, binding))
        return VolPremium(iv_rv_spread=iv_rv, iv_garch_spread=iv_garch, signal=signal, confidence=confidence)
