"""Market data events: ticks, columnar option-chain snapshots, feed health (streams md.*)."""

from __future__ import annotations

from datetime import date
from enum import IntFlag, StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import numpy as np
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
    check_equal_lengths,
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


class QuoteFlag(IntFlag):
    """Per-row, per-side quality bits of a ChainSnapshot (`call_flags`, `put_flags`).

    The producer sets them; the model checks the one rule it can see for itself (CROSSED). Consumers
    decide what a flag means for them (analytics excludes CROSSED/MISSING rows from IV fits, etc.).
    """

    CROSSED = 1  # bid > ask on this side; the only way a crossed quote passes the boundary
    ZERO_BID = 2  # ask present but no bid (far wings): mid is not a fair value
    STALE_LTP = 4  # last trade older than the producer's staleness bound
    MISSING = 8  # no bid and no ask on this side
    WIDE_SPREAD = 16  # spread wider than the producer's bound (fraction of mid or ticks)


CROSSED = QuoteFlag.CROSSED
ZERO_BID = QuoteFlag.ZERO_BID
STALE_LTP = QuoteFlag.STALE_LTP
MISSING = QuoteFlag.MISSING
WIDE_SPREAD = QuoteFlag.WIDE_SPREAD
ALL_QUOTE_FLAGS = int(CROSSED | ZERO_BID | STALE_LTP | MISSING | WIDE_SPREAD)

FlagBits = Annotated[int, Field(ge=0, le=ALL_QUOTE_FLAGS)]

# Column names, in declaration order, per side. Kept as data so validation, numpy export and the
# sample builder cannot drift apart.
SIDE_PRICE_COLUMNS = ("bid", "ask", "ltp")
SIDE_QTY_COLUMNS = ("bid_qty", "ask_qty", "volume", "oi")
CHAIN_PRICE_COLUMNS = tuple(f"{side}_{col}" for side in ("call", "put") for col in SIDE_PRICE_COLUMNS)
CHAIN_INT_COLUMNS = (
    *(f"{side}_{col}" for side in ("call", "put") for col in SIDE_QTY_COLUMNS),
    "call_flags",
    "put_flags",
)
CHAIN_KEY_COLUMNS = ("call_instrument_key", "put_instrument_key")
CHAIN_COLUMNS = ("strike", *CHAIN_PRICE_COLUMNS, *CHAIN_INT_COLUMNS, *CHAIN_KEY_COLUMNS)


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


def _optional_floats(values: Float64Array) -> list[float | None]:
    # NaN is numpy's "no quote"; on the wire it is null. ±inf stays a float and fails validation.
    return [None if v != v else v for v in values.tolist()]


class ChainSnapshot(EventBase):
    """One expiry of the NIFTY option chain at `ts_event`, columnar (DESIGN §2).

    Rows are strikes, strictly increasing. Every column has one entry per strike. Prices are rupees
    (floats: analytics, not the ledger); a missing quote is None, never 0 — a listed option never
    trades at zero, so prices must be > 0. Quantities are units.

    Crossed quotes: bid > ask on a side is rejected unless that row's side flag has CROSSED, so a
    crossed book is always a decision the producer made visibly, never silently passed on.
    """

    STREAM: ClassVar[str] = streams.MD_CHAIN.name
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

    strike: list[PositiveFloat]
    call_bid: list[Price | None]
    call_ask: list[Price | None]
    call_ltp: list[Price | None]
    put_bid: list[Price | None]
    put_ask: list[Price | None]
    put_ltp: list[Price | None]
    call_bid_qty: list[Quantity]
    call_ask_qty: list[Quantity]
    call_volume: list[Quantity]
    call_oi: list[Quantity]
    put_bid_qty: list[Quantity]
    put_ask_qty: list[Quantity]
    put_volume: list[Quantity]
    put_oi: list[Quantity]
    call_flags: list[FlagBits]
    put_flags: list[FlagBits]
    call_instrument_key: list[InstrumentKey]
    put_instrument_key: list[InstrumentKey]

    @model_validator(mode="after")
    def _consistent(self) -> ChainSnapshot:
        check_equal_lengths(
            "ChainSnapshot", {name: getattr(self, name) for name in CHAIN_COLUMNS}, min_rows=1
        )
        strikes = self.strike
        for i in range(1, len(strikes)):
            if strikes[i] <= strikes[i - 1]:
                raise ValueError(
                    f"ChainSnapshot: strike must be strictly increasing; row {i} has {strikes[i]} "
                    f"after {strikes[i - 1]}"
                )
        for side, bids, asks, flags in (
            ("call", self.call_bid, self.call_ask, self.call_flags),
            ("put", self.put_bid, self.put_ask, self.put_flags),
        ):
            for i, (bid, ask, flag) in enumerate(zip(bids, asks, flags, strict=True)):
                if bid is not None and ask is not None and bid > ask and not flag & CROSSED:
                    raise ValueError(
                        f"ChainSnapshot: {side}_bid {bid} > {side}_ask {ask} at strike {strikes[i]} "
                        f"(row {i}) without the CROSSED flag in {side}_flags"
                    )
        return self

    @property
    def n_strikes(self) -> int:
        return len(self.strike)

    def to_numpy(self) -> ChainArrays:
        """Fresh arrays (safe to modify); None becomes NaN in the price columns."""
        columns: dict[str, Any] = {"strike": np.asarray(self.strike, dtype=np.float64)}
        for name in CHAIN_PRICE_COLUMNS:
            columns[name] = np.asarray(getattr(self, name), dtype=np.float64)
        for name in CHAIN_INT_COLUMNS:
            columns[name] = np.asarray(getattr(self, name), dtype=np.int64)
        columns["call_instrument_key"] = tuple(self.call_instrument_key)
        columns["put_instrument_key"] = tuple(self.put_instrument_key)
        return ChainArrays(**columns)

    @classmethod
    def from_arrays(cls, arrays: ChainArrays, **metadata: Any) -> ChainSnapshot:
        """Build (and validate) a snapshot from numpy columns plus the envelope and metadata fields."""
        columns: dict[str, Any] = {"strike": arrays.strike.astype(np.float64).tolist()}
        for name in CHAIN_PRICE_COLUMNS:
            columns[name] = _optional_floats(np.asarray(getattr(arrays, name), dtype=np.float64))
        for name in CHAIN_INT_COLUMNS:
            columns[name] = np.asarray(getattr(arrays, name), dtype=np.int64).tolist()
        columns["call_instrument_key"] = list(arrays.call_instrument_key)
        columns["put_instrument_key"] = list(arrays.put_instrument_key)
        return cls(**metadata, **columns)


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
    """Health of the market-data feed as market_data sees it."""

    STREAM: ClassVar[str] = streams.MD_STATUS.name
    type: Literal["FeedStatus"] = "FeedStatus"

    feed: Name
    mode: MarketMode
    state: FeedState
    # None until the first tick: "never received" is not "received long ago".
    last_tick_at: IstDatetime | None = None
    lag_ms: NonNegativeFloat | None = None
    subscribed_instruments: Quantity
    message: Text = ""
