"""Greeks of a book of option legs in the units risk limits are written in (DESIGN §7, issue 16).

- `delta`: NIFTY units, the sum of each leg's spot delta x signed quantity: the book moves like this
  many units of the index (limit 200 by default).
- `gamma`: the change of that delta for a 1 % move of the index (limit 500).
- `vega`: rupees per vol point, all vols up one point together (limit 1,000).
- `theta`: rupees per calendar day with spot and vols unchanged; negative when the book pays for
  time (the book may pay at most Rs 1,000 a day).

Legs are Black-76 on their expiry's forward; the forward moves one for one in percent with the index
(carry unchanged), so the spot delta is the forward delta x F / S and the spot gamma the forward
gamma x (F / S)^2. Quantities are signed units (short one lot of 65 = -65), so one index point of
option value is one rupee per unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volguard_common.quant import black76
from volguard_common.quant.stress import OptionLeg


@dataclass(frozen=True, slots=True)
class BookGreeks:
    """Greeks of a book in limit units (see the module notes)."""

    delta: float
    gamma: float
    vega: float
    theta: float

    def __add__(self, other: BookGreeks) -> BookGreeks:
        return BookGreeks(
            delta=self.delta + other.delta,
            gamma=self.gamma + other.gamma,
            vega=self.vega + other.vega,
            theta=self.theta + other.theta,
        )


def book_greeks(legs: Sequence[OptionLeg], spot: float) -> BookGreeks:
    """Sum the legs' Greeks in limit units; `spot` is the index level the 1 % gamma move is taken on."""
    if not (math.isfinite(spot) and spot > 0.0):
        raise ValueError(f"spot must be finite and > 0, got {spot}")
    if len(legs) == 0:
        return BookGreeks(0.0, 0.0, 0.0, 0.0)
    strike = np.array([leg.strike for leg in legs])
    t = np.array([leg.t for leg in legs])
    is_call = np.array([leg.is_call for leg in legs])
    quantity = np.array([leg.quantity for leg in legs])
    vol = np.array([leg.vol for leg in legs])
    forward = np.array([leg.forward for leg in legs])
    discount = np.array([leg.discount for leg in legs])
    if np.any((t == 0.0) | (vol == 0.0)):
        # At expiry (or zero vol) gamma and vega are Dirac masses at the strike, not numbers.
        raise ValueError("book Greeks need every leg alive (t > 0) with a vol > 0")
    g_delta, g_gamma, g_vega, g_theta = black76.first_order_greeks(forward, strike, t, vol, is_call, discount)
    carry = forward / spot
    delta = float(np.sum(g_delta * carry * quantity))
    gamma = float(np.sum(g_gamma * carry**2 * quantity) * 0.01 * spot)
    vega = float(np.sum(g_vega * quantity) / 100.0)
    theta = float(np.sum(black76.theta_per_day(g_theta) * quantity))
    return BookGreeks(delta=delta, gamma=gamma, vega=vega, theta=theta)
