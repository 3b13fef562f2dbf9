"""SPAN-style initial margin of a NIFTY option portfolio, the way NSE Clearing computes it (DESIGN §5).

Risk arrays. Each position is revalued with Black-76 in 16 scenarios and its loss recorded (positive
= loss, rupees: quantities are in units and one index point is one rupee per unit):

| #     | price move (x price scan range) | vol move (x vol scan range) | share of the loss |
|-------|---------------------------------|-----------------------------|-------------------|
| 1, 2  | 0                               | +1, -1                      | 100 %             |
| 3-6   | +1/3, -1/3                      | +1, -1                      | 100 %             |
| 7-10  | +2/3, -2/3                      | +1, -1                      | 100 %             |
| 11-14 | +1, -1                          | +1, -1                      | 100 %             |
| 15,16 | +2, -2                          | 0                           | 35 %              |

The price move is relative (every forward moves by the same fraction of itself as the underlying);
the vol move is absolute and shifts each position's own vol, which the caller reads off the fitted
SABR smile at the position's strike (`leg_on_smile`). Time to expiry is not rolled forward, so time
decay earns a short no margin credit.

Portfolio margin:
- scanning risk = the worst scenario of the summed risk arrays, at least 0 (the wings of a condor
  offset its shorts scenario by scenario);
- calendar spread charge = 1.75 % of the far contract's value on the delta that offsets between
  expiries, paired nearest first;
- short option minimum = 3 % of the notional of short options not offset by a long of the same right
  and expiry (NSE Clearing's older parameter page gives 3 % of the notional of short index options;
  the current page no longer lists it, and the netting within a right and expiry is our reading);
- SPAN = max(scanning risk + calendar spread charge, short option minimum) - net option value, at
  least 0. The net option value is long minus short option value, so a short's premium is added to
  its requirement and a long needs nothing beyond the premium it paid;
- exposure margin = 2 % of the notional (underlying x units) of every short option;
- on a short option's expiry day, an additional extreme-loss margin of 2 % of its notional (SEBI, from
  20 Nov 2024), and positions expiring that day get no calendar spread benefit (from 1 Feb 2025): they
  are scanned on their own and left out of the spread pairing.

Price scan range: NSE Clearing's parameter reads "six standard deviations (6 sigma) scaled up by
sqrt(2) subject to 9.3 % of underlying price". "Subject to" is a FLOOR: the predecessor wording was
"Min. margin percentage is 7.1 %", the same page writes the vol scan as "subject to minimum 4 %",
and the currency page spells it "subject to the minimum percentage of underlying price". With NIFTY's
daily sigma near 1 %, 6 x sqrt(2) x sigma is about 8.5 %, so the floor usually binds.

Margin figures are floats (an estimate from a model); risk turns them into Decimal rupees at its
checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

from volguard_common.quant import black76, sabr
from volguard_common.quant._types import Float64Array

if TYPE_CHECKING:
    from volguard_common.settings import Settings

# A vol scanned below one vol point is not a market; the floor keeps "vol down" meaningful on a
# low-vol wing instead of pricing a negative vol.
VOL_FLOOR = 0.01

# (price move as a multiple of the price scan range, vol move as a multiple of the vol scan range,
# share of the loss counted), in NSE Clearing's scenario order.
SCENARIOS: tuple[tuple[float, float, float], ...] = (
    (0.0, 1.0, 1.0),
    (0.0, -1.0, 1.0),
    (1 / 3, 1.0, 1.0),
    (1 / 3, -1.0, 1.0),
    (-1 / 3, 1.0, 1.0),
    (-1 / 3, -1.0, 1.0),
    (2 / 3, 1.0, 1.0),
    (2 / 3, -1.0, 1.0),
    (-2 / 3, 1.0, 1.0),
    (-2 / 3, -1.0, 1.0),
    (1.0, 1.0, 1.0),
    (1.0, -1.0, 1.0),
    (-1.0, 1.0, 1.0),
    (-1.0, -1.0, 1.0),
    (2.0, 0.0, 0.35),
    (-2.0, 0.0, 0.35),
)
_PRICE_MOVES = np.array([s[0] for s in SCENARIOS])
_VOL_MOVES = np.array([s[1] for s in SCENARIOS])
_COVER = np.array([s[2] for s in SCENARIOS])


@dataclass(frozen=True, slots=True)
class DatedMarginRule:
    """A margin rule that starts on a day, with where it comes from."""

    effective_from: date
    source: str

    def in_force(self, day: date) -> bool:
        return day >= self.effective_from


EXPIRY_DAY_ELM = DatedMarginRule(
    date(2024, 11, 20),
    "SEBI circular SEBI/HO/MRD/TPD-1/P/CIR/2024/132 of 1 Oct 2024: additional 2 % ELM on short options "
    "on the day of their expiry, from 20 Nov 2024",
)
NO_CALENDAR_BENEFIT_ON_EXPIRY_DAY = DatedMarginRule(
    date(2025, 2, 1),
    "SEBI circular SEBI/HO/MRD/TPD-1/P/CIR/2024/132 of 1 Oct 2024: no calendar spread benefit for "
    "positions expiring on the day, from 1 Feb 2025 (NSE Clearing: 'till the expiry-1day of the near month')",
)


@dataclass(frozen=True, slots=True)
class MarginParameters:
    """NSE Clearing's index-option parameters, in percent and vol points as they are published."""

    price_scan_sigmas: float = 6.0
    price_scan_floor_pct: float = 9.3
    vol_scan_pct: float = 25.0
    vol_scan_floor_pts: float = 4.0
    short_option_minimum_pct: float = 3.0
    calendar_spread_pct: float = 1.75
    exposure_pct: float = 2.0
    expiry_day_elm_pct: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MarginParameters:
        return cls(
            price_scan_sigmas=settings.margin_price_scan_sigmas,
            price_scan_floor_pct=settings.margin_price_scan_floor_pct,
            vol_scan_pct=settings.margin_vol_scan_pct,
            vol_scan_floor_pts=settings.margin_vol_scan_floor_pts,
            short_option_minimum_pct=settings.margin_short_option_minimum_pct,
            calendar_spread_pct=settings.margin_calendar_spread_pct,
            exposure_pct=settings.margin_exposure_pct,
            expiry_day_elm_pct=settings.margin_expiry_day_elm_pct,
        )


@dataclass(frozen=True, slots=True)
class ScanRanges:
    """`price` as a fraction of the underlying (0.093 = 9.3 %), `vol` in absolute vol (0.04 = 4 points)."""

    price: float
    vol: float

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.price)
            and math.isfinite(self.vol)
            and 0.0 < self.price < 0.5
            and self.vol >= 0.0
        ):
            raise ValueError(f"scan ranges out of range: {self}")


def scan_ranges(daily_ewma_vol: float, annual_ewma_vol: float, params: MarginParameters) -> ScanRanges:
    """NSE Clearing's scan ranges from the underlying's EWMA volatility (decimal, daily and annualised)."""
    if not (math.isfinite(daily_ewma_vol) and daily_ewma_vol >= 0.0):
        raise ValueError(f"daily EWMA vol must be finite and >= 0, got {daily_ewma_vol}")
    if not (math.isfinite(annual_ewma_vol) and annual_ewma_vol >= 0.0):
        raise ValueError(f"annual EWMA vol must be finite and >= 0, got {annual_ewma_vol}")
    # sqrt(2): the two-day margin period of risk.
    price = max(
        params.price_scan_sigmas * math.sqrt(2.0) * daily_ewma_vol, params.price_scan_floor_pct / 100.0
    )
    vol = max(params.vol_scan_pct / 100.0 * annual_ewma_vol, params.vol_scan_floor_pts / 100.0)
    return ScanRanges(price=price, vol=vol)


@dataclass(frozen=True, slots=True)
class MarginLeg:
    """One option position: `quantity` signed units (short one lot of 65 = -65), `vol` its current
    implied vol (decimal), `t` years to expiry, `forward` and `discount` of its expiry."""

    strike: float
    expiry: date
    is_call: bool
    quantity: float
    vol: float
    forward: float
    t: float
    discount: float = 1.0

    def __post_init__(self) -> None:
        numbers = (self.strike, self.quantity, self.vol, self.forward, self.t, self.discount)
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"margin leg has a non-finite field: {self}")
        if self.strike <= 0.0 or self.forward <= 0.0 or self.t < 0.0 or self.vol < 0.0:
            raise ValueError(f"margin leg needs strike, forward > 0 and t, vol >= 0: {self}")
        if not 0.0 < self.discount <= 1.5:
            raise ValueError(f"margin leg discount factor out of range: {self}")


def leg_on_smile(
    strike: float,
    expiry: date,
    is_call: bool,
    quantity: float,
    forward: float,
    t: float,
    smile: sabr.SabrFit,
    discount: float = 1.0,
) -> MarginLeg:
    """A position whose vol is read off its expiry's fitted SABR smile at its strike."""
    return MarginLeg(
        strike=strike,
        expiry=expiry,
        is_call=is_call,
        quantity=quantity,
        vol=sabr.smile_vol(forward, strike, t, smile),
        forward=forward,
        t=t,
        discount=discount,
    )


@dataclass(frozen=True, slots=True)
class MarginBreakdown:
    """Every part of the requirement in rupees, and the scenario (1-16) that set the scanning risk."""

    scanning_risk: float
    calendar_spread_charge: float
    short_option_minimum: float
    net_option_value: float
    span: float
    exposure_margin: float
    expiry_day_elm: float
    worst_scenario: int

    @property
    def total(self) -> float:
        return self.span + self.exposure_margin + self.expiry_day_elm


def _columns(legs: Sequence[MarginLeg]) -> tuple[Float64Array, ...]:
    return tuple(
        np.array([getattr(leg, name) for leg in legs], dtype=np.float64)
        for name in ("strike", "quantity", "vol", "forward", "t", "discount")
    )


def risk_arrays(legs: Sequence[MarginLeg], ranges: ScanRanges) -> Float64Array:
    """Loss of each position in each of the 16 scenarios, shape (len(legs), 16), loss share applied."""
    return _risk_and_value(legs, ranges)[0]


def _risk_and_value(legs: Sequence[MarginLeg], ranges: ScanRanges) -> tuple[Float64Array, Float64Array]:
    """The risk arrays and each position's value now (what the net option value sums)."""
    if len(legs) == 0:
        return np.zeros((0, len(SCENARIOS))), np.zeros(0)
    strike, quantity, vol, forward, t, discount = _columns(legs)
    is_call = np.array([leg.is_call for leg in legs])
    shocked_forward = forward[:, None] * (1.0 + _PRICE_MOVES[None, :] * ranges.price)
    shocked_vol = np.maximum(vol[:, None] + _VOL_MOVES[None, :] * ranges.vol, VOL_FLOOR)
    # Today's market as column 0 beside the 16 scenarios: one pricing pass (Black-76 is elementwise,
    # so each price is the one a separate call would give).
    prices = black76.price(
        np.concatenate((forward[:, None], shocked_forward), axis=1),
        strike[:, None],
        t[:, None],
        np.concatenate((vol[:, None], shocked_vol), axis=1),
        is_call[:, None],
        discount[:, None],
    )
    now, after = prices[:, 0], prices[:, 1:]
    loss: Float64Array = (now[:, None] - after) * quantity[:, None] * _COVER[None, :]
    return loss, now


def _scanning_risk(arrays: Float64Array) -> tuple[float, int]:
    summed = arrays.sum(axis=0)
    worst = int(np.argmax(summed))
    return max(float(summed[worst]), 0.0), worst + 1


def _calendar_spread_charge(legs: Sequence[MarginLeg], pct: float) -> float:
    """Delta spreading between expiries, nearest pairs first; the far leg's forward values the charge."""
    deltas: dict[date, float] = {}
    forwards: dict[date, float] = {}
    if len({leg.expiry for leg in legs}) > 1:  # one expiry has nothing to spread against
        strike, quantity, vol, forward, t, discount = _columns(legs)
        is_call = np.array([leg.is_call for leg in legs])
        leg_delta = black76.greeks(forward, strike, t, vol, is_call, discount).delta * quantity
        for leg, delta in zip(legs, leg_delta, strict=True):
            deltas[leg.expiry] = deltas.get(leg.expiry, 0.0) + float(delta)
            forwards[leg.expiry] = leg.forward
    expiries = sorted(deltas)
    remaining = [deltas[e] for e in expiries]
    charge = 0.0
    for i in range(len(expiries)):
        for j in range(i + 1, len(expiries)):
            if remaining[i] * remaining[j] < 0.0:
                spread = min(abs(remaining[i]), abs(remaining[j]))
                charge += pct / 100.0 * forwards[expiries[j]] * spread
                remaining[i] -= math.copysign(spread, remaining[i])
                remaining[j] -= math.copysign(spread, remaining[j])
    return charge


def _short_option_minimum(legs: Sequence[MarginLeg], underlying: float, pct: float) -> float:
    net: dict[tuple[date, bool], float] = {}
    for leg in legs:
        key = (leg.expiry, leg.is_call)
        net[key] = net.get(key, 0.0) + leg.quantity
    uncovered = sum(-q for q in net.values() if q < 0.0)
    return pct / 100.0 * underlying * uncovered


def portfolio_margin(
    legs: Sequence[MarginLeg],
    underlying: float,
    ranges: ScanRanges,
    valuation_date: date,
    params: MarginParameters,
) -> MarginBreakdown:
    """SPAN plus exposure margin (and the expiry-day ELM) of `legs` on `valuation_date`.

    `underlying` is the index level that values notionals (the previous close in NSE's files, the live
    spot in a pre-trade check)."""
    if not (math.isfinite(underlying) and underlying > 0.0):
        raise ValueError(f"underlying must be finite and > 0, got {underlying}")
    if any(leg.expiry < valuation_date for leg in legs):
        raise ValueError(f"a leg expired before {valuation_date}; margin is for open positions")
    separate_today = NO_CALENDAR_BENEFIT_ON_EXPIRY_DAY.in_force(valuation_date)
    expiring = [leg for leg in legs if separate_today and leg.expiry == valuation_date]
    spread_legs = [leg for leg in legs if not (separate_today and leg.expiry == valuation_date)]

    spread_arrays, spread_values = _risk_and_value(spread_legs, ranges)
    scanning_risk, worst = _scanning_risk(spread_arrays)
    if expiring:
        expiring_risk, expiring_worst = _scanning_risk(risk_arrays(expiring, ranges))
        if expiring_risk > scanning_risk:
            worst = expiring_worst
        scanning_risk += expiring_risk
    spread_charge = _calendar_spread_charge(spread_legs, params.calendar_spread_pct)
    minimum = _short_option_minimum(legs, underlying, params.short_option_minimum_pct)

    if legs and not expiring:
        # The same legs in the same order as the scan just valued: their prices now are its `now`.
        quantity = np.array([leg.quantity for leg in legs], dtype=np.float64)
        net_option_value = float(np.sum(spread_values * quantity))
    elif legs:
        strike, quantity, vol, forward, t, discount = _columns(legs)
        is_call = np.array([leg.is_call for leg in legs])
        net_option_value = float(np.sum(black76.price(forward, strike, t, vol, is_call, discount) * quantity))
    else:
        net_option_value = 0.0
    span = max(max(scanning_risk + spread_charge, minimum) - net_option_value, 0.0)

    short_units = sum(-leg.quantity for leg in legs if leg.quantity < 0.0)
    exposure = params.exposure_pct / 100.0 * underlying * short_units
    elm = 0.0
    if EXPIRY_DAY_ELM.in_force(valuation_date):
        expiring_short = sum(
            -leg.quantity for leg in legs if leg.quantity < 0.0 and leg.expiry == valuation_date
        )
        elm = params.expiry_day_elm_pct / 100.0 * underlying * expiring_short
    return MarginBreakdown(
        scanning_risk=scanning_risk,
        calendar_spread_charge=spread_charge,
        short_option_minimum=minimum,
        net_option_value=net_option_value,
        span=span,
        exposure_margin=exposure,
        expiry_day_elm=elm,
        worst_scenario=worst,
    )
