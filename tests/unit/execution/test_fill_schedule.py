"""The adaptive fill schedule: timing per urgency against the basket timeout, and the price ladder."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from volguard_common.clock import IST, nse_calendar
from volguard_common.events._base import Side
from volguard_common.events.orders import Urgency
from volguard_common.settings import Settings
from volguard_execution.domain.fill_schedule import (
    FillScheduleConfig,
    LegSchedule,
    StepKind,
    Touch,
    price_at,
    slippage,
    slippage_budget,
)
from volguard_execution.domain.paper_exchange import (
    InstrumentRules,
    OrderType,
    PaperExchange,
    PaperOrder,
    Quote,
    Traded,
)

TICK = Decimal("0.05")
CONFIG = FillScheduleConfig()


def ladder(side: Side, touch: Touch, urgency: Urgency, config: FillScheduleConfig = CONFIG) -> list[Decimal]:
    return [
        price_at(
            k, side=side, touch=touch, mid_at_submission=touch.mid, tick=TICK, urgency=urgency, config=config
        ).price
        for k in range(config.max_reprices + 1)
    ]


@pytest.mark.parametrize("urgency", list(Urgency))
def test_every_urgency_ends_inside_the_default_partial_fill_timeout(urgency: Urgency) -> None:
    timeout = Settings.model_fields["partial_fill_timeout_s"].default
    assert CONFIG.duration_s(urgency) <= timeout


def test_default_config_is_the_settings_default() -> None:
    defaults = {name: f.default for name, f in Settings.model_fields.items() if name.startswith("afe_")}
    assert FillScheduleConfig.from_settings(Settings(**defaults)) == CONFIG


def test_timings_are_the_original_volguard_defaults() -> None:
    assert CONFIG.step_times(Urgency.PASSIVE) == (0.0, 3.0, 13.0, 23.0, 33.0, 43.0)
    assert CONFIG.step_times(Urgency.URGENT) == (0.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    assert [CONFIG.duration_s(u) for u in Urgency] == [53.0, 18.0, 8.0]


def test_a_passive_buy_walks_from_mid_to_the_slippage_cap_then_crosses() -> None:
    # bid 99, ask 101: mid 100, cap 100 + 2 % = 102 lies beyond the offer, so the walk ends at 101.
    prices = ladder(Side.BUY, Touch(Decimal(99), Decimal(101)), Urgency.PASSIVE)
    assert prices == [
        Decimal(100),
        Decimal("100.25"),
        Decimal("100.50"),
        Decimal("100.75"),
        Decimal(101),
        Decimal("106.05"),
    ]


def test_the_walk_stops_at_the_slippage_cap_on_a_wide_market() -> None:
    # bid 90, ask 110: mid 100, cap 102 for a buy and 98 for a sell; urgent starts halfway to the touch.
    buy = ladder(Side.BUY, Touch(Decimal(90), Decimal(110)), Urgency.URGENT)
    assert buy[:5] == [Decimal(102)] * 5
    sell = ladder(Side.SELL, Touch(Decimal(90), Decimal(110)), Urgency.NORMAL)
    assert sell[0] == Decimal(98)
    assert sell[5] == Decimal("85.50")  # 90 − 5 %: the marketable limit, inside the band


def test_a_cheap_option_may_still_move_one_tick() -> None:
    assert slippage_budget(Decimal("1.50"), TICK, CONFIG) == TICK
    prices = ladder(Side.SELL, Touch(Decimal("1.45"), Decimal("1.55")), Urgency.PASSIVE)
    assert min(prices[:5]) == Decimal("1.45")


prices_in_ticks = st.integers(2, 20_000)


@given(
    bid=prices_in_ticks,
    spread=st.integers(0, 400),
    urgency=st.sampled_from(list(Urgency)),
    side=st.sampled_from(list(Side)),
)
def test_ladder_properties(bid: int, spread: int, urgency: Urgency, side: Side) -> None:
    touch = Touch(bid * TICK, (bid + spread) * TICK)
    prices = ladder(side, touch, urgency)
    budget = slippage_budget(touch.mid, TICK, CONFIG)
    walk, marketable = prices[:-1], prices[-1]
    for price in prices:
        assert price % TICK == 0
        assert price > 0
    if side is Side.BUY:
        assert walk == sorted(walk)
        assert all(p <= touch.ask and p - touch.mid <= budget for p in walk)
        assert touch.ask < marketable <= touch.ask * Decimal("1.05") + TICK
    else:
        assert walk == sorted(walk, reverse=True)
        assert all(p >= touch.bid and touch.mid - p <= budget for p in walk)
        assert touch.bid * Decimal("0.95") - TICK <= marketable < touch.bid or marketable == TICK


def test_slippage_is_measured_against_mid_at_submission() -> None:
    assert slippage(Side.BUY, Decimal("101"), Decimal("100")) == Decimal(1)
    assert slippage(Side.SELL, Decimal("101"), Decimal("100")) == Decimal(-1)


def test_price_at_refuses_steps_outside_the_schedule() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        price_at(
            6,
            side=Side.BUY,
            touch=Touch(Decimal(1), Decimal(2)),
            mid_at_submission=Decimal("1.5"),
            tick=TICK,
            urgency=Urgency.NORMAL,
            config=CONFIG,
        )
    step = price_at(
        5,
        side=Side.BUY,
        touch=Touch(Decimal(1), Decimal(2)),
        mid_at_submission=Decimal("1.5"),
        tick=TICK,
        urgency=Urgency.NORMAL,
        config=CONFIG,
    )
    assert step.kind is StepKind.MARKETABLE


# ---- the schedule worked against the paper exchange -------------------------------------------


class _NoMarginLimit:
    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        return None


@pytest.mark.parametrize("urgency", list(Urgency))
@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize(("bid", "ask"), [("99.95", "100.05"), ("96", "104")])
def test_a_leg_in_a_market_that_never_comes_to_it_fills_before_the_timeout(
    urgency: Urgency, side: Side, bid: str, ask: str
) -> None:
    """Nobody trades with our order while it rests: the schedule itself must get it done in time."""
    key = "NSE_FO|60001"
    rules = InstrumentRules(key, 65, TICK, 1800, TICK, Decimal(1000))
    exchange = PaperExchange(
        instruments={key: rules},
        calendar=nse_calendar(),
        margin=_NoMarginLimit(),
        latency=timedelta(milliseconds=30),
    )
    start = datetime(2026, 12, 7, 11, 0, tzinfo=IST)
    touch = Touch(Decimal(bid), Decimal(ask))
    exchange.on_quote(Quote(key, touch.bid, touch.ask, 650, 650, start))
    steps = [
        price_at(
            k, side=side, touch=touch, mid_at_submission=touch.mid, tick=TICK, urgency=urgency, config=CONFIG
        )
        for k in range(CONFIG.max_reprices + 1)
    ]
    order_id, _ = exchange.submit(PaperOrder("leg", key, side, 130, OrderType.LIMIT, steps[0].price), start)
    fills = []
    for step in steps[1:]:
        at = start + timedelta(seconds=step.at_s)
        fills += [r for r in exchange.advance(at) if isinstance(r, Traded)]
        if fills:
            break
        exchange.modify(order_id, step.price, at)
    end = start + timedelta(seconds=CONFIG.duration_s(urgency))
    fills += [r for r in exchange.advance(end) if isinstance(r, Traded)]
    assert sum(f.quantity for f in fills) == 130
    assert max(f.ts_event for f in fills) <= end
    timeout = Settings.model_fields["partial_fill_timeout_s"].default
    assert end <= start + timedelta(seconds=timeout)
    worst = max(slippage(side, f.price, touch.mid) for f in fills)
    if touch.ask - touch.mid <= slippage_budget(touch.mid, TICK, CONFIG):
        # A tight market: the walk reaches the touch, within the slippage budget.
        assert worst <= slippage_budget(touch.mid, TICK, CONFIG)
    else:
        # A wide one: only the marketable limit gets it done, at the touch (incoming orders trade there).
        assert worst == touch.ask - touch.mid


def test_a_leg_schedule_in_exchange_time() -> None:
    start = datetime(2026, 12, 7, 11, 0, tzinfo=IST)
    leg = LegSchedule(Side.BUY, Urgency.NORMAL, Decimal(100), TICK, start, CONFIG)
    seconds = [0, 2.9, 3, 5.9, 6, 14.9, 15, 17.9]
    assert [leg.due_step(start + timedelta(seconds=s)) for s in seconds] == [0, 0, 1, 1, 2, 4, 5, 5]
    assert not leg.over(start + timedelta(seconds=17.9))
    assert leg.over(start + timedelta(seconds=18))
    assert leg.ends_at() == start + timedelta(seconds=18)
    touch = Touch(Decimal(99), Decimal(101))
    assert leg.price(5, touch).kind is StepKind.MARKETABLE
    with pytest.raises(ValueError, match="before the schedule started"):
        leg.due_step(start - timedelta(seconds=1))
