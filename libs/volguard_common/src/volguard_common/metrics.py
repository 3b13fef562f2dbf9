"""Prometheus metrics: every name and label set the services export, in one place.

All metrics live in the module-level `REGISTRY`, not prometheus_client's global default, so two apps
in one test process (or a library that registers its own collectors) never collide, and `/metrics`
shows exactly what VolGuard defines plus the process/platform/GC collectors.

Label conventions: `service` is the process name (`risk`, `execution`, ...), `stream` the logical
stream name without the test namespace (`st.intents`), `event_type` the event's `type` literal,
`group` the consumer group (one per service). All label values come from closed sets, so the
cardinality stays small.

The bus records through the small functions below rather than touching the metric objects, so the
label order lives here and nowhere else.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from volguard_common import events, streams

REGISTRY = CollectorRegistry()
# The standard process_*, python_info and python_gc_* series, which the default registry would carry.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# 100 µs to 10 s in 1-2.5-5 steps: an IV solve over a chain is sub-millisecond, a broker round trip
# is hundreds of milliseconds, and anything past 10 s is an incident whatever its exact value.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HANDLER_LATENCY_SECONDS = Histogram(
    "volguard_handler_latency_seconds",
    "Time from taking an entry off a stream to acknowledging it, for successfully handled events.",
    ["service", "stream", "event_type"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENTS_IN_TOTAL = Counter(
    "volguard_events_in_total",
    "Events delivered to a handler (first deliveries and redeliveries).",
    ["service", "stream", "event_type"],
    registry=REGISTRY,
)
EVENTS_OUT_TOTAL = Counter(
    "volguard_events_out_total",
    "Events published to a stream.",
    ["service", "stream", "event_type"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "volguard_consumer_lag",
    "Entries in the stream the group has not yet read (Redis XINFO GROUPS lag).",
    ["service", "stream", "group"],
    registry=REGISTRY,
)
CONSUMER_PENDING = Gauge(
    "volguard_consumer_pending",
    "Entries read by the group but not yet acknowledged (the pending entries list).",
    ["service", "stream", "group"],
    registry=REGISTRY,
)
DLQ_TOTAL = Counter(
    "volguard_dlq_total",
    "Entries moved to dlq.<stream> after too many failed deliveries or an unreadable payload.",
    ["service", "stream"],
    registry=REGISTRY,
)
REDELIVERIES_TOTAL = Counter(
    "volguard_redeliveries_total",
    "Deliveries of an entry that had been delivered before (after a failure, a claim or a restart).",
    ["service", "stream"],
    registry=REGISTRY,
)
HANDLER_ERRORS_TOTAL = Counter(
    "volguard_handler_errors_total",
    "Handler failures; the entry stays pending for redelivery. error_type is the exception class name.",
    ["service", "stream", "error_type"],
    registry=REGISTRY,
)
GROUP_RECOVERIES_TOTAL = Counter(
    "volguard_group_recoveries_total",
    "Consumer groups recreated after Redis lost them (NOGROUP, e.g. after a flush).",
    ["service", "stream"],
    registry=REGISTRY,
)
BUS_TRANSIENT_ERRORS_TOTAL = Counter(
    "volguard_bus_transient_errors_total",
    "Passing Redis trouble a consumer task backed off from and retried (kind: connection, timeout, "
    "LOADING, READONLY, OOM, BUSY, MASTERDOWN, TRYAGAIN).",
    ["service", "task", "kind"],
    registry=REGISTRY,
)
BUS_CONSUMER_FAILURES_TOTAL = Counter(
    "volguard_bus_consumer_failures_total",
    "Consumer tasks that failed in a way retrying cannot mend; the process exits to be restarted.",
    ["service", "task"],
    registry=REGISTRY,
)
BUS_ENTRIES_LOST_TOTAL = Counter(
    "volguard_bus_entries_lost_total",
    "Entries this consumer owned that another consumer took over (this one stalled past the claim idle "
    "time); they are left to the new owner.",
    ["service", "stream"],
    registry=REGISTRY,
)
CONFLATED_TOTAL = Counter(
    "volguard_conflated_total",
    "Snapshot entries acknowledged unhandled because a newer snapshot of the same key was already queued.",
    ["service", "stream"],
    registry=REGISTRY,
)
DLQ_ENTRIES = Gauge(
    "volguard_dlq_entries",
    "Entries now in dlq.<stream> (XLEN), read with the backlog by every service consuming the stream; "
    "absent until first read.",
    ["service", "stream"],
    registry=REGISTRY,
)
LAST_EVENT_TIMESTAMP = Gauge(
    "volguard_last_event_timestamp_seconds",
    "ts_init (Unix seconds) of the newest event the service handled from the stream; time() minus it is "
    "the age of what the service last saw (the feed tick age on md.ticks). Absent before the first.",
    ["service", "stream"],
    registry=REGISTRY,
)
ORDER_UPDATES_TOTAL = Counter(
    "volguard_order_updates_total",
    "OrderUpdate reports handled, by the order status they report.",
    ["service", "status"],
    registry=REGISTRY,
)
BASKET_RESULTS_TOTAL = Counter(
    "volguard_basket_results_total",
    "BasketResult reports handled, by basket outcome (STUCK needs an operator).",
    ["service", "status"],
    registry=REGISTRY,
)
RISK_DECISIONS_TOTAL = Counter(
    "volguard_risk_decisions_total",
    "RiskDecisions handled, approved or not.",
    ["service", "approved"],
    registry=REGISTRY,
)
RISK_REJECTIONS_TOTAL = Counter(
    "volguard_risk_rejections_total",
    "Failed risk checks in rejected RiskDecisions, by check name (one rejection may fail several). "
    "A check appears with its first failure: the check names are risk's, not a set known here.",
    ["service", "check"],
    registry=REGISTRY,
)
TRADING_STATE = Gauge(
    "volguard_trading_state",
    "1 for the trading state the service is in (risk, from its restored state on) or last read from "
    "rk.state (the others), 0 for the other states; absent while the service does not know it.",
    ["service", "state"],
    registry=REGISTRY,
)
FEED_STATE = Gauge(
    "volguard_feed_state",
    "1 for the state of the newest FeedStatus the service handled for the feed, 0 for the others.",
    ["service", "feed", "state"],
    registry=REGISTRY,
)
BROKER_CONNECTED = Gauge(
    "volguard_broker_connected",
    "1 when the newest BrokerHealth the service handled says the broker is connected, else 0.",
    ["service", "broker"],
    registry=REGISTRY,
)
BROKER_RECONCILED = Gauge(
    "volguard_broker_reconciled",
    "1 when the newest BrokerHealth says orders and positions agree with the broker, else 0.",
    ["service", "broker"],
    registry=REGISTRY,
)
BROKER_IN_FLIGHT_UNKNOWN = Gauge(
    "volguard_broker_in_flight_unknown",
    "Submits whose outcome is not yet resolved, from the newest BrokerHealth.",
    ["service", "broker"],
    registry=REGISTRY,
)
LEASE_HELD = Gauge(
    "volguard_lease_held",
    "1 while this replica holds the single-active lease (it is the active replica), 0 while it stands by.",
    ["lease", "holder"],
    registry=REGISTRY,
)
LEASE_ACQUISITIONS_TOTAL = Counter(
    "volguard_lease_acquisitions_total",
    "Times this replica took the lease; across replicas, a quick succession of them is a flapping lease.",
    ["lease", "holder"],
    registry=REGISTRY,
)


# Execution's fill quality per basket leg, by the basket's urgency. Slippage is rupees per unit against the
# mid at the leg's first submission (negative: the fills beat mid); a NIFTY option's half-spread is a
# few ticks of ₹0.05 and the default slippage budget 2 % of premium, so ±₹20 covers every sane fill.
EXECUTION_SLIPPAGE_BUCKETS: tuple[float, ...] = (
    -5.0,
    -1.0,
    -0.5,
    -0.2,
    -0.1,
    0.0,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
)
# A fill schedule ends inside partial_fill_timeout_s (60 s by default): buckets up to two minutes.
EXECUTION_TIME_TO_FILL_BUCKETS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
)
EXECUTION_LEG_SLIPPAGE_RUPEES = Histogram(
    "volguard_execution_leg_slippage_rupees",
    "Per filled basket leg: rupees per unit its average fill was worse than the mid at its first submission.",
    ["service", "urgency"],
    buckets=EXECUTION_SLIPPAGE_BUCKETS,
    registry=REGISTRY,
)
EXECUTION_LEG_TIME_TO_FILL_SECONDS = Histogram(
    "volguard_execution_leg_time_to_fill_seconds",
    "Per basket leg filled in full: exchange seconds from its first submission to the fill completing it.",
    ["service", "urgency"],
    buckets=EXECUTION_TIME_TO_FILL_BUCKETS,
    registry=REGISTRY,
)


def execution_leg_filled(
    service: str, urgency: str, *, slippage_rupees: float | None, time_to_fill_s: float | None
) -> None:
    """A basket leg's fill quality as its BasketResult states it; what is not known is not observed."""
    if slippage_rupees is not None:
        _child(EXECUTION_LEG_SLIPPAGE_RUPEES, service, urgency).observe(slippage_rupees)
    if time_to_fill_s is not None:
        _child(EXECUTION_LEG_TIME_TO_FILL_SECONDS, service, urgency).observe(time_to_fill_s)


@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *labels: str) -> Any:
    # labels() hashes and locks on every call; the bus records several metrics per message.
    return metric.labels(*labels)


def handler_latency(service: str, stream: str, event_type: str, seconds: float) -> None:
    _child(HANDLER_LATENCY_SECONDS, service, stream, event_type).observe(seconds)


def event_in(service: str, stream: str, event_type: str, *, redelivered: bool) -> None:
    _child(EVENTS_IN_TOTAL, service, stream, event_type).inc()
    if redelivered:
        _child(REDELIVERIES_TOTAL, service, stream).inc()


def events_out(service: str, stream: str, event_type: str, count: int = 1) -> None:
    _child(EVENTS_OUT_TOTAL, service, stream, event_type).inc(count)


def handler_error(service: str, stream: str, error_type: str) -> None:
    _child(HANDLER_ERRORS_TOTAL, service, stream, error_type).inc()


def dead_lettered(service: str, stream: str) -> None:
    _child(DLQ_TOTAL, service, stream).inc()


def group_recovered(service: str, stream: str) -> None:
    _child(GROUP_RECOVERIES_TOTAL, service, stream).inc()


def bus_transient_error(service: str, task: str, kind: str) -> None:
    # Task names carry the stream (read:st.intents): still a closed set.
    _child(BUS_TRANSIENT_ERRORS_TOTAL, service, task, kind).inc()


def bus_consumer_failed(service: str, task: str) -> None:
    _child(BUS_CONSUMER_FAILURES_TOTAL, service, task).inc()


def bus_entry_lost(service: str, stream: str) -> None:
    _child(BUS_ENTRIES_LOST_TOTAL, service, stream).inc()


def conflated(service: str, stream: str, count: int) -> None:
    _child(CONFLATED_TOTAL, service, stream).inc(count)


def consumer_backlog(service: str, stream: str, group: str, *, lag: int | None, pending: int) -> None:
    """Record a group's backlog from XINFO GROUPS.

    Redis reports lag as nil when it cannot compute it (after XDEL, or trimming past the group's
    last read entry). The series is then removed: absent means unknown, where a stale number or a
    zero would tell the dashboard the group is keeping up.
    """
    if lag is None:
        # remove() raises for a series never set; absent is exactly the state we want.
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(service, stream, group)
    else:
        CONSUMER_LAG.labels(service, stream, group).set(lag)
    CONSUMER_PENDING.labels(service, stream, group).set(pending)


def dlq_entries(service: str, stream: str, count: int) -> None:
    _child(DLQ_ENTRIES, service, stream).set(count)


def handled(service: str, stream: str, event: events.Event) -> None:
    """What a successfully handled event says about the system: its age, orders, baskets, decisions,
    the trading state and the broker's health, as this service last saw them.

    Counted per successful handling: an entry handled again after a crash before its ack is counted
    twice, like the effect-free part of its handler ran twice.
    """
    _child(LAST_EVENT_TIMESTAMP, service, stream).set(event.ts_init.timestamp())
    if isinstance(event, events.OrderUpdate):
        _child(ORDER_UPDATES_TOTAL, service, event.status.value).inc()
    elif isinstance(event, events.BasketResult):
        _child(BASKET_RESULTS_TOTAL, service, event.status.value).inc()
    elif isinstance(event, events.RiskDecision):
        _child(RISK_DECISIONS_TOTAL, service, "true" if event.approved else "false").inc()
        if not event.approved:
            for check in event.checks:
                if not check.passed:
                    _child(RISK_REJECTIONS_TOTAL, service, check.name).inc()
    elif isinstance(event, events.TradingState):
        trading_state(service, event.state)
    elif isinstance(event, events.FeedStatus):
        for feed_state in events.FeedState:
            _child(FEED_STATE, service, event.feed, feed_state.value).set(
                1 if feed_state is event.state else 0
            )
    elif isinstance(event, events.BrokerHealth):
        _child(BROKER_CONNECTED, service, event.broker).set(1 if event.connected else 0)
        _child(BROKER_RECONCILED, service, event.broker).set(1 if event.reconciled else 0)
        _child(BROKER_IN_FLIGHT_UNKNOWN, service, event.broker).set(event.in_flight_unknown)


def trading_state(service: str, state: events.TradingStateKind) -> None:
    """1 for `state`, 0 for every other: the state `service` holds (risk) or last read (rk.state)."""
    for kind in events.TradingStateKind:
        _child(TRADING_STATE, service, kind.value).set(1 if kind is state else 0)


def lease_constructed(lease: str, holder: str) -> None:
    _child(LEASE_HELD, lease, holder).set(0)
    _child(LEASE_ACQUISITIONS_TOTAL, lease, holder)


def lease_acquired(lease: str, holder: str) -> None:
    _child(LEASE_HELD, lease, holder).set(1)
    _child(LEASE_ACQUISITIONS_TOTAL, lease, holder).inc()


def lease_given_up(lease: str, holder: str) -> None:
    _child(LEASE_HELD, lease, holder).set(0)


def initialise(service: str, consumed: Iterable[str], published: Iterable[str]) -> None:
    """Create at zero every counter and histogram series the service can know at start, so dashboards
    and alert rules see them before the first event (a rate over an absent series is no data, not 0).

    Only counts are started at zero: a count of nothing so far is known. Gauges (lag, pending, DLQ
    size, trading state, broker health) appear when they are first measured, never as a made-up 0.
    """
    consumed = tuple(consumed)
    published = tuple(published)
    for stream in consumed:
        for event_type in events.EVENTS_ON.get(stream, ()):
            name = event_type.model_fields["type"].default
            _child(EVENTS_IN_TOTAL, service, stream, name)
            _child(HANDLER_LATENCY_SECONDS, service, stream, name)
        _child(REDELIVERIES_TOTAL, service, stream)
        _child(DLQ_TOTAL, service, stream)
        _child(GROUP_RECOVERIES_TOTAL, service, stream)
        _child(BUS_ENTRIES_LOST_TOTAL, service, stream)
        if streams.spec(stream).retention is streams.Retention.SNAPSHOT:
            _child(CONFLATED_TOTAL, service, stream)
    for stream in published:
        for event_type in events.EVENTS_ON.get(stream, ()):
            _child(EVENTS_OUT_TOTAL, service, stream, event_type.model_fields["type"].default)
    if streams.EX_REPORTS.name in consumed:
        for order_status in events.OrderStatus:
            _child(ORDER_UPDATES_TOTAL, service, order_status.value)
        for basket_status in events.BasketStatus:
            _child(BASKET_RESULTS_TOTAL, service, basket_status.value)
    if streams.EX_REPORTS.name in published:
        # Execution: the fill quality of the legs it reports.
        for urgency in events.Urgency:
            _child(EXECUTION_LEG_SLIPPAGE_RUPEES, service, urgency.value)
            _child(EXECUTION_LEG_TIME_TO_FILL_SECONDS, service, urgency.value)
    if streams.RK_DECISIONS.name in consumed:
        for approved in ("true", "false"):
            _child(RISK_DECISIONS_TOTAL, service, approved)


ASGIApp = Callable[..., Any]


def metrics_asgi_app() -> ASGIApp:
    """An ASGI app serving `REGISTRY` in the Prometheus text format; mount it at /metrics."""
    app: ASGIApp = make_asgi_app(registry=REGISTRY)
    return app
