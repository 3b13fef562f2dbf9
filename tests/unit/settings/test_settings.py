"""Settings: documented defaults, env and .env sources, and validation that names the variable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from volguard_common.settings import (
    CONFIG_ERROR_EXIT_CODE,
    SERVICE_NAMES,
    Settings,
    describe_settings_error,
    env_name,
    get_settings,
    load_settings_or_exit,
)

TOKEN = "upstox-token-value-that-must-never-appear"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No inherited VOLGUARD_ variables and an empty working directory (no stray .env)."""
    for name in list(os.environ):
        if name.upper().startswith("VOLGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


DOCUMENTED_DEFAULTS: dict[str, Any] = {
    "sim_seed": 7,
    "sim_start": None,
    "sim_scenario": "",
    "sim_strikes_each_side": 60,
    "sim_weeklies": 4,
    "sim_snapshot_interval_s": 1.0,
    "speed": 1.0,
    "lockstep": False,
    "lockstep_max_lag": 0,
    "replay_dir": None,
    "feed_stale_after_s": 10.0,
    "holidays_file": None,
    "calendar_poll_s": 30.0,
    "upstox_api_base": "https://api.upstox.com",
    "upstox_order_api_base": "https://api-hft.upstox.com",
    "upstox_algo_name": None,
    "upstox_strikes_each_side": 40,
    "upstox_recentre_after_strikes": 5,
    "upstox_field_stale_after_s": 120.0,
    "upstox_maintenance_window": "",
    "mode": "paper",
    "feed": "sim",
    "redis_url": "redis://127.0.0.1:6379/0",
    "database_url": "postgresql://postgres@127.0.0.1:5432/volguard",
    "stream_namespace": "",
    "bus_block_ms": 1000,
    "bus_batch": 32,
    "bus_claim_idle_ms": 30000,
    "bus_claim_interval_ms": 5000,
    "bus_max_deliveries": 5,
    "account_id": "main",
    "lease_ttl_ms": 10000,
    "lease_poll_interval_ms": 1000,
    "outbox_poll_interval_ms": 1000,
    "outbox_sent_ttl_s": 86400,
    "stream_trim_interval_ms": 60000,
    "log_stream_retention_h": 168,
    "instance": "auto",
    "bus_handler_timeout_ms": 20000,
    "http_host": "127.0.0.1",
    "http_port": None,
    "stop_grace_s": 20.0,
    "dashboard_port": 8000,
    "dashboard_token": None,
    "dashboard_ws_queue": 256,
    "telegram_bot_token": None,
    "telegram_chat_id": "",
    "telegram_api_url": "https://api.telegram.org",
    "smtp_host": "",
    "smtp_port": 587,
    "smtp_starttls": True,
    "smtp_username": "",
    "smtp_password": None,
    "smtp_from": "",
    "smtp_to": "",
    "notify_dedup_s": 300,
    "notify_per_minute": 10,
    "service_port_base": 8100,
    "log_format": "json",
    "log_level": "INFO",
    "state_dir": Path(".volguard"),
    "upstox_access_token": None,
    "account_size": Decimal("2000000"),
    "bucket_weekly_pct": Decimal("40"),
    "bucket_monthly_pct": Decimal("50"),
    "bucket_intraday_pct": Decimal("10"),
    "daily_loss_limit_pct": Decimal("3"),
    "soft_stop_pct": Decimal("2"),
    "hard_stop_pct": Decimal("3"),
    "profit_target_pct": Decimal("35"),
    "stop_multiple": Decimal("2"),
    "max_vega": 1000.0,
    "max_delta": 200.0,
    "max_gamma": 500.0,
    "upstox_orders_per_second": 10,
    "upstox_orders_per_minute": 500,
    "upstox_orders_per_30_minutes": 2000,
    "iv_rv_sell_big_pts": 4.5,
    "iv_rv_sell_small_pts": 3.7,
    "iv_rv_avoid_pts": -2.9,
    "term_structure_threshold_pts": 4.5,
    "skew_threshold_pts": 2.0,
    "vix_spike_window_s": 180,
    "vix_spike_pct": 8.0,
    "event_multiplier_a": 0.3,
    "event_multiplier_b": 0.5,
    "event_multiplier_c": 1.0,
    "entries_from_open_min": 15.0,
    "entries_stop_before_close_min": 15.0,
    "expiry_flatten_before_close_min": 60.0,
    "intraday_flat_before_close_min": 15.0,
    "partial_fill_timeout_s": 60.0,
    "afe_passive_s": 3.0,
    "afe_max_reprices": 5,
    "afe_wait_passive_s": 10.0,
    "afe_wait_normal_s": 3.0,
    "afe_wait_urgent_s": 1.0,
    "afe_max_slippage_pct": 2.0,
    "afe_protection_band_pct": 5.0,
    "nifty_freeze_quantity": 1800,
    "unknown_order_absent_after_s": 30.0,
    "paper_latency_ms": 50,
    "broker_health_interval_s": 30.0,
    "broker_unhealthy_after": 3,
    "reconcile_interval_s": 180.0,
    "algo_order_threshold_per_second": 10,
    "brokerage_per_order": Decimal("20"),
    "margin_price_scan_sigmas": 6.0,
    "margin_price_scan_floor_pct": 9.3,
    "margin_vol_scan_pct": 25.0,
    "margin_vol_scan_floor_pts": 4.0,
    "margin_short_option_minimum_pct": 3.0,
    "margin_calendar_spread_pct": 1.75,
    "margin_exposure_pct": 2.0,
    "margin_expiry_day_elm_pct": 2.0,
    "strategy_short_delta_weekly": 0.16,
    "strategy_short_delta_monthly": 0.12,
    "strategy_short_delta_intraday": 0.25,
    "strategy_risk_budget_weekly_pct": Decimal("1"),
    "strategy_risk_budget_monthly_pct": Decimal("1"),
    "strategy_risk_budget_intraday_pct": Decimal("2"),
    "strategy_allow_undefined_risk": False,
    "strategy_cooldown_s": 300.0,
    "strategy_weekly_min_trading_minutes": 375.0,
    "strategy_correlation_threshold": 0.7,
    "risk_free_rate": 0.055,
}


def test_defaults_equal_the_documented_defaults() -> None:
    settings = Settings()
    actual = {name: getattr(settings, name) for name in DOCUMENTED_DEFAULTS}
    assert actual == DOCUMENTED_DEFAULTS


def test_every_field_is_documented_and_covered_by_the_defaults_test() -> None:
    fields = Settings.model_fields
    assert set(fields) == set(DOCUMENTED_DEFAULTS)
    undocumented = [name for name, info in fields.items() if not info.description]
    assert undocumented == []


def test_money_settings_are_decimals() -> None:
    settings = Settings(account_size="1500000.50")
    assert settings.account_size == Decimal("1500000.50")
    assert isinstance(settings.stop_multiple, Decimal)
    assert settings.account_size * settings.daily_loss_limit_pct / 100 == Decimal("45000.0150")


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLGUARD_REDIS_URL", "redis://redis.internal:6380/3")
    monkeypatch.setenv("VOLGUARD_ACCOUNT_SIZE", "500000")
    monkeypatch.setenv("VOLGUARD_MAX_VEGA", "750.5")
    monkeypatch.setenv("VOLGUARD_STREAM_NAMESPACE", "t-123:")
    monkeypatch.setenv("VOLGUARD_INSTANCE", "risk-0")
    monkeypatch.setenv("volguard_log_level", "debug")
    settings = Settings()
    assert settings.redis_url == "redis://redis.internal:6380/3"
    assert settings.account_size == Decimal("500000")
    assert settings.max_vega == 750.5
    assert settings.stream_namespace == "t-123:"
    assert settings.instance == "risk-0"
    assert settings.log_level == "DEBUG"


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "VOLGUARD_DATABASE_URL=postgresql://vg@db:5432/volguard\n"
        "VOLGUARD_MAX_DELTA=150\n"
        "VOLGUARD_DASHBOARD_PORT=9000\n"
        "# other tools keep their variables in the same file\n"
        "POSTGRES_PASSWORD=secret\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("VOLGUARD_DASHBOARD_PORT", "9100")
    settings = Settings()
    assert settings.database_url == "postgresql://vg@db:5432/volguard"
    assert settings.max_delta == 150.0
    assert settings.dashboard_port == 9100


def test_keyword_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLGUARD_BUS_BATCH", "64")
    assert Settings(bus_batch=8).bus_batch == 8


def test_misspelt_volguard_key_in_dotenv_is_rejected(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VOLGUARD_MAX_VGA=100\n", encoding="utf-8")
    with pytest.raises(ValidationError) as error:
        Settings()
    assert "VOLGUARD_MAX_VGA is not a VolGuard setting" in describe_settings_error(error.value)


def test_misspelt_keyword_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(max_vga=100)  # type: ignore[call-arg]


INVALID_CASES: list[tuple[dict[str, Any], str]] = [
    ({"risk_free_rate": 5.5}, "VOLGUARD_RISK_FREE_RATE is an annual fraction"),
    ({"risk_free_rate": -0.01}, "VOLGUARD_RISK_FREE_RATE must be ≥ 0"),
    (
        {"bucket_weekly_pct": 35},
        "VOLGUARD_BUCKET_WEEKLY_PCT + VOLGUARD_BUCKET_MONTHLY_PCT + VOLGUARD_BUCKET_INTRADAY_PCT "
        "must sum to 100, got 95",
    ),
    ({"bucket_intraday_pct": -10, "bucket_monthly_pct": 70}, "VOLGUARD_BUCKET_INTRADAY_PCT must be ≥ 0"),
    ({"account_size": "99999"}, "VOLGUARD_ACCOUNT_SIZE must be at least 100000"),
    ({"soft_stop_pct": 4}, "VOLGUARD_SOFT_STOP_PCT (4) must not exceed VOLGUARD_HARD_STOP_PCT (3)"),
    ({"daily_loss_limit_pct": 0}, "VOLGUARD_DAILY_LOSS_LIMIT_PCT must be > 0"),
    ({"hard_stop_pct": 120}, "VOLGUARD_HARD_STOP_PCT is a percentage and must be ≤ 100"),
    ({"profit_target_pct": -5}, "VOLGUARD_PROFIT_TARGET_PCT must be > 0"),
    ({"stop_multiple": 0}, "VOLGUARD_STOP_MULTIPLE must be > 0"),
    ({"max_vega": -1}, "VOLGUARD_MAX_VEGA must be ≥ 0"),
    ({"max_delta": -200}, "VOLGUARD_MAX_DELTA must be ≥ 0"),
    ({"max_gamma": -0.5}, "VOLGUARD_MAX_GAMMA must be ≥ 0"),
    ({"upstox_orders_per_second": 0}, "VOLGUARD_UPSTOX_ORDERS_PER_SECOND must be ≥ 1"),
    (
        {"upstox_orders_per_minute": 3000},
        "VOLGUARD_UPSTOX_ORDERS_PER_MINUTE (3000) must not exceed VOLGUARD_UPSTOX_ORDERS_PER_30_MINUTES",
    ),
    ({"upstox_strikes_each_side": 0}, "VOLGUARD_UPSTOX_STRIKES_EACH_SIDE must be ≥ 1"),
    ({"upstox_field_stale_after_s": 0}, "VOLGUARD_UPSTOX_FIELD_STALE_AFTER_S must be > 0"),
    (
        {"upstox_strikes_each_side": 5},
        "VOLGUARD_UPSTOX_RECENTRE_AFTER_STRIKES (5) must be smaller than VOLGUARD_UPSTOX_STRIKES_EACH_SIDE",
    ),
    ({"vix_spike_window_s": 0}, "VOLGUARD_VIX_SPIKE_WINDOW_S must be > 0"),
    ({"vix_spike_window_s": -60}, "VOLGUARD_VIX_SPIKE_WINDOW_S must be > 0"),
    ({"vix_spike_pct": -8}, "VOLGUARD_VIX_SPIKE_PCT must be > 0"),
    ({"iv_rv_sell_big_pts": -4, "iv_rv_sell_small_pts": -5}, "VOLGUARD_IV_RV_SELL_BIG_PTS must be ≥ 0"),
    ({"iv_rv_sell_small_pts": 5}, "VOLGUARD_IV_RV_SELL_SMALL_PTS (5.0) must not exceed"),
    ({"iv_rv_avoid_pts": 3.8}, "VOLGUARD_IV_RV_AVOID_PTS (3.8) must be below VOLGUARD_IV_RV_SELL_SMALL_PTS"),
    ({"term_structure_threshold_pts": -1}, "VOLGUARD_TERM_STRUCTURE_THRESHOLD_PTS must be ≥ 0"),
    ({"skew_threshold_pts": -2}, "VOLGUARD_SKEW_THRESHOLD_PTS must be ≥ 0"),
    ({"event_multiplier_c": 1.5}, "VOLGUARD_EVENT_MULTIPLIER_C must be between 0 and 1"),
    ({"event_multiplier_a": -0.1}, "VOLGUARD_EVENT_MULTIPLIER_A must be between 0 and 1"),
    ({"event_multiplier_a": 0.8}, "VOLGUARD_EVENT_MULTIPLIER_A ≤ VOLGUARD_EVENT_MULTIPLIER_B"),
    ({"partial_fill_timeout_s": 0}, "VOLGUARD_PARTIAL_FILL_TIMEOUT_S must be > 0"),
    ({"afe_passive_s": -1}, "VOLGUARD_AFE_PASSIVE_S must be > 0"),
    ({"afe_wait_urgent_s": 0}, "VOLGUARD_AFE_WAIT_URGENT_S must be > 0"),
    ({"afe_max_reprices": 0}, "VOLGUARD_AFE_MAX_REPRICES must be ≥ 1"),
    ({"afe_max_slippage_pct": 0}, "VOLGUARD_AFE_MAX_SLIPPAGE_PCT must be > 0"),
    ({"afe_wait_urgent_s": 5}, "VOLGUARD_AFE_WAIT_NORMAL_S ≥ VOLGUARD_AFE_WAIT_URGENT_S must hold"),
    ({"expiry_flatten_before_close_min": -5}, "VOLGUARD_EXPIRY_FLATTEN_BEFORE_CLOSE_MIN must be ≥ 0"),
    ({"intraday_flat_before_close_min": 400}, "VOLGUARD_INTRADAY_FLAT_BEFORE_CLOSE_MIN must be at most 120"),
    (
        {"partial_fill_timeout_s": 30},
        "the slowest fill schedule (VOLGUARD_AFE_PASSIVE_S + VOLGUARD_AFE_MAX_REPRICES × the longest wait "
        "= 53.0 s) must end inside VOLGUARD_PARTIAL_FILL_TIMEOUT_S (30.0)",
    ),
    ({"algo_order_threshold_per_second": 1}, "VOLGUARD_ALGO_ORDER_THRESHOLD_PER_SECOND must be ≥ 2"),
    ({"bus_batch": 0}, "VOLGUARD_BUS_BATCH must be ≥ 1"),
    ({"bus_max_deliveries": 0}, "VOLGUARD_BUS_MAX_DELIVERIES must be ≥ 1"),
    ({"bus_claim_idle_ms": -1}, "VOLGUARD_BUS_CLAIM_IDLE_MS must be ≥ 1"),
    ({"bus_handler_timeout_ms": 0}, "VOLGUARD_BUS_HANDLER_TIMEOUT_MS must be ≥ 1"),
    ({"dashboard_port": 70000}, "VOLGUARD_DASHBOARD_PORT must be a TCP port"),
    ({"dashboard_port": 8103}, "VOLGUARD_DASHBOARD_PORT (8103) collides with the service ports"),
    ({"instance": "  "}, "VOLGUARD_INSTANCE must not be empty"),
    ({"http_port": 0}, "VOLGUARD_HTTP_PORT must be a TCP port"),
    ({"stop_grace_s": 0}, "VOLGUARD_STOP_GRACE_S must be > 0"),
    ({"mode": "live", "feed": "upstox"}, "VOLGUARD_MODE=live needs VOLGUARD_UPSTOX_ACCESS_TOKEN"),
    ({"mode": "live", "upstox_access_token": TOKEN}, "VOLGUARD_MODE=live needs VOLGUARD_FEED=upstox"),
    ({"feed": "upstox"}, "VOLGUARD_FEED=upstox needs VOLGUARD_UPSTOX_ACCESS_TOKEN"),
]


@pytest.mark.parametrize(("overrides", "expected"), INVALID_CASES)
def test_invalid_settings_fail_at_construction_naming_the_variable(
    overrides: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(**overrides)
    assert expected in str(error.value)
    assert expected in describe_settings_error(error.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VOLGUARD_BUCKET_WEEKLY_PCT", "45"),
        ("VOLGUARD_SOFT_STOP_PCT", "3.5"),
        ("VOLGUARD_ACCOUNT_SIZE", "50000"),
        ("VOLGUARD_VIX_SPIKE_WINDOW_S", "0"),
        ("VOLGUARD_MAX_VEGA", "lots"),
        ("VOLGUARD_ACCOUNT_SIZE", "NaN"),
        ("VOLGUARD_MAX_DELTA", "inf"),
        ("VOLGUARD_MODE", "yolo"),
    ],
)
def test_load_settings_or_exit_prints_the_variable_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        load_settings_or_exit()
    assert exit_info.value.code == CONFIG_ERROR_EXIT_CODE == 2
    assert variable in capsys.readouterr().err


def test_load_settings_or_exit_returns_valid_settings() -> None:
    assert load_settings_or_exit(max_vega=800).max_vega == 800.0


def test_combined_problems_are_all_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings_or_exit(bucket_weekly_pct=30, soft_stop_pct=5, max_vega=-1)
    err = capsys.readouterr().err
    for variable in ("VOLGUARD_BUCKET_WEEKLY_PCT", "VOLGUARD_SOFT_STOP_PCT", "VOLGUARD_MAX_VEGA"):
        assert variable in err


def test_live_mode_needs_token_and_upstox_feed_and_then_validates() -> None:
    settings = Settings(mode="live", feed="upstox", upstox_access_token=TOKEN)
    assert settings.mode == "live"
    assert isinstance(settings.upstox_access_token, SecretStr)
    assert settings.upstox_access_token.get_secret_value() == TOKEN


def test_upstox_token_is_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(feed="upstox", upstox_access_token=TOKEN)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert TOKEN not in settings.model_dump_json()
    # A token that fails validation is not echoed back in the error either.
    with pytest.raises(SystemExit):
        load_settings_or_exit(upstox_access_token=12345)
    assert "12345" not in capsys.readouterr().err


def test_port_for_each_service() -> None:
    settings = Settings(service_port_base=9100, dashboard_port=9000)
    assert {service: settings.port_for(service) for service in SERVICE_NAMES} == {
        "dashboard_api": 9000,
        "market_data": 9101,
        "analytics": 9102,
        "strategy": 9103,
        "risk": 9104,
        "execution": 9105,
    }
    with pytest.raises(ValueError, match="unknown service 'pricing'"):
        settings.port_for("pricing")


def test_replicas_of_one_service_listen_ten_ports_apart_and_never_on_another_services_port() -> None:
    settings = Settings()
    assert [settings.port_for("risk", n) for n in range(3)] == [8104, 8114, 8124]
    assert [settings.port_for("dashboard_api", n) for n in range(2)] == [8000, 8010]
    ports = [settings.port_for(service, n) for service in SERVICE_NAMES for n in range(10)]
    assert len(set(ports)) == len(ports)


def test_own_port_is_the_standard_port_unless_http_port_is_set() -> None:
    assert Settings().own_port("analytics") == 8102
    assert Settings(http_port=8112).own_port("analytics") == 8112


def test_default_ports() -> None:
    settings = Settings()
    assert settings.port_for("dashboard_api") == 8000
    assert settings.port_for("market_data") == 8101
    assert settings.port_for("execution") == 8105


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.max_vega = 5000.0  # type: ignore[misc]


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLGUARD_STREAM_NAMESPACE", "first:")
    first = get_settings()
    monkeypatch.setenv("VOLGUARD_STREAM_NAMESPACE", "second:")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().stream_namespace == "second:"


def test_env_name_spelling() -> None:
    assert env_name("upstox_orders_per_30_minutes") == "VOLGUARD_UPSTOX_ORDERS_PER_30_MINUTES"


def test_secret_values_are_the_tokens_and_the_url_passwords() -> None:
    settings = Settings(
        upstox_access_token=TOKEN,
        dashboard_token="fake-dashboard-value",
        database_url="postgresql://volguard:fake-pg-value@db:5432/volguard",
        redis_url="redis://cache:6379/0",
    )
    assert set(settings.secret_values()) == {TOKEN, "fake-dashboard-value", "fake-pg-value"}
    assert Settings().secret_values() == ()
