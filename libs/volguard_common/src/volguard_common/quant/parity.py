"""Forward from put-call parity: F = K + (C − P)/D on the strikes nearest the money.

Near the money calls and puts are both liquid and |C − P| is small, so spread noise in the mids moves
the implied forward least. Each usable strike gives one candidate forward; a median/MAD filter drops
strikes with stale or crossed quotes, and the forward is the mean of the rest.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import NamedTuple

import numpy as np

from volguard_common.quant._types import ArrayLike, BoolArray, Float64Array, Int64Array

__all__ = ["ParityQuality", "forward_from_parity", "forwards_from_parity", "forwards_from_parity_prepared"]

# 1.4826·MAD estimates the standard deviation of normal noise.
_MAD_TO_SIGMA = 1.4826
# Floor on the outlier scale, relative to the forward: with several identical candidates the MAD is
# 0 and any candidate a fraction of a point away would otherwise be thrown out.
_SCALE_FLOOR = 1e-6
# Relative dispersion at which the score halves: 5e-5 is ~1.2 points at NIFTY 24,000, about the
# half-spread of near-the-money quotes.
_DISPERSION_HALF_SCORE = 5e-5
# Fewer strikes than this cannot show their own dispersion; the score is scaled down accordingly.
_STRIKES_FOR_FULL_SCORE = 3


class ParityQuality(NamedTuple):
    """How much to trust a parity forward.

    - ``score`` in [0, 1]: inlier fraction × min(1, n_used/3) × 1/(1 + (dispersion/F)/5e-5).
    - ``n_used``: strikes averaged; ``n_rejected``: near-the-money strikes dropped as outliers.
    - ``dispersion``: standard deviation of the used candidate forwards, in index points (0 for one).

    A NamedTuple rather than a frozen dataclass: the analytics engine builds one per expiry every
    second, and a tuple is built in a fraction of the time a frozen dataclass's __init__ takes.
    """

    score: float
    n_used: int
    n_rejected: int
    dispersion: float


def forward_from_parity(
    strikes: ArrayLike,
    call_mid: ArrayLike,
    put_mid: ArrayLike,
    discount: float,
    n_strikes: int = 5,
    mad_cut: float = 3.5,
) -> tuple[float, ParityQuality]:
    """Forward implied by call and put mids of one expiry, and its quality.

    ``strikes``, ``call_mid`` and ``put_mid`` are aligned 1-D arrays; NaN or non-positive mids mean
    "no quote" and that strike is skipped. ``discount`` is the expiry's discount factor D.
    Uses the ``n_strikes`` usable strikes with the smallest |C − P| and drops candidates further
    than ``mad_cut`` robust standard deviations from their median.

    Raises ValueError when no strike has both a call and a put quote, or D is not in (0, ∞).
    """
    k = np.asarray(strikes, dtype=np.float64).ravel()
    c = np.asarray(call_mid, dtype=np.float64).ravel()
    p = np.asarray(put_mid, dtype=np.float64).ravel()
    if not (k.shape == c.shape == p.shape):
        raise ValueError(f"strikes, call_mid and put_mid differ in length: {k.size}, {c.size}, {p.size}")
    if not (np.isfinite(discount) and discount > 0.0):
        raise ValueError(f"discount factor must be positive and finite, got {discount!r}")
    if n_strikes < 1:
        raise ValueError(f"n_strikes must be at least 1, got {n_strikes}")

    usable = np.isfinite(k) & (k > 0.0) & np.isfinite(c) & np.isfinite(p) & (c > 0.0) & (p > 0.0)
    if not usable.any():
        raise ValueError("no strike has both a call and a put quote: cannot infer the forward from parity")
    k, c, p = k[usable], c[usable], p[usable]
    gap = c - p
    # Stable sort: equal |C − P| keeps strike order, so the result does not depend on sort internals.
    nearest = np.argsort(np.abs(gap), kind="stable")[:n_strikes]
    candidates = k[nearest] + gap[nearest] / discount

    centre = float(np.median(candidates))
    mad = float(np.median(np.abs(candidates - centre)))
    scale = max(_MAD_TO_SIGMA * mad, _SCALE_FLOOR * abs(centre))
    kept = candidates[np.abs(candidates - centre) <= mad_cut * scale]

    forward = float(np.mean(kept))
    n_used = int(kept.size)
    dispersion = float(np.std(kept, ddof=1)) if n_used > 1 else 0.0
    score = (
        (n_used / candidates.size)
        * min(1.0, n_used / _STRIKES_FOR_FULL_SCORE)
        / (1.0 + dispersion / abs(forward) / _DISPERSION_HALF_SCORE)
    )
    return forward, ParityQuality(
        score=score, n_used=n_used, n_rejected=int(candidates.size - n_used), dispersion=dispersion
    )


def forwards_from_parity(
    strikes: ArrayLike,
    call_mid: ArrayLike,
    put_mid: ArrayLike,
    bounds: ArrayLike,
    discounts: ArrayLike,
    n_strikes: int = 5,
    mad_cut: float = 3.5,
) -> list[tuple[float, ParityQuality] | None]:
    """:func:`forward_from_parity` for several expiries in one compiled pass.

    The columns of all expiries are concatenated; expiry e owns rows ``bounds[e]:bounds[e + 1]`` and
    has discount factor ``discounts[e]``. Returns one (forward, quality) per expiry, or None for an
    expiry where no strike has both a call and a put quote (where the single-expiry function raises).
    """
    k = np.ascontiguousarray(strikes, dtype=np.float64).ravel()
    c = np.ascontiguousarray(call_mid, dtype=np.float64).ravel()
    p = np.ascontiguousarray(put_mid, dtype=np.float64).ravel()
    edges = np.ascontiguousarray(bounds, dtype=np.int64).ravel()
    d = np.ascontiguousarray(discounts, dtype=np.float64).ravel()
    if not (k.shape == c.shape == p.shape):
        raise ValueError(f"strikes, call_mid and put_mid differ in length: {k.size}, {c.size}, {p.size}")
    if edges.size < 1 or edges[0] != 0 or edges[-1] != k.size or (np.diff(edges) < 0).any():
        raise ValueError(f"bounds must rise from 0 to {k.size}, got {edges.tolist()}")
    if d.size != edges.size - 1 or not (np.isfinite(d) & (d > 0.0)).all():
        raise ValueError("one positive, finite discount factor per expiry is required")
    if n_strikes < 1:
        raise ValueError(f"n_strikes must be at least 1, got {n_strikes}")
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(k) & (k > 0.0) & np.isfinite(c) & np.isfinite(p) & (c > 0.0) & (p > 0.0)
    return forwards_from_parity_prepared(k, c, p, usable, edges, d, n_strikes, mad_cut)


def forwards_from_parity_prepared(
    strikes: Float64Array,
    call_mid: Float64Array,
    put_mid: Float64Array,
    usable: BoolArray,
    bounds: Int64Array,
    discounts: Float64Array,
    n_strikes: int = 5,
    mad_cut: float = 3.5,
) -> list[tuple[float, ParityQuality] | None]:
    """:func:`forwards_from_parity` with no checks, for a caller that built the columns itself (the
    analytics engine, from validated chain snapshots): contiguous 1-d float64 columns of one length,
    `usable` marks the strikes with finite strike > 0 and both mids finite and > 0, `bounds` int64
    rising from 0 to the length, one finite discount > 0 per expiry, n_strikes >= 1. Anything else is
    undefined behaviour here; `forwards_from_parity` is the entry that says what is wrong."""
    rows = _kernels().parity_segments(
        strikes, call_mid, put_mid, usable, bounds, discounts, n_strikes, mad_cut, _MAD_TO_SIGMA,
        _SCALE_FLOOR, _DISPERSION_HALF_SCORE, _STRIKES_FOR_FULL_SCORE,
    )  # fmt: skip
    # A NaN forward marks an expiry without a usable strike; the counts travel as floats in the block.
    return [
        None
        if forward != forward
        else (forward, ParityQuality(score, int(n_used), int(n_rejected), dispersion))
        for forward, score, n_used, n_rejected, dispersion in rows.tolist()
    ]


@functools.cache
def _kernels() -> ModuleType:
    # Imported on first use so that importing this module neither imports numba nor compiles; cached,
    # as an import statement costs a lookup on every call of a function run each second.
    from volguard_common.quant import _chain_kernels

    return _chain_kernels
