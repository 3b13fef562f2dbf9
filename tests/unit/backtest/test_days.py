"""The dated days of a backtest: each date trades under the rules NSE had on it."""

from __future__ import annotations

from datetime import date, time

import pytest

from volguard_backtest.app import BacktestRequest, parse_overrides, prepare
from volguard_backtest.domain.days import BacktestInputError, parse_day, trading_day, trading_days


def test_expiry_weekday_moves_from_thursday_to_tuesday_in_september_2025() -> None:
    assert trading_day(date(2025, 8, 25)).expiry_weekday == 3  # Thursday weeklies
    assert trading_day(date(2025, 8, 28)).expiry_day
    assert trading_day(date(2025, 9, 2)).expiry_weekday == 1  # Tuesday from 2 Sep 2025
    assert trading_day(date(2025, 9, 2)).expiry_day


def test_lot_size_is_that_of_the_front_series() -> None:
    assert trading_day(date(2025, 12, 22)).lot_size == 75  # the December 2025 series
    assert trading_day(date(2026, 1, 5)).lot_size == 65  # from the January 2026 series


def test_close_time_is_the_dated_one() -> None:
    assert trading_day(date(2026, 7, 31)).close.time() == time(15, 30)
    assert trading_day(date(2026, 8, 3)).close.time() == time(15, 40)


def test_trading_days_skip_weekends_and_holidays() -> None:
    days = [d.day for d in trading_days(date(2026, 3, 2), date(2026, 3, 8))]
    assert all(day.weekday() < 5 for day in days)
    assert date(2026, 3, 3) not in days  # Holi, an NSE holiday in the bundled calendar
    assert days == sorted(days)
    assert days[0] == date(2026, 3, 2)


def test_dates_before_the_calendar_are_refused_with_the_reason() -> None:
    with pytest.raises(BacktestInputError, match="first day of the NSE calendar data"):
        trading_days(date(2024, 12, 30), date(2025, 1, 3))


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        (date(2026, 3, 6), date(2026, 3, 2), "before --from"),
        (date(2026, 3, 7), date(2026, 3, 8), "no NSE trading day"),
    ],
)
def test_empty_or_reversed_ranges_are_refused(first: date, last: date, message: str) -> None:
    with pytest.raises(BacktestInputError, match=message):
        trading_days(first, last)


def test_bad_input_is_refused_before_anything_runs() -> None:
    with pytest.raises(BacktestInputError, match="is not a date"):
        parse_day("2026-13-01", "--from")
    with pytest.raises(BacktestInputError, match="not a setting"):
        parse_overrides(["no_such_setting=1"])
    with pytest.raises(BacktestInputError, match="KEY=VALUE"):
        parse_overrides(["sim_seed"])
    with pytest.raises(BacktestInputError, match="VOLGUARD_SIM_SNAPSHOT_INTERVAL_S"):
        prepare(
            BacktestRequest(date(2026, 3, 2), date(2026, 3, 2), overrides={"sim_snapshot_interval_s": "x"})
        )
    with pytest.raises(BacktestInputError, match="outside"):
        prepare(BacktestRequest(date(2026, 3, 2), date(2026, 3, 2), until=time(8, 0)))
    with pytest.raises(BacktestInputError, match="neither 'sim' nor a recording"):
        prepare(BacktestRequest(date(2026, 3, 2), date(2026, 3, 2), source="/no/such/dir"))
