"""The adaptive fill engine's schedule for one leg: which limit price to show, and when to re-price.

    t = 0                     start: mid, moved toward the touch by urgency
    t = passive_s             re-price 1 ┐ a walk from the start toward the touch, never beyond
    t = passive_s + wait      re-price 2 │ mid-at-submission ± the leg's maximum slippage
    ...                                  ┘ (2 % of premium, at least one tick)
    t = passive_s + (n-1)·wait  re-price n: a marketable limit, the touch ± the protection band
    t = passive_s + n·wait    the schedule is over: the basket guard completes or unwinds

`wait` is per urgency (PASSIVE 10 s, NORMAL 3 s, URGENT 1 s by default). The walk is re-computed from
the quote current at each step, but the slippage bound stays anchored to the mid at submission, which
is also what a leg's slippage is reported against.

The marketable limit is the one step the slippage bound does not cap: it crosses the spread to buy
certainty, and its price is bounded instead by the protection band (as Upstox's `market_protection`
bounds a market order). Exchanges reject algo market orders in F&O, so a marketable limit is how an
order gets done at any price within reason.

Buy prices round down and sell prices up to the tick: never a worse price than computed, so the walk
stays inside the slippage bound and the marketable limit inside the band (it still crosses, because
the band is at least one tick and quotes sit on the tick grid).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import Enum
from types import MappingProxyType

from volguard_common.events._base import Side
from volguard_common.events.orders import Urgency
from volguard_common.settings import Settings

# Where the first price sits between mid (0) and the touch (1), per urgency: a passive order offers
# the whole half-spread to the market, an urgent one gives half of it away at once.
_START_TOWARD_TOUCH: Mapping[Urgency, Decimal] = MappingProxyType(
    {Urgency.PASSIVE: Decimal(0), Urgency.NORMAL: Decimal("0.25"), Urgency.URGENT: Decimal("0.5")}
)
_HUNDRED = Decimal(100)


def _default_waits() -> Mapping[Urgency, float]:
    return MappingProxyType({Urgency.PASSIVE: 10.0, Urgency.NORMAL: 3.0, Urgency.URGENT: 1.0})


@dataclass(frozen=True, slots=True)
class FillScheduleConfig:
    """Settings `afe_*`; the defaults are the original VolGuard's."""

    passive_s: float = 3.0
    max_reprices: int = 5
    wait_s: Mapping[Urgency, float] = field(default_factory=_default_waits)
    max_slippage_pct: Decimal = Decimal(2)
    protection_band_pct: Decimal = Decimal(5)

    def __post_init__(self) -> None:
        if self.passive_s <= 0:
            raise ValueError(f"passive_s {self.passive_s} must be > 0")
        if self.max_reprices < 1:
            raise ValueError(f"max_reprices {self.max_reprices} must be ≥ 1 (the marketable limit)")
        missing = set(Urgency) - set(self.wait_s)
        if missing:
            raise ValueError(f"wait_s lacks {sorted(missing)}")
        for urgency, wait in self.wait_s.items():
            if wait <= 0:
                raise ValueError(f"wait_s[{urgency}] {wait} must be > 0")
        if self.max_slippage_pct <= 0 or self.protection_band_pct <= 0:
            raise ValueError("max_slippage_pct and protection_band_pct must be > 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> FillScheduleConfig:
        return cls(
            passive_s=settings.afe_passive_s,
            max_reprices=settings.afe_max_reprices,
            wait_s=MappingProxyType(
                {
                    Urgency.PASSIVE: settings.afe_wait_passive_s,
                    Urgency.NORMAL: settings.afe_wait_normal_s,
                    Urgency.URGENT: settings.afe_wait_urgent_s,
                }
            ),
            # Through str: the float 2.0 must become Decimal("2.0"), not its binary expansion.
            max_slippage_pct=Decimal(str(settings.afe_max_slippage_pct)),
            protection_band_pct=Decimal(str(settings.afe_protection_band_pct)),
        )

    def duration_s(self, urgency: Urgency) -> float:
        """From the first placement to the end of the wait after the marketable limit."""
        return self.passive_s + self.max_reprices * self.wait_s[urgency]

    def step_times(self, urgency: Urgency) -> tuple[float, ...]:
        """Seconds after the first placement at which step k's price goes out (step 0 at 0)."""
        wait = self.wait_s[urgency]
        return (0.0, *(self.passive_s + (k - 1) * wait for k in range(1, self.max_reprices + 1)))


class StepKind(Enum):
    START = "start"
    WALK = "walk"
    MARKETABLE = "marketable"


@dataclass(frozen=True, slots=True)
class FillStep:
    step: int
    kind: StepKind
    price: Decimal
    at_s: float  # seconds after the first placement


@dataclass(frozen=True, slots=True)
class Touch:
    """The best bid and offer when a step is priced."""

    bid: Decimal
    ask: Decimal

    def __post_init__(self) -> None:
        if self.bid <= 0 or self.ask <= 0 or self.bid > self.ask:
            raise ValueError(f"touch bid {self.bid} / ask {self.ask} is not a two-sided market")

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


def _round(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    ticks = (price / tick).to_integral_value(rounding=rounding)
    return max(ticks, Decimal(1)) * tick


def slippage_budget(mid_at_submission: Decimal, tick: Decimal, config: FillScheduleConfig) -> Decimal:
    """Rupees per unit the walk may give away against the mid at submission: a share of the premium,
    at least one tick (a 2 % cap on a ₹1.50 option would otherwise forbid any move at all)."""
    return max(mid_at_submission * config.max_slippage_pct / _HUNDRED, tick)


def price_at(
    step: int,
    *,
    side: Side,
    touch: Touch,
    mid_at_submission: Decimal,
    tick: Decimal,
    urgency: Urgency,
    config: FillScheduleConfig,
) -> FillStep:
    """The limit price of `step` (0 = first placement, `max_reprices` = the marketable limit)."""
    if not 0 <= step <= config.max_reprices:
        raise ValueError(f"step {step} outside 0..{config.max_reprices}")
    if tick <= 0:
        raise ValueError(f"tick {tick} must be > 0")
    at_s = config.step_times(urgency)[step]
    buy = side is Side.BUY
    touch_price = touch.ask if buy else touch.bid
    if step == config.max_reprices:
        band = max(touch_price * config.protection_band_pct / _HUNDRED, tick)
        raw = touch_price + band if buy else touch_price - band
        price = _round(raw, tick, ROUND_FLOOR if buy else ROUND_CEILING)
        return FillStep(step, StepKind.MARKETABLE, price, at_s)
    budget = slippage_budget(mid_at_submission, tick, config)
    cap = mid_at_submission + budget if buy else mid_at_submission - budget
    furthest = min(touch_price, cap) if buy else max(touch_price, cap)
    mid = touch.mid
    start = mid + (touch_price - mid) * _START_TOWARD_TOUCH[urgency]
    start = min(start, furthest) if buy else max(start, furthest)
    walk_steps = config.max_reprices - 1
    fraction = Decimal(step) / Decimal(walk_steps) if walk_steps else Decimal(0)
    raw = start + (furthest - start) * fraction
    price = _round(raw, tick, ROUND_FLOOR if buy else ROUND_CEILING)
    return FillStep(step, StepKind.START if step == 0 else StepKind.WALK, price, at_s)


def slippage(side: Side, fill_price: Decimal, mid_at_submission: Decimal) -> Decimal:
    """Rupees per unit worse than the mid at submission (negative when the fill beat mid)."""
    return fill_price - mid_at_submission if side is Side.BUY else mid_at_submission - fill_price


@dataclass(frozen=True, slots=True)
class LegSchedule:
    """The schedule of one leg from its first placement, in exchange time: which step's price should be
    showing now, and when the schedule is over. The caller re-prices (modifies) when `due_step` moves
    past the step it last showed, with the touch current at that moment."""

    side: Side
    urgency: Urgency
    mid_at_submission: Decimal
    tick: Decimal
    started_at: datetime
    config: FillScheduleConfig

    def due_step(self, now: datetime) -> int:
        elapsed = (now - self.started_at).total_seconds()
        if elapsed < 0:
            raise ValueError(
                f"{now.isoformat()} is before the schedule started {self.started_at.isoformat()}"
            )
        return max(k for k, at in enumerate(self.config.step_times(self.urgency)) if at <= elapsed)

    def ends_at(self) -> datetime:
        return self.started_at + timedelta(seconds=self.config.duration_s(self.urgency))

    def over(self, now: datetime) -> bool:
        """The marketable limit has had its wait: the basket guard decides what happens next."""
        return now >= self.ends_at()

    def price(self, step: int, touch: Touch) -> FillStep:
        return price_at(
            step,
            side=self.side,
            touch=touch,
            mid_at_submission=self.mid_at_submission,
            tick=self.tick,
            urgency=self.urgency,
            config=self.config,
        )
