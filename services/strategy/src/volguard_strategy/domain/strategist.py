"""The strategy component: fed VolSnapshots (with the chain snapshots they came from), portfolio
snapshots and trading states, it returns what to propose and why. No I/O, no wall clock: everything is
in event time, so the same sequence of inputs gives the same proposals (ids included).

State (why strategy runs single-active): the last entry per bucket (cooldown), the exits and hedges
already proposed per trade and rule (once each), and the regime each trade was proposed in.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np

from volguard_common import clock
from volguard_common.charges import round_to_paisa
from volguard_common.events import (
    Bucket,
    ChainSnapshot,
    Greeks,
    IntentKind,
    OpenTrade,
    OrderLeg,
    PortfolioSnapshot,
    Side,
    Structure,
    TradeIntent,
    TradingState,
)
from volguard_common.events.orders import ExitReason, IntentPricing
from volguard_common.events.strategy import Recommendation, StrategyRecommendations
from volguard_common.events.vol import Quality, Regime, VolSnapshot
from volguard_common.quant import sabr
from volguard_common.quant.stress import OptionLeg
from volguard_strategy.domain import entries, management, pricing, rules, sizing
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.market import (
    ExpiryMarket,
    ExpiryNotAvailable,
    Quote,
    bucket_expiry,
    expiry_market,
    next_expiry_after,
    read_signals,
)
from volguard_strategy.domain.pricing import Leg
from volguard_strategy.domain.structures import Candidate, NoCandidate, build, strikes_of

BUCKETS = (Bucket.WEEKLY, Bucket.MONTHLY, Bucket.INTRADAY)
# Defined-risk alternatives priced for the recommendations when the rule table's pick is a trade.
ALTERNATIVES = (Structure.IRON_CONDOR, Structure.BULL_PUT_SPREAD, Structure.BEAR_CALL_SPREAD)


@dataclass(frozen=True, slots=True)
class BucketDecision:
    """One line of the decision journal: what a bucket did on one evaluation, and why."""

    bucket: Bucket
    structure: Structure  # WAIT when it proposed nothing
    rule: str
    reasons: tuple[str, ...]
    intent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Alternative:
    """A priced structure the rule table did not pick, and how to size it if it makes the list."""

    priced: entries.Priced
    finish: Callable[[entries.Priced], entries.Proposal | str]


@dataclass(frozen=True, slots=True)
class Evaluation:
    ts_event: datetime
    vol_event_id: str
    decisions: tuple[BucketDecision, ...]
    intents: tuple[TradeIntent, ...]
    recommendations: StrategyRecommendations


def deterministic_id(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def deterministic_event_id(ts_event: datetime, *parts: str) -> str:
    """A UUIDv7 whose time is `ts_event` and whose random bits hash `parts`: the same decision on a
    redelivered snapshot carries the same id (the outbox dedups on it)."""
    ms = int(ts_event.timestamp() * 1000)
    digest = int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).digest(), "big")
    rand_a = digest >> 68 & 0xFFF
    rand_b = digest & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


@dataclass
class Strategist:
    config: StrategyConfig
    source: str = "strategy"
    portfolio: PortfolioSnapshot | None = None
    trading_state: TradingState | None = None
    last_entry: dict[Bucket, datetime] = field(default_factory=dict)
    proposed: set[tuple[str, str]] = field(default_factory=set)
    regime_of_intent: dict[str, Regime] = field(default_factory=dict)
    regime_of_trade: dict[str, Regime] = field(default_factory=dict)
    _densities: dict[date, tuple[pricing.Distribution, pricing.Distribution | None] | str] = field(
        default_factory=dict, repr=False
    )

    def on_portfolio(self, snapshot: PortfolioSnapshot) -> None:
        if self.portfolio is None or snapshot.ts_event >= self.portfolio.ts_event:
            self.portfolio = snapshot

    def on_trading_state(self, state: TradingState) -> None:
        if self.trading_state is None or state.ts_event >= self.trading_state.ts_event:
            self.trading_state = state

    # -- one evaluation ---------------------------------------------------------------------------

    def on_vol(self, snapshot: VolSnapshot, chains: Mapping[date, ChainSnapshot]) -> Evaluation:
        ts = snapshot.ts_event
        signals = read_signals(snapshot)
        markets: dict[date, ExpiryMarket] = {}
        for block in snapshot.expiries:
            if block.expiry in chains and block.expiry >= ts.date():
                markets[block.expiry] = expiry_market(block, chains, ts)
        decisions: list[BucketDecision] = []
        intents: list[TradeIntent] = []
        ranked: list[entries.Proposal] = []
        alternatives: list[Alternative] = []
        book = self._book_scenarios(snapshot, markets)
        self._densities: dict[date, tuple[pricing.Distribution, pricing.Distribution | None] | str] = {}
        for bucket in BUCKETS:
            decision, proposal, others = self._bucket(bucket, snapshot, markets, book)
            alternatives.extend(others)
            if proposal is not None:
                ranked.append(proposal)
                gate = self._entry_gate(bucket, snapshot, proposal)
                if gate is None:
                    intent = self._entry_intent(snapshot, proposal, decision)
                    intents.append(intent)
                    self.last_entry[bucket] = ts
                    self.regime_of_intent[intent.intent_id] = signals.regime
                    decision = BucketDecision(
                        bucket, proposal.structure, decision.rule, decision.reasons, intent.intent_id
                    )
                else:
                    decision = BucketDecision(
                        bucket, Structure.WAIT, decision.rule, (*decision.reasons, gate)
                    )
            decisions.append(decision)
        # Alternatives for the recommendations: screened on their gross edge, and only as many sized
        # and costed as the list has room for (the full finish is most of an evaluation's time).
        alternatives.sort(
            key=lambda a: (-a.priced.edge, a.priced.bucket.value, a.priced.candidate.structure.value)
        )
        for alternative in alternatives:
            if len(ranked) >= self.config.top_recommendations:
                break
            done = alternative.finish(alternative.priced)
            if not isinstance(done, str):
                ranked.append(done)
        intents.extend(self._management(snapshot, markets))
        return Evaluation(
            ts,
            snapshot.event_id,
            tuple(decisions),
            tuple(intents),
            self._recommend(snapshot, ranked, decisions),
        )

    def _bucket(
        self,
        bucket: Bucket,
        snapshot: VolSnapshot,
        markets: dict[date, ExpiryMarket],
        book: np.ndarray | None | str,
    ) -> tuple[BucketDecision, entries.Proposal | None, list[Alternative]]:
        read = read_signals(snapshot)
        rule = rules.choose(read, bucket, self.config)
        said = [f"rule {rule.name}: {rule.when} -> {rule.structure.value} ({rule.reason})"]
        if read.quality is not Quality.GOOD:
            said.extend(f"data: {reason}" for reason in read.quality_reasons)
        if rule.structure is Structure.WAIT:
            return BucketDecision(bucket, Structure.WAIT, rule.name, tuple(said)), None, []
        if isinstance(book, str):
            return BucketDecision(bucket, Structure.WAIT, rule.name, (*said, book)), None, []
        try:
            near_block = bucket_expiry(bucket, snapshot, self.config)
            near = markets.get(near_block.expiry)
            if near is None:
                raise ExpiryNotAvailable(
                    f"no chain snapshot for {near_block.expiry} came with the VolSnapshot"
                )
        except ExpiryNotAvailable as missing:
            return BucketDecision(bucket, Structure.WAIT, rule.name, (*said, str(missing))), None, []
        far_block = next_expiry_after(snapshot, near.expiry)
        far = markets.get(far_block.expiry) if far_block is not None else None
        said.append(f"expiry {near.expiry} ({near.block.trading_minutes_to_expiry:.0f} trading minutes left)")
        severity = read.event_severity
        multiplier = 1.0 if severity is None else self.config.severity_multipliers[severity]
        free = self._free_capital(bucket)
        budget = self.config.risk_budget(bucket)
        delta = self.config.buckets[bucket].short_delta

        densities = self._density(snapshot, near)
        if isinstance(densities, str):
            return BucketDecision(bucket, Structure.WAIT, rule.name, (*said, densities)), None, []
        distribution, forecast = densities

        def priced(structure: Structure) -> entries.Priced | str:
            try:
                candidate = build(structure, near, far, delta, budget, read.skew, self.config)
            except NoCandidate as none:
                return f"{structure.value}: {none}"
            outcome = entries.price(bucket, candidate, near, far, distribution, forecast)
            return outcome.reason if isinstance(outcome, entries.Declined) else outcome

        def finished(candidate: entries.Priced) -> entries.Proposal | str:
            outcome = entries.finish(
                candidate, snapshot.spot, snapshot.ts_event.date(), self.config, multiplier, free, book
            )
            return outcome.reason if isinstance(outcome, entries.Declined) else outcome

        first = priced(rule.structure)
        chosen = first if isinstance(first, str) else finished(first)
        alternatives: list[Alternative] = []
        if not isinstance(chosen, str):
            for structure in ALTERNATIVES:
                if structure is not rule.structure:
                    other = priced(structure)
                    if not isinstance(other, str):
                        alternatives.append(Alternative(other, finished))
        if isinstance(chosen, str):
            return BucketDecision(bucket, Structure.WAIT, rule.name, (*said, chosen)), None, alternatives
        return BucketDecision(bucket, chosen.structure, rule.name, tuple(said)), chosen, alternatives

    def _density(
        self, snapshot: VolSnapshot, near: ExpiryMarket
    ) -> tuple[pricing.Distribution, pricing.Distribution | None] | str:
        """The near expiry's risk-neutral density and its forecast-vol twin, once per evaluation."""
        known = self._densities.get(near.expiry)
        if known is not None:
            return known
        distribution = pricing.smile_distribution(near)
        if isinstance(distribution, str):
            self._densities[near.expiry] = distribution
            return distribution
        forecast_vol = snapshot.garch.vol if snapshot.garch is not None else snapshot.realised.cc21
        atm = near.block.atm_iv
        forecast = (
            None
            if forecast_vol is None or atm is None
            else pricing.rescaled(distribution, near.forward, forecast_vol / atm)
        )
        result = (distribution, forecast)
        self._densities[near.expiry] = result
        return result

    # -- gates ------------------------------------------------------------------------------------

    def _free_capital(self, bucket: Bucket) -> Decimal:
        if self.portfolio is not None:
            for state in self.portfolio.buckets:
                if state.bucket is bucket:
                    return max(Decimal(0), state.capital_allocated - state.capital_used)
        return self.config.bucket_capital(bucket)

    def _entry_gate(self, bucket: Bucket, snapshot: VolSnapshot, proposal: entries.Proposal) -> str | None:
        """Why an entry may not be proposed now, or None."""
        ts = snapshot.ts_event
        if self.trading_state is None:
            return "no trading state from risk yet: entries wait for it"
        if not self.trading_state.entries_allowed:
            return f"risk's trading state is {self.trading_state.state.value}: no entries"
        if self.portfolio is None:
            return "no portfolio snapshot from risk yet: capital and correlation are unknown"
        rules_of_day = self.config.timed_rules
        if not clock.in_safe_window(ts, rules_of_day):
            return "outside the safe entry window"
        last = self.last_entry.get(bucket)
        if last is not None and (ts - last).total_seconds() < self.config.cooldown_seconds:
            return (
                f"cooldown: last {bucket.value} entry at {last.time()} "
                f"(< {self.config.cooldown_seconds:.0f} s)"
            )
        need = self.config.account_size * self.config.buckets[bucket].min_free_capital_pct / 100
        free = self._free_capital(bucket)
        if free < need:
            return f"free capital Rs {free:,.0f} below Rs {need:,.0f}"
        margin = self.config.forced_exit_margin_minutes
        soon = ts + timedelta(minutes=margin)
        if bucket is Bucket.INTRADAY and clock.intraday_flat_due(soon, rules_of_day):
            return f"the intraday flat before the close would close it within {margin:.0f} minutes"
        expiring = any(leg.quote.expiry == ts.date() for leg in proposal.candidate.legs)
        if expiring and clock.expiry_flatten_due(soon, rules_of_day):
            return f"the expiry-day flatten would close it within {margin:.0f} minutes"
        return None

    # -- intents ----------------------------------------------------------------------------------

    def _order_legs(self, legs: tuple[Leg, ...] | list[Leg], quantity: int) -> list[OrderLeg]:
        ordered = sorted(legs, key=lambda leg: (leg.side is Side.SELL, leg.quote.expiry, leg.quote.strike))
        return [
            OrderLeg(
                instrument_key=leg.quote.instrument_key, expiry=leg.quote.expiry, strike=leg.quote.strike,
                option_type=leg.quote.option_type, side=leg.side, quantity=quantity, limit_price=leg.limit,
            )
            for leg in ordered
        ]  # fmt: skip

    def _entry_intent(
        self, snapshot: VolSnapshot, proposal: entries.Proposal, decision: BucketDecision
    ) -> TradeIntent:
        ts = snapshot.ts_event
        intent_id = deterministic_id(snapshot.event_id, proposal.bucket.value, "ENTRY")
        g = proposal.greeks()
        reasons = [*decision.reasons, *proposal.reasons]
        return TradeIntent(
            event_id=deterministic_event_id(ts, intent_id),
            ts_event=ts,
            source=self.source,
            correlation_id=snapshot.correlation_id,
            intent_id=intent_id,
            kind=IntentKind.ENTRY,
            bucket=proposal.bucket,
            structure=proposal.structure,
            lot_size=proposal.lot_size,
            legs=self._order_legs(list(proposal.candidate.legs), proposal.quantity),
            expected_credit=proposal.credit,
            max_loss=proposal.max_loss,
            greeks=Greeks(delta=g.delta, gamma=g.gamma, vega=g.vega, theta=g.theta),
            valid_until=ts + timedelta(seconds=self.config.valid_for_seconds),
            reason=(
                f"{proposal.bucket.value} {proposal.structure.value} x{proposal.lots}: "
                f"{strikes_of(proposal.candidate.legs)}; "
                f"credit Rs {proposal.credit:,.2f}, max loss Rs {proposal.max_loss:,.2f}, "
                f"PoP {proposal.probability_of_profit:.0%}, EV Rs {proposal.expected_value:,.2f} net of costs"
            ),
            pricing=IntentPricing(
                max_profit=proposal.max_profit,
                breakevens=[round(b, 2) for b in proposal.breakevens],
                probability_of_profit=round(proposal.probability_of_profit, 4),
                probability_of_touch=None
                if proposal.probability_of_touch is None
                else round(proposal.probability_of_touch, 4),
                expected_value=proposal.expected_value,
                costs=proposal.costs,
                margin_required=proposal.margin,
                max_loss_basis=proposal.max_loss_basis,
            ),
            reasons=[r[:4000] for r in reasons],
        )

    # -- management -------------------------------------------------------------------------------

    def _management(self, snapshot: VolSnapshot, markets: dict[date, ExpiryMarket]) -> list[TradeIntent]:
        portfolio, state = self.portfolio, self.trading_state
        if (
            portfolio is None
            or state is None
            or not state.exits_allowed
            or snapshot.quality is not Quality.GOOD
        ):
            return []
        out: list[TradeIntent] = []
        regime = snapshot.regime.regime
        for trade in portfolio.trades:
            if trade.trade_id not in self.regime_of_trade:
                entry = self.regime_of_intent.get(trade.intent_id) if trade.intent_id else None
                self.regime_of_trade[trade.trade_id] = entry if entry is not None else regime
            for call in management.exit_calls(
                trade, markets, regime, self.regime_of_trade[trade.trade_id], self.config
            ):
                key = (trade.trade_id, call.rule)
                if key in self.proposed:
                    continue
                intent = self._exit_intent(snapshot, trade, call, markets)
                if intent is not None:
                    self.proposed.add(key)
                    out.append(intent)
                    break  # one exit closes the trade; the other rules need not be proposed too
            if any(i.trade_id == trade.trade_id for i in out):
                continue  # a trade being closed is not hedged
            hedge = management.tested_hedge(trade, markets, snapshot.spot, self.config)
            if isinstance(hedge, management.HedgeCall) and (trade.trade_id, hedge.rule) not in self.proposed:
                self.proposed.add((trade.trade_id, hedge.rule))
                out.append(self._hedge_intent(snapshot, trade, hedge, 0.0, markets))
        drift = self._delta_drift(snapshot, markets)
        if drift is not None and not any(i.trade_id == drift.trade_id for i in out):
            out.append(drift)
        return out

    def _delta_drift(self, snapshot: VolSnapshot, markets: dict[date, ExpiryMarket]) -> TradeIntent | None:
        portfolio = self.portfolio
        if portfolio is None or portfolio.net_greeks is None or not portfolio.trades:
            return None
        delta = portfolio.net_greeks.delta
        if abs(delta) <= self.config.delta_drift_share * self.config.max_portfolio_delta:
            return None
        same_sign = [t for t in portfolio.trades if t.greeks is not None and t.greeks.delta * delta > 0]
        if not same_sign:
            return None
        trade = max(same_sign, key=lambda t: abs(t.greeks.delta) if t.greeks else 0.0)
        if abs(delta) > self.config.max_portfolio_delta:
            # Beyond the limit itself a hedge is too little: the Greek stop closes the trade that
            # carries most of it.
            rule = "greek_stop_portfolio_delta"
            if (trade.trade_id, rule) in self.proposed:
                return None
            call = management.ExitCall(
                trade,
                ExitReason.GREEK_STOP,
                rule,
                f"portfolio delta {delta:+.0f} beyond the limit {self.config.max_portfolio_delta:.0f}; "
                f"trade delta {trade.greeks.delta if trade.greeks else 0.0:+.0f} is the largest part of it",
            )
            intent = self._exit_intent(snapshot, trade, call, markets)
            if intent is not None:
                self.proposed.add((trade.trade_id, rule))
            return intent
        if (trade.trade_id, "delta_drift") in self.proposed:
            return None
        market = markets.get(trade.nearest_expiry)
        if market is None:
            return None
        hedge = management.delta_hedge(trade, delta, market, market.chain.lot_size, self.config)
        if isinstance(hedge, str):
            return None
        self.proposed.add((trade.trade_id, "delta_drift"))
        return self._hedge_intent(snapshot, trade, hedge, delta, markets)

    def _hedge_intent(
        self,
        snapshot: VolSnapshot,
        trade: OpenTrade,
        hedge: management.HedgeCall,
        portfolio_delta: float,
        markets: dict[date, ExpiryMarket],
    ) -> TradeIntent:
        ts = snapshot.ts_event
        leg = hedge.legs[0]
        lot_size = clock.lot_size(leg.quote.expiry)
        quantity = management.hedge_quantity(hedge, trade, portfolio_delta, lot_size)
        cost = leg.limit * quantity
        priced: IntentPricing | None = None
        densities = self._density(snapshot, markets[leg.quote.expiry])
        if not isinstance(densities, str):
            # Priced like an entry: the option's own payoff on the smile's density, its charges; a
            # long option needs its premium, not margin.
            distribution, forecast = densities
            figures = pricing.single_expiry_figures([leg])
            odds = pricing.odds(pricing.expiry_payoff([leg], distribution.mids), distribution, ())
            expected = (
                odds.expected_payoff
                if forecast is None
                else float(np.sum(forecast.mass * pricing.expiry_payoff([leg], forecast.mids)))
            )
            costs = entries.round_trip_costs(
                Candidate(Structure.HEDGE, (leg,), ()), quantity, ts.date(), self.config
            )
            priced = IntentPricing(
                max_profit=None
                if figures.max_profit is None
                else round_to_paisa(Decimal(repr(figures.max_profit * quantity))),
                breakevens=[round(b, 2) for b in figures.breakevens],
                probability_of_profit=round(odds.probability_of_profit, 4),
                probability_of_touch=None,
                expected_value=round_to_paisa(Decimal(repr(expected * quantity)) - costs),
                costs=costs,
                margin_required=Decimal(0),
                max_loss_basis="expiry payoff",
            )
        intent_id = deterministic_id(snapshot.event_id, trade.trade_id, hedge.rule)
        return TradeIntent(
            event_id=deterministic_event_id(ts, intent_id),
            ts_event=ts,
            source=self.source,
            correlation_id=snapshot.correlation_id,
            intent_id=intent_id,
            kind=IntentKind.ADJUST,
            trade_id=trade.trade_id,
            bucket=Bucket.INTRADAY,
            structure=Structure.HEDGE,
            lot_size=lot_size,
            legs=self._order_legs([leg], quantity),
            expected_credit=-cost,
            max_loss=cost,
            valid_until=ts + timedelta(seconds=self.config.valid_for_seconds),
            reason=(
                f"hedge trade {trade.trade_id}: {hedge.message}; costs Rs {cost:,.2f} (the most it can "
                "lose), charged to the intraday bucket"
            ),
            pricing=priced,
            reasons=[hedge.message, "the hedge's legs belong to the trade and close with it"],
        )

    def _exit_intent(
        self,
        snapshot: VolSnapshot,
        trade: OpenTrade,
        call: management.ExitCall,
        markets: dict[date, ExpiryMarket],
    ) -> TradeIntent | None:
        ts = snapshot.ts_event
        legs: list[OrderLeg] = []
        for position in trade.legs:
            if position.quantity == 0:
                continue
            market = markets.get(position.expiry)
            if market is None:
                return None
            found = market.quote(position.strike, position.option_type, self.config)
            if not isinstance(found, Quote):
                # An exit at a price strategy cannot see is not proposed; risk's own stops still run.
                return None
            side = Side.BUY if position.quantity < 0 else Side.SELL
            legs.append(
                OrderLeg(
                    instrument_key=position.instrument_key, expiry=position.expiry, strike=position.strike,
                    option_type=position.option_type, side=side, quantity=abs(position.quantity),
                    limit_price=management.exit_limit(market, found, side),
                )
            )  # fmt: skip
        if not legs:
            return None
        legs.sort(key=lambda leg: (leg.side is Side.SELL, leg.expiry, leg.strike))
        lot_size = clock.lot_size(min(leg.expiry for leg in legs))
        intent_id = deterministic_id(snapshot.event_id, trade.trade_id, call.rule)
        credit = sum(
            (leg.limit_price * leg.quantity * (1 if leg.side is Side.SELL else -1) for leg in legs),
            Decimal(0),
        )
        return TradeIntent(
            event_id=deterministic_event_id(ts, intent_id),
            ts_event=ts,
            source=self.source,
            correlation_id=snapshot.correlation_id,
            intent_id=intent_id,
            kind=IntentKind.EXIT,
            exit_reason=call.reason,
            trade_id=trade.trade_id,
            bucket=trade.bucket,
            structure=trade.structure,
            lot_size=lot_size,
            legs=legs,
            expected_credit=credit,
            max_loss=None if credit >= 0 else -credit,
            valid_until=ts + timedelta(seconds=self.config.valid_for_seconds),
            reason=f"{call.reason.value} on trade {trade.trade_id}: {call.message}",
            reasons=[call.message],
        )

    # -- book and recommendations ----------------------------------------------------------------

    def _book_scenarios(
        self, snapshot: VolSnapshot, markets: dict[date, ExpiryMarket]
    ) -> np.ndarray | None | str:
        """The open book's P&L on the correlation grid; None for no book; a reason when it cannot be
        revalued (a position's expiry or vol unknown) - entries then wait rather than size blind."""
        portfolio = self.portfolio
        if portfolio is None or not portfolio.positions:
            return None
        legs = []
        for position in portfolio.positions:
            if position.quantity == 0:
                continue
            market = markets.get(position.expiry)
            if market is None:
                return (
                    f"open position {position.instrument_key} ({position.expiry}) is not in the snapshot: "
                    "the book cannot be revalued"
                )
            smile = market.smile
            vol = None if smile is None else sabr.smile_vol(market.forward, position.strike, market.t, smile)
            if vol is None or not math.isfinite(vol):
                return (
                    f"no smile vol for open position {position.instrument_key}: the book cannot be revalued"
                )
            legs.append(
                OptionLeg(
                    strike=position.strike, t=market.t, is_call=position.option_type.value == "CE",
                    quantity=float(position.quantity), vol=vol, forward=market.forward, smile=None,
                )
            )  # fmt: skip
        return sizing.scenario_pnls(legs) if legs else None

    def _recommend(
        self, snapshot: VolSnapshot, proposals: list[entries.Proposal], decisions: list[BucketDecision]
    ) -> StrategyRecommendations:
        def suitability(p: entries.Proposal) -> float:
            # Expected value per rupee at risk, squashed into 0-1 (0.5 = break-even after costs).
            return 0.5 + 0.5 * math.tanh(4.0 * float(p.expected_value) / max(float(p.max_loss), 1.0))

        best = sorted(proposals, key=lambda p: (-suitability(p), p.bucket.value, p.structure.value))
        top = best[: self.config.top_recommendations]
        recommendations = [
            Recommendation(
                rank=i,
                bucket=p.bucket,
                structure=p.structure,
                legs=self._order_legs(list(p.candidate.legs), p.quantity),
                suitability=round(suitability(p), 4),
                capital_required=p.margin,
                expected_return=p.expected_value,
                max_loss=p.max_loss,
                reason=f"{p.lots} lot(s): {strikes_of(p.candidate.legs)}; PoP {p.probability_of_profit:.0%}",
            )
            for i, p in enumerate(top, start=1)
        ]
        waits = [
            f"{d.bucket.value}: {d.reasons[-1]}"[:4000] for d in decisions if d.structure is Structure.WAIT
        ]
        ts = snapshot.ts_event
        return StrategyRecommendations(
            event_id=deterministic_event_id(ts, snapshot.event_id, "recommendations"),
            ts_event=ts,
            source=self.source,
            correlation_id=snapshot.correlation_id,
            vol_event_id=snapshot.event_id,
            recommendations=recommendations,
            waits=waits,
        )


__all__ = ["BucketDecision", "Evaluation", "ExitReason", "Strategist"]
