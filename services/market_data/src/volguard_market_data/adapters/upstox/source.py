"""`UpstoxSource`: the live Upstox market as a `ports.MarketSource`.

Start-up: load the instrument master (expiries, strikes, keys, lot and tick size), fetch the REST option
chain of every configured expiry (initial quotes, OI and spot), subscribe the option keys of a band of
strikes around the money per expiry in `option_greeks` mode (top of book, greeks, OI, volume) and
NIFTY 50 and India VIX in `full` mode (day OHLC for the realised-vol estimators), then start the feed.

Subscription size: two modes on one connection means the combined caps (2000 option_greeks keys), which
all listed strikes of 7 expiries exceed; the band (`upstox_strikes_each_side`) keeps the plan inside and
is re-centred as spot moves (`upstox_recentre_after_strikes`). A band whose worst case is over the cap is
refused at construction, before anything is sent.

Nightly window: inside Upstox's maintenance window (dated, `maintenance.py`) or when the broker answers
UDAPI100074 / UDAPI100072, the source does not fail: each batch is a FeedStatus DISCONNECTED whose
message starts "broker closed", and it starts (or the feed reconnects) once the window is over.

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
from volguard_common.upstox_http import (
    TOKEN_HELP,
    RateLimits,
    UpstoxBrokerClosedError,
    UpstoxError,
    UpstoxHttp,
    token_expiry_after,
)
from volguard_market_data.adapters.upstox.chain import (
    ChainRow,
    OptionChainClient,
    RestChain,
    SideQuote,
    build_snapshot,
)
from volguard_market_data.adapters.upstox.feed import (
    FeedMode,
    FeedQuote,
    MarketFeed,
    SubscriptionLimitError,
    SubscriptionLimits,
    check_key_counts,
)
from volguard_market_data.adapters.upstox.instruments import (
    INDIA_VIX_KEY,
    NIFTY_INDEX_KEY,
    ExpiryContracts,
    NiftyOptionUniverse,
    load_instrument_master,
    subscription_keys,
)
from volguard_market_data.adapters.upstox.maintenance import (
    UPSTOX_MAINTENANCE_WINDOWS,
    MaintenanceWindow,
    closed_until,
    parse_window,
)
from volguard_market_data.ports import MarketBatch, Publication

log = logging.getLogger(__name__)

DEFAULT_INSTRUMENT_MASTER_URL = "https://assets.upstox.com/market-quote/instruments/exchange/NSE.json.gz"
BROKER_CLOSED = "broker closed"
INDEX_KEYS = (NIFTY_INDEX_KEY, INDIA_VIX_KEY)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    state: FeedState
    tick_age_s: dict[str, float | None]  # per subscribed instrument; None = never received
    snapshot_age_s: dict[date, float | None]  # per expiry; None = never published
    token_expires_at: datetime
    garbage_frames: int
    reconnects: int
    message: str
    # Per instrument, the watched fields no frame has refreshed within upstox_field_stale_after_s.
    stale_fields: dict[str, tuple[str, ...]]


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
        recentre_after_strikes: int | None = None,
        field_stale_after_s: float | None = None,
        interval_s: float | None = None,
        stale_after_s: float | None = None,
        token_warning_s: float = 3600.0,
        degraded_missing_fraction: float = 0.2,
        rate_limits: RateLimits | None = None,
        http_timeout_s: float = 10.0,
        http_max_attempts: int = 4,
        stall_timeout_s: float = 10.0,
        ping_interval_s: float = 3.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        broker_closed_retry_s: float = 60.0,
        maintenance_windows: Sequence[MaintenanceWindow] | None = None,
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
        self.strikes_each_side = (
            strikes_each_side if strikes_each_side is not None else settings.upstox_strikes_each_side
        )
        self.recentre_after_strikes = (
            recentre_after_strikes
            if recentre_after_strikes is not None
            else settings.upstox_recentre_after_strikes
        )
        self.field_stale_after_s = (
            field_stale_after_s if field_stale_after_s is not None else settings.upstox_field_stale_after_s
        )
        if maintenance_windows is not None:
            self.maintenance_windows = tuple(maintenance_windows)
        elif settings.upstox_maintenance_window:
            self.maintenance_windows = (parse_window(settings.upstox_maintenance_window),)
        else:
            self.maintenance_windows = UPSTOX_MAINTENANCE_WINDOWS
        self.broker_closed_retry_s = broker_closed_retry_s
        self.subscription_limits = subscription_limits or SubscriptionLimits()
        self._check_plan_fits()
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
            ping_interval_s=ping_interval_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            broker_closed_retry_s=broker_closed_retry_s,
            limits=self.subscription_limits,
        )
        self.contracts: dict[date, ExpiryContracts] = {}  # the subscribed band of each expiry
        self._listed: dict[date, ExpiryContracts] = {}  # every listed strike of each expiry
        # The strike each band was centred on; near the end of a listing the band is cut short, so its
        # middle is not its centre.
        self._centres: dict[date, float] = {}
        self._started = False
        self._broker_closed: str | None = None  # why, while Upstox is closed; None when open
        self._retry_start_mono = 0.0
        self.recentres = 0
        self._seeds: dict[str, SideQuote] = {}
        self._rest_spot: float | None = None
        self._snapshot_mono: dict[date, float] = {}
        self._published_updates: dict[str, int] = {}
        self.token_expires_at = token_expiry_after(self.clock.now())
        self.dropped_chains = 0
        self._closed = asyncio.Event()

    # ---- start-up ----------------------------------------------------------------------------------

    def _check_plan_fits(self) -> None:
        """Refuse, before any request, a band whose worst case breaks Upstox's per-connection key caps."""
        expiries = len(self._wanted_expiries) if self._wanted_expiries is not None else self.expiry_count
        option_keys = expiries * 2 * (2 * self.strikes_each_side + 1)
        try:
            check_key_counts(
                {FeedMode.OPTION_GREEKS: option_keys, FeedMode.FULL: len(INDEX_KEYS)},
                self.subscription_limits,
            )
        except SubscriptionLimitError as exc:
            raise SubscriptionLimitError(
                f"{expiries} expiries x 2 sides x (2 x {self.strikes_each_side} + 1) strikes = {option_keys} "
                f"option keys do not fit one Upstox feed connection: {exc} Lower "
                "VOLGUARD_UPSTOX_STRIKES_EACH_SIDE or the number of expiries."
            ) from None
        if self.recentre_after_strikes >= self.strikes_each_side:
            raise ValueError(
                f"re-centring after {self.recentre_after_strikes} strikes needs a band wider than that "
                f"(strikes each side: {self.strikes_each_side})"
            )

    async def start(self) -> None:
        """Instruments, initial REST chains, subscriptions, feed task. Raises on a rejected token.

        Inside Upstox's maintenance window, or when Upstox says it is in it, nothing is raised: the source
        notes "broker closed" and `batches()` starts it when the window is over."""
        in_window = self._window_reason(self.clock.now())
        if in_window is not None:
            self._note_broker_closed(in_window)
            return
        try:
            await self._start()
        except UpstoxBrokerClosedError as exc:
            self._retry_start_mono = time.monotonic() + self.broker_closed_retry_s
            self._note_broker_closed(str(exc))

    def _note_broker_closed(self, why: str) -> None:
        if self._broker_closed is None:
            log.warning("%s: Upstox is not serving (%s); waiting for it to open", BROKER_CLOSED, why)
        self._broker_closed = why

    async def _start(self) -> None:
        universe = (
            self._master
            if isinstance(self._master, NiftyOptionUniverse)
            else await load_instrument_master(self._master, self.http)
        )
        today = self.clock.now().date()
        expiries = self._wanted_expiries or universe.nearest_expiries(today, self.expiry_count)
        for expiry in expiries:
            listed = universe.contracts(expiry)
            chain = await self.chain_client.fetch(expiry)
            self._seed(chain)
            self._listed[expiry] = listed
            spot = chain.spot if chain.spot is not None else self._rest_spot
            # Without any spot the band cannot be placed: subscribe around the middle of the listing
            # and let the first index tick re-centre it.
            middle = listed.strikes[len(listed.strikes) // 2] if listed.strikes else 0.0
            self._centre(expiry, listed, spot if spot is not None else middle)
        await self.feed.subscribe(subscription_keys(self.contracts.values()), FeedMode.OPTION_GREEKS)
        await self.feed.subscribe(list(INDEX_KEYS), FeedMode.FULL)
        self.feed.start()
        self._started = True
        if self._broker_closed is not None:
            log.info("Upstox is serving again; feed started")
        self._broker_closed = None

    # ---- the band around the money -----------------------------------------------------------------

    def _centre(self, expiry: date, listed: ExpiryContracts, spot: float) -> None:
        self.contracts[expiry] = listed.around(spot, self.strikes_each_side)
        if listed.strikes:
            self._centres[expiry] = min(listed.strikes, key=lambda strike: abs(strike - spot))

    async def recentre(self) -> bool:
        """Move each expiry's band to the money when spot has drifted; True if the subscription changed."""
        index = self.feed.quotes.get(NIFTY_INDEX_KEY)
        if index is None or index.ltp is None:
            return False
        spot = index.ltp
        before = set(subscription_keys(self.contracts.values()))
        moved: list[date] = []
        for expiry, centre in list(self._centres.items()):
            listed = self._listed[expiry]
            atm = min(listed.strikes, key=lambda strike: abs(strike - spot))
            # Measured in listed strikes, not points: far expiries list wider strike steps.
            steps = abs(listed.strikes.index(atm) - listed.strikes.index(centre))
            if steps >= self.recentre_after_strikes:
                self._centre(expiry, listed, spot)
                moved.append(expiry)
        after = subscription_keys(self.contracts.values())
        if set(after) == before:
            return False  # nothing moved, or the band is pinned at the end of the listing
        # Unsubscribe first: the plan must stay inside the caps at every step.
        await self.feed.unsubscribe([key for key in before if key not in set(after)])
        await self.feed.subscribe([key for key in after if key not in before], FeedMode.OPTION_GREEKS)
        self.recentres += 1
        log.info(
            "upstox strike band re-centred on spot %.2f for %s (%d option keys)",
            spot,
            ", ".join(expiry.isoformat() for expiry in moved),
            len(after),
        )
        return True

    def _seed(self, chain: RestChain) -> None:
        self._rest_spot = chain.spot or self._rest_spot
        for row in chain.rows:
            for side in (row.call, row.put):
                if side is not None:
                    self._seeds[side.instrument_key] = side

    # ---- the port ----------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[MarketBatch]:
        if not self._started and self._broker_closed is None:
            await self.start()
        while not self._closed.is_set():
            if not self._started:
                await self._start_when_open()
            if self._started:
                await self.recentre()
                yield self.build_batch()
            else:
                yield self.broker_closed_batch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=self.interval_s)

    async def _start_when_open(self) -> None:
        # Inside the known window nothing is asked of Upstox; after a refusal outside it, ask again
        # every broker_closed_retry_s rather than every batch.
        if closed_until(self.clock.now(), self.maintenance_windows) is None:
            if time.monotonic() >= self._retry_start_mono:
                await self.start()
        else:
            await self.start()  # notes the window (no request) and keeps the reason current

    def broker_closed_batch(self) -> MarketBatch:
        ts_event = self.clock.now()
        status = FeedStatus(
            ts_event=ts_event,
            source=self.source_id,
            feed=self.name,
            mode=MarketMode.LIVE,
            state=FeedState.DISCONNECTED,
            last_tick_at=self.feed.last_message_at,
            lag_ms=None,
            subscribed_instruments=0,
            message=f"{BROKER_CLOSED}: {self._broker_closed}"[:4000],
        )
        return MarketBatch(ts_event=ts_event, publications=(_publication(status),))

    async def close(self) -> None:
        self._closed.set()
        await self.feed.close()
        await self.http.aclose()

    # ---- one batch ---------------------------------------------------------------------------------

    def build_batch(self) -> MarketBatch:
        ts_event = self.clock.now()
        in_window = self._window_reason(ts_event)
        if in_window is not None:
            self._note_broker_closed(in_window)
        elif self._broker_closed is not None:
            log.info("Upstox maintenance window over")
            self._broker_closed = None
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

    def _window_reason(self, at: datetime) -> str | None:
        until = closed_until(at, self.maintenance_windows)
        return None if until is None else f"nightly maintenance window until {until:%Y-%m-%d %H:%M} IST"

    def feed_state(self) -> tuple[FeedState, str]:
        stats = self.feed.stats
        # Liveness (pings, pongs) is reported beside data staleness, never mixed into it.
        counters = (
            f"reconnects={stats.reconnects} stalls={stats.stalls} garbage_frames={stats.garbage_frames} "
            f"pings={self.feed.pings_received} pongs={self.feed.pongs_received}"
        )
        if self.feed.auth_error is not None:
            return FeedState.DISCONNECTED, f"token rejected: {self.feed.auth_error}"[:4000]
        # Upstox says its service is closed in the window: report that, even over a socket left open.
        in_window = self._window_reason(self.clock.now())
        if in_window is not None:
            return FeedState.DISCONNECTED, f"{BROKER_CLOSED}: {in_window}; {counters}"[:4000]
        if self.feed.broker_closed is not None and not self.feed.connected:
            return FeedState.DISCONNECTED, f"{BROKER_CLOSED}: {self.feed.broker_closed}; {counters}"[:4000]
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
        old = self.stale_fields()
        if old:
            # Flagged, not a state change: a quiet strike may rightly go long without a new OI or IV.
            by_field: dict[str, int] = {}
            for names in old.values():
                for name in names:
                    by_field[name] = by_field.get(name, 0) + 1
            counts = ", ".join(f"{name} on {count}" for name, count in sorted(by_field.items()))
            counters += f"; not refreshed for >{self.field_stale_after_s:g}s: {counts} instruments"
        if problems:
            return FeedState.DEGRADED, f"{'; '.join(problems)}; {counters}"[:4000]
        return FeedState.CONNECTED, counters[:4000]

    def stale_fields(self) -> dict[str, tuple[str, ...]]:
        now = time.monotonic()
        old = {
            key: quote.stale_fields(now, self.field_stale_after_s) for key, quote in self.feed.quotes.items()
        }
        return {key: names for key, names in old.items() if names}

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
            stale_fields=self.stale_fields(),
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
