"""India VIX: a mean-reverting log process, negatively correlated with NIFTY returns.

India VIX is NSE's 30-day implied volatility of NIFTY (a variance-swap style index, in vol points).
The simulator keeps one "true" 30-day level: the option surface's 30-day ATM vol equals VIX/100 by
construction (`surface.py`), and the published VIX tick adds a small, independent measurement noise
(NSE computes it from best quotes every few seconds, so it jitters around the fair level).

Dynamics (trading time, years of 252 days):
    d ln VIX = kappa (ln theta - ln VIX) dt + eta dW,   corr(dW, dW_spot) = rho  (< 0: leverage)
Calibrated to India VIX 2015-2025: long-run level ~14, half-life of shocks ~ 6 weeks, daily log
changes with a standard deviation of ~5-6 %, correlation with NIFTY daily returns around -0.7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VixModel:
    theta: float = 14.0  # long-run level, vol points
    kappa: float = 6.0  # mean reversion per trading year (half-life ln2/6 ≈ 29 trading days)
    eta: float = 0.9  # vol of log VIX per sqrt(trading year): ~5.7 % a day
    rho: float = -0.7  # correlation of log-VIX shocks with index return shocks
    floor: float = 8.0  # India VIX has not printed below ~8 since its launch
    cap: float = 90.0  # above the March 2020 (~86) and 2008 (~92 intraday) peaks
    # Published VIX = true 30-day level x exp(noise): a few basis points of quote noise.
    tick_noise: float = 0.002

    def clamp_log(self, log_vix: float) -> float:
        return min(max(log_vix, math.log(self.floor)), math.log(self.cap))


# Sessions in a trading year. A session's seconds are its own dated length (22,500 for 09:15-15:30,
# 23,100 for 09:15-15:40 from 3 Aug 2026): a day carries a day's variance whatever its length.
SESSIONS_PER_YEAR = 252
# A 09:15-15:30 session, the length before 3 Aug 2026; a reference for tests, not a rule.
SESSION_SECONDS = 22_500
