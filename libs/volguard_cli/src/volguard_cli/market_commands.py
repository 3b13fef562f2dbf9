"""`volguard history import`, `record` and `replay`: daily history into Postgres; md.* to disk and back.

Wire into the main app with `register(app)`: the `history` group and the `record` and `replay` commands.
Both talk to the Redis/Postgres that `volguard up` recorded in `<state_dir>/infra.json` when there is
one, else to the configured `VOLGUARD_REDIS_URL` / `VOLGUARD_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from redis.asyncio import Redis

from volguard_cli import infra
from volguard_common import db
from volguard_common.bus import BusConfig
from volguard_common.settings import INSTANCE_AUTO, Settings, load_settings_or_exit
from volguard_market_data.cli_api import (
    FeedStats,
    ImportReport,
    Recorder,
    RecordingError,
    RecordingSummary,
    import_daily_bars,
    open_market_database,
    replay_recording,
)


class Symbol(StrEnum):
    NIFTY = "NIFTY"
    INDIAVIX = "INDIAVIX"
    NIFTYATMIV = "NIFTYATMIV"  # NIFTY ATM implied vol in percent (nifty_atm_iv_daily.csv-style)


history_app = typer.Typer(
    help="Daily NIFTY, India VIX and NIFTY ATM IV history in the database.",
    no_args_is_help=True,
    add_completion=False,
)


def _endpoints(settings: Settings) -> tuple[str, str]:
    return infra.resolved_endpoints(settings.state_dir, settings.redis_url, settings.database_url)


def _describe(report: ImportReport) -> list[str]:
    span = (
        f"{report.first_date.isoformat()}..{report.last_date.isoformat()}"
        if report.first_date is not None and report.last_date is not None
        else "no dates"
    )
    lines = [
        f"{report.path}: {report.symbol}, {report.rows} rows ({span}): {report.inserted} new, "
        f"{report.updated} updated, {report.unchanged} unchanged, {len(report.bad_rows)} bad rows"
    ]
    lines.extend(f"  line {bad.line}: {bad.reason}" for bad in report.bad_rows)
    return lines


async def _import_files(database_url: str, files: list[Path], symbol: str | None) -> bool:
    """Import each file, printing its summary; True when every file imported without bad rows."""
    pool = await open_market_database(database_url)
    all_clean = True
    try:
        for path in files:
            try:
                report = await import_daily_bars(pool, path, symbol)
            except (OSError, ValueError, asyncpg.PostgresError) as exc:
                all_clean = False
                typer.echo(f"{path}: FAILED: {type(exc).__name__}: {exc}", err=True)
                continue
            all_clean &= report.ok
            for line in _describe(report):
                typer.echo(line)
    finally:
        await pool.close()
    return all_clean


@history_app.command("import")
def history_import(
    files: Annotated[
        list[Path],
        typer.Argument(help="Daily CSV downloads: NIFTY 50 or India VIX (NSE), or NIFTY ATM IV (percent)."),
    ],
    symbol: Annotated[
        Symbol | None,
        typer.Option(
            "--symbol",
            case_sensitive=False,
            help="Symbol of every file; inferred from each file if omitted.",
        ),
    ] = None,
) -> None:
    """Upsert daily bars from CSV files; re-importing a file changes nothing.

    Prints a summary per file with every rejected line. Exit status 1 when any file had bad rows or
    failed to import, 0 otherwise.
    """
    settings = load_settings_or_exit()
    _, database_url = _endpoints(settings)
    try:
        clean = asyncio.run(_import_files(database_url, files, symbol.value if symbol is not None else None))
    except (db.DatabaseUnavailableError, db.MigrationError) as exc:
        typer.echo(f"cannot prepare the database: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not clean:
        raise typer.Exit(1)


async def _record(
    settings: Settings,
    out: Path,
    duration: float | None,
    from_start: bool,
    use_database: bool,
    segment_entries: int,
) -> RecordingSummary:
    redis_url, database_url = _endpoints(settings)
    redis = Redis.from_url(redis_url)
    pool = await open_market_database(database_url) if use_database else None
    try:
        recorder = Recorder(
            redis,
            BusConfig.from_settings(settings),
            out,
            pool=pool,
            from_start=from_start,
            feed=settings.feed,
            segment_entries=segment_entries,
        )
        loop = asyncio.get_running_loop()
        # Before start(): a Ctrl-C at any moment from here on ends in a finished, complete recording.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, recorder.request_stop)
        await recorder.start()
        typer.echo(f"recording {', '.join(recorder.stream_names)} into {out} (session {recorder.session_id})")
        try:
            # Ends early when Ctrl-C/SIGTERM asks the recorder to stop, or when its reader fails.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorder.wait(), duration)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            summary = await recorder.stop()
    finally:
        await redis.aclose()
        if pool is not None:
            await pool.close()
    return summary


def record(
    out: Annotated[Path, typer.Option("--out", help="New (or empty) directory for the recording.")],
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.0, help="Seconds to record; until Ctrl-C if omitted.")
    ] = None,
    from_start: Annotated[
        bool,
        typer.Option("--from-start", help="Also record what the streams already hold, not only new entries."),
    ] = False,
    use_database: Annotated[
        bool, typer.Option("--db/--no-db", help="Register the session in market.recorded_sessions.")
    ] = True,
    segment_entries: Annotated[
        int, typer.Option("--segment-entries", min=1, help="Entries per segment file.")
    ] = 10_000,
) -> None:
    """Record md.ticks, md.chain and md.status to DIR until Ctrl-C or --duration.

    Replay the recording with VOLGUARD_FEED=replay VOLGUARD_REPLAY_DIR=DIR.
    """
    settings = load_settings_or_exit()
    try:
        summary = asyncio.run(_record(settings, out, duration, from_start, use_database, segment_entries))
    except (RecordingError, db.DatabaseUnavailableError, db.MigrationError) as exc:
        typer.echo(f"cannot record: {exc}", err=True)
        raise typer.Exit(1) from exc
    per_stream = ", ".join(f"{stream} {count}" for stream, count in summary.per_stream.items())
    typer.echo(
        f"recorded {summary.entries} entries ({per_stream}) in {summary.segments} segment(s) to "
        f"{summary.directory}"
    )
    if summary.skipped:
        typer.echo(f"{summary.skipped} unreadable entries were not recorded (listed in index.json)", err=True)


async def _replay(settings: Settings, directory: Path, speed: float, lockstep: bool) -> FeedStats:
    redis_url, _ = _endpoints(settings)
    redis = Redis.from_url(redis_url)
    try:
        return await replay_recording(
            redis,
            BusConfig.from_settings(settings),
            directory,
            speed=speed,
            lockstep=lockstep,
            lockstep_max_lag=settings.lockstep_max_lag,
            # Not a service replica: with no name given, the host says where the replay ran.
            instance=socket.gethostname() if settings.instance == INSTANCE_AUTO else settings.instance,
        )
    finally:
        await redis.aclose()


def replay(
    directory: Annotated[Path, typer.Argument(help="A directory written by `volguard record`.")],
    speed: Annotated[
        float | None, typer.Option("--speed", min=0.0, help="N x real time; 0 = as fast as possible.")
    ] = None,
    lockstep: Annotated[
        bool | None,
        typer.Option("--lockstep/--no-lockstep", help="Wait for every consumer group before each snapshot."),
    ] = None,
) -> None:
    """Play a recorded session back onto md.*, byte for byte, at any speed or in lockstep.

    Stop market_data's own feed first (or run the stack with VOLGUARD_FEED=replay
    VOLGUARD_REPLAY_DIR=DIR instead), so two markets do not publish at once.
    """
    settings = load_settings_or_exit()
    try:
        stats = asyncio.run(
            _replay(
                settings,
                directory,
                settings.speed if speed is None else speed,
                settings.lockstep if lockstep is None else lockstep,
            )
        )
    except RecordingError as exc:
        typer.echo(f"cannot replay {directory}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"replayed {stats.publications} entries in {stats.batches} batches "
        f"({stats.first_event} .. {stats.last_event})"
    )


def register(app: typer.Typer) -> None:
    """Add `history import ...`, `record ...` and `replay ...` to the main `volguard` app."""
    app.add_typer(history_app, name="history")
    app.command("record")(record)
    app.command("replay")(replay)


def standalone_app() -> typer.Typer:
    """These commands on their own: `python -m volguard_cli.market_commands history import FILE`."""
    app = typer.Typer(help="VolGuard market-data commands.", no_args_is_help=True, add_completion=False)

    @app.callback()
    def _commands() -> None:
        """History import and session recording."""

    register(app)
    return app


if __name__ == "__main__":
    standalone_app()()
