"""Slow, obvious scalar twins of the vectorised kernels in sabr, realized, stats and stress.

Used only as test and benchmark references. Each follows the published formula line by line with
the `math` module and plain loops, with no numerical tricks beyond the explicit ATM branch, so a
disagreement points at the fast kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TRADING_DAYS = 252


def _x_of_z(z: float, rho: float) -> float:
    return math.log((math.sqrt(1.0 - 2.0 * rho * z + z * z) + z - rho) / (1.0 - rho))


def sabr_vol_obloj(
    forward: float, strike: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> float:
    """Obłój (2008) eq. (3.1): I0 = nu ln(F/K) / x(z) with z = nu (F^(1-b) - K^(1-b)) / (alpha (1-b))."""
    one_b = 1.0 - beta
    fk_pow = (forward * strike) ** (0.5 * one_b)
    first_order = (
        one_b**2 * alpha**2 / (24.0 * fk_pow**2)
        + rho * beta * nu * alpha / (4.0 * fk_pow)
        + (2.0 - 3.0 * rho**2) * nu**2 / 24.0
    )
    if strike == forward or nu == 0.0:
        # Both limits (K -> F, nu -> 0) of nu ln(F/K)/x(z) are alpha (1-b) ln(F/K)/(F^(1-b) - K^(1-b)),
        # which at K = F is alpha / F^(1-b).
        if strike == forward:
            leading = alpha / forward**one_b
        elif beta == 1.0:
            leading = alpha
        else:
            leading = alpha * one_b * math.log(forward / strike) / (forward**one_b - strike**one_b)
    else:
        log_fk = math.log(forward / strike)
        if beta == 1.0:
            z = nu * log_fk / alpha
        else:
            z = nu * (forward**one_b - strike**one_b) / (alpha * one_b)
        leading = nu * log_fk / _x_of_z(z, rho)
    return float(leading * (1.0 + first_order * t))


def sabr_vol_hagan(
    forward: float, strike: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> float:
    """Hagan et al. (2002) eq. (2.17a), with its ATM limit (2.18) when K = F."""
    one_b = 1.0 - beta
    fk_pow = (forward * strike) ** (0.5 * one_b)
    first_order = (
        one_b**2 * alpha**2 / (24.0 * fk_pow**2)
        + rho * beta * nu * alpha / (4.0 * fk_pow)
        + (2.0 - 3.0 * rho**2) * nu**2 / 24.0
    )
    log_fk = math.log(forward / strike)
    denominator = fk_pow * (1.0 + one_b**2 * log_fk**2 / 24.0 + one_b**4 * log_fk**4 / 1920.0)
    z = nu / alpha * fk_pow * log_fk
    ratio = 1.0 if z == 0.0 else z / _x_of_z(z, rho)
    return float(alpha / denominator * ratio * (1.0 + first_order * t))


# --- realised vol ---------------------------------------------------------------------------------


def _sample_variance(xs: Sequence[float]) -> float:
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def close_to_close(closes: Sequence[float], window: int) -> float:
    returns = [math.log(closes[i] / closes[i - 1]) for i in range(len(closes) - window, len(closes))]
    return math.sqrt(_sample_variance(returns) * TRADING_DAYS)


def parkinson(high: Sequence[float], low: Sequence[float], window: int) -> float:
    n = len(high)
    total = 0.0
    for i in range(n - window, n):
        total += math.log(high[i] / low[i]) ** 2
    return math.sqrt(total / (4.0 * math.log(2.0) * window) * TRADING_DAYS)


def garman_klass(
    open: Sequence[float], high: Sequence[float], low: Sequence[float], close: Sequence[float], window: int
) -> float:
    n = len(high)
    total = 0.0
    for i in range(n - window, n):
        hl = math.log(high[i] / low[i])
        co = math.log(close[i] / open[i])
        total += 0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co
    return math.sqrt(total / window * TRADING_DAYS)


def yang_zhang(
    open: Sequence[float], high: Sequence[float], low: Sequence[float], close: Sequence[float], window: int
) -> float:
    n = len(close)
    overnight = []
    open_close = []
    rogers_satchell = 0.0
    for i in range(n - window, n):
        overnight.append(math.log(open[i] / close[i - 1]))
        open_close.append(math.log(close[i] / open[i]))
        rogers_satchell += math.log(high[i] / close[i]) * math.log(high[i] / open[i]) + math.log(
            low[i] / close[i]
        ) * math.log(low[i] / open[i])
    k = 0.34 / (1.34 + (window + 1) / (window - 1))
    variance = (
        _sample_variance(overnight) + k * _sample_variance(open_close) + (1.0 - k) * rogers_satchell / window
    )
    return math.sqrt(variance * TRADING_DAYS)


# --- chain statistics -----------------------------------------------------------------------------


def max_pain(
    strikes: Sequence[float], call_oi: Sequence[float], put_oi: Sequence[float]
) -> tuple[float, list[float]]:
    """Naive O(n^2) max pain: total writer payout at each listed strike; lowest strike wins ties.

    Returns (max-pain strike, payout per strike in ascending strike order).
    """
    order = sorted(range(len(strikes)), key=lambda i: strikes[i])
    pains = []
    for j in order:
        settle = strikes[j]
        pain = 0.0
        for i in range(len(strikes)):
            pain += call_oi[i] * max(settle - strikes[i], 0.0) + put_oi[i] * max(strikes[i] - settle, 0.0)
        pains.append(pain)
    best = min(range(len(pains)), key=lambda j: (pains[j], strikes[order[j]]))
    return strikes[order[best]], pains


def black76_price(
    forward: float, strike: float, t: float, vol: float, is_call: bool, discount: float = 1.0
) -> float:
    """Textbook Black-76: D (F N(d1) - K N(d2)) for a call, D (K N(-d2) - F N(-d1)) for a put."""
    if t <= 0.0 or vol <= 0.0:
        return discount * max((forward - strike) if is_call else (strike - forward), 0.0)

    def cdf(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    s = vol * math.sqrt(t)
    d1 = math.log(forward / strike) / s + 0.5 * s
    d2 = d1 - s
    if is_call:
        return discount * (forward * cdf(d1) - strike * cdf(d2))
    return discount * (strike * cdf(-d2) - forward * cdf(-d1))


def stress_revalue(
    legs: Sequence[tuple[float, float, bool, float, float, float, float]],
    spot_shocks: Sequence[float],
    vol_shocks: Sequence[float],
    t_shift: float,
    vol_floor: float,
) -> list[list[float]]:
    """Loop-by-loop portfolio revaluation; a leg is (strike, t, is_call, quantity, vol, forward, discount)."""
    grid = []
    for spot_shock in spot_shocks:
        row = []
        for vol_shock in vol_shocks:
            pnl = 0.0
            for strike, t, is_call, quantity, vol, forward, discount in legs:
                value_now = black76_price(forward, strike, t, vol, is_call, discount)
                t_after = max(t - t_shift, 0.0)
                rate = -math.log(discount) / t if t > 0.0 else 0.0
                value_after = black76_price(
                    forward * (1.0 + spot_shock),
                    strike,
                    t_after,
                    max(vol + vol_shock, vol_floor),
                    is_call,
                    math.exp(-rate * t_after) if t > 0.0 else discount,
                )
                pnl += quantity * (value_after - value_now)
            row.append(pnl)
        grid.append(row)
    return grid
