"""The live broker: the `Broker` port over Upstox's order APIs and its portfolio stream.

Endpoints and fields as upstox/upstox-python (`OrderControllerV3Api`, `OrderApi`, `PortfolioApi`,
`WebsocketApi`) and the Upstox developer documentation give them:
- place  `POST {order host}/v3/order/place` with quantity (units for F&O), product, validity, price, tag,
  slice, instrument_token, order_type, transaction_type, disclosed_quantity, trigger_price, is_amo; the
  reply is `data.order_ids[]` (one per slice) and `metadata.latency` (ms);
- modify `PUT {order host}/v3/order/modify` with order_id, price, order_type, validity, trigger_price,
  disclosed_quantity; cancel `DELETE {order host}/v3/order/cancel?order_id=`;
- order book `GET /v2/order/retrieve-all`, history `GET /v2/order/history?tag=` (one row per status change,
  oldest first), trades of the day `GET /v2/order/trades/get-trades-for-day`, trades of one order
  `GET /v2/order/trades?order_id=`, positions `GET /v2/portfolio/short-term-positions`, profile
  `GET /v2/user/profile` (the health probe);
- order updates: `GET /v2/feed/portfolio-stream-feed/authorize?update_types=order` answers a single-use
  `data.authorized_redirect_uri`; the WebSocket there sends one JSON text message per order change.

Upstox accepts order calls only from the static IP registered for the app in its developer console; from
anywhere else place/modify/cancel are refused (a 4xx: the order does not exist).

What the adapter adds to the HTTP client:
- Every order request (place, modify, cancel) takes a slot from the order-rate limiter first (Upstox's 10/s,
  500/min, 2000/30 min, and strictly under the SEBI retail-algo threshold). A 429 means Upstox refused the
  request before processing it: the same request — same tag — is sent again when the limiter says, a
  bounded number of times, and then the submit is refused as retryable (nothing was placed).
- No blind re-submit. A place whose answer is lost (timeout, reset, 5xx, a body that is not the documented
  one) may have reached the exchange: the adapter reads the order history by tag once, and acknowledges the
  order it finds there when the find is unambiguous (the attempt's first slice, alone under its tag);
  otherwise the submit is `SubmitOutcomeUnknown`, nothing is re-sent, and the runner's resolution by tag
  (which knows the slices already claimed) settles it.
- The tag is VolGuard's deterministic client order id (20 alphanumeric characters: `client_order_id`). The
  Upstox documentation states no maximum for `tag`; 20 is the limit other Indian broker APIs enforce (Kite,
  Angel One), so the adapter refuses anything longer rather than have Upstox cut an identity short.
- Slicing: VolGuard slices at the freeze quantity itself (ports.py: one submit is one exchange order), so
  `slice` is false by default. With `auto_slice=True` Upstox's own slicing is asked for as a safety net and
  every child order id comes back in `SubmitAck.slice_order_ids`.
- Order updates become `OrderUpdateReceived`; when an update shows more filled than before, the order's
  trades are read (`/v2/order/trades`) and each new trade id becomes one `TradeReceived`. A dropped stream,
  a message that cannot be read or trades that cannot be read are an `UpdatesInterrupted`: something may
  have been missed, so the service reads the book back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from volguard_common.clock import IST
from volguard_common.events._base import Side
from volguard_common.upstox_http import (
    UpstoxAuthError,
    UpstoxBrokerClosedError,
    UpstoxClientError,
    UpstoxError,
    UpstoxHttp,
    UpstoxNotSentError,
    UpstoxRateLimitError,
)
from volguard_execution.domain.orders import Trade
from volguard_execution.domain.rate_limit import OrderRateLimiter
from volguard_execution.domain.upstox_status import map_upstox_order
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
    UpdatesInterrupted,
    Validity,
)

log = logging.getLogger(__name__)

MAX_TAG_LENGTH = 20
PLACE = "/v3/order/place"
MODIFY = "/v3/order/modify"
CANCEL = "/v3/order/cancel"
ORDER_BOOK = "/v2/order/retrieve-all"
ORDER_HISTORY = "/v2/order/history"
TRADES_FOR_DAY = "/v2/order/trades/get-trades-for-day"
ORDER_TRADES = "/v2/order/trades"
POSITIONS = "/v2/portfolio/short-term-positions"
PROFILE = "/v2/user/profile"
PORTFOLIO_AUTHORIZE = "/v2/feed/portfolio-stream-feed/authorize"

# Upstox writes times as IST wall clock; these are the shapes seen in its order, trade and stream replies.
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%d-%m-%Y %H:%M:%S", "%d-%b-%Y %H:%M:%S")


class UpstoxBroker:
    """`Broker` for Upstox. `http` carries the token and both hosts; `limiter` is the order-rate limiter
    (its clock and `sleep` must agree: `time.monotonic` with `asyncio.sleep` live, a fake pair in tests)."""

    def __init__(
        self,
        http: UpstoxHttp,
        limiter: OrderRateLimiter,
        *,
        algo_name: str | None = None,
        auto_slice: bool = False,
        max_throttled_retries: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(IST),
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 15.0,
    ) -> None:
        if max_throttled_retries < 0:
            raise ValueError(f"max_throttled_retries {max_throttled_retries} must be ≥ 0")
        self.http = http
        self.limiter = limiter
        self.auto_slice = auto_slice
        self.max_throttled_retries = max_throttled_retries
        self._order_headers = {"X-Algo-Name": algo_name} if algo_name else {}
        self._sleep = sleep
        self._now = now
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._send_lock = asyncio.Lock()
        # What this process placed: validity per broker order id (modify must repeat it), and the ids
        # already handed out, so a lookup by tag after a lost answer never claims a sibling slice.
        self._validity: dict[str, Validity] = {}
        self._acknowledged: set[str] = set()
        self._filled_seen: dict[str, int] = {}
        self._trades_seen: set[str] = set()
        self._connection: ClientConnection | None = None
        self._connected = False
        self._closed = asyncio.Event()
        self.sent_at: list[float] = []  # limiter-clock time of every order request sent (tests, audits)

    @property
    def name(self) -> str:
        return "upstox"

    # ---- order requests ------------------------------------------------------------------------

    async def _take_slot(self) -> None:
        while (at := self.limiter.try_acquire_at()) is None:
            await self._sleep(max(self.limiter.wait_s(), 0.0))
        self.sent_at.append(at)

    async def _order_request(
        self,
        method: str,
        path: str,
        identity: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Any:
        """One order request through the limiter; a 429 sends the same request again when the limiter
        allows, up to `max_throttled_retries` times (Upstox refused it unprocessed, so nothing exists)."""
        url = f"{self.http.order_base_url}{path}"
        throttled = 0
        async with self._send_lock:
            while True:
                await self._take_slot()
                try:
                    body = await self.http.send_once(
                        method, url, params=params, payload=payload, headers=self._order_headers
                    )
                except UpstoxRateLimitError as exc:
                    retry = self.limiter.throttled(identity, exc.retry_after_s)
                    throttled += 1
                    log.warning(
                        "upstox order request throttled (429): %s %s for %s, again at %.3f (%d of %d)",
                        method,
                        path,
                        identity,
                        retry.at,
                        throttled,
                        self.max_throttled_retries,
                    )
                    if throttled > self.max_throttled_retries:
                        raise
                    continue
                self.limiter.accepted()
                return body

    async def submit(self, request: OrderRequest) -> SubmitAck:
        tag = request.client_order_id
        if not tag or len(tag) > MAX_TAG_LENGTH or not (tag.isascii() and tag.isalnum()):
            raise SubmitRejected(f"tag {tag!r} is not 1-{MAX_TAG_LENGTH} alphanumeric characters")
        payload = {
            "quantity": request.quantity,
            "product": request.product.value,
            "validity": request.validity.value,
            "price": float(request.limit_price),
            "tag": tag,
            "slice": self.auto_slice,
            "instrument_token": request.instrument_key,
            # Never MARKET: exchanges reject algo market orders in F&O (ports.OrderRequest).
            "order_type": "LIMIT",
            "transaction_type": request.side.value,
            "disclosed_quantity": 0,
            "trigger_price": 0,
            "is_amo": False,
        }
        try:
            body = await self._order_request("POST", PLACE, tag, payload=payload)
            order_ids, latency = _placed(body)
        except UpstoxRateLimitError as exc:
            raise SubmitRejected(f"{tag}: rate limited by Upstox ({exc})", retryable=True) from None
        except (UpstoxNotSentError, UpstoxAuthError, UpstoxBrokerClosedError) as exc:
            # Refused before anything was processed (no connection, bad token, broker closed).
            raise SubmitRejected(f"{tag}: {exc}", retryable=True) from None
        except UpstoxClientError as exc:
            raise SubmitRejected(f"{tag}: {exc}") from None
        except UpstoxError as exc:
            # No answer, a 5xx or an answer we cannot read: the order may exist. Look, never re-send.
            return await self._find_after_lost_answer(request, exc)
        for order_id in order_ids:
            self._validity[order_id] = request.validity
            self._acknowledged.add(order_id)
        slices = tuple(order_ids) if len(order_ids) > 1 else ()
        return SubmitAck(order_ids[0], latency, slices)

    async def _find_after_lost_answer(self, request: OrderRequest, error: UpstoxError) -> SubmitAck:
        tag = request.client_order_id
        try:
            history = await self.order_history(tag)
        except BrokerUnavailable as lookup:
            raise SubmitOutcomeUnknown(f"{tag}: {error}; the lookup by tag failed too ({lookup})") from None
        # Only an unambiguous find is claimed here: the first slice of an attempt, alone under its tag,
        # and of this request's contract, side and size. Anything else (later slices share the tag, and
        # after a failover this process has not acknowledged the earlier slices itself) stays UNKNOWN for
        # the runner's resolution, which knows every slice the basket has already claimed.
        if request.key.slice_index != 0 or len(history) != 1:
            raise SubmitOutcomeUnknown(
                f"{tag}: {error}; {len(history)} order(s) under the tag: left to the resolution by tag"
            )
        found = [
            o
            for o in history
            if o.broker_order_id not in self._acknowledged
            and o.instrument_key == request.instrument_key
            and o.side is request.side
            and o.quantity == request.quantity
        ]
        if not found:
            raise SubmitOutcomeUnknown(f"{tag}: {error}; the order under the tag is not this request")
        order = found[0]
        log.warning(
            "upstox place of %s lost its answer (%s); found order %s by tag",
            tag,
            error,
            order.broker_order_id,
        )
        self._validity[order.broker_order_id] = request.validity
        self._acknowledged.add(order.broker_order_id)
        return SubmitAck(order.broker_order_id, None)

    async def modify(self, broker_order_id: str, limit_price: Decimal) -> None:
        payload = {
            "order_id": broker_order_id,
            "price": float(limit_price),
            "order_type": "LIMIT",
            "validity": self._validity.get(broker_order_id, Validity.DAY).value,
            "trigger_price": 0,
            "disclosed_quantity": 0,
        }
        await self._request_outcome_by_update("PUT", MODIFY, broker_order_id, payload=payload)

    async def cancel(self, broker_order_id: str) -> None:
        await self._request_outcome_by_update(
            "DELETE", CANCEL, broker_order_id, params={"order_id": broker_order_id}
        )

    async def _request_outcome_by_update(
        self,
        method: str,
        path: str,
        broker_order_id: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            await self._order_request(method, path, broker_order_id, params=params, payload=payload)
        except UpstoxClientError as exc:
            # Refused: typically the order already completed or was cancelled. Its updates say which.
            log.info("upstox %s %s for order %s refused: %s", method, path, broker_order_id, exc)
        except UpstoxError as exc:
            raise BrokerUnavailable(f"{method} {path} for order {broker_order_id}: {exc}") from None

    # ---- reads ---------------------------------------------------------------------------------

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        try:
            body = await self.http.get_json(path, params)
        except UpstoxError as exc:
            raise BrokerUnavailable(f"GET {path}: {exc}") from None
        if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
            raise BrokerUnavailable(f"GET {path}: unexpected reply {str(body)[:200]}")
        return body["data"]

    async def order_book(self) -> list[BrokerOrder]:
        rows = await self._read(ORDER_BOOK)
        return [self._order(row, f"GET {ORDER_BOOK}") for row in _rows(rows, ORDER_BOOK)]

    async def order_history(self, client_order_id: str) -> list[BrokerOrder]:
        rows = _rows(await self._read(ORDER_HISTORY, {"tag": client_order_id}), ORDER_HISTORY)
        # One row per status change, oldest first: the last row of each order is its state now.
        latest: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            latest[str(row.get("order_id"))] = row
        return [self._order(row, f"GET {ORDER_HISTORY}") for row in latest.values()]

    async def trades(self) -> list[BrokerTrade]:
        rows = _rows(await self._read(TRADES_FOR_DAY), TRADES_FOR_DAY)
        return _broker_trades(rows, self._now)

    async def positions(self) -> list[BrokerPosition]:
        rows = _rows(await self._read(POSITIONS), POSITIONS)
        positions = []
        for row in rows:
            net = int(row["quantity"])
            average = _decimal(row.get("average_price")) if net else None
            positions.append(BrokerPosition(str(row["instrument_token"]), net, average or None))
        return [p for p in positions if p.net_quantity]

    async def probe(self) -> HealthProbe:
        started = time.perf_counter()
        try:
            await self._read(PROFILE)
        except BrokerUnavailable as exc:
            return HealthProbe(False, None, self._connected, str(exc))
        return HealthProbe(True, (time.perf_counter() - started) * 1000, self._connected)

    # ---- the portfolio stream ------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[BrokerUpdate]:
        backoff = self._reconnect_initial_s
        while not self._closed.is_set():
            try:
                uri = await self._stream_uri()
                async with websockets.connect(uri) as connection:
                    self._connection = connection
                    self._connected = True
                    backoff = self._reconnect_initial_s
                    async for message in connection:
                        async for update in self._on_message(message):
                            yield update
                reason = "portfolio stream closed by Upstox"
            except (BrokerUnavailable, OSError, websockets.WebSocketException) as exc:
                reason = f"portfolio stream unavailable: {type(exc).__name__}: {exc}"
            finally:
                self._connected = False
                self._connection = None
            if self._closed.is_set():
                return
            yield UpdatesInterrupted(reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), backoff)
            backoff = min(backoff * 2, self._reconnect_max_s)

    async def _stream_uri(self) -> str:
        """The single-use WebSocket address Upstox hands out for the portfolio stream (order updates)."""
        data = await self._read(PORTFOLIO_AUTHORIZE, {"update_types": "order"})
        uri = data.get("authorized_redirect_uri") if isinstance(data, dict) else None
        if not isinstance(uri, str) or not uri:
            raise BrokerUnavailable(
                f"GET {PORTFOLIO_AUTHORIZE}: no authorized_redirect_uri in {str(data)[:200]}"
            )
        return uri

    async def _on_message(self, message: str | bytes) -> AsyncIterator[BrokerUpdate]:
        try:
            update = json.loads(message)
            if not isinstance(update, dict):
                raise ValueError(f"not an object: {str(update)[:100]}")
            if update.get("update_type", "order") != "order":
                return
            order = self._order(update, "portfolio stream")
        except (ValueError, KeyError, TypeError) as exc:
            # A message we cannot read is a missed update: the service reads the book back.
            yield UpdatesInterrupted(f"unreadable portfolio-stream message ({exc})")
            return
        yield OrderUpdateReceived(order)
        order_id = order.broker_order_id
        if order.report.filled_qty > self._filled_seen.get(order_id, 0):
            self._filled_seen[order_id] = order.report.filled_qty
            try:
                rows = _rows(await self._read(ORDER_TRADES, {"order_id": order_id}), ORDER_TRADES)
                trades = _broker_trades(rows, self._now)
            except (BrokerUnavailable, ValueError, KeyError, TypeError) as exc:
                yield UpdatesInterrupted(f"trades of order {order_id} unreadable ({exc})")
                return
            for trade in trades:
                if trade.trade.trade_id not in self._trades_seen:
                    self._trades_seen.add(trade.trade.trade_id)
                    yield TradeReceived(trade)

    def _order(self, row: Mapping[str, Any], where: str) -> BrokerOrder:
        order_id = str(row["order_id"])
        quantity = int(row["quantity"])
        report = map_upstox_order(
            status=str(row["status"]),
            quantity=quantity,
            filled_quantity=int(row.get("filled_quantity") or 0),
            average_price=_decimal(row.get("average_price")),
            order_id=order_id,
            status_message=str(row.get("status_message") or ""),
        )
        price = _decimal(row.get("price"))
        return BrokerOrder(
            broker_order_id=order_id,
            client_order_id=str(row.get("tag") or ""),
            instrument_key=str(row["instrument_token"]),
            side=Side(str(row["transaction_type"]).upper()),
            quantity=quantity,
            limit_price=price if price else None,
            report=report,
            ts_event=_time(row.get("exchange_timestamp"))
            or _time(row.get("order_timestamp"))
            or self._received(where, order_id),
        )

    def _received(self, where: str, order_id: str) -> datetime:
        # Orders Upstox has not yet sent to the exchange carry no exchange time: receipt time stands in.
        log.debug("%s: order %s has no readable timestamp; stamped on receipt", where, order_id)
        return self._now()

    async def close(self) -> None:
        self._closed.set()
        connection = self._connection
        if connection is not None:
            await connection.close()
        await self.http.aclose()


def _placed(body: Any) -> tuple[list[str], float | None]:
    """`data.order_ids` and `metadata.latency` of a place reply; ValueError-free: a reply of another
    shape raises UpstoxError (the order may exist: the caller looks it up)."""
    try:
        order_ids = [str(i) for i in body["data"]["order_ids"]]
    except (KeyError, TypeError) as exc:
        raise UpstoxError(f"place reply without data.order_ids ({exc}): {str(body)[:200]}") from None
    if body.get("status") != "success" or not order_ids:
        raise UpstoxError(f"place reply is not a success with order ids: {str(body)[:200]}")
    latency = (body.get("metadata") or {}).get("latency")
    return order_ids, float(latency) if latency is not None else None


def _rows(data: Any, path: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise BrokerUnavailable(f"GET {path}: data is not a list of objects: {str(data)[:200]}")
    return data


def _broker_trades(rows: list[Mapping[str, Any]], now: Callable[[], datetime]) -> list[BrokerTrade]:
    out = []
    firsts: set[str] = set()
    keyed = sorted(rows, key=lambda r: (_time(r.get("exchange_timestamp")) or now(), str(r["trade_id"])))
    for row in keyed:
        order_id = str(row["order_id"])
        price = _decimal(row.get("average_price"))
        if price is None:
            raise ValueError(f"trade {row.get('trade_id')} of order {order_id} has no price")
        out.append(
            BrokerTrade(
                broker_order_id=order_id,
                # Upstox's trade rows carry no tag; the runner routes trades by order id.
                client_order_id=str(row.get("tag") or ""),
                instrument_key=str(row["instrument_token"]),
                side=Side(str(row["transaction_type"]).upper()),
                trade=Trade(
                    trade_id=str(row["trade_id"]),
                    quantity=int(row["quantity"]),
                    price=price,
                    ts_event=_time(row.get("exchange_timestamp")) or now(),
                ),
                first_fill_of_order=order_id not in firsts,
            )
        )
        firsts.add(order_id)
    return out


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        # Through str: a JSON float 123.45 must stay 123.45, not its binary neighbour.
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(value.strip(), fmt).replace(tzinfo=IST)
        except ValueError:
            continue
    return None
