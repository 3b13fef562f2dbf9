"""Regime classifier: a score in [0, 1] for every regime, the best one wins, hysteresis stops flapping.

Scores (documented rules; `ramp(x, a, b)` rises linearly from 0 at a to 1 at b):
- Override regimes describe a market-wide condition that dominates whatever the background is:
  EVENT_CRUSH = 1 while the VIX spike filter is on (event-driven vol that will be crushed once the
  event passes); otherwise 0.6 when event risk scores >= 4 (a binary event within about a day).
  GAMMA_PIN (expiry day only) = 0.85 + 0.15 x ramp(share, t, 2t) when the share of the expiring chain's
  OI within +-pin_band_pct of spot is at least t = pin_oi_share.
- Background regimes are scaled by (1 - the strongest override), so an active override wins by a margin:
  vol level L = VIX percentile (or, without history, VIX mapped linearly so vix_low_level -> the low
  percentile band and vix_high_level -> the high band); mid = (low + high)/2.
  LOW_VOL = ramp(mid - L, 0, mid - low) x calm, calm = 1 - ramp(|move|, 0.5, 1.5) x trend_sigmas;
  HIGH_VOL = ramp(L - mid, 0, high - mid);
  RISING_VOL = ramp(c, 0.3 f, 1.5 f), FALLING_VOL = ramp(-c, 0.3 f, 1.5 f), c = VIX change over 5
  sessions, f = vix_trend_frac;
  TREND = ramp(|move|, 0.5 s, 1.5 s), move = (last - open) / (spot x ATM IV / sqrt(252)), s = trend_sigmas;
  MEAN_REVERSION = 0.5 x (1 - max(LOW, HIGH, TREND, RISING, FALLING)), +0.1 when cc7 < cc21.
- TREND is published with its direction (UP when NIFTY is above today's open, DOWN below) and its
  strength, |move| in one-day 1-sd moves, both read from the snapshot's own move; no direction when
  the move is unknown or nil (a TREND held by hysteresis through a return to the open).
- Confidence = s1 x s1 / (s1 + s2) for the winner's score s1 and the runner-up's s2.
- Hysteresis: the current regime stays until a challenger has the top score for
  `regime_confirm_snapshots` consecutive snapshots, or beats the current regime's score by
  `regime_switch_margin` in one snapshot. While the current regime is held against a leading
  challenger, the confidence reported is the current regime's share, s_cur / (s_cur + s_challenger).
Ties break in the order of `PRIORITY` so the outcome never depends on dict ordering.
"""

from __future__ import annotations

from typing import NamedTuple

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common.events.vol import Regime, RegimeView, TrendDirection

PRIORITY = (
    Regime.EVENT_CRUSH,
    Regime.GAMMA_PIN,
    Regime.HIGH_VOL,
    Regime.RISING_VOL,
    Regime.FALLING_VOL,
    Regime.TREND,
    Regime.LOW_VOL,
    Regime.MEAN_REVERSION,
)


class RegimeInputs(NamedTuple):
    """One snapshot's evidence. Immutable; a NamedTuple rather than a frozen dataclass because one is
    built every second and a frozen dataclass sets each of its eleven fields through object.__setattr__."""

    vix: float | None
    vix_spike: bool
    vix_percentile: float | None
    vix_change_5d: float | None  # fraction
    atm_iv: float | None
    cc7: float | None
    cc21: float | None
    is_expiry_day: bool
    pin_oi_share: float | None  # expiring chain, expiry day only
    event_score: int
    # |last - open| of today in one-day 1-sd moves; None before the first index print.
    move_sigmas: float | None


def ramp(x: float, a: float, b: float) -> float:
    if x <= a:
        return 0.0
    if x >= b:
        return 1.0
    return (x - a) / (b - a)


def vol_level(inputs: RegimeInputs, config: AnalyticsConfig) -> float | None:
    """Vol level on a 0-100 scale: the VIX percentile, or VIX mapped onto the percentile bands."""
    if inputs.vix_percentile is not None:
        return inputs.vix_percentile
    if inputs.vix is None:
        return None
    lo_p, hi_p = config.vix_low_percentile, config.vix_high_percentile
    slope = (hi_p - lo_p) / (config.vix_high_level - config.vix_low_level)
    return min(100.0, max(0.0, lo_p + (inputs.vix - config.vix_low_level) * slope))


def scores(inputs: RegimeInputs, config: AnalyticsConfig) -> dict[Regime, float]:
    event = 1.0 if inputs.vix_spike else (0.6 if inputs.event_score >= 4 else 0.0)
    pin = 0.0
    if (
        inputs.is_expiry_day
        and inputs.pin_oi_share is not None
        and inputs.pin_oi_share >= config.pin_oi_share
    ):
        pin = 0.85 + 0.15 * ramp(inputs.pin_oi_share, config.pin_oi_share, 2.0 * config.pin_oi_share)
    background = 1.0 - max(event, pin)

    level = vol_level(inputs, config)
    move = abs(inputs.move_sigmas) if inputs.move_sigmas is not None else 0.0
    trend = ramp(move, 0.5 * config.trend_sigmas, 1.5 * config.trend_sigmas)
    low = high = 0.0
    if level is not None:
        mid = 0.5 * (config.vix_low_percentile + config.vix_high_percentile)
        calm = 1.0 - ramp(move, 0.5 * config.trend_sigmas, 1.5 * config.trend_sigmas)
        low = ramp(mid - level, 0.0, mid - config.vix_low_percentile) * calm
        high = ramp(level - mid, 0.0, config.vix_high_percentile - mid)
    rising = falling = 0.0
    if inputs.vix_change_5d is not None:
        f = config.vix_trend_frac
        rising = ramp(inputs.vix_change_5d, 0.3 * f, 1.5 * f)
        falling = ramp(-inputs.vix_change_5d, 0.3 * f, 1.5 * f)
    mean_rev = 0.0
    if level is not None:
        mean_rev = 0.5 * (1.0 - max(low, high, trend, rising, falling))
        if inputs.cc7 is not None and inputs.cc21 is not None and inputs.cc7 < inputs.cc21:
            mean_rev += 0.1
    return {
        Regime.EVENT_CRUSH: event,
        Regime.GAMMA_PIN: pin,
        Regime.HIGH_VOL: high * background,
        Regime.RISING_VOL: rising * background,
        Regime.FALLING_VOL: falling * background,
        Regime.TREND: trend * background,
        Regime.LOW_VOL: low * background,
        Regime.MEAN_REVERSION: mean_rev * background,
    }


def _best_two(score: dict[Regime, float]) -> tuple[Regime, Regime]:
    """The top two regimes by score, ties going to the earlier in PRIORITY: the head of a sort by
    (-score, PRIORITY rank), in one pass."""
    best, runner_up = PRIORITY[0], PRIORITY[1]
    if score[runner_up] > score[best]:
        best, runner_up = runner_up, best
    for regime in PRIORITY[2:]:
        if score[regime] > score[best]:
            best, runner_up = regime, best
        elif score[regime] > score[runner_up]:
            runner_up = regime
    return best, runner_up


class RegimeTracker:
    """Carries the current regime and its challenger between snapshots (the hysteresis state)."""

    def __init__(self, config: AnalyticsConfig) -> None:
        self._config = config
        self.current: Regime | None = None
        self._challenger: Regime | None = None
        self._wins = 0

    def update(self, inputs: RegimeInputs) -> tuple[RegimeView, str | None]:
        """The regime after this snapshot and, when no evidence at all was available, why."""
        score = scores(inputs, self._config)
        best, runner_up = _best_two(score)
        if score[best] == 0.0:
            # No evidence for any regime (no VIX, no history, no event): hold what we had, or call it
            # mean reversion, with zero confidence so nobody acts on it.
            held = self.current if self.current is not None else Regime.MEAN_REVERSION
            return (
                RegimeView(regime=held, confidence=0.0, vix_spike=inputs.vix_spike),
                "regime undetermined: no VIX, vol history or intraday path to classify",
            )
        if self.current is None or best is self.current:
            self.current = best
            self._challenger, self._wins = None, 0
        else:
            if best is self._challenger:
                self._wins += 1
            else:
                self._challenger, self._wins = best, 1
            if (
                self._wins >= self._config.regime_confirm_snapshots
                or score[best] - score[self.current] >= self._config.regime_switch_margin
            ):
                self.current = best
                self._challenger, self._wins = None, 0
        current = self.current
        if current is best:
            total = score[best] + score[runner_up]
            confidence = score[best] * score[best] / total
        else:
            total = score[current] + score[best]
            confidence = score[current] / total if total > 0.0 else 0.0
        direction = strength = None
        move = inputs.move_sigmas
        if current is Regime.TREND and move is not None and move != 0.0:
            direction = TrendDirection.UP if move > 0.0 else TrendDirection.DOWN
            strength = abs(move)
        return (
            RegimeView(
                regime=current,
                confidence=min(1.0, confidence),
                vix_spike=inputs.vix_spike,
                trend_direction=direction,
                trend_strength=strength,
            ),
            None,
        )
