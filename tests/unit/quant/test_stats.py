"""Chain and history statistics."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from tests.unit.quant.shared_data import shared_data
from volguard_common.quant import _chain_kernels, black76, sabr, stats
from volguard_common.quant import _reference_vol as ref
from volguard_market_data.history_files import parse_daily_csv

# --- IV percentile and rank -------------------------------------------------------------------------


def test_iv_percentile_counts_days_strictly_below() -> None:
    history = np.arange(1.0, 11.0)  # 1..10
    assert stats.iv_percentile(history, 5.5) == 50.0
    assert stats.iv_percentile(history, 5.0) == 40.0  # ties are not "below"
    assert stats.iv_percentile(history, 0.5) == 0.0
    assert stats.iv_percentile(history, 11.0) == 100.0
    # Only the last `lookback` days count: 6..10.
    assert stats.iv_percentile(history, 8.5, lookback=5) == 60.0


def test_iv_rank_is_position_in_the_range() -> None:
    history = np.array([10.0, 20.0, 15.0, 12.0])
    assert stats.iv_rank(history, 15.0) == 50.0
    assert stats.iv_rank(history, 10.0) == 0.0
    assert stats.iv_rank(history, 25.0) == 100.0  # a new high is the top of its own range
    assert stats.iv_rank(history, 5.0) == 0.0
    assert stats.iv_rank(history, 14.0, lookback=2) == pytest.approx(100.0 * 2.0 / 3.0)


def test_nan_days_are_skipped_and_empty_or_flat_history_raises() -> None:
    assert stats.iv_percentile([np.nan, 10.0, 20.0, np.nan], 15.0) == 50.0
    with pytest.raises(ValueError, match="no IV history"):
        stats.iv_percentile([np.nan, np.nan], 15.0)
    with pytest.raises(ValueError, match="no range"):
        stats.iv_rank([15.0, 15.0], 15.0)
    with pytest.raises(ValueError, match="lookback"):
        stats.iv_rank([15.0, 16.0], 15.0, lookback=0)


def test_percentile_and_rank_on_real_atm_iv_history() -> None:
    closes = parse_daily_csv(shared_data("nifty_atm_iv_daily.csv")).frame["close"].to_numpy()
    history, today = closes[:-1], float(closes[-1])
    pct = stats.iv_percentile(history, today)
    rank = stats.iv_rank(history, today)
    window = history[-252:]
    assert pct == pytest.approx(100.0 * sum(v < today for v in window) / len(window))
    low, high = min(window.min(), today), max(window.max(), today)
    assert rank == pytest.approx(100.0 * (today - low) / (high - low))
    assert 0.0 <= pct <= 100.0
    assert 0.0 <= rank <= 100.0


# --- term structure ---------------------------------------------------------------------------------


def test_term_structure_linear_and_quadratic() -> None:
    days = np.array([7.0, 35.0, 63.0])
    # iv = 0.12 + 0.01 * (d/30): slope 0.01 per 30 days, no curvature.
    flat = stats.term_structure(days, 0.12 + 0.01 * days / 30.0)
    assert flat.slope == pytest.approx(0.01, rel=1e-12)
    assert flat.curvature == pytest.approx(0.0, abs=1e-12)
    # iv = 0.15 - 0.02 x + 0.004 x^2 with x = d/30: curvature is the second derivative 0.008.
    x = np.array([7.0, 14.0, 35.0, 63.0, 91.0]) / 30.0
    curved = stats.term_structure(x * 30.0, 0.15 - 0.02 * x + 0.004 * x * x)
    assert curved.curvature == pytest.approx(0.008, rel=1e-9)
    assert curved.n_expiries == 5
    assert curved.front_iv == pytest.approx(0.15 - 0.02 * x[0] + 0.004 * x[0] ** 2)


def test_term_structure_sorts_expiries_and_flags_inversion() -> None:
    result = stats.term_structure([35.0, 7.0], [0.13, 0.18])  # event week: front month bid
    assert result.front_iv == 0.18
    assert result.back_iv == 0.13
    assert result.slope == pytest.approx(-0.05 * 30.0 / 28.0)
    assert result.curvature is None


def test_term_structure_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least two"):
        stats.term_structure([7.0], [0.15])
    with pytest.raises(ValueError, match="distinct"):
        stats.term_structure([7.0, 7.0], [0.15, 0.16])
    with pytest.raises(ValueError, match="> 0"):
        stats.term_structure([0.0, 7.0], [0.15, 0.16])


# --- 25-delta risk reversal and butterfly ----------------------------------------------------------


def test_flat_smile_has_zero_rr_and_bf_and_textbook_strikes() -> None:
    forward, t, vol = 24_000.0, 30 / 365, 0.15
    result = stats.risk_reversal_butterfly_25d(forward, t, lambda k: np.full_like(k, vol))
    assert result.rr25 == pytest.approx(0.0, abs=1e-15)
    assert result.bf25 == pytest.approx(0.0, abs=1e-15)
    # N(d1) = 0.25 -> ln(K/F) = -N^-1(0.25) s + s^2/2 for the call, and mirrored for the put.
    s = vol * math.sqrt(t)
    assert result.call_strike == pytest.approx(
        forward * math.exp(-norm.ppf(0.25) * s + 0.5 * s * s), rel=1e-12
    )
    assert result.put_strike == pytest.approx(forward * math.exp(norm.ppf(0.25) * s + 0.5 * s * s), rel=1e-12)


def test_sabr_skew_gives_negative_rr_positive_bf_and_exact_25_deltas() -> None:
    forward, t = 24_000.0, 30 / 365
    alpha = sabr.alpha_from_atm(0.15, forward, t, 0.5, -0.4, 1.2)
    fitted = sabr.SabrFit(alpha, 0.5, -0.4, 1.2, 0.0, True, 0, 41, 0)
    result = stats.risk_reversal_butterfly_25d(forward, t, fitted)
    assert result.rr25 < -0.01  # NIFTY puts bid over calls
    assert result.bf25 > 0.0  # wings above ATM
    assert result.atm_vol == pytest.approx(0.15, rel=1e-12)
    for strike, vol, is_call, target in (
        (result.call_strike, result.call_vol, True, 0.25),
        (result.put_strike, result.put_vol, False, -0.25),
    ):
        assert vol == pytest.approx(float(sabr.vol(forward, strike, t, alpha, 0.5, -0.4, 1.2)), rel=1e-14)
        assert float(black76.greeks(forward, strike, t, vol, is_call).delta) == pytest.approx(
            target, abs=1e-12
        )
    # The same smile passed as a callable gives the same answer.
    as_callable = stats.risk_reversal_butterfly_25d(
        forward, t, lambda k: sabr.vol(forward, k, t, alpha, 0.5, -0.4, 1.2)
    )
    assert as_callable.rr25 == pytest.approx(result.rr25, rel=1e-12)
    assert as_callable.bf25 == pytest.approx(result.bf25, rel=1e-12)
    rr25, bf25, *_ = result  # unpacks as (rr25, bf25, ...)
    assert (rr25, bf25) == (result.rr25, result.bf25)


def test_broken_smile_callable_is_rejected() -> None:
    with pytest.raises(ValueError, match="smile returned"):
        stats.risk_reversal_butterfly_25d(24_000.0, 0.1, lambda k: np.full_like(k, np.nan))


# --- put-call ratio ---------------------------------------------------------------------------------


def test_pcr() -> None:
    assert stats.pcr([100.0, 200.0], [150.0, 300.0]) == 1.5
    assert stats.pcr_volume([10.0, 30.0], [20.0, 0.0]) == 0.5
    with pytest.raises(ValueError, match="zero"):
        stats.pcr([0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=">= 0"):
        stats.pcr([1.0, -1.0], [1.0, 2.0])


# --- max pain ---------------------------------------------------------------------------------------


def test_max_pain_small_known_case() -> None:
    # Settle at 100: calls 90 pay 10*5=50, puts 110 pay 10*1=10 -> 60; at 90: puts 100 and 110 pay
    # 10*4 + 20*1 = 60, calls none -> 60; at 110: calls 90, 100 pay 20*5 + 10*3 = 130. Tie -> 90.
    result = stats.max_pain([110.0, 90.0, 100.0], [0.0, 5.0, 3.0], [1.0, 0.0, 4.0])
    np.testing.assert_array_equal(result.strikes, [90.0, 100.0, 110.0])
    np.testing.assert_array_equal(result.pain, [60.0, 60.0, 130.0])
    assert result.strike == 90.0


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    duplicate=st.booleans(),
)
def test_max_pain_matches_naive_double_loop(n: int, seed: int, duplicate: bool) -> None:
    rng = np.random.default_rng(seed)
    # Integer strikes and OI, as on the exchange: every sum is exact in float64, so fast and naive
    # must agree to the last bit, including which strike wins a tie.
    strikes = rng.choice(np.arange(20_000, 30_000, 50), size=n, replace=duplicate).astype(float)
    call_oi = rng.integers(0, 5_000_000, n).astype(float)
    put_oi = rng.integers(0, 5_000_000, n).astype(float)
    fast = stats.max_pain(strikes, call_oi, put_oi)
    slow_strike, slow_pain = ref.max_pain(list(strikes), list(call_oi), list(put_oi))
    np.testing.assert_array_equal(fast.pain, slow_pain)
    assert fast.strike == slow_strike


def test_max_pain_on_a_real_chain() -> None:
    chain = json.loads(shared_data("nifty_option_chain_expiry_day.json").read_text())["data"]["oc"]
    strikes = np.array([float(k) for k in chain])
    call_oi = np.array([float(chain[k]["ce"]["oi"]) for k in chain])
    put_oi = np.array([float(chain[k]["pe"]["oi"]) for k in chain])
    fast = stats.max_pain(strikes, call_oi, put_oi)
    slow_strike, slow_pain = ref.max_pain(list(strikes), list(call_oi), list(put_oi))
    assert fast.strike == slow_strike
    np.testing.assert_allclose(fast.pain, slow_pain, rtol=1e-12)
    # Spot was 26,177 late on expiry day; max pain sits within a few hundred points of it.
    assert abs(fast.strike - 26_177.15) < 500.0


def test_max_pain_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        stats.max_pain([100.0, 110.0], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="open interest"):
        stats.max_pain([100.0], [np.nan], [1.0])


# --- straddle and expected move ---------------------------------------------------------------------


def test_straddle_and_expected_move() -> None:
    forward, t, vol = 24_000.0, 7 / 365, 0.12
    straddle = stats.straddle_price(forward, forward, t, vol)
    # ATM-forward call = put = F (2 N(s/2) - 1).
    s = vol * math.sqrt(t)
    assert straddle == pytest.approx(2.0 * forward * (2.0 * norm.cdf(0.5 * s) - 1.0), rel=1e-12)
    move = stats.expected_move(straddle, 24_000.0)
    assert move.points == straddle
    assert move.percent == pytest.approx(100.0 * straddle / 24_000.0)
    assert (move.lower, move.upper) == (24_000.0 - straddle, 24_000.0 + straddle)
    # The one-sd move recovers F * sigma * sqrt(t) to first order in s.
    assert move.one_sd_points == pytest.approx(forward * s, rel=1e-3)
    with pytest.raises(ValueError, match="spot"):
        stats.expected_move(straddle, 0.0)


# --- open interest of several expiries in one compiled pass -----------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_expiries=st.integers(1, 6))
def test_open_interest_by_expiry_matches_the_single_expiry_reference(seed: int, n_expiries: int) -> None:
    rng = np.random.default_rng(seed)
    strikes, call_oi, put_oi, call_vol, put_vol, bounds = [], [], [], [], [], [0]
    for _ in range(n_expiries):
        n = int(rng.integers(1, 60))
        k = 20_000.0 + 50.0 * np.sort(rng.choice(200, n, replace=False))
        # Integer OI with ties (max-pain and wall ties go to the lowest strike) and empty sides.
        c = rng.integers(0, 4, n) * 1_000.0 * (rng.random() > 0.15)
        p = rng.integers(0, 4, n) * 1_000.0 * (rng.random() > 0.15)
        strikes.append(k)
        call_oi.append(c)
        put_oi.append(p)
        call_vol.append(rng.integers(0, 100, n).astype(float))
        put_vol.append(rng.integers(0, 100, n).astype(float))
        bounds.append(bounds[-1] + n)
    centre = rng.uniform(20_000.0, 30_000.0, n_expiries)
    half_width = rng.uniform(0.0, 500.0, n_expiries)
    batch = stats.open_interest_by_expiry(
        *(np.concatenate(a) for a in (strikes, call_oi, put_oi, call_vol, put_vol)),
        bounds,
        centre,
        half_width,
    )
    for e, summary in enumerate(batch):
        k, c, p = strikes[e], call_oi[e], put_oi[e]
        assert summary.call_oi == c.sum()
        assert summary.put_oi == p.sum()
        assert summary.call_volume == call_vol[e].sum()
        assert summary.put_volume == put_vol[e].sum()
        expected_pain = stats.max_pain(k, c, p).strike if c.sum() + p.sum() > 0 else None
        assert summary.max_pain == expected_pain
        assert summary.call_wall == (float(k[np.argmax(c)]) if c.sum() > 0 else None)
        assert summary.put_wall == (float(k[np.argmax(p)]) if p.sum() > 0 else None)
        near = np.abs(k - centre[e]) <= half_width[e]
        assert summary.pin_oi == c[near].sum() + p[near].sum()


def test_open_interest_by_expiry_needs_rising_strikes_within_each_expiry() -> None:
    k = np.array([100.0, 200.0, 150.0, 50.0, 60.0])
    ones = np.ones(5)
    # Falling between expiries is fine (rows 0:2 and 2:5 ...) but not inside one (150 -> 50).
    with pytest.raises(ValueError, match="strictly increasing"):
        stats.open_interest_by_expiry(k, ones, ones, ones, ones, [0, 2, 5], [100.0, 100.0], [10.0, 10.0])
    batch = stats.open_interest_by_expiry(k, ones, ones, ones, ones, [0, 2, 3, 5], [0.0] * 3, [1.0] * 3)
    assert [s.max_pain for s in batch] == [100.0, 150.0, 50.0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.05, 400.0), min_size=2, max_size=8, unique=True),
    st.lists(st.floats(0.05, 0.9), min_size=8, max_size=8),
)
def test_term_structure_is_the_least_squares_polynomials(days: list[float], ivs: list[float]) -> None:
    # The closed form against numpy's own least squares, on any distinct, unordered expiries.
    assume(min(abs(a - b) for a in days for b in days if a != b) > 0.01)
    y = np.array(ivs[: len(days)])
    result = stats.term_structure(days, y)
    x = np.array(days) / 30.0
    scale = float(np.ptp(y)) + 1e-3
    assert result.slope == pytest.approx(float(np.polyfit(x, y, 1)[0]), abs=1e-9 * scale / np.ptp(x))
    if len(days) >= 3:
        assert result.curvature is not None
        expected = 2.0 * float(np.polyfit(x, y, 2)[0])
        assert result.curvature == pytest.approx(expected, rel=1e-7, abs=1e-9 * scale / np.ptp(x) ** 2)
    else:
        assert result.curvature is None


def test_prepared_open_interest_is_the_kernel_rows_as_plain_values() -> None:
    """Each expiry's OpenInterest is its row of the compiled pass as Python floats, with None for the
    max pain of an expiry without OI and for the wall of a side without OI; it cannot be changed."""
    k = np.array([100.0, 200.0, 300.0] * 3)
    call_oi = np.array([0.0, 0.0, 0.0, 5.0, 9.0, 1.0, 0.0, 0.0, 0.0])
    put_oi = np.array([0.0, 0.0, 0.0, 7.0, 2.0, 0.0, 3.0, 8.0, 8.0])
    volume = np.arange(9.0)
    bounds = np.array([0, 3, 6, 9])
    centre = np.array([200.0, 200.0, 150.0])
    half_width = np.array([60.0, 100.0, 60.0])
    args: tuple[Any, ...] = (k, call_oi, put_oi, volume, volume[::-1].copy(), bounds, centre, half_width)
    rows = _chain_kernels.open_interest_segments(*args).tolist()
    got = stats.open_interest_by_expiry_prepared(*args)
    assert [(s.max_pain, s.call_wall, s.put_wall) for s in got] == [
        (None, None, None),
        (rows[1][4], 200.0, 100.0),
        (rows[2][4], None, 200.0),
    ]
    for summary, row in zip(got, rows, strict=True):
        assert (summary.call_oi, summary.put_oi, summary.call_volume, summary.put_volume) == tuple(row[:4])
        assert summary.pin_oi == row[7]
        assert all(type(value) is float for value in (summary.call_oi, summary.pin_oi))
        if summary.max_pain is not None:
            assert (summary.max_pain, summary.call_wall, summary.put_wall) == tuple(
                None if v != v else v for v in row[4:7]
            )
        with pytest.raises(AttributeError):
            summary.pin_oi = 0.0  # type: ignore[misc]


def _previous_line_and_parabola(x: list[float], y: list[float]) -> tuple[float, float | None]:
    """The closed form as first written, one generator per sum: the reference `stats` must match to
    the last bit (the same products, added in the same order)."""
    n = len(x)
    centre = sum(x) / n
    level = sum(y) / n
    u = [xi - centre for xi in x]
    w = [yi - level for yi in y]
    s_uu = sum(ui * ui for ui in u)
    slope = sum(ui * wi for ui, wi in zip(u, w, strict=True)) / s_uu
    if n < 3:
        return slope, None
    tilt = sum(ui * ui * ui for ui in u) / s_uu
    mean_uu = s_uu / n
    q = [ui * ui - tilt * ui - mean_uu for ui in u]
    leading = sum(qi * wi for qi, wi in zip(q, w, strict=True)) / sum(qi * qi for qi in q)
    return slope, 2.0 * leading


def _term_outcome(days: object, ivs: object) -> object:
    try:
        return stats.term_structure(days, ivs)  # type: ignore[arg-type]
    except ValueError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.01, 400.0), st.floats(0.01, 0.9)), max_size=8),
    st.sampled_from([None] * 6 + [0.0, -1.0, math.inf, math.nan, 7.0]),
    st.sampled_from([None] * 6 + [0.0, math.inf, math.nan]),
    st.sampled_from([False] * 5 + [True]),
)
def test_term_structure_is_the_same_for_lists_arrays_and_the_previous_formula(
    points: list[tuple[float, float]], odd_day: float | None, odd_iv: float | None, one_iv_short: bool
) -> None:
    days = [d for d, _ in points]
    ivs = [v for _, v in points][: len(points) - one_iv_short]
    if days and odd_day is not None:
        days[-1] = odd_day
    if ivs and odd_iv is not None:
        ivs[0] = odd_iv
    # A list of floats skips numpy; every other form goes through it: the same result or error, bit
    # for bit, and the same as the formula before its sums were rewritten.
    expected = _term_outcome(np.array(days), np.array(ivs))
    assert _term_outcome(days, ivs) == expected
    assert _term_outcome(tuple(days), [np.float64(v) for v in ivs]) == expected
    assert _term_outcome([int(d) if d == 7.0 else d for d in days], ivs) == expected
    if not isinstance(expected, str):
        assert isinstance(expected, stats.TermStructure)
        ordered = sorted(zip(days, ivs, strict=True))
        x = [d / 30.0 for d, _ in ordered]
        y = [v for _, v in ordered]
        assert (expected.slope, expected.curvature) == _previous_line_and_parabola(x, y)
        assert (expected.front_iv, expected.back_iv, expected.n_expiries) == (y[0], y[-1], len(y))
