"""The launcher as a user drives it: up --detach, status, streams, a crash, down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.stack import stream_events as _stream_events
from tests.support.stack import volguard as _volguard
from tests.support.waiting import eventually_sync
from volguard_cli.probes import READY_WAIT_S
from volguard_cli.supervisor import pid_alive
from volguard_common import streams
from volguard_common.settings import Settings

VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]


def _processes(state_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads((state_dir / "processes.json").read_text())["processes"]


def _status_rows(stdout: str) -> dict[str, list[str]]:
    """`volguard status` rows by instance: instance, pid, restarts, health, ready, role, port."""
    return {line.split()[0]: line.split() for line in stdout.splitlines()[2:]}


def _analytics_consumers(env: dict[str, str], cwd: Path) -> set[int]:
    """Consumers in the analytics group of each stream it reads, from `volguard streams`."""
    report = _volguard(["streams"], env, cwd)
    assert report.returncode == 0, report.stderr
    groups = [line.split() for line in report.stdout.splitlines() if line.split()[:1] == ["analytics"]]
    return {int(g[g.index("consumers") + 1]) for g in groups}


def test_up_status_streams_crash_restart_and_down(settings: Settings, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = service_env(settings, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=state_dir)
    up = _volguard(["up", "--detach"], env, tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Dashboard: http://127.0.0.1:" in up.stdout

        status = _volguard(["status"], env, tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = _status_rows(status.stdout)
        assert set(rows) == {f"{service}-0" for service in streams.SERVICES}
        assert all(row[3:5] == ["ok", "ready"] for row in rows.values()), status.stdout

        report = _volguard(["streams"], env, tmp_path)
        assert report.returncode == 0, report.stderr
        for name in streams.BY_NAME:
            assert name in report.stdout

        # A service killed outright is restarted by the supervisor, and the restart is counted.
        victim = _processes(state_dir)["analytics-0"]["pid"]
        assert isinstance(victim, int)
        os.kill(victim, signal.SIGKILL)
        eventually_sync(
            lambda: _processes(state_dir)["analytics-0"]["restarts"] == 1
            and pid_alive(_processes(state_dir)["analytics-0"]["pid"]),  # type: ignore[arg-type]
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
        # The launcher announces once every service is ready, or after READY_WAIT_S regardless: on a
        # loaded machine analytics' kernel warm-up alone can take longer than the default patience.
        eventually_sync(
            lambda: "Dashboard: http://127.0.0.1:" in output.read_text(),
            what="dashboard announced",
            patience_s=READY_WAIT_S + 60,
        )
        status = _volguard(["status"], env, tmp_path)
        assert status.returncode == 0, status.stdout
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=120)
    assert code == 0, output.read_text()[-2000:]
    pids = [record["pid"] for record in _processes(state_dir).values()]
    assert pids == [None] * len(streams.SERVICES)


def test_scaled_up_runs_each_replica_as_its_own_instance_and_down_stops_them_all(
    settings: Settings, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    # Replica n listens on the standard port + 10 n: analytics-1 needs base + 12.
    env = service_env(
        settings, dashboard_port=free_port(), port_base=free_port_block(15), state_dir=state_dir
    )
    env["VOLGUARD_INSTANCE"] = "ignored-by-the-launcher"  # it names every replica itself
    # Two analytics warm-ups at once on a loaded machine can outlast the default ready wait.
    up = _volguard(["up", "--detach", "--ready-wait", "600", "--scale", "analytics=2"], env, tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        processes = _processes(state_dir)
        expected = {f"{service}-0" for service in streams.SERVICES} | {"analytics-1"}
        assert set(processes) == expected
        base = int(env["VOLGUARD_SERVICE_PORT_BASE"])
        assert (processes["analytics-0"]["port"], processes["analytics-1"]["port"]) == (base + 2, base + 12)
        pids = [p["pid"] for p in processes.values()]
        assert all(isinstance(pid, int) and pid_alive(pid) for pid in pids)
        assert len(set(pids)) == len(pids)
        assert (state_dir / "logs" / "analytics-1.log").exists()

        status = _volguard(["status"], env, tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = _status_rows(status.stdout)
        assert set(rows) == expected
        for instance in ("analytics-0", "analytics-1"):
            row = rows[instance]
            assert row[1] == str(processes[instance]["pid"])
            assert row[3] == "ok", status.stdout
            assert row[6] == str(processes[instance]["port"])
            # The role is what the instance itself reports, "-" when it reports none.
            health = httpx.get(f"http://127.0.0.1:{row[6]}/health", timeout=5).json()
            assert row[5] == health.get("role", "-")
        # Analytics is single-active: one replica holds the lease and consumes, the other stands by.
        roles = {rows[i][5]: i for i in ("analytics-0", "analytics-1")}
        assert set(roles) == {"active", "standby"}, status.stdout
        assert rows[roles["active"]][4] == "ready", status.stdout
        eventually_sync(lambda: _analytics_consumers(env, tmp_path) == {1}, what="one analytics consumer")
        # an.vol: one VolSnapshot per chain set, in order, each from the whole set.
        eventually_sync(
            lambda: len(_stream_events(settings, "an.vol")) >= 5, patience_s=300, what="5 VolSnapshots"
        )
        vols = _stream_events(settings, "an.vol")
        chains = _stream_events(settings, "md.chain")
        sets: dict[str, set[str]] = {}
        for chain in chains:
            sets.setdefault(chain["ts_event"], set()).add(chain["event_id"])
        times = [vol["ts_event"] for vol in vols]
        assert times == sorted(times)
        assert len(set(times)) == len(times), "a chain set was published twice"
        for vol in vols:
            assert set(vol["chain_event_ids"]) == sets[vol["ts_event"]], (
                f"incomplete set at {vol['ts_event']}"
            )
    finally:
        down = _volguard(["down"], env, tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(pid_alive(pid) for pid in pids)  # type: ignore[arg-type]
    assert [record["pid"] for record in _processes(state_dir).values()] == [None] * len(expected)


def test_scale_requests_that_cannot_run_are_refused_before_anything_starts(
    settings: Settings, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    env = service_env(settings, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=state_dir)
    for request, reason in [
        ("pricing=2", "unknown service 'pricing'"),
        ("risk=0", "N must be between 1 and 10"),
        ("risk=two", "N must be a whole number"),
        ("risk", "expected SERVICE=N"),
    ]:
        refused = _volguard(["up", "--detach", "--scale", request], env, tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert reason in refused.stderr
    assert not (state_dir / "processes.json").exists()
