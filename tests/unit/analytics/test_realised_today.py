"""Realised vol with today's moving bar: the per-snapshot path (completed days summed once a day, the bar
added with scalar logs) against the `realized` estimators on the appended daily arrays."""

from __future__ import annotations

import dataclasses
import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.unit.analytics.chains import real_history
from volguard_analytics.domain.history import (
    CC_LONG,
    CC_SHORT,
    RANGE_WINDOW,
    DayInputs,
    IntradayBar,
    VolHistory,
    day_inputs,
    realised_vol,
)
from volguard_common.events.vol import RealisedVol
from volguard_common.quant import realized

TODAY = date(2025, 12, 17)
NAMES = ("cc7", "cc21", "parkinson", "yang_zhang")


def today_prices(today: IntradayBar) -> tuple[float, float, float, float]:
    return today.open, today.high, today.low, today.last


def expected(days: DayInputs, today: IntradayBar | None) -> tuple[dict[str, float | None], list[str]]:
    """The rule as written in `realised_vol`: each estimator on all the history with today's bar
    appended as a day closing at the last print; unknown without its bars, unknown when flat."""
    o, h, lo, c = days.open, days.high, days.low, days.close
    if today is not None:
        o, h, lo, c = (np.append(a, x) for a, x in zip((o, h, lo, c), today_prices(today), strict=True))
    n = c.size
    values: dict[str, float | None] = {
        "cc7": realized.close_to_close(c, CC_SHORT) if n >= CC_SHORT + 1 else None,
        "cc21": realized.close_to_close(c, CC_LONG) if n >= CC_LONG + 1 else None,
        "parkinson": realized.parkinson(h, lo, RANGE_WINDOW) if n >= RANGE_WINDOW else None,
        "yang_zhang": realized.yang_zhang(o, h, lo, c, RANGE_WINDOW) if n >= RANGE_WINDOW + 1 else None,
    }
    needs = {
        "cc7": CC_SHORT + 1,
        "cc21": CC_LONG + 1,
        "parkinson": RANGE_WINDOW,
        "yang_zhang": RANGE_WINDOW + 1,
    }
    reasons = [
        f"realised {name} unknown: {n} daily bars, need {needs[name]}"
        for name in NAMES
        if values[name] is None
    ]
    for name in NAMES:
        value = values[name]
        if value is not None and value == 0.0:
            reasons.append(f"realised {name} is zero (no price movement in the window)")
            values[name] = None
    return values, reasons


def assert_matches(
    got: tuple[RealisedVol, list[str]], want: tuple[dict[str, float | None], list[str]]
) -> None:
    vol, reasons = got
    values, want_reasons = want
    assert reasons == want_reasons
    for name in NAMES:
        value, reference = getattr(vol, name), values[name]
        if reference is None:
            assert value is None, name
        else:
            assert value == pytest.approx(reference, rel=1e-12), name


def history_of(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> VolHistory:
    n = close.size
    dates = [TODAY - timedelta(days=n - i) for i in range(n)]
    return VolHistory(
        pd.DataFrame({"trade_date": dates, "open": open_, "high": high, "low": low, "close": close})
    )


def bars_cut(days: DayInputs, keep: slice) -> DayInputs:
    return dataclasses.replace(
        days, open=days.open[keep], high=days.high[keep], low=days.low[keep], close=days.close[keep]
    )


def random_history(rng: np.random.Generator, n: int) -> tuple[VolHistory, float]:
    """`n` daily bars on a random walk and the last close; daily vol between 0.2 % and 3 %."""
    daily_vol = float(rng.uniform(0.002, 0.03))
    moves = rng.normal(0.0, daily_vol, n)
    close = 25_000.0 * np.exp(np.cumsum(rng.normal(0.0, daily_vol / 3.0, n) + moves))
    open_ = close * np.exp(-moves)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, daily_vol / 2.0, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, daily_vol / 2.0, n)))
    return history_of(open_, high, low, close), float(close[-1]) if n else 25_000.0


def random_bar(rng: np.random.Generator, previous_close: float) -> IntradayBar:
    open_ = previous_close * math.exp(rng.normal(0.0, 0.004))
    last = open_ * math.exp(rng.normal(0.0, 0.008))
    high = max(open_, last) * math.exp(abs(rng.normal(0.0, 0.003)))
    low = min(open_, last) * math.exp(-abs(rng.normal(0.0, 0.003)))
    return IntradayBar(TODAY, open_, high, low, last)


@pytest.mark.parametrize("bars", [0, 1, 2, 6, 7, 8, 19, 20, 21, 22, 23, 40, 300])
def test_moving_bar_is_the_estimators_on_the_appended_bars(bars: int) -> None:
    # Around each window's edge (the reasons change there), and well past them.
    rng = np.random.default_rng(bars)
    for _ in range(25):
        history, previous_close = random_history(rng, bars)
        days = day_inputs(history, TODAY, 252)
        assert (days.completed is not None) == (bars > 0)
        bar = random_bar(rng, previous_close)
        # The bar moves print by print through the session, on the same day's inputs.
        for _ in range(8):
            assert_matches(realised_vol(days, bar), expected(days, bar))
            last = bar.last * math.exp(rng.normal(0.0, 0.001))
            bar = IntradayBar(TODAY, bar.open, max(bar.high, last), min(bar.low, last), last)


def test_no_bar_yet_is_the_estimators_on_the_history() -> None:
    rng = np.random.default_rng(5)
    for bars in (6, 7, 8, 21, 22, 60):
        days = day_inputs(random_history(rng, bars)[0], TODAY, 252)
        assert_matches(realised_vol(days, None), expected(days, None))


def test_real_history_with_a_bar_at_each_of_its_days() -> None:
    # Each day of the NIFTY file plays today's bar on top of the days before it.
    history = real_history()
    frame = history.index_bars
    for row in range(1, len(frame), 7):
        day = pd.Timestamp(frame["trade_date"].iloc[row]).date()
        days = day_inputs(history, day, 252)
        bar = IntradayBar(day, *(float(frame[name].iloc[row]) for name in ("open", "high", "low", "close")))
        assert_matches(realised_vol(days, bar), expected(days, bar))


def test_a_flat_window_is_unknown_with_its_reason() -> None:
    price = np.full(30, 25_000.0)
    days = day_inputs(history_of(price, price, price, price), TODAY, 252)
    flat = IntradayBar(TODAY, 25_000.0, 25_000.0, 25_000.0, 25_000.0)
    vol, reasons = realised_vol(days, flat)
    assert vol == RealisedVol(cc7=None, cc21=None, parkinson=None, yang_zhang=None)
    assert reasons == [f"realised {name} is zero (no price movement in the window)" for name in NAMES]
    assert_matches((vol, reasons), expected(days, flat))
    # The first print away from the flat history moves every estimator.
    moved = IntradayBar(TODAY, 25_000.0, 25_010.0, 25_000.0, 25_010.0)
    vol, reasons = realised_vol(days, moved)
    assert reasons == []
    assert_matches((vol, reasons), expected(days, moved))


def test_only_the_short_window_flat() -> None:
    # A quiet last week after a moving month: cc7 reads zero while the 21-day estimators do not.
    rng = np.random.default_rng(8)
    history, _ = random_history(rng, 30)
    bars = history.index_bars.copy()
    quiet = float(bars["close"].iloc[-8])
    for column in ("open", "high", "low", "close"):
        bars.loc[bars.index[-7:], column] = quiet
    days = day_inputs(VolHistory(bars), TODAY, 252)
    bar = IntradayBar(TODAY, quiet, quiet, quiet, quiet)
    vol, reasons = realised_vol(days, bar)
    assert vol.cc7 is None
    assert vol.cc21 is not None
    assert reasons == ["realised cc7 is zero (no price movement in the window)"]
    assert_matches((vol, reasons), expected(days, bar))


def test_bad_prices_are_refused_as_the_estimators_refuse_them() -> None:
    rng = np.random.default_rng(9)
    history, previous_close = random_history(rng, 30)
    days = day_inputs(history, TODAY, 252)
    good = random_bar(rng, previous_close)
    with pytest.raises(ValueError, match="closes must be finite and > 0"):
        realised_vol(days, good._replace(last=math.nan))
    with pytest.raises(ValueError, match="high < low"):
        realised_vol(days, good._replace(high=good.low * 0.99))
    # A bad bar inside the last window of history, read with or without today's bar.
    bars = history.index_bars.copy()
    bars.loc[bars.index[-3], "close"] = np.nan
    broken = day_inputs(VolHistory(bars), TODAY, 252)
    assert broken.completed is None
    with pytest.raises(ValueError, match="finite and > 0"):
        realised_vol(broken, good)
    # Older than every window: never read, so never refused.
    bars = history.index_bars.copy()
    bars.loc[bars.index[2], "close"] = np.nan
    old_gap = day_inputs(VolHistory(bars), TODAY, 252)
    assert old_gap.completed is not None
    assert_matches(realised_vol(old_gap, good), expected(bars_cut(old_gap, slice(3, None)), good))


def test_replays_are_identical_and_replace_recuts_the_completed_days() -> None:
    rng = np.random.default_rng(10)
    history, previous_close = random_history(rng, 40)
    bars = [random_bar(rng, previous_close) for _ in range(20)]
    first = [realised_vol(day_inputs(history, TODAY, 252), bar) for bar in bars]
    again = [realised_vol(day_inputs(history, TODAY, 252), bar) for bar in bars]
    assert first == again
    # Replacing the bars of a day's inputs sums the completed days again: no stale window.
    days = day_inputs(history, TODAY, 252)
    shorter = bars_cut(days, slice(None, -1))
    assert shorter.completed is not None
    assert shorter.completed.last_close == days.close[-2]
    assert_matches(realised_vol(shorter, bars[0]), expected(shorter, bars[0]))
