"""The report as one self-contained HTML file: plotly.js is embedded, nothing is fetched when it opens."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from volguard_backtest.domain.report import json_value

_MAX_EVENTS = 1000
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00}.good{color:#070}details{margin:.2em 0}
"""


def _text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return html.escape(str(json_value(value)) if not isinstance(value, (str, int)) else str(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    names = list(columns) if columns is not None else list(rows[0])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{_text(row.get(n))}</td>" for n in names) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pairs(mapping: Mapping[str, Any]) -> str:
    return _table([{"figure": k, "value": v} for k, v in mapping.items()])


def _figure(fig: go.Figure, div_id: str) -> str:
    spec = json.loads(fig.to_json())
    data = json.dumps(spec["data"], default=json_value)
    layout = json.dumps(spec["layout"], default=json_value)
    return (
        f'<div id="{div_id}" style="height:420px"></div>'
        f'<script>Plotly.newPlot("{div_id}",{data},{layout});</script>'
    )


def _equity_chart(report: Mapping[str, Any]) -> str:
    equity = report["equity"]
    times = [p["ts_event"] for p in equity]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=times, y=[float(p["account"]) for p in equity], name="equity (Rs)"), 1, 1)
    fig.add_trace(
        go.Scatter(x=times, y=[float(p["drawdown"]) for p in equity], name="drawdown (Rs)", fill="tozeroy"),
        2,
        1,
    )
    fig.update_layout(margin={"t": 20, "b": 30}, xaxis2={"type": "category", "nticks": 12})
    fig.update_xaxes(type="category", nticks=12)
    return _figure(fig, "equity")


def _daily_chart(report: Mapping[str, Any]) -> str:
    daily = report["daily_pnl"]
    fig = go.Figure(go.Bar(x=[d["day"] for d in daily], y=[float(d["pnl"]) for d in daily], name="day P&L"))
    fig.update_layout(margin={"t": 20, "b": 30}, xaxis={"type": "category"})
    return _figure(fig, "daily")


def render(report: Mapping[str, Any]) -> str:
    run, summary, rec = report["run"], report["summary"], report["reconciliation"]
    trades = report["trades"]
    trade_blocks = []
    for trade in trades:
        head = (
            f"{trade['bucket']} {trade['structure']} {trade['status']} opened {trade['opened_at']}"
            f" — net {_text(trade['net_pnl'])} Rs, charges {_text(trade['charges'])} Rs,"
            f" slippage {_text(trade['slippage'])} Rs; exit: {', '.join(trade['exit_reasons']) or '—'}"
        )
        trade_blocks.append(
            f"<details><summary>{html.escape(head)}</summary><p>{html.escape(trade['entry_reason'])}</p>"
            + _table(
                trade["legs"],
                [
                    "kind",
                    "ts_event",
                    "purpose",
                    "exit_reason",
                    "instrument_key",
                    "side",
                    "quantity",
                    "price",
                    "fees",
                    "mid_at_issue",
                    "slippage",
                    "intrinsic",
                    "stt",
                ],
            )
            + "</details>"
        )
    stats_rows = [{"bucket": name, **figures} for name, figures in report["buckets"].items()]
    structure_rows = [{"structure": name, **figures} for name, figures in report["structures"].items()]
    events = report["risk_events"]["events"]
    reconciled = rec["reconciled"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>VolGuard backtest {html.escape(run['from'])}..{html.escape(run['to'])}</title>",
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>",
        f"<h1>VolGuard backtest {html.escape(run['from'])} to {html.escape(run['to'])}"
        f" (seed {run['seed']}, {html.escape(run['source'])})</h1>",
        ""
        if run["completed"]
        else f"<p class='bad'>Stopped before the end, at {html.escape(str(run['stopped_at']))}.</p>",
        "<h2>Summary</h2>",
        _pairs(summary),
        "<h2>Equity and drawdown</h2>",
        _equity_chart(report),
        "<h2>Daily P&amp;L</h2>",
        _daily_chart(report),
        "<h2>Reconciliation: P&amp;L from fills and settlements vs the book</h2>",
        f"<p class='{'good' if reconciled else 'bad'}'>"
        f"{'reconciled to the paisa' if reconciled else 'NOT reconciled'}</p>",
        _pairs(rec),
        "<h2>Per bucket</h2>",
        _table(stats_rows),
        "<h2>Per structure</h2>",
        _table(structure_rows),
        f"<h2>Trades ({len(trades)})</h2>",
        "".join(trade_blocks) or "<p>none</p>",
        "<h2>Decisions</h2>",
        _table(report["decisions"]),
        "<h2>WAIT reasons</h2>",
        _table(report["wait_reasons"][:200]),
        "<h2>Regime timeline</h2>",
        _table(report["regimes"][:500]),
        "<h2>Risk events</h2>",
        _pairs(report["risk_events"]["by_kind"]),
        "<h3>Rejections by check</h3>",
        _pairs(report["risk_events"]["rejections_by_check"]),
        f"<h3>Events (first {_MAX_EVENTS})</h3>",
        _table(events[:_MAX_EVENTS]),
        "<h2>Charges</h2>",
        _pairs({k: v for k, v in report["charges"].items() if k != "by_bucket"}),
        _pairs(report["charges"]["by_bucket"]),
        "<h2>Run</h2>",
        _pairs({k: v for k, v in run.items() if k not in ("days", "overrides", "stage_seconds")}),
        _pairs(run["stage_seconds"]),
        _table([{"trading day": day} for day in run["days"]]),
        _pairs(run["overrides"]) if run["overrides"] else "",
        "</body></html>",
    ]
    return "\n".join(parts)
