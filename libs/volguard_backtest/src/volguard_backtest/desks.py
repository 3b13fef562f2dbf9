"""Risk and execution in one process: the services' domain components with memory where Postgres was.

Each desk mirrors its service's handlers (services/risk/.../service.py, services/execution/.../service.py)
step for step, minus the transactions: a handler's effects are applied in place, in the order the
service applies them, and what the service would publish is returned (or queued in `reports`) for the
engine to route. The decisions themselves are the services' own functions and classes: `assess` and
`decision`, `loss_stops`, `forced_exits`, the TradingStateMachine, CapitalLedger and Portfolio; the
BasketGuard and BasketRunner on the PaperBroker over the PaperExchange.

Where the services do not (yet) have a piece a whole-day run needs, the desk says so:
- a FlattenAll (hard stop, daily loss) is answered by risk with one closing basket per open trade
  (controls' closing basket, as for forced exits), so that every fill belongs to a trade in the book;
  execution's own FlattenAll basket would carry fills of several trades under one basket the book
  cannot attribute.
- expiring options still held at the close are settled by the engine (`settle_expired`), the book
  having no settlement entry of its own.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from volguard_common import clock, events
from volguard_common.charges import exercise_charges, fill_charges, round_to_paisa
from volguard_common.events import Bucket, TradingCause
from volguard_common.events.orders import (
    BasketResult,
    ExecuteBasket,
    Fill,
    FlattenAll,
    LegResult,
    OrderUpdate,
)
from volguard_common.events.vol import VolSnapshot
from volguard_common.quant.margin import MarginParameters, ScanRanges, scan_ranges
from volguard_common.settings import Settings
from volguard_execution.adapters.paper_broker import MemoryPaperStore, PaperBroker
from volguard_execution.domain.basket_guard import BasketGuard, Contract, GuardConfig, RaiseAlert
from volguard_execution.domain.orders import Order
from volguard_execution.domain.paper_exchange import InstrumentRules, PaperOrder, Quote, _price
from volguard_execution.ports import BrokerTrade
from volguard_execution.runner import BasketRunner
from volguard_risk.domain import controls
from volguard_risk.domain.capital import CapitalLedger
from volguard_risk.domain.controls import Effects, ForcedExitTimes, StopLevels, forced_exits, loss_stops
from volguard_risk.domain.marks import leg_markets
from volguard_risk.domain.portfolio import LegPosition, Portfolio, TradeOrigin, portfolio_snapshot
from volguard_risk.domain.pretrade import (
    BookLeg,
    Check,
    Context,
    LegMarket,
    MarketView,
    RiskLimits,
    assess,
    decision,
)
from volguard_risk.domain.trading_state import Action, TradingStateMachine, Transition

RISK_SOURCE = "risk/backtest"
EXECUTION_SOURCE = "execution/backtest"
# As in the risk service: rk.portfolio at least this often in event time while chains arrive.
SNAPSHOT_EVERY = timedelta(seconds=5)
ORDER_WINDOW = timedelta(minutes=30)
_NO_BAND_LOW, _NO_BAND_HIGH = Decimal("0.05"), Decimal("1000000")


@dataclass
class RiskReaction:
    """What one market instant made risk do."""

    states: list[events.TradingState] = field(default_factory=list)
    baskets: list[ExecuteBasket] = field(default_factory=list)
    flatten: list[FlattenAll] = field(default_factory=list)
    snapshot: events.PortfolioSnapshot | None = None
    alerts: list[str] = field(default_factory=list)


class RiskDesk:
    """The risk service's handlers over its domain, in memory."""

    def __init__(self, settings: Settings, start: datetime) -> None:
        self.settings = settings
        self.account = settings.account_size
        self.limits = RiskLimits.from_settings(settings)
        self.margin = MarginParameters.from_settings(settings)
        self.machine = TradingStateMachine()
        self.ledger = CapitalLedger()
        self.ledger.allocate(
            settings.account_size,
            {
                Bucket.WEEKLY: settings.bucket_weekly_pct,
                Bucket.MONTHLY: settings.bucket_monthly_pct,
                Bucket.INTRADAY: settings.bucket_intraday_pct,
            },
            start,
            "initial allocation from settings",
        )
        self.portfolio = Portfolio(settings.account_size, brokerage_per_order=settings.brokerage_per_order)
        self.legs: dict[str, LegMarket] = {}
        self.spot: float | None = None
        self.feed_at: datetime | None = None
        self.vol_at: datetime | None = None
        self.scan: ScanRanges | None = None
        self.snapshot_at: datetime | None = None
        self.seen_intents: set[str] = set()
        self.basket_sizes: dict[str, tuple[int, Decimal]] = {}  # basket → (units, reserved)
        self.unpriced_alerted: set[tuple[str, events.ExitReason]] = set()
        self.open_orders = 0
        self.orders_seen: set[tuple[str, int]] = set()
        self.orders_sent: list[datetime] = []  # event times of exchange orders sent, last ORDER_WINDOW

    def start(self, at: datetime) -> list[events.TradingState]:
        """Risk's start, as the service makes it: UNRECONCILED until the book agrees with execution's
        view. In one process both books are built from the same fills, so they agree at once: the cause
        is raised and cleared, and strategy learns the trading state from those two rk.state events."""
        transitions = [
            self.machine.raise_cause(TradingCause.UNRECONCILED, at, "risk starting: book not yet compared"),
            self.machine.cause_cleared(
                TradingCause.UNRECONCILED, at, "in-process book: built from the same fills execution reports"
            ),
        ]
        return self._events([t for t in transitions if t is not None], f"backtest-start-{at:%Y%m%d}")

    # ---- st.intents -----------------------------------------------------------------------------
    def on_intent(
        self, intent: events.TradeIntent
    ) -> tuple[events.RiskDecision, ExecuteBasket | None, list[str]]:
        seen = intent.intent_id in self.seen_intents
        assessment = assess(
            intent,
            self.machine,
            self._market(intent.ts_event),
            self._context(intent, seen),
            self.limits,
            self.margin,
        )
        verdict, basket = decision(intent, assessment, at=intent.ts_event, source=RISK_SOURCE)
        failed = [f"{c.name}: {c.message}" for c in assessment.failed]
        if basket is not None:
            # An exit adds no margin: assess gives it no reserve (the risk service asserts one here, and
            # would fail on every approved exit).
            reserve = assessment.reserve if assessment.reserve is not None else Decimal(0)
            if intent.kind is events.IntentKind.ENTRY:
                trade_id = f"tr-{intent.intent_id}"[:64]
                self.portfolio.open_trade(
                    trade_id,
                    intent.bucket,
                    intent.structure,
                    intent.ts_event,
                    origin=TradeOrigin.VOLGUARD,
                    max_loss=_approved_max_loss(assessment.checks),
                )
            else:
                assert intent.trade_id is not None
                trade_id = intent.trade_id
            self.portfolio.expect_basket(basket.basket_id, trade_id)
            self.basket_sizes[basket.basket_id] = (sum(leg.quantity for leg in intent.legs), reserve)
            if reserve > 0:
                self.ledger.reserve(
                    intent.bucket, basket.basket_id, reserve, intent.ts_event, f"intent {intent.intent_id}"
                )
        self.seen_intents.add(intent.intent_id)
        return verdict, basket, failed

    # ---- ex.reports -----------------------------------------------------------------------------
    def on_fill(self, fill: Fill) -> tuple[events.PortfolioSnapshot | None, list[events.TradingState]]:
        booked = self.portfolio.apply_fill(fill)
        if booked is None:
            return None, []
        units, reserved = self.basket_sizes.get(fill.basket_id, (0, Decimal(0)))
        holder = self.ledger.bucket_of(fill.basket_id)
        held = (
            Decimal(0)
            if holder is None
            else self.ledger.balance(holder).reserved_by.get(fill.basket_id, Decimal(0))
        )
        if held > 0 and units > 0:
            share = round_to_paisa(reserved * fill.quantity / Decimal(units))
            amount = min(share, held)
            if amount > 0:
                self.ledger.commit(fill.basket_id, amount, fill.ts_event, f"fill {fill.fill_id}")
        if booked.closed_trade:
            for basket_id in self.portfolio.baskets_of(booked.trade_id):
                self.ledger.release(basket_id, fill.ts_event, f"trade {booked.trade_id} closed")
        states = self._events(self._flat_transition(fill.ts_event), fill.correlation_id)
        return self.snapshot(fill.ts_event, fill.correlation_id), states

    def on_order_update(self, update: OrderUpdate) -> None:
        """Count each exchange order (a client order id's slice) once, at its first report: the order
        budget counts orders execution reported sent, as the service does."""
        key = (update.client_order_id, update.slice_index)
        if key in self.orders_seen:
            return
        self.orders_seen.add(key)
        bisect.insort(self.orders_sent, update.ts_event)
        horizon = self.orders_sent[-1] - ORDER_WINDOW
        while self.orders_sent and self.orders_sent[0] < horizon:
            self.orders_sent.pop(0)

    def _orders_within(self, now: datetime, window: timedelta) -> int:
        return sum(1 for at in self.orders_sent if now - window < at <= now)

    def on_basket_result(self, result: BasketResult) -> list[events.TradingState]:
        self.ledger.release_reservation(result.basket_id, result.ts_event, f"basket {result.status.value}")
        effects = Effects()
        if result.status is events.BasketStatus.STUCK:
            effects.add(
                self.machine.raise_cause(
                    TradingCause.STUCK_BASKET, result.ts_event, f"basket {result.basket_id}: {result.message}"
                )
            )
        return self._events(effects.transitions, result.correlation_id)

    def on_open_orders(self, open_orders: int, at: datetime) -> list[events.TradingState]:
        """Execution's working orders (its BrokerHealth figure): FLATTENING ends once nothing works."""
        self.open_orders = open_orders
        return self._events(self._flat_transition(at), None)

    # ---- md.chain, an.vol -----------------------------------------------------------------------
    def on_chains(self, chains: Sequence[events.ChainSnapshot]) -> RiskReaction:
        """One market instant (every expiry's chain at one ts_event), as the service takes each chain."""
        reaction = RiskReaction()
        now = chains[0].ts_event
        for chain in chains:
            markets = leg_markets(chain)
            self.legs.update(markets)
            self.portfolio.mark({key: market.mid for key, market in markets.items()})
        self.spot = chains[0].spot
        self.feed_at = now if self.feed_at is None else max(self.feed_at, now)
        effects = Effects()
        day = now.date()
        if self.portfolio.day != day:
            if self.portfolio.day is not None:
                # The next trading day's open: soft, hard and daily-loss stops clear; a kill switch stays.
                effects.add(self.machine.new_trading_day(now))
            self.portfolio.start_day(day)
        self.portfolio.observe_equity()
        levels = StopLevels(
            self.account,
            self.settings.soft_stop_pct,
            self.settings.hard_stop_pct,
            self.settings.daily_loss_limit_pct,
        )
        stops = loss_stops(self.portfolio.day_pnl(), levels, self.machine, now, RISK_SOURCE)
        effects.transitions += stops.transitions
        reaction.flatten += stops.flatten
        reaction.states += self._events(effects.transitions, chains[0].correlation_id)
        for flatten in stops.flatten:
            reaction.baskets += self._flatten_baskets(flatten)
        baskets, unpriced = self._forced_exits(now)
        for basket in baskets:
            assert basket.trade_id is not None
            self.portfolio.expect_basket(basket.basket_id, basket.trade_id)
            self.basket_sizes[basket.basket_id] = (sum(leg.quantity for leg in basket.legs), Decimal(0))
            reaction.baskets.append(basket)
        for missing in unpriced:
            if (missing.trade_id, missing.reason) not in self.unpriced_alerted:
                self.unpriced_alerted.add((missing.trade_id, missing.reason))
                reaction.alerts.append(
                    f"{missing.reason.value} of trade {missing.trade_id} is due but "
                    f"{', '.join(missing.instrument_keys)} have no two-sided quote"
                )
        if self.snapshot_at is None or now - self.snapshot_at >= SNAPSHOT_EVERY:
            reaction.snapshot = self.snapshot(now, chains[0].correlation_id)
            self.snapshot_at = now
        return reaction

    def on_vol(self, snapshot: VolSnapshot) -> None:
        self.vol_at = snapshot.ts_event if self.vol_at is None else max(self.vol_at, snapshot.ts_event)
        realised = snapshot.realised.cc21
        self.scan = (
            None if realised is None else scan_ranges(realised / math.sqrt(252), realised, self.margin)
        )

    # ---- helpers --------------------------------------------------------------------------------
    def snapshot(self, at: datetime, correlation_id: str) -> events.PortfolioSnapshot:
        return portfolio_snapshot(
            self.portfolio,
            self.ledger,
            at=at,
            source=RISK_SOURCE,
            correlation_id=correlation_id,
            reconciled=not self.machine.holds(TradingCause.UNRECONCILED),
        )

    def _flatten_baskets(self, flatten: FlattenAll) -> list[ExecuteBasket]:
        baskets = []
        day = flatten.ts_event.date()
        for trade in self.portfolio.open_trades(flatten.bucket):
            legs = trade.open_legs()
            basket_id = controls.forced_exit_basket_id(trade.trade_id, flatten.reason, day)
            if basket_id in self.portfolio.known_baskets() or not legs:
                continue
            if any(leg.contract.instrument_key not in self.portfolio.marks for leg in legs):
                continue
            basket = controls._closing_basket(  # the same basket risk's forced exits send
                trade,
                legs,
                self.portfolio,
                basket_id,
                flatten.reason,
                flatten.message,
                flatten.ts_event,
                RISK_SOURCE,
            )
            self.portfolio.expect_basket(basket_id, trade.trade_id)
            self.basket_sizes[basket_id] = (sum(leg.quantity for leg in basket.legs), Decimal(0))
            baskets.append(basket)
        return baskets

    def _flat_transition(self, at: datetime) -> list[Transition]:
        if self.machine.state is not events.TradingStateKind.FLATTENING:
            return []
        if self.portfolio.net_positions() or self.open_orders != 0:
            return []
        transition = self.machine.book_flat(at)
        return [] if transition is None else [transition]

    def _events(self, transitions: list[Transition], cause: str | None) -> list[events.TradingState]:
        return [t.event(source=RISK_SOURCE, correlation_id=cause) for t in transitions]

    def _forced_exits(self, now: datetime) -> tuple[list[ExecuteBasket], list[controls.Unpriced]]:
        calendar = clock.nse_calendar()
        if not calendar.is_trading_day(now) or not self.machine.allows(Action.FORCED_EXIT):
            return [], []
        rules = self.settings.timed_rules()
        times = ForcedExitTimes(
            close=calendar.session_bounds(now)[1],
            expiry_flatten_before_close=rules.expiry_flatten_before_close,
            intraday_flat_before_close=rules.intraday_flat_before_close,
        )
        return forced_exits(self.portfolio, now, times, self.portfolio.known_baskets(), RISK_SOURCE)

    def _market(self, now: datetime) -> MarketView:
        calendar = clock.nse_calendar()
        rules = self.settings.timed_rules()
        return MarketView(
            now=now,
            spot=self.spot,
            entries_open=calendar.in_safe_window(now, rules),
            window=(
                f"entries from open + {rules.entries_from_open} to close - {rules.entries_stop_before_close}"
            ),
            feed_at=self.feed_at,
            vol_at=self.vol_at,
            legs=self.legs,
            scan_ranges=self.scan,
            freeze_quantity=self.settings.nifty_freeze_quantity,
        )

    def _context(self, intent: events.TradeIntent, seen: bool) -> Context:
        balance = self.ledger.balance(intent.bucket)
        holds: dict[str, int] | None = None
        if intent.trade_id is not None and intent.trade_id in {t.trade_id for t in self.portfolio.trades}:
            trade = self.portfolio.trade(intent.trade_id)
            holds = {key: leg.quantity for key, leg in trade.legs.items() if leg.quantity != 0}
        return Context(
            book=[
                BookLeg(key, float(leg.contract.strike), leg.contract.option_type.value == "CE", leg.quantity)
                for trade in self.portfolio.open_trades()
                for key, leg in trade.legs.items()
                if leg.quantity != 0
            ],
            bucket_allocated=balance.allocated,
            bucket_free=balance.free,
            margin_available=self.account,
            day_pnl=self.portfolio.day_pnl(),
            orders_last_minute=self._orders_within(intent.ts_event, timedelta(minutes=1)),
            orders_last_30_minutes=self._orders_within(intent.ts_event, ORDER_WINDOW),
            seen_intent=seen,
            trade_holds=holds,
        )

    # ---- expiry settlement ----------------------------------------------------------------------
    def settle_expired(
        self, at: datetime, settlement_price: float
    ) -> list[tuple[str, LegPosition, Decimal, Decimal]]:
        """Options of today's expiry still held at the close, settled in cash at their intrinsic value
        against `settlement_price`: (trade id, leg as it was, intrinsic per unit, STT on exercise).

        The book has no settlement entry of its own, so the leg is closed here by the same arithmetic a
        closing fill uses (`LegPosition.apply`) at the intrinsic value, and the exercise STT of a long
        in the money is added to the trade's charges."""
        today = at.date()
        settled: list[tuple[str, LegPosition, Decimal, Decimal]] = []
        for trade in self.portfolio.open_trades():
            for leg in list(trade.open_legs()):
                if leg.contract.expiry != today:
                    continue
                strike = leg.contract.strike
                spot = Decimal(repr(settlement_price))
                if leg.contract.option_type.value == "CE":
                    intrinsic = max(spot - strike, Decimal(0))
                else:
                    intrinsic = max(strike - spot, Decimal(0))
                intrinsic = round_to_paisa(intrinsic)
                held = leg.quantity
                stt = Decimal(0)
                if held > 0 and intrinsic > 0:
                    stt = exercise_charges(intrinsic, held, today).total
                before = LegPosition(leg.contract, leg.quantity, leg.realised, list(leg.lots))
                leg.apply(events.Side.SELL if held > 0 else events.Side.BUY, abs(held), intrinsic)
                trade.charges += stt
                settled.append((trade.trade_id, before, intrinsic, stt))
            if not trade.is_open and trade.closed_at is None:
                trade.closed_at = at
        for trade_id, _, _, _ in settled:
            if not self.portfolio.trade(trade_id).is_open:
                for basket_id in self.portfolio.baskets_of(trade_id):
                    self.ledger.release(basket_id, at, f"trade {trade_id} settled at expiry")
        return settled


def _approved_max_loss(checks: Sequence[Check]) -> Decimal | None:
    """The max loss the per-trade budget check approved (the intent's, or its stress-priced worst): risk
    forces the trade out if it ever loses that much."""
    for check in checks:
        if check.name == "per_trade_budget" and isinstance(check.value, Decimal):
            return check.value
    return None


class UnlimitedPaperMargin:
    """Risk sized every basket against the margin model already (as in the execution service)."""

    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        return None


class EventTime:
    """The exchange time of the run: the newest market instant or timer step."""

    def __init__(self, start: datetime) -> None:
        self.latest = start

    def saw(self, ts: datetime) -> None:
        if ts > self.latest:
            self.latest = ts

    def __call__(self) -> datetime:
        return self.latest


class ExecutionDesk:
    """The execution service's handlers over the BasketRunner and the PaperBroker, in memory.

    It is the runner's Journal: every order change, fill, alert and basket end becomes the event the
    service would publish, queued in `reports` in the order they happened."""

    def __init__(self, settings: Settings, broker: PaperBroker, time: EventTime) -> None:
        self.settings = settings
        self.broker = broker
        self.time = time
        self.config = GuardConfig.from_settings(settings)
        self.runner = BasketRunner(broker, self, time)
        self.reports: list[events.Event] = []
        self.alerts: list[str] = []
        self.fees_by_basket: dict[str, Decimal] = {}
        self.orders_placed = 0
        self.tick_size = Decimal("0.05")
        self._rules_known: set[str] = set()
        self.latest: dict[date, events.ChainSnapshot] = {}  # each expiry's newest chain

    @classmethod
    async def open(cls, settings: Settings, time: EventTime) -> ExecutionDesk:
        broker = await PaperBroker.open(
            instruments={},
            calendar=clock.nse_calendar(),
            margin=UnlimitedPaperMargin(),
            store=MemoryPaperStore(),
            clock=time,
            latency=timedelta(milliseconds=settings.paper_latency_ms),
        )
        return cls(settings, broker, time)

    @property
    def working(self) -> bool:
        return any(not guard.ended for guard in self.runner.guards.values())

    @property
    def open_orders(self) -> int:
        # As execution's BrokerHealth counts them.
        return sum(1 for guard in self.runner.guards.values() for order in guard.orders if order.live)

    async def on_chains(self, chains: Sequence[events.ChainSnapshot]) -> None:
        """md.chain at execution. The service hands the paper exchange and every working guard each quote
        of the chain; here only the quotes of contracts a working basket trades are handed on (the
        others can change no order's outcome: an order rests, fills and takes displayed quantity on its
        own contract's quotes only), and a basket's contracts get their latest quote when it starts.
        Same outcome, without building some 1,700 quotes per expiry per instant."""
        self.time.saw(chains[0].ts_event)
        for chain in chains:
            self.tick_size = Decimal(repr(chain.tick_size))
            self.latest[chain.expiry] = chain
        watched = self._watched()
        if watched:
            for quote in self._quotes(watched):
                await self.broker.on_quote(quote)
                for guard in self.runner.guards.values():
                    if not guard.ended:
                        guard.on_quote(quote.instrument_key, quote.bid, quote.ask)
        await self.step(chains[0].ts_event)

    async def execute(self, basket: ExecuteBasket) -> None:
        self.time.saw(basket.ts_event)
        keys = {leg.instrument_key for leg in basket.legs}
        self.broker.add_instruments(self._rules(keys))
        for latest in self._quotes(keys):
            await self.broker.on_quote(latest)
        guard = BasketGuard(
            basket,
            contract=Contract(self.tick_size, self.settings.nifty_freeze_quantity),
            config=self.config,
            now=self.time(),
        )
        for leg in basket.legs:
            quote = self.broker.exchange.quote(leg.instrument_key)
            if quote is not None:
                guard.on_quote(leg.instrument_key, quote.bid, quote.ask)
        await self.runner.start(guard)
        await self._drain()

    def _watched(self) -> set[str]:
        return {
            leg.instrument_key
            for guard in self.runner.guards.values()
            if not guard.ended
            for leg in guard.basket.legs
        }

    def _quotes(self, keys: set[str]) -> list[Quote]:
        """The latest quotes of `keys`, built as chain_quotes builds them, in the chain's order."""
        quotes: list[Quote] = []
        for expiry in sorted(self.latest):
            chain = self.latest[expiry]
            arrays = chain.to_numpy()
            sides = (
                (
                    arrays.call_instrument_key,
                    arrays.call_bid,
                    arrays.call_ask,
                    arrays.call_bid_qty,
                    arrays.call_ask_qty,
                ),
                (
                    arrays.put_instrument_key,
                    arrays.put_bid,
                    arrays.put_ask,
                    arrays.put_bid_qty,
                    arrays.put_ask_qty,
                ),
            )
            for names, bids, asks, bid_qtys, ask_qtys in sides:
                for i, name in enumerate(names):
                    if name not in keys:
                        continue
                    bid, ask = _price(float(bids[i])), _price(float(asks[i]))
                    quotes.append(
                        Quote(
                            name,
                            bid,
                            ask,
                            int(bid_qtys[i]) if bid is not None else 0,
                            int(ask_qtys[i]) if ask is not None else 0,
                            chain.ts_event,
                        )
                    )
        return quotes

    async def cancel_all(self, reason: str) -> None:
        for guard in list(self.runner.guards.values()):
            if not guard.ended:
                await self.runner.cancel(guard.basket.basket_id, reason)
        await self._drain()

    async def step(self, at: datetime) -> None:
        """The timer: the exchange moves to `at`, its reports reach the guards, the guards act."""
        self.time.saw(at)
        await self.broker.advance(self.time())
        await self._drain()
        await self.runner.tick()
        await self._drain()

    async def _drain(self) -> None:
        while True:
            updates = self.broker.take_updates()
            if not updates:
                return
            for update in updates:
                await self.runner.on_update(update)

    def _rules(self, keys: set[str]) -> dict[str, InstrumentRules]:
        """Exchange rules of contracts not listed yet (the service lists every contract of each chain)."""
        rules: dict[str, InstrumentRules] = {}
        for expiry in sorted(self.latest):
            chain = self.latest[expiry]
            arrays = chain.to_numpy()
            for names in (arrays.call_instrument_key, arrays.put_instrument_key):
                for name in names:
                    if name in keys and name not in self._rules_known:
                        self._rules_known.add(name)
                        rules[name] = InstrumentRules(
                            name,
                            chain.lot_size,
                            Decimal(repr(chain.tick_size)),
                            self.settings.nifty_freeze_quantity,
                            _NO_BAND_LOW,
                            _NO_BAND_HIGH,
                        )
        return rules

    # ---- the runner's journal ---------------------------------------------------------------------
    async def order_changed(self, guard: BasketGuard, order: Order) -> None:
        update: OrderUpdate = order.to_order_update(
            ts_event=self.time(), source=EXECUTION_SOURCE, correlation_id=guard.basket.correlation_id
        )
        self.reports.append(update)

    async def filled(self, guard: BasketGuard, order: Order, trade: BrokerTrade) -> None:
        basket = guard.basket
        leg = next(leg for leg in basket.legs if leg.leg_index == order.key.leg_index)
        fees = fill_charges(
            trade.side,
            trade.trade.price,
            trade.trade.quantity,
            clock.to_ist(trade.trade.ts_event).date(),
            first_fill_of_order=trade.first_fill_of_order,
            brokerage_per_order=self.settings.brokerage_per_order,
        ).total
        self.fees_by_basket[basket.basket_id] = self.fees_by_basket.get(basket.basket_id, Decimal(0)) + fees
        self.reports.append(
            Fill(
                ts_event=trade.trade.ts_event,
                source=EXECUTION_SOURCE,
                correlation_id=basket.correlation_id,
                fill_id=trade.trade.trade_id,
                client_order_id=order.client_order_id,
                broker_order_id=trade.broker_order_id,
                basket_id=basket.basket_id,
                leg_index=order.key.leg_index,
                instrument_key=trade.instrument_key,
                expiry=leg.expiry,
                strike=leg.strike,
                option_type=leg.option_type,
                side=trade.side,
                quantity=trade.trade.quantity,
                price=trade.trade.price,
                fees=fees,
            )
        )

    async def alert(self, guard: BasketGuard, alert: RaiseAlert) -> None:
        self.alerts.append(f"{alert.code}: {alert.message}")

    async def basket_ended(self, guard: BasketGuard) -> None:
        outcome = guard.outcome
        assert outcome is not None
        basket = guard.basket
        self.reports.append(
            BasketResult(
                ts_event=self.time(),
                source=EXECUTION_SOURCE,
                correlation_id=basket.correlation_id,
                basket_id=basket.basket_id,
                intent_id=basket.intent_id,
                status=outcome.status,
                legs=[
                    LegResult(
                        leg_index=leg.leg_index,
                        client_order_id=leg.client_order_id,
                        attempts=leg.attempts,
                        status=leg.status,
                        filled_qty=leg.filled_qty,
                        avg_price=leg.avg_price,
                        mid_at_submission=leg.mid_at_submission,
                        slippage=leg.slippage,
                        time_to_fill_s=leg.time_to_fill_s,
                    )
                    for leg in outcome.legs
                ],
                net_premium=round_to_paisa(outcome.net_premium),
                fees=self.fees_by_basket.get(basket.basket_id, Decimal(0)),
                message=outcome.message[:500],
            )
        )

    def take_reports(self) -> list[events.Event]:
        taken, self.reports = self.reports, []
        return taken
