"""The NSE calendar, NIFTY contract rules and market windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volguard_common.clock import (
    IST,
    STRIKE_STEP,
    CalendarCoverageError,
    Holiday,
    TimedRules,
    TradingCalendar,
    expiry_cutoff,
    expiry_flatten_due,
    expiry_weekday,
    in_safe_window,
    intraday_flat_due,
    is_expiry_day,
    is_monthly_expiry,
    is_trading_day,
    lot_size,
    market_open,
    minutes_to_close,
    monthly_expiry,
    next_expiries,
    next_trading_day,
    nse_calendar,
    previous_trading_day,
    round_to_strike,
    session_bounds,
    trading_days_between,
    trading_minutes_between,
    weekly_expiries,
)


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=IST)


# ---- calendar data -----------------------------------------------------------------------------


def test_calendar_data_ships_inside_the_package() -> None:
    data = resources.files("volguard_common").joinpath("calendar_data")
    assert data.joinpath("nse_holidays.csv").is_file()
    assert data.joinpath("nse_special_sessions.csv").is_file()
    assert data.joinpath("nse_session_times.csv").is_file()


def test_coverage_is_2025_to_2027() -> None:
    calendar = nse_calendar()
    assert (calendar.first_day, calendar.last_day) == (date(2025, 1, 1), date(2027, 12, 31))


def test_published_2026_holidays() -> None:
    days_2026 = [h.day for h in nse_calendar().holidays if h.day.year == 2026]
    assert days_2026 == [
        date(2026, 1, 15),  # Maharashtra municipal elections (added by circular in January 2026)
        date(2026, 1, 26),
        date(2026, 3, 3),
        date(2026, 3, 26),
        date(2026, 3, 31),
        date(2026, 4, 3),
        date(2026, 4, 14),
        date(2026, 5, 1),
        date(2026, 5, 28),
        date(2026, 6, 26),
        date(2026, 9, 14),
        date(2026, 10, 2),
        date(2026, 10, 20),
        date(2026, 11, 10),
        date(2026, 11, 24),
        date(2026, 12, 25),
    ]


def test_published_2025_holidays() -> None:
    days_2025 = [h.day for h in nse_calendar().holidays if h.day.year == 2025]
    assert len(days_2025) == 14
    assert date(2025, 3, 14) in days_2025  # Holi
    assert date(2025, 10, 21) in days_2025  # Diwali Laxmi Pujan (Muhurat only)


def test_only_2027_rows_are_provisional_and_every_holiday_is_a_weekday() -> None:
    holidays = nse_calendar().holidays
    assert {h.day.year for h in holidays if h.provisional} == {2027}
    assert all(not h.provisional for h in holidays if h.day.year < 2027)
    assert all(h.day.weekday() < 5 for h in holidays)


def test_calendar_rejects_bad_data() -> None:
    weekend = Holiday(day=date(2026, 3, 1), name="a Sunday", source="test")
    with pytest.raises(ValueError, match="weekend"):
        TradingCalendar([weekend], [], date(2026, 1, 1), date(2026, 12, 31))
    twice = Holiday(day=date(2026, 3, 3), name="Holi", source="test")
    with pytest.raises(ValueError, match="twice"):
        TradingCalendar([twice, twice], [], date(2026, 1, 1), date(2026, 12, 31))


# ---- trading days ------------------------------------------------------------------------------


def test_trading_days() -> None:
    assert is_trading_day(date(2026, 3, 2))  # Monday
    assert not is_trading_day(date(2026, 3, 3))  # Holi
    assert not is_trading_day(date(2026, 3, 7))  # Saturday
    assert not is_trading_day(date(2026, 3, 8))  # Sunday
    assert not is_trading_day(date(2026, 1, 15))  # Maharashtra civic elections
    # Union Budget days: the exchange opened on a weekend with normal hours.
    assert is_trading_day(date(2025, 2, 1))
    assert is_trading_day(date(2026, 2, 1))
    # Diwali 2025: only the one-hour Muhurat session, not a trading day for VolGuard.
    assert not is_trading_day(date(2025, 10, 21))


def test_a_datetime_is_read_as_its_ist_day() -> None:
    # 20:00 UTC on Monday 2 March is 01:30 IST on Tuesday 3 March (Holi).
    assert not is_trading_day(datetime(2026, 3, 2, 20, 0, tzinfo=UTC))
    assert is_trading_day(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))


def test_next_and_previous_trading_day_skip_weekends_and_holidays() -> None:
    assert next_trading_day(date(2026, 3, 2)) == date(2026, 3, 4)  # over Holi
    assert previous_trading_day(date(2026, 3, 4)) == date(2026, 3, 2)
    assert next_trading_day(date(2026, 1, 23)) == date(2026, 1, 27)  # Friday → over Republic Day Monday
    assert previous_trading_day(date(2026, 1, 27)) == date(2026, 1, 23)
    assert next_trading_day(date(2026, 4, 2)) == date(2026, 4, 6)  # over Good Friday and the weekend
    assert next_trading_day(date(2026, 3, 7)) == date(2026, 3, 9)  # from a Saturday


def test_trading_days_between_counts_steps() -> None:
    assert trading_days_between(date(2026, 3, 2), date(2026, 3, 9)) == 4  # 4, 5, 6, 9 March
    assert trading_days_between(date(2026, 3, 2), date(2026, 3, 2)) == 0
    # 2026: 261 weekdays, 16 weekday holidays, plus Budget Sunday; (start, end] leaves out Thu 1 Jan.
    assert trading_days_between(date(2026, 1, 1), date(2026, 12, 31)) == 261 - 16 + 1 - 1
    with pytest.raises(ValueError, match="before start"):
        trading_days_between(date(2026, 3, 9), date(2026, 3, 2))


def test_dates_outside_the_data_raise() -> None:
    with pytest.raises(CalendarCoverageError, match="outside the NSE calendar data"):
        is_trading_day(date(2028, 1, 3))
    with pytest.raises(CalendarCoverageError):
        next_trading_day(date(2027, 12, 31))
    with pytest.raises(CalendarCoverageError):
        previous_trading_day(date(2025, 1, 1))


# ---- NIFTY expiries ----------------------------------------------------------------------------

JAN_TO_MAR_2026_EXPIRIES = [
    date(2026, 1, 6),
    date(2026, 1, 13),
    date(2026, 1, 20),
    date(2026, 1, 27),  # January monthly
    date(2026, 2, 3),
    date(2026, 2, 10),
    date(2026, 2, 17),
    date(2026, 2, 24),  # February monthly
    date(2026, 3, 2),  # Tuesday 3 March is Holi → Monday
    date(2026, 3, 10),
    date(2026, 3, 17),
    date(2026, 3, 24),
    date(2026, 3, 30),  # Tuesday 31 March is Mahavir Jayanti → Monday; March monthly
]


def test_weekly_expiries_january_to_march_2026() -> None:
    assert weekly_expiries(date(2026, 1, 1), 13) == JAN_TO_MAR_2026_EXPIRIES
    assert weekly_expiries(date(2026, 1, 1), 14)[-1] == date(2026, 4, 7)


def test_monthly_expiries_january_to_march_2026() -> None:
    assert [monthly_expiry(2026, m) for m in (1, 2, 3)] == [
        date(2026, 1, 27),
        date(2026, 2, 24),
        date(2026, 3, 30),
    ]
    assert [d for d in JAN_TO_MAR_2026_EXPIRIES if is_monthly_expiry(d)] == [
        date(2026, 1, 27),
        date(2026, 2, 24),
        date(2026, 3, 30),
    ]


def test_holiday_rolls_to_the_previous_trading_day() -> None:
    assert date(2026, 3, 2) in weekly_expiries(date(2026, 3, 1), 1)
    assert weekly_expiries(date(2026, 3, 3), 1) == [date(2026, 3, 10)]  # 2 March already passed
    assert monthly_expiry(2026, 11) == date(2026, 11, 23)  # 24 Nov 2026 is Guru Nanak Jayanti
    assert weekly_expiries(date(2026, 4, 13), 1) == [date(2026, 4, 13)]  # 14 Apr Ambedkar Jayanti
    assert weekly_expiries(date(2025, 10, 15), 3) == [
        date(2025, 10, 20),
        date(2025, 10, 28),
        date(2025, 11, 4),
    ]


def test_expiries_were_on_thursday_until_august_2025() -> None:
    assert weekly_expiries(date(2025, 8, 20), 4) == [
        date(2025, 8, 21),
        date(2025, 8, 28),  # last Thursday expiry (August monthly)
        date(2025, 9, 2),  # first Tuesday expiry
        date(2025, 9, 9),
    ]
    assert monthly_expiry(2025, 8) == date(2025, 8, 28)
    assert monthly_expiry(2025, 9) == date(2025, 9, 30)
    assert weekly_expiries(date(2025, 4, 7), 1) == [date(2025, 4, 9)]  # Thu 10 Apr 2025 Mahavir Jayanti
    assert expiry_weekday(date(2025, 8, 31)) == 3
    assert expiry_weekday(date(2025, 9, 1)) == 1


def test_is_expiry_day() -> None:
    assert is_expiry_day(date(2026, 3, 2))
    assert not is_expiry_day(date(2026, 3, 3))
    assert is_expiry_day(date(2026, 1, 6))
    assert not is_expiry_day(date(2026, 1, 7))
    assert is_expiry_day(ist(2026, 3, 30, 10, 0))


def test_next_expiries_keeps_todays_expiry_until_the_close() -> None:
    during = next_expiries(ist(2026, 3, 2, 15, 29, 59), weeklies=2, monthlies=3)
    assert during.weekly == (date(2026, 3, 2), date(2026, 3, 10))
    assert during.monthly == (date(2026, 3, 30), date(2026, 4, 28), date(2026, 5, 26))
    after = next_expiries(ist(2026, 3, 2, 15, 30), weeklies=2, monthlies=3)
    assert after.weekly == (date(2026, 3, 10), date(2026, 3, 17))
    assert after.all == (
        date(2026, 3, 10),
        date(2026, 3, 17),
        date(2026, 3, 30),
        date(2026, 4, 28),
        date(2026, 5, 26),
    )
    monthly_day = next_expiries(ist(2026, 3, 30, 15, 31), weeklies=1, monthlies=1)
    assert monthly_day.monthly == (date(2026, 4, 28),)
    assert monthly_day.weekly == (date(2026, 4, 7),)


def test_expiry_cutoff_is_the_close_in_ist() -> None:
    assert expiry_cutoff(date(2026, 3, 30)) == ist(2026, 3, 30, 15, 30)


def test_lot_size_changes_with_the_january_2026_series() -> None:
    assert lot_size(date(2025, 12, 30)) == 75  # December 2025 monthly
    assert lot_size(date(2025, 12, 23)) == 75
    assert lot_size(date(2026, 1, 6)) == 65  # first January 2026 weekly
    assert lot_size(date(2026, 1, 27)) == 65
    assert lot_size(date(2027, 6, 29)) == 65
    with pytest.raises(CalendarCoverageError):
        lot_size(date(2024, 12, 26))


def test_round_to_strike() -> None:
    assert STRIKE_STEP == 50
    assert round_to_strike(24937.5) == 24950
    assert round_to_strike(24924.99) == 24900
    assert round_to_strike(24925.0) == 24950  # halves round up
    assert round_to_strike(25000.0) == 25000
    assert round_to_strike(24937.5, step=100) == 24900
    with pytest.raises(ValueError, match="cannot round"):
        round_to_strike(float("nan"))


# ---- market windows ----------------------------------------------------------------------------


def test_session_bounds() -> None:
    assert session_bounds(date(2026, 3, 2)) == (ist(2026, 3, 2, 9, 15), ist(2026, 3, 2, 15, 30))
    assert session_bounds(date(2026, 2, 1)) == (ist(2026, 2, 1, 9, 15), ist(2026, 2, 1, 15, 30))
    with pytest.raises(ValueError, match="not a trading day"):
        session_bounds(date(2026, 3, 3))


def test_market_open() -> None:
    assert not market_open(ist(2026, 3, 2, 9, 14, 59))
    assert market_open(ist(2026, 3, 2, 9, 15))
    assert market_open(ist(2026, 3, 2, 15, 29, 59))
    assert not market_open(ist(2026, 3, 2, 15, 30))
    assert not market_open(ist(2026, 3, 3, 11, 0))  # Holi
    assert not market_open(ist(2026, 3, 7, 11, 0))  # Saturday
    assert market_open(datetime(2026, 3, 2, 4, 0, tzinfo=UTC))  # 09:30 IST


def test_safe_window() -> None:
    assert not in_safe_window(ist(2026, 3, 2, 9, 29, 59))
    assert in_safe_window(ist(2026, 3, 2, 9, 30))
    assert in_safe_window(ist(2026, 3, 2, 15, 14, 59))
    assert not in_safe_window(ist(2026, 3, 2, 15, 15))
    assert not in_safe_window(ist(2026, 3, 3, 12, 0))
    assert not in_safe_window(ist(2026, 3, 8, 12, 0))


def test_minutes_to_close() -> None:
    assert minutes_to_close(ist(2026, 3, 2, 9, 0)) == 375.0
    assert minutes_to_close(ist(2026, 3, 2, 15, 0)) == 30.0
    assert minutes_to_close(ist(2026, 3, 2, 15, 29, 30)) == 0.5
    assert minutes_to_close(ist(2026, 3, 2, 16, 0)) == 0.0
    assert minutes_to_close(ist(2026, 3, 7, 10, 0)) == 0.0


def test_expiry_day_flatten_at_1430() -> None:
    assert not expiry_flatten_due(ist(2026, 3, 2, 14, 29, 59))
    assert expiry_flatten_due(ist(2026, 3, 2, 14, 30))
    assert not expiry_flatten_due(ist(2026, 3, 4, 14, 45))  # not an expiry day


# ---- the dated close (NSE circular, May 2026: F&O closes 15:40 from 3 August 2026) -------------


def test_a_july_2026_session_closes_at_1530_and_a_december_2026_session_at_1540() -> None:
    assert session_bounds(date(2026, 7, 31)) == (ist(2026, 7, 31, 9, 15), ist(2026, 7, 31, 15, 30))
    assert session_bounds(date(2026, 8, 3)) == (ist(2026, 8, 3, 9, 15), ist(2026, 8, 3, 15, 40))
    assert session_bounds(date(2026, 12, 7)) == (ist(2026, 12, 7, 9, 15), ist(2026, 12, 7, 15, 40))
    assert market_open(ist(2026, 12, 7, 15, 35))
    assert not market_open(ist(2026, 7, 31, 15, 35))
    assert minutes_to_close(ist(2026, 7, 31, 9, 0)) == 375.0
    assert minutes_to_close(ist(2026, 12, 7, 9, 0)) == 385.0
    assert minutes_to_close(ist(2026, 12, 7, 15, 30)) == 10.0
    rule = nse_calendar().regular_session(date(2026, 12, 7))
    assert (rule.effective_from, rule.close) == (date(2026, 8, 3), time(15, 40))
    assert "circular" in rule.source


def test_an_expirys_time_to_expiry_runs_to_its_dated_close() -> None:
    # Tuesday 28 July 2026 (July monthly) expires at 15:30; Tuesday 1 December 2026 at 15:40.
    assert expiry_cutoff(date(2026, 7, 28)) == ist(2026, 7, 28, 15, 30)
    assert expiry_cutoff(date(2026, 12, 1)) == ist(2026, 12, 1, 15, 40)
    assert trading_minutes_between(ist(2026, 12, 1, 15, 0), expiry_cutoff(date(2026, 12, 1))) == 40.0
    # Still active at 15:35 on its December expiry day, gone at 15:35 in July.
    assert next_expiries(ist(2026, 12, 1, 15, 35), weeklies=1, monthlies=0).weekly == (date(2026, 12, 1),)
    assert next_expiries(ist(2026, 7, 28, 15, 35), weeklies=1, monthlies=0).weekly == (date(2026, 8, 4),)
    # Friday 31 July 15:00 to Tuesday 4 August's cutoff: 30 min, then 385 on Monday and on Tuesday.
    assert trading_minutes_between(ist(2026, 7, 31, 15, 0), expiry_cutoff(date(2026, 8, 4))) == 30 + 2 * 385


def test_timed_rules_follow_the_dated_close() -> None:
    # Entries from 09:30 until 15 minutes before the close: 15:15 in July, 15:25 in December.
    assert in_safe_window(ist(2026, 7, 30, 15, 14, 59))
    assert not in_safe_window(ist(2026, 7, 30, 15, 15))
    assert in_safe_window(ist(2026, 12, 7, 15, 24, 59))
    assert not in_safe_window(ist(2026, 12, 7, 15, 25))
    assert not in_safe_window(ist(2026, 12, 7, 9, 29, 59))
    assert in_safe_window(ist(2026, 12, 7, 9, 30))
    # Expiry-day flatten 60 minutes before the close: 14:30 on 28 July, 14:40 on 1 December.
    assert expiry_flatten_due(ist(2026, 7, 28, 14, 30))
    assert not expiry_flatten_due(ist(2026, 12, 1, 14, 39, 59))
    assert expiry_flatten_due(ist(2026, 12, 1, 14, 40))
    # The intraday bucket is flat 15 minutes before the close.
    assert not intraday_flat_due(ist(2026, 7, 30, 15, 14, 59))
    assert intraday_flat_due(ist(2026, 7, 30, 15, 15))
    assert not intraday_flat_due(ist(2026, 12, 7, 15, 24, 59))
    assert intraday_flat_due(ist(2026, 12, 7, 15, 25))
    assert not intraday_flat_due(ist(2026, 12, 5, 15, 30))  # Saturday: no session, nothing to flatten


def test_timed_rules_are_configurable_offsets() -> None:
    rules = TimedRules(
        entries_from_open=timedelta(minutes=30),
        entries_stop_before_close=timedelta(minutes=45),
        expiry_flatten_before_close=timedelta(minutes=90),
        intraday_flat_before_close=timedelta(minutes=5),
    )
    assert not in_safe_window(ist(2026, 12, 7, 9, 40), rules)
    assert in_safe_window(ist(2026, 12, 7, 9, 45), rules)
    assert not in_safe_window(ist(2026, 12, 7, 14, 55), rules)
    assert expiry_flatten_due(ist(2026, 12, 1, 14, 10), rules)
    assert not intraday_flat_due(ist(2026, 12, 7, 15, 34), rules)
    with pytest.raises(ValueError, match="must not be negative"):
        TimedRules(intraday_flat_before_close=timedelta(minutes=-1))


def test_settings_build_the_timed_rules() -> None:
    from volguard_common.settings import Settings

    rules = Settings(expiry_flatten_before_close_min=45).timed_rules()
    assert rules.expiry_flatten_before_close == timedelta(minutes=45)
    assert rules.entries_stop_before_close == timedelta(minutes=15)


def test_session_times_must_cover_the_calendar() -> None:
    with pytest.raises(ValueError, match="no regular session times cover"):
        TradingCalendar([], [], date(2020, 1, 1), date(2020, 12, 31))


def test_trading_minutes_within_a_day() -> None:
    assert trading_minutes_between(ist(2026, 3, 2, 9, 15), ist(2026, 3, 2, 15, 30)) == 375.0
    assert trading_minutes_between(ist(2026, 3, 2, 6, 0), ist(2026, 3, 2, 23, 0)) == 375.0
    assert trading_minutes_between(ist(2026, 3, 2, 10, 0), ist(2026, 3, 2, 10, 0, 30)) == 0.5
    assert trading_minutes_between(ist(2026, 3, 2, 16, 0), ist(2026, 3, 2, 17, 0)) == 0.0


def test_trading_minutes_across_a_weekend() -> None:
    # Friday 15:00 → Monday 09:45: 30 minutes on Friday, nothing on the weekend, 30 on Monday.
    assert trading_minutes_between(ist(2026, 1, 9, 15, 0), ist(2026, 1, 12, 9, 45)) == 60.0


def test_trading_minutes_across_a_holiday() -> None:
    # Monday 15:00 → Wednesday 09:30 over Holi (Tuesday 3 March 2026): 30 + 15.
    assert trading_minutes_between(ist(2026, 3, 2, 15, 0), ist(2026, 3, 4, 9, 30)) == 45.0
    # A full ordinary week is five sessions; the week of Holi is four.
    assert trading_minutes_between(ist(2026, 3, 9, 0, 0), ist(2026, 3, 14, 0, 0)) == 5 * 375.0
    assert trading_minutes_between(ist(2026, 3, 2, 0, 0), ist(2026, 3, 7, 0, 0)) == 4 * 375.0


def test_trading_minutes_to_expiry_and_misuse() -> None:
    now = ist(2026, 3, 27, 15, 0)  # Friday; Monday 30 March is the March monthly
    assert trading_minutes_between(now, expiry_cutoff(date(2026, 3, 30))) == 30.0 + 375.0
    with pytest.raises(ValueError, match="before start"):
        trading_minutes_between(ist(2026, 3, 4, 10, 0), ist(2026, 3, 4, 9, 0))
    with pytest.raises(ValueError, match="naive"):
        trading_minutes_between(datetime(2026, 3, 4, 9, 0), ist(2026, 3, 4, 10, 0))


# ---- properties --------------------------------------------------------------------------------

covered_days = st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 11, 30))
covered_times = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 11, 30), timezones=st.just(IST)
)


@settings(deadline=None)
@given(covered_days, st.integers(min_value=1, max_value=5))
def test_every_expiry_is_a_trading_day_on_the_expiry_weekday_or_rolled_from_a_holiday(
    start: date, count: int
) -> None:
    calendar = nse_calendar()
    expiries = weekly_expiries(start, count)
    assert len(expiries) == count
    assert expiries == sorted(set(expiries))
    assert expiries[0] >= start
    for expiry in expiries:
        assert is_trading_day(expiry)
        assert expiry.weekday() < 5
        if expiry.weekday() != expiry_weekday(expiry):
            # Rolled: the nominal expiry day is a holiday a few days later, with no trading day between.
            nominal = next(
                expiry + timedelta(days=k)
                for k in range(1, 7)
                if (expiry + timedelta(days=k)).weekday() == expiry_weekday(expiry + timedelta(days=k))
            )
            assert calendar.holiday(nominal) is not None
            between = [expiry + timedelta(days=k) for k in range(1, (nominal - expiry).days + 1)]
            assert not any(is_trading_day(d) and d.weekday() < 5 for d in between)


@settings(deadline=None)
@given(st.integers(min_value=2025, max_value=2027), st.integers(min_value=1, max_value=12))
def test_monthly_expiry_is_the_last_expiry_weekday_of_its_month_rolled(year: int, month: int) -> None:
    expiry = monthly_expiry(year, month)
    assert (expiry.year, expiry.month) == (year, month)
    assert is_trading_day(expiry)
    assert is_expiry_day(expiry)
    assert is_monthly_expiry(expiry)
    nominal = next(
        expiry + timedelta(days=k)
        for k in range(7)
        if (expiry + timedelta(days=k)).weekday() == expiry_weekday(expiry)
    )
    assert nominal.month == month
    assert (nominal + timedelta(days=7)).month != month


def test_a_weekly_rolled_out_of_next_month_can_follow_the_monthly() -> None:
    # Thu 1 May 2025 (Maharashtra Day) rolled to Wed 30 April, after the April monthly of Thu 24 April.
    assert monthly_expiry(2025, 4) == date(2025, 4, 24)
    assert weekly_expiries(date(2025, 4, 24), 2) == [date(2025, 4, 24), date(2025, 4, 30)]
    assert not is_monthly_expiry(date(2025, 4, 30))


@settings(deadline=None)
@given(covered_days)
def test_next_trading_day_is_one_step_away(day: date) -> None:
    following = next_trading_day(day)
    assert following > day
    assert is_trading_day(following)
    assert trading_days_between(day, following) == 1
    assert previous_trading_day(following) <= day or not is_trading_day(day)


@settings(deadline=None)
@given(st.lists(covered_times, min_size=3, max_size=3).map(sorted))
def test_trading_minutes_are_additive_and_bounded(times: list[datetime]) -> None:
    a, b, c = times
    ab = trading_minutes_between(a, b)
    bc = trading_minutes_between(b, c)
    ac = trading_minutes_between(a, c)
    assert ac == pytest.approx(ab + bc, abs=1e-6)
    assert 0.0 <= ac <= (c - a).total_seconds() / 60.0 + 1e-9


@settings(deadline=None)
@given(covered_times)
def test_windows_nest(ts: datetime) -> None:
    if in_safe_window(ts):
        assert market_open(ts)
    if market_open(ts):
        assert is_trading_day(ts)
        assert 0.0 < minutes_to_close(ts) <= 385.0
    close = time(15, 30) if ts.date() < date(2026, 8, 3) else time(15, 40)
    if ts.time() < time(9, 15) or ts.time() >= close:
        assert not market_open(ts)


@settings(deadline=None)
@given(st.floats(min_value=1_000.0, max_value=100_000.0, allow_nan=False))
def test_round_to_strike_is_the_nearest_multiple(price: float) -> None:
    strike = round_to_strike(price)
    assert strike % STRIKE_STEP == 0
    assert abs(strike - price) <= STRIKE_STEP / 2
