"""The process supervisor behind `volguard up`: starts the services' replicas, restarts the ones that die.

It runs in the foreground of `volguard up`, or detached (`volguard up --detach` starts
`python -m volguard_cli.supervisor STATE_DIR [SERVICE=N ...]` in its own session). Its state — per
instance: pid, port, restarts, last exit — is written to `<state_dir>/processes.json` after every change
so `volguard status` can read it from another process, and each instance's output goes to
`<state_dir>/logs/<instance>.log`.

Replicas (`volguard up --scale risk=2`): replica n of a service is the instance `<service>-<n>`, which
is its VOLGUARD_INSTANCE (so its Redis consumer name, the same across restarts) and its log's name, and
it listens on the service's standard port + 10 × n (Settings.port_for). One replica per service is
`<service>-0` on the standard port.

Restarts back off exponentially (1 s doubling to 60 s) and reset after an instance stayed up for a
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
from volguard_common.settings import REPLICA_PORT_STRIDE, Settings, load_settings_or_exit

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

# Over the services' own VOLGUARD_STOP_GRACE_S (20 s by default) with room to spare: a service is
# SIGKILLed only when its own bounded stop failed.
STOP_GRACE_S = 35.0
# Ports are the standard port + 10 × n, so at most 10 replicas of a service fit on one machine.
MAX_REPLICAS = REPLICA_PORT_STRIDE
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 60.0


class ScaleError(ValueError):
    """A `--scale` request the launcher cannot run; the message says why."""


def parse_scale(requests: list[str]) -> dict[str, int]:
    """`["analytics=2", "risk=2"]` → `{"analytics": 2, "risk": 2}`; a later request for a service wins."""
    replicas: dict[str, int] = {}
    for request in requests:
        service, sep, count = request.partition("=")
        service = service.strip()
        if not sep:
            raise ScaleError(f"--scale {request!r}: expected SERVICE=N, e.g. analytics=2")
        if service not in SERVICE_ORDER:
            raise ScaleError(
                f"--scale {request!r}: unknown service {service!r}; known: {', '.join(SERVICE_ORDER)}"
            )
        try:
            n = int(count)
        except ValueError:
            raise ScaleError(f"--scale {request!r}: N must be a whole number, got {count!r}") from None
        if not 1 <= n <= MAX_REPLICAS:
            raise ScaleError(
                f"--scale {request!r}: N must be between 1 and {MAX_REPLICAS} "
                "(replicas listen 10 ports apart)"
            )
        replicas[service] = n
    return replicas


@dataclass(frozen=True)
class Replica:
    """One process the supervisor runs: replica `index` of `service`."""

    service: str
    index: int
    port: int

    @property
    def instance(self) -> str:
        return f"{self.service}-{self.index}"


def plan_replicas(settings: Settings, replicas: dict[str, int]) -> list[Replica]:
    """Every instance to run, in start order: one per service unless `replicas` says more."""
    plan = [
        Replica(service, index, settings.port_for(service, index))
        for service in SERVICE_ORDER
        for index in range(replicas.get(service, 1))
    ]
    taken: dict[int, str] = {}
    for replica in plan:
        if not 1 <= replica.port <= 65535:
            raise ScaleError(f"{replica.instance} would listen on port {replica.port}, which is no TCP port")
        if replica.port in taken:
            raise ScaleError(
                f"{replica.instance} and {taken[replica.port]} would both listen on port {replica.port}: "
                "move VOLGUARD_DASHBOARD_PORT or VOLGUARD_SERVICE_PORT_BASE apart"
            )
        taken[replica.port] = replica.instance
    return plan


@dataclass
class ProcessRecord:
    service: str
    instance: str = ""
    port: int | None = None
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
        # A file from before replicas had no instance: its key was the service.
        processes={
            name: ProcessRecord(**{"instance": name, **rec}) for name, rec in raw["processes"].items()
        },
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
    def __init__(self, state_dir: Path, env: dict[str, str], replicas: list[Replica]) -> None:
        self.state_dir = state_dir
        self.env = env
        self.replicas = replicas
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

    def _start(self, replica: Replica) -> None:
        instance = replica.instance
        record = self.state.processes.setdefault(
            instance, ProcessRecord(replica.service, instance=instance, port=replica.port)
        )
        log_file = self._log_files.get(instance)
        if log_file is None:
            log_file = open(self.logs_dir / f"{instance}.log", "ab")  # noqa: SIM115 - held for the child's life
            self._log_files[instance] = log_file
        env = {**self.env, "VOLGUARD_INSTANCE": instance, "VOLGUARD_HTTP_PORT": str(replica.port)}
        child = subprocess.Popen(
            [sys.executable, "-m", f"volguard_{replica.service}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._children[instance] = child
        record.pid = child.pid
        record.started_at = time.time()
        record.next_start_at = None
        self._say(f"started {instance} (pid {child.pid}, port {replica.port})")

    def start_all(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pid_path(self.state_dir).write_text(str(os.getpid()))
        for replica in self.replicas:
            self._start(replica)
        self._write_state()

    def poll_once(self) -> None:
        """Reap dead children and (re)start the ones whose back-off has passed."""
        now = time.time()
        changed = False
        for replica in self.replicas:
            instance = replica.instance
            record = self.state.processes[instance]
            child = self._children.get(instance)
            if child is not None:
                code = child.poll()
                if code is None:
                    if record.started_at is not None and now - record.started_at > STABLE_AFTER_S:
                        record.backoff_s = BACKOFF_FIRST_S
                    continue
                del self._children[instance]
                record.pid = None
                record.last_exit_code = code
                record.last_exit_at = now
                record.next_start_at = now + record.backoff_s
                self._say(
                    f"{instance} exited with code {code}; restarting in {record.backoff_s:.0f} s "
                    f"(see {self.logs_dir / (instance + '.log')})"
                )
                record.backoff_s = min(BACKOFF_MAX_S, record.backoff_s * 2)
                changed = True
            elif record.next_start_at is not None and now >= record.next_start_at:
                record.restarts += 1
                self._start(replica)
                changed = True
        if changed:
            self._write_state()

    def stop_all(self) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for instance, child in self._children.items():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self._say(f"{instance} did not stop within {STOP_GRACE_S:.0f} s; killing it")
                child.kill()
                child.wait()
            self._say(f"stopped {instance} (exit {child.returncode})")
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
    """Entry of the detached supervisor: `python -m volguard_cli.supervisor STATE_DIR [SERVICE=N ...]`."""
    state_dir = Path(sys.argv[1]).resolve()
    try:
        replicas = plan_replicas(load_settings_or_exit(), parse_scale(sys.argv[2:]))
    except ScaleError as exc:
        raise SystemExit(f"volguard supervisor: {exc}") from exc
    Supervisor(state_dir, dict(os.environ), replicas).run_forever()


if __name__ == "__main__":
    main()
