"""The two-year daily history the simulator comes with."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from volguard_common import clock
from volguard_market_data.domain.sim.daily_bars import (
    INDIA_VIX,
    NIFTY,
    NSE_HOLIDAYS_2024,
    DailyBar,
    daily_bars,
    history_calendar,
)

END = date(2026, 12, 1)


@pytest.fixture(scope="module")
def bars() -> list[DailyBar]:
    return daily_bars(END, seed=7)


def series(bars: list[DailyBar], symbol: str) -> list[DailyBar]:
    return [b for b in bars if b.symbol == symbol]


def test_two_years_of_trading_days_and_nothing_else(bars: list[DailyBar]) -> None:
    nifty, vix = series(bars, NIFTY), series(bars, INDIA_VIX)
    days = [b.trade_date for b in nifty]
    assert days == [b.trade_date for b in vix]
    assert days == sorted(set(days))
    assert days[-1] == END
    assert days[0] > date(2024, 12, 1)
    assert 480 <= len(days) <= 510
    holidays_2024 = {d for d, _ in NSE_HOLIDAYS_2024}
    for day in days:
        assert day not in holidays_2024
        assert history_calendar().is_trading_day(day)
        if day.year >= 2025:
            assert clock.is_trading_day(day)
        # Weekends only for the exchange's special full sessions (Budget days 1 Feb 2025 and 2026).
        assert day.weekday() < 5 or day in {date(2025, 2, 1), date(2026, 2, 1)}
    # Every trading day of the window is there.
    covered = [d for d in days if d.year >= 2025]
    assert len(covered) == clock.trading_days_between(date(2025, 1, 1), END) + 1  # (start, end] + 1 Jan


def test_ohlc_relations_and_realistic_levels(bars: list[DailyBar]) -> None:
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low > 0
    nifty = series(bars, NIFTY)
    vix = series(bars, INDIA_VIX)
    assert 18_000 < nifty[-1].close < 32_000
    assert all(b.low > 8.0 and b.high < 70.0 for b in vix)
    assert all(b.volume > 0 for b in nifty)
    assert all(b.volume == 0 for b in vix)


def test_returns_cluster_and_move_against_vix_at_a_vol_consistent_with_it(bars: list[DailyBar]) -> None:
    close = np.array([b.close for b in series(bars, NIFTY)])
    vix = np.array([b.close for b in series(bars, INDIA_VIX)])
    returns = np.diff(np.log(close))
    annual_vol = returns.std() * np.sqrt(252)
    assert 0.08 < annual_vol < 0.25
    # Realised runs at ~0.85 x VIX by construction; two years of GARCH episodes spread it (seeds 1-8:
    # 0.73-1.15).
    assert 0.6 < annual_vol / (vix.mean() / 100) < 1.25
    assert np.corrcoef(returns, np.diff(np.log(vix)))[0, 1] < -0.4
    absolute = np.abs(returns) - np.abs(returns).mean()
    acf = [(absolute[:-k] * absolute[k:]).sum() / (absolute**2).sum() for k in range(1, 11)]
    assert np.mean(acf) > 0.05


def test_same_seed_same_bars_other_seed_other_bars(bars: list[DailyBar]) -> None:
    assert daily_bars(END, seed=7) == bars
    assert daily_bars(END, seed=8) != bars


def test_end_must_be_a_trading_day() -> None:
    with pytest.raises(ValueError, match="not a trading day"):
        daily_bars(date(2026, 11, 29), seed=7)  # a Sunday
