"""Named pre-trade stress scenarios against a hand revaluation of a known iron condor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volguard_common.quant import _reference_vol as ref
from volguard_common.quant import sabr
from volguard_common.quant.stress import (
    PRE_TRADE_SCENARIOS,
    OptionLeg,
    StressScenario,
    revalue,
    stress_pnl,
)

FORWARD = 24_000.0
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
# Short 23400 PE / 24600 CE, long 23000 PE / 25000 CE, one lot (65) each, 7 days out.
STRIKES = [(23_000.0, False, 65.0), (23_400.0, False, -65.0), (24_600.0, True, -65.0), (25_000.0, True, 65.0)]


def condor(with_smile: bool) -> list[OptionLeg]:
    return [
        OptionLeg(
            strike=k,
            t=T,
            is_call=c,
            quantity=q,
            vol=sabr.smile_vol(FORWARD, k, T, SMILE),
            forward=FORWARD,
            discount=DISCOUNT,
            smile=SMILE if with_smile else None,
        )
        for k, c, q in STRIKES
    ]


def hand_pnl(move: float, vol_scale: float) -> float:
    """Leg by leg: the smile read again at the moved forward, scaled, textbook Black-76."""
    total = 0.0
    for strike, is_call, quantity in STRIKES:
        vol_now = ref.sabr_vol_obloj(FORWARD, strike, T, SMILE.alpha, 0.5, -0.35, 1.2)
        moved = FORWARD * (1.0 + move)
        vol_after = vol_scale * ref.sabr_vol_obloj(moved, strike, T, SMILE.alpha, 0.5, -0.35, 1.2)
        now = ref.black76_price(FORWARD, strike, T, vol_now, is_call, DISCOUNT)
        after = ref.black76_price(moved, strike, T, vol_after, is_call, DISCOUNT)
        total += quantity * (after - now)
    return total


def test_pre_trade_scenarios_are_the_gaps_and_the_black_swans() -> None:
    assert [(s.name, s.spot_move, s.vol_scale) for s in PRE_TRADE_SCENARIOS] == [
        ("gap_down_3", -0.03, 1.0),
        ("gap_down_2", -0.02, 1.0),
        ("gap_down_1", -0.01, 1.0),
        ("gap_up_1", 0.01, 1.0),
        ("gap_up_2", 0.02, 1.0),
        ("gap_up_3", 0.03, 1.0),
        ("black_swan_down", -0.08, 2.0),
        ("black_swan_up", 0.05, 1.0),
        ("vol_crush", 0.0, 0.7),
    ]


@pytest.mark.parametrize("move", [-0.03, 0.03])
def test_a_known_condor_under_a_3_percent_gap_matches_the_hand_revaluation(move: float) -> None:
    (result,) = stress_pnl(condor(with_smile=True), [StressScenario("gap", move)])
    expected = hand_pnl(move, 1.0)
    assert result.pnl == pytest.approx(expected, rel=1e-9)
    # A 3 % gap (720 points) puts the short strike 600 points away well in the money: a real loss,
    # but never more than the 400-point wing x 65.
    assert -400 * 65 < result.pnl < -0.25 * 400 * 65


def test_black_swans_and_the_crush_match_the_hand_revaluation() -> None:
    results = {r.scenario.name: r.pnl for r in stress_pnl(condor(with_smile=True))}
    assert results["black_swan_down"] == pytest.approx(hand_pnl(-0.08, 2.0), rel=1e-9)
    assert results["black_swan_up"] == pytest.approx(hand_pnl(0.05, 1.0), rel=1e-9)
    assert results["vol_crush"] == pytest.approx(hand_pnl(0.0, 0.7), rel=1e-9)
    # A short-vol book gains from a crush and loses in both swans.
    assert results["vol_crush"] > 0.0
    assert results["black_swan_down"] < 0.0
    assert results["black_swan_up"] < 0.0


def test_legs_without_a_smile_keep_their_vol_and_agree_with_the_revaluation_grid() -> None:
    legs = condor(with_smile=False)
    moves = [s.spot_move for s in PRE_TRADE_SCENARIOS if s.vol_scale == 1.0]
    results = stress_pnl(legs, [StressScenario(f"m{m}", m) for m in moves])
    grid = revalue(legs, moves, [0.0])
    np.testing.assert_allclose([r.pnl for r in results], grid[:, 0], rtol=1e-12, atol=1e-9)


def test_an_empty_book_and_bad_scenarios() -> None:
    assert all(r.pnl == 0.0 for r in stress_pnl([]))
    with pytest.raises(ValueError, match="vol scale"):
        StressScenario("bad", 0.0, vol_scale=0.0)
    with pytest.raises(ValueError, match="spot move"):
        StressScenario("bad", -1.0)
