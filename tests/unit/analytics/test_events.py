"""Events calendar parsing (the real file), built-in events and event-risk decay."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from tests.unit.analytics.chains import CONFIG, SHARED
from volguard_analytics.domain.calendar import (
    EventKind,
    ScheduledEvent,
    builtin_events,
    parse_events_calendar,
)
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.event_risk import (
    DayEventRisk,
    event_risk,
    event_weight,
    in_reach,
    scored_event_risk,
    scored_events,
    severity_of,
)
from volguard_common.clock import IST
from volguard_common.events.vol import EventSeverity


def test_real_calendar_parses_every_row() -> None:
    calendar = parse_events_calendar(SHARED / "events_calendar.csv")
    assert len(calendar.events) == 37
    assert calendar.bad_rows == ()
    by_name = {(e.name, e.at.date()): e for e in calendar.events}
    # "12:30 AM (next day)" on 25 Nov is 00:30 on 26 Nov.
    confidence = by_name[("CB Consumer Confidence", date(2025, 11, 26))]
    assert confidence.at == datetime(2025, 11, 26, 0, 30, tzinfo=IST)
    rbi = by_name[("RBI Monetary Policy - Repo Rate", date(2025, 12, 5))]
    assert rbi.kind is EventKind.RBI_POLICY
    assert severity_of(rbi) is EventSeverity.A
    thanksgiving = by_name[("Thanksgiving Holiday", date(2025, 11, 27))]
    assert thanksgiving.all_day
    assert thanksgiving.kind is EventKind.HOLIDAY
    assert severity_of(thanksgiving) is None
    assert severity_of(by_name[("Nonfarm Payrolls", date(2025, 12, 5))]) is EventSeverity.B
    assert severity_of(by_name[("CPI Inflation YoY", date(2025, 12, 12))]) is EventSeverity.B
    assert severity_of(by_name[("ECB Interest Rate Decision", date(2025, 12, 18))]) is EventSeverity.C


def test_bad_rows_are_reported_with_line_numbers() -> None:
    text = (
        '"Date","Time (IST)","Event","Country","Importance"\n'
        '"2025-12-01","25:00 PM","X","US","High"\n'
        '"01/12/2025","10:00 AM","Y","US","High"\n'
        '"2025-12-02","10:00 AM","Z","India","High"\n'
    )
    calendar = parse_events_calendar(text)
    assert [row.line for row in calendar.bad_rows] == [2, 3]
    assert [e.name for e in calendar.events] == ["Z"]


def test_builtin_events_and_merge_keep_one_rbi_decision_per_day() -> None:
    builtin = builtin_events(date(2025, 12, 1), date(2025, 12, 31))
    kinds = {e.kind for e in builtin.events}
    assert kinds == {EventKind.RBI_POLICY, EventKind.EXPIRY}
    expiries = [e.at.date() for e in builtin.events if e.kind is EventKind.EXPIRY]
    assert expiries == [
        date(2025, 12, 2),
        date(2025, 12, 9),
        date(2025, 12, 16),
        date(2025, 12, 23),
        date(2025, 12, 30),
    ]
    imported = parse_events_calendar(SHARED / "events_calendar.csv")
    merged = imported.merged(builtin)
    rbi = [e for e in merged.events if e.kind is EventKind.RBI_POLICY]
    assert len(rbi) == 1
    # The file's row (its name) at the later of the two times: the file says 04:30 "IST" for a
    # decision announced at 10:00 IST, and risk must not lapse before the announcement.
    file_row = next(e for e in imported.events if e.kind is EventKind.RBI_POLICY)
    assert file_row.at.time() == time(4, 30)
    assert rbi[0].name == file_row.name
    assert rbi[0].at == datetime(2025, 12, 5, 10, 0, tzinfo=IST)
    # Either way round, the later time stands.
    assert next(e for e in builtin.merged(imported).events if e.kind is EventKind.RBI_POLICY).at == rbi[0].at
    budget = builtin_events(date(2026, 1, 1), date(2026, 2, 28))
    assert any(e.kind is EventKind.UNION_BUDGET and e.at.date() == date(2026, 2, 1) for e in budget.events)


def test_event_risk_decays_with_days_to_the_event() -> None:
    calendar = builtin_events(date(2025, 12, 1), date(2025, 12, 31))
    rbi = next(e for e in calendar.events if e.kind is EventKind.RBI_POLICY)
    weights = [event_weight(rbi, rbi.at - timedelta(days=d), CONFIG) for d in (0.5, 1.0, 2.5, 4.0, 8.0)]
    assert weights[:2] == [5.0, 5.0]
    assert weights[2] == pytest.approx(2.5)  # one half-life after the first day
    assert weights[3] == pytest.approx(1.25)
    assert weights[4] == 0.0  # beyond the horizon
    assert event_weight(rbi, rbi.at + timedelta(minutes=1), CONFIG) == 0.0  # already announced

    near = event_risk(calendar.events, rbi.at - timedelta(hours=20), CONFIG)
    assert near.score == 5
    assert near.severity is EventSeverity.A
    assert near.size_multiplier == CONFIG.event_multiplier_a
    assert any("RBI" in name for name in near.events)
    far = event_risk(calendar.events, rbi.at - timedelta(days=4), CONFIG)
    assert far.score == 1


def test_expiry_day_alone_is_severity_c() -> None:
    calendar = builtin_events(date(2025, 12, 20), date(2025, 12, 31))
    risk = event_risk(calendar.events, datetime(2025, 12, 23, 10, 0, tzinfo=IST), CONFIG)
    assert risk.severity is EventSeverity.C
    assert risk.score == 1
    assert risk.size_multiplier == CONFIG.event_multiplier_c
    quiet = event_risk((), datetime(2025, 12, 23, 10, 0, tzinfo=IST), CONFIG)
    assert quiet.score == 0
    assert quiet.severity is None
    assert quiet.size_multiplier == 1.0


def _instants(events: tuple[ScheduledEvent, ...], config: AnalyticsConfig) -> list[datetime]:
    """Every 7 minutes from 1 to 27 Dec 2025, plus each event's edges to the microsecond: its time, the
    end of an all-day event, the one-day and horizon marks before it."""
    start = datetime(2025, 12, 1, tzinfo=IST)
    out = [start + timedelta(minutes=7 * k) for k in range(26 * 24 * 60 // 7)]
    tiny = timedelta(microseconds=1)
    for event in events:
        end = event.at + timedelta(days=1) if event.all_day else event.at
        for mark in (
            event.at,
            end,
            event.at - timedelta(days=1),
            event.at - timedelta(days=config.event_horizon_days),
        ):
            out += [mark - tiny, mark, mark + tiny]
    return out


def test_day_event_risk_is_scored_event_risk_at_every_instant() -> None:
    # An all-day India "Very High" event (A) exercises the end-of-day edge the file's events lack.
    all_day = ScheduledEvent(
        at=datetime(2025, 12, 12, tzinfo=IST), name="State election results", country="India",
        importance="Very High", kind=EventKind.MACRO, all_day=True,
    )  # fmt: skip
    calendar = parse_events_calendar(SHARED / "events_calendar.csv").merged(
        builtin_events(date(2025, 11, 1), date(2026, 3, 31))
    )
    events = (*calendar.events, all_day)
    scored = scored_events(events)
    for config in (CONFIG, CONFIG.replace(event_half_life_days=0.4, event_horizon_days=3.0)):
        instants = _instants(events, config)
        expected = [scored_event_risk(scored, ts, config) for ts in instants]
        assert {risk.score for risk in expected} == {0, 1, 2, 3, 4, 5}
        day_risk = DayEventRisk(scored, config)
        # Forwards, then backwards on the same instance: the outcomes it keeps depend on nothing else.
        assert [day_risk.at(ts) for ts in instants] == expected
        assert [day_risk.at(ts) for ts in reversed(instants)] == expected[::-1]


def test_a_day_keeps_only_the_events_in_reach_and_scores_every_instant_the_same() -> None:
    # What the engine does: one DayEventRisk per day over the events that can be in play that day.
    calendar = parse_events_calendar(SHARED / "events_calendar.csv").merged(
        builtin_events(date(2025, 11, 1), date(2026, 3, 31))
    )
    scored = scored_events(calendar.events)
    for config in (CONFIG, CONFIG.replace(event_half_life_days=0.4, event_horizon_days=3.0)):
        by_day: dict[date, list[datetime]] = {}
        for ts in _instants(calendar.events, config):
            by_day.setdefault(ts.date(), []).append(ts)
        dropped = 0
        for day, instants in by_day.items():
            start = datetime.combine(day, time(0, 0), tzinfo=IST)
            # The day's last microsecond is where an event's weight is heaviest.
            instants = [*instants, start, start + timedelta(days=1, microseconds=-1)]
            reachable = in_reach(scored, start, start + timedelta(days=1), config)
            day_risk = DayEventRisk(reachable, config)
            assert [day_risk.at(ts) for ts in instants] == [
                scored_event_risk(scored, ts, config) for ts in instants
            ]
            # Within the horizon of the day yet never in play that day: left out.
            horizon = start + timedelta(days=1 + config.event_horizon_days)
            dropped += sum(1 for pair in scored if pair not in reachable and start < pair[0].at <= horizon)
        assert dropped > 0
