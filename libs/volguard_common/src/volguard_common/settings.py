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
import sys
from datetime import datetime, timedelta
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

from volguard_common.clock import TimedRules
from volguard_common.logging import redact_text, url_password

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
# Replicas of one service on one machine (`volguard up --scale`): replica n listens on the standard port
# + 10 × n. The offsets 1-5 differ modulo 10, so up to 10 replicas of every service never collide.
REPLICA_PORT_STRIDE = 10
# `VOLGUARD_INSTANCE=auto`: the service claims its instance name in Redis at start.
INSTANCE_AUTO = "auto"
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
        default=INSTANCE_AUTO,
        description="Stable name of this replica, e.g. 'risk-0' (its Redis consumer name); must stay the "
        "same across restarts so the replica drains the pending entries it left behind. 'auto' (the "
        "default) claims the lowest free '<service>-<n>' in Redis when the service starts "
        "(volguard_common.instance). `volguard up` names its replicas '<service>-<n>'; Kubernetes uses the "
        "StatefulSet pod name.",
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
    account_id: str = Field(
        default="main",
        description="Name of the trading account this deployment trades. Strategy, risk, execution and "
        "the other single-active services hold one Redis lease per (service, account).",
    )
    lease_ttl_ms: int = Field(
        default=10000,
        description="How long (ms) a single-active service's lease lives without renewal; the holder "
        "renews it every third of this. A standby takes over at most this plus "
        "VOLGUARD_LEASE_POLL_INTERVAL_MS after the holder dies.",
    )
    lease_poll_interval_ms: int = Field(
        default=1000, description="How often (ms) a standby replica tries to take the lease."
    )
    outbox_poll_interval_ms: int = Field(
        default=1000,
        description="The outbox relay is woken by Postgres NOTIFY at each commit; it also looks for "
        "unsent rows this often (ms) in case a notification was missed.",
    )
    outbox_sent_ttl_s: int = Field(
        default=86400,
        description="How long (s) Redis remembers that an outbox event was added to its stream, so a "
        "relay that crashed between adding it and marking it sent does not add it twice.",
    )
    stream_trim_interval_ms: int = Field(
        default=60000,
        description="How often (ms) log streams are trimmed below what every consumer group acknowledged.",
    )
    log_stream_retention_h: int = Field(
        default=168,
        description="Hours of entries kept in a log stream that no service acts on, only the "
        "dashboard reads (rk.decisions, sys.alerts): a week of history for the page after a restart. "
        "Risk's decisions are also kept in Postgres (risk.decisions) and every alert in its process's "
        "log. Streams a service acts on are trimmed only below what its group acknowledged.",
    )
    bus_handler_timeout_ms: int = Field(
        default=20000,
        description="A handler running longer than this (ms) is cancelled and counts as a failed "
        "delivery: retried, then dead-lettered with an alert.",
    )
    http_host: str = Field(
        default="127.0.0.1", description="Interface the dashboard and service health endpoints bind to."
    )
    dashboard_port: int = Field(default=8000, description="Port of the dashboard (web UI, REST, WebSocket).")
    dashboard_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the dashboard's mutating endpoints (kill switch, flatten, pause, "
        "capital) require; without one they all answer 403. Never logged.",
    )
    dashboard_ws_queue: int = Field(
        default=256,
        ge=1,
        description="Messages a dashboard WebSocket client may have waiting before it is dropped as slow.",
    )
    telegram_bot_token: SecretStr | None = Field(
        default=None, description="Telegram bot token for CRITICAL/WARNING alerts; none: no Telegram."
    )
    telegram_chat_id: str = Field(default="", description="Telegram chat the alerts go to.")
    telegram_api_url: str = Field(
        default="https://api.telegram.org", description="Telegram Bot API base URL (a fake one in tests)."
    )
    smtp_host: str = Field(default="", description="SMTP server for alert e-mails; empty: no e-mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_username: str = Field(default="", description="SMTP login; empty: no login.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password. Never logged.")
    smtp_from: str = Field(default="", description="Sender address of alert e-mails.")
    smtp_to: str = Field(default="", description="Comma-separated recipients of alert e-mails.")
    notify_dedup_s: int = Field(
        default=300,
        ge=0,
        description="An alert code already notified within this many seconds is not sent again.",
    )
    notify_per_minute: int = Field(
        default=10, ge=1, description="At most this many alert notifications per channel per minute."
    )
    service_port_base: int = Field(
        default=8100,
        description="Health/metrics ports of the services are this base plus 1 (market_data), 2 "
        "(analytics), 3 (strategy), 4 (risk) and 5 (execution).",
    )
    http_port: int | None = Field(
        default=None,
        description="This process's own HTTP port. Unset: the service's standard port (dashboard_port, or "
        "service_port_base + its offset). `volguard up --scale` sets it per replica: replica n listens on "
        "the standard port + 10 × n.",
    )
    stop_grace_s: float = Field(
        default=20.0,
        description="Seconds a service gives itself on SIGTERM to finish and acknowledge in-flight messages "
        "and close; kept below what the orchestrator waits before SIGKILL (the `volguard up` supervisor "
        "35 s, docker compose stop_grace_period 40 s, Kubernetes terminationGracePeriodSeconds 45).",
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
    holidays_file: Path | None = Field(
        default=None,
        description="NSE holiday file (date,holiday,source) replacing the bundled holidays for the years "
        "it lists, e.g. when NSE publishes next year's list. Default: <state_dir>/calendar/nse_holidays.csv "
        "if `volguard calendar import` wrote one, else the bundled calendar.",
    )
    calendar_poll_s: float = Field(
        default=30.0,
        description="With the Upstox feed, how often (seconds) every service re-reads the broker-corrected "
        "NSE calendar market_data shares in Redis (volguard_common.live_calendar) and installs it when it "
        "changed. The calendar changes at most a few times a day, ahead of the days it affects.",
    )
    upstox_api_base: str = Field(
        default="https://api.upstox.com", description="Base URL of the Upstox REST API."
    )
    upstox_order_api_base: str = Field(
        default="https://api-hft.upstox.com",
        description="Base URL of Upstox's order host: place, modify and cancel (v3) go here, everything "
        "else to upstox_api_base. Upstox accepts order calls only from the static IP registered with the "
        "app (whitelisted in the Upstox developer console).",
    )
    upstox_algo_name: str | None = Field(
        default=None,
        description="Exchange-registered algo name sent as the X-Algo-Name header on order calls; unset "
        "sends no header (an invalid name is rejected by Upstox). Only for registered algos.",
    )
    upstox_strikes_each_side: int = Field(
        default=40,
        description="Strikes either side of the at-the-money strike the Upstox feed subscribes per expiry "
        "(option_greeks mode), re-centred as spot moves. Upstox caps one feed connection at 2000 "
        "option_greeks keys when modes are combined (NIFTY 50 and India VIX ride in full mode, so they "
        "always are): 7 expiries x 2 sides x (2 x band + 1) strikes must stay <= 2000, i.e. band <= 70 "
        "with 7 expiries. The default 40 (1134 keys, +/-2000 points at 50-point strikes) fits; all listed "
        "strikes of 7 expiries usually do not. A band over the cap is refused at start.",
    )
    upstox_recentre_after_strikes: int = Field(
        default=5,
        description="Re-centre the Upstox strike band of an expiry when its at-the-money strike has moved "
        "this many strikes from the band's centre (unsubscribe the far side, subscribe the near side). "
        "Must be smaller than upstox_strikes_each_side.",
    )
    upstox_field_stale_after_s: float = Field(
        default=120.0,
        description="Seconds after which a quote field the Upstox feed has not refreshed (bid/ask, volume, "
        "OI, IV, greeks) is flagged as old in md.status and the source health. Partial feed frames keep "
        "the last value meanwhile; a quiet strike legitimately goes this long without a change.",
    )
    upstox_maintenance_window: str = Field(
        default="",
        description="Upstox's nightly API maintenance window as 'HH:MM-HH:MM' IST, overriding the dated "
        "table in market_data (00:00-05:30 as reported by public clients; errors UDAPI100074 / "
        "UDAPI100072). Inside it the feed reports 'broker closed' and waits instead of failing.",
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

    # ---- charges and margin (volguard_common.charges, quant.margin) ---------------------------
    brokerage_per_order: Decimal = Field(
        default=Decimal("20"),
        description="Broker's brokerage in rupees per executed order (each slice of a sliced order is an "
        "order), charged once per order however many fills it has. Default: Upstox's flat Rs 20 for F&O.",
    )
    margin_price_scan_sigmas: float = Field(
        default=6.0,
        description="SPAN price scan range for index options, in standard deviations of the daily EWMA "
        "return, scaled up by sqrt(2) for the two-day margin period (NSE Clearing SPAN risk parameters).",
    )
    margin_price_scan_floor_pct: float = Field(
        default=9.3,
        description="Smallest SPAN price scan range for index options, in percent of the underlying: NSE "
        "Clearing's 'subject to 9.3 % of underlying price', a floor (the sigma figure rarely reaches it).",
    )
    margin_vol_scan_pct: float = Field(
        default=25.0,
        description="SPAN volatility scan range, in percent of the annualised EWMA volatility of the "
        "underlying (NSE Clearing SPAN risk parameters).",
    )
    margin_vol_scan_floor_pts: float = Field(
        default=4.0,
        description="Smallest SPAN volatility scan range for index options, in vol points (NSE Clearing: "
        "'subject to minimum 4 %').",
    )
    margin_short_option_minimum_pct: float = Field(
        default=3.0,
        description="Short option minimum charge, in percent of the notional of short index options not "
        "offset by a long of the same right and expiry (NSE Clearing's index-option figure).",
    )
    margin_calendar_spread_pct: float = Field(
        default=1.75,
        description="Calendar spread charge for index derivatives, in percent of the far-month contract "
        "value of the delta offset between expiries (NSE Clearing SPAN risk parameters).",
    )
    margin_exposure_pct: float = Field(
        default=2.0,
        description="Exposure margin on short index options, in percent of notional (SEBI).",
    )
    margin_expiry_day_elm_pct: float = Field(
        default=2.0,
        description="Additional extreme-loss margin on short options on their expiry day, in percent of "
        "notional (SEBI circular of 1 Oct 2024, from 20 Nov 2024).",
    )

    risk_free_rate: float = Field(
        default=DEFAULT_RISK_FREE_RATE,
        description="INR risk-free rate (annual fraction, continuously compounded) used by analytics, "
        "strategy and risk to discount option prices and carry spot to a forward. Default 0.055: the RBI "
        "91-day Treasury-bill cut-off yield, ~5.5 % in the second half of 2025 (after the 6 June 2025 repo "
        "cut to 5.50 %); update it when that yield moves.",
    )

    # ---- strategy (volguard_strategy.domain) -----------------------------------------------------
    strategy_short_delta_weekly: float = Field(
        default=0.16, description="Target |delta| of the weekly bucket's short strikes (our own Greeks)."
    )
    strategy_short_delta_monthly: float = Field(
        default=0.12, description="Target |delta| of the monthly bucket's short strikes."
    )
    strategy_short_delta_intraday: float = Field(
        default=0.25, description="Target |delta| of the intraday bucket's short strikes."
    )
    strategy_risk_budget_weekly_pct: Decimal = Field(
        default=Decimal("1"),
        description="Per-trade risk budget of the weekly bucket: the largest max loss of one trade, in "
        "percent of the bucket (Rs 8,000 on the default account).",
    )
    strategy_risk_budget_monthly_pct: Decimal = Field(
        default=Decimal("1"), description="Per-trade risk budget of the monthly bucket, in percent of it."
    )
    strategy_risk_budget_intraday_pct: Decimal = Field(
        default=Decimal("2"), description="Per-trade risk budget of the intraday bucket, in percent of it."
    )
    strategy_allow_undefined_risk: bool = Field(
        default=False,
        description="Allow short strangles and straddles (never in the intraday bucket), sized on the "
        "stress grid's worst loss.",
    )
    strategy_cooldown_s: float = Field(
        default=300.0, description="Event-time seconds between two entries of one bucket."
    )
    strategy_weekly_min_trading_minutes: float = Field(
        default=375.0,
        description="Trading minutes a weekly expiry needs left to be the weekly bucket's (one session).",
    )
    strategy_correlation_threshold: float = Field(
        default=0.7,
        description="Scenario-P&L correlation with the open book above which a new trade is shrunk so the "
        "combined worst case stays within the daily loss limit.",
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
        "selling volatility is favoured at full size. The spread is the premium's binding one: 30-day "
        "constant-maturity ATM IV minus the larger of 21-session realised vol and a 21-day GARCH(1,1) "
        "forecast. Default 4.5: the 95th percentile of daily 30-day IV (India VIX) minus 21-session "
        "Yang-Zhang RV of NIFTY, Jan-Oct 2025; on the binding spread (GARCH known from May 2025) about "
        "4 % of those days.",
    )
    iv_rv_sell_small_pts: float = Field(
        default=3.7,
        description="IV minus RV (the binding spread, as for iv_rv_sell_big_pts), in vol points, at or "
        "above which selling volatility is allowed at reduced size. Default 3.7: the 91st percentile of "
        "daily 30-day IV minus RV of NIFTY, Jan-Oct 2025; with the GARCH leg a selling signal (small or "
        "big) marks the richest ~5 % of days rather than every other day.",
    )
    iv_rv_avoid_pts: float = Field(
        default=-2.9,
        description="IV minus RV (the binding spread, as for iv_rv_sell_big_pts), in vol points, at or "
        "below which options are cheap and no volatility is sold (usually negative). Default -2.9: the "
        "10th percentile of the daily binding spread of NIFTY, Jan-Oct 2025 (the GARCH leg, above VIX "
        "through mid 2025, pulls it below IV-RV alone, whose 10th percentile is -2.0).",
    )
    term_structure_threshold_pts: float = Field(
        default=4.5,
        description="Slope of ATM implied vol across expiries, in vol points per 30 days, beyond which "
        "the curve counts as in contango (positive) or backwardation (negative) rather than flat. "
        "Default 4.5: about the 82nd percentile of |slope| over the 45 days of ../shared/data with a "
        "front ATM IV (nifty_ivp_daily.csv, Apr-Jun 2025), the slope taken from that front ATM IV to "
        "30-day India VIX (nifty_atm_iv_daily.csv) over the days between them (front expiry assumed the "
        "next Thursday, NIFTY's weekly expiry then), so the signal fires on 8 of the 45 days (18 %). "
        "Caveats: 45 days of one quarter; the ATM_IV series comes from the original VolGuard's files, "
        "its expiry and method undocumented; the engine fits a line over every listed expiry, the "
        "proxy joins two points.",
    )
    skew_threshold_pts: float = Field(
        default=2.0,
        description="25-delta risk reversal (put IV minus call IV), in vol points, beyond which skew "
        "counts as steep. UNCALIBRATED: a judgement, not a measured percentile, and no proxy either. "
        "../shared/data was checked: its only option chain is one late expiry-day snapshot in which no "
        "quoted option has a delta between 0.10 and 0.40 (the smile collapses to a step within one "
        "strike), and its other files (ATM IV, IV percentile, India VIX) are at-the-money measures that "
        "say nothing about the wings. 2.0 was set by hand in the first version of these settings; NIFTY "
        "puts usually trade above calls, so it probably marks most ordinary days PUT_SKEWED. Calibrate "
        "it from recorded history once there is some: every VolSnapshot (an.vol, and "
        "analytics.vol_snapshots.payload) carries the reference expiry's rr25.",
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
    # ---- timed rules: offsets from the day's dated open and close (DESIGN §4) -------------------
    # Minutes, not clock times: the F&O close moved from 15:30 to 15:40 on 3 August 2026 and the rules
    # move with it. Defaults are the original VolGuard's times against its 15:30 close.
    entries_from_open_min: float = Field(
        default=15.0,
        description="Minutes after the open before new positions may be opened (09:30 with the 09:15 open).",
    )
    entries_stop_before_close_min: float = Field(
        default=15.0,
        description="Minutes before the day's close from which no new positions are opened (15:15 with "
        "a 15:30 close, 15:25 with the 15:40 close from 3 Aug 2026).",
    )
    expiry_flatten_before_close_min: float = Field(
        default=60.0,
        description="Minutes before the close on an expiry day from which positions in the expiring "
        "contract are flattened (14:30 with a 15:30 close, 14:40 with 15:40).",
    )
    intraday_flat_before_close_min: float = Field(
        default=15.0,
        description="Minutes before the close from which the intraday bucket is flattened, so it is "
        "flat by the close (15:15 with a 15:30 close, 15:25 with 15:40).",
    )
    partial_fill_timeout_s: float = Field(
        default=60.0,
        description="Seconds a basket may stay partly filled before execution completes it aggressively "
        "or unwinds the filled legs, so no naked half-position is left. Every leg's fill schedule "
        "(VOLGUARD_AFE_PASSIVE_S + VOLGUARD_AFE_MAX_REPRICES × the urgency's wait) must end inside it, "
        "so the guard, not the timeout, decides; 60 s fits the slowest (PASSIVE: 3 + 5 × 10 = 53 s). "
        "The original allowed 2 s of leg mismatch because it sent legs together; with hedges first the "
        "legs that fill while a later leg is still worked are bought wings (entry) or bought-back shorts "
        "(exit), so a partly filled basket is over-hedged, never naked, and a longer wait costs price "
        "drift, not unbounded risk.",
    )
    afe_passive_s: float = Field(
        default=3.0,
        description="Adaptive fill engine: seconds the first price (mid, moved toward the touch by "
        "urgency) rests before the first re-price.",
    )
    afe_max_reprices: int = Field(
        default=5,
        description="Adaptive fill engine: re-prices after the first price; the last is a marketable "
        "limit inside the protection band.",
    )
    afe_wait_passive_s: float = Field(
        default=10.0, description="Adaptive fill engine: seconds between re-prices of a PASSIVE basket."
    )
    afe_wait_normal_s: float = Field(
        default=3.0, description="Adaptive fill engine: seconds between re-prices of a NORMAL basket."
    )
    afe_wait_urgent_s: float = Field(
        default=1.0, description="Adaptive fill engine: seconds between re-prices of an URGENT basket."
    )
    afe_max_slippage_pct: float = Field(
        default=2.0,
        description="Adaptive fill engine: the re-price walk never goes further than this percentage of "
        "the leg's premium (mid at submission) from that mid, and at least one tick.",
    )
    afe_protection_band_pct: float = Field(
        default=5.0,
        description="Adaptive fill engine: the final marketable limit is the touch plus (buy) or minus "
        "(sell) this percentage of the touch, at least one tick.",
    )
    nifty_freeze_quantity: int = Field(
        default=1800,
        description="Execution: NSE's quantity freeze limit for NIFTY options in units (1,800, as Upstox's "
        "instrument master `freeze_quantity` gives it; NSE revises it); orders are sliced below it in "
        "whole lots (27 lots of 65). Risk's order budget and execution's slicing both use this setting, in "
        "live mode too: the instrument master's figure is read by market_data but not yet passed on, so "
        "keep this in step with NSE's circulars.",
    )
    unknown_order_absent_after_s: float = Field(
        default=30.0,
        description="Execution: a submit whose answer was lost (timeout, disconnect) stays UNKNOWN, and its "
        "leg waits, until the broker's order book and order history by tag have both not shown it on "
        "repeated reads spread over this many seconds; only then is it taken as never arrived and the leg "
        "placed again. One empty read a second after the submit proves nothing (the book lags the "
        "exchange), and giving up too early can double a leg. At least 2 s (two reads).",
    )
    paper_latency_ms: int = Field(
        default=50,
        description="Execution, paper broker: exchange-time latency (ms) between a request and its "
        "arrival at the paper exchange.",
    )
    broker_health_interval_s: float = Field(
        default=30.0, description="Execution: seconds between broker health checks."
    )
    broker_unhealthy_after: int = Field(
        default=3,
        description="Execution: consecutive failed health checks after which the broker is unhealthy "
        "(BrokerHealth and an Alert; risk stops new entries). The first good check announces recovery.",
    )
    reconcile_interval_s: float = Field(
        default=180.0,
        description="Execution: seconds between reconciliations of orders, trades and positions with the "
        "broker (also on start and failover); new orders wait until a reconciliation agrees.",
    )
    algo_order_threshold_per_second: int = Field(
        default=10,
        description="Orders per second at or above which a retail client's API orders must be a "
        "registered algo (SEBI circular of 4 Feb 2025 on retail algorithmic trading; threshold set by "
        "the exchanges at 10). Execution stays strictly below it.",
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

    def timed_rules(self) -> TimedRules:
        """The timed trading rules (entry window, expiry flatten, intraday flat) of this configuration."""
        return TimedRules(
            entries_from_open=timedelta(minutes=self.entries_from_open_min),
            entries_stop_before_close=timedelta(minutes=self.entries_stop_before_close_min),
            expiry_flatten_before_close=timedelta(minutes=self.expiry_flatten_before_close_min),
            intraday_flat_before_close=timedelta(minutes=self.intraday_flat_before_close_min),
        )

    @property
    def imported_holidays_file(self) -> Path:
        """Where `volguard calendar import` puts an updated holiday file."""
        return self.state_dir / "calendar" / "nse_holidays.csv"

    def holidays_file_in_use(self) -> Path | None:
        """The holiday file that replaces the bundled holidays, if any (see `holidays_file`)."""
        if self.holidays_file is not None:
            return self.holidays_file
        return self.imported_holidays_file if self.imported_holidays_file.is_file() else None

    def port_for(self, service: str, replica: int = 0) -> int:
        """The HTTP port (health, ready, metrics; the UI for the dashboard) of `service`'s replica number
        `replica` on one machine: the standard port plus REPLICA_PORT_STRIDE per replica."""
        if service == "dashboard_api":
            return self.dashboard_port + REPLICA_PORT_STRIDE * replica
        offset = SERVICE_PORT_OFFSETS.get(service)
        if offset is None:
            raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICE_NAMES)}")
        return self.service_port_base + offset + REPLICA_PORT_STRIDE * replica

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret as plain text: the SecretStr settings and the passwords inside the
        connection URLs. For masking by value (logs, error messages), never for display."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif isinstance(value, str) and "://" in value:
                password = url_password(value)
                if password is not None:
                    found.append(password)
        return tuple(secret for secret in found if secret)

    def own_port(self, service: str) -> int:
        """The port this process serves on: `http_port` when set, else the service's standard port."""
        return self.http_port if self.http_port is not None else self.port_for(service)


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

    at_least("brokerage_per_order", 0)
    for field in ("margin_price_scan_sigmas", "margin_price_scan_floor_pct", "margin_vol_scan_pct"):
        at_least(field, 0, strict=True)
    for field in (
        "margin_vol_scan_floor_pts",
        "margin_short_option_minimum_pct",
        "margin_calendar_spread_pct",
        "margin_exposure_pct",
        "margin_expiry_day_elm_pct",
    ):
        at_least(field, 0)

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
    at_least("algo_order_threshold_per_second", 2)
    timed = (
        "entries_from_open_min",
        "entries_stop_before_close_min",
        "expiry_flatten_before_close_min",
        "intraday_flat_before_close_min",
    )
    for field in timed:
        at_least(field, 0)
        # A rule reaching outside a session would fire before the open or never.
        if getattr(s, field) > 120:
            problems.append(f"{env_name(field)} must be at most 120 minutes, got {getattr(s, field)}")
    at_least("partial_fill_timeout_s", 0, strict=True)
    waits = ("afe_wait_passive_s", "afe_wait_normal_s", "afe_wait_urgent_s")
    for field in ("afe_passive_s", *waits, "afe_max_slippage_pct", "afe_protection_band_pct"):
        at_least(field, 0, strict=True)
    at_least("afe_max_reprices", 1)
    at_least("nifty_freeze_quantity", 1)
    at_least("unknown_order_absent_after_s", 2)
    at_least("paper_latency_ms", 0)
    at_least("broker_health_interval_s", 0, strict=True)
    at_least("broker_unhealthy_after", 1)
    at_least("reconcile_interval_s", 0, strict=True)
    if not s.afe_wait_passive_s >= s.afe_wait_normal_s >= s.afe_wait_urgent_s:
        problems.append(f"{' ≥ '.join(env_name(f) for f in waits)} must hold")
    slowest = s.afe_passive_s + s.afe_max_reprices * max(getattr(s, f) for f in waits)
    if slowest > s.partial_fill_timeout_s:
        # The guard must see every schedule end; a timeout that cuts one short decides for it.
        problems.append(
            f"the slowest fill schedule ({env_name('afe_passive_s')} + {env_name('afe_max_reprices')} × "
            f"the longest wait = {slowest} s) must end inside {env_name('partial_fill_timeout_s')} "
            f"({s.partial_fill_timeout_s})"
        )

    at_least("speed", 0)
    at_least("lockstep_max_lag", 0)
    at_least("sim_strikes_each_side", 1)
    at_least("sim_weeklies", 1)
    at_least("sim_snapshot_interval_s", 0, strict=True)
    at_least("feed_stale_after_s", 0, strict=True)
    at_least("calendar_poll_s", 0, strict=True)
    at_least("upstox_strikes_each_side", 1)
    at_least("upstox_recentre_after_strikes", 1)
    at_least("upstox_field_stale_after_s", 0, strict=True)
    if s.upstox_recentre_after_strikes >= s.upstox_strikes_each_side:
        problems.append(
            f"{env_name('upstox_recentre_after_strikes')} ({s.upstox_recentre_after_strikes}) must be "
            f"smaller than {env_name('upstox_strikes_each_side')} ({s.upstox_strikes_each_side})"
        )
    if s.sim_start is not None and s.sim_start.tzinfo is None:
        problems.append(f"{env_name('sim_start')} needs a UTC offset (e.g. +05:30), got {s.sim_start}")
    if s.feed == "replay" and s.replay_dir is None:
        problems.append(f"{env_name('feed')}=replay needs {env_name('replay_dir')}")
    at_least("bus_block_ms", 1)
    at_least("bus_batch", 1)
    at_least("bus_claim_idle_ms", 1)
    at_least("bus_claim_interval_ms", 1)
    at_least("bus_max_deliveries", 1)
    at_least("lease_ttl_ms", 3)
    at_least("lease_poll_interval_ms", 1)
    at_least("outbox_poll_interval_ms", 1)
    at_least("outbox_sent_ttl_s", 1)
    at_least("stream_trim_interval_ms", 1)
    at_least("log_stream_retention_h", 1)
    if not s.account_id.strip():
        problems.append(f"{env_name('account_id')} must not be empty")
    at_least("bus_handler_timeout_ms", 1)

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
    if s.http_port is not None and not 1 <= s.http_port <= 65535:
        problems.append(f"{env_name('http_port')} must be a TCP port (1-65535), got {s.http_port}")
    at_least("stop_grace_s", 0, strict=True)
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


# Every SecretStr setting: its input is never echoed, even when it is invalid.
_SECRET_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)


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
        shown_input: Any = "<hidden>" if field in _SECRET_FIELDS else item.get("input")
        if isinstance(shown_input, str):
            # A malformed URL still carries its password (VOLGUARD_DATABASE_URL=postgres://u:pw@...).
            shown_input = redact_text(shown_input)
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
