"""Live calendar from the broker: Upstox's holidays and timings (fake Upstox over real HTTP) correct the
bundled calendar, every difference is alerted on sys.alerts (real Redis), and strategy, risk and
execution, started in-process against real Redis and Postgres, trade by the corrected calendar that
market_data shares (volguard_common.live_calendar)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.fakes.upstox_server import TOKEN, FakeUpstox, ist_ms, running_fake_upstox
from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import clock, events, live_calendar
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST, SimulationClock
from volguard_common.service import ServiceSpec
from volguard_common.settings import Settings
from volguard_common.upstox_http import UpstoxHttp
from volguard_execution.app import SPEC as EXECUTION
from volguard_market_data.adapters.upstox.market_info import BrokerCalendarCheck
from volguard_market_data.domain.broker_calendar import BrokerClosure, reconcile
from volguard_risk.app import SPEC as RISK
from volguard_strategy.app import SPEC as STRATEGY

MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=IST)


@pytest.fixture(autouse=True)
def _bundled_calendar_after() -> Iterator[None]:
    yield
    # The check and the services install the broker's calendar process-wide; later tests get the
    # bundled one back.
    clock.install_calendar(None)


@pytest.fixture
def fake() -> Iterator[FakeUpstox]:
    with running_fake_upstox() as server:
        yield server


def _holiday(day: date, name: str) -> dict[str, Any]:
    return {
        "date": day.isoformat(),
        "description": name,
        "holiday_type": "TRADING_HOLIDAY",
        "closed_exchanges": ["NSE", "NFO", "BSE", "BFO", "CDS", "BCD", "MCX"],
        "open_exchanges": [],
    }


async def test_the_broker_calendar_wins_and_each_difference_is_alerted(
    fake: FakeUpstox, redis: Redis, settings: Settings
) -> None:
    bundled = clock.bundled_nse_calendar()
    # Upstox's 2026 list: the bundled holidays, without Christmas and with an unscheduled closure on
    # Tuesday 8 December (an expiry day); a settlement holiday closes no trading and changes nothing.
    listed = [
        _holiday(h.day, h.name)
        for h in bundled.holidays
        if h.day.year == 2026 and h.day != date(2026, 12, 25)
    ]
    listed.append(_holiday(date(2026, 12, 8), "Unscheduled closure"))
    listed.append({**_holiday(date(2026, 2, 19), "Settlement only"), "holiday_type": "SETTLEMENT_HOLIDAY"})
    fake.market_holidays = listed
    # Today the broker says F&O closes at 15:30, where the bundled rule says 15:40.
    fake.market_timings[MONDAY.date().isoformat()] = [
        {
            "exchange": "NFO",
            "start_time": ist_ms(MONDAY.date(), 9, 15),
            "end_time": ist_ms(MONDAY.date(), 15, 30),
        }
    ]
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    async with UpstoxHttp(fake.base_url, TOKEN) as http:
        check = BrokerCalendarCheck(
            http, publisher, redis=redis, namespace=config.namespace, live_clock=SimulationClock(MONDAY)
        )
        differences = await check.check_once()
        assert [(d.day, d.broker) for d in differences] == [
            (date(2026, 12, 7), "F&O trades 09:15-15:30"),
            (date(2026, 12, 8), "F&O closed (Unscheduled closure)"),
            (date(2026, 12, 25), "F&O trades"),
        ]
        # The process now trades by the broker's calendar: the closure moves that week's expiry back
        # to Monday, which closes at 15:30; Christmas is a trading day.
        assert not clock.is_trading_day(date(2026, 12, 8))
        assert clock.weekly_expiries(date(2026, 12, 7), 1) == [date(2026, 12, 7)]
        assert clock.session_bounds(date(2026, 12, 7))[1] == datetime(2026, 12, 7, 15, 30, tzinfo=IST)
        assert clock.expiry_cutoff(date(2026, 12, 7)) == datetime(2026, 12, 7, 15, 30, tzinfo=IST)
        assert clock.is_trading_day(date(2026, 12, 25))

        alerts = [events.parse_event(f[b"event"]) for _, f in await redis.xrange(config.key("sys.alerts"))]
        assert [(a.code, a.details["day"], a.ts_event) for a in alerts if isinstance(a, events.Alert)] == [
            ("CALENDAR_BROKER_DIFFERS", "2026-12-07", MONDAY),
            ("CALENDAR_BROKER_DIFFERS", "2026-12-08", MONDAY),
            ("CALENDAR_BROKER_DIFFERS", "2026-12-25", MONDAY),
        ]
        assert all(isinstance(a, events.Alert) and "Upstox says" in a.message for a in alerts)

        # The daily re-check finds the same differences and does not repeat the alerts.
        assert len(await check.check_once()) == 3
        assert await redis.xlen(config.key("sys.alerts")) == 3
    assert fake.count("GET", "/v2/market/holidays") == 2


async def test_an_agreeing_broker_changes_nothing(fake: FakeUpstox, redis: Redis, settings: Settings) -> None:
    bundled = clock.bundled_nse_calendar()
    fake.market_holidays = [_holiday(h.day, h.name) for h in bundled.holidays if h.day.year == 2026]
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    async with UpstoxHttp(fake.base_url, TOKEN) as http:
        check = BrokerCalendarCheck(
            http, publisher, redis=redis, namespace=config.namespace, live_clock=SimulationClock(MONDAY)
        )
        assert await check.check_once() == []
    assert await redis.xlen(config.key("sys.alerts")) == 0
    assert clock.session_bounds(date(2026, 12, 7))[1] == datetime(2026, 12, 7, 15, 40, tzinfo=IST)


# ---- every service trades by the broker's calendar (issue 14) -----------------------------------

# Tuesday 8 December 2026 is an expiry day; the broker closes it, which moves the week's expiry to
# Monday 7 December, and says Monday closes at 15:30 where the bundled rule says 15:40.
CLOSED_TUESDAY = date(2026, 12, 8)


def _broker_says(fake: FakeUpstox) -> None:
    bundled = clock.bundled_nse_calendar()
    fake.market_holidays = [
        *(_holiday(h.day, h.name) for h in bundled.holidays if h.day.year == 2026),
        _holiday(CLOSED_TUESDAY, "Unscheduled closure"),
    ]
    fake.market_timings[MONDAY.date().isoformat()] = [
        {
            "exchange": "NFO",
            "start_time": ist_ms(MONDAY.date(), 9, 15),
            "end_time": ist_ms(MONDAY.date(), 15, 30),
        }
    ]


def _trades_by_the_broker() -> bool:
    return (
        not clock.is_trading_day(CLOSED_TUESDAY)
        and clock.weekly_expiries(MONDAY.date(), 1) == [MONDAY.date()]
        and clock.expiry_cutoff(MONDAY.date()) == datetime(2026, 12, 7, 15, 30, tzinfo=IST)
        and clock.session_bounds(MONDAY.date())[1] == datetime(2026, 12, 7, 15, 30, tzinfo=IST)
    )


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def _market_data_checks(fake: FakeUpstox, redis: Redis, settings: Settings) -> None:
    """What market_data does in live mode: check the broker, install and share the corrected calendar.
    Then this process forgets it, as every other process (which has only the bundled data) would."""
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    async with UpstoxHttp(fake.base_url, TOKEN) as http:
        check = BrokerCalendarCheck(
            http, publisher, redis=redis, namespace=config.namespace, live_clock=SimulationClock(MONDAY)
        )
        assert len(await check.check_once()) == 2
    clock.install_calendar(None)
    assert not _trades_by_the_broker()


@pytest.mark.parametrize("spec", [STRATEGY, RISK, EXECUTION], ids=lambda s: s.name)
async def test_a_service_on_the_live_feed_starts_on_the_broker_calendar(
    spec: ServiceSpec, fake: FakeUpstox, redis: Redis, settings: Settings
) -> None:
    _broker_says(fake)
    await _market_data_checks(fake, redis, settings)
    live = settings.model_copy(update={"feed": "upstox"})
    async with running_service(spec, live, redis):
        # Installed before the service's setup ran: its EOD flatten, expiry-day rules and safe window
        # (all read from clock.nse_calendar()) follow the broker from the first event on.
        assert _trades_by_the_broker()
        assert clock.in_safe_window(datetime(2026, 12, 7, 15, 20, tzinfo=IST), live.timed_rules()) is False


async def test_a_running_service_follows_a_change_of_the_shared_calendar(
    fake: FakeUpstox, redis: Redis, settings: Settings
) -> None:
    live = settings.model_copy(update={"feed": "upstox", "calendar_poll_s": 0.05})
    namespace = live.stream_namespace
    async with running_service(RISK, live, redis) as risk:
        # No shared calendar yet (market_data has not checked the broker): the bundled one stays.
        assert not _trades_by_the_broker()
        _broker_says(fake)
        # market_data is another process: its check (which installs the calendar in its own process)
        # runs under a namespace of its own here, and what it shared is then copied to risk's.
        side = settings.model_copy(update={"stream_namespace": namespace + "market_data:"})
        await _market_data_checks(fake, redis, side)
        shared = await redis.get(live_calendar.calendar_key(side.stream_namespace))
        assert shared is not None
        assert not _trades_by_the_broker()
        await redis.set(live_calendar.calendar_key(namespace), shared)
        await eventually(_async(_trades_by_the_broker), what="risk installs the shared calendar")
        follower = risk.extensions["live_calendar"]
        assert follower.installed is not None
        assert len(follower.installed.differences) == 2

        # The next day's check: the broker reopens Tuesday. Written as market_data writes it.
        bundled = clock.bundled_nse_calendar()
        record = live_calendar.CalendarRecord.of(
            reconcile(
                bundled,
                [BrokerClosure(h.day, h.name) for h in bundled.holidays if h.day.year == 2026],
                [],
                years=[2026],
            )[0],
            ts_event=MONDAY + timedelta(days=1),
            source="market_data/test",
        )
        await live_calendar.publish_calendar(redis, namespace, record)
        await eventually(
            _async(
                lambda: clock.is_trading_day(CLOSED_TUESDAY)
                and clock.session_bounds(MONDAY.date())[1] == datetime(2026, 12, 7, 15, 40, tzinfo=IST)
            ),
            what="risk installs the changed calendar",
        )


async def test_sim_and_replay_ignore_a_shared_calendar(
    fake: FakeUpstox, redis: Redis, settings: Settings
) -> None:
    _broker_says(fake)
    await _market_data_checks(fake, redis, settings)
    for feed in ("sim", "replay"):
        run = settings.model_copy(update={"feed": feed, "replay_dir": settings.state_dir})
        async with running_service(RISK, run, redis):
            # A replay answers the same whatever a live run left in Redis.
            assert not _trades_by_the_broker()


async def test_an_unreadable_shared_calendar_is_alerted_and_not_used(
    redis: Redis, settings: Settings
) -> None:
    live = settings.model_copy(update={"feed": "upstox"})
    config = BusConfig.from_settings(live)
    await redis.set(live_calendar.calendar_key(config.namespace), b'{"schema_version": 99}')
    async with running_service(RISK, live, redis):
        assert clock.nse_calendar() is not None
        assert not clock.is_trading_day(date(2026, 12, 25))
    alerts = [events.parse_event(f[b"event"]) for _, f in await redis.xrange(config.key("sys.alerts"))]
    assert [a.code for a in alerts if isinstance(a, events.Alert)] == ["CALENDAR_SHARED_UNREADABLE"]
