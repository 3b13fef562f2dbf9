"""One bucket's entry: from the rule's structure to a priced, sized proposal (or why not).

`propose` builds the legs (structures), prices them (pricing), sizes them (sizing) and finishes the
figures an intent carries: costs from the dated charges schedule (a round trip at the leg limits),
the structure's Greeks in risk-limit units, a SPAN-style margin estimate, and the expected value net
of costs under the smile's density.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import numpy as np

from volguard_common.charges import (
    ChargeRates,
    ChargeSchedule,
    DatedRate,
    StructureLeg,
    nse_option_charges,
    round_to_paisa,
    structure_charges,
)
from volguard_common.events import Bucket, Side, Structure
from volguard_common.events.orders import UNDEFINED_RISK_STRUCTURES
from volguard_common.quant import margin as span
from volguard_common.quant.book_greeks import BookGreeks, book_greeks
from volguard_common.quant.stress import OptionLeg
from volguard_strategy.domain import pricing, sizing
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import ExpiryMarket
from volguard_strategy.domain.structures import Candidate

TRADING_DAYS_PER_YEAR = 252.0


@dataclass(frozen=True, slots=True)
class Proposal:
    """A priced, sized structure for one bucket."""

    bucket: Bucket
    candidate: Candidate
    lots: int
    lot_size: int
    quantity: int  # units per leg
    credit: Decimal  # rupees for the whole quantity, positive received
    max_loss: Decimal
    max_loss_basis: str
    max_profit: Decimal | None
    breakevens: tuple[float, ...]
    probability_of_profit: float
    probability_of_touch: float | None
    costs: Decimal
    expected_value: Decimal  # net of costs
    margin: Decimal
    reasons: tuple[str, ...]
    markets: dict[date, ExpiryMarket]
    spot: float

    @property
    def structure(self) -> Structure:
        return self.candidate.structure

    def greeks(self) -> BookGreeks:
        """The structure's Greeks in risk-limit units (computed when an intent needs them)."""
        return book_greeks(option_legs(self.candidate, self.markets, self.quantity), self.spot)


@dataclass(frozen=True, slots=True)
class Declined:
    """A candidate that priced but could not be sized (zero lots) or priced at all, with why."""

    reason: str


def option_legs(
    candidate: Candidate, markets: dict[date, ExpiryMarket], quantity: int, *, on_smile: bool = True
) -> list[OptionLeg]:
    """The legs for quant.stress / book_greeks. `on_smile=False` keeps each leg at its own vol in every
    scenario (cheaper): enough to tell whether two books move together, not to price a stress loss."""
    out = []
    for leg in candidate.legs:
        market = markets[leg.quote.expiry]
        out.append(
            OptionLeg(
                strike=leg.quote.strike, t=market.t, is_call=leg.is_call,
                quantity=leg.sign * quantity, vol=leg.quote.iv, forward=market.forward,
                smile=market.smile if on_smile else None,
            )
        )  # fmt: skip
    return out


def margin_estimate(
    candidate: Candidate, markets: dict[date, ExpiryMarket], quantity: int, spot: float, today: date,
    config: StrategyConfig,
) -> float:  # fmt: skip
    """SPAN + exposure margin of the structure (quant.margin). The scan range needs NIFTY's EWMA vol,
    which strategy does not see; the near expiry's ATM implied vol stands in for it (annual, and /sqrt(252)
    daily) - usually a little above realised, so the estimate errs high."""
    near = markets[min(markets)]
    vol = near.block.atm_iv or near.block.atm_iv or 0.0
    ranges = span.scan_ranges(vol / math.sqrt(TRADING_DAYS_PER_YEAR), vol, config.margin)
    legs = [
        span.MarginLeg(
            strike=leg.quote.strike, expiry=leg.quote.expiry, is_call=leg.is_call,
            quantity=leg.sign * quantity, vol=leg.quote.iv, forward=markets[leg.quote.expiry].forward,
            t=markets[leg.quote.expiry].t,
        )
        for leg in candidate.legs
    ]  # fmt: skip
    return span.portfolio_margin(legs, spot, ranges, today, config.margin).total


class _RatesByDay(ChargeSchedule):
    """The packaged charges schedule with each day's rates looked up once: a structure's round trip
    asks for the same day's rates twice per leg, and an evaluation costs several structures."""

    def __init__(self, schedule: ChargeSchedule) -> None:
        self._schedule = schedule
        self.starts = schedule.starts
        self._days: dict[date, ChargeRates] = {}

    def rate(self, charge: str, day: date) -> DatedRate:
        return self._schedule.rate(charge, day)

    def rates_on(self, day: date) -> ChargeRates:
        known = self._days.get(day)
        if known is None:
            known = self._days[day] = self._schedule.rates_on(day)
        return known


@functools.cache
def _packaged_rates() -> _RatesByDay:
    return _RatesByDay(nse_option_charges())


def round_trip_costs(candidate: Candidate, quantity: int, today: date, config: StrategyConfig) -> Decimal:
    """Charges of opening every leg at its limit and closing it at the same premium (the schedule of
    `today` both ways): the cost of the trade's orders, whatever it ends up worth."""
    legs = [
        StructureLeg(side=leg.side, quantity=quantity, entry_premium=leg.limit, exit_premium=leg.limit)
        for leg in candidate.legs
    ]
    return structure_charges(
        legs, today, today, brokerage_per_order=config.brokerage_per_order, schedule=_packaged_rates()
    ).total


@dataclass(frozen=True, slots=True)
class Priced:
    """A candidate's payoff figures and odds: what ranks it, before sizing, margin and costs."""

    bucket: Bucket
    candidate: Candidate
    near: ExpiryMarket
    far: ExpiryMarket | None
    figures: pricing.PayoffFigures
    odds: pricing.Odds
    expected_payoff: float  # per unit, gross of costs, under the forecast density when there is one
    max_loss_per_lot: float
    basis: str

    @property
    def markets(self) -> dict[date, ExpiryMarket]:
        markets = {self.near.expiry: self.near}
        if self.far is not None:
            markets[self.far.expiry] = self.far
        return markets

    @property
    def edge(self) -> float:
        """Expected payoff per rupee at risk, gross of costs: the screening score of alternatives."""
        return self.expected_payoff * self.near.chain.lot_size / self.max_loss_per_lot


def price(
    bucket: Bucket,
    candidate: Candidate,
    near: ExpiryMarket,
    far: ExpiryMarket | None,
    distribution: pricing.Distribution,
    forecast: pricing.Distribution | None,
) -> Priced | Declined:
    """Payoff figures and odds of `candidate`. `distribution` is the near expiry's risk-neutral density
    (probabilities); `forecast` the same density with its width set by the forecast vol (expected value:
    the seller's edge is implied over forecast vol; under the risk-neutral density alone every trade
    at mid is worth nothing but its costs). None: no forecast, the expected value is risk-neutral."""
    lot_size = near.chain.lot_size
    legs = candidate.legs
    spots = distribution.mids
    multi_expiry = len({leg.quote.expiry for leg in legs}) > 1
    # The values are elementwise in the spot: both densities' grids go through in one pass.
    grid = spots if forecast is None else np.concatenate((spots, forecast.mids))
    if multi_expiry:
        both = pricing.near_expiry_values(legs, near, far, grid)
        values = both[: len(spots)]
        figures = pricing.grid_figures(values, spots)
        basis = "near expiry, far leg on the smile"
    else:
        both = pricing.expiry_payoff(legs, grid)
        values = both[: len(spots)]
        figures = pricing.single_expiry_figures(legs)
        basis = "expiry payoff"
    odds = pricing.odds(values, distribution, candidate.short_strikes)
    expected_payoff = odds.expected_payoff
    if forecast is not None:
        expected_payoff = float(np.sum(forecast.mass * both[len(spots) :]))
    markets = {near.expiry: near} if far is None else {near.expiry: near, far.expiry: far}
    if candidate.structure in UNDEFINED_RISK_STRUCTURES or figures.max_loss is None:
        max_loss_per_lot = sizing.worst_stress_loss(option_legs(candidate, markets, lot_size))
        basis = "stress grid"
    else:
        max_loss_per_lot = figures.max_loss * lot_size
    if max_loss_per_lot <= 0.0:
        return Declined(f"{candidate.structure.value}: no loss in any scenario - the quotes are not a market")
    return Priced(bucket, candidate, near, far, figures, odds, expected_payoff, max_loss_per_lot, basis)


def finish(
    priced: Priced,
    spot: float,
    today: date,
    config: StrategyConfig,
    severity_multiplier: float,
    free_capital: Decimal,
    book_scenarios: np.ndarray | None,
) -> Proposal | Declined:
    """Size a priced candidate and complete its figures (margin, costs, expected value net of them)."""
    bucket, candidate, markets = priced.bucket, priced.candidate, priced.markets
    lot_size = priced.near.chain.lot_size
    max_loss_per_lot = priced.max_loss_per_lot
    figures, odds = priced.figures, priced.odds
    budget = config.risk_budget(bucket)
    # SPAN scanning risk, the short-option minimum and exposure margin are all linear in the quantity
    # of one structure, so one lot's estimate scales.
    margin_per_lot = margin_estimate(candidate, markets, lot_size, spot, today, config)
    correlation_lots: float | None = None
    reasons = list(candidate.reasons)
    said_of_book: list[str] = []
    if book_scenarios is not None:
        correlation_lots, said = sizing.correlation_cap(
            book_scenarios,
            sizing.scenario_pnls(option_legs(candidate, markets, lot_size, on_smile=False)),
            float(config.account_size * config.portfolio_loss_budget_pct / 100),
            config.correlation_threshold,
        )
        said_of_book.append(said)
        reasons.append(said)
    sized = sizing.size(
        max_loss_per_lot, budget, severity_multiplier, margin_per_lot, free_capital, correlation_lots
    )
    reasons.extend(sized.reasons)
    if sized.lots == 0:
        return Declined(
            f"{candidate.structure.value}: zero lots - " + "; ".join([*said_of_book, *sized.reasons])
        )
    quantity = sized.lots * lot_size
    credit = pricing.net_credit(candidate.legs) * quantity
    costs = round_trip_costs(candidate, quantity, today, config)
    expected = round_to_paisa(Decimal(repr(priced.expected_payoff * quantity)) - costs)
    margin_total = margin_per_lot * sized.lots
    return Proposal(
        bucket=bucket,
        candidate=candidate,
        lots=sized.lots,
        lot_size=lot_size,
        quantity=quantity,
        credit=credit,
        max_loss=round_to_paisa(Decimal(repr(max_loss_per_lot * sized.lots))),
        max_loss_basis=priced.basis,
        max_profit=None
        if figures.max_profit is None
        else round_to_paisa(Decimal(repr(figures.max_profit * quantity))),
        breakevens=figures.breakevens,
        probability_of_profit=odds.probability_of_profit,
        probability_of_touch=odds.probability_of_touch,
        costs=costs,
        expected_value=expected,
        margin=round_to_paisa(Decimal(repr(margin_total))),
        reasons=tuple(reasons),
        markets=markets,
        spot=spot,
    )


def legs_side_sorted(candidate: Candidate) -> Sequence[pricing.Leg]:
    """Buys before sells: the order risk will execute them in, and how the intent lists them."""
    return sorted(candidate.legs, key=lambda leg: (leg.side is Side.SELL, leg.quote.expiry, leg.quote.strike))
