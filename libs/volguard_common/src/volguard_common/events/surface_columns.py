"""The per-strike columns of a StrikeSurface: validated once, immutable, packed on the wire.

One expiry's surface is 13 columns of a few hundred strikes, six expiries per VolSnapshot, once a
second. Element-by-element pydantic validation of those lists (and the list building before it) cost
more than computing the numbers, so the surface travels like the chain it came from (`events.chain`):
one little-endian float64 block (strike, IVs, Greeks) and one int64 block (IvFlag bits), base64 in the
JSON envelope, checked with a few whole-block numpy operations.

Unknown values: an IV or a Greek analytics could not compute is NaN in the arrays and on the wire
(it was None in the list form this replaces). NaN is accepted nowhere else (never in `strike`) and
±inf is rejected everywhere, so "a number is finite" still holds at the boundary.

Accepted inputs: a `SurfaceColumns`; the wire form `{"rows", "f8", "i8"}`; or a mapping of every
column name to a list (None for unknown) or a numpy array (NaN for unknown).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from enum import IntFlag
from typing import Self

import numpy as np

from volguard_common.events._packed import PackedColumns, first_bad
from volguard_common.quant._types import Float64Array, Int64Array

# The slots' own setters: `adopt_stacked` fills several instances, and these skip the attribute
# lookup that object.__setattr__ repeats on every call.
_SET_FLOATS = vars(PackedColumns)["_floats"].__set__
_SET_INTS = vars(PackedColumns)["_ints"].__set__
_SET_KEYS = vars(PackedColumns)["_keys"].__set__


class IvFlag(IntFlag):
    """Per-strike, per-side outcome of the implied-vol solve (`call_flags`, `put_flags` of a surface)."""

    NO_QUOTE = 1  # no usable price on this side
    BELOW_INTRINSIC = 2  # price below the no-arbitrage lower bound
    ABOVE_UPPER_BOUND = 4  # price above the no-arbitrage upper bound
    SOLVER_FAILED = 8
    WIDE_SPREAD = 16  # solved from a mid with a wide spread
    CROSSED = 32  # solved despite a crossed quote
    EXCLUDED_FROM_FIT = 64  # solved but left out of the SABR fit


ALL_IV_FLAGS = int(
    IvFlag.NO_QUOTE
    | IvFlag.BELOW_INTRINSIC
    | IvFlag.ABOVE_UPPER_BOUND
    | IvFlag.SOLVER_FAILED
    | IvFlag.WIDE_SPREAD
    | IvFlag.CROSSED
    | IvFlag.EXCLUDED_FROM_FIT
)

# Column names, in block order. Kept as data so validation, numpy export and builders cannot drift.
SURFACE_VOL_COLUMNS = ("iv_call", "iv_put")
SURFACE_GREEK_COLUMNS = tuple(
    f"{side}_{greek}" for side in ("call", "put") for greek in ("delta", "gamma", "vega", "theta")
)
SURFACE_FLOAT_COLUMNS = ("strike", *SURFACE_VOL_COLUMNS, *SURFACE_GREEK_COLUMNS)
SURFACE_INT_COLUMNS = ("call_flags", "put_flags")
SURFACE_COLUMNS = (
    "strike",
    *SURFACE_VOL_COLUMNS,
    *SURFACE_INT_COLUMNS,
    *SURFACE_GREEK_COLUMNS,
)


class SurfaceColumns(PackedColumns):
    """Immutable, validated columns of one expiry's surface (rows are strikes, strictly increasing).

    The float block is strike, IVs and Greeks (NaN = unknown); the int block the IvFlag bits per side.
    """

    OWNER = "StrikeSurface"
    FLOAT_COLUMNS = SURFACE_FLOAT_COLUMNS
    INT_COLUMNS = SURFACE_INT_COLUMNS
    MISSING = "an unknown value"
    __slots__ = ()

    def _check(self) -> None:
        # Analytics builds six of these a second and a consumer reads them all, with NaN routinely in
        # the wings: a few whole-block reductions decide that every rule holds, and only when one of
        # them fails are the rules walked in order to name the first bad row (same messages as ever).
        if self.rows == 0:
            return
        if not self._plainly_valid(self._floats, self._ints):
            self._locate_broken_rule()

    @classmethod
    def adopt_stacked(cls, floats: Float64Array, ints: Int64Array, bounds: Sequence[int]) -> list[Self]:
        """`adopt` of several surfaces laid out one after another in two flat blocks (the analytics
        engine builds a chain set's expiries at once): surface e has rows bounds[e]:bounds[e + 1], w of
        them, and its blocks are floats[F lo : F hi] as (F, w) and ints[I lo : I hi] as (I, w), with F
        and I this type's float and int column counts.

        Like `adopt`, the blocks are taken over without copying and made read-only (the caller must
        not keep writing to them); each surface's blocks are C-contiguous views of them. The rules are
        checked once over the whole blocks; only when that check fails is each segment adopted on its
        own, from a copy, which names the first bad segment's shape or row exactly as `adopt` does."""
        if floats.dtype != np.float64 or ints.dtype != np.int64:
            raise ValueError(
                f"{cls.OWNER}: blocks must be float64 and int64, got {floats.dtype}, {ints.dtype}"
            )
        n_floats, n_ints = len(cls.FLOAT_COLUMNS), len(cls.INT_COLUMNS)
        edges = list(bounds)
        spans = list(itertools.pairwise(edges))
        if not edges or edges[0] != 0 or any(hi < lo for lo, hi in spans):
            raise ValueError(f"{cls.OWNER}: segment bounds must rise from 0, got {edges}")
        rows = edges[-1]
        if not (
            floats.ndim == ints.ndim == 1
            and floats.size == n_floats * rows
            and ints.size == n_ints * rows
            and floats.flags.c_contiguous
            and ints.flags.c_contiguous
        ):
            raise ValueError(
                f"{cls.OWNER}: stacked blocks must be flat and C-contiguous, {n_floats} and {n_ints} values "
                f"per row for {rows} rows, got shapes {floats.shape} and {ints.shape}"
            )
        floats.flags.writeable = False
        ints.flags.writeable = False
        widths = {hi - lo for lo, hi in spans}
        if len(widths) == 1:  # the usual chain set: one reshape each cuts every segment
            width = next(iter(widths))
            float_cuts = list(floats.reshape(len(spans), n_floats, width))
            int_cuts = list(ints.reshape(len(spans), n_ints, width))
        else:
            float_cuts = [
                floats[n_floats * lo : n_floats * hi].reshape(n_floats, hi - lo) for lo, hi in spans
            ]
            int_cuts = [ints[n_ints * lo : n_ints * hi].reshape(n_ints, hi - lo) for lo, hi in spans]
        if min(widths, default=cls.MIN_ROWS) < cls.MIN_ROWS or not cls._stacked_plainly_valid(
            floats, ints, float_cuts, int_cuts, widths
        ):
            return [cls.adopt(f.copy(), i.copy()) for f, i in zip(float_cuts, int_cuts, strict=True)]
        out = []
        for f, i in zip(float_cuts, int_cuts, strict=True):
            columns = cls.__new__(cls)
            _SET_FLOATS(columns, f)
            _SET_INTS(columns, i)
            _SET_KEYS(columns, ())
            out.append(columns)
        return out

    @staticmethod
    def _plainly_valid(floats: Float64Array, ints: Int64Array) -> bool:
        """True only if strikes, IVs, Greeks and flags of one (11, rows) and (2, rows) pair all pass."""
        if floats.shape[1] == 0:
            return True
        return _no_inf_no_nonpositive(floats, floats[:3]) and _rising(floats[0]) and _known_flags(ints)

    @classmethod
    def _stacked_plainly_valid(
        cls,
        floats: Float64Array,
        ints: Int64Array,
        float_cuts: list[Float64Array],
        int_cuts: list[Int64Array],
        widths: set[int],
    ) -> bool:
        """`_plainly_valid` of every segment of `adopt_stacked`'s blocks. Segments of one width (the
        usual chain set) are checked together, as one (segments, 11, width) block; others one by one."""
        if len(widths) != 1:
            return all(cls._plainly_valid(f, i) for f, i in zip(float_cuts, int_cuts, strict=True))
        width = next(iter(widths))
        if width == 0:
            return True
        block = floats.reshape(len(float_cuts), len(cls.FLOAT_COLUMNS), width)
        return _no_inf_no_nonpositive(floats, block[:, :3]) and _rising(block[:, 0]) and _known_flags(ints)

    def _locate_broken_rule(self) -> None:
        """The rules in order, on whole blocks, raising for the first broken one with its row."""
        floats, ints = self._floats, self._ints
        strike = floats[0]
        if not ((strike > 0.0) & (strike < np.inf)).all():
            row = int(np.flatnonzero(~((strike > 0.0) & (strike < np.inf)))[0])
            raise ValueError(f"StrikeSurface: strike must be finite and > 0, row {row} is {strike[row]}")
        if self.rows > 1 and not (strike[1:] > strike[:-1]).all():
            i = int(np.flatnonzero(strike[1:] <= strike[:-1])[0]) + 1
            raise ValueError(f"StrikeSurface: strike must be strictly increasing at row {i}")
        vols = floats[1:3]
        # NaN (unknown) fails both comparisons and is allowed; a vol must otherwise be > 0 and finite.
        if ((vols <= 0.0) | np.isinf(vols)).any():
            name, row = first_bad((vols <= 0.0) | np.isinf(vols), SURFACE_VOL_COLUMNS)
            raise ValueError(f"StrikeSurface: {name} must be > 0 and finite (NaN for unknown), row {row}")
        greeks = floats[3:]
        if np.isinf(greeks).any():
            name, row = first_bad(np.isinf(greeks), SURFACE_GREEK_COLUMNS)
            raise ValueError(f"StrikeSurface: {name} is infinite at row {row}")
        if (ints & ~ALL_IV_FLAGS).any():
            name, row = first_bad((ints & ~ALL_IV_FLAGS) != 0, SURFACE_INT_COLUMNS)
            raise ValueError(f"StrikeSurface: {name} has bits outside IvFlag at row {row}")


def _no_inf_no_nonpositive(floats: Float64Array, positive: Float64Array) -> bool:
    """No ±inf anywhere in `floats`, and no value <= 0 in `positive` (the strike and IV rows), NaN
    (unknown) allowed: fmin skips NaN and gives NaN only when every value is unknown. Counting is the
    cheapest whole-block pass numpy has, so it stands in for the any() of the rule."""
    return not (np.count_nonzero(np.isinf(floats)) or np.fmin.reduce(positive, axis=None) <= 0.0)


def _rising(strike: Float64Array) -> bool:
    """Strikes rise strictly along the last axis (one row per segment), which also rules out a NaN
    strike wherever it has a neighbour; a lone strike must be > 0 on its own."""
    if strike.shape[-1] == 1:
        return bool(np.count_nonzero(strike > 0.0) == strike.size)
    rising = strike[..., 1:] > strike[..., :-1]
    return bool(np.count_nonzero(rising) == rising.size)


def _known_flags(ints: Int64Array) -> bool:
    """No flag bit outside IvFlag: the union of every value in one reduction has none (a negative
    value has them all)."""
    return not (int(np.bitwise_or.reduce(ints, axis=None)) & ~ALL_IV_FLAGS)
