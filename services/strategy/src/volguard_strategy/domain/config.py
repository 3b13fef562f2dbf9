"""Everything strategy decides with, in one frozen value (defaults are the documented ones).

`StrategyConfig.from_settings` takes the account, buckets, exits and charges from the shared
Settings; the strategy-only knobs below (target deltas, risk budgets, filters) are settings of this
config with the issue's defaults, overridable by whoever builds it (the service, a backtest sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from volguard_common.clock import TimedRules
from volguard_common.events import Bucket
from volguard_common.events.vol import EventSeverity
from volguard_common.quant.margin import MarginParameters
from volguard_common.settings import Settings


@dataclass(frozen=True, slots=True)
class BucketRules:
    """What one capital bucket trades with."""

    capital_pct: Decimal  # share of the account (40 / 50 / 10)
    risk_budget_pct: Decimal  # largest max loss of one trade, in percent of the bucket
    short_delta: float  # target |delta| of the short strikes
    min_free_capital_pct: Decimal  # of the account, to enter at all


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    account_size: Decimal = Decimal("2000000")
    buckets: dict[Bucket, BucketRules] = field(
        default_factory=lambda: {
            Bucket.WEEKLY: BucketRules(Decimal(40), Decimal(1), 0.16, Decimal(2)),
            Bucket.MONTHLY: BucketRules(Decimal(50), Decimal(1), 0.12, Decimal(2)),
            Bucket.INTRADAY: BucketRules(Decimal(10), Decimal(2), 0.25, Decimal(1)),
        }
    )
    # A weekly expiry needs at least this many trading minutes left to be the weekly bucket's (one
    # session of 09:15-15:30 by default: on expiry day the weekly bucket moves to the next week).
    weekly_min_trading_minutes: float = 375.0
    # The monthly bucket rolls to the next monthly inside the current one's last N trading days.
    monthly_roll_trading_days: int = 5
    # Short strikes sit at least this many expected moves (straddle-implied) from the forward.
    expected_move_buffer: float = 1.0
    # Wing width as a share of the expected move, before the risk budget caps it.
    wing_expected_move_share: float = 0.5
    # Leg filters: a quote wider than this share of its mid, or with less open interest than this many
    # lots, is not traded.
    max_spread_share: float = 0.10
    min_open_interest_lots: int = 25
    allow_undefined_risk: bool = False
    severity_multipliers: dict[EventSeverity, float] = field(
        default_factory=lambda: {EventSeverity.A: 0.3, EventSeverity.B: 0.5, EventSeverity.C: 1.0}
    )
    # The original's rule: event risk above 2.5 (score 0-5) buys the defensive wide condor.
    defensive_event_score: float = 2.5
    # IV percentile below which premium is cheap: own vega (calendar/diagonal), never sell it naked.
    cheap_iv_percentile: float = 25.0
    rich_iv_percentile: float = 80.0
    # Correlation-aware sizing.
    correlation_threshold: float = 0.7
    portfolio_loss_budget_pct: Decimal = Decimal(3)  # the daily loss limit: combined worst case
    cooldown_seconds: float = 300.0
    valid_for_seconds: float = 30.0
    # No entry a time-based forced exit (risk's expiry-day flatten, intraday flat) would close within
    # this many minutes; the exits' own times and the safe entry window are the dated timed rules.
    forced_exit_margin_minutes: float = 30.0
    timed_rules: TimedRules = field(default_factory=TimedRules)
    # Management.
    profit_target_pct: Decimal = Decimal(35)
    stop_multiple: Decimal = Decimal(2)
    greek_stop_short_delta: float = 0.35
    max_portfolio_delta: float = 200.0
    # A short strike is tested when spot is within this share of the expected move of it.
    tested_share_of_expected_move: float = 0.25
    # Portfolio delta beyond this share of the delta limit is drift to hedge.
    delta_drift_share: float = 0.75
    brokerage_per_order: Decimal = Decimal(20)
    margin: MarginParameters = field(default_factory=MarginParameters)
    # Recommendations published per evaluation.
    top_recommendations: int = 5

    def bucket_capital(self, bucket: Bucket) -> Decimal:
        return self.account_size * self.buckets[bucket].capital_pct / 100

    def risk_budget(self, bucket: Bucket) -> Decimal:
        """The per-trade risk budget: 1 % / 1 % / 2 % of the bucket (Rs 8,000 / 10,000 / 4,000 on
        Rs 20 lakh)."""
        return self.bucket_capital(bucket) * self.buckets[bucket].risk_budget_pct / 100

    @classmethod
    def from_settings(cls, settings: Settings) -> StrategyConfig:
        def bucket(pct: Decimal, budget: Decimal, delta: float, free: Decimal) -> BucketRules:
            return BucketRules(pct, budget, delta, free)

        defaults = cls()
        return cls(
            account_size=settings.account_size,
            buckets={
                Bucket.WEEKLY: bucket(
                    settings.bucket_weekly_pct,
                    settings.strategy_risk_budget_weekly_pct,
                    settings.strategy_short_delta_weekly,
                    defaults.buckets[Bucket.WEEKLY].min_free_capital_pct,
                ),
                Bucket.MONTHLY: bucket(
                    settings.bucket_monthly_pct,
                    settings.strategy_risk_budget_monthly_pct,
                    settings.strategy_short_delta_monthly,
                    defaults.buckets[Bucket.MONTHLY].min_free_capital_pct,
                ),
                Bucket.INTRADAY: bucket(
                    settings.bucket_intraday_pct,
                    settings.strategy_risk_budget_intraday_pct,
                    settings.strategy_short_delta_intraday,
                    defaults.buckets[Bucket.INTRADAY].min_free_capital_pct,
                ),
            },
            weekly_min_trading_minutes=settings.strategy_weekly_min_trading_minutes,
            allow_undefined_risk=settings.strategy_allow_undefined_risk,
            severity_multipliers={
                EventSeverity.A: settings.event_multiplier_a,
                EventSeverity.B: settings.event_multiplier_b,
                EventSeverity.C: settings.event_multiplier_c,
            },
            correlation_threshold=settings.strategy_correlation_threshold,
            portfolio_loss_budget_pct=settings.daily_loss_limit_pct,
            cooldown_seconds=settings.strategy_cooldown_s,
            timed_rules=settings.timed_rules(),
            profit_target_pct=settings.profit_target_pct,
            stop_multiple=settings.stop_multiple,
            max_portfolio_delta=settings.max_delta,
            brokerage_per_order=settings.brokerage_per_order,
            margin=MarginParameters.from_settings(settings),
        )
