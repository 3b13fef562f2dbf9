"""Compiled passes of `expiry.analyse_set` over the quotes of a whole chain set.

A chain set is six expiries of ~121 strikes: ~1,450 quotes a side. In numpy, each step of the
per-quote bookkeeping around the IV solve (quote flags, the clean pairs for parity, the IV inputs
and starts, the fit mask, the surface block, the SABR fit points) is a dozen array operations of a
few microseconds each, and together they cost as much as the solve itself. Here they are compiled
loops, five calls per chain set: `set_quotes`, `iv_inputs`, `iv_starts`, `settle` and
`surface_and_fit_points`.

Each kernel has an obvious twin that the tests hold it to: `expiry.classify_quotes` for `classify`,
and for the others the numpy statements they replace, written out in the tests.

Bit values are plain ints in this file, not read from QuoteFlag and IvFlag: numba freezes globals into
its on-disk cache, which is keyed on this file only (tests check the two agree).
"""

from __future__ import annotations

import math

import numpy as np

from volguard_common.quant._jit import jit
from volguard_common.quant._types import BoolArray, Float64Array, Int64Array

# QuoteFlag bits (events.chain).
QUOTE_CROSSED = 1
QUOTE_ZERO_BID = 2
QUOTE_STALE_LTP = 4
QUOTE_MISSING = 8
QUOTE_WIDE_SPREAD = 16
# Unreported OI / volume: the quote kernels price quotes and read neither (see expiry._reported_counts).
QUOTE_OI_MISSING = 32
QUOTE_VOLUME_MISSING = 64
# IvFlag bits (events.surface_columns).
IV_NO_QUOTE = 1
IV_BELOW_INTRINSIC = 2
IV_ABOVE_UPPER_BOUND = 4
IV_SOLVER_FAILED = 8
IV_WIDE_SPREAD = 16
IV_CROSSED = 32
IV_EXCLUDED_FROM_FIT = 64
# "Not a clean market observation": never fitted, and no straddle from it.
IV_UNFIT = (
    IV_NO_QUOTE | IV_BELOW_INTRINSIC | IV_ABOVE_UPPER_BOUND | IV_SOLVER_FAILED | IV_WIDE_SPREAD | IV_CROSSED
)


@jit
def classify(
    bid: Float64Array,
    ask: Float64Array,
    quote_flags: Int64Array,
    bounds: Int64Array,
    ticks: Float64Array,
    wide_spread_frac: float,
    wide_spread_min_ticks: float,
) -> tuple[Float64Array, Float64Array, Int64Array]:
    """`expiry.classify_quotes` of a chain set's quotes (side-major; expiry e owns strike rows
    bounds[e]:bounds[e + 1] and has tick size ticks[e]): (mid, half-spread, IvFlag bits known before
    solving)."""
    n = bid.size
    strikes = n // 2
    tick = np.empty(n)
    for e in range(bounds.size - 1):
        for i in range(bounds[e], bounds[e + 1]):
            tick[i] = ticks[e]
            tick[strikes + i] = ticks[e]
    mid = np.empty(n)
    half_spread = np.empty(n)
    flags = np.zeros(n, dtype=np.int64)
    for i in range(n):
        b = bid[i]
        a = ask[i]
        producer = quote_flags[i]
        if math.isnan(b) or math.isnan(a) or (producer & (QUOTE_MISSING | QUOTE_ZERO_BID)) != 0:
            flags[i] = IV_NO_QUOTE
            mid[i] = math.nan
            half_spread[i] = math.nan
            continue
        m = 0.5 * (b + a)
        spread = a - b
        mid[i] = m
        half_spread[i] = 0.5 * abs(spread)
        if spread < 0.0 or (producer & QUOTE_CROSSED) != 0:
            flags[i] |= IV_CROSSED
        if (spread > wide_spread_frac * m and spread > wide_spread_min_ticks * tick[i]) or (
            producer & QUOTE_WIDE_SPREAD
        ) != 0:
            flags[i] |= IV_WIDE_SPREAD
    return mid, half_spread, flags


@jit
def parity_pairs(mid: Float64Array, flags: Int64Array) -> tuple[Float64Array, Float64Array, BoolArray]:
    """Call and put mids of the strikes whose two sides are both clean (no flag) - NaN
    elsewhere - and the strikes usable for parity (clean, both mids > 0). Quotes are side-major:
    calls in rows 0..n-1, puts in n..2n-1."""
    n = mid.size // 2
    call_mid = np.full(n, math.nan)
    put_mid = np.full(n, math.nan)
    usable = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if (flags[i] | flags[n + i]) == 0:
            call_mid[i] = mid[i]
            put_mid[i] = mid[n + i]
            usable[i] = mid[i] > 0.0 and mid[n + i] > 0.0
    return call_mid, put_mid, usable


@jit
def set_quotes(
    floats: Float64Array,
    ints: Int64Array,
    rows: Int64Array,
    bounds: Int64Array,
    ticks: Float64Array,
    wide_spread_frac: float,
    wide_spread_min_ticks: float,
) -> tuple[Float64Array, Float64Array, Int64Array, Float64Array, Float64Array, BoolArray, Float64Array]:
    """`classify` and then `parity_pairs` of a chain set, read straight from its column blocks (every
    chain's float and int blocks side by side; `rows` = the call bid, put bid, call ask and put ask
    rows of the float block, then the call and put flag rows and the call OI, put OI, call volume and
    put volume rows of the int block): (mid, half-spread, flags, parity call mids, parity put
    mids, parity usable, and the OI and volume rows as float64 for the OI statistics). One call
    instead of two, three numpy row gathers and a conversion."""
    n = floats.shape[1]
    bid = np.empty(2 * n)
    ask = np.empty(2 * n)
    quote_flags = np.empty(2 * n, dtype=np.int64)
    for side in range(2):
        for i in range(n):
            bid[side * n + i] = floats[rows[side], i]
            ask[side * n + i] = floats[rows[2 + side], i]
            quote_flags[side * n + i] = ints[rows[4 + side], i]
    activity = np.empty((4, n))
    for r in range(4):
        for i in range(n):
            activity[r, i] = ints[rows[6 + r], i]
    mid, half_spread, flags = classify(
        bid, ask, quote_flags, bounds, ticks, wide_spread_frac, wide_spread_min_ticks
    )
    call_mid, put_mid, usable = parity_pairs(mid, flags)
    return mid, half_spread, flags, call_mid, put_mid, usable, activity


@jit
def iv_inputs(
    mid: Float64Array,
    strike: Float64Array,
    bounds: Int64Array,
    forwards: Float64Array,
    times: Float64Array,
    discounts: Float64Array,
) -> Float64Array:
    """The (6, 2n) input block of `iv.implied_vol_and_status_block`: price, forward, strike, t,
    is_call, discount per quote (side-major; expiry e owns strike rows bounds[e]:bounds[e + 1]). An
    unquoted side keeps its NaN mid as the price: the solver's input check turns it away before any
    work (no vol is wanted for it), and `settle` leaves its vol NaN."""
    n = strike.size
    block = np.empty((6, 2 * n))
    for e in range(bounds.size - 1):
        for i in range(bounds[e], bounds[e + 1]):
            for side in range(2):
                q = side * n + i
                m = mid[q]
                block[0, q] = m
                block[1, q] = forwards[e]
                block[2, q] = strike[i]
                block[3, q] = times[e]
                block[4, q] = 1.0 - side
                block[5, q] = discounts[e]
    return block


@jit
def iv_starts(
    strike: Float64Array,
    bounds: Int64Array,
    previous_strike: Float64Array,
    previous_bounds: Int64Array,
    previous_vols: Float64Array,
    previous_expiry: Int64Array,
) -> Float64Array:
    """Each quote's vol in the previous chain set, where this set's IV solve starts (the `start` of
    `iv.implied_vol_and_status_block`): the same side of the same strike of the same expiry, NaN where
    that was not solved or not listed. Expiry e of this set was expiry previous_expiry[e] of the
    previous one (-1: absent); strikes rise within each expiry in both sets, so one merge pass per
    expiry pairs them."""
    n = strike.size
    previous_n = previous_strike.size
    start = np.full(2 * n, math.nan)
    for e in range(bounds.size - 1):
        p = previous_expiry[e]
        if p < 0:
            continue
        j = previous_bounds[p]
        end = previous_bounds[p + 1]
        for i in range(bounds[e], bounds[e + 1]):
            k = strike[i]
            while j < end and previous_strike[j] < k:
                j += 1
            if j == end:
                break
            if previous_strike[j] == k:
                start[i] = previous_vols[j]
                start[n + i] = previous_vols[previous_n + j]
    return start


@jit
def settle(
    vol: Float64Array,
    status: Int64Array,
    status_flags: Int64Array,
    flags: Int64Array,
    mid: Float64Array,
    strike: Float64Array,
    bounds: Int64Array,
    forwards: Float64Array,
) -> BoolArray:
    """After the IV solve, before the Greeks: completes `vol` and `flags` (2n, side-major) in place
    and returns which quotes the SABR fit takes.

    An unquoted side's vol is NaN (the solver turned its NaN price away); a quoted side
    gets the IvFlag bits of its solver status (`status_flags[status]`). A quote is fitted when it is
    solved, out of the money (calls at and above the forward, puts below), carries no flag from
    `IV_UNFIT`; a solved quote left out gets EXCLUDED_FROM_FIT. A stale last trade (STALE_LTP) does not
    count: the vol is solved from the bid/ask mid, which does not depend on the last trade."""
    n = strike.size
    fitted = np.zeros(2 * n, dtype=np.bool_)
    for e in range(bounds.size - 1):
        forward = forwards[e]
        for i in range(bounds[e], bounds[e + 1]):
            for side in range(2):
                q = side * n + i
                if math.isnan(mid[q]):
                    vol[q] = math.nan
                    continue
                flags[q] |= status_flags[status[q]]
                if math.isnan(vol[q]):
                    continue
                otm = strike[i] >= forward if side == 0 else strike[i] < forward
                if otm and (flags[q] & IV_UNFIT) == 0:
                    fitted[q] = True
                else:
                    flags[q] |= IV_EXCLUDED_FROM_FIT
    return fitted


@jit
def surface_and_fit_points(
    vol: Float64Array,
    greeks: Float64Array,
    fitted: BoolArray,
    flags: Int64Array,
    mid: Float64Array,
    half_spread: Float64Array,
    strike: Float64Array,
    bounds: Int64Array,
    forwards: Float64Array,
    ticks: Float64Array,
    greek_units: Float64Array,
) -> tuple[Float64Array, Int64Array, Float64Array, Float64Array, Float64Array, Int64Array, Float64Array]:
    """The surface blocks of every expiry, the SABR fit points and what each expiry's money quotes,
    from `settle`'s vols, flags and fit mask, the mids and the Greeks ((4, 2n), black76.chain_greeks
    units).

    The fit points of expiry e are its fitted puts then its fitted calls, in strike order (OTM puts
    lie below the forward), rows fit_bounds[e]:fit_bounds[e + 1] of the point arrays, each with
    square-root weight median error / error over its expiry, where a quote's vol error is
    (half-spread + half a tick) / vega: the uncertainty of its mid, in vol.

    Per expiry also, in column e of the (3, k) block `atm`: its ATM strike (the listed strike nearest
    the forward, the first of two equally near), its straddle there (call + put mid, NaN unless both
    are clean: no IV_UNFIT flag) and the model-free ATM IV of `expiry.quoted_atm_iv` (NaN where it has
    none).

    Returns (surface, surface_flags, fit strikes, fit vols, fit square-root weights, fit_bounds,
    atm). The surface blocks are stacked as `SurfaceColumns.adopt_stacked` takes
    them: expiry e's (11, w) float block (SURFACE_FLOAT_COLUMNS order, the Greeks divided by
    `greek_units`) is surface[11 lo : 11 hi] and its (2, w) block of call and put IvFlag bits is
    surface_flags[2 lo : 2 hi], lo:hi = bounds[e]:bounds[e + 1], w = hi - lo."""
    n = strike.size
    k = bounds.size - 1
    surface = np.empty(11 * n)
    surface_flags = np.empty(2 * n, dtype=np.int64)
    for e in range(k):
        lo = bounds[e]
        width = bounds[e + 1] - lo
        base = 11 * lo
        for c in range(width):
            i = lo + c
            surface[base + c] = strike[i]
            surface[base + width + c] = vol[i]
            surface[base + 2 * width + c] = vol[n + i]
            for g in range(4):
                surface[base + (3 + g) * width + c] = greeks[g, i] / greek_units[g]
                surface[base + (7 + g) * width + c] = greeks[g, n + i] / greek_units[g]
            surface_flags[2 * lo + c] = flags[i]
            surface_flags[2 * lo + width + c] = flags[n + i]
    total = 0
    for q in range(2 * n):
        if fitted[q]:
            total += 1
    fit_bounds = np.zeros(k + 1, dtype=np.int64)
    fit_strike = np.empty(total)
    fit_vol = np.empty(total)
    fit_sqrt_w = np.empty(total)
    j = 0
    for e in range(k):
        start = j
        for side_offset in (n, 0):  # puts first, then calls
            for i in range(bounds[e], bounds[e + 1]):
                q = side_offset + i
                if fitted[q]:
                    fit_strike[j] = strike[i]
                    fit_vol[j] = vol[q]
                    fit_sqrt_w[j] = (half_spread[q] + 0.5 * ticks[e]) / max(greeks[2, q], 1e-12)
                    j += 1
        fit_bounds[e + 1] = j
        if j > start:
            median = np.median(fit_sqrt_w[start:j])
            for p in range(start, j):
                fit_sqrt_w[p] = median / fit_sqrt_w[p]
    atm = np.full((3, k), math.nan)
    for e in range(k):
        forward = forwards[e]
        lo = bounds[e]
        hi = bounds[e + 1]
        best = lo
        for i in range(lo + 1, hi):
            if abs(strike[i] - forward) < abs(strike[best] - forward):
                best = i
        atm[0, e] = strike[best]
        if ((flags[best] | flags[n + best]) & IV_UNFIT) == 0:
            atm[1, e] = mid[best] + mid[n + best]
        atm[2, e] = _quoted_atm_iv(forward, fit_strike[fit_bounds[e] : fit_bounds[e + 1]],
                                   fit_vol[fit_bounds[e] : fit_bounds[e + 1]], strike[lo:hi])  # fmt: skip
    return surface, surface_flags, fit_strike, fit_vol, fit_sqrt_w, fit_bounds, atm


@jit
def _quoted_atm_iv(forward: float, fit_k: Float64Array, fit_v: Float64Array, strike: Float64Array) -> float:
    """`expiry.quoted_atm_iv`: linear in strike between the fit points either side of the forward
    when they are adjacent listed strikes (or the fit point at the forward); NaN otherwise."""
    n_below = np.searchsorted(fit_k, forward, side="right")  # fit points <= forward
    first_above = np.searchsorted(fit_k, forward, side="left")  # first fit point >= forward
    if n_below == 0 or first_above == fit_k.size:
        return math.nan
    k_lo = fit_k[n_below - 1]
    k_hi = fit_k[first_above]
    if k_hi == k_lo:
        return float(fit_v[n_below - 1])
    if np.searchsorted(strike, k_hi, side="left") != np.searchsorted(strike, k_lo, side="right"):
        return math.nan  # a listed strike between them has no clean quote
    w = (forward - k_lo) / (k_hi - k_lo)
    return float((1.0 - w) * fit_v[n_below - 1] + w * fit_v[first_above])
