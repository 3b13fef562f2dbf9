"""Shared builders for the simulator tests (plain functions, no fixtures with hidden state)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from volguard_common.clock import IST
from volguard_market_data.domain.sim import scenarios
from volguard_market_data.domain.sim.market import MarketFrame, SimConfig, SimulatedMarket
from volguard_market_data.domain.sim.session import intraday_variance_profile
from volguard_market_data.domain.sim.spot import overnight_move, simulate_session
from volguard_market_data.domain.sim.vix import SESSION_SECONDS

# A Tuesday with a weekly expiry: 7 expiries listed (4 weeklies + 3 monthlies, none shared).
EXPIRY_TUESDAY = datetime(2026, 12, 1, 9, 15, tzinfo=IST)
ORDINARY_WEDNESDAY = datetime(2026, 12, 2, 9, 15, tzinfo=IST)


def simulate_days(seed: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-by-second spot and true VIX of `days` ordinary sessions, shape (days, 22,500)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    profile = intraday_variance_profile(SESSION_SECONDS)
    prev_close, vix, log_h = 24_000.0, 14.0, 0.0
    spots, vixes = [], []
    for _ in range(days):
        script = scenarios.session_script("", SESSION_SECONDS, prev_close, vix, rng)
        gap, dv, log_h = overnight_move(rng, vix=vix, log_h=log_h)
        path = simulate_session(
            n_seconds=SESSION_SECONDS,
            open_spot=prev_close * math.exp(gap),
            prev_close=prev_close,
            open_vix=vix * math.exp(dv),
            log_h=log_h,
            profile=profile,
            script=script,
            rng=rng,
        )
        spots.append(path.spot)
        vixes.append(path.vix)
        prev_close, vix, log_h = float(path.spot[-1]), float(path.vix[-1]), path.final_log_h
    return np.array(spots), np.array(vixes)


def market(
    start: datetime = EXPIRY_TUESDAY, seed: int = 7, scenario: str = "", **config: object
) -> SimulatedMarket:
    return SimulatedMarket(SimConfig(seed=seed, start=start, scenario=scenario, **config))  # type: ignore[arg-type]


def frames(sim: SimulatedMarket, steps: int) -> list[MarketFrame]:
    return [sim.advance() for _ in range(steps)]
