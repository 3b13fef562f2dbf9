"""Market data events: ticks, columnar option-chain snapshots, feed health (streams md.*)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field, model_validator

from volguard_common import streams
from volguard_common.events._base import (
    EventBase,
    InstrumentKey,
    IstDatetime,
    LotSize,
    Name,
    NonNegativeFloat,
    PositiveFloat,
    Price,
    Quantity,
    Text,
    Underlying,
)
from volguard_common.events.chain import (
    CHAIN_FLOAT_COLUMNS,
    CHAIN_INT_COLUMNS,
    ChainColumns,
    QuoteFlag,
)
from volguard_common.quant._types import Float64Array, Int64Array


class InstrumentKind(StrEnum):
    INDEX = "INDEX"
    VIX = "VIX"
    FUTURE = "FUTURE"
    OPTION = "OPTION"


class Tick(EventBase):
    """One quote/trade update for an index, India VIX, a future or an option."""

    STREAM: ClassVar[str] = streams.MD_TICKS.name
    type: Literal["Tick"] = "Tick"

    instrument_key: InstrumentKey
    symbol: Name
    kind: InstrumentKind
    ltp: PositiveFloat
    bid: Price | None = None
    ask: Price | None = None
    bid_qty: Quantity | None = None
    ask_qty: Quantity | None = None
    volume: Quantity | None = None
    oi: Quantity | None = None
    # Session OHLC as published by the exchange; None until known (Parkinson/Yang-Zhang need them).
    day_open: PositiveFloat | None = None
    day_high: PositiveFloat | None = None
    day_low: PositiveFloat | None = None
    prev_close: PositiveFloat | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Tick:
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError(f"Tick {self.instrument_key}: bid {self.bid} > ask {self.ask}")
        if self.day_high is not None and self.day_low is not None and self.day_low > self.day_high:
            raise ValueError(f"Tick {self.instrument_key}: day_low {self.day_low} > day_high {self.day_high}")
        return self


CROSSED = QuoteFlag.CROSSED
ZERO_BID = QuoteFlag.ZERO_BID
STALE_LTP = QuoteFlag.STALE_LTP
MISSING = QuoteFlag.MISSING
WIDE_SPREAD = QuoteFlag.WIDE_SPREAD


class ChainArrays(NamedTuple):
    """A ChainSnapshot's columns as numpy arrays: prices float64 with NaN for "no quote",
    quantities and flags int64, instrument keys as plain tuples."""

    strike: Float64Array
    call_bid: Float64Array
    call_ask: Float64Array
    call_ltp: Float64Array
    put_bid: Float64Array
    put_ask: Float64Array
    put_ltp: Float64Array
    call_bid_qty: Int64Array
    call_ask_qty: Int64Array
    call_volume: Int64Array
    call_oi: Int64Array
    put_bid_qty: Int64Array
    put_ask_qty: Int64Array
    put_volume: Int64Array
    put_oi: Int64Array
    call_flags: Int64Array
    put_flags: Int64Array
    call_instrument_key: tuple[str, ...]
    put_instrument_key: tuple[str, ...]


class ChainSnapshot(EventBase):
    """One expiry of the NIFTY option chain at `ts_event`, columnar (DESIGN §2).

    Rows are strikes, strictly increasing. Every column has one entry per strike. Prices are rupees
    (floats: analytics, not the ledger); a missing quote is None in lists and NaN in arrays, never 0 —
    a listed option never trades at zero, so prices must be > 0. Quantities are units.

    The columns live in `columns` (see `events.chain`: validated once, immutable, packed on the wire);
    each is also a read-only numpy property here (`snapshot.call_bid`).

    Crossed quotes: bid > ask on a side is rejected unless that row's side flag has CROSSED, so a
    crossed book is always a decision the producer made visibly, never silently passed on.
    """

    STREAM: ClassVar[str] = streams.MD_CHAIN.name
    # Version 2 added the OI_MISSING and VOLUME_MISSING quote flags (an unreported count is flagged,
    # never a plain 0); a version 1 snapshot reads as is (its counts were all reported, or zeros).
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    type: Literal["ChainSnapshot"] = "ChainSnapshot"

    underlying: Underlying
    expiry: date
    spot: PositiveFloat
    forward: PositiveFloat | None = None
    vix: NonNegativeFloat | None = None
    lot_size: LotSize
    tick_size: PositiveFloat
    # The feed behind this snapshot is stale (no update within the producer's bound).
    stale: bool = False
    # Rows the producer dropped before publishing (e.g. no contract on one side).
    dropped_rows: Quantity = 0
    # How many ChainSnapshots (one per expiry) the producer publishes for this ts_event, so a consumer
    # knows when it holds the whole chain without waiting for the next instant; None if it cannot say.
    expiries_in_set: Annotated[int, Field(ge=1, le=64)] | None = None
    columns: ChainColumns

    @property
    def n_strikes(self) -> int:
        return self.columns.rows

    @property
    def strike(self) -> Float64Array:
        return self.columns.floats("strike")

    @property
    def call_bid(self) -> Float64Array:
        return self.columns.floats("call_bid")

    @property
    def call_ask(self) -> Float64Array:
        return self.columns.floats("call_ask")

    @property
    def call_ltp(self) -> Float64Array:
        return self.columns.floats("call_ltp")

    @property
    def put_bid(self) -> Float64Array:
        return self.columns.floats("put_bid")

    @property
    def put_ask(self) -> Float64Array:
        return self.columns.floats("put_ask")

    @property
    def put_ltp(self) -> Float64Array:
        return self.columns.floats("put_ltp")

    @property
    def call_bid_qty(self) -> Int64Array:
        return self.columns.ints("call_bid_qty")

    @property
    def call_ask_qty(self) -> Int64Array:
        return self.columns.ints("call_ask_qty")

    @property
    def call_volume(self) -> Int64Array:
        return self.columns.ints("call_volume")

    @property
    def call_oi(self) -> Int64Array:
        return self.columns.ints("call_oi")

    @property
    def put_bid_qty(self) -> Int64Array:
        return self.columns.ints("put_bid_qty")

    @property
    def put_ask_qty(self) -> Int64Array:
        return self.columns.ints("put_ask_qty")

    @property
    def put_volume(self) -> Int64Array:
        return self.columns.ints("put_volume")

    @property
    def put_oi(self) -> Int64Array:
        return self.columns.ints("put_oi")

    @property
    def call_flags(self) -> Int64Array:
        return self.columns.ints("call_flags")

    @property
    def put_flags(self) -> Int64Array:
        return self.columns.ints("put_flags")

    @property
    def call_instrument_key(self) -> tuple[str, ...]:
        return self.columns.call_instrument_key

    @property
    def put_instrument_key(self) -> tuple[str, ...]:
        return self.columns.put_instrument_key

    def to_numpy(self) -> ChainArrays:
        """Fresh arrays (safe to modify); NaN in the price columns means no quote."""
        columns: dict[str, Any] = {name: self.columns.floats(name).copy() for name in CHAIN_FLOAT_COLUMNS}
        for name in CHAIN_INT_COLUMNS:
            columns[name] = self.columns.ints(name).copy()
        columns["call_instrument_key"] = self.columns.call_instrument_key
        columns["put_instrument_key"] = self.columns.put_instrument_key
        return ChainArrays(**columns)

    @classmethod
    def from_arrays(cls, arrays: ChainArrays, **metadata: Any) -> ChainSnapshot:
        """Build (and validate) a snapshot from numpy columns plus the envelope and metadata fields."""
        # Through model_validate so bad columns fail as a ValidationError like any other boundary.
        return cls.model_validate({**metadata, "columns": arrays._asdict()})


class FeedState(StrEnum):
    CONNECTED = "CONNECTED"
    DEGRADED = "DEGRADED"  # connected but some instruments missing or slow
    STALE = "STALE"  # connected, no updates within the staleness bound
    DISCONNECTED = "DISCONNECTED"


class MarketMode(StrEnum):
    SIM = "SIM"
    REPLAY = "REPLAY"
    LIVE = "LIVE"


class FeedStatus(EventBase):
    """Health of the market-data feed as market_data sees it.

    Version 2: `lag_ms` and `subscribed_instruments` are measured or None (unknown). Version 1 from the
    simulator and replay carried a hard-coded `lag_ms=0` and `subscribed_instruments=0`; those are read
    as unknown, because they never were measurements.
    """

    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    STREAM: ClassVar[str] = streams.MD_STATUS.name
    type: Literal["FeedStatus"] = "FeedStatus"
    schema_version: int = Field(default=2, ge=1)

    feed: Name
    mode: MarketMode
    state: FeedState
    # None until the first tick: "never received" is not "received long ago".
    last_tick_at: IstDatetime | None = None
    # Live: exchange time of the last tick against the feed's clock. Sim/replay: how far publication
    # runs behind the pace (`speed`), in wall ms. None when unpaced or not measured.
    lag_ms: NonNegativeFloat | None = None
    # Live: instruments subscribed at the broker. Sim/replay: distinct instruments the last batch
    # published (ticks plus both sides of every chain strike). None when unknown.
    subscribed_instruments: Quantity | None = None
    message: Text = ""

    @model_validator(mode="after")
    def _v1_sim_placeholders_are_unknown(self) -> FeedStatus:
        if self.schema_version == 1 and self.mode is not MarketMode.LIVE:
            # Frozen model: set through object.__setattr__ during validation only.
            object.__setattr__(self, "lag_ms", None)
            object.__setattr__(self, "subscribed_instruments", None)
        return self
