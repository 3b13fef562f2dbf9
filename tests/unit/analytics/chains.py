"""Chain builders for analytics tests: quotes priced off known SABR parameters, tick-rounded, spread."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.history import VolHistory
from volguard_analytics.domain.snapshot import deterministic_event_id
from volguard_common import clock
from volguard_common.clock import IST
from volguard_common.events import ChainSnapshot, QuoteFlag
from volguard_common.quant import black76, sabr
from volguard_common.settings import DEFAULT_RISK_FREE_RATE
from volguard_market_data.history_files import parse_daily_csv

TICK = 0.05
RATE = DEFAULT_RISK_FREE_RATE
SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@dataclass(frozen=True)
class Truth:
    forward: float
    t: float
    alpha: float
    beta: float
    rho: float
    nu: float

    def vol(self, strike: Any) -> Any:
        return sabr.vol(self.forward, strike, self.t, self.alpha, self.beta, self.rho, self.nu)


def truth_for(
    ts_event: datetime, expiry: date, spot: float, atm_vol: float, rho: float, nu: float, beta: float = 0.5
) -> Truth:
    t = (clock.expiry_cutoff(expiry) - ts_event).total_seconds() / (365.0 * 86_400.0)
    forward = spot * math.exp(RATE * t)
    alpha = sabr.alpha_from_atm(atm_vol, forward, t, beta, rho, nu)
    return Truth(forward, t, alpha, beta, rho, nu)


def sabr_chain(
    ts_event: datetime,
    expiry: date,
    *,
    spot: float = 24_000.0,
    atm_vol: float = 0.14,
    rho: float = -0.35,
    nu: float = 1.2,
    n_strikes: int = 81,
    half_spread_frac: float = 0.01,
    oi: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None,
    forward_on_chain: bool = True,
    vix: float | None = 12.5,
    edit: Callable[[dict[str, Any]], None] | None = None,
    stale: bool = False,
    source: str = "market_data/test",
) -> tuple[ChainSnapshot, Truth]:
    """A chain whose mids come from SABR(`atm_vol`, rho, nu, beta 0.5): bid/ask = true price -/+ a
    half-spread of `half_spread_frac` (at least one tick), rounded outward to the 0.05 tick. A bid that
    would be below one tick is None with ZERO_BID. `edit` may rewrite the columns before validation."""
    truth = truth_for(ts_event, expiry, spot, atm_vol, rho, nu)
    discount = math.exp(-RATE * truth.t)
    atm = round(truth.forward / 50.0) * 50.0
    strikes = atm + 50.0 * (np.arange(n_strikes) - n_strikes // 2)
    vols = truth.vol(strikes)
    columns: dict[str, Any] = {"strike": strikes.tolist()}
    distance = np.abs(strikes - truth.forward)
    default_oi = (1000 + 20000 * np.exp(-((distance / 600.0) ** 2))).astype(np.int64) * 65
    open_interest = oi(strikes) if oi is not None else default_oi
    for side, is_call in (("call", True), ("put", False)):
        price = black76.price(truth.forward, strikes, truth.t, vols, is_call, discount)
        half = np.maximum(TICK, half_spread_frac * price)
        bid = np.floor((price - half) / TICK + 1e-9) * TICK
        ask = np.ceil((price + half) / TICK - 1e-9) * TICK
        no_bid = bid < TICK
        columns[f"{side}_bid"] = [
            None if nb else round(float(b), 2) for b, nb in zip(bid, no_bid, strict=True)
        ]
        columns[f"{side}_ask"] = [round(float(a), 2) for a in ask]
        columns[f"{side}_ltp"] = [round(float(max(TICK, p)), 2) for p in np.round(price / TICK) * TICK]
        columns[f"{side}_flags"] = [int(QuoteFlag.ZERO_BID) if nb else 0 for nb in no_bid]
        columns[f"{side}_bid_qty"] = [0 if nb else 650 for nb in no_bid]
        columns[f"{side}_ask_qty"] = [650] * n_strikes
        columns[f"{side}_oi"] = [int(x) for x in open_interest]
        columns[f"{side}_volume"] = [int(x) // 2 for x in open_interest]
        columns[f"{side}_instrument_key"] = [f"NSE_FO|{side}{i}" for i in range(n_strikes)]
    if edit is not None:
        edit(columns)
    chain = ChainSnapshot.model_validate(
        {
            "ts_event": ts_event,
            "ts_init": ts_event,
            "event_id": deterministic_event_id(source, ts_event, [expiry.isoformat()]),
            "source": source,
            "underlying": "NIFTY",
            "expiry": expiry,
            "spot": spot,
            "forward": round(truth.forward, 2) if forward_on_chain else None,
            "vix": vix,
            "lot_size": 65,
            "tick_size": TICK,
            "stale": stale,
            "columns": columns,
        }
    )
    return chain, truth


def real_history(with_atm_iv: bool = True) -> VolHistory:
    index = parse_daily_csv(SHARED / "nifty50_daily_nse.csv").frame
    vix = parse_daily_csv(SHARED / "india_vix_daily_nse.csv").frame
    atm = parse_daily_csv(SHARED / "nifty_atm_iv_daily.csv").frame if with_atm_iv else None
    return VolHistory.from_daily_frames(index, vix, atm)


CONFIG = AnalyticsConfig()
TS = datetime(2025, 12, 17, 10, 30, tzinfo=IST)  # a Wednesday; history ends 16 Dec 2025
