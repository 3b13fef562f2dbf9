"""Statistical properties of the simulated index and VIX paths (10 ordinary sessions, one-second steps).

Returns are taken over one minute (60 one-second steps) inside each session, so overnight gaps never
enter a sample; 10 sessions give 3,740 one-minute returns, enough for the signs and sizes asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.market_data.sim.helpers import simulate_days
from volguard_market_data.domain.sim.session import intraday_variance_profile
from volguard_market_data.domain.sim.vix import SESSION_SECONDS

DAYS = 10


@pytest.fixture(scope="module")
def paths() -> tuple[np.ndarray, np.ndarray]:
    return simulate_days(seed=2024, days=DAYS)


def minute_returns(spot: np.ndarray) -> np.ndarray:
    minute = np.log(spot[:, ::60])
    return np.diff(minute, axis=1)


def autocorrelation(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


def test_volatility_clusters(paths: tuple[np.ndarray, np.ndarray]) -> None:
    spot, _ = paths
    # Remove the intraday U-shape first, so the autocorrelation measured is clustering, not the clock.
    minute_sd = np.sqrt(intraday_variance_profile(SESSION_SECONDS).reshape(-1, 60).mean(axis=1))
    absolute = np.abs(minute_returns(spot)) / minute_sd[None, :-1]
    series = absolute.ravel()
    acf = [autocorrelation(series, lag) for lag in range(1, 11)]
    # An i.i.d. series of this length has autocorrelations within ~±0.03 (2/sqrt(3,740)).
    assert min(acf) > 0.03
    assert np.mean(acf) > 0.05


def test_leverage_falling_market_lifts_vix(paths: tuple[np.ndarray, np.ndarray]) -> None:
    spot, vix = paths
    returns = minute_returns(spot).ravel()
    vix_changes = np.diff(np.log(vix[:, ::60]), axis=1).ravel()
    assert np.corrcoef(returns, vix_changes)[0, 1] < -0.4


def test_returns_have_fat_tails(paths: tuple[np.ndarray, np.ndarray]) -> None:
    spot, _ = paths
    one_second = np.diff(np.log(spot), axis=1).ravel()
    centred = one_second - one_second.mean()
    excess_kurtosis = (centred**4).mean() / (centred**2).mean() ** 2 - 3.0
    assert excess_kurtosis > 1.0


def test_intraday_volatility_is_u_shaped(paths: tuple[np.ndarray, np.ndarray]) -> None:
    spot, _ = paths
    absolute = np.abs(np.diff(np.log(spot), axis=1))
    first_half_hour = absolute[:, :1800].mean()
    midday = absolute[:, 9000:12600].mean()  # 11:45-12:45
    last_half_hour = absolute[:, -1800:].mean()
    assert first_half_hour > 1.2 * midday
    assert last_half_hour > 1.05 * midday


def test_annual_volatility_and_vix_levels_are_realistic(paths: tuple[np.ndarray, np.ndarray]) -> None:
    spot, vix = paths
    intraday_var = (np.diff(np.log(spot), axis=1) ** 2).sum(axis=1).mean()
    # Intraday carries 85 % of the daily variance; the rest is the overnight gap.
    annual_vol = np.sqrt(intraday_var / 0.85 * 252)
    assert 0.08 < annual_vol < 0.22
    assert vix.min() > 9.0
    assert vix.max() < 30.0
    assert 0.6 < annual_vol / (vix.mean() / 100.0) < 1.1
