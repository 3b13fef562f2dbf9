"""Sizing: whole lots whose max loss fits the per-trade risk budget, times the event-severity multiplier,
inside the bucket's free capital, and shrunk when the candidate's scenario P&L moves with the book's.

Every factor is applied to the real-valued lot count and the result is rounded down once, at the end:
rounding after each factor would lose up to a lot per factor. Zero lots is a WAIT.

Correlation: the book and one lot of the candidate are revalued on the same grid of spot and vol
scenarios (`quant.stress`). When their scenario P&Ls correlate above the threshold the losses add up
rather than offset, so the candidate is cut to the largest size whose combined worst scenario stays
within the portfolio loss budget (the daily loss limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from volguard_common.quant import black76
from volguard_common.quant.stress import PRE_TRADE_SCENARIOS, VOL_FLOOR, OptionLeg, StressScenario, stress_pnl

# The correlation grid: the named pre-trade scenarios plus spot moves of -5..+5 % at three vol levels,
# so a straddle and a condor (both short gamma) read as alike and a put spread and a call spread as not.
CORRELATION_SCENARIOS: tuple[StressScenario, ...] = PRE_TRADE_SCENARIOS + tuple(
    StressScenario(f"grid_{move:+.3f}_{scale:.1f}", move, scale)
    for move in (-0.05, -0.035, -0.02, -0.01, -0.005, 0.005, 0.01, 0.02, 0.035, 0.05)
    for scale in (0.8, 1.0, 1.3)
)


@dataclass(frozen=True, slots=True)
class Sizing:
    lots: int
    reasons: tuple[str, ...]


def worst_stress_loss(legs: Sequence[OptionLeg]) -> float:
    """Largest loss (positive rupees) over the named pre-trade scenarios: -8 % with VIX doubled, +5 %,
    gaps of 1-3 %, a vol crush. What an undefined-risk structure is sized on."""
    return max(0.0, -min(s.pnl for s in stress_pnl(legs, PRE_TRADE_SCENARIOS)))


_MOVES = np.array([s.spot_move for s in CORRELATION_SCENARIOS])
_SCALES = np.array([s.vol_scale for s in CORRELATION_SCENARIOS])


def scenario_pnls(legs: Sequence[OptionLeg]) -> np.ndarray:
    """P&L of `legs` in every correlation scenario. Legs with a smile are revalued on it
    (quant.stress); legs without one at their own vol, scaled, in one vectorised pass."""
    if any(leg.smile is not None for leg in legs):
        return np.array([s.pnl for s in stress_pnl(legs, CORRELATION_SCENARIOS)])
    strike = np.array([leg.strike for leg in legs])
    t = np.array([leg.t for leg in legs])
    is_call = np.array([leg.is_call for leg in legs])
    quantity = np.array([leg.quantity for leg in legs])
    vol = np.array([leg.vol for leg in legs])
    forward = np.array([leg.forward for leg in legs])
    shocked = forward[None, :] * (1.0 + _MOVES[:, None])
    shocked_vol = np.maximum(vol[None, :] * _SCALES[:, None], VOL_FLOOR)
    # Today's market as row 0 above the scenarios: one pricing pass, the same elementwise prices.
    prices = black76.price(
        np.concatenate((forward[None, :], shocked)),
        strike,
        t,
        np.concatenate((vol[None, :], shocked_vol)),
        is_call,
        1.0,
    )
    now, after = prices[0], prices[1:]
    pnl: np.ndarray = np.sum((after - now) * quantity, axis=1)
    return pnl


def correlation_cap(
    book: np.ndarray, candidate_per_lot: np.ndarray, loss_budget: float, threshold: float
) -> tuple[float | None, str]:
    """The largest real lot count allowed by the correlation rule (None: no cap), and what it did."""
    if not np.any(book) or np.std(book) == 0.0 or np.std(candidate_per_lot) == 0.0:
        return None, "no open book to correlate with"
    correlation = float(np.corrcoef(book, candidate_per_lot)[0, 1])
    if not math.isfinite(correlation) or correlation <= threshold:
        return None, f"scenario P&L correlation with the book {correlation:.2f} <= {threshold:.2f}: no shrink"
    # Largest n with book + n x candidate >= -budget in every scenario where the candidate loses.
    caps = [(loss_budget + b) / -c for b, c in zip(book, candidate_per_lot, strict=True) if c < 0.0]
    cap = max(0.0, min(caps)) if caps else None
    return cap, (
        f"scenario P&L correlation with the book {correlation:.2f} > {threshold:.2f}: size cut so the "
        f"combined worst scenario stays within the Rs {loss_budget:,.0f} portfolio loss budget"
        + (f" (at most {cap:.2f} lots)" if cap is not None else "")
    )


def size(
    max_loss_per_lot: float,
    budget: Decimal,
    severity_multiplier: float,
    margin_per_lot: float,
    free_capital: Decimal,
    correlation_lots: float | None,
) -> Sizing:
    """Whole lots from every factor, rounded down once."""
    reasons = []
    if max_loss_per_lot <= 0.0:
        raise ValueError(f"max loss per lot must be > 0 to size on it, got {max_loss_per_lot}")
    lots = float(budget) / max_loss_per_lot
    reasons.append(
        f"risk budget Rs {budget:,.0f} / max loss Rs {max_loss_per_lot:,.0f} a lot = {lots:.2f} lots"
    )
    if severity_multiplier != 1.0:
        lots *= severity_multiplier
        reasons.append(f"x event-severity multiplier {severity_multiplier:g} = {lots:.2f}")
    if margin_per_lot > 0.0:
        by_capital = float(free_capital) / margin_per_lot
        if by_capital < lots:
            lots = by_capital
            reasons.append(
                f"capped by free capital Rs {free_capital:,.0f} / margin Rs {margin_per_lot:,.0f} a lot "
                f"= {lots:.2f}"
            )
    if correlation_lots is not None and correlation_lots < lots:
        lots = correlation_lots
        reasons.append(f"capped by the correlation rule at {lots:.2f}")
    # A quotient that is whole in exact arithmetic (Rs 15,625 x 0.3 / Rs 1.5 = 3125) can come out a
    # hair below it in binary floats (3124.9999999999995); flooring that would lose a lot the budget
    # allows. A relative 1e-12 only absorbs representation error, never a paisa of real budget.
    whole = max(0, math.floor(lots * (1.0 + 1e-12)))
    reasons.append(f"rounded down once: {whole} lot(s)")
    return Sizing(whole, tuple(reasons))
