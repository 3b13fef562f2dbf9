"""volguard_common.metrics: names, labels, recording helpers and the /metrics ASGI app."""

from __future__ import annotations

import secrets
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.samples import SESSION, sample_trading_state
from volguard_common import events, metrics


def unique(prefix: str) -> str:
    # REGISTRY is process-wide; unique label values keep these tests independent of each other.
    return f"{prefix}-{secrets.token_hex(4)}"


def sample(name: str, labels: dict[str, str]) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def families_by_name() -> dict[str, Any]:
    return {family.name: family for family in metrics.REGISTRY.collect()}


def test_metric_names_types_and_labels() -> None:
    expected = {
        # prometheus_client reports counters under their name without `_total`.
        "volguard_handler_latency_seconds": ("histogram", ("service", "stream", "event_type")),
        "volguard_events_in": ("counter", ("service", "stream", "event_type")),
        "volguard_events_out": ("counter", ("service", "stream", "event_type")),
        "volguard_consumer_lag": ("gauge", ("service", "stream", "group")),
        "volguard_consumer_pending": ("gauge", ("service", "stream", "group")),
        "volguard_dlq": ("counter", ("service", "stream")),
        "volguard_redeliveries": ("counter", ("service", "stream")),
        "volguard_handler_errors": ("counter", ("service", "stream", "error_type")),
        "volguard_group_recoveries": ("counter", ("service", "stream")),
        "volguard_conflated": ("counter", ("service", "stream")),
    }
    declared = {
        metric._name: (metric._type, metric._labelnames)
        for metric in (
            metrics.HANDLER_LATENCY_SECONDS,
            metrics.EVENTS_IN_TOTAL,
            metrics.EVENTS_OUT_TOTAL,
            metrics.CONSUMER_LAG,
            metrics.CONSUMER_PENDING,
            metrics.DLQ_TOTAL,
            metrics.REDELIVERIES_TOTAL,
            metrics.HANDLER_ERRORS_TOTAL,
            metrics.GROUP_RECOVERIES_TOTAL,
            metrics.CONFLATED_TOTAL,
        )
    }
    assert declared == expected
    assert set(expected) <= set(families_by_name())


def test_latency_buckets_span_100_microseconds_to_10_seconds() -> None:
    service, stream = unique("svc"), "md.chain"
    metrics.handler_latency(service, stream, "ChainSnapshot", 0.00005)
    metrics.handler_latency(service, stream, "ChainSnapshot", 0.003)
    metrics.handler_latency(service, stream, "ChainSnapshot", 12.0)
    labels = {"service": service, "stream": stream, "event_type": "ChainSnapshot"}

    assert sample("volguard_handler_latency_seconds_bucket", {**labels, "le": "0.0001"}) == 1
    assert sample("volguard_handler_latency_seconds_bucket", {**labels, "le": "0.005"}) == 2
    assert sample("volguard_handler_latency_seconds_bucket", {**labels, "le": "10.0"}) == 2
    assert sample("volguard_handler_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 3
    assert sample("volguard_handler_latency_seconds_count", labels) == 3
    assert metrics.LATENCY_BUCKETS[0] == 0.0001
    assert metrics.LATENCY_BUCKETS[-1] == 10.0
    assert list(metrics.LATENCY_BUCKETS) == sorted(metrics.LATENCY_BUCKETS)


def test_event_in_counts_redeliveries_separately() -> None:
    service = unique("risk")
    metrics.event_in(service, "st.intents", "TradeIntent", redelivered=False)
    metrics.event_in(service, "st.intents", "TradeIntent", redelivered=True)

    in_labels = {"service": service, "stream": "st.intents", "event_type": "TradeIntent"}
    assert sample("volguard_events_in_total", in_labels) == 2
    assert sample("volguard_redeliveries_total", {"service": service, "stream": "st.intents"}) == 1


def test_counting_helpers_use_the_documented_labels() -> None:
    service = unique("execution")
    metrics.events_out(service, "ex.reports", "Fill")
    metrics.events_out(service, "ex.reports", "Fill", 3)
    metrics.handler_error(service, "ex.commands", "BrokerTimeout")
    metrics.dead_lettered(service, "ex.commands")
    metrics.group_recovered(service, "ex.commands")
    metrics.conflated(service, "md.chain", 7)

    assert (
        sample(
            "volguard_events_out_total", {"service": service, "stream": "ex.reports", "event_type": "Fill"}
        )
        == 4
    )
    errors = {"service": service, "stream": "ex.commands", "error_type": "BrokerTimeout"}
    assert sample("volguard_handler_errors_total", errors) == 1
    assert sample("volguard_dlq_total", {"service": service, "stream": "ex.commands"}) == 1
    assert sample("volguard_group_recoveries_total", {"service": service, "stream": "ex.commands"}) == 1
    assert sample("volguard_conflated_total", {"service": service, "stream": "md.chain"}) == 7


def test_consumer_backlog_drops_lag_when_redis_cannot_compute_it() -> None:
    service = unique("analytics")
    labels = {"service": service, "stream": "md.chain", "group": service}
    metrics.consumer_backlog(service, "md.chain", service, lag=42, pending=3)
    assert sample("volguard_consumer_lag", labels) == 42
    assert sample("volguard_consumer_pending", labels) == 3

    metrics.consumer_backlog(service, "md.chain", service, lag=None, pending=0)
    assert sample("volguard_consumer_lag", labels) is None  # unknown, not a stale 42 and not a made-up 0
    assert sample("volguard_consumer_pending", labels) == 0


async def test_asgi_app_serves_the_text_format() -> None:
    service = unique("strategy")
    metrics.event_in(service, "an.vol", "VolSnapshot", redelivered=False)
    app = metrics.metrics_asgi_app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)

    start, *bodies = sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    headers = {key.decode().lower(): value.decode() for key, value in start["headers"]}
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    body = b"".join(message.get("body", b"") for message in bodies).decode()
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert "volguard_handler_latency_seconds" in families
    assert "process_cpu_seconds" in families  # process collector registered on REGISTRY
    events_in = [s for s in families["volguard_events_in"].samples if s.labels.get("service") == service]
    assert [(s.name, s.labels, s.value) for s in events_in if s.name == "volguard_events_in_total"] == [
        (
            "volguard_events_in_total",
            {"service": service, "stream": "an.vol", "event_type": "VolSnapshot"},
            1.0,
        )
    ]


def test_execution_legs_fill_quality_is_observed_by_urgency_and_unknowns_are_not() -> None:
    assert metrics.EXECUTION_LEG_SLIPPAGE_RUPEES._name == "volguard_execution_leg_slippage_rupees"
    assert metrics.EXECUTION_LEG_TIME_TO_FILL_SECONDS._name == "volguard_execution_leg_time_to_fill_seconds"
    service = unique("execution")
    metrics.initialise(service, ["ex.commands"], ["ex.reports"])
    labels = {"service": service, "urgency": "URGENT"}
    assert sample("volguard_execution_leg_slippage_rupees_count", labels) == 0
    assert sample("volguard_execution_leg_time_to_fill_seconds_count", labels) == 0
    metrics.execution_leg_filled(service, "URGENT", slippage_rupees=-0.05, time_to_fill_s=2.5)
    metrics.execution_leg_filled(service, "URGENT", slippage_rupees=None, time_to_fill_s=None)
    assert sample("volguard_execution_leg_slippage_rupees_count", labels) == 1
    assert sample("volguard_execution_leg_slippage_rupees_bucket", {**labels, "le": "0.0"}) == 1
    assert sample("volguard_execution_leg_time_to_fill_seconds_count", labels) == 1
    assert sample("volguard_execution_leg_time_to_fill_seconds_bucket", {**labels, "le": "2.0"}) == 0
    assert sample("volguard_execution_leg_time_to_fill_seconds_bucket", {**labels, "le": "3.0"}) == 1


def test_initialise_starts_the_counts_a_service_can_know_at_zero() -> None:
    service = unique("risk")
    metrics.initialise(service, ["st.intents", "ex.reports", "md.chain"], ["rk.decisions", "ex.commands"])
    zero_in = {"service": service, "stream": "ex.reports", "event_type": "Fill"}
    assert sample("volguard_events_in_total", zero_in) == 0
    assert sample("volguard_handler_latency_seconds_count", zero_in) == 0
    out = {"service": service, "stream": "ex.commands", "event_type": "ExecuteBasket"}
    assert sample("volguard_events_out_total", out) == 0
    assert sample("volguard_dlq_total", {"service": service, "stream": "st.intents"}) == 0
    assert sample("volguard_conflated_total", {"service": service, "stream": "md.chain"}) == 0
    # Log streams are never conflated: no series that could only ever read 0.
    assert sample("volguard_conflated_total", {"service": service, "stream": "st.intents"}) is None
    for status in ("NEW", "FILLED", "REJECTED", "UNKNOWN"):
        assert sample("volguard_order_updates_total", {"service": service, "status": status}) == 0
    assert sample("volguard_basket_results_total", {"service": service, "status": "STUCK"}) == 0
    # Gauges are measured, never invented: nothing about lag, DLQ size or trading state yet.
    assert sample("volguard_dlq_entries", {"service": service, "stream": "st.intents"}) is None
    assert sample("volguard_trading_state", {"service": service, "state": "RUNNING"}) is None
    # rk.decisions is published here, not consumed: no decision counts.
    assert sample("volguard_risk_decisions_total", {"service": service, "approved": "false"}) is None


def _broker_health(*, connected: bool) -> events.BrokerHealth:
    return events.BrokerHealth(
        ts_event=SESSION,
        source="execution/test",
        broker="paper",
        connected=connected,
        latency_ms=None,
        rate_limit=events.RateLimitHeadroom(per_second=10, per_minute=500, per_30_minutes=2000),
        token_expires_at=None,
        open_orders=0,
        in_flight_unknown=2,
        reconciled=True,
    )


def test_handled_events_set_state_health_decisions_and_age() -> None:
    service = unique("dashboard_api")
    state = sample_trading_state()
    metrics.handled(service, "rk.state", state)
    assert sample("volguard_trading_state", {"service": service, "state": "PAUSED"}) == 1
    assert sample("volguard_trading_state", {"service": service, "state": "RUNNING"}) == 0
    assert sample("volguard_trading_state", {"service": service, "state": "HALTED"}) == 0
    assert sample("volguard_last_event_timestamp_seconds", {"service": service, "stream": "rk.state"}) == (
        state.ts_init.timestamp()
    )

    metrics.handled(
        service,
        "md.status",
        events.FeedStatus(
            ts_event=SESSION, source="market_data/test", feed="sim", mode=events.MarketMode.SIM,
            state=events.FeedState.STALE,
        ),
    )  # fmt: skip
    feed = {"service": service, "feed": "sim"}
    assert sample("volguard_feed_state", {**feed, "state": "STALE"}) == 1
    assert sample("volguard_feed_state", {**feed, "state": "CONNECTED"}) == 0

    metrics.handled(service, "ex.health", _broker_health(connected=True))
    metrics.handled(service, "ex.health", _broker_health(connected=False))
    broker = {"service": service, "broker": "paper"}
    assert sample("volguard_broker_connected", broker) == 0
    assert sample("volguard_broker_reconciled", broker) == 1
    assert sample("volguard_broker_in_flight_unknown", broker) == 2

    rejection = events.RiskDecision(
        ts_event=SESSION,
        source="risk/test",
        intent_id="intent-1",
        approved=False,
        reasons=["margin"],
        checks=[
            events.RiskCheck(name="margin", passed=False, value=2.0, limit=1.0),
            events.RiskCheck(name="trading_state", passed=True),
        ],
        requested_lots=1,
        approved_lots=0,
    )
    metrics.handled(service, "rk.decisions", rejection)
    assert sample("volguard_risk_decisions_total", {"service": service, "approved": "false"}) == 1
    assert sample("volguard_risk_rejections_total", {"service": service, "check": "margin"}) == 1
    assert sample("volguard_risk_rejections_total", {"service": service, "check": "trading_state"}) is None


def test_trading_state_marks_one_state_of_all() -> None:
    service = unique("risk")
    metrics.trading_state(service, events.TradingStateKind.HALTED)
    values = {
        kind.value: sample("volguard_trading_state", {"service": service, "state": kind.value})
        for kind in events.TradingStateKind
    }
    assert values == {kind.value: (1 if kind.value == "HALTED" else 0) for kind in events.TradingStateKind}


def test_lease_held_follows_acquisition_and_loss() -> None:
    lease, holder = unique("risk:paper"), "risk-a"
    metrics.lease_constructed(lease, holder)
    labels = {"lease": lease, "holder": holder}
    assert sample("volguard_lease_held", labels) == 0
    assert sample("volguard_lease_acquisitions_total", labels) == 0
    metrics.lease_acquired(lease, holder)
    assert sample("volguard_lease_held", labels) == 1
    assert sample("volguard_lease_acquisitions_total", labels) == 1
    metrics.lease_given_up(lease, holder)
    assert sample("volguard_lease_held", labels) == 0
