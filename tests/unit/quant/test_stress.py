"""Portfolio revaluation grid against the loop-by-loop twin and against payoffs we can write down."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volguard_common.quant import _reference_vol as ref
from volguard_common.quant import black76
from volguard_common.quant.stress import VOL_FLOOR, OptionLeg, revalue

FORWARD = 24_000.0
DISCOUNT_7D = math.exp(-0.065 * 7 / 365)

# A short iron condor, one lot (75) per leg, 7 days out.
CONDOR = [
    OptionLeg(
        strike=23_000.0,
        t=7 / 365,
        is_call=False,
        quantity=75.0,
        vol=0.17,
        forward=FORWARD,
        discount=DISCOUNT_7D,
    ),
    OptionLeg(
        strike=23_400.0,
        t=7 / 365,
        is_call=False,
        quantity=-75.0,
        vol=0.155,
        forward=FORWARD,
        discount=DISCOUNT_7D,
    ),
    OptionLeg(
        strike=24_600.0,
        t=7 / 365,
        is_call=True,
        quantity=-75.0,
        vol=0.125,
        forward=FORWARD,
        discount=DISCOUNT_7D,
    ),
    OptionLeg(
        strike=25_000.0,
        t=7 / 365,
        is_call=True,
        quantity=75.0,
        vol=0.13,
        forward=FORWARD,
        discount=DISCOUNT_7D,
    ),
]
SPOT_SHOCKS = np.array([-0.08, -0.05, -0.02, 0.0, 0.02, 0.05, 0.08])
VOL_SHOCKS = np.array([-0.05, 0.0, 0.05, 0.10])


def _as_tuples(legs: list[OptionLeg]) -> list[tuple[float, float, bool, float, float, float, float]]:
    return [
        (leg.strike, leg.t, leg.is_call, leg.quantity, leg.vol, leg.forward, leg.discount) for leg in legs
    ]


@pytest.mark.parametrize("t_shift", [0.0, 1 / 365, 3 / 365, 30 / 365])
def test_grid_matches_loop_twin(t_shift: float) -> None:
    grid = revalue(CONDOR, SPOT_SHOCKS, VOL_SHOCKS, t_shift)
    slow = ref.stress_revalue(_as_tuples(CONDOR), list(SPOT_SHOCKS), list(VOL_SHOCKS), t_shift, VOL_FLOOR)
    assert grid.shape == (len(SPOT_SHOCKS), len(VOL_SHOCKS))
    np.testing.assert_allclose(grid, slow, rtol=1e-10, atol=1e-8)


def test_no_shock_no_pnl() -> None:
    assert revalue(CONDOR, [0.0], [0.0], 0.0)[0, 0] == 0.0


def test_short_condor_loses_on_gaps_and_vol_spikes_within_its_width() -> None:
    grid = revalue(CONDOR, SPOT_SHOCKS, VOL_SHOCKS, 1 / 365)
    base = grid[3, 1]
    assert base > 0.0  # one day of theta, nothing moved
    assert grid[0, 1] < base  # -8 % gap
    assert grid[-1, 1] < base  # +8 % gap
    assert np.all(np.diff(grid[3]) < 0.0)  # short vega: more vol, more loss
    # Defined risk: a wing spread of 400 points x 75 units caps the loss at expiry; before expiry the
    # value can differ from the payoff but never exceeds the width.
    assert np.all(grid > -400.0 * 75.0)


def test_aging_to_expiry_gives_intrinsic_payoff() -> None:
    legs = [OptionLeg(strike=24_000.0, t=2 / 365, is_call=True, quantity=-75.0, vol=0.14, forward=FORWARD)]
    now = float(black76.price(FORWARD, 24_000.0, 2 / 365, 0.14, True))
    grid = revalue(legs, [-0.05, 0.0, 0.05], [0.0, 0.2], t_shift=5 / 365)
    payoff = np.maximum(FORWARD * np.array([0.95, 1.0, 1.05]) - 24_000.0, 0.0)
    expected = -75.0 * (payoff - now)
    # Expired: vol no longer matters.
    np.testing.assert_allclose(grid, np.column_stack([expected, expected]), rtol=1e-12)


def test_vol_floor_keeps_a_large_negative_vol_shock_priced() -> None:
    legs = [OptionLeg(strike=24_000.0, t=30 / 365, is_call=False, quantity=1.0, vol=0.12, forward=FORWARD)]
    grid = revalue(legs, [0.0], [-0.5])
    floored = float(black76.price(FORWARD, 24_000.0, 30 / 365, VOL_FLOOR, False))
    now = float(black76.price(FORWARD, 24_000.0, 30 / 365, 0.12, False))
    assert grid[0, 0] == pytest.approx(floored - now, rel=1e-12)


def test_long_straddle_gains_on_either_move_and_more_on_the_up_move() -> None:
    legs = [
        OptionLeg(strike=FORWARD, t=30 / 365, is_call=True, quantity=1.0, vol=0.15, forward=FORWARD),
        OptionLeg(strike=FORWARD, t=30 / 365, is_call=False, quantity=1.0, vol=0.15, forward=FORWARD),
    ]
    grid = revalue(legs, [-0.03, 0.0, 0.03], [0.0])[:, 0]
    # Long gamma: both moves pay. They move the forward by the same 720 points, but after the up move
    # the lognormal price vol (sigma x F) is larger, so the up scenario is worth more.
    assert grid[1] == 0.0
    assert 0.0 < grid[0] < grid[2]


def test_empty_portfolio_and_bad_shocks() -> None:
    np.testing.assert_array_equal(revalue([], [0.0, 0.1], [0.0]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="spot shocks"):
        revalue(CONDOR, [-1.0], [0.0])
    with pytest.raises(ValueError, match="t_shift"):
        revalue(CONDOR, [0.0], [0.0], -1.0)
    with pytest.raises(ValueError, match="strike, forward"):
        OptionLeg(strike=-1.0, t=0.1, is_call=True, quantity=1.0, vol=0.1, forward=FORWARD)
    with pytest.raises(ValueError, match="non-finite"):
        OptionLeg(strike=24_000.0, t=0.1, is_call=True, quantity=math.nan, vol=0.1, forward=FORWARD)
