"""Run one backtest and write its report: what `volguard backtest` calls.

Settings are the process's own (environment, `.env`) with `--set KEY=VALUE` overrides on top, validated
by the one Settings model, so a typo is refused with the model's own message. The market source is
`sim` (the simulator, seeded) or a directory holding a recorded session.
"""

from __future__ import annotations

import asyncio
import time as wall
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from volguard_backtest import report_html
from volguard_backtest.domain import report as report_data
from volguard_backtest.domain.days import BacktestInputError, TradingDay, trading_days
from volguard_backtest.engine import Backtest, Position, RunOutcome
from volguard_backtest.market import RecordedMarket, SimMarket
from volguard_common.settings import Settings, describe_settings_error


@dataclass(frozen=True, slots=True)
class BacktestRequest:
    start: date
    end: date
    seed: int | None = None  # None: the settings' sim_seed
    source: str = "sim"  # "sim" or a recorded session's directory
    scenario: str | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)
    until: time | None = None  # stop the last day at this IST time (a bounded run)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    report: dict[str, Any]
    outcome: RunOutcome
    days: tuple[TradingDay, ...]


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` pairs; KEY is a Settings field name (or its VOLGUARD_ environment name)."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lower().removeprefix("volguard_")
        if not sep or not key:
            raise BacktestInputError(
                f"--set {pair!r}: expected KEY=VALUE, e.g. --set sim_snapshot_interval_s=5"
            )
        if key not in Settings.model_fields:
            raise BacktestInputError(f"--set {pair!r}: {key!r} is not a setting")
        overrides[key] = value
    return overrides


def settings_for(overrides: Mapping[str, str]) -> Settings:
    try:
        # Strings, as the environment gives them: the model parses each as its field's type.
        values: dict[str, Any] = dict(overrides)
        return Settings(**values)
    except ValidationError as error:
        raise BacktestInputError(describe_settings_error(error)) from None


def prepare(request: BacktestRequest) -> tuple[Settings, list[TradingDay], SimMarket | RecordedMarket, int]:
    """Everything checked before a single instant runs: settings, days, the market source."""
    settings = settings_for(request.overrides)
    days = trading_days(request.start, request.end)
    if request.until is not None:
        last = days[-1]
        stop = datetime.combine(last.day, request.until, tzinfo=last.close.tzinfo)
        if not last.open < stop <= last.close:
            raise BacktestInputError(
                f"--until {request.until:%H:%M} is outside {last.day}'s session "
                f"({last.open:%H:%M}-{last.close:%H:%M} IST)"
            )
        days[-1] = replace(last, close=stop)
    seed = settings.sim_seed if request.seed is None else request.seed
    market: SimMarket | RecordedMarket
    if request.source == "sim":
        try:
            market = SimMarket(settings, days, seed, request.scenario)
        except ValueError as error:
            raise BacktestInputError(f"simulator: {error}") from None
    else:
        directory = Path(request.source)
        if not directory.is_dir():
            raise BacktestInputError(
                f"--source {request.source!r} is neither 'sim' nor a recording directory"
            )
        market = RecordedMarket(directory, days)
    return settings, days, market, seed


def run(
    request: BacktestRequest,
    *,
    progress: Callable[[Position], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> BacktestResult:
    settings, days, market, seed = prepare(request)
    started = wall.perf_counter()
    engine = Backtest(settings, days, market, progress=progress, should_stop=should_stop)
    outcome = asyncio.run(engine.run())
    info = report_data.RunInfo(
        start=request.start,
        end=request.end,
        seed=seed,
        source=request.source,
        overrides=dict(request.overrides),
        snapshot_interval_s=market.interval_s,
        completed=outcome.completed,
        stopped_at=outcome.stopped_at,
        days=tuple(d.describe() for d in days),
        wall_seconds=wall.perf_counter() - started,
        stage_seconds=outcome.stage_seconds,
    )
    return BacktestResult(report_data.build(outcome.records, info), outcome, tuple(days))


def write_report(report: Mapping[str, Any], path: Path) -> tuple[Path, Path]:
    """PATH.json and PATH.html (a given .json or .html suffix is replaced by each)."""
    stem = path.with_suffix("") if path.suffix in (".json", ".html") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, html_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".html")
    json_path.write_text(report_data.to_json(report), encoding="utf-8")
    html_path.write_text(report_html.render(report), encoding="utf-8")
    return json_path, html_path
