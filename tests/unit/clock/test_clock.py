"""Clocks: live wall clock in IST, and the simulation clock driven by event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volguard_common.clock import (
    IST,
    Clock,
    ClockNotStartedError,
    LiveClock,
    SimulationClock,
    to_ist,
)


def test_ist_is_asia_kolkata_at_plus_five_thirty() -> None:
    assert str(IST) == "Asia/Kolkata"
    assert datetime(2026, 1, 6, 9, 15, tzinfo=IST).utcoffset() == timedelta(hours=5, minutes=30)


def test_to_ist_converts_and_refuses_naive() -> None:
    assert to_ist(datetime(2026, 1, 6, 3, 45, tzinfo=UTC)) == datetime(2026, 1, 6, 9, 15, tzinfo=IST)
    assert to_ist(datetime(2026, 1, 6, 3, 45, tzinfo=UTC)).tzinfo is IST
    with pytest.raises(ValueError, match="naive"):
        to_ist(datetime(2026, 1, 6, 9, 15))


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(LiveClock(), Clock)
    assert isinstance(SimulationClock(), Clock)


def test_live_clock_reads_the_wall_clock_in_ist() -> None:
    before = datetime.now(UTC)
    now = LiveClock().now()
    after = datetime.now(UTC)
    assert now.tzinfo is IST
    assert before <= now <= after


def test_simulation_clock_refuses_to_be_read_before_any_event() -> None:
    clock = SimulationClock()
    assert not clock.started
    with pytest.raises(ClockNotStartedError, match="before any market event"):
        clock.now()


def test_simulation_clock_follows_event_time_and_reports_ist() -> None:
    clock = SimulationClock()
    first = datetime(2026, 1, 6, 3, 45, tzinfo=UTC)
    assert clock.advance_to(first) == first
    assert clock.started
    assert clock.now() == datetime(2026, 1, 6, 9, 15, tzinfo=IST)
    assert clock.now().tzinfo is IST
    later = datetime(2026, 1, 6, 9, 16, tzinfo=IST)
    clock.advance_to(later)
    assert clock.now() == later


def test_simulation_clock_never_jumps_back() -> None:
    clock = SimulationClock()
    clock.advance_to(datetime(2026, 1, 6, 10, 0, tzinfo=IST))
    # A late event from another stream: ignored, and the caller is told where the clock stands.
    returned = clock.advance_to(datetime(2026, 1, 6, 9, 59, 59, tzinfo=IST))
    assert returned == datetime(2026, 1, 6, 10, 0, tzinfo=IST)
    assert clock.now() == datetime(2026, 1, 6, 10, 0, tzinfo=IST)


def test_simulation_clock_can_start_at_a_given_time_and_refuses_naive_events() -> None:
    clock = SimulationClock(start=datetime(2026, 3, 2, 9, 0, tzinfo=IST))
    assert clock.now() == datetime(2026, 3, 2, 9, 0, tzinfo=IST)
    with pytest.raises(ValueError, match="naive"):
        clock.advance_to(datetime(2026, 3, 2, 9, 1))
    assert clock.now() == datetime(2026, 3, 2, 9, 0, tzinfo=IST)


event_times = st.datetimes(
    min_value=datetime(2025, 1, 1),
    max_value=datetime(2027, 12, 31),
    timezones=st.sampled_from([IST, UTC, timezone(timedelta(hours=-5))]),
)


@settings(deadline=None)
@given(st.lists(event_times, min_size=1, max_size=50))
def test_simulation_clock_is_the_running_maximum_of_event_time(events: list[datetime]) -> None:
    clock = SimulationClock()
    previous: datetime | None = None
    for k, ts in enumerate(events):
        clock.advance_to(ts)
        now = clock.now()
        assert now == max(events[: k + 1])
        assert now.tzinfo is IST
        if previous is not None:
            assert now >= previous
        previous = now
