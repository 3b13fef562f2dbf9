"""Scripted days: each scenario does to NIFTY and India VIX what its name promises.

Each test opens the scenario's session (one snapshot) and reads the whole day's second-by-second path,
which the simulator draws when the session opens.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from tests.unit.market_data.sim.helpers import EXPIRY_TUESDAY, ORDINARY_WEDNESDAY, market
from volguard_common.clock import IST
from volguard_market_data.domain.sim.scenarios import EVENT_SECOND
from volguard_market_data.domain.sim.spot import SessionPath


def opened(
    scenario: str, start: datetime = ORDINARY_WEDNESDAY, seed: int = 7
) -> tuple[SessionPath, float, float]:
    sim = market(start=start, seed=seed, scenario=scenario)
    frame = sim.advance()
    return sim.session_path, frame.spot_day.prev_close, frame.vix_day.prev_close


@pytest.mark.parametrize(
    ("scenario", "gap"), [("gap_down_3", -0.03), ("gap_up_2", 0.02), ("gap_down_5", -0.05)]
)
@pytest.mark.parametrize("seed", [1, 2])
def test_gap_days_open_by_the_scripted_amount(scenario: str, gap: float, seed: int) -> None:
    path, prev_close, prev_vix = opened(scenario, seed=seed)
    assert path.spot[0] / prev_close - 1.0 == pytest.approx(gap, abs=0.002)
    if gap < 0:
        assert path.vix[0] > prev_vix * (1.0 - 4.0 * gap) * 0.93  # India VIX jumps on a gap down


def test_black_swan_ends_eight_percent_down_with_vix_doubled() -> None:
    path, prev_close, prev_vix = opened("black_swan")
    assert path.spot[-1] / prev_close - 1.0 == pytest.approx(-0.08, abs=0.012)
    assert path.vix[-1] / prev_vix == pytest.approx(2.0, rel=0.12)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_vix_spike_lifts_vix_more_than_eight_percent_within_three_minutes(seed: int) -> None:
    path, _, _ = opened("vix_spike", seed=seed)
    vix = path.vix_published
    rise = vix[180:] / vix[:-180] - 1.0
    assert rise.max() > 0.08
    # An ordinary day with the same seed has no such spike.
    calm, _, _ = opened("", seed=seed)
    assert (calm.vix_published[180:] / calm.vix_published[:-180] - 1.0).max() < 0.06


def test_event_day_vix_rises_into_the_event_then_is_crushed() -> None:
    path, _, prev_vix = opened("event_day")
    vix = path.vix
    assert vix[0] > prev_vix * 1.08
    assert vix[EVENT_SECOND - 1] > vix[0]
    assert vix[EVENT_SECOND + 1200] < 0.85 * vix[EVENT_SECOND - 1]
    move = abs(path.spot[EVENT_SECOND + 120] / path.spot[EVENT_SECOND - 1] - 1.0)
    assert move > 0.005


def test_expiry_pin_keeps_spot_near_the_high_oi_strike() -> None:
    sim = market(start=EXPIRY_TUESDAY, seed=11, scenario="expiry_pin")
    frame = sim.advance()
    pin = sim.session_script.pin_strike
    assert pin is not None
    assert pin % 100 == 0
    spot = sim.session_path.spot
    last_hour = spot[-3600:]
    assert np.mean(np.abs(last_hour / pin - 1.0)) < 0.003
    expiring = frame.chains[0]
    assert expiring.expiry == EXPIRY_TUESDAY.date()
    open_interest = expiring.columns.ints("call_oi") + expiring.columns.ints("put_oi")
    assert expiring.columns.floats("strike")[np.argmax(open_interest)] == pin


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sim scenario 'crash'"):
        market(start=datetime(2026, 12, 2, 9, 15, tzinfo=IST), scenario="crash")
