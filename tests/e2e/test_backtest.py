"""The backtest from the CLI and in process: it completes, reports, reconciles and repeats itself.

Bounded forms here (the first half hour of trading on one simulated day, 5 s snapshots); the 5-day run
is the soak form (`make test-slow`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from volguard_backtest.app import BacktestRequest, prepare, run
from volguard_backtest.domain.records import RunRecords
from volguard_backtest.market import SimMarket
from volguard_common.charges import round_to_paisa
from volguard_common.events import ChainSnapshot
from volguard_market_data.recording import (
    INDEX_FILE,
    RecordedEntry,
    RecordingIndex,
    segment_name,
    write_segment,
)

VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]
DAY = "2026-03-02"  # an expiry day (Tuesday 3 March is Holi): entries from 09:30
BOUNDED = BacktestRequest(
    start=date(2026, 3, 2),
    end=date(2026, 3, 2),
    seed=11,
    overrides={"sim_snapshot_interval_s": "5"},
    until=time(9, 45),
)


def _env() -> dict[str, str]:
    # The run's settings are the defaults plus its --set overrides, whatever this shell exports.
    return {k: v for k, v in os.environ.items() if not k.startswith("VOLGUARD_")}


def _volguard(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VOLGUARD, *args], env=_env(), cwd=cwd, capture_output=True, text=True, check=False
    )


def _content(records: RunRecords) -> dict[str, Any]:
    """What determinism compares: event times, structures, legs, quantities, prices, fees, P&L; no ids."""
    return {
        "fills": [
            (
                f.ts_event,
                f.purpose,
                f.exit_reason,
                f.bucket,
                f.structure,
                f.instrument_key,
                f.side,
                f.quantity,
                f.price,
                f.fees,
                f.mid,
            )
            for f in records.fills
        ],
        "settlements": [
            (s.ts_event, s.instrument_key, s.quantity, s.intrinsic, s.stt) for s in records.settlements
        ],
        "trades": [
            (t.bucket, t.structure, t.opened_at, t.closed_at, t.entry_reason, t.exit_reasons)
            for t in records.trades.values()
        ],
        "decisions": [(d.ts_event, d.bucket, d.structure, d.rule, d.reasons) for d in records.decisions],
        "risk_events": [(e.ts_event, e.kind, e.detail) for e in records.risk_events if e.kind != "STATE"],
        "pnl": (records.book_realised_net, records.book_unrealised, sorted(records.book_trades.values())),
        "equity": [(p.ts_event, p.realised, p.unrealised) for p in records.equity],
    }


def test_a_bounded_backtest_completes_from_the_cli_and_writes_a_reconciled_report(tmp_path: Path) -> None:
    done = _volguard(
        [
            *("backtest", "--from", DAY, "--to", DAY, "--until", "09:45", "--seed", "11"),
            *("--set", "sim_snapshot_interval_s=5", "--report", str(tmp_path / "run"), "--quiet"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "reconciled to the paisa" in done.stdout
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["run"]["completed"]
    assert report["run"]["market_instants"] == 30 * 60 // 5 + 1
    assert report["run"]["fills"] > 0, "the bounded window should trade (entries open at 09:30)"
    assert report["reconciliation"]["reconciled"]
    assert Decimal(report["reconciliation"]["difference"]) == 0
    fills = [leg for trade in report["trades"] for leg in trade["legs"] if leg["kind"] == "FILL"]
    cash = sum(
        Decimal(leg["price"]) * leg["quantity"] * (1 if leg["side"] == "SELL" else -1) for leg in fills
    ) - sum(Decimal(leg["fees"]) for leg in fills)
    open_value = Decimal(report["reconciliation"]["open_positions_value"])
    assert round_to_paisa(cash + open_value) == Decimal(report["summary"]["net_pnl"])
    assert report["wait_reasons"], "every WAIT has its reason counted"
    page = (tmp_path / "run.html").read_text()
    assert "Plotly.newPlot" in page
    assert "<script src=" not in page  # self-contained: plotly.js is embedded


def test_bad_input_is_refused_by_the_cli_with_the_reason(tmp_path: Path) -> None:
    done = _volguard(["backtest", "--from", "2024-06-03", "--to", "2024-06-07"], tmp_path)
    assert done.returncode == 2
    assert "first day of the NSE calendar data" in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_same_seed_gives_the_same_trades_fills_and_pnl() -> None:
    first, second = run(BOUNDED), run(BOUNDED)
    assert first.outcome.records.fills, "the bounded window should trade"
    assert _content(first.outcome.records) == _content(second.outcome.records)
    assert first.report["summary"] == second.report["summary"]


def test_a_stop_request_ends_the_run_where_it_is_and_says_so() -> None:
    seen: list[int] = []
    result = run(BOUNDED, progress=lambda p: seen.append(p.instants), should_stop=lambda: len(seen) >= 12)
    assert not result.outcome.completed
    assert result.outcome.stopped_at is not None
    assert result.outcome.stopped_at.time() == time(9, 15, 55)
    assert result.report["run"]["stopped_at"] == result.outcome.stopped_at.isoformat()
    assert result.report["reconciliation"]["reconciled"]


@pytest.mark.soak
def test_five_simulated_days_complete_from_the_cli_and_reconcile(tmp_path: Path) -> None:
    # 4 to 10 March 2026: five trading days, positions carried over, the 10 March weekly settling.
    done = _volguard(
        [
            *("backtest", "--from", "2026-03-04", "--to", "2026-03-10", "--seed", "7"),
            *("--set", "sim_snapshot_interval_s=5", "--report", str(tmp_path / "week"), "--quiet"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "week.json").read_text())
    assert report["run"]["completed"]
    assert len(report["run"]["days"]) == 5
    assert report["reconciliation"]["reconciled"]
    assert len(report["daily_pnl"]) == 5


def _record(directory: Path, request: BacktestRequest) -> int:
    """A recorded session of the simulated market's chains (md.chain), as `volguard record` writes one."""
    _, _, market, _ = prepare(request)
    assert isinstance(market, SimMarket)
    entries = [
        RecordedEntry(
            stream=ChainSnapshot.STREAM,
            event_type="ChainSnapshot",
            ts_event=chain.ts_event,
            entry_id=f"{n + 1}-{i}",
            payload=chain.model_dump_json().encode(),
        )
        for n, instant in enumerate(market.instants())
        for i, chain in enumerate(instant.chains)
    ]
    directory.mkdir()
    segment = write_segment(directory, segment_name(1), entries)
    index = RecordingIndex(
        session_id="backtest-test",
        streams=(ChainSnapshot.STREAM,),
        feed="sim",
        started_at=entries[0].ts_event,
        ended_at=entries[-1].ts_event,
        complete=True,
        entries=len(entries),
        first_event=entries[0].ts_event,
        last_event=entries[-1].ts_event,
        segments=(segment,),
    )
    (directory / INDEX_FILE).write_text(json.dumps(index.model_dump(mode="json")))
    return len({entry.ts_event for entry in entries})


def test_a_recorded_session_replays_through_the_backtest_from_the_cli(tmp_path: Path) -> None:
    recording = tmp_path / "session"
    instants = _record(recording, replace(BOUNDED, until=time(9, 40)))
    done = _volguard(
        [
            *("backtest", "--from", DAY, "--to", DAY, "--until", "09:40", "--source", str(recording)),
            *("--report", str(tmp_path / "replay"), "--quiet"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "replay.json").read_text())
    assert report["run"]["completed"]
    assert report["run"]["source"] == str(recording)
    assert report["run"]["market_instants"] == instants == 25 * 60 // 5 + 1
    assert report["run"]["vol_snapshots"] == instants
    assert report["reconciliation"]["reconciled"]
