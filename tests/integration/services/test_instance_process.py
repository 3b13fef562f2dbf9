"""A service process run with VOLGUARD_INSTANCE=auto: its claimed name survives a SIGKILL and restart,
and losing the name ends the process with a non-zero status instead of consuming under a shared name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from redis.asyncio import Redis

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.waiting import eventually
from volguard_common.instance import slot_key
from volguard_common.service import EXIT_INSTANCE_LOST
from volguard_common.settings import Settings


def _start(settings: Settings, tmp_path: Path, port: int, log_name: str) -> subprocess.Popen[bytes]:
    env = service_env(settings, dashboard_port=port, port_base=free_port_block(5), state_dir=tmp_path)
    env["VOLGUARD_INSTANCE"] = "auto"
    with open(tmp_path / log_name, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "volguard_dashboard_api"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def _instance(port: int, process: subprocess.Popen[bytes]) -> str | None:
    if process.poll() is not None:
        raise AssertionError(f"the service exited early with {process.returncode}")
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            response = await client.get(f"http://127.0.0.1:{port}/health")
        except httpx.HTTPError:
            return None
    return str(response.json()["instance"]) if response.status_code == 200 else None


async def test_a_claimed_name_survives_a_kill_and_a_lost_name_stops_the_process(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    first = _start(settings, tmp_path, port, "first.log")
    try:
        name = await eventually(lambda: _instance(port, first), what="first life answers", patience_s=180)
    finally:
        first.kill()
        first.wait()
    assert name == "dashboard_api-0"

    second = _start(settings, tmp_path, port, "second.log")
    try:
        # Within the first life's claim TTL, on the same host: its name back, not dashboard_api-1.
        again = await eventually(lambda: _instance(port, second), what="second life answers", patience_s=180)
        assert again == name

        # Another replica takes the name (as after a pause longer than the TTL): the process must not
        # keep consuming under it.
        await redis.set(slot_key(settings.stream_namespace, "dashboard_api", 0), "another replica")
        await eventually(lambda: _exited(second), what="the process stops", patience_s=120)
        assert second.returncode == EXIT_INSTANCE_LOST, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()


async def _exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None
