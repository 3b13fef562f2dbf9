"""Baskets at a broker: carries out what each basket guard asks through the broker port, and feeds the
broker's answers and updates back to the guard the order belongs to.

The guard decides; this only does I/O. A submit's outcomes map one to one onto the guard: ack,
synchronous rejection, a retryable refusal before the broker took the order (throttled, no connection,
broker closed: the order stays unsent and the guard sends it again under the same key), unknown.
Updates are routed by broker order id (known from the ack), or by tag for an order whose ack was lost.
A `Resolve` reads the order history by tag, the order book and the trades of the order: an order of the
tag that no other slice claims is this one; when neither shows one, the guard is told so (it gives an
UNKNOWN submit up only after such reads over its `absent_after_s`).

Evidence that cannot be applied (`OrderError`: a report or trade contradicting an order's final state) is
not allowed to kill the process: the basket it belongs to ends STUCK with a CRITICAL Alert, and an
operator reconciles it. Crashing would only re-read the same evidence on restart and crash again.

What happened is told to a `Journal` (the service persists and publishes it): every change of an order,
every new fill, every alert, and the end of a basket.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import structlog

from volguard_common.events._base import Bucket
from volguard_execution.domain.basket_guard import (
    Action,
    AlertLevel,
    BasketGuard,
    Cancel,
    Modify,
    Place,
    RaiseAlert,
    Resolve,
    Withdrawn,
)
from volguard_execution.domain.orders import Order, OrderError, OrderKey
from volguard_execution.ports import (
    Broker,
    BrokerOrder,
    BrokerTrade,
    BrokerUnavailable,
    BrokerUpdate,
    OrderRequest,
    OrderUpdateReceived,
    Product,
    SubmitOutcomeUnknown,
    SubmitRejected,
    TradeReceived,
    UpdatesInterrupted,
)

log = structlog.get_logger("volguard.execution.runner")


class Journal(Protocol):
    async def order_changed(self, guard: BasketGuard, order: Order) -> None: ...

    async def filled(self, guard: BasketGuard, order: Order, trade: BrokerTrade) -> None: ...

    async def alert(self, guard: BasketGuard, alert: RaiseAlert) -> None: ...

    async def basket_ended(self, guard: BasketGuard) -> None: ...


class BasketRunner:
    def __init__(self, broker: Broker, journal: Journal, clock: Callable[[], datetime]) -> None:
        self.broker = broker
        self.journal = journal
        self.clock = clock
        self.guards: dict[str, BasketGuard] = {}
        self._routes: dict[str, OrderKey] = {}  # broker order id → order
        self._told_ended: set[str] = set()
        # Wall-clock milliseconds from sending the newest acknowledged submit to its ack (BrokerHealth).
        self.submit_ack_ms: float | None = None

    # -- driving ------------------------------------------------------------------------------------

    async def start(self, guard: BasketGuard) -> None:
        self.guards[guard.basket.basket_id] = guard
        await self._act(guard, guard.start(self.clock()))

    async def cancel(self, basket_id: str, reason: str) -> bool:
        guard = self.guards.get(basket_id)
        if guard is None or guard.ended:
            return False
        await self._act(guard, guard.cancel(self.clock(), reason))
        return True

    async def adopt(self, guard: BasketGuard) -> None:
        """A recovered basket: its orders are read back from the broker, then it acts."""
        self.guards[guard.basket.basket_id] = guard
        for order in guard.orders:
            if order.broker_order_id is not None:
                self._routes[order.broker_order_id] = order.key
        for order in list(guard.orders):
            if _needs_reading_back(guard, order):
                await self._resolve(guard, order.key)
        await self._act(guard, guard.progress(self.clock()))

    async def tick(self) -> None:
        """Let every working basket act on the time (re-prices, deadlines, silent orders)."""
        for guard in list(self.guards.values()):
            if not guard.ended:
                await self._act(guard, guard.progress(self.clock()))

    async def on_update(self, update: BrokerUpdate) -> None:
        if isinstance(update, UpdatesInterrupted):
            await self.read_back_live_orders()
            return
        if isinstance(update, OrderUpdateReceived):
            found = self._find(update.order.broker_order_id, update.order.client_order_id)
            if found is None:
                return  # not one of ours (or of a basket this process does not work): reconciliation's
            guard, order = found
            before = _fingerprint(order)
            try:
                if order.broker_order_id is None:
                    guard.acknowledged(order.key, update.order.broker_order_id)
                    self._routes[update.order.broker_order_id] = order.key
                guard.report(order.key, update.order.report)
            except OrderError as exc:
                await self._contradicted(guard, order, exc)
            else:
                if _fingerprint(order) != before:
                    await self.journal.order_changed(guard, order)
        else:
            assert isinstance(update, TradeReceived)
            await self._trade(update.trade)
        for guard in list(self.guards.values()):
            if not guard.ended:
                await self._act(guard, guard.progress(self.clock()))

    async def read_back_live_orders(self) -> None:
        """After missed updates: every live order is read back from the broker's book."""
        for guard in list(self.guards.values()):
            for order in list(guard.orders):
                if _needs_reading_back(guard, order):
                    await self._resolve(guard, order.key)
            await self._act(guard, guard.progress(self.clock()))

    # -- helpers ----------------------------------------------------------------------------------

    def _find(self, broker_order_id: str, client_order_id: str) -> tuple[BasketGuard, Order] | None:
        key = self._routes.get(broker_order_id)
        if key is not None:
            guard = self.guards.get(key.basket_id)
            if guard is not None:
                return guard, guard.orders[key]
        # An order whose ack was lost: the tag names the attempt; the slice is the one without an id.
        for guard in self.guards.values():
            for order in guard.orders.by_client_order_id(client_order_id):
                if order.broker_order_id is None and not guard.unsent(order.key):
                    return guard, order
        return None

    async def _trade(self, trade: BrokerTrade) -> None:
        found = self._find(trade.broker_order_id, trade.client_order_id)
        if found is None:
            return
        guard, order = found
        self._routes[trade.broker_order_id] = order.key
        before = _fingerprint(order)
        try:
            recorded = guard.trade(order.key, trade.trade, trade.broker_order_id)
        except OrderError as exc:
            await self._contradicted(guard, order, exc)
            return
        if recorded:
            await self.journal.filled(guard, order, trade)
        if _fingerprint(order) != before:
            await self.journal.order_changed(guard, order)

    async def _act(self, guard: BasketGuard, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Place):
                await self._place(guard, action)
            elif isinstance(action, Modify):
                await self._best_effort(
                    self.broker.modify(action.broker_order_id, action.limit_price), action
                )
            elif isinstance(action, Cancel):
                await self._best_effort(self.broker.cancel(action.broker_order_id), action)
            elif isinstance(action, Resolve):
                await self._resolve(guard, action.key)
            elif isinstance(action, Withdrawn):
                await self.journal.order_changed(guard, guard.orders[action.key])
            else:
                await self.journal.alert(guard, action)
        if guard.ended and guard.basket.basket_id not in self._told_ended:
            self._told_ended.add(guard.basket.basket_id)
            await self.journal.basket_ended(guard)

    async def _best_effort(self, request: Awaitable[None], action: Modify | Cancel) -> None:
        # A modify or cancel that does not get through changes nothing: the guard asks again when the
        # order stays silent, and the deadline still holds.
        try:
            await request
        except BrokerUnavailable as exc:
            log.warning(
                "broker_request_failed", action=type(action).__name__, key=str(action.key), error=str(exc)
            )

    async def _place(self, guard: BasketGuard, action: Place) -> None:
        order = guard.orders[action.key]
        await self.journal.order_changed(guard, order)  # NEW, recorded before it can exist anywhere else
        request = OrderRequest(
            action.key,
            action.instrument_key,
            action.side,
            action.quantity,
            action.limit_price,
            product=_product(guard.basket.bucket),
        )
        sent = time.perf_counter()
        try:
            ack = await self.broker.submit(request)
        except SubmitRejected as exc:
            if exc.retryable:
                # Nothing was placed: not a rejection of the leg, the same order goes again later.
                guard.submit_refused(action.key, exc.message, self.clock())
            else:
                guard.submit_rejected(action.key, exc.message)
        except (SubmitOutcomeUnknown, BrokerUnavailable) as exc:
            guard.submit_unknown(action.key, f"{type(exc).__name__}: {exc}")
        else:
            self.submit_ack_ms = (time.perf_counter() - sent) * 1000
            self._routes[ack.broker_order_id] = action.key
            guard.acknowledged(action.key, ack.broker_order_id)
        await self.journal.order_changed(guard, order)

    async def _resolve(self, guard: BasketGuard, key: OrderKey) -> None:
        order = guard.orders[key]
        try:
            history = await self.broker.order_history(key.client_order_id)
            book = await self.broker.order_book()
            trades = await self.broker.trades()
        except BrokerUnavailable as exc:
            log.warning("resolve_failed", key=str(key), error=str(exc))
            return
        # The history by tag and the book are separate reads at the broker; an order either shows is there.
        seen = {entry.broker_order_id for entry in history}
        history = history + [
            entry
            for entry in book
            if entry.client_order_id == key.client_order_id and entry.broker_order_id not in seen
        ]
        found = self._match(guard, order, history)
        before = _fingerprint(order)
        if found is None:
            try:
                guard.resolved(key, None, [], self.clock())
            except OrderError as exc:
                await self._contradicted(guard, order, exc)
                return
        else:
            self._routes[found.broker_order_id] = key
            mine = [t for t in trades if t.broker_order_id == found.broker_order_id]
            known = set(order.trades)
            try:
                guard.resolved(key, found.report, [t.trade for t in mine], self.clock())
            except OrderError as exc:
                await self._contradicted(guard, order, exc)
                return
            for trade in mine:
                if trade.trade.trade_id not in known and trade.trade.trade_id in order.trades:
                    await self.journal.filled(guard, order, trade)
        if _fingerprint(order) != before:
            await self.journal.order_changed(guard, order)

    async def _contradicted(self, guard: BasketGuard, order: Order, exc: OrderError) -> None:
        """The broker said something about `order` that contradicts what it said before. What the basket
        holds is no longer known: it ends STUCK for an operator (an ended basket only alerts)."""
        reason = f"order {order.client_order_id}/{order.key.slice_index}: {type(exc).__name__}: {exc}"
        log.error("order_evidence_conflict", basket_id=guard.basket.basket_id, error=reason)
        if guard.ended:
            await self.journal.alert(
                guard,
                RaiseAlert(
                    "ORDER_EVIDENCE_CONFLICT",
                    AlertLevel.CRITICAL,
                    f"basket {guard.basket.basket_id} ({guard.outcome.status if guard.outcome else ''}): "
                    f"{reason}; an operator must reconcile it with the broker",
                ),
            )
            return
        await self._act(guard, guard.stuck(f"the broker contradicts a final order state: {reason}"))

    def _match(self, guard: BasketGuard, order: Order, history: list[BrokerOrder]) -> BrokerOrder | None:
        if order.broker_order_id is not None:
            return next((h for h in history if h.broker_order_id == order.broker_order_id), None)
        claimed = {
            o.broker_order_id
            for o in guard.orders.by_client_order_id(order.client_order_id)
            if o.broker_order_id is not None
        }
        # Slices of one attempt without an id yet are interchangeable only when they are equal (same
        # contract, side, price and quantity): any unclaimed order of that size is one of them, and once
        # claimed it is not handed to another slice.
        candidates = [h for h in history if h.broker_order_id not in claimed and h.quantity == order.quantity]
        return candidates[0] if candidates else None


def _product(bucket: Bucket) -> Product:
    """Upstox `I` (intraday, squared off by the broker at the end of the day) only for the intraday
    bucket's own trades; weekly and monthly trades and their adjustments carry forward as `D`."""
    return Product.INTRADAY if bucket is Bucket.INTRADAY else Product.DELIVERY


def _needs_reading_back(guard: BasketGuard, order: Order) -> bool:
    """Live, or known to have filled more than the trades we hold say (a report overtook its trades, or
    the process that held them died before telling): the broker's trade book has the rest. An unsent
    order is not at the broker: what its tag shows there belongs to a sibling slice."""
    if guard.unsent(order.key):
        return False
    return order.live or order.traded_qty < order.filled_qty


def _fingerprint(order: Order) -> tuple[object, ...]:
    return (order.status, order.filled_qty, order.broker_order_id, order.limit_price, len(order.trades))
