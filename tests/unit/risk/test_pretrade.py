"""Pre-trade checks: every check with its value and limit; the default limits against standard trades."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy.stats import norm

from volguard_common.clock import IST
from volguard_common.events import (
    Bucket,
    IntentKind,
    OptionType,
    OrderLeg,
    RiskDecision,
    Side,
    Structure,
    TradeIntent,
    TradingCause,
    client_order_id,
)
from volguard_common.quant import black76
from volguard_common.quant.book_greeks import book_greeks
from volguard_common.quant.margin import MarginParameters, ScanRanges
from volguard_common.quant.stress import OptionLeg, stress_pnl
from volguard_risk.domain.pretrade import (
    Assessment,
    BookLeg,
    Context,
    LegMarket,
    MarketView,
    RiskLimits,
    assess,
    decision,
    orders_needed,
)
from volguard_risk.domain.trading_state import TradingStateMachine

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
SPOT = 24000.0
VOL = 0.13
LOT = 65
LIMITS = RiskLimits()
PARAMS = MarginParameters()
RANGES = ScanRanges(price=0.093, vol=0.04)
ALLOCATED = {
    Bucket.WEEKLY: Decimal(800000),
    Bucket.MONTHLY: Decimal(1000000),
    Bucket.INTRADAY: Decimal(200000),
}
# Each bucket's expiry and years to it from NOW (the intraday bucket trades the nearest weekly).
EXPIRIES = {
    Bucket.INTRADAY: (date(2026, 12, 8), 1.25 / 365),
    Bucket.WEEKLY: (date(2026, 12, 15), 8.25 / 365),
    Bucket.MONTHLY: (date(2026, 12, 29), 22.25 / 365),
}
# Strategy's standard condor (strategy domain config): shorts at 25 / 16 / 12 delta for intraday /
# weekly / monthly, wings half the expected move capped so one lot's width fits the per-trade budget
# (Rs 4,000 / 8,000 / 10,000 over 65 units) and floored to the 50-point grid: 50 / 100 / 150 points.
SHORT_DELTA = {Bucket.INTRADAY: 0.25, Bucket.WEEKLY: 0.16, Bucket.MONTHLY: 0.12}
WING = {Bucket.INTRADAY: 50, Bucket.WEEKLY: 100, Bucket.MONTHLY: 150}


def strike_at_delta(delta: float, t: float, call: bool) -> int:
    d1 = norm.ppf(delta) if call else norm.ppf(1 - delta)
    strike = SPOT * math.exp(-d1 * VOL * math.sqrt(t) + 0.5 * VOL * VOL * t)
    return int(round(strike / 50) * 50)


def key(expiry: date, strike: int, kind: OptionType) -> str:
    return f"NSE_FO|{expiry:%y%m%d}{strike}{kind.value}"


def mid(strike: int, t: float, kind: OptionType) -> Decimal:
    value = float(black76.price(SPOT, float(strike), t, VOL, kind is OptionType.CE, 1.0))
    return Decimal(str(round(value, 2)))


def leg(bucket: Bucket, strike: int, kind: OptionType, side: Side, lots: int) -> OrderLeg:
    expiry, t = EXPIRIES[bucket]
    return OrderLeg(
        instrument_key=key(expiry, strike, kind),
        expiry=expiry,
        strike=float(strike),
        option_type=kind,
        side=side,
        quantity=lots * LOT,
        limit_price=mid(strike, t, kind),
    )


def intent(
    bucket: Bucket, legs: list[OrderLeg], structure: Structure, max_loss: Decimal | None, n: int = 1
) -> TradeIntent:
    credit = sum(
        (lg.limit_price * lg.quantity * (1 if lg.side is Side.SELL else -1) for lg in legs), Decimal(0)
    )
    return TradeIntent(
        ts_event=NOW,
        source="strategy/test",
        intent_id=f"intent-{bucket.value.lower()}-{n}",
        kind=IntentKind.ENTRY,
        bucket=bucket,
        structure=structure,
        lot_size=LOT,
        legs=legs,
        expected_credit=credit,
        max_loss=max_loss,
        valid_until=NOW + timedelta(seconds=30),
        reason="test",
    )


def condor(bucket: Bucket, lots: int = 1) -> TradeIntent:
    _, t = EXPIRIES[bucket]
    put = strike_at_delta(SHORT_DELTA[bucket], t, call=False)
    call = strike_at_delta(SHORT_DELTA[bucket], t, call=True)
    wing = WING[bucket]
    legs = [
        leg(bucket, put - wing, OptionType.PE, Side.BUY, lots),
        leg(bucket, put, OptionType.PE, Side.SELL, lots),
        leg(bucket, call, OptionType.CE, Side.SELL, lots),
        leg(bucket, call + wing, OptionType.CE, Side.BUY, lots),
    ]
    credit = sum(
        (lg.limit_price * lg.quantity * (1 if lg.side is Side.SELL else -1) for lg in legs), Decimal(0)
    )
    return intent(bucket, legs, Structure.IRON_CONDOR, Decimal(wing * LOT * lots) - credit)


def strangle(bucket: Bucket, lots: int, delta: float = 0.30) -> TradeIntent:
    _, t = EXPIRIES[bucket]
    legs = [
        leg(bucket, strike_at_delta(delta, t, call=False), OptionType.PE, Side.SELL, lots),
        leg(bucket, strike_at_delta(delta, t, call=True), OptionType.CE, Side.SELL, lots),
    ]
    return intent(bucket, legs, Structure.STRANGLE, None)


def market_for(*intents: TradeIntent) -> MarketView:
    legs: dict[str, LegMarket] = {}
    for proposal in intents:
        _, t = EXPIRIES[proposal.bucket]
        for lg in proposal.legs:
            legs[lg.instrument_key] = LegMarket(
                mid(int(lg.strike), t, lg.option_type), NOW - timedelta(seconds=1), VOL, SPOT, t, lg.expiry
            )
    return MarketView(
        now=NOW,
        spot=SPOT,
        entries_open=True,
        window="entries 09:30-15:25 IST",
        feed_at=NOW - timedelta(seconds=1),
        vol_at=NOW - timedelta(seconds=5),
        legs=legs,
        scan_ranges=RANGES,
        freeze_quantity=1800,
    )


def context(book: list[BookLeg], bucket: Bucket, free: Decimal | None = None) -> Context:
    return Context(
        book=book,
        bucket_allocated=ALLOCATED[bucket],
        bucket_free=ALLOCATED[bucket] if free is None else free,
        margin_available=Decimal(2000000),
        day_pnl=Decimal(0),
        orders_last_minute=0,
        orders_last_30_minutes=0,
        seen_intent=False,
    )


def as_book(proposal: TradeIntent) -> list[BookLeg]:
    return [
        BookLeg(
            lg.instrument_key,
            lg.strike,
            lg.option_type is OptionType.CE,
            lg.quantity if lg.side is Side.BUY else -lg.quantity,
        )
        for lg in proposal.legs
    ]


def check(assessment: Assessment, name: str) -> tuple[bool, object, object]:
    found = next(c for c in assessment.checks if c.name == name)
    return found.passed, found.value, found.limit


def test_the_default_limits_admit_one_standard_condor_in_each_bucket() -> None:
    condors = [condor(bucket) for bucket in (Bucket.WEEKLY, Bucket.MONTHLY, Bucket.INTRADAY)]
    market = market_for(*condors)
    book: list[BookLeg] = []
    state = TradingStateMachine()
    for proposal in condors:
        result = assess(proposal, state, market, context(book, proposal.bucket), LIMITS, PARAMS)
        assert [c.name for c in result.failed] == []
        book += as_book(proposal)
    greeks = book_greeks(
        [
            OptionLeg(b.strike, market.legs[b.instrument_key].t, b.is_call, b.quantity, VOL, SPOT)
            for b in book
        ],
        SPOT,
    )
    # The three together stay inside the vega limit with room: the wings offset most of the shorts'.
    assert abs(greeks.vega) < LIMITS.max_vega


def test_a_twenty_lot_strangle_is_rejected_by_the_greek_limits() -> None:
    proposal = strangle(Bucket.WEEKLY, 20)
    result = assess(
        proposal, TradingStateMachine(), market_for(proposal), context([], Bucket.WEEKLY), LIMITS, PARAMS
    )
    passed, vega, limit = check(result, "vega")
    assert not passed
    # Twenty lots of a 30-delta weekly strangle: about -25,000 Rs per vol point against 1,000.
    assert isinstance(vega, float)
    assert isinstance(limit, float)
    assert abs(vega) > 10 * limit


def test_a_vega_breach_is_rejected_with_the_numbers() -> None:
    proposal = strangle(Bucket.MONTHLY, 2, delta=0.2)
    result = assess(
        proposal, TradingStateMachine(), market_for(proposal), context([], Bucket.MONTHLY), LIMITS, PARAMS
    )
    verdict, basket = decision(proposal, result, at=NOW, source="risk/test")
    vega = next(c for c in verdict.checks if c.name == "vega")
    assert basket is None
    assert not verdict.approved
    assert vega.value is not None
    assert vega.value < -LIMITS.max_vega
    assert vega.limit == LIMITS.max_vega
    assert any(r.startswith("vega: book vega after the trade") for r in verdict.reasons)


def test_an_approved_condor_becomes_one_basket_wings_first_with_deterministic_order_ids() -> None:
    proposal = condor(Bucket.WEEKLY)
    result = assess(
        proposal, TradingStateMachine(), market_for(proposal), context([], Bucket.WEEKLY), LIMITS, PARAMS
    )
    verdict, basket = decision(proposal, result, at=NOW, source="risk/test")
    assert basket is not None
    assert verdict.basket_id == basket.basket_id
    assert [lg.side for lg in basket.legs_in_order()] == [Side.BUY, Side.BUY, Side.SELL, Side.SELL]
    assert [lg.client_order_id for lg in basket.legs] == [
        client_order_id(basket.basket_id, i, 0) for i in range(4)
    ]
    again, _ = decision(proposal, result, at=NOW, source="risk/other-replica")
    assert again.basket_id == verdict.basket_id
    assert verdict.approved_lots == 1


def test_capital_to_reserve_is_the_margin_the_trade_adds_and_must_fit_the_free_capital() -> None:
    proposal = condor(Bucket.INTRADAY)
    market = market_for(proposal)
    free = Decimal(1000)
    result = assess(
        proposal, TradingStateMachine(), market, context([], Bucket.INTRADAY, free), LIMITS, PARAMS
    )
    passed, value, limit = check(result, "bucket_capital")
    assert not passed
    assert value == result.reserve
    assert limit == free


def test_no_entry_while_paused_but_the_checks_still_say_why() -> None:
    state = TradingStateMachine()
    state.raise_cause(TradingCause.OPERATOR_PAUSE, NOW, "test")
    proposal = condor(Bucket.WEEKLY)
    result = assess(proposal, state, market_for(proposal), context([], Bucket.WEEKLY), LIMITS, PARAMS)
    assert [c.name for c in result.failed] == ["trading_state"]


def test_stale_data_unknown_day_pnl_and_an_expired_intent_each_fail_their_check() -> None:
    proposal = condor(Bucket.WEEKLY)
    market = replace(market_for(proposal), now=NOW + timedelta(seconds=40), vol_at=None)
    ctx = replace(context([], Bucket.WEEKLY), day_pnl=None)
    result = assess(proposal, TradingStateMachine(), market, ctx, LIMITS, PARAMS)
    assert {c.name for c in result.failed} == {
        "valid_until",
        "leg_prices_fresh",
        "feed_fresh",
        "vol_fresh",
        "daily_loss_headroom",
    }


def test_orders_are_counted_after_freeze_slicing() -> None:
    # 40 lots = 2,600 units: a slice of 27 lots (1,755 units) and one of 13, on each of two legs.
    assert orders_needed(strangle(Bucket.WEEKLY, 40), 1800) == 4


def test_the_order_budget_counts_what_was_already_sent_this_minute() -> None:
    proposal = condor(Bucket.WEEKLY)
    ctx = replace(context([], Bucket.WEEKLY), orders_last_minute=LIMITS.orders_per_minute - 3)
    result = assess(proposal, TradingStateMachine(), market_for(proposal), ctx, LIMITS, PARAMS)
    assert check(result, "order_budget") == (False, LIMITS.orders_per_minute + 1, LIMITS.orders_per_minute)


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    proposals=st.lists(
        st.tuples(
            st.sampled_from(list(Bucket)),
            st.sampled_from(["condor", "strangle"]),
            st.integers(1, 12),
            st.floats(0.10, 0.40),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_no_approved_intent_breaches_any_limit(proposals: list[tuple[Bucket, str, int, float]]) -> None:
    """Whatever is proposed, the book the approvals build stays inside every limit, recomputed here."""
    made = [
        (condor(b, lots) if kind == "condor" else strangle(b, lots, delta))
        for b, kind, lots, delta in proposals
    ]
    made = [replace_id(p, n) for n, p in enumerate(made)]
    market = market_for(*made)
    book: list[BookLeg] = []
    for proposal in made:
        result = assess(
            proposal, TradingStateMachine(), market, context(book, proposal.bucket), LIMITS, PARAMS
        )
        if not result.approved:
            continue
        book += as_book(proposal)
        legs = [
            OptionLeg(b.strike, market.legs[b.instrument_key].t, b.is_call, b.quantity, VOL, SPOT)
            for b in book
        ]
        greeks = book_greeks(legs, SPOT)
        assert abs(greeks.delta) <= LIMITS.max_delta
        assert abs(greeks.gamma) <= LIMITS.max_gamma
        assert abs(greeks.vega) <= LIMITS.max_vega
        assert greeks.theta >= LIMITS.min_theta
        worst = min(s.pnl for s in stress_pnl(legs))
        assert -worst <= float(LIMITS.stress_budget)


def replace_id(proposal: TradeIntent, n: int) -> TradeIntent:
    return proposal.model_copy(update={"intent_id": f"{proposal.intent_id}-{n}"})


def test_rupee_checks_travel_exact_in_the_decision_and_a_version_1_decision_still_reads() -> None:
    proposal = condor(Bucket.INTRADAY)
    result = assess(
        proposal, TradingStateMachine(), market_for(proposal), context([], Bucket.INTRADAY), LIMITS, PARAMS
    )
    verdict, _ = decision(proposal, result, at=NOW, source="risk/test")
    capital = next(c for c in verdict.checks if c.name == "bucket_capital")
    assert (capital.exact_value, capital.exact_limit, capital.unit) == (
        result.reserve,
        ALLOCATED[Bucket.INTRADAY],
        "Rs",
    )
    old = json.loads(verdict.model_dump_json())
    old["schema_version"] = 1
    for check_row in old["checks"]:
        for field in ("unit", "exact_value", "exact_limit"):
            check_row.pop(field)
    assert RiskDecision.model_validate_json(json.dumps(old)).checks[0].exact_value is None


def test_a_book_leg_past_its_expiry_rejects_the_intent_with_the_reason_instead_of_raising() -> None:
    proposal = condor(Bucket.WEEKLY)
    market = market_for(proposal)
    expired = LegMarket(
        Decimal("1.00"), NOW - timedelta(seconds=1), VOL, SPOT, 0.0, NOW.date() - timedelta(days=1)
    )
    market = replace(market, legs={**market.legs, "NSE_FO|expired": expired})
    book = [BookLeg("NSE_FO|expired", 24000.0, True, -LOT)]
    assessment = assess(proposal, TradingStateMachine(), market, context(book, Bucket.WEEKLY), LIMITS, PARAMS)
    assert not assessment.approved
    [failed] = assessment.failed
    assert failed.name == "assessment"
    assert "a leg expired" in failed.message
    verdict, basket = decision(proposal, assessment, at=NOW, source="risk/test")
    assert basket is None
    assert verdict.reasons == [f"assessment: {failed.message}"]
