"""The process supervisor behind `volguard up`: starts the six services, restarts the ones that die.

It runs in the foreground of `volguard up`, or detached (`volguard up --detach` starts
`python -m volguard_cli.supervisor` in its own session). Its state — pids, restarts, last exit —
is written to `<state_dir>/processes.json` after every change so `volguard status` can read it from
another process, and each service's output goes to `<state_dir>/logs/<service>.log`.

Restarts back off exponentially (1 s doubling to 60 s) and reset after a service stayed up for a
minute, so a crash loop neither spins nor gives up for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from volguard_common import streams

# Start order: consumers of a stream before its producers is not required (groups are created on
# start, log streams from 0), but starting market data last avoids a burst of skipped snapshots.
SERVICE_ORDER: tuple[str, ...] = (
    "risk",
    "execution",
    "strategy",
    "analytics",
    "dashboard_api",
    "market_data",
)
assert set(SERVICE_ORDER) == set(streams.SERVICES)

STOP_GRACE_S = 35.0  # a little over the services' own 30 s graceful shutdown
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 60.0


@dataclass
class ProcessRecord:
    service: str
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    next_start_at: float | None = None
    backoff_s: float = BACKOFF_FIRST_S


@dataclass
class SupervisorState:
    supervisor_pid: int
    started_at: float
    processes: dict[str, ProcessRecord] = field(default_factory=dict)


def state_path(state_dir: Path) -> Path:
    return state_dir / "processes.json"


def pid_path(state_dir: Path) -> Path:
    return state_dir / "supervisor.pid"


def read_state(state_dir: Path) -> SupervisorState | None:
    path = state_path(state_dir)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return SupervisorState(
        supervisor_pid=raw["supervisor_pid"],
        started_at=raw["started_at"],
        processes={name: ProcessRecord(**rec) for name, rec in raw["processes"].items()},
    )


def pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().split(") ", 1)[-1].startswith("Z") is False
    return True


class Supervisor:
    def __init__(
        self, state_dir: Path, env: dict[str, str], services: tuple[str, ...] = SERVICE_ORDER
    ) -> None:
        self.state_dir = state_dir
        self.env = env
        self.services = services
        self.logs_dir = state_dir / "logs"
        self.state = SupervisorState(supervisor_pid=os.getpid(), started_at=time.time())
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._stopping = False

    def _say(self, message: str) -> None:
        print(f"[supervisor {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def _write_state(self) -> None:
        data = {
            "supervisor_pid": self.state.supervisor_pid,
            "started_at": self.state.started_at,
            "processes": {name: asdict(rec) for name, rec in self.state.processes.items()},
        }
        tmp = state_path(self.state_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(state_path(self.state_dir))

    def _start(self, service: str) -> None:
        record = self.state.processes.setdefault(service, ProcessRecord(service))
        log_file = self._log_files.get(service)
        if log_file is None:
            log_file = open(self.logs_dir / f"{service}.log", "ab")  # noqa: SIM115 - held for the child's life
            self._log_files[service] = log_file
        child = subprocess.Popen(
            [sys.executable, "-m", f"volguard_{service}"],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._children[service] = child
        record.pid = child.pid
        record.started_at = time.time()
        record.next_start_at = None
        self._say(f"started {service} (pid {child.pid})")

    def start_all(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pid_path(self.state_dir).write_text(str(os.getpid()))
        for service in self.services:
            self._start(service)
        self._write_state()

    def poll_once(self) -> None:
        """Reap dead children and (re)start the ones whose back-off has passed."""
        now = time.time()
        changed = False
        for service in self.services:
            record = self.state.processes[service]
            child = self._children.get(service)
            if child is not None:
                code = child.poll()
                if code is None:
                    if record.started_at is not None and now - record.started_at > STABLE_AFTER_S:
                        record.backoff_s = BACKOFF_FIRST_S
                    continue
                del self._children[service]
                record.pid = None
                record.last_exit_code = code
                record.last_exit_at = now
                record.next_start_at = now + record.backoff_s
                self._say(
                    f"{service} exited with code {code}; restarting in {record.backoff_s:.0f} s "
                    f"(see {self.logs_dir / (service + '.log')})"
                )
                record.backoff_s = min(BACKOFF_MAX_S, record.backoff_s * 2)
                changed = True
            elif record.next_start_at is not None and now >= record.next_start_at:
                record.restarts += 1
                self._start(service)
                changed = True
        if changed:
            self._write_state()

    def stop_all(self) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for service, child in self._children.items():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self._say(f"{service} did not stop within {STOP_GRACE_S:.0f} s; killing it")
                child.kill()
                child.wait()
            self._say(f"stopped {service} (exit {child.returncode})")
        self._children.clear()
        for record in self.state.processes.values():
            record.pid = None
            record.next_start_at = None
        self._write_state()
        for log_file in self._log_files.values():
            log_file.close()
        pid_path(self.state_dir).unlink(missing_ok=True)

    def run_forever(self) -> None:
        def _on_signal(signum: int, _frame: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self.start_all()
        while not self._stopping:
            self.poll_once()
            time.sleep(0.5)
        self.stop_all()


def main() -> None:
    """Entry of the detached supervisor: `python -m volguard_cli.supervisor STATE_DIR`."""
    state_dir = Path(sys.argv[1]).resolve()
    Supervisor(state_dir, dict(os.environ)).run_forever()


if __name__ == "__main__":
    main()
