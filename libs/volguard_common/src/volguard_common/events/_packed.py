"""Packed numeric columns for events that carry arrays per strike (chain quotes, the vol surface).

Validated element by element as JSON lists, a few thousand numbers cost more than the Redis hop that
carries them. So an event keeps them as two immutable blocks — float64 and int64, one row per column —
validated with a handful of whole-block numpy operations, and sends them as base64 little-endian
bytes: `{"rows", "f8", "i8", <string key columns>}`. A mapping of every column name to a list (None
for an unknown/missing value) or a numpy array (NaN for it) is accepted too, for producers and
hand-written fixtures. Subclasses name their columns and add the rules of their domain in `_check`.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import pybase64
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from volguard_common.events._base import check_equal_lengths
from volguard_common.quant._types import Float64Array, Int64Array

KEY_MAX_LENGTH = 64
# The wire is little-endian whatever the host; built once rather than parsed from "<f8" per event.
_WIRE_F8 = np.dtype("<f8")
_WIRE_I8 = np.dtype("<i8")


class PackedColumns:
    """Immutable, validated float64 and int64 column blocks, plus optional string columns."""

    # Set by each subclass.
    OWNER: ClassVar[str]
    FLOAT_COLUMNS: ClassVar[tuple[str, ...]]
    INT_COLUMNS: ClassVar[tuple[str, ...]]
    KEY_COLUMNS: ClassVar[tuple[str, ...]] = ()
    MIN_ROWS: ClassVar[int] = 0
    # What None in the list form (NaN in arrays) means for this kind of data, for error messages.
    MISSING: ClassVar[str] = "an unknown value"
    # Derived once per subclass.
    COLUMNS: ClassVar[tuple[str, ...]]
    _FLOAT_INDEX: ClassVar[dict[str, int]]
    _INT_INDEX: ClassVar[dict[str, int]]
    _WIRE_KEYS: ClassVar[frozenset[str]]

    __slots__ = ("_floats", "_ints", "_keys")

    _floats: Float64Array
    _ints: Int64Array
    _keys: tuple[tuple[str, ...], ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.COLUMNS = (*cls.FLOAT_COLUMNS, *cls.INT_COLUMNS, *cls.KEY_COLUMNS)
        cls._FLOAT_INDEX = {name: i for i, name in enumerate(cls.FLOAT_COLUMNS)}
        cls._INT_INDEX = {name: i for i, name in enumerate(cls.INT_COLUMNS)}
        cls._WIRE_KEYS = frozenset({"rows", "f8", "i8", *cls.KEY_COLUMNS})

    def __init__(self, floats: Float64Array, ints: Int64Array, keys: Sequence[Sequence[str]] = ()) -> None:
        floats = np.array(floats, dtype=np.float64, copy=True, order="C")
        ints = np.array(ints, dtype=np.int64, copy=True, order="C")
        floats.flags.writeable = False
        ints.flags.writeable = False
        self._init(floats, ints, tuple(tuple(k) for k in keys))

    @classmethod
    def adopt(cls, floats: Float64Array, ints: Int64Array, keys: Sequence[Sequence[str]] = ()) -> Self:
        """Take ownership of freshly built C-contiguous blocks without copying them (they are made
        read-only here; the caller must not keep writing to them)."""
        if floats.dtype != np.float64 or ints.dtype != np.int64:
            raise ValueError(
                f"{cls.OWNER}: blocks must be float64 and int64, got {floats.dtype}, {ints.dtype}"
            )
        if not (floats.flags.c_contiguous and ints.flags.c_contiguous):
            raise ValueError(f"{cls.OWNER}: blocks must be C-contiguous")
        floats.flags.writeable = False
        ints.flags.writeable = False
        columns = cls.__new__(cls)
        columns._init(floats, ints, tuple(tuple(k) for k in keys))
        return columns

    def _init(self, floats: Float64Array, ints: Int64Array, keys: tuple[tuple[str, ...], ...]) -> None:
        object.__setattr__(self, "_floats", floats)
        object.__setattr__(self, "_ints", ints)
        object.__setattr__(self, "_keys", keys)
        self._check_shapes()
        self._check()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> Self:
        """From every column name to a list (None = missing) or a numpy array (NaN = missing)."""
        missing = [name for name in cls.COLUMNS if name not in columns]
        extra = sorted(set(columns) - set(cls.COLUMNS))
        if missing or extra:
            raise ValueError(f"{cls.OWNER} columns: missing {missing}, unknown {extra}")
        for name in cls.COLUMNS:
            _check_container(cls.OWNER, name, columns[name])
        rows = check_equal_lengths(
            cls.OWNER, {name: columns[name] for name in cls.COLUMNS}, min_rows=cls.MIN_ROWS
        )
        floats = np.empty((len(cls.FLOAT_COLUMNS), rows), dtype=np.float64)
        for i, name in enumerate(cls.FLOAT_COLUMNS):
            floats[i] = cls._float_column(name, columns[name])
        ints = np.empty((len(cls.INT_COLUMNS), rows), dtype=np.int64)
        for i, name in enumerate(cls.INT_COLUMNS):
            ints[i] = cls._int_column(name, columns[name])
        return cls.adopt(floats, ints, [_keys(cls.OWNER, name, columns[name]) for name in cls.KEY_COLUMNS])

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        if set(wire) != cls._WIRE_KEYS:
            raise ValueError(f"{cls.OWNER} columns: wire form needs exactly {sorted(cls._WIRE_KEYS)}")
        rows = wire["rows"]
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < cls.MIN_ROWS:
            raise ValueError(f"{cls.OWNER} columns: rows must be an integer >= {cls.MIN_ROWS}, got {rows!r}")
        floats = _unpack(cls.OWNER, "f8", wire["f8"], _WIRE_F8, (len(cls.FLOAT_COLUMNS), rows))
        ints = _unpack(cls.OWNER, "i8", wire["i8"], _WIRE_I8, (len(cls.INT_COLUMNS), rows))
        # frombuffer views of immutable bytes are read-only already: no copy on the hot path.
        columns = cls.__new__(cls)
        columns._init(floats, ints, tuple(_keys(cls.OWNER, name, wire[name]) for name in cls.KEY_COLUMNS))
        return columns

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "rows": self.rows,
            # The blocks are C-contiguous (every constructor ensures it), so their buffer is exactly
            # the wire bytes: encoded straight to str, with no bytes copy in between.
            "f8": pybase64.b64encode_as_string(self._floats.astype(_WIRE_F8, copy=False).data),
            "i8": pybase64.b64encode_as_string(self._ints.astype(_WIRE_I8, copy=False).data),
        }
        for name, keys in zip(self.KEY_COLUMNS, self._keys, strict=True):
            wire[name] = list(keys)
        return wire

    # ---- access -------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self._floats.shape[1])

    @property
    def float_block(self) -> Float64Array:
        """The whole read-only float64 block, row i being FLOAT_COLUMNS[i]: for work over many events
        at once (one concatenation of blocks instead of one per column)."""
        return self._floats

    @property
    def int_block(self) -> Int64Array:
        """The whole read-only int64 block, row i being INT_COLUMNS[i]."""
        return self._ints

    def floats(self, name: str) -> Float64Array:
        """A read-only view of a float column (NaN = missing)."""
        column: Float64Array = self._floats[self._FLOAT_INDEX[name]]
        return column

    def ints(self, name: str) -> Int64Array:
        """A read-only view of an integer column."""
        column: Int64Array = self._ints[self._INT_INDEX[name]]
        return column

    def keys(self, name: str) -> tuple[str, ...]:
        return self._keys[self.KEY_COLUMNS.index(name)]

    def as_lists(self) -> dict[str, list[Any]]:
        """Plain Python lists, None for missing (for people and JSON-list fixtures)."""
        out: dict[str, list[Any]] = {}
        for name in self.FLOAT_COLUMNS:
            out[name] = [None if v != v else v for v in self.floats(name).tolist()]
        for name in self.INT_COLUMNS:
            out[name] = self.ints(name).tolist()
        for name, keys in zip(self.KEY_COLUMNS, self._keys, strict=True):
            out[name] = list(keys)
        return out

    # ---- validation ---------------------------------------------------------------------------
    def _check_shapes(self) -> None:
        floats, ints, rows = self._floats, self._ints, self.rows
        if floats.shape != (len(self.FLOAT_COLUMNS), rows) or ints.shape != (len(self.INT_COLUMNS), rows):
            raise ValueError(f"{self.OWNER}: column blocks have shapes {floats.shape} and {ints.shape}")
        if rows < self.MIN_ROWS:
            raise ValueError(f"{self.OWNER}: needs at least {self.MIN_ROWS} row(s), has {rows}")
        for name, keys in zip(self.KEY_COLUMNS, self._keys, strict=True):
            if len(keys) != rows:
                raise ValueError(
                    f"{self.OWNER}: column {name!r} has {len(keys)} rows but 'strike' has {rows}"
                )

    def _check(self) -> None:
        """The rules of the subclass's domain, on whole blocks; rows located only once known wrong."""
        raise NotImplementedError

    @classmethod
    def _float_column(cls, name: str, column: Any) -> Float64Array:
        if isinstance(column, np.ndarray):
            if column.dtype.kind not in "fiu":
                raise ValueError(f"{cls.OWNER}: column {name} must be numeric, got {column.dtype}")
            return column.astype(np.float64, copy=False)
        values = np.empty(len(column), dtype=np.float64)
        for i, value in enumerate(column):
            if value is None:
                values[i] = np.nan
            elif isinstance(value, float | int) and not isinstance(value, bool):
                if value != value:
                    raise ValueError(f"{cls.OWNER}: {name} row {i} is NaN; {cls.MISSING} is None")
                values[i] = value
            else:
                raise ValueError(f"{cls.OWNER}: {name} row {i} must be a number or None, got {value!r}")
        if name == "strike" and np.isnan(values).any():
            # Rows are strikes: a row without one is not a row.
            raise ValueError(
                f"{cls.OWNER}: strike is missing at row {int(np.flatnonzero(np.isnan(values))[0])}"
            )
        return values

    @classmethod
    def _int_column(cls, name: str, column: Any) -> Int64Array:
        if isinstance(column, np.ndarray):
            if column.dtype.kind not in "iu":
                raise ValueError(f"{cls.OWNER}: column {name} must hold integers, got {column.dtype}")
            return column.astype(np.int64, copy=False)
        for i, value in enumerate(column):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{cls.OWNER}: {name} row {i} must be an integer, got {value!r}")
        return np.asarray(column, dtype=np.int64).reshape(len(column))

    # ---- value semantics ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PackedColumns)
        return (
            self._keys == other._keys
            and np.array_equal(self._ints, other._ints)
            and np.array_equal(self._floats, other._floats, equal_nan=True)
        )

    def __hash__(self) -> int:
        return hash((self._floats.tobytes(), self._ints.tobytes(), self._keys))

    def __repr__(self) -> str:
        name = type(self).__name__
        if self.rows == 0:
            return f"{name}(rows=0)"
        first = self._floats[0]
        return f"{name}(rows={self.rows}, {self.FLOAT_COLUMNS[0]} {first[0]:g}..{first[-1]:g})"

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
        properties: dict[str, Any] = {
            "rows": {"type": "integer", "minimum": cls.MIN_ROWS},
            "f8": {"type": "string", "contentEncoding": "base64"},
            "i8": {"type": "string", "contentEncoding": "base64"},
        }
        for name in cls.KEY_COLUMNS:
            properties[name] = {"type": "array", "items": {"type": "string"}}
        return {
            "type": "object",
            "description": "Packed columns: f8 = base64 little-endian float64 block of "
            f"{list(cls.FLOAT_COLUMNS)} (NaN = {cls.MISSING}); i8 = base64 little-endian int64 block of "
            f"{list(cls.INT_COLUMNS)}; each block is rows values per column, columns in that order.",
            "properties": properties,
            "required": sorted(cls._WIRE_KEYS),
        }

    @classmethod
    def _coerce(cls, value: Any) -> Self:
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_wire(value) if "f8" in value else cls.from_columns(value)
        raise ValueError(f"{cls.OWNER} columns must be a mapping, got {type(value).__name__}")


def first_bad(mask: np.ndarray[Any, Any], names: Sequence[str]) -> tuple[str, int]:
    """The (column name, row) of the first True in a (columns, rows) mask."""
    column, row = np.argwhere(mask)[0]
    return names[int(column)], int(row)


def _check_container(owner: str, name: str, column: Any) -> None:
    if isinstance(column, np.ndarray):
        if column.ndim != 1:
            raise ValueError(f"{owner}: column {name} must be one-dimensional")
    elif not isinstance(column, list | tuple):
        raise ValueError(f"{owner}: column {name} must be a list or an array, got {type(column).__name__}")


def _keys(owner: str, name: str, keys: Any) -> tuple[str, ...]:
    if not isinstance(keys, list | tuple):
        raise ValueError(f"{owner}: {name} must be a list of strings")
    # C-level passes first (this runs for every event on the bus); the row is found only on failure.
    if keys and not _plainly_valid_keys(keys):
        for i, key in enumerate(keys):
            if not isinstance(key, str) or not 1 <= len(key) <= KEY_MAX_LENGTH:
                raise ValueError(f"{owner}: {name} row {i} must be a string of 1..{KEY_MAX_LENGTH} chars")
    return tuple(keys)


def _plainly_valid_keys(keys: list[Any] | tuple[Any, ...]) -> bool:
    """True only if every key is a str of 1..KEY_MAX_LENGTH characters (a fast, exact-type check)."""
    if set(map(type, keys)) != {str}:
        return False
    # Instrument keys come in a handful of lengths: bound the distinct lengths, not every key twice.
    lengths = set(map(len, keys))
    return min(lengths) >= 1 and max(lengths) <= KEY_MAX_LENGTH


def _unpack(
    owner: str, field: str, text: Any, dtype: np.dtype[Any], shape: tuple[int, int]
) -> np.ndarray[Any, Any]:
    if not isinstance(text, str):
        raise ValueError(f"{owner} columns: {field} must be a base64 string")
    try:
        raw = pybase64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{owner} columns: {field} is not valid base64 ({exc})") from None
    expected = shape[0] * shape[1] * 8
    if len(raw) != expected:
        raise ValueError(
            f"{owner} columns: {field} holds {len(raw)} bytes; {shape[0]} columns x {shape[1]} rows "
            f"need {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
