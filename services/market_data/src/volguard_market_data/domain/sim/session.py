"""The trading session as the simulator sees it: its one-second grid and the intraday volatility U-shape.

Index volatility on NSE is highest in the first half hour (overnight news is priced in), lowest around
lunch, and picks up again into the close (MOC flows, expiry-day hedging). The profile below multiplies
the per-second variance; it is normalised to mean 1 over the session so the U-shape moves variance
around the day without changing the daily total.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from volguard_common import clock
from volguard_common.quant._types import Float64Array

# Shape of the U: extra variance at the open decays with a time constant of 5 % of the session
# (~19 minutes); the afternoon pick-up builds over the last 4 % (~15 minutes).
OPEN_BUMP = 1.6
OPEN_DECAY = 0.05
CLOSE_BUMP = 1.0
CLOSE_DECAY = 0.04


def session_seconds(open_dt: datetime, close_dt: datetime) -> int:
    """Whole seconds in the session (22,500 for 09:15–15:30, 23,100 for 09:15–15:40 from 3 Aug 2026)."""
    return int((close_dt - open_dt).total_seconds())


def intraday_variance_profile(n_seconds: int) -> Float64Array:
    """Variance multiplier for each second of a session of `n_seconds`, mean exactly 1."""
    tau = (np.arange(n_seconds, dtype=np.float64) + 0.5) / n_seconds
    raw = 1.0 + OPEN_BUMP * np.exp(-tau / OPEN_DECAY) + CLOSE_BUMP * np.exp(-(1.0 - tau) / CLOSE_DECAY)
    profile: Float64Array = raw / raw.mean()
    return profile


def session_open_on_or_after(ts: datetime) -> tuple[datetime, datetime]:
    """Bounds of the session that is running at `ts`, or else of the next one to open after it."""
    t = clock.to_ist(ts)
    day = t.date()
    if clock.is_trading_day(day):
        open_dt, close_dt = clock.session_bounds(day)
        if t < close_dt:
            return open_dt, close_dt
    return clock.session_bounds(clock.next_trading_day(day))


def default_start(now: datetime) -> datetime:
    """Settings' documented default for `sim_start`: today's open if the market is open at `now`, else
    the next session's open. Only this function reads a caller-supplied wall time."""
    open_dt, _ = session_open_on_or_after(now)
    return open_dt
