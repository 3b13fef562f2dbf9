"""Compiled kernels behind :func:`volguard_common.quant.sabr.fit` and ``sabr.vols_at_call_deltas``.

The same Obłój vol, the same Levenberg-Marquardt stages (soft-L1, outlier cut, least squares; from a
warm start first the cut at the start and the least-squares stage alone), the same stopping rules as
the numpy twin in ``sabr`` (``_fit_numpy``), written one strike at a
time and compiled with numba. At smile size (40-120 quotes) the numpy version spends nearly all of its
time in per-call overhead; here one call runs the whole calibration. Two differences, both in how
fast it gets there, not where: the Jacobian is analytic (the twin uses central differences, which
the tests compare it against), and the 3x3 normal equations are solved by Gaussian elimination.

Compilation happens on the first call and is cached next to this file (``__pycache__``), or in the
user-wide numba cache; importing ``sabr`` does not import this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from volguard_common.quant._jit import jit
from volguard_common.quant._types import Float64Array

__all__ = [
    "fit",
    "fit_many",
    "smile_vol",
    "smile_vols_many",
    "vols_at_call_deltas",
    "vols_at_call_deltas_many",
    "wing_and_atm_vols_many",
]


# Below this |z| the derivatives of z/x(z) come from their Taylor series: the closed forms subtract
# nearly equal numbers there (the value itself keeps the log1p form of the twin, exact at any z).
_SERIES_Z = 1e-5
_MAX_DAMPING = 1e10
_DAMPING_START = 1e-3
_DAMPING_FLOOR = 1e-12
# The calibration's rules, as sabr states and explains them (values kept here rather than imported:
# numba freezes module constants into the cached machine code, and the cache only notices edits to
# this file). A test holds the two copies equal.
_ROBUST_STEP_TOLERANCE = 1e-4
_ROBUST_COST_TOLERANCE = 1e-6
_POLISH_STEP_TOLERANCE = 1e-8
_WARM_POLISH_STEP_TOLERANCE = 1e-6
_POLISH_COST_TOLERANCE = 1e-12
_OUTLIER_SIGMAS = 6.0
_OUTLIER_SCALES = 3.0
_FAST_CUT_DIVISOR = 32
_MAX_ITERATIONS = 100
_WARM_MAX_ITERATIONS = 20
_RHO_BOUND = 0.9999
_NU_MIN = 1e-6
_NU_MAX = 25.0
# 25-delta search: a call delta within 1e-12 of its target pins the strike far below any vol that
# matters (d delta / d log K = n(d1)/(vol sqrt t) is large, not small, near 25 delta); the step cap
# only guards a degenerate bracket.
_DELTA_TOLERANCE = 1e-12
_DELTA_MAX_STEPS = 40
# The search from the money takes 3-5 smile evaluations on any traded smile (tests sweep rho -0.9..0.3,
# nu 0.1..3, 1 day to 1 year); twelve without converging means the smile is not one it can vouch for.
_DELTA_FAST_MAX_STEPS = 12
_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


@jit
def _strike_terms(
    forward: float, f_pow: float, strike: float, t: float, beta: float
) -> tuple[float, float, float, float, float]:
    """(z*alpha/nu, 1/prefactor, alpha^2 term, cross term, nu^2 term): see sabr._Strikes.prepare.
    `f_pow` is forward**(1 - beta), worked out once per smile by the caller: a power is the dearest
    operation here, and the compiler does not hoist it out of a loop over strikes."""
    one_b = 1.0 - beta
    log_fk = math.log(forward / strike)
    y = one_b * log_fk
    h = 1.0 if y == 0.0 else -math.expm1(-y) / y
    inv_fk_pow = (forward * strike) ** (-0.5 * one_b)
    return (
        f_pow * log_fk * h,
        1.0 / (f_pow * h),
        one_b * one_b * t / 24.0 * inv_fk_pow * inv_fk_pow,
        beta * t / 4.0 * inv_fk_pow,
        t / 24.0,
    )


@jit
def _z_over_x(z: float, rho: float) -> tuple[float, float, float]:
    """z/x(z) and its derivatives in z and rho; the value as sabr._z_over_x computes it."""
    return _z_over_x_given(z, rho, 1.0 / (1.0 - rho), 1.0 / (1.0 + rho))


@jit
def _z_over_x_given(z: float, rho: float, inv_1m_rho: float, inv_1p_rho: float) -> tuple[float, float, float]:
    """_z_over_x with 1/(1 - rho) and 1/(1 + rho) worked out by the caller: a calibration evaluates
    thousands of strikes at one rho, and divisions are the slow part of this function."""
    if z == 0.0:
        return 1.0, -0.5 * rho, 0.0
    root = math.sqrt(1.0 - 2.0 * rho * z + z * z)
    z_over_root = z / root
    left = z < -0.5 and z < rho
    if left:
        # Far left wing: the conjugate form, free of the cancellation in root + z - rho.
        inv_conj = 1.0 / (root - z + rho)
        x = math.log((1.0 + rho) * inv_conj)
        x_rho = inv_1p_rho - (1.0 - z_over_root) * inv_conj
    else:
        x = math.log1p(((z * z - 2.0 * rho * z) / (root + 1.0) + z) * inv_1m_rho)
        x_rho = inv_1m_rho - (1.0 + z_over_root) / (root + z - rho)
    ratio = z / x  # not z * (1/x): for |z| below ~1e-308, 1/x overflows while z/x is ~1
    inv_x = 1.0 / x
    if abs(z) < _SERIES_Z:
        # z/x = 1 - rho z/2 + (2 - 3 rho^2) z^2/12 + O(z^3)
        return ratio, -0.5 * rho + (2.0 - 3.0 * rho * rho) * z / 6.0, -0.5 * z - 0.5 * rho * z * z
    inv_x2 = inv_x * inv_x
    return ratio, (x - z_over_root) * inv_x2, -z * x_rho * inv_x2


@jit
def _vol_and_gradient(
    terms: Float64Array, i: int, alpha: float, rho: float, nu: float
) -> tuple[float, float, float, float]:
    """Obłój vol at strike row i of `terms` (5 x n) and its derivatives in alpha, rho and nu."""
    inv_alpha = 1.0 / alpha
    return _vol_and_gradient_given(
        terms, i, alpha, rho, nu, inv_alpha, nu * inv_alpha, 1.0 / (1.0 - rho), 1.0 / (1.0 + rho)
    )


@jit
def _vol_and_gradient_given(
    terms: Float64Array,
    i: int,
    alpha: float,
    rho: float,
    nu: float,
    inv_alpha: float,
    nu_over_alpha: float,
    inv_1m_rho: float,
    inv_1p_rho: float,
) -> tuple[float, float, float, float]:
    """_vol_and_gradient with the per-parameter-set reciprocals worked out once by the caller.

    The derivatives come back as values, not written into an array: they stay in registers, where
    stores to an array the compiler cannot tell apart from `_evaluate`'s inputs and outputs would
    be written and read back for every strike (a tenth of the calibration's time)."""
    zc: float = terms[0, i]
    inv_pref: float = terms[1, i]
    a2: float = terms[2, i]
    cross: float = terms[3, i]
    n2: float = terms[4, i]
    z = nu_over_alpha * zc
    zx, dzx_dz, dzx_drho = _z_over_x_given(z, rho, inv_1m_rho, inv_1p_rho)
    curv = 2.0 - 3.0 * rho * rho
    first_order = 1.0 + alpha * alpha * a2 + rho * nu * alpha * cross + curv * nu * nu * n2
    lead = alpha * inv_pref
    d_alpha = inv_pref * (
        first_order * (zx - z * dzx_dz) + alpha * zx * (2.0 * alpha * a2 + rho * nu * cross)
    )
    d_rho = lead * (dzx_drho * first_order + zx * (nu * alpha * cross - 6.0 * rho * nu * nu * n2))
    d_nu = lead * (dzx_dz * zc * inv_alpha * first_order + zx * (rho * alpha * cross + 2.0 * curv * nu * n2))
    return lead * zx * first_order, d_alpha, d_rho, d_nu


@jit
def _vol_at(
    zc: float, inv_pref: float, a2: float, cross: float, n2: float, alpha: float, rho: float, nu: float
) -> float:
    zx, _, _ = _z_over_x(nu / alpha * zc, rho)
    first_order = 1.0 + alpha * alpha * a2 + rho * nu * alpha * cross + (2.0 - 3.0 * rho * rho) * nu * nu * n2
    return alpha * inv_pref * zx * first_order


@jit
def _vol(terms: Float64Array, i: int, alpha: float, rho: float, nu: float) -> float:
    return _vol_at(terms[0, i], terms[1, i], terms[2, i], terms[3, i], terms[4, i], alpha, rho, nu)


@jit
def smile_vol(
    forward: float, strike: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> float:
    """Obłój vol at one strike (positive forward and strike, valid parameters)."""
    zc, inv_pref, a2, cross, n2 = _strike_terms(forward, forward ** (1.0 - beta), strike, t, beta)
    return _vol_at(zc, inv_pref, a2, cross, n2, alpha, rho, nu)


@jit
def _evaluate(
    terms: Float64Array,
    vols: Float64Array,
    sqrt_w: Float64Array,
    use: np.ndarray[Any, Any],
    p: Float64Array,
    robust_scale: float,
    resid: Float64Array,
    jac: Float64Array,
    err: Float64Array,
) -> float:
    """Residuals, Jacobian (rows of unused points zeroed), vol errors (model - market, of used
    points) and the cost at p."""
    f2 = robust_scale * robust_scale
    alpha, rho, nu = p[0], p[1], p[2]
    inv_alpha = 1.0 / alpha
    nu_over_alpha = nu * inv_alpha
    inv_1m_rho = 1.0 / (1.0 - rho)
    inv_1p_rho = 1.0 / (1.0 + rho)
    cost = 0.0
    for i in range(vols.size):
        if not use[i]:
            resid[i] = 0.0
            jac[i, 0] = 0.0
            jac[i, 1] = 0.0
            jac[i, 2] = 0.0
            continue
        model, d_alpha, d_rho, d_nu = _vol_and_gradient_given(
            terms, i, alpha, rho, nu, inv_alpha, nu_over_alpha, inv_1m_rho, inv_1p_rho
        )
        error = model - vols[i]
        err[i] = error
        r = sqrt_w[i] * error
        resid[i] = r
        jac[i, 0] = sqrt_w[i] * d_alpha
        jac[i, 1] = sqrt_w[i] * d_rho
        jac[i, 2] = sqrt_w[i] * d_nu
        cost += _loss(r, robust_scale, f2)
    return cost


@jit
def _loss(r: float, robust_scale: float, f2: float) -> float:
    """One residual's share of the cost: soft-L1 with scale robust_scale (f2 its square), or r^2."""
    if robust_scale > 0.0:
        return 2.0 * f2 * (math.sqrt(1.0 + r * r / f2) - 1.0)
    return r * r


@jit
def _solve3(a: Float64Array, b: Float64Array) -> Float64Array:
    """Gaussian elimination with partial pivoting on a 3x3 system (a, b are overwritten)."""
    for col in range(3):
        pivot = col
        for row in range(col + 1, 3):
            if abs(a[row, col]) > abs(a[pivot, col]):
                pivot = row
        if pivot != col:
            for j in range(3):
                a[col, j], a[pivot, j] = a[pivot, j], a[col, j]
            b[col], b[pivot] = b[pivot], b[col]
        for row in range(col + 1, 3):
            factor = a[row, col] / a[col, col]
            for j in range(col, 3):
                a[row, j] -= factor * a[col, j]
            b[row] -= factor * b[col]
    x = np.empty(3)
    for row in range(2, -1, -1):
        acc = b[row]
        for j in range(row + 1, 3):
            acc -= a[row, j] * x[j]
        x[row] = acc / a[row, row]
    return x


@jit
def _levenberg_marquardt(
    terms: Float64Array,
    vols: Float64Array,
    sqrt_w: Float64Array,
    use: np.ndarray[Any, Any],
    start: Float64Array,
    lower: Float64Array,
    upper: Float64Array,
    robust_scale: float,
    step_tolerance: float,
    cost_tolerance: float,
    max_iterations: int,
    resid: Float64Array,
    jac: Float64Array,
    err: Float64Array,
    primed: bool,
) -> tuple[Float64Array, int, bool, Float64Array, Float64Array, Float64Array]:
    """sabr._levenberg_marquardt point for point; robust_scale <= 0 means plain least squares.

    `resid`, `jac`, `err` are work arrays; `primed` says their rows of used points already hold
    `_evaluate` at `start` (the previous stage ended there, or the warm start was just evaluated),
    which saves one pass over the points: rows of unused points are never read. Returns (params,
    iterations, converged) and the arrays that hold `_evaluate` at those params."""
    n = vols.size
    typical = np.array([1e-3 * start[0], 1e-3, 1e-3])
    p = start.copy()
    resid_trial = np.empty(n)
    jac_trial = np.empty((n, 3))
    err_trial = np.empty(n)
    normal = np.empty((3, 3))
    gradient = np.empty(3)
    system = np.empty((3, 3))
    rhs = np.empty(3)
    trial = np.empty(3)
    if primed:
        f2 = robust_scale * robust_scale
        c = 0.0
        for i in range(n):
            if use[i]:
                c += _loss(resid[i], robust_scale, f2)
    else:
        c = _evaluate(terms, vols, sqrt_w, use, p, robust_scale, resid, jac, err)
    damping = _DAMPING_START
    for iteration in range(1, max_iterations + 1):
        # normal = J' W J and gradient = J' W r over the used points, W the soft-L1 weights (1 for
        # least squares). Summed in local variables and stored once: summed in the arrays, every
        # term would be a store and a reload, as the compiler cannot rule out that `normal` shares
        # memory with `jac`. Each of the nine entries keeps its own sum, the mirror-image ones too:
        # (w j0) j1 and (w j1) j0 may differ in the last bit. (Moved into a function of its own,
        # this loop compiled to different roundings, and the fits changed in their last digits.)
        n00 = n01 = n02 = n10 = n11 = n12 = n20 = n21 = n22 = 0.0
        g0 = g1 = g2 = 0.0
        for i in range(n):
            if not use[i]:
                continue
            weight = 1.0
            if robust_scale > 0.0:
                ratio = resid[i] / robust_scale
                weight = 1.0 / math.sqrt(1.0 + ratio * ratio)
            r, j0, j1, j2 = resid[i], jac[i, 0], jac[i, 1], jac[i, 2]
            w = weight * j0
            g0 += w * r
            n00 += w * j0
            n01 += w * j1
            n02 += w * j2
            w = weight * j1
            g1 += w * r
            n10 += w * j0
            n11 += w * j1
            n12 += w * j2
            w = weight * j2
            g2 += w * r
            n20 += w * j0
            n21 += w * j1
            n22 += w * j2
        normal[0, 0], normal[0, 1], normal[0, 2] = n00, n01, n02
        normal[1, 0], normal[1, 1], normal[1, 2] = n10, n11, n12
        normal[2, 0], normal[2, 1], normal[2, 2] = n20, n21, n22
        gradient[0], gradient[1], gradient[2] = g0, g1, g2
        rejected = False
        while True:
            for a in range(3):
                for b in range(3):
                    system[a, b] = normal[a, b]
                system[a, a] += damping * max(normal[a, a], 1e-300)
                rhs[a] = -gradient[a]
            step = _solve3(system, rhs)
            moved = 0.0
            for a in range(3):
                trial[a] = min(max(p[a] + step[a], lower[a]), upper[a])
                moved = max(moved, abs(trial[a] - p[a]) / max(abs(p[a]), typical[a]))
            if moved < step_tolerance:
                # The step-size test, one evaluation early (see sabr._levenberg_marquardt).
                return p, iteration if rejected else iteration - 1, True, resid, jac, err
            c_trial = _evaluate(
                terms, vols, sqrt_w, use, trial, robust_scale, resid_trial, jac_trial, err_trial
            )
            if c_trial < c:
                break
            rejected = True
            damping *= 4.0
            if damping > _MAX_DAMPING:
                # Not even a tiny steepest-descent step lowers the cost: p is a minimum.
                return p, iteration, True, resid, jac, err
        improvement = c - c_trial
        p[:] = trial
        resid, resid_trial = resid_trial, resid
        jac, jac_trial = jac_trial, jac
        err, err_trial = err_trial, err
        c = c_trial
        damping = max(damping / 3.0, _DAMPING_FLOOR)
        if improvement <= cost_tolerance * c or c < 1e-28:
            return p, iteration, True, resid, jac, err
    return p, max_iterations, False, resid, jac, err


@jit
def _outlier_level(resid: Float64Array, robust_scale: float) -> float:
    """sabr._outlier_level: the |weighted residual| above which a quote is left out."""
    centre = np.median(resid)
    spread: float = 1.4826 * np.median(np.abs(resid - centre))
    return max(_OUTLIER_SIGMAS * spread, _OUTLIER_SCALES * robust_scale)


@jit
def _cut(resid: Float64Array, level: float, use: np.ndarray[Any, Any]) -> int:
    """Keep (use) the points with |resid| <= level; returns how many were left out."""
    n_out = 0
    for i in range(resid.size):
        use[i] = abs(resid[i]) <= level
        if not use[i]:
            n_out += 1
    return n_out


@jit
def fit(
    forward: float,
    strikes: Float64Array,
    t: float,
    vols: Float64Array,
    sqrt_w: Float64Array,
    beta: float,
    guess: Float64Array,
    robust_scale: float,
    warm: bool,
) -> tuple[Float64Array, int, bool, int, float]:
    """sabr._fit_numpy's calibration from one guess (alpha, rho, nu) on usable points, within the
    bounds and iteration budget a warm (or cold) start gets: (params, iterations, converged,
    n_outliers, rmse), each as the SabrFit reports it. `converged`: the last stage converged to
    finite parameters and, from a warm start, the fit that chose the outliers converged too (see
    sabr.fit)."""
    start, lower, upper = _start_and_bounds(guess)
    budget = _WARM_MAX_ITERATIONS if warm else _MAX_ITERATIONS
    params, iterations, converged, outliers_settled, n_outliers, rmse = _calibrate(
        forward, strikes, t, vols, sqrt_w, beta, start, lower, upper, robust_scale, budget, warm
    )
    converged = (
        converged and (outliers_settled or not warm) and math.isfinite(params[0] + params[1] + params[2])
    )
    return params, iterations, converged, n_outliers, rmse


@jit
def _start_and_bounds(guess: Float64Array) -> tuple[Float64Array, Float64Array, Float64Array]:
    """sabr._start_and_bounds of one guess: (start, lower, upper)."""
    lower = np.array([1e-8 * guess[0], -_RHO_BOUND, _NU_MIN])
    upper = np.array([math.inf, _RHO_BOUND, _NU_MAX])
    start = np.empty(3)
    for a in range(3):
        # np.minimum(np.maximum(guess, lower), upper), the twin's clip, NaN included.
        above_lower = lower[a] if guess[a] < lower[a] else guess[a]
        start[a] = upper[a] if above_lower > upper[a] else above_lower
    return start, lower, upper


@jit
def _calibrate(
    forward: float,
    strikes: Float64Array,
    t: float,
    vols: Float64Array,
    sqrt_w: Float64Array,
    beta: float,
    start: Float64Array,
    lower: Float64Array,
    upper: Float64Array,
    robust_scale: float,
    max_iterations: int,
    warm: bool,
) -> tuple[Float64Array, int, bool, bool, int, float]:
    """`fit` from `start` within lower..upper: (params, iterations, converged, outliers settled,
    n_outliers, rmse). From a warm start the fast path (cut at the start, polish) runs first and the
    two stages only if it does not hold; from a cold start, the two stages. "Outliers settled": the
    fit that chose them converged (the robust stage), or is the warm start itself with the answer
    confirming every cut (the fast path)."""
    n = vols.size
    terms = np.empty((5, n))
    f_pow = forward ** (1.0 - beta)
    for i in range(n):
        zc, inv_pref, a2, cross, n2 = _strike_terms(forward, f_pow, strikes[i], t, beta)
        terms[0, i] = zc
        terms[1, i] = inv_pref
        terms[2, i] = a2
        terms[3, i] = cross
        terms[4, i] = n2
    use = np.ones(n, dtype=np.bool_)
    resid = np.empty(n)
    jac = np.empty((n, 3))
    err = np.empty(n)
    polish_tolerance = _WARM_POLISH_STEP_TOLERANCE if warm else _POLISH_STEP_TOLERANCE
    # Both paths start with every point's residual and Jacobian at the start: the fast path's cut
    # reads them and its polish (or else the robust stage) starts from them.
    _evaluate(terms, vols, sqrt_w, use, start, -1.0, resid, jac, err)
    primed = True
    spent = 0
    if warm:
        n_outliers = _cut(resid, _outlier_level(resid, robust_scale), use)
        if n_outliers <= max(1, n // _FAST_CUT_DIVISOR) and n - n_outliers >= 3:
            # Unused rows are skipped by the normal equations, so the arrays stay primed after a cut.
            params, spent, converged, resid, jac, err = _levenberg_marquardt(
                terms, vols, sqrt_w, use, start, lower, upper, -1.0, polish_tolerance, _POLISH_COST_TOLERANCE,
                max_iterations, resid, jac, err, True,
            )  # fmt: skip
            if converged and _cuts_hold(terms, vols, sqrt_w, use, params, resid, n_outliers, robust_scale):
                return params, spent, True, True, n_outliers, _rmse(terms, vols, use, params, err)
            primed = False  # the polish has overwritten the start's residuals
        for i in range(n):
            use[i] = True
    robust, robust_iterations, robust_converged, resid, jac, err = _levenberg_marquardt(
        terms, vols, sqrt_w, use, start, lower, upper, robust_scale, _ROBUST_STEP_TOLERANCE,
        _ROBUST_COST_TOLERANCE, max_iterations, resid, jac, err, primed,
    )  # fmt: skip
    # resid holds every point's weighted residual at the robust fit: the outlier cut reads it.
    n_outliers = _cut(resid, _outlier_level(resid, robust_scale), use)
    params = robust
    iterations = spent + robust_iterations
    converged = robust_converged
    if n - n_outliers >= 3:
        # The least-squares stage starts where the robust one ended: its residuals and Jacobian are
        # already there (rows of points now left out are never read).
        params, polish_iterations, converged, resid, jac, err = _levenberg_marquardt(
            terms, vols, sqrt_w, use, robust, lower, upper, -1.0, polish_tolerance, _POLISH_COST_TOLERANCE,
            max_iterations, resid, jac, err, True,
        )  # fmt: skip
        iterations += polish_iterations
    return params, iterations, converged, robust_converged, n_outliers, _rmse(terms, vols, use, params, err)


@jit
def _cuts_hold(
    terms: Float64Array,
    vols: Float64Array,
    sqrt_w: Float64Array,
    use: np.ndarray[Any, Any],
    params: Float64Array,
    resid: Float64Array,
    n_outliers: int,
    robust_scale: float,
) -> bool:
    """Whether every point cut at the warm start is still beyond the cut at `params` (the polished
    fit, whose residuals of used points `resid` holds): sabr._cuts_hold."""
    if n_outliers == 0:
        return True
    everyone = resid.copy()
    for i in range(vols.size):
        if not use[i]:
            everyone[i] = sqrt_w[i] * (_vol(terms, i, params[0], params[1], params[2]) - vols[i])
    level = _outlier_level(everyone, robust_scale)
    misjudged = 0
    for i in range(vols.size):
        if not use[i] and abs(everyone[i]) <= level:
            misjudged += 1
    return misjudged == 0


@jit
def _rmse(
    terms: Float64Array,
    vols: Float64Array,
    use: np.ndarray[Any, Any],
    params: Float64Array,
    err: Float64Array,
) -> float:
    """Unweighted vol RMSE over every point at params; err holds the vol errors of used points."""
    square = 0.0
    for i in range(vols.size):
        error = err[i] if use[i] else _vol(terms, i, params[0], params[1], params[2]) - vols[i]
        square += error * error
    return math.sqrt(square / vols.size)


@jit
def fit_many(
    forwards: Float64Array,
    ts: Float64Array,
    strikes: Float64Array,
    vols: Float64Array,
    sqrt_w: Float64Array,
    bounds: np.ndarray[Any, Any],
    beta: float,
    guesses: Float64Array,
    warm: np.ndarray[Any, Any],
    robust_scale: float,
) -> tuple[Float64Array, np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], Float64Array]:
    """`fit` of smile e on rows bounds[e]:bounds[e + 1] of the point arrays from guesses[e] (a warm
    start if warm[e]), for every e: one call for a chain set. Returns (params k x 3, iterations,
    converged, n_outliers, rmse)."""
    k = forwards.size
    params = np.empty((k, 3))
    iterations = np.empty(k, dtype=np.int64)
    converged = np.empty(k, dtype=np.bool_)
    n_outliers = np.empty(k, dtype=np.int64)
    rmse = np.empty(k)
    for e in range(k):
        lo = bounds[e]
        hi = bounds[e + 1]
        p, it, ok, outliers, error = fit(
            forwards[e], strikes[lo:hi], ts[e], vols[lo:hi], sqrt_w[lo:hi], beta, guesses[e],
            robust_scale, warm[e],
        )  # fmt: skip
        params[e, :] = p
        iterations[e] = it
        converged[e] = ok
        n_outliers[e] = outliers
        rmse[e] = error
    return params, iterations, converged, n_outliers, rmse


@jit
def smile_vols_many(
    forwards: Float64Array, strikes: Float64Array, ts: Float64Array, params: Float64Array
) -> Float64Array:
    """Obłój vol of smile e (params[e] = alpha, beta, rho, nu) at strikes[e], for every e."""
    out = np.empty(forwards.size)
    for e in range(forwards.size):
        out[e] = smile_vol(
            forwards[e], strikes[e], ts[e], params[e, 0], params[e, 1], params[e, 2], params[e, 3]
        )
    return out


@jit
def _call_delta(
    forward: float, t: float, alpha: float, beta: float, rho: float, nu: float, log_m: float
) -> tuple[float, float]:
    """Forward call delta N(d1) at strike F e^log_m with the smile's own vol, and that vol."""
    vol = smile_vol(forward, forward * math.exp(log_m), t, alpha, beta, rho, nu)
    s = vol * math.sqrt(t)
    d1 = (-log_m + 0.5 * s * s) / s
    return 0.5 * math.erfc(-d1 / math.sqrt(2.0)), vol


@jit
def _d1_at_delta(delta: float) -> float:
    """N^-1(delta) for 0 < delta < 1, to the last few ulps: Newton on N(d) - delta from d = 0. N is
    convex left of 0 and concave right of it, so from 0 the iterates run monotonically to the root."""
    d = 0.0
    for _ in range(100):
        step = (0.5 * math.erfc(-d / _SQRT2) - delta) * _SQRT_2PI * math.exp(0.5 * d * d)
        d -= step
        if abs(step) <= 1e-15 * max(1.0, abs(d)):
            break
    return d


@jit
def _delta_crossing_near_the_money(
    forward: float,
    t: float,
    alpha: float,
    beta: float,
    rho: float,
    nu: float,
    target: float,
    d1_target: float,
    atm_total_vol: float,
    lowest: float,
    highest: float,
) -> tuple[float, bool]:
    """(smile vol, True) where the call delta N(d1) with the smile's own vol falls through `target`,
    found from the money in a handful of smile evaluations; (NaN, False) when this search cannot
    vouch for its answer and the grid must decide.

    With s(x) = vol(F e^x) sqrt(t) the crossing solves d1(x) = d1_target = N^-1(target), i.e.
    h(x) = s (d1_target - d1(x)) = x + d1_target s - s^2/2 = 0. h'(x) = 1 - d2 s'(x) at the root is
    close to 1 for any traded smile (s' is the total-vol skew, a few hundredths to a few tenths):
    the first step is the fixed-point step x - h (the root if the smile were flat, from the ATM
    vol), then secant steps, which converge superlinearly: 3-5 evaluations to |delta - target| <
    _DELTA_TOLERANCE. Every secant slope must be positive (d1 falling through its target: a falling
    delta crossing, the kind the grid scan looks for, not the far-wing rise back) and every iterate
    inside [lowest, highest] (the grid's range: the grid could not have found a crossing beyond it).
    For a smile whose delta falls monotonically this is the grid's first crossing; one whose delta
    turns back (a large vol-of-vol far out) would fail those checks or the step cap."""
    sqrt_t = math.sqrt(t)
    x = -d1_target * atm_total_vol + 0.5 * atm_total_vol * atm_total_vol
    x_prev = 0.0
    h_prev = 0.0
    slope = 1.0
    for step in range(_DELTA_FAST_MAX_STEPS):
        if not lowest <= x <= highest:
            return math.nan, False
        vol = smile_vol(forward, forward * math.exp(x), t, alpha, beta, rho, nu)
        s = vol * sqrt_t
        d1 = (-x + 0.5 * s * s) / s
        h = s * (d1_target - d1)
        if step > 0:
            slope = (h - h_prev) / (x - x_prev)
            if not slope > 0.0:  # also NaN: a non-finite vol, or an iterate that stopped moving
                return math.nan, False
        if abs(0.5 * math.erfc(-d1 / _SQRT2) - target) < _DELTA_TOLERANCE:
            return vol, True
        x_prev, h_prev = x, h
        x -= h / slope
    return math.nan, False


@jit
def vols_at_call_deltas(
    forward: float,
    t: float,
    alpha: float,
    beta: float,
    rho: float,
    nu: float,
    grid: Float64Array,
    targets: Float64Array,
) -> Float64Array:
    """Smile vol where the call delta falls through each target (NaN where none is found).

    `_delta_crossing_near_the_money` first, for each target; a target it cannot vouch for goes to
    `_grid_crossings`, the grid scan for the first crossing. grid is log-moneyness in units of the
    ATM total vol; it also bounds the fast search. `stats.risk_reversal_butterfly_25d` is the
    reference the tests hold both to.
    """
    out = np.empty(targets.size)
    atm_vol = smile_vol(forward, forward, t, alpha, beta, rho, nu)
    _call_delta_vols(forward, t, alpha, beta, rho, nu, atm_vol, grid, targets, _d1_at_deltas(targets), out)
    return out


@jit
def _d1_at_deltas(targets: Float64Array) -> Float64Array:
    """`_d1_at_delta` of each target strictly between 0 and 1 (NaN for the others, never read)."""
    d1 = np.full(targets.size, np.nan)
    for q in range(targets.size):
        if 0.0 < targets[q] < 1.0:
            d1[q] = _d1_at_delta(targets[q])
    return d1


@jit
def _call_delta_vols(
    forward: float,
    t: float,
    alpha: float,
    beta: float,
    rho: float,
    nu: float,
    atm_vol: float,
    grid: Float64Array,
    targets: Float64Array,
    d1_targets: Float64Array,
    out: Float64Array,
) -> None:
    """`vols_at_call_deltas` into out, given the smile's ATM vol (which the caller may report too)
    and `_d1_at_deltas(targets)` (the same for every smile, so worked out once per call)."""
    scale = atm_vol * math.sqrt(t)
    out[:] = np.nan
    lowest = grid[0] * scale
    highest = grid[grid.size - 1] * scale
    left = 0
    for q in range(targets.size):
        if 0.0 < targets[q] < 1.0:
            out[q], found = _delta_crossing_near_the_money(
                forward, t, alpha, beta, rho, nu, targets[q], d1_targets[q], scale, lowest, highest
            )
            if not found:
                left += 1
        else:
            left += 1  # no delta crosses 0 or 1 (or beyond): the scan comes back empty-handed
    if left:
        _grid_crossings(forward, t, alpha, beta, rho, nu, grid, scale, targets, out)


@jit
def _grid_crossings(
    forward: float,
    t: float,
    alpha: float,
    beta: float,
    rho: float,
    nu: float,
    grid: Float64Array,
    scale: float,
    targets: Float64Array,
    out: Float64Array,
) -> None:
    """Fill each NaN entry of out with the smile vol where the call delta first falls through that
    target (left NaN where the grid has no such crossing).

    grid * scale is log-moneyness, scanned left to right and only as far as the last wanted target's
    first crossing; each bracket is refined by Illinois steps until the delta is within
    _DELTA_TOLERANCE of the target (at most _DELTA_MAX_STEPS), then one regula-falsi step. Illinois
    converges superlinearly, so a coarse grid (a few dozen points) costs a few more steps here and
    far fewer smile evaluations in the scan.
    """
    n_targets = targets.size
    # -1: wanted, not found yet; -2: not wanted (already known); else the bracket's left grid index.
    found = np.full(n_targets, -2)
    g_left = np.empty(n_targets)
    g_right = np.empty(n_targets)
    missing = 0
    for q in range(n_targets):
        if math.isnan(out[q]):
            found[q] = -1
            missing += 1
    previous = _call_delta(forward, t, alpha, beta, rho, nu, grid[0] * scale)[0]
    for j in range(1, grid.size):
        if missing == 0:
            break
        delta = _call_delta(forward, t, alpha, beta, rho, nu, grid[j] * scale)[0]
        for q in range(n_targets):
            if found[q] == -1 and previous - targets[q] > 0.0 and delta - targets[q] <= 0.0:
                found[q] = j - 1
                g_left[q] = previous - targets[q]
                g_right[q] = delta - targets[q]
                missing -= 1
        previous = delta
    for q in range(n_targets):
        if found[q] < 0:
            continue
        target = targets[q]
        lo = grid[found[q]] * scale
        hi = grid[found[q] + 1] * scale
        g_lo = g_left[q]
        g_hi = g_right[q]
        for _ in range(_DELTA_MAX_STEPS):
            root = lo - g_lo * (hi - lo) / (g_hi - g_lo)
            g_root = _call_delta(forward, t, alpha, beta, rho, nu, root)[0] - target
            if abs(g_root) < _DELTA_TOLERANCE:
                break
            if g_root > 0.0:
                lo, g_lo = root, g_root
                g_hi *= 0.5
            else:
                hi, g_hi = root, g_root
                g_lo *= 0.5
        root = lo - g_lo * (hi - lo) / (g_hi - g_lo)
        out[q] = _call_delta(forward, t, alpha, beta, rho, nu, root)[1]


@jit
def vols_at_call_deltas_many(
    forwards: Float64Array,
    ts: Float64Array,
    params: Float64Array,
    grid: Float64Array,
    targets: Float64Array,
) -> Float64Array:
    """`vols_at_call_deltas` of smile e (params[e] = alpha, beta, rho, nu) for every e: k x n_targets."""
    return wing_and_atm_vols_many(forwards, ts, params, grid, targets)[:, : targets.size].copy()


@jit
def wing_and_atm_vols_many(
    forwards: Float64Array,
    ts: Float64Array,
    params: Float64Array,
    grid: Float64Array,
    targets: Float64Array,
) -> Float64Array:
    """`vols_at_call_deltas` of smile e (params[e] = alpha, beta, rho, nu) and its ATM-forward vol
    (`smile_vol` at its own forward) for every e: k x (n_targets + 1), the ATM vol last."""
    n_targets = targets.size
    d1_targets = _d1_at_deltas(targets)
    out = np.empty((forwards.size, n_targets + 1))
    for e in range(forwards.size):
        forward, t = forwards[e], ts[e]
        alpha, beta, rho, nu = params[e, 0], params[e, 1], params[e, 2], params[e, 3]
        atm_vol = smile_vol(forward, forward, t, alpha, beta, rho, nu)
        _call_delta_vols(
            forward, t, alpha, beta, rho, nu, atm_vol, grid, targets, d1_targets, out[e, :n_targets]
        )
        out[e, n_targets] = atm_vol
    return out
