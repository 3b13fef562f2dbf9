"""Upstox market information: trading holidays and the day's market timings, checked against the
bundled NSE calendar at start and once a day in live mode (`GET /v2/market/holidays`,
`GET /v2/market/timings/{date}`; upstox.com/developer/api-documentation, Market Information).

The broker wins: its calendar is installed as the process's (`clock.install_calendar`) and shared
with every other process through Redis (`volguard_common.live_calendar`: strategy, risk and execution
install it too), and every difference is raised as one Alert naming the day, what the bundled data
says and what Upstox says. A failed check (maintenance window, network) keeps the calendar as it was,
here and in the shared key, and says so.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta

from redis.asyncio import Redis

from volguard_common import clock, events, live_calendar
from volguard_common.bus import Publisher
from volguard_common.clock import Clock, LiveClock, TradingCalendar
from volguard_common.upstox_http import UpstoxError, UpstoxHttp
from volguard_market_data.domain.broker_calendar import (
    BrokerCalendarError,
    BrokerClosure,
    CalendarDifference,
    parse_holidays,
    parse_timings,
    reconcile,
)

log = logging.getLogger(__name__)

HOLIDAYS_PATH = "/v2/market/holidays"
CHECK_EVERY = timedelta(days=1)
# After a failed check: soon enough to pick up the broker's word the same morning.
RETRY_AFTER = timedelta(minutes=15)


def timings_path(day: date) -> str:
    return f"/v2/market/timings/{day.isoformat()}"


class BrokerCalendarCheck:
    """Reads the broker's calendar, installs and shares the corrected calendar and alerts each new
    difference.

    `bundled` is the calendar the broker corrects: the bundled data, with an imported holiday file's
    holidays when there is one (never a calendar the broker already corrected, or a difference would
    be forgotten once installed). `redis` and `namespace` say where the corrected calendar is shared.
    """

    def __init__(
        self,
        http: UpstoxHttp,
        publisher: Publisher,
        *,
        redis: Redis,
        namespace: str,
        live_clock: Clock | None = None,
        bundled: TradingCalendar | None = None,
    ) -> None:
        self.http = http
        self.publisher = publisher
        self.redis = redis
        self.namespace = namespace
        self.clock = live_clock or LiveClock()
        self.bundled = bundled or clock.bundled_nse_calendar()
        self._alerted: set[CalendarDifference] = set()

    async def check_once(self) -> list[CalendarDifference]:
        """One check; returns the differences found (alerting only those not alerted before)."""
        now = self.clock.now()
        today = now.date()
        closures, sessions = parse_holidays(await self.http.get_json(HOLIDAYS_PATH))
        todays = parse_timings(await self.http.get_json(timings_path(today)), today)
        if todays is not None:
            sessions.append(todays)
        elif self.bundled.is_trading_day(today):
            closures.append(BrokerClosure(today, "no F&O session in the broker's market timings"))
        # The holiday list is the current year's; a later year it lists is covered too.
        years = {today.year} | {closure.day.year for closure in closures}
        corrected, differences = reconcile(self.bundled, closures, sessions, years=years)
        clock.install_calendar(corrected)
        # Shared before the alerts: an operator who reads an alert finds every service on the calendar
        # it names (at their next poll).
        record = live_calendar.CalendarRecord.of(
            corrected,
            ts_event=now,
            source=self.publisher.source,
            differences=tuple(d.message for d in differences),
        )
        await live_calendar.publish_calendar(self.redis, self.namespace, record)
        for difference in differences:
            if difference in self._alerted:
                continue
            self._alerted.add(difference)
            await self.publisher.alert(
                events.Severity.WARNING,
                "CALENDAR_BROKER_DIFFERS",
                f"{difference.message}; trading by the broker's calendar",
                ts_event=now,
                details={
                    "day": difference.day.isoformat(),
                    "bundled": difference.bundled,
                    "broker": difference.broker,
                },
            )
        log.info("broker calendar checked: %d difference(s) from the bundled calendar", len(differences))
        return differences

    async def run(self) -> None:
        """Check at start and then once a day; a failed check is alerted and retried sooner."""
        while True:
            try:
                await self.check_once()
                wait = CHECK_EVERY
            except (UpstoxError, BrokerCalendarError) as exc:
                log.warning("broker calendar check failed: %s", exc)
                await self.publisher.alert(
                    events.Severity.WARNING,
                    "CALENDAR_CHECK_FAILED",
                    f"could not read Upstox's market calendar ({type(exc).__name__}: {exc}); keeping the "
                    f"calendar in use, retrying in {RETRY_AFTER.total_seconds() / 60:.0f} minutes",
                    ts_event=self.clock.now(),
                )
                wait = RETRY_AFTER
            await asyncio.sleep(wait.total_seconds())
