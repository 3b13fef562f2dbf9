"""The Upstox order adapter against a real fake Upstox on 127.0.0.1 (HTTP + the portfolio-stream WebSocket):
place, modify, cancel, rejects, a timeout after accept, partial fills, duplicate and out-of-order updates,
a dropped stream, slicing, and the order-rate limits on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from tests.fakes.upstox_orders import FakeUpstoxOrders, running_fake_upstox_orders
from tests.fakes.upstox_server import TOKEN
from tests.support.waiting import eventually
from volguard_common.events._base import Side
from volguard_common.events.orders import OrderStatus
from volguard_common.settings import Settings
from volguard_common.upstox_http import UpstoxHttp
from volguard_execution.adapters.upstox_broker import UpstoxBroker
from volguard_execution.domain.orders import Order, OrderKey, ReportOutcome
from volguard_execution.domain.rate_limit import OrderRateLimiter, order_rate_windows_from
from volguard_execution.ports import (
    BrokerUnavailable,
    BrokerUpdate,
    OrderRequest,
    OrderUpdateReceived,
    SubmitOutcomeUnknown,
    SubmitRejected,
    TradeReceived,
    UpdatesInterrupted,
)
from volguard_execution.service import live_broker

CE = "NSE_FO|41001"
PE = "NSE_FO|41002"


class FakeMonotonic:
    """The limiter's clock; the broker's `sleep` advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeUpstoxOrders]:
    with running_fake_upstox_orders() as server:
        yield server


@contextlib.asynccontextmanager
async def broker_for(
    fake: FakeUpstoxOrders, *, timeout_s: float = 10.0, **kwargs: Any
) -> AsyncIterator[tuple[UpstoxBroker, FakeMonotonic]]:
    clock = FakeMonotonic()
    http = UpstoxHttp(
        fake.base_url,
        TOKEN,
        order_base_url=fake.base_url,
        timeout_s=timeout_s,
        max_attempts=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )
    broker = UpstoxBroker(
        http,
        OrderRateLimiter(order_rate_windows_from(Settings()), clock),
        sleep=clock.sleep,
        reconnect_initial_s=0.01,
        **kwargs,
    )
    try:
        yield broker, clock
    finally:
        await broker.close()


class Collected:
    def __init__(self, broker: UpstoxBroker) -> None:
        self.items: list[BrokerUpdate] = []
        self._task = asyncio.create_task(self._run(broker))

    async def _run(self, broker: UpstoxBroker) -> None:
        async for update in broker.updates():
            self.items.append(update)

    def orders(self, order_id: str) -> list[OrderUpdateReceived]:
        return [
            u
            for u in self.items
            if isinstance(u, OrderUpdateReceived) and u.order.broker_order_id == order_id
        ]

    def trades(self) -> list[TradeReceived]:
        return [u for u in self.items if isinstance(u, TradeReceived)]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def connected(broker: UpstoxBroker, fake: FakeUpstoxOrders, connections: int = 1) -> None:
    async def ready() -> bool:
        return fake.stream_connections >= connections and fake.open_streams >= 1

    await eventually(ready, what=f"portfolio stream connection {connections}")


def request(
    leg: int = 0, *, quantity: int = 130, price: str = "101.5", side: Side = Side.SELL
) -> OrderRequest:
    return OrderRequest(OrderKey("basket-1", leg, 0), CE, side, quantity, Decimal(price))


async def test_place_sends_the_documented_v3_body_and_returns_the_order_id(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        order = request()
        ack = await broker.submit(order)
    assert fake.place_bodies == [
        {
            "quantity": 130,
            "product": "D",
            "validity": "DAY",
            "price": 101.5,
            "tag": order.client_order_id,
            "slice": False,
            "instrument_token": CE,
            "order_type": "LIMIT",
            "transaction_type": "SELL",
            "disclosed_quantity": 0,
            "trigger_price": 0,
            "is_amo": False,
        }
    ]
    [placed] = fake.by_tag(order.client_order_id)
    assert ack.broker_order_id == placed.order_id
    assert ack.broker_latency_ms == 12
    assert ack.slice_order_ids == ()
    place_headers = fake.headers_seen[fake.requests.index(("POST", "/v3/order/place"))]
    assert place_headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-algo-name" not in place_headers
    assert TOKEN not in repr(broker.http)


async def test_the_algo_name_header_goes_only_with_order_calls_when_configured(
    fake: FakeUpstoxOrders,
) -> None:
    async with broker_for(fake, algo_name="VG-ALGO-1") as (broker, _):
        ack = await broker.submit(request())
        await broker.cancel(ack.broker_order_id)
        await broker.order_book()
    by_path = dict(zip(fake.requests, fake.headers_seen, strict=True))
    assert by_path[("POST", "/v3/order/place")]["x-algo-name"] == "VG-ALGO-1"
    assert by_path[("DELETE", "/v3/order/cancel")]["x-algo-name"] == "VG-ALGO-1"
    assert "x-algo-name" not in by_path[("GET", "/v2/order/retrieve-all")]


async def test_partial_fills_arrive_as_updates_and_trades(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        seen = Collected(broker)
        await connected(broker, fake)
        order_request = request(quantity=130)
        ack = await broker.submit(order_request)
        order_id = ack.broker_order_id
        fake.fill(order_id, 65, 101.5)
        fake.fill(order_id, 65, 101.0)

        async def both_trades() -> bool:
            return (
                len(seen.trades()) == 2
                and seen.orders(order_id)[-1].order.report.status is OrderStatus.FILLED
            )

        await eventually(both_trades, what="two trades and a FILLED update")
        await seen.stop()
    statuses = [(u.order.report.status, u.order.report.filled_qty) for u in seen.orders(order_id)]
    assert statuses == [
        (OrderStatus.OPEN, 0),  # put order req received
        (OrderStatus.OPEN, 0),
        (OrderStatus.PARTIALLY_FILLED, 65),
        (OrderStatus.FILLED, 130),
    ]
    first, second = seen.trades()
    assert (first.trade.trade.quantity, first.trade.trade.price, first.trade.first_fill_of_order) == (
        65,
        Decimal("101.5"),
        True,
    )
    assert (second.trade.trade.price, second.trade.first_fill_of_order) == (Decimal("101.0"), False)
    assert seen.orders(order_id)[-1].order.report.avg_price == Decimal("101.25")
    assert seen.orders(order_id)[-1].order.client_order_id == order_request.client_order_id


async def test_duplicate_and_out_of_order_updates_leave_the_order_where_the_evidence_puts_it(
    fake: FakeUpstoxOrders,
) -> None:
    async with broker_for(fake) as (broker, _):
        seen = Collected(broker)
        await connected(broker, fake)
        order_request = request(quantity=130)
        ack = await broker.submit(order_request)
        order_id = ack.broker_order_id
        fake.fill(order_id, 65, 100.0)
        fake.fill(order_id, 65, 100.0)
        await eventually(lambda: _async(len(seen.orders(order_id)) == 4), what="four updates")
        fake.resend(order_id, 3)  # the final one again
        fake.resend(order_id, 2)  # the partial fill, after the final
        fake.resend(order_id, 0)  # the very first
        await eventually(lambda: _async(len(seen.orders(order_id)) == 7), what="the resent updates")
        await seen.stop()
    order = Order(order_request.key, CE, Side.SELL, 130, Decimal("101.5"))
    order.acknowledge(order_id)
    outcomes = [order.apply_report(u.order.report) for u in seen.orders(order_id)]
    for trade in seen.trades():
        order.add_trade(trade.trade.trade)
    assert order.status is OrderStatus.FILLED
    assert order.traded_qty == 130
    assert outcomes[-3:] == [ReportOutcome.STALE, ReportOutcome.STALE, ReportOutcome.STALE]
    # Resent order updates do not make trades again.
    assert len(seen.trades()) == 2


async def test_a_synchronous_refusal_is_a_rejected_submit(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        order = request()
        fake.refuse[order.client_order_id] = "Insufficient funds"
        with pytest.raises(SubmitRejected) as refused:
            await broker.submit(order)
    assert not refused.value.retryable
    assert "Insufficient funds" in refused.value.message
    assert fake.by_tag(order.client_order_id) == []


async def test_an_exchange_reject_after_accept_arrives_as_an_update(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        seen = Collected(broker)
        await connected(broker, fake)
        order = request()
        fake.reject_at_exchange[order.client_order_id] = "price outside the band"
        ack = await broker.submit(order)

        async def rejected() -> bool:
            updates = seen.orders(ack.broker_order_id)
            return bool(updates) and updates[-1].order.report.status is OrderStatus.REJECTED

        await eventually(rejected, what="a REJECTED update")
        await seen.stop()
    assert seen.orders(ack.broker_order_id)[-1].order.report.message == "price outside the band"


async def test_a_timeout_after_accept_is_looked_up_by_tag_not_sent_again(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake, timeout_s=0.3) as (broker, _):
        order = request()
        fake.hang_after_accept.add(order.client_order_id)
        ack = await broker.submit(order)
    [placed] = fake.by_tag(order.client_order_id)
    assert ack.broker_order_id == placed.order_id
    assert fake.count("POST", "/v3/order/place") == 1
    assert fake.count("GET", "/v2/order/history") == 1


async def test_a_lost_answer_with_nothing_found_stays_unknown_and_is_not_sent_again(
    fake: FakeUpstoxOrders,
) -> None:
    async with broker_for(fake) as (broker, _):
        fake.fail("POST", "/v3/order/place", 503)
        with pytest.raises(SubmitOutcomeUnknown):
            await broker.submit(request())
    assert fake.count("POST", "/v3/order/place") == 1
    assert fake.count("GET", "/v2/order/history") == 1


async def test_a_lost_answer_for_a_later_slice_is_left_unknown_not_guessed(fake: FakeUpstoxOrders) -> None:
    # Slices of one attempt share the tag: the history cannot tell which order is this slice's, so the
    # adapter claims none of them and sends nothing again.
    async with broker_for(fake, timeout_s=0.3) as (broker, _):
        first = OrderRequest(OrderKey("basket-1", 0, 0, 0), CE, Side.SELL, 130, Decimal("101.5"))
        second = OrderRequest(OrderKey("basket-1", 0, 0, 1), CE, Side.SELL, 130, Decimal("101.5"))
        await broker.submit(first)
        fake.hang_after_accept.add(second.client_order_id)
        with pytest.raises(SubmitOutcomeUnknown):
            await broker.submit(second)
        history = await broker.order_history(second.client_order_id)
    assert first.client_order_id == second.client_order_id
    assert fake.count("POST", "/v3/order/place") == 2
    assert len(history) == 2


async def test_modify_and_cancel(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        seen = Collected(broker)
        await connected(broker, fake)
        ack = await broker.submit(request())
        await broker.modify(ack.broker_order_id, Decimal("100.05"))
        await broker.cancel(ack.broker_order_id)
        # Cancelling what is already cancelled is refused by Upstox: normal, not an error.
        await broker.cancel(ack.broker_order_id)

        async def cancelled() -> bool:
            updates = seen.orders(ack.broker_order_id)
            return bool(updates) and updates[-1].order.report.status is OrderStatus.CANCELLED

        await eventually(cancelled, what="a CANCELLED update")
        await seen.stop()
    placed = fake.orders[ack.broker_order_id]
    assert placed.price == 100.05
    assert fake.count("PUT", "/v3/order/modify") == 1
    assert fake.count("DELETE", "/v3/order/cancel") == 2
    prices = [u.order.limit_price for u in seen.orders(ack.broker_order_id)]
    assert Decimal("100.05") in prices


async def test_a_cancel_that_cannot_reach_upstox_is_broker_unavailable(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        ack = await broker.submit(request())
        fake.fail("DELETE", "/v3/order/cancel", 503)
        with pytest.raises(BrokerUnavailable):
            await broker.cancel(ack.broker_order_id)


async def test_429_sends_the_same_order_again_when_the_limiter_allows(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        order = request()
        fake.fail("POST", "/v3/order/place", 429, times=2, retry_after="2")
        ack = await broker.submit(order)
    assert fake.count("POST", "/v3/order/place") == 3
    assert [body["tag"] for body in fake.place_bodies] == [
        order.client_order_id
    ]  # only the third got through
    [placed] = fake.by_tag(order.client_order_id)
    assert ack.broker_order_id == placed.order_id
    # Each retry waited for the Retry-After Upstox named, on the limiter's clock.
    assert broker.sent_at[1] - broker.sent_at[0] == pytest.approx(2.0)
    assert broker.sent_at[2] - broker.sent_at[1] == pytest.approx(2.0)


async def test_429_beyond_the_retries_is_a_retryable_refusal_and_nothing_is_placed(
    fake: FakeUpstoxOrders,
) -> None:
    async with broker_for(fake, max_throttled_retries=1) as (broker, _):
        order = request()
        fake.fail("POST", "/v3/order/place", 429, times=2)
        with pytest.raises(SubmitRejected) as refused:
            await broker.submit(order)
    assert refused.value.retryable
    assert fake.by_tag(order.client_order_id) == []


async def test_order_requests_stay_inside_every_window(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, clock):
        for leg in range(25):
            ack = await broker.submit(request(leg % 8, quantity=65) if leg < 8 else _other(leg))
            if leg % 5 == 0:
                await broker.modify(ack.broker_order_id, Decimal("99.5"))
    sends = broker.sent_at
    assert len(sends) == 25 + 5
    for t in sends:
        # Strictly under the SEBI threshold of 10 a second.
        assert sum(1 for u in sends if t - 1.0 < u <= t) <= 9
    assert clock.slept, "30 requests at 9 a second must have waited"
    assert sends[-1] - sends[0] >= 3.0


async def test_upstox_slicing_returns_every_child_order(fake: FakeUpstoxOrders) -> None:
    fake.freeze_quantity = 1755
    async with broker_for(fake, auto_slice=True) as (broker, _):
        order = request(quantity=1755 * 2 + 65)
        ack = await broker.submit(order)
    children = fake.by_tag(order.client_order_id)
    assert [c.quantity for c in children] == [1755, 1755, 65]
    assert ack.slice_order_ids == tuple(c.order_id for c in children)
    assert ack.broker_order_id == children[0].order_id
    assert fake.place_bodies[0]["slice"] is True


async def test_a_dropped_stream_is_reported_and_reconnected(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        seen = Collected(broker)
        await connected(broker, fake)
        fake.drop_stream()
        await eventually(
            lambda: _async(any(isinstance(u, UpdatesInterrupted) for u in seen.items)), what="an interruption"
        )
        await connected(broker, fake, connections=2)
        ack = await broker.submit(request())
        await eventually(
            lambda: _async(bool(seen.orders(ack.broker_order_id))), what="updates after reconnecting"
        )
        assert (await broker.probe()).updates_connected
        await seen.stop()


async def test_an_unreadable_stream_message_is_a_missed_update(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        seen = Collected(broker)
        await connected(broker, fake)
        ack = await broker.submit(request())
        await eventually(lambda: _async(len(seen.orders(ack.broker_order_id)) == 2), what="two updates")
        fake.orders[ack.broker_order_id].updates.append(
            {"update_type": "order", "order_id": ack.broker_order_id}
        )
        fake.resend(ack.broker_order_id, 2)
        await eventually(
            lambda: _async(any(isinstance(u, UpdatesInterrupted) for u in seen.items)), what="an interruption"
        )
        await seen.stop()


async def test_reads_book_trades_positions_and_history(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        sell = await broker.submit(request(0, quantity=130))
        buy = await broker.submit(OrderRequest(OrderKey("basket-1", 1, 0), PE, Side.BUY, 65, Decimal("20")))
        fake.fill(sell.broker_order_id, 65, 101.0)
        fake.fill(buy.broker_order_id, 65, 20.0)
        book = {o.broker_order_id: o for o in await broker.order_book()}
        trades = await broker.trades()
        positions = {p.instrument_key: p for p in await broker.positions()}
        history = await broker.order_history(request(0).client_order_id)
        assert await broker.order_history("vg000000000000000000") == []
    assert book[sell.broker_order_id].report.status is OrderStatus.PARTIALLY_FILLED
    assert book[buy.broker_order_id].report.status is OrderStatus.FILLED
    assert book[buy.broker_order_id].side is Side.BUY
    assert sorted((t.broker_order_id, t.trade.quantity) for t in trades) == sorted(
        [(sell.broker_order_id, 65), (buy.broker_order_id, 65)]
    )
    assert all(t.first_fill_of_order for t in trades)
    assert (positions[CE].net_quantity, positions[CE].average_price) == (-65, Decimal("101.0"))
    assert (positions[PE].net_quantity, positions[PE].average_price) == (65, Decimal("20.0"))
    # The history has one row per status change; the adapter answers each order's latest.
    assert [(o.broker_order_id, o.report.filled_qty) for o in history] == [(sell.broker_order_id, 65)]


async def test_a_failed_read_is_unavailable_never_empty(fake: FakeUpstoxOrders) -> None:
    async with broker_for(fake) as (broker, _):
        fake.fail("GET", "/v2/portfolio/short-term-positions", 500, times=2)
        with pytest.raises(BrokerUnavailable):
            await broker.positions()
        fake.fail("GET", "/v2/user/profile", 500, times=2)
        probe = await broker.probe()
    assert not probe.ok


def test_live_mode_without_a_token_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValidationError, match="VOLGUARD_UPSTOX_ACCESS_TOKEN"):
        Settings(mode="live", feed="upstox")


def test_live_broker_refuses_to_build_without_a_token_even_past_validation() -> None:
    # model_copy skips validation: the factory checks again rather than send orders unauthenticated.
    settings = Settings().model_copy(update={"mode": "live", "feed": "upstox"})
    with pytest.raises(RuntimeError, match="VOLGUARD_UPSTOX_ACCESS_TOKEN"):
        live_broker(settings)


async def test_live_broker_from_settings_uses_both_hosts_and_keeps_the_token_out_of_sight(
    fake: FakeUpstoxOrders,
) -> None:
    settings = Settings(
        mode="live",
        feed="upstox",
        upstox_access_token=TOKEN,
        upstox_api_base=fake.base_url,
        upstox_order_api_base=fake.base_url,
        upstox_algo_name="VG-ALGO-1",
    )
    broker = live_broker(settings)
    try:
        assert TOKEN not in repr(settings)
        assert TOKEN not in repr(broker.http)
        ack = await broker.submit(request())
        assert fake.orders[ack.broker_order_id].tag == request().client_order_id
        assert [w.limit for w in broker.limiter.windows] == [9, 500, 2000]
    finally:
        await broker.close()


def _other(leg: int) -> OrderRequest:
    return OrderRequest(OrderKey(f"basket-{leg}", 0, 0), PE, Side.BUY, 65, Decimal("20"))


async def _async(value: bool) -> bool:
    return value
