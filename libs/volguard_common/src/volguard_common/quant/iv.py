"""Black-76 implied volatility over a whole chain.

The solver is P. Jäckel's "Let's Be Rational" (Wilmott 2015). The public functions run it as a
numba-compiled loop over options (``_iv_kernels``, compiled on first call and cached on disk); the
numpy version below (``_implied_vol_and_status_numpy``) is its twin, kept as the tests' reference.

1. Every option is reduced to a normalised out-of-the-money call: x = −|ln(F/K)| ≤ 0 and
   β = time value / √(FK) ∈ (0, e^{x/2}). Calls and puts at one strike share this problem.
2. The normalised vol s = σ√t is guessed from four rational-cubic interpolations of s(β) (or of a
   transformed β) between the points s_l < s_c = √(2|x|) < s_h where the Black function's
   curvature changes character.
3. Two Householder(3) steps on an objective chosen per region (1/ln b in the far lower wing,
   ln(b_max − b) near the upper bound, b itself in the middle) bring s to machine precision.
4. Elements whose last step was not negligible (a handful at extreme inputs) continue on their own,
   inside a bracket that every evaluation tightens, falling back to bisection when a step leaves it.
5. A caller that solved the same options a moment ago may pass their vols as starts
   (``implied_vol_and_status_block``): two plain Householder steps from a start replace step 2's
   guess, held to the test of step 4; an option they do not settle is solved as above.

Original algorithm and reference code: Copyright © 2013-2014 Peter Jäckel. "Permission to use,
copy, modify, and distribute this software is freely granted, provided that this notice is
preserved." This module is an independent implementation of that method.

Prices outside the no-arbitrage bounds never produce a number: the vol is NaN and
:func:`implied_vol_status` says why.
"""

from __future__ import annotations

import math
from enum import IntEnum
from types import ModuleType

import numpy as np
from scipy import special

from volguard_common.quant._types import ArrayLike, BoolArray, Float64Array, Int64Array

__all__ = [
    "IVStatus",
    "implied_vol",
    "implied_vol_and_status",
    "implied_vol_and_status_block",
    "implied_vol_status",
]


class IVStatus(IntEnum):
    """Why an implied vol is (or is not) a number. Only ``OK`` comes with a finite vol."""

    OK = 0
    BELOW_INTRINSIC = 1
    ABOVE_UPPER_BOUND = 2
    ZERO_TIME = 3
    NON_POSITIVE_PRICE = 4
    NON_POSITIVE_FORWARD_OR_STRIKE = 5
    # Price equals intrinsic to the last bit (or its time value is below float64's normal range):
    # every vol below some threshold reproduces it, so no single vol can be named.
    NO_TIME_VALUE = 6
    INVALID_INPUT = 7
    NOT_CONVERGED = 8


_DBL_EPS = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)
_DBL_MAX = float(np.finfo(np.float64).max)
_SQRT_DBL_MAX = float(np.sqrt(_DBL_MAX))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
_SQRT_PI_OVER_2 = float(np.sqrt(np.pi / 2.0))
_SQRT3 = float(np.sqrt(3.0))
_TWO_PI_OVER_SQRT27 = float(2.0 * np.pi / np.sqrt(27.0))
_R_MIN = -(1.0 - float(np.sqrt(_DBL_EPS)))
_R_MAX = 2.0 / (_DBL_EPS * _DBL_EPS)

_MAIN_STEPS = 2
# An element is done once a Householder step moved s by less than this (relative): the step was of
# the size of the error before it, and Householder(3) converges cubically, so the error after it is
# of order (1e-6)³, far below one ulp.
_DONE_AFTER_MAIN = 1e-6
_MAX_EXTRA_STEPS = 200


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> Float64Array:
    """Black-76 implied vol per element; NaN where no volatility reproduces the price."""
    vol, _ = implied_vol_and_status(price, forward, strike, t, is_call, discount)
    return vol


def implied_vol_status(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> Int64Array:
    """:class:`IVStatus` code per element (an int64 array; compare with ``IVStatus.OK`` etc.)."""
    _, status = implied_vol_and_status(price, forward, strike, t, is_call, discount)
    return status


def implied_vol_and_status(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> tuple[Float64Array, Int64Array]:
    """Implied vol and :class:`IVStatus` in one pass. Never raises for out-of-bounds prices.

    Runs the compiled per-option kernel (``_iv_kernels``); the first call in a process compiles it or
    loads it from numba's on-disk cache.
    """
    columns = (
        np.asarray(price, dtype=np.float64),
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_),
        np.asarray(discount, dtype=np.float64),
    )
    shape = np.broadcast_shapes(*(column.shape for column in columns))
    # One C-contiguous float64 block, whatever the callers' dtypes, strides or read-only flags: the
    # kernel then has a single signature, compiled (and cached) once.
    inputs = np.empty((len(columns), *shape))
    for row, column in enumerate(columns):
        inputs[row, ...] = column
    vol, status = implied_vol_and_status_block(inputs.reshape(len(columns), math.prod(shape)))
    return vol.reshape(shape), status.reshape(shape)


def is_input_block(inputs: Float64Array) -> bool:
    """Whether `inputs` is an option block as `implied_vol_and_status_block` takes it: C-contiguous
    float64, six rows (price, forward, strike, t, is_call, discount), one column per option."""
    return bool(
        inputs.dtype == np.float64 and inputs.ndim == 2 and inputs.shape[0] == 6 and inputs.flags.c_contiguous
    )


def implied_vol_and_status_block(
    inputs: Float64Array, start: Float64Array | None = None
) -> tuple[Float64Array, Int64Array]:
    """:func:`implied_vol_and_status` of options given as one C-contiguous float64 block of six rows -
    price, forward, strike, t, is_call (1.0 or 0.0), discount - one column per option: for a caller
    that builds its inputs in that form anyway (the analytics engine, a chain set at a time), which
    saves the copy into it.

    `start`, one float64 vol per option (NaN for none), is where a caller that solved the same
    options a moment ago resumes: each started option takes two Householder steps from its start
    instead of the guess, and is kept only if they pass the cold solve's own convergence test (else
    it is solved cold). The vols agree with the cold solve's to the conditioning of each problem,
    the statuses exactly; a start only saves time (about 40 % when every option has one)."""
    if not is_input_block(inputs):
        raise ValueError(
            f"implied_vol_and_status_block takes a C-contiguous float64 (6, n) block, got {inputs.dtype} "
            f"{inputs.shape}"
        )
    if start is None:
        vol, status = _kernels().implied_vol_and_status(inputs)
        return vol, status
    if start.dtype != np.float64 or start.shape != (inputs.shape[1],):
        raise ValueError(
            f"start must be float64 with one vol per option ({inputs.shape[1]}), got {start.dtype} "
            f"{start.shape}"
        )
    vol, status = _kernels().implied_vol_and_status_from(inputs, start)
    return vol, status


def _kernels() -> ModuleType:
    # Imported on first use so that importing this module neither imports numba nor compiles.
    from volguard_common.quant import _iv_kernels

    return _iv_kernels


def _implied_vol_and_status_numpy(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> tuple[Float64Array, Int64Array]:
    """The numpy twin of :func:`implied_vol_and_status`, used only as the tests' reference.

    Same checks, regions, guess and steps, vectorised: every option evaluates every region and the
    results are selected with ``np.where``.
    """
    p, f, k, tt, c, d = np.broadcast_arrays(
        np.asarray(price, dtype=np.float64),
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_),
        np.asarray(discount, dtype=np.float64),
    )
    shape = p.shape
    p, f, k, tt, c, d = (a.ravel() for a in (p, f, k, tt, c, d))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        undiscounted = p / d
        intrinsic = np.where(c, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0))
        upper = np.where(c, f, k)
        time_value = undiscounted - intrinsic
        # Distance to the upper bound straight from the quote: near the bound this keeps the digits
        # that b_max − β would lose.
        headroom = upper - undiscounted
        root_fk = np.sqrt(f * k)

        status = np.full(p.shape, IVStatus.OK, dtype=np.int64)
        finite = np.isfinite(p) & np.isfinite(f) & np.isfinite(k) & np.isfinite(tt) & np.isfinite(d)
        checks: list[tuple[BoolArray, IVStatus]] = [
            (~finite | ~(d > 0.0), IVStatus.INVALID_INPUT),
            (~(f > 0.0) | ~(k > 0.0), IVStatus.NON_POSITIVE_FORWARD_OR_STRIKE),
            (~(tt > 0.0), IVStatus.ZERO_TIME),
            (~(p > 0.0), IVStatus.NON_POSITIVE_PRICE),
            (time_value < 0.0, IVStatus.BELOW_INTRINSIC),
            (~(headroom > 0.0), IVStatus.ABOVE_UPPER_BOUND),
            (time_value / root_fk < _DBL_MIN, IVStatus.NO_TIME_VALUE),
        ]
        # Earlier checks win: walk the list backwards so the first applicable reason is kept.
        for mask, code in reversed(checks):
            np.putmask(status, mask, code)

        vol = np.full(p.shape, np.nan)
        solve = status == IVStatus.OK
        if solve.all():
            # The usual case for a clean chain: skip the gather/scatter round trip.
            beta = time_value / root_fk
            beta_u = headroom / root_fk
            s, converged = _normalised_implied_vol(-np.abs(np.log(f / k)), beta, beta_u)
            vol = np.where(converged, s / np.sqrt(tt), np.nan)
            np.putmask(status, ~converged, IVStatus.NOT_CONVERGED)
        elif solve.any():
            idx = np.flatnonzero(solve)
            beta = time_value[idx] / root_fk[idx]
            beta_u = headroom[idx] / root_fk[idx]
            s, converged = _normalised_implied_vol(-np.abs(np.log(f[idx] / k[idx])), beta, beta_u)
            vol[idx] = np.where(converged, s / np.sqrt(tt[idx]), np.nan)
            status[idx] = np.where(converged, IVStatus.OK, IVStatus.NOT_CONVERGED)
    return vol.reshape(shape), status.reshape(shape)


def _black_parts(
    x: Float64Array, s: Float64Array, b_max: Float64Array
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Normalised OTM call b(x, s), its distance to the bound u = b_max − b, and vega ∂b/∂s.

    b = e^{x/2}N(d1) − e^{−x/2}N(d2) and u = e^{x/2}N(−d1) + e^{−x/2}N(d2), each N taken in its own
    accurate tail, so u never comes from a subtraction.
    """
    h = x / s
    half_s = 0.5 * s
    d1 = h + half_s
    d2 = h - half_s
    n2 = special.ndtr(d2) / b_max
    b = b_max * special.ndtr(d1) - n2
    u = b_max * special.ndtr(-d1) + n2
    vega = _INV_SQRT_2PI * np.exp(-0.5 * (h * h + half_s * half_s))
    return b, u, vega


def _normalised_implied_vol(
    x: Float64Array, beta: Float64Array, beta_u: Float64Array
) -> tuple[Float64Array, BoolArray]:
    """Normalised vol s with b(x, s) = β for x ≤ 0, 0 < β < b_max = e^{x/2} (β_u = b_max − β)."""
    b_max = np.exp(0.5 * x)
    ax = -x
    s_c = np.sqrt(2.0 * ax)
    # b and vega at s_c in closed form: there d1 = 0 and d2 = −s_c.
    b_c = 0.5 * b_max - special.ndtr(-s_c) / b_max
    v_c = _INV_SQRT_2PI * np.exp(-0.5 * ax)
    lower_side = beta < b_c
    s_h = np.where(v_c > _DBL_MIN, s_c + (b_max - b_c) / v_c, s_c)
    s_side = np.where(lower_side, s_c - b_c / v_c, s_h)
    b_side, u_side, v_side = _black_parts(x, s_side, b_max)

    r1 = lower_side & (beta < b_side)  # far lower wing
    r2 = lower_side & ~r1
    r4 = ~lower_side & (beta > b_side)  # close to the upper bound
    r3 = ~lower_side & ~r4

    f_lo, fp_lo, fpp_lo = _lower_map(x, s_side)
    f_up, fp_up, fpp_up = _upper_map(x, s_side)
    fpp_up = np.where(np.abs(fpp_up) < _SQRT_DBL_MAX, fpp_up, np.nan)
    inv_v_side = 1.0 / v_side
    inv_v_c = 1.0 / v_c

    # One rational cubic per element; the region picks its nodes, slopes and the curvature to match.
    x_l = _by_region(r1, r2, r3, 0.0, b_side, b_c, b_side)
    x_r = _by_region(r1, r2, r3, b_side, b_c, b_side, b_max)
    y_l = _by_region(r1, r2, r3, 0.0, s_side, s_c, f_up)
    y_r = _by_region(r1, r2, r3, f_lo, s_c, s_side, 0.0)
    d_l = _by_region(r1, r2, r3, 1.0, inv_v_side, inv_v_c, fp_up)
    d_r = _by_region(r1, r2, r3, fp_lo, inv_v_c, inv_v_side, -0.5)
    curvature = np.where(r1, fpp_lo, np.where(r4, fpp_up, 0.0))
    fit_right = lower_side
    shape_first = r1 | r4
    width = np.where(r4, u_side, x_r - x_l)
    tt = (beta - x_l) / width
    omt = np.where(r4, beta_u / width, (x_r - beta) / width)
    r = _convex_control(x_l, x_r, y_l, y_r, d_l, d_r, curvature, width, fit_right, shape_first)
    interp = _rational_cubic(tt, omt, y_l, y_r, d_l, d_r, r, width)

    # Where the cubic is not positive (round-off at extreme |x|), a quadratic through the same ends.
    f_lo_guess = np.where(interp > 0.0, interp, (f_lo * tt + b_side * omt) * tt)
    f_up_guess = np.where(interp > 0.0, interp, (f_up * omt + 0.5 * u_side * tt) * omt)
    q = np.where(r1, np.cbrt(f_lo_guess / (_TWO_PI_OVER_SQRT27 * ax)), f_up_guess)
    nq = special.ndtri(q)
    s = np.where(r1, np.abs(ax / (_SQRT3 * nq)), np.where(r4, -2.0 * nq, interp))

    upper_log = r4 & (beta > 0.5 * b_max)
    use_log = r1 | upper_log
    ln_target = np.log(np.where(upper_log, beta_u, beta))
    log_sign = np.where(upper_log, -1.0, 1.0)

    # The main steps run unguarded on the whole chain; anything that misbehaves (non-finite, or a
    # last step that was not negligible) is redone below inside its region's bracket.
    converged = np.zeros(s.shape, dtype=np.bool_)
    for _ in range(_MAIN_STEPS):
        ds, _, _, _ = _householder_delta(x, s, beta, ln_target, log_sign, b_max, use_log, upper_log)
        s = s + ds
        converged = np.abs(ds) <= _DONE_AFTER_MAIN * s

    todo = np.flatnonzero(~converged)
    if todo.size:
        s_left = _by_region(r1, r2, r3, 0.0, s_side, s_c, s_side)[todo]
        s_right = _by_region(r1, r2, r3, s_side, s_c, s_side, np.inf)[todo]
        tx, ts, tl, tr = x[todo], s[todo], s_left, s_right
        ts = np.where((ts > tl) & (ts < tr), ts, _bisect(tl, tr))
        t_beta, t_beta_u, t_ln_target, t_sign = beta[todo], beta_u[todo], ln_target[todo], log_sign[todo]
        t_bmax, t_log, t_upper = b_max[todo], use_log[todo], upper_log[todo]
        t_done = np.zeros(todo.size, dtype=np.bool_)
        for _ in range(_MAX_EXTRA_STEPS):
            ts_new, t_now, tl, tr = _householder_step(
                tx, ts, tl, tr, t_beta, t_beta_u, t_ln_target, t_sign, t_bmax, t_log, t_upper
            )
            ts = np.where(t_done, ts, ts_new)
            t_done |= t_now
            if t_done.all():
                break
        s[todo] = ts
        converged[todo] = t_done
    return s, converged


def _by_region(
    r1: BoolArray,
    r2: BoolArray,
    r3: BoolArray,
    in_r1: Float64Array | float,
    in_r2: Float64Array | float,
    in_r3: Float64Array | float,
    in_r4: Float64Array | float,
) -> Float64Array:
    # Nested where: np.select costs several times more on chain-sized arrays.
    out: Float64Array = np.where(r1, in_r1, np.where(r2, in_r2, np.where(r3, in_r3, in_r4)))
    return out


def _bisect(s_left: Float64Array, s_right: Float64Array) -> Float64Array:
    # An open upper bracket (far upper wing) is widened geometrically instead.
    out: Float64Array = np.where(np.isfinite(s_right), 0.5 * (s_left + s_right), 2.0 * s_left + 1.0)
    return out


def _householder_step(
    x: Float64Array,
    s: Float64Array,
    s_left: Float64Array,
    s_right: Float64Array,
    beta: Float64Array,
    beta_u: Float64Array,
    ln_target: Float64Array,
    log_sign: Float64Array,
    b_max: Float64Array,
    use_log: BoolArray,
    upper_log: BoolArray,
) -> tuple[Float64Array, BoolArray, Float64Array, Float64Array]:
    """One bracketed Householder(3) step. Returns (new s, converged, new bracket).

    Converged means: a Householder step (not a bisection) of at most ``_DONE_AFTER_MAIN`` relative
    size, so cubic convergence leaves an error far below one ulp; or a bracket of a few ulps.
    """
    ds, b, u, bp = _householder_delta(x, s, beta, ln_target, log_sign, b_max, use_log, upper_log)
    # Near the upper bound b rounds to b_max, so compare distances to the bound instead.
    too_high = np.where(upper_log, u < beta_u, b > beta)
    too_low = np.where(upper_log, u > beta_u, b < beta)
    s_right = np.where(too_high & (s < s_right), s, s_right)
    s_left = np.where(too_low & (s > s_left), s, s_left)
    s_new = s + ds
    # Underflow of b or vega, or a step out of the bracket: bisect this element instead. A step of a
    # few ulps is kept even if it crosses the bracket: once s is exact, rounding in b decides which
    # side of the root s "is", and bisecting there would throw the converged digits away.
    inside = (s_new > s_left) & (s_new < s_right) | (np.abs(ds) <= 8.0 * _DBL_EPS * s)
    usable = np.isfinite(s_new) & inside & (bp > _DBL_MIN)
    usable &= np.where(use_log, np.where(upper_log, u, b) > 0.0, True)
    s_new = np.where(usable, s_new, _bisect(s_left, s_right))
    converged = usable & (np.abs(ds) <= _DONE_AFTER_MAIN * s)
    converged |= s_right - s_left <= 4.0 * _DBL_EPS * s_new
    return s_new, converged, s_left, s_right


def _householder_delta(
    x: Float64Array,
    s: Float64Array,
    beta: Float64Array,
    ln_target: Float64Array,
    log_sign: Float64Array,
    b_max: Float64Array,
    use_log: BoolArray,
    upper_log: BoolArray,
) -> tuple[Float64Array, Float64Array, Float64Array, Float64Array]:
    """Householder(3) step on the element's objective, floored at −s/2; also b, u and vega at s.

    Objectives: g = b − β in the middle; g = ±(ln y − ln y*) in the wings, with y = b in the far
    lower wing (sign +1), where b ~ exp(−x²/2s²) spans hundreds of orders of magnitude, and
    y = b_max − b near the bound (sign −1), where b itself stops resolving s. For each, with
    newton = −g/g′, halley = g″/g′, hh3 = g‴/g′, the step is
    newton·(1 + halley·newton/2)/(1 + newton·(halley + hh3·newton/6)).
    """
    b, u, bp = _black_parts(x, s, b_max)
    h = x / s
    h_over_s = h / s
    # b″/b′ and b‴/b′ of the normalised Black function in s.
    b_halley = h * h_over_s - 0.25 * s
    b_hh3 = b_halley * b_halley - 3.0 * h_over_s * h_over_s - 0.25
    y = np.where(upper_log, u, b)
    # ±y′/y: the log objective's first derivative, signed so both wings share one formula.
    slope = log_sign * bp / y
    newton_log = (ln_target - np.log(y)) / slope
    halley_log = b_halley - slope
    hh3_log = b_hh3 - 3.0 * b_halley * slope + 2.0 * slope * slope
    newton = np.where(use_log, newton_log, (beta - b) / bp)
    halley = np.where(use_log, halley_log, b_halley)
    hh3 = np.where(use_log, hh3_log, b_hh3)
    ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))
    ds = np.maximum(-0.5 * s, ds)
    return ds, b, u, bp


def _lower_map(x: Float64Array, s: Float64Array) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Jäckel's f_lower(s) = 2π|x|/√27 · N(−|x|/(√3 s))³ ≈ b(x, s) in the far wing, and df/dβ, d²f/dβ²."""
    ax = np.abs(x)
    z = ax / (_SQRT3 * s)
    y = z * z
    s2 = s * s
    big_phi = special.ndtr(-z)
    small_phi = _INV_SQRT_2PI * np.exp(-0.5 * y)
    fpp = (
        (np.pi / 6.0)
        * y
        / (s2 * s)
        * big_phi
        * (8.0 * _SQRT3 * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * big_phi / small_phi)
        * np.exp(2.0 * y + 0.25 * s2)
    )
    phi2 = big_phi * big_phi
    fp = 2.0 * np.pi * y * phi2 * np.exp(y + 0.125 * s2)
    f = _TWO_PI_OVER_SQRT27 * ax * phi2 * big_phi
    return f, fp, fpp


def _upper_map(x: Float64Array, s: Float64Array) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Jäckel's f_upper(s) = N(−s/2) and its first two derivatives with respect to β."""
    f = special.ndtr(-0.5 * s)
    w = (x / s) ** 2
    fp = -0.5 * np.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_2 * np.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


def _rational_cubic(
    t: Float64Array,
    omt: Float64Array,
    y_l: Float64Array,
    y_r: Float64Array,
    d_l: Float64Array,
    d_r: Float64Array,
    r: Float64Array,
    width: Float64Array,
) -> Float64Array:
    """Delbourgo-Gregory rational cubic at t ∈ [0, 1] (omt = 1 − t, passed in for its accuracy)."""
    cubic = (
        y_r * t * t * t
        + (r * y_r - width * d_r) * t * t * omt
        + (r * y_l + width * d_l) * t * omt * omt
        + y_l * omt * omt * omt
    ) / (1.0 + (r - 3.0) * t * omt)
    linear = y_r * t + y_l * omt
    out: Float64Array = np.where(r >= _R_MAX, linear, cubic)
    return out


def _convex_control(
    x_l: Float64Array,
    x_r: Float64Array,
    y_l: Float64Array,
    y_r: Float64Array,
    d_l: Float64Array,
    d_r: Float64Array,
    curvature: Float64Array,
    width: Float64Array,
    fit_right: BoolArray,
    shape_first: BoolArray,
) -> Float64Array:
    """Control parameter matching the second derivative at one end, but never below the value
    that keeps the interpolant monotone and convex/concave like its data."""
    slope = (y_r - y_l) / width
    numerator = 0.5 * width * curvature + (d_r - d_l)
    denominator = np.where(fit_right, d_r - slope, slope - d_l)
    r = np.where(
        np.abs(denominator) < _DBL_MIN,
        np.where(numerator > 0.0, _R_MAX, _R_MIN),
        numerator / denominator,
    )
    r = np.where(np.abs(numerator) < _DBL_MIN, 0.0, r)

    monotonic = (d_l * slope >= 0.0) & (d_r * slope >= 0.0)
    convex = (d_l <= slope) & (slope <= d_r)
    concave = (d_l >= slope) & (slope >= d_r)
    fallback = np.where(shape_first, _R_MAX, -_DBL_MAX)
    r1 = np.where(monotonic, np.where(np.abs(slope) >= _DBL_MIN, (d_r + d_l) / slope, fallback), -_DBL_MAX)
    d_r_m_d_l = d_r - d_l
    d_r_m_s = d_r - slope
    s_m_d_l = slope - d_l
    regular = (np.abs(s_m_d_l) >= _DBL_MIN) & (np.abs(d_r_m_s) >= _DBL_MIN)
    r2_shape = np.where(
        regular, np.maximum(np.abs(d_r_m_d_l / d_r_m_s), np.abs(d_r_m_d_l / s_m_d_l)), fallback
    )
    r2 = np.where(convex | concave, r2_shape, np.where(monotonic & shape_first, _R_MAX, -_DBL_MAX))
    r_min = np.maximum(_R_MIN, np.maximum(r1, r2))
    r_min = np.where(monotonic | convex | concave, r_min, _R_MIN)
    out: Float64Array = np.maximum(r, r_min)
    return out
