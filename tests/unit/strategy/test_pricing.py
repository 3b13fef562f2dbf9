"""Pricing: exact expiry figures against an independent payoff scan, tick-rounded limits, the smile's
density, and costs against a hand computation from the published rates."""

from __future__ import annotations

import math
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.strategy.market import TS, empty_portfolio, market, running
from volguard_common.events import Bucket, IntentKind, OptionType, Side, Structure
from volguard_common.events.vol import SkewSignal
from volguard_common.quant import black76, sabr
from volguard_strategy.domain import pricing
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import ExpiryMarket, Quote, expiry_market
from volguard_strategy.domain.strategist import Strategist
from volguard_strategy.domain.structures import build

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WEEKLY = date(2025, 12, 23)


def _near() -> ExpiryMarket:
    snapshot, chains = market()
    return expiry_market(snapshot.expiry_vol(WEEKLY), chains, snapshot.ts_event)


def _brute_payoff(legs: list[pricing.Leg], spots: np.ndarray) -> np.ndarray:
    """Payoff at expiry written out leg by leg, independently of pricing.expiry_payoff."""
    total = np.zeros_like(spots)
    for leg in legs:
        k = leg.quote.strike
        value = (
            np.where(spots > k, spots - k, 0.0)
            if leg.quote.option_type is OptionType.CE
            else np.where(spots < k, k - spots, 0.0)
        )
        premium = float(leg.limit)
        total += (value - premium) if leg.side is Side.BUY else (premium - value)
    return total


def _quote(strike: float, option_type: OptionType) -> Quote:
    return Quote(WEEKLY, strike, option_type, f"K{strike:g}{option_type.value}", 10.0, 10.5, 1000, 0.13, 0.2)


legs_strategy = st.lists(
    st.tuples(
        st.integers(480, 560).map(lambda i: 50.0 * i),
        st.sampled_from(OptionType),
        st.sampled_from(Side),
        st.decimals(min_value=Decimal("0.05"), max_value=Decimal("400"), places=2),
    ),
    min_size=1,
    max_size=4,
)


@PROPERTY
@given(raw=legs_strategy)
def test_single_expiry_figures_match_an_independent_payoff_scan(
    raw: list[tuple[float, OptionType, Side, Decimal]],
) -> None:
    legs = [pricing.Leg(_quote(k, t), side, limit) for k, t, side, limit in raw]
    figures = pricing.single_expiry_figures(legs)
    # Every listed strike is a multiple of 0.5, so the scan holds every kink; it starts at S = 0.
    spots = np.concatenate([[1e-9], np.arange(0.5, 3.0 * max(k for k, *_ in raw), 0.5)])
    scan = _brute_payoff(legs, spots)
    net_short_calls = sum((1 if side is Side.SELL else -1) for _, t, side, _ in raw if t is OptionType.CE)
    if net_short_calls > 0:
        assert figures.max_loss is None
    else:
        assert figures.max_loss is not None
        assert abs(figures.max_loss - max(0.0, -scan.min())) < 1e-6
    if net_short_calls < 0:
        assert figures.max_profit is None
    else:
        assert figures.max_profit is not None
        assert abs(figures.max_profit - max(0.0, scan.max())) < 1e-6
    # Every breakeven is a zero of the payoff, and every sign change of the scan has one nearby.
    for b in figures.breakevens:
        assert abs(float(_brute_payoff(legs, np.array([b]))[0])) < 1e-6
    changes = spots[1:][np.sign(scan[1:]) * np.sign(scan[:-1]) < 0]
    for x in changes:
        assert any(abs(x - b) <= 0.5 + 1e-9 for b in figures.breakevens)


@PROPERTY
@given(mid=st.floats(0.01, 5000.0), side=st.sampled_from(Side))
def test_limits_are_on_the_tick_within_half_a_tick_of_the_mid(mid: float, side: Side) -> None:
    limit = pricing.tick_limit(mid, 0.05, side)
    assert limit % Decimal("0.05") == 0
    assert limit >= Decimal("0.05")
    if mid >= 0.05:
        assert abs(float(limit) - mid) <= 0.025 + 1e-9


def test_smile_density_is_a_distribution_centred_on_the_forward_with_the_skews_fat_put_tail() -> None:
    near = _near()
    density = pricing.smile_distribution(near)
    assert isinstance(density, pricing.Distribution)
    assert abs(density.mass.sum() - 1.0) < 1e-9
    assert np.all(density.mass >= 0.0)
    mean = float(np.sum(density.mass * density.mids))
    assert abs(mean / near.forward - 1.0) < 2e-3
    # Under a flat vol at the ATM level a 4 % fall is less likely than the put-skewed smile says.
    atm = near.block.atm_iv
    assert atm is not None
    low = near.forward * 0.96
    t = near.t
    d2 = (np.log(near.forward / low) - 0.5 * atm * atm * t) / (atm * np.sqrt(t))
    flat = 0.5 * (1 + math.erf(-float(d2) / math.sqrt(2.0)))
    assert density.probability_beyond(low, above=False) > flat
    # A digital from the density matches the smile's call-spread price.
    k = near.forward * 1.02
    eps = 1.0
    smile = near.smile
    assert smile is not None
    vols = sabr.vol(
        near.forward, np.array([k - eps, k + eps]), t, smile.alpha, smile.beta, smile.rho, smile.nu
    )
    calls = black76.price(near.forward, np.array([k - eps, k + eps]), t, vols, True, 1.0)
    digital = float((calls[0] - calls[1]) / (2 * eps))
    assert abs(density.probability_beyond(k, above=True) - digital) < 5e-3


def test_bull_put_and_bear_call_spreads_are_one_sided_credit_spreads() -> None:
    near = _near()
    for structure, option_type in (
        (Structure.BULL_PUT_SPREAD, OptionType.PE),
        (Structure.BEAR_CALL_SPREAD, OptionType.CE),
    ):
        candidate = build(structure, near, None, 0.16, Decimal(8000), SkewSignal.NEUTRAL, StrategyConfig())
        assert {leg.quote.option_type for leg in candidate.legs} == {option_type}
        short = next(leg for leg in candidate.legs if leg.side is Side.SELL)
        wing = next(leg for leg in candidate.legs if leg.side is Side.BUY)
        assert abs(short.quote.delta) <= 0.16
        assert (wing.quote.strike < short.quote.strike) == (option_type is OptionType.PE)
        assert pricing.net_credit(candidate.legs) > 0
        figures = pricing.single_expiry_figures(candidate.legs)
        width = abs(short.quote.strike - wing.quote.strike)
        assert figures.max_loss is not None
        assert abs(figures.max_loss - (width - float(pricing.net_credit(candidate.legs)))) < 1e-9


def _hand_round_trip(legs: list[tuple[Side, Decimal, int]]) -> Decimal:
    """Open and close each leg at its limit under the schedule in force in December 2025 (STT 0.1 % of
    a sale, NSE 0.03503 % + IPFT 0.0005 %, SEBI Rs 10 a crore, stamp 0.003 % of a purchase, GST 18 %
    on brokerage + exchange + SEBI, Rs 20 an order), summed exactly and rounded once."""
    total = Decimal(0)
    for side, price, quantity in legs:
        turnover = price * quantity
        for trade_side in (side, Side.SELL if side is Side.BUY else Side.BUY):
            brokerage = Decimal(20)
            exchange = turnover * (Decimal("0.0003503") + Decimal("0.000005"))
            sebi = turnover * Decimal(10) / Decimal(10_000_000)
            stt = turnover * Decimal("0.001") if trade_side is Side.SELL else Decimal(0)
            stamp = turnover * Decimal("0.00003") if trade_side is Side.BUY else Decimal(0)
            gst = (brokerage + exchange + sebi) * Decimal("0.18")
            total += brokerage + exchange + sebi + stt + stamp + gst
    return total.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_an_iron_condor_intent_costs_its_hand_computed_round_trip() -> None:
    snapshot, chains = market()
    strategist = Strategist(StrategyConfig())
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    evaluation = strategist.on_vol(snapshot, chains)
    condor = next(i for i in evaluation.intents if i.bucket is Bucket.WEEKLY)
    assert condor.structure is Structure.IRON_CONDOR
    assert condor.kind is IntentKind.ENTRY
    assert condor.pricing is not None
    hand = _hand_round_trip([(leg.side, leg.limit_price, leg.quantity) for leg in condor.legs])
    assert condor.pricing.costs == hand
    assert TS.date() == date(2025, 12, 17)
