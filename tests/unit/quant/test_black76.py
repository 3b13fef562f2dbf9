"""Black-76 prices and Greeks: scalar twin, finite differences, parity, bounds, symmetry."""

from __future__ import annotations

import math

import numpy as np
import py_lets_be_rational
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volguard_common.quant import _reference, black76

GREEK_NAMES = ("delta", "gamma", "vega", "theta", "vanna", "volga", "charm")


def _grid(
    moneyness: np.ndarray, t: np.ndarray, vol: np.ndarray, forward: float = 24_000.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m, tt, v, c = np.meshgrid(moneyness, t, vol, np.array([True, False]), indexing="ij")
    return forward / m.ravel(), tt.ravel(), v.ravel(), c.ravel()


WIDE_STRIKE, WIDE_T, WIDE_VOL, WIDE_CALL = _grid(
    np.geomspace(0.5, 2.0, 17),
    np.array([1.0 / 525_600, 1.0 / 365, 7.0 / 365, 0.25, 1.0, 2.0]),
    np.geomspace(0.01, 3.0, 9),
)
# Well conditioned for finite differences: no option is a whisker from expiry or far in the wing.
FD_STRIKE, FD_T, FD_VOL, FD_CALL = _grid(
    np.geomspace(0.85, 1.2, 7), np.array([0.05, 0.25, 1.0]), np.array([0.08, 0.2, 0.5])
)
FORWARD = 24_000.0


def test_price_matches_scalar_twin() -> None:
    discount = 0.97
    fast = black76.price(FORWARD, WIDE_STRIKE, WIDE_T, WIDE_VOL, WIDE_CALL, discount)
    ref = np.array(
        [
            _reference.black76_price(FORWARD, k, t, v, bool(c), discount)
            for k, t, v, c in zip(WIDE_STRIKE, WIDE_T, WIDE_VOL, WIDE_CALL, strict=True)
        ]
    )
    # The naive twin is accurate in absolute terms (it subtracts index-sized numbers).
    np.testing.assert_allclose(fast, ref, rtol=0.0, atol=1e-11 * FORWARD)
    big = ref > 1e-3 * FORWARD
    assert big.sum() > 300
    np.testing.assert_allclose(fast[big], ref[big], rtol=1e-12)


def test_deep_wing_prices_keep_relative_accuracy() -> None:
    # Far OTM the naive F·N(d1) − K·N(d2) cancels to noise; LBR's normalised Black does not.
    strike, t, vol, call = WIDE_STRIKE, WIDE_T, WIDE_VOL, WIDE_CALL
    fast = black76.price(FORWARD, strike, t, vol, call)
    lbr = np.array(
        [
            py_lets_be_rational.black(FORWARD, k, v, tt, 1 if c else -1)
            for k, tt, v, c in zip(strike, t, vol, call, strict=True)
        ]
    )
    tiny = (lbr > 1e-250) & (lbr < 1e-6 * FORWARD)
    assert tiny.sum() > 50
    np.testing.assert_allclose(fast[tiny], lbr[tiny], rtol=1e-11)


def test_expired_or_zero_vol_is_discounted_intrinsic() -> None:
    strike = np.array([23_000.0, 24_000.0, 25_000.0])
    for t, vol in ((0.0, 0.2), (0.5, 0.0), (-0.1, 0.2)):
        calls = black76.price(FORWARD, strike, t, vol, True, 0.9)
        puts = black76.price(FORWARD, strike, t, vol, False, 0.9)
        np.testing.assert_array_equal(calls, 0.9 * np.array([1000.0, 0.0, 0.0]))
        np.testing.assert_array_equal(puts, 0.9 * np.array([0.0, 0.0, 1000.0]))


def test_put_call_parity() -> None:
    discount = 0.95
    calls = black76.price(FORWARD, WIDE_STRIKE, WIDE_T, WIDE_VOL, True, discount)
    puts = black76.price(FORWARD, WIDE_STRIKE, WIDE_T, WIDE_VOL, False, discount)
    np.testing.assert_allclose(
        calls - puts, discount * (FORWARD - WIDE_STRIKE), rtol=0.0, atol=1e-11 * FORWARD
    )


def test_greeks_match_scalar_twin() -> None:
    discount = 0.96
    g = black76.greeks(FORWARD, WIDE_STRIKE, WIDE_T, WIDE_VOL, WIDE_CALL, discount)
    refs = [
        _reference.black76_greeks(FORWARD, k, t, v, bool(c), discount)
        for k, t, v, c in zip(WIDE_STRIKE, WIDE_T, WIDE_VOL, WIDE_CALL, strict=True)
    ]
    for name in GREEK_NAMES:
        ref = np.array([r[name] for r in refs])
        fast = getattr(g, name)
        scale = np.max(np.abs(ref))
        np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-13 * scale, err_msg=name)


def _price(forward: np.ndarray | float, t: np.ndarray, vol: np.ndarray, rate: float) -> np.ndarray:
    return black76.price(forward, FD_STRIKE, t, vol, FD_CALL, np.exp(-rate * t))


@pytest.mark.parametrize("rate", [0.0, 0.07])
def test_greeks_match_central_differences(rate: float) -> None:
    t, vol = FD_T, FD_VOL
    g = black76.greeks(FORWARD, FD_STRIKE, t, vol, FD_CALL, np.exp(-rate * t))

    def greeks_at(
        forward: float | np.ndarray = FORWARD, tt: np.ndarray = t, v: np.ndarray = vol
    ) -> black76.Greeks:
        return black76.greeks(forward, FD_STRIKE, tt, v, FD_CALL, np.exp(-rate * tt))

    # Forward steps scale with the option's own width F·σ√t, so truncation error is alike everywhere.
    df = 2e-4 * FORWARD * vol * np.sqrt(t)
    dv = 1e-5
    dt = 1e-6
    fd = {
        "delta": (_price(FORWARD + df, t, vol, rate) - _price(FORWARD - df, t, vol, rate)) / (2 * df),
        "vega": (_price(FORWARD, t, vol + dv, rate) - _price(FORWARD, t, vol - dv, rate)) / (2 * dv),
        # Theta is d/d(calendar time) = −d/dt at fixed rate, so the discount moves with t too.
        "theta": -(_price(FORWARD, t + dt, vol, rate) - _price(FORWARD, t - dt, vol, rate)) / (2 * dt),
        "gamma": (greeks_at(forward=FORWARD + df).delta - greeks_at(forward=FORWARD - df).delta) / (2 * df),
        "vanna": (greeks_at(v=vol + dv).delta - greeks_at(v=vol - dv).delta) / (2 * dv),
        "volga": (greeks_at(v=vol + dv).vega - greeks_at(v=vol - dv).vega) / (2 * dv),
        "charm": -(greeks_at(tt=t + dt).delta - greeks_at(tt=t - dt).delta) / (2 * dt),
    }
    for name, approx in fd.items():
        exact = getattr(g, name)
        # Relative 1e-6, with an absolute floor for Greeks that cross zero inside the grid.
        floor = 1e-6 * np.max(np.abs(exact))
        np.testing.assert_allclose(exact, approx, rtol=1e-6, atol=floor, err_msg=name)


def test_gamma_matches_second_difference_of_price() -> None:
    # A second difference loses half the digits, so the step is larger and the tolerance looser.
    df = 3e-3 * FORWARD * FD_VOL * np.sqrt(FD_T)
    up = _price(FORWARD + df, FD_T, FD_VOL, 0.0)
    mid = _price(FORWARD, FD_T, FD_VOL, 0.0)
    down = _price(FORWARD - df, FD_T, FD_VOL, 0.0)
    gamma = black76.greeks(FORWARD, FD_STRIKE, FD_T, FD_VOL, FD_CALL).gamma
    np.testing.assert_allclose(gamma, (up - 2 * mid + down) / df**2, rtol=1e-5, atol=1e-6 * gamma.max())


def test_greek_signs_and_units() -> None:
    g = black76.greeks(FORWARD, np.array([24_000.0, 24_000.0]), 0.1, 0.15, np.array([True, False]))
    assert 0.0 < g.delta[0] < 1.0
    assert -1.0 < g.delta[1] < 0.0
    assert np.all(g.gamma > 0)
    assert np.all(g.vega > 0)
    # Long options lose value as calendar time passes (D = 1).
    assert np.all(g.theta < 0)
    np.testing.assert_allclose(black76.theta_per_day(g), g.theta / 365.0)
    np.testing.assert_allclose(black76.theta_per_day(g.theta, days_per_year=252.0), g.theta / 252.0)
    # Vega is per 1.00 of vol: a 1-point move changes the price by about vega/100.
    bump = black76.price(FORWARD, 24_000.0, 0.1, 0.16, True) - black76.price(
        FORWARD, 24_000.0, 0.1, 0.15, True
    )
    assert bump == pytest.approx(g.vega[0] / 100.0, rel=1e-3)


def test_greeks_at_expiry_are_kinks_not_numbers() -> None:
    strike = np.array([23_000.0, 24_000.0, 25_000.0])
    g = black76.greeks(FORWARD, strike, 0.0, 0.2, True)
    np.testing.assert_array_equal(g.delta, [1.0, 0.5, 0.0])
    for name in ("gamma", "vega", "vanna", "volga", "charm"):
        values = getattr(g, name)
        assert values[0] == 0.0, name
        assert values[2] == 0.0, name
        assert math.isnan(values[1]), name
    np.testing.assert_array_equal(g.theta, 0.0)


def test_broadcasting_and_scalars() -> None:
    strike = np.linspace(23_000.0, 25_000.0, 5)[:, None]
    t = np.array([0.02, 0.1, 0.5])[None, :]
    assert black76.price(FORWARD, strike, t, 0.2, True).shape == (5, 3)
    g = black76.greeks(FORWARD, strike, t, 0.2, np.array([True, False, True]))
    assert all(getattr(g, name).shape == (5, 3) for name in GREEK_NAMES)
    scalar = black76.price(FORWARD, 24_000.0, 0.1, 0.2, True)
    assert scalar.shape == ()
    assert scalar.dtype == np.float64


def test_spot_greeks_match_bsm_twin_and_differences() -> None:
    spot, rate, q = 24_000.0, 0.065, 0.012
    strike, t, vol, call = FD_STRIKE, FD_T, FD_VOL, FD_CALL
    sg = black76.spot_greeks(spot, strike, t, vol, call, rate, q)
    refs = [
        _reference.bsm_spot_greeks(spot, k, tt, v, bool(c), rate, q)
        for k, tt, v, c in zip(strike, t, vol, call, strict=True)
    ]
    for name in ("price", "delta", "gamma"):
        np.testing.assert_allclose(getattr(sg, name), [r[name] for r in refs], rtol=1e-10, err_msg=name)
    ds = 2e-4 * spot * vol * np.sqrt(t)
    up = black76.spot_greeks(spot + ds, strike, t, vol, call, rate, q)
    down = black76.spot_greeks(spot - ds, strike, t, vol, call, rate, q)
    np.testing.assert_allclose(sg.delta, (up.price - down.price) / (2 * ds), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        sg.gamma, (up.delta - down.delta) / (2 * ds), rtol=1e-6, atol=1e-6 * sg.gamma.max()
    )


option = st.tuples(
    st.floats(0.5, 2.0),  # forward / strike
    st.floats(1.0 / 525_600, 2.0),  # t
    st.floats(0.01, 3.0),  # vol
    st.booleans(),
    st.floats(0.8, 1.0),  # discount
)


@settings(max_examples=300, deadline=None)
@given(option, st.floats(0.01, 3.0))
def test_price_is_monotone_in_vol(opt: tuple[float, float, float, bool, float], other_vol: float) -> None:
    moneyness, t, vol, call, discount = opt
    low, high = sorted((vol, other_vol))
    strike = FORWARD / moneyness
    p_low = float(black76.price(FORWARD, strike, t, low, call, discount))
    p_high = float(black76.price(FORWARD, strike, t, high, call, discount))
    assert p_low <= p_high + 4e-16 * FORWARD


@settings(max_examples=300, deadline=None)
@given(option)
def test_price_within_no_arbitrage_bounds(opt: tuple[float, float, float, bool, float]) -> None:
    moneyness, t, vol, _, discount = opt
    strike = FORWARD / moneyness
    call = float(black76.price(FORWARD, strike, t, vol, True, discount))
    put = float(black76.price(FORWARD, strike, t, vol, False, discount))
    slack = 4e-16 * FORWARD
    assert max(discount * (FORWARD - strike), 0.0) - slack <= call <= discount * FORWARD + slack
    assert max(discount * (strike - FORWARD), 0.0) - slack <= put <= discount * strike + slack


@settings(max_examples=300, deadline=None)
@given(option, st.floats(0.01, 100.0))
def test_call_put_symmetry_and_homogeneity(
    opt: tuple[float, float, float, bool, float], scale: float
) -> None:
    moneyness, t, vol, call, discount = opt
    strike = FORWARD / moneyness
    # Swapping forward and strike turns a call into a put: C(F, K) = P(K, F).
    call_fk = float(black76.price(FORWARD, strike, t, vol, True, discount))
    put_kf = float(black76.price(strike, FORWARD, t, vol, False, discount))
    assert call_fk == pytest.approx(put_kf, rel=1e-12, abs=1e-12 * FORWARD)
    # Prices scale with the underlying: V(λF, λK) = λ·V(F, K).
    base = float(black76.price(FORWARD, strike, t, vol, call, discount))
    scaled = float(black76.price(scale * FORWARD, scale * strike, t, vol, call, discount))
    assert scaled == pytest.approx(scale * base, rel=1e-12, abs=1e-12 * scale * FORWARD)


def test_chain_greeks_are_greeks_per_option_and_unknown_without_a_vol() -> None:
    rng = np.random.default_rng(11)
    n = 64
    forward = np.full(n, 24_000.0)
    strike = 24_000.0 * rng.uniform(0.8, 1.2, n)
    t = rng.uniform(1.0, 90.0, n) / 365.0
    vol = rng.uniform(0.08, 0.4, n)
    vol[5] = np.nan
    is_call = rng.uniform(size=n) < 0.5
    discount = np.exp(-0.065 * t)
    block = black76.chain_greeks(forward, strike, t, vol, is_call, discount)
    reference = black76.greeks(forward, strike, t, vol, is_call, discount)
    assert block.shape == (4, n)
    for row, name in enumerate(black76.CHAIN_GREEK_ROWS):
        expected = getattr(reference, name)
        keep = ~np.isnan(vol)
        np.testing.assert_allclose(block[row][keep], expected[keep], rtol=1e-9, atol=1e-12)
        assert np.isnan(block[row][5])
    with pytest.raises(ValueError, match="one length"):
        black76.chain_greeks(forward, strike[:-1], t, vol, is_call, discount)


def test_chain_greeks_block_reads_the_iv_input_block_like_chain_greeks() -> None:
    rng = np.random.default_rng(12)
    n = 50
    t = rng.uniform(1.0, 90.0, n) / 365.0
    is_call = rng.uniform(size=n) < 0.5
    inputs = np.ascontiguousarray(
        np.vstack(
            [
                rng.uniform(1.0, 500.0, n),  # price: not read
                np.full(n, 24_000.0),
                24_000.0 * rng.uniform(0.8, 1.2, n),
                t,
                is_call.astype(np.float64),
                np.exp(-0.065 * t),
            ]
        )
    )
    vol = rng.uniform(0.08, 0.4, n)
    vol[3] = np.nan
    expected = black76.chain_greeks(inputs[1], inputs[2], inputs[3], vol, is_call, inputs[5])
    np.testing.assert_array_equal(black76.chain_greeks_block(inputs, vol), expected)
    with pytest.raises(ValueError, match="C-contiguous float64"):
        black76.chain_greeks_block(inputs[:5], vol)
    with pytest.raises(ValueError, match="C-contiguous float64"):
        black76.chain_greeks_block(inputs, vol[:-1])
    with pytest.raises(ValueError, match="C-contiguous float64"):
        black76.chain_greeks_block(np.asfortranarray(inputs), vol)
