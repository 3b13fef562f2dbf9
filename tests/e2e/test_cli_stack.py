"""The launcher as a user drives it: up --detach, status, streams, a crash, down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.waiting import eventually_sync
from volguard_cli.supervisor import pid_alive
from volguard_common import streams
from volguard_common.settings import Settings

VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]


def _volguard(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOLGUARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _processes(state_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads((state_dir / "processes.json").read_text())["processes"]


def test_up_status_streams_crash_restart_and_down(settings: Settings, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = service_env(settings, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=state_dir)
    up = _volguard(["up", "--detach"], env, tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Dashboard: http://127.0.0.1:" in up.stdout

        status = _volguard(["status"], env, tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:]}
        assert set(rows) == set(streams.SERVICES)
        assert all(row[3:5] == ["ok", "ready"] for row in rows.values()), status.stdout

        report = _volguard(["streams"], env, tmp_path)
        assert report.returncode == 0, report.stderr
        for name in streams.BY_NAME:
            assert name in report.stdout

        # A service killed outright is restarted by the supervisor, and the restart is counted.
        victim = _processes(state_dir)["analytics"]["pid"]
        assert isinstance(victim, int)
        os.kill(victim, signal.SIGKILL)
        eventually_sync(
            lambda: _processes(state_dir)["analytics"]["restarts"] == 1
            and pid_alive(_processes(state_dir)["analytics"]["pid"]),  # type: ignore[arg-type]
            what="analytics restarted",
        )
        eventually_sync(lambda: _volguard(["status"], env, tmp_path).returncode == 0, what="all ready again")
    finally:
        down = _volguard(["down"], env, tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    pids = [record["pid"] for record in _processes(state_dir).values()]
    assert pids == [None] * len(streams.SERVICES)
    assert _volguard(["status"], env, tmp_path).returncode == 1


def test_foreground_up_announces_the_dashboard_once_ready_and_ctrl_c_stops_everything(
    settings: Settings, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env = service_env(settings, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=state_dir)
    output = tmp_path / "up.out"
    with open(output, "w") as out:
        up = subprocess.Popen(
            [*VOLGUARD, "up"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    try:
        eventually_sync(
            lambda: "Dashboard: http://127.0.0.1:" in output.read_text(), what="dashboard announced"
        )
        status = _volguard(["status"], env, tmp_path)
        assert status.returncode == 0, status.stdout
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=120)
    assert code == 0, output.read_text()[-2000:]
    pids = [record["pid"] for record in _processes(state_dir).values()]
    assert pids == [None] * len(streams.SERVICES)
