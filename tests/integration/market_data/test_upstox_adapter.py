"""The Upstox adapter against a real fake Upstox on 127.0.0.1 (HTTP + WebSocket), failure modes included."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upstox_server import INDIA_VIX_KEY, NIFTY_INDEX_KEY, TOKEN, FakeUpstox, running_fake_upstox
from tests.support.waiting import eventually
from volguard_common.clock import IST
from volguard_common.events import FeedState, QuoteFlag, Severity, parse_event
from volguard_common.settings import Settings
from volguard_market_data.adapters.upstox.chain import OptionChainClient
from volguard_market_data.adapters.upstox.feed import (
    FeedMode,
    MarketFeed,
    SubscriptionLimitError,
    SubscriptionLimits,
    check_subscriptions,
)
from volguard_market_data.adapters.upstox.http import (
    RateLimiter,
    RateLimits,
    UpstoxAuthError,
    UpstoxHttp,
    UpstoxRateLimitError,
    UpstoxResponseError,
    UpstoxServerError,
    token_expiry_after,
)
from volguard_market_data.adapters.upstox.instruments import load_instrument_master
from volguard_market_data.adapters.upstox.source import UpstoxSource

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
        feed = MarketFeed(http, stall_timeout_s=0.3, backoff_initial_s=0.01, backoff_max_s=0.05)
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


# ---- UpstoxSource ----------------------------------------------------------------------------------


async def test_upstox_source_produces_chain_ticks_status_and_goes_stale(fake: FakeUpstox) -> None:
    settings = Settings(
        feed="upstox",
        upstox_access_token=TOKEN,
        upstox_api_base=fake.base_url,
        instance="test",
        sim_snapshot_interval_s=0.05,
        feed_stale_after_s=0.4,
    )
    source = UpstoxSource(
        settings,
        instrument_master=fake.instruments_url,
        expiries=fake.expiries,
        stall_timeout_s=60,
        backoff_initial_s=0.01,
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


# ---- helpers ---------------------------------------------------------------------------------------


async def _all_quoted(feed: MarketFeed, keys: list[str]) -> bool:
    return all(key in feed.quotes and feed.quotes[key].updates > 0 for key in keys)


def _async(condition: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return condition()

    return check
