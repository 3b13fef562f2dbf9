"""Chain and history statistics: IV percentile and rank, term structure, 25-delta risk reversal
and butterfly, put-call ratios, max pain, straddle and expected move.

Vols are annualised decimals unless a function says otherwise; percentile and rank are 0-100.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from operator import mul
from types import ModuleType
from typing import NamedTuple, Protocol

import numpy as np
from scipy.optimize import brentq

from volguard_common.quant import black76, sabr
from volguard_common.quant._types import ArrayLike, Float64Array, Int64Array

# Delta of the wing options quoted as "25-delta": forward (undiscounted), premium-unadjusted, the
# usual convention for index options where the premium is paid in the index's own currency.
DELTA_25 = 0.25
# Term-structure slopes are quoted per 30 calendar days so the number reads as "vol points per month".
_TERM_UNIT_DAYS = 30.0


class SabrParams(Protocol):
    """Anything with SABR parameters, e.g. `sabr.SabrFit`."""

    @property
    def alpha(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def rho(self) -> float: ...
    @property
    def nu(self) -> float: ...


Smile = SabrParams | Callable[[Float64Array], Float64Array]


# --- IV percentile and rank -----------------------------------------------------------------------


def _lookback(history: ArrayLike, current: float, lookback: int) -> Float64Array:
    if int(lookback) != lookback or lookback < 1:
        raise ValueError(f"lookback must be an integer >= 1, got {lookback}")
    if not math.isfinite(current):
        raise ValueError("current IV must be finite")
    values = np.asarray(history, dtype=np.float64).ravel()
    if np.any(np.isinf(values)):
        raise ValueError("IV history contains inf")
    window = values[-int(lookback) :]
    # NaN marks a day without a quote (holiday feed gap); it is not a value, so it is not counted.
    present: Float64Array = window[~np.isnan(window)]
    if len(present) == 0:
        raise ValueError("no IV history in the lookback window")
    return present


def iv_percentile(history: ArrayLike, current: float, lookback: int = 252) -> float:
    """Percent of the last `lookback` history days whose IV was strictly below `current`.

    `history` is oldest-first and excludes today; NaN days are skipped.
    """
    window = _lookback(history, current, lookback)
    return float(100.0 * np.count_nonzero(window < current) / len(window))


def iv_rank(history: ArrayLike, current: float, lookback: int = 252) -> float:
    """Where `current` sits between the low and high of the last `lookback` days, 0-100.

    The range includes `current` itself, so a new high is 100 and a new low is 0; a window with no
    range at all (every value equal to `current`) has no rank and raises ValueError.
    """
    window = _lookback(history, current, lookback)
    low = min(float(window.min()), current)
    high = max(float(window.max()), current)
    if high == low:
        raise ValueError("IV history has no range; rank is undefined")
    return 100.0 * (current - low) / (high - low)


# --- term structure -------------------------------------------------------------------------------


class TermStructure(NamedTuple):
    """ATM term structure summary.

    `slope`: least-squares slope of ATM IV against days-to-expiry, in vol per 30 days (positive =
    contango, negative = inverted/backwardation).
    `curvature`: second derivative of the least-squares quadratic in (days/30), vol per (30 days)^2;
    None with fewer than three distinct expiries.

    A NamedTuple rather than a frozen dataclass, like OpenInterest: built every snapshot, and a tuple
    is built in a fraction of the time a frozen dataclass's __init__ takes.
    """

    slope: float
    curvature: float | None
    front_iv: float
    back_iv: float
    n_expiries: int


def term_structure(days_to_expiry: ArrayLike, atm_ivs: ArrayLike) -> TermStructure:
    # A handful of expiries: plain floats, no numpy per-call overhead.
    days = _plain_floats(days_to_expiry)
    ivs = _plain_floats(atm_ivs)
    if len(days) != len(ivs):
        raise ValueError("days_to_expiry and atm_ivs must have the same length")
    if not all(math.isfinite(d) and d > 0.0 for d in days) or not all(
        math.isfinite(v) and v > 0.0 for v in ivs
    ):
        raise ValueError("days and IVs must be finite and > 0")
    if len(set(days)) != len(days):
        raise ValueError("days_to_expiry must be distinct (one ATM IV per expiry)")
    if len(days) < 2:
        raise ValueError("term structure needs at least two expiries")
    points = sorted(zip(days, ivs, strict=True))
    x = [d / _TERM_UNIT_DAYS for d, _ in points]
    y = [v for _, v in points]
    slope, curvature = _line_and_parabola(x, y)
    return TermStructure(slope, curvature, y[0], y[-1], len(x))


def _plain_floats(values: ArrayLike) -> list[float]:
    """`values` as a flat list of floats. A list of floats (what the analytics engine passes) is that
    already and is returned as it is; anything else goes through numpy, which gives the same floats."""
    if isinstance(values, list) and set(map(type, values)) == {float}:
        return values
    floats: list[float] = np.asarray(values, dtype=np.float64).ravel().tolist()
    return floats


def _line_and_parabola(x: list[float], y: list[float]) -> tuple[float, float | None]:
    """The least-squares line's slope and twice the least-squares parabola's leading coefficient
    (None below three points): what `np.polyfit(x, y, 1)[0]` and `2 * np.polyfit(x, y, 2)[0]` give.

    Closed form on polynomials orthogonal over the points (Forsythe): 1, u = x - mean(x) and
    q = u^2 - (S3/S2) u - S2/n with Sk = sum(u^k). The coefficient of u^2 is that of q alone, sum(q y)
    / sum(q^2), with no normal equations to cancel in; a flat curve gives 0 to rounding. x distinct.
    Sums of products are `sum(map(mul, ...))`: the same products added in the same order as a
    generator would, without a Python frame per point.
    """
    n = len(x)
    centre = sum(x) / n
    level = sum(y) / n
    u = [xi - centre for xi in x]
    w = [yi - level for yi in y]
    uu = list(map(mul, u, u))
    s_uu = sum(uu)
    slope = sum(map(mul, u, w)) / s_uu
    if n < 3:
        return slope, None
    tilt = sum(map(mul, uu, u)) / s_uu
    mean_uu = s_uu / n
    q = [ui2 - tilt * ui - mean_uu for ui2, ui in zip(uu, u, strict=True)]
    leading = sum(map(mul, q, w)) / sum(map(mul, q, q))
    return slope, 2.0 * leading


# --- 25-delta risk reversal and butterfly ---------------------------------------------------------


class RiskReversalButterfly(NamedTuple):
    """rr25 = vol(25d call) - vol(25d put); bf25 = (vol(25d call) + vol(25d put))/2 - vol(ATM).

    ATM is the forward; the butterfly is the smile-strangle (both wings read off the same smile).
    For NIFTY rr25 is normally negative (puts bid).
    """

    rr25: float
    bf25: float
    call_strike: float
    put_strike: float
    call_vol: float
    put_vol: float
    atm_vol: float


def _smile_function(forward: float, t: float, smile: Smile) -> Callable[[float], float]:
    if callable(smile):
        curve = smile

        def from_callable(strike: float) -> float:
            value = float(
                np.asarray(curve(np.array([strike], dtype=np.float64)), dtype=np.float64).ravel()[0]
            )
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"smile returned {value} at strike {strike}")
            return value

        return from_callable
    params = smile

    def from_sabr(strike: float) -> float:
        return float(sabr.vol(forward, strike, t, params.alpha, params.beta, params.rho, params.nu))

    return from_sabr


def _delta_strike(forward: float, t: float, vol_at: Callable[[float], float], is_call: bool) -> float:
    """Strike whose forward delta (with the smile's own vol at that strike) is +-0.25."""
    target = DELTA_25 if is_call else -DELTA_25

    def gap(log_moneyness: float) -> float:
        strike = forward * math.exp(log_moneyness)
        delta = black76.greeks(forward, strike, t, vol_at(strike), is_call).delta
        return float(delta) - target

    # Delta at the forward is ~+-0.5, beyond the target; walk outward (calls up, puts down) until
    # the delta has fallen past +-0.25, then bracket-solve. The ATM total vol sets the step size.
    step = max(vol_at(forward) * math.sqrt(t), 1e-4) * (1.0 if is_call else -1.0)
    inner = 0.0
    outer = step
    while gap(outer) * gap(inner) > 0.0:
        # Twenty units of log-moneyness is e^20 times the forward: no real smile gets there.
        if abs(outer) > 20.0:
            raise ValueError("could not bracket the 25-delta strike; the smile is not a valid smile")
        inner, outer = outer, outer * 1.5
    root = float(brentq(gap, min(inner, outer), max(inner, outer), xtol=1e-14, rtol=1e-14, maxiter=200))
    return forward * math.exp(root)


def risk_reversal_butterfly_25d(forward: float, t: float, smile: Smile) -> RiskReversalButterfly:
    """25-delta risk reversal and butterfly from a SABR parameter set or any strike -> vol callable."""
    if not (math.isfinite(forward) and forward > 0.0 and math.isfinite(t) and t > 0.0):
        raise ValueError("forward and t must be finite and > 0")
    vol_at = _smile_function(forward, t, smile)
    call_strike = _delta_strike(forward, t, vol_at, True)
    put_strike = _delta_strike(forward, t, vol_at, False)
    call_vol = vol_at(call_strike)
    put_vol = vol_at(put_strike)
    atm_vol = vol_at(forward)
    return RiskReversalButterfly(
        rr25=call_vol - put_vol,
        bf25=0.5 * (call_vol + put_vol) - atm_vol,
        call_strike=call_strike,
        put_strike=put_strike,
        call_vol=call_vol,
        put_vol=put_vol,
        atm_vol=atm_vol,
    )


# --- put-call ratios ------------------------------------------------------------------------------


def _ratio(puts: ArrayLike, calls: ArrayLike, what: str) -> float:
    p = np.asarray(puts, dtype=np.float64)
    c = np.asarray(calls, dtype=np.float64)
    for name, arr in (("put", p), ("call", c)):
        if not np.all(np.isfinite(arr) & (arr >= 0.0)):
            raise ValueError(f"{name} {what} must be finite and >= 0")
    call_total = float(c.sum())
    if call_total == 0.0:
        raise ValueError(f"total call {what} is zero; the ratio is undefined")
    return float(p.sum()) / call_total


def pcr(call_oi: ArrayLike, put_oi: ArrayLike) -> float:
    """Put-call ratio of open interest: total put OI / total call OI."""
    return _ratio(put_oi, call_oi, "open interest")


def pcr_volume(call_volume: ArrayLike, put_volume: ArrayLike) -> float:
    """Put-call ratio of traded volume: total put volume / total call volume."""
    return _ratio(put_volume, call_volume, "volume")


# --- max pain -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaxPain:
    """`strike` minimises the total intrinsic payout of all open options at expiry; `pain[j]` is that
    payout (in index points x contracts/units, as the OI is given) if NIFTY settles at `strikes[j]`.
    Ties go to the lowest strike."""

    strike: float
    strikes: Float64Array
    pain: Float64Array


def max_pain(strikes: ArrayLike, call_oi: ArrayLike, put_oi: ArrayLike) -> MaxPain:
    """Max pain in O(n log n): sort by strike, then prefix sums.

    pain(S) = sum_i call_oi_i max(S - K_i, 0) + sum_i put_oi_i max(K_i - S, 0)
            = S * C(<=S) - CK(<=S)  +  PK(>=S) - S * P(>=S)
    with C, CK the running sums of call OI and call OI x strike (P, PK for puts, from the top).
    """
    k = np.asarray(strikes, dtype=np.float64).ravel()
    c = np.asarray(call_oi, dtype=np.float64).ravel()
    p = np.asarray(put_oi, dtype=np.float64).ravel()
    if not (k.shape == c.shape == p.shape) or len(k) == 0:
        raise ValueError("strikes, call_oi and put_oi must be non-empty and of equal length")
    if not np.all(np.isfinite(k) & (k > 0.0)):
        raise ValueError("strikes must be finite and > 0")
    if not (np.all(np.isfinite(c) & (c >= 0.0)) and np.all(np.isfinite(p) & (p >= 0.0))):
        raise ValueError("open interest must be finite and >= 0")
    order = np.argsort(k, kind="stable")
    k, c, p = k[order], c[order], p[order]
    # Pain is unchanged by shifting every strike by the same amount; centring keeps the running
    # products small so S*C - CK does not lose digits to cancellation (exact for integer data).
    centre = k[len(k) // 2]
    kc = k - centre
    call_count = np.cumsum(c)
    call_weighted = np.cumsum(c * kc)
    put_count = np.cumsum(p[::-1])[::-1]
    put_weighted = np.cumsum((p * kc)[::-1])[::-1]
    pain = kc * call_count - call_weighted + put_weighted - kc * put_count
    best = int(np.argmin(pain))
    return MaxPain(strike=float(k[best]), strikes=k, pain=pain)


class OpenInterest(NamedTuple):
    """One expiry's open interest and volume in brief. `max_pain` is None without any OI; a wall (the
    first strike with the largest OI of its side) is None when that side has no OI; `pin_oi` is the
    call plus put OI of the strikes within the pin band.

    A NamedTuple rather than a frozen dataclass: the analytics engine builds one per expiry every
    second, and a tuple is built in a fraction of the time a frozen dataclass's __init__ takes."""

    call_oi: float
    put_oi: float
    call_volume: float
    put_volume: float
    max_pain: float | None
    call_wall: float | None
    put_wall: float | None
    pin_oi: float


def open_interest_by_expiry(
    strikes: ArrayLike,
    call_oi: ArrayLike,
    put_oi: ArrayLike,
    call_volume: ArrayLike,
    put_volume: ArrayLike,
    bounds: ArrayLike,
    pin_centre: ArrayLike,
    pin_half_width: ArrayLike,
) -> list[OpenInterest]:
    """:class:`OpenInterest` of several expiries in one compiled pass (max pain as :func:`max_pain`).

    Columns of all expiries are concatenated; expiry e owns rows ``bounds[e]:bounds[e + 1]``, with
    strikes strictly increasing inside it, and its pin band is ``|strike - pin_centre[e]| <=
    pin_half_width[e]``.
    """
    k = np.ascontiguousarray(strikes, dtype=np.float64).ravel()
    columns = [
        np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (call_oi, put_oi, call_volume, put_volume)
    ]
    edges = np.ascontiguousarray(bounds, dtype=np.int64).ravel()
    centre = np.ascontiguousarray(pin_centre, dtype=np.float64).ravel()
    half_width = np.ascontiguousarray(pin_half_width, dtype=np.float64).ravel()
    if any(column.shape != k.shape for column in columns):
        raise ValueError("strikes, open interest and volume columns must have equal length")
    if edges.size < 1 or edges[0] != 0 or edges[-1] != k.size or (np.diff(edges) < 1).any():
        raise ValueError(f"bounds must rise strictly from 0 to {k.size}, got {edges.tolist()}")
    if centre.size != edges.size - 1 or half_width.size != edges.size - 1:
        raise ValueError("one pin band per expiry is required")
    if not (np.isfinite(k) & (k > 0.0)).all():
        raise ValueError("strikes must be finite and > 0")
    rising = k[1:] > k[:-1]
    # Only rows inside one expiry must rise; the first row of each later expiry starts afresh.
    rising[edges[1:-1] - 1] = True
    if not rising.all():
        raise ValueError("strikes must be strictly increasing within each expiry")
    for column in columns:
        if not (np.isfinite(column) & (column >= 0.0)).all():
            raise ValueError("open interest and volume must be finite and >= 0")
    call, put, call_traded, put_traded = columns
    return open_interest_by_expiry_prepared(k, call, put, call_traded, put_traded, edges, centre, half_width)


def open_interest_by_expiry_prepared(
    strikes: Float64Array,
    call_oi: Float64Array,
    put_oi: Float64Array,
    call_volume: Float64Array,
    put_volume: Float64Array,
    bounds: Int64Array,
    pin_centre: Float64Array,
    pin_half_width: Float64Array,
) -> list[OpenInterest]:
    """:func:`open_interest_by_expiry` with no checks, for a caller that built the columns itself (the
    analytics engine, from validated chain snapshots): contiguous 1-d float64 columns of one length,
    strikes finite, > 0 and strictly increasing within each expiry, open interest and volume finite
    and >= 0, int64 `bounds` rising strictly from 0 to the length, one pin band per expiry. Anything
    else is undefined behaviour here; `open_interest_by_expiry` is the entry that says what is wrong."""
    rows = _kernels().open_interest_segments(
        strikes, call_oi, put_oi, call_volume, put_volume, bounds, pin_centre, pin_half_width
    )
    # NaN in the block is "none": no OI at all for max pain, none on that side for a wall.
    return [
        OpenInterest(
            calls,
            puts,
            calls_traded,
            puts_traded,
            None if pain != pain else pain,
            None if call_wall != call_wall else call_wall,
            None if put_wall != put_wall else put_wall,
            pin,
        )
        for calls, puts, calls_traded, puts_traded, pain, call_wall, put_wall, pin in rows.tolist()
    ]


@functools.cache
def _kernels() -> ModuleType:
    # Imported on first use so that importing this module neither imports numba nor compiles; cached,
    # as an import statement costs a lookup on every call of a function run each second.
    from volguard_common.quant import _chain_kernels

    return _chain_kernels


# --- straddle and expected move -------------------------------------------------------------------


def straddle_price(forward: float, strike: float, t: float, vol: float, discount: float = 1.0) -> float:
    """Black-76 value of one call plus one put at `strike` (present value, index points)."""
    both = black76.price(forward, strike, t, vol, np.array([True, False]), discount)
    if not np.all(np.isfinite(both)):
        raise ValueError("straddle inputs give a non-finite price")
    return float(both.sum())


class ExpectedMove(NamedTuple):
    """The market's expected move read off the ATM straddle.

    `points` is the straddle itself: under Black it is ~E|S_T - F|, the expected absolute move.
    `one_sd_points` = straddle * sqrt(pi/2) is the implied one-standard-deviation move.
    `lower`/`upper` are the straddle breakevens around spot.
    """

    points: float
    percent: float
    lower: float
    upper: float
    one_sd_points: float


def expected_move(straddle: float, spot: float) -> ExpectedMove:
    if not (math.isfinite(straddle) and straddle >= 0.0 and math.isfinite(spot) and spot > 0.0):
        raise ValueError("straddle must be finite and >= 0, spot finite and > 0")
    return ExpectedMove(
        points=straddle,
        percent=100.0 * straddle / spot,
        lower=spot - straddle,
        upper=spot + straddle,
        one_sd_points=straddle * math.sqrt(math.pi / 2.0),
    )
