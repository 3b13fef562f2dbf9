"""Daily history: realised vol (with today's partial bar), the once-a-day GARCH forecast, IV percentiles.

Inputs are what the service loads from Postgres at start and each morning:
- `index_bars`: NIFTY daily bars, a frame with columns trade_date, open, high, low, close;
- `vix_close`: India VIX daily closes (index points) by trade date;
- `atm_iv_close`: NIFTY 30-day constant-maturity ATM IV daily closes (fraction) by trade date.
Rows dated on or after the snapshot's trading day are ignored: history is what was known before today,
and today enters only through the intraday path (`IntradayBar`).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_common.events.vol import GarchForecast, RealisedVol, VolPercentiles
from volguard_common.quant import garch, realized
from volguard_common.quant._types import Float64Array

CC_SHORT = 7
CC_LONG = 21
RANGE_WINDOW = 21  # Parkinson and Yang-Zhang
# Bars the estimators read: the longest window and the close before it (today's bar is the last of them).
_TAIL = max(CC_LONG, RANGE_WINDOW) + 1
# Each realised estimator with the daily bars it needs (today's partial bar included).
_NEEDS = (
    ("cc7", CC_SHORT + 1),
    ("cc21", CC_LONG + 1),
    ("parkinson", RANGE_WINDOW),
    ("yang_zhang", RANGE_WINDOW + 1),
)


class IntradayBar(NamedTuple):
    """Today's NIFTY path so far (from index ticks): the partial daily bar.

    A NamedTuple rather than a frozen dataclass, like RegimeInputs: a new bar is built on every index
    print and chain set, and compared with the last one to reuse the realised vol.
    """

    trade_date: date
    open: float
    high: float
    low: float
    last: float


@dataclass(frozen=True)
class VolHistory:
    """Daily history known before the snapshot's trading day (see module docstring)."""

    index_bars: pd.DataFrame
    vix_close: pd.Series | None = None
    atm_iv_close: pd.Series | None = None

    def __post_init__(self) -> None:
        missing = {"trade_date", "open", "high", "low", "close"} - set(self.index_bars.columns)
        if missing:
            raise ValueError(f"index_bars lacks columns {sorted(missing)}")
        dates = pd.to_datetime(self.index_bars["trade_date"])
        if not dates.is_monotonic_increasing or dates.duplicated().any():
            raise ValueError("index_bars trade_date must be strictly increasing")

    @classmethod
    def from_daily_frames(
        cls,
        index: pd.DataFrame,
        vix: pd.DataFrame | None = None,
        atm_iv_percent: pd.DataFrame | None = None,
    ) -> VolHistory:
        """From daily-CSV frames as market_data's `parse_daily_csv` returns them (DatetimeIndex `date`,
        snake_case columns).
        `atm_iv_percent` holds ATM IV in percent, as the usual downloads do; it is stored as a fraction."""
        bars = index.loc[:, ["open", "high", "low", "close"]].reset_index(names="trade_date")
        return cls(
            index_bars=bars,
            vix_close=vix["close"] if vix is not None else None,
            atm_iv_close=atm_iv_percent["close"] / 100.0 if atm_iv_percent is not None else None,
        )

    def bars_before(self, day: date) -> pd.DataFrame:
        dates = pd.to_datetime(self.index_bars["trade_date"]).dt.date
        return self.index_bars.loc[(dates < day).to_numpy()]

    @staticmethod
    def series_before(
        series: pd.Series | None, day: date, calendar_days: int
    ) -> tuple[list[date], Float64Array]:
        """Dates and values in [day - calendar_days, day), oldest first (empty without a series).

        The window is in calendar days so that a file which ends months ago does not pass for "the
        last 252 sessions": stale history is thin history, and thin history gives unknown percentiles.
        """
        if series is None or series.empty:
            return [], np.empty(0, dtype=np.float64)
        index = pd.DatetimeIndex(pd.to_datetime(series.index))
        ordered = pd.Series(series.to_numpy(dtype=np.float64), index=index).sort_index()
        keep = (ordered.index < pd.Timestamp(day)) & (
            ordered.index >= pd.Timestamp(day - timedelta(days=calendar_days))
        )
        kept = ordered[keep]
        return [ts.date() for ts in kept.index], np.asarray(kept.to_numpy(dtype=np.float64), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LookbackWindow:
    """One series' last `lookback` closes with the NaN days (feed gaps) dropped, sorted once per
    trading day, so each snapshot's percentile is a bisection, not a pass over the history."""

    lookback: int
    # True when the window holds an inf: `stats.iv_percentile` refuses such a history, and so does this.
    has_inf: bool
    ordered: Float64Array
    # `ordered` as Python floats: bisecting them for one float beats a numpy call per snapshot, and
    # gives the same index as `np.searchsorted(ordered, x, side="left")` (no NaN is left in it).
    values: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.ordered.tolist()))

    @staticmethod
    def of(series: Float64Array, lookback: int) -> LookbackWindow:
        window = series[-lookback:]
        present = window[~np.isnan(window)]
        return LookbackWindow(lookback, bool(np.isinf(present).any()), np.sort(present))

    def percentile(self, current: float) -> float:
        """`stats.iv_percentile(series, current, lookback)`: percent of the days strictly below."""
        if not math.isfinite(current):
            raise ValueError("current IV must be finite")
        if self.has_inf:
            raise ValueError("IV history contains inf")
        if not self.values:
            raise ValueError("no IV history in the lookback window")
        return 100.0 * bisect.bisect_left(self.values, current) / len(self.values)


@dataclass(frozen=True, slots=True)
class DayInputs:
    """History arrays for one trading day, cut once per day (not per snapshot)."""

    trade_date: date
    open: Float64Array
    high: Float64Array
    low: Float64Array
    close: Float64Array
    vix_dates: list[date]
    vix: Float64Array
    atm_iv: Float64Array
    # The percentile windows of `vix` and `atm_iv` over the `lookback_days` day_inputs was given.
    vix_window: LookbackWindow
    atm_iv_window: LookbackWindow
    # The completed days' share of the realised-vol windows, summed once a day so that today's moving
    # bar costs a few scalar logs per snapshot (see `realised_vol`); None when there is no completed
    # day or the bars it would read are not clean prices. Worked out from the arrays above in
    # __post_init__, so `dataclasses.replace` of the bars cannot leave it stale.
    completed: realized.CompletedDays | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "completed", _completed_days(self.open, self.high, self.low, self.close))


def _completed_days(
    open: Float64Array, high: Float64Array, low: Float64Array, close: Float64Array
) -> realized.CompletedDays | None:
    # With today's bar appended the estimators read the last _TAIL - 1 completed bars, and only those.
    o, h, lo, c = open[-(_TAIL - 1) :], high[-(_TAIL - 1) :], low[-(_TAIL - 1) :], close[-(_TAIL - 1) :]
    # Not refused here: history that the estimators would refuse stays with the reference path in
    # `realised_vol`, which refuses it at the snapshot that reads it, as it always did. NaN compares
    # False, so it is caught with the non-positive and infinite prices.
    clean = (lo > 0.0) & (lo <= h) & (h < np.inf) & (o > 0.0) & (o < np.inf) & (c > 0.0) & (c < np.inf)
    if c.size == 0 or not clean.all():
        return None
    return realized.CompletedDays.of(o, h, lo, c, (CC_SHORT, CC_LONG, RANGE_WINDOW))


def day_inputs(history: VolHistory, day: date, lookback_days: int) -> DayInputs:
    """History cut for `day`: all completed index bars, and VIX / ATM IV closes of the last
    `lookback_days` sessions (as calendar days: x 365/252, plus a week of holidays)."""
    bars = history.bars_before(day)
    window = int(lookback_days * 365 / 252) + 7
    vix_dates, vix = VolHistory.series_before(history.vix_close, day, window)
    _, atm_iv = VolHistory.series_before(history.atm_iv_close, day, window)
    return DayInputs(
        trade_date=day,
        open=bars["open"].to_numpy(dtype=np.float64),
        high=bars["high"].to_numpy(dtype=np.float64),
        low=bars["low"].to_numpy(dtype=np.float64),
        close=bars["close"].to_numpy(dtype=np.float64),
        vix_dates=vix_dates,
        vix=vix,
        atm_iv=atm_iv,
        vix_window=LookbackWindow.of(vix, lookback_days),
        atm_iv_window=LookbackWindow.of(atm_iv, lookback_days),
    )


def realised_vol(days: DayInputs, today: IntradayBar | None) -> tuple[RealisedVol, list[str]]:
    """Close-to-close 7d and 21d, Parkinson 21d and Yang-Zhang 21d, with today's partial bar appended.

    The partial bar enters as a day whose close is the last index print: close-to-close then measures
    the move so far today, which is what a trader watching realised vol intraday wants. Range-based
    estimators see a range that can still widen, so early in the session they read low; the bar is
    not rescaled because the intraday variance profile is not uniform enough for a clock-based scale.

    Today's bar moves with every print, the completed days only once a day: their share of each window
    was summed when the day's inputs were cut (`DayInputs.completed`), and a snapshot adds the bar
    with scalar logs, equal to the `realized` estimators on the appended arrays to rounding. A bar or
    history the estimators would refuse takes those estimators themselves, which refuse it.
    """
    completed = days.completed
    if (
        today is not None
        and completed is not None
        # NaN compares False: a NaN print goes the reference way, to be refused there.
        and 0.0 < today.low <= today.high < math.inf
        and 0.0 < today.open < math.inf
        and 0.0 < today.last < math.inf
    ):
        n = days.close.size + 1
        cc7 = completed.close_to_close(today.last, CC_SHORT) if n > CC_SHORT else None
        cc21 = completed.close_to_close(today.last, CC_LONG) if n > CC_LONG else None
        park = completed.parkinson(today.high, today.low, RANGE_WINDOW) if n >= RANGE_WINDOW else None
        yz = (
            completed.yang_zhang(today.open, today.high, today.low, today.last, RANGE_WINDOW)
            if n > RANGE_WINDOW
            else None
        )
    else:
        n, cc7, cc21, park, yz = _reference_estimates(days, today)
    unknown: list[str] = []
    zero: list[str] = []
    kept: list[float | None] = []
    for (name, need), value in zip(_NEEDS, (cc7, cc21, park, yz), strict=True):
        if value is None:
            unknown.append(f"realised {name} unknown: {n} daily bars, need {need}")
        elif not value > 0.0:
            # A flat window gives a zero realised vol, which the model (Vol > 0) cannot carry: unknown.
            zero.append(f"realised {name} is zero (no price movement in the window)")
            value = None
        kept.append(value)
    return RealisedVol(cc7=kept[0], cc21=kept[1], parkinson=kept[2], yang_zhang=kept[3]), unknown + zero


def _reference_estimates(
    days: DayInputs, today: IntradayBar | None
) -> tuple[int, float | None, float | None, float | None, float | None]:
    """The bar count and the four estimates by the `realized` estimators on the appended arrays."""
    # The estimators read only the last window (+1 bar): cut the years of history before them first,
    # then append today's bar to those few.
    o, h, lo, c = days.open, days.high, days.low, days.close
    n = c.size
    if today is not None:
        n += 1
        o = np.append(o[-(_TAIL - 1) :], today.open)
        h = np.append(h[-(_TAIL - 1) :], today.high)
        lo = np.append(lo[-(_TAIL - 1) :], today.low)
        c = np.append(c[-(_TAIL - 1) :], today.last)
    else:
        o, h, lo, c = o[-_TAIL:], h[-_TAIL:], lo[-_TAIL:], c[-_TAIL:]
    cc7 = realized.close_to_close(c, CC_SHORT) if n > CC_SHORT else None
    cc21 = realized.close_to_close(c, CC_LONG) if n > CC_LONG else None
    park = realized.parkinson(h, lo, RANGE_WINDOW) if n >= RANGE_WINDOW else None
    yz = realized.yang_zhang(o, h, lo, c, RANGE_WINDOW) if n > RANGE_WINDOW else None
    return n, cc7, cc21, park, yz


@dataclass
class GarchCache:
    """GARCH(1,1) refitted once per trading day; the cache key is the trading day of ts_event.

    The fit uses completed daily closes only (today's partial bar would change it every snapshot).
    Daily variance forecasts are kept for `max_horizon` days so any expiry's horizon is an average of
    the cached path, with no refit.
    """

    max_horizon: int
    fits: dict[date, garch.GarchForecast | str] = field(default_factory=dict)
    refits: int = 0
    # The GarchForecast per horizon of one fit (`_views_of`): the reference expiry, hence the horizon,
    # changes a few times a day at most, so the average over the cached path is worked out once.
    _views_of: garch.GarchForecast | None = field(default=None, init=False, repr=False)
    _views: dict[int, GarchForecast] = field(default_factory=dict, init=False, repr=False)

    def fit_for(self, days: DayInputs) -> garch.GarchForecast | str:
        """The day's fit, or the reason there is none."""
        cached = self.fits.get(days.trade_date)
        if cached is not None:
            return cached
        returns = realized.log_returns(days.close) if days.close.size >= 2 else np.empty(0)
        result: garch.GarchForecast | str
        if returns.size < garch.MIN_OBSERVATIONS:
            result = f"GARCH unknown: {returns.size} daily returns, need {garch.MIN_OBSERVATIONS}"
        else:
            result = garch.forecast(returns, self.max_horizon, "garch")
            if not result.converged:
                result = "GARCH unknown: the fit did not converge"
        self.refits += 1
        # Only today's fit is ever read again; keep the cache at one entry.
        self.fits = {days.trade_date: result}
        return result

    def forecast(self, days: DayInputs, horizon_days: int) -> tuple[GarchForecast | None, str | None]:
        fit = self.fit_for(days)
        if isinstance(fit, str):
            return None, fit
        h = min(max(horizon_days, 1), self.max_horizon)
        if fit is not self._views_of:
            self._views_of, self._views = fit, {}
        view = self._views.get(h)
        if view is None:
            daily = fit.daily_vols[:h]
            vol = math.sqrt(float(np.mean(daily * daily)))
            view = GarchForecast(model="GARCH(1,1)", vol=vol, horizon_days=h, persistence=fit.persistence)
            self._views[h] = view
        return view, None


def percentiles(
    days: DayInputs, vix: float | None, atm_iv: float | None, config: AnalyticsConfig
) -> tuple[VolPercentiles, list[str]]:
    """IV percentile and rank of India VIX and of the 30-day constant-maturity ATM IV (`atm_iv`, the
    measure the daily ATM IV history keeps) over the lookback; unknown with thin history."""
    reasons: list[str] = []
    lookback = config.percentile_lookback_days
    vix_pct, vix_rank = _percentile_and_rank(
        "VIX", _window(days.vix_window, days.vix, lookback), vix, config, reasons
    )
    iv_pct, iv_rank = _percentile_and_rank(
        "30-day ATM IV", _window(days.atm_iv_window, days.atm_iv, lookback), atm_iv, config, reasons
    )
    return (
        VolPercentiles(
            lookback_days=lookback,
            vix_percentile=vix_pct,
            vix_rank=vix_rank,
            atm_iv_percentile=iv_pct,
            atm_iv_rank=iv_rank,
            atm_iv_30d=atm_iv,
        ),
        reasons,
    )


def _window(cut: LookbackWindow, series: Float64Array, lookback: int) -> LookbackWindow:
    """The day's window when it was cut for this lookback, else one cut now."""
    return cut if cut.lookback == lookback else LookbackWindow.of(series, lookback)


def _percentile_and_rank(
    name: str, window: LookbackWindow, current: float | None, config: AnalyticsConfig, reasons: list[str]
) -> tuple[float | None, float | None]:
    """Percentile and rank of `current` in `window`; None for what cannot be known, with the reason
    appended to `reasons`."""
    if current is None:
        reasons.append(f"{name} percentile unknown: no current value")
        return None, None
    present = len(window.values)
    if present < config.percentile_min_days:
        reasons.append(
            f"{name} percentile unknown: {present} history days, need {config.percentile_min_days}"
        )
        return None, None
    pct = window.percentile(current)
    low = min(window.values[0], current)
    high = max(window.values[-1], current)
    if low == high:
        reasons.append(f"{name} rank unknown: history has no range")
        return pct, None
    # Divide first: (current - low) / (high - low) is at most 1 exactly, while 100 * (high - low)
    # / (high - low) can round to 100.00000000000001, which VolPercentiles refuses (a new high of
    # IV or VIX would fail the whole snapshot).
    return pct, 100.0 * ((current - low) / (high - low))


def vix_change(days: DayInputs, vix: float | None, sessions: int = 5) -> float | None:
    """Relative change of VIX now against its close `sessions` sessions ago; None without that close
    (or when the history's last close is more than a week old: a gap is not a trend)."""
    if vix is None or days.vix.size < sessions:
        return None
    if (days.trade_date - days.vix_dates[-1]).days > 7:
        return None
    then = float(days.vix[-sessions])
    if not (math.isfinite(then) and then > 0.0):
        return None
    return vix / then - 1.0


def intraday_bar_update(
    bar: IntradayBar | None,
    ts: datetime,
    price: float,
    day_open: float | None,
    day_high: float | None,
    day_low: float | None,
) -> IntradayBar:
    """Fold one index print into today's bar; a new trading day starts a new bar.

    The exchange's own session open/high/low (when the tick carries them) win over our sampled path,
    which can miss prints between ticks.
    """
    today = ts.date()
    if bar is None or bar.trade_date != today:
        bar = IntradayBar(today, price, price, price, price)
    open_ = day_open if day_open is not None else bar.open
    high = max(bar.high, price, day_high if day_high is not None else price)
    low = min(bar.low, price, day_low if day_low is not None else price)
    return IntradayBar(today, open_, max(high, open_), min(low, open_), price)
