"""Strikes: which options a structure is made of, picked on the chain's grid from our own Greeks.

Short strikes: the strike nearest the money whose |delta| (the surface's Black-76 delta on the fitted
vols) is at most the bucket's target, pushed further out until it is at least `expected_move_buffer`
expected moves (the straddle-implied move to expiry) from the forward. Wings: a width from the IV level
(a share of the expected move, which IV sets) capped by the per-trade risk budget (one lot's width in
rupees fits the budget), at least one strike step. A leg whose quote is flagged, too wide or too thin
is skipped and the next strike out is tried; what was skipped is said in the reasons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from volguard_common.events import OptionType, Side, Structure
from volguard_common.events.vol import SkewSignal
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import ExpiryMarket, Quote
from volguard_strategy.domain.pricing import Leg, tick_limit

# Defensive condor: shorts at this share of the target delta, buffer and wings this much wider.
DEFENSIVE_DELTA_SHARE = 0.6
DEFENSIVE_WIDTH = 1.5
# How many strikes outwards a leg may be moved past untradable quotes.
MAX_SKIPS = 6


@dataclass(frozen=True, slots=True)
class Candidate:
    structure: Structure
    legs: tuple[Leg, ...]
    reasons: tuple[str, ...]

    @property
    def short_strikes(self) -> tuple[tuple[float, bool], ...]:
        return tuple((leg.quote.strike, leg.is_call) for leg in self.legs if leg.side is Side.SELL)


class NoCandidate(Exception):
    """No tradable set of strikes: the bucket waits, with this reason."""


def _leg(quote: Quote, side: Side, tick: float) -> Leg:
    return Leg(quote, side, tick_limit(quote.mid, tick, side))


def _walk(
    market: ExpiryMarket,
    start: float,
    option_type: OptionType,
    outward: float,
    config: StrategyConfig,
    skipped: list[str],
) -> Quote:
    """The first tradable quote from `start` moving `outward` (+1 up, -1 down) on the grid."""
    step = market.strike_step
    strike = start
    for _ in range(MAX_SKIPS + 1):
        found = market.quote(strike, option_type, config)
        if isinstance(found, Quote):
            return found
        skipped.append(f"skipped {found}")
        strike += outward * step
    raise NoCandidate(
        f"no tradable {option_type.value} within {MAX_SKIPS} strikes of {start:g}: {skipped[-1]}"
    )


def _on_grid(market: ExpiryMarket, level: float) -> float:
    step = market.strike_step
    base = float(market.strike[0])
    return base + step * math.floor((level - base) / step + 0.5)


def _short(
    market: ExpiryMarket,
    option_type: OptionType,
    target_delta: float,
    buffer_points: float,
    config: StrategyConfig,
    skipped: list[str],
) -> Quote:
    """The short strike by delta, pushed out by the buffer (see the module notes)."""
    call = option_type is OptionType.CE
    surface = market.block.surface
    deltas = surface.call_delta if call else surface.put_delta
    forward = market.forward
    strikes = surface.strike
    # Out of the money and at most the target |delta| (NaN, an unknown delta, fails the comparison).
    otm = strikes > forward if call else strikes < forward
    eligible = np.flatnonzero(otm & (np.abs(deltas) <= target_delta))
    by_delta: float | None = None
    if len(eligible):
        # The one nearest the money: the lowest such call strike, the highest such put strike.
        by_delta = float(strikes[eligible[0] if call else eligible[-1]])
    if by_delta is None:
        raise NoCandidate(
            f"{market.expiry}: no {option_type.value} strike with |delta| <= {target_delta:.2f}"
        )
    floor_distance = buffer_points
    strike = max(by_delta, forward + floor_distance) if call else min(by_delta, forward - floor_distance)
    strike = _on_grid(market, strike)
    if call and strike < by_delta:
        strike += market.strike_step
    if not call and strike > by_delta:
        strike -= market.strike_step
    return _walk(market, strike, option_type, 1.0 if call else -1.0, config, skipped)


def wing_width(market: ExpiryMarket, budget: Decimal, share: float) -> float:
    """Wing width in points: `share` of the expected move, capped so that one lot's width fits the
    risk budget, on the grid and at least one step."""
    step = market.strike_step
    move = market.block.expected_move
    if move is None:
        raise NoCandidate(f"{market.expiry}: no expected move to set the wings from")
    lot = market.chain.lot_size
    cap = float(budget) / lot
    width = min(share * move.points, cap)
    return max(step, step * math.floor(width / step))


def _spread(
    market: ExpiryMarket,
    option_type: OptionType,
    delta: float,
    buffer: float,
    width: float,
    config: StrategyConfig,
    skipped: list[str],
) -> tuple[Leg, Leg]:
    """A vertical's short and wing. A bucket's condor and its one-sided alternatives build the same
    verticals, so each is built once per snapshot (`market.spreads`), skips and refusals included."""
    key = (option_type, delta, buffer, width, config.max_spread_share, config.min_open_interest_lots)
    known = market.spreads.get(key)
    if known is None:
        said: list[str] = []
        built: tuple[Leg, Leg] | str
        try:
            built = _build_spread(market, option_type, delta, buffer, width, config, said)
        except NoCandidate as none:
            built = str(none)
        known = market.spreads[key] = (built, tuple(said))
    built, said_then = known
    skipped.extend(said_then)
    if isinstance(built, str):
        raise NoCandidate(built)
    return built


def _build_spread(
    market: ExpiryMarket,
    option_type: OptionType,
    delta: float,
    buffer: float,
    width: float,
    config: StrategyConfig,
    skipped: list[str],
) -> tuple[Leg, Leg]:
    call = option_type is OptionType.CE
    tick = market.chain.tick_size
    short = _short(market, option_type, delta, buffer, config, skipped)
    wing_start = short.strike + width if call else short.strike - width
    wing = _walk(market, wing_start, option_type, 1.0 if call else -1.0, config, skipped)
    return _leg(short, Side.SELL, tick), _leg(wing, Side.BUY, tick)


def build(
    structure: Structure,
    near: ExpiryMarket,
    far: ExpiryMarket | None,
    target_delta: float,
    budget: Decimal,
    skew: SkewSignal,
    config: StrategyConfig,
) -> Candidate:
    """The legs of `structure` on `near` (and `far` for calendars and diagonals)."""
    move = near.block.expected_move
    if move is None:
        raise NoCandidate(f"{near.expiry}: no expected move (no ATM straddle) to place strikes from")
    skipped: list[str] = []
    reasons: list[str] = []
    buffer = config.expected_move_buffer * move.points
    width = wing_width(near, budget, config.wing_expected_move_share)
    tick = near.chain.tick_size
    legs: list[Leg]
    if structure in (Structure.IRON_CONDOR, Structure.DEFENSIVE_IRON_CONDOR):
        delta = target_delta
        if structure is Structure.DEFENSIVE_IRON_CONDOR:
            delta *= DEFENSIVE_DELTA_SHARE
            buffer *= DEFENSIVE_WIDTH
            # Wider by the IV share, still capped by the budget: one lot must fit it.
            width = wing_width(near, budget, config.wing_expected_move_share * DEFENSIVE_WIDTH)
        put_short, put_wing = _spread(near, OptionType.PE, delta, buffer, width, config, skipped)
        call_short, call_wing = _spread(near, OptionType.CE, delta, buffer, width, config, skipped)
        legs = [put_wing, put_short, call_short, call_wing]
        reasons.append(
            f"shorts at |delta| <= {delta:.2f} and >= {buffer:.0f} points ({buffer / move.points:.2f} "
            f"expected moves) from the forward {near.forward:.0f}; wings {width:.0f} points out"
        )
    elif structure in (Structure.BULL_PUT_SPREAD, Structure.BEAR_CALL_SPREAD):
        option_type = OptionType.PE if structure is Structure.BULL_PUT_SPREAD else OptionType.CE
        short, wing = _spread(near, option_type, target_delta, buffer, width, config, skipped)
        legs = [wing, short]
        reasons.append(
            f"short {option_type.value} at |delta| <= {target_delta:.2f}, >= {buffer:.0f} points from the "
            f"forward; wing {width:.0f} points out"
        )
    elif structure is Structure.IRON_FLY:
        atm = _on_grid(near, near.forward)
        put_body = _walk(near, atm, OptionType.PE, -1.0, config, skipped)
        call_body = _walk(near, atm, OptionType.CE, 1.0, config, skipped)
        fly_width = max(width, near.strike_step * 2)
        put_guard = _walk(near, put_body.strike - fly_width, OptionType.PE, -1.0, config, skipped)
        call_guard = _walk(near, call_body.strike + fly_width, OptionType.CE, 1.0, config, skipped)
        legs = [
            _leg(put_guard, Side.BUY, tick),
            _leg(put_body, Side.SELL, tick),
            _leg(call_body, Side.SELL, tick),
            _leg(call_guard, Side.BUY, tick),
        ]
        reasons.append(f"short straddle at {atm:g} (the pin), wings {fly_width:.0f} points out")
    elif structure in (Structure.STRANGLE, Structure.STRADDLE):
        if structure is Structure.STRADDLE:
            atm = _on_grid(near, near.forward)
            put_body = _walk(near, atm, OptionType.PE, -1.0, config, skipped)
            call_body = _walk(near, atm, OptionType.CE, 1.0, config, skipped)
        else:
            put_body = _short(near, OptionType.PE, target_delta, buffer, config, skipped)
            call_body = _short(near, OptionType.CE, target_delta, buffer, config, skipped)
        legs = [_leg(put_body, Side.SELL, tick), _leg(call_body, Side.SELL, tick)]
        reasons.append("undefined risk (enabled by setting): max loss is the stress grid's worst case")
    elif structure in (Structure.CALENDAR, Structure.DIAGONAL):
        if far is None:
            raise NoCandidate(f"no expiry after {near.expiry} in the snapshot for the far leg")
        if structure is Structure.CALENDAR:
            atm = _on_grid(near, near.forward)
            near_quote = _walk(near, atm, OptionType.CE, 1.0, config, skipped)
            far_quote = _walk(far, near_quote.strike, OptionType.CE, 1.0, config, skipped)
            reasons.append(f"sell the {near.expiry} {near_quote.strike:g} CE, buy the {far.expiry} one")
        else:
            option_type = OptionType.PE if skew is SkewSignal.PUT_SKEWED else OptionType.CE
            is_call = option_type is OptionType.CE
            near_quote = _short(near, option_type, target_delta, buffer, config, skipped)
            far_start = near_quote.strike - width if is_call else near_quote.strike + width
            far_quote = _walk(far, far_start, option_type, -1.0 if is_call else 1.0, config, skipped)
            reasons.append(
                f"sell the {near.expiry} {near_quote.strike:g} {option_type.value} on the steep side of the "
                f"skew, buy the {far.expiry} {far_quote.strike:g} {option_type.value} {width:.0f} points "
                "nearer the money"
            )
        legs = [_leg(far_quote, Side.BUY, far.chain.tick_size), _leg(near_quote, Side.SELL, tick)]
    else:
        raise NoCandidate(f"{structure.value} is not a structure strategy builds")
    reasons.extend(skipped)
    return Candidate(structure, tuple(legs), tuple(reasons))


def strikes_of(legs: Sequence[Leg]) -> str:
    return ", ".join(f"{leg.side.value} {leg.quote.strike:g} {leg.quote.option_type.value}" for leg in legs)
