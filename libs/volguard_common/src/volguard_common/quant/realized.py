"""Realised-volatility estimators on daily bars, annualised with 252 trading days.

`window` counts trading days (bars). Estimators that need the previous close (close-to-close,
Yang-Zhang) read `window + 1` bars; the range-based ones (Parkinson, Garman-Klass) read `window`.
Each point estimator uses the last `window` days; each `rolling_*` twin returns one value per bar,
NaN until a full window is available, and its last value equals the point estimator.

Variances: close-to-close and the Yang-Zhang overnight/open-to-close parts are mean-adjusted sample
variances (ddof=1), as in Yang & Zhang (2000); Parkinson, Garman-Klass and Rogers-Satchell are
zero-drift means of squared ranges, as published.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from volguard_common.quant._types import ArrayLike, Float64Array

TRADING_DAYS = 252
_LN2 = math.log(2.0)
_GK_CLOSE_WEIGHT = 2.0 * _LN2 - 1.0


def _prices(name: str, x: ArrayLike) -> Float64Array:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    # Two reductions instead of three elementwise passes (analytics asks every second): a NaN makes
    # min() NaN, which fails the comparison like a non-positive price does.
    if arr.size and not (arr.min() > 0.0 and arr.max() < np.inf):
        raise ValueError(f"{name} must be finite and > 0")
    return arr


def _sample_variance(x: Float64Array) -> float:
    """np.var(x, ddof=1), mean-adjusted, without np.var's per-call overhead on a 7-21 day window."""
    deviation = x - x.mean()
    return float(np.dot(deviation, deviation)) / (x.size - 1)


def _check_window(window: int, minimum: int = 2) -> None:
    if int(window) != window or window < minimum:
        raise ValueError(f"window must be an integer >= {minimum}, got {window}")


def _check_bars(
    open: Float64Array | None, high: Float64Array, low: Float64Array, close: Float64Array | None
) -> None:
    lengths = {len(a) for a in (open, high, low, close) if a is not None}
    if len(lengths) != 1:
        raise ValueError("open, high, low and close must have the same length")
    if np.any(high < low):
        raise ValueError("high < low in at least one bar")


def _need(n_have: int, n_need: int) -> None:
    if n_have < n_need:
        raise ValueError(f"need at least {n_need} bars for this window, got {n_have}")


def log_returns(closes: ArrayLike) -> Float64Array:
    """Daily log returns ln(C_i / C_{i-1}); one fewer than the closes."""
    c = _prices("closes", closes)
    return np.diff(np.log(c))


def _annualise(variance: Float64Array) -> Float64Array:
    return np.sqrt(variance * TRADING_DAYS)


def _pad(values: Float64Array, n: int) -> Float64Array:
    """Align a per-window series to the bars: NaN where no full window ends yet."""
    out = np.full(n, np.nan)
    out[n - len(values) :] = values
    return out


# --- close to close -------------------------------------------------------------------------------


def rolling_close_to_close(closes: ArrayLike, window: int) -> Float64Array:
    """Annualised close-to-close vol over each trailing `window` of returns."""
    _check_window(window)
    r = log_returns(closes)
    _need(len(r) + 1, window + 1)
    var = sliding_window_view(r, window).var(axis=1, ddof=1)
    return _pad(_annualise(var), len(r) + 1)


def close_to_close(closes: ArrayLike, window: int) -> float:
    """Annualised close-to-close vol of the last `window` daily log returns (`window + 1` closes)."""
    _check_window(window)
    r = log_returns(closes)
    _need(len(r) + 1, window + 1)
    return math.sqrt(_sample_variance(r[-window:]) * TRADING_DAYS)


# --- Parkinson ------------------------------------------------------------------------------------


def _parkinson_terms(high: ArrayLike, low: ArrayLike) -> Float64Array:
    h = _prices("high", high)
    lo = _prices("low", low)
    _check_bars(None, h, lo, None)
    return np.log(h / lo) ** 2 / (4.0 * _LN2)


def rolling_parkinson(high: ArrayLike, low: ArrayLike, window: int) -> Float64Array:
    """Annualised Parkinson (1980) high-low vol over each trailing `window` of bars."""
    _check_window(window, 1)
    terms = _parkinson_terms(high, low)
    _need(len(terms), window)
    return _pad(_annualise(sliding_window_view(terms, window).mean(axis=1)), len(terms))


def parkinson(high: ArrayLike, low: ArrayLike, window: int) -> float:
    """Annualised Parkinson vol of the last `window` bars: var = mean(ln(H/L)^2) / (4 ln 2)."""
    _check_window(window, 1)
    terms = _parkinson_terms(high, low)
    _need(len(terms), window)
    return math.sqrt(float(terms[-window:].mean()) * TRADING_DAYS)


# --- Garman-Klass ---------------------------------------------------------------------------------


def _garman_klass_terms(open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike) -> Float64Array:
    o, h, lo, c = (_prices(n, x) for n, x in (("open", open), ("high", high), ("low", low), ("close", close)))
    _check_bars(o, h, lo, c)
    return 0.5 * np.log(h / lo) ** 2 - _GK_CLOSE_WEIGHT * np.log(c / o) ** 2


def rolling_garman_klass(
    open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike, window: int
) -> Float64Array:
    """Annualised Garman-Klass (1980) vol over each trailing `window` of bars."""
    _check_window(window, 1)
    terms = _garman_klass_terms(open, high, low, close)
    _need(len(terms), window)
    return _pad(_annualise(sliding_window_view(terms, window).mean(axis=1)), len(terms))


def garman_klass(open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike, window: int) -> float:
    """Annualised Garman-Klass vol: var = mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2)."""
    _check_window(window, 1)
    terms = _garman_klass_terms(open, high, low, close)
    _need(len(terms), window)
    return float(np.sqrt(np.mean(terms[-window:]) * TRADING_DAYS))


# --- Yang-Zhang -----------------------------------------------------------------------------------


def _yang_zhang_parts(
    open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Per-day overnight return, open-to-close return and Rogers-Satchell term, from the 2nd bar."""
    o, h, lo, c = (_prices(n, x) for n, x in (("open", open), ("high", high), ("low", low), ("close", close)))
    _check_bars(o, h, lo, c)
    overnight = np.log(o[1:] / c[:-1])
    open_close = np.log(c[1:] / o[1:])
    rs = np.log(h / c) * np.log(h / o) + np.log(lo / c) * np.log(lo / o)
    return overnight, open_close, rs[1:]


def _yang_zhang_k(window: int) -> float:
    # Yang & Zhang's (2000) minimum-variance weight for alpha = 1.34.
    return 0.34 / (1.34 + (window + 1) / (window - 1))


def rolling_yang_zhang(
    open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike, window: int
) -> Float64Array:
    """Annualised Yang-Zhang vol over each trailing `window` of days (`window + 1` bars each)."""
    _check_window(window)
    overnight, open_close, rs = _yang_zhang_parts(open, high, low, close)
    _need(len(rs) + 1, window + 1)
    k = _yang_zhang_k(window)
    var = (
        sliding_window_view(overnight, window).var(axis=1, ddof=1)
        + k * sliding_window_view(open_close, window).var(axis=1, ddof=1)
        + (1.0 - k) * sliding_window_view(rs, window).mean(axis=1)
    )
    return _pad(_annualise(var), len(rs) + 1)


def yang_zhang(open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike, window: int) -> float:
    """Annualised Yang-Zhang (2000) vol of the last `window` days.

    var = var(overnight) + k var(open->close) + (1 - k) mean(Rogers-Satchell),
    k = 0.34 / (1.34 + (n + 1)/(n - 1)); overnight is ln(O_i / C_{i-1}), so `window + 1` bars.
    """
    _check_window(window)
    overnight, open_close, rs = _yang_zhang_parts(open, high, low, close)
    _need(len(rs) + 1, window + 1)
    k = _yang_zhang_k(window)
    var = (
        _sample_variance(overnight[-window:])
        + k * _sample_variance(open_close[-window:])
        + (1.0 - k) * float(rs[-window:].mean())
    )
    return math.sqrt(var * TRADING_DAYS)
