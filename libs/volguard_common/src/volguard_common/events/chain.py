"""The columns of a ChainSnapshot: validated once, immutable, packed on the wire.

A chain snapshot is ~20 numeric columns of a few hundred strikes. Validated element by element as
JSON lists it costs more than the whole Redis round trip that carries it (measured: ~255 µs to parse
a 161-strike snapshot, ~150 µs to write it, against a ~165 µs XADD→XREADGROUP→XACK hop), so the
columns travel as two little-endian blocks — one float64 (strike and the six price columns), one
int64 (quantities and flags) — base64 in the JSON envelope, checked with a handful of vectorised
numpy operations. DESIGN §2: "columnar ... maps straight to numpy and keeps (de)serialisation cheap".

Missing quotes: None in the list form, NaN in the arrays and on the wire — the binary block has no
other way to say "no quote". NaN is accepted nowhere else (never in `strike`, never as a list
element) and ±inf is rejected everywhere, so the NaN-free boundary holds.

Accepted inputs: a `ChainColumns`; the wire form `{"rows", "f8", "i8", "call_instrument_key",
"put_instrument_key"}`; or a mapping of every column name to a list (None for no quote) or a numpy
array (NaN for no quote), which is what producers and hand-written fixtures use.
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np

from volguard_common.events._packed import PackedColumns, first_bad
from volguard_common.quant._types import Float64Array, Int64Array


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
    # The source did not report this side's open interest / traded volume: the int column holds 0
    # there (it has no "absent"), and the 0 means unknown, not none. Consumers leave such rows out of
    # OI and volume statistics and say how many strikes those were computed from.
    OI_MISSING = 32
    VOLUME_MISSING = 64


ALL_QUOTE_FLAGS = int(
    QuoteFlag.CROSSED
    | QuoteFlag.ZERO_BID
    | QuoteFlag.STALE_LTP
    | QuoteFlag.MISSING
    | QuoteFlag.WIDE_SPREAD
    | QuoteFlag.OI_MISSING
    | QuoteFlag.VOLUME_MISSING
)

# Column names, in block order. Kept as data so validation, numpy export and builders cannot drift.
SIDE_PRICE_COLUMNS = ("bid", "ask", "ltp")
SIDE_QTY_COLUMNS = ("bid_qty", "ask_qty", "volume", "oi")
CHAIN_PRICE_COLUMNS = tuple(f"{side}_{col}" for side in ("call", "put") for col in SIDE_PRICE_COLUMNS)
CHAIN_FLOAT_COLUMNS = ("strike", *CHAIN_PRICE_COLUMNS)
CHAIN_INT_COLUMNS = (
    *(f"{side}_{col}" for side in ("call", "put") for col in SIDE_QTY_COLUMNS),
    "call_flags",
    "put_flags",
)
CHAIN_KEY_COLUMNS = ("call_instrument_key", "put_instrument_key")
CHAIN_COLUMNS = (*CHAIN_FLOAT_COLUMNS, *CHAIN_INT_COLUMNS, *CHAIN_KEY_COLUMNS)


class ChainColumns(PackedColumns):
    """Immutable, validated columns of one chain snapshot (rows are strikes, strictly increasing)."""

    OWNER = "ChainSnapshot"
    FLOAT_COLUMNS = CHAIN_FLOAT_COLUMNS
    INT_COLUMNS = CHAIN_INT_COLUMNS
    KEY_COLUMNS = CHAIN_KEY_COLUMNS
    MIN_ROWS = 1
    MISSING = "a missing quote"
    __slots__ = ()

    @property
    def call_instrument_key(self) -> tuple[str, ...]:
        return self._keys[0]

    @property
    def put_instrument_key(self) -> tuple[str, ...]:
        return self._keys[1]

    def _check(self) -> None:
        # Runs on every snapshot on the bus, and the wings routinely lack quotes (NaN), so a clean
        # snapshot must not pay for locating anything: a few whole-block reductions decide that every
        # rule holds; only when one of them fails are the rules walked in order to name the first bad
        # row (`_locate_broken_rule`, the same checks and messages as ever).
        floats, ints = self._floats, self._ints
        if not self._plainly_valid(floats, ints):
            self._locate_broken_rule()
        # Rows 1,2 are call bid/ask and 4,5 put bid/ask: both sides in one comparison. A crossed
        # quote is legal when flagged, so the flags are read only once some bid is above its ask.
        bid_above_ask = floats[1::3] > floats[2::3]
        if bid_above_ask.any():
            crossed = bid_above_ask & ((ints[-2:] & QuoteFlag.CROSSED) == 0)
            if crossed.any():
                side_index, i = (int(x) for x in np.argwhere(crossed)[0])
                side = ("call", "put")[side_index]
                bid, ask = floats[1 + 3 * side_index, i], floats[2 + 3 * side_index, i]
                strike = floats[0]
                raise ValueError(
                    f"ChainSnapshot: {side}_bid {bid} > {side}_ask {ask} at strike {strike[i]} "
                    f"(row {i}) without the CROSSED flag in {side}_flags"
                )

    @staticmethod
    def _plainly_valid(floats: Float64Array, ints: Int64Array) -> bool:
        """True only if prices, strikes, quantities and flags all pass (crossing aside)."""
        # fmin/fmax skip NaN (a missing quote): they give the smallest and largest real price, so
        # "> 0 and finite" is two reductions. They return NaN only when every value is NaN, which fails
        # `> 0`.
        if not (np.fmin.reduce(floats, axis=None) > 0.0 and np.fmax.reduce(floats, axis=None) < np.inf):
            return False
        strike = floats[0]
        # A NaN strike compares False with its neighbours, so "strictly increasing" also rules it out;
        # a lone strike is checked by itself.
        if not ((strike[1:] > strike[:-1]).all() if len(strike) > 1 else strike[0] == strike[0]):
            return False
        if np.minimum.reduce(ints, axis=None) < 0:
            return False
        # The union of every flag bit in one reduction: no row has an unknown bit iff the union has none.
        return bool((np.bitwise_or.reduce(ints[-2:], axis=None) & ~ALL_QUOTE_FLAGS) == 0)

    def _locate_broken_rule(self) -> None:
        """The rules in order, on whole blocks, raising for the first broken one with its row."""
        floats, ints = self._floats, self._ints
        # A valid float is > 0 and finite; NaN (no quote) fails `> 0` and is allowed except in strike.
        valid = (floats > 0) & (floats < np.inf)
        if not valid.all():
            self._explain_floats()
        strike = floats[0]
        if self.rows > 1 and not (strike[1:] > strike[:-1]).all():
            i = int(np.flatnonzero(strike[1:] <= strike[:-1])[0]) + 1
            raise ValueError(
                f"ChainSnapshot: strike must be strictly increasing; row {i} has {strike[i]} "
                f"after {strike[i - 1]}"
            )
        if ints.min() < 0:
            name, row = first_bad(ints < 0, CHAIN_INT_COLUMNS)
            raise ValueError(f"ChainSnapshot: {name} must be >= 0, row {row}")
        flags = ints[-2:]
        if (flags & ~ALL_QUOTE_FLAGS).any():
            name, row = first_bad((flags & ~ALL_QUOTE_FLAGS) != 0, CHAIN_INT_COLUMNS[-2:])
            raise ValueError(f"ChainSnapshot: {name} has unknown quote-flag bits at row {row}")

    def _explain_floats(self) -> None:
        floats = self._floats
        if np.isinf(floats).any():
            name, row = first_bad(np.isinf(floats), CHAIN_FLOAT_COLUMNS)
            raise ValueError(f"ChainSnapshot: {name} is infinite at row {row}")
        strike = floats[0]
        if np.isnan(strike).any():
            raise ValueError(
                f"ChainSnapshot: strike is missing at row {int(np.flatnonzero(np.isnan(strike))[0])}"
            )
        non_positive = floats <= 0  # NaN compares False: a missing quote is not a zero price
        if non_positive.any():
            name, row = first_bad(non_positive, CHAIN_FLOAT_COLUMNS)
            raise ValueError(f"ChainSnapshot: {name} must be > 0 (None for no quote), row {row}")
