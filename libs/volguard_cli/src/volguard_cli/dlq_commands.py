"""`volguard dlq show|replay|drop STREAM`: look at dead letters and deal with them (see
`volguard_cli.dead_letters` for what each does)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from redis.asyncio import Redis

from volguard_cli import infra
from volguard_cli.dead_letters import DeadLetter, dead_letters, drop, format_letter, replay
from volguard_common import streams
from volguard_common.bus import BusConfig
from volguard_common.settings import load_settings_or_exit

dlq_app = typer.Typer(
    help="Dead-letter streams: inspect, replay, drop.", no_args_is_help=True, add_completion=False
)


StreamArg = Annotated[str, typer.Argument(help="The stream whose DLQ to use, e.g. st.intents.")]
IdsOption = Annotated[
    list[str] | None, typer.Option("--id", help="Only this dead letter (its DLQ entry id); repeatable.")
]


def _run(stream: str, ids: list[str] | None, action: str, yes: bool = False) -> None:
    try:
        streams.spec(stream)
    except KeyError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(2) from None
    settings = load_settings_or_exit()
    redis_url, _ = infra.resolved_endpoints(settings.state_dir, settings.redis_url, settings.database_url)
    config = BusConfig.from_settings(settings)

    async def _load() -> list[DeadLetter]:
        redis = Redis.from_url(redis_url)
        try:
            return await dead_letters(redis, config, stream, ids or ())
        finally:
            await redis.aclose()

    async def _act(letters: list[DeadLetter]) -> None:
        redis = Redis.from_url(redis_url)
        try:
            if action == "replay":
                for letter, new_id in zip(letters, await replay(redis, config, stream, letters), strict=True):
                    typer.echo(f"replayed {letter.dlq_id} to {stream} as {new_id}")
            else:
                typer.echo(
                    f"dropped {await drop(redis, config, stream, letters)} from {streams.dlq_name(stream)}"
                )
        finally:
            await redis.aclose()

    try:
        letters = asyncio.run(_load())
    except KeyError as exc:
        typer.echo(str(exc.args[0]), err=True)
        raise typer.Exit(2) from None
    if action == "show":
        typer.echo(f"{streams.dlq_name(stream)}: {len(letters)} dead letter(s)")
        for letter in letters:
            for line in format_letter(letter):
                typer.echo(line)
        return
    if not letters:
        typer.echo(f"{streams.dlq_name(stream)} is empty: nothing to {action}")
        return
    if action == "drop" and not yes:
        for letter in letters:
            typer.echo(format_letter(letter)[0])
        if not typer.confirm(f"Delete these {len(letters)} dead letter(s) for good?"):
            typer.echo("Nothing dropped.")
            raise typer.Exit(1)
    asyncio.run(_act(letters))


@dlq_app.command("show")
def show_command(stream: StreamArg, ids: IdsOption = None) -> None:
    """The dead letters of STREAM with the error that sent each there."""
    _run(stream, ids, "show")


@dlq_app.command("replay")
def replay_command(stream: StreamArg, ids: IdsOption = None) -> None:
    """Put dead letters back on STREAM (after the cause is fixed) and remove them from its DLQ."""
    _run(stream, ids, "replay")


@dlq_app.command("drop")
def drop_command(
    stream: StreamArg,
    ids: IdsOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters of STREAM for good (asks first unless --yes)."""
    _run(stream, ids, "drop", yes)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
