"""Live calendar from the broker: Upstox's holidays and timings (fake Upstox over real HTTP) correct the
bundled calendar, and every difference is alerted on sys.alerts (real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.fakes.upstox_server import TOKEN, FakeUpstox, ist_ms, running_fake_upstox
from volguard_common import clock, events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST, SimulationClock
from volguard_common.settings import Settings
from volguard_common.upstox_http import UpstoxHttp
from volguard_market_data.adapters.upstox.market_info import BrokerCalendarCheck

MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=IST)


@pytest.fixture
def fake() -> Iterator[FakeUpstox]:
    with running_fake_upstox() as server:
        yield server
    # The check installs the broker's calendar process-wide; later tests get the bundled one back.
    clock.install_calendar(None)


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
        check = BrokerCalendarCheck(http, publisher, live_clock=SimulationClock(MONDAY))
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
        check = BrokerCalendarCheck(http, publisher, live_clock=SimulationClock(MONDAY))
        assert await check.check_once() == []
    assert await redis.xlen(config.key("sys.alerts")) == 0
    assert clock.session_bounds(date(2026, 12, 7))[1] == datetime(2026, 12, 7, 15, 40, tzinfo=IST)
