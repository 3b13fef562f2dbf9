"""The envelope every event carries, the ids it is keyed by, and the field types shared by the catalogue.

Boundary rules, enforced once here for every event (DESIGN §2):
- frozen, `extra="forbid"`, strict types: `"1"` is not an int, `True` is not a quantity, `1.5` is not
  a `Decimal`, a naive datetime is not a time;
- NaN and ±infinity are rejected in every float and `Decimal`, including those inside lists and dicts
  (`allow_inf_nan=False` applies to the whole model, so a new field cannot forget it);
- every datetime is timezone-aware and normalised to IST, so two services never disagree about which
  trading day an event belongs to.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

IST = ZoneInfo("Asia/Kolkata")

# ---------------------------------------------------------------------------------------------------
# UUIDv7 event ids (RFC 9562 §5.7), monotonic within a process.
#
# Layout: 48-bit unix milliseconds | version 7 | 42-bit counter (12 bits rand_a + top 30 bits of
# rand_b) | 32 random bits. The counter starts at a random value with its top bit clear on every new
# millisecond and is incremented for each further id in the same millisecond (RFC 9562 method 1), so
# ids sort by creation order even at millions per second. If the wall clock steps backwards we keep
# the last millisecond rather than issue an id that sorts before one already issued.
# ---------------------------------------------------------------------------------------------------

_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_TAIL_BITS = 32
_id_lock = threading.Lock()
# Indirection so a test can step the wall clock backwards.
_wall_ns: Callable[[], int] = time.time_ns
_last_ms = -1
_last_counter = 0


def _fresh_counter() -> int:
    # Top bit clear leaves at least 2**41 increments before the counter could overflow in one ms.
    return int.from_bytes(os.urandom(6), "big") & (_COUNTER_MAX >> 1)


def new_event_id() -> str:
    """A new time-ordered UUIDv7 string; strictly increasing within this process."""
    global _last_ms, _last_counter
    with _id_lock:
        now_ms = _wall_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _last_counter = _fresh_counter()
        else:
            _last_counter += 1
            if _last_counter > _COUNTER_MAX:
                # 2**41 ids in one millisecond cannot happen in practice; borrow the next ms to stay ordered.
                _last_ms += 1
                _last_counter = _fresh_counter()
        ms, counter = _last_ms, _last_counter
    tail = int.from_bytes(os.urandom(4), "big")
    rand_a = counter >> 30  # 12 bits
    rand_b = ((counter & ((1 << 30) - 1)) << _TAIL_BITS) | tail  # 62 bits
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def event_id_time(event_id: str) -> datetime:
    """The creation time (millisecond precision, IST) encoded in a UUIDv7 event id."""
    parsed = uuid.UUID(event_id)
    if parsed.version != 7:
        raise ValueError(f"{event_id!r} is not a UUIDv7")
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, tz=IST)


def _now_ist() -> datetime:
    return datetime.now(IST)


def _own_event_id(validated: dict[str, Any]) -> str:
    # Only called when event_id validated; a bad event_id is already reported as its own error.
    event_id: str = validated["event_id"]
    return event_id


def _to_ist(value: datetime) -> datetime:
    return value.astimezone(IST)


# ---------------------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------------------

UUID7_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

EventId = Annotated[str, Field(pattern=UUID7_PATTERN)]
# Tz-aware, normalised to IST. Naive datetimes fail: an exchange time without a zone is a guess.
IstDatetime = Annotated[AwareDatetime, AfterValidator(_to_ist)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=4000)]
InstrumentKey = Annotated[str, Field(min_length=1, max_length=64)]
# An identifier chosen by the producer (intent, basket, trade, fill, broker order id).
Identifier = Annotated[str, Field(min_length=1, max_length=64)]
# Quotes and marks: a traded option price is never zero; "no quote" is None, not 0.
Price = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
UnitInterval = Annotated[float, Field(ge=0, le=1)]
Percent0to100 = Annotated[float, Field(ge=0, le=100)]
# Quantities are units (lots × lot size) except where a name says lots.
Quantity = Annotated[int, Field(ge=0)]
PositiveQuantity = Annotated[int, Field(gt=0)]
LotSize = Annotated[int, Field(gt=0, le=100_000)]
# Rupees at the ledger: Decimal, serialised as a JSON string so no float ever rounds a rupee.
Money = Decimal
NonNegativeMoney = Annotated[Decimal, Field(ge=0)]
PositiveMoney = Annotated[Decimal, Field(gt=0)]
Underlying = Annotated[str, Field(min_length=1, max_length=32)]


class OptionType(StrEnum):
    CE = "CE"
    PE = "PE"


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Bucket(StrEnum):
    """Capital buckets (DESIGN: weekly 40 %, monthly 50 %, intraday 10 %)."""

    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    INTRADAY = "INTRADAY"


class Part(BaseModel):
    """A value object nested inside an event: same boundary rules, no envelope."""

    # Written out in each base class so the pydantic mypy plugin sees `frozen` and flags assignments.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class Greeks(Part):
    """Net position Greeks in rupees: delta and gamma per index point, vega per vol point (1 %),
    theta per calendar day. Risk limits (vega 1000, delta 200, gamma 500) are in these units."""

    delta: float
    gamma: float
    vega: float
    theta: float


def check_equal_lengths(owner: str, columns: dict[str, Sequence[Any]], *, min_rows: int = 0) -> int:
    """Raise naming the first column whose length differs from the first one; return the row count."""
    names = iter(columns)
    first = next(names)
    rows = len(columns[first])
    if rows < min_rows:
        raise ValueError(f"{owner}: needs at least {min_rows} row(s), {first} has {rows}")
    for name in names:
        if len(columns[name]) != rows:
            raise ValueError(
                f"{owner}: column {name!r} has {len(columns[name])} rows but {first!r} has {rows}"
            )
    return rows


class EventBase(BaseModel):
    """Envelope fields shared by every event (DESIGN §2).

    Producers fill only `ts_event`, `source` and the payload: `event_id` and `ts_init` default to a
    fresh UUIDv7 and the wall clock, and `correlation_id` defaults to the event's own id (a new chain of
    causation). A consequence of another event passes `correlation_id=cause.correlation_id`.

    Schema versions: `SCHEMA_VERSION` is what this code writes, `SUPPORTED_SCHEMA_VERSIONS` what it
    reads. A payload from a newer producer is rejected with an error that says so (first in the error
    list, as schema_version is the second field), so the DLQ entry explains itself. When a type moves
    to version 2, its v1 shape is upgraded in that class and 1 stays in its supported set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    SCHEMA_VERSION: ClassVar[int] = 1
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})
    # The stream this event type travels on (volguard_common.streams); set by every concrete event.
    STREAM: ClassVar[str]

    event_id: EventId = Field(default_factory=new_event_id)
    schema_version: int = Field(default=1, ge=1)
    ts_event: IstDatetime
    ts_init: IstDatetime = Field(default_factory=_now_ist)
    source: Annotated[str, Field(min_length=1, max_length=128)]
    # default_factory receives the already-validated fields: defaults to this event's own id.
    correlation_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(default_factory=_own_event_id)

    @field_validator("schema_version")
    @classmethod
    def _known_schema_version(cls, version: int) -> int:
        # A field validator, not a model before-validator: the latter would hand the other fields to
        # strict validation as Python objects and break JSON parsing of dates, enums and decimals.
        if version not in cls.SUPPORTED_SCHEMA_VERSIONS:
            supported = sorted(cls.SUPPORTED_SCHEMA_VERSIONS)
            if version > supported[-1]:
                raise ValueError(
                    f"{cls.__name__} schema_version {version} is newer than this consumer understands "
                    f"(supports {supported}); upgrade volguard_common"
                )
            raise ValueError(f"{cls.__name__} schema_version {version} unsupported (supports {supported})")
        return version
