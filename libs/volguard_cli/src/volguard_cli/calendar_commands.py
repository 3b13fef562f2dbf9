"""`volguard calendar import FILE`: an updated NSE holiday list for every VolGuard process.

The bundled holidays of a year NSE has not published yet are provisional (derived from festival
dates). When NSE publishes its list (usually in December), import it: the file is checked (dates,
weekdays only, no repeats, contiguous years), what changes against the calendar in use is printed,
and it is written to `<state_dir>/calendar/nse_holidays.csv`, which every service reads at start
(`Settings.holidays_file`). Restart the services to trade by it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from volguard_common import clock
from volguard_common.settings import load_settings_or_exit

calendar_app = typer.Typer(help="The NSE trading calendar.", no_args_is_help=True, add_completion=False)


@calendar_app.callback()
def _calendar() -> None:
    """The NSE trading calendar."""


def changes(before: clock.TradingCalendar, after: clock.TradingCalendar) -> list[str]:
    """One line per holiday added, removed or renamed/re-sourced, by date."""
    old = {h.day: h for h in before.holidays}
    new = {h.day: h for h in after.holidays}
    lines = []
    for day in sorted(old.keys() | new.keys()):
        was, now = old.get(day), new.get(day)
        if was is None and now is not None:
            lines.append(f"+ {day} {now.name} ({now.source})")
        elif now is None and was is not None:
            lines.append(f"- {day} {was.name} ({was.source}): now a trading day")
        elif was is not None and now is not None and (was.name, was.source) != (now.name, now.source):
            lines.append(f"~ {day} {was.name} ({was.source}) -> {now.name} ({now.source})")
    return lines


@calendar_app.command("import")
def calendar_import(
    file: Annotated[
        Path, typer.Argument(help="Holiday CSV in the bundled format: date,holiday,source (weekdays only).")
    ],
) -> None:
    """Check an NSE holiday file and make it the holiday list of every VolGuard process."""
    settings = load_settings_or_exit()
    try:
        holidays = clock.holidays_from_csv(file.read_text(encoding="utf-8"))
        before = clock.nse_calendar()
        in_use = settings.holidays_file_in_use()
        if in_use is not None:
            before = clock.calendar_with_holidays(clock.holidays_from_csv(in_use.read_text(encoding="utf-8")))
        after = clock.calendar_with_holidays(holidays)
    except (OSError, ValueError, KeyError) as exc:
        typer.echo(f"{file}: refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    target = settings.imported_holidays_file
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, target)
    years = sorted({h.day.year for h in holidays})
    provisional = [h for h in after.holidays if h.provisional]
    typer.echo(f"imported {len(holidays)} holidays for {', '.join(map(str, years))} into {target}")
    for line in changes(before, after) or ["no change to the calendar in use"]:
        typer.echo(line)
    typer.echo(
        f"coverage {after.first_day}..{after.last_day}; {len(provisional)} provisional holidays remain. "
        "Restart the services to trade by it."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(calendar_app, name="calendar")


if __name__ == "__main__":
    # `python -m volguard_cli.calendar_commands import FILE`, the same as `volguard calendar import FILE`.
    calendar_app()
