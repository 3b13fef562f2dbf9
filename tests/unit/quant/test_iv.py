"""Implied vol: round trip to 1e-10, agreement with Let's Be Rational, honest NaNs out of bounds."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import py_lets_be_rational
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_lets_be_rational.exceptions import AboveMaximumException, BelowIntrinsicException

from volguard_common.quant import _iv_kernels, _reference, black76, iv
from volguard_common.quant.iv import IVStatus

FORWARD = 24_000.0
ONE_MINUTE = 1.0 / (365 * 24 * 60)
EPS = float(np.finfo(np.float64).eps)


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    moneyness = np.geomspace(0.5, 2.0, 41)  # forward / strike
    t = np.array([ONE_MINUTE, 1.0 / (365 * 24), 1.0 / 365, 7.0 / 365, 30.0 / 365, 0.25, 1.0, 2.0])
    vol = np.geomspace(0.01, 3.0, 25)
    m, tt, v, c = np.meshgrid(moneyness, t, vol, np.array([True, False]), indexing="ij")
    return FORWARD / m.ravel(), tt.ravel(), v.ravel(), c.ravel()


STRIKE, T, VOL, CALL = _grid()


def _identifiable(price: np.ndarray, vega: np.ndarray) -> np.ndarray:
    """Where the price determines the vol in float64.

    Excluded, because no solver can recover a vol there: prices below 1e-12 of the forward (the far
    wing at one minute is 1e-300 or exactly 0), and prices where one ulp moves the vol by more than
    1e-12 — deep ITM options whose time value is lost in the last bits of the intrinsic value, for
    which every vol from 0 to some threshold gives the same float.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_per_ulp = EPS * price / vega
    return (price > 1e-12 * FORWARD) & (vol_per_ulp < 1e-12)


@pytest.mark.parametrize("discount", [1.0, 0.93])
def test_round_trip_within_1e10_wherever_the_price_carries_the_vol(discount: float) -> None:
    price = black76.price(FORWARD, STRIKE, T, VOL, CALL, discount)
    vega = black76.greeks(FORWARD, STRIKE, T, VOL, CALL, discount).vega
    domain = _identifiable(price, vega)
    # The domain is not a token one: over a third of a grid that is mostly one-minute-to-one-day
    # wings, and it reaches every corner people worry about.
    assert domain.mean() > 0.35
    for corner in (
        T == ONE_MINUTE,
        T == 2.0,
        VOL == 0.01,
        VOL == 3.0,
        STRIKE == 2 * FORWARD,
        STRIKE == 0.5 * FORWARD,
    ):
        assert (domain & corner).sum() > 20

    vol, status = iv.implied_vol_and_status(price, FORWARD, STRIKE, T, CALL, discount)
    assert np.all(status[domain] == IVStatus.OK)
    assert np.max(np.abs(vol[domain] - VOL[domain])) <= 1e-10


def test_outside_the_domain_a_vol_is_either_nan_or_reproduces_the_price() -> None:
    price = black76.price(FORWARD, STRIKE, T, VOL, CALL)
    vega = black76.greeks(FORWARD, STRIKE, T, VOL, CALL).vega
    outside = ~_identifiable(price, vega)
    vol, status = iv.implied_vol_and_status(price, FORWARD, STRIKE, T, CALL)
    assert outside.sum() > 100
    solved = outside & (status == IVStatus.OK)
    assert np.all(np.isnan(vol[outside & ~solved]))
    repriced = black76.price(FORWARD, STRIKE[solved], T[solved], vol[solved], CALL[solved])
    np.testing.assert_allclose(repriced, price[solved], rtol=1e-12, atol=4 * EPS * FORWARD)
    # Unsolvable ones say why: the time value is not representable, or there is no price at all.
    reasons = set(np.unique(status[outside & ~solved]).tolist())
    assert reasons <= {IVStatus.NO_TIME_VALUE, IVStatus.NON_POSITIVE_PRICE}


def test_agrees_with_lets_be_rational() -> None:
    rng = np.random.default_rng(20_240_601)
    pick = rng.choice(STRIKE.size, size=1500, replace=False)
    strike, t, true_vol, call = STRIKE[pick], T[pick], VOL[pick], CALL[pick]
    discount = np.exp(-0.065 * t)
    price = black76.price(FORWARD, strike, t, true_vol, call, discount)
    vega = black76.greeks(FORWARD, strike, t, true_vol, call, discount).vega
    domain = _identifiable(price, vega)
    ours = iv.implied_vol(price, FORWARD, strike, t, call, discount)
    compared = 0
    for i in np.flatnonzero(domain):
        try:
            theirs = py_lets_be_rational.implied_volatility_from_a_transformed_rational_guess(
                price[i] / discount[i], FORWARD, strike[i], t[i], 1.0 if call[i] else -1.0
            )
        except (BelowIntrinsicException, AboveMaximumException):
            continue
        if not (math.isfinite(theirs) and 0.0 < theirs < 1e3):
            continue
        compared += 1
        assert ours[i] == pytest.approx(theirs, abs=1e-10), (strike[i], t[i], true_vol[i], call[i])
    assert compared > 0.9 * domain.sum()


def test_agrees_with_scalar_bisection_twin() -> None:
    strike = np.array([22_800.0, 22_500.0, 24_000.0, 24_050.0, 26_000.0, 28_000.0])
    t = np.array([2.0 / 365, 0.05, 0.25, 7.0 / 365, 0.5, 1.0])
    vol = np.array([0.35, 0.18, 0.12, 0.14, 0.22, 0.4])
    for call in (True, False):
        price = black76.price(FORWARD, strike, t, vol, call, 0.98)
        assert np.all(_identifiable(price, black76.greeks(FORWARD, strike, t, vol, call, 0.98).vega))
        fast = iv.implied_vol(price, FORWARD, strike, t, call, 0.98)
        slow = [
            _reference.implied_vol(p, FORWARD, k, tt, call, 0.98)
            for p, k, tt in zip(price.tolist(), strike.tolist(), t.tolist(), strict=True)
        ]
        np.testing.assert_allclose(fast, slow, rtol=0.0, atol=1e-10)


@pytest.mark.parametrize(
    ("price", "strike", "t", "call", "expected"),
    [
        (900.0, 23_000.0, 0.1, True, IVStatus.BELOW_INTRINSIC),  # call intrinsic 1000
        (999.0, 25_000.0, 0.1, False, IVStatus.BELOW_INTRINSIC),
        (24_000.0, 23_000.0, 0.1, True, IVStatus.ABOVE_UPPER_BOUND),  # call ≤ F
        (24_500.0, 23_000.0, 0.1, True, IVStatus.ABOVE_UPPER_BOUND),
        (25_000.0, 25_000.0, 0.1, False, IVStatus.ABOVE_UPPER_BOUND),  # put ≤ K
        (100.0, 24_000.0, 0.0, True, IVStatus.ZERO_TIME),
        (100.0, 24_000.0, -0.01, False, IVStatus.ZERO_TIME),
        (0.0, 26_000.0, 0.1, True, IVStatus.NON_POSITIVE_PRICE),
        (-1.0, 26_000.0, 0.1, True, IVStatus.NON_POSITIVE_PRICE),
        (100.0, 0.0, 0.1, True, IVStatus.NON_POSITIVE_FORWARD_OR_STRIKE),
        (1000.0, 23_000.0, 0.1, True, IVStatus.NO_TIME_VALUE),  # exactly intrinsic
        (math.nan, 24_000.0, 0.1, True, IVStatus.INVALID_INPUT),
        (100.0, 24_000.0, math.inf, True, IVStatus.INVALID_INPUT),
    ],
)
def test_out_of_bounds_prices_give_nan_and_the_reason(
    price: float, strike: float, t: float, call: bool, expected: IVStatus
) -> None:
    vol, status = iv.implied_vol_and_status(price, FORWARD, strike, t, call)
    assert math.isnan(float(vol))
    assert int(status) == expected
    assert int(iv.implied_vol_status(price, FORWARD, strike, t, call)) == expected
    assert math.isnan(float(iv.implied_vol(price, FORWARD, strike, t, call)))


def test_discount_enters_the_bounds() -> None:
    # Undiscounted 1000 is intrinsic for K = 23,000; discounted by 0.9 the bound is 900.
    assert int(iv.implied_vol_status(950.0, FORWARD, 23_000.0, 0.1, True, 0.9)) == IVStatus.OK
    assert int(iv.implied_vol_status(850.0, FORWARD, 23_000.0, 0.1, True, 0.9)) == IVStatus.BELOW_INTRINSIC
    assert int(iv.implied_vol_status(100.0, FORWARD, 23_000.0, 0.1, True, 0.0)) == IVStatus.INVALID_INPUT


def test_mixed_chain_keeps_shape_and_solves_the_good_ones() -> None:
    strike = np.array([[23_000.0, 24_000.0, 25_000.0], [23_000.0, 24_000.0, 25_000.0]])
    call = np.array([[True], [False]])
    price = black76.price(FORWARD, strike, 0.1, 0.2, call)
    price[0, 1] = -5.0
    price[1, 2] = 0.5  # put with intrinsic 1000
    vol, status = iv.implied_vol_and_status(price, FORWARD, strike, 0.1, call)
    assert vol.shape == status.shape == (2, 3)
    expected = np.array([[IVStatus.OK, IVStatus.NON_POSITIVE_PRICE, IVStatus.OK], [IVStatus.OK] * 2 + [1]])
    np.testing.assert_array_equal(status, expected)
    good = status == IVStatus.OK
    np.testing.assert_allclose(vol[good], 0.2, atol=1e-13)
    assert np.all(np.isnan(vol[~good]))


def test_calls_and_puts_at_one_strike_give_one_vol() -> None:
    strike = np.linspace(20_000.0, 28_000.0, 33)
    calls = black76.price(FORWARD, strike, 0.08, 0.17, True, 0.99)
    puts = black76.price(FORWARD, strike, 0.08, 0.17, False, 0.99)
    vol_c = iv.implied_vol(calls, FORWARD, strike, 0.08, True, 0.99)
    vol_p = iv.implied_vol(puts, FORWARD, strike, 0.08, False, 0.99)
    np.testing.assert_allclose(vol_c, vol_p, atol=1e-11)


@settings(max_examples=400, deadline=None)
@given(
    st.floats(0.5, 2.0),
    st.floats(ONE_MINUTE, 2.0),
    st.booleans(),
    st.floats(1e-6, 1.0 - 1e-6),
    st.floats(0.5, 1.0),
)
def test_any_price_inside_the_bounds_is_solved_or_flagged(
    moneyness: float, t: float, call: bool, fraction: float, discount: float
) -> None:
    strike = FORWARD / moneyness
    intrinsic = max(FORWARD - strike, 0.0) if call else max(strike - FORWARD, 0.0)
    upper = FORWARD if call else strike
    price = discount * (intrinsic + fraction * (upper - intrinsic))
    vol, status = iv.implied_vol_and_status(price, FORWARD, strike, t, call, discount)
    if int(status) == IVStatus.OK:
        # Never a made-up number: the vol returned reprices the quote.
        repriced = float(black76.price(FORWARD, strike, t, float(vol), call, discount))
        assert repriced == pytest.approx(price, rel=1e-11, abs=8 * EPS * FORWARD)
    else:
        assert math.isnan(float(vol))
        assert int(status) in (IVStatus.NO_TIME_VALUE, IVStatus.ABOVE_UPPER_BOUND)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.5, 2.0), st.floats(ONE_MINUTE, 2.0), st.floats(0.01, 3.0), st.booleans())
def test_round_trip_property(moneyness: float, t: float, vol: float, call: bool) -> None:
    strike = FORWARD / moneyness
    price = black76.price(FORWARD, strike, t, vol, call)
    vega = black76.greeks(FORWARD, strike, t, vol, call).vega
    if not bool(_identifiable(np.atleast_1d(price), np.atleast_1d(vega))[0]):
        return
    assert float(iv.implied_vol(price, FORWARD, strike, t, call)) == pytest.approx(vol, abs=1e-10)


def _twin_grid() -> tuple[np.ndarray, ...]:
    """Random options over the whole domain: wings to |ln F/K| = 3 and s = σ√t from 1e-5 to 8, some
    priced from a vol, some anywhere between the bounds, and a sprinkling of invalid quotes."""
    rng = np.random.default_rng(20_250_117)
    n = 60_000
    strike = FORWARD * np.exp(rng.uniform(-3.0, 3.0, n))
    t = np.exp(rng.uniform(math.log(ONE_MINUTE), math.log(5.0), n))
    vol = np.exp(rng.uniform(math.log(0.003), math.log(4.0), n))
    call = rng.random(n) < 0.5
    discount = rng.uniform(0.5, 1.0, n)
    price = black76.price(FORWARD, strike, t, vol, call, discount)
    # A third: any price between intrinsic and the upper bound, which reaches regions a vol grid
    # samples thinly (near the upper bound, time value a few ulps above intrinsic).
    anywhere = rng.random(n) < 1.0 / 3.0
    intrinsic = np.where(call, np.maximum(FORWARD - strike, 0.0), np.maximum(strike - FORWARD, 0.0))
    upper = np.where(call, FORWARD, strike)
    fraction = np.exp(rng.uniform(math.log(1e-14), 0.0, n))
    price = np.where(anywhere, discount * (intrinsic + fraction * (upper - intrinsic)), price)
    bad = rng.choice(n, 600, replace=False)
    price[bad[:100]] = np.nan
    price[bad[100:200]] = -1.0
    price[bad[200:300]] = 0.5 * discount[bad[200:300]] * intrinsic[bad[200:300]]
    price[bad[300:400]] = 1.01 * discount[bad[300:400]] * upper[bad[300:400]]
    t[bad[400:500]] = 0.0
    discount[bad[500:550]] = -0.1
    strike[bad[550:]] = 0.0
    return price, strike, t, call, discount


def test_compiled_kernel_agrees_with_its_numpy_twin() -> None:
    price, strike, t, call, discount = _twin_grid()
    vol, status = iv.implied_vol_and_status(price, FORWARD, strike, t, call, discount)
    twin_vol, twin_status = iv._implied_vol_and_status_numpy(price, FORWARD, strike, t, call, discount)

    np.testing.assert_array_equal(status, twin_status)
    # Every status is exercised, and most options are solved.
    assert set(np.unique(status).tolist()) >= {int(code) for code in IVStatus} - {IVStatus.NOT_CONVERGED}
    ok = status == IVStatus.OK
    assert ok.mean() > 0.5
    assert np.array_equal(np.isnan(vol), ~ok)
    assert np.array_equal(np.isnan(twin_vol), ~ok)

    # Where the price carries the vol with room to spare (above 1e-12 of the forward, one ulp moving
    # the vol by less than 1e-14) the two agree to 1e-12. Elsewhere each loses digits to its own
    # erfc (scipy's and libm's round differently far in the tail) and both must reprice instead.
    vega = black76.greeks(FORWARD, strike[ok], t[ok], twin_vol[ok], call[ok], discount[ok]).vega
    with np.errstate(divide="ignore", invalid="ignore"):
        well_posed = (price[ok] > 1e-12 * FORWARD) & (EPS * price[ok] / vega < 1e-14)
    assert well_posed.mean() > 0.3
    ours, twin = vol[ok][well_posed], twin_vol[ok][well_posed]
    # Vols above 500 % come from arbitrary prices at minute expiries: there 1e-12 is a few ulps, so
    # they are held to 1e-13 relative instead.
    usual = twin <= 5.0
    assert usual.mean() > 0.6
    np.testing.assert_allclose(ours[usual], twin[usual], rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(ours[~usual], twin[~usual], rtol=1e-13, atol=0.0)
    repriced = black76.price(FORWARD, strike[ok], t[ok], vol[ok], call[ok], discount[ok])
    np.testing.assert_allclose(repriced, price[ok], rtol=1e-11, atol=8 * EPS * FORWARD)


def test_kernel_status_codes_are_the_public_ones() -> None:
    # The compiled kernel carries its own copy of the codes (numba's cache cannot see iv.py change).
    assert {code.name: code.value for code in IVStatus} == _iv_kernels.STATUS_CODES


def test_any_dtype_layout_or_write_flag_gives_the_same_vols() -> None:
    strike = np.linspace(20_000.0, 28_000.0, 40)
    price = black76.price(FORWARD, strike, 0.05, 0.2, True)
    expected = iv.implied_vol(price, FORWARD, strike, 0.05, True)
    frozen = np.repeat(price, 2)[::2]  # strided view
    frozen.flags.writeable = False
    as_ints = np.full(40, 1)  # is_call given as 1
    np.testing.assert_array_equal(iv.implied_vol(frozen, FORWARD, strike, 0.05, as_ints), expected)
    np.testing.assert_array_equal(
        iv.implied_vol(price.tolist(), FORWARD, strike.tolist(), 0.05, True), expected
    )
    empty_vol, empty_status = iv.implied_vol_and_status(np.empty((0, 3)), FORWARD, 24_000.0, 0.1, True)
    assert empty_vol.shape == empty_status.shape == (0, 3)


def test_importing_iv_neither_imports_numba_nor_compiles() -> None:
    code = "import sys, volguard_common.quant.iv; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_kernels_still_compile_when_no_cache_directory_is_writable() -> None:
    # A function defined by exec has no source file, so numba has nowhere to cache it: the same
    # situation as a read-only install with no writable home directory.
    namespace: dict[str, object] = {}
    exec("def double(x):\n    return 2.0 * x\n", namespace)
    with pytest.warns(RuntimeWarning, match="compile on every start"):
        double = _iv_kernels._compiled(namespace["double"])  # type: ignore[arg-type]
    assert double(1.5) == 3.0


def _block(
    price: np.ndarray, strike: np.ndarray, t: np.ndarray, call: np.ndarray, discount: np.ndarray
) -> np.ndarray:
    return np.ascontiguousarray(
        np.stack([price, np.full(price.size, FORWARD), strike, t, call.astype(np.float64), discount])
    )


@pytest.mark.parametrize(
    "move",
    [0.0, 1e-4, 1e-2, 0.1],
    ids=["same", "a second's move", "a jump", "a crash"],
)
def test_a_start_gives_the_cold_vols_and_statuses(move: float) -> None:
    """Started from the answer moved by `move` (relative, either way), every option comes out as the
    cold solve has it: the same status, and a vol as close as the cold kernel is to its twin."""
    price, strike, t, call, discount = _twin_grid()
    inputs = _block(price, strike, t, call, discount)
    cold_vol, cold_status = iv.implied_vol_and_status_block(inputs)
    rng = np.random.default_rng(7)
    start = cold_vol * (1.0 + move * rng.uniform(-1.0, 1.0, cold_vol.size))
    vol, status = iv.implied_vol_and_status_block(inputs, start)

    np.testing.assert_array_equal(status, cold_status)
    ok = status == IVStatus.OK
    assert np.array_equal(np.isnan(vol), ~ok)
    vega = black76.greeks(FORWARD, strike[ok], t[ok], cold_vol[ok], call[ok], discount[ok]).vega
    with np.errstate(divide="ignore", invalid="ignore"):
        well_posed = (price[ok] > 1e-12 * FORWARD) & (EPS * price[ok] / vega < 1e-14)
    ours, cold = vol[ok][well_posed], cold_vol[ok][well_posed]
    usual = cold <= 5.0
    np.testing.assert_allclose(ours[usual], cold[usual], rtol=0.0, atol=1e-12)
    np.testing.assert_allclose(ours[~usual], cold[~usual], rtol=1e-13, atol=0.0)
    repriced = black76.price(FORWARD, strike[ok], t[ok], vol[ok], call[ok], discount[ok])
    np.testing.assert_allclose(repriced, price[ok], rtol=1e-11, atol=8 * EPS * FORWARD)


def test_useless_starts_are_solved_cold() -> None:
    price, strike, t, call, discount = _twin_grid()
    inputs = _block(price, strike, t, call, discount)
    cold_vol, cold_status = iv.implied_vol_and_status_block(inputs)
    ok = cold_status == IVStatus.OK
    for start in (
        np.full(price.size, np.nan),
        np.zeros(price.size),
        np.full(price.size, -0.2),
        np.full(price.size, np.inf),
        # Starts far from the answer, some where b is flat in s: the steps do not settle, or settle
        # only where b really is β.
        cold_vol * 10.0,
        cold_vol * 0.1,
        np.exp(np.random.default_rng(11).uniform(math.log(1e-4), math.log(50.0), price.size)),
        np.where(np.arange(price.size) % 2 == 0, cold_vol, np.nan),
    ):
        vol, status = iv.implied_vol_and_status_block(inputs, start)
        np.testing.assert_array_equal(status, cold_status)
        repriced = black76.price(FORWARD, strike[ok], t[ok], vol[ok], call[ok], discount[ok])
        np.testing.assert_allclose(repriced, price[ok], rtol=1e-11, atol=8 * EPS * FORWARD)


def test_a_start_must_be_one_float64_vol_per_option() -> None:
    inputs = _block(*(np.array([x]) for x in (100.0, 24_000.0, 0.1)), np.array([True]), np.array([1.0]))
    for bad in (np.array([0.2, 0.2]), np.array([1], dtype=np.int64), np.array([[0.2]])):
        with pytest.raises(ValueError, match="one vol per option"):
            iv.implied_vol_and_status_block(inputs, bad)
