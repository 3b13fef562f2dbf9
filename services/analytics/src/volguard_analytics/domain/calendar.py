"""Scheduled events: the macro calendar file plus built-in RBI policy, Union Budget and expiry days.

The file format is that of `events_calendar.csv` (investing.com-style export): quoted columns
`Date, Time (IST), Event, Country, Importance, ...`. Times are `11:00 PM`, `12:30 AM (next day)` (the
event is after midnight, on the following date) or `All Day`. Every row lands in the calendar or in
`bad_rows` with its line number and the reason, like the daily-history parsers.

Built-in dates (announcement times IST), to be extended when RBI and the Government publish the next
schedules:
- RBI MPC decisions, 10:00: the 2025 and FY2025-26 schedule published by RBI.
- Union Budget, 11:00: 1 Feb 2025 (a Saturday session) and 1 Feb 2026 (a Sunday session), matching the
  special sessions in `volguard_common/calendar_data`.
- NIFTY expiry days, at the day's dated close (15:30 until July 2026, 15:40 from August), from
  `volguard_common.clock`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path

from volguard_common import clock
from volguard_common.clock import IST
from volguard_common.file_rows import BadRow

RBI_POLICY_DATES = (
    date(2025, 2, 7),
    date(2025, 4, 9),
    date(2025, 6, 6),
    date(2025, 8, 6),
    date(2025, 10, 1),
    date(2025, 12, 5),
    date(2026, 2, 6),
)
RBI_POLICY_TIME = time(10, 0)
UNION_BUDGET_DATES = (date(2025, 2, 1), date(2026, 2, 1))
UNION_BUDGET_TIME = time(11, 0)

_REQUIRED = ("date", "time_ist", "event", "country", "importance")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})\s*(AM|PM)\s*(\(next day\))?$", re.IGNORECASE)


class EventKind(StrEnum):
    MACRO = "MACRO"
    RBI_POLICY = "RBI_POLICY"
    UNION_BUDGET = "UNION_BUDGET"
    EXPIRY = "EXPIRY"
    HOLIDAY = "HOLIDAY"  # market holidays abroad: listed, never scored


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    at: datetime  # IST; an all-day event is at 00:00 of its date
    name: str
    country: str
    importance: str  # as in the file: Medium, High, Very High, Holiday; built-ins say Very High
    kind: EventKind
    all_day: bool = False

    @property
    def label(self) -> str:
        when = self.at.date().isoformat() if self.all_day else self.at.strftime("%Y-%m-%d %H:%M")
        return f"{self.name} ({self.country}, {when})"


@dataclass(frozen=True, slots=True)
class EventCalendar:
    events: tuple[ScheduledEvent, ...]
    bad_rows: tuple[BadRow, ...] = ()

    def merged(self, other: EventCalendar) -> EventCalendar:
        """Both calendars; one RBI decision, budget or expiry per date. This calendar's row wins, but
        at the later of the two times when they disagree: an imported row can carry the wrong time
        (the shared sample file has the 10:00 IST RBI decision at "04:30 AM", its UTC time), and for
        a vol seller the costly mistake is letting event risk lapse before the announcement."""
        kept: dict[tuple[EventKind, date], int] = {}
        events: list[ScheduledEvent] = []
        for event in (*self.events, *other.events):
            if event.kind in (EventKind.RBI_POLICY, EventKind.UNION_BUDGET, EventKind.EXPIRY):
                key = (event.kind, event.at.date())
                i = kept.get(key)
                if i is not None:
                    if _ends(event) > _ends(events[i]):
                        events[i] = dataclasses.replace(events[i], at=event.at, all_day=event.all_day)
                    continue
                kept[key] = len(events)
            events.append(event)
        return EventCalendar(tuple(sorted(events, key=_order)), (*self.bad_rows, *other.bad_rows))


def _ends(event: ScheduledEvent) -> datetime:
    """When an event stops weighing (event_risk): its time, or the next midnight for an all-day one."""
    return event.at + timedelta(days=1) if event.all_day else event.at


def _order(event: ScheduledEvent) -> tuple[datetime, str, str]:
    return event.at, event.kind.value, event.name


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")


def _kind(name: str, importance: str) -> EventKind:
    lowered = name.lower()
    if importance.strip().lower() == "holiday":
        return EventKind.HOLIDAY
    if "rbi" in lowered and ("policy" in lowered or "repo" in lowered or "rate" in lowered):
        return EventKind.RBI_POLICY
    if "union budget" in lowered:
        return EventKind.UNION_BUDGET
    return EventKind.MACRO


def _when(day: date, text: str) -> tuple[datetime, bool] | None:
    cell = text.strip()
    if cell.lower() in ("all day", "allday", ""):
        return datetime.combine(day, time(0, 0), tzinfo=IST), True
    match = _TIME.match(cell)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if not (1 <= hour <= 12 and minute < 60):
        return None
    hour = hour % 12 + (12 if match.group(3).upper() == "PM" else 0)
    at = datetime.combine(day, time(hour, minute), tzinfo=IST)
    if match.group(4):
        at += timedelta(days=1)
    return at, False


def scheduled_event(day: date, time_text: str, name: str, country: str, importance: str) -> ScheduledEvent:
    """One calendar row as stored (date, the published time text, name, country, importance)."""
    when = _when(day, time_text)
    if when is None:
        raise ValueError(f"events calendar: unparseable time {time_text.strip()!r} for {name!r} on {day}")
    return ScheduledEvent(
        at=when[0],
        name=name,
        country=country,
        importance=importance,
        kind=_kind(name, importance),
        all_day=when[1],
    )


def parse_events_calendar(source: Path | str) -> EventCalendar:
    """Parse an events calendar file (a `Path`) or its text (a `str`)."""
    text = (
        source.read_bytes().decode("utf-8-sig") if isinstance(source, Path) else source.removeprefix("\ufeff")
    )
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [_key(cell) for cell in row]
            break
    if header is None:
        raise ValueError("events calendar: no header line")
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise ValueError(f"events calendar: header lacks {missing} (have {header})")
    pos = {name: header.index(name) for name in _REQUIRED}
    events: list[ScheduledEvent] = []
    bad: list[BadRow] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad.append(BadRow(line, f"expected {len(header)} cells, found {len(row)}"))
            continue
        try:
            day = date.fromisoformat(row[pos["date"]].strip())
        except ValueError:
            bad.append(BadRow(line, f"unparseable date {row[pos['date']].strip()!r}"))
            continue
        when = _when(day, row[pos["time_ist"]])
        if when is None:
            bad.append(BadRow(line, f"unparseable time {row[pos['time_ist']].strip()!r}"))
            continue
        name = row[pos["event"]].strip()
        if not name:
            bad.append(BadRow(line, "empty event name"))
            continue
        importance = row[pos["importance"]].strip()
        events.append(
            ScheduledEvent(
                at=when[0],
                name=name,
                country=row[pos["country"]].strip(),
                importance=importance,
                kind=_kind(name, importance),
                all_day=when[1],
            )
        )
    return EventCalendar(tuple(sorted(events, key=_order)), tuple(bad))


def builtin_events(first: date, last: date) -> EventCalendar:
    """RBI policy decisions, Union Budgets and NIFTY expiry days between `first` and `last` inclusive."""
    events: list[ScheduledEvent] = []
    for day in RBI_POLICY_DATES:
        if first <= day <= last:
            at = datetime.combine(day, RBI_POLICY_TIME, tzinfo=IST)
            events.append(
                ScheduledEvent(at, "RBI monetary policy decision", "India", "Very High", EventKind.RBI_POLICY)
            )
    for day in UNION_BUDGET_DATES:
        if first <= day <= last:
            at = datetime.combine(day, UNION_BUDGET_TIME, tzinfo=IST)
            events.append(ScheduledEvent(at, "Union Budget", "India", "Very High", EventKind.UNION_BUDGET))
    expiry = first
    while True:
        upcoming = clock.weekly_expiries(expiry, 1)
        if not upcoming or upcoming[0] > last:
            break
        day = upcoming[0]
        events.append(
            ScheduledEvent(clock.expiry_cutoff(day), "NIFTY expiry", "India", "Medium", EventKind.EXPIRY)
        )
        expiry = day + timedelta(days=1)
    return EventCalendar(tuple(sorted(events, key=_order)))
