"""The broker's word on the NSE calendar, and where it differs from the bundled data.

In live mode Upstox's market-information endpoints say which days the F&O segment (NFO) is closed
and when it trades on a given day. Where that disagrees with the bundled calendar the broker wins:
it is the venue we trade on, and the bundled file may be out of date (the 2027 holidays are
provisional until NSE publishes them). Every disagreement is reported so an operator can correct
the bundled file (`volguard calendar import`).

Pure: JSON bodies in, calendar and differences out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from volguard_common.clock import IST, Holiday, SpecialSession, TradingCalendar

# Upstox's exchange code of the NSE equity-derivatives segment.
FNO_EXCHANGE = "NFO"
BROKER_SOURCE = "Upstox market information"


@dataclass(frozen=True, slots=True)
class BrokerClosure:
    """A weekday the broker says the F&O segment does not trade."""

    day: date
    description: str


@dataclass(frozen=True, slots=True)
class BrokerSession:
    """The F&O session the broker gives for one day (IST)."""

    day: date
    open: time
    close: time


@dataclass(frozen=True, slots=True)
class CalendarDifference:
    day: date
    bundled: str
    broker: str

    @property
    def message(self) -> str:
        return f"{self.day.isoformat()}: bundled calendar says {self.bundled}, Upstox says {self.broker}"


class BrokerCalendarError(ValueError):
    """A market-information body that does not say what it should; nothing is guessed from it."""


def _data(body: Any, what: str) -> list[Any]:
    if (
        not isinstance(body, Mapping)
        or body.get("status") != "success"
        or not isinstance(body.get("data"), list)
    ):
        raise BrokerCalendarError(
            f"{what}: expected a successful response with a data list, got {body!r:.200}"
        )
    return list(body["data"])


def _ist_time(epoch_ms: Any, day: date, what: str) -> time:
    if not isinstance(epoch_ms, int) or isinstance(epoch_ms, bool):
        raise BrokerCalendarError(f"{what}: time {epoch_ms!r} is not epoch milliseconds")
    moment = datetime.fromtimestamp(epoch_ms / 1000.0, tz=IST)
    if moment.date() != day:
        raise BrokerCalendarError(f"{what}: time {moment.isoformat()} is not on {day.isoformat()}")
    return moment.time()


def parse_holidays(body: Any) -> tuple[list[BrokerClosure], list[BrokerSession]]:
    """F&O closures and special F&O sessions from a `/v2/market/holidays` body.

    A TRADING_HOLIDAY that closes NFO is a closure; a day whose open_exchanges list NFO with times is
    a special session (Muhurat, a weekend Budget day). Settlement holidays close no trading.
    """
    closures: list[BrokerClosure] = []
    sessions: list[BrokerSession] = []
    for entry in _data(body, "market holidays"):
        try:
            day = date.fromisoformat(entry["date"])
            kind = entry["holiday_type"]
            closed = entry.get("closed_exchanges") or []
            opened = entry.get("open_exchanges") or []
        except (KeyError, TypeError, ValueError) as exc:
            raise BrokerCalendarError(f"market holidays: unreadable entry {entry!r:.200}") from exc
        if kind == "TRADING_HOLIDAY" and FNO_EXCHANGE in closed:
            closures.append(BrokerClosure(day, str(entry.get("description", ""))))
        for venue in opened:
            if isinstance(venue, Mapping) and venue.get("exchange") == FNO_EXCHANGE:
                what = f"market holidays {day}"
                sessions.append(
                    BrokerSession(
                        day,
                        _ist_time(venue.get("start_time"), day, what),
                        _ist_time(venue.get("end_time"), day, what),
                    )
                )
    return closures, sessions


def parse_timings(body: Any, day: date) -> BrokerSession | None:
    """The F&O session on `day` from a `/v2/market/timings/{day}` body; None when NFO does not trade."""
    for venue in _data(body, f"market timings {day}"):
        if isinstance(venue, Mapping) and venue.get("exchange") == FNO_EXCHANGE:
            what = f"market timings {day}"
            return BrokerSession(
                day,
                _ist_time(venue.get("start_time"), day, what),
                _ist_time(venue.get("end_time"), day, what),
            )
    return None


def reconcile(
    bundled: TradingCalendar,
    closures: Iterable[BrokerClosure],
    sessions: Sequence[BrokerSession],
    *,
    years: Iterable[int],
) -> tuple[TradingCalendar, list[CalendarDifference]]:
    """The bundled calendar with the broker's word applied, and every difference, by day.

    `years` are the years the broker's holiday list covers: there the broker's weekday closures
    replace the bundled ones. `sessions` (from timings and special sessions) replace the bundled
    session of their day where they differ.
    """
    covered = set(years)
    broker_closed = {c.day: c for c in closures if c.day.weekday() < 5 and c.day.year in covered}
    broker_closed = {d: c for d, c in broker_closed.items() if bundled.first_day <= d <= bundled.last_day}
    differences: list[CalendarDifference] = []
    holidays: list[Holiday] = []
    for holiday in bundled.holidays:
        if holiday.day.year not in covered or holiday.day in broker_closed:
            holidays.append(holiday)
        else:
            differences.append(
                CalendarDifference(holiday.day, f"a holiday ({holiday.name}, {holiday.source})", "F&O trades")
            )
    bundled_days = {h.day for h in bundled.holidays}
    for day, closure in sorted(broker_closed.items()):
        if day not in bundled_days:
            holidays.append(Holiday(day=day, name=closure.description, source=BROKER_SOURCE))
            differences.append(
                CalendarDifference(day, "a trading day", f"F&O closed ({closure.description})")
            )

    specials = {s.day: s for s in bundled.special_sessions}
    holiday_days = {h.day for h in holidays}
    for session in sessions:
        if not bundled.first_day <= session.day <= bundled.last_day or session.day in holiday_days:
            continue
        if bundled.is_trading_day(session.day):
            open_dt, close_dt = bundled.session_bounds(session.day)
            bundled_times = (open_dt.time(), close_dt.time())
            said = f"{bundled_times[0]:%H:%M}-{bundled_times[1]:%H:%M}"
        else:
            bundled_times = None
            said = "no session"
        if bundled_times == (session.open, session.close):
            continue
        differences.append(
            CalendarDifference(session.day, said, f"F&O trades {session.open:%H:%M}-{session.close:%H:%M}")
        )
        specials[session.day] = SpecialSession(
            day=session.day,
            open=session.open,
            close=session.close,
            kind="full",
            description="session times from the broker",
            source=BROKER_SOURCE,
        )
    corrected = TradingCalendar(
        holidays,
        [s for s in specials.values() if s.day not in holiday_days or s.kind == "muhurat"],
        bundled.first_day,
        bundled.last_day,
        bundled.session_times,
    )
    return corrected, sorted(differences, key=lambda d: d.day)
