"""One expiry's volatility picture from one ChainSnapshot: forward, per-quote IVs and flags, Greeks,
SABR smile, ATM IV, 25-delta risk reversal and butterfly, straddle, expected move and OI statistics.

Conventions (those of `volguard_common.quant`): time to expiry in ACT/365 years to the expiry day's
dated close, Black-76 on the forward, discount D = exp(-r t). The smile is built from out-of-the-money
quotes only (puts below the forward, calls at and above it): OTM options carry all of their price as
time value, so their mids pin the vol best, and ITM quotes add only the (wider) spread of the
intrinsic part.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import NamedTuple

import numpy as np

from volguard_analytics.domain import _quote_kernels
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common import clock
from volguard_common.events import ChainSnapshot, QuoteFlag
from volguard_common.events.chain import CHAIN_FLOAT_COLUMNS, CHAIN_INT_COLUMNS
from volguard_common.events.surface_columns import SurfaceColumns
from volguard_common.events.vol import (
    ExpiryVol,
    ForwardSource,
    IvFlag,
    Quality,
)
from volguard_common.quant import black76, iv, parity, sabr, stats
from volguard_common.quant._types import Float64Array, Int64Array

SECONDS_PER_YEAR = 365.0 * 86_400.0
# 25-delta search range and fallback grid: log-moneyness in units of the ATM total vol. +-6 total vols
# reaches deltas far below 0.25 on any index smile. The search from the money stays inside it; a
# smile it cannot vouch for is scanned on the grid, which only brackets the first crossing (the root
# is refined inside the bracket), so its step of 0.25 total vols only needs to be finer than any
# wiggle in the delta of an index smile (SABR wings are not arbitrage-free in general, but a fitted
# NIFTY smile's delta falls monotonically through 0.75 and 0.25).
_DELTA_GRID = np.linspace(-6.0, 6.0, 49)
_DELTA_TARGETS = np.array([0.25, 0.75])


class ExpiryAnalysis(NamedTuple):
    """The published ExpiryVol plus what the rest of the engine needs and the quality verdict."""

    vol: ExpiryVol
    t_years: float
    discount: float
    sabr_fit: sabr.SabrFit | None
    # Share of the chain's total OI within the pin band around spot; None when the chain has no OI.
    pin_oi_share: float | None
    quality: Quality
    reasons: tuple[str, ...]


def year_fraction(ts_event: datetime, expiry_cutoff: datetime) -> float:
    """ACT/365 years from `ts_event` to the expiry cutoff; raises for an expired contract."""
    seconds = (expiry_cutoff - ts_event).total_seconds()
    if seconds <= 0.0:
        raise ValueError(
            f"contract expired at {expiry_cutoff.isoformat()}, snapshot is {ts_event.isoformat()}"
        )
    return seconds / SECONDS_PER_YEAR


def classify_quotes(
    bid: Float64Array,
    ask: Float64Array,
    quote_flags: Int64Array,
    tick_size: float | Float64Array,
    config: AnalyticsConfig,
) -> tuple[Float64Array, Float64Array, Int64Array]:
    """Mid, half-spread and IvFlag bits known before solving of quotes (one side of a chain, or any
    quotes with their tick sizes as an array).

    - no ask, no bid, or a producer flag MISSING / ZERO_BID -> NO_QUOTE: an offer with no bid has no
      fair value to solve from (the mid of 0 and the ask is not a price anyone trades at);
    - bid > ask (producer flag CROSSED) -> CROSSED: solved from the mid, never fitted;
    - spread wider than `wide_spread_frac` of the mid and `wide_spread_min_ticks` ticks, or the
      producer's WIDE_SPREAD -> WIDE_SPREAD: solved, never fitted;
    - producer STALE_LTP changes nothing: the mid of a valid bid and ask does not depend on when the
      option last traded, and at the open or on a quiet wing most last trades are old, so leaving
      those quotes out starved the first minutes' and the expiry day's fits of good mids.

    The engine runs the compiled twin, `_quote_kernels.classify`; the tests hold the two equal.
    """
    flags = np.zeros(bid.shape, dtype=np.int64)
    missing = (
        np.isnan(bid) | np.isnan(ask) | ((quote_flags & int(QuoteFlag.MISSING | QuoteFlag.ZERO_BID)) != 0)
    )
    flags[missing] |= int(IvFlag.NO_QUOTE)
    with np.errstate(invalid="ignore"):
        mid = np.where(missing, np.nan, 0.5 * (bid + ask))
        spread = ask - bid
        crossed = ~missing & ((spread < 0.0) | ((quote_flags & int(QuoteFlag.CROSSED)) != 0))
        wide = ~missing & (
            ((spread > config.wide_spread_frac * mid) & (spread > config.wide_spread_min_ticks * tick_size))
            | ((quote_flags & int(QuoteFlag.WIDE_SPREAD)) != 0)
        )
    flags[crossed] |= int(IvFlag.CROSSED)
    flags[wide] |= int(IvFlag.WIDE_SPREAD)
    half_spread = np.where(missing, np.nan, 0.5 * np.abs(spread))
    return mid, half_spread, flags


def _status_flag(status: iv.IVStatus) -> int:
    if status is iv.IVStatus.BELOW_INTRINSIC:
        return int(IvFlag.BELOW_INTRINSIC)
    if status is iv.IVStatus.ABOVE_UPPER_BOUND:
        return int(IvFlag.ABOVE_UPPER_BOUND)
    if status in (iv.IVStatus.OK, iv.IVStatus.NON_POSITIVE_PRICE):
        return 0
    # Price exactly at intrinsic, zero time, non-convergence: no single vol can be named.
    return int(IvFlag.SOLVER_FAILED)


# IvFlag bits of every IVStatus code, indexed by the code: one gather per chain set.
_STATUS_FLAGS = np.array(
    [_status_flag(iv.IVStatus(code)) for code in range(max(iv.IVStatus) + 1)], dtype=np.int64
)


def _choose_forward(
    chain: ChainSnapshot,
    parity_fit: tuple[float, parity.ParityQuality] | None,
    t: float,
    config: AnalyticsConfig,
) -> tuple[float, ForwardSource, Quality, str | None]:
    """The parity forward from strikes with clean two-sided call and put quotes; else the snapshot's
    forward (the producer's future), else spot carried at the risk-free rate."""
    if parity_fit is not None:
        forward, quality = parity_fit
        if quality.score >= config.parity_good_score:
            return forward, ForwardSource.PARITY, Quality.GOOD, None
        return (
            forward,
            ForwardSource.PARITY,
            Quality.DEGRADED,
            f"parity forward quality {quality.score:.2f} ({quality.n_used} strikes, dispersion "
            f"{quality.dispersion:.2f} pts)",
        )
    if chain.forward is not None:
        return (
            chain.forward,
            ForwardSource.FUTURE,
            Quality.DEGRADED,
            "no clean call/put pair: snapshot forward",
        )
    carried = chain.spot * math.exp(config.risk_free_rate * t)
    return (
        carried,
        ForwardSource.SPOT_CARRY,
        Quality.DEGRADED,
        "no clean call/put pair and no forward: spot carry",
    )


def delta_25_vols(
    forwards: Sequence[float], times: Sequence[float], fits: Sequence[sabr.SabrFit]
) -> list[tuple[float, float, float] | None]:
    """(25-delta call vol, 25-delta put vol, ATM-forward vol) on each SABR smile; None for a smile
    whose 25-delta strikes the search grid does not bracket.

    Same convention as `quant.stats.risk_reversal_butterfly_25d` (forward, undiscounted,
    premium-unadjusted delta with the smile's own vol), compiled for speed and one call for all
    smiles: the crossings of call delta 0.25 and 0.75 (put delta -0.25) are searched for from the
    money, and on `_DELTA_GRID` where that search cannot vouch for its answer (see
    `sabr.wing_and_atm_vols_many`, which reads the ATM-forward vol off the same call).
    """
    if not fits:
        return []
    rows = sabr.wing_and_atm_vols_many(forwards, times, fits, _DELTA_TARGETS, _DELTA_GRID).tolist()
    return [
        None if call_vol != call_vol or put_vol != put_vol else (call_vol, put_vol, atm_vol)
        for call_vol, put_vol, atm_vol in rows
    ]


def analyse_expiry(
    chain: ChainSnapshot,
    ts_event: datetime,
    trading_minutes_to_expiry: float,
    config: AnalyticsConfig,
    previous_fit: sabr.SabrFit | None = None,
) -> ExpiryAnalysis:
    """Everything about one expiry at `ts_event` (the chain's own time). `previous_fit`, the last
    converged SABR fit of this expiry, is the smile's warm start (see `sabr.fit`)."""
    return analyse_set([chain], ts_event, [trading_minutes_to_expiry], config, [previous_fit]).expiries[0]


# Rows of a ChainSnapshot's column blocks (`events.chain`) that the set-wide pass reads.
_STRIKE = CHAIN_FLOAT_COLUMNS.index("strike")
# The call and put bid rows, ask rows (float block), flag rows and OI and volume rows (int block), as
# `set_quotes` reads them; the quote layout it builds is side-major: the calls of every expiry, then
# the puts.
_QUOTE_ROWS = np.array(
    [CHAIN_FLOAT_COLUMNS.index(name) for name in ("call_bid", "put_bid", "call_ask", "put_ask")]
    + [
        CHAIN_INT_COLUMNS.index(name)
        for name in ("call_flags", "put_flags", "call_oi", "put_oi", "call_volume", "put_volume")
    ]
)

# Divisors taking black76 units to the published ones: vega per vol point, theta per calendar day.
_GREEK_UNITS = np.array([1.0, 1.0, 100.0, 365.0])


class QuoteVols(NamedTuple):
    """A chain set's solved vols, where the next set's IV solve starts: its expiries, their strikes
    side by side (expiry e on rows bounds[e]:bounds[e + 1]) and the vols side-major (the calls of
    every expiry, then the puts), NaN where none was solved."""

    expiries: tuple[date, ...]
    strike: Float64Array
    bounds: Int64Array
    vols: Float64Array


class SetAnalysis(NamedTuple):
    """`analyse_set`'s answer: every expiry's analysis, and the set's vols for the next set."""

    expiries: list[ExpiryAnalysis]
    quote_vols: QuoteVols


def analyse_set(
    chains: Sequence[ChainSnapshot],
    ts_event: datetime,
    trading_minutes_to_expiry: Sequence[float],
    config: AnalyticsConfig,
    previous_fits: Sequence[sabr.SabrFit | None],
    previous_vols: QuoteVols | None = None,
) -> SetAnalysis:
    """`analyse_expiry` of every chain of one set, with the same results, but the per-quote work done
    once for the whole set: one classification, one implied-vol solve and one Greeks pass over the
    quotes of all expiries, and the parity forwards and OI statistics in one compiled pass each. The
    bookkeeping between those passes (clean pairs, IV inputs and starts, fit mask, surface, fit
    points) runs in the compiled loops of `_quote_kernels`, which the tests hold to
    `classify_quotes` and to numpy.

    `previous_vols`, the last set's (`SetAnalysis.quote_vols`), is where the IV solve starts for every
    quote listed in both sets: the vols are the cold solve's to the conditioning of each quote, in
    about 40 % less time (see `iv.implied_vol_and_status_block`).

    Quote arrays are side-major: the calls of every expiry (in chain order), then the puts; expiry e
    owns strike rows `bounds[e]:bounds[e + 1]`, its calls are those rows and its puts `n + rows`.
    """
    times = [year_fraction(ts_event, clock.expiry_cutoff(chain.expiry)) for chain in chains]
    discounts = [math.exp(-config.risk_free_rate * t) for t in times]
    discount_array = np.array(discounts)
    bounds = np.array([0, *itertools.accumulate(chain.n_strikes for chain in chains)], dtype=np.int64)

    # Every chain's column blocks side by side: one concatenation per block, then rows by name.
    floats = np.concatenate([chain.columns.float_block for chain in chains], axis=1)
    ints = np.concatenate([chain.columns.int_block for chain in chains], axis=1)
    strike = floats[_STRIKE]
    ticks = np.array([chain.tick_size for chain in chains])
    mid, half_spread, flags, parity_call, parity_put, parity_usable, activity = _quote_kernels.set_quotes(
        floats, ints, _QUOTE_ROWS, bounds, ticks, config.wide_spread_frac, config.wide_spread_min_ticks
    )
    parity_fits = parity.forwards_from_parity_prepared(
        strike, parity_call, parity_put, parity_usable, bounds, discount_array
    )
    choices = [
        _choose_forward(chain, fit, t, config)
        for chain, fit, t in zip(chains, parity_fits, times, strict=True)
    ]
    forwards = np.array([choice[0] for choice in choices])

    inputs = _quote_kernels.iv_inputs(mid, strike, bounds, forwards, np.array(times), discount_array)
    expiries = tuple(chain.expiry for chain in chains)
    starts = _iv_starts(expiries, strike, bounds, previous_vols)
    vols, status = iv.implied_vol_and_status_block(inputs, starts)
    fitted = _quote_kernels.settle(vols, status, _STATUS_FLAGS, flags, mid, strike, bounds, forwards)
    greeks = black76.chain_greeks_block(inputs, vols)
    # Every expiry's surface blocks, one after another, and its SABR fit points (its OTM puts, then its
    # calls), expiry after expiry.
    surface, surface_flags, fit_strike, fit_vol, fit_sqrt_w, fit_edges, atm = (
        _quote_kernels.surface_and_fit_points(
            vols, greeks, fitted, flags, mid, half_spread, strike, bounds, forwards, ticks, _GREEK_UNITS
        )
    )
    fit_bounds = fit_edges.tolist()

    spots = np.array([chain.spot for chain in chains])
    # The statistics take float64 columns: `set_quotes` converted the four rows.
    oi_strikes, volume_strikes = _reported_counts(ints, activity, bounds)
    call_oi, put_oi, call_volume, put_volume = activity
    open_interest = stats.open_interest_by_expiry_prepared(
        strike,
        call_oi,
        put_oi,
        call_volume,
        put_volume,
        bounds,
        spots,
        config.pin_band_pct / 100.0 * spots,
    )

    forward_list = forwards.tolist()
    smiles = _fit_smiles(chains, forward_list, times, fit_strike, fit_vol, fit_sqrt_w, fit_bounds, config,
                         previous_fits)  # fmt: skip

    surfaces = SurfaceColumns.adopt_stacked(surface, surface_flags, bounds.tolist())
    # Each expiry's ATM strike, straddle and quoted ATM IV (NaN: none), as Python floats in one go.
    atm_strikes, straddles, atm_ivs = atm.tolist()
    analyses = [
        _expiry_analysis(
            chain,
            ts_event,
            trading_minutes_to_expiry[e],
            config,
            choices[e],
            times[e],
            discounts[e],
            _AtmQuotes(
                strike=atm_strikes[e],
                straddle=None if straddles[e] != straddles[e] else straddles[e],
                atm_iv=None if atm_ivs[e] != atm_ivs[e] else atm_ivs[e],
                n_fit_points=fit_bounds[e + 1] - fit_bounds[e],
            ),
            smiles[e],
            surfaces[e],
            open_interest[e],
            (oi_strikes[e], volume_strikes[e]),
        )
        for e, chain in enumerate(chains)
    ]
    return SetAnalysis(analyses, QuoteVols(expiries, strike, bounds, vols))


_CALL_FLAGS = CHAIN_INT_COLUMNS.index("call_flags")
_PUT_FLAGS = CHAIN_INT_COLUMNS.index("put_flags")
_OI_MISSING = int(QuoteFlag.OI_MISSING)
_VOLUME_MISSING = int(QuoteFlag.VOLUME_MISSING)
_EITHER_MISSING = _OI_MISSING | _VOLUME_MISSING


def _reported_counts(
    ints: Int64Array, activity: Float64Array, bounds: Int64Array
) -> tuple[list[int], list[int]]:
    """Leave the strikes whose call or put OI (volume) was not reported out of the OI (volume)
    statistics, by zeroing both sides of them in `activity` (call OI, put OI, call volume, put volume
    rows, changed in place), and count per expiry the strikes each statistic is computed from.

    Both sides go: a PCR or max pain that keeps the known side of a strike whose other side is unknown
    leans towards that side. A reported 0 stays a 0 and counts."""
    sizes: list[int] = (bounds[1:] - bounds[:-1]).tolist()
    # The usual case, every count reported, in one reduction over the two flag rows (adjacent, last).
    if not int(np.bitwise_or.reduce(ints[_CALL_FLAGS : _PUT_FLAGS + 1], axis=None)) & _EITHER_MISSING:
        return sizes, sizes
    either = ints[_CALL_FLAGS] | ints[_PUT_FLAGS]
    no_oi = (either & _OI_MISSING) != 0
    no_volume = (either & _VOLUME_MISSING) != 0
    starts = bounds[:-1]
    counts = []
    for missing, rows in ((no_oi, activity[0:2]), (no_volume, activity[2:4])):
        if missing.any():
            rows[:, missing] = 0.0
            known = np.add.reduceat((~missing).astype(np.int64), starts)
            counts.append(known.tolist())
        else:
            counts.append(sizes)
    return counts[0], counts[1]


def _iv_starts(
    expiries: tuple[date, ...], strike: Float64Array, bounds: Int64Array, previous: QuoteVols | None
) -> Float64Array | None:
    """The IV solve's start per quote from the previous set's vols; None when it shares no expiry."""
    if previous is None:
        return None
    where = {expiry: e for e, expiry in enumerate(previous.expiries)}
    previous_expiry = [where.get(expiry, -1) for expiry in expiries]
    if max(previous_expiry) < 0:
        return None
    return _quote_kernels.iv_starts(
        strike, bounds, previous.strike, previous.bounds, previous.vols, np.array(previous_expiry)
    )


class _Smile(NamedTuple):
    """One expiry's SABR calibration (None: too few clean quotes) and, when the smile is usable, its
    25-delta call and put vols and ATM-forward vol (None: the 25-delta strikes were not found)."""

    fit: sabr.SabrFit | None
    usable: bool
    wings: tuple[float, float, float] | None


# An expiry with too few clean quotes to calibrate.
_NO_SMILE = _Smile(None, False, None)


def _fit_smiles(
    chains: Sequence[ChainSnapshot],
    forwards: Sequence[float],
    times: Sequence[float],
    fit_strike: Float64Array,
    fit_vol: Float64Array,
    fit_sqrt_w: Float64Array,
    fit_bounds: Sequence[int],
    config: AnalyticsConfig,
    previous_fits: Sequence[sabr.SabrFit | None],
) -> list[_Smile]:
    """Every expiry's smile of the set with at least `sabr_min_points` fit points, in one compiled
    calibration call and one 25-delta search, warm-started from that expiry's previous fit.

    A quote's weight is the inverse square of its vol error relative to its expiry's median error
    (`fit_sqrt_w` is median / error, see `_quote_kernels.surface_and_fit_points`). The points are
    this engine's own - solved vols (finite, > 0), listed strikes, errors > 0 (half a tick at least,
    over a floored vega) - so `sabr.fit`'s checks are skipped."""
    k = len(chains)
    beta = config.sabr_beta
    fitted = [e for e in range(k) if fit_bounds[e + 1] - fit_bounds[e] >= config.sabr_min_points]
    if len(fitted) == k:  # the usual case: every expiry's points as they stand
        strikes, vols, sqrt_w, point_bounds = fit_strike, fit_vol, fit_sqrt_w, fit_bounds
    else:
        cuts = [(fit_bounds[e], fit_bounds[e + 1]) for e in fitted]
        strikes, vols, sqrt_w = (
            np.concatenate([column[lo:hi] for lo, hi in cuts]) if cuts else column[:0]
            for column in (fit_strike, fit_vol, fit_sqrt_w)
        )
        point_bounds = [0, *itertools.accumulate(hi - lo for lo, hi in cuts)]
    fit_forwards = [forwards[e] for e in fitted]
    fit_times = [times[e] for e in fitted]
    fits = sabr.fit_prepared_many(
        fit_forwards, fit_times, strikes, vols, sqrt_w, point_bounds, beta,
        initial=[fit if (fit := previous_fits[e]) is not None and fit.beta == beta else None for e in fitted],
    )  # fmt: skip
    smiles = [_NO_SMILE] * k
    good = []
    for i, fit in enumerate(fits):
        if fit.converged and fit.rmse <= config.sabr_max_rmse:
            good.append(i)
        else:
            smiles[fitted[i]] = _Smile(fit, False, None)
    wings = delta_25_vols(
        [fit_forwards[i] for i in good], [fit_times[i] for i in good], [fits[i] for i in good]
    )
    for i, found in zip(good, wings, strict=True):
        smiles[fitted[i]] = _Smile(fits[i], True, found)
    return smiles


class _AtmQuotes(NamedTuple):
    """What the set-wide quote pass found about one expiry's money."""

    # The listed strike nearest the forward; its call + put mid when both are clean, else None.
    strike: float
    straddle: float | None
    # The model-free ATM IV (quoted_atm_iv); None where the clean quotes do not bracket the forward.
    atm_iv: float | None
    n_fit_points: int


def _expiry_analysis(
    chain: ChainSnapshot,
    ts_event: datetime,
    trading_minutes_to_expiry: float,
    config: AnalyticsConfig,
    forward_choice: tuple[float, ForwardSource, Quality, str | None],
    t: float,
    discount: float,
    quotes: _AtmQuotes,
    smile: _Smile,
    surface: SurfaceColumns,
    open_interest: stats.OpenInterest,
    reported: tuple[int, int],
) -> ExpiryAnalysis:
    reasons: list[str] = []
    quality = Quality.GOOD

    def degrade(reason: str, to: Quality = Quality.DEGRADED) -> None:
        nonlocal quality
        reasons.append(f"{chain.expiry.isoformat()}: {reason}")
        if to is Quality.BAD or quality is Quality.GOOD:
            quality = to

    if chain.stale:
        degrade("chain snapshot is stale (feed not updating)", Quality.BAD)
    forward, forward_source, forward_quality, forward_reason = forward_choice
    if forward_reason is not None:
        degrade(forward_reason)

    sabr_fit = smile.fit
    if sabr_fit is None:
        degrade(f"only {quotes.n_fit_points} clean OTM quotes: no SABR fit")
    else:
        if not sabr_fit.converged:
            degrade("SABR fit did not converge")
        if sabr_fit.rmse > config.sabr_max_rmse:
            degrade(f"SABR fit RMSE {sabr_fit.rmse:.4f} above {config.sabr_max_rmse}")

    # ATM-forward IV: from the clean quotes around the forward (model-free) when they bracket it;
    # else the usable smile at the forward; else unknown.
    atm_strike = quotes.strike
    atm_iv = quotes.atm_iv
    if atm_iv is None and sabr_fit is not None and smile.usable:
        atm_iv = smile.wings[2] if smile.wings is not None else sabr.smile_vol(forward, forward, t, sabr_fit)
    if atm_iv is None:
        degrade("no ATM IV: no clean quotes around the forward and no usable smile", Quality.BAD)

    rr25 = bf25 = None
    if smile.usable:
        if smile.wings is None:
            degrade("25-delta strikes not found on the smile")
        else:
            call_vol, put_vol, atm_vol = smile.wings
            rr25 = call_vol - put_vol
            bf25 = 0.5 * (call_vol + put_vol) - atm_vol

    straddle = quotes.straddle
    expected = None
    if straddle is not None:
        if atm_strike - straddle > 0.0:
            expected = {
                "points": straddle,
                "pct": straddle / chain.spot,
                "lower_breakeven": atm_strike - straddle,
                "upper_breakeven": atm_strike + straddle,
            }
    else:
        degrade(f"ATM strike {atm_strike:g} has no clean two-sided call and put: no straddle")

    oi = open_interest
    total_oi = oi.call_oi + oi.put_oi
    # The whole ExpiryVol, its SabrFit, ExpectedMove and StrikeSurface validated in one call into
    # pydantic: the same checks as building each part, for less than a fifth of the calls' overhead.
    expiry_vol = ExpiryVol.model_validate(
        {
            "expiry": chain.expiry,
            "days_to_expiry": (chain.expiry - ts_event.date()).days,
            "trading_minutes_to_expiry": trading_minutes_to_expiry,
            "forward": forward,
            "forward_source": forward_source,
            "forward_quality": forward_quality,
            "atm_strike": atm_strike,
            "atm_iv": atm_iv,
            "surface": {"columns": surface},
            "sabr": (
                {
                    "alpha": sabr_fit.alpha,
                    "beta": sabr_fit.beta,
                    "rho": sabr_fit.rho,
                    "nu": sabr_fit.nu,
                    "rmse": sabr_fit.rmse,
                    "converged": sabr_fit.converged,
                    "n_points": sabr_fit.n_points,
                }
                if sabr_fit is not None
                else None
            ),
            "rr25": rr25,
            "bf25": bf25,
            "straddle_price": straddle,
            "expected_move": expected,
            "pcr_oi": oi.put_oi / oi.call_oi if oi.call_oi > 0 else None,
            "pcr_volume": oi.put_volume / oi.call_volume if oi.call_volume > 0 else None,
            "max_pain": oi.max_pain,
            "call_oi_wall": oi.call_wall,
            "put_oi_wall": oi.put_wall,
            "oi_strikes": reported[0],
            "volume_strikes": reported[1],
        }
    )
    return ExpiryAnalysis(
        vol=expiry_vol,
        t_years=t,
        discount=discount,
        sabr_fit=sabr_fit,
        pin_oi_share=oi.pin_oi / total_oi if total_oi > 0 else None,
        quality=quality,
        reasons=tuple(reasons),
    )


def quoted_atm_iv(
    forward: float, fit_k: Float64Array, fit_v: Float64Array, strike: Float64Array
) -> float | None:
    """The model-free ATM-forward IV: linear in strike between the clean OTM quotes either side of the
    forward (the most liquid quotes) when they are adjacent listed strikes, or the clean quote at the
    forward; None otherwise. `fit_k` (fit points in strike order) and `strike` (listed strikes) are
    strictly increasing, so the neighbours are found by bisection. The reference of
    `_quote_kernels._quoted_atm_iv`, which the engine runs."""
    n_below = bisect.bisect_right(fit_k, forward)  # fit points <= forward
    first_above = bisect.bisect_left(fit_k, forward)  # first fit point >= forward
    if n_below == 0 or first_above == fit_k.size:
        return None
    k_lo, k_hi = float(fit_k[n_below - 1]), float(fit_k[first_above])
    v_lo = float(fit_v[n_below - 1])
    if k_hi == k_lo:
        return v_lo
    if bisect.bisect_left(strike, k_hi) != bisect.bisect_right(strike, k_lo):
        return None  # a listed strike between them has no clean quote
    w = (forward - k_lo) / (k_hi - k_lo)
    return (1.0 - w) * v_lo + w * float(fit_v[first_above])
