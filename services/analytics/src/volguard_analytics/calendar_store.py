"""Import events calendars (the format of shared/data/events_calendar.csv) into analytics.event_calendar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from volguard_analytics.domain.calendar import parse_events_calendar
from volguard_common.file_rows import BadRow


@dataclass(frozen=True)
class CalendarImport:
    path: Path
    rows: int
    inserted: int
    updated: int
    bad_rows: tuple[BadRow, ...]


async def import_events_calendar(pool: asyncpg.Pool, path: Path) -> CalendarImport:
    """Upsert every good row (keyed by date, name, country); bad rows are reported, never dropped silently.

    The stored time is the published text ('11:00 PM', '12:30 AM (next day)'), parsed again on load.
    """
    calendar = parse_events_calendar(path)
    source = f"file:{path.name}"
    inserted = updated = 0
    async with pool.acquire() as conn, conn.transaction():
        for event in calendar.events:
            # Stored on the event's own IST date: a '(next day)' time is already folded into `at`.
            time_text = "All Day" if event.all_day else event.at.strftime("%I:%M %p")
            day = event.at.date()
            status = await conn.fetchval(
                "insert into analytics.event_calendar "
                "(event_date, event_time, name, country, importance, source) values ($1, $2, $3, $4, $5, $6) "
                "on conflict (event_date, name, country) do update set event_time = excluded.event_time, "
                "importance = excluded.importance, source = excluded.source, imported_at = now() "
                "where (analytics.event_calendar.event_time, analytics.event_calendar.importance) "
                "is distinct from (excluded.event_time, excluded.importance) "
                "returning (xmax = 0)",
                day,
                time_text,
                event.name,
                event.country,
                event.importance,
                source,
            )
            if status is True:
                inserted += 1
            elif status is False:
                updated += 1
    return CalendarImport(path, len(calendar.events), inserted, updated, calendar.bad_rows)
