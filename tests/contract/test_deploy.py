"""Deployment artefacts agree with the workspace and with each other.

docker-compose.yml is checked by Docker Compose itself (`config --quiet`), installed by
deploy/install-compose.sh; a machine without it fails here rather than skipping, because an unchecked
compose file is exactly what breaks on the day someone runs it. The rest is structure: every service
under services/ is built, health-checked, scraped, deployed to Kubernetes and charted, with the same
names, ports and environment everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from volguard_cli.supervisor import STOP_GRACE_S
from volguard_common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"

# The published contract (DESIGN §7, the service list): each service's HTTP port.
PORTS = {
    "dashboard_api": 8000,
    "market_data": 8101,
    "analytics": 8102,
    "strategy": 8103,
    "risk": 8104,
    "execution": 8105,
}
# Services that must never run two active replicas: one holds the Redis lease, the others stand by
# (DESIGN §1). The dashboard, with no side effects, is the only one that scales out.
SINGLE_ACTIVE = {"market_data", "analytics", "strategy", "risk", "execution"}
SCALES_OUT = {"dashboard_api"}
# Every VOLGUARD_ variable the deployment sets for every service.
VOLGUARD_ENV = {"VOLGUARD_REDIS_URL", "VOLGUARD_DATABASE_URL", "VOLGUARD_HTTP_HOST", "VOLGUARD_LOG_FORMAT"}
# The metrics the services export and the dashboard may chart; histograms add _bucket/_sum/_count.
COUNTERS_AND_GAUGES = {
    f"volguard_{name}"
    for name in (
        "events_in_total",
        "events_out_total",
        "consumer_lag",
        "consumer_pending",
        "dlq_total",
        "dlq_entries",
        "last_event_timestamp_seconds",
        "order_updates_total",
        "basket_results_total",
        "risk_decisions_total",
        "risk_rejections_total",
        "trading_state",
        "broker_connected",
        "broker_reconciled",
        "broker_in_flight_unknown",
        "lease_held",
        "lease_acquisitions_total",
    )
}
HISTOGRAMS = {"volguard_handler_latency_seconds"}
# Prometheus' own per-target series, charted next to the services' own.
PROMETHEUS_SERIES = {"up"}

SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))


def _load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    loaded = _load_yaml(COMPOSE_FILE)
    assert isinstance(loaded, dict)
    return loaded


def _k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert isinstance(doc, dict), f"{path.name}: a manifest must be a mapping"
                docs.append(doc)
    return docs


def _k8s(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def _dns_name(service: str) -> str:
    # Kubernetes object names are DNS labels: no underscores.
    return service.replace("_", "-")


def _workload(service: str) -> dict[str, Any]:
    """A single-active service runs as a StatefulSet (stable pod names), the dashboard as a Deployment."""
    return _k8s("StatefulSet" if service in SINGLE_ACTIVE else "Deployment", _dns_name(service))


def _compose_duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------------------------------
# Docker Compose's own validation


def _compose_validators() -> Iterator[list[str]]:
    """Compose commands this machine has, best first: the v2 docker plugin, the repo-local v2 binary
    that deploy/install-compose.sh installs, then any docker-compose on PATH (v2 or Debian's v1)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            yield [docker, "compose"]
    local = ROOT / ".volguard" / "tools" / "bin" / "docker-compose"
    if local.is_file():
        yield [str(local)]
    on_path = shutil.which("docker-compose")
    if on_path is not None:
        yield [on_path]


def _compose_cmd() -> list[str]:
    for cmd in _compose_validators():
        return cmd
    pytest.fail(
        "no Docker Compose to validate docker-compose.yml with: run `bash deploy/install-compose.sh`",
        pytrace=False,
    )


def _compose_config(compose_file: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    # Neither the caller's COMPOSE_*/DOCKER_* variables nor a developer's .env (VolGuard reads one too)
    # may change what is validated: a clean environment and an empty env file (a real file: Compose v1
    # refuses /dev/null).
    empty_env = scratch / "empty.env"
    empty_env.write_text("")
    return subprocess.run(
        [
            *_compose_cmd(),
            "--env-file",
            str(empty_env),
            "--project-directory",
            str(compose_file.parent),
            "-f",
            str(compose_file),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())},
    )


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    result = _compose_config(COMPOSE_FILE, tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    # Proves the check above can fail: the same file with a depends_on naming no service.
    compose = _compose()
    compose["services"]["analytics"]["depends_on"] = {"no-such-service": {"condition": "service_healthy"}}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    (tmp_path / "deploy").symlink_to(DEPLOY)
    result = _compose_config(broken, tmp_path)
    assert result.returncode != 0
    assert "no-such-service" in result.stderr


# --------------------------------------------------------------------------------------------------
# docker-compose.yml structure


def test_every_service_directory_is_a_known_service() -> None:
    assert set(SERVICES) == set(PORTS)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_builds_each_service_from_the_one_dockerfile(service: str) -> None:
    spec = _compose()["services"][service]
    build = spec["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == "deploy/Dockerfile"
    assert build["args"]["SERVICE"] == service
    assert (ROOT / "services" / service / "src" / f"volguard_{service}").is_dir()


@pytest.mark.parametrize("service", SERVICES)
def test_compose_health_checks_each_service_on_its_port(service: str) -> None:
    spec = _compose()["services"][service]
    test = spec["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert f"http://127.0.0.1:{PORTS[service]}/health" in " ".join(test)


@pytest.mark.parametrize("service", SERVICES)
def test_compose_points_each_service_at_the_compose_redis_and_postgres(service: str) -> None:
    compose = _compose()
    spec = compose["services"][service]
    env = spec["environment"]
    assert set(env) >= VOLGUARD_ENV
    assert env["VOLGUARD_REDIS_URL"].startswith("redis://redis:6379/")
    assert "@postgres:5432/volguard" in env["VOLGUARD_DATABASE_URL"]
    assert env["VOLGUARD_HTTP_HOST"] == "0.0.0.0"
    assert env["VOLGUARD_LOG_FORMAT"] == "json"
    # Started only once Redis and Postgres answer their own health checks.
    for dependency in ("redis", "postgres"):
        assert spec["depends_on"][dependency]["condition"] == "service_healthy"
        assert "healthcheck" in compose["services"][dependency]


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "dashboard_api"])
def test_compose_services_can_scale(service: str) -> None:
    # `docker compose up --scale <service>=3` fails on a fixed host port or a fixed container name.
    spec = _compose()["services"][service]
    assert "ports" not in spec
    assert "container_name" not in spec


def test_compose_publishes_only_the_dashboard_of_the_services() -> None:
    spec = _compose()["services"]["dashboard_api"]
    assert "container_name" not in spec
    assert [str(p).rsplit(":", 2)[-2:] for p in spec["ports"]] == [["8000", "8000"]]


def test_compose_redis_keeps_an_append_only_file() -> None:
    redis = _compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_compose_postgres_is_15_with_the_volguard_database() -> None:
    postgres = _compose()["services"]["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert postgres["environment"]["POSTGRES_DB"] == "volguard"


def test_compose_mounts_the_monitoring_config_it_ships() -> None:
    services = _compose()["services"]
    prometheus_mounts = [str(v).split(":")[0] for v in services["prometheus"]["volumes"]]
    assert "./deploy/prometheus/prometheus.yml" in prometheus_mounts
    grafana_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider_paths = [
        p["options"]["path"]
        for p in _load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    ]
    for path in provider_paths:
        assert grafana_mounts[path] == "./deploy/grafana/dashboards"


# --------------------------------------------------------------------------------------------------
# Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _package_for(service: str) -> str:
    """The Dockerfile's derivation of the uv package from SERVICE, run by the shell it runs in."""
    runs = [rest for kw, rest in _dockerfile_instructions() if kw == "RUN" and "package=" in rest]
    assert len(runs) == 1, "the Dockerfile derives the package name in exactly one RUN"
    derivation = re.search(r'package="(?P<expr>[^;]*)";', runs[0])
    assert derivation is not None
    script = f"SERVICE={service}; PACKAGE=; printf '%s' \"{derivation['expr'].strip(chr(34))}\""
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout


def test_dockerfile_is_multi_stage_with_a_service_arg() -> None:
    instructions = _dockerfile_instructions()
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(stages) >= 2
    assert "SERVICE" in [rest.split("=")[0] for kw, rest in instructions if kw == "ARG"]
    # Copying the venv out of the builder is what makes the runtime stage small.
    assert any(kw == "COPY" and rest.startswith("--from=builder") for kw, rest in instructions)


def test_dockerfile_installs_the_pinned_uv() -> None:
    makefile_pin = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert makefile_pin is not None
    text = DOCKERFILE.read_text()
    assert f"ARG UV_VERSION={makefile_pin[1]}" in text
    assert 'pip install --no-cache-dir "uv==${UV_VERSION}"' in text


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_package_name_matches_pyproject(service: str) -> None:
    project = _load_toml(ROOT / "services" / service / "pyproject.toml")["project"]
    assert _package_for(service) == project["name"]


def test_dockerfile_syncs_frozen_without_dev_dependencies() -> None:
    syncs = [rest for kw, rest in _dockerfile_instructions() if kw == "RUN" and "uv sync" in rest]
    assert len(syncs) == 2, "one sync for third-party dependencies, one for our own packages"
    for sync in syncs:
        assert "--frozen" in sync
        assert "--no-dev" in sync
        assert "--package" in sync
    assert "--no-install-workspace" in syncs[0]
    assert "--no-editable" in syncs[1]


def test_dockerfile_copies_every_workspace_pyproject_before_any_source() -> None:
    instructions = _dockerfile_instructions()
    copies = [rest for kw, rest in instructions if kw == "COPY" and not rest.startswith("--from")]
    first_source = next(
        i for i, c in enumerate(copies) if not c.split()[0].endswith(("pyproject.toml", "uv.lock"))
    )
    manifests = {c.split()[0] for c in copies[:first_source]}
    workspace = _load_toml(ROOT / "pyproject.toml")["tool"]["uv"]["workspace"]["members"]
    members = {
        str(p.relative_to(ROOT)) for pattern in workspace for p in ROOT.glob(f"{pattern}/pyproject.toml")
    }
    assert members <= manifests
    for copy in copies:
        source = copy.split()[0].replace("${SERVICE}", "analytics")
        assert (ROOT / source).exists(), f"COPY source {source} does not exist"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [rest for kw, rest in _dockerfile_instructions() if kw == "USER"]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_runs_and_health_checks_the_service_module() -> None:
    instructions = dict(_dockerfile_instructions())
    cmd = json.loads(instructions["CMD"])
    assert 'exec python -m "volguard_${SERVICE}"' in cmd[-1]
    assert "ENV SERVICE=${SERVICE}" in DOCKERFILE.read_text()
    healthcheck = instructions["HEALTHCHECK"]
    exec_form = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :].strip())
    assert exec_form[:2] == ["python", "-c"]
    code = exec_form[2]
    assert "urllib.request.urlopen" in code
    assert "/health" in code
    port_map = re.search(r"port = (\{[^}]*\})", code)
    assert port_map is not None
    assert json.loads(port_map[1].replace("'", '"')) == PORTS


def test_dockerignore_keeps_every_copied_path_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    let_back = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for kw, rest in _dockerfile_instructions():
        if kw == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source.split("/")[0] in let_back, f"{source} is excluded by .dockerignore"
    assert "**/.venv" in patterns


# --------------------------------------------------------------------------------------------------
# Prometheus


def _scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in _load_yaml(PROMETHEUS)["scrape_configs"]}


@pytest.mark.parametrize("service", SERVICES)
def test_prometheus_discovers_every_replica_of_each_service(service: str) -> None:
    job = _scrape_jobs()[service]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert sd["type"] == "A"
    assert sd["port"] == PORTS[service]
    # The DNS name is the compose service, which is what Docker's resolver answers for.
    assert sd["names"] == [service]
    assert service in _compose()["services"]


# --------------------------------------------------------------------------------------------------
# Grafana

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def _metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords, labels,
    durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(handler_latency_seconds_bucket{job=~"$service"}'
        "[$__rate_interval]))) / on (job) group_left max(up)"
    )
    assert _metric_names(expr) == {"handler_latency_seconds_bucket", "up"}


def test_the_charted_metrics_are_the_ones_the_services_export() -> None:
    from volguard_common import metrics

    kinds: dict[str, str] = {}
    for family in metrics.REGISTRY.collect():
        # prometheus_client names a counter's family without the _total its samples carry.
        name = f"{family.name}_total" if family.type == "counter" else family.name
        kinds[name] = family.type
    for name in HISTOGRAMS:
        assert kinds.get(name) == "histogram", name
    for name in COUNTERS_AND_GAUGES:
        assert kinds.get(name) == ("counter" if name.endswith("_total") else "gauge"), name


def _dashboard() -> dict[str, Any]:
    loaded = json.loads((GRAFANA / "dashboards" / "volguard.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _dashboard_queries() -> list[str]:
    dashboard = _dashboard()
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_dashboard_charts_only_exported_metrics() -> None:
    allowed = (
        COUNTERS_AND_GAUGES
        | PROMETHEUS_SERIES
        | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    )
    for expr in _dashboard_queries():
        label_values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", expr)
        used = {label_values[1]} if label_values else _metric_names(expr)
        assert used, f"no metric in {expr!r}"
        assert used <= allowed, f"{expr!r} uses {used - allowed}"


def test_dashboard_charts_every_exported_metric() -> None:
    used = set().union(*(_metric_names(e) for e in _dashboard_queries()))
    assert used >= COUNTERS_AND_GAUGES
    assert "volguard_handler_latency_seconds_bucket" in used
    assert any(
        "histogram_quantile(0.99" in e
        and "volguard_handler_latency_seconds_bucket" in e
        and "by (service, le)" in e
        for e in _dashboard_queries()
    ), "no per-service p99 of handler_latency_seconds"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    [datasource] = _load_yaml(GRAFANA / "provisioning" / "datasources" / "datasource.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    panels = _dashboard()["panels"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


# --------------------------------------------------------------------------------------------------
# Kubernetes


# The Kubernetes release whose API schemas the manifests are checked against (kubernetes-validate's).
K8S_VERSION = "1.37.0"


def test_k8s_manifests_validate_strictly_against_the_kubernetes_api_schemas() -> None:
    docs = _k8s_documents()
    assert docs
    for doc in docs:
        # strict: an unknown or misspelt field is an error, not silently ignored by the API server.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validation_catches_a_misspelt_field() -> None:
    deployment = json.loads(json.dumps(_k8s("Deployment", "dashboard-api")))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas", 2)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_k8s_manifests_parse_and_kustomization_lists_them_all() -> None:
    kustomization = _load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    for doc in _k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deploys_and_exposes_each_service(service: str) -> None:
    name = _dns_name(service)
    deployment = _workload(service)
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    assert container["image"].split(":")[0] == _compose()["services"][service]["image"].split(":")[0]
    [port] = container["ports"]
    assert port["containerPort"] == PORTS[service]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(PORTS[service])

    svc = _k8s("Service", name)
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [PORTS[service]]


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_environment_matches_compose(service: str) -> None:
    container = _workload(service)["spec"]["template"]["spec"]["containers"][0]
    config_maps = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    assert config_maps == ["volguard-env"]
    config = _k8s("ConfigMap", "volguard-env")["data"]
    explicit = {e["name"]: e for e in container["env"]}
    assert set(config) | set(explicit) >= VOLGUARD_ENV | {"VOLGUARD_INSTANCE"}

    compose_env = _compose()["services"][service]["environment"]
    for key, value in config.items():
        assert compose_env[key] == value, f"{key} differs between the ConfigMap and docker-compose.yml"
    secret_ref = explicit["VOLGUARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    secret = _k8s("Secret", secret_ref["name"])["stringData"]
    assert secret[secret_ref["key"]].endswith("@postgres:5432/volguard")
    if service in SINGLE_ACTIVE:
        # A StatefulSet's pod name (<name>-<ordinal>) survives reschedules: a stable consumer name.
        assert explicit["VOLGUARD_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    else:
        # A Deployment's pod names do not: the replica claims a stable name in Redis.
        assert explicit["VOLGUARD_INSTANCE"]["value"] == "auto"


@pytest.mark.parametrize("service", sorted(SINGLE_ACTIVE))
def test_k8s_runs_single_active_services_as_an_active_and_a_hot_standby(service: str) -> None:
    statefulset = _k8s("StatefulSet", _dns_name(service))
    spec = statefulset["spec"]
    assert spec["replicas"] == 2
    assert spec["podManagementPolicy"] == "Parallel"
    governing = _k8s("Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert not [
        d
        for d in _k8s_documents()
        if d["kind"] == "Deployment" and d["metadata"]["name"] == _dns_name(service)
    ]


def test_k8s_autoscales_no_single_active_service_and_only_the_dashboard_is_a_deployment() -> None:
    deployments = {d["metadata"]["name"] for d in _k8s_documents() if d["kind"] == "Deployment"}
    assert deployments == {_dns_name(s) for s in SCALES_OUT}
    for hpa in (d for d in _k8s_documents() if d["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in {("Deployment", _dns_name(s)) for s in SCALES_OUT}


@pytest.mark.parametrize("service", SERVICES)
def test_orchestrators_wait_longer_than_the_services_own_sigterm_grace(service: str) -> None:
    own_grace_s = Settings().stop_grace_s
    # Room for the interpreter to exit and the orchestrator to notice, on a loaded machine.
    margin_s = 10.0
    assert own_grace_s + margin_s <= STOP_GRACE_S
    k8s_grace_s = _workload(service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert k8s_grace_s >= own_grace_s + margin_s
    # Unset, Docker waits 10 s: less than the service's own grace.
    compose_grace_s = _compose_duration_s(_compose()["services"][service]["stop_grace_period"])
    assert compose_grace_s >= own_grace_s + margin_s


@pytest.mark.parametrize("service", SERVICES)
def test_compose_replicas_claim_stable_names(service: str) -> None:
    # `docker compose up --scale` gives no ordinal and container hostnames change on recreate.
    assert _compose()["services"][service]["environment"]["VOLGUARD_INSTANCE"] == "auto"
    cmd = json.loads(dict(_dockerfile_instructions())["CMD"])
    assert "HOSTNAME" not in cmd[-1]


def test_k8s_redis_is_a_statefulset_with_aof() -> None:
    statefulset = _k8s("StatefulSet", "redis")
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == _compose()["services"]["redis"]["image"]
    command = container["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/data"
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == [mount["name"]]
    assert _k8s("Service", "redis")["spec"]["ports"][0]["port"] == 6379


def test_k8s_postgres_is_a_statefulset_matching_compose() -> None:
    statefulset = _k8s("StatefulSet", "postgres")
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == _compose()["services"]["postgres"]["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POSTGRES_DB"]["value"] == "volguard"
    assert statefulset["spec"]["volumeClaimTemplates"]
    assert _k8s("Service", "postgres")["spec"]["ports"][0]["port"] == 5432
