"""The backtest report as data (the JSON file; the HTML renders the same dict).

Money stays Decimal until the very end (`to_json` writes it as strings, exact to the paisa). The
reconciliation is the report's own proof: the P&L it shows is rebuilt from the fills and settlements
alone and compared with the book risk kept from the same fills; a difference of one paisa is a defect.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from volguard_backtest.domain.records import FillRecord, RunRecords, SettlementRecord
from volguard_common.charges import round_to_paisa

ZERO = Decimal(0)
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class RunInfo:
    start: date
    end: date
    seed: int
    source: str
    overrides: Mapping[str, str]
    snapshot_interval_s: float | None
    completed: bool
    stopped_at: datetime | None
    days: tuple[str, ...]  # each trading day with its dated rules
    wall_seconds: float
    stage_seconds: Mapping[str, float] = field(default_factory=dict)


def trade_rows(records: RunRecords) -> list[dict[str, Any]]:
    """Every trade with its legs (fills and settlements), reasons and P&L net of charges."""
    fills: dict[str, list[FillRecord]] = defaultdict(list)
    for fill in records.fills:
        fills[fill.trade_id].append(fill)
    settlements: dict[str, list[SettlementRecord]] = defaultdict(list)
    for settlement in records.settlements:
        settlements[settlement.trade_id].append(settlement)
    rows = []
    for trade_id, trade in records.trades.items():
        legs = fills.get(trade_id, [])
        settled = settlements.get(trade_id, [])
        cash = sum((f.cash_flow for f in legs), ZERO) + sum((s.cash_flow for s in settled), ZERO)
        fees = sum((f.fees for f in legs), ZERO)
        stt = sum((s.stt for s in settled), ZERO)
        slippage = [f.slippage for f in legs]
        closed = trade.closed_at is not None
        book_net, book_charges = records.book_trades.get(trade_id, (ZERO, ZERO))
        rows.append(
            {
                "trade_id": trade_id,
                "bucket": trade.bucket,
                "structure": trade.structure,
                "opened_at": trade.opened_at.isoformat(),
                "closed_at": None if trade.closed_at is None else trade.closed_at.isoformat(),
                "status": "CLOSED" if closed else ("OPEN" if legs else "NOT_FILLED"),
                "entry_reason": trade.entry_reason,
                "exit_reasons": list(trade.exit_reasons)
                + (
                    ["EXPIRY_SETTLEMENT"] if settled and "EXPIRY_SETTLEMENT" not in trade.exit_reasons else []
                ),
                "lot_size": trade.lot_size,
                "legs": [_fill_row(f) for f in legs] + [_settlement_row(s) for s in settled],
                # Premium in and out (plus settlement), before charges; for an open trade, so far.
                "cash_flow": cash,
                "charges": fees + stt,
                "net_pnl": cash - fees - stt if closed else None,
                "book_realised_net": book_net,
                "book_charges": book_charges,
                "slippage": None
                if any(s is None for s in slippage)
                else sum((s for s in slippage if s), ZERO),
            }
        )
    return rows


def _fill_row(fill: FillRecord) -> dict[str, Any]:
    return {
        "kind": "FILL",
        "ts_event": fill.ts_event.isoformat(),
        "purpose": fill.purpose,
        "exit_reason": fill.exit_reason,
        "instrument_key": fill.instrument_key,
        "expiry": fill.expiry.isoformat(),
        "strike": fill.strike,
        "option_type": fill.option_type,
        "side": fill.side,
        "quantity": fill.quantity,
        "price": fill.price,
        "fees": fill.fees,
        "mid_at_issue": fill.mid,
        "slippage": fill.slippage,
    }


def _settlement_row(settlement: SettlementRecord) -> dict[str, Any]:
    return {
        "kind": "SETTLEMENT",
        "ts_event": settlement.ts_event.isoformat(),
        "instrument_key": settlement.instrument_key,
        "expiry": settlement.expiry.isoformat(),
        "strike": settlement.strike,
        "option_type": settlement.option_type,
        "quantity": settlement.quantity,
        "settlement_price": settlement.settlement_price,
        "intrinsic": settlement.intrinsic,
        "stt": settlement.stt,
    }


def reconciliation(records: RunRecords) -> dict[str, Any]:
    """P&L from fills and settlements alone against the book's P&L, to the paisa."""
    fills_cash = sum((f.cash_flow for f in records.fills), ZERO)
    fees = sum((f.fees for f in records.fills), ZERO)
    settlement_cash = sum((s.cash_flow for s in records.settlements), ZERO)
    stt = sum((s.stt for s in records.settlements), ZERO)
    from_fills = None
    if records.open_market_value is not None:
        from_fills = fills_cash - fees + settlement_cash - stt + records.open_market_value
    book = None if records.book_unrealised is None else records.book_realised_net + records.book_unrealised
    book_charges = sum((charges for _, charges in records.book_trades.values()), ZERO)
    return {
        "fills_cash_flow": fills_cash,
        "fees": fees,
        "settlement_cash_flow": settlement_cash,
        "stt_on_exercise": stt,
        "open_positions_value": records.open_market_value,
        "pnl_from_fills": from_fills,
        "book_realised_net": records.book_realised_net,
        "book_unrealised": records.book_unrealised,
        "book_pnl": book,
        "book_charges": book_charges,
        "difference": None if from_fills is None or book is None else from_fills - book,
        "charges_difference": book_charges - fees - stt,
        "reconciled": from_fills is not None
        and book is not None
        and from_fills == book
        and book_charges == fees + stt,
    }


def performance(pnls: Iterable[Decimal]) -> dict[str, Any]:
    """Trades, win rate, average win and loss, profit factor, max drawdown of the closed trades."""
    values = list(pnls)
    wins = [v for v in values if v > 0]
    losses = [v for v in values if v <= 0]
    gross_win = sum(wins, ZERO)
    gross_loss = -sum(losses, ZERO)
    peak = ZERO
    running = ZERO
    drawdown = ZERO
    for value in values:
        running += value
        peak = max(peak, running)
        drawdown = max(drawdown, peak - running)
    return {
        "trades": len(values),
        "net_pnl": sum(values, ZERO),
        "win_rate": None if not values else len(wins) / len(values),
        "average_win": None if not wins else gross_win / len(wins),
        "average_loss": None if not losses else -gross_loss / len(losses),
        "profit_factor": None if gross_loss == 0 else gross_win / gross_loss,
        "max_drawdown": drawdown,
    }


def _ratios(daily: list[Decimal]) -> dict[str, float | None]:
    if len(daily) < 2:
        return {"sharpe": None, "sortino": None}
    values = [float(v) for v in daily]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    downside = [min(v, 0.0) for v in values]
    down = math.sqrt(sum(v * v for v in downside) / len(values))
    annual = math.sqrt(252)
    return {
        "sharpe": None if std == 0 else mean / std * annual,
        "sortino": None if down == 0 else mean / down * annual,
    }


def wait_reason(text: str) -> str:
    """A WAIT reason with its figures taken out, so that the same reason on every snapshot counts once."""
    return _NUMBER.sub("#", text)


def build(records: RunRecords, run: RunInfo) -> dict[str, Any]:
    trades = trade_rows(records)
    closed = [t for t in trades if t["status"] == "CLOSED"]
    buckets = {
        bucket: performance(t["net_pnl"] for t in closed if t["bucket"] == bucket)
        for bucket in sorted({t["bucket"] for t in trades} | {"WEEKLY", "MONTHLY", "INTRADAY"})
    }
    structures = {
        structure: performance(t["net_pnl"] for t in closed if t["structure"] == structure)
        for structure in sorted({t["structure"] for t in trades})
    }
    equity: list[dict[str, Any]] = []
    peak: Decimal | None = None
    drawdowns: list[Decimal] = []
    for p in records.equity:
        # Marks are mids (risk's marks carry the float digits of the chain); shown to the paisa.
        account = round_to_paisa(records.account + p.equity_pnl)
        peak = account if peak is None else max(peak, account)
        drawdowns.append(account - peak)
        equity.append(
            {
                "ts_event": p.ts_event.isoformat(),
                "pnl": round_to_paisa(p.equity_pnl),
                "account": account,
                "drawdown": account - peak,
            }
        )
    daily: dict[str, Decimal] = {}
    for p in records.equity:
        daily[p.ts_event.date().isoformat()] = round_to_paisa(p.equity_pnl)
    day_pnl: list[Decimal] = []
    previous = ZERO
    for day in sorted(daily):
        day_pnl.append(daily[day] - previous)
        previous = daily[day]
    waits: Counter[tuple[str, str]] = Counter()
    decided: Counter[tuple[str, str]] = Counter()
    for d in records.decisions:
        decided[(d.bucket, d.structure)] += 1
        if d.structure == "WAIT":
            waits[(d.bucket, wait_reason(d.reasons[-1] if d.reasons else d.rule))] += 1
    regimes: list[dict[str, Any]] = []
    for d in records.decisions:
        if not regimes or regimes[-1]["regime"] != d.regime:
            regimes.append({"from": d.ts_event.isoformat(), "regime": d.regime})
    rejections: Counter[str] = Counter()
    for event in records.risk_events:
        if event.kind == "REJECTED":
            rejections.update(event.checks)
    fees_by_bucket: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for fill in records.fills:
        fees_by_bucket[fill.bucket] += fill.fees
    stt = sum((s.stt for s in records.settlements), ZERO)
    net = None if records.book_unrealised is None else records.book_realised_net + records.book_unrealised
    simulated = sum(1 for _ in records.equity)
    return {
        "run": {
            "from": run.start.isoformat(),
            "to": run.end.isoformat(),
            "seed": run.seed,
            "source": run.source,
            "overrides": dict(run.overrides),
            "snapshot_interval_s": run.snapshot_interval_s,
            "completed": run.completed,
            "stopped_at": None if run.stopped_at is None else run.stopped_at.isoformat(),
            "days": list(run.days),
            "wall_seconds": round(run.wall_seconds, 3),
            "stage_seconds": {stage: round(seconds, 3) for stage, seconds in run.stage_seconds.items()},
            "market_instants": records.snapshots,
            "vol_snapshots": records.vol_snapshots,
            "decisions": len(records.decisions),
            "intents": records.intents,
            "orders": records.orders,
            "fills": len(records.fills),
            "settlements": len(records.settlements),
            "equity_points": simulated,
        },
        "summary": {
            "account": records.account,
            "net_pnl": None if net is None else round_to_paisa(net),
            "realised_net": records.book_realised_net,
            "unrealised": None
            if records.book_unrealised is None
            else round_to_paisa(records.book_unrealised),
            "return_on_account": None if net is None else float(net / records.account),
            "trades": len(trades),
            "closed_trades": len(closed),
            **_ratios(day_pnl),
            "max_drawdown": min(drawdowns, default=ZERO),
        },
        "reconciliation": reconciliation(records),
        "charges": {
            "fees": sum(fees_by_bucket.values(), ZERO),
            "stt_on_exercise": stt,
            "by_bucket": dict(sorted(fees_by_bucket.items())),
        },
        "daily_pnl": [{"day": day, "pnl": pnl} for day, pnl in zip(sorted(daily), day_pnl, strict=True)],
        "equity": equity,
        "buckets": buckets,
        "structures": structures,
        "trades": trades,
        "decisions": [
            {"bucket": bucket, "structure": structure, "count": count}
            for (bucket, structure), count in sorted(decided.items())
        ],
        "wait_reasons": [
            {"bucket": bucket, "reason": reason, "count": count}
            for (bucket, reason), count in sorted(waits.items(), key=lambda item: (-item[1], item[0]))
        ],
        "regimes": regimes,
        "risk_events": {
            "by_kind": dict(sorted(Counter(e.kind for e in records.risk_events).items())),
            "rejections_by_check": dict(sorted(rejections.items())),
            "events": [
                {"ts_event": e.ts_event.isoformat(), "kind": e.kind, "detail": e.detail}
                for e in records.risk_events
            ],
        },
    }


def json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def to_json(report: Mapping[str, Any]) -> str:
    """Decimals as strings (exact), everything else as JSON has it."""
    return json.dumps(report, default=json_value, indent=1, sort_keys=False)
