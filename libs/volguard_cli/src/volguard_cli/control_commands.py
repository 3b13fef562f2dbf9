"""Operator commands from the shell: `volguard kill-switch`, `flatten`, `pause`, `resume`, `acknowledge`.

They go through the dashboard's REST API, not straight onto ctl.commands: the dashboard checks the
bearer token (401 without one, 403 with a wrong one), writes the audit row (who, what, when, outcome)
and answers only once the Command is on the stream, so a command from the shell is held to exactly the
rules of one from the page. The token comes from `--token` or VOLGUARD_DASHBOARD_TOKEN, never from a
file in the repository.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from volguard_common import events
from volguard_common.settings import load_settings_or_exit

ReasonOption = Annotated[str, typer.Option("--reason", help="Why, in your words (kept in the audit log).")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="VOLGUARD_DASHBOARD_TOKEN",
        show_envvar=True,
        help="The dashboard's bearer token (default: VOLGUARD_DASHBOARD_TOKEN).",
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The dashboard's base URL (default: http://127.0.0.1:<VOLGUARD_DASHBOARD_PORT>)."
    ),
]


def _send(path: str, body: dict[str, Any], token: str | None, url: str | None) -> None:
    settings = load_settings_or_exit()
    base = (url or f"http://127.0.0.1:{settings.dashboard_port}").rstrip("/")
    if not token:
        typer.echo(
            "a state-changing command needs the dashboard token: "
            "pass --token or set VOLGUARD_DASHBOARD_TOKEN",
            err=True,
        )
        raise typer.Exit(2)
    try:
        response = httpx.post(
            f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )
    except httpx.HTTPError as exc:
        typer.echo(
            f"the dashboard at {base} does not answer ({type(exc).__name__}); "
            "is the stack up (`volguard up`)?",
            err=True,
        )
        raise typer.Exit(1) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {"detail": response.text[:500]}
    if response.status_code >= 400:
        detail = answer.get("detail", answer) if isinstance(answer, dict) else answer
        typer.echo(f"refused ({response.status_code}): {detail}", err=True)
        raise typer.Exit(2 if response.status_code < 500 else 1)
    on_stream = answer.get("on_stream")
    ids = ", ".join(answer.get("event_ids", [])) or "-"
    kinds = ", ".join(answer.get("commands", [])) or "-"
    where = "on ctl.commands" if on_stream else "committed; on ctl.commands as soon as the relay sends it"
    typer.echo(f"{kinds} {where} (event id {ids}); risk's answer shows on rk.state and in `volguard status`")


def kill_switch(reason: ReasonOption = "", token: TokenOption = None, url: UrlOption = None) -> None:
    """Halt trading at once: resting orders cancelled, every position flattened, HALTED until resume."""
    _send("/api/emergency/kill-switch", {"reason": reason}, token, url)


def flatten(
    reason: ReasonOption = "",
    bucket: Annotated[
        events.Bucket | None, typer.Option("--bucket", help="Only this bucket; every bucket when omitted.")
    ] = None,
    token: TokenOption = None,
    url: UrlOption = None,
) -> None:
    """Close positions (one bucket or all) through risk and execution, shorts bought back first."""
    body: dict[str, Any] = {"reason": reason}
    if bucket is not None:
        body["bucket"] = bucket.value
    _send("/api/emergency/flatten", body, token, url)


def pause(reason: ReasonOption = "", token: TokenOption = None, url: UrlOption = None) -> None:
    """Stop new entries (exits and adjustments go on) until resume."""
    _send("/api/stop", {"reason": reason}, token, url)


def resume(reason: ReasonOption = "", token: TokenOption = None, url: UrlOption = None) -> None:
    """Resume new entries after a pause or a kill switch, where risk's state table allows it."""
    _send("/api/start", {"reason": reason}, token, url)


def acknowledge(reason: ReasonOption = "", token: TokenOption = None, url: UrlOption = None) -> None:
    """Acknowledge what waits for an operator (EXTERNAL positions, a STUCK basket)."""
    _send("/api/acknowledge", {"reason": reason}, token, url)


def register(app: typer.Typer) -> None:
    app.command("kill-switch")(kill_switch)
    app.command("flatten")(flatten)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("acknowledge")(acknowledge)
