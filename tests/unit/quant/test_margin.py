"""SPAN-style margin against the 16 scenarios computed by hand, the expiry-day rules, and properties."""

from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volguard_common.quant import _reference_margin as ref
from volguard_common.quant import sabr
from volguard_common.quant._reference import black76_price
from volguard_common.quant.margin import (
    EXPIRY_DAY_ELM,
    NO_CALENDAR_BENEFIT_ON_EXPIRY_DAY,
    VOL_FLOOR,
    MarginLeg,
    MarginParameters,
    ScanRanges,
    leg_on_smile,
    portfolio_margin,
    risk_arrays,
    scan_ranges,
)
from volguard_common.settings import Settings

UNDERLYING = 24_000.0
FORWARD = 24_010.0
# Tuesday 7 April 2026 is a weekly expiry; the next one moves to Monday 13 April (14 April is a holiday).
TODAY = date(2026, 4, 7)
EXPIRY = date(2026, 4, 13)
T = 6 / 365
DISCOUNT = math.exp(-0.065 * T)
PARAMS = MarginParameters()
# Daily EWMA vol 0.9 %: 6 x sqrt(2) x 0.9 % = 7.6 %, below the 9.3 % floor; annual 14 %: 25 % of it is
# 3.5 points, below the 4-point floor.
RANGES = scan_ranges(0.009, 0.14, PARAMS)
SMILE = sabr.SabrFit(
    alpha=sabr.alpha_from_atm(0.13, FORWARD, T, 0.5, -0.35, 1.2),
    beta=0.5,
    rho=-0.35,
    nu=1.2,
    rmse=0.0,
    converged=True,
    iterations=0,
    n_points=20,
    n_outliers=0,
)


def leg(strike: float, is_call: bool, quantity: float, expiry: date = EXPIRY, t: float = T) -> MarginLeg:
    return leg_on_smile(strike, expiry, is_call, quantity, FORWARD, t, SMILE, math.exp(-0.065 * t))


STRANGLE = [leg(23_400, False, -65), leg(24_600, True, -65)]
CONDOR = [*STRANGLE, leg(23_000, False, 65), leg(25_000, True, 65)]
BULL_PUT_SPREAD = [leg(23_600, False, -65), leg(23_400, False, 65)]

# NSE Clearing's 16 scenarios written out: (price move x 9.3 %, vol move x 4 points, share of loss).
HAND_SCENARIOS = [
    (0.0, 0.04, 1.0), (0.0, -0.04, 1.0),
    (0.031, 0.04, 1.0), (0.031, -0.04, 1.0), (-0.031, 0.04, 1.0), (-0.031, -0.04, 1.0),
    (0.062, 0.04, 1.0), (0.062, -0.04, 1.0), (-0.062, 0.04, 1.0), (-0.062, -0.04, 1.0),
    (0.093, 0.04, 1.0), (0.093, -0.04, 1.0), (-0.093, 0.04, 1.0), (-0.093, -0.04, 1.0),
    (0.186, 0.0, 0.35), (-0.186, 0.0, 0.35),
]  # fmt: skip


def by_hand(legs: list[MarginLeg]) -> tuple[float, float, float]:
    """(SPAN, exposure, worst scenario's loss) scenario by scenario with textbook Black-76."""

    def value(x: MarginLeg, forward: float, vol: float) -> float:
        return black76_price(forward, x.strike, x.t, vol, x.is_call, x.discount)

    losses = []
    for move, vol_move, share in HAND_SCENARIOS:
        loss = 0.0
        for x in legs:
            now = value(x, x.forward, x.vol)
            after = value(x, x.forward * (1.0 + move), max(x.vol + vol_move, 0.01))
            loss += share * x.quantity * (now - after)
        losses.append(loss)
    scanning = max(max(losses), 0.0)
    net_option_value = sum(x.quantity * value(x, x.forward, x.vol) for x in legs)
    uncovered = 0.0
    for is_call in (True, False):
        net = sum(x.quantity for x in legs if x.is_call == is_call)
        uncovered += max(-net, 0.0)
    short_option_minimum = 0.03 * UNDERLYING * uncovered
    span = max(max(scanning, short_option_minimum) - net_option_value, 0.0)
    exposure = 0.02 * UNDERLYING * sum(-x.quantity for x in legs if x.quantity < 0)
    return span, exposure, scanning


def test_scan_ranges_follow_nse_clearing_with_floors() -> None:
    assert isinstance(RANGES, ScanRanges)
    assert (RANGES.price, RANGES.vol) == (pytest.approx(0.093), pytest.approx(0.04))
    # A stormy market: 6 x sqrt(2) x 1.5 % = 12.7 % beats the floor; 25 % of 30 % vol = 7.5 points.
    stormy = scan_ranges(0.015, 0.30, PARAMS)
    assert stormy.price == pytest.approx(6 * math.sqrt(2) * 0.015)
    assert stormy.vol == pytest.approx(0.075)


def test_margin_parameters_default_to_the_settings_defaults() -> None:
    assert MarginParameters.from_settings(Settings()) == PARAMS


@pytest.mark.parametrize("legs", [STRANGLE, CONDOR, BULL_PUT_SPREAD], ids=["strangle", "condor", "bull_put"])
def test_margin_reproduces_the_hand_computed_sixteen_scenarios(legs: list[MarginLeg]) -> None:
    margin = portfolio_margin(legs, UNDERLYING, RANGES, TODAY, PARAMS)
    span, exposure, scanning = by_hand(legs)
    assert margin.scanning_risk == pytest.approx(scanning, rel=1e-9)
    assert margin.span == pytest.approx(span, rel=1e-9)
    assert margin.exposure_margin == pytest.approx(exposure, rel=1e-12)
    assert margin.expiry_day_elm == 0.0
    assert margin.total == pytest.approx(span + exposure, rel=1e-9)


def test_the_condors_margin_is_far_below_the_strangles() -> None:
    strangle = portfolio_margin(STRANGLE, UNDERLYING, RANGES, TODAY, PARAMS)
    condor = portfolio_margin(CONDOR, UNDERLYING, RANGES, TODAY, PARAMS)
    # The wings cap the scanned loss: the condor's SPAN is at most the wider wing (400 points x 65).
    assert condor.span <= 400 * 65
    assert condor.span < 0.3 * strangle.span
    assert strangle.short_option_minimum == pytest.approx(0.03 * UNDERLYING * 130)
    assert condor.short_option_minimum == 0.0


def test_the_short_loses_in_the_scenarios_that_move_against_it() -> None:
    arrays = risk_arrays([leg(23_400, False, -65)], RANGES)
    assert arrays.shape == (1, 16)
    # The short put loses most when the index falls a full scan range with vol up (scenario 13);
    # a 2-range fall counts at 35 %.
    assert int(arrays[0].argmax()) + 1 == 13
    assert arrays[0, 15] > 0.0


def test_expiry_day_elm_applies_to_shorts_on_their_expiry_day_only() -> None:
    near = [
        leg(23_600, False, -65, expiry=TODAY, t=0.25 / 365),
        leg(23_400, False, 65, expiry=TODAY, t=0.25 / 365),
    ]
    next_week = [leg(23_400, False, -65)]
    margin = portfolio_margin(near + next_week, UNDERLYING, RANGES, TODAY, PARAMS)
    # Only the short expiring today: 2 % of 24,000 x 65; the long and next week's short pay none.
    assert margin.expiry_day_elm == pytest.approx(0.02 * UNDERLYING * 65)
    assert margin.exposure_margin == pytest.approx(0.02 * UNDERLYING * 130)
    day_before = portfolio_margin(next_week, UNDERLYING, RANGES, EXPIRY - (EXPIRY - TODAY) // 2, PARAMS)
    assert day_before.expiry_day_elm == 0.0
    on_its_day = portfolio_margin(next_week, UNDERLYING, RANGES, EXPIRY, PARAMS)
    assert on_its_day.expiry_day_elm == pytest.approx(0.02 * UNDERLYING * 65)


def test_expiry_day_elm_and_the_lost_calendar_benefit_are_dated() -> None:
    assert not EXPIRY_DAY_ELM.in_force(date(2024, 11, 19))
    assert EXPIRY_DAY_ELM.in_force(date(2024, 11, 20))
    assert not NO_CALENDAR_BENEFIT_ON_EXPIRY_DAY.in_force(date(2025, 1, 31))
    assert NO_CALENDAR_BENEFIT_ON_EXPIRY_DAY.in_force(date(2025, 2, 1))
    # NIFTY weeklies expired on Thursdays then: 14 Nov 2024 before the rule, 21 Nov 2024 after it.
    for expiry, elm in ((date(2024, 11, 14), 0.0), (date(2024, 11, 21), 0.02 * UNDERLYING * 75)):
        short = [MarginLeg(23_400, expiry, False, -75, 0.14, FORWARD, 0.2 / 365)]
        assert portfolio_margin(short, UNDERLYING, RANGES, expiry, PARAMS).expiry_day_elm == pytest.approx(
            elm
        )


def calendar(near: date, far: date, near_days: float) -> list[MarginLeg]:
    # Short the near ATM put, long the far ATM put: the deltas offset, the risk arrays partly do.
    return [
        MarginLeg(24_000, near, False, -65, 0.13, FORWARD, near_days / 365),
        MarginLeg(24_000, far, False, 65, 0.135, FORWARD + 40, (near_days + 35) / 365),
    ]


def scanned(legs: list[MarginLeg]) -> float:
    return max(float(risk_arrays(legs, RANGES).sum(axis=0).max()), 0.0)


def test_a_calendar_pays_the_spread_charge_and_loses_the_offset_on_the_near_expiry_day() -> None:
    near, far = date(2026, 4, 21), date(2026, 5, 26)
    legs = calendar(near, far, near_days=1.25)
    day_before = portfolio_margin(legs, UNDERLYING, RANGES, date(2026, 4, 20), PARAMS)
    # By hand: 1.75 % of the far forward on the delta both months offset; scanned together.
    deltas = [
        ref.leg_delta((x.strike, x.expiry, x.is_call, x.quantity, x.vol, x.forward, x.t, x.discount))
        for x in legs
    ]
    assert deltas[0] * deltas[1] < 0
    offset = min(abs(deltas[0]), abs(deltas[1]))
    assert day_before.calendar_spread_charge == pytest.approx(0.0175 * (FORWARD + 40) * offset, rel=1e-9)
    assert day_before.scanning_risk == pytest.approx(scanned(legs), rel=1e-12)
    # On the near leg's expiry day it is scanned alone and left out of the spread pairing.
    legs = calendar(near, far, near_days=0.25)
    expiry_day = portfolio_margin(legs, UNDERLYING, RANGES, near, PARAMS)
    assert expiry_day.calendar_spread_charge == 0.0
    apart = scanned(legs[:1]) + scanned(legs[1:])
    assert expiry_day.scanning_risk == pytest.approx(apart, rel=1e-12)
    assert apart > scanned(legs)
    # Before 1 Feb 2025 an expiring leg kept its calendar treatment (the January 2025 monthly).
    old = date(2025, 1, 30)
    legs = calendar(old, date(2025, 2, 27), near_days=0.25)
    kept = portfolio_margin(legs, UNDERLYING, RANGES, old, PARAMS)
    assert kept.calendar_spread_charge > 0.0
    assert kept.scanning_risk == pytest.approx(scanned(legs), rel=1e-12)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="underlying"):
        portfolio_margin(STRANGLE, 0.0, RANGES, TODAY, PARAMS)
    with pytest.raises(ValueError, match="expired"):
        portfolio_margin(STRANGLE, UNDERLYING, RANGES, EXPIRY + (EXPIRY - TODAY), PARAMS)
    with pytest.raises(ValueError, match="non-finite"):
        MarginLeg(24_000, EXPIRY, True, -65, math.nan, FORWARD, T)
    assert portfolio_margin([], UNDERLYING, RANGES, TODAY, PARAMS).total == 0.0


EXPIRIES = [TODAY, EXPIRY, date(2026, 4, 28), date(2026, 5, 26)]
strikes = st.integers(min_value=440, max_value=520)


@st.composite
def positions(draw: st.DrawFn, expiries: list[date]) -> list[MarginLeg]:
    n = draw(st.integers(min_value=1, max_value=5))
    legs = []
    for _ in range(n):
        expiry = draw(st.sampled_from(expiries))
        t = max((expiry - TODAY).days, 0.25) / 365
        legs.append(
            MarginLeg(
                strike=50.0 * draw(strikes),
                expiry=expiry,
                is_call=draw(st.booleans()),
                quantity=65.0 * draw(st.integers(min_value=-5, max_value=5).filter(lambda q: q != 0)),
                vol=draw(st.floats(min_value=0.08, max_value=0.35)),
                forward=FORWARD + 10.0 * (expiry - TODAY).days,
                t=t,
                discount=math.exp(-0.065 * t),
            )
        )
    return legs


def as_tuples(legs: list[MarginLeg]) -> list[ref.Leg]:
    return [(x.strike, x.expiry, x.is_call, x.quantity, x.vol, x.forward, x.t, x.discount) for x in legs]


@settings(max_examples=60, deadline=None)
@given(legs=positions(EXPIRIES))
def test_the_vectorised_margin_equals_its_scalar_twin(legs: list[MarginLeg]) -> None:
    # TODAY is one of the expiries, so the expiry-day rules are exercised too.
    fast = portfolio_margin(legs, UNDERLYING, RANGES, TODAY, PARAMS)
    slow = ref.total_margin(
        as_tuples(legs),
        UNDERLYING,
        RANGES.price,
        RANGES.vol,
        TODAY,
        {"somc": 3.0, "spread": 1.75, "exposure": 2.0, "elm": 2.0},
        VOL_FLOOR,
        expiry_day_elm=True,
        separate_expiring=True,
    )
    assert fast.total == pytest.approx(slow, rel=1e-7, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(a=positions([EXPIRY]), b=positions([EXPIRY]))
def test_margin_of_a_portfolio_is_at_most_the_sum_of_its_parts(
    a: list[MarginLeg], b: list[MarginLeg]
) -> None:
    together = portfolio_margin(a + b, UNDERLYING, RANGES, TODAY, PARAMS)
    apart = (
        portfolio_margin(a, UNDERLYING, RANGES, TODAY, PARAMS).total
        + portfolio_margin(b, UNDERLYING, RANGES, TODAY, PARAMS).total
    )
    assert together.total <= apart + 1e-6 * max(apart, 1.0)


@settings(max_examples=80, deadline=None)
@given(
    short_strike=st.integers(min_value=440, max_value=520),
    width=st.integers(min_value=1, max_value=12),
    lots=st.integers(min_value=1, max_value=10),
    is_call=st.booleans(),
    stormy=st.booleans(),
)
def test_a_fully_hedged_spreads_span_is_at_most_its_width_times_quantity(
    short_strike: int, width: int, lots: int, is_call: bool, stormy: bool
) -> None:
    short = 50.0 * short_strike
    long = short + 50.0 * width if is_call else short - 50.0 * width
    quantity = 65.0 * lots
    # Vols from the fitted smile: independent vols per strike can price a vertical spread above its
    # width, an arbitrage no quoted market shows.
    legs = [leg(short, is_call, -quantity), leg(long, is_call, quantity)]
    ranges = scan_ranges(0.015, 0.30, PARAMS) if stormy else RANGES
    margin = portfolio_margin(legs, UNDERLYING, ranges, TODAY, PARAMS)
    # SPAN counts the premium received (net option value) on top of the scanned loss, so the bound
    # is the spread's gross max loss, width x quantity, the credit included.
    assert margin.span <= 50.0 * width * quantity * (1 + 1e-9)
    assert margin.short_option_minimum == 0.0
