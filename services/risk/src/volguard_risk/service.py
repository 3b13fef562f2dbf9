"""The risk process: the domain (trading state, capital ledger, pre-trade checks, controls) wired to the
bus and Postgres.

Every handled event is one transaction (`ServiceContext.handle_once`): the processed-event record, the
rows it adds (`risk.trading_state_transitions`, `risk.capital_ledger`, `risk.decisions`) and the events
it publishes (rk.state, rk.decisions, ex.commands, sys.alerts) through the outbox, under the lease's
fencing token, so a replica that lost the lease writes nothing and a crash gives each event exactly once.
The domain works on copies that replace the live state only after the commit: a refused or failed
transaction leaves memory as Postgres has it.

Start and failover rebuild the trading state from its last transition and the capital ledger from its
rows. Until the portfolio is rebuilt from execution's fills and agrees with execution's reconciled
broker view, risk holds UNRECONCILED (REDUCING): no entry is approved on a book it cannot vouch for.

Handled: ctl.commands, st.intents, ex.reports (fills move the book; order updates feed the order budget,
which counts exchange orders execution reported sent, not intents; basket results release capital),
ex.health (broker health and reconciliation: broker positions in instruments the book holds none of and
no basket in flight trades are adopted as EXTERNAL trades, counted in Greeks, margin and the snapshot,
and hold EXTERNAL_POSITIONS until an operator acknowledges), md.status, md.chain (marks, the cash
settlement of legs past their expiry, the day's opening equity, loss stops, time-based and per-trade
forced exits, rk.portfolio) and an.vol (margin scan, VIX spike).
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import structlog

from volguard_common import clock, events, metrics, outbox, streams
from volguard_common.bus import Delivery
from volguard_common.charges import round_to_paisa
from volguard_common.events import Bucket, TradingCause, TradingState, TradingStateKind
from volguard_common.events.vol import VolSnapshot
from volguard_common.outbox import OutboxTransaction
from volguard_common.quant import iv
from volguard_common.quant.margin import MarginParameters, ScanRanges, scan_ranges
from volguard_common.service import ServiceContext
from volguard_risk.domain.capital import CapitalLedger, Movement, MovementKind, crossed_up
from volguard_risk.domain.controls import (
    Effects,
    ForcedExitTimes,
    StopLevels,
    Unpriced,
    apply_command,
    forced_exits,
    loss_stops,
)
from volguard_risk.domain.marks import chain_contracts, leg_markets, position_greeks
from volguard_risk.domain.portfolio import (
    Contract,
    LegPosition,
    Portfolio,
    Settlement,
    TradeOrigin,
    portfolio_snapshot,
)
from volguard_risk.domain.pretrade import (
    Assessment,
    BookLeg,
    Context,
    LegMarket,
    MarketView,
    RiskLimits,
    assess,
    decision,
)
from volguard_risk.domain.trading_state import Action, TradingStateMachine, Transition

log = structlog.get_logger("volguard.risk")

Handler = Callable[[events.Event, Delivery], Awaitable[None]]

# An Alert when a bucket's reserved + used capital passes this share of its allocation.
BUCKET_ALERT_SHARE = Decimal("0.9")
# rk.portfolio goes out on every fill and at least this often in event time while chains arrive.
SNAPSHOT_EVERY = timedelta(seconds=5)
UNRECONCILED_DETAIL = "book not yet rebuilt from fills and compared with execution's reconciled view"
# The order budget counts exchange orders execution reported sent over the broker's longest window.
ORDER_WINDOW = timedelta(minutes=30)


@dataclass
class Restored:
    """Risk's state as Postgres has it (after a restart or a failover)."""

    machine: TradingStateMachine
    ledger: CapitalLedger
    portfolio: Portfolio
    # Baskets execution has not finished, with the instruments each trades.
    in_flight: dict[str, frozenset[str]] = field(default_factory=dict)
    # Event times of the exchange orders execution reported sent within the last ORDER_WINDOW.
    orders_sent: list[datetime] = field(default_factory=list)


class Risk:
    def __init__(self, ctx: ServiceContext, restored: Restored) -> None:
        self.ctx = ctx
        self._machine = restored.machine
        metrics.trading_state(ctx.spec.name, self._machine.state)
        self.ledger = restored.ledger
        self.limits = RiskLimits.from_settings(ctx.settings)
        self.margin = MarginParameters.from_settings(ctx.settings)
        self.account = ctx.settings.account_size
        self.portfolio = restored.portfolio
        self.in_flight = dict(restored.in_flight)
        self.orders_sent: deque[datetime] = deque(sorted(restored.orders_sent))
        # What each instrument key is, as the chains described it (to book an EXTERNAL position).
        self.contracts: dict[str, Contract] = {}
        # Broker positions found EXTERNAL that could not be booked yet (no chain described or quoted
        # them), already alerted: one Alert each, not one per BrokerHealth.
        self.external_alerted: set[str] = set()
        # What the latest md.chain / an.vol said (event time), for the checks and the marks.
        self.legs: dict[str, LegMarket] = {}
        self.spot: float | None = None
        self.feed_at: datetime | None = None
        self.vol_at: datetime | None = None
        self.scan: ScanRanges | None = None
        self.differences: list[str] = []
        self.snapshot_at: datetime | None = None
        # Forced exits already alerted as unpriceable (an Alert each, not one per chain).
        self.unpriced_alerted: set[tuple[str, events.ExitReason]] = set()
        # The last spot each day's chains carried, for settling legs past their expiry.
        self.day_spot: dict[date, float] = {}
        # Why the last rk.portfolio had no Greeks for some legs (logged when a reason first appears).
        self.greeks_unknown: set[str] = set()
        # Execution's working orders as its last BrokerHealth said; None until it says.
        self.open_orders: int | None = None
        # The same figure execution slices at (its setting; the instrument master's in live mode).
        self.freeze_quantity: int | None = ctx.settings.nifty_freeze_quantity

    @property
    def machine(self) -> TradingStateMachine:
        return self._machine

    @machine.setter
    def machine(self, machine: TradingStateMachine) -> None:
        # Every committed change of state passes here: /metrics shows the state risk holds, from start.
        self._machine = machine
        metrics.trading_state(self.ctx.spec.name, machine.state)

    # ---- persistence ------------------------------------------------------------------------------
    async def _record_transitions(
        self, tx: OutboxTransaction, transitions: list[Transition], cause: str
    ) -> None:
        for transition in transitions:
            event = transition.event(source=self.ctx.source, correlation_id=cause)
            await tx.conn.execute(
                "insert into risk.trading_state_transitions "
                "(ts_event, state, previous, reason, event, fencing_token) values ($1, $2, $3, $4, $5, $6)",
                transition.at,
                transition.state.value,
                transition.previous.value,
                transition.reason,
                event.model_dump_json(),
                self.ctx.fencing_token,
            )
            await tx.publish(event)

    async def _record_movements(self, tx: OutboxTransaction, movements: list[Movement]) -> None:
        for row in movements:
            await tx.conn.execute(
                "insert into risk.capital_ledger "
                "(seq, ts_event, bucket, kind, amount, reference, reason, fencing_token) "
                "values ($1, $2, $3, $4, $5, $6, $7, $8)",
                row.seq,
                row.at,
                row.bucket.value,
                row.kind.value,
                row.amount,
                row.reference,
                row.reason,
                self.ctx.fencing_token,
            )

    async def _record(self, tx: OutboxTransaction, effects: Effects, cause: events.Event) -> None:
        await self._record_transitions(tx, effects.transitions, cause.correlation_id)
        await self._record_movements(tx, effects.movements)
        for flatten in effects.flatten:
            await tx.publish(flatten)
        for refusal in effects.refused:
            await tx.publish(
                events.Alert(
                    ts_event=cause.ts_event,
                    source=self.ctx.source,
                    correlation_id=cause.correlation_id,
                    severity=events.Severity.WARNING,
                    code="RISK_COMMAND_REFUSED",
                    message=refusal,
                )
            )

    # ---- handlers ---------------------------------------------------------------------------------
    async def on_command(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, events.Command):
            raise TypeError(f"ctl.commands carries Commands, got {event.type}")
        machine, ledger = copy.deepcopy(self.machine), copy.deepcopy(self.ledger)
        async with self.ctx.handle_once(event.event_id) as tx:
            if tx is None:
                return
            effects = apply_command(event, machine, ledger, self.account, event.ts_event, self.ctx.source)
            await self._record(tx, effects, event)
        if (
            event.command is events.CommandKind.SET_CAPITAL
            and not effects.refused
            and event.capital is not None
        ):
            self.account = event.capital
        self.machine, self.ledger = machine, ledger
        log.info(
            "command handled",
            command=event.command.value,
            state=machine.state.value,
            flatten=len(effects.flatten),
            refused=effects.refused,
        )

    async def on_intent(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, events.TradeIntent):
            raise TypeError(f"st.intents carries TradeIntents, got {event.type}")
        ledger, portfolio = copy.deepcopy(self.ledger), copy.deepcopy(self.portfolio)
        async with self.ctx.handle_once(event.event_id) as tx:
            if tx is None:
                return
            seen = await tx.conn.fetchval(
                "select exists(select 1 from risk.decisions where intent_id = $1)", event.intent_id
            )
            assessment = assess(
                event,
                self.machine,
                self._market(event.ts_event),
                self._context(event, seen),
                self.limits,
                self.margin,
            )
            verdict, basket = decision(event, assessment, at=event.ts_event, source=self.ctx.source)
            if basket is not None and event.kind is events.IntentKind.EXIT:
                # An exit closes what the trade holds: it frees margin rather than adding any, so it
                # reserves no capital and opens no trade; its fills belong to the trade it closes.
                await self._open_basket(tx, portfolio, event, basket.basket_id, Decimal(0), None)
                await tx.publish(basket)
            elif basket is not None:
                if assessment.reserve is None:
                    raise ValueError(f"intent {event.intent_id} approved with no capital to reserve")
                await self._open_basket(
                    tx, portfolio, event, basket.basket_id, assessment.reserve, _approved_max_loss(assessment)
                )
                row = ledger.reserve(
                    event.bucket,
                    basket.basket_id,
                    assessment.reserve,
                    event.ts_event,
                    f"intent {event.intent_id}",
                )
                await self._record_movements(tx, [row])
                await tx.publish(basket)
                after = ledger.balance(event.bucket).utilisation
                if crossed_up(self.ledger.balance(event.bucket).utilisation, after, BUCKET_ALERT_SHARE):
                    await tx.publish(
                        events.Alert(
                            ts_event=event.ts_event,
                            source=self.ctx.source,
                            correlation_id=event.correlation_id,
                            severity=events.Severity.WARNING,
                            code="RISK_BUCKET_NEARLY_FULL",
                            message=f"{event.bucket.value} bucket {after:.1%} used after {basket.basket_id}",
                        )
                    )
            if not seen:
                await tx.conn.execute(
                    "insert into risk.decisions "
                    "(intent_id, ts_event, approved, basket_id, decision, fencing_token) "
                    "values ($1, $2, $3, $4, $5, $6)",
                    event.intent_id,
                    event.ts_event,
                    verdict.approved,
                    verdict.basket_id,
                    verdict.model_dump_json(),
                    self.ctx.fencing_token,
                )
            await tx.publish(verdict)
        self.ledger, self.portfolio = ledger, portfolio
        if basket is not None:
            self.in_flight[basket.basket_id] = frozenset(leg.instrument_key for leg in basket.legs)
        log.info(
            "intent decided", intent_id=event.intent_id, approved=verdict.approved, reasons=verdict.reasons
        )

    async def _open_basket(
        self,
        tx: OutboxTransaction,
        portfolio: Portfolio,
        intent: events.TradeIntent,
        basket_id: str,
        reserve: Decimal,
        max_loss: Decimal | None,
    ) -> None:
        """The approved basket's fills will belong to this trade (a new one for an entry, which risk
        forces out if it ever loses `max_loss`)."""
        if intent.kind is events.IntentKind.ENTRY:
            trade_id = f"tr-{intent.intent_id}"[:64]
            portfolio.open_trade(
                trade_id,
                intent.bucket,
                intent.structure,
                intent.ts_event,
                origin=TradeOrigin.VOLGUARD,
                max_loss=max_loss,
            )
            await tx.conn.execute(
                "insert into risk.trades "
                "(trade_id, bucket, structure, origin, opened_at, max_loss, fencing_token) "
                "values ($1, $2, $3, $4, $5, $6, $7)",
                trade_id,
                intent.bucket.value,
                intent.structure.value,
                TradeOrigin.VOLGUARD.value,
                intent.ts_event,
                max_loss,
                self.ctx.fencing_token,
            )
        else:
            assert intent.trade_id is not None
            trade_id = intent.trade_id
        portfolio.expect_basket(basket_id, trade_id)
        await tx.conn.execute(
            "insert into risk.baskets (basket_id, trade_id, units, reserved, instruments, fencing_token) "
            "values ($1, $2, $3, $4, $5, $6)",
            basket_id,
            trade_id,
            sum(leg.quantity for leg in intent.legs),
            reserve,
            sorted({leg.instrument_key for leg in intent.legs}),
            self.ctx.fencing_token,
        )

    async def on_report(self, event: events.Event, delivery: Delivery) -> None:
        if isinstance(event, events.OrderUpdate):
            # The book moves on fills and order states are execution's; what risk takes from an order
            # update is that an exchange order went out, for the order budget.
            await self._on_order_update(event)
        elif isinstance(event, events.Fill):
            await self._on_fill(event)
        elif isinstance(event, events.BasketResult):
            await self._on_basket_result(event)
        else:
            raise TypeError(f"ex.reports carries OrderUpdate, Fill and BasketResult, got {event.type}")

    def _flat_transition(
        self, machine: TradingStateMachine, portfolio: Portfolio, at: datetime
    ) -> list[Transition]:
        """FLATTENING ends in HALTED once no position is left and execution reports no working order."""
        if machine.state is not TradingStateKind.FLATTENING:
            return []
        if portfolio.net_positions() or self.open_orders != 0:
            return []
        transition = machine.book_flat(at)
        return [] if transition is None else [transition]

    async def _on_fill(self, fill: events.Fill) -> None:
        machine = copy.deepcopy(self.machine)
        ledger, portfolio = copy.deepcopy(self.ledger), copy.deepcopy(self.portfolio)
        async with self.ctx.handle_once(fill.event_id) as tx:
            if tx is None:
                return
            booked = portfolio.apply_fill(fill)
            if booked is None:
                return
            movements: list[Movement] = []
            row = await tx.conn.fetchrow(
                "select units, reserved from risk.baskets where basket_id = $1", fill.basket_id
            )
            assert row is not None  # apply_fill refused a basket risk never issued
            holder = ledger.bucket_of(fill.basket_id)
            held = (
                Decimal(0)
                if holder is None
                else ledger.balance(holder).reserved_by.get(fill.basket_id, Decimal(0))
            )
            if held > 0:
                # Reserved capital is committed in proportion to the units filled, rounded to the
                # paisa and never more than is still reserved.
                share = round_to_paisa(Decimal(row["reserved"]) * fill.quantity / Decimal(row["units"]))
                amount = min(share, held)
                if amount > 0:
                    movements.append(
                        ledger.commit(fill.basket_id, amount, fill.ts_event, f"fill {fill.fill_id}")
                    )
            if booked.closed_trade:
                for basket_id in portfolio.baskets_of(booked.trade_id):
                    released = ledger.release(basket_id, fill.ts_event, f"trade {booked.trade_id} closed")
                    if released is not None:
                        movements.append(released)
            await self._record_movements(tx, movements)
            flat = self._flat_transition(machine, portfolio, fill.ts_event)
            await self._record_transitions(tx, flat, fill.correlation_id)
            await tx.conn.execute(
                "insert into risk.fills "
                "(fill_id, basket_id, event, cash_flow, charges, realised, fencing_token) "
                "values ($1, $2, $3, $4, $5, $6, $7)",
                fill.fill_id,
                fill.basket_id,
                fill.model_dump_json(),
                booked.cash_flow,
                booked.charges,
                booked.realised,
                self.ctx.fencing_token,
            )
            await tx.publish(self._snapshot(portfolio, ledger, fill.ts_event, fill.correlation_id))
        self.machine, self.ledger, self.portfolio = machine, ledger, portfolio

    async def _on_order_update(self, update: events.OrderUpdate) -> None:
        """Count each exchange order (a client order id's slice) once, at its first report."""
        async with self.ctx.handle_once(update.event_id) as tx:
            if tx is None:
                return
            inserted = await tx.conn.fetchval(
                "insert into risk.orders_sent (client_order_id, slice_index, ts_event, fencing_token) "
                "values ($1, $2, $3, $4) on conflict do nothing returning true",
                update.client_order_id,
                update.slice_index,
                update.ts_event,
                self.ctx.fencing_token,
            )
        if inserted:
            self._order_sent(update.ts_event)

    def _order_sent(self, at: datetime) -> None:
        bisect.insort(self.orders_sent, at)
        horizon = self.orders_sent[-1] - ORDER_WINDOW
        while self.orders_sent and self.orders_sent[0] < horizon:
            self.orders_sent.popleft()

    def _orders_within(self, now: datetime, window: timedelta) -> int:
        """Exchange orders sent in (now - window, now] of event time."""
        return sum(1 for at in self.orders_sent if now - window < at <= now)

    async def _on_basket_result(self, result: events.BasketResult) -> None:
        machine, ledger = copy.deepcopy(self.machine), copy.deepcopy(self.ledger)
        async with self.ctx.handle_once(result.event_id) as tx:
            if tx is None:
                return
            # Every fill of the basket came before its result on ex.reports: what the broker holds in
            # its instruments from here on is the book's to explain.
            await tx.conn.execute(
                "update risk.baskets set finished = true where basket_id = $1", result.basket_id
            )
            effects = Effects()
            released = ledger.release_reservation(
                result.basket_id, result.ts_event, f"basket {result.status.value}"
            )
            if released is not None:
                effects.movements.append(released)
            if result.status is events.BasketStatus.STUCK:
                effects.add(
                    machine.raise_cause(
                        TradingCause.STUCK_BASKET,
                        result.ts_event,
                        f"basket {result.basket_id}: {result.message}",
                    )
                )
            await self._record(tx, effects, result)
        self.machine, self.ledger = machine, ledger
        self.in_flight.pop(result.basket_id, None)

    async def on_health(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, events.BrokerHealth):
            raise TypeError(f"ex.health carries BrokerHealth, got {event.type}")
        machine = copy.deepcopy(self.machine)
        effects = Effects()
        at = event.ts_event
        self.open_orders = event.open_orders
        effects.transitions += self._flat_transition(machine, self.portfolio, at)
        if event.connected:
            effects.add(machine.cause_cleared(TradingCause.BROKER_UNHEALTHY, at, f"{event.broker} connected"))
        else:
            effects.add(
                machine.raise_cause(TradingCause.BROKER_UNHEALTHY, at, f"{event.broker} disconnected")
            )
        differences: list[str] | None = None
        portfolio = self.portfolio
        adopted: list[tuple[str, Contract, int, Decimal]] = []
        unbooked: list[tuple[str, int]] = []
        if event.reconciled and event.positions is not None:
            found = self._external(event.positions)
            if found:
                portfolio = copy.deepcopy(self.portfolio)
            for n, (key, quantity) in enumerate(found):
                contract, mark = self.contracts.get(key), portfolio.marks.get(key)
                if contract is None or mark is None:
                    # Not bookable until a chain describes and quotes it; never ignored meanwhile: it is
                    # alerted, it holds EXTERNAL_POSITIONS, and it stays a difference (UNRECONCILED).
                    if key not in self.external_alerted:
                        unbooked.append((key, quantity))
                    continue
                trade_id = f"ext-{n}-{event.event_id}"
                portfolio.adopt_external(trade_id, contract, quantity, mark, at)
                adopted.append((trade_id, contract, quantity, mark))
            if adopted or unbooked:
                named = [f"{c.instrument_key} {q:+d} adopted at {p}" for _, c, q, p in adopted]
                named += [f"{key} {q:+d} not yet booked (no chain quotes it)" for key, q in unbooked]
                effects.add(
                    machine.raise_cause(
                        TradingCause.EXTERNAL_POSITIONS, at, ("EXTERNAL positions: " + "; ".join(named))[:500]
                    )
                )
            differences = [d.describe() for d in portfolio.compare(event.positions)]
            if differences:
                effects.add(machine.raise_cause(TradingCause.UNRECONCILED, at, "; ".join(differences)[:500]))
            else:
                effects.add(
                    machine.cause_cleared(TradingCause.UNRECONCILED, at, "book agrees with execution's view")
                )
        alert = differences is not None and bool(differences) and differences != self.differences
        if not effects.transitions and not alert and not adopted and not unbooked:
            return
        async with self.ctx.handle_once(event.event_id) as tx:
            if tx is None:
                return
            await self._record(tx, effects, event)
            for trade_id, contract, quantity, price in adopted:
                await tx.conn.execute(
                    "insert into risk.trades (trade_id, bucket, structure, origin, opened_at, fencing_token) "
                    "values ($1, $2, $3, $4, $5, $6)",
                    trade_id,
                    Bucket.INTRADAY.value,
                    events.Structure.CUSTOM.value,
                    TradeOrigin.EXTERNAL.value,
                    at,
                    self.ctx.fencing_token,
                )
                await tx.conn.execute(
                    "insert into risk.external_positions (trade_id, instrument_key, expiry, strike, "
                    "option_type, quantity, price, adopted_at, fencing_token) "
                    "values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    trade_id,
                    contract.instrument_key,
                    contract.expiry,
                    contract.strike,
                    contract.option_type.value,
                    quantity,
                    price,
                    at,
                    self.ctx.fencing_token,
                )
            if adopted or unbooked:
                named = [
                    f"{c.instrument_key} {q:+d} units adopted as trade {t} at {p}" for t, c, q, p in adopted
                ]
                named += [
                    f"{key} {q:+d} units not booked yet: no chain has described and quoted it"
                    for key, q in unbooked
                ]
                await tx.publish(
                    events.Alert(
                        ts_event=at,
                        source=self.ctx.source,
                        correlation_id=event.correlation_id,
                        severity=events.Severity.CRITICAL,
                        code="RISK_EXTERNAL_POSITIONS",
                        message=(
                            "the broker holds positions VolGuard did not open; risk counts them and "
                            "allows exits only until an operator acknowledges: " + "; ".join(named)
                        )[:4000],
                    )
                )
            if adopted:
                await tx.publish(self._snapshot(portfolio, self.ledger, at, event.correlation_id))
            if alert and differences is not None:
                await tx.publish(
                    events.Alert(
                        ts_event=at,
                        source=self.ctx.source,
                        correlation_id=event.correlation_id,
                        severity=events.Severity.CRITICAL,
                        code="RISK_BOOK_UNRECONCILED",
                        message="risk's book differs from execution's reconciled view: "
                        + "; ".join(differences)[:900],
                    )
                )
        self.machine, self.portfolio = machine, portfolio
        self.external_alerted |= {key for key, _ in unbooked}
        if differences is not None:
            self.differences = differences

    def _external(self, broker: dict[str, int]) -> list[tuple[str, int]]:
        """Broker positions in instruments the book holds none of and no basket in flight trades: not
        VolGuard's. (A held instrument with another quantity is a difference, not an EXTERNAL position;
        a basket in flight may have filled at the broker before its fills reached risk.)"""
        ours = self.portfolio.net_positions()
        busy = set().union(*self.in_flight.values())
        return [(k, q) for k, q in sorted(broker.items()) if q != 0 and k not in ours and k not in busy]

    async def on_status(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, events.FeedStatus):
            raise TypeError(f"md.status carries FeedStatus, got {event.type}")
        machine = copy.deepcopy(self.machine)
        effects = Effects()
        if event.state in (events.FeedState.STALE, events.FeedState.DISCONNECTED):
            effects.add(
                machine.raise_cause(TradingCause.STALE_DATA, event.ts_event, f"feed {event.state.value}")
            )
        elif event.state is events.FeedState.CONNECTED:
            effects.add(machine.cause_cleared(TradingCause.STALE_DATA, event.ts_event, "feed connected"))
        if not effects.transitions:
            return
        async with self.ctx.handle_once(event.event_id) as tx:
            if tx is None:
                return
            await self._record(tx, effects, event)
        self.machine = machine

    async def on_chain(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, events.ChainSnapshot):
            raise TypeError(f"md.chain carries ChainSnapshots, got {event.type}")
        markets = leg_markets(event)
        self.legs.update(markets)
        self.contracts.update(chain_contracts(event))
        self.spot = event.spot
        self.feed_at = event.ts_event if self.feed_at is None else max(self.feed_at, event.ts_event)
        self.portfolio.mark({key: market.mid for key, market in markets.items()})
        day = event.ts_event.date()
        if event.spot is not None:
            self.day_spot[day] = event.spot
        machine, portfolio = copy.deepcopy(self.machine), copy.deepcopy(self.portfolio)
        ledger = copy.deepcopy(self.ledger)
        effects = Effects()
        settlements = portfolio.expired_settlements(day, event.ts_event, self._settlement_level)
        for settlement in settlements:
            if portfolio.settle(settlement):
                for basket_id in portfolio.baskets_of(settlement.trade_id):
                    released = ledger.release(
                        basket_id, event.ts_event, f"trade {settlement.trade_id} settled at expiry"
                    )
                    if released is not None:
                        effects.movements.append(released)
        if portfolio.day != day:
            if portfolio.day is not None or _stops_of_an_earlier_day(machine, day):
                # The next trading day's open: soft, hard and daily-loss stops clear; a kill switch stays.
                effects.add(machine.new_trading_day(event.ts_event))
            portfolio.start_day(day)
            opened = portfolio.day_open_equity
        else:
            # A leg unmarked at the day's open (the normal case after a restart) left the day's opening
            # equity unknown; it is taken at the first chain that marks every open leg.
            opened = portfolio.open_day_if_unknown()
        portfolio.observe_equity()
        levels = StopLevels(
            self.account,
            self.ctx.settings.soft_stop_pct,
            self.ctx.settings.hard_stop_pct,
            self.ctx.settings.daily_loss_limit_pct,
        )
        day_pnl = portfolio.day_pnl()
        effects.add(_day_pnl_staleness(machine, portfolio, day_pnl, event.ts_event))
        stops = loss_stops(day_pnl, levels, machine, event.ts_event, self.ctx.source)
        effects.transitions += stops.transitions
        effects.flatten += stops.flatten
        baskets, unpriced = self._forced_exits(portfolio, machine, event.ts_event)
        unpriced = [u for u in unpriced if (u.trade_id, u.reason) not in self.unpriced_alerted]
        due = self.snapshot_at is None or event.ts_event - self.snapshot_at >= SNAPSHOT_EVERY
        if not (
            effects.transitions
            or effects.flatten
            or baskets
            or unpriced
            or due
            or opened is not None
            or settlements
        ):
            self.portfolio = portfolio
            return
        async with self.ctx.handle_once(event.event_id) as tx:
            if tx is None:
                return
            await self._record(tx, effects, event)
            for settlement in settlements:
                await tx.conn.execute(
                    "insert into risk.settlements "
                    "(trade_id, instrument_key, quantity, price, charges, ts_event, basis, fencing_token) "
                    "values ($1, $2, $3, $4, $5, $6, $7, $8)",
                    settlement.trade_id,
                    settlement.instrument_key,
                    settlement.quantity,
                    settlement.price,
                    settlement.charges,
                    settlement.at,
                    settlement.basis,
                    self.ctx.fencing_token,
                )
                await tx.publish(
                    events.Alert(
                        ts_event=event.ts_event,
                        source=self.ctx.source,
                        correlation_id=event.correlation_id,
                        severity=events.Severity.WARNING,
                        code="RISK_EXPIRY_SETTLED",
                        message=f"{settlement.instrument_key} ({settlement.quantity} units) of trade "
                        f"{settlement.trade_id} settled at expiry at {settlement.price} Rs intrinsic on "
                        f"{settlement.basis}; STT on exercise {settlement.charges} Rs",
                    )
                )
            if opened is not None:
                # Written once per day: a later restart restores it and the day keeps its losses.
                await tx.conn.execute(
                    "insert into risk.daily_state (day, open_equity, set_at, fencing_token) "
                    "values ($1, $2, $3, $4) on conflict (day) do nothing",
                    day,
                    opened,
                    event.ts_event,
                    self.ctx.fencing_token,
                )
            for basket in baskets:
                assert basket.trade_id is not None
                portfolio.expect_basket(basket.basket_id, basket.trade_id)
                await tx.conn.execute(
                    "insert into risk.baskets "
                    "(basket_id, trade_id, units, reserved, instruments, fencing_token) "
                    "values ($1, $2, $3, 0, $4, $5)",
                    basket.basket_id,
                    basket.trade_id,
                    sum(leg.quantity for leg in basket.legs),
                    sorted({leg.instrument_key for leg in basket.legs}),
                    self.ctx.fencing_token,
                )
                await tx.publish(basket.model_copy(update={"correlation_id": event.correlation_id}))
            for missing in unpriced:
                await tx.publish(
                    events.Alert(
                        ts_event=event.ts_event,
                        source=self.ctx.source,
                        correlation_id=event.correlation_id,
                        severity=events.Severity.CRITICAL,
                        code="RISK_FORCED_EXIT_UNPRICED",
                        message=f"{missing.reason.value} of trade {missing.trade_id} is due but "
                        f"{', '.join(missing.instrument_keys)} have no two-sided quote to price the exit",
                    )
                )
            if due:
                await tx.publish(self._snapshot(portfolio, ledger, event.ts_event, event.correlation_id))
        self.machine, self.portfolio, self.ledger = machine, portfolio, ledger
        for basket in baskets:
            self.in_flight[basket.basket_id] = frozenset(leg.instrument_key for leg in basket.legs)
        self.unpriced_alerted |= {(u.trade_id, u.reason) for u in unpriced}
        if due:
            self.snapshot_at = event.ts_event

    def _settlement_level(self, expiry: date) -> tuple[Decimal, str] | None:
        """The index level an expired leg settles on: the last spot risk saw on or before its expiry
        (the expiry day's last chain, in the normal case); else, after a restart past the expiry, the
        latest spot it has, said so in the settlement's basis."""
        seen = [d for d in self.day_spot if d <= expiry]
        if seen:
            on = max(seen)
            return Decimal(str(self.day_spot[on])), f"the last spot seen on {on.isoformat()}"
        if self.spot is None:
            return None
        latest = max(self.day_spot)
        return Decimal(str(self.spot)), f"the latest spot ({latest.isoformat()}): none seen by the expiry"

    def _forced_exits(
        self, portfolio: Portfolio, machine: TradingStateMachine, now: datetime
    ) -> tuple[list[events.ExecuteBasket], list[Unpriced]]:
        """Expiry-day and intraday exits due at `now` (event time), from the day's dated close."""
        calendar = clock.nse_calendar()
        if not calendar.is_trading_day(now) or not machine.allows(Action.FORCED_EXIT):
            return [], []
        rules = self.ctx.settings.timed_rules()
        times = ForcedExitTimes(
            close=calendar.session_bounds(now)[1],
            expiry_flatten_before_close=rules.expiry_flatten_before_close,
            intraday_flat_before_close=rules.intraday_flat_before_close,
        )
        return forced_exits(portfolio, now, times, portfolio.known_baskets(), self.ctx.source)

    async def on_vol(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, VolSnapshot):
            raise TypeError(f"an.vol carries VolSnapshots, got {event.type}")
        self.vol_at = event.ts_event if self.vol_at is None else max(self.vol_at, event.ts_event)
        realised = event.realised.cc21
        # NSE Clearing scans on the EWMA vol of the underlying, which an.vol does not publish; the
        # 21-session close-to-close realised vol stands in for it. The 9.3 % price-scan floor binds
        # unless daily vol exceeds 9.3 % / (6 x sqrt 2) = 1.1 %, so the stand-in rarely moves the margin.
        self.scan = (
            None if realised is None else scan_ranges(realised / math.sqrt(252), realised, self.margin)
        )
        # A VIX spike holds REDUCING (no entries, exits and hedges allowed) for as long as analytics
        # flags it; it clears on the first VolSnapshot that no longer does (the table's "the cause clears").
        machine = copy.deepcopy(self.machine)
        effects = Effects()
        vix = "unknown" if event.vix is None else f"{event.vix:.2f}"
        if event.regime.vix_spike:
            effects.add(machine.raise_cause(TradingCause.VIX_SPIKE, event.ts_event, f"VIX spike (VIX {vix})"))
        else:
            effects.add(
                machine.cause_cleared(TradingCause.VIX_SPIKE, event.ts_event, f"no VIX spike (VIX {vix})")
            )
        if not effects.transitions:
            return
        async with self.ctx.handle_once(event.event_id) as tx:
            if tx is None:
                return
            await self._record(tx, effects, event)
        self.machine = machine

    def _snapshot(
        self, portfolio: Portfolio, ledger: CapitalLedger, at: datetime, correlation_id: str
    ) -> events.PortfolioSnapshot:
        unknown: set[str] = set()

        def greeks_of(legs: Sequence[LegPosition]) -> events.Greeks | None:
            greeks, why = position_greeks(legs, self.legs, self.spot)
            if why is not None and why not in self.greeks_unknown:
                # Once per reason, not once per snapshot: strategy's Greek stop and delta hedge are
                # blind to these legs until a chain prices them.
                log.warning("greeks unknown", reason=why, legs=[leg.contract.instrument_key for leg in legs])
            if why is not None:
                unknown.add(why)
            return greeks

        snapshot = portfolio_snapshot(
            portfolio,
            ledger,
            at=at,
            source=self.ctx.source,
            correlation_id=correlation_id,
            reconciled=(not self.machine.holds(TradingCause.UNRECONCILED)),
            greeks_of=greeks_of,
        )
        self.greeks_unknown = unknown
        return snapshot

    # ---- what the checks know ---------------------------------------------------------------------
    def _market(self, now: datetime) -> MarketView:
        calendar = clock.nse_calendar()
        rules = self.ctx.settings.timed_rules()
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
            freeze_quantity=self.freeze_quantity,
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


# The STALE_DATA detail risk raises while it cannot price the day's P&L (feed staleness has its own).
DAY_PNL_UNKNOWN = "day P&L unknown"
_NEXT_DAY_STOPS = frozenset({TradingCause.SOFT_STOP, TradingCause.HARD_STOP, TradingCause.DAILY_LOSS_LIMIT})


def _stops_of_an_earlier_day(machine: TradingStateMachine, day: date) -> bool:
    """A day's stop still held on a later day with no recorded day to compare (restored before
    risk.daily_state had a row): the new day's open clears it all the same."""
    return any(c.cause in _NEXT_DAY_STOPS and c.since.date() < day for c in machine.causes)


def _day_pnl_staleness(
    machine: TradingStateMachine, portfolio: Portfolio, day_pnl: Decimal | None, at: datetime
) -> Transition | None:
    """While the day's P&L is unknown no loss stop can fire: risk holds STALE_DATA (REDUCING) rather
    than trade on blind; it clears when the P&L is known again (only the STALE_DATA risk raised)."""
    if day_pnl is None:
        unmarked = sorted(
            leg.contract.instrument_key
            for trade in portfolio.open_trades()
            for leg in trade.open_legs()
            if leg.contract.instrument_key not in portfolio.marks
        )
        why = f"no mark for {', '.join(unmarked)}" if unmarked else "the day's opening equity is not known"
        return machine.raise_cause(TradingCause.STALE_DATA, at, f"{DAY_PNL_UNKNOWN}: {why}")
    held = next((c for c in machine.causes if c.cause is TradingCause.STALE_DATA), None)
    if held is not None and held.detail.startswith(DAY_PNL_UNKNOWN):
        return machine.cause_cleared(TradingCause.STALE_DATA, at, "day P&L known")
    return None


def _approved_max_loss(assessment: Assessment) -> Decimal | None:
    """The max loss the per-trade budget check approved (the intent's, or its stress-priced worst)."""
    for check in assessment.checks:
        if check.name == "per_trade_budget" and isinstance(check.value, Decimal):
            return check.value
    return None


async def restore(ctx: ServiceContext) -> Restored:
    """Trading state, capital ledger, the book, baskets in flight and the order budget's recent orders as
    Postgres has them (after a restart or a failover)."""
    portfolio = Portfolio(ctx.settings.account_size, brokerage_per_order=ctx.settings.brokerage_per_order)
    in_flight: dict[str, frozenset[str]] = {}
    async with ctx.pool.acquire() as conn:
        for trade in await conn.fetch("select * from risk.trades order by opened_at, trade_id"):
            if TradeOrigin(trade["origin"]) is TradeOrigin.EXTERNAL:
                continue  # booked from risk.external_positions below
            portfolio.open_trade(
                trade["trade_id"],
                Bucket(trade["bucket"]),
                events.Structure(trade["structure"]),
                clock.to_ist(trade["opened_at"]),
                origin=TradeOrigin(trade["origin"]),
                max_loss=None if trade["max_loss"] is None else Decimal(trade["max_loss"]),
            )
        for row in await conn.fetch("select * from risk.external_positions order by adopted_at, trade_id"):
            portfolio.adopt_external(
                row["trade_id"],
                Contract(
                    row["instrument_key"],
                    row["expiry"],
                    Decimal(row["strike"]),
                    events.OptionType(row["option_type"]),
                ),
                row["quantity"],
                Decimal(row["price"]),
                clock.to_ist(row["adopted_at"]),
            )
        for basket in await conn.fetch("select basket_id, trade_id, instruments, finished from risk.baskets"):
            portfolio.expect_basket(basket["basket_id"], basket["trade_id"])
            if not basket["finished"]:
                in_flight[basket["basket_id"]] = frozenset(basket["instruments"])
        orders_sent = [
            clock.to_ist(r["ts_event"])
            for r in await conn.fetch(
                "select ts_event from risk.orders_sent where ts_event >= "
                "(select max(ts_event) from risk.orders_sent) - $1::interval",
                ORDER_WINDOW,
            )
        ]
        for row in await conn.fetch("select event from risk.fills order by seq"):
            portfolio.apply_fill(events.Fill.model_validate_json(row["event"]))
        for row in await conn.fetch(
            "select * from risk.settlements order by ts_event, trade_id, instrument_key"
        ):
            portfolio.settle(
                Settlement(
                    row["trade_id"],
                    row["instrument_key"],
                    row["quantity"],
                    Decimal(row["price"]),
                    Decimal(row["charges"]),
                    clock.to_ist(row["ts_event"]),
                    row["basis"],
                )
            )
        opening = await conn.fetchrow(
            "select day, open_equity from risk.daily_state order by day desc limit 1"
        )
        if opening is not None:
            portfolio.restore_day(opening["day"], Decimal(opening["open_equity"]))
        last = await conn.fetchval(
            "select event from risk.trading_state_transitions order by seq desc limit 1"
        )
        rows = await conn.fetch(
            "select seq, ts_event, bucket, kind, amount, reference, reason "
            "from risk.capital_ledger order by seq"
        )
    machine = TradingStateMachine.restore(None if last is None else TradingState.model_validate_json(last))
    ledger = CapitalLedger.rebuild(
        Movement(
            r["seq"],
            clock.to_ist(r["ts_event"]),
            Bucket(r["bucket"]),
            MovementKind(r["kind"]),
            Decimal(r["amount"]),
            r["reference"],
            r["reason"],
        )
        for r in rows
    )
    return Restored(machine, ledger, portfolio, in_flight, orders_sent)


def load_quant_kernels() -> None:
    """Compile (or load from numba's cache) the implied-vol kernels every chain's marks go through.

    The first `iv.implied_vol` call in a process compiles them: 6 s here with a cold cache, 7-15 s
    while the rest of the stack starts on the same cores. Done by the first md.chain handler, that
    stalled the event loop - and the lease renewals on it - past the lease's ttl, so risk lost its
    lease and restarted once on every cold `volguard up`. Setup runs this in a worker thread instead:
    numba's compiler gives the GIL back often enough for the loop to keep renewing.
    """
    iv.implied_vol(np.array([100.0]), 25_000.0, np.array([25_000.0]), 0.05, True)


async def setup(ctx: ServiceContext) -> None:
    await asyncio.to_thread(load_quant_kernels)
    restored = await restore(ctx)
    machine, ledger = restored.machine, restored.ledger
    settings = ctx.settings
    # Start-up answers no event, so it has no event time: its rows carry the wall time they were
    # written at, in one fenced transaction of their own.
    now = datetime.now(clock.IST)
    async with outbox.transaction(ctx.pool, publisher=ctx.spec.name, fence=ctx.fence) as tx:
        risk = Risk(ctx, restored)
        movements: list[Movement] = []
        if not any(row.kind is MovementKind.ALLOCATE for row in ledger.rows):
            percentages = {
                Bucket.WEEKLY: settings.bucket_weekly_pct,
                Bucket.MONTHLY: settings.bucket_monthly_pct,
                Bucket.INTRADAY: settings.bucket_intraday_pct,
            }
            movements = ledger.allocate(
                settings.account_size, percentages, now, "initial allocation from settings"
            )
        transition = machine.raise_cause(TradingCause.UNRECONCILED, now, UNRECONCILED_DETAIL)
        await risk._record_movements(tx, movements)
        if transition is not None:
            await risk._record_transitions(tx, [transition], f"risk-start-{ctx.fencing_token}")
    # Each stream has its own reader task, and every handler copies the state, awaits its transaction
    # and then swaps its copy in: two handlers overlapping would each swap in a state missing the
    # other's change (a health check's RUNNING undone by a chain's older copy while rk.state said
    # RUNNING). One handler at a time.
    one_at_a_time = asyncio.Lock()

    def serialised(handler: Handler) -> Handler:
        async def handle(event: events.Event, delivery: Delivery) -> None:
            async with one_at_a_time:
                await handler(event, delivery)

        return handle

    ctx.consumer.subscribe(streams.CTL_COMMANDS.name, serialised(risk.on_command))
    ctx.consumer.subscribe(streams.ST_INTENTS.name, serialised(risk.on_intent))
    ctx.consumer.subscribe(streams.EX_REPORTS.name, serialised(risk.on_report))
    ctx.consumer.subscribe(streams.EX_HEALTH.name, serialised(risk.on_health))
    ctx.consumer.subscribe(streams.MD_STATUS.name, serialised(risk.on_status))
    ctx.consumer.subscribe(
        streams.MD_CHAIN.name, serialised(risk.on_chain), conflate_key=lambda e: getattr(e, "expiry", "")
    )
    ctx.consumer.subscribe(streams.AN_VOL.name, serialised(risk.on_vol))
    log.info("risk restored", state=machine.state.value, causes=[c.cause.value for c in machine.causes])
