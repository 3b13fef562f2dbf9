"""One configuration model for every VolGuard process (DESIGN §7).

Values come from, in order of precedence: keyword arguments (tests), environment variables with the
`VOLGUARD_` prefix, then a `.env` file in the working directory. Field names are flat, so the field
`redis_url` is set with `VOLGUARD_REDIS_URL`.

Every default equals the documented default. Invalid combinations fail at construction with a
message that names the variable as the operator types it, because a wrong limit discovered at the
first trade is a limit that was never enforced. Services call `load_settings_or_exit()` at start:
it prints those messages and exits with status 2 instead of dumping a traceback.
"""

from __future__ import annotations

import functools
import socket
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "VOLGUARD_"

# Exit status for a configuration error (the usual "bad usage" status of command-line tools).
CONFIG_ERROR_EXIT_CODE = 2

MIN_ACCOUNT_SIZE = Decimal("100000")

# Port layout: the dashboard keeps its well-known port; each backend service gets base + offset.
SERVICE_PORT_OFFSETS: dict[str, int] = {
    "market_data": 1,
    "analytics": 2,
    "strategy": 3,
    "risk": 4,
    "execution": 5,
}
SERVICE_NAMES: tuple[str, ...] = (
    "market_data",
    "analytics",
    "strategy",
    "risk",
    "execution",
    "dashboard_api",
)

# The INR risk-free rate every service prices and discounts with (annual, as a fraction). Source: the
# cut-off yield of the RBI's weekly 91-day Treasury-bill auctions, the usual reference for short-dated
# INR carry, which settled near 5.5 % in the second half of 2025 after the repo rate was cut to 5.50 %
# (RBI MPC, 6 June 2025). Used as a continuously compounded rate: the gap to the quoted yield (a few
# basis points at three months) is far below the noise of the NIFTY futures basis. Review it when the
# T-bill yield moves by more than ~25 bp (VOLGUARD_RISK_FREE_RATE).
DEFAULT_RISK_FREE_RATE = 0.055

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def env_name(field: str) -> str:
    """The environment variable that sets `field`, e.g. `max_vega` → `VOLGUARD_MAX_VEGA`."""
    return f"{ENV_PREFIX}{field.upper()}"


class _VolGuardDotEnvSource(PydanticBaseSettingsSource):
    """The `.env` source, reading only `VOLGUARD_` keys.

    The same `.env` often carries other tools' variables (POSTGRES_PASSWORD, ...); those are none of
    our business. A `VOLGUARD_` key that names no setting is kept, so `extra="forbid"` reports the typo.
    """

    def __init__(self, settings_cls: type[BaseSettings], inner: DotEnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        # With extra="forbid" the inner source returns known settings under their field names and any
        # other key as it appears in the file (lower-cased): keep the former, and the latter only when
        # it carries our prefix, stripped so the error names the setting the user meant.
        prefix = ENV_PREFIX.lower()
        data: dict[str, Any] = {}
        for key, value in self._inner().items():
            if key in self.settings_cls.model_fields:
                data[key] = value
            elif key.lower().startswith(prefix):
                data[key.lower().removeprefix(prefix)] = value
        return data


class Settings(BaseSettings):
    """All configuration of one VolGuard process. Frozen: read it, never mutate it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        # A misspelt VOLGUARD_ key in .env or a misspelt keyword is an error, not a silent default.
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        validate_default=True,
    )

    # ---- runtime and infrastructure -----------------------------------------------------------
    mode: Literal["paper", "live"] = Field(
        default="paper",
        description="'paper' simulates fills with the paper broker; 'live' sends real orders to Upstox "
        "and needs an Upstox access token and the Upstox feed.",
    )
    feed: Literal["sim", "replay", "upstox"] = Field(
        default="sim",
        description="Where market data comes from: 'sim' a simulated NIFTY market, 'replay' a recorded "
        "session, 'upstox' the live Upstox feed.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis holding every event stream between the services.",
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/volguard",
        description="Postgres holding trades, positions, orders, fills and the capital ledger.",
    )
    stream_namespace: str = Field(
        default="",
        description="Prefix of every Redis key. Empty in production; each test run sets a unique one so "
        "runs never see each other's streams.",
    )
    instance: str = Field(
        default_factory=socket.gethostname,
        description="Stable name of this replica (its Redis consumer name). Defaults to the host name; "
        "must stay the same across restarts so pending messages are picked up again.",
    )
    bus_block_ms: int = Field(
        default=1000, description="How long a consumer waits for new stream entries per read, in ms."
    )
    bus_batch: int = Field(default=32, description="Largest number of stream entries read at once.")
    bus_claim_idle_ms: int = Field(
        default=30000,
        description="A message unacknowledged for this long (ms) is taken over by another replica.",
    )
    bus_claim_interval_ms: int = Field(
        default=5000, description="How often (ms) each consumer looks for stuck messages to take over."
    )
    bus_max_deliveries: int = Field(
        default=5,
        description="After this many failed deliveries a message goes to the dead-letter stream and an "
        "alert is raised.",
    )
    http_host: str = Field(
        default="127.0.0.1", description="Interface the dashboard and service health endpoints bind to."
    )
    dashboard_port: int = Field(default=8000, description="Port of the dashboard (web UI, REST, WebSocket).")
    service_port_base: int = Field(
        default=8100,
        description="Health/metrics ports of the services are this base plus 1 (market_data), 2 "
        "(analytics), 3 (strategy), 4 (risk) and 5 (execution).",
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="'json' for machines and log shippers, 'console' for humans."
    )
    log_level: LogLevel = Field(default="INFO", description="Lowest level that is logged.")
    state_dir: Path = Field(
        default=Path(".volguard"),
        description="Directory for local state: embedded Redis/Postgres, pid files, recordings.",
    )
    upstox_access_token: SecretStr | None = Field(
        default=None,
        description="Upstox API access token; needed for the Upstox feed and live trading. Never logged.",
    )

    # ---- market data (simulator, replay, Upstox) ----------------------------------------------
    sim_seed: int = Field(default=7, description="Seed of the simulated market: same seed, same market.")
    sim_start: datetime | None = Field(
        default=None,
        description="IST time the simulated session starts (e.g. 2026-01-13T09:15:00+05:30). Default: the "
        "open of the current trading day if the market is open now, else of the next trading day.",
    )
    sim_scenario: str = Field(
        default="",
        description="Scripted scenario for the simulator: gap_up_1|2|3|5, gap_down_1|2|3|5, vix_spike, "
        "event_day, black_swan, expiry_pin; empty for an ordinary day.",
    )
    sim_strikes_each_side: int = Field(
        default=60, description="Strikes either side of the at-the-money strike (60 gives 121 strikes)."
    )
    sim_weeklies: int = Field(
        default=4, description="Weekly expiries listed besides the next three monthlies (6+ expiries)."
    )
    sim_snapshot_interval_s: float = Field(
        default=1.0, description="Exchange seconds between chain snapshots of the simulator."
    )
    speed: float = Field(
        default=1.0,
        description="Market time per wall time for sim and replay: 1 is real time, 100 is 100x; 0 means "
        "as fast as possible (use with lockstep).",
    )
    lockstep: bool = Field(
        default=False,
        description="Publish the next snapshot only when every consumer group of md.* is at most "
        "lockstep_max_lag entries behind, so a backtest runs as fast as the slowest service.",
    )
    lockstep_max_lag: int = Field(default=0, description="Entries a group may be behind in lockstep mode.")
    replay_dir: Path | None = Field(
        default=None, description="Directory of a recorded session to play back when feed is 'replay'."
    )
    feed_stale_after_s: float = Field(
        default=10.0,
        description="Exchange seconds without a tick or a chain snapshot after which the feed is stale: "
        "an Alert is raised and md.status says STALE so risk stops new entries.",
    )
    upstox_api_base: str = Field(
        default="https://api.upstox.com", description="Base URL of the Upstox REST API."
    )

    # ---- money and risk (DESIGN §7) -----------------------------------------------------------
    account_size: Decimal = Field(
        default=Decimal("2000000"),
        description="Trading capital in rupees (default ₹20,00,000). Every percentage limit below is a "
        "share of this. Minimum ₹1,00,000.",
    )
    bucket_weekly_pct: Decimal = Field(
        default=Decimal("40"),
        description="Share of capital for weekly-expiry option selling, in percent.",
    )
    bucket_monthly_pct: Decimal = Field(
        default=Decimal("50"),
        description="Share of capital for monthly-expiry option selling, in percent.",
    )
    bucket_intraday_pct: Decimal = Field(
        default=Decimal("10"),
        description="Share of capital for intraday trades (always flat by the close), in percent. The "
        "three buckets must add up to 100.",
    )
    daily_loss_limit_pct: Decimal = Field(
        default=Decimal("3"),
        description="Largest loss allowed in one trading day, in percent of capital. When reached, risk "
        "closes every position and blocks new trades until the next trading day.",
    )
    soft_stop_pct: Decimal = Field(
        default=Decimal("2"),
        description="Day's loss, in percent of capital, at which no new positions are opened; open "
        "positions are still managed.",
    )
    hard_stop_pct: Decimal = Field(
        default=Decimal("3"),
        description="Day's loss, in percent of capital, at which risk flattens every position. Must not "
        "be below the soft stop.",
    )
    profit_target_pct: Decimal = Field(
        default=Decimal("35"),
        description="Close a position once it has captured this percent of the credit received.",
    )
    stop_multiple: Decimal = Field(
        default=Decimal("2"),
        description="Close a position when its loss reaches this multiple of the credit received "
        "(2 = loss of twice the credit).",
    )
    max_vega: float = Field(
        default=1000.0,
        description="Largest absolute portfolio vega: rupees gained or lost per 1 vol-point move in "
        "implied volatility.",
    )
    max_delta: float = Field(
        default=200.0,
        description="Largest absolute portfolio delta, in NIFTY units (option delta × quantity): the "
        "portfolio may behave like at most this many units of the index.",
    )
    max_gamma: float = Field(
        default=500.0,
        description="Largest absolute portfolio gamma: change in portfolio delta (NIFTY units) for a 1 % "
        "move in NIFTY.",
    )
    upstox_orders_per_second: int = Field(
        default=10, description="Upstox order rate limit: orders per second."
    )
    upstox_orders_per_minute: int = Field(
        default=500, description="Upstox order rate limit: orders per minute."
    )
    upstox_orders_per_30_minutes: int = Field(
        default=2000, description="Upstox order rate limit: orders per 30 minutes."
    )

    risk_free_rate: float = Field(
        default=DEFAULT_RISK_FREE_RATE,
        description="INR risk-free rate (annual fraction, continuously compounded) used by analytics, "
        "strategy and risk to discount option prices and carry spot to a forward. Default 0.055: the RBI "
        "91-day Treasury-bill cut-off yield, ~5.5 % in the second half of 2025 (after the 6 June 2025 repo "
        "cut to 5.50 %); update it when that yield moves.",
    )

    # ---- analytics thresholds -----------------------------------------------------------------
    # The three IV-RV thresholds are calibrated on the real daily history in ../shared/data: 30-day
    # implied vol (the nifty_atm_iv_daily.csv closes, which are India VIX to two decimals) minus the
    # 21-session Yang-Zhang realised vol of nifty50_daily_nse.csv, 186 sessions from January to October
    # 2025 (median +2.0 points, 10th percentile -1.8, 90th +3.6, 95th +4.5). A signal marks the unusual:
    # with these, SELL_SMALL or SELL_BIG on 9 % of those days and AVOID on 10 %
    # (tests/unit/analytics/test_calibration.py checks the shares). The old 2 / 4 / -1 sold vol on
    # half of all days.
    iv_rv_sell_big_pts: float = Field(
        default=4.5,
        description="Implied minus realised/forecast volatility, in vol points, at or above which "
        "selling volatility is favoured at full size. Default 4.5: the 95th percentile of daily 30-day "
        "IV minus 21-session realised vol of NIFTY, Jan-Oct 2025 (5 % of days).",
    )
    iv_rv_sell_small_pts: float = Field(
        default=3.7,
        description="IV minus RV, in vol points, at or above which selling volatility is allowed at "
        "reduced size. Default 3.7: the 91st percentile of daily IV minus RV of NIFTY, Jan-Oct 2025, so "
        "a selling signal (small or big) marks the richest ~9 % of days rather than every other day.",
    )
    iv_rv_avoid_pts: float = Field(
        default=-2.0,
        description="IV minus RV, in vol points, at or below which options are cheap and no volatility "
        "is sold (usually negative). Default -2.0: the 10th percentile of daily IV minus RV of NIFTY, "
        "Jan-Oct 2025 (10 % of days).",
    )
    term_structure_threshold_pts: float = Field(
        default=1.0,
        description="Slope of ATM implied vol across expiries, in vol points per 30 days, beyond which "
        "the curve counts as in contango (positive) or backwardation (negative) rather than flat.",
    )
    skew_threshold_pts: float = Field(
        default=2.0,
        description="25-delta risk reversal (put IV minus call IV), in vol points, beyond which skew "
        "counts as steep.",
    )
    vix_spike_window_s: int = Field(
        default=180,
        description="Look-back window, in seconds, over which an India VIX jump counts as a spike.",
    )
    vix_spike_pct: float = Field(
        default=8.0,
        description="Rise of India VIX, in percent, within the spike window that counts as a spike and "
        "stops new short-volatility trades.",
    )
    event_multiplier_a: float = Field(
        default=0.3,
        description="Position-size multiplier around a severity-A event (most severe: policy, budget, "
        "election results).",
    )
    event_multiplier_b: float = Field(
        default=0.5, description="Position-size multiplier around a severity-B event."
    )
    event_multiplier_c: float = Field(
        default=1.0, description="Position-size multiplier around a severity-C event (least severe)."
    )
    partial_fill_timeout_s: float = Field(
        default=30.0,
        description="Seconds a basket may stay partly filled before execution completes it aggressively "
        "or unwinds the filled legs, so no naked half-position is left.",
    )
    afe_patience_s: float = Field(
        default=5.0,
        description="Adaptive fill engine: seconds a limit order rests at one price before it steps "
        "one tick towards the other side of the spread.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if isinstance(dotenv_settings, DotEnvSettingsSource):
            dotenv_settings = _VolGuardDotEnvSource(settings_cls, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        problems = _consistency_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def port_for(self, service: str) -> int:
        """The HTTP port (health, ready, metrics; the UI for the dashboard) of `service`."""
        if service == "dashboard_api":
            return self.dashboard_port
        offset = SERVICE_PORT_OFFSETS.get(service)
        if offset is None:
            raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICE_NAMES)}")
        return self.service_port_base + offset


def _consistency_problems(s: Settings) -> list[str]:
    problems: list[str] = []

    def at_least(field: str, bound: float | Decimal, *, strict: bool = False) -> None:
        value = getattr(s, field)
        if value < bound or (strict and value == bound):
            relation = ">" if strict else "≥"
            problems.append(f"{env_name(field)} must be {relation} {bound}, got {value}")

    if s.account_size < MIN_ACCOUNT_SIZE:
        problems.append(
            f"{env_name('account_size')} must be at least {MIN_ACCOUNT_SIZE} rupees (₹1,00,000), "
            f"got {s.account_size}"
        )

    buckets = ("bucket_weekly_pct", "bucket_monthly_pct", "bucket_intraday_pct")
    for field in buckets:
        at_least(field, 0)
    bucket_sum = s.bucket_weekly_pct + s.bucket_monthly_pct + s.bucket_intraday_pct
    if bucket_sum != 100:
        problems.append(f"{' + '.join(env_name(f) for f in buckets)} must sum to 100, got {bucket_sum}")

    for field in ("daily_loss_limit_pct", "soft_stop_pct", "hard_stop_pct", "profit_target_pct"):
        at_least(field, 0, strict=True)
        if getattr(s, field) > 100:
            problems.append(f"{env_name(field)} is a percentage and must be ≤ 100, got {getattr(s, field)}")
    if s.soft_stop_pct > s.hard_stop_pct:
        problems.append(
            f"{env_name('soft_stop_pct')} ({s.soft_stop_pct}) must not exceed "
            f"{env_name('hard_stop_pct')} ({s.hard_stop_pct})"
        )
    at_least("stop_multiple", 0, strict=True)
    for field in ("max_vega", "max_delta", "max_gamma"):
        at_least(field, 0)
    at_least("risk_free_rate", 0)
    if s.risk_free_rate >= 0.5:
        # A rate entered in percent (5.5 for 5.5 %) would discount every option to nothing.
        problems.append(
            f"{env_name('risk_free_rate')} is an annual fraction (0.055 for 5.5 %), got {s.risk_free_rate}"
        )

    for field in ("upstox_orders_per_second", "upstox_orders_per_minute", "upstox_orders_per_30_minutes"):
        at_least(field, 1)
    if s.upstox_orders_per_second > s.upstox_orders_per_minute:
        problems.append(
            f"{env_name('upstox_orders_per_second')} ({s.upstox_orders_per_second}) must not exceed "
            f"{env_name('upstox_orders_per_minute')} ({s.upstox_orders_per_minute})"
        )
    if s.upstox_orders_per_minute > s.upstox_orders_per_30_minutes:
        problems.append(
            f"{env_name('upstox_orders_per_minute')} ({s.upstox_orders_per_minute}) must not exceed "
            f"{env_name('upstox_orders_per_30_minutes')} ({s.upstox_orders_per_30_minutes})"
        )

    at_least("iv_rv_sell_big_pts", 0)
    at_least("iv_rv_sell_small_pts", 0)
    if s.iv_rv_sell_small_pts > s.iv_rv_sell_big_pts:
        problems.append(
            f"{env_name('iv_rv_sell_small_pts')} ({s.iv_rv_sell_small_pts}) must not exceed "
            f"{env_name('iv_rv_sell_big_pts')} ({s.iv_rv_sell_big_pts})"
        )
    if s.iv_rv_avoid_pts >= s.iv_rv_sell_small_pts:
        problems.append(
            f"{env_name('iv_rv_avoid_pts')} ({s.iv_rv_avoid_pts}) must be below "
            f"{env_name('iv_rv_sell_small_pts')} ({s.iv_rv_sell_small_pts})"
        )
    at_least("term_structure_threshold_pts", 0)
    at_least("skew_threshold_pts", 0)
    at_least("vix_spike_window_s", 0, strict=True)
    at_least("vix_spike_pct", 0, strict=True)

    multipliers = ("event_multiplier_a", "event_multiplier_b", "event_multiplier_c")
    for field in multipliers:
        value = getattr(s, field)
        if not 0 <= value <= 1:
            problems.append(f"{env_name(field)} must be between 0 and 1, got {value}")
    if not s.event_multiplier_a <= s.event_multiplier_b <= s.event_multiplier_c:
        # A more severe event must never allow a larger position than a milder one.
        problems.append(
            f"{' ≤ '.join(env_name(f) for f in multipliers)} must hold, got "
            f"{s.event_multiplier_a}, {s.event_multiplier_b}, {s.event_multiplier_c}"
        )
    at_least("partial_fill_timeout_s", 0, strict=True)
    at_least("afe_patience_s", 0, strict=True)
    if s.afe_patience_s > s.partial_fill_timeout_s:
        problems.append(
            f"{env_name('afe_patience_s')} ({s.afe_patience_s}) must not exceed "
            f"{env_name('partial_fill_timeout_s')} ({s.partial_fill_timeout_s})"
        )

    at_least("speed", 0)
    at_least("lockstep_max_lag", 0)
    at_least("sim_strikes_each_side", 1)
    at_least("sim_weeklies", 1)
    at_least("sim_snapshot_interval_s", 0, strict=True)
    at_least("feed_stale_after_s", 0, strict=True)
    if s.sim_start is not None and s.sim_start.tzinfo is None:
        problems.append(f"{env_name('sim_start')} needs a UTC offset (e.g. +05:30), got {s.sim_start}")
    if s.feed == "replay" and s.replay_dir is None:
        problems.append(f"{env_name('feed')}=replay needs {env_name('replay_dir')}")
    at_least("bus_block_ms", 1)
    at_least("bus_batch", 1)
    at_least("bus_claim_idle_ms", 1)
    at_least("bus_claim_interval_ms", 1)
    at_least("bus_max_deliveries", 1)

    for field in ("dashboard_port", "service_port_base"):
        value = getattr(s, field)
        if not 1 <= value <= 65535:
            problems.append(f"{env_name(field)} must be a TCP port (1-65535), got {value}")
    top_port = s.service_port_base + max(SERVICE_PORT_OFFSETS.values())
    if top_port > 65535:
        problems.append(f"{env_name('service_port_base')} + 5 must be a TCP port (≤ 65535), got {top_port}")
    if s.service_port_base < s.dashboard_port <= top_port:
        problems.append(
            f"{env_name('dashboard_port')} ({s.dashboard_port}) collides with the service ports "
            f"{s.service_port_base + 1}-{top_port} from {env_name('service_port_base')}"
        )
    if not s.instance.strip():
        problems.append(f"{env_name('instance')} must not be empty")

    has_token = s.upstox_access_token is not None and s.upstox_access_token.get_secret_value() != ""
    if s.mode == "live":
        if not has_token:
            problems.append(f"{env_name('mode')}=live needs {env_name('upstox_access_token')}")
        if s.feed != "upstox":
            problems.append(f"{env_name('mode')}=live needs {env_name('feed')}=upstox, got {s.feed}")
    elif s.feed == "upstox" and not has_token:
        problems.append(f"{env_name('feed')}=upstox needs {env_name('upstox_access_token')}")
    return problems


def describe_settings_error(error: ValidationError) -> str:
    """A readable multi-line message for a failed `Settings` construction, naming variables as typed."""
    lines = ["VolGuard configuration is invalid:"]
    for item in error.errors(include_url=False):
        loc = item["loc"]
        message = str(item["msg"]).removeprefix("Value error, ")
        if not loc:
            # Cross-field checks already name their variables; one line per problem.
            lines.extend(f"  - {part}" for part in message.split("; "))
            continue
        field = str(loc[0])
        shown_input: Any = "<hidden>" if field == "upstox_access_token" else item.get("input")
        if item["type"] == "extra_forbidden":
            lines.append(f"  - {env_name(field)} is not a VolGuard setting (misspelt?)")
        else:
            lines.append(f"  - {env_name(field)}: {message} (got {shown_input!r})")
    return "\n".join(lines)


def load_settings_or_exit(**overrides: Any) -> Settings:
    """Build the settings at process start; on invalid configuration print why and exit with status 2."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from error


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call `get_settings.cache_clear()` after changing env."""
    return Settings()
