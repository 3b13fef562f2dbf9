"""SABR smile: Hagan (2002) lognormal vol with Obłój's (2008) leading term, and a fast calibration.

Conventions: vols are annualised decimals (0.15, not 15), `t` is in years, strikes and forwards in
index points. `beta` is fixed per calibration (0.5 by default for an equity index: between the
lognormal beta=1 and the normal beta=0 backbones, and a common desk choice for NIFTY).

Formula (Obłój 2008, "Fine-tune your smile", eq. 3.1 with the corrected leading term):

    sigma(K) = I0(K) * (1 + I1(K) * t)
    I0 = nu * ln(F/K) / x(z),   z = nu * (F^(1-b) - K^(1-b)) / (alpha * (1-b))   (z = nu*ln(F/K)/alpha at b=1)
    x(z) = ln((sqrt(1 - 2 rho z + z^2) + z - rho) / (1 - rho))
    I1 = (1-b)^2 alpha^2 / (24 (FK)^(1-b)) + rho b nu alpha / (4 (FK)^((1-b)/2)) + (2 - 3 rho^2) nu^2 / 24

Plain Hagan replaces the exact `(F^(1-b) - K^(1-b)) / ((1-b) ln(F/K))` by its fourth-order expansion
`(FK)^((1-b)/2) (1 + y^2/24 + y^4/1920)` with `y = (1-b) ln(F/K)`, both in the prefactor and inside
`z`. The two agree at the money and for b=1; away from the money they differ by a term of order
`y^2 * nu/alpha`, which grows on the wings and as beta falls (tests measure it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from types import ModuleType
from typing import NamedTuple

import numpy as np

from volguard_common.quant._types import ArrayLike, BoolArray, Float64Array

# The optimiser may not touch |rho| = 1 (x(z) is singular there) or nu = 0 (its Jacobian column
# vanishes); these bounds are far outside any index smile.
_RHO_BOUND = 0.9999
_NU_MIN = 1e-6
_NU_MAX = 25.0


class SabrFit(NamedTuple):
    """Result of one smile calibration (a NamedTuple: immutable, and built six times a second by the
    analytics engine, where a frozen dataclass's per-field setattr showed).

    `rmse` is the unweighted vol RMSE over all `n_points` usable quotes (outliers included);
    `n_outliers` of them were left out of the final least-squares stage; `iterations` counts
    Levenberg-Marquardt iterations over every stage run (the warm fast path, the two stages, and an
    abandoned warm start).
    """

    alpha: float
    beta: float
    rho: float
    nu: float
    rmse: float
    converged: bool
    iterations: int
    n_points: int
    n_outliers: int
    # True when the fit started from the caller's `initial` (a warm start) and converged from there.
    warm_start: bool = False


def _as_float(x: ArrayLike) -> Float64Array:
    return np.asarray(x, dtype=np.float64)


def _check_params(alpha: Float64Array, beta: Float64Array, rho: Float64Array, nu: Float64Array) -> None:
    # Bad parameters fail here, loudly, rather than turning into NaN vols the risk engine might read.
    if not np.all(alpha > 0.0):
        raise ValueError("SABR alpha must be > 0")
    if not np.all((beta >= 0.0) & (beta <= 1.0)):
        raise ValueError("SABR beta must lie in [0, 1]")
    if not np.all(np.abs(rho) < 1.0):
        raise ValueError("SABR rho must lie strictly inside (-1, 1)")
    if not np.all(nu >= 0.0):
        raise ValueError("SABR nu must be >= 0")


def _check_smile(smile: SabrFit) -> None:
    """_check_params for one fitted smile, without numpy's per-call cost on four scalars."""
    if not (smile.alpha > 0.0 and 0.0 <= smile.beta <= 1.0 and abs(smile.rho) < 1.0 and smile.nu >= 0.0):
        _check_params(
            *(np.asarray(x, dtype=np.float64) for x in (smile.alpha, smile.beta, smile.rho, smile.nu))
        )
        raise ValueError("SABR parameters must be finite")  # unreachable: _check_params raised


def _z_over_x(z: Float64Array, rho: Float64Array) -> Float64Array:
    """z / x(z), finite everywhere, including z = 0 and far wings of either sign."""
    # z = 0 (at the money, or nu = 0) is a 0/0 with limit 1; z = 1e-200 gives exactly that limit in
    # double precision without a second branch.
    z = z + (z == 0.0) * 1e-200
    root = np.sqrt(1.0 - 2.0 * rho * z + z * z)
    # Two algebraically equal forms of x(z); each is used where it has no cancellation.
    # Near and right of zero: x = log1p((root - 1 + z) / (1 - rho)), with root - 1 written without
    # subtracting nearly equal numbers, so small |z| keeps full relative precision.
    x = np.log1p(((z * z - 2.0 * rho * z) / (root + 1.0) + z) / (1.0 - rho))
    # Far left wing (z << 0, z < rho): root + z - rho cancels; multiply by its conjugate
    # (root - z + rho), using root^2 - (z - rho)^2 = 1 - rho^2. Only evaluated when some point
    # needs it: this kernel runs inside the calibration loop.
    if float(z.min(initial=0.0)) < -0.5:
        left = (z < -0.5) & (z < rho)
        x = np.where(left, np.log((1.0 + rho) / np.where(left, root - z + rho, 1.0 + rho)), x)
    ratio: Float64Array = z / x
    return ratio


def _one_minus_exp_ratio(y: Float64Array) -> Float64Array:
    """(1 - exp(-y)) / y with its limit 1 at y = 0 (the b=1 and K=F cases)."""
    safe = np.where(y == 0.0, 1.0, y)
    return np.where(y == 0.0, 1.0, -np.expm1(-safe) / safe)


def _first_order(
    fk_pow: Float64Array, alpha: Float64Array, beta: Float64Array, rho: Float64Array, nu: Float64Array
) -> Float64Array:
    """Hagan's O(t) correction I1; `fk_pow` is (F*K)^((1-beta)/2)."""
    one_b = 1.0 - beta
    return (
        one_b * one_b * alpha * alpha / (24.0 * fk_pow * fk_pow)
        + rho * beta * nu * alpha / (4.0 * fk_pow)
        + (2.0 - 3.0 * rho * rho) * nu * nu / 24.0
    )


@dataclass(frozen=True, slots=True)
class _Strikes:
    """The parameter-free parts of Obłój's formula for fixed forward, strikes, t and beta.

    A calibration evaluates the smile hundreds of times on the same strikes; computing the logs and
    powers once leaves a dozen array operations per evaluation.
    """

    z_per_nu_alpha: Float64Array  # z * alpha / nu = F^(1-b) ln(F/K) h(y)
    inv_prefactor: Float64Array  # 1 / (F^(1-b) h(y))
    # I1 * t = alpha^2 * alpha2_term + rho nu alpha * cross_term + (2 - 3 rho^2) nu^2 * nu2_term
    alpha2_term: Float64Array  # (1-b)^2 t / (24 (FK)^(1-b))
    cross_term: Float64Array  # b t / (4 (FK)^((1-b)/2))
    nu2_term: Float64Array  # t / 24

    @staticmethod
    def prepare(forward: Float64Array, strike: Float64Array, t: Float64Array, beta: Float64Array) -> _Strikes:
        one_b = 1.0 - beta
        log_fk = np.log(forward / strike)
        # F^(1-b) - K^(1-b) = F^(1-b) * ln(F/K) * h(y), h(y) = (1 - e^-y)/y with y = (1-b) ln(F/K),
        # so the b=1 and ATM cases need no separate branch.
        h = _one_minus_exp_ratio(one_b * log_fk)
        f_pow = forward**one_b
        inv_fk_pow = (forward * strike) ** (-0.5 * one_b)
        return _Strikes(
            z_per_nu_alpha=f_pow * log_fk * h,
            inv_prefactor=1.0 / (f_pow * h),
            alpha2_term=one_b * one_b * t / 24.0 * inv_fk_pow * inv_fk_pow,
            cross_term=beta * t / 4.0 * inv_fk_pow,
            nu2_term=np.broadcast_to(t / 24.0, log_fk.shape),
        )

    def subset(self, keep: BoolArray) -> _Strikes:
        return _Strikes(
            z_per_nu_alpha=self.z_per_nu_alpha[keep],
            inv_prefactor=self.inv_prefactor[keep],
            alpha2_term=self.alpha2_term[keep],
            cross_term=self.cross_term[keep],
            nu2_term=self.nu2_term[keep],
        )

    def vol(self, alpha: ArrayLike, rho: ArrayLike, nu: ArrayLike) -> Float64Array:
        a = np.asarray(alpha, dtype=np.float64)
        r = np.asarray(rho, dtype=np.float64)
        n = np.asarray(nu, dtype=np.float64)
        z = (n / a) * self.z_per_nu_alpha
        first_order_t = (
            (a * a) * self.alpha2_term
            + (r * n * a) * self.cross_term
            + ((2.0 - 3.0 * r * r) * n * n) * self.nu2_term
        )
        out: Float64Array = (a * self.inv_prefactor) * _z_over_x(z, r) * (1.0 + first_order_t)
        return out


def vol(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    rho: ArrayLike,
    nu: ArrayLike,
) -> Float64Array:
    """Black (lognormal) implied vol under SABR, Hagan 2002 with Obłój's 2008 leading term.

    All arguments broadcast. Non-positive forwards or strikes give NaN (no lognormal vol exists);
    invalid parameters raise ValueError.
    """
    f, k, tt, a, b, r, n = np.broadcast_arrays(
        _as_float(forward), _as_float(strike), _as_float(t), _as_float(alpha), _as_float(beta),
        _as_float(rho), _as_float(nu),
    )  # fmt: skip
    _check_params(a, b, r, n)
    valid = (f > 0.0) & (k > 0.0)
    smile = _Strikes.prepare(np.where(valid, f, 1.0), np.where(valid, k, 1.0), tt, b)
    return np.where(valid, smile.vol(a, r, n), np.nan)


def vol_hagan(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    rho: ArrayLike,
    nu: ArrayLike,
) -> Float64Array:
    """Plain Hagan et al. (2002) eq. (2.17a) lognormal vol, kept for comparison with `vol`."""
    f, k, tt, a, b, r, n = np.broadcast_arrays(
        _as_float(forward), _as_float(strike), _as_float(t), _as_float(alpha), _as_float(beta),
        _as_float(rho), _as_float(nu),
    )  # fmt: skip
    _check_params(a, b, r, n)
    valid = (f > 0.0) & (k > 0.0)
    f = np.where(valid, f, 1.0)
    k = np.where(valid, k, 1.0)
    one_b = 1.0 - b
    log_fk = np.log(f / k)
    fk_pow = (f * k) ** (0.5 * one_b)
    y2 = (one_b * log_fk) ** 2
    expansion = 1.0 + y2 / 24.0 + y2 * y2 / 1920.0
    z = n / a * fk_pow * log_fk
    leading = a / (fk_pow * expansion) * _z_over_x(z, r)
    out = leading * (1.0 + _first_order(fk_pow, a, b, r, n) * tt)
    return np.where(valid, out, np.nan)


def alpha_from_atm(atm_vol: float, forward: float, t: float, beta: float, rho: float, nu: float) -> float:
    """The alpha that reprices the ATM vol exactly: the positive root of Hagan's ATM cubic.

    At K = F both formulas reduce to sigma_atm = alpha/F^(1-b) * (1 + I1(alpha) t), a cubic in alpha
    that is increasing for alpha > 0 whenever it matters; Newton from the leading-order root
    converges in a handful of steps.
    """
    if not (atm_vol > 0.0 and forward > 0.0 and t >= 0.0):
        raise ValueError("ATM vol and forward must be > 0 and t >= 0")
    f_pow = float(forward ** (1.0 - beta))
    c3 = (1.0 - beta) ** 2 * t / (24.0 * f_pow**3)
    c2 = rho * beta * nu * t / (4.0 * f_pow**2)
    c1 = (1.0 + (2.0 - 3.0 * rho * rho) * nu * nu * t / 24.0) / f_pow
    alpha = atm_vol * f_pow / max(c1 * f_pow, 1e-12)
    for _ in range(30):
        value = ((c3 * alpha + c2) * alpha + c1) * alpha - atm_vol
        slope = (3.0 * c3 * alpha + 2.0 * c2) * alpha + c1
        if slope <= 0.0:
            break
        step = value / slope
        alpha = max(alpha - step, 0.5 * alpha)
        if abs(step) <= 1e-14 * alpha:
            break
    return alpha


def initial_guess(
    forward: float, strikes: Float64Array, t: float, vols: Float64Array, beta: float
) -> tuple[float, float, float]:
    """Explicit starting point from the smile's level, skew and curvature at the money.

    A weighted quadratic in k = ln(K/F) over the points nearest the money gives sigma0, slope and
    curvature; Hagan's small-k expansion (Hagan et al. 2002, eq. 3.1c)

        sigma(k) ~ sigma0 * (1 - (1-b-rho*lam)/2 * k + ((1-b)^2 + (2-3rho^2) lam^2)/12 * k^2),
        lam = nu/alpha * F^(1-b) = nu / sigma0

    is inverted for rho*lam and lam^2, and alpha then comes from the exact ATM cubic.
    """
    k = np.log(strikes / forward)
    order = np.argsort(np.abs(k))
    near = order[: min(len(k), 7)]
    # Weights fall off with distance from ATM so the local shape, not the wings, drives the guess.
    scale = max(float(np.max(np.abs(k[near]))), 1e-4)
    w = 1.0 / (1.0 + (k[near] / scale) ** 2)
    design = np.stack([np.ones_like(k[near]), k[near], k[near] ** 2], axis=1)
    if len(near) >= 3:
        coef, *_ = np.linalg.lstsq(design * w[:, None], vols[near] * w, rcond=None)
        sigma0, slope, curv = float(coef[0]), float(coef[1]), float(coef[2])
    else:
        sigma0, slope, curv = float(np.mean(vols[near])), 0.0, 0.0
    if not sigma0 > 0.0:
        sigma0 = float(np.median(vols))
    one_b = 1.0 - beta
    rho_lam = one_b + 2.0 * slope / sigma0
    lam_sq = (12.0 * curv / sigma0 - one_b * one_b + 3.0 * rho_lam * rho_lam) / 2.0
    lam = float(np.sqrt(max(lam_sq, rho_lam * rho_lam, 1e-4)))
    rho = float(np.clip(rho_lam / lam, -0.95, 0.95))
    nu = float(np.clip(lam * sigma0, 1e-3, 0.5 * _NU_MAX))
    alpha = alpha_from_atm(sigma0, forward, t, beta, rho, nu)
    return alpha, rho, nu


Initial = SabrFit | tuple[float, float, float] | None


def fit(
    forward: float,
    strikes: ArrayLike,
    t: float,
    vols: ArrayLike,
    weights: ArrayLike | None = None,
    beta: float = 0.5,
    *,
    robust_scale: float = 0.005,
    initial: Initial = None,
) -> SabrFit:
    """Calibrate alpha, rho and nu (beta fixed) to one expiry's smile.

    Residuals are `sqrt(w_i) * (sigma_model - sigma_market)`. Two Levenberg-Marquardt stages: first
    the soft-L1 loss, under which residuals beyond `robust_scale` (0.5 vol points by default) count
    linearly so a few stale or fat-fingered quotes cannot drag the smile; then plain least squares on
    the quotes consistent with that robust fit, so a clean smile gets the true least-squares answer.
    NaN vols (and zero weights) are skipped; fewer than three usable points raise ValueError.

    The start is the explicit `initial_guess` unless `initial` gives one: the previous fit of the
    same expiry (a SabrFit of the same beta) or an (alpha, rho, nu) tuple, clipped into the bounds.
    A smile a second later has barely moved, and from there a fast path replaces the robust stage:
    the outlier cut is applied to the residuals at the start (last second's smile, itself a robust
    fit's least-squares polish, stands in for the soft-L1 fit: a quote that went bad since has a
    large residual there and is cut), and least squares polishes from the start on the rest. That
    takes two or three smile evaluations where walking out to the soft-L1 optimum and back (~1 %
    apart in the parameters, while a second's move is ~0.1 %) took eight or nine.
    The fast path stands only if the start looks like the market's smile and the answer agrees:
    it may cut at most one quote in 32 (at least one), because honest noise never reaches the cut
    (6 robust sigmas and 1.5 vol points) and a second brings one or two new bad quotes, while more
    cuts say the smile itself moved (a uniform move of 1.5 vol points in a second cuts every quote);
    its polish must converge within `_WARM_MAX_ITERATIONS`; and every quote it cut must still be
    beyond the cut at its answer (else a stale smile judged it). Otherwise both stages run from the
    start. A warm start whose stages have not both converged within `_WARM_MAX_ITERATIONS` each
    (the smile jumped, or the start is stale) is abandoned for the explicit guess; `warm_start` on
    the result says which start produced it, `iterations` counts all of it, and `converged` from a
    warm start means the fit that chose the outliers converged too (the robust stage, or on the
    fast path the previous fit the caller vouched for, confirmed by the answer).

    Runs the compiled kernel (``_sabr_kernels``); `_fit_numpy` is its numpy twin for the tests.
    """
    points = _usable_points(forward, strikes, t, vols, weights, beta, initial)
    return _fit_points(forward, t, beta, robust_scale, points)


def fit_prepared(
    forward: float,
    strikes: Float64Array,
    t: float,
    vols: Float64Array,
    sqrt_weights: Float64Array,
    beta: float = 0.5,
    *,
    robust_scale: float = 0.005,
    initial: SabrFit | None = None,
) -> SabrFit:
    """:func:`fit` on points already in the form `fit` checks them into, with no checks: for a
    caller that built them itself (the analytics engine, six smiles a second from its own solved
    vols). The caller guarantees contiguous float64 arrays of one length >= 3, strikes finite and
    > 0, vols finite and > 0 (no NaN), `sqrt_weights` (square roots of `fit`'s weights) finite and
    > 0, forward and t finite and > 0, beta in [0, 1], and `initial` a fit of the same beta or None.
    Anything else is undefined behaviour here; `fit` is the entry that says what is wrong.
    """
    warm = None if initial is None else np.array([initial.alpha, initial.rho, initial.nu])
    points = _Points(strikes=strikes, vols=vols, sqrt_w=sqrt_weights, n_points=vols.size, warm=warm)
    return _fit_points(forward, t, beta, robust_scale, points)


def _fit_points(forward: float, t: float, beta: float, robust_scale: float, points: _Points) -> SabrFit:
    if points.warm is not None:
        warm = _solve(forward, t, beta, robust_scale, points, points.warm, True, 0)
        if warm.converged:
            return warm
        return _solve_cold(forward, t, beta, robust_scale, points, warm.iterations)
    return _solve_cold(forward, t, beta, robust_scale, points, 0)


def _solve_cold(
    forward: float, t: float, beta: float, robust_scale: float, points: _Points, spent: int
) -> SabrFit:
    guess = _cold_start(forward, t, beta, points)
    return _solve(forward, t, beta, robust_scale, points, guess, False, spent)


def _solve(
    forward: float,
    t: float,
    beta: float,
    robust_scale: float,
    points: _Points,
    guess: Float64Array,
    warm: bool,
    spent: int,
) -> SabrFit:
    """The kernel's calibration from `guess`, after `spent` iterations on an abandoned start."""
    params, iterations, converged, n_outliers, rmse = _kernels().fit(
        forward, points.strikes, t, points.vols, points.sqrt_w, beta, guess, robust_scale, warm
    )
    alpha, rho, nu = params.tolist()
    return SabrFit(
        alpha, float(beta), rho, nu, rmse, converged, spent + iterations, points.n_points, n_outliers, warm
    )


def fit_prepared_many(
    forwards: Sequence[float],
    ts: Sequence[float],
    strikes: Float64Array,
    vols: Float64Array,
    sqrt_weights: Float64Array,
    bounds: Sequence[int],
    beta: float = 0.5,
    *,
    robust_scale: float = 0.005,
    initial: Sequence[SabrFit | None],
) -> list[SabrFit]:
    """:func:`fit_prepared` of several smiles (the expiries of one chain set) in one compiled call:
    smile e has forward `forwards[e]`, time `ts[e]`, its points in rows `bounds[e]:bounds[e + 1]` of
    the point arrays and warm start `initial[e]`. The same fits as calling `fit_prepared` smile by
    smile (a warm start that does not converge is abandoned for the explicit guess in the same way);
    one call saves the per-call overhead, which at smile size is a good part of a warm fit. Every
    smile must satisfy `fit_prepared`'s contract; `bounds` has one more entry than `forwards`."""
    k = len(forwards)
    if not (len(ts) == len(initial) == k and len(bounds) == k + 1):
        raise ValueError("fit_prepared_many needs one t and one initial per forward, and k + 1 bounds")
    if k == 0:
        return []
    edges = np.asarray(bounds, dtype=np.int64)
    rows = edges.tolist()
    beta = float(beta)
    warm = [smile is not None for smile in initial]
    guesses = np.array(
        [
            (smile.alpha, smile.rho, smile.nu)
            if smile is not None
            else initial_guess(forwards[e], strikes[lo:hi], ts[e], vols[lo:hi], beta)
            for e, (smile, (lo, hi)) in enumerate(zip(initial, pairwise(rows), strict=True))
        ],
        dtype=np.float64,
    )
    # Python scalars once for the whole block: numpy scalars one by one cost more than the fits' own
    # bookkeeping.
    params, iterations, converged, n_outliers, rmse = (
        column.tolist()
        for column in _kernels().fit_many(
            np.asarray(forwards, dtype=np.float64), np.asarray(ts, dtype=np.float64), strikes, vols,
            sqrt_weights, edges, beta, guesses, np.array(warm, dtype=np.bool_), robust_scale,
        )
    )  # fmt: skip
    fits: list[SabrFit] = []
    for e, (alpha, rho, nu) in enumerate(params):
        lo, hi = rows[e], rows[e + 1]
        fit = SabrFit(
            alpha, beta, rho, nu, rmse[e], converged[e], iterations[e], hi - lo, n_outliers[e], warm[e]
        )
        if warm[e] and not converged[e]:
            points = _Points(strikes[lo:hi], vols[lo:hi], sqrt_weights[lo:hi], hi - lo, None)
            fit = _solve_cold(forwards[e], ts[e], beta, robust_scale, points, fit.iterations)
        fits.append(fit)
    return fits


def _fit_numpy(
    forward: float,
    strikes: ArrayLike,
    t: float,
    vols: ArrayLike,
    weights: ArrayLike | None = None,
    beta: float = 0.5,
    *,
    robust_scale: float = 0.005,
    initial: Initial = None,
) -> SabrFit:
    """The numpy twin of :func:`fit`, used only as the tests' reference (central-difference
    Jacobian, numpy normal equations): same checks, stages, outlier cut, stopping rules and warm
    start."""
    points = _usable_points(forward, strikes, t, vols, weights, beta, initial)
    smile = _Strikes.prepare(
        np.full_like(points.strikes, forward),
        points.strikes,
        np.asarray(t, dtype=np.float64),
        np.asarray(beta, dtype=np.float64),
    )
    v, sqrt_w = points.vols, points.sqrt_w

    def residuals(params: Float64Array) -> Float64Array:
        out: Float64Array = sqrt_w * (smile.vol(params[0], params[1], params[2]) - v)
        return out

    def solve(guess: Float64Array, warm: bool, spent: int) -> SabrFit:
        start, lower, upper = _start_and_bounds(guess)
        budget = _WARM_MAX_ITERATIONS if warm else _MAX_ITERATIONS
        tolerance = _WARM_POLISH_STEP_TOLERANCE if warm else _POLISH_STEP_TOLERANCE

        def least_squares(keep: BoolArray, begin: Float64Array) -> _Solve:
            return _levenberg_marquardt(
                smile.subset(keep), v[keep], sqrt_w[keep], begin, lower, upper, None, tolerance,
                _POLISH_COST_TOLERANCE, budget,
            )  # fmt: skip

        if warm:
            # Fast path (see `fit`): last second's smile judges the outliers, least squares polishes.
            at_start = residuals(start)
            keep = np.abs(at_start) <= _outlier_level(at_start, robust_scale)
            n_outliers = int(np.count_nonzero(~keep))
            if n_outliers <= _fast_cut_limit(points.n_points) and points.n_points - n_outliers >= 3:
                polish = least_squares(keep, start)
                if polish.converged and _cuts_hold(residuals(polish.params), keep, robust_scale):
                    return finish(polish, n_outliers, warm, spent)
                spent += polish.iterations
        # Stage 1: soft-L1 to find the smile the bulk of the quotes agree on. It only has to get
        # close: stage 2 polishes, so its stopping tolerance is loose.
        robust = _levenberg_marquardt(
            smile, v, sqrt_w, start, lower, upper, robust_scale, _ROBUST_STEP_TOLERANCE,
            _ROBUST_COST_TOLERANCE, budget,
        )  # fmt: skip
        # Stage 2: plain least squares on the quotes that agree with it. With clean or merely noisy
        # quotes nothing is excluded and this is the least-squares fit (lowest RMSE).
        resid = residuals(robust.params)
        keep = np.abs(resid) <= _outlier_level(resid, robust_scale)
        n_outliers = int(np.count_nonzero(~keep))
        final = robust
        if points.n_points - n_outliers >= 3:
            polish = least_squares(keep, robust.params)
            final = _Solve(polish.params, robust.iterations + polish.iterations, polish.converged)
        # From a warm start the robust stage must converge too: its fit decides the outliers.
        final = final._replace(converged=final.converged and (robust.converged or not warm))
        return finish(final, n_outliers, warm, spent)

    def finish(final: _Solve, n_outliers: int, warm: bool, spent: int) -> SabrFit:
        alpha, rho, nu = (float(x) for x in final.params)
        rmse = float(np.sqrt(np.mean((smile.vol(alpha, rho, nu) - v) ** 2)))
        return _result(
            final.params, beta, rmse, final.converged, spent + final.iterations, points.n_points,
            n_outliers, warm,
        )  # fmt: skip

    if points.warm is not None:
        warm = solve(points.warm, True, 0)
        if warm.converged:
            return warm
        return solve(_cold_start(forward, t, beta, points), False, warm.iterations)
    return solve(_cold_start(forward, t, beta, points), False, 0)


def _outlier_level(resid: Float64Array, robust_scale: float) -> float:
    """The |weighted residual| above which a quote is left out of the least-squares stage: more than
    `_OUTLIER_SIGMAS` robust sigmas of all residuals (1.4826 x MAD) and `_OUTLIER_SCALES` x
    `robust_scale` (1.5 vol points by default), so a 4-sigma draw of honest noise stays."""
    spread = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    return max(_OUTLIER_SIGMAS * spread, _OUTLIER_SCALES * robust_scale)


def _fast_cut_limit(n_points: int) -> int:
    """How many quotes the warm fast path may leave out: one, or one in `_FAST_CUT_DIVISOR`."""
    return max(1, n_points // _FAST_CUT_DIVISOR)


def _cuts_hold(resid: Float64Array, keep: BoolArray, robust_scale: float) -> bool:
    """Whether every quote the fast path left out (~keep) is still beyond the cut at the fit whose
    weighted residuals of all quotes are `resid`. One that is not was judged by a stale smile."""
    level = _outlier_level(resid, robust_scale)
    return not bool(np.any(np.abs(resid[~keep]) <= level))


class _Points(NamedTuple):
    strikes: Float64Array
    vols: Float64Array
    sqrt_w: Float64Array
    n_points: int
    warm: Float64Array | None


def _usable_points(
    forward: float,
    strikes: ArrayLike,
    t: float,
    vols: ArrayLike,
    weights: ArrayLike | None,
    beta: float,
    initial: Initial,
) -> _Points:
    k_all = _as_float(strikes).ravel()
    v_all = _as_float(vols).ravel()
    if k_all.shape != v_all.shape:
        raise ValueError("strikes and vols must have the same length")
    w_all = np.ones_like(k_all) if weights is None else _as_float(weights).ravel()
    if w_all.shape != k_all.shape:
        raise ValueError("weights must have the same length as strikes")
    if not (math.isfinite(forward) and forward > 0.0 and math.isfinite(t) and t > 0.0):
        raise ValueError("forward and t must be finite and > 0")
    if not 0.0 <= beta <= 1.0:
        raise ValueError("beta must lie in [0, 1]")
    # Whole-array reductions first (this runs once per expiry per snapshot); the specific complaint
    # is worked out only when something is wrong.
    if not (k_all.min(initial=1.0) > 0.0 and k_all.max(initial=1.0) < np.inf):
        raise ValueError("strikes must be finite and > 0")
    if not (w_all.min(initial=0.0) >= 0.0 and w_all.max(initial=0.0) < np.inf):
        raise ValueError("weights must be finite and >= 0")
    if not (np.fmin.reduce(v_all, initial=1.0) > 0.0 and np.fmax.reduce(v_all, initial=1.0) < np.inf):
        raise ValueError("vols must be > 0 (use NaN for a missing quote)")
    usable = ~np.isnan(v_all) & (w_all > 0.0)
    n_points = int(np.count_nonzero(usable))
    if n_points < 3:
        raise ValueError(f"SABR fit needs at least 3 usable (non-NaN, weighted) points, got {n_points}")
    if n_points < usable.size:
        k_all, v_all, w_all = k_all[usable], v_all[usable], w_all[usable]
    warm: Float64Array | None = None
    if initial is not None:
        if isinstance(initial, SabrFit):
            if initial.beta != beta:
                raise ValueError(f"warm start has beta {initial.beta}, this fit beta {beta}")
            warm = np.array([initial.alpha, initial.rho, initial.nu])
        else:
            warm = np.array(initial, dtype=np.float64)
            if warm.shape != (3,):
                raise ValueError("initial must be a SabrFit or an (alpha, rho, nu) tuple")
        if not (np.all(np.isfinite(warm)) and warm[0] > 0.0 and abs(warm[1]) < 1.0 and warm[2] >= 0.0):
            raise ValueError(f"warm start {tuple(warm.tolist())} is not a valid SABR parameter set")
    return _Points(
        strikes=np.ascontiguousarray(k_all),
        vols=np.ascontiguousarray(v_all),
        sqrt_w=np.sqrt(w_all),
        n_points=n_points,
        warm=warm,
    )


def _cold_start(forward: float, t: float, beta: float, points: _Points) -> Float64Array:
    return np.array(initial_guess(forward, points.strikes, t, points.vols, beta))


def _start_and_bounds(guess: Float64Array) -> tuple[Float64Array, Float64Array, Float64Array]:
    """(start, lower, upper) of one guess (alpha, rho, nu): the guess clipped into the bounds. The
    numpy twin's; the kernel has its own copy (`_sabr_kernels._start_and_bounds`)."""
    # The alpha floor only keeps the optimiser off zero; it scales with the start (alpha > 0) so
    # that it binds nowhere near a real smile.
    lower = np.array([1e-8 * guess[0], -_RHO_BOUND, _NU_MIN])
    upper = np.array([np.inf, _RHO_BOUND, _NU_MAX])
    return np.minimum(np.maximum(guess, lower), upper), lower, upper


def _result(
    params: Sequence[float] | Float64Array,
    beta: float,
    rmse: float,
    converged: bool,
    iterations: int,
    n_points: int,
    n_outliers: int,
    warm: bool,
) -> SabrFit:
    alpha, rho, nu = (float(x) for x in params)
    return SabrFit(
        alpha=alpha,
        beta=float(beta),
        rho=rho,
        nu=nu,
        rmse=float(rmse),
        converged=bool(converged) and math.isfinite(alpha + rho + nu),
        iterations=int(iterations),
        n_points=n_points,
        n_outliers=int(n_outliers),
        warm_start=warm,
    )


def smile_vol(forward: float, strike: float, t: float, smile: SabrFit) -> float:
    """`vol` at one strike of a fitted smile, compiled: for the few scalar look-ups per snapshot
    (ATM vol) where numpy's per-call overhead would dwarf the arithmetic."""
    if not (forward > 0.0 and strike > 0.0 and math.isfinite(forward * strike) and t >= 0.0):
        raise ValueError("forward and strike must be finite and > 0, t >= 0")
    _check_smile(smile)
    return float(_kernels().smile_vol(forward, strike, t, smile.alpha, smile.beta, smile.rho, smile.nu))


def vols_at_call_deltas(
    forward: float, t: float, smile: SabrFit, call_deltas: ArrayLike, grid: ArrayLike
) -> Float64Array:
    """Smile vols where the forward call delta N(d1) (with the smile's own vol) first falls through
    each of `call_deltas`, scanning `grid` (log-moneyness in units of the ATM total vol) from left
    to right; NaN where the grid brackets no crossing. Compiled; each bracket is refined by Illinois
    regula falsi."""
    if not (math.isfinite(forward) and forward > 0.0 and math.isfinite(t) and t > 0.0):
        raise ValueError("forward and t must be finite and > 0")
    _check_smile(smile)
    out: Float64Array = _kernels().vols_at_call_deltas(
        forward, t, smile.alpha, smile.beta, smile.rho, smile.nu,
        np.ascontiguousarray(grid, dtype=np.float64), np.ascontiguousarray(call_deltas, dtype=np.float64),
    )  # fmt: skip
    return out


def _smile_inputs(
    forwards: ArrayLike, ts: ArrayLike, smiles: Sequence[SabrFit]
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """The checked inputs of the batched smile look-ups: forwards, times and the k x 4 block of
    (alpha, beta, rho, nu), one row per smile."""
    f, t = _as_float(forwards).ravel(), _as_float(ts).ravel()
    k = len(smiles)
    if f.shape != (k,) or t.shape != (k,):
        raise ValueError(f"need one forward and one t per smile ({k}), got {f.shape} and {t.shape}")
    # Python floats: for a handful of expiries numpy's min and max cost several times the loop.
    if not all(0.0 < x < math.inf for x in f.tolist() + t.tolist()):
        raise ValueError("forwards and t must be finite and > 0")
    for smile in smiles:
        _check_smile(smile)
    block = np.array([(s.alpha, s.beta, s.rho, s.nu) for s in smiles], dtype=np.float64).reshape(k, 4)
    return f, t, block


def atm_vols(forwards: ArrayLike, ts: ArrayLike, smiles: Sequence[SabrFit]) -> Float64Array:
    """`smile_vol` of smile e at its own forward (the ATM-forward vol), for every e, in one call."""
    f, t, block = _smile_inputs(forwards, ts, smiles)
    out: Float64Array = _kernels().smile_vols_many(f, f, t, block)
    return out


def vols_at_call_deltas_many(
    forwards: ArrayLike, ts: ArrayLike, smiles: Sequence[SabrFit], call_deltas: ArrayLike, grid: ArrayLike
) -> Float64Array:
    """`vols_at_call_deltas` of smile e with forward `forwards[e]` and time `ts[e]`, for every e, in one
    compiled call: a k x len(call_deltas) block, NaN where the grid brackets no crossing."""
    f, t, block = _smile_inputs(forwards, ts, smiles)
    out: Float64Array = _kernels().vols_at_call_deltas_many(
        f, t, block, np.ascontiguousarray(grid, dtype=np.float64),
        np.ascontiguousarray(call_deltas, dtype=np.float64),
    )  # fmt: skip
    return out


def wing_and_atm_vols_many(
    forwards: ArrayLike, ts: ArrayLike, smiles: Sequence[SabrFit], call_deltas: ArrayLike, grid: ArrayLike
) -> Float64Array:
    """`vols_at_call_deltas_many` and `atm_vols` of the same smiles from one check of the inputs and
    one compiled call: a k x (len(call_deltas) + 1) block, row e smile e's vols at `call_deltas`
    (NaN where the grid brackets no crossing) and then its ATM-forward vol. The same numbers as the
    two calls; the ATM vol is the one the delta search scales its grid by anyway."""
    f, t, block = _smile_inputs(forwards, ts, smiles)
    out: Float64Array = _kernels().wing_and_atm_vols_many(
        f, t, block, np.ascontiguousarray(grid, dtype=np.float64),
        np.ascontiguousarray(call_deltas, dtype=np.float64),
    )  # fmt: skip
    return out


@cache
def _kernels() -> ModuleType:
    # Imported on first use so that importing this module neither imports numba nor compiles; held
    # after that, since an import statement costs as much as some of the calls it serves.
    from volguard_common.quant import _sabr_kernels

    return _sabr_kernels


class _Solve(NamedTuple):
    params: Float64Array
    iterations: int
    converged: bool


_MAX_ITERATIONS = 100
# Per stage. From last second's smile a stage takes a handful; needing more means the start is
# not close, and the explicit guess is the better bet.
_WARM_MAX_ITERATIONS = 20
_MAX_DAMPING = 1e10
# Stopping rules (relative step, relative cost change; see `_levenberg_marquardt`). The robust stage
# only has to get close enough to judge outliers: the least-squares stage polishes.
_ROBUST_STEP_TOLERANCE = 1e-4
_ROBUST_COST_TOLERANCE = 1e-6
_POLISH_STEP_TOLERANCE = 1e-8
# From a warm start the polish stops at 1e-6. What that leaves: the next step would move alpha by
# < 1e-6 relative (a vol by < 1e-6 x 15 % = 1.5e-7, 0.000015 vol points) and rho, nu by < 1e-6 of
# themselves (less again: a vol moves ~0.05 per unit of rho or nu on the wings). Measured on the
# benchmark's six-expiry chain sets, every vol of every warm fit is within 0.00001 vol points of the
# fully converged least-squares smile, against quote noise of ~0.01 vol points (a 0.05-rupee tick on
# a far OTM option) and smile moves of a few hundredths of a vol point a second. 1e-8 would cost
# one more evaluation per fit for digits no quote supports; cold fits keep 1e-8 (they are rare, and
# exact-data tests recover parameters to 1e-8 RMSE).
_WARM_POLISH_STEP_TOLERANCE = 1e-6
_POLISH_COST_TOLERANCE = 1e-12
# The outlier cut: a quote is left out when its weighted residual exceeds 6 robust sigmas of all
# residuals (1.4826 x MAD) and 3 x `robust_scale` (1.5 vol points by default).
_OUTLIER_SIGMAS = 6.0
_OUTLIER_SCALES = 3.0
# The warm fast path may leave out at most max(1, n // 32) quotes (1 of 50, 3 of 112): see `fit`.
_FAST_CUT_DIVISOR = 32


def _levenberg_marquardt(
    smile: _Strikes,
    vols: Float64Array,
    sqrt_w: Float64Array,
    start: Float64Array,
    lower: Float64Array,
    upper: Float64Array,
    robust_scale: float | None,
    step_tolerance: float,
    cost_tolerance: float,
    max_iterations: int = _MAX_ITERATIONS,
) -> _Solve:
    """Levenberg-Marquardt on (alpha, rho, nu), projected onto the bounds.

    With `robust_scale` the loss is soft-L1, f^2 * sum(2 (sqrt(1 + (r/f)^2) - 1)), minimised by
    iteratively reweighted normal equations (weights 1/sqrt(1 + (r/f)^2)); without it, plain squares.
    Marquardt's diagonal damping makes the step invariant to the very different scales of alpha
    (~20 at beta 0.5) and rho, nu (~1). Three parameters: the normal equations are 3x3, so every
    iteration costs one stacked smile evaluation and a tiny solve. It stops when the step it is
    about to try moves no parameter by more than `step_tolerance` (relative), or an accepted step
    lowered the cost by less than `cost_tolerance` (relative); with noisy quotes Gauss-Newton
    converges only linearly (each step ~1/50 of the one before on the engine's smiles), so these
    decide the count. The step test is applied to the step about to be tried, not to the one just
    taken: the same test one smile evaluation sooner, and it stops the fit where the cost can no
    longer tell steps apart, instead of rejecting ever smaller steps until the damping gives up
    (~25 wasted evaluations). The answer is then within about one such step of the minimum.
    `iterations` counts iterations that evaluated a trial step.
    """

    typical = np.array([1e-3 * start[0], 1e-3, 1e-3])

    def evaluate(p: Float64Array) -> tuple[Float64Array, Float64Array]:
        """Residuals and their Jacobian (central differences) from one stacked smile evaluation.

        The 7 parameter sets (p and p +- a step in each coordinate) cost about what one set does,
        because at ~40 strikes numpy's per-call overhead, not arithmetic, dominates. Evaluating the
        Jacobian with every trial point wastes it on a rejected step but saves a call on each
        accepted one. Steps stay inside the domain (|rho| < 1, alpha, nu > 0).
        """
        step = 1e-6 * np.maximum(np.abs(p), typical)
        step = np.minimum(step, np.array([0.5 * p[0], 0.5 * (1.0 - abs(p[1])), 0.5 * p[2]]))
        shifted = p[None, :] + np.concatenate([np.zeros((1, 3)), np.diag(step), -np.diag(step)])
        smiles = smile.vol(shifted[:, 0:1], shifted[:, 1:2], shifted[:, 2:3])
        resid: Float64Array = sqrt_w * (smiles[0] - vols)
        jac: Float64Array = ((smiles[1:4] - smiles[4:7]) / (2.0 * step[:, None])).T * sqrt_w[:, None]
        return resid, jac

    def cost(r: Float64Array) -> float:
        if robust_scale is None:
            return float(r @ r)
        f2 = robust_scale * robust_scale
        return float(2.0 * f2 * np.sum(np.sqrt(1.0 + r * r / f2) - 1.0))

    p = start.copy()
    r, jac = evaluate(p)
    c = cost(r)
    damping = 1e-3
    for iteration in range(1, max_iterations + 1):
        weighted = jac if robust_scale is None else jac / np.sqrt(1.0 + (r / robust_scale) ** 2)[:, None]
        normal = weighted.T @ jac
        gradient = weighted.T @ r
        diagonal = np.diag(np.maximum(np.diag(normal), 1e-300))
        rejected = False
        while True:
            step = np.linalg.solve(normal + damping * diagonal, -gradient)
            trial = np.clip(p + step, lower, upper)
            if float((np.abs(trial - p) / np.maximum(np.abs(p), typical)).max()) < step_tolerance:
                return _Solve(p, iteration if rejected else iteration - 1, True)
            r_trial, jac_trial = evaluate(trial)
            c_trial = cost(r_trial)
            if c_trial < c:
                break
            rejected = True
            damping *= 4.0
            if damping > _MAX_DAMPING:
                # Not even a tiny steepest-descent step lowers the cost: p is a minimum to working
                # precision.
                return _Solve(p, iteration, True)
        improvement = c - c_trial
        p, r, jac, c = trial, r_trial, jac_trial, c_trial
        damping = max(damping / 3.0, 1e-12)
        if improvement <= cost_tolerance * c or c < 1e-28:
            return _Solve(p, iteration, True)
    return _Solve(p, max_iterations, False)
