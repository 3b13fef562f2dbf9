"""Event risk: a 0-5 score and a severity from scheduled events, decaying with time to the event.

Severity (our choice, documented for strategy and risk):
- A: RBI policy decision, Union Budget, any India event rated "Very High";
- B: US "Very High" events (Fed decision, payrolls, CPI) and India or US "High" events;
- C: NIFTY expiry day; "Very High" events elsewhere (ECB, BoE, BoJ); India "Medium" events;
- not scored: other Medium/low events abroad and holidays.
Weight: base points A 5, B 3, C 1, times a decay of 1 within a day of the event, halving every
`event_half_life_days` after that; events beyond `event_horizon_days`, or already past, count zero.
An event is "in play" when its weight rounds to at least 1. Score = round(max weight), capped at 5;
severity = the most severe event in play; size multiplier = Settings' multiplier of that severity
(1.0 when nothing is in play). An all-day event stays in play for its whole date.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from volguard_analytics.domain.calendar import EventKind, ScheduledEvent
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common.events.vol import EventRisk, EventSeverity

BASE_POINTS = {EventSeverity.A: 5.0, EventSeverity.B: 3.0, EventSeverity.C: 1.0}
_RANK = {EventSeverity.A: 0, EventSeverity.B: 1, EventSeverity.C: 2}


def severity_of(event: ScheduledEvent) -> EventSeverity | None:
    importance = event.importance.strip().lower()
    country = event.country.strip().lower()
    if event.kind in (EventKind.RBI_POLICY, EventKind.UNION_BUDGET):
        return EventSeverity.A
    if event.kind is EventKind.EXPIRY:
        return EventSeverity.C
    if event.kind is EventKind.HOLIDAY:
        return None
    if country == "india" and importance == "very high":
        return EventSeverity.A
    if country in ("us", "united states", "india") and importance in ("very high", "high"):
        return EventSeverity.B
    if importance == "very high" or (country == "india" and importance == "medium"):
        return EventSeverity.C
    return None


def event_weight(event: ScheduledEvent, ts_event: datetime, config: AnalyticsConfig) -> float:
    severity = severity_of(event)
    return 0.0 if severity is None else _weight(event, severity, ts_event, config)


def _weight(
    event: ScheduledEvent, severity: EventSeverity, ts_event: datetime, config: AnalyticsConfig
) -> float:
    end = event.at + timedelta(days=1) if event.all_day else event.at
    if end <= ts_event:
        return 0.0
    return _points(BASE_POINTS[severity], max(0.0, (event.at - ts_event).total_seconds() / 86_400.0), config)


def _points(base: float, days: float, config: AnalyticsConfig) -> float:
    """An event's weight `days` before it: full inside the last day, halving every half-life before
    that, nothing beyond the horizon."""
    if days > config.event_horizon_days:
        return 0.0
    return base * (1.0 if days <= 1.0 else 0.5 ** ((days - 1.0) / config.event_half_life_days))


ScoredEvents = tuple[tuple[ScheduledEvent, EventSeverity], ...]


def scored_events(events: Iterable[ScheduledEvent]) -> ScoredEvents:
    """The events that can score, with their severity: classified once per calendar, not per
    snapshot (the engine evaluates event risk every second)."""
    pairs = ((event, severity_of(event)) for event in events)
    return tuple((event, severity) for event, severity in pairs if severity is not None)


# At least the weight that rounds to 1 (in play), less a margin far above the rounding of the decay.
_IN_REACH_WEIGHT = 0.5 - 1e-9


def in_reach(events: ScoredEvents, start: datetime, end: datetime, config: AnalyticsConfig) -> ScoredEvents:
    """The events that can be in play at some instant of [start, end). The others weigh under 0.5 there,
    so they never enter the score or the list: leaving them out changes no EventRisk of the span.

    Out of reach: an event whose weight has ended by `start`, or one that weighs clearly under 0.5 even
    at `end` - a weight only grows as its event nears, so `end` is where it is heaviest.
    """
    reachable = []
    for event, severity in events:
        if (event.at + timedelta(days=1) if event.all_day else event.at) <= start:
            continue
        days = max(0.0, (event.at - end).total_seconds() / 86_400.0)
        if _points(BASE_POINTS[severity], days, config) >= _IN_REACH_WEIGHT:
            reachable.append((event, severity))
    return tuple(reachable)


def event_risk(events: Iterable[ScheduledEvent], ts_event: datetime, config: AnalyticsConfig) -> EventRisk:
    return scored_event_risk(scored_events(events), ts_event, config)


def scored_event_risk(events: ScoredEvents, ts_event: datetime, config: AnalyticsConfig) -> EventRisk:
    """`event_risk` over events already classified by `scored_events`."""
    in_play: list[tuple[float, EventSeverity, ScheduledEvent]] = []
    for event, severity in events:
        weight = _weight(event, severity, ts_event, config)
        if int(weight + 0.5) >= 1:
            in_play.append((weight, severity, event))
    if not in_play:
        return _risk(0, (), config)
    score = min(5, int(max(weight for weight, _, _ in in_play) + 0.5))
    return _risk(score, [(event, severity) for _, severity, event in in_play], config)


def _risk(
    score: int, in_play: Sequence[tuple[ScheduledEvent, EventSeverity]], config: AnalyticsConfig
) -> EventRisk:
    """The message for a score and the events in play (in calendar order)."""
    if not in_play:
        return EventRisk(score=0, severity=None, size_multiplier=1.0, events=[])
    worst = min((severity for _, severity in in_play), key=_RANK.__getitem__)
    multiplier = {
        EventSeverity.A: config.event_multiplier_a,
        EventSeverity.B: config.event_multiplier_b,
        EventSeverity.C: config.event_multiplier_c,
    }[worst]
    labels = [f"{event.label} [{severity.value}]"[:200] for event, severity in in_play]
    return EventRisk(score=score, severity=worst, size_multiplier=multiplier, events=labels)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Distinct outcomes kept per DayEventRisk: a day sees a handful, this only bounds a pathological feed.
_MAX_OUTCOMES = 64


def _epoch_us(ts: datetime) -> int:
    """Whole microseconds since the epoch. `(a - b).total_seconds()` is exactly `(a_us - b_us) / 10**6`
    (CPython divides the integer microseconds), so weights from these equal `_weight`'s to the bit; IST
    has no DST, so the wall-clock difference `_weight` takes is this UTC one."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class DayEventRisk:
    """`scored_event_risk` over a fixed set of events (one trading day's), asked every second.

    Event times are turned into integers once, and the EventRisk of each distinct outcome (score and
    events in play) is built once: the weights move every second, but the message only changes when an
    event enters or leaves play or the rounded score steps. `scored_event_risk` is the reference.
    """

    def __init__(self, events: ScoredEvents, config: AnalyticsConfig) -> None:
        self.events = events
        self._config = config
        # (event time, end of its weight, base points); ends as `_weight` computes them (an all-day
        # event weighs until the next midnight).
        self._timed = tuple(
            (
                _epoch_us(event.at),
                _epoch_us(event.at + timedelta(days=1) if event.all_day else event.at),
                BASE_POINTS[severity],
            )
            for event, severity in events
        )
        self._outcomes: dict[tuple[int, tuple[int, ...]], EventRisk] = {}

    def at(self, ts_event: datetime) -> EventRisk:
        now = _epoch_us(ts_event)
        config = self._config
        in_play: list[int] = []
        heaviest = 0.0
        for i, (at, end, base) in enumerate(self._timed):
            if end <= now:
                continue
            weight = _points(base, max(0.0, (at - now) / 1_000_000 / 86_400.0), config)
            if int(weight + 0.5) >= 1:
                in_play.append(i)
                if weight > heaviest:
                    heaviest = weight
        score = min(5, int(heaviest + 0.5))
        key = (score, tuple(in_play))
        risk = self._outcomes.get(key)
        if risk is None:
            if len(self._outcomes) >= _MAX_OUTCOMES:
                self._outcomes.clear()
            risk = _risk(score, [self.events[i] for i in in_play], self._config)
            self._outcomes[key] = risk
        return risk
