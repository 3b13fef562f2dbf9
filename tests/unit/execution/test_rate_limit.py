"""The order-rate limiter on a fake clock: every window, the SEBI threshold, and 429s."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volguard_common.settings import Settings
from volguard_execution.domain.rate_limit import (
    OrderRateLimiter,
    RateWindow,
    order_rate_windows,
    order_rate_windows_from,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, *, per_second: int = 10, algo: int = 10) -> OrderRateLimiter:
    windows = order_rate_windows(
        per_second=per_second, per_minute=500, per_30_minutes=2000, algo_threshold_per_second=algo
    )
    return OrderRateLimiter(windows, clock)


def send_all_allowed(limits: OrderRateLimiter) -> int:
    sent = 0
    while limits.try_acquire():
        sent += 1
    return sent


def test_settings_give_upstox_windows_below_the_sebi_threshold() -> None:
    settings = Settings(
        upstox_orders_per_second=10,
        upstox_orders_per_minute=500,
        upstox_orders_per_30_minutes=2000,
        algo_order_threshold_per_second=10,
    )
    windows = order_rate_windows_from(settings)
    assert [(w.limit, w.seconds) for w in windows] == [(9, 1.0), (500, 60.0), (2000, 1800.0)]


def test_per_second_window_stays_strictly_below_the_algo_threshold() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    assert send_all_allowed(limits) == 9
    assert limits.next_send_at() == pytest.approx(1001.0)
    clock.now = 1000.999
    assert not limits.try_acquire()
    clock.now = 1001.0
    assert send_all_allowed(limits) == 9


def test_a_lower_upstox_per_second_limit_wins_over_the_threshold() -> None:
    clock = FakeClock()
    assert send_all_allowed(limiter(clock, per_second=5)) == 5


def test_per_minute_window() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    sent = 0
    # 9 a second: the minute's 500 run out during second 55 (55 × 9 = 495, then 5 more).
    for second in range(60):
        clock.now = 1000.0 + second
        sent += send_all_allowed(limits)
    assert sent == 500
    minute = limits.windows[1]
    assert limits.used(minute) == 500
    # The first send (t=1000) leaves the minute window at 1060; the limiter says so.
    assert limits.next_send_at() == pytest.approx(1060.0)
    clock.now = 1060.0
    assert send_all_allowed(limits) == 9


def test_thirty_minute_window() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    sent = 0
    for minute in range(30):
        clock.now = 1000.0 + 60 * minute
        for second in range(60):
            clock.now = 1000.0 + 60 * minute + second
            sent += send_all_allowed(limits)
    assert sent == 2000
    # Blocked by the 30-minute window alone: the minute and second windows have room.
    clock.now = 1000.0 + 1799
    assert limits.used(limits.windows[0]) == 0
    assert not limits.try_acquire()
    assert limits.next_send_at() == pytest.approx(1000.0 + 1800)
    clock.now = 1000.0 + 1800
    assert limits.try_acquire()


@given(st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=300))
def test_no_window_is_ever_exceeded(gaps: list[float]) -> None:
    clock = FakeClock()
    windows = (RateWindow("1s", 3, 1.0), RateWindow("10s", 12, 10.0))
    limits = OrderRateLimiter(windows, clock)
    sends: list[float] = []
    for gap in gaps:
        clock.now += gap
        wait = limits.wait_s()
        assert wait >= 0
        if limits.try_acquire():
            sends.append(clock.now)
        else:
            assert wait > 0
    for t in sends:
        for window in windows:
            assert sum(1 for u in sends if t - window.seconds < u <= t) <= window.limit


def test_a_throttled_order_keeps_its_identity_and_waits() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    assert limits.try_acquire()
    retry = limits.throttled("vg0123456789abcdef01", retry_after_s=2.5)
    assert retry.client_order_id == "vg0123456789abcdef01"
    assert retry.at == pytest.approx(1002.5)
    clock.now = 1002.0
    assert not limits.try_acquire()
    clock.now = 1002.5
    assert limits.try_acquire()


def test_429_without_retry_after_backs_off_exponentially_until_accepted() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    assert [limits.throttled("tag").at - 1000.0 for _ in range(3)] == [1.0, 2.0, 4.0]
    limits.accepted()
    clock.now = 1010.0
    assert limits.throttled("tag").at == pytest.approx(1011.0)


def test_backoff_is_capped() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    for _ in range(20):
        retry = limits.throttled("tag")
    assert retry.at == pytest.approx(1060.0)


class SteppingClock:
    """A real clock moves between two reads; this one moves `step` seconds on every read and counts."""

    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        value = self.now
        self.now += self.step
        return value


def test_each_call_reads_the_clock_once() -> None:
    clock = SteppingClock(0.001)
    limits = OrderRateLimiter(order_rate_windows_from(Settings()), clock)
    for call in (limits.try_acquire, limits.next_send_at, limits.wait_s, lambda: limits.throttled("t")):
        before = clock.reads
        call()
        assert clock.reads - before == 1


def test_a_send_is_recorded_at_the_time_it_was_judged_on() -> None:
    # Each read is 0.4 s after the one before. A limiter that judged the slot on one reading and
    # recorded the send at another would let a 2-a-second window take a third send inside one second.
    clock = SteppingClock(0.4)
    limits = OrderRateLimiter((RateWindow("1s", 2, 1.0),), clock)
    sends: list[float] = []
    for _ in range(40):
        judged_at = clock.now
        if limits.try_acquire():
            sends.append(judged_at)
    assert len(sends) > 2
    for t in sends:
        assert sum(1 for u in sends if t - 1.0 < u <= t) <= 2


def test_headroom_counts_what_each_window_still_allows() -> None:
    clock = FakeClock()
    limits = limiter(clock)
    assert limits.headroom() == (9, 500, 2000)
    for _ in range(4):
        assert limits.try_acquire()
    assert limits.headroom() == (5, 496, 1996)
    clock.now += 1.0
    assert limits.headroom() == (9, 496, 1996)
    limits.throttled("tag", retry_after_s=3.0)
    assert limits.headroom() == (0, 0, 0)
    clock.now += 3.0
    assert limits.headroom() == (9, 496, 1996)
