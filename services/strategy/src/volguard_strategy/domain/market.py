"""What strategy reads of the market: the signals the rule table uses, each bucket's expiry, and the
tradable quotes of an expiry (the chain's bid/ask/OI/instrument keys joined to the surface's Greeks).

The VolSnapshot carries IVs, Greeks and flags per strike but no bid, ask, open interest or instrument
key: those stay in the ChainSnapshots it was computed from (`VolSnapshot.chain_event_ids`), which the
service hands over with it. A leg is priced and filtered on the chain's own quotes, never on a number
made up from the surface.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np

from volguard_common import clock
from volguard_common.events import Bucket, ChainSnapshot, OptionType, QuoteFlag
from volguard_common.events.vol import (
    EventSeverity,
    ExpiryVol,
    IvFlag,
    PremiumSignal,
    Quality,
    Regime,
    SkewSignal,
    TermSignal,
    VolSnapshot,
)
from volguard_common.quant import sabr
from volguard_common.quant._types import Float64Array, Int64Array
from volguard_strategy.domain.config import StrategyConfig

if TYPE_CHECKING:  # pricing reads markets: a runtime import would be a cycle
    from volguard_strategy.domain.pricing import Leg

# A vertical's identity on one expiry: type, target delta, buffer, width and the quote filters.
SpreadKey = tuple[OptionType, float, float, float, float, int]

# A quote with any of these is not a price strategy trades at.
_BAD_QUOTE = int(QuoteFlag.CROSSED | QuoteFlag.ZERO_BID | QuoteFlag.MISSING | QuoteFlag.WIDE_SPREAD)
_BAD_IV = int(
    IvFlag.NO_QUOTE
    | IvFlag.BELOW_INTRINSIC
    | IvFlag.ABOVE_UPPER_BOUND
    | IvFlag.SOLVER_FAILED
    | IvFlag.WIDE_SPREAD
    | IvFlag.CROSSED
)
SECONDS_PER_YEAR = 365.0 * 86_400.0


@dataclass(frozen=True, slots=True)
class Signals:
    """The inputs of the rule table, read off one VolSnapshot. None is "analytics does not know"."""

    quality: Quality
    quality_reasons: tuple[str, ...]
    regime: Regime
    # "UP" / "DOWN" with the TREND regime (RegimeView.trend_direction, VolSnapshot schema 2); None when
    # the snapshot does not say (schema 1, or a move too small to have a direction).
    trend_direction: str | None
    atm_iv_percentile: float | None
    atm_iv_rank: float | None
    vix_percentile: float | None
    premium: PremiumSignal
    iv_rv_spread: float | None
    iv_garch_spread: float | None
    term: TermSignal | None
    skew: SkewSignal
    event_score: int
    event_severity: EventSeverity | None
    vix_spike: bool
    is_expiry_day: bool


def read_signals(snapshot: VolSnapshot) -> Signals:
    direction = snapshot.regime.trend_direction
    return Signals(
        quality=snapshot.quality,
        quality_reasons=tuple(snapshot.quality_reasons),
        regime=snapshot.regime.regime,
        trend_direction=None if direction is None else direction.value,
        atm_iv_percentile=snapshot.percentiles.atm_iv_percentile,
        atm_iv_rank=snapshot.percentiles.atm_iv_rank,
        vix_percentile=snapshot.percentiles.vix_percentile,
        premium=snapshot.premium.signal,
        iv_rv_spread=snapshot.premium.iv_rv_spread,
        iv_garch_spread=snapshot.premium.iv_garch_spread,
        term=snapshot.term.signal,
        skew=snapshot.skew.signal,
        event_score=snapshot.event_risk.score,
        event_severity=snapshot.event_risk.severity,
        vix_spike=snapshot.regime.vix_spike,
        is_expiry_day=snapshot.is_expiry_day,
    )


class ExpiryNotAvailable(Exception):
    """The bucket's expiry is not in the snapshot (or has no chain): the bucket waits, saying which."""


def bucket_expiry(bucket: Bucket, snapshot: VolSnapshot, config: StrategyConfig) -> ExpiryVol:
    """The expiry a bucket trades (issue 15): weekly - the nearest with at least
    `weekly_min_trading_minutes` left; monthly - the current monthly, the next one inside the current
    one's last `monthly_roll_trading_days` trading days; intraday - today's expiry on expiry day,
    otherwise the nearest weekly."""
    today = snapshot.ts_event.date()
    live = [e for e in snapshot.expiries if e.expiry >= today and e.trading_minutes_to_expiry > 0]
    if not live:
        raise ExpiryNotAvailable("no live expiry in the snapshot")
    if bucket is Bucket.INTRADAY:
        return live[0]
    if bucket is Bucket.WEEKLY:
        for block in live:
            if block.trading_minutes_to_expiry >= config.weekly_min_trading_minutes:
                return block
        raise ExpiryNotAvailable(
            f"no expiry with {config.weekly_min_trading_minutes:.0f} trading minutes left in the snapshot"
        )
    calendar = clock.nse_calendar()
    monthly = calendar.monthly_expiry(today.year, today.month)
    if monthly < today:
        monthly = _next_monthly(calendar, monthly)
    if calendar.trading_days_between(today, monthly) < config.monthly_roll_trading_days:
        monthly = _next_monthly(calendar, monthly)
    for block in live:
        if block.expiry == monthly:
            return block
    raise ExpiryNotAvailable(f"the monthly expiry {monthly} is not in the snapshot")


def _next_monthly(calendar: clock.TradingCalendar, monthly: date) -> date:
    year, month = (monthly.year + 1, 1) if monthly.month == 12 else (monthly.year, monthly.month + 1)
    return calendar.monthly_expiry(year, month)


def next_expiry_after(snapshot: VolSnapshot, expiry: date) -> ExpiryVol | None:
    for block in snapshot.expiries:
        if block.expiry > expiry:
            return block
    return None


def years_to_expiry(ts_event: datetime, expiry: date) -> float:
    """ACT/365 years to the expiry's 15:30 cutoff: the clock analytics fitted the smile and Greeks on."""
    return max((clock.expiry_cutoff(expiry) - ts_event).total_seconds(), 0.0) / SECONDS_PER_YEAR


@dataclass(frozen=True, slots=True)
class Quote:
    """One tradable option: its chain quote and surface figures."""

    expiry: date
    strike: float
    option_type: OptionType
    instrument_key: str
    bid: float
    ask: float
    oi: int
    iv: float
    delta: float

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True, slots=True)
class ExpiryMarket:
    """One expiry's chain joined to its surface, row by row on the strike."""

    block: ExpiryVol
    chain: ChainSnapshot
    t: float
    strike: Float64Array
    # Surface row of each chain row (-1 when the surface lacks the strike).
    surface_row: Int64Array
    # The expiry's fitted smile in the quant library's form (None: analytics could not fit one).
    smile: sabr.SabrFit | None
    # The grid's step (the smallest gap between strikes), found once: structures ask for it per leg.
    strike_step: float = 50.0
    # Quotes already looked up on this snapshot, by (strike, type, the config's quote filters): the
    # three buckets and their alternatives walk the same strikes of a shared expiry.
    _quotes: dict[tuple[float, OptionType, float, int], Quote | str] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Verticals already built on this snapshot (structures._spread): legs or why not, and the skips.
    spreads: dict[SpreadKey, tuple[tuple[Leg, Leg] | str, tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def expiry(self) -> date:
        return self.block.expiry

    @property
    def forward(self) -> float:
        return self.block.forward

    def quote(self, strike: float, option_type: OptionType, config: StrategyConfig) -> Quote | str:
        """The tradable quote at `strike`, or why it is not tradable."""
        key = (strike, option_type, config.max_spread_share, config.min_open_interest_lots)
        known = self._quotes.get(key)
        if known is None:
            known = self._quotes[key] = self._look_up(strike, option_type, config)
        return known

    def _look_up(self, strike: float, option_type: OptionType, config: StrategyConfig) -> Quote | str:
        row = int(np.searchsorted(self.strike, strike))
        if row >= len(self.strike) or self.strike[row] != strike:
            return f"{self.expiry} {strike:g} {option_type.value} is not on the chain's strike grid"
        chain, call = self.chain, option_type is OptionType.CE
        bid = float((chain.call_bid if call else chain.put_bid)[row])
        ask = float((chain.call_ask if call else chain.put_ask)[row])
        flags = int((chain.call_flags if call else chain.put_flags)[row])
        oi = int((chain.columns.ints("call_oi") if call else chain.columns.ints("put_oi"))[row])
        name = f"{self.expiry} {strike:g} {option_type.value}"
        if flags & _BAD_QUOTE or not (math.isfinite(bid) and math.isfinite(ask)):
            return f"{name}: quote flagged {QuoteFlag(flags & _BAD_QUOTE)!r} or missing"
        mid = 0.5 * (bid + ask)
        if (ask - bid) > config.max_spread_share * mid:
            return f"{name}: spread {ask - bid:.2f} is over {config.max_spread_share:.0%} of mid {mid:.2f}"
        if oi < config.min_open_interest_lots * chain.lot_size:
            return f"{name}: open interest {oi} below {config.min_open_interest_lots} lots"
        surface_row = int(self.surface_row[row])
        if surface_row < 0:
            return f"{name}: not on the vol surface"
        surface = self.block.surface
        iv = float((surface.iv_call if call else surface.iv_put)[surface_row])
        iv_flags = int((surface.call_flags if call else surface.put_flags)[surface_row])
        delta = float((surface.call_delta if call else surface.put_delta)[surface_row])
        if iv_flags & _BAD_IV or not (math.isfinite(iv) and math.isfinite(delta)):
            return f"{name}: implied vol flagged {IvFlag(iv_flags & _BAD_IV)!r} or unknown"
        keys = chain.columns.call_instrument_key if call else chain.columns.put_instrument_key
        return Quote(self.expiry, strike, option_type, keys[row], bid, ask, oi, iv, delta)


def expiry_market(block: ExpiryVol, chains: Mapping[date, ChainSnapshot], ts_event: datetime) -> ExpiryMarket:
    chain = chains.get(block.expiry)
    if chain is None:
        raise ExpiryNotAvailable(f"no chain snapshot for {block.expiry} came with the VolSnapshot")
    strike = chain.strike
    surface_strike = block.surface.strike
    rows = np.searchsorted(surface_strike, strike)
    clipped = np.minimum(rows, max(len(surface_strike) - 1, 0))
    found = (
        (rows < len(surface_strike)) & (surface_strike[clipped] == strike)
        if len(surface_strike)
        else rows < 0
    )
    surface_row = np.where(found, clipped, -1).astype(np.int64)
    fit = block.sabr
    smile = (
        None
        if fit is None
        else sabr.SabrFit(
            alpha=fit.alpha,
            beta=fit.beta,
            rho=fit.rho,
            nu=fit.nu,
            rmse=fit.rmse,
            converged=fit.converged,
            iterations=0,
            n_points=fit.n_points,
            n_outliers=0,
        )
    )
    steps = np.diff(strike)
    step = float(np.min(steps)) if len(steps) else 50.0
    return ExpiryMarket(
        block, chain, years_to_expiry(ts_event, block.expiry), strike, surface_row, smile, step
    )
