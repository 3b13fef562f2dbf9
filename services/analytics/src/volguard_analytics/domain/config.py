"""Analytics parameters: the thresholds from `Settings` plus the modelling choices of this package.

Kept as a plain frozen dataclass so the domain never reads the environment; the service builds it
once with `AnalyticsConfig.from_settings(settings)`. Defaults equal the documented Settings defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from volguard_common.settings import DEFAULT_RISK_FREE_RATE, Settings


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    # ---- from Settings (vol points, seconds, percent, multipliers) ------------------------------
    iv_rv_sell_big_pts: float = 4.5
    iv_rv_sell_small_pts: float = 3.7
    iv_rv_avoid_pts: float = -2.0
    term_structure_threshold_pts: float = 1.0
    skew_threshold_pts: float = 2.0
    vix_spike_window_s: int = 180
    vix_spike_pct: float = 8.0
    event_multiplier_a: float = 0.3
    event_multiplier_b: float = 0.5
    event_multiplier_c: float = 1.0

    # Continuously compounded INR rate for discounting and the spot-carry fallback forward: the
    # `risk_free_rate` setting that strategy and risk read too (source and date in settings.py).
    risk_free_rate: float = DEFAULT_RISK_FREE_RATE

    # ---- pricing ---------------------------------------------------------------------------------
    # SABR beta fixed at 0.5 (quant.sabr default for an equity index).
    sabr_beta: float = 0.5
    # A parity forward whose quality score is below this is used but marked DEGRADED.
    parity_good_score: float = 0.5
    # Spread (ask - bid) wider than this fraction of the mid AND wider than `wide_spread_min_ticks`
    # ticks makes a quote WIDE_SPREAD: solved, but left out of the fit. The tick floor keeps one- or
    # two-tick markets in cheap wings from counting as wide just because the price is small.
    wide_spread_frac: float = 0.25
    wide_spread_min_ticks: int = 2
    # SABR fit RMSE (vol, fraction) above which the fit counts as failed for quality purposes.
    sabr_max_rmse: float = 0.02
    # Fewer clean OTM points than this and no SABR fit is attempted.
    sabr_min_points: int = 5

    # ---- history ---------------------------------------------------------------------------------
    percentile_lookback_days: int = 252
    # Fewer history days than this in the lookback window and percentile/rank are unknown.
    percentile_min_days: int = 60
    # GARCH daily forecasts are cached for this many trading days ahead (one fit per trading day).
    garch_max_horizon_days: int = 60

    # ---- premium signal --------------------------------------------------------------------------
    # The spread trend is measured over this much event time of earlier snapshots.
    premium_trend_window_s: int = 1800
    # A spread that fell by more than this (vol points) over the trend window weakens the signal by
    # one step (SELL_BIG -> SELL_SMALL -> NEUTRAL): the premium is being repriced away.
    premium_trend_pts: float = 1.0

    # ---- regime ----------------------------------------------------------------------------------
    # A challenger regime replaces the current one after winning this many consecutive snapshots...
    regime_confirm_snapshots: int = 3
    # ...or at once when its score beats the current regime's score by this margin.
    regime_switch_margin: float = 0.3
    # GAMMA_PIN: share of the expiring chain's total OI within `pin_band_pct` of spot.
    pin_band_pct: float = 1.0
    pin_oi_share: float = 0.35
    # VIX level bands used when its percentile is unknown (index points).
    vix_low_level: float = 13.0
    vix_high_level: float = 20.0
    # VIX percentile bands.
    vix_low_percentile: float = 35.0
    vix_high_percentile: float = 80.0
    # Change of VIX over 5 trading days (fraction) that counts as rising or falling vol.
    vix_trend_frac: float = 0.10
    # Intraday move from the open, in units of the one-day 1-sd move implied by ATM IV, that is a trend.
    trend_sigmas: float = 1.0

    # ---- event risk ------------------------------------------------------------------------------
    event_horizon_days: float = 7.0
    event_half_life_days: float = 1.5

    def __post_init__(self) -> None:
        # The engine hands its smiles to `sabr.fit_prepared`, which trusts these and checks nothing.
        if self.sabr_min_points < 3:
            raise ValueError(
                f"sabr_min_points must be >= 3 (three SABR parameters), got {self.sabr_min_points}"
            )
        if not 0.0 <= self.sabr_beta <= 1.0:
            raise ValueError(f"sabr_beta must lie in [0, 1], got {self.sabr_beta}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AnalyticsConfig:
        """The service's configuration: thresholds from `settings`, modelling choices from defaults."""
        names = (
            "iv_rv_sell_big_pts",
            "iv_rv_sell_small_pts",
            "iv_rv_avoid_pts",
            "term_structure_threshold_pts",
            "skew_threshold_pts",
            "vix_spike_window_s",
            "vix_spike_pct",
            "event_multiplier_a",
            "event_multiplier_b",
            "event_multiplier_c",
            "risk_free_rate",
        )
        values: dict[str, Any] = {name: getattr(settings, name) for name in names}
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> AnalyticsConfig:
        return dataclasses.replace(self, **changes)
