"""The dated charges schedule against figures worked by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volguard_common.charges import (
    Charges,
    ChargeSchedule,
    ChargesNotKnownError,
    DatedRate,
    StructureLeg,
    exercise_charges,
    fill_charges,
    nse_option_charges,
    round_to_paisa,
    structure_charges,
)
from volguard_common.events import Side
from volguard_common.settings import Settings

BROKERAGE = Decimal("20")
D = Decimal


def test_one_lot_sold_at_100_under_the_april_2026_schedule_costs_36_08() -> None:
    charges = fill_charges(
        Side.SELL, D("100"), 65, date(2026, 4, 1), first_fill_of_order=True, brokerage_per_order=BROKERAGE
    )
    assert charges.brokerage == D("20")
    assert charges.stt == D("9.75")
    assert charges.exchange == D("2.30945")
    assert charges.sebi_fee == D("0.0065")
    assert charges.stamp_duty == 0
    assert charges.gst == D("4.016871")
    assert charges.unrounded_total == D("36.082821")
    assert charges.total == D("36.08")
    # The rule not taken: rounding each component first gives a paisa more.
    components = (charges.brokerage, charges.stt, charges.exchange, charges.sebi_fee, charges.gst)
    assert sum(round_to_paisa(c) for c in components) == D("36.09")


def test_brokerage_is_charged_once_per_order_however_many_fills() -> None:
    day = date(2026, 4, 1)
    first = fill_charges(Side.BUY, D("50"), 40, day, first_fill_of_order=True, brokerage_per_order=BROKERAGE)
    second = fill_charges(
        Side.BUY, D("50"), 25, day, first_fill_of_order=False, brokerage_per_order=BROKERAGE
    )
    whole = fill_charges(Side.BUY, D("50"), 65, day, first_fill_of_order=True, brokerage_per_order=BROKERAGE)
    assert second.brokerage == 0
    assert first + second == whole
    # Buy side: stamp duty, no STT.
    assert whole.stt == 0
    assert whole.stamp_duty == D("50") * 65 * D("0.00003")


def test_brokerage_per_order_is_a_setting_with_the_documented_default() -> None:
    assert Settings().brokerage_per_order == D("20")
    assert Settings(brokerage_per_order=D("0")).brokerage_per_order == 0


def test_hand_computed_iron_condor_round_trip() -> None:
    # Sell 24000 PE at 80 and 25000 CE at 70, buy 23800 PE at 40 and 25200 CE at 30, one lot each;
    # close three days later: shorts bought back at 30 and 25, wings sold at 15 and 10.
    legs = [
        StructureLeg(Side.SELL, 65, D("80"), exit_premium=D("30")),
        StructureLeg(Side.BUY, 65, D("40"), exit_premium=D("15")),
        StructureLeg(Side.SELL, 65, D("70"), exit_premium=D("25")),
        StructureLeg(Side.BUY, 65, D("30"), exit_premium=D("10")),
    ]
    charges = structure_charges(legs, date(2026, 4, 7), date(2026, 4, 10), brokerage_per_order=BROKERAGE)
    # By hand: sell turnover 65 x (80 + 70 + 15 + 10) = 11,375; buy turnover 65 x (40 + 30 + 30 + 25)
    # = 8,125; all 19,500; eight orders.
    assert charges.brokerage == D("160")
    assert charges.stt == D("17.0625")  # 11,375 x 0.15 %
    assert charges.exchange == D("6.92835")  # 19,500 x 0.03553 %
    assert charges.sebi_fee == D("0.0195")  # 19,500 x 10 / 1 crore
    assert charges.stamp_duty == D("0.24375")  # 8,125 x 0.003 %
    assert charges.gst == D("30.050613")  # 18 % of 160 + 6.92835 + 0.0195
    assert charges.total == D("214.30")
    # The same figure fill by fill: the structure estimate is the ledger's sum.
    fills = Charges()
    for side, premium, day in [
        (Side.SELL, "80", 7), (Side.BUY, "40", 7), (Side.SELL, "70", 7), (Side.BUY, "30", 7),
        (Side.BUY, "30", 10), (Side.SELL, "15", 10), (Side.BUY, "25", 10), (Side.SELL, "10", 10),
    ]:  # fmt: skip
        fills += fill_charges(
            side, D(premium), 65, date(2026, 4, day), first_fill_of_order=True, brokerage_per_order=BROKERAGE
        )
    assert fills == charges


def test_a_sliced_leg_pays_brokerage_per_slice_and_a_long_settled_in_the_money_pays_exercise_stt() -> None:
    legs = [
        StructureLeg(Side.SELL, 1950, D("12"), expiry_intrinsic=D("0"), orders=2),
        StructureLeg(Side.BUY, 1950, D("30"), expiry_intrinsic=D("40"), orders=2),
    ]
    charges = structure_charges(legs, date(2026, 4, 1), date(2026, 4, 7), brokerage_per_order=BROKERAGE)
    assert charges.brokerage == D("80")
    # Exercise STT 0.15 % of 40 x 1950 on the long; the short pays none at expiry.
    assert charges.stt == D("12") * 1950 * D("0.0015") + D("40") * 1950 * D("0.0015")
    assert exercise_charges(D("40"), 1950, date(2026, 3, 31)).stt == D("40") * 1950 * D("0.00125")


@pytest.mark.parametrize(
    ("charge", "before", "after", "rate_before", "rate_after"),
    [
        ("stt_option_sale", date(2024, 9, 30), date(2024, 10, 1), "0.000625", "0.001"),
        ("stt_option_sale", date(2026, 3, 31), date(2026, 4, 1), "0.001", "0.0015"),
        ("stt_exercise", date(2026, 3, 31), date(2026, 4, 1), "0.00125", "0.0015"),
        ("nse_transaction", date(2026, 2, 28), date(2026, 3, 1), "0.0003503", "0.0003552"),
        ("ipft", date(2026, 2, 28), date(2026, 3, 1), "0.000005", "0.0000001"),
    ],
)
def test_rates_change_on_their_effective_dates(
    charge: str, before: date, after: date, rate_before: str, rate_after: str
) -> None:
    schedule = nse_option_charges()
    assert schedule.rate(charge, before).rate == D(rate_before)
    assert schedule.rate(charge, after).rate == D(rate_after)
    assert schedule.rate(charge, after).effective_from == after
    assert schedule.rate(charge, after).source


def test_exchange_charge_with_ipft_is_the_same_either_side_of_1_march_2026() -> None:
    for day in (date(2026, 2, 28), date(2026, 3, 1)):
        rates = nse_option_charges().rates_on(day)
        assert rates.nse_transaction + rates.ipft == D("0.0003553")


def test_one_lot_sale_either_side_of_the_2024_and_2026_stt_changes() -> None:
    def sale(day: date) -> Decimal:
        return fill_charges(
            Side.SELL, D("100"), 65, day, first_fill_of_order=False, brokerage_per_order=BROKERAGE
        ).stt

    assert sale(date(2024, 10, 1)) == D("6.5")
    assert sale(date(2026, 3, 31)) == D("6.5")
    assert sale(date(2026, 4, 1)) == D("9.75")


def test_days_before_the_schedule_starts_are_refused_with_the_reason() -> None:
    schedule = nse_option_charges()
    assert schedule.starts == date(2024, 10, 1)
    with pytest.raises(ChargesNotKnownError, match="schedule starts on 2024-10-01"):
        fill_charges(
            Side.SELL,
            D("100"),
            65,
            date(2024, 9, 30),
            first_fill_of_order=True,
            brokerage_per_order=BROKERAGE,
        )
    with pytest.raises(ChargesNotKnownError, match="first nse_transaction figure is from 2024-10-01"):
        schedule.rate("nse_transaction", date(2024, 9, 30))


def test_a_schedule_missing_a_charge_or_with_a_negative_rate_is_refused() -> None:
    rows = [DatedRate("gst", date(2020, 1, 1), D("0.18"), "test")]
    with pytest.raises(ValueError, match="no row for stt_option_sale"):
        ChargeSchedule(rows)
    with pytest.raises(ValueError, match="rate must be >= 0"):
        ChargeSchedule([DatedRate("gst", date(2020, 1, 1), D("-0.18"), "test")])


def test_bad_quantities_and_prices_are_refused() -> None:
    with pytest.raises(ValueError, match="quantity"):
        fill_charges(
            Side.SELL, D("1"), 0, date(2026, 4, 1), first_fill_of_order=True, brokerage_per_order=BROKERAGE
        )
    with pytest.raises(ValueError, match="premium"):
        fill_charges(
            Side.SELL, D("-1"), 65, date(2026, 4, 1), first_fill_of_order=True, brokerage_per_order=BROKERAGE
        )
    with pytest.raises(ValueError, match="exactly one"):
        StructureLeg(Side.SELL, 65, D("10"))


@given(
    fills=st.lists(
        st.tuples(
            st.sampled_from([Side.BUY, Side.SELL]),
            st.decimals(min_value=D("0.05"), max_value=D("2000"), places=2),
            st.integers(min_value=1, max_value=40).map(lambda lots: lots * 65),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    ),
    day=st.dates(min_value=date(2024, 10, 1), max_value=date(2027, 12, 31)),
)
def test_a_sum_of_fills_rounds_once_and_stays_within_half_a_paisa_per_fill_of_booking_each(
    fills: list[tuple[Side, Decimal, int, bool]], day: date
) -> None:
    each = [
        fill_charges(side, premium, qty, day, first_fill_of_order=first, brokerage_per_order=BROKERAGE)
        for side, premium, qty, first in fills
    ]
    together = sum(each, Charges())
    assert together.total == round_to_paisa(sum((c.unrounded_total for c in each), D(0)))
    assert abs(together.total - sum(c.total for c in each)) <= D("0.005") * len(each) + D("0.005")
    assert all(c.unrounded_total >= 0 for c in each)
