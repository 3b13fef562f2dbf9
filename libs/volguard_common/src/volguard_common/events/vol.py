"""VolSnapshot: everything analytics knows about NIFTY volatility at one instant (stream an.vol).

Units: implied and realised vols are annualised fractions (0.14 = 14 %); India VIX is in index points as
published (14.2); spreads between vols are in vol points of the same fraction (0.02 = 2 vol points);
percentiles and ranks are 0–100; money-like figures (straddle, expected move) are index points.

A figure analytics could not compute is None, never a default number: strategy must be able to tell
"IV rank 0" from "no IV history yet". The one exception is the per-strike surface, packed as arrays:
there an unknown IV or Greek is NaN (see `events.surface_columns`).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from volguard_common import streams
from volguard_common.events._base import (
    EventBase,
    EventId,
    Name,
    NonNegativeFloat,
    Part,
    Percent0to100,
    PositiveFloat,
    Quantity,
    Text,
    Underlying,
    UnitInterval,
)
from volguard_common.events.surface_columns import ALL_IV_FLAGS as ALL_IV_FLAGS
from volguard_common.events.surface_columns import SURFACE_COLUMNS, SurfaceColumns
from volguard_common.events.surface_columns import IvFlag as IvFlag
from volguard_common.quant._types import Float64Array, Int64Array


class Quality(StrEnum):
    GOOD = "GOOD"
    DEGRADED = "DEGRADED"  # usable with care; reasons say why
    BAD = "BAD"  # do not trade on it


class ForwardSource(StrEnum):
    PARITY = "PARITY"  # put-call parity around ATM
    FUTURE = "FUTURE"  # the matching NIFTY future
    SPOT_CARRY = "SPOT_CARRY"  # spot carried at the risk-free rate: the fallback


Vol = Annotated[float, Field(gt=0)]


class StrikeSurface(Part):
    """Per-strike IVs and Black-76 Greeks of one expiry, columnar like the chain it came from.

    Greeks are per unit of the underlying: delta per 1 (fraction), gamma per index point, vega in
    rupees per vol point (1 %), theta in rupees per calendar day. NaN where the IV is unknown.

    The columns live in `columns` (see `events.surface_columns`: validated once, immutable, packed on
    the wire); each is also a read-only numpy property here (`surface.iv_call`). Construct with
    `columns=SurfaceColumns(...)`, or with every column as a keyword (lists with None for unknown, or
    arrays with NaN), as fixtures do.
    """

    columns: SurfaceColumns

    @model_validator(mode="before")
    @classmethod
    def _columns_as_keywords(cls, data: Any) -> Any:
        if isinstance(data, dict) and "columns" not in data and "strike" in data:
            named = {name: data[name] for name in SURFACE_COLUMNS if name in data}
            rest = {key: value for key, value in data.items() if key not in named}
            return {**rest, "columns": named}
        return data

    @property
    def strike(self) -> Float64Array:
        return self.columns.floats("strike")

    @property
    def iv_call(self) -> Float64Array:
        return self.columns.floats("iv_call")

    @property
    def iv_put(self) -> Float64Array:
        return self.columns.floats("iv_put")

    @property
    def call_flags(self) -> Int64Array:
        return self.columns.ints("call_flags")

    @property
    def put_flags(self) -> Int64Array:
        return self.columns.ints("put_flags")

    @property
    def call_delta(self) -> Float64Array:
        return self.columns.floats("call_delta")

    @property
    def call_gamma(self) -> Float64Array:
        return self.columns.floats("call_gamma")

    @property
    def call_vega(self) -> Float64Array:
        return self.columns.floats("call_vega")

    @property
    def call_theta(self) -> Float64Array:
        return self.columns.floats("call_theta")

    @property
    def put_delta(self) -> Float64Array:
        return self.columns.floats("put_delta")

    @property
    def put_gamma(self) -> Float64Array:
        return self.columns.floats("put_gamma")

    @property
    def put_vega(self) -> Float64Array:
        return self.columns.floats("put_vega")

    @property
    def put_theta(self) -> Float64Array:
        return self.columns.floats("put_theta")


class SabrFit(Part):
    """SABR (Hagan, Obłój correction) calibrated to one expiry's smile."""

    alpha: PositiveFloat
    beta: Annotated[float, Field(ge=0, le=1)]
    rho: Annotated[float, Field(gt=-1, lt=1)]
    nu: NonNegativeFloat
    rmse: NonNegativeFloat  # in vol (fraction) units
    converged: bool
    n_points: Quantity


class ExpectedMove(Part):
    """Move implied by the ATM straddle to expiry, in index points around the forward."""

    points: NonNegativeFloat
    pct: NonNegativeFloat  # fraction of spot (0.012 = 1.2 %)
    lower_breakeven: PositiveFloat
    upper_breakeven: PositiveFloat

    @model_validator(mode="after")
    def _ordered(self) -> ExpectedMove:
        if self.lower_breakeven > self.upper_breakeven:
            raise ValueError("ExpectedMove: lower_breakeven above upper_breakeven")
        return self


class ExpiryVol(Part):
    """Volatility picture of one expiry."""

    expiry: date
    days_to_expiry: Quantity  # calendar days
    trading_minutes_to_expiry: NonNegativeFloat
    forward: PositiveFloat
    forward_source: ForwardSource
    forward_quality: Quality
    atm_strike: PositiveFloat
    atm_iv: Vol | None
    surface: StrikeSurface
    sabr: SabrFit | None  # None: not enough clean strikes to calibrate
    rr25: float | None  # 25-delta risk reversal, call IV minus put IV
    bf25: float | None  # 25-delta butterfly, wings average minus ATM
    straddle_price: PositiveFloat | None
    expected_move: ExpectedMove | None
    pcr_oi: NonNegativeFloat | None  # None when call OI is zero
    pcr_volume: NonNegativeFloat | None
    max_pain: PositiveFloat | None
    call_oi_wall: PositiveFloat | None  # strike with the largest call OI
    put_oi_wall: PositiveFloat | None
    # Strikes the OI statistics (PCR by OI, max pain, walls) and the volume PCR were computed from:
    # those whose call and put OI (volume) were both reported. None in schema 1 payloads (not said).
    oi_strikes: Quantity | None = None
    volume_strikes: Quantity | None = None


class TermSignal(StrEnum):
    STEEP = "STEEP"
    FLAT = "FLAT"
    INVERTED = "INVERTED"


class TermPoint(Part):
    expiry: date
    days_to_expiry: Quantity
    atm_iv: Vol | None


class TermStructure(Part):
    points: list[TermPoint]
    slope: float | None  # vol points per 30 calendar days; None with fewer than two usable expiries
    curvature: float | None  # None with fewer than three usable expiries
    signal: TermSignal | None
    regime_implication: Text


class SkewSignal(StrEnum):
    PUT_SKEWED = "PUT_SKEWED"
    CALL_SKEWED = "CALL_SKEWED"
    NEUTRAL = "NEUTRAL"


class SkewView(Part):
    signal: SkewSignal
    rr25: float | None  # of the reference (nearest tradable) expiry
    recommendation: Text


class RealisedVol(Part):
    """Annualised realised volatility of NIFTY; None until enough history."""

    cc7: Vol | None  # close-to-close, 7 sessions
    cc21: Vol | None  # close-to-close, 21 sessions
    parkinson: Vol | None
    yang_zhang: Vol | None


class GarchForecast(Part):
    model: Name  # e.g. "GARCH(1,1)", "GJR-GARCH(1,1)"
    vol: Vol  # annualised forecast over the horizon
    horizon_days: Annotated[int, Field(gt=0)]
    persistence: NonNegativeFloat


class VolPercentiles(Part):
    lookback_days: Annotated[int, Field(gt=0)]
    vix_percentile: Percent0to100 | None
    vix_rank: Percent0to100 | None
    atm_iv_percentile: Percent0to100 | None
    atm_iv_rank: Percent0to100 | None
    # The ATM IV the percentile and rank are of: 30-day constant maturity, interpolated in total
    # variance between the expiries either side of 30 days - the measure of the daily history, whatever
    # the front expiry happens to be. None when the curve does not span 30 days (and in schema 1).
    atm_iv_30d: Vol | None = None


class PremiumSignal(StrEnum):
    SELL_BIG = "SELL_BIG"
    SELL_SMALL = "SELL_SMALL"
    NEUTRAL = "NEUTRAL"
    AVOID = "AVOID"


class VolPremium(Part):
    """How rich implied vol is against realised and forecast vol."""

    iv_rv_spread: float | None  # ATM IV minus the reference realised vol
    iv_garch_spread: float | None  # ATM IV minus the GARCH forecast
    signal: PremiumSignal
    confidence: UnitInterval


class Regime(StrEnum):
    LOW_VOL = "LOW_VOL"
    RISING_VOL = "RISING_VOL"
    HIGH_VOL = "HIGH_VOL"
    FALLING_VOL = "FALLING_VOL"
    EVENT_CRUSH = "EVENT_CRUSH"
    GAMMA_PIN = "GAMMA_PIN"
    TREND = "TREND"
    MEAN_REVERSION = "MEAN_REVERSION"


class TrendDirection(StrEnum):
    UP = "UP"  # NIFTY above its open: bull put spreads sit on the right side of it
    DOWN = "DOWN"  # below its open: bear call spreads


class RegimeView(Part):
    regime: Regime
    confidence: UnitInterval
    vix_spike: bool
    # With the TREND regime only (None otherwise, and in schema 1 payloads): which way NIFTY has moved
    # from today's open, and how far, in one-day 1-sd moves implied by the reference ATM IV
    # (1.2 = 1.2 sd); None when the move is unknown or exactly nil.
    trend_direction: TrendDirection | None = None
    trend_strength: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _trend_only_with_trend(self) -> RegimeView:
        if self.regime is not Regime.TREND and (
            self.trend_direction is not None or self.trend_strength is not None
        ):
            raise ValueError(f"RegimeView: a trend direction or strength with regime {self.regime.value}")
        if (self.trend_direction is None) != (self.trend_strength is None):
            raise ValueError("RegimeView: trend direction and strength come together")
        return self


class EventSeverity(StrEnum):
    A = "A"  # market-wide binary events (budget, RBI policy, election results)
    B = "B"
    C = "C"


class EventRisk(Part):
    score: Annotated[int, Field(ge=0, le=5)]
    severity: EventSeverity | None  # None: no scheduled event in the window
    size_multiplier: Annotated[float, Field(ge=0, le=1)]  # applied to position size
    events: list[Name]


class VolSnapshot(EventBase):
    """The full volatility picture; one per analytics cycle."""

    STREAM: ClassVar[str] = streams.AN_VOL.name
    # Version 2 added, all optional so that version 1 payloads still read (as "not said"): the strike
    # counts behind each expiry's OI and volume statistics, the trend's direction and strength with
    # the regime, and the 30-day constant-maturity ATM IV the ATM IV percentile and rank are of.
    SCHEMA_VERSION: ClassVar[int] = 2
    SUPPORTED_SCHEMA_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    type: Literal["VolSnapshot"] = "VolSnapshot"

    underlying: Underlying
    spot: PositiveFloat
    vix: NonNegativeFloat | None
    # ChainSnapshots this was computed from, for tracing a decision back to its quotes.
    chain_event_ids: list[EventId]
    expiries: Annotated[list[ExpiryVol], Field(min_length=1)]
    term: TermStructure
    skew: SkewView
    realised: RealisedVol
    garch: GarchForecast | None  # None until the model has enough history to fit
    percentiles: VolPercentiles
    premium: VolPremium
    regime: RegimeView
    event_risk: EventRisk
    is_expiry_day: bool
    is_last_hour: bool
    quality: Quality
    quality_reasons: list[Text]

    @model_validator(mode="after")
    def _consistent(self) -> VolSnapshot:
        for i in range(1, len(self.expiries)):
            if self.expiries[i].expiry <= self.expiries[i - 1].expiry:
                raise ValueError("VolSnapshot: expiries must be sorted by expiry with no duplicates")
        if self.quality is not Quality.GOOD and not self.quality_reasons:
            raise ValueError(f"VolSnapshot: quality {self.quality.value} needs at least one reason")
        return self

    def expiry_vol(self, expiry: date) -> ExpiryVol:
        for block in self.expiries:
            if block.expiry == expiry:
                return block
        raise KeyError(f"no expiry {expiry} in VolSnapshot (have {[b.expiry for b in self.expiries]})")
