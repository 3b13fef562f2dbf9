"""Exchange time → wall time at a speed, skipping closed markets."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from volguard_common.clock import IST
from volguard_market_data.feed import Pacer

OPEN = datetime(2026, 1, 13, 9, 15, tzinfo=IST)


def test_real_time_waits_the_event_time_gap() -> None:
    pacer = Pacer(speed=1.0)
    assert pacer.delay(OPEN, now_wall=100.0) == 0.0
    assert pacer.delay(OPEN + timedelta(seconds=1), now_wall=100.2) == pytest.approx(0.8)


def test_speed_divides_the_wait() -> None:
    pacer = Pacer(speed=100.0)
    pacer.delay(OPEN, now_wall=0.0)
    assert pacer.delay(OPEN + timedelta(seconds=50), now_wall=0.1) == pytest.approx(0.4)


def test_late_batches_are_not_delayed_further() -> None:
    pacer = Pacer(speed=10.0)
    pacer.delay(OPEN, now_wall=0.0)
    assert pacer.delay(OPEN + timedelta(seconds=1), now_wall=5.0) == 0.0


def test_a_closed_market_is_not_slept_through() -> None:
    pacer = Pacer(speed=1.0)
    close = datetime(2026, 1, 13, 15, 29, 59, tzinfo=IST)
    pacer.delay(close, now_wall=10.0)
    next_open = datetime(2026, 1, 14, 9, 15, tzinfo=IST)
    assert pacer.delay(next_open, now_wall=11.0) == 0.0
    assert pacer.delay(next_open + timedelta(seconds=2), now_wall=11.5) == pytest.approx(1.5)


def test_unpaced_never_waits() -> None:
    pacer = Pacer(speed=0.0)
    assert pacer.delay(OPEN, now_wall=0.0) == 0.0
    assert pacer.delay(OPEN + timedelta(hours=1), now_wall=0.0) == 0.0


def test_negative_speed_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        Pacer(speed=-1.0)
