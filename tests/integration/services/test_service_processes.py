"""Each of the six services runs alone as `python -m volguard_<name>` against real Redis and Postgres."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.samples import sample_command, sample_tick, sample_trading_state
from tests.support.waiting import eventually
from volguard_common import events, streams
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings


async def _get(url: str) -> httpx.Response | None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            return await client.get(url)
        except httpx.HTTPError:
            return None


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


RECEIVES: dict[str, tuple[str, events.Event]] = {
    "market_data": ("ctl.commands", sample_command()),
    "analytics": ("md.ticks", sample_tick(24010.5)),
    "strategy": ("rk.state", sample_trading_state()),
    "risk": ("ctl.commands", sample_command()),
    "execution": ("md.ticks", sample_tick(24010.5)),
    "dashboard_api": ("md.ticks", sample_tick(24010.5)),
}
assert set(RECEIVES) == set(streams.SERVICES)
assert all(stream in streams.SUBSCRIPTIONS[s] for s, (stream, _) in RECEIVES.items())
# The streams each skeleton handles today; on the others an event must wait, unacknowledged, for the
# handler that will act on it (a kill switch consumed by a skeleton would be lost).
HANDLED: dict[str, frozenset[str]] = {
    "analytics": frozenset({"md.ticks", "md.chain"}),
    "strategy": frozenset(streams.SUBSCRIPTIONS["strategy"]),
    "risk": frozenset(streams.SUBSCRIPTIONS["risk"]),
    "execution": frozenset(streams.SUBSCRIPTIONS["execution"]),
    "dashboard_api": frozenset(streams.SUBSCRIPTIONS["dashboard_api"]),
}


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port_block(5)


@pytest.mark.parametrize("service", streams.SERVICES)
async def test_service_runs_alone_is_ready_handles_only_what_it_handles_and_stops_on_sigterm(
    service: str, settings: Settings, redis: Redis, ports: tuple[int, int], tmp_path: Path
) -> None:
    dashboard_port, base = ports
    port = settings.model_copy(update={"dashboard_port": dashboard_port, "service_port_base": base}).port_for(
        service
    )
    log_path = tmp_path / f"{service}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", f"volguard_{service}"],
            env={
                **service_env(settings, dashboard_port=dashboard_port, port_base=base, state_dir=tmp_path),
                "VOLGUARD_BUS_CLAIM_INTERVAL_MS": "200",
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = await eventually(
            lambda: _ready(url, process), what=f"{service} /ready answers 200", patience_s=120
        )
        assert ready["ready"] is True
        assert set(ready["checks"]) >= {"redis", "postgres", "migrations", "consumer"}
        health = await _get(f"{url}/health")
        assert health is not None
        assert health.json()["status"] == "ok"
        assert health.json()["role"] == "active"
        single_active = service != "dashboard_api"
        assert (health.json()["fencing_token"] is not None) == single_active

        # Publish on a stream it subscribes to: handled if it handles it, else left for the group.
        stream, event = RECEIVES[service]
        publisher = Publisher(
            redis,
            BusConfig(namespace=settings.stream_namespace),
            service="market_data",
            source="market_data/test",
        )
        await publisher.publish(event, stream)
        if stream in HANDLED.get(service, frozenset()):
            await eventually(
                lambda: _events_in(url, service, stream), what=f"{service} counted an event in on {stream}"
            )
        else:
            # Its group on the stream reports the event as not yet delivered (lag 1, nothing pending).
            await eventually(
                lambda: _backlog(url, service, stream, lag=1.0, pending=0.0),
                what=f"{service} keeps the {stream} entry unread for its group",
            )
            group = next(
                g
                for g in await redis.xinfo_groups(settings.stream_namespace + stream)
                if g["name"] == service.encode() or g["name"].startswith(f"{service}.".encode())
            )
            assert (group["lag"], group["pending"], group["entries-read"]) == (1, 0, None)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log_path.read_text()[-3000:]


async def _ready(url: str, process: subprocess.Popen[bytes]) -> dict[str, object] | None:
    if process.poll() is not None:
        raise AssertionError(f"service exited early with code {process.returncode}")
    response = await _get(f"{url}/ready")
    if response is None or response.status_code != 200:
        return None
    body = response.json()
    # A single-active service is ready as a standby too; alone, it takes the lease and acts.
    return body if body["role"] == "active" else None


async def _backlog(url: str, service: str, stream: str, *, lag: float, pending: float) -> bool:
    response = await _get(f"{url}/metrics")
    if response is None:
        return False
    # The service's group is its name; a dashboard replica reads through a group of its own
    # (`dashboard_api.<instance>`), so the group label is matched by its service prefix.
    labels = {"service": service, "stream": stream}
    lines = [
        line
        for line in response.text.splitlines()
        if line.startswith("volguard_consumer_lag{")
        and all(f'{k}="{v}"' in line for k, v in labels.items())
        and (f'group="{service}"' in line or f'group="{service}.' in line)
    ]
    if not lines:
        return False
    return (
        _metric(response.text, "volguard_consumer_lag", **labels) == lag
        and _metric(response.text, "volguard_consumer_pending", **labels) == pending
    )


async def _events_in(url: str, service: str, stream: str) -> bool:
    response = await _get(f"{url}/metrics")
    return (
        response is not None
        and _metric(response.text, "volguard_events_in_total", service=service, stream=stream) >= 1
    )
