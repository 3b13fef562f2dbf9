"""A real fake of Upstox's order side on 127.0.0.1: the v3 order endpoints (place, modify, cancel), the v2
order book, order history, trades, short-term positions and profile, and the portfolio stream (authorize,
then a WebSocket sending one JSON text message per order change).

Shapes follow upstox/upstox-python and the Upstox docs: `{"status": "success", "data": ...}` replies,
`{"status": "error", "errors": [{"errorCode", "message"}]}` errors, `data.order_ids[]` and
`metadata.latency` from a place, lower-case statuses ("put order req received", "open", "complete",
"cancelled", "rejected"), and a partial fill as "open" with filled_quantity > 0. One server stands in for
both hosts (api.upstox.com and api-hft.upstox.com): tests point both base URLs at it.

Misbehaviour tests ask for: `fail()` (the next calls of an endpoint answer a status, 429 included),
`refuse` (tags refused synchronously with a 400), `reject_at_exchange` (accepted, then "rejected" on the
stream), `hang_after_accept` (the order is created and its updates sent, but the reply to the place comes
only after `hang_s`, so the client times out), `fill()` (partial or whole fills), `resend()` (an earlier
update again: duplicates and out-of-order), `drop_stream()` (close every portfolio socket), and slicing when
a place asks for it and the quantity is above `freeze_quantity`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tests.fakes.upstox_server import TOKEN, Failure, _error
from tests.support.waiting import eventually_sync
from volguard_common.clock import IST

FINAL = frozenset({"complete", "cancelled", "rejected"})


@dataclass
class FakeOrder:
    order_id: str
    tag: str
    instrument_token: str
    transaction_type: str
    quantity: int
    price: float
    product: str
    validity: str
    status: str = "put order req received"
    filled_quantity: int = 0
    average_price: float = 0.0
    status_message: str = ""
    updates: list[dict[str, Any]] = field(default_factory=list)  # every update sent, in order

    def row(self) -> dict[str, Any]:
        now = datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "exchange": "NFO",
            "product": self.product,
            "price": self.price,
            "quantity": self.quantity,
            "status": self.status,
            "tag": self.tag,
            "instrument_token": self.instrument_token,
            "placed_by": "FAKE01",
            "trading_symbol": "NIFTY FAKE",
            "order_type": "LIMIT",
            "validity": self.validity,
            "trigger_price": 0,
            "disclosed_quantity": 0,
            "transaction_type": self.transaction_type,
            "average_price": self.average_price,
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.quantity - self.filled_quantity,
            "status_message": self.status_message,
            "exchange_order_id": f"1{self.order_id[-15:]}",
            "parent_order_id": None,
            "order_id": self.order_id,
            "variety": "SIMPLE",
            "order_timestamp": now,
            "exchange_timestamp": now if self.status != "put order req received" else None,
            "is_amo": False,
        }


@dataclass
class FakeTrade:
    trade_id: str
    order_id: str
    instrument_token: str
    transaction_type: str
    quantity: int
    price: float

    def row(self) -> dict[str, Any]:
        return {
            "exchange": "NFO",
            "product": "D",
            "trading_symbol": "NIFTY FAKE",
            "instrument_token": self.instrument_token,
            "order_type": "LIMIT",
            "transaction_type": self.transaction_type,
            "quantity": self.quantity,
            "exchange_order_id": f"1{self.order_id[-15:]}",
            "order_id": self.order_id,
            "exchange_timestamp": datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S"),
            "average_price": self.price,
            "trade_id": self.trade_id,
            "order_ref_id": "",
            "order_timestamp": datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S"),
        }


class FakeUpstoxOrders:
    def __init__(self, *, freeze_quantity: int = 1800) -> None:
        self.freeze_quantity = freeze_quantity
        self.orders: dict[str, FakeOrder] = {}
        self.trades: list[FakeTrade] = []
        # ---- misbehaviour ----
        self.failures: dict[tuple[str, str], list[Failure]] = {}
        self.refuse: dict[str, str] = {}  # tag → message: a synchronous 400
        self.reject_at_exchange: dict[str, str] = {}  # tag → status message
        self.hang_after_accept: set[str] = set()
        self.hang_s = 2.0
        # ---- what happened ----
        self.requests: list[tuple[str, str]] = []
        self.place_bodies: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.stream_connections = 0
        self._lock = threading.Lock()
        self._serial = 0
        self._codes: set[str] = set()
        self._sockets: list[asyncio.Queue[str | None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- steering (from the test's thread) ------------------------------------------------------

    def fail(
        self, method: str, path: str, status: int, times: int = 1, retry_after: str | None = None
    ) -> None:
        with self._lock:
            self.failures.setdefault((method, path), []).extend(
                Failure(status, retry_after) for _ in range(times)
            )

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.requests if seen == (method, path))

    def by_tag(self, tag: str) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.tag == tag]

    def fill(self, order_id: str, quantity: int, price: float) -> None:
        """The exchange fills `quantity` more of the order at `price` (a partial fill stays "open")."""
        with self._lock:
            order = self.orders[order_id]
            if order.status in FINAL or order.filled_quantity + quantity > order.quantity:
                raise AssertionError(f"cannot fill {quantity} of {order_id} ({order.status})")
            self._serial += 1
            self.trades.append(
                FakeTrade(
                    f"T{self._serial:08d}",
                    order_id,
                    order.instrument_token,
                    order.transaction_type,
                    quantity,
                    price,
                )
            )
            total = order.average_price * order.filled_quantity + price * quantity
            order.filled_quantity += quantity
            order.average_price = round(total / order.filled_quantity, 4)
            order.status = "complete" if order.filled_quantity == order.quantity else "open"
            self._emit(order)

    def resend(self, order_id: str, index: int) -> None:
        """Send the order's update number `index` again (duplicates, or out of order when older)."""
        with self._lock:
            self._broadcast(self.orders[order_id].updates[index])

    @property
    def open_streams(self) -> int:
        return len(self._sockets)

    def drop_stream(self) -> None:
        loop = self._loop
        assert loop is not None
        for queue in list(self._sockets):
            loop.call_soon_threadsafe(queue.put_nowait, None)

    # ---- internals -------------------------------------------------------------------------------

    def _emit(self, order: FakeOrder) -> None:
        message = {"update_type": "order", "user_id": "FAKE01", **order.row()}
        order.updates.append(message)
        self._broadcast(message)

    def _broadcast(self, message: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None:
            return
        text = json.dumps(message)
        for queue in list(self._sockets):
            loop.call_soon_threadsafe(queue.put_nowait, text)

    def _gate(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        self.headers_seen.append(dict(request.headers))
        with self._lock:
            planned = self.failures.get((request.method, request.url.path))
            failure = planned.pop(0) if planned else None
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            code = {429: "UDAPI10005", 401: "UDAPI100050"}.get(failure.status, "UDAPI100500")
            return _error(failure.status, code, f"fake failure {failure.status}", headers)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "UDAPI100050", "Invalid token used to access API")
        return None

    async def place(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        body = await request.json()
        self.place_bodies.append(body)
        tag = str(body.get("tag") or "")
        if body.get("order_type") != "LIMIT" or float(body.get("price", 0)) <= 0:
            return _error(400, "UDAPI1026", "price is required for a limit order")
        if tag in self.refuse:
            return _error(400, "UDAPI100049", self.refuse[tag])
        quantity = int(body["quantity"])
        sizes = [quantity]
        if body.get("slice") and quantity > self.freeze_quantity:
            full, rest = divmod(quantity, self.freeze_quantity)
            sizes = [self.freeze_quantity] * full + ([rest] if rest else [])
        ids = []
        with self._lock:
            for size in sizes:
                self._serial += 1
                order = FakeOrder(
                    order_id=f"2512080000{self._serial:05d}",
                    tag=tag,
                    instrument_token=str(body["instrument_token"]),
                    transaction_type=str(body["transaction_type"]),
                    quantity=size,
                    price=float(body["price"]),
                    product=str(body["product"]),
                    validity=str(body["validity"]),
                )
                self.orders[order.order_id] = order
                ids.append(order.order_id)
                self._emit(order)
                if tag in self.reject_at_exchange:
                    order.status, order.status_message = "rejected", self.reject_at_exchange[tag]
                else:
                    order.status = "open"
                self._emit(order)
        if tag in self.hang_after_accept:
            await asyncio.sleep(self.hang_s)
        return JSONResponse({"status": "success", "data": {"order_ids": ids}, "metadata": {"latency": 12}})

    async def modify(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        body = await request.json()
        with self._lock:
            order = self.orders.get(str(body.get("order_id")))
            if order is None or order.status in FINAL:
                return _error(400, "UDAPI100040", "order cannot be modified")
            order.price = float(body["price"])
            order.status = "open"
            self._emit(order)
        return JSONResponse(
            {"status": "success", "data": {"order_id": order.order_id}, "metadata": {"latency": 9}}
        )

    async def cancel(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        with self._lock:
            order = self.orders.get(request.query_params.get("order_id", ""))
            if order is None or order.status in FINAL:
                return _error(400, "UDAPI100041", "order cannot be cancelled")
            order.status = "cancelled"
            self._emit(order)
        return JSONResponse(
            {"status": "success", "data": {"order_id": order.order_id}, "metadata": {"latency": 8}}
        )

    async def order_book(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        with self._lock:
            rows = [o.row() for o in self.orders.values()]
        return JSONResponse({"status": "success", "data": rows})

    async def order_history(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        tag = request.query_params.get("tag")
        order_id = request.query_params.get("order_id")
        with self._lock:
            rows = [
                {k: v for k, v in update.items() if k not in ("update_type", "user_id")}
                for o in self.orders.values()
                if (tag is not None and o.tag == tag) or (order_id is not None and o.order_id == order_id)
                for update in o.updates
            ]
        return JSONResponse({"status": "success", "data": rows})

    async def trades_for_day(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        with self._lock:
            rows = [t.row() for t in self.trades]
        return JSONResponse({"status": "success", "data": rows})

    async def order_trades(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        order_id = request.query_params.get("order_id")
        with self._lock:
            rows = [t.row() for t in self.trades if t.order_id == order_id]
        return JSONResponse({"status": "success", "data": rows})

    async def positions(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        net: dict[str, int] = {}
        cost: dict[str, float] = {}
        with self._lock:
            for t in self.trades:
                signed = t.quantity if t.transaction_type == "BUY" else -t.quantity
                net[t.instrument_token] = net.get(t.instrument_token, 0) + signed
                cost[t.instrument_token] = cost.get(t.instrument_token, 0.0) + signed * t.price
        rows = [
            {
                "exchange": "NFO",
                "product": "D",
                "instrument_token": key,
                "quantity": qty,
                "average_price": round(cost[key] / qty, 4) if qty else 0,
            }
            for key, qty in net.items()
        ]
        return JSONResponse({"status": "success", "data": rows})

    async def profile(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        return JSONResponse({"status": "success", "data": {"user_id": "FAKE01", "is_active": True}})

    async def authorize(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        code = uuid.uuid4().hex
        self._codes.add(code)
        url = f"ws://127.0.0.1:{self.port}/portfolio-stream/feed?requestId={uuid.uuid4()}&code={code}"
        return JSONResponse(
            {"status": "success", "data": {"authorized_redirect_uri": url, "authorizedRedirectUri": url}}
        )

    async def stream(self, websocket: WebSocket) -> None:
        code = websocket.query_params.get("code")
        if code not in self._codes:
            await websocket.close(code=1008)
            return
        self._codes.discard(code)  # single use
        await websocket.accept()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._sockets.append(queue)
        self.stream_connections += 1
        try:
            while (text := await queue.get()) is not None:
                await websocket.send_text(text)
            await websocket.close(code=1011)
        except WebSocketDisconnect:
            pass
        finally:
            self._sockets.remove(queue)

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v3/order/place", self.place, methods=["POST"]),
                Route("/v3/order/modify", self.modify, methods=["PUT"]),
                Route("/v3/order/cancel", self.cancel, methods=["DELETE"]),
                Route("/v2/order/retrieve-all", self.order_book, methods=["GET"]),
                Route("/v2/order/history", self.order_history, methods=["GET"]),
                Route("/v2/order/trades/get-trades-for-day", self.trades_for_day, methods=["GET"]),
                Route("/v2/order/trades", self.order_trades, methods=["GET"]),
                Route("/v2/portfolio/short-term-positions", self.positions, methods=["GET"]),
                Route("/v2/user/profile", self.profile, methods=["GET"]),
                Route("/v2/feed/portfolio-stream-feed/authorize", self.authorize, methods=["GET"]),
                WebSocketRoute("/portfolio-stream/feed", self.stream),
            ],
            lifespan=self._lifespan,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", ws=WebSocketsSansIOProtocol, lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        server = self._server
        eventually_sync(
            lambda: server.started and self._loop is not None, what="fake Upstox orders started", poll_s=0.01
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Steering methods run on the test's thread; they reach the sockets through this loop.
        self._loop = asyncio.get_running_loop()
        yield

    def stop(self) -> None:
        self.drop_stream()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()


@contextmanager
def running_fake_upstox_orders(**kwargs: Any) -> Iterator[FakeUpstoxOrders]:
    fake = FakeUpstoxOrders(**kwargs)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
