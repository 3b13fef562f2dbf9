"""Options still held at their expiry's close settle in cash at intrinsic, with STT on exercise."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from volguard_backtest.desks import RiskDesk
from volguard_common.charges import exercise_charges, fill_charges
from volguard_common.clock import IST
from volguard_common.events import Bucket, Fill, OptionType, Side, Structure
from volguard_common.settings import Settings
from volguard_risk.domain.portfolio import TradeOrigin

EXPIRY = date(2026, 3, 10)
OPEN = datetime(2026, 3, 10, 10, 0, tzinfo=IST)
CLOSE = datetime(2026, 3, 10, 15, 30, tzinfo=IST)


def _fill(n: int, key: str, strike: float, side: Side, price: str, expiry: date = EXPIRY) -> Fill:
    return Fill(
        ts_event=OPEN,
        source="execution/test",
        fill_id=f"f{n}",
        client_order_id=f"c{n}",
        broker_order_id=f"o{n}",
        basket_id="b1",
        leg_index=n,
        instrument_key=key,
        expiry=expiry,
        strike=strike,
        option_type=OptionType.PE,
        side=side,
        quantity=65,
        price=Decimal(price),
        fees=Decimal(0),
    )


def _charges(side: Side, price: str) -> Decimal:
    return fill_charges(
        side, Decimal(price), 65, EXPIRY, first_fill_of_order=True, brokerage_per_order=Decimal(20)
    ).total


def test_a_put_spread_held_through_expiry_settles_at_intrinsic_with_stt_on_the_exercised_long() -> None:
    desk = RiskDesk(Settings(brokerage_per_order=Decimal(20)), OPEN)
    book = desk.portfolio
    book.open_trade("t1", Bucket.WEEKLY, Structure.CUSTOM, OPEN, origin=TradeOrigin.VOLGUARD)
    book.expect_basket("b1", "t1")
    book.apply_fill(_fill(0, "NSE_FO|P24100", 24100.0, Side.BUY, "60.00"))  # long, ends 112.40 in the money
    book.apply_fill(_fill(1, "NSE_FO|P23900", 23900.0, Side.SELL, "20.00"))  # short, ends out of the money
    book.apply_fill(_fill(2, "NSE_FO|P23800", 23800.0, Side.BUY, "9.00", date(2026, 3, 17)))  # next week

    settled = desk.settle_expired(CLOSE, 23987.6)

    assert [(leg.contract.instrument_key, leg.quantity, intrinsic) for _, leg, intrinsic, _ in settled] == [
        ("NSE_FO|P24100", 65, Decimal("112.40")),
        ("NSE_FO|P23900", -65, Decimal("0.00")),
    ]
    stt = exercise_charges(Decimal("112.40"), 65, EXPIRY).total
    assert stt > 0
    assert [s for *_, s in settled] == [stt, Decimal(0)]
    trade = book.trade("t1")
    gross = (Decimal("112.40") - Decimal("60.00")) * 65 + (Decimal("20.00") - Decimal("0.00")) * 65
    charges = _charges(Side.BUY, "60.00") + _charges(Side.SELL, "20.00") + _charges(Side.BUY, "9.00") + stt
    assert trade.realised_gross == gross
    assert trade.realised_net == gross - charges
    # The next week's wing is still held: the trade stays open, carried to the next day.
    assert trade.is_open
    assert book.net_positions() == {"NSE_FO|P23800": 65}
    assert desk.settle_expired(CLOSE, 23987.6) == []  # nothing of that expiry is left to settle
