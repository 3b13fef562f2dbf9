"""Realised-vol estimators: known values on constructed bars, scalar twins on the real NIFTY year."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.unit.quant.shared_data import shared_data
from volguard_common.quant import _reference_vol as ref
from volguard_common.quant import realized
from volguard_market_data.history_files import parse_daily_csv

SQRT_252 = math.sqrt(252.0)


@pytest.fixture(scope="module")
def nifty() -> dict[str, np.ndarray]:
    frame = parse_daily_csv(shared_data("nifty50_daily_nse.csv")).frame
    return {name: frame[name].to_numpy() for name in ("open", "high", "low", "close")}


# --- known values -----------------------------------------------------------------------------------


def test_close_to_close_on_alternating_returns() -> None:
    # Returns +1 %, -1 %, ... (log): even count, mean 0, sample variance r^2 * n/(n-1).
    r = 0.01
    closes = 100.0 * np.exp(np.cumsum(np.r_[0.0, np.tile([r, -r], 10)]))
    expected = math.sqrt(r * r * 20 / 19) * SQRT_252
    assert realized.close_to_close(closes, 20) == pytest.approx(expected, rel=1e-12)


def test_close_to_close_ignores_a_constant_drift() -> None:
    closes = 100.0 * np.exp(0.003 * np.arange(30))
    assert realized.close_to_close(closes, 20) == pytest.approx(0.0, abs=1e-12)


def test_parkinson_constant_range() -> None:
    # ln(H/L) = 0.02 every day -> var = 0.02^2 / (4 ln 2).
    low = np.full(10, 100.0)
    high = low * math.exp(0.02)
    expected = 0.02 / math.sqrt(4.0 * math.log(2.0)) * SQRT_252
    assert realized.parkinson(high, low, 10) == pytest.approx(expected, rel=1e-12)


def test_garman_klass_constant_bars() -> None:
    # ln(H/L) = 0.02 and ln(C/O) = 0.01: var = 0.5*0.02^2 - (2 ln 2 - 1)*0.01^2.
    open_ = np.full(5, 100.0)
    close = open_ * math.exp(0.01)
    low = np.full(5, 99.5)
    high = low * math.exp(0.02)
    expected = math.sqrt(0.5 * 0.02**2 - (2 * math.log(2) - 1) * 0.01**2) * SQRT_252
    assert realized.garman_klass(open_, high, low, close, 5) == pytest.approx(expected, rel=1e-12)


def test_yang_zhang_with_no_overnight_gap_and_flat_bars_is_rogers_satchell_share() -> None:
    # Open = previous close and every day closes where it opened: the overnight and open-to-close
    # variances vanish, leaving (1 - k) * Rogers-Satchell, and with C = O each day's RS term is
    # ln(H/O)^2 + ln(L/O)^2 = a^2 + b^2.
    n = 11
    price = np.full(n, 100.0)
    a, b = 0.01, 0.015
    high = price * math.exp(a)
    low = price * math.exp(-b)
    window = n - 1
    k = 0.34 / (1.34 + (window + 1) / (window - 1))
    expected = math.sqrt((1.0 - k) * (a * a + b * b)) * SQRT_252
    assert realized.yang_zhang(price, high, low, price, window) == pytest.approx(expected, rel=1e-12)


def test_yang_zhang_overnight_gaps_only() -> None:
    # Flat intraday bars (O = H = L = C) but alternating overnight gaps of +-1 %: only the overnight
    # variance is left.
    gaps = np.tile([0.01, -0.01], 5)
    level = 100.0 * np.exp(np.cumsum(np.r_[0.0, gaps]))
    expected = math.sqrt(0.01**2 * 10 / 9) * SQRT_252
    assert realized.yang_zhang(level, level, level, level, 10) == pytest.approx(expected, rel=1e-12)


# --- twins and rolling variants on real data --------------------------------------------------------


@pytest.mark.parametrize("window", [2, 10, 20, 63, 249])
def test_estimators_match_scalar_twins_on_nifty(nifty: dict[str, np.ndarray], window: int) -> None:
    o, h, lo, c = nifty["open"], nifty["high"], nifty["low"], nifty["close"]
    assert realized.close_to_close(c, window) == pytest.approx(ref.close_to_close(list(c), window), rel=1e-12)
    assert realized.parkinson(h, lo, window) == pytest.approx(
        ref.parkinson(list(h), list(lo), window), rel=1e-12
    )
    assert realized.garman_klass(o, h, lo, c, window) == pytest.approx(
        ref.garman_klass(list(o), list(h), list(lo), list(c), window), rel=1e-12
    )
    assert realized.yang_zhang(o, h, lo, c, window) == pytest.approx(
        ref.yang_zhang(list(o), list(h), list(lo), list(c), window), rel=1e-12
    )


def test_rolling_variants_match_point_estimates_at_every_bar(nifty: dict[str, np.ndarray]) -> None:
    o, h, lo, c = nifty["open"], nifty["high"], nifty["low"], nifty["close"]
    window = 20
    rolling = {
        "c2c": realized.rolling_close_to_close(c, window),
        "park": realized.rolling_parkinson(h, lo, window),
        "gk": realized.rolling_garman_klass(o, h, lo, c, window),
        "yz": realized.rolling_yang_zhang(o, h, lo, c, window),
    }
    for series in rolling.values():
        assert series.shape == c.shape
    # Needs window + 1 bars for return-based estimators, window bars for range-based ones.
    for name, first in (("c2c", window), ("yz", window), ("park", window - 1), ("gk", window - 1)):
        assert np.all(np.isnan(rolling[name][:first]))
        assert np.all(np.isfinite(rolling[name][first:]))
    for end in (window + 1, 100, len(c)):
        assert rolling["c2c"][end - 1] == pytest.approx(realized.close_to_close(c[:end], window), rel=1e-12)
        assert rolling["park"][end - 1] == pytest.approx(
            realized.parkinson(h[:end], lo[:end], window), rel=1e-12
        )
        assert rolling["gk"][end - 1] == pytest.approx(
            realized.garman_klass(o[:end], h[:end], lo[:end], c[:end], window), rel=1e-12
        )
        assert rolling["yz"][end - 1] == pytest.approx(
            realized.yang_zhang(o[:end], h[:end], lo[:end], c[:end], window), rel=1e-12
        )


def test_nifty_year_levels_are_plausible(nifty: dict[str, np.ndarray]) -> None:
    # NIFTY's realised vol over Dec 2024 - Dec 2025 was ~12 % close-to-close; range estimators that
    # miss the overnight gap read lower, Yang-Zhang (which adds it back) sits near close-to-close.
    o, h, lo, c = nifty["open"], nifty["high"], nifty["low"], nifty["close"]
    c2c = realized.close_to_close(c, 249)
    assert 0.10 < c2c < 0.14
    assert realized.parkinson(h, lo, 249) < c2c
    assert 0.8 * c2c < realized.yang_zhang(o, h, lo, c, 249) < 1.2 * c2c


def test_log_returns() -> None:
    np.testing.assert_allclose(
        realized.log_returns([100.0, 110.0, 99.0]), [math.log(1.1), math.log(0.9)], rtol=1e-14
    )


def test_bad_input_fails_loudly(nifty: dict[str, np.ndarray]) -> None:
    c = nifty["close"]
    with pytest.raises(ValueError, match="need at least 21 bars"):
        realized.close_to_close(c[:20], 20)
    with pytest.raises(ValueError, match="window"):
        realized.close_to_close(c, 1)
    with pytest.raises(ValueError, match="finite and > 0"):
        realized.close_to_close(np.r_[c[:30], np.nan], 20)
    with pytest.raises(ValueError, match="high < low"):
        realized.parkinson([100.0, 90.0], [95.0, 95.0], 2)
    with pytest.raises(ValueError, match="same length"):
        realized.garman_klass(c[:10], c[:10], c[:9], c[:10], 5)


# --- completed days + one more bar ------------------------------------------------------------------


def random_bars(rng: np.random.Generator, n: int, daily_vol: float) -> dict[str, np.ndarray]:
    """Daily bars on a random walk: an overnight gap, an open-to-close move, a range around both."""
    gaps = rng.normal(0.0, daily_vol / 3.0, n)
    moves = rng.normal(0.0, daily_vol, n)
    close = 25_000.0 * np.exp(np.cumsum(gaps + moves))
    open_ = close * np.exp(-moves)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, daily_vol / 2.0, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, daily_vol / 2.0, n)))
    return {"open": open_, "high": high, "low": low, "close": close}


@pytest.mark.parametrize("seed", range(40))
def test_completed_days_plus_one_bar_is_the_estimator_on_the_appended_bars(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bars = random_bars(rng, int(rng.integers(3, 70)), float(rng.uniform(0.002, 0.03)))
    completed_bars = {name: series[:-1] for name, series in bars.items()}
    o, h, lo, c = (float(bars[name][-1]) for name in ("open", "high", "low", "close"))
    windows = (2, 7, 21, 63)
    completed = realized.CompletedDays.of(
        completed_bars["open"],
        completed_bars["high"],
        completed_bars["low"],
        completed_bars["close"],
        windows,
    )
    n = len(bars["close"])
    compared = 0
    for window in windows:
        if n > window:
            assert completed.close_to_close(c, window) == pytest.approx(
                realized.close_to_close(bars["close"], window), rel=1e-12
            )
            assert completed.yang_zhang(o, h, lo, c, window) == pytest.approx(
                realized.yang_zhang(bars["open"], bars["high"], bars["low"], bars["close"], window), rel=1e-12
            )
            compared += 2
        if n >= window:
            assert completed.parkinson(h, lo, window) == pytest.approx(
                realized.parkinson(bars["high"], bars["low"], window), rel=1e-12
            )
            compared += 1
    assert compared >= 3


@pytest.mark.parametrize("end", [8, 22, 100, 250])
def test_completed_days_plus_one_bar_on_the_nifty_year(nifty: dict[str, np.ndarray], end: int) -> None:
    # The day `end - 1` of the file plays today's bar on top of the days before it.
    o, h, lo, c = (nifty[name][:end] for name in ("open", "high", "low", "close"))
    completed = realized.CompletedDays.of(o[:-1], h[:-1], lo[:-1], c[:-1], (7, 21))
    window = 7 if end < 22 else 21
    assert completed.close_to_close(c[-1], window) == pytest.approx(
        realized.close_to_close(c, window), rel=1e-12
    )
    assert completed.parkinson(h[-1], lo[-1], window) == pytest.approx(
        realized.parkinson(h, lo, window), rel=1e-12
    )
    assert completed.yang_zhang(o[-1], h[-1], lo[-1], c[-1], window) == pytest.approx(
        realized.yang_zhang(o, h, lo, c, window), rel=1e-12
    )


def test_completed_days_keep_a_tiny_spread_under_a_large_drift() -> None:
    # +5 % every day give or take 1e-8: a sum of squares minus the squared sum over the 7 returns
    # cancels to ~4e-4 relative error here; sums about the completed days' own mean keep the variance
    # to the rounding of the log returns themselves (ln C ~ 11 carries ~2e-15 against a 1e-8 spread,
    # a few 1e-7 at worst), as the reference's two-pass variance does.
    rng = np.random.default_rng(11)
    closes = 25_000.0 * np.exp(np.cumsum(0.05 + 1e-8 * rng.standard_normal(30)))
    completed = realized.CompletedDays.of(closes, closes, closes, closes, (7,))
    last = float(closes[-1] * math.exp(0.05 + 1e-8 * rng.standard_normal()))
    reference = realized.close_to_close(np.append(closes, last), 7)
    assert 1e-9 < reference < 1e-6
    assert completed.close_to_close(last, 7) == pytest.approx(reference, rel=2e-6)


def test_completed_days_refuse_what_the_estimators_refuse(nifty: dict[str, np.ndarray]) -> None:
    o, h, lo, c = (nifty[name][:30] for name in ("open", "high", "low", "close"))
    completed = realized.CompletedDays.of(o[:20], h[:20], lo[:20], c[:20], (7, 21))
    # 20 completed bars + 1: Parkinson 21 has its window, close-to-close and Yang-Zhang 21 do not.
    assert completed.parkinson(h[20], lo[20], 21) > 0.0
    with pytest.raises(ValueError, match="need at least 22 bars for this window, got 21"):
        completed.close_to_close(c[20], 21)
    with pytest.raises(ValueError, match="need at least 22 bars for this window, got 21"):
        completed.yang_zhang(o[20], h[20], lo[20], c[20], 21)
    with pytest.raises(ValueError, match="window 5 was not among"):
        completed.close_to_close(c[20], 5)
    with pytest.raises(ValueError, match="close must be finite and > 0"):
        completed.close_to_close(math.nan, 7)
    with pytest.raises(ValueError, match="low must be finite and > 0"):
        completed.parkinson(100.0, 0.0, 21)
    with pytest.raises(ValueError, match="open must be finite and > 0"):
        completed.yang_zhang(math.inf, 100.0, 99.0, 99.5, 7)
    with pytest.raises(ValueError, match="high < low"):
        completed.parkinson(99.0, 100.0, 21)
    with pytest.raises(ValueError, match="high < low"):
        completed.yang_zhang(99.5, 99.0, 100.0, 99.5, 7)
    with pytest.raises(ValueError, match="window"):
        realized.CompletedDays.of(o, h, lo, c, (1,))
    with pytest.raises(ValueError, match="no completed days"):
        realized.CompletedDays.of([], [], [], [], (7,))
    with pytest.raises(ValueError, match="finite and > 0"):
        realized.CompletedDays.of(o, h, lo, np.r_[c[:-1], np.nan], (7,))
    with pytest.raises(ValueError, match="high < low"):
        realized.CompletedDays.of(o, lo, h, c, (7,))
