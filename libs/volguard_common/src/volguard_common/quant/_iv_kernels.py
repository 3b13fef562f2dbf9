"""Compiled per-option kernels behind :func:`volguard_common.quant.iv.implied_vol_and_status`.

The same Let's Be Rational steps as the numpy twin in ``iv`` (``_implied_vol_and_status_numpy``),
written for one option at a time and compiled with numba. At chain size (a few thousand options) the
numpy version spends most of its time in per-call overhead and in evaluating all four guess regions
for every option; here each option evaluates only its own region, and checks, guess and refinement run
in one pass without temporaries. Tests hold the two to 1e-12 in vol and to equal status codes, and
``implied_vol_and_status_from`` (the solve from given starts, which has no numpy twin) to this
module's cold solve in the same way.

Compilation happens on the first call and is cached next to this file (``__pycache__``), or in the
user-wide numba cache when that directory is read-only. Importing ``iv`` does not import this module.

Original algorithm: Copyright © 2013-2014 Peter Jäckel. "Permission to use, copy, modify, and
distribute this software is freely granted, provided that this notice is preserved." The inverse
normal CDF is Wichura's AS241 (Applied Statistics 37(3), 1988), as used in Jäckel's reference code.
"""

from __future__ import annotations

import math

import numpy as np

from volguard_common.quant._jit import Fn, jit
from volguard_common.quant._types import Float64Array, Int64Array

__all__ = ["STATUS_CODES", "implied_vol_and_status", "implied_vol_and_status_from"]


def _compiled(fn: Fn) -> Fn:
    """numba-compile on first call, cached on disk; without a writable cache, compile per process."""
    return jit(fn, inline="never")


def _inlined(fn: Fn) -> Fn:
    """Like _compiled, but inlined into its callers at numba-IR level: for the hot helpers of the
    Householder steps, about 10 % faster than leaving them to LLVM's inliner, for a longer compile."""
    return jit(fn, inline="always")


# Status codes as plain ints: they are frozen into the compiled cache, which is keyed on this file
# only, so they live here rather than being read from iv.IVStatus (tests check the two agree).
_OK = 0
_BELOW_INTRINSIC = 1
_ABOVE_UPPER_BOUND = 2
_ZERO_TIME = 3
_NON_POSITIVE_PRICE = 4
_NON_POSITIVE_FORWARD_OR_STRIKE = 5
_NO_TIME_VALUE = 6
_INVALID_INPUT = 7
_NOT_CONVERGED = 8
STATUS_CODES = {
    "OK": _OK,
    "BELOW_INTRINSIC": _BELOW_INTRINSIC,
    "ABOVE_UPPER_BOUND": _ABOVE_UPPER_BOUND,
    "ZERO_TIME": _ZERO_TIME,
    "NON_POSITIVE_PRICE": _NON_POSITIVE_PRICE,
    "NON_POSITIVE_FORWARD_OR_STRIKE": _NON_POSITIVE_FORWARD_OR_STRIKE,
    "NO_TIME_VALUE": _NO_TIME_VALUE,
    "INVALID_INPUT": _INVALID_INPUT,
    "NOT_CONVERGED": _NOT_CONVERGED,
}

_DBL_EPS = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)
_DBL_MAX = float(np.finfo(np.float64).max)
_SQRT_DBL_MAX = math.sqrt(_DBL_MAX)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT1_2 = math.sqrt(0.5)
_SQRT_PI_OVER_2 = math.sqrt(math.pi / 2.0)
_SQRT3 = math.sqrt(3.0)
_TWO_PI_OVER_SQRT27 = 2.0 * math.pi / math.sqrt(27.0)
_R_MIN = -(1.0 - math.sqrt(_DBL_EPS))
_R_MAX = 2.0 / (_DBL_EPS * _DBL_EPS)
_MAIN_STEPS = 2
_DONE_AFTER_MAIN = 1e-6
_MAX_EXTRA_STEPS = 200

_REGION_FAR_LOWER = 1
_REGION_LOWER = 2
_REGION_UPPER = 3
_REGION_NEAR_BOUND = 4
# Objective of the Householder steps.
_PLAIN = 0
_LOG_B = 1
_LOG_U = 2


@_compiled
def implied_vol_and_status(inputs: Float64Array) -> tuple[Float64Array, Int64Array]:
    """Vol and status per column of ``inputs`` (rows: price, forward, strike, t, is_call, discount).

    Stage by stage over the chain (checks, guesses, first step, second step) rather than option by
    option: each loop body is short enough for the CPU to overlap several options' latency-bound
    erfc/exp/log chains, which cuts the run time by about a quarter.
    """
    n = inputs.shape[1]
    vol = np.full(n, math.nan)
    status = np.empty(n, dtype=np.int64)
    index = np.empty(n, dtype=np.int64)
    x = np.empty(n)
    beta = np.empty(n)
    beta_u = np.empty(n)
    m = 0
    for i in range(n):
        code, x_i, beta_i, beta_u_i = _checked_problem(
            inputs[0, i], inputs[1, i], inputs[2, i], inputs[3, i], inputs[4, i] != 0.0, inputs[5, i]
        )
        status[i] = code
        if code == _OK:
            index[m] = i
            x[m] = x_i
            beta[m] = beta_i
            beta_u[m] = beta_u_i
            m += 1

    s = np.empty(m)
    s_left = np.empty(m)
    s_right = np.empty(m)
    b_max = np.empty(m)
    ln_target = np.empty(m)
    mode = np.empty(m, dtype=np.int64)
    for j in range(m):
        s[j], s_left[j], s_right[j], b_max[j], ln_target[j], mode[j] = _guess(x[j], beta[j], beta_u[j])

    ds = np.empty(m)
    for _ in range(_MAIN_STEPS):
        for j in range(m):
            ds[j] = _householder_delta(x[j], s[j], beta[j], ln_target[j], b_max[j], mode[j])[0]
            s[j] += ds[j]

    for j in range(m):
        converged = abs(ds[j]) <= _DONE_AFTER_MAIN * s[j]
        if not converged:
            s[j], converged = _bracketed_solve(
                x[j], s[j], s_left[j], s_right[j], beta[j], beta_u[j], ln_target[j], b_max[j], mode[j]
            )
        i = index[j]
        if converged:
            vol[i] = s[j] / math.sqrt(inputs[3, i])
        else:
            status[i] = _NOT_CONVERGED
    return vol, status


@_compiled
def implied_vol_and_status_from(inputs: Float64Array, start: Float64Array) -> tuple[Float64Array, Int64Array]:
    """`implied_vol_and_status` with a starting vol per option (NaN: none), for a caller that solved
    the same options a moment ago (the analytics engine, every second): the vols agree with the cold
    solve's to the conditioning of each problem, and the statuses are the same.

    From a start within a second's move of the answer, two Householder steps on the plain objective
    b − β replace the rational guess (whose region-by-region interpolations and transformed
    objectives are what give a cold start its wide basin, and about 40 % of its cost). An option is
    taken only if its last step passes the cold path's own test (|ds| <= 1e-6 s), its Newton step
    too; any other option, and every option without a usable start, is solved by the cold kernel.
    """
    n = inputs.shape[1]
    vol = np.full(n, math.nan)
    status = np.empty(n, dtype=np.int64)
    index = np.empty(n, dtype=np.int64)
    x = np.empty(n)
    beta = np.empty(n)
    s = np.empty(n)
    cold = np.empty(n, dtype=np.int64)
    m = 0
    n_cold = 0
    for i in range(n):
        code, x_i, beta_i, _ = _checked_problem(
            inputs[0, i], inputs[1, i], inputs[2, i], inputs[3, i], inputs[4, i] != 0.0, inputs[5, i]
        )
        status[i] = code
        if code != _OK:
            continue
        s_i = start[i] * math.sqrt(inputs[3, i])
        if s_i > 0.0 and s_i < math.inf:  # NaN fails both
            index[m] = i
            x[m] = x_i
            beta[m] = beta_i
            s[m] = s_i
            m += 1
        else:
            cold[n_cold] = i
            n_cold += 1

    # Stage by stage over the started options, as the cold kernel runs, for the same overlap.
    b_max = np.empty(m)
    for j in range(m):
        b_max[j] = math.exp(0.5 * x[j])
    ds = np.empty(m)
    newton = np.empty(m)
    for _ in range(_MAIN_STEPS):
        for j in range(m):
            ds[j], b, _, vega = _householder_delta(x[j], s[j], beta[j], 0.0, b_max[j], _PLAIN)
            newton[j] = (beta[j] - b) / vega
            s[j] += ds[j]
    for j in range(m):
        i = index[j]
        # The Newton step too: where b is flat in s (a start far in either wing, vega underflowing),
        # the Householder step's rational form can come out small while b is nowhere near β.
        tolerance = _DONE_AFTER_MAIN * s[j]
        if abs(ds[j]) <= tolerance and abs(newton[j]) <= tolerance:
            vol[i] = s[j] / math.sqrt(inputs[3, i])
        else:
            cold[n_cold] = i
            n_cold += 1

    # The options the steps did not settle, and those without a usable start, go through the cold
    # kernel itself, as one block.
    if n_cold > 0:
        block = np.empty((inputs.shape[0], n_cold))
        for c in range(n_cold):
            for row in range(inputs.shape[0]):
                block[row, c] = inputs[row, cold[c]]
        cold_vol, cold_status = implied_vol_and_status(block)
        for c in range(n_cold):
            vol[cold[c]] = cold_vol[c]
            status[cold[c]] = cold_status[c]
    return vol, status


@_inlined
def _checked_problem(
    price: float, forward: float, strike: float, t: float, is_call: bool, discount: float
) -> tuple[int, float, float, float]:
    """Status code and, when it is OK, the normalised problem (x, β, β_u)."""
    # The same checks, in the same order of precedence, as the numpy twin.
    finite = (
        math.isfinite(price)
        and math.isfinite(forward)
        and math.isfinite(strike)
        and math.isfinite(t)
        and math.isfinite(discount)
    )
    if not (finite and discount > 0.0):
        return _INVALID_INPUT, 0.0, 0.0, 0.0
    if not (forward > 0.0 and strike > 0.0):
        return _NON_POSITIVE_FORWARD_OR_STRIKE, 0.0, 0.0, 0.0
    if not t > 0.0:
        return _ZERO_TIME, 0.0, 0.0, 0.0
    if not price > 0.0:
        return _NON_POSITIVE_PRICE, 0.0, 0.0, 0.0
    undiscounted = price / discount
    if is_call:
        intrinsic = max(forward - strike, 0.0)
        upper = forward
    else:
        intrinsic = max(strike - forward, 0.0)
        upper = strike
    time_value = undiscounted - intrinsic
    if time_value < 0.0:
        return _BELOW_INTRINSIC, 0.0, 0.0, 0.0
    headroom = upper - undiscounted
    if not headroom > 0.0:
        return _ABOVE_UPPER_BOUND, 0.0, 0.0, 0.0
    root_fk = math.sqrt(forward * strike)
    beta = time_value / root_fk
    if beta < _DBL_MIN:
        return _NO_TIME_VALUE, 0.0, 0.0, 0.0
    return _OK, -abs(math.log(forward / strike)), beta, headroom / root_fk


@_inlined
def _ndtr(a: float) -> float:
    """Standard normal CDF, evaluated like scipy.special.ndtr (erf near 0, erfc in the tails)."""
    x = a * _SQRT1_2
    z = abs(x)
    if z < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(x)
    y = 0.5 * math.erfc(z)
    return 1.0 - y if x > 0.0 else y


@_inlined
def _ndtr_pair(a: float) -> tuple[float, float]:
    """(N(a), N(−a)) from one erf/erfc call; each equals what _ndtr gives for it."""
    x = a * _SQRT1_2
    z = abs(x)
    if z < _SQRT1_2:
        half_erf = 0.5 * math.erf(x)
        return 0.5 + half_erf, 0.5 - half_erf
    y = 0.5 * math.erfc(z)
    if x > 0.0:
        return 1.0 - y, y
    return y, 1.0 - y


# AS241 coefficients, constant term first: numerator and denominator of the central branch (A, B),
# the tail branch for r = √(−ln p) < 5 (C, D) and beyond (E, F).
_AS241_A = (
    3.3871328727963666080e0, 1.3314166789178437745e2, 1.9715909503065514427e3, 1.3731693765509461125e4,
    4.5921953931549871457e4, 6.7265770927008700853e4, 3.3430575583588128105e4, 2.5090809287301226727e3,
)  # fmt: skip
_AS241_B = (
    1.0, 4.2313330701600911252e1, 6.8718700749205790830e2, 5.3941960214247511077e3,
    2.1213794301586595867e4, 3.9307895800092710610e4, 2.8729085735721942674e4, 5.2264952788528545610e3,
)  # fmt: skip
_AS241_C = (
    1.42343711074968357734e0, 4.63033784615654529590e0, 5.76949722146069140550e0, 3.64784832476320460504e0,
    1.27045825245236838258e0, 2.41780725177450611770e-1, 2.27238449892691845833e-2, 7.74545014278341407640e-4,
)  # fmt: skip
_AS241_D = (
    1.0, 2.05319162663775882187e0, 1.67638483018380384940e0, 6.89767334985100004550e-1,
    1.48103976427480074590e-1, 1.51986665636164571966e-2,
    5.47593808499534494600e-4, 1.05075007164441684324e-9,
)  # fmt: skip
_AS241_E = (
    6.65790464350110377720e0, 5.46378491116411436990e0, 1.78482653991729133580e0, 2.96560571828504891230e-1,
    2.65321895265761230930e-2, 1.24266094738807843860e-3,
    2.71155556874348757815e-5, 2.01033439929228813265e-7,
)  # fmt: skip
_AS241_F = (
    1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1, 1.48753612908506148525e-2,
    7.86869131145613259100e-4, 1.84631831751005468180e-5,
    1.42151175831644588870e-7, 2.04426310338993978564e-15,
)  # fmt: skip
_AS241_CENTRAL_CUBE = 0.075**3  # ∛w below this is in AS241's tail branches (|u − ½| > 0.425)


@_inlined
def _horner(r: float, coefficients: tuple[float, ...]) -> float:
    acc = 0.0
    for k in range(len(coefficients) - 1, -1, -1):
        acc = acc * r + coefficients[k]
    return acc


@_compiled
def _ndtri(u: float) -> float:
    """Inverse standard normal CDF (AS241, ~1e-16 relative); ±inf at 0 and 1, NaN outside [0, 1]."""
    if not (u > 0.0 and u < 1.0):
        if u == 0.0:
            return -math.inf
        if u == 1.0:
            return math.inf
        return math.nan
    q = u - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _horner(r, _AS241_A) / _horner(r, _AS241_B)
    z = _ndtri_tail(math.sqrt(-math.log(u if q < 0.0 else 1.0 - u)))
    return -z if q < 0.0 else z


@_inlined
def _ndtri_of_cbrt(w: float) -> float:
    """ndtri(∛w); in the lower tail straight from ln w, without the cube root."""
    if w > 0.0 and w < _AS241_CENTRAL_CUBE:
        return -_ndtri_tail(math.sqrt(-math.log(w) / 3.0))
    return _ndtri(np.cbrt(w))


@_compiled
def _ndtri_tail(r: float) -> float:
    """|ndtri(u)| for min(u, 1 − u) < 0.075, given r = √(−ln min(u, 1 − u))."""
    if r < 5.0:
        return _horner(r - 1.6, _AS241_C) / _horner(r - 1.6, _AS241_D)
    return _horner(r - 5.0, _AS241_E) / _horner(r - 5.0, _AS241_F)


@_inlined
def _black_parts(h: float, half_s: float, b_max: float, inv_b_max: float) -> tuple[float, float, float]:
    """Normalised OTM call b(x, s), its distance to the bound u = b_max − b, and vega ∂b/∂s.

    Takes h = x/s, s/2 and 1/b_max, which callers have at hand anyway.
    """
    d1 = h + half_s
    n2 = _ndtr(h - half_s) * inv_b_max
    n_d1, n_minus_d1 = _ndtr_pair(d1)
    b = b_max * n_d1 - n2
    u = b_max * n_minus_d1 + n2
    vega = _INV_SQRT_2PI * math.exp(-0.5 * (h * h + half_s * half_s))
    return b, u, vega


@_inlined
def _guess(x: float, beta: float, beta_u: float) -> tuple[float, float, float, float, float, int]:
    """Initial normalised vol for b(x, s) = β, x ≤ 0, 0 < β < b_max = e^{x/2} (β_u = b_max − β).

    Returns s, the region's bracket (s_left, s_right), b_max, and the objective the steps use:
    its mode (_PLAIN, _LOG_B or _LOG_U) and ln of its target.
    """
    b_max = math.exp(0.5 * x)
    inv_b_max = 1.0 / b_max
    ax = -x
    s_c = math.sqrt(2.0 * ax)
    b_c = 0.5 * b_max - _ndtr(-s_c) * inv_b_max
    v_c = _INV_SQRT_2PI * b_max  # vega at s_c is φ(0)·e^{x/2}
    lower_side = beta < b_c
    if lower_side:
        s_side = s_c - b_c / v_c
    elif v_c > _DBL_MIN:
        s_side = s_c + (b_max - b_c) / v_c
    else:
        s_side = s_c
    b_side, u_side, v_side = _black_parts(x / s_side, 0.5 * s_side, b_max, inv_b_max)

    if lower_side and beta < b_side:
        region = _REGION_FAR_LOWER
        f_lo, fp_lo, fpp_lo = _lower_map(x, s_side)
        width = b_side
        t = beta / width
        omt = (b_side - beta) / width
        r = _convex_control(0.0, f_lo, 1.0, fp_lo, fpp_lo, width, True, True)
        interp = _rational_cubic(t, omt, 0.0, f_lo, 1.0, fp_lo, r, width)
        guess = interp if interp > 0.0 else (f_lo * t + b_side * omt) * t
        n_q = _ndtri_of_cbrt(guess / (_TWO_PI_OVER_SQRT27 * ax))
        s = abs(ax / (_SQRT3 * n_q))
        s_left, s_right = 0.0, s_side
    elif lower_side:
        region = _REGION_LOWER
        width = b_c - b_side
        t = (beta - b_side) / width
        omt = (b_c - beta) / width
        d_l, d_r = 1.0 / v_side, 1.0 / v_c
        r = _convex_control(s_side, s_c, d_l, d_r, 0.0, width, True, False)
        s = _rational_cubic(t, omt, s_side, s_c, d_l, d_r, r, width)
        s_left, s_right = s_side, s_c
    elif beta > b_side:
        region = _REGION_NEAR_BOUND
        f_up, fp_up, fpp_up = _upper_map(x, s_side)
        if not abs(fpp_up) < _SQRT_DBL_MAX:
            fpp_up = math.nan
        width = u_side
        t = (beta - b_side) / width
        omt = beta_u / width
        r = _convex_control(f_up, 0.0, fp_up, -0.5, fpp_up, width, False, True)
        interp = _rational_cubic(t, omt, f_up, 0.0, fp_up, -0.5, r, width)
        guess = interp if interp > 0.0 else (f_up * omt + 0.5 * u_side * t) * omt
        s = -2.0 * _ndtri(guess)
        s_left, s_right = s_side, math.inf
    else:
        region = _REGION_UPPER
        width = b_side - b_c
        t = (beta - b_c) / width
        omt = (b_side - beta) / width
        d_l, d_r = 1.0 / v_c, 1.0 / v_side
        r = _convex_control(s_c, s_side, d_l, d_r, 0.0, width, False, False)
        s = _rational_cubic(t, omt, s_c, s_side, d_l, d_r, r, width)
        s_left, s_right = s_c, s_side

    if region == _REGION_NEAR_BOUND and beta > 0.5 * b_max:
        return s, s_left, s_right, b_max, math.log(beta_u), _LOG_U
    if region == _REGION_FAR_LOWER:
        return s, s_left, s_right, b_max, math.log(beta), _LOG_B
    return s, s_left, s_right, b_max, 0.0, _PLAIN


@_compiled
def _bracketed_solve(
    x: float,
    s: float,
    s_left: float,
    s_right: float,
    beta: float,
    beta_u: float,
    ln_target: float,
    b_max: float,
    mode: int,
) -> tuple[float, bool]:
    """The rare option whose main steps did not settle: bracketed steps, bisecting when one leaves
    the bracket, which every evaluation tightens. Returns (s, converged)."""

    if not (s > s_left and s < s_right):
        s = _bisect(s_left, s_right)
    for _ in range(_MAX_EXTRA_STEPS):
        ds, b, u, vega = _householder_delta(x, s, beta, ln_target, b_max, mode)
        # Near the upper bound b rounds to b_max, so compare distances to the bound instead.
        too_high = u < beta_u if mode == _LOG_U else b > beta
        too_low = u > beta_u if mode == _LOG_U else b < beta
        if too_high and s < s_right:
            s_right = s
        if too_low and s > s_left:
            s_left = s
        s_new = s + ds
        # A step of a few ulps is kept even across the bracket: see iv._householder_step.
        inside = (s_new > s_left and s_new < s_right) or abs(ds) <= 8.0 * _DBL_EPS * s
        usable = math.isfinite(s_new) and inside and vega > _DBL_MIN
        if mode != _PLAIN:
            usable = usable and (u if mode == _LOG_U else b) > 0.0
        if not usable:
            s_new = _bisect(s_left, s_right)
        done = (usable and abs(ds) <= _DONE_AFTER_MAIN * s) or s_right - s_left <= 4.0 * _DBL_EPS * s_new
        s = s_new
        if done:
            return s, True
    return s, False


@_inlined
def _bisect(s_left: float, s_right: float) -> float:
    # An open upper bracket (far upper wing) is widened geometrically instead.
    return 0.5 * (s_left + s_right) if math.isfinite(s_right) else 2.0 * s_left + 1.0


@_inlined
def _householder_delta(
    x: float, s: float, beta: float, ln_target: float, b_max: float, mode: int
) -> tuple[float, float, float, float]:
    """Householder(3) step on the option's objective, floored at −s/2; also b, u and vega at s.

    Objectives as in iv._householder_delta: b − β (_PLAIN) in the middle; ln b − ln β (_LOG_B) in
    the far lower wing; −(ln u − ln β_u) (_LOG_U) near the upper bound, with u = b_max − b.
    """
    inv_s = 1.0 / s
    h = x * inv_s
    h_over_s = h * inv_s
    b, u, vega = _black_parts(h, 0.5 * s, b_max, 1.0 / b_max)
    b_halley = h * h_over_s - 0.25 * s
    b_hh3 = b_halley * b_halley - 3.0 * h_over_s * h_over_s - 0.25
    if mode == _PLAIN:
        newton = (beta - b) / vega
        halley = b_halley
        hh3 = b_hh3
    else:
        # ±y′/y: the log objective's first derivative, signed so both wings share one formula.
        y, sign = (u, -1.0) if mode == _LOG_U else (b, 1.0)
        slope = sign * vega / y
        newton = (ln_target - math.log(y)) * y / (sign * vega)
        halley = b_halley - slope
        hh3 = b_hh3 - 3.0 * b_halley * slope + 2.0 * slope * slope
    ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton * (1.0 / 6.0)))
    floor = -0.5 * s
    if floor > ds:  # NaN ds stays NaN, like np.maximum
        ds = floor
    return ds, b, u, vega


@_inlined
def _lower_map(x: float, s: float) -> tuple[float, float, float]:
    """Jäckel's f_lower(s) = 2π|x|/√27 · N(−|x|/(√3 s))³ and its first two derivatives in β."""
    ax = abs(x)
    z = ax / (_SQRT3 * s)
    y = z * z
    s2 = s * s
    big_phi = _ndtr(-z)
    small_phi = _INV_SQRT_2PI * math.exp(-0.5 * y)
    growth = math.exp(y + 0.125 * s2)
    fpp = (
        (math.pi / 6.0)
        * y
        / (s2 * s)
        * big_phi
        * (8.0 * _SQRT3 * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * big_phi / small_phi)
        * (growth * growth)
    )
    phi2 = big_phi * big_phi
    fp = 2.0 * math.pi * y * phi2 * growth
    f = _TWO_PI_OVER_SQRT27 * ax * phi2 * big_phi
    return f, fp, fpp


@_inlined
def _upper_map(x: float, s: float) -> tuple[float, float, float]:
    """Jäckel's f_upper(s) = N(−s/2) and its first two derivatives with respect to β."""
    f = _ndtr(-0.5 * s)
    h = x / s
    w = h * h
    fp = -0.5 * math.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_2 * math.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


@_inlined
def _rational_cubic(
    t: float, omt: float, y_l: float, y_r: float, d_l: float, d_r: float, r: float, width: float
) -> float:
    """Delbourgo-Gregory rational cubic at t ∈ [0, 1] (omt = 1 − t, passed in for its accuracy)."""
    if r >= _R_MAX:
        return y_r * t + y_l * omt
    return (
        y_r * t * t * t
        + (r * y_r - width * d_r) * t * t * omt
        + (r * y_l + width * d_l) * t * omt * omt
        + y_l * omt * omt * omt
    ) / (1.0 + (r - 3.0) * t * omt)


@_compiled
def _convex_control(
    y_l: float,
    y_r: float,
    d_l: float,
    d_r: float,
    curvature: float,
    width: float,
    fit_right: bool,
    shape_first: bool,
) -> float:
    """Control parameter matching the second derivative at one end, but never below the value
    that keeps the interpolant monotone and convex/concave like its data (iv._convex_control)."""
    slope = (y_r - y_l) / width
    numerator = 0.5 * width * curvature + (d_r - d_l)
    denominator = d_r - slope if fit_right else slope - d_l
    if abs(numerator) < _DBL_MIN:
        r = 0.0
    elif abs(denominator) < _DBL_MIN:
        r = _R_MAX if numerator > 0.0 else _R_MIN
    else:
        r = numerator / denominator

    monotonic = d_l * slope >= 0.0 and d_r * slope >= 0.0
    convex = d_l <= slope and slope <= d_r
    concave = d_l >= slope and slope >= d_r
    if not (monotonic or convex or concave):
        return _max(r, _R_MIN)
    fallback = _R_MAX if shape_first else -_DBL_MAX
    if not monotonic:
        r1 = -_DBL_MAX
    elif abs(slope) >= _DBL_MIN:
        r1 = (d_r + d_l) / slope
    else:
        r1 = fallback
    if convex or concave:
        d_r_m_s = d_r - slope
        s_m_d_l = slope - d_l
        if abs(s_m_d_l) >= _DBL_MIN and abs(d_r_m_s) >= _DBL_MIN:
            d_r_m_d_l = d_r - d_l
            r2 = _max(abs(d_r_m_d_l / d_r_m_s), abs(d_r_m_d_l / s_m_d_l))
        else:
            r2 = fallback
    elif shape_first:  # monotonic here
        r2 = _R_MAX
    else:
        r2 = -_DBL_MAX
    return _max(r, _max(_R_MIN, _max(r1, r2)))


@_inlined
def _max(a: float, b: float) -> float:
    """np.maximum for two floats: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b
