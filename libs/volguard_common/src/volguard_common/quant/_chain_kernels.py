"""Compiled per-expiry passes behind :func:`parity.forwards_from_parity` and
:func:`stats.open_interest_by_expiry`.

Several expiries travel as one set of concatenated columns with segment bounds (expiry e owns rows
``bounds[e]:bounds[e + 1]``), so a whole chain set costs one call instead of a dozen small numpy
operations per expiry. The public single-expiry functions (``parity.forward_from_parity``,
``stats.max_pain``) are the references the tests hold these to, segment by segment.
"""

from __future__ import annotations

import math

import numpy as np

from volguard_common.quant._jit import jit
from volguard_common.quant._types import BoolArray, Float64Array, Int64Array

__all__ = ["OI_FIELDS", "PARITY_FIELDS", "open_interest_segments", "parity_segments"]


# Columns of the parity_segments result, one row per segment.
PARITY_FIELDS = ("forward", "score", "n_used", "n_rejected", "dispersion")
# Columns of the open_interest_segments result, one row per segment.
OI_FIELDS = ("call_oi", "put_oi", "call_volume", "put_volume", "max_pain", "call_wall", "put_wall", "pin_oi")


@jit
def parity_segments(
    strike: Float64Array,
    call_mid: Float64Array,
    put_mid: Float64Array,
    usable: BoolArray,
    bounds: Int64Array,
    discount: Float64Array,
    n_strikes: int,
    mad_cut: float,
    mad_to_sigma: float,
    scale_floor: float,
    dispersion_half_score: float,
    strikes_for_full_score: int,
) -> Float64Array:
    """Per segment: (forward, score, n_used, n_rejected, dispersion), NaN forward where no row is
    usable. Same steps as parity.forward_from_parity: the n_strikes usable rows with the smallest
    |C - P| (stable order), a median/MAD cut, the mean of the rest."""
    n_segments = bounds.size - 1
    out = np.full((n_segments, 5), np.nan)
    for e in range(n_segments):
        lo, hi = bounds[e], bounds[e + 1]
        m = 0
        for i in range(lo, hi):
            if usable[i]:
                m += 1
        if m == 0:
            continue
        gap = np.empty(m)
        k = np.empty(m)
        j = 0
        for i in range(lo, hi):
            if usable[i]:
                gap[j] = call_mid[i] - put_mid[i]
                k[j] = strike[i]
                j += 1
        nearest = np.argsort(np.abs(gap), kind="mergesort")[:n_strikes]
        candidates = k[nearest] + gap[nearest] / discount[e]
        centre = np.median(candidates)
        mad = np.median(np.abs(candidates - centre))
        scale = max(mad_to_sigma * mad, scale_floor * abs(centre))
        kept = candidates[np.abs(candidates - centre) <= mad_cut * scale]
        n_used = kept.size
        forward = np.mean(kept)
        dispersion = 0.0
        if n_used > 1:
            square = 0.0
            for value in kept:
                square += (value - forward) ** 2
            dispersion = math.sqrt(square / (n_used - 1))
        score = (
            (n_used / candidates.size)
            * min(1.0, n_used / strikes_for_full_score)
            / (1.0 + dispersion / abs(forward) / dispersion_half_score)
        )
        out[e, 0] = forward
        out[e, 1] = score
        out[e, 2] = n_used
        out[e, 3] = candidates.size - n_used
        out[e, 4] = dispersion
    return out


@jit
def open_interest_segments(
    strike: Float64Array,
    call_oi: Float64Array,
    put_oi: Float64Array,
    call_volume: Float64Array,
    put_volume: Float64Array,
    bounds: Int64Array,
    pin_centre: Float64Array,
    pin_half_width: Float64Array,
) -> Float64Array:
    """Per segment (strikes strictly increasing inside it): total call and put OI and volume, max
    pain (prefix sums around the middle strike, as stats.max_pain; NaN without OI), the first strike
    with the largest call and put OI (NaN where that side has none) and the OI of the strikes with
    |strike - pin_centre| <= pin_half_width."""
    n_segments = bounds.size - 1
    out = np.full((n_segments, 8), np.nan)
    for e in range(n_segments):
        lo, hi = bounds[e], bounds[e + 1]
        call_total = put_total = call_traded = put_traded = pin = 0.0
        call_best = put_best = -1.0
        call_wall = put_wall = np.nan
        for i in range(lo, hi):
            call_total += call_oi[i]
            put_total += put_oi[i]
            call_traded += call_volume[i]
            put_traded += put_volume[i]
            if call_oi[i] > call_best:
                call_best, call_wall = call_oi[i], strike[i]
            if put_oi[i] > put_best:
                put_best, put_wall = put_oi[i], strike[i]
            if abs(strike[i] - pin_centre[e]) <= pin_half_width[e]:
                pin += call_oi[i] + put_oi[i]
        out[e, 0] = call_total
        out[e, 1] = put_total
        out[e, 2] = call_traded
        out[e, 3] = put_traded
        out[e, 5] = call_wall if call_total > 0.0 else np.nan
        out[e, 6] = put_wall if put_total > 0.0 else np.nan
        out[e, 7] = pin
        if call_total + put_total > 0.0:
            out[e, 4] = _max_pain(strike[lo:hi], call_oi[lo:hi], put_oi[lo:hi])
    return out


@jit
def _max_pain(k: Float64Array, c: Float64Array, p: Float64Array) -> float:
    # stats.max_pain's prefix sums, in its order of operations, so ties resolve the same way.
    n = k.size
    centre = k[n // 2]
    pain = np.empty(n)
    running = 0.0
    weighted = 0.0
    for i in range(n):
        kc = k[i] - centre
        running += c[i]
        weighted += c[i] * kc
        pain[i] = kc * running - weighted
    running = 0.0
    weighted = 0.0
    for i in range(n - 1, -1, -1):
        kc = k[i] - centre
        running += p[i]
        weighted += p[i] * kc
        pain[i] = pain[i] + weighted - kc * running
    return float(k[np.argmin(pain)])
