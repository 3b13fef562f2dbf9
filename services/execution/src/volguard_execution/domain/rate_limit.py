"""Order-rate limiting: Upstox's three windows and the SEBI retail-algo threshold, on an injected clock.

Upstox limits order requests (place, modify, cancel) per user to 10 a second, 500 a minute and 2,000
per 30 minutes (settings `upstox_orders_per_*`). SEBI's framework for retail algorithmic trading
(circular of 4 February 2025) lets a retail client's API orders go unregistered only below an
exchange-set threshold, which NSE set at 10 orders a second (setting `algo_order_threshold_per_second`):
the per-second window allows strictly fewer than that threshold, so 9 with today's numbers.

Windows slide: a send at time t counts in a window of length w until t + w. The limiter never sleeps; it
answers when the next send may go, and the caller (the service's send loop, or the backtest engine on
event time) waits that long. A 429 from Upstox means the request was refused before it was processed,
so the same order, with the same client order id, is sent again at the time the limiter names — it
keeps its identity and nothing else is re-sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from volguard_common.settings import Settings

# After a 429 without a Retry-After header: wait this long, doubling per consecutive 429, up to the cap.
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class RateWindow:
    name: str
    limit: int
    seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"rate window {self.name}: limit {self.limit} must be ≥ 1")
        if self.seconds <= 0:
            raise ValueError(f"rate window {self.name}: length {self.seconds} s must be > 0")


def order_rate_windows(
    *,
    per_second: int,
    per_minute: int,
    per_30_minutes: int,
    algo_threshold_per_second: int,
) -> tuple[RateWindow, ...]:
    """The windows an order sender must respect (from settings)."""
    if algo_threshold_per_second < 2:
        raise ValueError(f"algo threshold {algo_threshold_per_second}/s leaves no order rate below it")
    return (
        RateWindow("1s", min(per_second, algo_threshold_per_second - 1), 1.0),
        RateWindow("1min", per_minute, 60.0),
        RateWindow("30min", per_30_minutes, 1800.0),
    )


def order_rate_windows_from(settings: Settings) -> tuple[RateWindow, ...]:
    return order_rate_windows(
        per_second=settings.upstox_orders_per_second,
        per_minute=settings.upstox_orders_per_minute,
        per_30_minutes=settings.upstox_orders_per_30_minutes,
        algo_threshold_per_second=settings.algo_order_threshold_per_second,
    )


@dataclass(frozen=True, slots=True)
class RetryAt:
    """A throttled order: send this same client order id again at `at` (limiter clock seconds)."""

    client_order_id: str
    at: float


class OrderRateLimiter:
    """Sliding-window limiter over several windows. `monotonic` returns seconds (a fake in tests,
    `time.monotonic` live, event-time seconds in a backtest)."""

    def __init__(self, windows: Sequence[RateWindow], monotonic: Callable[[], float]) -> None:
        if not windows:
            raise ValueError("at least one rate window is needed")
        self._windows = tuple(windows)
        self._monotonic = monotonic
        self._longest = max(w.seconds for w in self._windows)
        self._sends: deque[float] = deque()
        self._blocked_until = float("-inf")
        self._consecutive_429 = 0

    @property
    def windows(self) -> tuple[RateWindow, ...]:
        return self._windows

    def _prune(self, now: float) -> None:
        while self._sends and self._sends[0] <= now - self._longest:
            self._sends.popleft()

    def _in_window(self, window: RateWindow, now: float) -> list[float]:
        return [t for t in self._sends if t > now - window.seconds]

    def next_send_at(self) -> float:
        """The earliest clock time at which one more order may be sent (now if it may go now)."""
        return self._next_send_at(self._monotonic())

    def _next_send_at(self, now: float) -> float:
        # Every public method reads the clock once and passes that reading down: on a real clock two
        # reads differ, and a slot judged free at the first could be recorded at a later second.
        self._prune(now)
        at = max(now, self._blocked_until)
        for window in self._windows:
            recent = self._in_window(window, now)
            if len(recent) >= window.limit:
                # The send that must age out of the window before one more fits.
                at = max(at, recent[len(recent) - window.limit] + window.seconds)
        return at

    def wait_s(self) -> float:
        now = self._monotonic()
        return self._next_send_at(now) - now

    def try_acquire(self) -> bool:
        """Take a slot for one order request now, if every window has room; records the send."""
        return self.try_acquire_at() is not None

    def try_acquire_at(self) -> float | None:
        """`try_acquire`, answering the clock time the send was recorded at (None: no slot now)."""
        now = self._monotonic()
        if self._next_send_at(now) > now:
            return None
        self._sends.append(now)
        return now

    def headroom(self) -> tuple[int, ...]:
        """Sends still allowed now in each window, in window order (one clock reading for all)."""
        now = self._monotonic()
        self._prune(now)
        if self._blocked_until > now:
            return tuple(0 for _ in self._windows)
        return tuple(max(0, w.limit - len(self._in_window(w, now))) for w in self._windows)

    def used(self, window: RateWindow) -> int:
        """Sends counted in `window` now."""
        now = self._monotonic()
        return len(self._in_window(window, now))

    def accepted(self) -> None:
        """Upstox processed a request: the back-off after 429s starts over."""
        self._consecutive_429 = 0

    def throttled(self, client_order_id: str, retry_after_s: float | None = None) -> RetryAt:
        """Upstox answered 429 to the request for `client_order_id`: block every send until the
        retry time and tell when to send this same order again."""
        now = self._monotonic()
        self._consecutive_429 += 1
        if retry_after_s is not None:
            if retry_after_s < 0:
                raise ValueError(f"Retry-After {retry_after_s} s must be ≥ 0")
            pause = retry_after_s
        else:
            pause = min(FIRST_BACKOFF_S * 2 ** (self._consecutive_429 - 1), MAX_BACKOFF_S)
        self._blocked_until = max(self._blocked_until, now + pause)
        return RetryAt(client_order_id, self._next_send_at(now))
