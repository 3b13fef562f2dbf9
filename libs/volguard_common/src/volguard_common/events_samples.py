"""Deterministic, realistic sample events for tests, benchmarks and warming up compiled kernels.

`sample_chain_snapshot()` builds one NIFTY weekly chain priced with Black-76 off a skewed smile:
50-point strikes centred on the forward, prices on the 0.05 tick, spreads widening into the wings,
no bid on the far wings (None, flagged ZERO_BID), open interest and volume peaking near the money,
quantities in multiples of the lot size. Same arguments, same columns; only `event_id` (and
`correlation_id`) are fresh unless passed.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

from volguard_common import clock
from volguard_common.events import IST, ChainSnapshot, QuoteFlag
from volguard_common.quant import black76
from volguard_common.settings import DEFAULT_RISK_FREE_RATE

DEFAULT_TS_EVENT = datetime(2026, 2, 5, 10, 30, tzinfo=IST)
DEFAULT_EXPIRY = date(2026, 2, 10)  # a Tuesday weekly expiry
NIFTY_LOT_SIZE = 65  # from the January 2026 series
NIFTY_TICK = 0.05
STRIKE_STEP = 50.0
# sample_chain_snapshot(STRIKES_FOR_20KB) serialises to ~20 KB of JSON: the bus benchmark payload.
STRIKES_FOR_20KB = 90


def _round_tick(price: float) -> float:
    return round(round(price / NIFTY_TICK) * NIFTY_TICK, 2)


def _smile(log_moneyness: float, atm_vol: float) -> float:
    # Equity-index smile: steep put skew, mild call wing.
    return max(0.05, atm_vol - 0.35 * log_moneyness + 2.5 * log_moneyness * log_moneyness)


def _side(
    mid: float, distance: float, lot_size: int, strike_index: int, is_call: bool
) -> tuple[float | None, float | None, float | None, int, int, int, int, int]:
    """Quote, sizes and flags of one side of one strike; distance is |strike - forward| in points."""
    flags = 0
    atm_weight = math.exp(-((distance / 900.0) ** 2))
    oi = lot_size * (50 + int(12_000 * atm_weight) + (strike_index * 37 + (7 if is_call else 3)) % 400)
    volume = lot_size * (10 + int(40_000 * atm_weight) + (strike_index * 53 + (5 if is_call else 11)) % 900)
    half_spread = max(NIFTY_TICK, _round_tick(mid * (0.004 + 0.03 * (1.0 - atm_weight))))
    if half_spread / max(mid, NIFTY_TICK) > 0.1:
        flags |= QuoteFlag.WIDE_SPREAD
    ask = _round_tick(mid + half_spread)
    bid_raw = _round_tick(mid - half_spread)
    ask_qty = lot_size * (1 + (strike_index * 7 + (1 if is_call else 2)) % 40)
    if bid_raw < NIFTY_TICK:
        # Far wing: only offers. None, never 0, stands for "no bid".
        bid: float | None = None
        bid_qty = 0
        flags |= QuoteFlag.ZERO_BID
    else:
        bid = bid_raw
        bid_qty = lot_size * (1 + (strike_index * 11 + (3 if is_call else 5)) % 40)
    ltp = _round_tick(mid + (half_spread * 0.5 if strike_index % 2 else -half_spread * 0.5))
    ltp = max(ltp, NIFTY_TICK)
    if distance > 2_000 and strike_index % 5 == 0:
        flags |= QuoteFlag.STALE_LTP
    return bid, ask, ltp, bid_qty, ask_qty, volume, oi, flags


def sample_chain_snapshot(
    n_strikes: int = 121,
    *,
    spot: float = 24_000.0,
    atm_vol: float = 0.13,
    vix: float | None = 13.4,
    rate: float = DEFAULT_RISK_FREE_RATE,
    ts_event: datetime = DEFAULT_TS_EVENT,
    expiry: date = DEFAULT_EXPIRY,
    lot_size: int = NIFTY_LOT_SIZE,
    source: str = "market_data/sample",
    **envelope: Any,
) -> ChainSnapshot:
    """A realistic ChainSnapshot of `n_strikes` 50-point strikes around the forward.

    `envelope` passes through to the model (event_id, ts_init, correlation_id); ts_init defaults to
    ts_event + 3 ms so the payload is fully deterministic apart from the event id.
    """
    if n_strikes < 1:
        raise ValueError("n_strikes must be at least 1")
    expiry_close = clock.expiry_cutoff(expiry)
    years = (expiry_close - ts_event).total_seconds() / (365.0 * 86_400.0)
    if years <= 0:
        raise ValueError(f"ts_event {ts_event} is not before expiry {expiry}")
    forward = spot * math.exp(rate * years)
    discount = math.exp(-rate * years)
    atm_strike = round(forward / STRIKE_STEP) * STRIKE_STEP
    first_strike = atm_strike - STRIKE_STEP * (n_strikes // 2)
    if first_strike <= 0:
        raise ValueError(f"{n_strikes} strikes around {atm_strike} reach non-positive strikes")

    columns: dict[str, Any] = {
        name: []
        for name in (
            "strike",
            "call_bid",
            "call_ask",
            "call_ltp",
            "call_bid_qty",
            "call_ask_qty",
            "call_volume",
            "call_oi",
            "call_flags",
            "call_instrument_key",
            "put_bid",
            "put_ask",
            "put_ltp",
            "put_bid_qty",
            "put_ask_qty",
            "put_volume",
            "put_oi",
            "put_flags",
            "put_instrument_key",
        )
    }
    for i in range(n_strikes):
        strike = first_strike + STRIKE_STEP * i
        vol = _smile(math.log(strike / forward), atm_vol)
        columns["strike"].append(strike)
        for side, is_call in (("call", True), ("put", False)):
            mid = max(NIFTY_TICK, float(black76.price(forward, strike, years, vol, is_call, discount)))
            values = _side(mid, abs(strike - forward), lot_size, i, is_call)
            for name, value in zip(
                ("bid", "ask", "ltp", "bid_qty", "ask_qty", "volume", "oi", "flags"), values, strict=True
            ):
                columns[f"{side}_{name}"].append(value)
            columns[f"{side}_instrument_key"].append(f"NSE_FO|{40_000 + 2 * i + (0 if is_call else 1)}")

    envelope.setdefault("ts_init", ts_event + timedelta(milliseconds=3))
    return ChainSnapshot.model_validate(
        {
            "ts_event": ts_event,
            "source": source,
            "underlying": "NIFTY",
            "expiry": expiry,
            "spot": spot,
            "forward": round(forward, 2),
            "vix": vix,
            "lot_size": lot_size,
            "tick_size": NIFTY_TICK,
            **envelope,
            "columns": columns,
        }
    )
