"""NIFTY option chain → ChainSnapshot, from the REST chain or from feed quotes, with quality flags.

REST endpoint (upstox.com/developer/api-documentation/get-pc-option-chain):
    GET /v2/option/chain?instrument_key=NSE_INDEX|Nifty 50&expiry_date=YYYY-MM-DD
    {"status": "success", "data": [{"expiry", "pcr", "strike_price", "underlying_key",
      "underlying_spot_price", "call_options": {"instrument_key", "market_data": {"ltp", "volume", "oi",
      "close_price", "bid_price", "bid_qty", "ask_price", "ask_qty", "prev_oi"}, "option_greeks": {...}},
      "put_options": {...}}, ...]}

Quote rules (a price we did not see is never invented):
- a price ≤ 0 or absent is "no quote" (None); Upstox reports an empty side of the book as 0;
- both bid and ask absent → MISSING; ask without bid → ZERO_BID; bid without ask → WIDE_SPREAD
  (the spread is unbounded); bid > ask → CROSSED (the quote is kept, visibly flagged);
  spread wider than `wide_spread_fraction` of mid → WIDE_SPREAD; last trade older than the bound →
  STALE_LTP;
- a strike with no contract on one side, an unreadable strike or a duplicate strike cannot be a row
  (every row needs both instrument keys): it is dropped, counted in `dropped_rows` and logged.

Quantity rules (missing is not zero): open interest and traded volume the source did not report stay
unknown (None here); the snapshot's int column then holds 0 with OI_MISSING / VOLUME_MISSING on that
side, so PCR, max pain and the OI walls leave the strike out instead of reading "no open interest".
A depth quantity (bid_qty, ask_qty) that is absent is 0: Upstox sends an empty side of the book as
0 price and 0 quantity, and nothing shown at a level is what 0 means there.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from volguard_common.events import ChainColumns, ChainSnapshot, QuoteFlag
from volguard_common.upstox_http import UpstoxHttp, UpstoxResponseError
from volguard_market_data.adapters.upstox.instruments import NIFTY_INDEX_KEY

log = logging.getLogger(__name__)

OPTION_CHAIN_PATH = "/v2/option/chain"
DEFAULT_WIDE_SPREAD_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class SideQuote:
    """One side (call or put) of one strike as last seen. Prices None = no quote; quantities in units."""

    instrument_key: str
    bid: float | None = None
    ask: float | None = None
    ltp: float | None = None
    bid_qty: int = 0
    ask_qty: int = 0
    volume: int | None = None  # None: not reported (never read as 0)
    oi: int | None = None
    ltp_at: datetime | None = None  # last trade time, when the source says


@dataclass(frozen=True, slots=True)
class ChainRow:
    strike: float
    call: SideQuote | None
    put: SideQuote | None


@dataclass(frozen=True, slots=True)
class RestChain:
    """A parsed REST chain: rows (possibly with a side missing), spot, and rows that could not be read."""

    expiry: date
    spot: float | None
    rows: tuple[ChainRow, ...]
    unreadable_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChainBuild:
    snapshot: ChainSnapshot
    dropped_rows: int
    drop_reasons: dict[str, int]


def price_or_none(value: Any) -> float | None:
    """A usable price or None: absent, non-numeric, non-finite and ≤ 0 are all "no quote"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def quantity(value: Any) -> int:
    """Quantities are never negative; an absent one is 0 (nothing shown at that level)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def reported_quantity(value: Any) -> int | None:
    """A reported count (open interest, volume) or None when the source did not give a usable one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0, int(value))


def side_flags(
    side: SideQuote,
    *,
    as_of: datetime,
    wide_spread_fraction: float,
    stale_ltp_after_s: float | None,
) -> int:
    flags = QuoteFlag(0)
    bid, ask = side.bid, side.ask
    if bid is None and ask is None:
        flags |= QuoteFlag.MISSING
    elif bid is None:
        flags |= QuoteFlag.ZERO_BID
    elif ask is None:
        flags |= QuoteFlag.WIDE_SPREAD
    elif bid > ask:
        flags |= QuoteFlag.CROSSED
    elif (ask - bid) > wide_spread_fraction * (ask + bid) / 2:
        flags |= QuoteFlag.WIDE_SPREAD
    if side.oi is None:
        flags |= QuoteFlag.OI_MISSING
    if side.volume is None:
        flags |= QuoteFlag.VOLUME_MISSING
    if (
        stale_ltp_after_s is not None
        and side.ltp is not None
        and side.ltp_at is not None
        and (as_of - side.ltp_at).total_seconds() > stale_ltp_after_s
    ):
        flags |= QuoteFlag.STALE_LTP
    return int(flags)


def build_snapshot(
    rows: Sequence[ChainRow],
    *,
    expiry: date,
    spot: float,
    lot_size: int,
    tick_size: float,
    ts_event: datetime,
    source: str,
    vix: float | None = None,
    stale: bool = False,
    earlier_dropped: Mapping[str, int] | None = None,
    wide_spread_fraction: float = DEFAULT_WIDE_SPREAD_FRACTION,
    stale_ltp_after_s: float | None = None,
    underlying: str = "NIFTY",
) -> ChainBuild:
    """One ChainSnapshot from rows; rows that cannot be published are dropped and counted."""
    reasons: Counter[str] = Counter(earlier_dropped or {})
    kept: dict[float, ChainRow] = {}
    for row in rows:
        if not (math.isfinite(row.strike) and row.strike > 0):
            reasons["unreadable strike"] += 1
        elif row.call is None or row.put is None:
            reasons["no contract on one side"] += 1
        elif row.strike in kept:
            reasons["duplicate strike"] += 1
        else:
            kept[row.strike] = row
    ordered = [kept[strike] for strike in sorted(kept)]
    dropped = sum(reasons.values())
    if dropped:
        log.warning("chain %s: dropped %d rows: %s", expiry, dropped, dict(reasons))
    if not ordered:
        raise UpstoxResponseError(f"option chain {expiry}: no publishable rows (dropped {dict(reasons)})")
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMN_NAMES}
    for row in ordered:
        columns["strike"].append(row.strike)
        for prefix, side in (("call", row.call), ("put", row.put)):
            assert side is not None  # filtered above
            columns[f"{prefix}_bid"].append(side.bid)
            columns[f"{prefix}_ask"].append(side.ask)
            columns[f"{prefix}_ltp"].append(side.ltp)
            columns[f"{prefix}_bid_qty"].append(side.bid_qty)
            columns[f"{prefix}_ask_qty"].append(side.ask_qty)
            # Unknown counts travel as 0 under OI_MISSING / VOLUME_MISSING (see side_flags).
            columns[f"{prefix}_volume"].append(side.volume if side.volume is not None else 0)
            columns[f"{prefix}_oi"].append(side.oi if side.oi is not None else 0)
            columns[f"{prefix}_flags"].append(
                side_flags(
                    side,
                    as_of=ts_event,
                    wide_spread_fraction=wide_spread_fraction,
                    stale_ltp_after_s=stale_ltp_after_s,
                )
            )
            columns[f"{prefix}_instrument_key"].append(side.instrument_key)
    snapshot = ChainSnapshot(
        ts_event=ts_event,
        source=source,
        underlying=underlying,
        expiry=expiry,
        spot=spot,
        vix=vix,
        lot_size=lot_size,
        tick_size=tick_size,
        stale=stale,
        dropped_rows=dropped,
        columns=ChainColumns.from_columns(columns),
    )
    return ChainBuild(snapshot=snapshot, dropped_rows=dropped, drop_reasons=dict(reasons))


_COLUMN_NAMES = (
    "strike",
    *(
        f"{side}_{column}"
        for side in ("call", "put")
        for column in ("bid", "ask", "ltp", "bid_qty", "ask_qty", "volume", "oi", "flags", "instrument_key")
    ),
)


# ---- REST ------------------------------------------------------------------------------------------


def _side_from_rest(payload: Any) -> SideQuote | None:
    """A side of a REST row; None when the strike has no contract on this side."""
    if not isinstance(payload, dict):
        return None
    key = payload.get("instrument_key")
    if not isinstance(key, str) or not key:
        return None
    market = payload.get("market_data")
    if not isinstance(market, dict):
        return SideQuote(instrument_key=key)  # listed but unquoted: MISSING, never zeros as prices
    return SideQuote(
        instrument_key=key,
        bid=price_or_none(market.get("bid_price")),
        ask=price_or_none(market.get("ask_price")),
        ltp=price_or_none(market.get("ltp")),
        bid_qty=quantity(market.get("bid_qty")),
        ask_qty=quantity(market.get("ask_qty")),
        volume=reported_quantity(market.get("volume")),
        oi=reported_quantity(market.get("oi")),
    )


def parse_option_chain(body: Any, expiry: date) -> RestChain:
    """Rows of the documented REST response; raises UpstoxResponseError if the envelope is wrong."""
    if (
        not isinstance(body, dict)
        or body.get("status") != "success"
        or not isinstance(body.get("data"), list)
    ):
        shape = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise UpstoxResponseError(
            f"option chain {expiry}: expected {{'status': 'success', 'data': [...]}}, got {shape}",
            path=OPTION_CHAIN_PATH,
        )
    rows: list[ChainRow] = []
    reasons: Counter[str] = Counter()
    spot: float | None = None
    for item in body["data"]:
        if not isinstance(item, dict):
            reasons["row is not an object"] += 1
            continue
        strike = price_or_none(item.get("strike_price"))
        if strike is None:
            reasons["unreadable strike"] += 1
            continue
        spot = spot or price_or_none(item.get("underlying_spot_price"))
        rows.append(
            ChainRow(
                strike=strike,
                call=_side_from_rest(item.get("call_options")),
                put=_side_from_rest(item.get("put_options")),
            )
        )
    return RestChain(
        expiry=expiry,
        spot=spot,
        rows=tuple(rows),
        unreadable_rows=sum(reasons.values()),
        reasons=dict(reasons),
    )


class OptionChainClient:
    """Fetches the REST option chain of one underlying per expiry."""

    def __init__(self, http: UpstoxHttp, *, underlying_key: str = NIFTY_INDEX_KEY) -> None:
        self.http = http
        self.underlying_key = underlying_key

    async def fetch(self, expiry: date) -> RestChain:
        body = await self.http.get_json(
            OPTION_CHAIN_PATH,
            params={"instrument_key": self.underlying_key, "expiry_date": expiry.isoformat()},
        )
        return parse_option_chain(body, expiry)

    async def snapshot(
        self,
        expiry: date,
        *,
        lot_size: int,
        tick_size: float,
        ts_event: datetime,
        source: str,
        vix: float | None = None,
        wide_spread_fraction: float = DEFAULT_WIDE_SPREAD_FRACTION,
    ) -> ChainBuild:
        """A ChainSnapshot straight from the REST chain (spot from the response)."""
        chain = await self.fetch(expiry)
        if chain.spot is None:
            raise UpstoxResponseError(f"option chain {expiry}: no underlying_spot_price in any row")
        return build_snapshot(
            chain.rows,
            expiry=expiry,
            spot=chain.spot,
            lot_size=lot_size,
            tick_size=tick_size,
            ts_event=ts_event,
            source=source,
            vix=vix,
            earlier_dropped=chain.reasons,
            wide_spread_fraction=wide_spread_fraction,
        )
