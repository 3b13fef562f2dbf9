"""Boundary validation of the event catalogue, event ids, client order ids and the chain sample."""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from volguard_common import events, streams
from volguard_common.events import (
    ALL_EVENT_TYPES,
    CHAIN_COLUMNS,
    CLIENT_ORDER_ID_LENGTH,
    CROSSED,
    EVENT_ADAPTER,
    EVENT_TYPES,
    EVENTS_ON,
    IST,
    STREAM_OF,
    SUPPORTED_SCHEMA_VERSIONS,
    UUID7_PATTERN,
    WIDE_SPREAD,
    ZERO_BID,
    Alert,
    BasketLeg,
    Bucket,
    ChainSnapshot,
    Command,
    CommandKind,
    Event,
    ExecuteBasket,
    ExitReason,
    FeedStatus,
    Fill,
    InstrumentKind,
    IntentKind,
    OptionType,
    OrderLeg,
    OrderStatus,
    OrderUpdate,
    QuoteFlag,
    RiskDecision,
    Severity,
    Side,
    StrikeSurface,
    Structure,
    Tick,
    TradeIntent,
    TradingState,
    TradingStateKind,
    Urgency,
    client_order_id,
    event_id_time,
    new_event_id,
    parse_event,
)
from volguard_common.events import _base as base
from volguard_common.events.surface_columns import SURFACE_FLOAT_COLUMNS, IvFlag
from volguard_common.events_samples import STRIKES_FOR_20KB, sample_chain_snapshot

T0 = datetime(2026, 2, 5, 10, 30, tzinfo=IST)
ENVELOPE: dict[str, Any] = {"ts_event": T0, "source": "test/0"}


def tick(**overrides: Any) -> Tick:
    fields: dict[str, Any] = {
        **ENVELOPE,
        "instrument_key": "NSE_INDEX|Nifty 50",
        "symbol": "NIFTY 50",
        "kind": InstrumentKind.INDEX,
        "ltp": 24_010.5,
    }
    return Tick(**{**fields, **overrides})


def chain_fields(**overrides: Any) -> dict[str, Any]:
    """A valid three-strike chain as plain fields, for poking one thing at a time."""
    fields: dict[str, Any] = {
        **ENVELOPE,
        "underlying": "NIFTY",
        "expiry": date(2026, 2, 10),
        "spot": 24_000.0,
        "forward": 24_020.0,
        "vix": 13.4,
        "lot_size": 65,
        "tick_size": 0.05,
        "strike": [23_950.0, 24_000.0, 24_050.0],
        "call_bid": [180.0, 150.0, 122.5],
        "call_ask": [181.0, 151.0, 123.5],
        "call_ltp": [180.5, None, 123.0],
        "put_bid": [110.0, 130.0, None],
        "put_ask": [111.0, 131.0, 160.0],
        "put_ltp": [110.5, 130.5, 159.0],
        "call_bid_qty": [650, 1300, 65],
        "call_ask_qty": [650, 650, 130],
        "call_volume": [10_000, 20_000, 5_000],
        "call_oi": [100_000, 200_000, 50_000],
        "put_bid_qty": [650, 650, 0],
        "put_ask_qty": [650, 650, 65],
        "put_volume": [9_000, 21_000, 4_000],
        "put_oi": [90_000, 210_000, 40_000],
        "call_flags": [0, 0, 0],
        "put_flags": [0, 0, int(ZERO_BID)],
        "call_instrument_key": ["NSE_FO|1", "NSE_FO|3", "NSE_FO|5"],
        "put_instrument_key": ["NSE_FO|2", "NSE_FO|4", "NSE_FO|6"],
    }
    fields.update(overrides)
    return fields


def make_chain(fields: dict[str, Any]) -> ChainSnapshot:
    """A ChainSnapshot from flat fields: the column names go into `columns` (list form)."""
    columns = {name: fields[name] for name in CHAIN_COLUMNS}
    return ChainSnapshot(**{k: v for k, v in fields.items() if k not in CHAIN_COLUMNS}, columns=columns)


def leg(side: Side, strike: float, quantity: int = 130, option_type: OptionType = OptionType.PE) -> OrderLeg:
    return OrderLeg(
        instrument_key=f"NSE_FO|{int(strike)}{option_type.value}",
        expiry=date(2026, 2, 10),
        strike=strike,
        option_type=option_type,
        side=side,
        quantity=quantity,
        limit_price=Decimal("42.05"),
    )


def basket_leg(basket_id: str, index: int, side: Side, sequence: int, strike: float) -> BasketLeg:
    return BasketLeg(
        **leg(side, strike).model_dump(),
        leg_index=index,
        sequence=sequence,
        client_order_id=client_order_id(basket_id, index, 0),
    )


def basket(legs: list[BasketLeg], basket_id: str = "b-1", **overrides: Any) -> ExecuteBasket:
    fields: dict[str, Any] = {
        **ENVELOPE,
        "basket_id": basket_id,
        "intent_id": "i-1",
        "purpose": IntentKind.ENTRY,
        "bucket": Bucket.WEEKLY,
        "structure": Structure.CREDIT_SPREAD,
        "lot_size": 65,
        "legs": legs,
        "urgency": Urgency.NORMAL,
        "reason": "test",
    }
    return ExecuteBasket(**{**fields, **overrides})


def error_text(excinfo: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------------------------------------------
# Envelope
# ---------------------------------------------------------------------------------------------------


def test_envelope_defaults_event_id_ts_init_and_correlation() -> None:
    before = datetime.now(IST)
    event = tick()
    assert re.match(UUID7_PATTERN, event.event_id)
    assert event.correlation_id == event.event_id
    assert before <= event.ts_init <= datetime.now(IST)
    assert event.schema_version == 1
    assert event.type == "Tick"


def test_explicit_correlation_id_is_kept_and_survives_the_wire() -> None:
    cause = tick()
    effect = tick(correlation_id=cause.correlation_id)
    assert effect.correlation_id == cause.event_id != effect.event_id
    assert parse_event(effect.model_dump_json()).correlation_id == cause.event_id


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        tick(ts_event=datetime(2026, 2, 5, 10, 30))
    with pytest.raises(ValidationError, match="timezone"):
        tick(ts_init=datetime(2026, 2, 5, 10, 30))
    payload = json.loads(tick().model_dump_json())
    payload["ts_event"] = "2026-02-05T10:30:00"
    with pytest.raises(ValidationError, match="timezone"):
        parse_event(json.dumps(payload))


def test_aware_datetimes_are_normalised_to_ist() -> None:
    event = tick(ts_event=datetime(2026, 2, 5, 5, 0, tzinfo=UTC))
    assert event.ts_event == T0
    assert event.ts_event.utcoffset() == timedelta(hours=5, minutes=30)
    assert event.ts_event.hour == 10
    assert '"ts_event":"2026-02-05T10:30:00+05:30"' in event.model_dump_json()


def test_extra_fields_are_rejected_in_python_and_json() -> None:
    with pytest.raises(ValidationError, match="extra"):
        tick(venue="NSE")
    payload = json.loads(tick().model_dump_json())
    payload["venue"] = "NSE"
    with pytest.raises(ValidationError, match="venue"):
        parse_event(json.dumps(payload))


def test_events_are_frozen() -> None:
    event = tick()
    with pytest.raises(ValidationError, match="frozen"):
        event.ltp = 1.0  # type: ignore[misc]
    snapshot = make_chain(chain_fields())
    with pytest.raises(ValidationError, match="frozen"):
        snapshot.spot = 1.0  # type: ignore[misc]


def test_types_are_strict() -> None:
    with pytest.raises(ValidationError):
        tick(volume="100")
    with pytest.raises(ValidationError):
        tick(volume=True)
    with pytest.raises(ValidationError):
        tick(volume=100.0)
    with pytest.raises(ValidationError):
        Fill(
            **ENVELOPE,
            fill_id="t-1",
            client_order_id=client_order_id("b-1", 0, 0),
            broker_order_id="o-1",
            basket_id="b-1",
            leg_index=0,
            instrument_key="NSE_FO|1",
            expiry=date(2026, 2, 10),
            strike=24_000.0,
            option_type=OptionType.CE,
            side=Side.SELL,
            quantity=65,
            price=42.05,  # type: ignore[arg-type]  # float is not money
            fees=Decimal("20"),
        )


def test_event_id_must_be_a_uuid7() -> None:
    with pytest.raises(ValidationError, match="event_id"):
        tick(event_id=str(uuid.uuid4()))
    with pytest.raises(ValidationError, match="event_id"):
        tick(event_id="")


def test_newer_schema_version_is_rejected_with_a_clear_error() -> None:
    payload = json.loads(tick().model_dump_json())
    payload["schema_version"] = 2
    with pytest.raises(ValidationError, match="Tick schema_version 2 is newer than this consumer"):
        parse_event(json.dumps(payload))
    payload["schema_version"] = 0
    with pytest.raises(ValidationError, match="schema_version"):
        parse_event(json.dumps(payload))


def test_supported_schema_versions_cover_every_type() -> None:
    assert set(SUPPORTED_SCHEMA_VERSIONS) == set(EVENT_TYPES)
    for name, event_type in EVENT_TYPES.items():
        # Every version up to the one this code writes stays readable, and the one written is the newest.
        assert SUPPORTED_SCHEMA_VERSIONS[name] == frozenset(range(1, event_type.SCHEMA_VERSION + 1)), name
        assert event_type.model_fields["schema_version"].default == event_type.SCHEMA_VERSION, name


def test_feed_status_v1_placeholders_of_sim_and_replay_read_as_unknown() -> None:
    # Version 1 simulated and replayed statuses carried lag_ms=0 and subscribed_instruments=0 without
    # measuring them; read back, they say "unknown". A live v1 status measured both and keeps them.
    def v1(mode: str) -> dict[str, object]:
        return {
            "type": "FeedStatus",
            "event_id": "0190b3a2-5c4e-7d2f-8a1b-3c4d5e6f7a8b",
            "schema_version": 1,
            "ts_event": "2026-07-01T10:00:00+05:30",
            "ts_init": "2026-07-01T10:00:00+05:30",
            "source": "market_data/host-1",
            "feed": "sim" if mode != "LIVE" else "upstox",
            "mode": mode,
            "state": "CONNECTED",
            "last_tick_at": "2026-07-01T10:00:00+05:30",
            "lag_ms": 0.0,
            "subscribed_instruments": 0 if mode != "LIVE" else 250,
        }

    for mode in ("SIM", "REPLAY"):
        status = parse_event(json.dumps(v1(mode)))
        assert isinstance(status, FeedStatus)
        assert (status.schema_version, status.lag_ms, status.subscribed_instruments) == (1, None, None)
    live = parse_event(json.dumps(v1("LIVE")))
    assert isinstance(live, FeedStatus)
    assert (live.lag_ms, live.subscribed_instruments) == (0.0, 250)


def test_unknown_type_discriminator_is_rejected() -> None:
    payload = json.loads(tick().model_dump_json())
    payload["type"] = "Quote"
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        parse_event(json.dumps(payload))
    with pytest.raises(ValidationError):
        parse_event(b"not json")


# ---------------------------------------------------------------------------------------------------
# Catalogue wiring
# ---------------------------------------------------------------------------------------------------


def test_catalogue_is_complete_and_keyed_by_discriminator() -> None:
    expected = {
        "Tick",
        "ChainSnapshot",
        "FeedStatus",
        "VolSnapshot",
        "TradeIntent",
        "StrategyRecommendations",
        "RiskDecision",
        "ExecuteBasket",
        "CancelOrders",
        "FlattenAll",
        "OrderUpdate",
        "Fill",
        "BasketResult",
        "PortfolioSnapshot",
        "TradingState",
        "Command",
        "Alert",
        "BrokerHealth",
    }
    assert set(EVENT_TYPES) == expected
    for name, cls in EVENT_TYPES.items():
        assert cls.model_fields["type"].default == name


def test_every_type_travels_on_a_known_stream_its_producer_publishes() -> None:
    assert set(STREAM_OF) == set(ALL_EVENT_TYPES)
    published = {name for names in streams.PUBLICATIONS.values() for name in names}
    for cls, stream in STREAM_OF.items():
        assert streams.spec(stream).name == stream
        assert stream in published, cls
        assert cls in EVENTS_ON[stream]
    assert EVENTS_ON[streams.EX_COMMANDS.name] == (
        EVENT_TYPES["ExecuteBasket"],
        EVENT_TYPES["CancelOrders"],
        EVENT_TYPES["FlattenAll"],
    )


def test_event_union_parses_to_the_concrete_type() -> None:
    state = TradingState(
        **ENVELOPE, state=TradingStateKind.PAUSED, previous=TradingStateKind.RUNNING, reason="op", since=T0
    )
    parsed: Event = EVENT_ADAPTER.validate_json(state.model_dump_json())
    assert isinstance(parsed, TradingState)
    assert parsed == state
    assert not parsed.entries_allowed


# ---------------------------------------------------------------------------------------------------
# Non-finite numbers (the property test covers every field of every type; these pin the obvious cases)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scalars_are_rejected(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        tick(day_open=bad)
    with pytest.raises(ValidationError, match="spot"):
        make_chain(chain_fields(spot=bad))
    with pytest.raises(ValidationError, match=r"vix\n  Input should be a finite number"):
        make_chain(chain_fields(vix=bad))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("column", ["strike", "call_bid", "put_ltp"])
def test_non_finite_array_elements_are_rejected(bad: float, column: str) -> None:
    values = list(chain_fields()[column])
    values[1] = bad
    with pytest.raises(ValidationError, match=column):
        make_chain(chain_fields(**{column: values}))


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_non_finite_money_is_rejected(bad: Decimal) -> None:
    with pytest.raises(ValidationError, match="finite"):
        Command(**ENVELOPE, command=CommandKind.SET_CAPITAL, issued_by="ops", reason="r", capital=bad)


def test_non_finite_alert_detail_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"details\.lag"):
        Alert(**ENVELOPE, severity=Severity.WARNING, code="X", message="m", details={"lag": math.nan})
    alert = Alert(
        **ENVELOPE,
        severity=Severity.WARNING,
        code="CONSUMER_LAG",
        message="lag high",
        details={"lag_ms": 1250.5, "group": "risk", "pending": 3, "recovered": False, "note": None},
    )
    assert parse_event(alert.model_dump_json()) == alert


# ---------------------------------------------------------------------------------------------------
# ChainSnapshot
# ---------------------------------------------------------------------------------------------------


def test_valid_chain_is_accepted() -> None:
    snapshot = make_chain(chain_fields())
    assert snapshot.n_strikes == 3
    assert parse_event(snapshot.model_dump_json()) == snapshot


@pytest.mark.parametrize("column", [c for c in CHAIN_COLUMNS if c != "strike"])
def test_unequal_column_lengths_are_rejected_naming_the_column(column: str) -> None:
    short = list(chain_fields()[column])[:-1]
    with pytest.raises(ValidationError, match=rf"column '{column}' has 2 rows but 'strike' has 3"):
        make_chain(chain_fields(**{column: short}))


def test_empty_chain_is_rejected() -> None:
    empty: dict[str, list[Any]] = {name: [] for name in CHAIN_COLUMNS}
    with pytest.raises(ValidationError, match="at least 1 row"):
        make_chain(chain_fields(**empty))


def test_bid_above_ask_is_rejected_unless_flagged_crossed() -> None:
    crossed = chain_fields(put_bid=[110.0, 132.0, None], put_ask=[111.0, 131.0, 160.0])
    with pytest.raises(ValidationError, match=r"put_bid 132.0 > put_ask 131.0 at strike 24000.0 \(row 1\)"):
        make_chain(crossed)
    crossed["put_flags"] = [0, int(CROSSED | WIDE_SPREAD), int(ZERO_BID)]
    snapshot = make_chain(crossed)
    assert snapshot.put_flags[1] & QuoteFlag.CROSSED
    # The flag on the other side does not excuse it.
    other_side = chain_fields(call_bid=[180.0, 152.0, 122.5], put_flags=[0, int(CROSSED), 0])
    with pytest.raises(ValidationError, match=r"call_bid 152\.0 > call_ask 151\.0"):
        make_chain(other_side)


def test_bid_equal_to_ask_is_a_locked_not_crossed_quote() -> None:
    make_chain(chain_fields(call_bid=[181.0, 150.0, 122.5]))


@pytest.mark.parametrize("strikes", [[23_950.0, 23_950.0, 24_050.0], [24_000.0, 23_950.0, 24_050.0]])
def test_strikes_must_strictly_increase(strikes: list[float]) -> None:
    with pytest.raises(ValidationError, match="strictly increasing"):
        make_chain(chain_fields(strike=strikes))


@pytest.mark.parametrize("column", ["call_bid_qty", "put_ask_qty", "call_volume", "put_oi"])
def test_negative_quantities_are_rejected(column: str) -> None:
    values = list(chain_fields()[column])
    values[0] = -1
    with pytest.raises(ValidationError, match=column):
        make_chain(chain_fields(**{column: values}))


def test_zero_price_cannot_stand_in_for_a_missing_quote() -> None:
    with pytest.raises(ValidationError, match="call_bid"):
        make_chain(chain_fields(call_bid=[180.0, 0.0, 122.5]))


def test_unknown_flag_bits_are_rejected() -> None:
    with pytest.raises(ValidationError, match="call_flags"):
        make_chain(chain_fields(call_flags=[0, 128, 0]))


def test_to_numpy_gives_nan_for_missing_quotes_and_round_trips() -> None:
    snapshot = make_chain(chain_fields())
    arrays = snapshot.to_numpy()
    assert arrays.strike.dtype == np.float64
    assert arrays.call_oi.dtype == np.int64
    assert np.isnan(arrays.call_ltp[1])
    assert np.isnan(arrays.put_bid[2])
    assert arrays.put_bid[0] == 110.0
    np.testing.assert_array_equal(arrays.put_flags, [0, 0, int(ZERO_BID)])
    # Fresh arrays: scribbling on them does not touch the frozen event.
    arrays.call_bid[0] = -1.0
    assert snapshot.call_bid[0] == 180.0
    envelope = snapshot.model_dump(exclude={"columns", "type"})
    assert ChainSnapshot.from_arrays(snapshot.to_numpy(), **envelope) == snapshot


def test_from_arrays_rejects_infinity() -> None:
    snapshot = make_chain(chain_fields())
    arrays = snapshot.to_numpy()
    arrays.call_ask[0] = np.inf
    envelope = snapshot.model_dump(exclude={"columns", "type"})
    with pytest.raises(ValidationError, match="call_ask"):
        ChainSnapshot.from_arrays(arrays, **envelope)


def test_sample_chain_is_realistic_and_deterministic() -> None:
    snapshot = sample_chain_snapshot()
    assert snapshot.n_strikes == 121
    assert np.all(np.diff(snapshot.to_numpy().strike) == 50.0)
    assert snapshot.lot_size == 65
    arrays = snapshot.to_numpy()
    atm = int(np.argmin(np.abs(arrays.strike - snapshot.spot)))
    # ATM straddle for ~5 days at 13 % vol is roughly 0.8 * S * σ * √T ≈ 300 points.
    straddle = (arrays.call_bid[atm] + arrays.call_ask[atm] + arrays.put_bid[atm] + arrays.put_ask[atm]) / 2
    assert 200 < straddle < 450
    for side in ("call", "put"):
        bids, asks = getattr(arrays, f"{side}_bid"), getattr(arrays, f"{side}_ask")
        both = ~np.isnan(bids) & ~np.isnan(asks)
        assert np.all(bids[both] <= asks[both])
        assert np.all(getattr(arrays, f"{side}_bid_qty") % 65 == 0)
        # Far wings have no bid and say so.
        no_bid = np.isnan(bids)
        assert no_bid.any()
        assert np.all(getattr(arrays, f"{side}_flags")[no_bid] & ZERO_BID)
    assert not np.isnan(arrays.call_ask).any()
    # Calls fall and puts rise with strike.
    assert np.all(np.diff(arrays.call_ask) <= 0)
    assert np.all(np.diff(arrays.put_ask) >= 0)
    again = sample_chain_snapshot()
    assert again.model_dump(exclude={"event_id", "correlation_id"}) == snapshot.model_dump(
        exclude={"event_id", "correlation_id"}
    )


def test_benchmark_sized_sample_is_about_20_kb() -> None:
    assert 19_000 <= len(sample_chain_snapshot(STRIKES_FOR_20KB).model_dump_json()) <= 21_000


def test_strike_surface_columns_must_match() -> None:
    with pytest.raises(ValidationError, match="column 'put_theta' has 0 rows but 'strike' has 1"):
        StrikeSurface(
            strike=[24_000.0],
            iv_call=[0.13],
            iv_put=[0.14],
            call_flags=[0],
            put_flags=[0],
            call_delta=[0.5],
            call_gamma=[0.001],
            call_vega=[12.0],
            call_theta=[-20.0],
            put_delta=[-0.5],
            put_gamma=[0.001],
            put_vega=[12.0],
            put_theta=[],
        )


def _surface_columns(**override: Any) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "strike": [24_000.0, 24_050.0, 24_100.0],
        "iv_call": [0.13, None, 0.12],
        "iv_put": [0.14, 0.135, None],
        "call_flags": [0, int(IvFlag.NO_QUOTE), 0],
        "put_flags": [0, 0, int(IvFlag.BELOW_INTRINSIC)],
        "call_delta": [0.5, None, 0.4],
        "call_gamma": [0.001, None, 0.001],
        "call_vega": [12.0, None, 11.0],
        "call_theta": [-20.0, None, -19.0],
        "put_delta": [-0.5, -0.45, None],
        "put_gamma": [0.001, 0.001, None],
        "put_vega": [12.0, 12.5, None],
        "put_theta": [-20.0, -21.0, None],
    }
    return columns | override


def test_strike_surface_is_packed_with_nan_for_unknown() -> None:
    surface = StrikeSurface(**_surface_columns())
    assert isinstance(surface.iv_call, np.ndarray)
    assert math.isnan(surface.iv_call[1])
    assert math.isnan(surface.put_theta[2])
    assert surface.call_flags.tolist() == [0, int(IvFlag.NO_QUOTE), 0]
    with pytest.raises(ValueError, match="read-only"):
        surface.iv_put[0] = 0.2  # views of an immutable block
    payload = surface.model_dump_json()
    assert set(json.loads(payload)["columns"]) == {"rows", "f8", "i8"}
    again = StrikeSurface.model_validate_json(payload)
    assert again == surface
    assert again.columns.as_lists() == _surface_columns()
    # Arrays (NaN for unknown) give the same surface as lists (None for unknown).
    arrays = {
        name: np.array([np.nan if v is None else v for v in column])
        for name, column in _surface_columns().items()
        if name not in ("call_flags", "put_flags")
    }
    flags = {name: np.array(_surface_columns()[name]) for name in ("call_flags", "put_flags")}
    assert StrikeSurface(**arrays, **flags) == surface


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"strike": [24_000.0, 24_000.0, 24_100.0]}, "strictly increasing"),
        ({"strike": [24_000.0, None, 24_100.0]}, "strike is missing"),
        ({"iv_call": [0.13, 0.0, 0.12]}, "iv_call must be > 0"),
        ({"iv_put": [0.13, math.inf, 0.12]}, "iv_put must be > 0 and finite"),
        ({"put_vega": [1.0, -math.inf, 1.0]}, "put_vega is infinite"),
        ({"call_gamma": [1.0, math.nan, 1.0]}, "an unknown value is None"),
        ({"put_flags": [0, 128, 0]}, "bits outside IvFlag"),
        ({"call_flags": [0, -1, 0]}, "bits outside IvFlag"),
        ({"call_flags": [0, True, 0]}, "must be an integer"),
    ],
)
def test_strike_surface_rejects_bad_columns(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StrikeSurface(**_surface_columns(**override))


def test_strike_surface_wire_form_is_checked() -> None:
    wire = json.loads(StrikeSurface(**_surface_columns()).model_dump_json())
    floats = np.full((len(SURFACE_FLOAT_COLUMNS), 2), 0.1)
    floats[0] = [24_000.0, 24_050.0]
    floats[1, 1] = -0.1  # iv_call
    poisoned = {
        "rows": 2,
        "f8": base64.b64encode(floats.astype("<f8").tobytes()).decode(),
        "i8": base64.b64encode(np.zeros((2, 2), dtype="<i8").tobytes()).decode(),
    }
    with pytest.raises(ValidationError, match="iv_call must be > 0"):
        StrikeSurface.model_validate_json(json.dumps({"columns": poisoned}))
    wire["columns"]["rows"] = 2
    with pytest.raises(ValidationError, match="bytes"):
        StrikeSurface.model_validate_json(json.dumps(wire))


# ---------------------------------------------------------------------------------------------------
# Event ids
# ---------------------------------------------------------------------------------------------------


def test_event_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_event_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    ints = [uuid.UUID(i).int for i in ids]
    assert all(a < b for a, b in itertools.pairwise(ints))
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert abs(event_id_time(ids[-1]) - datetime.now(IST)) < timedelta(seconds=5)


def test_event_ids_stay_ordered_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now_ns = [2_000_000_000_000 * 1_000_000]

    def fake_time_ns() -> int:
        return now_ns[0]

    monkeypatch.setattr(base, "_wall_ns", fake_time_ns)
    monkeypatch.setattr(base, "_last_ms", -1)
    first = new_event_id()
    now_ns[0] -= 5_000 * 1_000_000  # NTP steps the clock back five seconds
    second = new_event_id()
    now_ns[0] += 10_000 * 1_000_000
    third = new_event_id()
    assert first < second < third
    assert event_id_time(second) == event_id_time(first)
    assert event_id_time(third) > event_id_time(first)


def test_event_id_time_rejects_other_uuid_versions() -> None:
    with pytest.raises(ValueError, match="not a UUIDv7"):
        event_id_time(str(uuid.uuid4()))


# ---------------------------------------------------------------------------------------------------
# Client order ids and execution commands
# ---------------------------------------------------------------------------------------------------


def test_client_order_id_is_deterministic_short_and_distinct() -> None:
    # Pinned: a code change that altered ids would orphan in-flight orders across a restart.
    assert client_order_id("b1", 0, 0) == "vg496165adab5d54945a"
    assert client_order_id("b1", 0, 0) == client_order_id("b1", 0, 0)
    ids = {
        client_order_id(f"basket-{b}", leg, attempt)
        for b in range(50)
        for leg in range(8)
        for attempt in range(5)
    }
    assert len(ids) == 50 * 8 * 5
    for cid in ids:
        assert len(cid) == CLIENT_ORDER_ID_LENGTH
        assert cid.isalnum()
    # The separator keeps ("b1", 1, 0) and ("b", 11, 0)-style concatenations apart.
    assert client_order_id("b1", 1, 0) != client_order_id("b", 1, 10)


@pytest.mark.parametrize(
    ("basket_id", "leg_index", "attempt"), [("", 0, 0), ("b", -1, 0), ("b", 8, 0), ("b", 0, 100)]
)
def test_client_order_id_rejects_bad_arguments(basket_id: str, leg_index: int, attempt: int) -> None:
    with pytest.raises(ValueError, match=r"basket_id|leg_index|attempt"):
        client_order_id(basket_id, leg_index, attempt)


def test_basket_hedges_first_is_enforced() -> None:
    good = basket([basket_leg("b-1", 0, Side.BUY, 0, 23_500.0), basket_leg("b-1", 1, Side.SELL, 1, 23_700.0)])
    assert [leg.side for leg in good.legs_in_order()] == [Side.BUY, Side.SELL]
    with pytest.raises(ValidationError, match="hedges first"):
        basket([basket_leg("b-1", 0, Side.BUY, 1, 23_500.0), basket_leg("b-1", 1, Side.SELL, 0, 23_700.0)])
    with pytest.raises(ValidationError, match="hedges first"):
        basket([basket_leg("b-1", 0, Side.BUY, 0, 23_500.0), basket_leg("b-1", 1, Side.SELL, 0, 23_700.0)])


def test_basket_client_order_ids_must_derive_from_the_basket() -> None:
    with pytest.raises(ValidationError, match="client_order_id"):
        basket([basket_leg("other", 0, Side.BUY, 0, 23_500.0)])
    with pytest.raises(ValidationError, match=r"leg_index values must be 0\.\.1"):
        basket([basket_leg("b-1", 0, Side.BUY, 0, 23_500.0), basket_leg("b-1", 2, Side.SELL, 1, 23_700.0)])


def test_quantities_must_be_whole_lots() -> None:
    odd = BasketLeg(
        **leg(Side.BUY, 23_500.0, quantity=100).model_dump(),
        leg_index=0,
        sequence=0,
        client_order_id=client_order_id("b-1", 0, 0),
    )
    with pytest.raises(ValidationError, match="not a multiple of lot_size 65"):
        basket([odd])


def test_exit_basket_needs_reason_and_trade() -> None:
    legs = [basket_leg("b-1", 0, Side.BUY, 0, 23_700.0)]
    with pytest.raises(ValidationError, match="EXIT needs exit_reason and trade_id"):
        basket(legs, purpose=IntentKind.EXIT)
    basket(legs, purpose=IntentKind.EXIT, exit_reason=ExitReason.KILL_SWITCH, trade_id="t-1", intent_id=None)


def test_trade_intent_rules() -> None:
    fields: dict[str, Any] = {
        **ENVELOPE,
        "intent_id": "i-1",
        "kind": IntentKind.ENTRY,
        "bucket": Bucket.WEEKLY,
        "structure": Structure.CREDIT_SPREAD,
        "lot_size": 65,
        "legs": [leg(Side.BUY, 23_500.0), leg(Side.SELL, 23_700.0)],
        "expected_credit": Decimal("3250.00"),
        "max_loss": Decimal("22750.00"),
        "valid_until": T0 + timedelta(seconds=30),
        "reason": "IV rich, put skew",
    }
    intent = TradeIntent(**fields)
    assert parse_event(intent.model_dump_json()) == intent
    assert '"expected_credit":"3250.00"' in intent.model_dump_json()
    with pytest.raises(ValidationError, match="EXIT needs exit_reason"):
        TradeIntent(**{**fields, "kind": IntentKind.EXIT})
    with pytest.raises(ValidationError, match="ENTRY has no exit_reason"):
        TradeIntent(**{**fields, "exit_reason": ExitReason.STOP_LOSS})
    with pytest.raises(ValidationError, match="valid_until is before ts_event"):
        TradeIntent(**{**fields, "valid_until": T0 - timedelta(seconds=1)})
    with pytest.raises(ValidationError, match="legs"):
        TradeIntent(**{**fields, "legs": []})


def test_risk_decision_rules() -> None:
    common: dict[str, Any] = {**ENVELOPE, "intent_id": "i-1", "checks": [], "requested_lots": 2}
    RiskDecision(**common, approved=True, reasons=[], approved_lots=1, basket_id="b-1")
    with pytest.raises(ValidationError, match="rejection needs at least one reason"):
        RiskDecision(**common, approved=False, reasons=[], approved_lots=0)
    with pytest.raises(ValidationError, match="approval needs a basket_id"):
        RiskDecision(**common, approved=True, reasons=[], approved_lots=1)
    with pytest.raises(ValidationError, match="exceeds requested_lots"):
        RiskDecision(**common, approved=True, reasons=[], approved_lots=3, basket_id="b-1")


def test_order_update_v1_reads_as_slice_zero_and_v2_carries_the_slice() -> None:
    update = OrderUpdate(
        **ENVELOPE,
        client_order_id=client_order_id("b-1", 0, 0),
        broker_order_id="1000000000000002",
        basket_id="b-1",
        leg_index=0,
        attempt=0,
        slice_index=1,
        instrument_key="NSE_FO|1",
        side=Side.SELL,
        quantity=1755,
        limit_price=Decimal("42.05"),
        status=OrderStatus.OPEN,
        filled_qty=0,
        avg_price=None,
    )
    assert update.schema_version == 2
    assert parse_event(update.model_dump_json()) == update
    v1 = json.loads(update.model_dump_json())
    v1["schema_version"] = 1
    del v1["slice_index"]
    old = parse_event(json.dumps(v1))
    assert isinstance(old, OrderUpdate)
    assert old.slice_index == 0
    assert old.schema_version == 1
    v1["schema_version"] = 3
    with pytest.raises(ValidationError, match="OrderUpdate schema_version 3 is newer than this consumer"):
        parse_event(json.dumps(v1))


def test_basket_result_v2_carries_fill_quality_and_v1_reads_with_it_unknown() -> None:
    result = events.BasketResult(
        **ENVELOPE,
        basket_id="b-1",
        intent_id="i-1",
        status=events.BasketStatus.FILLED,
        legs=[
            events.LegResult(
                leg_index=0,
                client_order_id=client_order_id("b-1", 0, 0),
                attempts=1,
                status=OrderStatus.FILLED,
                filled_qty=65,
                avg_price=Decimal("42.10"),
                mid_at_submission=Decimal("42.00"),
                slippage=Decimal("0.10"),
                time_to_fill_s=2.5,
            )
        ],
        net_premium=Decimal("-2736.50"),
        fees=Decimal("20"),
    )
    assert result.schema_version == 2
    assert parse_event(result.model_dump_json()) == result
    v1 = json.loads(result.model_dump_json())
    v1["schema_version"] = 1
    for leg in v1["legs"]:
        for field in ("mid_at_submission", "slippage", "time_to_fill_s"):
            del leg[field]
    old = parse_event(json.dumps(v1))
    assert isinstance(old, events.BasketResult)
    assert old.schema_version == 1
    assert old.legs[0].slippage is None
    assert old.legs[0].time_to_fill_s is None
    # Slippage is measured from a mid: without one it cannot be stated.
    bad = json.loads(result.model_dump_json())
    bad["legs"][0]["mid_at_submission"] = None
    with pytest.raises(ValidationError, match="slippage needs"):
        parse_event(json.dumps(bad))


def test_order_update_fill_consistency() -> None:
    common: dict[str, Any] = {
        **ENVELOPE,
        "client_order_id": client_order_id("b-1", 0, 0),
        "broker_order_id": None,
        "basket_id": "b-1",
        "leg_index": 0,
        "attempt": 0,
        "instrument_key": "NSE_FO|1",
        "side": Side.SELL,
        "quantity": 130,
        "limit_price": Decimal("42.05"),
    }
    OrderUpdate(**common, status=OrderStatus.UNKNOWN, filled_qty=0, avg_price=None)
    OrderUpdate(**common, status=OrderStatus.CANCELLED, filled_qty=65, avg_price=Decimal("42.10"))
    with pytest.raises(ValidationError, match="FILLED with filled_qty below quantity"):
        OrderUpdate(**common, status=OrderStatus.FILLED, filled_qty=65, avg_price=Decimal("42.10"))
    with pytest.raises(ValidationError, match="PARTIALLY_FILLED"):
        OrderUpdate(**common, status=OrderStatus.PARTIALLY_FILLED, filled_qty=0, avg_price=None)
    with pytest.raises(ValidationError, match="exceeds quantity"):
        OrderUpdate(**common, status=OrderStatus.OPEN, filled_qty=195, avg_price=Decimal("42.10"))
    with pytest.raises(ValidationError, match="avg_price is present exactly when"):
        OrderUpdate(**common, status=OrderStatus.OPEN, filled_qty=0, avg_price=Decimal("42.10"))


def test_command_arguments() -> None:
    capital = Decimal("2000000")
    Command(**ENVELOPE, command=CommandKind.SET_CAPITAL, issued_by="ops", reason="r", capital=capital)
    Command(**ENVELOPE, command=CommandKind.FLATTEN, issued_by="ops", reason="r", bucket=Bucket.INTRADAY)
    with pytest.raises(ValidationError, match="SET_CAPITAL needs capital"):
        Command(**ENVELOPE, command=CommandKind.SET_CAPITAL, issued_by="ops", reason="r")
    with pytest.raises(ValidationError, match="KILL_SWITCH takes no capital"):
        Command(**ENVELOPE, command=CommandKind.KILL_SWITCH, issued_by="ops", reason="r", capital=Decimal(1))
    with pytest.raises(ValidationError, match="PAUSE takes no bucket"):
        Command(**ENVELOPE, command=CommandKind.PAUSE, issued_by="ops", reason="r", bucket=Bucket.WEEKLY)


def test_alert_code_must_be_upper_snake() -> None:
    with pytest.raises(ValidationError, match="UPPER_SNAKE"):
        Alert(**ENVELOPE, severity=Severity.INFO, code="consumer lag", message="m")


def test_version_1_chain_snapshots_still_read() -> None:
    # Schema 2 of ChainSnapshot added the OI_MISSING and VOLUME_MISSING flags: version 1 still reads.
    chain = json.loads(sample_chain_snapshot(5).model_dump_json())
    assert chain["schema_version"] == 2
    chain["schema_version"] = 1
    assert parse_event(json.dumps(chain)).schema_version == 1
