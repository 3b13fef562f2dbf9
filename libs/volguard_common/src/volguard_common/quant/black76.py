"""Black-76 prices and Greeks on the forward, plus spot-based (BSM) delta and gamma.

Inputs are array-likes that broadcast against each other; outputs are float64 ndarrays of the
broadcast shape (0-d arrays for scalar inputs).

Conventions
-----------
- ``forward`` and ``strike`` in index points, ``t`` in years to expiry (ACT/365 in VolGuard),
  ``vol`` as a decimal (0.15 is 15 %), ``discount`` the factor D = exp(-r t) paid at expiry.
- ``is_call`` is a bool (array); False means put.
- Prices are present values: V = D * (θ F N(θ d1) − θ K N(θ d2)), θ = +1 call / −1 put.

The price is computed as ``D * (intrinsic + time value)``. The time value of a call and a put at
the same strike are equal (put-call parity), so it is evaluated once for the out-of-the-money side,
and deep out of the money through ``erfcx`` so that F N(d1) − K N(d2) does not cancel to noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from volguard_common.quant import iv
from volguard_common.quant._types import ArrayLike, BoolArray, Float64Array

_SQRT_HALF = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))

__all__ = [
    "Greeks",
    "SpotGreeks",
    "first_order_greeks",
    "greeks",
    "price",
    "spot_greeks",
    "theta_per_day",
]


@dataclass(frozen=True, slots=True)
class Greeks:
    """Black-76 sensitivities of the present value V(F, K, t, σ, D).

    Units and signs (all per one unit of the underlying, multiply by lot size for rupees):

    - ``delta``: ∂V/∂F, forward delta (call in [0, D], put in [−D, 0]).
    - ``gamma``: ∂²V/∂F², per index point of the forward.
    - ``vega``: ∂V/∂σ per 1.00 of vol (i.e. per 100 vol points); divide by 100 for "per vol point".
    - ``theta``: ∂V/∂(calendar time) per year, holding F, σ and the continuously compounded rate
      r = −ln(D)/t fixed. As time passes t shrinks, so theta = −∂V/∂t: negative for a long option
      when D = 1. Use :func:`theta_per_day` for per calendar day.
    - ``vanna``: ∂²V/∂F∂σ = ∂delta/∂σ, per 1.00 of vol.
    - ``volga``: ∂²V/∂σ² = ∂vega/∂σ, per (1.00 of vol)².
    - ``charm``: ∂delta/∂(calendar time) per year (= −∂delta/∂t), same r convention as theta.

    Where σ√t = 0 (expired or zero vol) the payoff is a kink: delta is the intrinsic slope (D/2 at
    F == K, the σ→0 limit), gamma, vega, vanna, volga and charm are 0 away from the strike and NaN
    at F == K, where they are Dirac masses rather than numbers.
    """

    delta: Float64Array
    gamma: Float64Array
    vega: Float64Array
    theta: Float64Array
    vanna: Float64Array
    volga: Float64Array
    charm: Float64Array


@dataclass(frozen=True, slots=True)
class SpotGreeks:
    """Spot-based Black-Scholes-Merton value and first/second spot sensitivities.

    - ``price``: present value in index points.
    - ``delta``: ∂V/∂S in index points per index point (call in [0, e^{−qt}]).
    - ``gamma``: ∂²V/∂S² per index point.
    """

    price: Float64Array
    delta: Float64Array
    gamma: Float64Array


def _broadcast(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike,
) -> tuple[Float64Array, Float64Array, Float64Array, Float64Array, BoolArray, Float64Array]:
    f, k, tt, v, c, d = np.broadcast_arrays(
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(vol, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_),
        np.asarray(discount, dtype=np.float64),
    )
    return f, k, tt, v, c, d


def _otm_time_value(
    forward: Float64Array, strike: Float64Array, x: Float64Array, s: Float64Array
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Undiscounted time value (= out-of-the-money option price) and d1, d2 of the OTM side.

    Returns ``(time_value, d1, d2)`` where d1, d2 are for the *actual* log-moneyness x (not the
    OTM-reflected one), so Greeks can reuse them.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        h = x / s
        half_s = 0.5 * s
        d1 = h + half_s
        d2 = h - half_s
        # OTM reflection: the OTM option has log-moneyness −|x|; its d's are −|h| ± s/2.
        ho = -np.abs(h)
        d1o = ho + half_s
        d2o = ho - half_s
        low = np.minimum(forward, strike)
        high = np.maximum(forward, strike)
        # Both d's negative: N(d1)·F and N(d2)·K are tiny and nearly equal, their naive difference is
        # noise. With N(z) = erfcx(−z/√2)·exp(−z²/2)/2 the common factor exp(−(d1²+d2²)/4)·√(FK)
        # comes out exactly, and only a difference of two O(1/|d|) erfcx values remains.
        d1n = np.minimum(d1o, 0.0)
        d2n = np.minimum(d2o, 0.0)
        wing = (
            0.5
            * np.sqrt(forward * strike)
            * np.exp(-0.25 * (d1n * d1n + d2n * d2n))
            * (special.erfcx(-_SQRT_HALF * d1n) - special.erfcx(-_SQRT_HALF * d2n))
        )
        body = low * special.ndtr(d1o) - high * special.ndtr(d2o)
        tv = np.where(d1o <= 0.0, wing, body)
        tv = np.where(s > 0.0, tv, 0.0)
    return tv, d1, d2


def price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> Float64Array:
    """Black-76 present value. ``t <= 0`` or ``vol == 0`` gives the discounted intrinsic value."""
    # No up-front broadcast_arrays: every step is elementwise and the result has the full broadcast
    # shape anyway (intrinsic and time value each combine forward and strike; the discount multiplies
    # the end), and on a structure's few legs the broadcast alone cost a fifth of the call.
    f = np.asarray(forward, dtype=np.float64)
    k = np.asarray(strike, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64)
    v = np.asarray(vol, dtype=np.float64)
    c = np.asarray(is_call, dtype=np.bool_)
    d = np.asarray(discount, dtype=np.float64)
    theta = np.where(c, 1.0, -1.0)
    s = v * np.sqrt(np.maximum(tt, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(f / k)
    tv, _, _ = _otm_time_value(f, k, x, s)
    intrinsic = np.maximum(theta * (f - k), 0.0)
    out: Float64Array = d * (intrinsic + tv)
    return out


@dataclass(frozen=True, slots=True)
class _FirstOrder:
    """Delta, gamma, vega, theta and the terms the higher Greeks reuse (see `greeks`)."""

    v: Float64Array
    t_pos: Float64Array
    d1: Float64Array
    d2: Float64Array
    d_pdf: Float64Array
    rate: Float64Array
    live: BoolArray
    dirac: Float64Array
    raw_vega: Float64Array  # before the sigma sqrt(t) = 0 limit is put in
    delta: Float64Array
    gamma: Float64Array
    vega: Float64Array
    theta: Float64Array


def _first_order(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> _FirstOrder:
    f, k, tt, v, c, d = _broadcast(forward, strike, t, vol, is_call, discount)
    theta_sign = np.where(c, 1.0, -1.0)
    t_pos = np.maximum(tt, 0.0)
    sqrt_t = np.sqrt(t_pos)
    s = v * sqrt_t
    live = s > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(f / k)
        tv, d1, d2 = _otm_time_value(f, k, x, s)
        value = d * (np.maximum(theta_sign * (f - k), 0.0) + tv)
        # r = −ln(D)/t, the rate implied by the discount factor; undefined (and irrelevant) at t = 0.
        rate = np.where(t_pos > 0.0, -np.log(d) / t_pos, 0.0)
        # σ√t = 0: d1 is ±∞ on either side of the strike and the σ→0 limit 0 at the strike.
        d1 = np.where(live, d1, np.where(x == 0.0, 0.0, np.copysign(np.inf, x)))
        d2 = np.where(live, d2, d1)
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
        d_pdf = d * pdf
        delta = d * theta_sign * special.ndtr(theta_sign * d1)
        gamma = d_pdf / (f * s)
        raw_vega = d_pdf * f * sqrt_t
        theta = rate * value - 0.5 * raw_vega * v / t_pos
        dirac = np.where(x == 0.0, np.nan, 0.0)
        gamma = np.where(live, gamma, dirac)
        vega = np.where(live, raw_vega, dirac)
        theta = np.where(live, theta, rate * value)
    return _FirstOrder(v, t_pos, d1, d2, d_pdf, rate, live, dirac, raw_vega, delta, gamma, vega, theta)


def first_order_greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> tuple[Float64Array, Float64Array, Float64Array, Float64Array]:
    """Delta, gamma, vega and theta of :func:`greeks` (the same numbers) without the second-order
    three: what a book's risk-limit Greeks sum."""
    first = _first_order(forward, strike, t, vol, is_call, discount)
    return first.delta, first.gamma, first.vega, first.theta


def greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> Greeks:
    """All seven Black-76 Greeks in one pass (see :class:`Greeks` for units and signs)."""
    first = _first_order(forward, strike, t, vol, is_call, discount)
    v, t_pos, d1, d2, d_pdf, rate, live, dirac = (
        first.v, first.t_pos, first.d1, first.d2, first.d_pdf, first.rate, first.live, first.dirac
    )  # fmt: skip
    delta, gamma, vega, theta = first.delta, first.gamma, first.vega, first.theta
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_vega = first.raw_vega
        vanna = -d_pdf * d2 / v
        volga = raw_vega * d1 * d2 / v
        charm = rate * delta + d_pdf * d2 / (2.0 * t_pos)
        vanna = np.where(live, vanna, dirac)
        volga = np.where(live, volga, dirac)
        charm = np.where(live, charm, dirac)
    return Greeks(delta=delta, gamma=gamma, vega=vega, theta=theta, vanna=vanna, volga=volga, charm=charm)


CHAIN_GREEK_ROWS = ("delta", "gamma", "vega", "theta")


def chain_greeks(
    forward: Float64Array,
    strike: Float64Array,
    t: Float64Array,
    vol: Float64Array,
    is_call: BoolArray,
    discount: Float64Array,
) -> Float64Array:
    """Delta, gamma, vega and theta of a whole chain at its solved vols, compiled: a (4, n) block,
    rows in `CHAIN_GREEK_ROWS` order, in the units and signs of :class:`Greeks`.

    One option per element: all six arguments are 1-d and of one length (forward, t and discount
    repeated per option). Unlike `greeks`, a NaN vol (no implied vol) gives NaN Greeks: unknown, not
    the zero-vol limit. At chain size this is several times faster than `greeks`, which evaluates
    all seven Greeks through a dozen numpy temporaries; `greeks` is its reference in the tests.
    """
    # Imported on first use so that importing this module neither imports numba nor compiles.
    from volguard_common.quant import _greeks_kernels

    arrays = (forward, strike, t, vol, is_call, discount)
    if any(a.ndim != 1 or a.shape != vol.shape for a in arrays):
        raise ValueError("chain_greeks takes 1-d arrays of one length, one element per option")
    out: Float64Array = _greeks_kernels.delta_gamma_vega_theta(
        np.ascontiguousarray(forward, dtype=np.float64), np.ascontiguousarray(strike, dtype=np.float64),
        np.ascontiguousarray(t, dtype=np.float64), np.ascontiguousarray(vol, dtype=np.float64),
        np.ascontiguousarray(is_call, dtype=np.bool_), np.ascontiguousarray(discount, dtype=np.float64),
    )  # fmt: skip
    return out


def chain_greeks_block(inputs: Float64Array, vol: Float64Array) -> Float64Array:
    """:func:`chain_greeks` of options given as the (6, n) block of
    `iv.implied_vol_and_status_block` (rows price, forward, strike, t, is_call as 1.0 / 0.0, discount)
    at their vols `vol` (n,): for a caller that solved its vols from that block (the analytics
    engine), which reads the rows in place instead of checking and converting six arrays."""
    if not iv.is_input_block(inputs) or vol.dtype != np.float64 or vol.shape != (inputs.shape[1],):
        raise ValueError(
            f"chain_greeks_block takes a C-contiguous float64 (6, n) block and n float64 vols, got "
            f"{inputs.dtype} {inputs.shape} and {vol.dtype} {vol.shape}"
        )
    from volguard_common.quant import _greeks_kernels

    out: Float64Array = _greeks_kernels.delta_gamma_vega_theta(
        inputs[1], inputs[2], inputs[3], np.ascontiguousarray(vol), inputs[4] != 0.0, inputs[5]
    )
    return out


def theta_per_day(greeks_or_theta: Greeks | ArrayLike, days_per_year: float = 365.0) -> Float64Array:
    """Theta per calendar day: annual theta / ``days_per_year`` (same sign convention)."""
    annual = greeks_or_theta.theta if isinstance(greeks_or_theta, Greeks) else greeks_or_theta
    out: Float64Array = np.asarray(annual, dtype=np.float64) / days_per_year
    return out


def spot_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    is_call: ArrayLike,
    rate: ArrayLike,
    div_yield: ArrayLike,
) -> SpotGreeks:
    """Black-Scholes-Merton price, spot delta and spot gamma with continuous rate and yield.

    F = S·exp((r − q)t) and D = exp(−rt), so ∂V/∂S = ∂V/∂F · F/S and ∂²V/∂S² = ∂²V/∂F² · (F/S)².
    """
    spot_a, strike_a, t_a, vol_a, call_a, rate_a, q_a = np.broadcast_arrays(
        np.asarray(spot, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(vol, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_),
        np.asarray(rate, dtype=np.float64),
        np.asarray(div_yield, dtype=np.float64),
    )
    t_pos = np.maximum(t_a, 0.0)
    growth = np.exp((rate_a - q_a) * t_pos)
    forward = spot_a * growth
    discount = np.exp(-rate_a * t_pos)
    fwd_greeks = greeks(forward, strike_a, t_a, vol_a, call_a, discount)
    value = price(forward, strike_a, t_a, vol_a, call_a, discount)
    return SpotGreeks(
        price=value,
        delta=fwd_greeks.delta * growth,
        gamma=fwd_greeks.gamma * growth * growth,
    )
