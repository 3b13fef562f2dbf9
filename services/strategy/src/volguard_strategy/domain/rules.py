"""The rule table: which structure each bucket trades, or WAIT, and why. One row per rule, first match
wins, every row with its reason; `rule_table_markdown()` prints it for the docs.

Starting point: the original VolGuard rules - event risk above 2.5 buys the defensive wide condor, an
uptrend a bull put spread (downtrend a bear call spread), otherwise the standard condor; an inverted
term structure, an AVOID premium signal, a VIX spike or bad data wait. Where the original contradicts
vol-selling sense it is overruled and the row says so: it sold naked strangles when IV percentile was
LOW, i.e. when premium is cheapest; here cheap premium is bought (calendar, diagonal) and naked short
volatility is sold only when premium is rich and a setting enables it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from volguard_common.events import Bucket, Structure
from volguard_common.events.vol import PremiumSignal, Quality, Regime, SkewSignal, TermSignal
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import Signals

Condition = Callable[[Signals, Bucket, StrategyConfig], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: str  # the condition in words, as the docs print it
    structure: Structure
    reason: str
    applies: Condition


def _iv_level(s: Signals) -> float | None:
    """ATM IV percentile, or its rank when the percentile is unknown."""
    return s.atm_iv_percentile if s.atm_iv_percentile is not None else s.atm_iv_rank


def _cheap(s: Signals, c: StrategyConfig) -> bool:
    level = _iv_level(s)
    return level is not None and level < c.cheap_iv_percentile and s.premium is PremiumSignal.NEUTRAL


def _rich(s: Signals, c: StrategyConfig) -> bool:
    level = _iv_level(s)
    return level is not None and level >= c.rich_iv_percentile and s.premium is PremiumSignal.SELL_BIG


def _not_intraday(b: Bucket) -> bool:
    return b is not Bucket.INTRADAY


RULES: tuple[Rule, ...] = (
    Rule(
        "bad_data",
        "snapshot quality is not GOOD",
        Structure.WAIT,
        "degraded or stale data: no trade is proposed on a guess",
        lambda s, b, c: s.quality is not Quality.GOOD,
    ),
    Rule(
        "vix_spike",
        "India VIX spiked inside the spike window",
        Structure.WAIT,
        "a VIX spike means vol is being repriced upwards right now; selling into it is catching a knife",
        lambda s, b, c: s.vix_spike,
    ),
    Rule(
        "premium_avoid",
        "IV-RV / IV-GARCH premium signal is AVOID",
        Structure.WAIT,
        "implied vol is below realised or forecast vol: options are cheap and selling them pays to take risk",
        lambda s, b, c: s.premium is PremiumSignal.AVOID,
    ),
    Rule(
        "term_inverted",
        "term structure INVERTED",
        Structure.WAIT,
        "near-dated IV above far-dated: the market is pricing stress now",
        lambda s, b, c: s.term is TermSignal.INVERTED,
    ),
    Rule(
        "term_unknown",
        "term structure unknown (fewer than two usable expiries)",
        Structure.WAIT,
        "an inverted curve cannot be ruled out, and not knowing is not evidence of calm",
        lambda s, b, c: s.term is None,
    ),
    Rule(
        "event_risk",
        "event score above 2.5 (of 5), or India VIX percentile >= 90",
        Structure.DEFENSIVE_IRON_CONDOR,
        "the original's rule: around a scheduled event (or with VIX in its top decile) the shorts and wings "
        "go further out and the size is cut by the event's severity multiplier",
        lambda s, b, c: s.event_score > c.defensive_event_score
        or (s.vix_percentile is not None and s.vix_percentile >= 90.0),
    ),
    Rule(
        "trend_up",
        "regime TREND, direction UP",
        Structure.BULL_PUT_SPREAD,
        "the original's rule: sell premium on the side the market is moving away from "
        "(puts below an uptrend)",
        lambda s, b, c: s.regime is Regime.TREND and s.trend_direction == "UP",
    ),
    Rule(
        "trend_down",
        "regime TREND, direction DOWN",
        Structure.BEAR_CALL_SPREAD,
        "the original's rule: calls above a downtrend",
        lambda s, b, c: s.regime is Regime.TREND and s.trend_direction == "DOWN",
    ),
    Rule(
        "trend_direction_unknown",
        "regime TREND, direction not known",
        Structure.WAIT,
        "a one-sided spread on an unknown side could sit in the trend's path",
        lambda s, b, c: s.regime is Regime.TREND,
    ),
    Rule(
        "cheap_premium_calendar",
        "ATM IV percentile below 25, premium NEUTRAL, skew NEUTRAL (weekly, monthly)",
        Structure.CALENDAR,
        "OVERRULES the original, which sold a naked strangle here: premium is cheapest, so own vega "
        "instead - "
        "sell the near ATM option, buy the next expiry's; defined risk (the debit)",
        lambda s, b, c: _not_intraday(b) and _cheap(s, c) and s.skew is SkewSignal.NEUTRAL,
    ),
    Rule(
        "cheap_premium_diagonal",
        "ATM IV percentile below 25, premium NEUTRAL, skew steep (weekly, monthly)",
        Structure.DIAGONAL,
        "OVERRULES the original's naked strangle: cheap premium is owned in the next expiry, and the near "
        "short sits on the steep side of the skew, where the richest premium is",
        lambda s, b, c: _not_intraday(b) and _cheap(s, c),
    ),
    Rule(
        "cheap_premium_intraday",
        "ATM IV percentile below 25, premium NEUTRAL (intraday)",
        Structure.WAIT,
        "nothing is rich enough to sell for the day, and the intraday bucket holds no multi-expiry trades",
        lambda s, b, c: _cheap(s, c),
    ),
    Rule(
        "gamma_pin",
        "regime GAMMA_PIN",
        Structure.IRON_FLY,
        "NIFTY is pinned near a heavy-OI strike: the fly's short straddle at the pin collects the most, "
        "its wings cap the loss if the pin breaks",
        lambda s, b, c: s.regime is Regime.GAMMA_PIN,
    ),
    Rule(
        "rich_straddle",
        "undefined risk enabled; premium SELL_BIG, IV percentile >= 80, no event, MEAN_REVERSION "
        "(not intraday)",
        Structure.STRADDLE,
        "premium is richest and the market reverts to its mean: a short straddle, sized on the stress grid",
        lambda s, b, c: c.allow_undefined_risk
        and _not_intraday(b)
        and _rich(s, c)
        and s.event_score == 0
        and s.regime is Regime.MEAN_REVERSION,
    ),
    Rule(
        "rich_strangle",
        "undefined risk enabled; premium SELL_BIG, IV percentile >= 80, no event (not intraday)",
        Structure.STRANGLE,
        "the one place a naked strangle belongs: premium rich on every measure, sized on the stress grid",
        lambda s, b, c: c.allow_undefined_risk and _not_intraday(b) and _rich(s, c) and s.event_score == 0,
    ),
    Rule(
        "sell_premium",
        "premium signal SELL_BIG or SELL_SMALL",
        Structure.IRON_CONDOR,
        "implied vol is rich against realised and GARCH: sell it in a defined-risk condor",
        lambda s, b, c: s.premium in (PremiumSignal.SELL_BIG, PremiumSignal.SELL_SMALL),
    ),
    Rule(
        "default",
        "otherwise (premium NEUTRAL, no event, no trend)",
        Structure.IRON_CONDOR,
        "the original's default: a standard condor at the bucket's target delta, defined risk",
        lambda s, b, c: True,
    ),
)


def choose(signals: Signals, bucket: Bucket, config: StrategyConfig) -> Rule:
    """The first rule of the table that applies (the last row always does)."""
    for rule in RULES:
        if rule.applies(signals, bucket, config):
            return rule
    raise AssertionError("the rule table's last row applies to everything")


def rule_table_markdown() -> str:
    lines = ["| # | rule | when | structure | why |", "|---|---|---|---|---|"]
    for i, rule in enumerate(RULES, start=1):
        lines.append(f"| {i} | `{rule.name}` | {rule.when} | {rule.structure.value} | {rule.reason} |")
    return "\n".join(lines)
