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
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

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
    "handler_latency_seconds",
    "Time from taking an entry off a stream to acknowledging it, for successfully handled events.",
    ["service", "stream", "event_type"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENTS_IN_TOTAL = Counter(
    "events_in_total",
    "Events delivered to a handler (first deliveries and redeliveries).",
    ["service", "stream", "event_type"],
    registry=REGISTRY,
)
EVENTS_OUT_TOTAL = Counter(
    "events_out_total",
    "Events published to a stream.",
    ["service", "stream", "event_type"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "consumer_lag",
    "Entries in the stream the group has not yet read (Redis XINFO GROUPS lag).",
    ["service", "stream", "group"],
    registry=REGISTRY,
)
CONSUMER_PENDING = Gauge(
    "consumer_pending",
    "Entries read by the group but not yet acknowledged (the pending entries list).",
    ["service", "stream", "group"],
    registry=REGISTRY,
)
DLQ_TOTAL = Counter(
    "dlq_total",
    "Entries moved to dlq.<stream> after too many failed deliveries or an unreadable payload.",
    ["service", "stream"],
    registry=REGISTRY,
)
REDELIVERIES_TOTAL = Counter(
    "redeliveries_total",
    "Deliveries of an entry that had been delivered before (after a failure, a claim or a restart).",
    ["service", "stream"],
    registry=REGISTRY,
)
HANDLER_ERRORS_TOTAL = Counter(
    "handler_errors_total",
    "Handler failures; the entry stays pending for redelivery. error_type is the exception class name.",
    ["service", "stream", "error_type"],
    registry=REGISTRY,
)
GROUP_RECOVERIES_TOTAL = Counter(
    "group_recoveries_total",
    "Consumer groups recreated after Redis lost them (NOGROUP, e.g. after a flush).",
    ["service", "stream"],
    registry=REGISTRY,
)
BUS_TRANSIENT_ERRORS_TOTAL = Counter(
    "bus_transient_errors_total",
    "Passing Redis trouble a consumer task backed off from and retried (kind: connection, timeout, "
    "LOADING, READONLY, OOM, BUSY, MASTERDOWN, TRYAGAIN).",
    ["service", "task", "kind"],
    registry=REGISTRY,
)
BUS_CONSUMER_FAILURES_TOTAL = Counter(
    "bus_consumer_failures_total",
    "Consumer tasks that failed in a way retrying cannot mend; the process exits to be restarted.",
    ["service", "task"],
    registry=REGISTRY,
)
BUS_ENTRIES_LOST_TOTAL = Counter(
    "bus_entries_lost_total",
    "Entries this consumer owned that another consumer took over (this one stalled past the claim idle "
    "time); they are left to the new owner.",
    ["service", "stream"],
    registry=REGISTRY,
)
CONFLATED_TOTAL = Counter(
    "conflated_total",
    "Snapshot entries acknowledged unhandled because a newer snapshot of the same key was already queued.",
    ["service", "stream"],
    registry=REGISTRY,
)


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


ASGIApp = Callable[..., Any]


def metrics_asgi_app() -> ASGIApp:
    """An ASGI app serving `REGISTRY` in the Prometheus text format; mount it at /metrics."""
    app: ASGIApp = make_asgi_app(registry=REGISTRY)
    return app
