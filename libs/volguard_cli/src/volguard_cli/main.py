"""`volguard`: start, stop and look inside the whole stack."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
from redis.asyncio import Redis

from volguard_cli import (
    backtest_commands,
    calendar_commands,
    control_commands,
    dlq_commands,
    infra,
    market_commands,
)
from volguard_cli.probes import READY_WAIT_S, health_role, probe
from volguard_cli.supervisor import (
    ProcessRecord,
    Replica,
    ScaleError,
    Supervisor,
    parse_scale,
    pid_alive,
    pid_path,
    plan_replicas,
    read_state,
)
from volguard_common import streams
from volguard_common.bus import BusConfig, StreamReport, stream_report
from volguard_common.settings import Settings, load_settings_or_exit

app = typer.Typer(
    help="VolGuard: NIFTY options-volatility trading. Paper trading on a simulated market by default.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")) -> None:
    # The launcher's own decisions (which Redis/Postgres, what it started) are plain log lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _settings() -> Settings:
    return load_settings_or_exit()


def _endpoints(settings: Settings) -> tuple[str, str]:
    return infra.resolved_endpoints(settings.state_dir, settings.redis_url, settings.database_url)


def _service_env(
    settings: Settings, endpoints: infra.InfraEndpoints, overrides: dict[str, str | None]
) -> dict[str, str]:
    env = dict(os.environ)
    env["VOLGUARD_REDIS_URL"] = endpoints.redis_url
    env["VOLGUARD_DATABASE_URL"] = endpoints.database_url
    env.setdefault("VOLGUARD_LOG_FORMAT", "json")
    env.update({f"VOLGUARD_{name.upper()}": value for name, value in overrides.items() if value is not None})
    return env


def _wait_ready(settings: Settings, replicas: list[Replica], deadline_s: float) -> list[str]:
    """Poll every instance's /ready (a healthy hot standby is ready too) until all answer 200 or the
    deadline passes (at least one round); returns the instances not ready yet."""
    deadline = time.monotonic() + deadline_s
    waiting = list(replicas)
    while True:
        waiting = [r for r in waiting if not probe(f"http://{settings.http_host}:{r.port}/ready")[0]]
        if not waiting or time.monotonic() >= deadline:
            return [r.instance for r in waiting]
        time.sleep(0.5)


def _dashboard_url(settings: Settings) -> str:
    return f"http://{settings.http_host}:{settings.dashboard_port}"


@app.command()
def up(
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Run in the background; stop with `volguard down`."
    ),
    feed: str | None = typer.Option(None, help="sim (default), replay or upstox."),
    speed: float | None = typer.Option(
        None, min=0.0, help="Market time per wall time: 1 is real time, 0 as fast as possible."
    ),
    lockstep: bool | None = typer.Option(
        None, "--lockstep/--no-lockstep", help="Publish each snapshot only when every service has caught up."
    ),
    scenario: str | None = typer.Option(
        None, help="Simulator scenario, e.g. gap_down_3, vix_spike, expiry_pin."
    ),
    seed: int | None = typer.Option(None, help="Simulator seed: same seed, same market."),
    replay_dir: Path | None = typer.Option(
        None, "--replay", help="A recording to play back (implies --feed replay)."
    ),
    ready_wait_s: float = typer.Option(
        READY_WAIT_S,
        "--ready-wait",
        min=0.0,
        help="Seconds `up --detach` waits for every instance to be ready before it reports the laggards.",
    ),
    scale: list[str] = typer.Option(
        [],
        "--scale",
        metavar="SERVICE=N",
        help="Run N replicas of SERVICE (repeatable), e.g. --scale risk=2. Replica n is the instance "
        "SERVICE-n on the service's port + 10 × n; `volguard status` shows the role each one reports.",
    ),
) -> None:
    """Start the whole stack: Redis and Postgres (local or embedded) and the six services."""
    overrides: dict[str, str | None] = {
        "feed": "replay" if replay_dir is not None and feed is None else feed,
        "speed": None if speed is None else repr(speed),
        "lockstep": None if lockstep is None else str(lockstep).lower(),
        "sim_scenario": scenario,
        "sim_seed": None if seed is None else str(seed),
        "replay_dir": None if replay_dir is None else str(replay_dir.resolve()),
    }
    # Check the combination now, by the same rules the services apply when they start.
    settings = load_settings_or_exit(**{k: v for k, v in overrides.items() if v is not None})
    try:
        replicas = plan_replicas(settings, parse_scale(scale))
    except ScaleError as exc:
        typer.echo(f"volguard up: {exc}", err=True)
        raise typer.Exit(2) from exc
    state_dir = settings.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing is not None and pid_alive(existing.supervisor_pid):
        typer.echo(
            f"VolGuard is already running (supervisor pid {existing.supervisor_pid}); see `volguard status`."
        )
        raise typer.Exit(1)
    endpoints = infra.ensure_infra(state_dir, settings.redis_url, settings.database_url)
    env = _service_env(settings, endpoints, overrides)
    if detach:
        log_path = state_dir / "logs" / "supervisor.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            subprocess.Popen(
                [sys.executable, "-m", "volguard_cli.supervisor", str(state_dir), *scale],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        laggards = _wait_ready(settings, replicas, ready_wait_s)
        if laggards:
            typer.echo(f"Started, but not ready after {ready_wait_s:.0f} s: {', '.join(laggards)}.")
            typer.echo(f"Logs: {state_dir / 'logs'}. `volguard status` shows the details.")
            raise typer.Exit(1)
        typer.echo(f"VolGuard is up. Dashboard: {_dashboard_url(settings)}")
        typer.echo("`volguard status` shows each process; `volguard down` stops everything.")
        return

    supervisor = Supervisor(state_dir, env, replicas)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    supervisor.start_all()
    announced = False
    deadline = time.monotonic() + ready_wait_s
    try:
        while not stopping:
            supervisor.poll_once()
            if not announced and (not _wait_ready(settings, replicas, 0.0) or time.monotonic() > deadline):
                announced = True
                typer.echo(
                    f"VolGuard is up. Dashboard: {_dashboard_url(settings)}  (Ctrl-C stops everything)"
                )
            time.sleep(0.5)
    finally:
        supervisor.stop_all()
        stopped = infra.stop_embedded(state_dir)
        if stopped:
            typer.echo(f"Stopped embedded {', '.join(stopped)}.")


@app.command()
def down() -> None:
    """Stop everything `volguard up` started: the services, then embedded Redis/Postgres."""
    settings = _settings()
    state_dir = settings.state_dir.resolve()
    state = read_state(state_dir)
    pid_file = pid_path(state_dir)
    supervisor_pid = state.supervisor_pid if state is not None else None
    if supervisor_pid is None and pid_file.exists():
        supervisor_pid = int(pid_file.read_text())
    if supervisor_pid is not None and pid_alive(supervisor_pid):
        os.kill(supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while pid_alive(supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(supervisor_pid):
            typer.echo(f"supervisor {supervisor_pid} did not stop in 60 s; killing it")
            os.kill(supervisor_pid, signal.SIGKILL)
        typer.echo("Stopped the services.")
    # Services left behind by a supervisor that was killed outright.
    if state is not None:
        for record in state.processes.values():
            if pid_alive(record.pid):
                assert record.pid is not None
                os.kill(record.pid, signal.SIGTERM)
                typer.echo(f"Stopped orphaned {record.instance} (pid {record.pid}).")
    stopped = infra.stop_embedded(state_dir)
    if stopped:
        typer.echo(f"Stopped embedded {', '.join(stopped)}.")
    if supervisor_pid is None and not stopped:
        typer.echo("Nothing was running.")


@app.command()
def status() -> None:
    """Each instance: pid, restarts, health, readiness and role (active/standby, as it reports it).

    Exits 1 when an instance is down or not ready (a healthy hot standby is ready).
    """
    settings = _settings()
    state = read_state(settings.state_dir.resolve())
    running = state is not None and pid_alive(state.supervisor_pid)
    typer.echo(
        f"supervisor: {'running, pid ' + str(state.supervisor_pid) if running and state else 'not running'}"
    )
    typer.echo(f"{'instance':<16} {'pid':>8} {'restarts':>8}  {'health':<8} {'ready':<8} {'role':<8} port")
    # What the supervisor runs; without one, where a single replica of each service would answer.
    rows: list[tuple[str, int, ProcessRecord | None]]
    if state is not None and state.processes:
        rows = [
            (instance, record.port or settings.port_for(record.service), record)
            for instance, record in state.processes.items()
        ]
    else:
        rows = [(r.instance, r.port, None) for r in plan_replicas(settings, {})]
    all_ready = True
    for instance, port, record in rows:
        pid = record.pid if record is not None and pid_alive(record.pid) else None
        health, role = health_role(f"http://{settings.http_host}:{port}/health")
        ready, _ = probe(f"http://{settings.http_host}:{port}/ready")
        all_ready &= ready
        typer.echo(
            f"{instance:<16} {pid if pid else '-':>8} {record.restarts if record else 0:>8}  "
            f"{'ok' if health else 'down':<8} {'ready' if ready else 'no':<8} {role:<8} {port}"
        )
    if not all_ready:
        raise typer.Exit(1)


def _format_report(report: StreamReport, dlq_by_group: dict[str, int] | None = None) -> list[str]:
    lines = [
        f"{report.stream:<14} len {report.length:>8}  last {report.last_id or '-':<18}"
        f" dlq {report.dlq_length:>4}"
    ]
    for group in report.groups:
        oldest = (
            "-" if group.oldest_pending_idle_ms is None else f"{group.oldest_pending_idle_ms / 1000:.1f}s"
        )
        lag = "?" if group.lag is None else str(group.lag)
        lines.append(
            f"  {group.group:<14} lag {lag:>8}  pending {group.pending:>6}  oldest pending {oldest:>8}"
            f"  consumers {group.consumers}  dlq {(dlq_by_group or {}).get(group.group, 0)}"
        )
    return lines


async def _dlq_by_group(redis: Redis, config: BusConfig, stream: str) -> dict[str, int]:
    """Dead letters of `stream` per group that gave them up (the `dlq_group` each carries)."""
    counts: dict[str, int] = {}
    for _, fields in await redis.xrange(config.key(streams.dlq_name(stream))):
        group = fields[b"dlq_group"].decode()
        counts[group] = counts.get(group, 0) + 1
    return counts


async def _report_lines(redis: Redis, config: BusConfig) -> list[str]:
    lines: list[str] = []
    for spec in streams.ALL_STREAMS:
        report = await stream_report(redis, config, spec.name)
        by_group = await _dlq_by_group(redis, config, spec.name) if report.dlq_length else {}
        lines.extend(_format_report(report, by_group))
    return lines


@app.command("streams")
def streams_command(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
    interval: float = typer.Option(
        2.0, "--interval", help="Seconds between refreshes with --watch.", min=0.1
    ),
) -> None:
    """Per stream: length, last id, DLQ length; per group: lag, pending, oldest pending age, DLQ."""
    settings = _settings()
    redis_url, _ = _endpoints(settings)
    config = BusConfig.from_settings(settings)

    async def _show() -> None:
        redis = Redis.from_url(redis_url)
        try:
            while True:
                lines = await _report_lines(redis, config)
                if watch:
                    # Clear the screen and home the cursor, then one whole frame at once.
                    stamp = time.strftime("%H:%M:%S")
                    typer.echo("\x1b[2J\x1b[H" + f"volguard streams  {stamp}  (Ctrl-C to stop)")
                typer.echo("\n".join(lines))
                if not watch:
                    return
                await asyncio.sleep(interval)
        finally:
            await redis.aclose()

    try:
        asyncio.run(_show())
    except KeyboardInterrupt:
        # Ctrl-C is how --watch ends: asyncio.run cancelled _show, which closed its client.
        typer.echo("")


market_commands.register(app)
calendar_commands.register(app)
dlq_commands.register(app)
backtest_commands.register(app)
control_commands.register(app)

if __name__ == "__main__":
    app()
