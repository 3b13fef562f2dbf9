"""`volguard up --scale`: which instances run, under which names and on which ports."""

from __future__ import annotations

import pytest

from volguard_cli.supervisor import SERVICE_ORDER, Replica, ScaleError, parse_scale, plan_replicas
from volguard_common.settings import Settings


def test_one_replica_of_each_service_by_default_named_after_it_on_its_standard_port() -> None:
    settings = Settings()
    plan = plan_replicas(settings, {})
    assert [r.instance for r in plan] == [f"{service}-0" for service in SERVICE_ORDER]
    assert all(r.port == settings.port_for(r.service) for r in plan)


def test_scaled_services_get_one_instance_per_replica_ten_ports_apart() -> None:
    plan = plan_replicas(Settings(), parse_scale(["analytics=2", "risk=3"]))
    by_instance = {r.instance: r for r in plan}
    assert by_instance["analytics-1"] == Replica("analytics", 1, 8112)
    assert [by_instance[f"risk-{n}"].port for n in range(3)] == [8104, 8114, 8124]
    assert len(plan) == len(SERVICE_ORDER) + 1 + 2
    assert len({r.port for r in plan}) == len(plan)


def test_the_last_request_for_a_service_wins() -> None:
    assert parse_scale(["risk=3", "risk=2"]) == {"risk": 2}


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ("pricing=2", "unknown service 'pricing'"),
        ("risk=0", "N must be between 1 and 10"),
        ("risk=11", "N must be between 1 and 10"),
        ("risk=-1", "N must be between 1 and 10"),
        ("risk=two", "N must be a whole number"),
        ("risk", "expected SERVICE=N"),
    ],
)
def test_requests_that_cannot_run_are_refused_with_the_reason(request_: str, reason: str) -> None:
    with pytest.raises(ScaleError, match=reason):
        parse_scale([request_])


def test_replicas_that_would_share_a_port_are_refused() -> None:
    # market_data-1 (7989 + 1 + 10) lands on the dashboard when the bases are this close.
    settings = Settings(dashboard_port=8000, service_port_base=7989)
    plan_replicas(settings, {})
    with pytest.raises(ScaleError, match="market_data-1 and dashboard_api-0 would both listen on port 8000"):
        plan_replicas(settings, {"market_data": 2})
