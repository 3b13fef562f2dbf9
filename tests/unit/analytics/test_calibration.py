"""The IV-RV signal thresholds are calibrated on real history (issue 14): over the daily NIFTY history
in ../shared/data, the premium signal marks the unusual days, not the everyday ones.

The real series: 30-day implied vol from nifty_atm_iv_daily.csv (its closes are India VIX to two
decimals, the only real implied-vol history there) minus the 21-session Yang-Zhang realised vol of
NIFTY (the engine's reference realised vol, `history.realised_vol`) at each day's close. ../shared/data
has no term-structure or skew history, so those two thresholds are not calibrated here.
"""

from __future__ import annotations

import numpy as np

from tests.unit.analytics.chains import CONFIG
from tests.unit.quant.shared_data import shared_data
from volguard_analytics.domain.premium import band
from volguard_common.events.vol import PremiumSignal
from volguard_common.quant import realized
from volguard_market_data.history_files import parse_daily_csv

RV_WINDOW = 21


def daily_iv_minus_rv_pts() -> list[float]:
    nifty = parse_daily_csv(shared_data("nifty50_daily_nse.csv")).frame.sort_index()
    implied = parse_daily_csv(shared_data("nifty_atm_iv_daily.csv")).frame.sort_index()
    spreads = []
    for day, close in zip(implied.index, implied["close"], strict=True):
        bars = nifty[nifty.index <= day]
        if len(bars) <= RV_WINDOW + 1:
            continue
        rv = realized.yang_zhang(
            bars.open.values, bars.high.values, bars.low.values, bars.close.values, RV_WINDOW
        )
        spreads.append(float(close) - 100.0 * rv)
    return spreads


def test_iv_rv_signal_fires_on_at_most_a_fifth_of_the_real_days() -> None:
    spreads = daily_iv_minus_rv_pts()
    assert len(spreads) > 150  # January to October 2025
    signals = [band(spread, CONFIG) for spread in spreads]
    share = {signal: signals.count(signal) / len(signals) for signal in PremiumSignal}
    selling = share[PremiumSignal.SELL_SMALL] + share[PremiumSignal.SELL_BIG]
    assert selling + share[PremiumSignal.AVOID] <= 0.20, share
    # Each band is reached on the real history: a threshold beyond every day would never signal.
    assert share[PremiumSignal.SELL_BIG] > 0.0
    assert share[PremiumSignal.SELL_SMALL] > 0.0
    assert share[PremiumSignal.AVOID] > 0.0
    # The old defaults (sell from 2 points, avoid at -1) said "sell" on about half of these days.
    assert np.mean([spread >= 2.0 for spread in spreads]) > 0.4
