"""The broker-corrected NSE calendar, shared by market_data with every other process (live feed only).

In live mode market_data reads Upstox's trading holidays and market timings at start and once a day
and corrects the bundled calendar with them (the broker wins; see volguard_market_data's
`broker_calendar`). Strategy (expiry-day rules, expiry choice), risk (safe window, EOD and expiry-day
flatten) and execution (the paper exchange's session) must trade by the same corrected calendar, so
market_data writes it, whole, to one Redis key:

    <namespace>calendar:nse   = CalendarRecord as JSON (schema_version 1)

and every service whose feed is `upstox` installs it (`clock.install_calendar`) at start and whenever
the key's content changes. A key, not a stream: the calendar is one current value that a restarted
service needs at once, and it changes at most a few times a day, ahead of the days it affects. Services
poll it (`calendar_poll_s`, 30 s): a consumer group per service for a value that changes daily would be
more machinery for nothing, and a missed pub/sub message would leave a service on a stale calendar.
In sim and replay nothing reads or writes it: those runs use the bundled calendar (and any imported
holiday file), so a replay gives the same answers whatever a live run left in Redis.
"""

from __future__ import annotations

import asyncio
from datetime import date, time
from typing import Annotated, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError

from volguard_common import clock, events
from volguard_common.bus import Publisher
from volguard_common.clock import Holiday, SessionTimes, SpecialSession, TradingCalendar
from volguard_common.events import IstDatetime

log = structlog.get_logger("volguard.live_calendar")

KEY = "calendar:nse"
SCHEMA_VERSION = 1
# Versions this code reads; a newer market_data's record is refused (and alerted), never half-read.
SUPPORTED_VERSIONS = frozenset({1})

Text = Annotated[str, Field(max_length=400)]


def calendar_key(namespace: str) -> str:
    """The Redis key holding the shared calendar in this namespace."""
    return f"{namespace}{KEY}"


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HolidayRow(_Row):
    day: date
    name: Text
    source: Text


class SpecialSessionRow(_Row):
    day: date
    open: time
    close: time
    kind: Literal["full", "muhurat"]
    description: Text
    source: Text


class SessionTimesRow(_Row):
    effective_from: date
    open: time
    close: time
    source: Text


class CalendarRecord(_Row):
    """The whole calendar a process should trade by, as market_data corrected it."""

    schema_version: int = SCHEMA_VERSION
    # When market_data read the broker (IST wall time: this exists only with the live feed).
    ts_event: IstDatetime
    source: Annotated[str, Field(min_length=1, max_length=128)]
    first_day: date
    last_day: date
    holidays: tuple[HolidayRow, ...]
    special_sessions: tuple[SpecialSessionRow, ...]
    session_times: tuple[SessionTimesRow, ...]
    # What the broker corrected, one line a day, for operators reading the key.
    differences: tuple[Text, ...] = ()

    @field_validator("schema_version")
    @classmethod
    def _known(cls, version: int) -> int:
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"calendar record version {version} is not one of {sorted(SUPPORTED_VERSIONS)}")
        return version

    @classmethod
    def of(
        cls,
        calendar: TradingCalendar,
        *,
        ts_event: IstDatetime,
        source: str,
        differences: tuple[str, ...] = (),
    ) -> CalendarRecord:
        return cls(
            ts_event=ts_event,
            source=source,
            first_day=calendar.first_day,
            last_day=calendar.last_day,
            holidays=tuple(
                HolidayRow(day=h.day, name=h.name, source=h.source)
                for h in sorted(calendar.holidays, key=lambda h: h.day)
            ),
            special_sessions=tuple(
                SpecialSessionRow(
                    day=s.day,
                    open=s.open,
                    close=s.close,
                    kind=s.kind,
                    description=s.description,
                    source=s.source,
                )
                for s in calendar.special_sessions
            ),
            session_times=tuple(
                SessionTimesRow(effective_from=r.effective_from, open=r.open, close=r.close, source=r.source)
                for r in calendar.session_times
            ),
            differences=differences,
        )

    def calendar(self) -> TradingCalendar:
        """The calendar itself (TradingCalendar validates it again: weekdays, coverage, sessions)."""
        return TradingCalendar(
            [Holiday(h.day, h.name, h.source) for h in self.holidays],
            [
                SpecialSession(s.day, s.open, s.close, s.kind, s.description, s.source)
                for s in self.special_sessions
            ],
            self.first_day,
            self.last_day,
            [SessionTimes(r.effective_from, r.open, r.close, r.source) for r in self.session_times],
        )


async def publish_calendar(redis: Redis, namespace: str, record: CalendarRecord) -> None:
    """Make `record` the calendar every live-feed process trades by (no expiry: a restarted service
    needs the broker's last word even when the broker is in its nightly maintenance window)."""
    await redis.set(calendar_key(namespace), record.model_dump_json())


class CalendarFollower:
    """Installs the shared calendar in this process at start and whenever it changes."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        poll_s: float,
        publisher: Publisher | None = None,
    ) -> None:
        self.redis = redis
        self.key = calendar_key(namespace)
        self.poll_s = poll_s
        self.publisher = publisher
        self.installed: CalendarRecord | None = None
        self._seen: bytes | None = None

    async def sync(self) -> bool:
        """Read the key once; install what it holds if it changed. True when a calendar was installed.

        No key yet (market_data has not checked the broker): the calendar in use stays. A record this
        process cannot read stays unused and is alerted once, so an operator knows which services trade
        by which calendar; the calendar in use (bundled or imported) stays.
        """
        raw = await self.redis.get(self.key)
        if raw is None or raw == self._seen:
            return False
        self._seen = raw
        try:
            record = CalendarRecord.model_validate_json(raw)
            calendar = record.calendar()
        except (ValidationError, ValueError) as exc:
            log.error("shared calendar unreadable; keeping the calendar in use", key=self.key, error=str(exc))
            if self.publisher is not None:
                await self.publisher.alert(
                    events.Severity.WARNING,
                    "CALENDAR_SHARED_UNREADABLE",
                    f"the broker-corrected calendar in {self.key} cannot be read here ({exc}); this process "
                    "keeps trading by the calendar it has",
                    ts_event=clock.LiveClock().now(),
                )
            return False
        clock.install_calendar(calendar)
        self.installed = record
        log.info(
            "broker-corrected calendar installed",
            checked_at=record.ts_event.isoformat(),
            by=record.source,
            differences=len(record.differences),
        )
        return True

    async def run(self) -> None:
        """Poll every `poll_s`; passing Redis trouble is logged and retried at the next poll."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.sync()
            except (RedisError, OSError) as exc:
                log.warning("could not read the shared calendar; retrying", key=self.key, error=repr(exc))
