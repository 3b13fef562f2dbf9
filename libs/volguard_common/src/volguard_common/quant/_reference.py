"""Plain scalar twins of the vectorised kernels in black76, iv and parity.

Used only by tests (and a benchmark's brentq loop) as the obvious reference the fast code is
compared against: one option at a time, textbook formulas, ``math.erfc`` for the normal CDF.
They are deliberately naive; e.g. the price subtracts F·N(d1) − K·N(d2) directly, so far OTM it
loses relative accuracy that the fast kernel keeps. Tests compare them where that does not bite.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def norm_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def black76_price(
    forward: float, strike: float, t: float, vol: float, is_call: bool, discount: float = 1.0
) -> float:
    if t <= 0.0 or vol == 0.0:
        payoff = forward - strike if is_call else strike - forward
        return discount * max(payoff, 0.0)
    s = vol * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * s * s) / s
    d2 = d1 - s
    if is_call:
        return discount * (forward * norm_cdf(d1) - strike * norm_cdf(d2))
    return discount * (strike * norm_cdf(-d2) - forward * norm_cdf(-d1))


def black76_greeks(
    forward: float, strike: float, t: float, vol: float, is_call: bool, discount: float = 1.0
) -> dict[str, float]:
    """Textbook Black-76 Greeks for t > 0, vol > 0 (same units and signs as black76.Greeks)."""
    rate = -math.log(discount) / t
    sqrt_t = math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * vol * vol * t) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    pdf = norm_pdf(d1)
    value = black76_price(forward, strike, t, vol, is_call, discount)
    delta = discount * norm_cdf(d1) if is_call else -discount * norm_cdf(-d1)
    gamma = discount * pdf / (forward * vol * sqrt_t)
    vega = discount * forward * pdf * sqrt_t
    theta = -discount * forward * pdf * vol / (2.0 * sqrt_t) + rate * value
    vanna = -discount * pdf * d2 / vol
    volga = vega * d1 * d2 / vol
    charm = rate * delta + discount * pdf * d2 / (2.0 * t)
    return {
        "delta": delta,
        "gamma": gamma,
        "vega": vega,
        "theta": theta,
        "vanna": vanna,
        "volga": volga,
        "charm": charm,
    }


def bsm_spot_greeks(
    spot: float, strike: float, t: float, vol: float, is_call: bool, rate: float, div_yield: float
) -> dict[str, float]:
    """Black-Scholes-Merton on spot, textbook form."""
    sqrt_t = math.sqrt(t)
    d1 = (math.log(spot / strike) + (rate - div_yield + 0.5 * vol * vol) * t) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    carry = math.exp(-div_yield * t)
    disc = math.exp(-rate * t)
    if is_call:
        value = spot * carry * norm_cdf(d1) - strike * disc * norm_cdf(d2)
        delta = carry * norm_cdf(d1)
    else:
        value = strike * disc * norm_cdf(-d2) - spot * carry * norm_cdf(-d1)
        delta = -carry * norm_cdf(-d1)
    gamma = carry * norm_pdf(d1) / (spot * vol * sqrt_t)
    return {"price": value, "delta": delta, "gamma": gamma}


def implied_vol(
    price: float,
    forward: float,
    strike: float,
    t: float,
    is_call: bool,
    discount: float = 1.0,
) -> float:
    """Bisection on the reference price; NaN outside the no-arbitrage bounds."""
    intrinsic = max(forward - strike, 0.0) if is_call else max(strike - forward, 0.0)
    upper = forward if is_call else strike
    undiscounted = price / discount
    if t <= 0.0 or not intrinsic < undiscounted < upper:
        return math.nan
    low, high = 1e-8, 1.0
    while black76_price(forward, strike, t, high, is_call) < undiscounted:
        high *= 2.0
        if high > 1e3:
            return math.nan
    for _ in range(200):
        mid = 0.5 * (low + high)
        if black76_price(forward, strike, t, mid, is_call) < undiscounted:
            low = mid
        else:
            high = mid
        if high - low <= 1e-15 * high:
            break
    return 0.5 * (low + high)


def forward_from_parity(
    strikes: Sequence[float],
    call_mid: Sequence[float],
    put_mid: Sequence[float],
    discount: float,
    n_strikes: int = 5,
    mad_cut: float = 3.5,
) -> tuple[float, int]:
    """Median/MAD-filtered mean of K + (C − P)/D over the n strikes with the smallest |C − P|.

    Returns (forward, number of strikes used).
    """
    rows = [
        (abs(c - p), k + (c - p) / discount)
        for k, c, p in zip(strikes, call_mid, put_mid, strict=True)
        if math.isfinite(k) and math.isfinite(c) and math.isfinite(p) and c > 0.0 and p > 0.0
    ]
    if not rows:
        raise ValueError("no strike has both a call and a put quote")
    rows.sort()
    candidates = [fwd for _, fwd in rows[:n_strikes]]
    centre = statistics.median(candidates)
    mad = statistics.median([abs(c - centre) for c in candidates])
    scale = max(1.4826 * mad, 1e-6 * abs(centre))
    kept = [c for c in candidates if abs(c - centre) <= mad_cut * scale]
    return sum(kept) / len(kept), len(kept)
