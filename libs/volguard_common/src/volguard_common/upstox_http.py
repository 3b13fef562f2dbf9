"""One HTTP client for every Upstox REST call: auth headers, the documented rate limits, retries for reads.

Shared by market_data (feed authorize, option chain, instrument master, market information) and execution
(orders on the HFT host, order book, trades, positions, the portfolio stream's authorize).

Upstox facts this module relies on (checked against the Upstox developer documentation):
- Every call carries `Authorization: Bearer <access_token>` and `Accept: application/json`.
- Order placement, modification and cancellation live on a host of their own,
  `https://api-hft.upstox.com` (`Configuration.order_host` in upstox/upstox-python); everything else on
  `https://api.upstox.com`. The token goes to both hosts and to no other (the instrument master's CDN).
- Errors come back as `{"status": "error", "errors": [{"errorCode": ..., "message": ...}]}`.
- Standard (non-order) APIs are limited per user and per API to 50 requests/second, 500/minute and
  2000/30 minutes (upstox.com/developer/api-documentation/rate-limiting); a breach is HTTP 429 with
  errorCode UDAPI10005. Upstox documents no Retry-After header; we honour one when present and otherwise
  back off exponentially.
- An access token is valid until 03:30 IST the next morning, whenever it was generated
  (upstox.com/developer/api-documentation/get-token). A 401 after that is not transient: retrying cannot
  help, so it surfaces at once as `UpstoxAuthError` with instructions.

Only idempotent reads (GET) are retried. A POST whose response was lost may have taken effect at the
broker, so it is never re-sent here (DESIGN §3: an unknown outcome is resolved, not retried blindly).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from volguard_common.clock import IST

log = logging.getLogger(__name__)

# Upstox access tokens die at 03:30 IST the next morning (Get Token API docs).
TOKEN_EXPIRY_HOUR = 3
TOKEN_EXPIRY_MINUTE = 30

TOKEN_HELP = (
    "Upstox access tokens expire every day at 03:30 IST, whenever they were generated. Generate a new "
    "one (Upstox login → authorization code → POST /v2/login/authorization/token), set it as "
    "VOLGUARD_UPSTOX_ACCESS_TOKEN and restart the service (market_data, execution)."
)


def token_expiry_after(now: datetime) -> datetime:
    """The next 03:30 IST strictly after `now`: when a token that is valid at `now` stops working."""
    local = now.astimezone(IST)
    expiry = local.replace(hour=TOKEN_EXPIRY_HOUR, minute=TOKEN_EXPIRY_MINUTE, second=0, microsecond=0)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry


# ---- errors ----------------------------------------------------------------------------------------


class UpstoxError(Exception):
    """An Upstox call failed. `status` is the HTTP status (None when no response came back)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.method = method
        self.path = path


class UpstoxAuthError(UpstoxError):
    """401: the access token is missing, invalid or expired (daily at 03:30 IST). Not retried."""


class UpstoxRateLimitError(UpstoxError):
    """429 Too Many Requests (errorCode UDAPI10005), after the retries allowed for the call."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class UpstoxServerError(UpstoxError):
    """5xx from Upstox, after the retries allowed for the call."""


class UpstoxClientError(UpstoxError):
    """Another 4xx: the request itself is wrong (bad instrument key, bad expiry, ...). Not retried."""


class UpstoxResponseError(UpstoxError):
    """The response is not what the documentation describes (not JSON, wrong shape)."""


class UpstoxUnavailableError(UpstoxError):
    """No response: connect or read timeout, connection refused or reset, after the allowed retries."""


class UpstoxNotSentError(UpstoxUnavailableError):
    """The request never left: no connection could be made (refused, connect timeout, no pooled
    connection). Upstox cannot have acted on it."""


class UpstoxNoAnswerError(UpstoxUnavailableError):
    """The request was (or may have been) sent but no answer came back: a read or write timeout, a reset
    or a broken response. Upstox may have acted on it; for an order, look it up before anything else."""


# httpx errors raised before a byte of the request went out.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


# Upstox answers these outside its API service hours (the nightly maintenance window, reported by public
# clients as 00:00-05:30 IST). Nothing is wrong with the token or the request: the broker is closed.
BROKER_CLOSED_ERROR_CODES = frozenset({"UDAPI100074", "UDAPI100072"})


class UpstoxBrokerClosedError(UpstoxError):
    """Upstox is in its nightly maintenance window (UDAPI100074 / UDAPI100072). Not retried here: the
    caller waits for the window to end instead of hammering a closed service."""


# ---- rate limiting ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests allowed per window. Defaults: Upstox standard APIs (50/s, 500/min, 2000/30 min)."""

    per_second: int = 50
    per_minute: int = 500
    per_30_minutes: int = 2000

    def windows(self) -> tuple[tuple[int, float], ...]:
        return ((self.per_second, 1.0), (self.per_minute, 60.0), (self.per_30_minutes, 1800.0))


class TokenBucket:
    """`capacity` tokens refilled evenly over `window_s`: bursts up to capacity, then the average rate."""

    def __init__(self, capacity: int, window_s: float, now: float) -> None:
        if capacity < 1 or window_s <= 0:
            raise ValueError(f"token bucket needs capacity ≥ 1 and window > 0, got {capacity}/{window_s}s")
        self.capacity = float(capacity)
        self.rate = capacity / window_s
        self.tokens = float(capacity)
        self.updated = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self) -> float:
        """Seconds until one token is available (after `refill`)."""
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class RateLimiter:
    """All windows at once: a request goes when every bucket has a token, and takes one from each."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._buckets = [TokenBucket(capacity, window, now) for capacity, window in limits.windows()]
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time callers were held back, for health and tests

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                for bucket in self._buckets:
                    bucket.refill(now)
                wait = max(bucket.wait_s() for bucket in self._buckets)
                if wait <= 0:
                    for bucket in self._buckets:
                        bucket.tokens -= 1.0
                    return
                self.waited_s += wait
                await self._sleep(wait)

    def headroom(self) -> tuple[int, int, int]:
        """Whole requests still available now in the second, minute and 30-minute windows."""
        now = self._clock()
        for bucket in self._buckets:
            bucket.refill(now)
        second, minute, half_hour = (int(bucket.tokens) for bucket in self._buckets)
        return second, minute, half_hour


# ---- the client ------------------------------------------------------------------------------------


@dataclass(slots=True)
class HttpStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class _Retryable(Exception):
    """Internal: a failed attempt that a read may repeat; carries the final error to raise."""

    def __init__(self, error: UpstoxError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    reference = now or datetime.now(when.tzinfo)
    return max(0.0, (when - reference).total_seconds())


def _error_details(response: httpx.Response) -> tuple[str | None, str]:
    """(errorCode, message) from Upstox's error JSON; the raw body (truncated) when it is not that."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:300]
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("errorCode") or first.get("error_code")
            return (str(code) if code is not None else None), str(first.get("message", ""))
    return None, json.dumps(body)[:300]


class UpstoxHttp:
    """Shared async client for the Upstox REST API.

    `get_json` (reads) is rate limited and retried on 429 (honouring Retry-After), 5xx and timeouts with
    exponential backoff and jitter. `post_json` is rate limited and sent exactly once. `get_bytes` fetches
    files (the instrument master), adding the token only for hosts of the API itself: the master lives on
    a public CDN that has no business seeing it.
    """

    def __init__(
        self,
        base_url: str,
        access_token: SecretStr | str,
        *,
        order_base_url: str | None = None,
        limits: RateLimits | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be ≥ 1, got {max_attempts}")
        token = access_token.get_secret_value() if isinstance(access_token, SecretStr) else access_token
        if not token:
            raise UpstoxAuthError(f"no Upstox access token configured. {TOKEN_HELP}")
        self.base_url = base_url.rstrip("/")
        # Orders go to the HFT host; without one configured (tests, the feed-only market_data) they go
        # to the base host.
        self.order_base_url = (order_base_url or base_url).rstrip("/")
        self._api_hosts = frozenset({urlsplit(self.base_url).netloc, urlsplit(self.order_base_url).netloc})
        self._token = SecretStr(token)
        self.limiter = RateLimiter(limits or RateLimits())
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self._rng = rng or random.Random()
        self.stats = HttpStats()
        self.last_auth_error: UpstoxAuthError | None = None
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> UpstoxHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    def __repr__(self) -> str:
        # The token never appears in a repr, a log line or an error message.
        return f"UpstoxHttp(base_url={self.base_url!r}, order_base_url={self.order_base_url!r})"

    # ---- public calls ------------------------------------------------------------------------------

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET an API path and return the parsed JSON body (retried; see the class docstring)."""
        response = await self._retrying("GET", path, params=params)
        return self._json(response, "GET", path)

    async def post_json(self, path: str, payload: Mapping[str, Any]) -> Any:
        """POST once. Never retried: a lost response does not mean the broker did nothing."""
        response = await self._attempt("POST", path, json_body=payload)
        return self._json(response, "POST", path)

    async def send_once(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request exactly once and return the parsed JSON body: order placement, modification
        and cancellation. A connection that never opened raises `UpstoxNotSentError`; a request that went
        out without an answer raises `UpstoxNoAnswerError` (the broker may have acted on it)."""
        response = await self._attempt(method, path, params=params, json_body=payload, extra_headers=headers)
        return self._json(response, method, path)

    async def get_bytes(self, url: str) -> bytes:
        """GET a file by absolute URL or API path (retried like any read)."""
        response = await self._retrying("GET", url, accept="*/*")
        return response.content

    # ---- machinery ---------------------------------------------------------------------------------

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise UpstoxResponseError(
                f"Upstox {method} {path} returned a body that is not JSON ({exc}); first bytes: "
                f"{response.text[:120]!r}",
                status=response.status_code,
                method=method,
                path=path,
            ) from None

    def _wait_s(self, state: RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _Retryable) and error.retry_after_s is not None:
            return float(min(error.retry_after_s, self.max_retry_after_s))
        # Exponential with "equal jitter": half the step is fixed, half random, so clients spread out
        # without any of them retrying immediately.
        step = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** (state.attempt_number - 1))
        return step / 2 + self._rng.uniform(0, step / 2)

    async def _retrying(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, accept: str | None = None
    ) -> httpx.Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait_s,
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable)),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(method, path, params=params, accept=accept, retryable=True)
        except _Retryable as exhausted:
            raise exhausted.error from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning(
            "upstox request failed, retrying: %s (attempt %d of %d)",
            error,
            state.attempt_number,
            self.max_attempts,
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        accept: str | None = None,
        retryable: bool = False,
        extra_headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        await self.limiter.acquire()
        headers: dict[str, str] = dict(extra_headers or {})
        target = urlsplit(path)
        if not target.netloc or target.netloc in self._api_hosts:
            headers.update(self._auth_headers())
        if accept is not None:
            headers["Accept"] = accept
        self.stats.requests += 1
        try:
            response = await self._client.request(
                method, path, params=params, json=json_body, headers=headers
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            self.stats.timeouts += 1
            kind = UpstoxNotSentError if isinstance(exc, _NOT_SENT) else UpstoxNoAnswerError
            error = kind(
                f"Upstox {method} {path}: no response ({type(exc).__name__}: {exc})", method=method, path=path
            )
            if retryable:
                raise _Retryable(error) from None
            raise error from None
        status = response.status_code
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        if status < 400:
            return response
        code, message = _error_details(response)
        where = f"Upstox {method} {path} → HTTP {status}" + (f" {code}" if code else "")
        if code in BROKER_CLOSED_ERROR_CODES:
            raise UpstoxBrokerClosedError(
                f"{where}: {message or 'outside API service hours'} (broker closed for its nightly "
                "maintenance)",
                status=status,
                error_code=code,
                method=method,
                path=path,
            )
        if status == 401:
            auth_error = UpstoxAuthError(
                f"{where}: {message or 'unauthorized'}. The access token is invalid or expired. {TOKEN_HELP}",
                status=status,
                error_code=code,
                method=method,
                path=path,
            )
            self.last_auth_error = auth_error
            raise auth_error
        if status == 429:
            self.stats.rate_limited += 1
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            limit_error = UpstoxRateLimitError(
                f"{where}: rate limited ({message or 'too many requests'})",
                retry_after_s=retry_after,
                status=status,
                error_code=code,
                method=method,
                path=path,
            )
            if retryable:
                raise _Retryable(limit_error, retry_after)
            raise limit_error
        if status >= 500:
            self.stats.server_errors += 1
            server_error = UpstoxServerError(
                f"{where}: {message}", status=status, error_code=code, method=method, path=path
            )
            if retryable:
                raise _Retryable(server_error)
            raise server_error
        raise UpstoxClientError(
            f"{where}: {message}", status=status, error_code=code, method=method, path=path
        )
