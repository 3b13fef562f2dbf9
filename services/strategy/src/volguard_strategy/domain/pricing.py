"""Pricing a structure: limit prices from the mids, payoff at (near) expiry, max loss and profit,
breakevens, and probabilities and expected value under the expiry's fitted SABR smile.

The risk-neutral density comes from the smile itself (Breeden-Litzenberger): undiscounted Black-76 call
prices at the smile's vol on a fine strike grid; P(S_T <= K) = 1 + dC/dK. A flat-vol normal would
understate the put tail NIFTY's skew prices in, and so overstate how often a condor's put side wins.

Single-expiry structures are exact: the payoff is piecewise linear between strikes, so max loss, max
profit and breakevens come from the strikes themselves. Calendars and diagonals are valued at the near
expiry with the far legs on the far smile (Black-76 at the smile's vol for the forward NIFTY would then
have), on the density grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_DOWN, ROUND_HALF_UP, Decimal

import numpy as np

from volguard_common.events import OptionType, Side
from volguard_common.quant import black76, sabr
from volguard_common.quant._types import Float64Array
from volguard_strategy.domain.market import ExpiryMarket, Quote

# Density grid: +-8 standard deviations of the ATM vol in 1,000 cells: a cell is 0.016 sd wide, a few
# index points for a weekly, so a 50-point strike spacing holds several cells even on expiry day.
_GRID_SIGMAS = 8.0
_GRID_POINTS = 1001


@dataclass(frozen=True, slots=True)
class Leg:
    quote: Quote
    side: Side
    limit: Decimal  # rupees per unit, on the tick

    @property
    def sign(self) -> float:
        """+1 long, -1 short."""
        return 1.0 if self.side is Side.BUY else -1.0

    @property
    def is_call(self) -> bool:
        return self.quote.option_type is OptionType.CE


def tick_limit(mid: float, tick: float, side: Side) -> Decimal:
    """The mid on the tick: halves go our way (a sale rounds up, a purchase down); never below one tick."""
    step = Decimal(str(tick))
    mode = ROUND_HALF_UP if side is Side.SELL else ROUND_HALF_DOWN
    ticks = (Decimal(repr(mid)) / step).quantize(Decimal(1), rounding=mode)
    return max(ticks, Decimal(1)) * step


def net_credit(legs: Sequence[Leg]) -> Decimal:
    """Premium per unit at the limits: positive received, negative paid."""
    return sum((leg.limit if leg.side is Side.SELL else -leg.limit for leg in legs), Decimal(0))


@dataclass(frozen=True, slots=True)
class Distribution:
    """Risk-neutral distribution of NIFTY at one expiry: cell edges and the probability of each cell,
    with the tails folded into the first and last cell."""

    edges: Float64Array
    mass: Float64Array
    # Cell mids and the CDF at the edges, derived once: every candidate of every bucket on this expiry
    # is valued at the mids, and each short strike reads the CDF.
    mids: Float64Array = field(init=False, repr=False, compare=False)
    _cdf: Float64Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mids", 0.5 * (self.edges[1:] + self.edges[:-1]))
        object.__setattr__(self, "_cdf", np.concatenate([[0.0], np.cumsum(self.mass)]))

    def probability_beyond(self, strike: float, above: bool) -> float:
        at = float(np.interp(strike, self.edges, self._cdf))
        return 1.0 - at if above else at


def smile_distribution(market: ExpiryMarket) -> Distribution | str:
    """The density of NIFTY at `market`'s expiry implied by its fitted smile, or why there is none."""
    smile = market.smile
    if smile is None:
        return f"{market.expiry}: no SABR fit, so no risk-neutral density to price probabilities on"
    atm = market.block.atm_iv
    if atm is None or market.t <= 0.0:
        return f"{market.expiry}: no ATM vol or no time left"
    width = _GRID_SIGMAS * atm * math.sqrt(market.t)
    strikes = market.forward * np.exp(np.linspace(-width, width, _GRID_POINTS))
    vols = sabr.vol(market.forward, strikes, market.t, smile.alpha, smile.beta, smile.rho, smile.nu)
    if not np.all(np.isfinite(vols)):
        return f"{market.expiry}: the smile gives no vol somewhere on the density grid"
    calls = black76.price(market.forward, strikes, market.t, vols, True, 1.0)
    # P(S <= K) = 1 + dC/dK; a fitted smile can be slightly arbitrageable far out, so the CDF is
    # clipped to [0, 1] and forced non-decreasing rather than given negative probabilities.
    cdf = np.clip(1.0 + np.gradient(calls, strikes), 0.0, 1.0)
    cdf = np.maximum.accumulate(cdf)
    mass = np.diff(cdf)
    mass[0] += cdf[0]
    mass[-1] += 1.0 - cdf[-1]
    return Distribution(strikes, mass)


def expiry_payoff(legs: Sequence[Leg], spots: Float64Array) -> Float64Array:
    """Value per unit at expiry of the legs, plus the net premium (credit positive)."""
    credit = float(net_credit(legs))
    total = np.full(spots.shape, credit)
    for leg in legs:
        strike = leg.quote.strike
        intrinsic = np.maximum(spots - strike, 0.0) if leg.is_call else np.maximum(strike - spots, 0.0)
        total += leg.sign * intrinsic
    return total


@dataclass(frozen=True, slots=True)
class PayoffFigures:
    """Per unit: max loss (None when unbounded), max profit (None when unbounded), breakevens."""

    max_loss: float | None
    max_profit: float | None
    breakevens: tuple[float, ...]


def _crossings(xs: Float64Array, ys: Float64Array) -> tuple[float, ...]:
    out = []
    for i in range(len(xs) - 1):
        a, b = ys[i], ys[i + 1]
        if (a < 0.0 <= b) or (a >= 0.0 > b):
            if a == b:
                continue
            out.append(float(xs[i] + (xs[i + 1] - xs[i]) * (-a) / (b - a)))
    return tuple(x for x in out if x > 0.0)


def single_expiry_figures(legs: Sequence[Leg]) -> PayoffFigures:
    """Exact figures of a single-expiry structure: its payoff is linear between strikes."""
    strikes = sorted({leg.quote.strike for leg in legs})
    far = 4.0 * strikes[-1]
    points = np.array([1e-9, *strikes, far])
    values = expiry_payoff(legs, points)
    right_slope = sum(leg.sign for leg in legs if leg.is_call)
    worst, best = float(values.min()), float(values.max())
    max_loss = None if right_slope < 0 else max(0.0, -worst)
    max_profit = None if right_slope > 0 else max(0.0, best)
    return PayoffFigures(max_loss, max_profit, _crossings(points, values))


def near_expiry_values(
    legs: Sequence[Leg], near: ExpiryMarket, far: ExpiryMarket | None, spots: Float64Array
) -> Float64Array:
    """Per-unit value at the near expiry, plus the net premium: near legs at intrinsic, far legs at
    Black-76 on the far smile for the forward carried with NIFTY (F_far x S / F_near)."""
    near_legs = [leg for leg in legs if leg.quote.expiry == near.expiry]
    total = expiry_payoff(near_legs, spots) - float(net_credit(near_legs)) + float(net_credit(legs))
    far_legs = [leg for leg in legs if leg.quote.expiry != near.expiry]
    if not far_legs:
        return total
    if far is None or far.smile is None:
        raise ValueError("far legs need the far expiry's fitted smile")
    smile = far.smile
    remaining = max(far.t - near.t, 1e-9)
    forwards = far.forward * spots / near.forward
    for leg in far_legs:
        vols = sabr.vol(forwards, leg.quote.strike, remaining, smile.alpha, smile.beta, smile.rho, smile.nu)
        vols = np.where(np.isfinite(vols), vols, leg.quote.iv)
        total += leg.sign * black76.price(forwards, leg.quote.strike, remaining, vols, leg.is_call, 1.0)
    return total


def grid_figures(values: Float64Array, spots: Float64Array) -> PayoffFigures:
    """Figures read off a grid (calendars, diagonals at the near expiry)."""
    return PayoffFigures(
        max_loss=max(0.0, -float(values.min())),
        max_profit=max(0.0, float(values.max())),
        breakevens=_crossings(spots, values),
    )


@dataclass(frozen=True, slots=True)
class Odds:
    probability_of_profit: float
    probability_of_touch: float | None
    expected_payoff: float  # per unit, gross of costs


def odds(
    values: Float64Array, distribution: Distribution, short_strikes: Sequence[tuple[float, bool]]
) -> Odds:
    """Probability of profit and expected payoff of per-unit `values` at the distribution's cell mids,
    and the probability of touching a short strike before expiry: by the reflection principle about
    twice the probability of finishing beyond it, summed over the short strikes and capped at 1."""
    profit = float(np.sum(distribution.mass[values > 0.0]))
    expected = float(np.sum(distribution.mass * values))
    touch: float | None = None
    if short_strikes:
        touch = min(
            1.0,
            sum(
                2.0 * distribution.probability_beyond(strike, above=is_call)
                for strike, is_call in short_strikes
            ),
        )
    return Odds(min(max(profit, 0.0), 1.0), touch, expected)


def rescaled(distribution: Distribution, forward: float, scale: float) -> Distribution:
    """The same cell probabilities with log-distances from the forward scaled by `scale` (forecast vol
    over ATM implied vol): the smile's shape - its skew and tails - with the forecast's width."""
    if not (math.isfinite(scale) and scale > 0.0):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    edges = forward * np.exp(scale * np.log(distribution.edges / forward))
    return Distribution(edges, distribution.mass)
