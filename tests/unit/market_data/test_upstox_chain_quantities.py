"""Missing is not zero (issue 14): open interest or volume the Upstox option chain did not report stays
unknown — flagged on the snapshot — and is never published as a plain 0."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from volguard_common.clock import IST
from volguard_common.events import QuoteFlag, parse_event
from volguard_market_data.adapters.upstox.chain import build_snapshot, parse_option_chain

EXPIRY = date(2026, 12, 8)
TS = datetime(2026, 12, 7, 11, 0, tzinfo=IST)


def _side(key: str, **market: Any) -> dict[str, Any]:
    quote = {"ltp": 101.0, "bid_price": 100.0, "bid_qty": 650, "ask_price": 102.0, "ask_qty": 650}
    quote.update(market)
    return {"instrument_key": key, "market_data": {k: v for k, v in quote.items() if v is not None}}


def _row(strike: float, call: dict[str, Any], put: dict[str, Any]) -> dict[str, Any]:
    return {
        "expiry": EXPIRY.isoformat(),
        "strike_price": strike,
        "underlying_spot_price": 26_000.0,
        "call_options": call,
        "put_options": put,
    }


def test_unreported_oi_and_volume_are_flagged_not_zero() -> None:
    body = {
        "status": "success",
        "data": [
            _row(25_950.0, _side("C1", oi=1_000, volume=50), _side("P1", oi=2_000, volume=70)),
            # The call's OI and the put's volume are absent; a reported 0 stays a known 0.
            _row(26_000.0, _side("C2", volume=0), _side("P2", oi=0)),
            _row(26_050.0, _side("C3", oi="n/a", volume=10), _side("P3", oi=3_000, volume=5)),
        ],
    }
    chain = parse_option_chain(body, EXPIRY)
    build = build_snapshot(
        chain.rows, expiry=EXPIRY, spot=26_000.0, lot_size=65, tick_size=0.05, ts_event=TS, source="test"
    )
    snapshot = build.snapshot
    lists = snapshot.columns.as_lists()
    call_flags, put_flags = lists["call_flags"], lists["put_flags"]
    assert [bool(f & QuoteFlag.OI_MISSING) for f in call_flags] == [False, True, True]
    assert [bool(f & QuoteFlag.OI_MISSING) for f in put_flags] == [False, False, False]
    assert [bool(f & QuoteFlag.VOLUME_MISSING) for f in call_flags] == [False, False, False]
    assert [bool(f & QuoteFlag.VOLUME_MISSING) for f in put_flags] == [False, True, False]
    assert lists["call_oi"] == [1_000, 0, 0]
    assert lists["put_oi"] == [2_000, 0, 3_000]
    assert lists["call_volume"] == [50, 0, 10]
    # The flags travel: the consumer's copy says the same.
    assert parse_event(snapshot.model_dump_json()) == snapshot
    assert snapshot.schema_version == 2
