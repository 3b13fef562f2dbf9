"""The simulated NIFTY market (issue 4): spot, India VIX, option surface, exchange-like quotes,
scripted scenarios and a consistent two-year daily history. Pure domain code: no I/O, no wall clock."""

from volguard_market_data.domain.sim.daily_bars import DailyBar, daily_bars
from volguard_market_data.domain.sim.market import (
    ChainFrame,
    DayRange,
    FutureQuote,
    MarketFrame,
    SimConfig,
    SimulatedMarket,
    future_instrument_key,
    option_instrument_key,
)
from volguard_market_data.domain.sim.scenarios import SCENARIOS
from volguard_market_data.domain.sim.surface import ExpiryTruth

__all__ = [
    "SCENARIOS",
    "ChainFrame",
    "DailyBar",
    "DayRange",
    "ExpiryTruth",
    "FutureQuote",
    "MarketFrame",
    "SimConfig",
    "SimulatedMarket",
    "daily_bars",
    "future_instrument_key",
    "option_instrument_key",
]
