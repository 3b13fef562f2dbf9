"""One trading day through the in-process backtest engine, simulated time against wall time.

    .venv/bin/python benchmarks/backtest.py [--day 2026-12-01] [--interval 1] [--until 15:30] [--seed 7]
                                            [--source sim|DIR]

The engine (volguard_backtest) runs analytics' VolEngine, the Strategist, risk's checks, ledger and book,
and execution's basket guards on the paper exchange over every market instant of the day; with
`--source sim` the simulator generates the market as it goes (it alone costs about 3.5 ms per second of
market), with a recording directory the chains are read back from disk. Prints simulated seconds over
wall seconds and where the time goes (wall ms per instant for each component).

Targets (issue 19): in process >= 100x real time with the simulator generating the market, >= 150x on a
recorded day. `--services` (the six processes over Redis and Postgres) is not built yet.
"""

from __future__ import annotations

import argparse
import time
from datetime import date, datetime
from datetime import time as day_time

from volguard_backtest.app import BacktestRequest, run

TARGET_SIM = 100.0
TARGET_REPLAY = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--day", default="2026-12-01", help="a trading day (default: a Tuesday, 7 expiries)")
    parser.add_argument("--interval", type=float, default=1.0, help="snapshot interval, seconds")
    parser.add_argument("--until", default=None, help="stop the day at HH:MM (a shorter sample)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", default="sim")
    args = parser.parse_args()
    day = date.fromisoformat(args.day)
    request = BacktestRequest(
        start=day,
        end=day,
        seed=args.seed,
        source=args.source,
        overrides={"sim_snapshot_interval_s": repr(args.interval)},
        until=None if args.until is None else day_time.fromisoformat(args.until),
    )
    started = time.perf_counter()
    result = run(request)
    wall = time.perf_counter() - started
    report = result.report
    days = result.days
    opened = days[0].open
    closed = days[-1].close
    simulated = (closed - opened).total_seconds()
    instants = report["run"]["market_instants"]
    ratio = simulated / wall
    target = TARGET_SIM if args.source == "sim" else TARGET_REPLAY
    print(
        f"day {day} {opened:%H:%M}-{closed:%H:%M} IST at {args.interval:g} s snapshots, source {args.source}"
    )
    print(f"  {instants} market instants, {report['run']['intents']} intents, {report['run']['fills']} fills")
    print(
        f"  {simulated:,.0f} s of market in {wall:,.1f} s wall: {ratio:,.1f}x real time (target {target:g}x)"
    )
    print("  where the time goes (wall ms per instant):")
    stages = report["run"]["stage_seconds"]
    for stage, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"    {stage:<10} {seconds * 1000 / max(instants, 1):8.2f} ms  ({seconds / wall:5.1%})")
    other = wall - sum(stages.values())
    print(f"    {'other':<10} {other * 1000 / max(instants, 1):8.2f} ms  ({other / wall:5.1%}) report, setup")
    print(f"  finished {datetime.now():%H:%M:%S}; net P&L {report['summary']['net_pnl']} Rs")


if __name__ == "__main__":
    main()
