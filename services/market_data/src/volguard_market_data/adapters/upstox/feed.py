"""Upstox Market Data Feed V3 client: authorize → WebSocket → protobuf → latest quote per instrument.

Upstox facts relied on (upstox.com/developer/api-documentation/v3/get-market-data-feed and
.../get-market-data-feed-authorize):
- GET /v3/feed/market-data-feed/authorize returns `data.authorized_redirect_uri`, a wss:// URL that is
  valid for ONE connection (its `code` is single-use), so every reconnect authorizes again;
- frames from the server are binary protobuf `FeedResponse` (proto/MarketDataFeedV3.proto); the first
  is a `market_info` with segment status, then `initial_feed` after a subscribe, then `live_feed`;
- requests are JSON sent as BINARY frames: {"guid", "method": "sub"|"unsub"|"change_mode",
  "data": {"mode", "instrumentKeys"}} (the official SDKs send them with the binary opcode);
- one connection per app and user (Upstox Plus allows more); keys per mode: ltpc 5000, option_greeks
  3000, full 2000 when one mode is used; ltpc 2000, option_greeks 2000, full 1500 when modes are
  combined; full_d30 (Upstox Plus) 50. Over-limit subscriptions are refused here with a clear error,
  before the server silently drops them;
- when there is nothing to send (a quiet market, a closed segment) the server sends only WebSocket
  pings, which the client library answers; a quiet feed is not a dead one;
- a feed message may be partial: an instrument's entry carries only what changed. The proto copy here
  marks the scalars such a frame may leave out as `optional` (wire-identical) so presence is visible;
  sub-messages (ltpc, firstDepth, optionGreeks, marketOHLC) have presence in any proto3.

Partial frames: each field of `FeedQuote` keeps its last value until a frame carries it again, and
`FeedQuote.refreshed_mono` remembers when each field was last carried, so a consumer can flag values
that are old (`stale_fields`) instead of reading a missing field as 0. A top-of-book message, when
present, is the whole top of book: a 0 price in it is an empty side (Upstox's convention), not "unchanged".

Liveness (is the connection alive?) and staleness (is the data fresh?) are separate. Any frame from the
server counts as life: data, a ping, or the pong to the pings this client sends every `ping_interval_s`.
Only `stall_timeout_s` without any of them is a dead connection (reconnect). How old the data is, is the
consumer's business (`UpstoxSource` reports it as STALE in FeedStatus).

Robustness: reconnects with exponential backoff and jitter, re-sends every subscription after a
reconnect, drops undecodable frames (counted and logged, never fatal). A 401 while authorizing stops the
loop (`auth_error`): no retry can revive an expired token (they expire daily at 03:30 IST). During
Upstox's nightly maintenance (UDAPI100074 / UDAPI100072) the loop keeps `broker_closed` set and retries
every `broker_closed_retry_s` until the broker opens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import websockets
from google.protobuf.message import DecodeError
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from volguard_common.clock import IST
from volguard_common.upstox_http import (
    UpstoxAuthError,
    UpstoxBrokerClosedError,
    UpstoxError,
    UpstoxHttp,
)
from volguard_market_data.adapters.upstox.proto import MarketDataFeedV3_pb2

# The generated module builds its classes at import time; typed as Any so mypy does not guess.
pb: Any = MarketDataFeedV3_pb2

log = logging.getLogger(__name__)

AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"


class FeedMode(StrEnum):
    LTPC = "ltpc"
    OPTION_GREEKS = "option_greeks"
    FULL = "full"
    FULL_D30 = "full_d30"


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """Keys allowed per mode on one connection: `individual` when only that mode is used, `combined`
    when several modes share the connection (Upstox V3 "Connection and Subscription Limits")."""

    individual: Mapping[FeedMode, int] = field(
        default_factory=lambda: {
            FeedMode.LTPC: 5000,
            FeedMode.OPTION_GREEKS: 3000,
            FeedMode.FULL: 2000,
            FeedMode.FULL_D30: 50,
        }
    )
    combined: Mapping[FeedMode, int] = field(
        default_factory=lambda: {
            FeedMode.LTPC: 2000,
            FeedMode.OPTION_GREEKS: 2000,
            FeedMode.FULL: 1500,
            FeedMode.FULL_D30: 50,
        }
    )


class SubscriptionLimitError(ValueError):
    """The requested subscriptions exceed what one Upstox feed connection accepts."""


def check_subscriptions(plan: Mapping[FeedMode, Collection[str]], limits: SubscriptionLimits) -> None:
    """Raise SubscriptionLimitError naming every mode over its cap; the plan is left to the caller."""
    check_key_counts({mode: len(keys) for mode, keys in plan.items()}, limits)


def check_key_counts(counts: Mapping[FeedMode, int], limits: SubscriptionLimits) -> None:
    """As `check_subscriptions`, from the number of keys per mode (a plan not yet resolved to keys)."""
    used = {mode: count for mode, count in counts.items() if count}
    caps = limits.combined if len(used) > 1 else limits.individual
    kind = "combined (several modes on one connection)" if len(used) > 1 else "single-mode"
    over = [
        f"{mode.value}: {count} keys > {caps[mode]}" for mode, count in used.items() if count > caps[mode]
    ]
    if over:
        raise SubscriptionLimitError(
            f"Upstox V3 feed subscription limits exceeded ({kind} caps): {'; '.join(over)}. Subscribe fewer "
            "strikes or expiries (e.g. strikes_each_side), or fewer modes; Upstox allows one feed connection "
            "per app and user."
        )


@dataclass(frozen=True, slots=True)
class FeedQuote:
    """Latest state of one instrument from the feed. Prices None = not seen (0 on the wire = empty)."""

    instrument_key: str
    ltp: float | None = None
    ltt: datetime | None = None  # last trade time
    ltq: int | None = None
    prev_close: float | None = None
    bid: float | None = None
    bid_qty: int = 0
    ask: float | None = None
    ask_qty: int = 0
    volume: int | None = None
    oi: int | None = None
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    day_open: float | None = None
    day_high: float | None = None
    day_low: float | None = None
    received_at: datetime | None = None  # wall time (IST) the last update arrived
    received_mono: float = 0.0  # time.monotonic() of the last update
    updates: int = 0
    # time.monotonic() each field was last carried by a frame; a field absent here was never carried.
    refreshed_mono: Mapping[str, float] = field(default_factory=dict)

    def stale_fields(self, now_mono: float, after_s: float) -> tuple[str, ...]:
        """Watched fields holding a value no frame has refreshed for more than `after_s` seconds."""
        return tuple(
            name
            for name in WATCHED_FIELDS
            if name in self.refreshed_mono and now_mono - self.refreshed_mono[name] > after_s
        )


# Fields whose age matters to a trader reading the chain (the last trade has its own STALE_LTP rule).
WATCHED_FIELDS = ("bid", "ask", "volume", "oi", "iv", "delta")


@dataclass(slots=True)
class FeedStats:
    frames: int = 0
    feed_messages: int = 0
    garbage_frames: int = 0
    rejected_updates: int = 0
    connects: int = 0
    disconnects: int = 0
    stalls: int = 0
    reconnects: int = 0
    authorize_failures: int = 0
    subscribe_requests: int = 0
    pings_received: int = 0  # server pings: the server is alive even when it has no data
    pongs_received: int = 0  # answers to our pings
    broker_closed: int = 0  # authorize attempts refused by the nightly maintenance window


class _BadUpdate(ValueError):
    pass


def _price(value: float, name: str) -> float | None:
    if not math.isfinite(value) or value < 0:
        raise _BadUpdate(f"{name}={value}")
    return value if value > 0 else None


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise _BadUpdate(f"{name}={value}")
    return value


def _count(value: float, name: str) -> int:
    if not math.isfinite(value) or value < 0:
        raise _BadUpdate(f"{name}={value}")
    return int(value)


def _epoch_ms(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=IST) if value > 0 else None


def _apply_ltpc(fields: dict[str, Any], ltpc: Any) -> None:
    # Field by field: a partial LTPC (say, only a new close) must not erase the last trade.
    if ltpc.HasField("ltp"):
        fields["ltp"] = _price(ltpc.ltp, "ltp")
    if ltpc.HasField("ltt"):
        fields["ltt"] = _epoch_ms(ltpc.ltt)
    if ltpc.HasField("ltq"):
        fields["ltq"] = _count(ltpc.ltq, "ltq")
    if ltpc.HasField("cp"):
        fields["prev_close"] = _price(ltpc.cp, "cp")


def _apply_totals(fields: dict[str, Any], level: Any) -> None:
    """Volume, OI and IV of a FirstLevelWithGreeks or MarketFullFeed, only those the frame carries."""
    if level.HasField("vtt"):
        fields["volume"] = _count(level.vtt, "vtt")
    if level.HasField("oi"):
        fields["oi"] = _count(level.oi, "oi")
    if level.HasField("iv"):
        fields["iv"] = _finite(level.iv, "iv")


def _apply_depth(fields: dict[str, Any], quote: Any) -> None:
    fields["bid"] = _price(quote.bidP, "bidP")
    fields["ask"] = _price(quote.askP, "askP")
    fields["bid_qty"] = _count(quote.bidQ, "bidQ")
    fields["ask_qty"] = _count(quote.askQ, "askQ")


def _apply_greeks(fields: dict[str, Any], greeks: Any) -> None:
    for name in ("delta", "gamma", "theta", "vega"):
        fields[name] = _finite(getattr(greeks, name), name)


def _apply_ohlc(fields: dict[str, Any], market_ohlc: Any) -> None:
    for bar in market_ohlc.ohlc:
        if bar.interval == "1d":
            fields["day_open"] = _price(bar.open, "open")
            fields["day_high"] = _price(bar.high, "high")
            fields["day_low"] = _price(bar.low, "low")


def feed_update_fields(feed: Any) -> dict[str, Any]:
    """The FeedQuote fields one protobuf `Feed` carries; raises _BadUpdate on impossible numbers."""
    fields: dict[str, Any] = {}
    which = feed.WhichOneof("FeedUnion")
    if which == "ltpc":
        _apply_ltpc(fields, feed.ltpc)
    elif which == "firstLevelWithGreeks":
        level = feed.firstLevelWithGreeks
        if level.HasField("ltpc"):
            _apply_ltpc(fields, level.ltpc)
        if level.HasField("firstDepth"):
            _apply_depth(fields, level.firstDepth)
        if level.HasField("optionGreeks"):
            _apply_greeks(fields, level.optionGreeks)
        _apply_totals(fields, level)
    elif which == "fullFeed":
        kind = feed.fullFeed.WhichOneof("FullFeedUnion")
        if kind == "marketFF":
            market = feed.fullFeed.marketFF
            if market.HasField("ltpc"):
                _apply_ltpc(fields, market.ltpc)
            if market.HasField("marketLevel") and market.marketLevel.bidAskQuote:
                _apply_depth(fields, market.marketLevel.bidAskQuote[0])
            if market.HasField("optionGreeks"):
                _apply_greeks(fields, market.optionGreeks)
            if market.HasField("marketOHLC"):
                _apply_ohlc(fields, market.marketOHLC)
            _apply_totals(fields, market)
        elif kind == "indexFF":
            index = feed.fullFeed.indexFF
            if index.HasField("ltpc"):
                _apply_ltpc(fields, index.ltpc)
            if index.HasField("marketOHLC"):
                _apply_ohlc(fields, index.marketOHLC)
        else:
            raise _BadUpdate("fullFeed without marketFF or indexFF")
    # An entry with no payload at all says "nothing new" for that instrument: no fields, no update.
    return fields


class _LivenessConnection(ClientConnection):
    """A client connection that notes every frame the server sends, control frames included.

    websockets answers pings and matches pongs itself and hands only data to `recv()`; liveness needs
    to see the others too. `process_event` is the hook the library's subclasses override for this."""

    last_frame_mono: float = 0.0
    pings: int = 0
    pongs: int = 0

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):
            self.last_frame_mono = time.monotonic()
            if event.opcode is Opcode.PING:
                self.pings += 1
            elif event.opcode is Opcode.PONG:
                self.pongs += 1
        super().process_event(event)


def subscription_request(method: str, keys: Iterable[str], mode: FeedMode | None = None) -> bytes:
    data: dict[str, Any] = {"instrumentKeys": list(keys)}
    if mode is not None:
        data["mode"] = mode.value
    return json.dumps({"guid": uuid.uuid4().hex, "method": method, "data": data}).encode()


class MarketFeed:
    """One V3 feed connection kept alive, with the latest quote per subscribed instrument in `quotes`."""

    def __init__(
        self,
        http: UpstoxHttp,
        *,
        authorize_path: str = AUTHORIZE_PATH,
        stall_timeout_s: float = 10.0,
        ping_interval_s: float | None = 3.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        broker_closed_retry_s: float = 60.0,
        limits: SubscriptionLimits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if ping_interval_s is not None and ping_interval_s >= stall_timeout_s:
            raise ValueError(
                f"ping_interval_s ({ping_interval_s}) must be shorter than stall_timeout_s "
                f"({stall_timeout_s}): a quiet server is known to be alive by its pongs"
            )
        self.http = http
        self.authorize_path = authorize_path
        self.stall_timeout_s = stall_timeout_s
        self.ping_interval_s = ping_interval_s
        self.broker_closed_retry_s = broker_closed_retry_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.limits = limits or SubscriptionLimits()
        self._rng = rng or random.Random()
        self.quotes: dict[str, FeedQuote] = {}
        self.segment_status: dict[str, str] = {}
        self.stats = FeedStats()
        self.auth_error: UpstoxAuthError | None = None
        # Set while Upstox refuses the feed for its nightly maintenance; cleared by the next connect.
        self.broker_closed: UpstoxBrokerClosedError | None = None
        self.last_error: str = ""
        self.last_message_mono: float | None = None
        self.last_message_at: datetime | None = None
        self.last_server_ts: datetime | None = None
        self.connected_since_mono: float | None = None
        self._subscriptions: dict[FeedMode, dict[str, None]] = {mode: {} for mode in FeedMode}
        self._ws: _LivenessConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()

    # ---- subscriptions -----------------------------------------------------------------------------

    @property
    def subscriptions(self) -> dict[FeedMode, tuple[str, ...]]:
        return {mode: tuple(keys) for mode, keys in self._subscriptions.items() if keys}

    @property
    def subscribed_count(self) -> int:
        return sum(len(keys) for keys in self._subscriptions.values())

    async def subscribe(self, keys: Iterable[str], mode: FeedMode) -> None:
        """Add keys in `mode` (moving them from another mode); refused whole if it would break a cap."""
        wanted = list(dict.fromkeys(keys))
        plan = {m: dict(existing) for m, existing in self._subscriptions.items()}
        moved: list[str] = []
        for key in wanted:
            for other, existing in plan.items():
                if other is not mode and key in existing:
                    del existing[key]
                    moved.append(key)
            plan[mode][key] = None
        check_subscriptions(plan, self.limits)
        new = [key for key in wanted if key not in self._subscriptions[mode] and key not in moved]
        self._subscriptions = plan
        if new:
            await self._send(subscription_request("sub", new, mode))
        if moved:
            await self._send(subscription_request("change_mode", moved, mode))

    async def unsubscribe(self, keys: Iterable[str]) -> None:
        gone = [
            key for key in dict.fromkeys(keys) if any(key in subs for subs in self._subscriptions.values())
        ]
        for subs in self._subscriptions.values():
            for key in gone:
                subs.pop(key, None)
        for key in gone:
            self.quotes.pop(key, None)
        if gone:
            await self._send(subscription_request("unsub", gone))

    async def _send(self, payload: bytes) -> None:
        ws = self._ws
        if ws is None:
            return  # sent on (re)connect from the remembered plan
        self.stats.subscribe_requests += 1
        try:
            await ws.send(payload)  # bytes → binary frame, as the V3 feed expects
        except websockets.ConnectionClosed:
            log.info("upstox feed: connection closed while sending a subscription; resent after reconnect")

    async def _send_all(self, ws: _LivenessConnection) -> None:
        for mode, keys in self._subscriptions.items():
            if keys:
                self.stats.subscribe_requests += 1
                await ws.send(subscription_request("sub", keys, mode))

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="upstox-feed")

    async def wait_connected(self) -> None:
        await self._connected.wait()

    @property
    def pings_received(self) -> int:
        """Server pings over every connection so far, the open one included."""
        return self.stats.pings_received + (self._ws.pings if self._ws is not None else 0)

    @property
    def pongs_received(self) -> int:
        return self.stats.pongs_received + (self._ws.pongs if self._ws is not None else 0)

    async def close(self) -> None:
        self._closing.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _authorize(self) -> str:
        body = await self.http.get_json(self.authorize_path)
        data = body.get("data") if isinstance(body, dict) else None
        url = data.get("authorized_redirect_uri") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise UpstoxError(f"feed authorize: no authorized_redirect_uri in response {str(body)[:200]}")
        return url

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                url = await self._authorize()
            except UpstoxAuthError as exc:
                self.auth_error = exc
                self.last_error = str(exc)
                log.error("upstox feed stopped: %s", exc)
                return
            except UpstoxBrokerClosedError as exc:
                self.stats.broker_closed += 1
                if self.broker_closed is None:
                    log.warning("upstox feed: broker closed, waiting for it to open: %s", exc)
                self.broker_closed = exc
                self.last_error = str(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=self.broker_closed_retry_s)
                continue
            except UpstoxError as exc:
                self.stats.authorize_failures += 1
                self.last_error = str(exc)
                log.warning("upstox feed authorize failed: %s", exc)
                await self._backoff(attempt)
                attempt += 1
                continue
            healthy = False
            try:
                async with websockets.connect(
                    url,
                    open_timeout=self.open_timeout_s,
                    max_size=16 * 2**20,
                    compression=None,
                    create_connection=_LivenessConnection,
                    # Our pings keep a quiet connection provably alive (the pong is a frame); the
                    # library's own timeout is off so that `stall_timeout_s` is the one rule.
                    ping_interval=self.ping_interval_s,
                    ping_timeout=None,
                    # A hung server never answers our close frame; waiting the library's 10 s for it
                    # would delay the reconnect that a dead connection needs.
                    close_timeout=min(1.0, self.stall_timeout_s),
                ) as opened:
                    if not isinstance(opened, _LivenessConnection):  # create_connection= guarantees it
                        raise TypeError(f"websockets returned {type(opened).__name__}")
                    ws = opened
                    ws.last_frame_mono = time.monotonic()
                    self._ws = ws
                    self.broker_closed = None
                    self.connected_since_mono = time.monotonic()
                    self.stats.connects += 1
                    self._connected.set()
                    log.info("upstox feed connected (%d instruments)", self.subscribed_count)
                    await self._send_all(ws)
                    healthy = await self._receive(ws)
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("upstox feed connection failed: %s", self.last_error)
            finally:
                if self._ws is not None:
                    self.stats.pings_received += self._ws.pings
                    self.stats.pongs_received += self._ws.pongs
                self._ws = None
                self._connected.clear()
            if self._closing.is_set():
                return
            self.stats.reconnects += 1
            attempt = 0 if healthy else attempt + 1
            await self._backoff(attempt)

    async def _backoff(self, attempt: int) -> None:
        step = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
        delay = step / 2 + self._rng.uniform(0, step / 2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=delay)

    async def _receive(self, ws: _LivenessConnection) -> bool:
        """Read frames until the socket closes or goes silent; True if any data frame arrived."""
        got_any = False
        # Look at liveness a few times per timeout; recv() is safe to cancel and resume.
        check_s = self.stall_timeout_s / 4
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), timeout=check_s)
            except TimeoutError:
                silent_s = time.monotonic() - ws.last_frame_mono
                if silent_s < self.stall_timeout_s:
                    continue  # pings or pongs still arrive: quiet market, live connection
                self.stats.stalls += 1
                self.last_error = f"no frame (data, ping or pong) for {silent_s:.1f}s"
                log.warning(
                    "upstox feed dead: no frame, ping or pong for %.1fs; reconnecting", self.stall_timeout_s
                )
                await ws.close()
                return got_any
            except websockets.ConnectionClosed as exc:
                self.stats.disconnects += 1
                self.last_error = f"connection closed ({exc})"
                log.warning("upstox feed disconnected: %s", exc)
                return got_any
            got_any = True
            self.handle_frame(frame)

    # ---- decoding ----------------------------------------------------------------------------------

    def handle_frame(self, frame: bytes | str) -> None:
        """Decode one frame and fold it into `quotes`; garbage is counted and logged, never raised."""
        self.stats.frames += 1
        now_mono = time.monotonic()
        now = datetime.now(IST)
        if isinstance(frame, str):
            self._garbage(f"text frame {frame[:60]!r}")
            return
        try:
            response = pb.FeedResponse.FromString(frame)
        except DecodeError as exc:
            self._garbage(f"undecodable protobuf ({len(frame)} bytes: {exc})")
            return
        # Only a frame that decodes counts as life: garbage must not keep a dead feed looking fresh.
        self.last_message_mono = now_mono
        self.last_message_at = now
        server_ts = _epoch_ms(response.currentTs)
        if server_ts is not None:
            self.last_server_ts = server_ts
        if response.type == pb.market_info:
            for segment, status in response.marketInfo.segmentStatus.items():
                self.segment_status[segment] = pb.MarketStatus.Name(status)
            return
        self.stats.feed_messages += 1
        for key, feed in response.feeds.items():
            try:
                fields = feed_update_fields(feed)
            except _BadUpdate as exc:
                self.stats.rejected_updates += 1
                log.warning("upstox feed: rejected update for %s (%s)", key, exc)
                continue
            if not fields:
                continue
            previous = self.quotes.get(key) or FeedQuote(instrument_key=key)
            # Only the fields this frame carried change; the rest keep their value and their age.
            refreshed = {**previous.refreshed_mono, **dict.fromkeys(fields, now_mono)}
            self.quotes[key] = replace(
                previous,
                **fields,
                received_at=now,
                received_mono=now_mono,
                updates=previous.updates + 1,
                refreshed_mono=refreshed,
            )

    def _garbage(self, what: str) -> None:
        self.stats.garbage_frames += 1
        log.warning("upstox feed: dropped garbage frame #%d: %s", self.stats.garbage_frames, what)
