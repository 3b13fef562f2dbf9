"""The backtest engine: one process, one deterministic event loop in event time.

Each market instant (every expiry's chain at one ts_event) goes through the pipeline in the order the
streams carry it live:

1. execution sees the chains first (md.chain): the paper exchange takes the new quotes, resting
   orders fill, the basket guards re-price; its reports (OrderUpdate, Fill, BasketResult) go to risk,
   and risk's book (PortfolioSnapshot) and state (TradingState) go to strategy;
2. risk marks the book, rolls the day at a new session, checks the day's loss stops, sends the forced
   exits that are due (expiry flatten, intraday flat) and its periodic PortfolioSnapshot;
3. analytics turns the chain set into a VolSnapshot (the VolEngine; a new engine each trading day,
   with the history grown by the simulated days, as the service reloads its history each day);
4. risk notes the VolSnapshot (freshness, margin scan ranges); strategy evaluates it with the chains;
   each TradeIntent is decided by risk at once, and an approved basket starts at execution.

Between two instants, while a basket works, execution's timer steps the exchange every `timer_step` of
event time (the service's timer runs on the wall clock every 0.2 s; in event time a one-second step
keeps the guards' schedules, which are seconds long). At each session's close, options of that day's
expiry still held settle in cash against the close's spot. Positions carry over between days.

Nothing here reads the wall clock for a decision, draws an unseeded random number or iterates an
unordered collection into a decision: the same inputs, seed and settings give the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from time import perf_counter

import pandas as pd

from volguard_analytics.domain import history as hist
from volguard_analytics.domain.calendar import builtin_events
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.snapshot import VolEngine
from volguard_backtest.desks import EventTime, ExecutionDesk, RiskDesk, RiskReaction
from volguard_backtest.domain.days import TradingDay
from volguard_backtest.domain.records import (
    DecisionRecord,
    EquityPoint,
    FillRecord,
    RiskEventRecord,
    RunRecords,
    SettlementRecord,
    TradeRecord,
)
from volguard_backtest.market import Instant, RecordedMarket, SimMarket
from volguard_common import clock, events
from volguard_common.charges import round_to_paisa
from volguard_common.events.orders import BasketResult, ExecuteBasket, Fill, OrderUpdate
from volguard_common.settings import Settings
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.strategist import Strategist

TIMER_STEP = timedelta(seconds=1)
STAGES = ("market", "execution", "risk", "analytics", "strategy")
EQUITY_EVERY = timedelta(seconds=60)

Progress = Callable[["Position"], None]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a run is: the day (1-based, of `days`) and the event time."""

    day_number: int
    days: int
    day: date
    ts_event: datetime
    instants: int


@dataclass(frozen=True, slots=True)
class RunOutcome:
    records: RunRecords
    completed: bool  # False when stopped before the last day's close
    stopped_at: datetime | None  # the last instant processed
    days_done: int
    stage_seconds: Mapping[str, float]  # wall time per component


class Backtest:
    def __init__(
        self,
        settings: Settings,
        days: list[TradingDay],
        market: SimMarket | RecordedMarket,
        *,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.days = days
        self.market = market
        self.progress = progress
        self.should_stop = should_stop
        self.records = RunRecords(account=settings.account_size)
        self.time = EventTime(days[0].open)
        self.risk = RiskDesk(settings, days[0].open)
        self.strategist = Strategist(StrategyConfig.from_settings(settings), source="strategy/backtest")
        self.analytics_config = AnalyticsConfig.from_settings(settings)
        self.base_history = market.vol_history()
        self.simulated_bars: list[dict[str, object]] = []
        self.vol_engine: VolEngine | None = None
        self.day: date | None = None
        self.day_spots: list[float] = []
        self.day_vix: float | None = None
        self.last_instant: Instant | None = None
        self.last_equity_at: datetime | None = None
        self.baskets: dict[str, ExecuteBasket] = {}
        self.issue_mids: dict[tuple[str, str], Decimal] = {}
        self.execution: ExecutionDesk | None = None
        # Baskets risk issued, started at execution in the order issued.
        self._pending: list[ExecuteBasket] = []
        # Wall seconds spent per component: where the time goes (run statistics only, never a decision).
        self.stage_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    # ---- the loop -------------------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        self.execution = await ExecutionDesk.open(self.settings, self.time)
        for state in self.risk.start(self.days[0].open):
            self._state(state)
        day_numbers = {d.day: n for n, d in enumerate(self.days, start=1)}
        instants = 0
        completed = True
        instants_of = iter(self.market.instants())
        while True:
            began = perf_counter()
            instant = next(instants_of, None)
            self.stage_seconds["market"] += perf_counter() - began
            if instant is None:
                break
            if self.should_stop():
                completed = False
                break
            day = instant.ts_event.date()
            if day not in day_numbers:
                continue
            if day != self.day:
                if self.day is not None:
                    await self._close_day()
                self._open_day(day)
            await self._instant(instant)
            instants += 1
            if self.progress is not None:
                self.progress(Position(day_numbers[day], len(self.days), day, instant.ts_event, instants))
        if self.day is not None and completed:
            await self._close_day()
        portfolio = self.risk.portfolio
        self.records.book_realised_net = portfolio.realised_net()
        self.records.book_unrealised = portfolio.unrealised()
        marks = portfolio.marks
        open_value: Decimal | None = Decimal(0)
        for key, units in sorted(portfolio.net_positions().items()):
            mark = marks.get(key)
            open_value = None if mark is None or open_value is None else open_value + mark * units
        self.records.open_market_value = open_value
        for trade in portfolio.trades:
            self.records.book_trades[trade.trade_id] = (trade.realised_net, trade.charges)
            known = self.records.trades.get(trade.trade_id)
            if known is not None:
                self.records.trades[trade.trade_id] = TradeRecord(
                    known.trade_id,
                    known.bucket,
                    known.structure,
                    known.opened_at,
                    trade.closed_at,
                    known.entry_reason,
                    known.exit_reasons,
                    known.lot_size,
                )
        stopped_at = None if self.last_instant is None else self.last_instant.ts_event
        days_done = sum(1 for d in self.days if self.day is not None and d.day < self.day) + (
            1 if completed and self.day is not None else 0
        )
        return RunOutcome(self.records, completed, stopped_at, days_done, dict(self.stage_seconds))

    def _open_day(self, day: date) -> None:
        if self.day is not None and self.day_spots:
            spots = self.day_spots
            self.simulated_bars.append(
                {
                    "trade_date": self.day,
                    "open": spots[0],
                    "high": max(spots),
                    "low": min(spots),
                    "close": spots[-1],
                    "vix": self.day_vix,
                }
            )
        self.day = day
        self.day_spots = []
        self.vol_engine = VolEngine(
            self.analytics_config,
            self._history(),
            builtin_events(day - timedelta(days=7), day + timedelta(days=60)),
            source="analytics/backtest",
        )

    def _history(self) -> hist.VolHistory:
        """The run's starting history plus the days simulated so far (market_data's daily bars)."""
        if not self.simulated_bars:
            return self.base_history
        base = self.base_history
        added = pd.DataFrame([{k: v for k, v in bar.items() if k != "vix"} for bar in self.simulated_bars])
        index_bars = pd.concat([base.index_bars, added], ignore_index=True)
        vix = base.vix_close
        atm = base.atm_iv_close
        extra = {pd.Timestamp(bar["trade_date"]): bar["vix"] for bar in self.simulated_bars if bar["vix"]}  # type: ignore[arg-type]
        if extra and vix is not None:
            vix = pd.concat([vix, pd.Series(extra, dtype=float)])
        if extra and atm is not None:
            atm = pd.concat([atm, pd.Series(extra, dtype=float) / 100.0])
        return hist.VolHistory(index_bars=index_bars, vix_close=vix, atm_iv_close=atm)

    async def _close_day(self) -> None:
        """The session's end: options of today's expiry still held settle against the close's spot."""
        assert self.last_instant is not None
        last = self.last_instant
        settlement_price = last.chains[0].spot
        close = next(d.close for d in self.days if d.day == self.day)
        if close != clock.nse_calendar().session_bounds(close)[1]:
            # A run bounded before the close (--until): nothing has expired yet.
            self._equity(close, force=True)
            return
        for trade_id, leg, intrinsic, stt in self.risk.settle_expired(close, settlement_price):
            trade = self.risk.portfolio.trade(trade_id)
            self.records.settlements.append(
                SettlementRecord(
                    ts_event=close,
                    trade_id=trade_id,
                    bucket=trade.bucket.value,
                    structure=trade.structure.value,
                    instrument_key=leg.contract.instrument_key,
                    expiry=leg.contract.expiry,
                    strike=float(leg.contract.strike),
                    option_type=leg.contract.option_type.value,
                    quantity=leg.quantity,
                    settlement_price=settlement_price,
                    intrinsic=intrinsic,
                    stt=stt,
                )
            )
        self._equity(close, force=True)

    async def _instant(self, instant: Instant) -> None:
        assert self.execution is not None
        assert self.vol_engine is not None
        ts = instant.ts_event
        await self._timer_until(ts)
        self.time.saw(ts)
        self.last_instant = instant
        self.records.snapshots += 1
        self.day_spots.append(instant.chains[0].spot)
        if instant.chains[0].vix is not None:
            self.day_vix = instant.chains[0].vix
        stages = self.stage_seconds
        # 1. execution
        began = perf_counter()
        await self.execution.on_chains(instant.chains)
        self._route_reports(ts)
        # 2. risk on the chains
        marked = perf_counter()
        stages["execution"] += marked - began
        self._risk_reaction(self.risk.on_chains(instant.chains), ts)
        began = perf_counter()
        stages["risk"] += began - marked
        await self._start_baskets()
        # 3. analytics
        marked = perf_counter()
        stages["execution"] += marked - began
        self.vol_engine.observe_chain_set(instant.chains)
        vol = self.vol_engine.snapshot(instant.chains)
        self.records.vol_snapshots += 1
        # 4. risk and strategy on the VolSnapshot
        began = perf_counter()
        stages["analytics"] += began - marked
        self.risk.on_vol(vol)
        chains: Mapping[date, events.ChainSnapshot] = {c.expiry: c for c in instant.chains}
        evaluation = self.strategist.on_vol(vol, chains)
        marked = perf_counter()
        stages["strategy"] += marked - began
        regime = vol.regime.regime.value
        for bucket_decision in evaluation.decisions:
            self.records.decisions.append(
                DecisionRecord(
                    ts,
                    bucket_decision.bucket.value,
                    bucket_decision.structure.value,
                    bucket_decision.rule,
                    bucket_decision.reasons,
                    regime,
                    bucket_decision.intent_id,
                )
            )
        for intent in evaluation.intents:
            self.records.intents += 1
            verdict, basket, failed = self.risk.on_intent(intent)
            if basket is None:
                self.records.risk_events.append(
                    RiskEventRecord(
                        ts,
                        "REJECTED",
                        f"{intent.kind.value} {intent.bucket.value} {intent.structure.value}: "
                        + "; ".join(verdict.reasons),
                        tuple(sorted({reason.split(":", 1)[0] for reason in failed})),
                    )
                )
                continue
            if intent.kind is events.IntentKind.ENTRY:
                trade_id = f"tr-{intent.intent_id}"[:64]
                self.records.trades[trade_id] = TradeRecord(
                    trade_id,
                    intent.bucket.value,
                    intent.structure.value,
                    ts,
                    None,
                    intent.reason,
                    (),
                    intent.lot_size,
                )
            self._pending.append(basket)
        began = perf_counter()
        stages["risk"] += began - marked
        await self._start_baskets()
        stages["execution"] += perf_counter() - began
        self._equity(ts)

    async def _start_baskets(self) -> None:
        assert self.execution is not None
        while self._pending:
            basket = self._pending.pop(0)
            self.baskets[basket.basket_id] = basket
            if basket.trade_id is not None and basket.exit_reason is not None:
                known = self.records.trades.get(basket.trade_id)
                if known is not None and basket.exit_reason.value not in known.exit_reasons:
                    self.records.trades[basket.trade_id] = TradeRecord(
                        known.trade_id,
                        known.bucket,
                        known.structure,
                        known.opened_at,
                        known.closed_at,
                        known.entry_reason,
                        (*known.exit_reasons, basket.exit_reason.value),
                        known.lot_size,
                    )
            for leg in basket.legs:
                market = self.risk.legs.get(leg.instrument_key)
                if market is not None:
                    self.issue_mids[(basket.basket_id, leg.instrument_key)] = round_to_paisa(market.mid)
            await self.execution.execute(basket)
            self._route_reports(basket.ts_event)

    def _risk_reaction(self, reaction: RiskReaction, ts: datetime) -> None:
        for state in reaction.states:
            self._state(state)
        for flatten in reaction.flatten:
            self.records.risk_events.append(
                RiskEventRecord(ts, "FLATTEN", f"{flatten.reason.value}: {flatten.message}")
            )
        for basket in reaction.baskets:
            reason = basket.exit_reason.value if basket.exit_reason is not None else "EXIT"
            self.records.risk_events.append(
                RiskEventRecord(ts, "FORCED_EXIT", f"{reason} of trade {basket.trade_id}: {basket.reason}")
            )
            self._pending.append(basket)
        for alert in reaction.alerts:
            self.records.risk_events.append(RiskEventRecord(ts, "ALERT", alert))
        if reaction.snapshot is not None:
            self.strategist.on_portfolio(reaction.snapshot)

    def _state(self, state: events.TradingState) -> None:
        self.strategist.on_trading_state(state)
        self.records.risk_events.append(
            RiskEventRecord(
                state.ts_event,
                "STATE",
                f"{state.previous.value if state.previous else '-'} -> {state.state.value}: {state.reason}",
            )
        )

    def _route_reports(self, ts: datetime) -> None:
        """ex.reports in the order execution published them: risk books them, strategy sees the book."""
        assert self.execution is not None
        for report in self.execution.take_reports():
            if isinstance(report, OrderUpdate):
                before = len(self.risk.orders_seen)
                self.risk.on_order_update(report)
                self.records.orders += len(self.risk.orders_seen) - before
            elif isinstance(report, Fill):
                self._record_fill(report)
                snapshot, states = self.risk.on_fill(report)
                for state in states:
                    self._state(state)
                if snapshot is not None:
                    self.strategist.on_portfolio(snapshot)
            elif isinstance(report, BasketResult):
                for state in self.risk.on_basket_result(report):
                    self._state(state)
                if report.status is not events.BasketStatus.FILLED:
                    self.records.risk_events.append(
                        RiskEventRecord(
                            report.ts_event,
                            "BASKET",
                            f"basket {report.basket_id} {report.status.value}: {report.message}",
                        )
                    )
        for alert in self.execution.alerts:
            self.records.risk_events.append(RiskEventRecord(ts, "ALERT", alert))
        self.execution.alerts.clear()
        for state in self.risk.on_open_orders(self.execution.open_orders, ts):
            self._state(state)

    def _record_fill(self, fill: Fill) -> None:
        basket = self.baskets[fill.basket_id]
        trade_id = self.risk.portfolio.trade_of_basket(fill.basket_id)
        assert trade_id is not None
        trade = self.risk.portfolio.trade(trade_id)
        self.records.fills.append(
            FillRecord(
                ts_event=fill.ts_event,
                trade_id=trade_id,
                basket_id=fill.basket_id,
                purpose=basket.purpose.value,
                exit_reason=None if basket.exit_reason is None else basket.exit_reason.value,
                bucket=trade.bucket.value,
                structure=trade.structure.value,
                instrument_key=fill.instrument_key,
                expiry=fill.expiry,
                strike=fill.strike,
                option_type=fill.option_type.value,
                side=fill.side.value,
                quantity=fill.quantity,
                price=fill.price,
                fees=fill.fees,
                mid=self.issue_mids.get((fill.basket_id, fill.instrument_key)),
            )
        )

    async def _timer_until(self, ts: datetime) -> None:
        """Execution's timer between two instants, while anything works at the exchange."""
        assert self.execution is not None
        if self.last_instant is None:
            return
        step_at = self.last_instant.ts_event + TIMER_STEP
        while step_at < ts and self.execution.working:
            await self.execution.step(step_at)
            self._route_reports(step_at)
            step_at += TIMER_STEP

    def _equity(self, ts: datetime, *, force: bool = False) -> None:
        if not force and self.last_equity_at is not None and ts - self.last_equity_at < EQUITY_EVERY:
            return
        portfolio = self.risk.portfolio
        self.records.equity.append(EquityPoint(ts, portfolio.realised_net(), portfolio.unrealised()))
        self.last_equity_at = ts
