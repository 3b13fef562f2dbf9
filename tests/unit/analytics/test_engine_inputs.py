"""What the engine checks once and then trusts: the IV percentile windows it cuts once a day (against
the per-call statistics they replace), the GARCH forecasts it keeps per horizon and the smile settings
it hands to the unchecked SABR fit."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pytest

from tests.unit.analytics.chains import real_history
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.history import GarchCache, LookbackWindow, day_inputs, percentiles
from volguard_common.quant import stats


def test_window_percentile_is_stats_iv_percentile() -> None:
    rng = np.random.default_rng(3)
    # Rounded closes (ties) and feed gaps (NaN), longer than the lookback.
    series = np.round(rng.uniform(10.0, 30.0, 400), 1)
    series[rng.uniform(size=400) < 0.05] = np.nan
    window = LookbackWindow.of(series, 252)
    for current in [9.0, 10.0, float(series[-3]), 17.35, 20.0, 29.9, 31.0]:
        if np.isnan(current):
            continue
        assert window.percentile(current) == stats.iv_percentile(series, current, 252)


def test_window_refuses_what_stats_refuses() -> None:
    with pytest.raises(ValueError, match="inf"):
        LookbackWindow.of(np.array([12.0, np.inf, 13.0]), 252).percentile(12.5)
    with pytest.raises(ValueError, match="no IV history"):
        LookbackWindow.of(np.array([np.nan, np.nan]), 252).percentile(12.5)
    with pytest.raises(ValueError, match="finite"):
        LookbackWindow.of(np.array([12.0, 13.0]), 252).percentile(float("nan"))


def test_config_refuses_smile_settings_the_unchecked_fit_cannot_take() -> None:
    with pytest.raises(ValueError, match="sabr_min_points"):
        AnalyticsConfig(sabr_min_points=2)
    with pytest.raises(ValueError, match="sabr_beta"):
        AnalyticsConfig(sabr_beta=1.5)


def test_garch_forecasts_kept_per_horizon_are_the_fresh_ones_across_days_and_back() -> None:
    history = real_history()
    # Two days with different history (October, and after the file ends), then the first day again, as
    # a replay that rewinds would ask.
    days = [
        day_inputs(history, day, 252) for day in (date(2025, 10, 1), date(2025, 12, 17), date(2025, 10, 1))
    ]
    cache = GarchCache(max_horizon=60)
    for days_in in days:
        for horizon in (4, 1, 60, 4, 200):
            kept = cache.forecast(days_in, horizon)
            fresh = GarchCache(max_horizon=60).forecast(days_in, horizon)
            assert kept == fresh
            assert kept[0] is not None
    assert days[0].close.size != days[1].close.size
    assert cache.refits == 3


def test_a_new_high_ranks_exactly_100() -> None:
    # With this range, 100 * (high - low) / (high - low) rounds to 100.00000000000001: a new one-year
    # high of ATM IV must rank 100, not fail VolPercentiles' 0..100 bound.
    low, high = 0.17536476558798048, 0.2624854121010861
    config = AnalyticsConfig()
    series = np.linspace(low, high, 300)
    days = dataclasses.replace(
        day_inputs(real_history(), date(2025, 12, 17), config.percentile_lookback_days),
        atm_iv=series,
        atm_iv_window=LookbackWindow.of(series, config.percentile_lookback_days),
    )
    view, _ = percentiles(days, None, high, config)
    assert view.atm_iv_rank == 100.0
    assert view.atm_iv_percentile is not None
