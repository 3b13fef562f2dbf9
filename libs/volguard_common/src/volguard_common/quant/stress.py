"""Full revaluation of an option portfolio on a grid of spot and vol shocks (gap and black-swan tests).

Every leg is repriced with Black-76 under each scenario; nothing is approximated with Greeks, because
the scenarios risk cares about (an 8 % gap, vol +10 points) are exactly where Taylor expansions fail.

Scenario conventions:
- spot shock `s` is relative: every forward moves to F * (1 + s) (carry unchanged over the shift);
- vol shock `dv` is absolute and parallel: vol -> max(vol + dv, VOL_FLOOR) for every leg;
- `t_shift` (years, e.g. 1/365 for an overnight gap) ages every leg: t -> max(t - t_shift, 0), the
  discount factor keeps its implied rate, D -> D^(t'/t); a leg aged to expiry is worth intrinsic.
P&L is (scenario value - current value) x quantity, summed over legs, in index points (multiply by
nothing: quantities are in units of the underlying, not lots).

Named pre-trade scenarios (`stress_pnl`, `PRE_TRADE_SCENARIOS`): gap moves of +-1, +-2, +-3 % (the
original VolGuard's MARGIN_STRESS_PCT) and the black swans (-8 % with India VIX doubled, +5 %, a vol
crush), applied instantly (no time decay credited to a short). A leg that carries its expiry's fitted
SABR smile is revalued on the smile shifted with the market: the smile moves with the forward (its
vol at a fixed strike is read again at the shocked forward) and its level is scaled by the scenario's
vol factor (VIX doubled = every vol x 2). A leg without a smile keeps its own vol, scaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volguard_common.quant import black76, sabr
from volguard_common.quant._types import ArrayLike, Float64Array

# A shocked vol below one vol point is not a market, and a negative one has no price; the floor keeps
# a "vol -20 points" scenario on a 12 % leg meaningful instead of NaN.
VOL_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class OptionLeg:
    """One position. `quantity` is signed units (short 2 lots of 75 = -150); `vol` is the leg's
    current implied vol (decimal); `t` years to expiry; `forward` the forward for that expiry (pass
    spot with discount 1.0 for a spot-based view)."""

    strike: float
    t: float
    is_call: bool
    quantity: float
    vol: float
    forward: float
    discount: float = 1.0
    # The leg's expiry's fitted smile, when the caller has one: named scenarios then revalue the leg
    # on the smile shifted with the market instead of at its own fixed vol.
    smile: sabr.SabrFit | None = None

    def __post_init__(self) -> None:
        numbers = (self.strike, self.t, self.quantity, self.vol, self.forward, self.discount)
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"option leg has a non-finite field: {self}")
        if self.strike <= 0.0 or self.forward <= 0.0 or self.t < 0.0 or self.vol < 0.0:
            raise ValueError(f"option leg needs strike, forward > 0 and t, vol >= 0: {self}")
        if not 0.0 < self.discount <= 1.5:
            raise ValueError(f"option leg discount factor out of range: {self}")


def revalue(
    legs: Sequence[OptionLeg], spot_shocks: ArrayLike, vol_shocks: ArrayLike, t_shift: float = 0.0
) -> Float64Array:
    """P&L grid of shape (len(spot_shocks), len(vol_shocks)): entry [i, j] is the portfolio P&L if
    spot moves by `spot_shocks[i]` (relative) and vols by `vol_shocks[j]` (absolute) after `t_shift`
    years."""
    spots = np.asarray(spot_shocks, dtype=np.float64).ravel()
    vols = np.asarray(vol_shocks, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(spots)) and np.all(spots > -1.0)):
        raise ValueError("spot shocks must be finite and > -1 (a -100% move has no forward)")
    if not np.all(np.isfinite(vols)):
        raise ValueError("vol shocks must be finite")
    if not (np.isfinite(t_shift) and t_shift >= 0.0):
        raise ValueError("t_shift must be finite and >= 0")
    if len(legs) == 0:
        return np.zeros((len(spots), len(vols)))

    strike = np.array([leg.strike for leg in legs])
    t = np.array([leg.t for leg in legs])
    is_call = np.array([leg.is_call for leg in legs])
    quantity = np.array([leg.quantity for leg in legs])
    vol = np.array([leg.vol for leg in legs])
    forward = np.array([leg.forward for leg in legs])
    discount = np.array([leg.discount for leg in legs])

    now = black76.price(forward, strike, t, vol, is_call, discount)
    t_after = np.maximum(t - t_shift, 0.0)
    # Same continuously compounded rate over the shorter remaining life.
    discount_after = np.where(t > 0.0, discount ** (t_after / np.where(t > 0.0, t, 1.0)), discount)
    # Axes: (spot scenario, vol scenario, leg).
    shocked_forward = forward[None, None, :] * (1.0 + spots[:, None, None])
    shocked_vol = np.maximum(vol[None, None, :] + vols[None, :, None], VOL_FLOOR)
    after = black76.price(shocked_forward, strike, t_after, shocked_vol, is_call, discount_after)
    pnl: Float64Array = np.sum((after - now) * quantity, axis=2)
    return pnl


@dataclass(frozen=True, slots=True)
class StressScenario:
    """A named market move: `spot_move` relative (-0.08 is an 8 % fall), `vol_scale` multiplies every
    vol (2.0 is India VIX doubled, 0.7 a 30 % crush)."""

    name: str
    spot_move: float
    vol_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spot_move) and self.spot_move > -1.0):
            raise ValueError(f"scenario {self.name}: spot move must be finite and > -100 %")
        if not (math.isfinite(self.vol_scale) and self.vol_scale > 0.0):
            raise ValueError(f"scenario {self.name}: vol scale must be finite and > 0")


PRE_TRADE_SCENARIOS: tuple[StressScenario, ...] = (
    StressScenario("gap_down_3", -0.03),
    StressScenario("gap_down_2", -0.02),
    StressScenario("gap_down_1", -0.01),
    StressScenario("gap_up_1", 0.01),
    StressScenario("gap_up_2", 0.02),
    StressScenario("gap_up_3", 0.03),
    StressScenario("black_swan_down", -0.08, vol_scale=2.0),
    StressScenario("black_swan_up", 0.05),
    # A post-event crush: every vol 30 % lower with the index where it was.
    StressScenario("vol_crush", 0.0, vol_scale=0.7),
)


@dataclass(frozen=True, slots=True)
class ScenarioPnl:
    """Portfolio P&L of one scenario, in index points x units (= rupees)."""

    scenario: StressScenario
    pnl: float


def _scenario_vols(legs: Sequence[OptionLeg], forward: Float64Array, shocked: Float64Array) -> Float64Array:
    """Vols of every leg (columns) at the forwards of every scenario (rows) and now (last row)."""
    strike = np.array([leg.strike for leg in legs])
    t = np.array([leg.t for leg in legs])
    own = np.array([leg.vol for leg in legs])
    forwards = np.vstack([shocked, forward[None, :]])
    vols = np.broadcast_to(own, forwards.shape).copy()
    for column, leg in enumerate(legs):
        if leg.smile is not None:
            smile = leg.smile
            vols[:, column] = sabr.vol(
                forwards[:, column], strike[column], t[column], smile.alpha, smile.beta, smile.rho, smile.nu
            )
    result: Float64Array = vols
    return result


def stress_pnl(
    legs: Sequence[OptionLeg], scenarios: Sequence[StressScenario] = PRE_TRADE_SCENARIOS
) -> tuple[ScenarioPnl, ...]:
    """Portfolio P&L in each named scenario, revalued in full (see the module notes for the smile)."""
    if len(legs) == 0:
        return tuple(ScenarioPnl(s, 0.0) for s in scenarios)
    strike = np.array([leg.strike for leg in legs])
    t = np.array([leg.t for leg in legs])
    is_call = np.array([leg.is_call for leg in legs])
    quantity = np.array([leg.quantity for leg in legs])
    forward = np.array([leg.forward for leg in legs])
    discount = np.array([leg.discount for leg in legs])
    moves = np.array([s.spot_move for s in scenarios], dtype=np.float64)
    scales = np.array([s.vol_scale for s in scenarios], dtype=np.float64)
    shocked = forward[None, :] * (1.0 + moves[:, None])
    vols = _scenario_vols(legs, forward, shocked)
    if not np.all(np.isfinite(vols)):
        raise ValueError("a leg's smile gives no vol in a scenario; refusing to stress it at a guess")
    now = black76.price(forward, strike, t, vols[-1], is_call, discount)
    after = black76.price(
        shocked, strike, t, np.maximum(vols[:-1] * scales[:, None], VOL_FLOOR), is_call, discount
    )
    pnl = np.sum((after - now) * quantity, axis=1)
    return tuple(ScenarioPnl(s, float(p)) for s, p in zip(scenarios, pnl, strict=True))
