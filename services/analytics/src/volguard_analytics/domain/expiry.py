"""One expiry's volatility picture from one ChainSnapshot: forward, per-quote IVs and flags, Greeks,
SABR smile, ATM IV, 25-delta risk reversal and butterfly, straddle, expected move and OI statistics.

Conventions (those of `volguard_common.quant`): time to expiry in ACT/365 years to the 15:30 IST cutoff,
Black-76 on the forward, discount D = exp(-r t). The smile is built from out-of-the-money quotes only
(puts below the forward, calls at and above it): OTM options carry all of their price as time value,
so their mids pin the vol best, and ITM quotes add only the (wider) spread of the intrinsic part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common import clock
from volguard_common.events import ChainSnapshot, QuoteFlag
from volguard_common.events.vol import (
    ExpectedMove,
    ExpiryVol,
    ForwardSource,
    IvFlag,
    Quality,
    SabrFit,
    StrikeSurface,
)
from volguard_common.quant import black76, iv, parity, sabr, stats
from volguard_common.quant._types import BoolArray, Float64Array, Int64Array

SECONDS_PER_YEAR = 365.0 * 86_400.0
# Flags that mean "this IV is not a clean market observation".
_UNUSABLE = int(IvFlag.NO_QUOTE | IvFlag.BELOW_INTRINSIC | IvFlag.ABOVE_UPPER_BOUND | IvFlag.SOLVER_FAILED)
_DIRTY = int(IvFlag.WIDE_SPREAD | IvFlag.CROSSED)
# 25-delta search grid: log-moneyness in units of the ATM total vol. +-6 total vols reaches deltas far
# below 0.25 on any index smile; 241 points leave a grid step of 0.05 total vols.
_DELTA_GRID = np.linspace(-6.0, 6.0, 241)
_DELTA_TARGETS = np.array([0.25, 0.75])


@dataclass(frozen=True, slots=True)
class QuoteVols:
    """IVs and IvFlag bits of one side of a chain (NaN where no vol)."""

    vol: Float64Array
    flags: Int64Array
    mid: Float64Array
    half_spread: Float64Array


@dataclass(frozen=True, slots=True)
class ExpiryAnalysis:
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
    bid: Float64Array, ask: Float64Array, quote_flags: Int64Array, tick_size: float, config: AnalyticsConfig
) -> tuple[Float64Array, Float64Array, Int64Array, BoolArray]:
    """Mid, half-spread, IvFlag bits known before solving, and the stale mask of one side.

    - no ask, no bid, or a producer flag MISSING / ZERO_BID -> NO_QUOTE: an offer with no bid has no
      fair value to solve from (the mid of 0 and the ask is not a price anyone trades at);
    - bid > ask (producer flag CROSSED) -> CROSSED: solved from the mid, never fitted;
    - spread wider than `wide_spread_frac` of the mid and `wide_spread_min_ticks` ticks, or the
      producer's WIDE_SPREAD -> WIDE_SPREAD: solved, never fitted;
    - producer STALE_LTP -> returned in the stale mask: solved, never fitted (IvFlag has no stale
      bit, so these quotes show EXCLUDED_FROM_FIT only).
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
    stale = ~missing & ((quote_flags & int(QuoteFlag.STALE_LTP)) != 0)
    half_spread = np.where(missing, np.nan, 0.5 * np.abs(spread))
    return mid, half_spread, flags, stale


def _status_flags(status: Int64Array) -> Int64Array:
    out = np.zeros(status.shape, dtype=np.int64)
    out[status == iv.IVStatus.BELOW_INTRINSIC] = int(IvFlag.BELOW_INTRINSIC)
    out[status == iv.IVStatus.ABOVE_UPPER_BOUND] = int(IvFlag.ABOVE_UPPER_BOUND)
    # Price exactly at intrinsic, zero time, non-convergence: no single vol can be named.
    other = (
        (status != iv.IVStatus.OK)
        & (status != iv.IVStatus.BELOW_INTRINSIC)
        & (status != iv.IVStatus.ABOVE_UPPER_BOUND)
        & (status != iv.IVStatus.NON_POSITIVE_PRICE)
    )
    out[other] = int(IvFlag.SOLVER_FAILED)
    return out


def _optional(values: Float64Array) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]


def forward_for_expiry(
    chain: ChainSnapshot,
    call_mid: Float64Array,
    put_mid: Float64Array,
    clean_pair: BoolArray,
    t: float,
    discount: float,
    config: AnalyticsConfig,
) -> tuple[float, ForwardSource, Quality, str | None]:
    """Parity forward from strikes with clean two-sided call and put quotes; else the snapshot's
    forward (the producer's future), else spot carried at the risk-free rate."""
    if clean_pair.any():
        forward, quality = parity.forward_from_parity(
            chain.strike[clean_pair], call_mid[clean_pair], put_mid[clean_pair], discount
        )
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


def delta_25_vols(forward: float, t: float, fit: sabr.SabrFit) -> tuple[float, float, float] | None:
    """(25-delta call vol, 25-delta put vol, ATM-forward vol) on the SABR smile.

    Same convention as `quant.stats.risk_reversal_butterfly_25d` (forward, undiscounted,
    premium-unadjusted delta with the smile's own vol), compiled for speed: the call delta is
    evaluated on a grid of log-moneyness, the first crossings of call delta 0.25 and 0.75 (put delta
    -0.25) are bracketed on it and refined by regula falsi.
    """
    call_vol, put_vol = sabr.vols_at_call_deltas(forward, t, fit, _DELTA_TARGETS, _DELTA_GRID).tolist()
    if call_vol != call_vol or put_vol != put_vol:
        return None
    return call_vol, put_vol, sabr.smile_vol(forward, forward, t, fit)


def analyse_expiry(
    chain: ChainSnapshot,
    ts_event: datetime,
    trading_minutes_to_expiry: float,
    config: AnalyticsConfig,
    previous_fit: sabr.SabrFit | None = None,
) -> ExpiryAnalysis:
    """Everything about one expiry at `ts_event` (the chain's own time). `previous_fit`, the last
    converged SABR fit of this expiry, is the smile's warm start (see `sabr.fit`)."""
    reasons: list[str] = []
    quality = Quality.GOOD
    label = chain.expiry.isoformat()

    def degrade(reason: str, to: Quality = Quality.DEGRADED) -> None:
        nonlocal quality
        reasons.append(f"{label}: {reason}")
        if to is Quality.BAD or quality is Quality.GOOD:
            quality = to

    if chain.stale:
        degrade("chain snapshot is stale (feed not updating)", Quality.BAD)

    t = year_fraction(ts_event, clock.expiry_cutoff(chain.expiry))
    discount = math.exp(-config.risk_free_rate * t)
    strike = chain.strike
    n = strike.size
    call_mid, call_half, call_pre, call_stale = classify_quotes(
        chain.call_bid, chain.call_ask, chain.call_flags, chain.tick_size, config
    )
    put_mid, put_half, put_pre, put_stale = classify_quotes(
        chain.put_bid, chain.put_ask, chain.put_flags, chain.tick_size, config
    )
    clean_pair = ((call_pre | put_pre) == 0) & ~call_stale & ~put_stale
    forward, forward_source, forward_quality, forward_reason = forward_for_expiry(
        chain, call_mid, put_mid, clean_pair, t, discount, config
    )
    if forward_reason is not None:
        degrade(forward_reason)

    # One solve and one Greeks pass over both sides.
    prices = np.concatenate([call_mid, put_mid])
    strikes2 = np.concatenate([strike, strike])
    is_call = np.concatenate([np.ones(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)])
    quoted = ~np.isnan(prices)
    vols, status = iv.implied_vol_and_status(
        np.where(quoted, prices, 1.0), forward, strikes2, t, is_call, discount
    )
    vols = np.where(quoted, vols, np.nan)
    solve_flags = np.where(quoted, _status_flags(status), 0)
    greeks = black76.greeks(forward, strikes2, t, vols, is_call, discount)

    flags = np.concatenate([call_pre, put_pre]) | solve_flags
    stale = np.concatenate([call_stale, put_stale])
    solved = ~np.isnan(vols)
    otm = np.concatenate([strike >= forward, strike < forward])
    fit_mask = solved & otm & ((flags & (_UNUSABLE | _DIRTY)) == 0) & ~stale
    flags = np.where(solved & ~fit_mask, flags | int(IvFlag.EXCLUDED_FROM_FIT), flags)

    # SABR on the clean OTM smile, weighted by inverse vol uncertainty: a quote's mid is uncertain by
    # its half-spread plus half a tick of rounding, i.e. by (half_spread + tick/2)/vega in vol.
    fit_k = strikes2[fit_mask]
    fit_v = vols[fit_mask]
    half = np.concatenate([call_half, put_half])[fit_mask]
    vega = greeks.vega[fit_mask]
    sabr_fit: sabr.SabrFit | None = None
    if fit_k.size >= config.sabr_min_points:
        order = np.argsort(fit_k, kind="stable")
        fit_k, fit_v, half, vega = fit_k[order], fit_v[order], half[order], vega[order]
        vol_error = (half + 0.5 * chain.tick_size) / np.maximum(vega, 1e-12)
        weights = (float(np.median(vol_error)) / vol_error) ** 2
        warm = previous_fit if previous_fit is not None and previous_fit.beta == config.sabr_beta else None
        sabr_fit = sabr.fit(forward, fit_k, t, fit_v, weights, beta=config.sabr_beta, initial=warm)
        if not sabr_fit.converged:
            degrade("SABR fit did not converge")
        if sabr_fit.rmse > config.sabr_max_rmse:
            degrade(f"SABR fit RMSE {sabr_fit.rmse:.4f} above {config.sabr_max_rmse}")
    else:
        degrade(f"only {fit_k.size} clean OTM quotes: no SABR fit")
    smile_ok = sabr_fit is not None and sabr_fit.converged and sabr_fit.rmse <= config.sabr_max_rmse

    atm_strike = float(strike[int(np.argmin(np.abs(strike - forward)))])
    atm_iv = _atm_iv(forward, fit_k, fit_v, strike, t, sabr_fit if smile_ok else None)
    if atm_iv is None:
        degrade("no ATM IV: no clean quotes around the forward and no usable smile", Quality.BAD)

    rr25 = bf25 = None
    if smile_ok and sabr_fit is not None:
        wings = delta_25_vols(forward, t, sabr_fit)
        if wings is None:
            degrade("25-delta strikes not found on the smile")
        else:
            call_vol, put_vol, atm_smile = wings
            rr25 = call_vol - put_vol
            bf25 = 0.5 * (call_vol + put_vol) - atm_smile

    straddle = None
    expected: ExpectedMove | None = None
    j = int(np.flatnonzero(strike == atm_strike)[0])
    if ((flags[j] | flags[n + j]) & (_UNUSABLE | _DIRTY)) == 0:
        straddle = float(call_mid[j] + put_mid[j])
        if atm_strike - straddle > 0.0:
            expected = ExpectedMove(
                points=straddle,
                pct=straddle / chain.spot,
                lower_breakeven=atm_strike - straddle,
                upper_breakeven=atm_strike + straddle,
            )
    else:
        degrade(f"ATM strike {atm_strike:g} has no clean two-sided call and put: no straddle")

    call_oi = chain.call_oi.astype(np.float64)
    put_oi = chain.put_oi.astype(np.float64)
    total_oi = float(call_oi.sum() + put_oi.sum())
    call_vol_total = float(chain.call_volume.sum())
    pcr_oi = float(put_oi.sum()) / float(call_oi.sum()) if call_oi.sum() > 0 else None
    pcr_volume = float(chain.put_volume.sum()) / call_vol_total if call_vol_total > 0 else None
    max_pain = stats.max_pain(strike, call_oi, put_oi).strike if total_oi > 0 else None
    call_wall = float(strike[int(np.argmax(call_oi))]) if call_oi.sum() > 0 else None
    put_wall = float(strike[int(np.argmax(put_oi))]) if put_oi.sum() > 0 else None
    pin_share = None
    if total_oi > 0:
        near = np.abs(strike - chain.spot) <= config.pin_band_pct / 100.0 * chain.spot
        pin_share = float(call_oi[near].sum() + put_oi[near].sum()) / total_oi

    per_vega = greeks.vega / 100.0
    per_theta = greeks.theta / 365.0
    surface = StrikeSurface(
        strike=strike.tolist(),
        iv_call=_optional(vols[:n]),
        iv_put=_optional(vols[n:]),
        call_flags=flags[:n].tolist(),
        put_flags=flags[n:].tolist(),
        call_delta=_optional(np.where(solved[:n], greeks.delta[:n], np.nan)),
        call_gamma=_optional(np.where(solved[:n], greeks.gamma[:n], np.nan)),
        call_vega=_optional(np.where(solved[:n], per_vega[:n], np.nan)),
        call_theta=_optional(np.where(solved[:n], per_theta[:n], np.nan)),
        put_delta=_optional(np.where(solved[n:], greeks.delta[n:], np.nan)),
        put_gamma=_optional(np.where(solved[n:], greeks.gamma[n:], np.nan)),
        put_vega=_optional(np.where(solved[n:], per_vega[n:], np.nan)),
        put_theta=_optional(np.where(solved[n:], per_theta[n:], np.nan)),
    )
    expiry_vol = ExpiryVol(
        expiry=chain.expiry,
        days_to_expiry=(chain.expiry - ts_event.date()).days,
        trading_minutes_to_expiry=trading_minutes_to_expiry,
        forward=forward,
        forward_source=forward_source,
        forward_quality=forward_quality,
        atm_strike=atm_strike,
        atm_iv=atm_iv,
        surface=surface,
        sabr=(
            SabrFit(
                alpha=sabr_fit.alpha,
                beta=sabr_fit.beta,
                rho=sabr_fit.rho,
                nu=sabr_fit.nu,
                rmse=sabr_fit.rmse,
                converged=sabr_fit.converged,
                n_points=sabr_fit.n_points,
            )
            if sabr_fit is not None
            else None
        ),
        rr25=rr25,
        bf25=bf25,
        straddle_price=straddle,
        expected_move=expected,
        pcr_oi=pcr_oi,
        pcr_volume=pcr_volume,
        max_pain=max_pain,
        call_oi_wall=call_wall,
        put_oi_wall=put_wall,
    )
    return ExpiryAnalysis(
        vol=expiry_vol,
        t_years=t,
        discount=discount,
        sabr_fit=sabr_fit,
        pin_oi_share=pin_share,
        quality=quality,
        reasons=tuple(reasons),
    )


def _atm_iv(
    forward: float,
    fit_k: Float64Array,
    fit_v: Float64Array,
    strike: Float64Array,
    t: float,
    smile: sabr.SabrFit | None,
) -> float | None:
    """ATM-forward IV: linear in strike between the clean OTM quotes either side of the forward (the
    most liquid quotes, model-free) when they are adjacent listed strikes; else the SABR smile at the
    forward; else unknown."""
    below = fit_k[fit_k <= forward]
    above = fit_k[fit_k >= forward]
    if below.size and above.size:
        k_lo, k_hi = float(below.max()), float(above.min())
        listed_between = np.count_nonzero((strike > k_lo) & (strike < k_hi))
        if listed_between == 0:
            v_lo = float(fit_v[fit_k == k_lo][0])
            v_hi = float(fit_v[fit_k == k_hi][0])
            if k_hi == k_lo:
                return v_lo
            w = (forward - k_lo) / (k_hi - k_lo)
            return (1.0 - w) * v_lo + w * v_hi
    if smile is not None:
        return sabr.smile_vol(forward, forward, t, smile)
    return None
