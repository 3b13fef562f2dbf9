"""SABR: the vectorised formulas against their scalar twins, the singular limits, and calibration."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volguard_common.quant import _reference_vol as ref
from volguard_common.quant import sabr

FORWARD = 24_000.0
STRIKES = FORWARD * np.linspace(0.85, 1.15, 41)

# Realistic NIFTY smiles at beta = 0.5: (ATM vol, rho, nu, days to expiry). alpha follows from the
# ATM vol, so the cases read in the units a trader quotes.
NIFTY_CASES = [
    (0.15, -0.35, 0.9, 30),
    (0.12, -0.50, 1.8, 7),
    (0.16, -0.20, 0.5, 90),
    (0.14, -0.60, 1.2, 14),
    (0.11, -0.10, 2.5, 7),
]


def _params(atm: float, rho: float, nu: float, days: int, beta: float = 0.5) -> tuple[float, float]:
    t = days / 365.0
    return sabr.alpha_from_atm(atm, FORWARD, t, beta, rho, nu), t


# --- formula against the scalar twins --------------------------------------------------------------


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_vectorised_vols_match_scalar_twins(
    atm: float, rho: float, nu: float, days: int, beta: float
) -> None:
    alpha, t = _params(atm, rho, nu, days, beta)
    strikes = FORWARD * np.array([0.6, 0.85, 0.97, 0.999, 1.0, 1.001, 1.03, 1.15, 1.6])
    fast_obloj = sabr.vol(FORWARD, strikes, t, alpha, beta, rho, nu)
    fast_hagan = sabr.vol_hagan(FORWARD, strikes, t, alpha, beta, rho, nu)
    slow_obloj = [ref.sabr_vol_obloj(FORWARD, k, t, alpha, beta, rho, nu) for k in strikes]
    slow_hagan = [ref.sabr_vol_hagan(FORWARD, k, t, alpha, beta, rho, nu) for k in strikes]
    np.testing.assert_allclose(fast_obloj, slow_obloj, rtol=1e-11)
    np.testing.assert_allclose(fast_hagan, slow_hagan, rtol=1e-11)


def test_hagan_matches_pysabr_independent_implementation() -> None:
    hagan_2002 = pytest.importorskip("pysabr.models.hagan_2002_lognormal_sabr")
    alpha, t = _params(0.15, -0.35, 0.9, 30)
    ours = sabr.vol_hagan(FORWARD, STRIKES, t, alpha, 0.5, -0.35, 0.9)
    theirs = [hagan_2002.lognormal_vol(k, FORWARD, t, alpha, 0.5, -0.35, 0.9) for k in STRIKES]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    moneyness=st.floats(0.5, 2.0),
    atm=st.floats(0.05, 0.6),
    beta=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
    rho=st.floats(-0.95, 0.95),
    nu=st.floats(0.01, 3.0),
    days=st.integers(1, 400),
)
def test_random_parameters_agree_with_twin_and_stay_positive(
    moneyness: float, atm: float, beta: float, rho: float, nu: float, days: int
) -> None:
    alpha, t = _params(atm, rho, nu, days, beta)
    strike = FORWARD * moneyness
    fast = float(sabr.vol(FORWARD, strike, t, alpha, beta, rho, nu))
    assert math.isfinite(fast)
    assert fast > 0.0
    # The twin's direct x(z) loses digits for |z| below ~1e-5; compare where it is trustworthy.
    if abs(math.log(moneyness)) > 1e-3:
        assert fast == pytest.approx(ref.sabr_vol_obloj(FORWARD, strike, t, alpha, beta, rho, nu), rel=1e-9)


# --- singular limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_atm_limit_is_continuous_and_exact(beta: float) -> None:
    alpha, t = _params(0.15, -0.35, 0.9, 30, beta)
    bumps = np.array([0.0, 1e-15, -1e-15, 1e-12, -1e-12, 1e-9, -1e-9, 1e-7, -1e-7])
    vols = sabr.vol(FORWARD, FORWARD * (1.0 + bumps), t, alpha, beta, -0.35, 0.9)
    assert np.all(np.isfinite(vols))
    # Exactly at the money both formulas are alpha/F^(1-b) * (1 + I1 t), which reprices the ATM vol.
    assert vols[0] == pytest.approx(0.15, rel=1e-13)
    np.testing.assert_allclose(vols, 0.15, rtol=1e-6)
    # Within 1e-9 of the forward the smile moves by skew x bump, nothing more: no 0/0 noise.
    assert np.max(np.abs(vols[:7] - vols[0])) < 1e-9


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_nu_to_zero_limit_is_the_cev_vol(beta: float) -> None:
    alpha, t = _params(0.15, -0.35, 0.0, 30, beta)
    at_zero = sabr.vol(FORWARD, STRIKES, t, alpha, beta, -0.35, 0.0)
    near_zero = sabr.vol(FORWARD, STRIKES, t, alpha, beta, -0.35, 1e-10)
    slow = [ref.sabr_vol_obloj(FORWARD, k, t, alpha, beta, -0.35, 0.0) for k in STRIKES]
    np.testing.assert_allclose(at_zero, slow, rtol=1e-12)
    np.testing.assert_allclose(near_zero, at_zero, rtol=1e-9)
    if beta == 1.0:
        # Lognormal backbone with no vol-of-vol: a flat smile at alpha (plus the t correction).
        np.testing.assert_allclose(at_zero, at_zero[0], rtol=1e-14)


def test_far_wings_stay_finite_for_extreme_z() -> None:
    strikes = FORWARD * np.array([1e-4, 0.01, 0.1, 10.0, 100.0])
    for rho in (-0.999, 0.0, 0.999):
        vols = sabr.vol(FORWARD, strikes, 0.5, 30.0, 0.5, rho, 4.0)
        assert np.all(np.isfinite(vols))
        assert np.all(vols > 0.0)


@pytest.mark.parametrize(
    ("z", "rho"),
    [
        (-1e4, 0.99),
        (-40.0, 0.9),
        (-3.0, 0.999),
        (-0.6, -0.9),
        (1e-7, 0.5),
        (-1e-7, -0.5),
        (3e-6, 0.2),
        (50.0, -0.9),
    ],
)
def test_z_over_x_is_accurate_where_the_direct_form_loses_digits(z: float, rho: float) -> None:
    # Far left wing: sqrt(1 - 2 rho z + z^2) + z - rho cancels (direct form off by ~1e-9 at z=-1e4);
    # near z = 0 the log of a number close to 1 does (off by ~1e-9 at z=1e-7). A 50-digit decimal
    # evaluation is the judge; the kernel must be within a few ulps of it everywhere.
    with localcontext() as ctx:
        ctx.prec = 50
        zd, rd = Decimal(z), Decimal(rho)
        exact = float(zd / (((1 - 2 * rd * zd + zd * zd).sqrt() + zd - rd) / (1 - rd)).ln())
    fast = float(sabr._z_over_x(np.array([z]), np.array([rho]))[0])
    assert fast == pytest.approx(exact, rel=1e-15)


def test_non_positive_strikes_give_nan_and_bad_parameters_raise() -> None:
    vols = sabr.vol(FORWARD, np.array([-1.0, 0.0, FORWARD]), 0.1, 20.0, 0.5, -0.3, 0.8)
    assert np.isnan(vols[0])
    assert np.isnan(vols[1])
    assert np.isfinite(vols[2])
    with pytest.raises(ValueError, match="alpha"):
        sabr.vol(FORWARD, FORWARD, 0.1, 0.0, 0.5, -0.3, 0.8)
    with pytest.raises(ValueError, match="rho"):
        sabr.vol(FORWARD, FORWARD, 0.1, 20.0, 0.5, -1.0, 0.8)
    with pytest.raises(ValueError, match="beta"):
        sabr.vol(FORWARD, FORWARD, 0.1, 20.0, 1.5, -0.3, 0.8)
    with pytest.raises(ValueError, match="nu"):
        sabr.vol(FORWARD, FORWARD, 0.1, 20.0, 0.5, -0.3, -0.1)


# --- Obłój versus plain Hagan -------------------------------------------------------------------------


def test_obloj_and_hagan_agree_at_the_money_and_for_beta_one() -> None:
    alpha, t = _params(0.15, -0.35, 0.9, 30, 1.0)
    np.testing.assert_allclose(
        sabr.vol(FORWARD, STRIKES, t, alpha, 1.0, -0.35, 0.9),
        sabr.vol_hagan(FORWARD, STRIKES, t, alpha, 1.0, -0.35, 0.9),
        rtol=1e-14,
    )
    for beta in (0.0, 0.5):
        alpha, t = _params(0.15, -0.35, 0.9, 30, beta)
        assert float(sabr.vol(FORWARD, FORWARD, t, alpha, beta, -0.35, 0.9)) == pytest.approx(
            float(sabr.vol_hagan(FORWARD, FORWARD, t, alpha, beta, -0.35, 0.9)), rel=1e-15
        )


def test_obloj_departs_from_hagan_on_the_wings_more_as_beta_falls() -> None:
    """Where they differ: Hagan expands (F^(1-b) - K^(1-b))/((1-b) ln(F/K)) around the geometric mean
    strike; Obłój keeps it exact inside z. The gap is zero at the money and at b = 1, grows with
    |ln(F/K)| and with 1 - b. For a NIFTY 30-day smile (ATM 15 %, rho -0.35, nu 0.9):
    b = 0.5: ~1e-5 (0.001 vol points) at 85/115 % strikes, ~4e-4 at 60 %;
    b = 0:   ~5e-5 at 85 %, ~1.5e-3 (0.15 vol points) at 60 %.
    So on the strikes NIFTY trades the correction is far below the bid-ask spread, and matters for
    low-beta fits of long-dated or deep-wing quotes."""
    moneyness = np.array([0.6, 0.85, 0.95, 1.0, 1.05, 1.15, 1.5])
    gaps = {}
    for beta in (0.0, 0.5, 0.9):
        alpha, t = _params(0.15, -0.35, 0.9, 30, beta)
        k = FORWARD * moneyness
        gaps[beta] = np.abs(
            sabr.vol(FORWARD, k, t, alpha, beta, -0.35, 0.9)
            - sabr.vol_hagan(FORWARD, k, t, alpha, beta, -0.35, 0.9)
        )
        assert gaps[beta][3] < 1e-15  # same value, different rounding order
        # Monotone in distance from the money on each side.
        assert gaps[beta][0] > gaps[beta][1] > gaps[beta][2] > 0.0
        assert gaps[beta][6] > gaps[beta][5] > gaps[beta][4] > 0.0
    assert np.all(gaps[0.0][[0, 1, 5, 6]] > gaps[0.5][[0, 1, 5, 6]])
    assert np.all(gaps[0.5][[0, 1, 5, 6]] > gaps[0.9][[0, 1, 5, 6]])
    assert 5e-6 < gaps[0.5][1] < 3e-5
    assert 2e-4 < gaps[0.5][0] < 6e-4
    assert 1e-3 < gaps[0.0][0] < 2e-3


# --- calibration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_fit_recovers_known_parameters(atm: float, rho: float, nu: float, days: int) -> None:
    alpha, t = _params(atm, rho, nu, days)
    vols = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, rho, nu)
    result = sabr.fit(FORWARD, STRIKES, t, vols)
    assert result.converged
    assert result.beta == 0.5
    assert result.n_points == len(STRIKES)
    assert abs(result.alpha - alpha) < 1e-4
    assert abs(result.rho - rho) < 5e-3
    assert abs(result.nu - nu) < 5e-3
    assert result.rmse < 1e-8


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_fit_recovers_parameters_at_other_betas(beta: float) -> None:
    alpha, t = _params(0.14, -0.4, 1.0, 45, beta)
    vols = sabr.vol(FORWARD, STRIKES, t, alpha, beta, -0.4, 1.0)
    result = sabr.fit(FORWARD, STRIKES, t, vols, beta=beta)
    assert result.converged
    assert result.alpha == pytest.approx(alpha, rel=1e-6)
    assert abs(result.rho + 0.4) < 5e-3
    assert abs(result.nu - 1.0) < 5e-3


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_initial_guess_is_already_close(atm: float, rho: float, nu: float, days: int) -> None:
    alpha, t = _params(atm, rho, nu, days)
    vols = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, rho, nu)
    alpha0, rho0, nu0 = sabr.initial_guess(FORWARD, STRIKES, t, vols, 0.5)
    assert alpha0 == pytest.approx(alpha, rel=0.02)
    assert abs(rho0 - rho) < 0.05
    assert nu0 == pytest.approx(nu, rel=0.1)


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_fit_on_noisy_smile_stays_near_truth(atm: float, rho: float, nu: float, days: int) -> None:
    alpha, t = _params(atm, rho, nu, days)
    clean = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, rho, nu)
    noisy = clean + np.random.default_rng(days).normal(0.0, 0.003, len(STRIKES))  # 0.3 vol points
    result = sabr.fit(FORWARD, STRIKES, t, noisy)
    assert result.converged
    assert result.rmse < 0.005
    fitted = sabr.vol(FORWARD, STRIKES, t, result.alpha, 0.5, result.rho, result.nu)
    assert np.max(np.abs(fitted - clean)) < 0.003
    assert abs(result.rho - rho) < 0.05
    assert abs(result.nu - nu) < 0.15 * nu


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_fit_shrugs_off_a_few_outliers(atm: float, rho: float, nu: float, days: int) -> None:
    alpha, t = _params(atm, rho, nu, days)
    clean = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, rho, nu)
    quotes = clean + np.random.default_rng(100 + days).normal(0.0, 0.002, len(STRIKES))
    bad = np.array([5, 20, 33])  # one on each side and one at the money
    quotes[bad] += np.array([0.05, -0.04, 0.06])  # 4-6 vol point fat fingers
    robust = sabr.fit(FORWARD, STRIKES, t, quotes)
    assert robust.converged
    fitted = sabr.vol(FORWARD, STRIKES, t, robust.alpha, 0.5, robust.rho, robust.nu)
    assert np.max(np.abs(fitted - clean)) < 0.004
    # Plain least squares (a robust scale far above every residual) is dragged further by the bad
    # quotes; the soft-L1 loss is what keeps the smile near the truth.
    plain = sabr.fit(FORWARD, STRIKES, t, quotes, robust_scale=10.0)
    plain_fitted = sabr.vol(FORWARD, STRIKES, t, plain.alpha, 0.5, plain.rho, plain.nu)
    assert np.max(np.abs(fitted - clean)) < np.max(np.abs(plain_fitted - clean))


def test_nan_vols_and_zero_weights_are_skipped() -> None:
    alpha, t = _params(0.15, -0.35, 0.9, 30)
    vols = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, -0.35, 0.9) + np.random.default_rng(3).normal(
        0, 0.002, 41
    )
    keep = np.ones(41, dtype=bool)
    keep[[0, 7, 8, 30]] = False
    subset = sabr.fit(FORWARD, STRIKES[keep], t, vols[keep])
    with_nans = sabr.fit(FORWARD, STRIKES, t, np.where(keep, vols, np.nan))
    with_zero_weights = sabr.fit(FORWARD, STRIKES, t, vols, weights=keep.astype(float))
    for other in (with_nans, with_zero_weights):
        assert other.n_points == 37
        assert other.alpha == pytest.approx(subset.alpha, rel=1e-12)
        assert other.rho == pytest.approx(subset.rho, rel=1e-12)
        assert other.nu == pytest.approx(subset.nu, rel=1e-12)


def test_weights_pull_the_fit_towards_heavily_weighted_points() -> None:
    alpha, t = _params(0.15, -0.35, 0.9, 30)
    vols = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, -0.35, 0.9)
    vols[-5:] += 0.01  # the right wing is a vol point rich
    even = sabr.fit(FORWARD, STRIKES, t, vols)
    weights = np.ones(41)
    weights[-5:] = 100.0
    wing_heavy = sabr.fit(FORWARD, STRIKES, t, vols, weights=weights)

    def wing_error(fit: sabr.SabrFit) -> float:
        model = sabr.vol(FORWARD, STRIKES[-5:], t, fit.alpha, 0.5, fit.rho, fit.nu)
        return float(np.max(np.abs(model - vols[-5:])))

    assert wing_error(wing_heavy) < wing_error(even)


def test_fit_needs_three_usable_points() -> None:
    strikes = FORWARD * np.array([0.95, 1.0, 1.05, 1.1])
    with pytest.raises(ValueError, match="at least 3 usable"):
        sabr.fit(FORWARD, strikes, 0.1, np.array([0.16, 0.15, np.nan, np.nan]))
    with pytest.raises(ValueError, match="at least 3 usable"):
        sabr.fit(FORWARD, strikes[:2], 0.1, np.array([0.16, 0.15]))
    with pytest.raises(ValueError, match="at least 3 usable"):
        sabr.fit(FORWARD, strikes, 0.1, np.full(4, np.nan))
    result = sabr.fit(FORWARD, strikes[:3], 0.1, np.array([0.16, 0.15, 0.148]))
    assert result.n_points == 3
    assert result.rmse < 1e-6


def test_fit_rejects_malformed_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        sabr.fit(FORWARD, STRIKES, 0.1, np.full(40, 0.15))
    with pytest.raises(ValueError, match="strikes"):
        sabr.fit(FORWARD, np.array([-1.0, 24000.0, 25000.0]), 0.1, np.full(3, 0.15))
    with pytest.raises(ValueError, match="vols must be > 0"):
        sabr.fit(FORWARD, STRIKES[:3], 0.1, np.array([0.15, 0.0, 0.15]))
    with pytest.raises(ValueError, match="forward and t"):
        sabr.fit(FORWARD, STRIKES[:3], 0.0, np.full(3, 0.15))


# --- compiled calibration against its numpy twin, warm starts ---------------------------------------


def _noisy_smile(atm: float, rho: float, nu: float, days: int) -> tuple[float, np.ndarray]:
    alpha, t = _params(atm, rho, nu, days)
    clean = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, rho, nu)
    return t, clean + np.random.default_rng(7 * days).normal(0.0, 0.002, len(STRIKES))


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
@pytest.mark.parametrize("with_outliers", [False, True])
def test_compiled_fit_matches_numpy_twin(
    atm: float, rho: float, nu: float, days: int, with_outliers: bool
) -> None:
    t, quotes = _noisy_smile(atm, rho, nu, days)
    if with_outliers:
        quotes[[4, 21, 36]] += np.array([0.05, -0.04, 0.06])
    weights = np.random.default_rng(days).uniform(0.2, 3.0, len(STRIKES))
    fast = sabr.fit(FORWARD, STRIKES, t, quotes, weights)
    slow = sabr._fit_numpy(FORWARD, STRIKES, t, quotes, weights)
    assert fast.converged
    assert slow.converged
    assert fast.n_outliers == slow.n_outliers == (3 if with_outliers else 0)
    assert fast.alpha == pytest.approx(slow.alpha, rel=1e-7)
    assert fast.rho == pytest.approx(slow.rho, abs=1e-7)
    assert fast.nu == pytest.approx(slow.nu, rel=1e-7)
    assert fast.rmse == pytest.approx(slow.rmse, rel=1e-7)
    assert abs(fast.iterations - slow.iterations) <= 2


@pytest.mark.parametrize(
    ("alpha", "beta", "rho", "nu", "t"),
    [(20.0, 0.5, -0.4, 1.5, 0.05), (0.15, 1.0, -0.7, 0.8, 0.5), (500.0, 0.0, 0.3, 3.0, 0.02)],
)
def test_analytic_jacobian_matches_central_differences(
    alpha: float, beta: float, rho: float, nu: float, t: float
) -> None:
    from volguard_common.quant import _sabr_kernels as kernels

    # Far left and right wings, near the money (z ~ 1e-6, the series branch) and exactly ATM.
    strikes = FORWARD * np.array([0.4, 0.8, 0.97, 1.0 - 1e-7, 1.0, 1.0 + 1e-7, 1.05, 1.6, 2.5])
    f_pow = FORWARD ** (1.0 - beta)
    terms = np.array([kernels._strike_terms(FORWARD, f_pow, k, t, beta) for k in strikes]).T.copy()
    params = np.array([alpha, rho, nu])
    for i in range(strikes.size):
        value, *grad = kernels._vol_and_gradient(terms, i, alpha, rho, nu)
        assert value == pytest.approx(
            float(sabr.vol(FORWARD, strikes[i], t, alpha, beta, rho, nu)), rel=1e-13
        )
        for j in range(3):
            h = 1e-6 * max(abs(params[j]), 1e-2)
            up, down = params.copy(), params.copy()
            up[j] += h
            down[j] -= h
            numeric = (kernels._vol(terms, i, *up) - kernels._vol(terms, i, *down)) / (2.0 * h)
            assert grad[j] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def _one_second_later(quotes: np.ndarray, days: int) -> np.ndarray:
    # Spot up 4 points, the whole smile re-marked by a few hundredths of a vol point.
    return quotes * 1.0005 + np.random.default_rng(days).normal(0.0, 0.0002, len(STRIKES))


def _vol_gap(forward: float, t: float, one: sabr.SabrFit, other: sabr.SabrFit) -> float:
    """Largest vol difference of two fitted smiles over STRIKES."""
    return float(
        np.max(
            np.abs(
                sabr.vol(forward, STRIKES, t, one.alpha, one.beta, one.rho, one.nu)
                - sabr.vol(forward, STRIKES, t, other.alpha, other.beta, other.rho, other.nu)
            )
        )
    )


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_warm_start_from_last_second_gives_the_cold_answer_in_fewer_iterations(
    atm: float, rho: float, nu: float, days: int
) -> None:
    t, quotes = _noisy_smile(atm, rho, nu, days)
    previous = sabr.fit(FORWARD, STRIKES, t, quotes)
    later = _one_second_later(quotes, days)
    forward = FORWARD + 4.0
    cold = sabr.fit(forward, STRIKES, t, later)
    for warm in (
        sabr.fit(forward, STRIKES, t, later, initial=previous),
        sabr.fit(forward, STRIKES, t, later, initial=(previous.alpha, previous.rho, previous.nu)),
    ):
        assert warm.warm_start
        assert warm.converged
        assert not cold.warm_start
        # The warm polish stops when the next step would move a parameter by < 1e-6 of itself, the
        # cold one at 1e-8 (sabr._WARM_POLISH_STEP_TOLERANCE): the same smile to 0.00001 vol points.
        assert _vol_gap(forward, t, warm, cold) < 1e-7
        assert warm.alpha == pytest.approx(cold.alpha, rel=2e-6)
        assert warm.rho == pytest.approx(cold.rho, abs=2e-6)
        assert warm.nu == pytest.approx(cold.nu, rel=2e-6)
        # The fast path: the cut at last second's smile, then two or three least-squares steps.
        assert warm.iterations <= 3 < cold.iterations
    twin = sabr._fit_numpy(forward, STRIKES, t, later, initial=previous)
    assert twin.warm_start
    assert twin.alpha == pytest.approx(cold.alpha, rel=2e-6)


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_a_quote_gone_bad_since_last_second_is_cut_by_the_warm_fast_path(
    atm: float, rho: float, nu: float, days: int
) -> None:
    t, quotes = _noisy_smile(atm, rho, nu, days)
    previous = sabr.fit(FORWARD, STRIKES, t, quotes)
    later = _one_second_later(quotes, days)
    later[30] += 0.04  # a 4 vol point fat finger
    cold = sabr.fit(FORWARD + 4.0, STRIKES, t, later)
    warm = sabr.fit(FORWARD + 4.0, STRIKES, t, later, initial=previous)
    assert cold.n_outliers == warm.n_outliers == 1
    assert warm.converged
    assert warm.iterations <= 3
    assert _vol_gap(FORWARD + 4.0, t, warm, cold) < 1e-7


@pytest.mark.parametrize(("atm", "rho", "nu", "days"), NIFTY_CASES)
def test_a_smile_that_jumped_takes_both_stages_from_the_warm_start(
    atm: float, rho: float, nu: float, days: int
) -> None:
    t, quotes = _noisy_smile(atm, rho, nu, days)
    previous = sabr.fit(FORWARD, STRIKES, t, quotes)
    # Every quote 2 vol points up in a second: beyond the cut (1.5 vol points) at last second's
    # smile, so the fast path would cut everything; the robust stage decides instead.
    jumped = _one_second_later(quotes, days) + 0.02
    cold = sabr.fit(FORWARD, STRIKES, t, jumped)
    warm = sabr.fit(FORWARD, STRIKES, t, jumped, initial=previous)
    assert warm.warm_start
    assert warm.converged
    assert warm.n_outliers == cold.n_outliers == 0
    assert warm.iterations > 3  # a robust stage ran
    assert _vol_gap(FORWARD, t, warm, cold) < 1e-7


def test_a_quote_cut_by_a_stale_warm_start_but_fitted_by_the_answer_sends_the_fit_to_both_stages() -> None:
    # Clean quotes; the warm start is another smile (rho 0.23 lower, nu 20 % lower) that misses only
    # the last strike by more than the cut. Least squares without that quote lands on the quotes'
    # own smile, which fits it: the warm start misjudged it, so the robust stage must judge again.
    alpha, t = _params(0.15, -0.35, 0.9, 30)
    quotes = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, -0.35, 0.9)
    quotes += np.random.default_rng(5).normal(0.0, 0.0005, len(STRIKES))
    stale = (sabr.alpha_from_atm(0.15, FORWARD, t, 0.5, -0.58, 0.72), -0.58, 0.72)
    at_start = sabr.vol(FORWARD, STRIKES, t, stale[0], 0.5, stale[1], stale[2]) - quotes
    assert np.flatnonzero(np.abs(at_start) > sabr._outlier_level(at_start, 0.005)).tolist() == [40]
    cold = sabr.fit(FORWARD, STRIKES, t, quotes)
    for warm in (
        sabr.fit(FORWARD, STRIKES, t, quotes, initial=stale),
        sabr._fit_numpy(FORWARD, STRIKES, t, quotes, initial=stale),
    ):
        assert warm.warm_start
        assert warm.converged
        assert warm.n_outliers == cold.n_outliers == 0
        assert _vol_gap(FORWARD, t, warm, cold) < 1e-7


def test_compiled_warm_fits_match_the_numpy_twin_on_every_path() -> None:
    t, quotes = _noisy_smile(0.14, -0.6, 1.2, 14)
    previous = sabr.fit(FORWARD, STRIKES, t, quotes)
    later = _one_second_later(quotes, 14)
    bad = later.copy()
    bad[30] += 0.04
    weights = np.random.default_rng(14).uniform(0.2, 3.0, len(STRIKES))
    # Fast path, fast path with cuts, too many cuts for it, and everything cut (a jump).
    bad_wing = later.copy()
    bad_wing[[0, 1, 2]] += 0.05
    for quotes_now in (later, bad, bad_wing, later + 0.02):
        fast = sabr.fit(FORWARD, STRIKES, t, quotes_now, weights, initial=previous)
        slow = sabr._fit_numpy(FORWARD, STRIKES, t, quotes_now, weights, initial=previous)
        assert fast.warm_start
        assert slow.warm_start
        assert fast.converged
        assert slow.converged
        assert fast.n_outliers == slow.n_outliers
        assert fast.alpha == pytest.approx(slow.alpha, rel=1e-7)
        assert fast.rho == pytest.approx(slow.rho, abs=1e-7)
        assert fast.nu == pytest.approx(slow.nu, rel=1e-7)
        assert abs(fast.iterations - slow.iterations) <= 2
    # One cut is within the fast path's allowance at 41 quotes (sabr._fast_cut_limit), three are not.
    one_cut = sabr.fit(FORWARD, STRIKES, t, bad, weights, initial=previous)
    three_cuts = sabr.fit(FORWARD, STRIKES, t, bad_wing, weights, initial=previous)
    assert (one_cut.n_outliers, three_cuts.n_outliers) == (1, 3)
    assert one_cut.iterations <= 3 < three_cuts.iterations


def test_compiled_calibration_rules_are_the_documented_ones() -> None:
    from volguard_common.quant import _sabr_kernels as kernels

    # The kernel keeps its own copies (numba's cache only sees edits to the kernel's file).
    for name in (
        "_ROBUST_STEP_TOLERANCE", "_ROBUST_COST_TOLERANCE", "_POLISH_STEP_TOLERANCE",
        "_WARM_POLISH_STEP_TOLERANCE", "_POLISH_COST_TOLERANCE", "_OUTLIER_SIGMAS", "_OUTLIER_SCALES",
        "_FAST_CUT_DIVISOR", "_MAX_DAMPING", "_MAX_ITERATIONS", "_WARM_MAX_ITERATIONS", "_RHO_BOUND",
        "_NU_MIN", "_NU_MAX",
    ):  # fmt: skip
        assert getattr(kernels, name) == getattr(sabr, name), name


def test_a_hopeless_warm_start_falls_back_to_the_explicit_guess() -> None:
    t, quotes = _noisy_smile(0.15, -0.35, 0.9, 30)
    cold = sabr.fit(FORWARD, STRIKES, t, quotes)
    # Nowhere near the smile: LM from here needs far more than the warm-start budget.
    fallback = sabr.fit(FORWARD, STRIKES, t, quotes, initial=(1.0, 0.99, 24.0))
    assert not fallback.warm_start
    assert fallback.converged
    assert (fallback.alpha, fallback.rho, fallback.nu) == (cold.alpha, cold.rho, cold.nu)
    assert fallback.iterations > cold.iterations  # the abandoned warm start is counted


def test_warm_start_must_be_a_valid_parameter_set_of_the_same_beta() -> None:
    t, quotes = _noisy_smile(0.15, -0.35, 0.9, 30)
    other_beta = sabr.fit(FORWARD, STRIKES, t, quotes, beta=0.7)
    with pytest.raises(ValueError, match="beta"):
        sabr.fit(FORWARD, STRIKES, t, quotes, initial=other_beta)
    for bad in ((0.0, -0.3, 1.0), (20.0, 1.0, 1.0), (20.0, -0.3, math.nan), (20.0, -0.3, -1.0)):
        with pytest.raises(ValueError, match="warm start"):
            sabr.fit(FORWARD, STRIKES, t, quotes, initial=bad)
    with pytest.raises(ValueError, match="tuple"):
        sabr.fit(FORWARD, STRIKES, t, quotes, initial=(20.0, -0.3))  # type: ignore[arg-type]


def test_compiled_scalar_smile_and_delta_vols_match_the_references() -> None:
    from volguard_common.quant import stats

    for forward, t, alpha, rho, nu in ((24_000.0, 0.02, 20.0, -0.4, 3.0), (24_000.0, 0.3, 20.0, -0.6, 1.0)):
        smile = sabr.SabrFit(alpha, 0.5, rho, nu, 0.0, True, 0, 0, 0)
        for strike in (0.7 * forward, forward, 1.2 * forward):
            expected = float(sabr.vol(forward, strike, t, alpha, 0.5, rho, nu))
            assert sabr.smile_vol(forward, strike, t, smile) == pytest.approx(expected, rel=1e-13)
        call_vol, put_vol = sabr.vols_at_call_deltas(
            forward, t, smile, [0.25, 0.75], np.linspace(-6.0, 6.0, 241)
        ).tolist()
        reference = stats.risk_reversal_butterfly_25d(forward, t, smile)
        assert call_vol == pytest.approx(reference.call_vol, abs=1e-6)
        assert put_vol == pytest.approx(reference.put_vol, abs=1e-6)
        # The grid only bounds the search (and brackets for the fallback): a coarse one gives the
        # same roots.
        coarse = sabr.vols_at_call_deltas(forward, t, smile, [0.25, 0.75], np.linspace(-6.0, 6.0, 49))
        np.testing.assert_allclose(coarse, [call_vol, put_vol], rtol=0.0, atol=1e-10)
        # A grid that stops short of the 25-delta call crossing finds only the put side.
        short = sabr.vols_at_call_deltas(forward, t, smile, [0.25, 0.75], np.linspace(-6.0, 0.0, 121))
        assert math.isnan(float(short[0]))
        assert short[1] == pytest.approx(put_vol, abs=1e-7)
    with pytest.raises(ValueError, match="rho"):
        sabr.smile_vol(24_000.0, 24_000.0, 0.1, sabr.SabrFit(20.0, 0.5, 1.0, 1.0, 0.0, True, 0, 0, 0))


def _grid_only(forward: float, t: float, params: tuple[float, float, float, float], target: float) -> float:
    """The grid scan and Illinois refinement alone (the fallback), on the 241-point grid."""
    from volguard_common.quant import _sabr_kernels as kernels

    scale = kernels.smile_vol(forward, forward, t, *params) * math.sqrt(t)
    out = np.array([math.nan])
    kernels._grid_crossings(forward, t, *params, np.linspace(-6.0, 6.0, 241), scale, np.array([target]), out)
    return float(out[0])


def _near_the_money(
    forward: float, t: float, params: tuple[float, float, float, float], target: float
) -> tuple[float, bool]:
    """The search from the money alone, bounded by the engine's 49-point grid."""
    from volguard_common.quant import _sabr_kernels as kernels

    scale = kernels.smile_vol(forward, forward, t, *params) * math.sqrt(t)
    vol, found = kernels._delta_crossing_near_the_money(
        forward, t, *params, target, kernels._d1_at_delta(target), scale, -6.0 * scale, 6.0 * scale
    )
    return float(vol), bool(found)


@pytest.mark.parametrize("days", [1, 3, 7, 30, 90, 365])
@pytest.mark.parametrize("atm", [0.08, 0.15, 0.25])
def test_delta_search_from_the_money_finds_the_grid_roots_on_every_realistic_smile(
    days: int, atm: float
) -> None:
    t = days / 365.0
    for rho in (-0.9, -0.6, -0.3, 0.0, 0.3):
        for nu in (0.1, 0.5, 1.0, 2.0, 3.0):
            params = (sabr.alpha_from_atm(atm, FORWARD, t, 0.5, rho, nu), 0.5, rho, nu)
            for target in (0.25, 0.75):
                grid_vol = _grid_only(FORWARD, t, params, target)
                vol, found = _near_the_money(FORWARD, t, params, target)
                if math.isnan(grid_vol):
                    # nu 3 for a year: the call delta never falls to 0.25 (the far right wing's vol
                    # grows too fast). Neither search claims a crossing.
                    assert (rho, nu, days, target) in {(r, 3.0, 365, 0.25) for r in (-0.3, 0.0, 0.3)}
                    assert not found
                    continue
                assert found, (rho, nu, target)
                assert vol == pytest.approx(grid_vol, abs=1e-10)


def test_delta_search_falls_back_to_the_grid_on_a_smile_it_cannot_vouch_for() -> None:
    from volguard_common.quant import stats

    # Vol of vol x sqrt(t) ~ 1.9 with a positive rho: the call wing's vol climbs so fast (the 25-delta
    # call at 180 % vol, ATM 56 %) that the search from the money loses its way; the grid scan finds
    # the crossing the reference finds.
    t = 0.94
    smile = sabr.SabrFit(
        sabr.alpha_from_atm(0.56, FORWARD, t, 0.5, 0.45, 1.92), 0.5, 0.45, 1.92, 0.0, True, 0, 0, 0
    )
    params = (smile.alpha, smile.beta, smile.rho, smile.nu)
    assert not _near_the_money(FORWARD, t, params, 0.25)[1]
    call_vol, put_vol = sabr.vols_at_call_deltas(FORWARD, t, smile, [0.25, 0.75], np.linspace(-6.0, 6.0, 49))
    reference = stats.risk_reversal_butterfly_25d(FORWARD, t, smile)
    assert call_vol == pytest.approx(reference.call_vol, abs=1e-9)
    assert call_vol > 1.5
    assert put_vol == pytest.approx(reference.put_vol, abs=1e-9)


# --- the engine's unchecked entry ------------------------------------------------------------------


def test_fit_prepared_is_fit_without_the_checks() -> None:
    # Same points, sqrt of fit's weights: the very same calibration, cold and from a warm start.
    alpha, t = _params(0.14, -0.4, 1.1, 21)
    rng = np.random.default_rng(7)
    vols = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, -0.4, 1.1) + 0.001 * rng.standard_normal(STRIKES.size)
    sqrt_w = rng.uniform(0.5, 2.0, STRIKES.size)
    cold = sabr.fit(FORWARD, STRIKES, t, vols, sqrt_w * sqrt_w)
    assert sabr.fit_prepared(FORWARD, STRIKES, t, vols, sqrt_w) == cold
    moved = vols * (1.0 + 0.002 * rng.standard_normal(STRIKES.size))
    warm = sabr.fit(FORWARD, STRIKES, t, moved, sqrt_w * sqrt_w, initial=cold)
    assert warm.warm_start
    assert sabr.fit_prepared(FORWARD, STRIKES, t, moved, sqrt_w, initial=cold) == warm


def test_fit_prepared_many_is_fit_prepared_smile_by_smile() -> None:
    # Four smiles of one chain set: cold, warm from last second, warm from a start so far off that it
    # is abandoned for the explicit guess, and cold again. One compiled call, the same four fits.
    rng = np.random.default_rng(11)
    cases = [(0.13, -0.45, 2.0, 5), (0.14, -0.40, 1.1, 21), (0.15, -0.30, 0.8, 49), (0.16, -0.25, 0.6, 90)]
    forwards, ts, strikes, vols, sqrt_w, bounds = [], [], [], [], [], [0]
    for atm, rho, nu, days in cases:
        alpha, t = _params(atm, rho, nu, days)
        smile = sabr.vol(FORWARD, STRIKES, t, alpha, 0.5, rho, nu)
        forwards.append(FORWARD * (1.0 + 0.001 * len(forwards)))
        ts.append(t)
        strikes.append(STRIKES)
        vols.append(smile + 0.001 * rng.standard_normal(STRIKES.size))
        sqrt_w.append(rng.uniform(0.5, 2.0, STRIKES.size))
        bounds.append(bounds[-1] + STRIKES.size)
    last_second = sabr.fit_prepared(forwards[1], strikes[1], ts[1], vols[1] * 1.002, sqrt_w[1])
    far_off = sabr.SabrFit(0.05, 0.5, 0.9, 20.0, 0.0, True, 0, 0, 0)
    initial = [None, last_second, far_off, None]
    joined = [np.concatenate(parts) for parts in (strikes, vols, sqrt_w)]
    many = sabr.fit_prepared_many(forwards, ts, *joined, bounds, initial=initial)
    one_by_one = [
        sabr.fit_prepared(f, k, t, v, w, initial=start)
        for f, k, t, v, w, start in zip(forwards, strikes, ts, vols, sqrt_w, initial, strict=True)
    ]
    assert many == one_by_one
    assert [fit.warm_start for fit in many] == [False, True, False, False]
    assert many[2].converged
    assert many[2].iterations > sabr._WARM_MAX_ITERATIONS  # spent on the abandoned warm start too
    with pytest.raises(ValueError, match="bounds"):
        sabr.fit_prepared_many(forwards, ts, *joined, bounds[:-1], initial=initial)
    empty = np.empty(0)
    assert sabr.fit_prepared_many([], [], empty, empty, empty, [0], initial=[]) == []


def test_batched_atm_and_delta_vols_match_the_single_smile_calls() -> None:
    grid, targets = np.linspace(-6.0, 6.0, 241), [0.25, 0.75]
    smiles = [
        sabr.SabrFit(20.0, 0.5, -0.4, 3.0, 0.0, True, 0, 0, 0),
        sabr.SabrFit(21.0, 0.5, -0.6, 1.0, 0.0, True, 0, 0, 0),
        sabr.SabrFit(0.15, 1.0, -0.2, 0.7, 0.0, True, 0, 0, 0),
    ]
    forwards, ts = [24_000.0, 24_050.0, 24_100.0], [0.02, 0.3, 0.1]
    atm = sabr.atm_vols(forwards, ts, smiles)
    wings = sabr.vols_at_call_deltas_many(forwards, ts, smiles, targets, grid)
    assert wings.shape == (3, 2)
    for e, smile in enumerate(smiles):
        assert atm[e] == sabr.smile_vol(forwards[e], forwards[e], ts[e], smile)
        np.testing.assert_array_equal(
            wings[e], sabr.vols_at_call_deltas(forwards[e], ts[e], smile, targets, grid)
        )
    assert sabr.atm_vols([], [], []).shape == (0,)
    with pytest.raises(ValueError, match="one forward"):
        sabr.atm_vols(forwards[:2], ts, smiles)
    with pytest.raises(ValueError, match="finite"):
        sabr.vols_at_call_deltas_many([24_000.0, math.nan, 1.0], ts, smiles, targets, grid)
    with pytest.raises(ValueError, match="rho"):
        sabr.atm_vols([24_000.0], [0.1], [sabr.SabrFit(20.0, 0.5, 1.0, 1.0, 0.0, True, 0, 0, 0)])


def test_wing_and_atm_vols_are_the_delta_and_atm_calls_in_one() -> None:
    grid, targets = np.linspace(-6.0, 6.0, 241), [0.25, 0.75, 1.0]  # no call delta falls through 1
    smiles = [
        sabr.SabrFit(20.0, 0.5, -0.4, 3.0, 0.0, True, 0, 0, 0),
        sabr.SabrFit(0.15, 1.0, -0.2, 0.7, 0.0, True, 0, 0, 0),
        # Vol of vol 3 for a year: the call delta never falls to 0.25 on the grid.
        sabr.SabrFit(
            sabr.alpha_from_atm(0.15, FORWARD, 1.0, 0.5, 0.0, 3.0), 0.5, 0.0, 3.0, 0.0, True, 0, 0, 0
        ),
        # The search from the money gives up on the 25-delta call here; the grid scan finds it.
        sabr.SabrFit(
            sabr.alpha_from_atm(0.56, FORWARD, 0.94, 0.5, 0.45, 1.92), 0.5, 0.45, 1.92, 0.0, True, 0, 0, 0
        ),
    ]
    forwards, ts = [24_000.0, 24_100.0, FORWARD, FORWARD], [0.02, 0.1, 1.0, 0.94]
    both = sabr.wing_and_atm_vols_many(forwards, ts, smiles, targets, grid)
    assert both.shape == (4, 4)
    np.testing.assert_array_equal(
        both[:, :3], sabr.vols_at_call_deltas_many(forwards, ts, smiles, targets, grid)
    )
    np.testing.assert_array_equal(both[:, 3], sabr.atm_vols(forwards, ts, smiles))
    assert np.isnan(both[:, 2]).all()
    assert np.isnan(both[2, 0])
    assert not np.isnan(both[[0, 1, 3], :2]).any()
    assert not np.isnan(both[:, 3]).any()
    assert sabr.wing_and_atm_vols_many([], [], [], targets, grid).shape == (0, 4)

    def wing_and_atm(forwards: list[float], ts: list[float], smiles: list[sabr.SabrFit]) -> np.ndarray:
        return sabr.wing_and_atm_vols_many(forwards, ts, smiles, targets, grid)

    def wings(forwards: list[float], ts: list[float], smiles: list[sabr.SabrFit]) -> np.ndarray:
        return sabr.vols_at_call_deltas_many(forwards, ts, smiles, targets, grid)

    # The same complaints as the two calls it replaces.
    bad_rho = sabr.SabrFit(20.0, 0.5, 1.0, 1.0, 0.0, True, 0, 0, 0)
    for bad_forwards, bad_ts, bad_smiles, complaint in (
        (forwards[:3], ts, smiles, "one forward"),
        (forwards, ts[:3], smiles, "one forward"),
        ([24_000.0, math.nan, 1.0, 1.0], ts, smiles, "finite"),
        (forwards, [0.02, 0.1, math.inf, 0.94], smiles, "finite"),
        (forwards, [0.02, 0.1, 0.0, 0.94], smiles, "finite"),
        ([24_000.0], [0.1], [bad_rho], "rho"),
    ):
        for function in (wing_and_atm, wings, sabr.atm_vols):
            with pytest.raises(ValueError, match=complaint):
                function(bad_forwards, bad_ts, bad_smiles)


def test_compiled_z_over_x_keeps_its_limit_at_subnormal_z() -> None:
    from volguard_common.quant import _sabr_kernels as kernels

    # nu -> 0 on a valid smile: z is tiny, 1/x overflows, z/x must still be its limit 1.
    for z in (1e-310, -1e-310, 5e-324):
        ratio, _, _ = kernels._z_over_x(z, -0.3)
        assert ratio == pytest.approx(1.0, abs=1e-12)
