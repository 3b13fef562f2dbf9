"""Two years of daily NIFTY and India VIX bars, from the same model family as the intraday simulator.

Analytics needs history the moment the simulator starts (GARCH forecasts, IV percentile and rank,
realised-vol estimators), so the simulated market comes with its own past: `daily_bars(end, seed)`
returns consistent daily OHLC bars for every NSE trading day of the two years ending on `end` (the
trading day before the simulated session). The simulator opens its first session from the last bar
(previous close and VIX), so history and live data join without a seam.

Model, per trading day d (the daily version of `spot.py`):
    r_d   = k_rv * VIX_{d-1}/100 / sqrt(252) * sqrt(h_d) * z_d + jump_d        (z: Student-t, 5 dof)
    h_d+1 = omega + (alpha + gamma 1[z_d < 0]) h_d z_d^2 + beta h_d            (GJR-GARCH, E h = 1)
    ln VIX_d = ln VIX_{d-1} + kappa (ln theta - ln VIX_{d-1}) + eta (rho z_d + sqrt(1-rho^2) e_d) - 8 jump_d
so realised vol runs at ~0.85 x VIX with GARCH clustering and leverage on top. High, low, open and
close come from 25 intraday sub-steps (15 minutes each, U-shaped variance) of the same day's move.
Prices are finally scaled so the last close sits near a realistic NIFTY level (returns are scale
free, so this changes no statistic).

Trading days come from the NSE calendar in `volguard_common.clock`; its data starts in 2025, so the
2024 NSE holiday list is kept here to cover a two-year window from a 2026 start (`history_calendar`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, time, timedelta
from functools import cache

import numpy as np

from volguard_common import clock
from volguard_common.clock import Holiday, SpecialSession, TradingCalendar

NIFTY = "NIFTY"
INDIA_VIX = "INDIAVIX"
NIFTY_ATM_IV = "NIFTYATMIV"
SUBSTEPS = 25

# NSE trading holidays 2024 (equity derivatives), from the exchange's 2024 circulars.
NSE_HOLIDAYS_2024 = (
    (date(2024, 1, 22), "Special holiday (Ram Mandir consecration)"),
    (date(2024, 1, 26), "Republic Day"),
    (date(2024, 3, 8), "Mahashivratri"),
    (date(2024, 3, 25), "Holi"),
    (date(2024, 3, 29), "Good Friday"),
    (date(2024, 4, 11), "Id-Ul-Fitr"),
    (date(2024, 4, 17), "Shri Ram Navmi"),
    (date(2024, 5, 1), "Maharashtra Day"),
    (date(2024, 5, 20), "General elections (Mumbai)"),
    (date(2024, 6, 17), "Bakri Id"),
    (date(2024, 7, 17), "Moharram"),
    (date(2024, 8, 15), "Independence Day"),
    (date(2024, 10, 2), "Mahatma Gandhi Jayanti"),
    (date(2024, 11, 1), "Diwali Laxmi Pujan"),
    (date(2024, 11, 15), "Gurunanak Jayanti"),
    (date(2024, 11, 20), "Maharashtra assembly elections"),
    (date(2024, 12, 25), "Christmas"),
)
# Saturday 20 January 2024: a full trading session (it replaced Monday 22 January).
NSE_SPECIAL_SESSIONS_2024 = ((date(2024, 1, 20), "Saturday full session"),)


@dataclass(frozen=True, slots=True)
class DailyBar:
    symbol: str
    trade_date: date
    open: float
    high: float
    low: float
    close: float
    volume: int


@cache
def history_calendar() -> TradingCalendar:
    """The NSE calendar of `volguard_common.clock`, extended back over 2024."""
    base = clock.nse_calendar()
    holidays = [Holiday(day=d, name=name, source="NSE") for d, name in NSE_HOLIDAYS_2024]
    holidays += list(base.holidays)
    specials = [
        SpecialSession(
            day=d, open=time(9, 15), close=time(15, 30), kind="full", description=text, source="NSE"
        )
        for d, text in NSE_SPECIAL_SESSIONS_2024
    ]
    day = base.first_day
    while day <= base.last_day:
        session = base.special_session(day)
        if session is not None:
            specials.append(session)
        day += timedelta(days=1)
    return TradingCalendar(holidays, specials, date(2024, 1, 1), base.last_day, base.session_times)


def trading_days(end: date, years: int = 2) -> list[date]:
    """Trading days in (end - years, end], oldest first; `end` must itself be a trading day."""
    cal = history_calendar()
    if not cal.is_trading_day(end):
        raise ValueError(f"{end} is not a trading day")
    try:
        first = end.replace(year=end.year - years)
    except ValueError:  # 29 February
        first = end.replace(year=end.year - years, day=28)
    days: list[date] = []
    day = first + timedelta(days=1)
    while day <= end:
        if cal.is_trading_day(day):
            days.append(day)
        day += timedelta(days=1)
    return days


def daily_bars(end: date, seed: int, years: int = 2) -> list[DailyBar]:
    """NIFTY and INDIAVIX daily bars for the trading days of the `years` ending on `end`, sorted by
    date with NIFTY before INDIAVIX on each day. Same arguments, same bars."""
    days = trading_days(end, years)
    n = len(days)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xDA117])))
    k_rv, dof = 0.85, 5.0
    omega, alpha, gamma, beta = 0.05, 0.03, 0.06, 0.89  # alpha + gamma/2 + beta = 0.95
    kappa, theta, eta, rho = 0.024, math.log(14.0), 0.055, -0.7
    # Clipped at 4.5 sd: unclipped t(5) draws at a high GARCH state give several 10 % days in two
    # years, where NIFTY has had two in the last twenty (March 2020).
    z = np.clip(rng.standard_t(dof, n) * math.sqrt((dof - 2.0) / dof), -4.5, 4.5)
    e = rng.standard_normal(n)
    jump = np.where(rng.random(n) < 3.0 / 252.0, rng.normal(-0.01, 0.008, n), 0.0)
    log_vix = math.log(14.0) + 0.2 * float(rng.standard_normal())
    h = 1.0
    returns = np.empty(n)
    day_sd = np.empty(n)
    vix_close = np.empty(n)
    vix_prev = np.empty(n)
    for d in range(n):
        vix_prev[d] = math.exp(log_vix)
        sd = k_rv * vix_prev[d] / 100.0 / math.sqrt(252.0) * math.sqrt(h)
        day_sd[d] = sd
        returns[d] = 0.11 / 252.0 - 0.5 * sd * sd + sd * z[d] + jump[d]
        h = omega + (alpha + gamma * (z[d] < 0.0)) * h * z[d] * z[d] + beta * h
        h = min(max(h, 0.3), 3.0)
        log_vix += kappa * (theta - log_vix) + eta * (rho * z[d] + math.sqrt(1.0 - rho * rho) * e[d])
        log_vix -= 8.0 * jump[d]
        log_vix = min(max(log_vix, math.log(9.0)), math.log(60.0))
        vix_close[d] = math.exp(log_vix)

    # Intraday paths: the day's move spread over 25 sub-steps as a Brownian bridge with U-shaped
    # variance, so open/high/low/close are those of one consistent path. The first sub-step is the
    # overnight gap (15 % of the day's variance).
    weights = 1.0 + 1.6 * np.exp(-np.linspace(0.02, 1.0, SUBSTEPS - 1) / 0.08)
    weights = np.concatenate([[0.15 * weights.sum() / 0.85], weights])
    weights /= weights.sum()
    shocks = rng.standard_normal((n, SUBSTEPS)) * np.sqrt(weights)[None, :]
    bridge = shocks - weights[None, :] * shocks.sum(axis=1, keepdims=True)
    spot_steps = returns[:, None] * weights[None, :] + day_sd[:, None] * bridge
    log_path = np.cumsum(spot_steps, axis=1)  # relative to the previous close
    log_close = np.cumsum(returns)
    log_prev_close = np.concatenate([[0.0], log_close[:-1]])
    anchor = 25_000.0 * math.exp(0.04 * float(rng.standard_normal()))
    scale = math.log(anchor) - log_close[-1]
    spot = np.exp(log_prev_close[:, None] + log_path + scale)

    vix_moves = np.log(vix_close / vix_prev)
    vix_bridge = rng.standard_normal((n, SUBSTEPS)) * np.sqrt(weights)[None, :]
    vix_bridge -= weights[None, :] * vix_bridge.sum(axis=1, keepdims=True)
    # VIX intraday wiggles mirror the index's (leverage) plus their own noise.
    vix_steps = vix_moves[:, None] * weights[None, :] + 0.03 * (
        rho * bridge + math.sqrt(1 - rho * rho) * vix_bridge
    )
    vix_path = vix_prev[:, None] * np.exp(np.cumsum(vix_steps, axis=1))

    volume = np.floor(2.6e8 * (1.0 + 0.6 * np.abs(returns) / day_sd) * rng.lognormal(0.0, 0.15, n)).astype(
        np.int64
    )

    bars: list[DailyBar] = []
    for d, day in enumerate(days):
        path = spot[d]
        vpath = vix_path[d]
        bars.append(
            DailyBar(
                symbol=NIFTY,
                trade_date=day,
                open=round(float(path[0]), 2),
                high=round(float(path.max()), 2),
                low=round(float(path.min()), 2),
                close=round(float(path[-1]), 2),
                volume=int(volume[d]),
            )
        )
        bars.append(
            DailyBar(
                symbol=INDIA_VIX,
                trade_date=day,
                open=round(float(vpath[0]), 4),
                high=round(float(vpath.max()), 4),
                low=round(float(vpath.min()), 4),
                close=round(float(vpath[-1]), 4),
                volume=0,
            )
        )
    return bars


def atm_iv_bars(bars: list[DailyBar]) -> list[DailyBar]:
    """The simulated market's daily 30-day ATM implied vol (percent), one bar per INDIAVIX bar.

    The simulator's surface makes the 30-day ATM vol exactly VIX/100 (`surface.atm_term_structure`),
    so its ATM IV history is its VIX history read as a 30-day ATM IV in percent - the same series
    analytics keeps from live snapshots (a 30-day constant-maturity ATM IV), which is what makes the
    seeded history and the first session's percentile consistent."""
    return [
        DailyBar(NIFTY_ATM_IV, bar.trade_date, bar.open, bar.high, bar.low, bar.close, 0)
        for bar in bars
        if bar.symbol == INDIA_VIX
    ]
