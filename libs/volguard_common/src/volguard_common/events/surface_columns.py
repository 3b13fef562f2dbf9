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
from typing import Self, TypeVar

import numpy as np

from volguard_common.events._packed import PackedColumns, first_bad
from volguard_common.quant._types import Float64Array, Int64Array

_Block = TypeVar("_Block", Float64Array, Int64Array)
# The slots' own setters: `adopt_segments` fills several instances, and these skip the attribute
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
    def adopt_segments(cls, floats: Float64Array, ints: Int64Array, bounds: Sequence[int]) -> list[Self]:
        """`adopt` of rows bounds[e]:bounds[e + 1] of one pair of blocks, for every e: the surfaces of
        several expiries built side by side (the analytics engine builds a chain set's at once).

        Shapes and rules are checked once over the whole blocks, strikes rising within each segment,
        and each segment gets a contiguous copy of its rows (never a view of the caller's blocks).
        Only when that check fails is each segment adopted on its own, which names the first bad
        segment's shape or row exactly as `adopt` does."""
        if floats.dtype != np.float64 or ints.dtype != np.int64:
            raise ValueError(
                f"{cls.OWNER}: blocks must be float64 and int64, got {floats.dtype}, {ints.dtype}"
            )
        rows = floats.shape[1]
        edges = list(bounds)
        spans = list(itertools.pairwise(edges))
        if not edges or edges[0] != 0 or edges[-1] != rows or any(hi < lo for lo, hi in spans):
            raise ValueError(f"{cls.OWNER}: segment bounds must rise from 0 to {rows}, got {edges}")
        widths = {hi - lo for lo, hi in spans}
        # Blocks of this type's shape give every segment its shape, so `_check_shapes` per segment
        # could only fail on too few rows, which is checked here instead. Bounds other than plain
        # ints (an int64 array's elements, say) take the path below, which slices with them as ever.
        if (
            floats.shape != (len(cls.FLOAT_COLUMNS), rows)
            or ints.shape != (len(cls.INT_COLUMNS), rows)
            or set(map(type, edges)) != {int}
            or min(widths, default=cls.MIN_ROWS) < cls.MIN_ROWS
            or not cls._segments_plainly_valid(floats, ints, spans)
        ):
            cuts = [(floats[:, lo:hi].copy(), ints[:, lo:hi].copy()) for lo, hi in spans]
            return [cls.adopt(f, i) for f, i in cuts]
        if len(widths) == 1:
            width = widths.pop()
            float_cuts = _equal_segments(floats, len(spans), width)
            int_cuts = _equal_segments(ints, len(spans), width)
        else:
            float_cuts = [floats[:, lo:hi].copy() for lo, hi in spans]
            int_cuts = [ints[:, lo:hi].copy() for lo, hi in spans]
            for cut in (*float_cuts, *int_cuts):
                cut.flags.writeable = False
        out = []
        for f, i in zip(float_cuts, int_cuts, strict=True):
            columns = cls.__new__(cls)
            _SET_FLOATS(columns, f)
            _SET_INTS(columns, i)
            _SET_KEYS(columns, ())
            out.append(columns)
        return out

    @classmethod
    def _plainly_valid(cls, floats: Float64Array, ints: Int64Array) -> bool:
        """True only if strikes, IVs, Greeks and flags all pass."""
        return cls._segments_plainly_valid(floats, ints, [(0, floats.shape[1])])

    @staticmethod
    def _segments_plainly_valid(floats: Float64Array, ints: Int64Array, spans: list[tuple[int, int]]) -> bool:
        """`_plainly_valid` of every segment rows lo:hi of `spans` at once (blocks of this type's shape,
        spans covering their rows in order)."""
        if floats.shape[1] == 0:
            return True
        # No ±inf anywhere; then fmin, which skips NaN (unknown, allowed) and gives NaN only when every
        # value is unknown, finds any strike or vol <= 0. Counting is the cheapest whole-block pass
        # numpy has, so it stands in for the all()/any() of the rules.
        if np.count_nonzero(np.isinf(floats)) or np.fmin.reduce(floats[:3], axis=None) <= 0.0:
            return False
        # Strikes must rise strictly within each segment, which also rules out a NaN strike (it
        # compares False) wherever a segment has a neighbour for it. A segment's first strike need
        # not exceed the previous segment's last, and a one-row segment's strike is checked on its own:
        # a handful of segments against hundreds of rows.
        strike = floats[0]
        rising = strike[1:] > strike[:-1]
        for lo, hi in spans:
            if hi - lo == 1 and not strike[lo] > 0.0:
                return False
            if 0 < lo < hi:
                rising[lo - 1] = True
        # The union of every flag bit in one reduction: no row has a bit outside IvFlag iff the union
        # has none (a negative value has them all).
        return np.count_nonzero(rising) == rising.size and not (
            np.bitwise_or.reduce(ints, axis=None) & ~ALL_IV_FLAGS
        )

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


def _equal_segments(block: _Block, count: int, width: int) -> list[_Block]:
    """`count` segments of `width` columns each, side by side in `block`, as read-only C-contiguous
    arrays of their own rows (what `to_wire` and `__hash__` read as raw bytes)."""
    # One transposing copy lays every segment out whole, one after another; each is a view of it,
    # read-only as the copy is.
    stacked = block.reshape(block.shape[0], count, width).swapaxes(0, 1).copy()
    stacked.flags.writeable = False
    return list(stacked)
