"""GARCH forecasts: our wrapper against `arch` used directly on the real NIFTY year."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from arch import arch_model
from arch.utility.exceptions import ConvergenceWarning, DataScaleWarning

from tests.unit.quant.shared_data import shared_data
from volguard_common.quant import garch, realized
from volguard_market_data.history_files import parse_daily_csv


@pytest.fixture(scope="module")
def nifty_returns() -> np.ndarray:
    closes = parse_daily_csv(shared_data("nifty50_daily_nse.csv")).frame["close"].to_numpy()
    return realized.log_returns(closes)


@pytest.mark.parametrize("model", ["garch", "gjr"])
@pytest.mark.parametrize("dist", ["t", "normal"])
@pytest.mark.parametrize("horizon", [1, 5, 22])
def test_forecast_matches_arch_used_directly(
    nifty_returns: np.ndarray, model: str, dist: str, horizon: int
) -> None:
    # filterwarnings=error already turns any arch warning into a failure; recording them as well
    # makes the "no ConvergenceWarning / DataScaleWarning" requirement explicit in this test.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = garch.forecast(nifty_returns, horizon, model, dist=dist)  # type: ignore[arg-type]
    assert not [w for w in caught if issubclass(w.category, (ConvergenceWarning, DataScaleWarning))]
    assert caught == []

    direct = arch_model(
        nifty_returns * 100.0, mean="Constant", vol="GARCH", p=1, o=1 if model == "gjr" else 0, q=1, dist=dist
    ).fit(disp="off")
    variance = direct.forecast(horizon=horizon, reindex=False).variance.to_numpy()[-1]
    assert ours.vol == pytest.approx(math.sqrt(variance.mean() * 252) / 100.0, rel=1e-12)
    np.testing.assert_allclose(ours.daily_vols, np.sqrt(variance * 252) / 100.0, rtol=1e-12)
    assert ours.loglikelihood == pytest.approx(direct.loglikelihood, rel=1e-12)
    assert ours.params == pytest.approx(dict(direct.params), rel=1e-12)
    assert ours.converged
    assert ours.horizon_days == horizon
    assert len(ours.daily_vols) == horizon
    assert ours.diagnostics.n_obs == len(nifty_returns)
    assert ours.diagnostics.aic == pytest.approx(direct.aic, rel=1e-12)


def test_forecast_is_sensible_for_the_nifty_year(nifty_returns: np.ndarray) -> None:
    result = garch.forecast(nifty_returns, 10)
    assert result.model == "garch"
    assert result.dist == "t"
    assert set(result.params) == {"mu", "omega", "alpha[1]", "beta[1]", "nu"}
    assert result.persistence == pytest.approx(
        result.params["alpha[1]"] + result.params["beta[1]"], rel=1e-15
    )
    assert 0.8 < result.persistence < 1.0
    # A calm year (~12 % realised): the forecast sits in single digits to low teens, and the path
    # mean-reverts monotonically from the last conditional vol towards the long-run level.
    assert 0.05 < result.vol < 0.15
    assert result.diagnostics.unconditional_vol is not None
    path = result.daily_vols
    toward_long_run = np.sign(result.diagnostics.unconditional_vol - path[0])
    assert np.all(np.sign(np.diff(path)) == toward_long_run)
    assert min(path[0], path[-1]) <= result.vol <= max(path[0], path[-1])
    assert abs(result.diagnostics.std_resid_mean) < 0.2
    assert result.diagnostics.std_resid_std == pytest.approx(1.0, abs=0.15)


def test_gjr_adds_half_gamma_to_persistence(nifty_returns: np.ndarray) -> None:
    result = garch.forecast(nifty_returns, 5, "gjr")
    p = result.params
    assert "gamma[1]" in p
    # NIFTY's leverage effect: negative returns raise variance more than positive ones.
    assert p["gamma[1]"] > 0.0
    assert result.persistence == pytest.approx(p["alpha[1]"] + p["beta[1]"] + 0.5 * p["gamma[1]"], rel=1e-15)


def test_bad_input_fails_loudly(nifty_returns: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 100"):
        garch.forecast(nifty_returns[:50], 5)
    with pytest.raises(ValueError, match="finite"):
        garch.forecast(np.r_[nifty_returns, np.nan], 5)
    with pytest.raises(ValueError, match="horizon_days"):
        garch.forecast(nifty_returns, 0)
    with pytest.raises(ValueError, match="model"):
        garch.forecast(nifty_returns, 5, "egarch")  # type: ignore[arg-type]
