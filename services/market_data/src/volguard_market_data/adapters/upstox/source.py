"""`UpstoxSource`: the live Upstox market as a `ports.MarketSource`.

Start-up: load the instrument master (expiries, strikes, keys, lot and tick size), fetch the REST option
chain of every configured expiry (initial quotes, OI and spot), subscribe the option keys in
`option_greeks` mode (top of book, greeks, OI, volume) and NIFTY 50 and India VIX in `full` mode (day
OHLC for the realised-vol estimators), then start the feed.

Every `interval_s` one batch: a ChainSnapshot per expiry from the latest feed quotes (REST quotes where
the feed has not spoken yet), a Tick for the index and for India VIX when they updated, and a FeedStatus.
Health per instrument (tick age) and per expiry (snapshot age) is in `health()`; token trouble (expired,
expiring, rejected) is in `token_alert()` for the service to publish as an Alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from volguard_common.clock import Clock, LiveClock
from volguard_common.events import (
    Alert,
    ChainSnapshot,
    EventBase,
    FeedState,
    FeedStatus,
    InstrumentKind,
    MarketMode,
    Severity,
    Tick,
)
from volguard_common.settings import Settings
from volguard_market_data.adapters.upstox.chain import (
    ChainRow,
    OptionChainClient,
    RestChain,
    SideQuote,
    build_snapshot,
)
from volguard_market_data.adapters.upstox.feed import FeedMode, FeedQuote, MarketFeed, SubscriptionLimits
from volguard_market_data.adapters.upstox.http import (
    TOKEN_HELP,
    RateLimits,
    UpstoxError,
    UpstoxHttp,
    token_expiry_after,
)
from volguard_market_data.adapters.upstox.instruments import (
    INDIA_VIX_KEY,
    NIFTY_INDEX_KEY,
    ExpiryContracts,
    NiftyOptionUniverse,
    load_instrument_master,
    subscription_keys,
)
from volguard_market_data.ports import MarketBatch, Publication

log = logging.getLogger(__name__)

DEFAULT_INSTRUMENT_MASTER_URL = "https://assets.upstox.com/market-quote/instruments/exchange/NSE.json.gz"


@dataclass(frozen=True, slots=True)
class SourceHealth:
    state: FeedState
    tick_age_s: dict[str, float | None]  # per subscribed instrument; None = never received
    snapshot_age_s: dict[date, float | None]  # per expiry; None = never published
    token_expires_at: datetime
    garbage_frames: int
    reconnects: int
    message: str


def _side(key: str | None, quote: FeedQuote | None, seed: SideQuote | None) -> SideQuote | None:
    if key is None:
        return None
    if quote is None or quote.updates == 0:
        return seed if seed is not None and seed.instrument_key == key else SideQuote(instrument_key=key)
    return SideQuote(
        instrument_key=key,
        bid=quote.bid,
        ask=quote.ask,
        ltp=quote.ltp,
        bid_qty=quote.bid_qty,
        ask_qty=quote.ask_qty,
        # Never reported by the feed nor the REST seed: unknown, flagged on the snapshot, not 0.
        volume=quote.volume if quote.volume is not None else (seed.volume if seed else None),
        oi=quote.oi if quote.oi is not None else (seed.oi if seed else None),
        ltp_at=quote.ltt,
    )


class UpstoxSource:
    """Live NIFTY chain, index and India VIX from Upstox (REST + V3 feed)."""

    name = "upstox"

    def __init__(
        self,
        settings: Settings,
        *,
        instrument_master: str | Path | NiftyOptionUniverse = DEFAULT_INSTRUMENT_MASTER_URL,
        expiries: Sequence[date] | None = None,
        expiry_count: int = 7,
        strikes_each_side: int | None = None,
        interval_s: float | None = None,
        stale_after_s: float | None = None,
        token_warning_s: float = 3600.0,
        degraded_missing_fraction: float = 0.2,
        rate_limits: RateLimits | None = None,
        http_timeout_s: float = 10.0,
        http_max_attempts: int = 4,
        stall_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        subscription_limits: SubscriptionLimits | None = None,
        clock: Clock | None = None,
        source_id: str | None = None,
    ) -> None:
        if settings.upstox_access_token is None:
            raise UpstoxError(f"the Upstox feed needs VOLGUARD_UPSTOX_ACCESS_TOKEN. {TOKEN_HELP}")
        self.settings = settings
        self.clock: Clock = clock or LiveClock()
        self.interval_s = interval_s if interval_s is not None else settings.sim_snapshot_interval_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else settings.feed_stale_after_s
        self.token_warning_s = token_warning_s
        self.degraded_missing_fraction = degraded_missing_fraction
        self.source_id = source_id or f"market_data/{settings.instance}"
        self._master = instrument_master
        self._wanted_expiries = tuple(expiries) if expiries is not None else None
        self.expiry_count = expiry_count
        self.strikes_each_side = strikes_each_side
        self.http = UpstoxHttp(
            settings.upstox_api_base,
            settings.upstox_access_token,
            limits=rate_limits,
            timeout_s=http_timeout_s,
            max_attempts=http_max_attempts,
        )
        self.chain_client = OptionChainClient(self.http)
        self.feed = MarketFeed(
            self.http,
            stall_timeout_s=stall_timeout_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            limits=subscription_limits,
        )
        self.contracts: dict[date, ExpiryContracts] = {}
        self._seeds: dict[str, SideQuote] = {}
        self._rest_spot: float | None = None
        self._snapshot_mono: dict[date, float] = {}
        self._published_updates: dict[str, int] = {}
        self.token_expires_at = token_expiry_after(self.clock.now())
        self.dropped_chains = 0
        self._closed = asyncio.Event()

    # ---- start-up ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Instruments, initial REST chains, subscriptions, feed task. Raises on a rejected token."""
        universe = (
            self._master
            if isinstance(self._master, NiftyOptionUniverse)
            else await load_instrument_master(self._master, self.http)
        )
        today = self.clock.now().date()
        expiries = self._wanted_expiries or universe.nearest_expiries(today, self.expiry_count)
        for expiry in expiries:
            contracts = universe.contracts(expiry)
            chain = await self.chain_client.fetch(expiry)
            self._seed(chain)
            if self.strikes_each_side is not None and chain.spot is not None:
                contracts = contracts.around(chain.spot, self.strikes_each_side)
            self.contracts[expiry] = contracts
        await self.feed.subscribe(subscription_keys(self.contracts.values()), FeedMode.OPTION_GREEKS)
        await self.feed.subscribe([NIFTY_INDEX_KEY, INDIA_VIX_KEY], FeedMode.FULL)
        self.feed.start()

    def _seed(self, chain: RestChain) -> None:
        self._rest_spot = chain.spot or self._rest_spot
        for row in chain.rows:
            for side in (row.call, row.put):
                if side is not None:
                    self._seeds[side.instrument_key] = side

    # ---- the port ----------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[MarketBatch]:
        if not self.contracts:
            await self.start()
        while not self._closed.is_set():
            yield self.build_batch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=self.interval_s)

    async def close(self) -> None:
        self._closed.set()
        await self.feed.close()
        await self.http.aclose()

    # ---- one batch ---------------------------------------------------------------------------------

    def build_batch(self) -> MarketBatch:
        ts_event = self.clock.now()
        state, message = self.feed_state()
        stale = state in (FeedState.STALE, FeedState.DISCONNECTED)
        publications: list[Publication] = []
        index = self.feed.quotes.get(NIFTY_INDEX_KEY)
        vix = self.feed.quotes.get(INDIA_VIX_KEY)
        for key, symbol, kind, quote in (
            (NIFTY_INDEX_KEY, "NIFTY 50", InstrumentKind.INDEX, index),
            (INDIA_VIX_KEY, "INDIA VIX", InstrumentKind.VIX, vix),
        ):
            if quote is None or quote.ltp is None or self._published_updates.get(key) == quote.updates:
                continue
            self._published_updates[key] = quote.updates
            tick = Tick(
                ts_event=ts_event,
                source=self.source_id,
                instrument_key=key,
                symbol=symbol,
                kind=kind,
                ltp=quote.ltp,
                day_open=quote.day_open,
                day_high=quote.day_high,
                day_low=quote.day_low,
                prev_close=quote.prev_close,
            )
            publications.append(_publication(tick))
        spot = index.ltp if index is not None and index.ltp is not None else self._rest_spot
        vix_level = vix.ltp if vix is not None else None
        chains: list[ChainSnapshot] = []
        for expiry, contracts in self.contracts.items():
            if spot is None:
                self.dropped_chains += 1
                log.warning("chain %s not published: no NIFTY spot from the feed or the REST chain", expiry)
                continue
            rows = [
                ChainRow(
                    strike=strike,
                    call=_side(
                        call_key, self.feed.quotes.get(call_key or ""), self._seeds.get(call_key or "")
                    ),
                    put=_side(put_key, self.feed.quotes.get(put_key or ""), self._seeds.get(put_key or "")),
                )
                for strike, call_key, put_key in zip(
                    contracts.strikes, contracts.call_keys, contracts.put_keys, strict=True
                )
            ]
            build = build_snapshot(
                rows,
                expiry=expiry,
                spot=spot,
                lot_size=contracts.lot_size,
                tick_size=contracts.tick_size,
                ts_event=ts_event,
                source=self.source_id,
                vix=vix_level,
                stale=stale,
                stale_ltp_after_s=self.stale_after_s,
            )
            self._snapshot_mono[expiry] = time.monotonic()
            chains.append(build.snapshot)
        # Analytics knows the instant is complete when it holds this many expiries (dropped ones excluded).
        publications.extend(
            _publication(chain.model_copy(update={"expiries_in_set": len(chains)})) for chain in chains
        )
        last_tick_at = self.feed.last_message_at
        lag_ms = None
        if last_tick_at is not None and self.feed.last_server_ts is not None:
            lag_ms = max(0.0, (last_tick_at - self.feed.last_server_ts).total_seconds() * 1000)
        status = FeedStatus(
            ts_event=ts_event,
            source=self.source_id,
            feed=self.name,
            mode=MarketMode.LIVE,
            state=state,
            last_tick_at=last_tick_at,
            lag_ms=lag_ms,
            subscribed_instruments=self.feed.subscribed_count,
            message=message,
        )
        publications.append(_publication(status))
        return MarketBatch(ts_event=ts_event, publications=tuple(publications))

    # ---- health ------------------------------------------------------------------------------------

    def _last_update_mono(self) -> float | None:
        updates = [quote.received_mono for quote in self.feed.quotes.values() if quote.updates]
        return max(updates) if updates else None

    def feed_state(self) -> tuple[FeedState, str]:
        stats = self.feed.stats
        counters = (
            f"reconnects={stats.reconnects} stalls={stats.stalls} garbage_frames={stats.garbage_frames}"
        )
        if self.feed.auth_error is not None:
            return FeedState.DISCONNECTED, f"token rejected: {self.feed.auth_error}"[:4000]
        if not self.feed.connected:
            return FeedState.DISCONNECTED, f"not connected ({self.feed.last_error}); {counters}"[:4000]
        now = time.monotonic()
        last = self._last_update_mono() or self.feed.connected_since_mono or now
        age = now - last
        if age > self.stale_after_s:
            return FeedState.STALE, f"no update for {age:.1f}s (bound {self.stale_after_s}s); {counters}"
        problems = []
        for key in (NIFTY_INDEX_KEY, INDIA_VIX_KEY):
            quote = self.feed.quotes.get(key)
            if quote is None or quote.updates == 0 or now - quote.received_mono > self.stale_after_s:
                problems.append(f"{key} missing or stale")
        option_keys = subscription_keys(self.contracts.values())
        if option_keys:
            unquoted = sum(1 for key in option_keys if key not in self.feed.quotes)
            if unquoted / len(option_keys) > self.degraded_missing_fraction:
                problems.append(f"{unquoted}/{len(option_keys)} options never quoted")
        if problems:
            return FeedState.DEGRADED, f"{'; '.join(problems)}; {counters}"
        return FeedState.CONNECTED, counters

    def health(self) -> SourceHealth:
        now = time.monotonic()
        state, message = self.feed_state()
        keys = [NIFTY_INDEX_KEY, INDIA_VIX_KEY, *subscription_keys(self.contracts.values())]
        tick_age: dict[str, float | None] = {}
        for key in keys:
            quote = self.feed.quotes.get(key)
            tick_age[key] = now - quote.received_mono if quote is not None and quote.updates else None
        snapshot_age = {
            expiry: (now - self._snapshot_mono[expiry]) if expiry in self._snapshot_mono else None
            for expiry in self.contracts
        }
        return SourceHealth(
            state=state,
            tick_age_s=tick_age,
            snapshot_age_s=snapshot_age,
            token_expires_at=self.token_expires_at,
            garbage_frames=self.feed.stats.garbage_frames,
            reconnects=self.feed.stats.reconnects,
            message=message,
        )

    def token_alert(self, now: datetime | None = None) -> Alert | None:
        """An Alert when the token was rejected, has expired (03:30 IST) or expires within the warning."""
        at = now or self.clock.now()
        auth_error = self.feed.auth_error or self.http.last_auth_error
        details: dict[str, str | int | float | bool | None] = {
            "token_expires_at": self.token_expires_at.isoformat()
        }
        if auth_error is not None:
            return Alert(
                ts_event=at,
                source=self.source_id,
                severity=Severity.CRITICAL,
                code="UPSTOX_TOKEN_REJECTED",
                message=str(auth_error)[:4000],
                details=details,
            )
        left = self.token_expires_at - at
        if left <= timedelta(0):
            return Alert(
                ts_event=at,
                source=self.source_id,
                severity=Severity.CRITICAL,
                code="UPSTOX_TOKEN_EXPIRED",
                message=f"Upstox access token expired at {self.token_expires_at:%Y-%m-%d %H:%M} IST. "
                f"{TOKEN_HELP}",
                details=details,
            )
        if left.total_seconds() <= self.token_warning_s:
            return Alert(
                ts_event=at,
                source=self.source_id,
                severity=Severity.WARNING,
                code="UPSTOX_TOKEN_EXPIRING",
                message=f"Upstox access token expires at {self.token_expires_at:%Y-%m-%d %H:%M} IST "
                f"(in {left.total_seconds() / 60:.0f} min). {TOKEN_HELP}",
                details=details,
            )
        return None


def _publication(event: EventBase) -> Publication:
    return Publication(
        stream=event.STREAM, event_type=type(event).__name__, payload=event.model_dump_json().encode()
    )
