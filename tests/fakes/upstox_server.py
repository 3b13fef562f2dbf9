"""A real fake Upstox on 127.0.0.1: REST (feed authorize, option chain, instrument master, one POST) and
the V3 market-data WebSocket speaking the documented protobuf. Runs uvicorn in a background thread on a
free port; tests steer it (and make it misbehave) through plain methods and attributes.

Wire shapes follow the Upstox docs the adapter cites: bearer token auth, `{"status": "error", "errors":
[{"errorCode", "message"}]}` errors, `data.authorized_redirect_uri` with a single-use code, binary
protobuf FeedResponse frames (market_info first, initial_feed after a subscribe, then live_feed), and
JSON subscription requests in binary frames.

Feed misbehaviour the tests can ask for: `stalled` (a hung server: no frames and no pongs), `quiet` (a
quiet market: no data, only a WebSocket ping every `ping_every_s`, as Upstox does when idle), `omit`
(partial frames: leave those parts out of every option entry) and `start_maintenance()` (the nightly
window: REST answers UDAPI100074 and open feed sockets are closed).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request as HandshakeRequest

from tests.support.waiting import eventually_sync
from volguard_common.clock import IST
from volguard_market_data.adapters.upstox.proto import MarketDataFeedV3_pb2

pb: Any = MarketDataFeedV3_pb2

TOKEN = "test-token"
NIFTY_INDEX_KEY = "NSE_INDEX|Nifty 50"
INDIA_VIX_KEY = "NSE_INDEX|India VIX"
# Deliberately bad bytes: a length-delimited field claiming far more bytes than follow.
DEFAULT_STRIKES: tuple[float, ...] = tuple(float(strike) for strike in range(23_800, 24_201, 50))
GARBAGE_FRAME = b"\x12\xff\xff\xff\xff\x0fnot a FeedResponse"
# Parts of an option entry a partial frame can leave out (see FakeUpstox.omit).
PARTIAL_PARTS = frozenset({"ltpc", "depth", "greeks", "vtt", "oi", "iv"})
MAINTENANCE_CODE = "UDAPI100074"


@dataclass
class FakeQuote:
    """Prices None = nothing on that side (sent as 0 on the wire, as Upstox does)."""

    bid: float | None
    ask: float | None
    ltp: float | None
    bid_qty: int = 650
    ask_qty: int = 650
    volume: int = 1000
    oi: int = 50_000
    iv: float = 14.0


@dataclass
class FakeContract:
    key: str
    expiry: date
    strike: float
    option_type: str  # "CE" | "PE"


@dataclass
class Failure:
    status: int
    retry_after: str | None = None


@dataclass
class Connection:
    id: int
    subscriptions: dict[str, str] = field(default_factory=dict)  # key → mode
    requests: list[dict[str, Any]] = field(default_factory=list)


def _theoretical(spot: float, strike: float, option_type: str) -> float:
    intrinsic = max(spot - strike, 0.0) if option_type == "CE" else max(strike - spot, 0.0)
    return round(intrinsic + 120.0 * math.exp(-abs(strike - spot) / 250.0), 2)


class FakeUpstox:
    def __init__(
        self,
        *,
        spot: float = 24_000.0,
        vix: float = 13.5,
        expiries: tuple[date, ...] = (date(2026, 1, 13), date(2026, 1, 20)),
        strikes: tuple[float, ...] = DEFAULT_STRIKES,
        feed_interval_s: float = 0.02,
    ) -> None:
        self.spot = spot
        self.vix = vix
        self.expiries = expiries
        self.feed_interval_s = feed_interval_s
        self.contracts: list[FakeContract] = []
        self.quotes: dict[str, FakeQuote] = {}
        serial = 40_000
        for expiry in expiries:
            for strike in strikes:
                for option_type in ("CE", "PE"):
                    serial += 1
                    key = f"NSE_FO|{serial}"
                    self.contracts.append(FakeContract(key, expiry, strike, option_type))
                    mid = _theoretical(spot, strike, option_type)
                    self.quotes[key] = FakeQuote(bid=round(mid - 0.5, 2), ask=round(mid + 0.5, 2), ltp=mid)
            # One strike listed only as a call: that row cannot be published and must be counted.
            serial += 1
            lone = FakeContract(f"NSE_FO|{serial}", expiry, strikes[-1] + 50, "CE")
            self.contracts.append(lone)
            self.quotes[lone.key] = FakeQuote(bid=1.0, ask=1.2, ltp=1.1)
        self.index_ltp = {NIFTY_INDEX_KEY: spot, INDIA_VIX_KEY: vix}
        # ---- misbehaviour, set by tests ----
        self.failures: dict[tuple[str, str], list[Failure]] = {}
        self.reject_token = False
        self.chain_body: bytes | None = None  # raw override of the option chain response body
        self.stalled = False
        self.quiet = False
        self.ping_every_s = 0.05
        self.omit: set[str] = set()
        self.maintenance = False
        # Upstox does not document the HTTP status that goes with UDAPI100074; the adapter reads the code.
        self.maintenance_status = 423
        # ---- market information (GET /v2/market/holidays, /v2/market/timings/{date}) ----
        # Bodies' `data` entries as Upstox sends them; timings by ISO date (a day not listed: NFO and
        # NSE trade 09:15-15:30 before 3 Aug 2026 and 09:15-15:40 from then on, as the exchange said).
        self.market_holidays: list[dict[str, Any]] = []
        self.market_timings: dict[str, list[dict[str, Any]]] = {}
        self.garbage_to_send = 0
        self._drop_generation = 0
        # ---- what happened, read by tests ----
        self.requests: list[tuple[str, str]] = []
        self.connections: list[Connection] = []
        self.bad_subscription_messages = 0
        self.rejected_feed_codes = 0
        self.pings_sent = 0
        self.data_frames_sent = 0
        self._issued_codes: set[str] = set()
        self._closing = False
        self._sequence = 0
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- steering -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instruments_url(self) -> str:
        return f"{self.base_url}/market-quote/instruments/exchange/NSE.json.gz"

    def fail(
        self, method: str, path: str, status: int, times: int = 1, retry_after: str | None = None
    ) -> None:
        """The next `times` calls of `method path` answer `status` (before any real handling)."""
        self.failures.setdefault((method, path), []).extend(
            Failure(status, retry_after) for _ in range(times)
        )

    def drop_connections(self) -> None:
        """Close every open feed socket abruptly (code 1011), as a dying server would."""
        self._drop_generation += 1

    def start_maintenance(self) -> None:
        """Enter the nightly window: REST refuses with UDAPI100074 and the feed sockets close."""
        self.maintenance = True
        self.drop_connections()

    def end_maintenance(self) -> None:
        self.maintenance = False

    def send_garbage(self, frames: int) -> None:
        self.garbage_to_send += frames

    def count(self, method: str, path: str) -> int:
        return sum(1 for seen in self.requests if seen == (method, path))

    def contract_key(self, expiry: date, strike: float, option_type: str) -> str:
        for contract in self.contracts:
            if (contract.expiry, contract.strike, contract.option_type) == (expiry, strike, option_type):
                return contract.key
        raise KeyError((expiry, strike, option_type))

    # ---- REST -----------------------------------------------------------------------------------

    def _gate(self, request: Request, *, auth: bool = True) -> Response | None:
        self.requests.append((request.method, request.url.path))
        planned = self.failures.get((request.method, request.url.path))
        if planned:
            failure = planned.pop(0)
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            code = {429: "UDAPI10005", 401: "UDAPI100050"}.get(failure.status, "UDAPI100500")
            return _error(failure.status, code, f"fake failure {failure.status}", headers)
        if auth and (self.reject_token or request.headers.get("Authorization") != f"Bearer {TOKEN}"):
            return _error(401, "UDAPI100050", "Invalid token used to access API")
        if auth and self.maintenance:
            return _error(
                self.maintenance_status, MAINTENANCE_CODE, "API is accessible from 5:30 AM to 12:00 AM IST"
            )
        return None

    async def holidays(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        return JSONResponse({"status": "success", "data": self.market_holidays})

    async def timings(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        day = date.fromisoformat(request.path_params["day"])
        listed = self.market_timings.get(day.isoformat())
        if listed is None:
            close = (15, 30) if day < date(2026, 8, 3) else (15, 40)
            listed = [
                {"exchange": exchange, "start_time": ist_ms(day, 9, 15), "end_time": ist_ms(day, *close)}
                for exchange in ("NSE", "NFO")
            ]
        return JSONResponse({"status": "success", "data": listed})

    async def authorize(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        code = uuid.uuid4().hex
        self._issued_codes.add(code)
        url = f"ws://127.0.0.1:{self.port}/market-data-feeder/v3/feeds?requestId={uuid.uuid4()}&code={code}"
        return JSONResponse(
            {"status": "success", "data": {"authorized_redirect_uri": url, "authorizedRedirectUri": url}}
        )

    async def option_chain(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        if self.chain_body is not None:
            return Response(self.chain_body, media_type="application/json")
        if request.query_params.get("instrument_key") != NIFTY_INDEX_KEY:
            return _error(400, "UDAPI1087", "Invalid instrument key")
        expiry = date.fromisoformat(request.query_params["expiry_date"])
        by_strike: dict[float, dict[str, FakeContract]] = {}
        for contract in self.contracts:
            if contract.expiry == expiry:
                by_strike.setdefault(contract.strike, {})[contract.option_type] = contract
        data = []
        for strike in sorted(by_strike):
            sides = by_strike[strike]
            row: dict[str, Any] = {
                "expiry": expiry.isoformat(),
                "pcr": 1.0,
                "strike_price": strike,
                "underlying_key": NIFTY_INDEX_KEY,
                "underlying_spot_price": self.spot,
            }
            for option_type, name in (("CE", "call_options"), ("PE", "put_options")):
                if option_type in sides:
                    row[name] = self._rest_side(sides[option_type].key)
            data.append(row)
        return JSONResponse({"status": "success", "data": data})

    def _rest_side(self, key: str) -> dict[str, Any]:
        quote = self.quotes[key]
        return {
            "instrument_key": key,
            "market_data": {
                "ltp": quote.ltp or 0,
                "volume": quote.volume,
                "oi": quote.oi,
                "close_price": quote.ltp or 0,
                "bid_price": quote.bid or 0,
                "bid_qty": quote.bid_qty if quote.bid else 0,
                "ask_price": quote.ask or 0,
                "ask_qty": quote.ask_qty if quote.ask else 0,
                "prev_oi": quote.oi,
            },
            "option_greeks": {
                "vega": 10.0,
                "theta": -5.0,
                "gamma": 0.001,
                "delta": 0.5,
                "iv": 14.0,
                "pop": 50.0,
            },
        }

    async def instruments(self, request: Request) -> Response:
        if (refused := self._gate(request, auth=False)) is not None:
            return refused
        rows: list[dict[str, Any]] = [
            {
                "segment": "NSE_INDEX",
                "instrument_key": NIFTY_INDEX_KEY,
                "name": "Nifty 50",
                "instrument_type": "INDEX",
            },
            {
                "segment": "NSE_FO",
                "instrument_key": "NSE_FO|99001",
                "underlying_symbol": "BANKNIFTY",
                "name": "BANKNIFTY",
                "instrument_type": "CE",
                "expiry": _expiry_ms(self.expiries[0]),
                "strike_price": 50_000.0,
                "lot_size": 30,
                "tick_size": 5.0,
            },
            # A NIFTY row Upstox garbled: read nothing from it, count it.
            {
                "segment": "NSE_FO",
                "instrument_key": "NSE_FO|99002",
                "underlying_symbol": "NIFTY",
                "instrument_type": "PE",
                "expiry": _expiry_ms(self.expiries[0]),
                "strike_price": "abc",
                "lot_size": 65,
                "tick_size": 5.0,
            },
        ]
        for contract in self.contracts:
            rows.append(
                {
                    "segment": "NSE_FO",
                    "name": "NIFTY",
                    "exchange": "NSE",
                    "expiry": _expiry_ms(contract.expiry),
                    "weekly": True,
                    "instrument_key": contract.key,
                    "exchange_token": contract.key.split("|")[1],
                    "trading_symbol": f"NIFTY {contract.strike:.0f} {contract.option_type}",
                    "tick_size": 5.0,
                    "lot_size": 65,
                    "instrument_type": contract.option_type,
                    "freeze_quantity": 1800.0,
                    "underlying_key": NIFTY_INDEX_KEY,
                    "underlying_type": "INDEX",
                    "underlying_symbol": "NIFTY",
                    "strike_price": contract.strike,
                    "minimum_lot": 65,
                }
            )
        return Response(gzip.compress(json.dumps(rows).encode()), media_type="application/gzip")

    async def place_order(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        return JSONResponse({"status": "success", "data": {"order_id": "250101000000001"}})

    # ---- WebSocket feed -------------------------------------------------------------------------

    async def feed(self, websocket: WebSocket) -> None:
        code = websocket.query_params.get("code")
        if code not in self._issued_codes:
            # The authorized URL is single-use: a reused or invented code is refused.
            self.rejected_feed_codes += 1
            await websocket.close(code=1008)
            return
        self._issued_codes.discard(code)
        await websocket.accept()
        connection = Connection(id=len(self.connections) + 1)
        self.connections.append(connection)
        info = pb.FeedResponse(type=pb.market_info, currentTs=_now_ms())
        info.marketInfo.segmentStatus["NSE_FO"] = pb.NORMAL_OPEN
        info.marketInfo.segmentStatus["NSE_INDEX"] = pb.NORMAL_OPEN
        await websocket.send_bytes(info.SerializeToString())
        reader = asyncio.create_task(self._read_requests(websocket, connection))
        generation = self._drop_generation
        fresh: set[str] = set()
        # ASGI has no ping message; the uvicorn protocol does (see _PingableProtocol).
        protocol: WebSocketsSansIOProtocol = websocket.scope[PROTOCOL_SCOPE_KEY]
        hung = False
        last_ping = time.monotonic()
        try:
            while not reader.done() and not self._closing:
                if self._drop_generation != generation:
                    await websocket.close(code=1011)
                    return
                if self.stalled != hung:
                    # A hung server reads nothing, so it answers no pings either.
                    hung = self.stalled
                    if hung:
                        protocol.transport.pause_reading()
                    else:
                        protocol.transport.resume_reading()
                if self.stalled:
                    pass
                elif self.garbage_to_send > 0:
                    self.garbage_to_send -= 1
                    await websocket.send_bytes(GARBAGE_FRAME)
                elif self.quiet:
                    if time.monotonic() - last_ping >= self.ping_every_s:
                        last_ping = time.monotonic()
                        self._ping(protocol)
                elif connection.subscriptions:
                    new = set(connection.subscriptions) - fresh
                    fresh |= new
                    await websocket.send_bytes(self._feed_frame(connection, initial=bool(new)))
                    self.data_frames_sent += 1
                await asyncio.sleep(self.feed_interval_s)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            reader.cancel()

    def _ping(self, protocol: WebSocketsSansIOProtocol) -> None:
        # uvicorn's websockets-sansio protocol: queue a ping on the sans-I/O connection, write it out.
        protocol.conn.send_ping(str(self.pings_sent).encode())
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        self.pings_sent += 1

    async def _read_requests(self, websocket: WebSocket, connection: Connection) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("bytes") or (message.get("text") or "").encode()
            try:
                request = json.loads(raw)
                method, data = request["method"], request["data"]
                keys = data["instrumentKeys"]
            except (ValueError, KeyError, TypeError):
                self.bad_subscription_messages += 1
                continue
            connection.requests.append(request)
            if method == "sub":
                for key in keys:
                    connection.subscriptions[key] = data.get("mode", "ltpc")
            elif method == "change_mode":
                for key in keys:
                    if key in connection.subscriptions:
                        connection.subscriptions[key] = data["mode"]
            elif method == "unsub":
                for key in keys:
                    connection.subscriptions.pop(key, None)

    def _feed_frame(self, connection: Connection, *, initial: bool) -> bytes:
        self._sequence += 1
        now_ms = _now_ms()
        response = pb.FeedResponse(type=pb.initial_feed if initial else pb.live_feed, currentTs=now_ms)
        for key, mode in list(connection.subscriptions.items()):
            feed = response.feeds[key]
            if key in self.index_ltp:
                ltp = self.index_ltp[key]
                if mode == "ltpc":
                    _fill_ltpc(feed.ltpc, ltp, now_ms, ltp)
                else:
                    index = feed.fullFeed.indexFF
                    _fill_ltpc(index.ltpc, ltp, now_ms, ltp * 0.99)
                    bar = index.marketOHLC.ohlc.add()
                    bar.interval, bar.open, bar.high, bar.low, bar.close = (
                        "1d",
                        ltp * 0.995,
                        ltp * 1.01,
                        ltp * 0.99,
                        ltp,
                    )
                    feed.requestMode = pb.full_d5
                continue
            quote = self.quotes.get(key)
            if quote is None:
                continue
            if mode == "ltpc":
                _fill_ltpc(feed.ltpc, quote.ltp or 0.0, now_ms, quote.ltp or 0.0)
            elif mode == "option_greeks":
                level = feed.firstLevelWithGreeks
                # Touch the union member even when every part is omitted: an entry with nothing new.
                level.SetInParent()
                omit = self.omit
                if "ltpc" not in omit:
                    _fill_ltpc(level.ltpc, quote.ltp or 0.0, now_ms, quote.ltp or 0.0)
                if "depth" not in omit:
                    level.firstDepth.bidP, level.firstDepth.askP = quote.bid or 0.0, quote.ask or 0.0
                    level.firstDepth.bidQ = quote.bid_qty if quote.bid else 0
                    level.firstDepth.askQ = quote.ask_qty if quote.ask else 0
                if "greeks" not in omit:
                    level.optionGreeks.delta, level.optionGreeks.vega = 0.5, 10.0
                if "vtt" not in omit:
                    level.vtt = quote.volume + self._sequence
                if "oi" not in omit:
                    level.oi = float(quote.oi)
                if "iv" not in omit:
                    level.iv = quote.iv
                feed.requestMode = pb.option_greeks
            else:
                market = feed.fullFeed.marketFF
                _fill_ltpc(market.ltpc, quote.ltp or 0.0, now_ms, quote.ltp or 0.0)
                level = market.marketLevel.bidAskQuote.add()
                level.bidP, level.askP, level.bidQ, level.askQ = quote.bid or 0.0, quote.ask or 0.0, 650, 650
                market.vtt, market.oi = quote.volume, float(quote.oi)
                feed.requestMode = pb.full_d5
        return bytes(response.SerializeToString())

    # ---- running --------------------------------------------------------------------------------

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v3/feed/market-data-feed/authorize", self.authorize, methods=["GET"]),
                Route("/v2/option/chain", self.option_chain, methods=["GET"]),
                Route("/market-quote/instruments/exchange/NSE.json.gz", self.instruments, methods=["GET"]),
                Route("/v2/order/place", self.place_order, methods=["POST"]),
                Route("/v2/market/holidays", self.holidays, methods=["GET"]),
                Route("/v2/market/timings/{day}", self.timings, methods=["GET"]),
                WebSocketRoute("/market-data-feeder/v3/feeds", self.feed),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws=_PingableProtocol,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        server = self._server
        eventually_sync(lambda: server.started, what="fake Upstox server started", poll_s=0.01)

    def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()


PROTOCOL_SCOPE_KEY = "fake_upstox.protocol"


class _PingableProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, handing itself to the app in the scope so the fake can send
    WebSocket pings and stop reading (ASGI has no message for either)."""

    def handle_connect(self, event: HandshakeRequest) -> None:
        super().handle_connect(event)
        scope: Any = self.scope  # set by super(); the ASGI task it started has not run yet
        scope[PROTOCOL_SCOPE_KEY] = self


@contextmanager
def running_fake_upstox(**kwargs: Any) -> Iterator[FakeUpstox]:
    fake = FakeUpstox(**kwargs)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "status": "error",
        "errors": [{"errorCode": code, "message": message, "propertyPath": None, "invalidValue": None}],
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _fill_ltpc(ltpc: Any, ltp: float, now_ms: int, close: float) -> None:
    ltpc.ltp, ltpc.ltt, ltpc.ltq, ltpc.cp = ltp, now_ms, 65, close


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _expiry_ms(expiry: date) -> int:
    # The master stamps an expiry as the last moment of the expiry day, IST.
    return int(datetime.combine(expiry, dtime(23, 59, 59), tzinfo=IST).timestamp() * 1000)


def ist_ms(day: date, hour: int, minute: int) -> int:
    """Epoch milliseconds of `hour:minute` IST on `day`, as Upstox's market information gives times."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=IST).timestamp() * 1000)
