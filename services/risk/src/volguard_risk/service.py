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

Handled here: ctl.commands and st.intents. ex.reports, md.chain and an.vol are declared (their groups
exist, nothing is read yet), so the fills, marks and VolSnapshot freshness the entry checks need are
unknown, and every entry is rejected with the checks that say so. (Issue 16, service: in progress.)
"""

from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal

import structlog

from volguard_common import clock, events, outbox, streams
from volguard_common.bus import Delivery
from volguard_common.events import Bucket, TradingCause, TradingState
from volguard_common.outbox import OutboxTransaction
from volguard_common.quant.margin import MarginParameters
from volguard_common.service import ServiceContext
from volguard_risk.domain.capital import CapitalLedger, Movement, MovementKind
from volguard_risk.domain.controls import Effects, apply_command
from volguard_risk.domain.pretrade import Context, MarketView, RiskLimits, assess, decision
from volguard_risk.domain.trading_state import TradingStateMachine, Transition

log = structlog.get_logger("volguard.risk")

UNRECONCILED_DETAIL = "book not yet rebuilt from fills and compared with execution's reconciled view"


class Risk:
    def __init__(self, ctx: ServiceContext, machine: TradingStateMachine, ledger: CapitalLedger) -> None:
        self.ctx = ctx
        self.machine = machine
        self.ledger = ledger
        self.limits = RiskLimits.from_settings(ctx.settings)
        self.margin = MarginParameters.from_settings(ctx.settings)
        self.account = ctx.settings.account_size

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
        ledger = copy.deepcopy(self.ledger)
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
            if basket is not None:
                assert assessment.reserve is not None
                row = ledger.reserve(
                    event.bucket,
                    basket.basket_id,
                    assessment.reserve,
                    event.ts_event,
                    f"intent {event.intent_id}",
                )
                await self._record_movements(tx, [row])
                await tx.publish(basket)
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
        self.ledger = ledger
        log.info(
            "intent decided", intent_id=event.intent_id, approved=verdict.approved, reasons=verdict.reasons
        )

    # ---- what the checks know ---------------------------------------------------------------------
    def _market(self, now: datetime) -> MarketView:
        calendar = clock.nse_calendar()
        rules = self.ctx.settings.timed_rules()
        return MarketView(
            now=now,
            # No chain is read yet: spot, legs, scan ranges, the freeze quantity and the feed's age are
            # unknown, and the checks say so.
            spot=None,
            entries_open=calendar.in_safe_window(now, rules),
            window=(
                f"entries from open + {rules.entries_from_open} to close - {rules.entries_stop_before_close}"
            ),
            feed_at=None,
            vol_at=None,
            legs={},
            scan_ranges=None,
            freeze_quantity=None,
        )

    def _context(self, intent: events.TradeIntent, seen: bool) -> Context:
        balance = self.ledger.balance(intent.bucket)
        return Context(
            book=[],
            bucket_allocated=balance.allocated,
            bucket_free=balance.free,
            margin_available=self.account,
            day_pnl=None,
            orders_last_minute=0,
            orders_last_30_minutes=0,
            seen_intent=seen,
            trade_holds=None,
        )


async def restore(ctx: ServiceContext) -> tuple[TradingStateMachine, CapitalLedger]:
    """The trading state and capital ledger as Postgres has them (after a restart or a failover)."""
    async with ctx.pool.acquire() as conn:
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
    return machine, ledger


async def setup(ctx: ServiceContext) -> None:
    machine, ledger = await restore(ctx)
    settings = ctx.settings
    # Start-up answers no event, so it has no event time: its rows carry the wall time they were
    # written at, in one fenced transaction of their own.
    now = datetime.now(clock.IST)
    async with outbox.transaction(ctx.pool, publisher=ctx.spec.name, fence=ctx.fence) as tx:
        risk = Risk(ctx, machine, ledger)
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
    ctx.consumer.subscribe(streams.CTL_COMMANDS.name, risk.on_command)
    ctx.consumer.subscribe(streams.ST_INTENTS.name, risk.on_intent)
    log.info("risk restored", state=machine.state.value, causes=[c.cause.value for c in machine.causes])
