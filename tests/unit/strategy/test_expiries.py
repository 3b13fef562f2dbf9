"""Each bucket's expiry: weekly needs a session left, monthly rolls inside its last 5 trading days,
intraday trades today's expiry on expiry day."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from tests.unit.strategy.market import market
from volguard_common.clock import IST
from volguard_common.events import Bucket
from volguard_common.events.vol import VolSnapshot
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import ExpiryNotAvailable, bucket_expiry


def _at(ts: datetime, minutes_left: dict[date, float] | None = None) -> VolSnapshot:
    snapshot, _ = market()
    expiries = [
        block.model_copy(update={"trading_minutes_to_expiry": (minutes_left or {}).get(block.expiry, 1000.0)})
        for block in snapshot.expiries
    ]
    return snapshot.model_copy(update={"ts_event": ts, "expiries": expiries})


def test_a_wednesday_trades_next_tuesday_weekly_and_the_current_monthly() -> None:
    snapshot = _at(datetime(2025, 12, 17, 10, 30, tzinfo=IST))
    config = StrategyConfig()
    assert bucket_expiry(Bucket.WEEKLY, snapshot, config).expiry == date(2025, 12, 23)
    assert bucket_expiry(Bucket.MONTHLY, snapshot, config).expiry == date(2025, 12, 30)
    assert bucket_expiry(Bucket.INTRADAY, snapshot, config).expiry == date(2025, 12, 23)


def test_on_expiry_day_intraday_trades_it_and_weekly_moves_to_next_week() -> None:
    # 23 Dec 2025, 11:00: 270 trading minutes left in the expiring weekly, less than one session.
    snapshot = _at(datetime(2025, 12, 23, 11, 0, tzinfo=IST), {date(2025, 12, 23): 270.0})
    config = StrategyConfig()
    assert bucket_expiry(Bucket.INTRADAY, snapshot, config).expiry == date(2025, 12, 23)
    assert bucket_expiry(Bucket.WEEKLY, snapshot, config).expiry == date(2025, 12, 30)


def test_monthly_rolls_inside_its_last_five_trading_days() -> None:
    config = StrategyConfig()
    # 22 Dec: 23, 24, 26, 29, 30 Dec are five trading days (25 Dec is a holiday): not inside yet.
    assert bucket_expiry(
        Bucket.MONTHLY, _at(datetime(2025, 12, 22, 10, 0, tzinfo=IST)), config
    ).expiry == date(2025, 12, 30)
    # 23 Dec: four trading days to the 30 Dec expiry, inside its last five: the January monthly.
    assert bucket_expiry(
        Bucket.MONTHLY, _at(datetime(2025, 12, 23, 10, 0, tzinfo=IST)), config
    ).expiry == date(2026, 1, 27)


def test_a_missing_monthly_is_said_not_guessed() -> None:
    snapshot = _at(datetime(2025, 12, 23, 10, 0, tzinfo=IST))
    without = snapshot.model_copy(
        update={"expiries": [b for b in snapshot.expiries if b.expiry != date(2026, 1, 27)]}
    )
    with pytest.raises(ExpiryNotAvailable, match="2026-01-27"):
        bucket_expiry(Bucket.MONTHLY, without, StrategyConfig())
