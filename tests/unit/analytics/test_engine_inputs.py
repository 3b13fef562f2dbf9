"""What the engine checks once and then trusts: the IV percentile windows it cuts once a day (against
the per-call statistics they replace) and the smile settings it hands to the unchecked SABR fit."""

from __future__ import annotations

import numpy as np
import pytest

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.history import LookbackWindow
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
