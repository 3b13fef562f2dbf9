"""Management of open trades: exits strategy proposes (profit target, stop, Greek stop, regime change)
and adjustments (hedges) - each once per trade and rule, not every second.

Time-based forced exits (expiry-day flatten, the intraday bucket flat before the close) are risk's;
strategy only avoids entries those would close within the next half hour (strategist).

Adjustment: a short strike is tested when NIFTY is within `tested_share_of_expected_move` of the
trade's expected move of it. The hedge buys a protective option of the tested side one strike nearer
the money than the short, for the short's quantity: the short side becomes a debit spread that gains
as NIFTY keeps going. Its legs belong to the trade (same product, closed with it); its capital is
charged to the intraday bucket, which funds hedges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from volguard_common.events import OpenTrade, OptionType, Side
from volguard_common.events.orders import ExitReason
from volguard_common.events.vol import Regime
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import ExpiryMarket, Quote
from volguard_strategy.domain.pricing import Leg, tick_limit

# Regimes in which a short-vol trade opened in calmer conditions is closed rather than sat out.
HOSTILE_REGIMES = frozenset({Regime.RISING_VOL, Regime.HIGH_VOL, Regime.TREND})


@dataclass(frozen=True, slots=True)
class ExitCall:
    trade: OpenTrade
    reason: ExitReason
    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class HedgeCall:
    trade: OpenTrade
    rule: str
    legs: tuple[Leg, ...]
    message: str


def exit_calls(
    trade: OpenTrade,
    markets: dict[date, ExpiryMarket],
    regime: Regime,
    regime_at_entry: Regime | None,
    config: StrategyConfig,
) -> list[ExitCall]:
    """Every exit rule the trade trips now, with the numbers that tripped it."""
    calls = []
    credit, to_close = trade.entry_credit, trade.cost_to_close
    if credit > 0 and to_close is not None:
        pnl = credit - to_close
        target = credit * config.profit_target_pct / 100
        if pnl >= target:
            calls.append(
                ExitCall(trade, ExitReason.PROFIT_TARGET, "profit_target",
                         f"profit Rs {pnl:,.2f} >= {config.profit_target_pct}% of credit Rs {credit:,.2f}")
            )  # fmt: skip
        stop = credit * config.stop_multiple
        if -pnl >= stop:
            calls.append(
                ExitCall(trade, ExitReason.STOP_LOSS, "stop_loss",
                         f"loss Rs {-pnl:,.2f} >= {config.stop_multiple}x credit Rs {credit:,.2f}")
            )  # fmt: skip
    for position in trade.legs:
        if position.quantity >= 0:
            continue
        market = markets.get(position.expiry)
        if market is None:
            continue
        found = market.quote(position.strike, position.option_type, config)
        if isinstance(found, Quote) and abs(found.delta) > config.greek_stop_short_delta:
            calls.append(
                ExitCall(trade, ExitReason.GREEK_STOP, "greek_stop_short_delta",
                         f"short {position.strike:g} {position.option_type.value} delta {found.delta:+.2f} "
                         f"beyond {config.greek_stop_short_delta:.2f}")
            )  # fmt: skip
            break
    if regime_at_entry is not None and regime is not regime_at_entry and regime in HOSTILE_REGIMES:
        calls.append(
            ExitCall(trade, ExitReason.REGIME_CHANGE, "regime_change",
                     f"regime {regime_at_entry.value} at entry is now {regime.value}")
        )  # fmt: skip
    return calls


def tested_hedge(
    trade: OpenTrade, markets: dict[date, ExpiryMarket], spot: float, config: StrategyConfig
) -> HedgeCall | str | None:
    """A hedge for a tested short strike, None when none is tested, or why a tested one cannot be hedged."""
    for position in trade.legs:
        if position.quantity >= 0:
            continue
        market = markets.get(position.expiry)
        if market is None or market.block.expected_move is None:
            continue
        distance = abs(spot - position.strike)
        tested_within = config.tested_share_of_expected_move * market.block.expected_move.points
        if distance > tested_within:
            continue
        call = position.option_type is OptionType.CE
        step = market.strike_step
        hedge_strike = position.strike - step if call else position.strike + step
        found = market.quote(hedge_strike, position.option_type, config)
        if not isinstance(found, Quote):
            return (
                f"short {position.strike:g} {position.option_type.value} is tested but the hedge is "
                f"not tradable: {found}"
            )
        leg = Leg(found, Side.BUY, tick_limit(found.mid, market.chain.tick_size, Side.BUY))
        return HedgeCall(
            trade, f"tested_short_{position.strike:g}_{position.option_type.value}", (leg,),
            f"NIFTY {spot:,.1f} is {distance:.0f} points from the short {position.strike:g} "
            f"{position.option_type.value}, within {config.tested_share_of_expected_move:.2f} of the "
            f"expected move ({tested_within:.0f} points): buy the {hedge_strike:g} "
            f"{position.option_type.value} for its "
            f"{-position.quantity} units",
        )  # fmt: skip
    return None


def delta_hedge(
    trade: OpenTrade, portfolio_delta: float, market: ExpiryMarket, lot_size: int, config: StrategyConfig
) -> HedgeCall | str:
    """Portfolio delta past the drift threshold: buy options on the side that takes it back towards
    zero (puts for a long book, calls for a short one) at about 0.30 delta on the trade's nearest expiry,
    whole lots, rounded down."""
    option_type = OptionType.PE if portfolio_delta > 0 else OptionType.CE
    call = option_type is OptionType.CE
    surface = market.block.surface
    deltas = surface.call_delta if call else surface.put_delta
    best: Quote | None = None
    for strike, delta in zip(surface.strike, deltas, strict=True):
        if abs(abs(float(delta)) - 0.30) > 0.1:
            continue
        found = market.quote(float(strike), option_type, config)
        if isinstance(found, Quote) and (
            best is None or abs(abs(found.delta) - 0.3) < abs(abs(best.delta) - 0.3)
        ):
            best = found
    if best is None:
        return f"no tradable {option_type.value} near 0.30 delta on {market.expiry} to hedge delta with"
    lots = int(abs(portfolio_delta) / (abs(best.delta) * lot_size))
    if lots == 0:
        return f"portfolio delta {portfolio_delta:+.0f} is less than one lot of the hedge"
    leg = Leg(best, Side.BUY, tick_limit(best.mid, market.chain.tick_size, Side.BUY))
    return HedgeCall(
        trade, "delta_drift", (leg,),
        f"portfolio delta {portfolio_delta:+.0f} beyond {config.delta_drift_share:.0%} of the limit "
        f"{config.max_portfolio_delta:.0f}: buy {lots} lot(s) of the {best.strike:g} {option_type.value} "
        f"(delta {best.delta:+.2f})",
    )  # fmt: skip


def hedge_quantity(call: HedgeCall, trade: OpenTrade, portfolio_delta: float, lot_size: int) -> int:
    """Units of the hedge: the tested short's quantity, or the whole lots that offset the drift."""
    leg = call.legs[0]
    if call.rule == "delta_drift":
        return int(abs(portfolio_delta) / (abs(leg.quote.delta) * lot_size)) * lot_size
    for position in trade.legs:
        if (
            position.quantity < 0
            and position.option_type is leg.quote.option_type
            and position.expiry == leg.quote.expiry
        ):
            return -position.quantity
    raise ValueError(f"trade {trade.trade_id} has no short {leg.quote.option_type.value} to hedge")


def exit_limit(market: ExpiryMarket, quote: Quote, side: Side) -> Decimal:
    return tick_limit(quote.mid, market.chain.tick_size, side)
