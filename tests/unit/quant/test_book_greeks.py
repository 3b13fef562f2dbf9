"""Book Greeks in limit units against textbook Greeks and against bumping the book's value."""

from __future__ import annotations

import math

import pytest

from volguard_common.quant import _reference as ref
from volguard_common.quant import sabr
from volguard_common.quant.book_greeks import BookGreeks, book_greeks
from volguard_common.quant.stress import OptionLeg
from volguard_common.settings import Settings

SPOT = 24_000.0
FORWARD = 24_010.0
T = 7 / 365
DISCOUNT = math.exp(-0.065 * T)
SMILE = sabr.SabrFit(
    alpha=sabr.alpha_from_atm(0.13, FORWARD, T, 0.5, -0.35, 1.2),
    beta=0.5,
    rho=-0.35,
    nu=1.2,
    rmse=0.0,
    converged=True,
    iterations=0,
    n_points=20,
    n_outliers=0,
)


def leg(strike: float, is_call: bool, quantity: float) -> OptionLeg:
    vol = sabr.smile_vol(FORWARD, strike, T, SMILE)
    return OptionLeg(strike, T, is_call, quantity, vol, FORWARD, DISCOUNT)


def condor(lots: int) -> list[OptionLeg]:
    q = 65.0 * lots
    return [leg(23_000, False, q), leg(23_400, False, -q), leg(24_600, True, -q), leg(25_000, True, q)]


def strangle(lots: int) -> list[OptionLeg]:
    q = 65.0 * lots
    return [leg(23_400, False, -q), leg(24_600, True, -q)]


def book_value(legs: list[OptionLeg], spot: float, vol_shift: float = 0.0, days: float = 0.0) -> float:
    """Rupee value with the forwards moved in percent with the index and the rate held."""
    total = 0.0
    for x in legs:
        t = x.t - days / 365
        discount = math.exp(math.log(x.discount) * t / x.t)
        forward = x.forward * spot / SPOT
        total += x.quantity * ref.black76_price(forward, x.strike, t, x.vol + vol_shift, x.is_call, discount)
    return total


def test_the_sums_match_textbook_greeks_leg_by_leg() -> None:
    legs = condor(1)
    expected = BookGreeks(0.0, 0.0, 0.0, 0.0)
    for x in legs:
        g = ref.black76_greeks(x.forward, x.strike, x.t, x.vol, x.is_call, x.discount)
        carry = x.forward / SPOT
        expected += BookGreeks(
            delta=x.quantity * g["delta"] * carry,
            gamma=x.quantity * g["gamma"] * carry**2 * 0.01 * SPOT,
            vega=x.quantity * g["vega"] / 100,
            theta=x.quantity * g["theta"] / 365,
        )
    got = book_greeks(legs, SPOT)
    for name in ("delta", "gamma", "vega", "theta"):
        assert getattr(got, name) == pytest.approx(getattr(expected, name), rel=1e-8, abs=1e-8)


def test_units_are_what_the_limits_say() -> None:
    legs = strangle(1)
    got = book_greeks(legs, SPOT)
    h = 0.5
    # Delta: rupees per index point = NIFTY units.
    delta_up = (book_value(legs, SPOT + h) - book_value(legs, SPOT - h)) / (2 * h)
    assert got.delta == pytest.approx(delta_up, rel=1e-4, abs=1e-3)

    # Gamma: the change of that delta over a 1 % move (central, small enough to stay local).
    def delta_at(spot: float) -> float:
        return (book_value(legs, spot + h) - book_value(legs, spot - h)) / (2 * h)

    one_pct = 0.01 * SPOT
    gamma_fd = (delta_at(SPOT + 0.01 * one_pct) - delta_at(SPOT - 0.01 * one_pct)) / 0.02
    assert got.gamma == pytest.approx(gamma_fd, rel=1e-3)
    # Vega: rupees for one vol point.
    vega_fd = (book_value(legs, SPOT, 0.0005) - book_value(legs, SPOT, -0.0005)) / 0.1
    assert got.vega == pytest.approx(vega_fd, rel=1e-4)
    # Theta: rupees over one calendar day, nothing else moving; a short strangle earns it.
    theta_fd = (book_value(legs, SPOT, days=0.01) - book_value(legs, SPOT)) / 0.01
    assert got.theta == pytest.approx(theta_fd, rel=1e-3)
    assert got.theta > 0.0
    assert got.vega < 0.0


def test_default_limits_admit_a_one_lot_condor_and_refuse_a_20_lot_strangle() -> None:
    limits = Settings()
    condor_greeks = book_greeks(condor(1), SPOT)
    assert abs(condor_greeks.delta) <= limits.max_delta
    assert abs(condor_greeks.gamma) <= limits.max_gamma
    assert abs(condor_greeks.vega) <= limits.max_vega
    big = book_greeks(strangle(20), SPOT)
    assert abs(big.vega) > limits.max_vega


def test_aggregation_is_additive_and_refuses_expired_legs() -> None:
    a, b = condor(1), strangle(2)
    together, apart = book_greeks(a + b, SPOT), book_greeks(a, SPOT) + book_greeks(b, SPOT)
    for name in ("delta", "gamma", "vega", "theta"):
        assert getattr(together, name) == pytest.approx(getattr(apart, name), rel=1e-12, abs=1e-9)
    assert book_greeks([], SPOT) == BookGreeks(0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="alive"):
        book_greeks([OptionLeg(24_000, 0.0, True, -65, 0.13, FORWARD)], SPOT)
    with pytest.raises(ValueError, match="spot"):
        book_greeks(a, 0.0)
