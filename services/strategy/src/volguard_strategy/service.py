"""The strategy process: the domain `Strategist` wired to the bus and Postgres.

Reads an.vol (VolSnapshot), md.chain (ChainSnapshot, conflated per expiry), rk.portfolio
(PortfolioSnapshot) and rk.state (TradingState). Operator commands (kill switch, pause, flatten,
capital) reach strategy through risk: they change rk.state and rk.portfolio, which strategy obeys, so
it does not read ctl.commands itself.

Each VolSnapshot is evaluated once, with the ChainSnapshots it names (`chain_event_ids`, see
`adapters.chains`), and answered in one fenced outbox transaction (`ServiceContext.handle_once`): the
processed-event record, the journal (every bucket's decision with its reasons, every intent, the state
the evaluation added) and the events published - TradeIntents on st.intents and the
StrategyRecommendations on st.recommendations, all carrying the VolSnapshot's correlation_id (its
front chain's). Intent and event ids are hashed from the VolSnapshot and the decision, so a redelivered
snapshot is found done and a crash anywhere gives each intent exactly once. The evaluation runs on a working
copy of the strategist's state, adopted only after the commit: a failed transaction (a stale fence, a
lost connection) leaves the state as Postgres has it.

Start and failover: cooldowns, the exits and hedges already proposed and the regime of each entry are
restored from the journal; the latest rk.state and rk.portfolio are read back from their streams (risk
publishes rk.state only on a transition). Until both are known, entries wait and the journal says so.

Risk's state and book are taken in stream order, not by `ts_event`: risk publishes them in commit order
from one outbox, and its start-up transition carries the wall time (it answers no event) while the rest
carry exchange time - in a simulated or replayed session the start-up REDUCING would otherwise look
newer than every later RUNNING.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import structlog
from redis.asyncio import Redis

from volguard_common import events, streams
from volguard_common.bus import EVENT_FIELD, BusConfig, Delivery
from volguard_common.events import ChainSnapshot, PortfolioSnapshot, Structure, TradingState
from volguard_common.events.vol import VolSnapshot
from volguard_common.service import ServiceContext
from volguard_strategy.adapters.chains import ChainBook
from volguard_strategy.adapters.journal import PostgresJournal
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.strategist import Evaluation, Strategist
from volguard_strategy.ports import ChainSource, Journal, StateChange, StrategistState

log = structlog.get_logger("volguard.strategy")


class StrategyService:
    def __init__(
        self, ctx: ServiceContext, strategist: Strategist, chains: ChainSource, journal: Journal
    ) -> None:
        self.ctx = ctx
        self.strategist = strategist
        self.chains = chains
        self.journal = journal
        # One evaluation at a time sees one portfolio and one trading state: their handlers wait while
        # an evaluation (run in a worker thread) and its commit are under way.
        self._lock = asyncio.Lock()
        # Stream position of the rk.state / rk.portfolio entry the strategist holds (see the docstring).
        self._held: dict[str, tuple[int, int]] = {}

    # ---- state ------------------------------------------------------------------------------------
    def state(self) -> StrategistState:
        s = self.strategist
        return StrategistState(
            last_entry=dict(s.last_entry),
            proposed=frozenset(s.proposed),
            regime_of_intent=dict(s.regime_of_intent),
            regime_of_trade=dict(s.regime_of_trade),
        )

    def adopt(self, state: StrategistState) -> None:
        s = self.strategist
        s.last_entry = dict(state.last_entry)
        s.proposed = set(state.proposed)
        s.regime_of_intent = dict(state.regime_of_intent)
        s.regime_of_trade = dict(state.regime_of_trade)

    def _working_copy(self) -> Strategist:
        """The strategist with state of its own: an evaluation changes the live one only once its
        transaction committed (a failed one, or one still running in its thread after the handler
        timed out, changes nothing that counts). Portfolio and trading state are immutable events."""
        s = self.strategist
        return replace(
            s,
            last_entry=dict(s.last_entry),
            proposed=set(s.proposed),
            regime_of_intent=dict(s.regime_of_intent),
            regime_of_trade=dict(s.regime_of_trade),
        )

    # ---- handlers ---------------------------------------------------------------------------------
    async def on_chain(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, ChainSnapshot):
            raise TypeError(f"md.chain carries ChainSnapshots, got {event.type}")
        self.chains.remember(event)

    async def on_portfolio(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, PortfolioSnapshot):
            raise TypeError(f"rk.portfolio carries PortfolioSnapshots, got {event.type}")
        async with self._lock:
            self.take(delivery.stream, delivery.entry_id, event)

    async def on_state(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, TradingState):
            raise TypeError(f"rk.state carries TradingStates, got {event.type}")
        async with self._lock:
            self.take(delivery.stream, delivery.entry_id, event)

    def take(self, stream: str, entry_id: str, event: PortfolioSnapshot | TradingState) -> bool:
        """Hold risk's newest state or book by stream position; False for an older entry (one read back
        at start-up may be newer than the first ones the group then delivers)."""
        position = _position(entry_id)
        held = self._held.get(stream)
        if held is not None and position <= held:
            return False
        self._held[stream] = position
        if isinstance(event, TradingState):
            self.strategist.trading_state = event
        else:
            self.strategist.portfolio = event
        return True

    async def on_vol(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, VolSnapshot):
            raise TypeError(f"an.vol carries VolSnapshots, got {event.type}")
        found = await self.chains.chains_for(event)
        async with self._lock:
            before = self.state()
            work = self._working_copy()
            # CPU work off the event loop, so the lease keeps being renewed and the handler's timeout
            # can fire; the lock keeps portfolio and trading state still meanwhile.
            evaluation = await asyncio.to_thread(work.on_vol, event, found.chains)
            change = _change(before, work)
            async with self.ctx.handle_once(event.event_id) as tx:
                if tx is None:
                    return  # handled before (its ack was lost): what it did is in the state already
                await self.journal.record(
                    tx.conn, event, evaluation, found.missing, change, self.ctx.fencing_token
                )
                for intent in evaluation.intents:
                    await tx.publish(intent)
                await tx.publish(evaluation.recommendations)
            self.adopt(
                StrategistState(
                    work.last_entry, frozenset(work.proposed), work.regime_of_intent, work.regime_of_trade
                )
            )
        self._log(event, evaluation, found.missing)

    def _log(self, snapshot: VolSnapshot, evaluation: Evaluation, missing: tuple[str, ...]) -> None:
        log.info(
            "evaluated",
            vol_event_id=snapshot.event_id,
            ts_event=snapshot.ts_event.isoformat(),
            quality=snapshot.quality.value,
            decisions={
                d.bucket.value: (
                    f"{d.structure.value} ({d.rule})"
                    if d.structure is not Structure.WAIT
                    else f"WAIT ({d.rule}): {d.reasons[-1]}"
                )
                for d in evaluation.decisions
            },
            intents=[
                f"{i.kind.value} {i.bucket.value} {i.structure.value} {i.intent_id}"
                for i in evaluation.intents
            ],
            recommendations=len(evaluation.recommendations.recommendations),
            chains_missing=list(missing),
        )


def _change(before: StrategistState, after: Strategist) -> StateChange:
    return StateChange(
        proposed=frozenset(after.proposed - before.proposed),
        regime_of_intent={
            k: v for k, v in after.regime_of_intent.items() if k not in before.regime_of_intent
        },
        regime_of_trade={k: v for k, v in after.regime_of_trade.items() if k not in before.regime_of_trade},
    )


def _position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def latest(redis: Redis, config: BusConfig, stream: str) -> tuple[str, events.Event] | None:
    """The newest entry id and event on a snapshot stream, or None when it holds none."""
    entries = await redis.xrevrange(config.key(stream), count=1)
    if not entries:
        return None
    entry_id, fields = entries[0]
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return text, events.parse_event(fields[EVENT_FIELD])


async def setup(ctx: ServiceContext) -> None:
    config = StrategyConfig.from_settings(ctx.settings)
    bus = BusConfig.from_settings(ctx.settings)
    journal = PostgresJournal(ctx.pool)
    strategist = Strategist(config, source=ctx.source)
    service = StrategyService(ctx, strategist, ChainBook(ctx.redis, bus), journal)
    restored = await journal.restore()
    service.adopt(restored)
    # Risk publishes rk.state on transitions only: a replica starting mid-session reads the current
    # state (and book) back from the snapshot streams rather than trade blind or wait for a change.
    for stream in (streams.RK_STATE.name, streams.RK_PORTFOLIO.name):
        newest = await latest(ctx.redis, bus, stream)
        if newest is not None:
            entry_id, event = newest
            if not isinstance(event, TradingState | PortfolioSnapshot):
                raise TypeError(f"{stream} carries risk's state and book, got {event.type}")
            service.take(stream, entry_id, event)
    ctx.consumer.subscribe(
        streams.MD_CHAIN.name, service.on_chain, conflate_key=lambda e: getattr(e, "expiry", "")
    )
    ctx.consumer.subscribe(streams.RK_STATE.name, service.on_state, conflate_key=lambda e: "state")
    ctx.consumer.subscribe(
        streams.RK_PORTFOLIO.name, service.on_portfolio, conflate_key=lambda e: "portfolio"
    )
    # Every VolSnapshot is evaluated (each is a decision point, journalled): no conflation here.
    ctx.consumer.subscribe(streams.AN_VOL.name, service.on_vol)
    ctx.extensions["strategy"] = service
    log.info(
        "strategy restored",
        last_entry={b.value: t.isoformat() for b, t in restored.last_entry.items()},
        proposed=len(restored.proposed),
        trading_state=None if strategist.trading_state is None else strategist.trading_state.state.value,
        portfolio=strategist.portfolio is not None,
    )


__all__ = ["StrategyService", "latest", "setup"]
