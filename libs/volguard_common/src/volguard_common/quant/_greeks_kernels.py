"""Compiled Black-76 delta, gamma, vega and theta for a whole chain at solved vols.

The same formulas as :func:`black76.greeks` (its reference in the tests), per option and only the four
Greeks a chain surface publishes: the numpy version evaluates all seven, both time-value branches and
a dozen temporaries for every option, which at chain size costs several times the arithmetic.
A NaN vol (no implied vol) gives NaN Greeks: unknown, not the zero-vol limit black76 would return.
"""

from __future__ import annotations

import math

import numpy as np

from volguard_common.quant._jit import jit
from volguard_common.quant._types import BoolArray, Float64Array

__all__ = ["GREEK_ROWS", "delta_gamma_vega_theta"]


GREEK_ROWS = ("delta", "gamma", "vega", "theta")
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
# Above this erfcx(z) comes from its asymptotic series: exp(z^2) would overflow near z = 26.6.
_ERFCX_SERIES_FROM = 25.0


@jit
def _ndtr(z: float) -> float:
    return 0.5 * math.erfc(-_SQRT_HALF * z)


@jit
def _erfcx(z: float) -> float:
    """exp(z^2) erfc(z) for z >= 0 (relative error ~1e-13: the rounding of z^2 inside exp)."""
    if z < _ERFCX_SERIES_FROM:
        return math.exp(z * z) * math.erfc(z)
    # 1/(z sqrt(pi)) sum (-1)^n (2n-1)!! / (2 z^2)^n; at z = 25 the eighth term is below 1e-17.
    inv = 1.0 / (2.0 * z * z)
    term = 1.0
    total = 1.0
    for n in range(1, 8):
        term *= -(2 * n - 1) * inv
        total += term
    return total * _INV_SQRT_PI / z


@jit
def _greeks(
    f: float, k: float, t: float, v: float, is_call: bool, d: float
) -> tuple[float, float, float, float]:
    if v != v:
        return math.nan, math.nan, math.nan, math.nan
    sign = 1.0 if is_call else -1.0
    t_pos = max(t, 0.0)
    sqrt_t = math.sqrt(t_pos)
    s = v * sqrt_t
    live = s > 0.0
    x = math.log(f / k)
    tv = 0.0
    d1 = 0.0
    if live:
        h = x / s
        half_s = 0.5 * s
        d1 = h + half_s
        # Time value of the out-of-the-money side (black76._otm_time_value): deep in the wing, where
        # F N(d1) and K N(d2) are tiny and nearly equal, through erfcx so the difference keeps its digits.
        d1o = -abs(h) + half_s
        d2o = -abs(h) - half_s
        if d1o <= 0.0:
            tv = (
                0.5
                * math.sqrt(f * k)
                * math.exp(-0.25 * (d1o * d1o + d2o * d2o))
                * (_erfcx(-_SQRT_HALF * d1o) - _erfcx(-_SQRT_HALF * d2o))
            )
        else:
            tv = min(f, k) * _ndtr(d1o) - max(f, k) * _ndtr(d2o)
    value = d * (max(sign * (f - k), 0.0) + tv)
    rate = -math.log(d) / t_pos if t_pos > 0.0 else 0.0
    if not live:
        # sigma sqrt(t) = 0: the payoff's kink, as black76.greeks has it.
        d1 = 0.0 if x == 0.0 else math.copysign(math.inf, x)
    pdf = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    d_pdf = d * pdf
    delta = d * sign * _ndtr(sign * d1)
    if live:
        vega = d_pdf * f * sqrt_t
        return delta, d_pdf / (f * s), vega, rate * value - 0.5 * vega * v / t_pos
    dirac = math.nan if x == 0.0 else 0.0
    return delta, dirac, dirac, rate * value


@jit
def delta_gamma_vega_theta(
    forward: Float64Array,
    strike: Float64Array,
    t: Float64Array,
    vol: Float64Array,
    is_call: BoolArray,
    discount: Float64Array,
) -> Float64Array:
    """(4, n) block of delta, gamma, vega (per 1.00 of vol), theta (per year) per option, in the
    units and signs of black76.Greeks; NaN columns where vol is NaN."""
    n = vol.size
    out = np.empty((4, n))
    for i in range(n):
        out[0, i], out[1, i], out[2, i], out[3, i] = _greeks(
            forward[i], strike[i], t[i], vol[i], is_call[i], discount[i]
        )
    return out
