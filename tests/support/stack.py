"""The whole stack as a user starts it: `volguard up --detach` (six service processes under the
launcher's supervisor, Redis and Postgres as found), and `volguard down` afterwards, however the test
ends. For the end-to-end tests whose claim is about the running system."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis

from tests.support.processes import free_port, free_port_block, service_env
from volguard_common.settings import Settings

VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]


def volguard(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOLGUARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def stream_events(settings: Settings, stream: str) -> list[dict[str, Any]]:
    """Every event on `stream` (under the test's namespace), oldest first, as JSON."""
    client = SyncRedis.from_url(settings.redis_url)
    try:
        entries = client.xrange(settings.stream_namespace + stream)
    finally:
        client.close()
    return [json.loads(fields[b"event"]) for _, fields in entries]


@dataclass(frozen=True)
class Stack:
    settings: Settings
    env: dict[str, str]
    cwd: Path
    state_dir: Path
    dashboard_url: str


@contextmanager
def running_stack(
    settings: Settings, database_url: str, tmp_path: Path, start: datetime, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """The simulated market from `start`, at speed 0 in whole-pipeline lockstep."""
    own = settings.model_copy(update={"database_url": database_url})
    dashboard_port = free_port()
    state_dir = tmp_path / "state"
    process_env = service_env(
        own, dashboard_port=dashboard_port, port_base=free_port_block(5), state_dir=state_dir
    )
    process_env["VOLGUARD_SIM_START"] = start.isoformat()
    process_env.update(env or {})
    up = volguard(
        ["up", "--detach", "--ready-wait", "600", "--speed", "0", "--lockstep"], process_env, tmp_path
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield Stack(own, process_env, tmp_path, state_dir, f"http://127.0.0.1:{dashboard_port}")
    finally:
        down = volguard(["down"], process_env, tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr
