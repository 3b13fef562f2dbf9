"""The paper broker: the `Broker` port over the paper exchange, filling against the live simulated book.

The exchange runs in exchange time. The service feeds it the book (`on_chain`, `on_quote`) and the time
(`advance`, on every market-data event and on a timer); `latency` is exchange time too, so a simulated
day at 100x keeps its latencies in proportion. Every report the exchange makes is turned into a port
update (`OrderUpdateReceived`, `TradeReceived`) on one queue that `updates()` drains.

Paper positions persist (a `PaperStore`, Postgres in the service): every order's latest state and every
trade are written before the call that caused them returns, so a restarted or standby process finds the
account as it was and reconciliation means something in paper mode too. What does not survive a process
is the exchange's matching state: orders still working when the process died are recorded CANCELLED at
the next start — the paper exchange lives in the process, and like an exchange's cancel-on-disconnect
its working orders die with their member's session. Their fills up to then stay.

Test faults, beyond the exchange's own (`exchange.faults`: reject, fill cap, delay, silent):
- `lose_answer`: tags whose submit reaches the exchange but whose answer is lost (SubmitOutcomeUnknown);
- `refuse`: tags refused synchronously (as a 429 before the order is taken: retryable);
- `unlisted`: tags whose orders the broker's reads (order book, order history) do not show yet, as a
  broker's book that lags the exchange;
- `down`: every call fails (BrokerUnavailable; submits are refused as retryable, nothing was sent) and
  the probe says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from volguard_common.events._base import Side
from volguard_common.events.market import ChainSnapshot
from volguard_common.events.orders import OrderStatus
from volguard_execution.domain.orders import BrokerReport, Trade
from volguard_execution.domain.paper_exchange import (
    BookEntry,
    InstrumentRules,
    MarginPort,
    OrderType,
    PaperExchange,
    PaperOrder,
    Quote,
    Report,
    SessionCalendar,
    Traded,
    chain_quotes,
)
from volguard_execution.ports import (
    BrokerOrder,
    BrokerPosition,
    BrokerTrade,
    BrokerUnavailable,
    BrokerUpdate,
    HealthProbe,
    OrderRequest,
    OrderUpdateReceived,
    SubmitAck,
    SubmitOutcomeUnknown,
    SubmitRejected,
    TradeReceived,
)


@dataclass(frozen=True, slots=True)
class PaperAccount:
    """What the store holds: every order's latest state and every trade, over every session."""

    orders: list[BrokerOrder]
    trades: list[BrokerTrade]
    # How many sessions the paper exchange has had; seeds the next one's order ids so they never repeat.
    sessions: int


class PaperStore(Protocol):
    async def open_session(self, ts_event: datetime) -> PaperAccount:
        """Load the account, record working orders of earlier sessions CANCELLED, count a new session."""
        ...

    async def save_order(self, order: BrokerOrder) -> None: ...

    async def save_trade(self, trade: BrokerTrade) -> None: ...


@dataclass
class MemoryPaperStore:
    """A store that lives as long as the object (benchmarks, unit tests of the adapter)."""

    orders: dict[str, BrokerOrder] = field(default_factory=dict)
    trades: dict[str, BrokerTrade] = field(default_factory=dict)
    sessions: int = 0

    async def open_session(self, ts_event: datetime) -> PaperAccount:
        for broker_order_id, order in list(self.orders.items()):
            self.orders[broker_order_id] = died_with_session(order, ts_event)
        account = PaperAccount(list(self.orders.values()), list(self.trades.values()), self.sessions)
        self.sessions += 1
        return account

    async def save_order(self, order: BrokerOrder) -> None:
        self.orders[order.broker_order_id] = order

    async def save_trade(self, trade: BrokerTrade) -> None:
        self.trades[trade.trade.trade_id] = trade


def died_with_session(order: BrokerOrder, ts_event: datetime) -> BrokerOrder:
    """A working order of an earlier session: cancelled, with whatever it filled."""
    if order.report.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
        return order
    report = BrokerReport(
        OrderStatus.CANCELLED,
        order.report.filled_qty,
        order.report.avg_price,
        order.broker_order_id,
        "the paper exchange session ended (cancel on disconnect)",
    )
    return BrokerOrder(
        order.broker_order_id,
        order.client_order_id,
        order.instrument_key,
        order.side,
        order.quantity,
        order.limit_price,
        report,
        ts_event,
    )


@dataclass
class PaperFaults:
    lose_answer: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)
    unlisted: set[str] = field(default_factory=set)
    down: bool = False


class PaperBroker:
    """The `Broker` port on the paper exchange. Create with `open`."""

    def __init__(
        self,
        exchange: PaperExchange,
        store: PaperStore,
        account: PaperAccount,
        clock: Callable[[], datetime],
    ) -> None:
        self.exchange = exchange
        self.faults = PaperFaults()
        self._store = store
        self._clock = clock
        self._now: datetime | None = None
        self._earlier_orders = {o.broker_order_id: o for o in account.orders}
        self._trades: dict[str, BrokerTrade] = {t.trade.trade_id: t for t in account.trades}
        self._saved: dict[str, tuple[str, int, Decimal | None]] = {}
        self._updates: asyncio.Queue[BrokerUpdate] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        *,
        instruments: Mapping[str, InstrumentRules],
        calendar: SessionCalendar,
        margin: MarginPort,
        store: PaperStore,
        clock: Callable[[], datetime],
        latency: timedelta = timedelta(milliseconds=50),
    ) -> PaperBroker:
        account = await store.open_session(clock())
        exchange = PaperExchange(
            instruments=instruments,
            calendar=calendar,
            margin=margin,
            latency=latency,
            seed=account.sessions % 10_000,
        )
        return cls(exchange, store, account, clock)

    @property
    def name(self) -> str:
        return "paper"

    # -- time and the book -------------------------------------------------------------------------

    def _time(self, ts_event: datetime | None = None) -> datetime:
        ts = ts_event if ts_event is not None else self._clock()
        # The exchange refuses time going backwards; two sources (timer, market data) may interleave.
        if self._now is not None and ts < self._now:
            ts = self._now
        self._now = ts
        return ts

    async def advance(self, ts_event: datetime | None = None) -> None:
        async with self._lock:
            await self._handle(self.exchange.advance(self._time(ts_event)))

    async def on_quote(self, quote: Quote) -> None:
        async with self._lock:
            await self._handle(self.exchange.on_quote(self._restamped(quote)))

    async def on_chain(self, snapshot: ChainSnapshot) -> None:
        async with self._lock:
            reports: list[Report] = []
            for quote in chain_quotes(snapshot):
                reports.extend(self.exchange.on_quote(self._restamped(quote)))
            await self._handle(reports)

    def _restamped(self, quote: Quote) -> Quote:
        # A quote that arrives after the exchange moved on (a command or a timer carried a later time
        # than market data still queued) is still the newest book known for its contract: it applies
        # now, since the exchange cannot go back in time.
        now = self._time(quote.ts_event)
        return quote if now == quote.ts_event else replace(quote, ts_event=now)

    def add_instruments(self, instruments: Mapping[str, InstrumentRules]) -> None:
        """New contracts listed in the chain (the instrument master grows through the day)."""
        self.exchange.add_instruments(instruments)

    async def _handle(self, reports: list[Report]) -> None:
        # Persist first (silent orders included: the book knows what their reports did not say), then
        # tell the stream.
        await self._persist()
        for report in reports:
            if isinstance(report, Traded):
                self._updates.put_nowait(TradeReceived(self._trades[report.trade_id]))
            else:
                entry = self.exchange.entry(report.exchange_order_id)
                self._updates.put_nowait(OrderUpdateReceived(self._broker_order(entry)))

    async def _persist(self) -> None:
        for entry in self.exchange.order_book():
            snapshot = (entry.state.value, entry.filled_qty, entry.order.limit_price)
            if self._saved.get(entry.exchange_order_id) != snapshot:
                await self._store.save_order(self._broker_order(entry))
                self._saved[entry.exchange_order_id] = snapshot
        for traded in self.exchange.trades():
            if traded.trade_id not in self._trades:
                trade = _broker_trade(traded)
                await self._store.save_trade(trade)
                self._trades[traded.trade_id] = trade

    def _broker_order(self, entry: BookEntry) -> BrokerOrder:
        order = entry.order
        return BrokerOrder(
            entry.exchange_order_id,
            order.client_order_id,
            order.instrument_key,
            order.side,
            order.quantity,
            order.limit_price,
            entry.broker_report(),
            self._now or entry.submitted_at,
        )

    # -- the port --------------------------------------------------------------------------------

    def _check_up(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the paper broker is closed")
        if self.faults.down:
            raise BrokerUnavailable("paper broker forced down")

    async def submit(self, request: OrderRequest) -> SubmitAck:
        tag = request.client_order_id
        if self.faults.down or tag in self.faults.refuse:
            raise SubmitRejected("paper broker refused the request before taking it", retryable=True)
        self._check_up()
        async with self._lock:
            exchange_order_id, reports = self.exchange.submit(
                PaperOrder(
                    tag,
                    request.instrument_key,
                    request.side,
                    request.quantity,
                    OrderType.LIMIT,
                    request.limit_price,
                ),
                self._time(),
            )
            await self._handle(reports)
        if tag in self.faults.lose_answer:
            raise SubmitOutcomeUnknown(f"answer to {tag} lost (forced)")
        return SubmitAck(exchange_order_id, None)

    async def modify(self, broker_order_id: str, limit_price: Decimal) -> None:
        self._check_up()
        async with self._lock:
            await self._handle(self.exchange.modify(broker_order_id, limit_price, self._time()))

    async def cancel(self, broker_order_id: str) -> None:
        self._check_up()
        if broker_order_id in self._earlier_orders:
            return  # an order of an earlier session is already over
        async with self._lock:
            await self._handle(self.exchange.cancel(broker_order_id, self._time()))

    async def order_book(self) -> list[BrokerOrder]:
        self._check_up()
        current = [
            self._broker_order(entry)
            for entry in self.exchange.order_book()
            if entry.order.client_order_id not in self.faults.unlisted
        ]
        return [*self._earlier_orders.values(), *current]

    async def order_history(self, client_order_id: str) -> list[BrokerOrder]:
        return [o for o in await self.order_book() if o.client_order_id == client_order_id]

    async def trades(self) -> list[BrokerTrade]:
        self._check_up()
        return list(self._trades.values())

    async def positions(self) -> list[BrokerPosition]:
        self._check_up()
        units: dict[str, int] = {}
        notional: dict[str, Decimal] = {}
        for trade in self._trades.values():
            signed = trade.trade.quantity if trade.side is Side.BUY else -trade.trade.quantity
            units[trade.instrument_key] = units.get(trade.instrument_key, 0) + signed
            notional[trade.instrument_key] = notional.get(trade.instrument_key, Decimal(0)) + (
                trade.trade.price * signed
            )
        return [
            BrokerPosition(key, net, notional[key] / net if net else None)
            for key, net in units.items()
            if net
        ]

    async def probe(self) -> HealthProbe:
        if self._closed or self.faults.down:
            return HealthProbe(False, None, False, "paper broker down")
        # The paper exchange is in-process: there is no round trip to measure, and its configured latency
        # is simulated exchange time, not a measurement. What is measured (submit to ack) the service has.
        return HealthProbe(True, None, True)

    async def updates(self) -> AsyncIterator[BrokerUpdate]:
        while True:
            yield await self._updates.get()

    def take_updates(self) -> list[BrokerUpdate]:
        """Every update waiting now, without waiting for more: how an in-process event loop (the
        backtest) drains the exchange's reports after each step instead of a task blocked on `updates`."""
        taken: list[BrokerUpdate] = []
        while not self._updates.empty():
            taken.append(self._updates.get_nowait())
        return taken

    async def close(self) -> None:
        self._closed = True


def _broker_trade(traded: Traded) -> BrokerTrade:
    return BrokerTrade(
        traded.exchange_order_id,
        traded.client_order_id,
        traded.instrument_key,
        traded.side,
        Trade(traded.trade_id, traded.quantity, traded.price, traded.ts_event),
        traded.first_fill_of_order,
    )
