"""Slow, obvious scalar twin of quant.margin, used only as the test reference.

One position, one scenario at a time with the textbook Black-76 of `_reference`, written from NSE
Clearing's description rather than from the vectorised code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from volguard_common.quant._reference import black76_greeks, black76_price

# (price move in scan ranges, vol move in scan ranges, share of the loss), NSE Clearing's order.
SIXTEEN_SCENARIOS = [
    (0.0, +1.0, 1.0), (0.0, -1.0, 1.0),
    (+1 / 3, +1.0, 1.0), (+1 / 3, -1.0, 1.0), (-1 / 3, +1.0, 1.0), (-1 / 3, -1.0, 1.0),
    (+2 / 3, +1.0, 1.0), (+2 / 3, -1.0, 1.0), (-2 / 3, +1.0, 1.0), (-2 / 3, -1.0, 1.0),
    (+1.0, +1.0, 1.0), (+1.0, -1.0, 1.0), (-1.0, +1.0, 1.0), (-1.0, -1.0, 1.0),
    (+2.0, 0.0, 0.35), (-2.0, 0.0, 0.35),
]  # fmt: skip

# A leg: (strike, expiry, is_call, quantity, vol, forward, t, discount).
Leg = tuple[float, date, bool, float, float, float, float, float]


def scenario_loss(leg: Leg, price_scan: float, vol_scan: float, scenario: int, vol_floor: float) -> float:
    strike, _, is_call, quantity, vol, forward, t, discount = leg
    price_move, vol_move, share = SIXTEEN_SCENARIOS[scenario]
    now = black76_price(forward, strike, t, vol, is_call, discount)
    after = black76_price(
        forward * (1.0 + price_move * price_scan),
        strike,
        t,
        max(vol + vol_move * vol_scan, vol_floor),
        is_call,
        discount,
    )
    return share * quantity * (now - after)


def scanning_risk(legs: Sequence[Leg], price_scan: float, vol_scan: float, vol_floor: float) -> float:
    worst = 0.0
    for scenario in range(16):
        total = 0.0
        for leg in legs:
            total += scenario_loss(leg, price_scan, vol_scan, scenario, vol_floor)
        worst = max(worst, total)
    return worst


def leg_delta(leg: Leg) -> float:
    strike, _, is_call, quantity, vol, forward, t, discount = leg
    if t <= 0.0 or vol <= 0.0:
        moneyness = forward - strike if is_call else strike - forward
        return quantity * (discount * (1.0 if is_call else -1.0) if moneyness > 0 else 0.0)
    return quantity * black76_greeks(forward, strike, t, vol, is_call, discount)["delta"]


def calendar_spread_charge(legs: Sequence[Leg], pct: float) -> float:
    expiries = sorted({leg[1] for leg in legs})
    remaining = [sum(leg_delta(leg) for leg in legs if leg[1] == e) for e in expiries]
    far_forward = {leg[1]: leg[5] for leg in legs}
    charge = 0.0
    for i in range(len(expiries)):
        for j in range(i + 1, len(expiries)):
            if remaining[i] * remaining[j] < 0.0:
                spread = min(abs(remaining[i]), abs(remaining[j]))
                charge += pct / 100.0 * far_forward[expiries[j]] * spread
                remaining[i] -= math.copysign(spread, remaining[i])
                remaining[j] -= math.copysign(spread, remaining[j])
    return charge


def short_option_minimum(legs: Sequence[Leg], underlying: float, pct: float) -> float:
    uncovered = 0.0
    for expiry in {leg[1] for leg in legs}:
        for is_call in (True, False):
            net = sum(leg[3] for leg in legs if leg[1] == expiry and leg[2] == is_call)
            if net < 0.0:
                uncovered += -net
    return pct / 100.0 * underlying * uncovered


def total_margin(
    legs: Sequence[Leg],
    underlying: float,
    price_scan: float,
    vol_scan: float,
    valuation_date: date,
    pct: dict[str, float],
    vol_floor: float,
    *,
    expiry_day_elm: bool,
    separate_expiring: bool,
) -> float:
    """SPAN + exposure + expiry-day ELM. `pct` holds somc, spread, exposure and elm in percent."""
    today = [leg for leg in legs if separate_expiring and leg[1] == valuation_date]
    others = [leg for leg in legs if not (separate_expiring and leg[1] == valuation_date)]
    scan = scanning_risk(others, price_scan, vol_scan, vol_floor) + scanning_risk(
        today, price_scan, vol_scan, vol_floor
    )
    spread = calendar_spread_charge(others, pct["spread"])
    nov = sum(leg[3] * black76_price(leg[5], leg[0], leg[6], leg[4], leg[2], leg[7]) for leg in legs)
    span = max(max(scan + spread, short_option_minimum(legs, underlying, pct["somc"])) - nov, 0.0)
    exposure = sum(pct["exposure"] / 100.0 * underlying * -leg[3] for leg in legs if leg[3] < 0.0)
    elm = 0.0
    if expiry_day_elm:
        elm = sum(
            pct["elm"] / 100.0 * underlying * -leg[3]
            for leg in legs
            if leg[3] < 0.0 and leg[1] == valuation_date
        )
    return span + exposure + elm
