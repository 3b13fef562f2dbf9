"""`volguard calendar import`: NSE's published holiday list replaces the bundled (provisional) one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from volguard_common import clock
from volguard_common.service import install_holidays_file
from volguard_common.settings import Settings


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("VOLGUARD_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path / "state"
    clock.install_calendar(None)


def _volguard_calendar(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOLGUARD_")}
    env.update(
        {"VOLGUARD_STATE_DIR": str(cwd / "state"), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    )
    return subprocess.run(
        [sys.executable, "-m", "volguard_cli.calendar_commands", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def _published_2027(tmp_path: Path) -> Path:
    # NSE's list as published: Holi on 23 March instead of the provisional 22nd, the rest as derived.
    rows = [
        h for h in clock.bundled_nse_calendar().holidays if h.day.year == 2027 and h.day != date(2027, 3, 22)
    ]
    lines = ["date,holiday,source", *(f"{h.day},{h.name},NSE circular 2026-12-05" for h in rows)]
    lines.append("2027-03-23,Holi,NSE circular 2026-12-05")
    path = tmp_path / "nse_2027.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_imported_holiday_list_becomes_every_process_calendar(state_dir: Path, tmp_path: Path) -> None:
    assert clock.bundled_nse_calendar().holiday(date(2027, 3, 22)) is not None
    assert clock.bundled_nse_calendar().holiday(date(2027, 3, 22)).provisional  # type: ignore[union-attr]
    result = _volguard_calendar(["import", str(_published_2027(tmp_path))], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "+ 2027-03-23 Holi" in result.stdout
    assert "- 2027-03-22 Holi (provisional): now a trading day" in result.stdout
    assert "0 provisional holidays remain" in result.stdout
    target = state_dir / "calendar" / "nse_holidays.csv"
    assert target.is_file()

    settings = Settings()
    assert settings.holidays_file_in_use() == target
    install_holidays_file(settings)  # what every service does at start
    assert clock.is_trading_day(date(2027, 3, 22))
    assert not clock.is_trading_day(date(2027, 3, 23))
    assert not clock.nse_calendar().holiday(date(2027, 3, 23)).provisional  # type: ignore[union-attr]
    # Years the file does not list keep the bundled holidays.
    assert not clock.is_trading_day(date(2026, 12, 25))


def test_a_bad_holiday_file_is_refused_and_nothing_is_written(state_dir: Path, tmp_path: Path) -> None:
    weekend = tmp_path / "weekend.csv"
    weekend.write_text("date,holiday,source\n2027-03-20,Saturday,NSE\n", encoding="utf-8")
    gap = tmp_path / "gap.csv"
    gap.write_text("date,holiday,source\n2029-01-26,Republic Day,NSE\n", encoding="utf-8")
    headless = tmp_path / "headless.csv"
    headless.write_text("day,name\n2027-01-26,Republic Day\n", encoding="utf-8")
    for path, reason in (
        (weekend, "weekend"),
        (gap, "contiguous"),
        (headless, "no date, holiday, source column"),
    ):
        result = _volguard_calendar(["import", str(path)], tmp_path)
        assert result.returncode == 1
        assert reason in result.stderr
    assert not (state_dir / "calendar" / "nse_holidays.csv").exists()
    assert Settings().holidays_file_in_use() is None


def test_the_volguard_command_imports_a_holiday_file(state_dir: Path, tmp_path: Path) -> None:
    """The same import through the installed `volguard` entry point (volguard_cli.main:app), as users
    run it; the 2027 holidays it does not replace stay provisional in the bundled data."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOLGUARD_")}
    env["VOLGUARD_STATE_DIR"] = str(state_dir)
    result = subprocess.run(
        [sys.executable, "-m", "volguard_cli.main", "calendar", "import", str(_published_2027(tmp_path))],
        env={**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "+ 2027-03-23 Holi" in result.stdout
    assert (state_dir / "calendar" / "nse_holidays.csv").is_file()
    bundled_2027 = [h for h in clock.bundled_nse_calendar().holidays if h.day.year == 2027]
    assert bundled_2027
    assert all(h.provisional for h in bundled_2027)
