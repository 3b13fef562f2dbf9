"""deploy/prometheus and deploy/grafana as real parts: Debian's Prometheus scrapes a running stack,
loads the alert rules, and answers every query of the Grafana dashboard with a series.

Needs the `prometheus` and `promtool` binaries (Debian's package `prometheus`, which `.ci/run`
installs); skipped with that reason where they are absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.waiting import eventually_sync
from volguard_common import streams
from volguard_common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "volguard.json"
VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]
# The alerts the deployment promises (issue #20), by the rule names in alerts.yml.
PROMISED_ALERTS = {
    "VolGuardFeedStale",
    "VolGuardConsumerLagGrowing",
    "VolGuardDeadLetters",
    "VolGuardHalted",
    "VolGuardStuckBasket",
    "VolGuardBrokerUnhealthy",
    "VolGuardLeaseFlapping",
}

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package (prometheus, promtool) is not installed; .ci/run installs it",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    rules = _promtool("check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr
    names = {
        rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    }
    assert names >= PROMISED_ALERTS


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard, with its variables as Grafana fills them for 'All'."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    return [expr.replace("$service", ".*").replace("$__rate_interval", "1m") for expr in exprs]


def _volguard(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOLGUARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def _scrape_config(state_dir: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the launcher's ports for targets (compose's DNS names
    do not resolve here) and a 1 s scrape, so rates have samples within seconds."""
    processes = json.loads((state_dir / "processes.json").read_text())["processes"]
    targets: dict[str, list[str]] = {}
    for instance, record in processes.items():
        service = instance.rsplit("-", 1)[0]
        targets.setdefault(service, []).append(f"127.0.0.1:{record['port']}")
    deployed = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"] for job in deployed["scrape_configs"]} - {"prometheus"}
    assert jobs == set(streams.SERVICES) == set(targets)
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": service, "metrics_path": "/metrics", "static_configs": [{"targets": addresses}]}
            for service, addresses in sorted(targets.items())
        ],
    }


def _api(url: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def _targets_up(url: str) -> bool:
    active = _api(url, "targets")["activeTargets"]
    return len(active) == len(streams.SERVICES) and all(t["health"] == "up" for t in active)


def _rules_evaluated(url: str) -> set[str]:
    rules = [rule for group in _api(url, "rules")["groups"] for rule in group["rules"]]
    return {rule["name"] for rule in rules if rule["health"] == "ok" and rule.get("lastEvaluation")}


def _empty_queries(url: str, queries: list[str]) -> list[str]:
    return [query for query in queries if not _api(url, "query", query=query)["result"]]


def test_prometheus_scrapes_every_service_and_answers_every_dashboard_query(
    settings: Settings, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env = service_env(settings, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=state_dir)
    up = _volguard(["up", "--detach", "--ready-wait", "600"], env, tmp_path)
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(_scrape_config(state_dir)))
        url = f"http://127.0.0.1:{free_port()}"
        with open(tmp_path / "prometheus.log", "wb") as log:
            prometheus = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                assert prometheus is not None
                assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                return False

        eventually_sync(ready, what="prometheus ready", patience_s=120)
        eventually_sync(lambda: _targets_up(url), what="every service's target up", patience_s=120)
        rules = {
            rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
        }
        eventually_sync(
            lambda: _rules_evaluated(url) == rules, what="every alert rule evaluated without error"
        )

        queries = dashboard_queries()
        empty: list[str] = []

        def all_answered() -> bool:
            empty[:] = _empty_queries(url, queries)
            return not empty

        try:
            eventually_sync(all_answered, what="a series for every dashboard query", patience_s=300, poll_s=1)
        except AssertionError as exc:
            raise AssertionError(f"dashboard queries without a series: {empty}") from exc
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=60)
        down = _volguard(["down"], env, tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
