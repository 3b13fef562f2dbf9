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

import binascii
from collections.abc import Mapping
from enum import IntFlag
from typing import Any

import numpy as np
import pybase64
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from volguard_common.events._base import check_equal_lengths
from volguard_common.quant._types import Float64Array, Int64Array


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

_FLOAT_INDEX = {name: i for i, name in enumerate(SURFACE_FLOAT_COLUMNS)}
_INT_INDEX = {name: i for i, name in enumerate(SURFACE_INT_COLUMNS)}
_WIRE_KEYS = frozenset({"rows", "f8", "i8"})
_OWNER = "StrikeSurface"


class SurfaceColumns:
    """Immutable, validated columns of one expiry's surface (rows are strikes, strictly increasing).

    `floats` is (len(SURFACE_FLOAT_COLUMNS), rows) float64, `ints` is (2, rows) int64 IvFlag bits.
    """

    __slots__ = ("_floats", "_ints")

    _floats: Float64Array
    _ints: Int64Array

    def __init__(self, floats: Float64Array, ints: Int64Array) -> None:
        floats = np.array(floats, dtype=np.float64, copy=True, order="C")
        ints = np.array(ints, dtype=np.int64, copy=True, order="C")
        floats.flags.writeable = False
        ints.flags.writeable = False
        self._init(floats, ints)

    @classmethod
    def adopt(cls, floats: Float64Array, ints: Int64Array) -> SurfaceColumns:
        """Take ownership of freshly built C-contiguous blocks without copying them (they are made
        read-only here; the caller must not keep writing to them)."""
        if floats.dtype != np.float64 or ints.dtype != np.int64:
            raise ValueError(f"{_OWNER}: blocks must be float64 and int64, got {floats.dtype}, {ints.dtype}")
        if not (floats.flags.c_contiguous and ints.flags.c_contiguous):
            raise ValueError(f"{_OWNER}: blocks must be C-contiguous")
        floats.flags.writeable = False
        ints.flags.writeable = False
        columns = cls.__new__(cls)
        columns._init(floats, ints)
        return columns

    def _init(self, floats: Float64Array, ints: Int64Array) -> None:
        object.__setattr__(self, "_floats", floats)
        object.__setattr__(self, "_ints", ints)
        self._check()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SurfaceColumns is immutable")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> SurfaceColumns:
        """From every column name to a list (None = unknown) or a numpy array (NaN = unknown)."""
        missing = [name for name in SURFACE_COLUMNS if name not in columns]
        extra = sorted(set(columns) - set(SURFACE_COLUMNS))
        if missing or extra:
            raise ValueError(f"{_OWNER} columns: missing {missing}, unknown {extra}")
        for name in SURFACE_COLUMNS:
            _check_container(name, columns[name])
        rows = check_equal_lengths(_OWNER, {name: columns[name] for name in SURFACE_COLUMNS})
        floats = np.empty((len(SURFACE_FLOAT_COLUMNS), rows), dtype=np.float64)
        for i, name in enumerate(SURFACE_FLOAT_COLUMNS):
            floats[i] = _float_column(name, columns[name])
        ints = np.empty((len(SURFACE_INT_COLUMNS), rows), dtype=np.int64)
        for i, name in enumerate(SURFACE_INT_COLUMNS):
            ints[i] = _int_column(name, columns[name])
        return cls.adopt(floats, ints)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> SurfaceColumns:
        if set(wire) != _WIRE_KEYS:
            raise ValueError(f"{_OWNER} columns: wire form needs exactly {sorted(_WIRE_KEYS)}")
        rows = wire["rows"]
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError(f"{_OWNER} columns: rows must be a non-negative integer, got {rows!r}")
        floats = _unpack("f8", wire["f8"], "<f8", (len(SURFACE_FLOAT_COLUMNS), rows))
        ints = _unpack("i8", wire["i8"], "<i8", (len(SURFACE_INT_COLUMNS), rows))
        # frombuffer views of immutable bytes are read-only already: no copy on the hot path.
        columns = cls.__new__(cls)
        columns._init(floats, ints)
        return columns

    def to_wire(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "f8": pybase64.b64encode(self._floats.astype("<f8", copy=False).tobytes()).decode(),
            "i8": pybase64.b64encode(self._ints.astype("<i8", copy=False).tobytes()).decode(),
        }

    # ---- access -------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self._floats.shape[1])

    def floats(self, name: str) -> Float64Array:
        """A read-only view of a float column (NaN = unknown)."""
        column: Float64Array = self._floats[_FLOAT_INDEX[name]]
        return column

    def ints(self, name: str) -> Int64Array:
        """A read-only view of a flag column."""
        column: Int64Array = self._ints[_INT_INDEX[name]]
        return column

    def as_lists(self) -> dict[str, list[Any]]:
        """Plain Python lists, None for unknown (for people and JSON-list fixtures)."""
        out: dict[str, list[Any]] = {}
        for name in SURFACE_FLOAT_COLUMNS:
            out[name] = [None if v != v else v for v in self.floats(name).tolist()]
        for name in SURFACE_INT_COLUMNS:
            out[name] = self.ints(name).tolist()
        return out

    # ---- validation ---------------------------------------------------------------------------
    def _check(self) -> None:
        floats, ints = self._floats, self._ints
        rows = self.rows
        if floats.shape != (len(SURFACE_FLOAT_COLUMNS), rows) or ints.shape != (
            len(SURFACE_INT_COLUMNS),
            rows,
        ):
            raise ValueError(f"{_OWNER}: column blocks have shapes {floats.shape} and {ints.shape}")
        if rows == 0:
            return
        strike = floats[0]
        if not ((strike > 0.0) & (strike < np.inf)).all():
            row = int(np.flatnonzero(~((strike > 0.0) & (strike < np.inf)))[0])
            raise ValueError(f"{_OWNER}: strike must be finite and > 0, row {row} is {strike[row]}")
        if rows > 1 and not (strike[1:] > strike[:-1]).all():
            i = int(np.flatnonzero(strike[1:] <= strike[:-1])[0]) + 1
            raise ValueError(f"{_OWNER}: strike must be strictly increasing at row {i}")
        vols = floats[1:3]
        # NaN (unknown) fails both comparisons and is allowed; a vol must otherwise be > 0 and finite.
        if ((vols <= 0.0) | np.isinf(vols)).any():
            name, row = _first((vols <= 0.0) | np.isinf(vols), SURFACE_VOL_COLUMNS)
            raise ValueError(f"{_OWNER}: {name} must be > 0 and finite (NaN for unknown), row {row}")
        greeks = floats[3:]
        if np.isinf(greeks).any():
            name, row = _first(np.isinf(greeks), SURFACE_GREEK_COLUMNS)
            raise ValueError(f"{_OWNER}: {name} is infinite at row {row}")
        if (ints & ~ALL_IV_FLAGS).any():
            name, row = _first((ints & ~ALL_IV_FLAGS) != 0, SURFACE_INT_COLUMNS)
            raise ValueError(f"{_OWNER}: {name} has bits outside IvFlag at row {row}")

    # ---- value semantics ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SurfaceColumns):
            return NotImplemented
        return np.array_equal(self._ints, other._ints) and np.array_equal(
            self._floats, other._floats, equal_nan=True
        )

    def __hash__(self) -> int:
        return hash((self._floats.tobytes(), self._ints.tobytes()))

    def __repr__(self) -> str:
        if self.rows == 0:
            return "SurfaceColumns(rows=0)"
        strike = self.floats("strike")
        return f"SurfaceColumns(rows={self.rows}, strikes {strike[0]:g}..{strike[-1]:g})"

    # ---- pydantic -----------------------------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.to_wire(), when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "object",
            "description": "Packed columns: f8 = base64 little-endian float64 block of "
            f"{list(SURFACE_FLOAT_COLUMNS)} (NaN = unknown); i8 = base64 little-endian int64 block of "
            f"{list(SURFACE_INT_COLUMNS)}; each block is rows values per column, columns in that order.",
            "properties": {
                "rows": {"type": "integer", "minimum": 0},
                "f8": {"type": "string", "contentEncoding": "base64"},
                "i8": {"type": "string", "contentEncoding": "base64"},
            },
            "required": sorted(_WIRE_KEYS),
        }

    @classmethod
    def _coerce(cls, value: Any) -> SurfaceColumns:
        if isinstance(value, SurfaceColumns):
            return value
        if isinstance(value, Mapping):
            return cls.from_wire(value) if "f8" in value else cls.from_columns(value)
        raise ValueError(f"{_OWNER} columns must be a mapping, got {type(value).__name__}")


def _check_container(name: str, column: Any) -> None:
    if isinstance(column, np.ndarray):
        if column.ndim != 1:
            raise ValueError(f"{_OWNER}: column {name} must be one-dimensional")
    elif not isinstance(column, list | tuple):
        raise ValueError(f"{_OWNER}: column {name} must be a list or an array, got {type(column).__name__}")


def _float_column(name: str, column: Any) -> Float64Array:
    if isinstance(column, np.ndarray):
        if column.dtype.kind not in "fiu":
            raise ValueError(f"{_OWNER}: column {name} must be numeric, got {column.dtype}")
        return column.astype(np.float64, copy=False)
    values = np.empty(len(column), dtype=np.float64)
    for i, value in enumerate(column):
        if value is None:
            values[i] = np.nan
        elif isinstance(value, float | int) and not isinstance(value, bool):
            if value != value:
                raise ValueError(f"{_OWNER}: {name} row {i} is NaN; an unknown value is None")
            values[i] = value
        else:
            raise ValueError(f"{_OWNER}: {name} row {i} must be a number or None, got {value!r}")
    if name == "strike" and np.isnan(values).any():
        raise ValueError(f"{_OWNER}: strike is missing at row {int(np.flatnonzero(np.isnan(values))[0])}")
    return values


def _int_column(name: str, column: Any) -> Int64Array:
    if isinstance(column, np.ndarray):
        if column.dtype.kind not in "iu":
            raise ValueError(f"{_OWNER}: column {name} must hold integers, got {column.dtype}")
        return column.astype(np.int64, copy=False)
    for i, value in enumerate(column):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{_OWNER}: {name} row {i} must be an integer, got {value!r}")
    return np.asarray(column, dtype=np.int64).reshape(len(column))


def _unpack(field: str, text: Any, dtype: str, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    if not isinstance(text, str):
        raise ValueError(f"{_OWNER} columns: {field} must be a base64 string")
    try:
        raw = pybase64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{_OWNER} columns: {field} is not valid base64 ({exc})") from None
    expected = shape[0] * shape[1] * 8
    if len(raw) != expected:
        raise ValueError(
            f"{_OWNER} columns: {field} holds {len(raw)} bytes; {shape[0]} columns x {shape[1]} rows "
            f"need {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _first(mask: np.ndarray[Any, Any], names: tuple[str, ...]) -> tuple[str, int]:
    column, row = np.argwhere(mask)[0]
    return names[int(column)], int(row)
