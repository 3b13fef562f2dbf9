"""The report's figures from hand-made records: P&L from fills and settlements, to the paisa."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from volguard_backtest.domain.records import FillRecord, RunRecords, SettlementRecord, TradeRecord
from volguard_backtest.domain.report import RunInfo, build, performance, reconciliation, wait_reason
from volguard_common import clock

T0 = datetime(2026, 3, 10, 9, 30, tzinfo=clock.IST)
EXPIRY = date(2026, 3, 10)


def _fill(
    trade: str, side: str, key: str, price: str, fees: str, minute: int, purpose: str = "ENTRY"
) -> FillRecord:
    return FillRecord(
        ts_event=T0.replace(minute=minute),
        trade_id=trade,
        basket_id=f"bk-{trade}-{purpose}",
        purpose=purpose,
        exit_reason=None if purpose == "ENTRY" else "PROFIT_TARGET",
        bucket="WEEKLY",
        structure="BULL_PUT_SPREAD",
        instrument_key=key,
        expiry=EXPIRY,
        strike=24000.0,
        option_type="PE",
        side=side,
        quantity=65,
        price=Decimal(price),
        fees=Decimal(fees),
        mid=Decimal(price) + (Decimal("0.05") if side == "SELL" else Decimal("-0.05")),
    )


def _records(book_net_a: Decimal) -> RunRecords:
    records = RunRecords(account=Decimal(2_000_000))
    for trade in ("a", "b"):
        records.trades[trade] = TradeRecord(
            trade, "WEEKLY", "BULL_PUT_SPREAD", T0, T0.replace(hour=15), "rich premium", (), 65
        )
    # Trade a: short put sold at 100.10, bought back at 40.05; long wing bought 20.00, sold 5.35.
    records.fills += [
        _fill("a", "SELL", "P24000", "100.10", "30.11", 30),
        _fill("a", "BUY", "P23800", "20.00", "21.07", 30),
        _fill("a", "BUY", "P24000", "40.05", "21.13", 45, "EXIT"),
        _fill("a", "SELL", "P23800", "5.35", "22.01", 45, "EXIT"),
    ]
    # Trade b: a long put held to expiry, settled 12.40 in the money with STT on exercise.
    records.fills.append(_fill("b", "BUY", "P24100", "30.00", "21.50", 31))
    records.settlements.append(
        SettlementRecord(
            ts_event=T0.replace(hour=15),
            trade_id="b",
            bucket="WEEKLY",
            structure="BULL_PUT_SPREAD",
            instrument_key="P24100",
            expiry=EXPIRY,
            strike=24100.0,
            option_type="PE",
            quantity=65,
            settlement_price=24087.6,
            intrinsic=Decimal("12.40"),
            stt=Decimal("1.01"),
        )
    )
    a_gross = (Decimal("100.10") - Decimal("40.05") + Decimal("5.35") - Decimal("20.00")) * 65
    a_fees = Decimal("30.11") + Decimal("21.07") + Decimal("21.13") + Decimal("22.01")
    b_gross = (Decimal("12.40") - Decimal("30.00")) * 65
    b_charges = Decimal("21.50") + Decimal("1.01")
    assert a_gross - a_fees == Decimal("2856.68")
    records.book_trades = {"a": (book_net_a, a_fees), "b": (b_gross - b_charges, b_charges)}
    records.book_realised_net = book_net_a + b_gross - b_charges
    records.book_unrealised = Decimal(0)
    records.open_market_value = Decimal(0)
    return records


def test_pnl_from_fills_and_settlements_matches_the_book_to_the_paisa() -> None:
    figures = reconciliation(_records(Decimal("2856.68")))
    assert figures["reconciled"]
    assert figures["difference"] == Decimal(0)
    assert figures["pnl_from_fills"] == Decimal("2856.68") + Decimal("-1144.00") - Decimal("22.51")


def test_a_book_one_paisa_off_does_not_reconcile() -> None:
    figures = reconciliation(_records(Decimal("2856.67")))
    assert not figures["reconciled"]
    assert figures["difference"] == Decimal("0.01")


def test_trade_rows_carry_legs_reasons_and_net_pnl() -> None:
    info = RunInfo(date(2026, 3, 10), date(2026, 3, 10), 7, "sim", {}, 5.0, True, T0, ("2026-03-10",), 1.0)
    report = build(_records(Decimal("2856.68")), info)
    a, b = report["trades"]
    assert a["net_pnl"] == Decimal("2856.68")
    assert len(a["legs"]) == 4
    assert a["slippage"] == Decimal("0.05") * 65 * 4
    assert b["exit_reasons"] == ["EXPIRY_SETTLEMENT"]
    assert b["net_pnl"] == Decimal("-1166.51")
    assert report["summary"]["net_pnl"] == Decimal("2856.68") - Decimal("1166.51")
    assert report["buckets"]["WEEKLY"]["trades"] == 2
    assert report["charges"]["stt_on_exercise"] == Decimal("1.01")


def test_performance_of_closed_trades() -> None:
    stats = performance([Decimal(300), Decimal(-100), Decimal(-200), Decimal(500)])
    assert stats["win_rate"] == 0.5
    assert stats["average_win"] == Decimal(400)
    assert stats["average_loss"] == Decimal(-150)
    assert stats["profit_factor"] == Decimal(800) / Decimal(300)
    assert stats["max_drawdown"] == Decimal(300)


def test_wait_reasons_count_once_whatever_their_figures() -> None:
    assert wait_reason("max loss Rs 15,993 a lot = 0.63 lots") == wait_reason(
        "max loss Rs 16,035 a lot = 0.62 lots"
    )
