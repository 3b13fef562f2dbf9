"""Realised-volatility estimators on daily bars, annualised with 252 trading days.

`window` counts trading days (bars). Estimators that need the previous close (close-to-close,
Yang-Zhang) read `window + 1` bars; the range-based ones (Parkinson, Garman-Klass) read `window`.
Each point estimator uses the last `window` days; each `rolling_*` twin returns one value per bar,
NaN until a full window is available, and its last value equals the point estimator.

Variances: close-to-close and the Yang-Zhang overnight/open-to-close parts are mean-adjusted sample
variances (ddof=1), as in Yang & Zhang (2000); Parkinson, Garman-Klass and Rogers-Satchell are
zero-drift means of squared ranges, as published.

`CompletedDays` answers the close-to-close, Parkinson and Yang-Zhang point estimators with one more bar
appended to fixed history (today's partial bar on top of the completed days) at scalar cost per bar.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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


# --- completed days + one more bar ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sample:
    """Count, mean and sum of squared deviations from the mean (M2) of a fixed set of values."""

    count: int
    mean: float
    m2: float

    @staticmethod
    def of(values: Float64Array) -> _Sample:
        mean = float(values.mean())
        deviation = values - mean
        return _Sample(values.size, mean, float(np.dot(deviation, deviation)))

    def variance_with(self, x: float) -> float:
        """Sample variance (ddof=1) of these values and x.

        Chan, Golub & LeVeque's update M2' = M2 + d^2 n / (n + 1), d = x - mean: M2 of the fixed values
        was summed two-pass, about their own mean, so no sum of squares minus squared sum appears - that
        cancels when a drift is large against the day-to-day spread.
        """
        d = x - self.mean
        return (self.m2 + d * d * self.count / (self.count + 1)) / self.count


def _check_price(name: str, price: float) -> None:
    # Chained comparisons are False for NaN, so NaN is refused with the non-positive and infinite.
    if not 0.0 < price < math.inf:
        raise ValueError(f"{name} must be finite and > 0")


@dataclass(frozen=True, slots=True)
class CompletedDays:
    """The completed days' share of each estimator's last window, summed once, so that the estimator
    with one more bar appended costs a handful of scalar logs instead of a numpy pass over the window.

    Built for a fixed history (the daily bars before today) and the `windows` that will be asked for;
    then, with `window` one of them,
    `close_to_close(last, window)` is `close_to_close(np.append(close, last), window)`,
    `parkinson(high_, low_, window)` is `parkinson(np.append(high, high_), np.append(low, low_), window)`,
    `yang_zhang(open_, high_, low_, last, window)` is `yang_zhang` on the four appended arrays,
    to rounding (the sums are taken in another order), with the same refusals of a short history and of
    a bad appended price. The completed days are checked once, here.
    """

    windows: frozenset[int]
    # Completed bars given; with the appended one, the count a refusal for too few bars reports.
    bars: int
    # ln of the last completed close, the start of the appended bar's return and overnight gap. Kept as
    # a log, so the appended return is ln C - ln C_prev, the form `log_returns` takes.
    log_last_close: float
    last_close: float
    returns: dict[int, _Sample]
    parkinson_sums: dict[int, float]
    # Overnight and open-to-close samples and the Rogers-Satchell sum.
    yang_zhang_parts: dict[int, tuple[_Sample, _Sample, float]]

    @staticmethod
    def of(
        open: ArrayLike, high: ArrayLike, low: ArrayLike, close: ArrayLike, windows: Iterable[int]
    ) -> CompletedDays:
        """The last `window - 1` completed days of each estimator, for each window in `windows`; only
        the end of the history is read (a window of w reads its last w bars), so pass just that."""
        o, h, lo, c = (
            _prices(n, x) for n, x in (("open", open), ("high", high), ("low", low), ("close", close))
        )
        _check_bars(o, h, lo, c)
        if c.size == 0:
            # The appended bar's return and overnight gap start from the last completed close.
            raise ValueError("no completed days: the appended bar needs the close before it")
        wanted = frozenset(windows)
        for window in wanted:
            _check_window(window)
        m = c.size
        log_close = np.log(c)
        returns = np.diff(log_close)
        parkinson_terms = _parkinson_terms(h, lo)
        # From the 2nd bar: a window that reads them has `window` >= fixed + 1 completed bars.
        overnight, open_close, rogers_satchell = _yang_zhang_parts(o, h, lo, c)
        samples: dict[int, _Sample] = {}
        parkinson_sums: dict[int, float] = {}
        yang_zhang_parts: dict[int, tuple[_Sample, _Sample, float]] = {}
        for window in wanted:
            fixed = window - 1  # days of the window that are complete; the appended bar is the last
            # Parkinson reads `window` bars, so `fixed` completed ones; the others also need the close
            # before the first of them, hence `window` completed bars.
            if m >= fixed:
                parkinson_sums[window] = float(parkinson_terms[m - fixed :].sum())
            if m >= window:
                samples[window] = _Sample.of(returns[-fixed:])
                yang_zhang_parts[window] = (
                    _Sample.of(overnight[-fixed:]),
                    _Sample.of(open_close[-fixed:]),
                    float(rogers_satchell[-fixed:].sum()),
                )
        return CompletedDays(
            windows=wanted,
            bars=m,
            log_last_close=float(log_close[-1]),
            last_close=float(c[-1]),
            returns=samples,
            parkinson_sums=parkinson_sums,
            yang_zhang_parts=yang_zhang_parts,
        )

    def _refuse(self, window: int, bars_needed: int) -> ValueError:
        if window not in self.windows:
            return ValueError(
                f"window {window} was not among the windows these completed days were summed for"
            )
        return ValueError(f"need at least {bars_needed} bars for this window, got {self.bars + 1}")

    def close_to_close(self, last: float, window: int) -> float:
        """`close_to_close` of the completed closes and `last`."""
        returns = self.returns.get(window)
        if returns is None:
            raise self._refuse(window, window + 1)
        _check_price("close", last)
        variance = returns.variance_with(math.log(last) - self.log_last_close)
        return math.sqrt(variance * TRADING_DAYS)

    def parkinson(self, high: float, low: float, window: int) -> float:
        """`parkinson` of the completed bars and one more with this high and low."""
        completed = self.parkinson_sums.get(window)
        if completed is None:
            raise self._refuse(window, window)
        _check_price("high", high)
        _check_price("low", low)
        if high < low:
            raise ValueError("high < low in the appended bar")
        term = math.log(high / low) ** 2 / (4.0 * _LN2)
        return math.sqrt((completed + term) / window * TRADING_DAYS)

    def yang_zhang(self, open: float, high: float, low: float, close: float, window: int) -> float:
        """`yang_zhang` of the completed bars and one more with this open, high, low and close."""
        parts = self.yang_zhang_parts.get(window)
        if parts is None:
            raise self._refuse(window, window + 1)
        for name, price in (("open", open), ("high", high), ("low", low), ("close", close)):
            _check_price(name, price)
        if high < low:
            raise ValueError("high < low in the appended bar")
        overnight, open_close, rogers_satchell = parts
        k = _yang_zhang_k(window)
        today_rs = math.log(high / close) * math.log(high / open) + math.log(low / close) * math.log(
            low / open
        )
        variance = (
            overnight.variance_with(math.log(open / self.last_close))
            + k * open_close.variance_with(math.log(close / open))
            + (1.0 - k) * ((rogers_satchell + today_rs) / window)
        )
        return math.sqrt(variance * TRADING_DAYS)
