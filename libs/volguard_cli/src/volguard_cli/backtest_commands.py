"""`volguard backtest --from DATE --to DATE`: the trading components over NSE trading days, in process.

The run is volguard_backtest's engine: analytics, strategy, risk and execution's domain components in
one deterministic event loop over the simulated market (`--source sim`, seeded) or a recorded session
(`--source DIR`). It prints a progress bar (days and simulated time) and writes the report as JSON and
one self-contained HTML file. Ctrl-C stops at the next market instant, says where, and still writes
the report of what ran (marked as stopped).
"""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from volguard_backtest.app import BacktestRequest, parse_overrides, run, write_report
from volguard_backtest.domain.days import BacktestInputError, parse_day, parse_time
from volguard_backtest.engine import Position

INTERRUPTED_EXIT = 130


class _StopFlag:
    """Set by the first Ctrl-C; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def backtest(
    start: Annotated[
        str, typer.Option("--from", help="First day (YYYY-MM-DD), from 2025 (the calendar's first year).")
    ],
    end: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")],
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the simulated market (default: sim_seed).")
    ] = None,
    source: Annotated[
        str, typer.Option("--source", help="'sim' or the directory of a recorded session.")
    ] = "sim",
    scenario: Annotated[
        str | None,
        typer.Option("--scenario", help="A simulator scenario (gap_day, vix_spike, black_swan, ...)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Report path: PATH.json and PATH.html are written.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE setting override for this run (repeatable).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Stop the last day at this IST time (HH:MM), e.g. 10:15.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Backtest the trading rules over the NSE trading days in a range, in one process."""
    console = Console(stderr=True)
    try:
        first, last = parse_day(start, "--from"), parse_day(end, "--to")
        request = BacktestRequest(
            start=first,
            end=last,
            seed=seed,
            source=source,
            scenario=scenario,
            overrides=parse_overrides(overrides or []),
            until=parse_time(until, "--until") if until is not None else None,
        )
    except BacktestInputError as error:
        typer.echo(f"volguard backtest: {error}", err=True)
        raise typer.Exit(2) from None
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.handle)
    last_position: list[Position] = []
    progress = Progress(
        TextColumn("day {task.completed:.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=quiet or not console.is_terminal,
    )
    task = progress.add_task("starting", total=1)

    def on_progress(position: Position) -> None:
        if not last_position or position.ts_event.minute != last_position[0].ts_event.minute:
            progress.update(
                task,
                total=position.days,
                completed=position.day_number - 1 + _day_fraction(position),
                description=f"{position.ts_event:%Y-%m-%d %H:%M} IST, {position.instants} instants",
            )
        last_position[:] = [position]

    try:
        with progress:
            result = run(request, progress=on_progress, should_stop=stop)
    except BacktestInputError as error:
        typer.echo(f"volguard backtest: {error}", err=True)
        raise typer.Exit(2) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    target = (
        report if report is not None else Path(f"backtest-{first}-{last}-seed{result.report['run']['seed']}")
    )
    json_path, html_path = write_report(result.report, target)
    summary = result.report["summary"]
    reconciled = result.report["reconciliation"]["reconciled"]
    typer.echo(
        f"{len(result.days)} trading day(s), "
        f"{summary['closed_trades']} closed trade(s) of {summary['trades']}, "
        f"net P&L {summary['net_pnl']} Rs ({'reconciled to the paisa' if reconciled else 'NOT reconciled'}); "
        f"report: {json_path} and {html_path}"
    )
    if not result.outcome.completed:
        where = result.outcome.stopped_at
        typer.echo(
            f"stopped by Ctrl-C at {_where(where)} after {result.outcome.days_done} complete day(s) of "
            f"{len(result.days)}; the report covers what ran",
            err=True,
        )
        raise typer.Exit(INTERRUPTED_EXIT)
    if not reconciled:
        typer.echo("the report's P&L does not reconcile with the fills: see its reconciliation", err=True)
        raise typer.Exit(1)


def _day_fraction(position: Position) -> float:
    minutes = position.ts_event.hour * 60 + position.ts_event.minute - (9 * 60 + 15)
    return min(max(minutes / 375.0, 0.0), 0.999)


def _where(ts: datetime | None) -> str:
    return "the start (no market instant ran)" if ts is None else f"{ts:%Y-%m-%d %H:%M:%S} IST"


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
