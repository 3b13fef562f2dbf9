"""The Upstox adapter against a real fake Upstox on 127.0.0.1 (HTTP + WebSocket), failure modes included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.fakes.upstox_server import INDIA_VIX_KEY, NIFTY_INDEX_KEY, TOKEN, FakeUpstox, running_fake_upstox
from tests.support.waiting import eventually
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST
from volguard_common.events import Alert, FeedState, MarketMode, QuoteFlag, Severity, parse_event
from volguard_common.settings import Settings
from volguard_common.upstox_http import (
    RateLimiter,
    RateLimits,
    UpstoxAuthError,
    UpstoxHttp,
    UpstoxRateLimitError,
    UpstoxResponseError,
    UpstoxServerError,
    token_expiry_after,
)
from volguard_market_data.adapters.upstox.chain import OptionChainClient
from volguard_market_data.adapters.upstox.feed import (
    WATCHED_FIELDS,
    FeedMode,
    MarketFeed,
    SubscriptionLimitError,
    SubscriptionLimits,
    check_subscriptions,
)
from volguard_market_data.adapters.upstox.instruments import load_instrument_master
from volguard_market_data.adapters.upstox.maintenance import closed_until, parse_window
from volguard_market_data.adapters.upstox.source import BROKER_CLOSED, UpstoxSource
from volguard_market_data.feed import FeedLoop

EXPIRY = date(2026, 1, 13)
CHAIN = "/v2/option/chain"


@pytest.fixture
def fake() -> Iterator[FakeUpstox]:
    with running_fake_upstox() as server:
        yield server


def client(fake: FakeUpstox, **kwargs: Any) -> UpstoxHttp:
    options: dict[str, Any] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}
    options.update(kwargs)
    return UpstoxHttp(fake.base_url, TOKEN, **options)


# ---- REST: retries, rate limits, errors ------------------------------------------------------------


async def test_get_retries_429_honouring_retry_after_then_succeeds(fake: FakeUpstox) -> None:
    fake.fail("GET", CHAIN, 429, times=2, retry_after="0")
    async with client(fake) as http:
        chain = await OptionChainClient(http).fetch(EXPIRY)
        assert chain.spot == fake.spot
        assert fake.count("GET", CHAIN) == 3
        assert http.stats.rate_limited == 2
        assert http.stats.retries == 2


async def test_post_is_never_retried_even_on_429(fake: FakeUpstox) -> None:
    fake.fail("POST", "/v2/order/place", 429, times=1, retry_after="0")
    async with client(fake) as http:
        with pytest.raises(UpstoxRateLimitError) as caught:
            await http.post_json("/v2/order/place", {"quantity": 65})
        assert caught.value.error_code == "UDAPI10005"
        assert fake.count("POST", "/v2/order/place") == 1


async def test_5xx_is_retried_then_succeeds_and_gives_up_after_max_attempts(fake: FakeUpstox) -> None:
    fake.fail("GET", CHAIN, 503, times=2)
    async with client(fake, max_attempts=3) as http:
        chain = await OptionChainClient(http).fetch(EXPIRY)
        assert len(chain.rows) > 0
        assert fake.count("GET", CHAIN) == 3

        fake.fail("GET", CHAIN, 500, times=3)
        with pytest.raises(UpstoxServerError) as caught:
            await OptionChainClient(http).fetch(EXPIRY)
        assert caught.value.status == 500
        assert fake.count("GET", CHAIN) == 6


async def test_401_is_a_clear_error_and_not_retried(fake: FakeUpstox) -> None:
    fake.reject_token = True
    async with client(fake) as http:
        with pytest.raises(UpstoxAuthError) as caught:
            await OptionChainClient(http).fetch(EXPIRY)
    message = str(caught.value)
    assert "03:30 IST" in message
    assert "VOLGUARD_UPSTOX_ACCESS_TOKEN" in message
    assert caught.value.error_code == "UDAPI100050"
    assert fake.count("GET", CHAIN) == 1


async def test_rate_limiter_holds_requests_to_the_per_second_window() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(
        RateLimits(per_second=2, per_minute=100, per_30_minutes=1000), clock=lambda: now[0], sleep=fake_sleep
    )
    for _ in range(6):
        await limiter.acquire()
    # Two go at once (the burst), the other four wait half a second each at 2/s.
    assert sum(slept) == pytest.approx(2.0)
    assert limiter.headroom()[0] == 0


def test_token_expires_at_the_next_0330_ist() -> None:
    assert token_expiry_after(datetime(2026, 1, 13, 20, 0, tzinfo=IST)) == datetime(
        2026, 1, 14, 3, 30, tzinfo=IST
    )
    assert token_expiry_after(datetime(2026, 1, 14, 2, 30, tzinfo=IST)) == datetime(
        2026, 1, 14, 3, 30, tzinfo=IST
    )


# ---- instruments and chain -------------------------------------------------------------------------


async def test_instrument_master_from_url_and_from_file(fake: FakeUpstox, tmp_path: Path) -> None:
    async with client(fake) as http:
        universe = await load_instrument_master(fake.instruments_url, http)
        raw = await http.get_bytes(fake.instruments_url)
    assert universe.expiries() == fake.expiries
    assert universe.dropped_rows == 1  # the garbled NIFTY row; BANKNIFTY is simply not ours
    assert all(option.instrument_key != "NSE_FO|99001" for option in universe.options)
    contracts = universe.contracts(EXPIRY)
    assert contracts.lot_size == 65
    assert contracts.tick_size == pytest.approx(0.05)  # the master's 5.0 is paise
    assert contracts.freeze_quantity == 1800
    assert contracts.strikes[-1] == 24_250.0
    assert contracts.put_keys[-1] is None  # listed only as a call
    path = tmp_path / "NSE.json.gz"
    path.write_bytes(raw)
    assert (await load_instrument_master(path)).options == universe.options


async def test_chain_snapshot_flags_crossed_zero_bid_and_missing_quotes(fake: FakeUpstox) -> None:
    crossed = fake.contract_key(EXPIRY, 23_900.0, "CE")
    zero_bid = fake.contract_key(EXPIRY, 24_100.0, "PE")
    missing = fake.contract_key(EXPIRY, 24_200.0, "CE")
    fake.quotes[crossed].bid, fake.quotes[crossed].ask = 205.0, 200.0
    fake.quotes[zero_bid].bid, fake.quotes[zero_bid].ask = None, 3.5
    fake.quotes[missing].bid = fake.quotes[missing].ask = fake.quotes[missing].ltp = None
    async with client(fake) as http:
        build = await OptionChainClient(http).snapshot(
            EXPIRY, lot_size=65, tick_size=0.05, ts_event=datetime.now(IST), source="test"
        )
    snapshot = parse_event(build.snapshot.model_dump_json())
    lists = build.snapshot.columns.as_lists()
    strikes = lists["strike"]
    assert strikes == sorted(strikes)
    assert 24_250.0 not in strikes
    assert build.snapshot.dropped_rows == 1
    assert build.drop_reasons == {"no contract on one side": 1}
    i, j, k = strikes.index(23_900.0), strikes.index(24_100.0), strikes.index(24_200.0)
    assert lists["call_flags"][i] & QuoteFlag.CROSSED
    assert (lists["call_bid"][i], lists["call_ask"][i]) == (205.0, 200.0)
    assert lists["put_flags"][j] & QuoteFlag.ZERO_BID
    assert lists["put_bid"][j] is None
    assert lists["put_ask"][j] == 3.5
    assert lists["call_flags"][k] & QuoteFlag.MISSING
    assert lists["call_bid"][k] is None
    assert lists["call_ask"][k] is None
    assert lists["call_ltp"][k] is None
    assert lists["put_flags"][i] == 0
    assert snapshot == build.snapshot


async def test_malformed_chain_json_is_a_clear_error_and_bad_rows_are_counted(fake: FakeUpstox) -> None:
    async with client(fake) as http:
        chains = OptionChainClient(http)
        fake.chain_body = b'{"status": "success", "data": [{"strike_price": 24000'
        with pytest.raises(UpstoxResponseError, match="not JSON"):
            await chains.fetch(EXPIRY)
        fake.chain_body = b'{"status": "success", "data": {"oops": 1}}'
        with pytest.raises(UpstoxResponseError, match="expected"):
            await chains.fetch(EXPIRY)
        good_side = {
            "instrument_key": "NSE_FO|1",
            "market_data": {"bid_price": 10, "ask_price": 11, "ltp": 10.5},
        }
        rows = [
            {"strike_price": "24000", "underlying_spot_price": 24_000.0},
            "not a row",
            {
                "strike_price": 24_050.0,
                "underlying_spot_price": 24_000.0,
                "call_options": good_side,
                "put_options": {**good_side, "instrument_key": "NSE_FO|2"},
            },
        ]
        fake.chain_body = json.dumps({"status": "success", "data": rows}).encode()
        chain = await chains.fetch(EXPIRY)
    assert chain.unreadable_rows == 2
    assert [row.strike for row in chain.rows] == [24_050.0]


# ---- the V3 feed -----------------------------------------------------------------------------------


def option_keys(fake: FakeUpstox, count: int) -> list[str]:
    return [contract.key for contract in fake.contracts if contract.expiry == EXPIRY][:count]


async def test_feed_reconnects_and_resubscribes_after_a_dropped_socket(fake: FakeUpstox) -> None:
    keys = option_keys(fake, 6)
    async with client(fake) as http:
        feed = MarketFeed(http, stall_timeout_s=30, backoff_initial_s=0.01, backoff_max_s=0.05)
        await feed.subscribe(keys, FeedMode.OPTION_GREEKS)
        await feed.subscribe([NIFTY_INDEX_KEY], FeedMode.FULL)
        feed.start()
        try:
            await eventually(lambda: _all_quoted(feed, [*keys, NIFTY_INDEX_KEY]), what="first quotes")
            assert feed.segment_status["NSE_FO"] == "NORMAL_OPEN"
            assert feed.quotes[NIFTY_INDEX_KEY].day_high is not None
            fake.drop_connections()
            await eventually(
                _async(lambda: len(fake.connections) >= 2 and feed.connected), what="reconnected"
            )
            second = fake.connections[1]
            await eventually(
                _async(lambda: set(second.subscriptions) == {*keys, NIFTY_INDEX_KEY}), what="resubscribed"
            )
            assert second.subscriptions[keys[0]] == "option_greeks"
            assert second.subscriptions[NIFTY_INDEX_KEY] == "full"
            assert feed.stats.reconnects >= 1
            assert fake.count("GET", "/v3/feed/market-data-feed/authorize") >= 2  # single-use URL
            updates = feed.quotes[keys[0]].updates
            await eventually(
                _async(lambda: feed.quotes[keys[0]].updates > updates), what="quotes after reconnect"
            )
        finally:
            await feed.close()


async def test_feed_drops_garbage_frames_without_crashing(fake: FakeUpstox) -> None:
    keys = option_keys(fake, 2)
    async with client(fake) as http:
        feed = MarketFeed(http, stall_timeout_s=30, backoff_initial_s=0.01)
        await feed.subscribe(keys, FeedMode.OPTION_GREEKS)
        feed.start()
        try:
            await eventually(lambda: _all_quoted(feed, keys), what="first quotes")
            fake.send_garbage(3)
            await eventually(_async(lambda: feed.stats.garbage_frames >= 3), what="garbage counted")
            updates = feed.quotes[keys[0]].updates
            await eventually(
                _async(lambda: feed.quotes[keys[0]].updates > updates), what="quotes after garbage"
            )
            assert feed.running
            assert feed.stats.connects == 1
        finally:
            await feed.close()


async def test_feed_stall_forces_a_reconnect(fake: FakeUpstox) -> None:
    keys = option_keys(fake, 2)
    async with client(fake) as http:
        feed = MarketFeed(
            http, stall_timeout_s=0.3, ping_interval_s=0.05, backoff_initial_s=0.01, backoff_max_s=0.05
        )
        await feed.subscribe(keys, FeedMode.LTPC)
        feed.start()
        try:
            await eventually(lambda: _all_quoted(feed, keys), what="first quotes")
            fake.stalled = True
            await eventually(
                _async(lambda: feed.stats.stalls >= 1 and len(fake.connections) >= 2), what="stall"
            )
            fake.stalled = False
            updates = feed.quotes[keys[0]].updates
            await eventually(
                _async(lambda: feed.quotes[keys[0]].updates > updates), what="quotes after stall"
            )
        finally:
            await feed.close()


async def test_feed_stops_with_a_clear_error_on_401(fake: FakeUpstox) -> None:
    fake.reject_token = True
    async with client(fake) as http:
        feed = MarketFeed(http, backoff_initial_s=0.01)
        feed.start()
        try:
            await eventually(_async(lambda: not feed.running), what="feed gave up")
            assert feed.auth_error is not None
            assert "03:30 IST" in str(feed.auth_error)
        finally:
            await feed.close()


async def test_subscription_key_caps_are_refused_before_sending(fake: FakeUpstox) -> None:
    limits = SubscriptionLimits()
    check_subscriptions({FeedMode.OPTION_GREEKS: [f"k{i}" for i in range(3000)]}, limits)
    with pytest.raises(SubscriptionLimitError, match="option_greeks: 3001 keys > 3000"):
        check_subscriptions({FeedMode.OPTION_GREEKS: [f"k{i}" for i in range(3001)]}, limits)
    with pytest.raises(SubscriptionLimitError, match="combined"):
        check_subscriptions(
            {FeedMode.OPTION_GREEKS: [f"k{i}" for i in range(2001)], FeedMode.FULL: ["x"]}, limits
        )
    with pytest.raises(SubscriptionLimitError, match="full_d30: 51 keys > 50"):
        check_subscriptions({FeedMode.FULL_D30: [f"k{i}" for i in range(51)]}, limits)
    async with client(fake) as http:
        feed = MarketFeed(
            http,
            limits=SubscriptionLimits(individual={m: 3 for m in FeedMode}, combined={m: 2 for m in FeedMode}),
        )
        await feed.subscribe(["a", "b", "c"], FeedMode.LTPC)
        with pytest.raises(SubscriptionLimitError):
            await feed.subscribe(["d"], FeedMode.FULL)
        assert feed.subscriptions == {FeedMode.LTPC: ("a", "b", "c")}  # a refused request changes nothing


async def test_partial_frames_keep_the_last_values_and_flag_their_age(fake: FakeUpstox) -> None:
    keys = option_keys(fake, 2)
    key = keys[0]
    async with client(fake) as http:
        feed = MarketFeed(http, stall_timeout_s=30, backoff_initial_s=0.01)
        await feed.subscribe(keys, FeedMode.OPTION_GREEKS)
        feed.start()
        try:
            await eventually(lambda: _all_quoted(feed, keys), what="first quotes")
            first = feed.quotes[key]
            assert (first.oi, first.iv) == (fake.quotes[key].oi, 14.0)
            assert first.bid is not None
            # From now on frames carry only the last trade; the rest changes at the fake but is not sent.
            fake.omit = {"depth", "greeks", "vtt", "oi", "iv"}

            async def partial_frame_arrived() -> bool:
                quote = feed.quotes[key]
                return quote.refreshed_mono["ltp"] > quote.refreshed_mono["oi"]

            await eventually(partial_frame_arrived, what="a frame with the last trade only")
            before = feed.quotes[key]
            assert (before.oi, before.iv, before.bid, before.delta) == (
                first.oi,
                first.iv,
                first.bid,
                first.delta,
            )
            fake.quotes[key].oi, fake.quotes[key].iv = 61_000, 15.5
            fake.quotes[key].bid, fake.quotes[key].ask = 80.0, 81.0
            partial_from = time.monotonic()
            await eventually(
                _async(lambda: feed.quotes[key].refreshed_mono["ltp"] > partial_from + 0.2),
                what="partial frames for 0.2 s",
            )
            after = feed.quotes[key]
            assert after.updates > before.updates
            assert (after.volume, after.oi, after.iv) == (before.volume, before.oi, before.iv)  # never 0
            assert (after.bid, after.ask, after.bid_qty, after.delta) == (
                before.bid,
                before.ask,
                before.bid_qty,
                before.delta,
            )
            assert after.stale_fields(time.monotonic(), 0.1) == WATCHED_FIELDS  # old values, flagged
            assert after.stale_fields(time.monotonic(), 3600) == ()
            fake.omit = set()
            await eventually(_async(lambda: feed.quotes[key].oi == 61_000), what="full frames again")
            fresh = feed.quotes[key]
            assert (fresh.iv, fresh.bid, fresh.ask) == (15.5, 80.0, 81.0)
            assert fresh.stale_fields(time.monotonic(), 0.1) == ()
            assert feed.stats.rejected_updates == 0
        finally:
            await feed.close()


async def test_ping_only_minutes_keep_the_connection(fake: FakeUpstox) -> None:
    """A quiet market sends only pings: the connection is alive, only the data is old."""
    keys = option_keys(fake, 2)
    async with client(fake) as http:
        # Our own pings off: the server's pings alone must count as life.
        feed = MarketFeed(http, stall_timeout_s=0.3, ping_interval_s=None, backoff_initial_s=0.01)
        await feed.subscribe(keys, FeedMode.OPTION_GREEKS)
        feed.start()
        try:
            await eventually(lambda: _all_quoted(feed, keys), what="first quotes")
            fake.ping_every_s = 0.05
            fake.quiet = True
            pings = fake.pings_sent
            # 40 pings at 0.05 s are ~7 liveness timeouts: at Upstox's pace (10 s) over a minute of quiet.
            await eventually(_async(lambda: fake.pings_sent >= pings + 40), what="ping-only period")
            assert feed.pings_received >= 30
            last_data = feed.last_message_mono
            assert last_data is not None
            assert time.monotonic() - last_data > 3 * feed.stall_timeout_s
            assert feed.connected
            assert (feed.stats.stalls, feed.stats.reconnects) == (0, 0)
            assert len(fake.connections) == 1
            fake.quiet = False
            updates = feed.quotes[keys[0]].updates
            await eventually(_async(lambda: feed.quotes[keys[0]].updates > updates), what="data again")
            assert len(fake.connections) == 1
        finally:
            await feed.close()


async def test_pongs_to_our_pings_keep_a_quiet_connection(fake: FakeUpstox) -> None:
    keys = option_keys(fake, 2)
    async with client(fake) as http:
        feed = MarketFeed(http, stall_timeout_s=0.3, ping_interval_s=0.05, backoff_initial_s=0.01)
        await feed.subscribe(keys, FeedMode.OPTION_GREEKS)
        feed.start()
        try:
            await eventually(lambda: _all_quoted(feed, keys), what="first quotes")
            fake.ping_every_s = float("inf")  # quiet and silent: no data, no server pings
            fake.quiet = True
            pongs = feed.pongs_received
            await eventually(_async(lambda: feed.pongs_received >= pongs + 30), what="pongs for 1.5 s")
            assert feed.pings_received == 0
            assert (feed.stats.stalls, len(fake.connections)) == (0, 1)
        finally:
            await feed.close()


# ---- UpstoxSource ----------------------------------------------------------------------------------


async def test_upstox_source_produces_chain_ticks_status_and_goes_stale(fake: FakeUpstox) -> None:
    settings = Settings(
        feed="upstox",
        upstox_access_token=TOKEN,
        upstox_api_base=fake.base_url,
        instance="test",
        sim_snapshot_interval_s=0.05,
        feed_stale_after_s=0.4,
        upstox_field_stale_after_s=0.3,
    )
    source = UpstoxSource(
        settings,
        instrument_master=fake.instruments_url,
        expiries=fake.expiries,
        stall_timeout_s=60,
        backoff_initial_s=0.01,
        maintenance_windows=(),  # the wall clock may be in the nightly window; this is the open market
    )
    try:
        batches = source.batches()
        first = await anext(batches)
        kinds = [publication.event_type for publication in first.publications]
        assert kinds.count("ChainSnapshot") == 2
        assert kinds[-1] == "FeedStatus"

        async def connected_batch() -> list[Any]:
            batch = await anext(batches)
            events: list[Any] = [parse_event(p.payload) for p in batch.publications]
            status = events[-1]
            return events if status.state is FeedState.CONNECTED else []

        events = await eventually(connected_batch, what="a CONNECTED batch")
        ticks = {e.instrument_key: e for e in events if e.type == "Tick"}
        assert set(ticks) == {NIFTY_INDEX_KEY, INDIA_VIX_KEY}
        assert ticks[NIFTY_INDEX_KEY].ltp == fake.spot
        assert ticks[NIFTY_INDEX_KEY].day_high is not None
        chains = [e for e in events if e.type == "ChainSnapshot"]
        assert {c.expiry for c in chains} == set(fake.expiries)
        chain = chains[0]
        assert chain.spot == fake.spot
        assert chain.vix == fake.vix
        assert chain.lot_size == 65
        assert chain.dropped_rows == 1
        assert not chain.stale
        status = events[-1]
        assert status.subscribed_instruments == 2 * (2 * 9 + 1) + 2
        assert status.last_tick_at is not None
        assert status.lag_ms is not None
        health = source.health()
        assert health.tick_age_s[NIFTY_INDEX_KEY] is not None
        assert all(age is not None for age in health.snapshot_age_s.values())

        fake.stalled = True

        async def stale_batch() -> list[Any]:
            batch = await anext(batches)
            events: list[Any] = [parse_event(p.payload) for p in batch.publications]
            return events if events[-1].state is FeedState.STALE else []

        stale_events = await eventually(stale_batch, what="STALE after the staleness bound")
        assert all(e.stale for e in stale_events if e.type == "ChainSnapshot")
        assert not any(e.type == "Tick" for e in stale_events)
        old = source.health().stale_fields
        options = source.feed.subscriptions[FeedMode.OPTION_GREEKS]
        assert set(old) == set(options)  # every option value held is flagged as not refreshed
        assert all(names == WATCHED_FIELDS for names in old.values())
    finally:
        await source.close()


async def test_token_alerts_for_expiring_expired_and_rejected_tokens(fake: FakeUpstox) -> None:
    settings = Settings(
        feed="upstox", upstox_access_token=TOKEN, upstox_api_base=fake.base_url, instance="test"
    )

    class FixedClock:
        def now(self) -> datetime:
            return datetime(2026, 1, 13, 20, 0, tzinfo=IST)

    source = UpstoxSource(settings, instrument_master=fake.instruments_url, clock=FixedClock())
    try:
        assert source.token_expires_at == datetime(2026, 1, 14, 3, 30, tzinfo=IST)
        assert source.token_alert() is None
        expiring = source.token_alert(datetime(2026, 1, 14, 3, 0, tzinfo=IST))
        assert expiring is not None
        assert expiring.code == "UPSTOX_TOKEN_EXPIRING"
        assert expiring.severity is Severity.WARNING
        expired = source.token_alert(datetime(2026, 1, 14, 3, 31, tzinfo=IST))
        assert expired is not None
        assert expired.code == "UPSTOX_TOKEN_EXPIRED"
        assert "03:30 IST" in expired.message
        fake.reject_token = True
        with pytest.raises(UpstoxAuthError):
            await source.start()
        rejected = source.token_alert()
        assert rejected is not None
        assert rejected.code == "UPSTOX_TOKEN_REJECTED"
        assert rejected.severity is Severity.CRITICAL
    finally:
        await source.close()


# ---- the nightly maintenance window ---------------------------------------------------------------


class SteppedClock:
    """An exchange clock the test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def upstox_settings(fake: FakeUpstox, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "feed": "upstox",
        "upstox_access_token": TOKEN,
        "upstox_api_base": fake.base_url,
        "instance": "test",
        "sim_snapshot_interval_s": 0.05,
    }
    options.update(overrides)
    return Settings(**options)


async def next_events(batches: Any) -> list[Any]:
    batch = await anext(batches)
    return [parse_event(p.payload) for p in batch.publications]


def test_maintenance_window_is_dated_data_and_configurable() -> None:
    assert closed_until(datetime(2026, 12, 8, 0, 0, tzinfo=IST)) == datetime(2026, 12, 8, 5, 30, tzinfo=IST)
    assert closed_until(datetime(2026, 12, 8, 5, 29, tzinfo=IST)) is not None
    assert closed_until(datetime(2026, 12, 8, 5, 30, tzinfo=IST)) is None
    assert closed_until(datetime(2026, 12, 7, 23, 59, tzinfo=IST)) is None
    late = parse_window("23:30-05:00")  # wrapping midnight
    assert closed_until(datetime(2026, 12, 7, 23, 45, tzinfo=IST), [late]) == datetime(
        2026, 12, 8, 5, 0, tzinfo=IST
    )
    assert closed_until(datetime(2026, 12, 8, 4, 0, tzinfo=IST), [late]) is not None
    assert closed_until(datetime(2026, 12, 8, 12, 0, tzinfo=IST), [late]) is None
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_window("midnight to dawn")


async def test_starting_inside_the_window_reports_broker_closed_and_resumes_after(fake: FakeUpstox) -> None:
    clock = SteppedClock(datetime(2026, 1, 13, 2, 0, tzinfo=IST))
    source = UpstoxSource(
        upstox_settings(fake),
        instrument_master=fake.instruments_url,
        expiries=fake.expiries,
        clock=clock,
        backoff_initial_s=0.01,
    )
    try:
        await source.start()  # no exception: the broker is closed, not broken
        batches = source.batches()
        for _ in range(3):
            events = await next_events(batches)
            assert [e.type for e in events] == ["FeedStatus"]
            assert events[0].state is FeedState.DISCONNECTED
            assert events[0].message.startswith(BROKER_CLOSED)
            assert "05:30" in events[0].message
        assert fake.requests == []  # nothing asked of Upstox inside the known window
        clock.at = datetime(2026, 1, 13, 5, 30, tzinfo=IST)

        async def connected() -> list[Any]:
            events = await next_events(batches)
            return events if events[-1].state is FeedState.CONNECTED else []

        events = await eventually(connected, what="CONNECTED after the window")
        assert sum(e.type == "ChainSnapshot" for e in events) == 2
        # The next night, while running: broker closed, chains marked stale, then open again.
        clock.at = datetime(2026, 1, 14, 0, 10, tzinfo=IST)
        events = await next_events(batches)
        assert events[-1].state is FeedState.DISCONNECTED
        assert events[-1].message.startswith(
            f"{BROKER_CLOSED}: nightly maintenance window until 2026-01-14 05:30"
        )
        assert all(e.stale for e in events if e.type == "ChainSnapshot")
        clock.at = datetime(2026, 1, 14, 5, 30, tzinfo=IST)
        await eventually(connected, what="CONNECTED after the second window")
    finally:
        await source.close()


async def test_maintenance_errors_while_starting_and_running_report_broker_closed(fake: FakeUpstox) -> None:
    source = UpstoxSource(
        upstox_settings(fake, feed_stale_after_s=60),
        instrument_master=fake.instruments_url,
        expiries=fake.expiries,
        maintenance_windows=(),  # Upstox closes without the table knowing: only its errors say so
        backoff_initial_s=0.01,
        broker_closed_retry_s=0.05,
    )
    fake.maintenance = True
    try:
        await source.start()
        batches = source.batches()
        events = await next_events(batches)
        assert events[-1].state is FeedState.DISCONNECTED
        assert events[-1].message.startswith(BROKER_CLOSED)
        assert "UDAPI100074" in events[-1].message
        fake.end_maintenance()

        async def with_state(state: FeedState) -> list[Any]:
            events = await next_events(batches)
            return events if events[-1].state is state else []

        await eventually(lambda: with_state(FeedState.CONNECTED), what="CONNECTED after the broker opens")
        fake.start_maintenance()  # the running feed is cut off and re-authorizing is refused

        async def broker_closed() -> list[Any]:
            events = await next_events(batches)
            status = events[-1]
            return events if status.message.startswith(BROKER_CLOSED) else []

        closed = await eventually(broker_closed, what="broker closed while running")
        assert closed[-1].state is FeedState.DISCONNECTED
        assert source.feed.running  # waiting, not crashed
        fake.end_maintenance()
        await eventually(lambda: with_state(FeedState.CONNECTED), what="CONNECTED after the window")
    finally:
        await source.close()


async def test_a_night_in_the_window_raises_one_alert_and_recovers(
    fake: FakeUpstox, redis: Redis, settings: Settings
) -> None:
    """Through the service's feed loop: one 'broker closed' Alert for the whole window, then recovery."""
    live = Settings(
        **{
            **settings.model_dump(),
            "feed": "upstox",
            "upstox_access_token": TOKEN,
            "upstox_api_base": fake.base_url,
            "sim_snapshot_interval_s": 0.02,
        }
    )
    clock = SteppedClock(datetime(2026, 1, 13, 1, 0, tzinfo=IST))
    source = UpstoxSource(
        live,
        instrument_master=fake.instruments_url,
        expiries=fake.expiries,
        clock=clock,
        backoff_initial_s=0.01,
    )
    config = BusConfig.from_settings(live)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    loop = FeedLoop(
        source,
        publisher,
        redis,
        config,
        speed=0.0,
        lockstep=False,
        lockstep_max_lag=0,
        mode=MarketMode.LIVE,
        source_name=source.name,
        publish_status=False,
    )

    async def alerts() -> list[Alert]:
        entries = await redis.xrange(config.key("sys.alerts"))
        parsed = [parse_event(fields[b"event"]) for _, fields in entries]
        return [event for event in parsed if isinstance(event, Alert)]

    running = asyncio.create_task(loop.run())
    try:
        await eventually(_async(lambda: loop.stats.batches >= 20), what="20 batches inside the window")
        closed = await alerts()
        assert [alert.code for alert in closed] == ["FEED_DISCONNECTED"]
        assert BROKER_CLOSED in closed[0].message
        clock.at = datetime(2026, 1, 13, 5, 30, tzinfo=IST)

        async def recovered() -> list[Alert]:
            seen = await alerts()
            return seen if any(alert.code == "FEED_RECOVERED" for alert in seen) else []

        after = await eventually(recovered, what="recovery alert after the window")
        assert sum(BROKER_CLOSED in alert.message for alert in after) == 1
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await source.close()


# ---- subscription size -----------------------------------------------------------------------------


WIDE_EXPIRIES = tuple(date(2026, 1, 13) + timedelta(weeks=week) for week in range(7))
WIDE_STRIKES = tuple(float(strike) for strike in range(19_000, 29_001, 50))  # 201 strikes per expiry


async def test_default_subscription_stays_within_the_combined_caps_and_recentres() -> None:
    with running_fake_upstox(expiries=WIDE_EXPIRIES, strikes=WIDE_STRIKES, feed_interval_s=0.1) as fake:
        every_key = sum(1 for c in fake.contracts if c.expiry in WIDE_EXPIRIES)
        limits = SubscriptionLimits()
        assert every_key > limits.combined[FeedMode.OPTION_GREEKS]  # all strikes would not fit
        source = UpstoxSource(
            upstox_settings(fake, feed_stale_after_s=60),
            instrument_master=fake.instruments_url,
            maintenance_windows=(),
            backoff_initial_s=0.01,
            clock=SteppedClock(datetime(2026, 1, 12, 10, 0, tzinfo=IST)),
        )
        try:
            await source.start()
            plan = source.feed.subscriptions
            check_subscriptions(plan, limits)  # the default plan is inside the combined caps
            assert len(plan[FeedMode.OPTION_GREEKS]) == 7 * 2 * 81
            assert set(plan[FeedMode.FULL]) == {NIFTY_INDEX_KEY, INDIA_VIX_KEY}
            for band in source.contracts.values():
                assert (band.strikes[0], band.strikes[-1]) == (22_000.0, 26_000.0)
            await eventually(
                _async(lambda: len(fake.connections) == 1 and len(fake.connections[0].subscriptions) == 1136),
                what="subscribed at Upstox",
            )
            # Spot rallies 10 strikes (500 points): every band moves up with it.
            fake.index_ltp[NIFTY_INDEX_KEY] = 24_500.0
            batches = source.batches()
            await eventually(lambda: _recentred(batches, source), what="bands re-centred")
            for band in source.contracts.values():
                assert (band.strikes[0], band.strikes[-1]) == (22_500.0, 26_500.0)
            check_subscriptions(source.feed.subscriptions, limits)
            near = fake.contract_key(WIDE_EXPIRIES[0], 26_500.0, "CE")
            gone = fake.contract_key(WIDE_EXPIRIES[0], 22_000.0, "PE")
            server = fake.connections[0]
            await eventually(
                _async(lambda: near in server.subscriptions and gone not in server.subscriptions),
                what="Upstox told about the new band",
            )
            assert len(server.subscriptions) == 1136
            # A crash to the bottom of the listing: the band is cut short there, and stays put.
            fake.index_ltp[NIFTY_INDEX_KEY] = 19_100.0
            await eventually(
                _async(lambda: source.feed.quotes[NIFTY_INDEX_KEY].ltp == 19_100.0), what="crash"
            )
            for _ in range(3):
                await anext(batches)
            assert source.recentres == 2
            for band in source.contracts.values():
                assert (band.strikes[0], band.strikes[-1]) == (19_000.0, 21_100.0)
        finally:
            await source.close()


async def test_a_band_over_the_caps_is_refused_at_start(fake: FakeUpstox) -> None:
    with pytest.raises(SubscriptionLimitError, match=r"7 expiries x 2 sides x \(2 x 71 \+ 1\).*2002"):
        UpstoxSource(
            upstox_settings(fake, upstox_strikes_each_side=71), instrument_master=fake.instruments_url
        )
    assert fake.requests == []
    fits = UpstoxSource(
        upstox_settings(fake, upstox_strikes_each_side=70), instrument_master=fake.instruments_url
    )
    await fits.close()
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        UpstoxSource(upstox_settings(fake, upstox_maintenance_window="midnight"))


# ---- helpers ---------------------------------------------------------------------------------------


async def _recentred(batches: Any, source: UpstoxSource) -> bool:
    await anext(batches)
    return bool(source.recentres)


async def _all_quoted(feed: MarketFeed, keys: list[str]) -> bool:
    return all(key in feed.quotes and feed.quotes[key].updates > 0 for key in keys)


def _async(condition: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return condition()

    return check
