"""Forward from put-call parity: exact on clean quotes, robust to stale ones, loud when impossible."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volguard_common.quant import _chain_kernels, _reference, black76, parity
from volguard_common.quant.parity import forward_from_parity

STRIKES = np.arange(22_000.0, 26_050.0, 50.0)
TRUE_FORWARD = 24_013.7
DISCOUNT = 0.994


def _mids(forward: float = TRUE_FORWARD, t: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    vol = 0.13 + 0.5 * np.log(STRIKES / forward) ** 2
    calls = black76.price(forward, STRIKES, t, vol, True, DISCOUNT)
    puts = black76.price(forward, STRIKES, t, vol, False, DISCOUNT)
    return calls, puts


def test_clean_quotes_give_the_forward() -> None:
    calls, puts = _mids()
    forward, quality = forward_from_parity(STRIKES, calls, puts, DISCOUNT)
    assert forward == pytest.approx(TRUE_FORWARD, abs=1e-8)
    assert quality.n_used == 5
    assert quality.n_rejected == 0
    assert quality.dispersion < 1e-8
    assert quality.score == pytest.approx(1.0, abs=1e-6)


def test_stale_quote_near_the_money_is_rejected() -> None:
    calls, puts = _mids()
    atm = int(np.argmin(np.abs(STRIKES - TRUE_FORWARD)))
    calls[atm] += 40.0  # a call mid left behind after a 40-point move
    forward, quality = forward_from_parity(STRIKES, calls, puts, DISCOUNT, n_strikes=7)
    assert quality.n_rejected >= 1
    assert forward == pytest.approx(TRUE_FORWARD, abs=1e-6)
    assert quality.score < 1.0


def test_noisy_mids_average_out_and_lower_the_score() -> None:
    rng = np.random.default_rng(7)
    calls, puts = _mids()
    calls = calls + rng.normal(0.0, 1.0, calls.size)
    puts = puts + rng.normal(0.0, 1.0, puts.size)
    forward, quality = forward_from_parity(STRIKES, calls, puts, DISCOUNT, n_strikes=9)
    assert abs(forward - TRUE_FORWARD) < 2.0
    assert 0.0 < quality.score < 0.9
    assert quality.dispersion > 0.3


def test_missing_and_non_positive_quotes_are_skipped() -> None:
    calls, puts = _mids()
    near = np.argsort(np.abs(STRIKES - TRUE_FORWARD))[:4]
    calls[near[0]] = np.nan
    puts[near[1]] = 0.0
    calls[near[2]] = -3.0
    forward, quality = forward_from_parity(STRIKES, calls, puts, DISCOUNT)
    assert forward == pytest.approx(TRUE_FORWARD, abs=1e-8)
    assert quality.n_used == 5


def test_single_usable_strike_is_used_but_scored_low() -> None:
    calls, puts = _mids()
    calls[:] = np.nan
    calls[40] = float(black76.price(TRUE_FORWARD, STRIKES[40], 0.05, 0.13, True, DISCOUNT))
    puts[40] = float(black76.price(TRUE_FORWARD, STRIKES[40], 0.05, 0.13, False, DISCOUNT))
    forward, quality = forward_from_parity(STRIKES, calls, puts, DISCOUNT)
    assert forward == pytest.approx(TRUE_FORWARD, abs=1e-8)
    assert quality.n_used == 1
    assert quality.dispersion == 0.0
    assert quality.score <= 1.0 / 3.0


def test_no_usable_pair_raises() -> None:
    calls, puts = _mids()
    with pytest.raises(ValueError, match="no strike has both a call and a put quote"):
        forward_from_parity(STRIKES, np.full_like(calls, np.nan), puts, DISCOUNT)
    with pytest.raises(ValueError, match="no strike has both"):
        forward_from_parity([], [], [], DISCOUNT)


@pytest.mark.parametrize("discount", [0.0, -0.5, math.nan, math.inf])
def test_bad_discount_raises(discount: float) -> None:
    calls, puts = _mids()
    with pytest.raises(ValueError, match="discount factor"):
        forward_from_parity(STRIKES, calls, puts, discount)


def test_misaligned_inputs_raise() -> None:
    calls, puts = _mids()
    with pytest.raises(ValueError, match="differ in length"):
        forward_from_parity(STRIKES, calls[:-1], puts, DISCOUNT)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(23_000.0, 25_000.0),
    st.floats(0.0, 3.0),
    st.integers(0, 2**32 - 1),
    st.integers(1, 9),
)
def test_matches_scalar_twin(forward: float, noise: float, seed: int, n_strikes: int) -> None:
    rng = np.random.default_rng(seed)
    calls, puts = _mids(forward)
    calls = calls + rng.normal(0.0, noise, calls.size)
    puts = puts + rng.normal(0.0, noise, puts.size)
    drop = rng.random(calls.size) < 0.2
    calls[drop] = np.nan
    fast, quality = forward_from_parity(STRIKES, calls, puts, DISCOUNT, n_strikes=n_strikes)
    slow, n_used = _reference.forward_from_parity(
        STRIKES.tolist(), calls.tolist(), puts.tolist(), DISCOUNT, n_strikes=n_strikes
    )
    assert fast == pytest.approx(slow, rel=1e-13)
    assert quality.n_used == n_used
    assert 0.0 <= quality.score <= 1.0


# --- several expiries in one compiled pass ----------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_expiries=st.integers(1, 6))
def test_forwards_from_parity_matches_the_single_expiry_function(seed: int, n_expiries: int) -> None:
    rng = np.random.default_rng(seed)
    strikes, calls, puts, bounds, discounts = [], [], [], [0], []
    for _ in range(n_expiries):
        forward = float(rng.uniform(22_500.0, 25_500.0))
        t = float(rng.uniform(0.002, 0.3))
        discount = math.exp(-0.065 * t)
        k = STRIKES[rng.integers(0, 10) : STRIKES.size - rng.integers(0, 10)]
        vol = 0.13 + 0.5 * np.log(k / forward) ** 2
        c = black76.price(forward, k, t, vol, True, discount) + rng.normal(0.0, 0.5, k.size)
        p = black76.price(forward, k, t, vol, False, discount) + rng.normal(0.0, 0.5, k.size)
        # Missing and non-positive quotes (skipped), stale ones (outliers), and now and then an expiry
        # with no two-sided strike at all.
        c[rng.random(k.size) < 0.1] = np.nan
        p[rng.random(k.size) < 0.1] = -1.0
        c[rng.random(k.size) < 0.05] += 40.0
        if rng.random() < 0.15:
            c[:] = np.nan
        strikes.append(k)
        calls.append(c)
        puts.append(p)
        bounds.append(bounds[-1] + k.size)
        discounts.append(discount)
    n_strikes = int(rng.integers(1, 8))
    batch = parity.forwards_from_parity(
        np.concatenate(strikes), np.concatenate(calls), np.concatenate(puts), bounds, discounts, n_strikes
    )
    assert len(batch) == n_expiries
    for e, result in enumerate(batch):
        try:
            expected = forward_from_parity(strikes[e], calls[e], puts[e], discounts[e], n_strikes)
        except ValueError:
            assert result is None
            continue
        assert result is not None
        forward, quality = result
        assert forward == pytest.approx(expected[0], rel=1e-14)
        assert quality.n_used == expected[1].n_used
        assert quality.n_rejected == expected[1].n_rejected
        assert quality.dispersion == pytest.approx(expected[1].dispersion, rel=1e-9, abs=1e-9)
        assert quality.score == pytest.approx(expected[1].score, rel=1e-12)


def test_forwards_from_parity_rejects_inconsistent_segments() -> None:
    calls, puts = _mids()
    with pytest.raises(ValueError, match="bounds"):
        parity.forwards_from_parity(STRIKES, calls, puts, [0, 10], [DISCOUNT])
    with pytest.raises(ValueError, match="discount"):
        parity.forwards_from_parity(STRIKES, calls, puts, [0, 10, STRIKES.size], [DISCOUNT])


def test_prepared_results_are_the_kernel_rows_as_plain_values() -> None:
    """Each expiry's (forward, quality) is its row of the compiled pass as Python values, the counts
    as ints, and None for an expiry without a two-sided strike; a quality cannot be changed."""
    rng = np.random.default_rng(11)
    calls, puts = _mids()
    noisy = calls + rng.normal(0.0, 1.0, calls.size)
    noisy[int(np.argmin(np.abs(STRIKES - TRUE_FORWARD)))] += 40.0  # a stale quote at the money: rejected
    strikes = np.concatenate([STRIKES] * 3)
    call_mid = np.concatenate([calls, np.full_like(calls, np.nan), noisy])
    put_mid = np.concatenate([puts] * 3)
    usable = np.isfinite(call_mid) & (call_mid > 0.0) & (put_mid > 0.0)
    bounds = np.arange(4, dtype=np.int64) * STRIKES.size
    discounts = np.array([DISCOUNT, DISCOUNT, 0.99])
    rows = _chain_kernels.parity_segments(
        strikes, call_mid, put_mid, usable, bounds, discounts, 7, 3.5, parity._MAD_TO_SIGMA,
        parity._SCALE_FLOOR, parity._DISPERSION_HALF_SCORE, parity._STRIKES_FOR_FULL_SCORE,
    )  # fmt: skip
    got = parity.forwards_from_parity_prepared(strikes, call_mid, put_mid, usable, bounds, discounts, 7)
    assert got[1] is None
    assert len(got) == 3
    for result, row in zip([got[0], got[2]], rows[[0, 2]].tolist(), strict=True):
        assert result is not None
        forward, quality = result
        assert (forward, quality.score, quality.n_used, quality.n_rejected, quality.dispersion) == tuple(row)
        assert type(forward) is float
        assert type(quality.n_used) is int
        assert type(quality.n_rejected) is int
        with pytest.raises(AttributeError):
            quality.score = 1.0  # type: ignore[misc]
    assert got[2] is not None
    assert got[2][1].n_rejected >= 1
