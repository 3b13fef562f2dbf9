"""The trading days of a backtest and the dated contract rules each one trades under.

Rules are dated data in `volguard_common.clock`, never constants here: the expiry weekday (Thursday
weeklies until 28 Aug 2025, Tuesday from 2 Sep 2025), the lot size of the series (75 until the December
2025 series, 65 from January 2026) and the close of the day (15:30 until 31 July 2026, 15:40 from
3 August 2026). Dates before the NSE calendar's first year are refused: nothing says how that market
traded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from volguard_common import clock


class BacktestInputError(ValueError):
    """A run that cannot be made as asked (bad dates, an unknown source): said plainly, before it starts."""


@dataclass(frozen=True, slots=True)
class TradingDay:
    day: date
    open: datetime
    close: datetime
    expiry_weekday: int  # Monday = 0
    front_expiry: date  # the nearest weekly expiry on or after the day
    lot_size: int  # of the front series
    expiry_day: bool

    def describe(self) -> str:
        weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[self.expiry_weekday]
        return (
            f"{self.day} {self.open:%H:%M}-{self.close:%H:%M} IST, weeklies on {weekday}, "
            f"front expiry {self.front_expiry} lot {self.lot_size}"
            + (" (expiry day)" if self.expiry_day else "")
        )


def trading_day(day: date) -> TradingDay:
    calendar = clock.nse_calendar()
    opens, closes = calendar.session_bounds(day)
    front = calendar.weekly_expiries(day, 1)[0]
    return TradingDay(
        day=day,
        open=opens,
        close=closes,
        expiry_weekday=clock.expiry_weekday(day),
        front_expiry=front,
        lot_size=clock.lot_size(front),
        expiry_day=calendar.is_expiry_day(day),
    )


def trading_days(first: date, last: date) -> list[TradingDay]:
    """The NSE trading days in [first, last], with their rules; a clear error for a range that has none."""
    calendar = clock.nse_calendar()
    if last < first:
        raise BacktestInputError(f"--to {last} is before --from {first}")
    if first < calendar.first_day:
        raise BacktestInputError(
            f"--from {first} is before {calendar.first_day}, the first day of the NSE calendar data "
            f"(the calendar's first year is {calendar.first_day.year}); the contract rules and sessions "
            "of earlier dates are not known, so they cannot be backtested"
        )
    if last > calendar.last_day:
        raise BacktestInputError(
            f"--to {last} is after {calendar.last_day}, the last day the NSE calendar data covers"
        )
    days: list[TradingDay] = []
    day = first
    while day <= last:
        if calendar.is_trading_day(day):
            days.append(trading_day(day))
        day += timedelta(days=1)
    if not days:
        raise BacktestInputError(f"no NSE trading day between {first} and {last} (weekends and holidays)")
    return days


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BacktestInputError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def parse_time(text: str, option: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise BacktestInputError(f"{option} {text!r} is not a time of day (HH:MM)") from None
