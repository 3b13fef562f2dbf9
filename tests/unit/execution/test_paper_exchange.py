"""The paper exchange: resting limits, partial fills up to the displayed quantity, latency in event
time, exchange-style rejections, deterministic ids and the test hooks."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from volguard_common.charges import fill_charges
from volguard_common.clock import IST, nse_calendar
from volguard_common.events._base import Side
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_execution.domain.paper_exchange import (
    Accepted,
    Cancelled,
    CancelRefused,
    InstrumentRules,
    Modified,
    ModifyRefused,
    OrderType,
    PaperExchange,
    PaperOrder,
    PaperOrderState,
    Quote,
    Rejected,
    RejectReason,
    Report,
    Traded,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)  # a Monday, in session
MS = timedelta(milliseconds=1)
KEY = "NSE_FO|50001"
RULES = InstrumentRules(
    instrument_key=KEY,
    lot_size=65,
    tick_size=Decimal("0.05"),
    freeze_quantity=1800,
    lower_price_band=Decimal("0.05"),
    upper_price_band=Decimal(500),
)


class FakeMargin:
    """Margin as the broker's RMS would see it: a fixed number of units the account can still carry."""

    def __init__(self, units: int = 10_000) -> None:
        self.units = units

    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        if order.quantity > self.units:
            return f"margin for {self.units} units, order needs {order.quantity}"
        return None


def exchange(margin: FakeMargin | None = None, seed: int = 7) -> PaperExchange:
    return PaperExchange(
        instruments={KEY: RULES},
        calendar=nse_calendar(),
        margin=margin or FakeMargin(),
        latency=50 * MS,
        seed=seed,
    )


def quote(bid: str, ask: str, bid_qty: int, ask_qty: int, ts: datetime) -> Quote:
    return Quote(KEY, Decimal(bid), Decimal(ask), bid_qty, ask_qty, ts)


def limit(tag: str, side: Side, quantity: int, price: str) -> PaperOrder:
    return PaperOrder(tag, KEY, side, quantity, OrderType.LIMIT, Decimal(price))


def trades(reports: list[Report]) -> list[Traded]:
    return [r for r in reports if isinstance(r, Traded)]


def test_a_limit_rests_until_the_offer_reaches_it_and_then_trades_at_its_own_price() -> None:
    ex = exchange()
    ex.on_quote(quote("100", "101", 650, 650, T0))
    order_id, _ = ex.submit(limit("a", Side.BUY, 130, "100.50"), T0)
    reports = ex.advance(T0 + 50 * MS)
    assert reports == [Accepted(order_id, "a", T0 + 50 * MS)]
    assert trades(ex.on_quote(quote("100", "100.75", 650, 650, T0 + 100 * MS))) == []
    filled = trades(ex.on_quote(quote("100", "100.40", 650, 650, T0 + 200 * MS)))
    assert [(t.quantity, t.price, t.first_fill_of_order) for t in filled] == [(130, Decimal("100.50"), True)]
    assert ex.entry(order_id).state is PaperOrderState.FILLED


def test_an_incoming_marketable_order_takes_the_displayed_price_up_to_the_displayed_quantity() -> None:
    ex = exchange()
    ex.on_quote(quote("100", "101", 650, 130, T0))
    first, _ = ex.submit(limit("a", Side.BUY, 195, "102"), T0)
    second, _ = ex.submit(limit("b", Side.BUY, 65, "102"), T0 + MS)
    reports = ex.advance(T0 + 60 * MS)
    fills = trades(reports)
    # 130 displayed: "a" takes all of it at the offer; "b" finds nothing left at this quote.
    assert [(t.client_order_id, t.quantity, t.price) for t in fills] == [("a", 130, Decimal(101))]
    assert ex.entry(first).state is PaperOrderState.OPEN
    assert ex.entry(first).remaining == 65
    # A new quote refreshes the displayed quantity: time priority, and resting orders trade at their limit.
    fills = trades(ex.on_quote(quote("100", "101", 650, 100, T0 + 100 * MS)))
    assert [(t.client_order_id, t.quantity, t.price, t.first_fill_of_order) for t in fills] == [
        ("a", 65, Decimal(102), False),
        ("b", 35, Decimal(102), True),
    ]
    assert ex.entry(second).filled_qty == 35


def test_latency_is_event_time_and_a_quote_before_arrival_does_not_fill() -> None:
    ex = exchange()
    ex.latency = 500 * MS
    ex.on_quote(quote("100", "101", 650, 650, T0))
    order_id, reports = ex.submit(limit("a", Side.SELL, 65, "100"), T0)
    assert reports == []
    assert ex.on_quote(quote("100.50", "101", 650, 650, T0 + 100 * MS)) == []
    assert ex.entry(order_id).state is PaperOrderState.IN_TRANSIT
    reports = ex.advance(T0 + 500 * MS)
    assert [type(r) for r in reports] == [Accepted, Traded]
    assert trades(reports)[0].price == Decimal("100.50")


@pytest.mark.parametrize(
    ("order", "at", "reason"),
    [
        (limit("x", Side.BUY, 65, "10"), datetime(2026, 12, 7, 8, 0, tzinfo=IST), RejectReason.MARKET_CLOSED),
        (
            limit("x", Side.BUY, 65, "10"),
            datetime(2026, 12, 5, 10, 0, tzinfo=IST),
            RejectReason.MARKET_CLOSED,
        ),
        (
            PaperOrder("x", "NSE_FO|0", Side.BUY, 65, OrderType.LIMIT, Decimal(10)),
            T0,
            RejectReason.UNKNOWN_INSTRUMENT,
        ),
        (PaperOrder("x", KEY, Side.BUY, 65, OrderType.MARKET, None), T0, RejectReason.MARKET_ORDER_ON_OPTION),
        (limit("x", Side.BUY, 100, "10"), T0, RejectReason.NOT_WHOLE_LOTS),
        (limit("x", Side.BUY, 65 * 28, "10"), T0, RejectReason.ABOVE_FREEZE_QUANTITY),
        (limit("x", Side.BUY, 65, "10.03"), T0, RejectReason.BAD_TICK),
        (limit("x", Side.BUY, 65, "600"), T0, RejectReason.OUTSIDE_PRICE_BAND),
        (limit("x", Side.BUY, 65 * 27, "10"), T0, RejectReason.INSUFFICIENT_MARGIN),
    ],
)
def test_exchange_style_rejections(order: PaperOrder, at: datetime, reason: RejectReason) -> None:
    ex = exchange(FakeMargin(units=65 * 20))
    order_id, _ = ex.submit(order, at)
    reports = ex.advance(at + 50 * MS)
    assert len(reports) == 1
    rejected = reports[0]
    assert isinstance(rejected, Rejected)
    assert (rejected.exchange_order_id, rejected.reason) == (order_id, reason)
    assert ex.entry(order_id).state is PaperOrderState.REJECTED


def test_27_lots_is_the_largest_accepted_nifty_order() -> None:
    ex = exchange()
    ex.submit(limit("x", Side.BUY, 65 * 27, "10"), T0)
    assert [type(r) for r in ex.advance(T0 + 50 * MS)] == [Accepted]


def test_ids_look_like_an_exchange_and_repeat_with_the_seed() -> None:
    def run(seed: int) -> list[str]:
        ex = exchange(seed=seed)
        ex.on_quote(quote("100", "101", 650, 650, T0))
        ids = [ex.submit(limit(f"t{i}", Side.BUY, 65, "101"), T0 + i * MS)[0] for i in range(3)]
        ids += [t.trade_id for t in trades(ex.advance(T0 + 100 * MS))]
        return ids

    ids = run(7)
    assert ids == run(7)
    assert ids != run(8)
    assert [len(i) for i in ids] == [16, 16, 16, 9, 9, 9]
    assert all(i.isdigit() for i in ids)
    assert len(set(ids)) == 6


def test_cancel_takes_the_rest_and_refuses_a_filled_order() -> None:
    ex = exchange()
    ex.on_quote(quote("100", "101", 650, 65, T0))
    order_id, _ = ex.submit(limit("a", Side.BUY, 130, "101"), T0)
    ex.advance(T0 + 50 * MS)
    ex.cancel(order_id, T0 + 60 * MS)
    assert ex.advance(T0 + 110 * MS) == [Cancelled(order_id, "a", 65, Decimal(101), T0 + 110 * MS)]
    ex.cancel(order_id, T0 + 120 * MS)
    refused = ex.advance(T0 + 170 * MS)
    assert [type(r) for r in refused] == [CancelRefused]


def test_a_cancel_that_overtakes_its_order_waits_for_it() -> None:
    ex = exchange()
    ex.faults.delay["a"] = timedelta(seconds=1)
    order_id, _ = ex.submit(limit("a", Side.BUY, 65, "90"), T0)
    ex.cancel(order_id, T0 + MS)
    reports = ex.advance(T0 + timedelta(seconds=2))
    assert [type(r) for r in reports] == [Accepted, Cancelled]
    assert reports[0].ts_event == T0 + timedelta(seconds=1, milliseconds=50)


def test_hooks_force_reject_partial_fill_and_silence() -> None:
    ex = exchange()
    ex.faults.reject["r"] = "RMS: forced for the test"
    ex.faults.fill_cap["p"] = 65
    ex.faults.silent.add("s")
    ex.on_quote(quote("100", "101", 650, 650, T0))
    rejected, _ = ex.submit(limit("r", Side.BUY, 65, "101"), T0)
    partial, _ = ex.submit(limit("p", Side.BUY, 195, "101"), T0)
    silent, _ = ex.submit(limit("s", Side.BUY, 65, "101"), T0)
    reports = ex.advance(T0 + 50 * MS)
    assert {(type(r).__name__, r.client_order_id) for r in reports} == {
        ("Rejected", "r"),
        ("Accepted", "p"),
        ("Traded", "p"),
    }
    ex.on_quote(quote("100", "101", 650, 650, T0 + 100 * MS))
    assert ex.entry(partial).filled_qty == 65
    assert ex.entry(partial).state is PaperOrderState.OPEN
    # Accepted and filled at the exchange, but only the book says so.
    assert ex.entry(silent).state is PaperOrderState.FILLED
    assert [t.client_order_id for t in ex.trades()].count("s") == 1
    assert ex.entry(rejected).message == "RMS: forced for the test"


def test_time_never_goes_backwards() -> None:
    ex = exchange()
    ex.advance(T0)
    with pytest.raises(ValueError, match="went backwards"):
        ex.advance(T0 - MS)


def test_a_chain_snapshot_feeds_every_quoted_contract() -> None:
    snapshot = sample_chain_snapshot(5)
    arrays = snapshot.to_numpy()
    call_key = arrays.call_instrument_key[2]
    rules = InstrumentRules(call_key, 65, Decimal("0.05"), 1800, Decimal("0.05"), Decimal(5000))
    ex = PaperExchange(instruments={call_key: rules}, calendar=nse_calendar(), margin=FakeMargin())
    ex.on_chain(snapshot)
    ask = Decimal(repr(float(arrays.call_ask[2])))
    assert ex.quote(call_key) is not None
    assert ex.quote(call_key).ask == ask  # type: ignore[union-attr]
    ex.submit(PaperOrder("c", call_key, Side.BUY, 65, OrderType.LIMIT, ask), DEFAULT_TS_EVENT)
    fills = trades(ex.advance(DEFAULT_TS_EVENT + timedelta(seconds=1)))
    assert [(t.quantity, t.price) for t in fills] == [(65, ask)]


def test_modify_reprices_loses_time_priority_and_trades_if_it_crosses() -> None:
    ex = exchange()
    ex.on_quote(quote("100", "101", 650, 650, T0))
    first, _ = ex.submit(limit("a", Side.BUY, 65, "100"), T0)
    second, _ = ex.submit(limit("b", Side.BUY, 65, "100"), T0 + MS)
    ex.advance(T0 + 60 * MS)
    ex.modify(first, Decimal("100.05"), T0 + 70 * MS)
    assert ex.advance(T0 + 120 * MS) == [Modified(first, "a", Decimal("100.05"), T0 + 120 * MS)]
    ex.modify(second, Decimal("100.05"), T0 + 130 * MS)
    ex.advance(T0 + 180 * MS)
    # Both at 100.05 now, "a" re-priced first: the offer drops to 100 with room for one order only.
    fills = trades(ex.on_quote(quote("99.95", "100", 650, 65, T0 + 200 * MS)))
    assert [(t.client_order_id, t.price) for t in fills] == [("a", Decimal("100.05"))]
    # A modification across the offer trades at once, at the offer.
    ex.modify(second, Decimal("102"), T0 + 300 * MS)
    ex.on_quote(quote("100", "101", 650, 650, T0 + 310 * MS))
    reports = ex.advance(T0 + 350 * MS)
    assert [type(r) for r in reports] == [Modified, Traded]
    assert trades(reports)[0].price == Decimal(101)


def test_a_bad_modification_is_refused_and_the_order_works_on() -> None:
    ex = exchange()
    order_id, _ = ex.submit(limit("a", Side.BUY, 65, "90"), T0)
    for i, price in enumerate(("90.03", "900")):
        ex.modify(order_id, Decimal(price), T0 + (100 * i + 1) * MS)
        reports = ex.advance(T0 + 100 * (i + 1) * MS)
        assert [type(r) for r in reports if not isinstance(r, Accepted)] == [ModifyRefused]
    assert ex.entry(order_id).order.limit_price == Decimal(90)
    assert ex.entry(order_id).state is PaperOrderState.OPEN


def test_day_orders_die_at_the_close() -> None:
    ex = exchange()
    ex.on_quote(quote("100", "101", 650, 65, T0))
    resting, _ = ex.submit(limit("a", Side.BUY, 65, "99"), T0)
    partial, _ = ex.submit(limit("b", Side.BUY, 130, "101"), T0)
    ex.advance(T0 + 60 * MS)
    close = nse_calendar().session_bounds(T0)[1]
    reports = ex.expire_day_orders(close)
    assert sorted((r.exchange_order_id, r.filled_qty) for r in reports if isinstance(r, Cancelled)) == sorted(
        [(resting, 0), (partial, 65)]
    )
    assert len(reports) == 2


def test_trades_carry_what_the_dated_charges_schedule_needs() -> None:
    """Charges stay outside the exchange: each trade says whether it is its order's first fill, so the
    shared schedule charges brokerage once per executed order."""
    ex = exchange()
    ex.on_quote(quote("100", "101", 65, 650, T0))
    ex.submit(limit("a", Side.SELL, 130, "100"), T0)
    ex.advance(T0 + 50 * MS)
    ex.on_quote(quote("100", "101", 650, 650, T0 + 100 * MS))
    fills = ex.trades()
    assert [t.first_fill_of_order for t in fills] == [True, False]
    charges = [
        fill_charges(
            t.side,
            t.price,
            t.quantity,
            t.ts_event.date(),
            first_fill_of_order=t.first_fill_of_order,
            brokerage_per_order=Decimal(20),
        )
        for t in fills
    ]
    assert [c.brokerage for c in charges] == [Decimal(20), Decimal(0)]
    assert all(c.stt > 0 for c in charges)
