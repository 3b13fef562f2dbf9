"""Across expiries: the ATM term structure and the skew signal.

Sign conventions: `rr25` is call IV minus put IV (NIFTY: normally negative, puts bid), while the skew
threshold in Settings is quoted as put IV minus call IV, so PUT_SKEWED means -rr25 above the threshold.
Slopes are vol (fraction) per 30 calendar days; thresholds are in vol points (1 point = 0.01).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import date
from typing import Protocol

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common.events.vol import SkewSignal, SkewView, TermSignal, TermStructure
from volguard_common.quant import stats

TERM_IMPLICATION = {
    TermSignal.STEEP: "contango: vol-selling opportunity (front IV below the back; carry favours short vol)",
    TermSignal.FLAT: "flat curve: cautious, sell only with a clear IV-RV premium",
    TermSignal.INVERTED: "backwardation: avoid selling vol (near-term stress priced above the back)",
}
SKEW_RECOMMENDATION = {
    SkewSignal.PUT_SKEWED: "put skew steep: reduce short puts, keep downside hedged",
    SkewSignal.CALL_SKEWED: "call skew rich: add call shorts (covered by wings)",
    SkewSignal.NEUTRAL: "skew balanced: maintain the current mix",
}


class AtmPoint(Protocol):
    """What the curve takes from an expiry: a TermPoint, or an expiry's ExpiryVol as it stands."""

    @property
    def expiry(self) -> date: ...
    @property
    def days_to_expiry(self) -> int: ...
    @property
    def atm_iv(self) -> float | None: ...


def term_structure(
    points: Sequence[tuple[AtmPoint, float]], config: AnalyticsConfig
) -> tuple[TermStructure, str | None]:
    """Term structure from (point, years to expiry) pairs, nearest first.

    Expiries without an ATM IV are listed but not fitted. Fractional days (years x 365) are fitted so
    an expiring contract (0 whole days left) still has a place on the curve. Returns the structure and
    a reason when no signal could be computed.
    """
    # Plain lists: stats.term_structure turns its inputs into float lists itself.
    days = [years * 365.0 for point, years in points if point.atm_iv is not None]
    if len(days) < 2:
        return (
            _structure(points, None, None, None, "unknown: fewer than two expiries with an ATM IV"),
            f"term structure unknown: {len(days)} expiries with an ATM IV",
        )
    ivs = [point.atm_iv for point, _ in points if point.atm_iv is not None]
    fitted = stats.term_structure(days, ivs)
    slope_pts = 100.0 * fitted.slope
    if slope_pts > config.term_structure_threshold_pts:
        signal = TermSignal.STEEP
    elif slope_pts < -config.term_structure_threshold_pts:
        signal = TermSignal.INVERTED
    else:
        signal = TermSignal.FLAT
    return _structure(points, fitted.slope, fitted.curvature, signal, TERM_IMPLICATION[signal]), None


THIRTY_DAYS = 30.0 / 365.0


def constant_maturity_atm_iv(
    points: Sequence[tuple[AtmPoint, float]], years: float = THIRTY_DAYS
) -> float | None:
    """ATM IV at a constant maturity (`years`, ACT/365; 30 days by default) from (point, years to
    expiry) pairs: linear in total variance (vol^2 x t) between the two expiries with an ATM IV that
    bracket it, which keeps forward variance non-negative where the curve allows it. An expiry at the
    maturity gives its own vol. None when no two expiries bracket it: extrapolating a term structure is
    a guess, and a percentile of a guess is not a percentile."""
    curve = sorted((t, point.atm_iv) for point, t in points if point.atm_iv is not None and t > 0.0)
    for (t1, v1), (t2, v2) in itertools.pairwise(curve):
        if t1 <= years <= t2:
            if t2 == t1:
                return v1
            w1, w2 = v1 * v1 * t1, v2 * v2 * t2
            variance = w1 + (w2 - w1) * (years - t1) / (t2 - t1)
            return math.sqrt(variance / years) if variance > 0.0 else None
    for t, vol in curve:
        if t == years:
            return vol
    return None


def _structure(
    points: Sequence[tuple[AtmPoint, float]],
    slope: float | None,
    curvature: float | None,
    signal: TermSignal | None,
    implication: str,
) -> TermStructure:
    # The TermPoints are validated as fields of the TermStructure: the same checks, in one call into
    # pydantic per snapshot rather than one per expiry.
    return TermStructure.model_validate(
        {
            "points": [
                {"expiry": point.expiry, "days_to_expiry": point.days_to_expiry, "atm_iv": point.atm_iv}
                for point, _ in points
            ],
            "slope": slope,
            "curvature": curvature,
            "signal": signal,
            "regime_implication": implication,
        }
    )


def skew_view(rr25: float | None, config: AnalyticsConfig) -> SkewView:
    """Skew signal of the reference expiry. Unknown rr25 -> NEUTRAL with a recommendation that says so."""
    if rr25 is None:
        return SkewView(
            signal=SkewSignal.NEUTRAL,
            rr25=None,
            recommendation="skew unknown (no usable smile on the reference expiry): maintain, do not add",
        )
    put_minus_call_pts = -100.0 * rr25
    if put_minus_call_pts > config.skew_threshold_pts:
        signal = SkewSignal.PUT_SKEWED
    elif put_minus_call_pts < -config.skew_threshold_pts:
        signal = SkewSignal.CALL_SKEWED
    else:
        signal = SkewSignal.NEUTRAL
    return SkewView(signal=signal, rr25=rr25, recommendation=SKEW_RECOMMENDATION[signal])
