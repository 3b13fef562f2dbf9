"""The compiled quote passes of `analyse_set` against their obvious twins: `classify_quotes` and the
numpy statements they replaced, on random chain sets with every kind of bad quote."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tests.unit.analytics.chains import CONFIG
from volguard_analytics.domain import _quote_kernels as kernels
from volguard_analytics.domain.expiry import (
    _GREEK_UNITS,
    _QUOTE_ROWS,
    _STATUS_FLAGS,
    classify_quotes,
    quoted_atm_iv,
)
from volguard_common.events import QuoteFlag
from volguard_common.events.chain import CHAIN_FLOAT_COLUMNS, CHAIN_INT_COLUMNS
from volguard_common.events.vol import IvFlag
from volguard_common.quant import iv

SEEDS = range(12)


def test_bits_are_the_event_models_bits() -> None:
    for flag in QuoteFlag:
        assert getattr(kernels, f"QUOTE_{flag.name}") == int(flag)
    for iv_flag in IvFlag:
        assert getattr(kernels, f"IV_{iv_flag.name}") == int(iv_flag)
    unusable = IvFlag.NO_QUOTE | IvFlag.BELOW_INTRINSIC | IvFlag.ABOVE_UPPER_BOUND | IvFlag.SOLVER_FAILED
    assert int(unusable | IvFlag.WIDE_SPREAD | IvFlag.CROSSED) == kernels.IV_UNFIT


def _random_set(seed: int) -> dict[str, np.ndarray]:
    """Three expiries of 15-40 strikes; quotes with NaN sides, crossed, wide and tight spreads, and
    random producer flags."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(15, 41, size=3)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(bounds[-1])
    strike = np.concatenate([24_000.0 + 50.0 * np.arange(size) - 25.0 * size for size in sizes])
    mid = rng.uniform(0.05, 400.0, size=2 * n)
    spread = rng.choice([-0.5, 0.05, 0.1, 0.5, 3.0, 40.0], size=2 * n)
    bid = mid - spread / 2
    ask = mid + spread / 2
    bid[rng.random(2 * n) < 0.05] = np.nan
    ask[rng.random(2 * n) < 0.05] = np.nan
    producer = rng.choice(
        [0, 1, 2, 4, 8, 16, 5, 20], size=2 * n, p=[0.6, 0.05, 0.05, 0.1, 0.05, 0.05, 0.05, 0.05]
    )
    ticks = np.array([0.05, 0.1, rng.choice([0.05, 0.1])])
    return {
        "bounds": bounds,
        "strike": strike,
        "bid": bid,
        "ask": ask,
        "producer": producer.astype(np.int64),
        "ticks": ticks,
        "tick": np.repeat(np.concatenate([ticks, ticks]), np.concatenate([sizes, sizes])),
        "forwards": np.array([strike[bounds[e] + sizes[e] // 2] + rng.uniform(-30, 30) for e in range(3)]),
        "times": rng.uniform(0.002, 0.3, size=3),
        "discounts": rng.uniform(0.97, 1.0, size=3),
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_classify_is_classify_quotes(seed: int) -> None:
    s = _random_set(seed)
    compiled = kernels.classify(
        s["bid"],
        s["ask"],
        s["producer"],
        s["bounds"],
        s["ticks"],
        CONFIG.wide_spread_frac,
        CONFIG.wide_spread_min_ticks,
    )
    reference = classify_quotes(s["bid"], s["ask"], s["producer"], s["tick"], CONFIG)
    for got, want in zip(compiled, reference, strict=True):
        np.testing.assert_array_equal(got, want)
    # The set covers every outcome the rules have.
    flags = reference[2]
    for bit in (IvFlag.NO_QUOTE, IvFlag.CROSSED, IvFlag.WIDE_SPREAD):
        assert np.any(flags & int(bit))
    # A stale last trade is not a rule of its own: such quotes are classified as any other.
    assert np.any(s["producer"] & int(QuoteFlag.STALE_LTP))


@pytest.mark.parametrize("seed", SEEDS)
def test_set_quotes_reads_the_chain_blocks_like_classify_then_parity_pairs(seed: int) -> None:
    s = _random_set(seed)
    n = s["strike"].size
    # Column blocks in events.chain order, as analyse_set concatenates them.
    floats = np.full((len(CHAIN_FLOAT_COLUMNS), n), -1.0)
    ints = np.full((len(CHAIN_INT_COLUMNS), n), -1, dtype=np.int64)
    floats[CHAIN_FLOAT_COLUMNS.index("strike")] = s["strike"]
    for side, name in enumerate(("call", "put")):
        rows = slice(side * n, (side + 1) * n)
        floats[CHAIN_FLOAT_COLUMNS.index(f"{name}_bid")] = s["bid"][rows]
        floats[CHAIN_FLOAT_COLUMNS.index(f"{name}_ask")] = s["ask"][rows]
        ints[CHAIN_INT_COLUMNS.index(f"{name}_flags")] = s["producer"][rows]
    rng = np.random.default_rng(seed)
    activity_rows = [
        CHAIN_INT_COLUMNS.index(name) for name in ("call_oi", "put_oi", "call_volume", "put_volume")
    ]
    ints[activity_rows] = rng.integers(0, 5_000_000, (4, n))
    combined = kernels.set_quotes(
        floats,
        ints,
        _QUOTE_ROWS,
        s["bounds"],
        s["ticks"],
        CONFIG.wide_spread_frac,
        CONFIG.wide_spread_min_ticks,
    )
    quotes = kernels.classify(
        s["bid"], s["ask"], s["producer"], s["bounds"], s["ticks"], CONFIG.wide_spread_frac,
        CONFIG.wide_spread_min_ticks,
    )  # fmt: skip
    pairs = kernels.parity_pairs(quotes[0], quotes[2])  # mid, flags
    activity = ints[activity_rows].astype(np.float64)
    for got, want in zip(combined, (*quotes, *pairs, activity), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", SEEDS)
def test_parity_pairs_iv_inputs_settle_and_fit_points_match_numpy(seed: int) -> None:
    s = _random_set(seed)
    bounds, strike, forwards = s["bounds"], s["strike"], s["forwards"]
    n = strike.size
    sizes = np.diff(bounds)
    mid, half_spread, flags = classify_quotes(s["bid"], s["ask"], s["producer"], s["tick"], CONFIG)

    # Clean pairs for parity.
    call_mid, put_mid, usable = kernels.parity_pairs(mid, flags)
    clean = (flags[:n] | flags[n:]) == 0
    np.testing.assert_array_equal(call_mid, np.where(clean, mid[:n], np.nan))
    np.testing.assert_array_equal(put_mid, np.where(clean, mid[n:], np.nan))
    np.testing.assert_array_equal(usable, clean & (mid[:n] > 0.0) & (mid[n:] > 0.0))

    # The IV input block.
    block = kernels.iv_inputs(mid, strike, bounds, forwards, s["times"], s["discounts"])
    per_quote = np.repeat(
        np.array([list(forwards) * 2, list(s["times"]) * 2, list(s["discounts"]) * 2]),
        np.concatenate([sizes, sizes]),
        axis=1,
    )
    quoted = ~np.isnan(mid)
    is_call = np.zeros(2 * n, dtype=np.bool_)
    is_call[:n] = True
    np.testing.assert_array_equal(block[0], mid)
    np.testing.assert_array_equal(block[1], per_quote[0])
    np.testing.assert_array_equal(block[2], np.concatenate([strike, strike]))
    np.testing.assert_array_equal(block[3], per_quote[1])
    np.testing.assert_array_equal(block[4], is_call.astype(np.float64))
    np.testing.assert_array_equal(block[5], per_quote[2])

    # Settle: vols and flags completed, the fit mask.
    raw_vols, status = iv.implied_vol_and_status_block(block)
    # Some solver failures of every kind on quoted sides.
    status = status.copy()
    status[::17] = np.arange(status[::17].size) % (max(iv.IVStatus) + 1)
    vols, settled_flags = raw_vols.copy(), flags.copy()
    fitted = kernels.settle(vols, status, _STATUS_FLAGS, settled_flags, mid, strike, bounds, forwards)
    want_vols = np.where(quoted, raw_vols, np.nan)
    want_flags = flags | np.where(quoted, _STATUS_FLAGS[status], 0)
    solved = ~np.isnan(want_vols)
    otm = np.concatenate([strike >= per_quote[0][:n], strike < per_quote[0][:n]])
    want_fitted = solved & otm & ((want_flags & kernels.IV_UNFIT) == 0)
    want_flags[solved & ~want_fitted] |= int(IvFlag.EXCLUDED_FROM_FIT)
    np.testing.assert_array_equal(vols, want_vols)
    np.testing.assert_array_equal(settled_flags, want_flags)
    np.testing.assert_array_equal(fitted, want_fitted)
    assert want_fitted.any()
    assert (solved & ~want_fitted).any()

    # Surface block and fit points.
    rng = np.random.default_rng(seed)
    greeks = rng.uniform(-1.0, 2000.0, size=(4, 2 * n))
    greeks[:, np.isnan(vols)] = np.nan
    surface, surface_flags, fit_strike, fit_vol, fit_sqrt_w, fit_bounds, atm = kernels.surface_and_fit_points(
        vols,
        greeks,
        fitted,
        settled_flags,
        mid,
        half_spread,
        strike,
        bounds,
        forwards,
        s["ticks"],
        _GREEK_UNITS,
    )
    units = _GREEK_UNITS[:, None]
    side_by_side = np.vstack([strike, vols.reshape(2, n), greeks[:, :n] / units, greeks[:, n:] / units])
    flag_rows = settled_flags.reshape(2, n)
    # Each expiry's blocks whole, one expiry after another.
    spans = list(itertools.pairwise(bounds.tolist()))
    want_surface = np.concatenate([side_by_side[:, lo:hi].ravel() for lo, hi in spans])
    want_flags = np.concatenate([flag_rows[:, lo:hi].ravel() for lo, hi in spans])
    np.testing.assert_array_equal(surface, want_surface)
    np.testing.assert_array_equal(surface_flags, want_flags)
    vol_error = (half_spread + 0.5 * s["tick"]) / np.maximum(greeks[2], 1e-12)
    strikes2 = np.concatenate([strike, strike])
    want_bounds = [0]
    for e in range(bounds.size - 1):
        rows = np.arange(bounds[e], bounds[e + 1])
        points = np.concatenate([(rows + n)[fitted[rows + n]], rows[fitted[rows]]])
        lo, hi = want_bounds[-1], want_bounds[-1] + points.size
        want_bounds.append(hi)
        np.testing.assert_array_equal(fit_strike[lo:hi], strikes2[points])
        np.testing.assert_array_equal(fit_vol[lo:hi], vols[points])
        errors = vol_error[points]
        np.testing.assert_array_equal(fit_sqrt_w[lo:hi], np.median(errors) / errors)
        assert np.all(np.diff(fit_strike[lo:hi]) >= 0.0)  # strike order within the expiry
        listed = strike[bounds[e] : bounds[e + 1]]
        row = bounds[e] + int(np.argmin(np.abs(listed - forwards[e])))
        assert atm[0, e] == strike[row]
        clean = ((settled_flags[row] | settled_flags[n + row]) & kernels.IV_UNFIT) == 0
        np.testing.assert_array_equal(atm[1, e], mid[row] + mid[n + row] if clean else math.nan)
        want_atm = quoted_atm_iv(forwards[e], fit_strike[lo:hi], fit_vol[lo:hi], listed)
        assert (math.isnan(atm[2, e]) and want_atm is None) or atm[2, e] == pytest.approx(want_atm, rel=1e-15)
    assert fit_bounds.tolist() == want_bounds


@pytest.mark.parametrize("seed", range(200))
def test_quoted_atm_iv_is_its_reference(seed: int) -> None:
    """Random listed strikes with random gaps in the fit points and forwards on, between and beyond
    them: adjacent clean neighbours interpolate, a gap or a missing side gives none."""
    rng = np.random.default_rng(seed)
    strike = 24_000.0 + 50.0 * np.arange(12)
    keep = rng.random(12) < 0.7
    fit_k = strike[keep]
    fit_v = rng.uniform(0.1, 0.2, size=fit_k.size)
    forward = float(rng.choice([rng.uniform(23_950.0, 24_600.0), strike[rng.integers(12)]]))
    got = kernels._quoted_atm_iv(forward, fit_k, fit_v, strike)
    want = quoted_atm_iv(forward, fit_k, fit_v, strike)
    # Equal but for the last bit: the compiled interpolation may fuse a multiply-add.
    assert (math.isnan(got) and want is None) or got == pytest.approx(want, rel=1e-15)


def _strike_set(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k expiries' rising strikes side by side (windows of a 50-point grid that start anywhere, some
    with gaps), and their bounds."""
    parts = []
    for _ in range(k):
        grid = 20_000.0 + 50.0 * np.arange(rng.integers(0, 40), rng.integers(41, 90))
        parts.append(grid[rng.random(grid.size) < 0.85])
    bounds = np.array([0, *np.cumsum([part.size for part in parts])], dtype=np.int64)
    return np.concatenate(parts), bounds


@pytest.mark.parametrize("seed", SEEDS)
def test_iv_starts_pair_each_quote_with_the_same_quote_last_set(seed: int) -> None:
    rng = np.random.default_rng(seed)
    strike, bounds = _strike_set(rng, 5)
    previous_strike, previous_bounds = _strike_set(rng, 4)
    previous_vols = rng.uniform(0.05, 0.6, 2 * previous_strike.size)
    previous_vols[rng.random(previous_vols.size) < 0.1] = np.nan
    # Expiries that moved position, one that is new (-1).
    previous_expiry = np.array([2, 0, -1, 3, 1], dtype=np.int64)
    start = kernels.iv_starts(
        strike, bounds, previous_strike, previous_bounds, previous_vols, previous_expiry
    )

    n, previous_n = strike.size, previous_strike.size
    expected = np.full(2 * n, np.nan)
    for e, p in enumerate(previous_expiry):
        if p < 0:
            continue
        rows = {float(previous_strike[j]): j for j in range(previous_bounds[p], previous_bounds[p + 1])}
        for i in range(bounds[e], bounds[e + 1]):
            j = rows.get(float(strike[i]))
            if j is not None:
                expected[i] = previous_vols[j]
                expected[n + i] = previous_vols[previous_n + j]
    np.testing.assert_array_equal(start, expected)
    assert np.isfinite(start).sum() > 0.2 * start.size
