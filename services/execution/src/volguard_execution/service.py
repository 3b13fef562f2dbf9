"""The execution service: ex.commands in, a broker in the middle, ex.reports and ex.health out.

Single-active with fencing (`ServiceSpec(single_active=True)`): only the lease holder runs this setup,
and every Postgres write goes through an outbox transaction carrying its fencing token, so a replica that
lost the lease cannot write, nor publish, another order state.

- `ExecuteBasket` is recorded once (dedup by event id, in the same transaction) and handed to a
  `BasketGuard`; the `BasketRunner` carries its actions out at the broker. Every order change, fill,
  alert and the basket's end is written to `execution.*` and published (OrderUpdate, Fill, Alert,
  BasketResult) in one fenced transaction each.
- `CancelOrders` stops a basket (what filled is unwound); `FlattenAll` stops every basket and closes
  every position at the broker: shorts bought back before wings are sold (a CUSTOM basket of its own).
- Reconciliation on activation (start, failover) and every `reconcile_interval_s`: baskets an earlier
  process left unfinished are recovered (their orders read back from the broker, then cancelled and
  unwound, or FILLED if they had completed); positions at the broker are compared with the fills; a
  position VolGuard did not open is reported (Alert) so risk can adopt it. Until a reconciliation
  agrees (after start, after a takeover, after a periodic one failed) every command — ExecuteBasket,
  CancelOrders, FlattenAll — is *held*: recorded in `execution.held_commands` (once, by event id) and
  acknowledged, not carried out. When reconciliation agrees, held commands are released in arrival
  order before any new one, so CancelOrders and FlattenAll act on what reconciliation found. A held
  command is never rejected nor dead-lettered: the broker being unreachable for an hour is not a reason
  to lose a kill switch's FlattenAll.
- Broker health every `broker_health_interval_s`: a check fails when the broker does not answer or its
  order update stream is down; after `broker_unhealthy_after` failures in a row a BrokerHealth
  (connected=false) and a CRITICAL Alert; the first good check after that announces recovery. Its
  latency is measured (submit to ack), never the configured paper latency.

Time is exchange time: the newest `ts_event` seen on market data and commands (the simulated clock in
paper/sim mode; live market data is wall-clock time).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from volguard_common import metrics, outbox
from volguard_common.bus import Delivery
from volguard_common.charges import fill_charges, round_to_paisa
from volguard_common.clock import nse_calendar, to_ist
from volguard_common.events import Event, parse_event
from volguard_common.events._base import Bucket, Side
from volguard_common.events.control import Alert, BrokerHealth, RateLimitHeadroom, Severity
from volguard_common.events.market import ChainSnapshot, Tick
from volguard_common.events.orders import (
    MAX_LEGS,
    BasketLeg,
    BasketResult,
    CancelOrders,
    ExecuteBasket,
    Fill,
    FlattenAll,
    IntentKind,
    LegResult,
    OrderStatus,
    Structure,
    Urgency,
    client_order_id,
)
from volguard_common.service import ServiceContext
from volguard_common.settings import Settings, env_name
from volguard_common.upstox_http import UpstoxHttp
from volguard_execution.adapters.paper_broker import PaperBroker
from volguard_execution.adapters.paper_store import PostgresPaperStore
from volguard_execution.adapters.upstox_broker import UpstoxBroker
from volguard_execution.domain.basket_guard import AlertLevel, BasketGuard, Contract, GuardConfig, RaiseAlert
from volguard_execution.domain.orders import Order, OrderKey, Trade
from volguard_execution.domain.paper_exchange import InstrumentRules, PaperOrder, Quote, chain_quotes
from volguard_execution.domain.rate_limit import OrderRateLimiter, order_rate_windows_from
from volguard_execution.ports import Broker, BrokerOrder, BrokerTrade, BrokerUnavailable
from volguard_execution.runner import BasketRunner

log = structlog.get_logger("volguard.execution")

PUBLISHER = "execution"
# The paper exchange takes any price on the tick grid: the chain does not carry NSE's daily price band.
_NO_BAND_LOW, _NO_BAND_HIGH = Decimal("0.05"), Decimal("1000000")


Command = ExecuteBasket | CancelOrders | FlattenAll


class UnlimitedPaperMargin:
    """Risk sizes every basket against the margin model before it gets here; the paper exchange does not
    second-guess it."""

    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        return None


class ExchangeTime:
    """The newest exchange time seen (market data, commands, persisted facts); the wall clock only until
    anything has been seen."""

    def __init__(self) -> None:
        self.latest: datetime | None = None

    def saw(self, ts_event: datetime) -> None:
        ts = to_ist(ts_event)
        if self.latest is None or ts > self.latest:
            self.latest = ts

    @property
    def known(self) -> bool:
        return self.latest is not None

    def __call__(self) -> datetime:
        return self.latest if self.latest is not None else to_ist(datetime.now(UTC))


_RUNNING: dict[str, ExecutionService] = {}


def running_service(ctx: ServiceContext) -> ExecutionService:
    """The service a context runs (for in-process tests and the benchmark)."""
    return _RUNNING[ctx.source]


class ExecutionService:
    def __init__(self, ctx: ServiceContext, broker: Broker, time: ExchangeTime) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.broker = broker
        self.time = time
        self.config = GuardConfig.from_settings(ctx.settings)
        self.lock = asyncio.Lock()
        self.reconciled = False
        # Held commands may exist (persisted by an earlier process) until a release finds none.
        self.holding = True
        # Commands are carried out one at a time and in order, held ones (released) before new ones.
        self.commands = asyncio.Lock()
        self.runner = BasketRunner(broker, self, self.clock)
        self.contracts: dict[str, BasketLeg] = {}  # instrument → a leg naming it (expiry, strike, type)
        self.basket_meta: dict[str, ExecuteBasket] = {}
        self.health_failures = 0
        self.unhealthy = False
        self.tick_size = Decimal("0.05")
        self.lot_size = 65

    # -- time ---------------------------------------------------------------------------------------

    def clock(self) -> datetime:
        return self.time()

    def _saw(self, ts_event: datetime) -> None:
        self.time.saw(ts_event)

    # -- handlers -------------------------------------------------------------------------------------

    async def on_command(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, ExecuteBasket | CancelOrders | FlattenAll):
            log.warning("unexpected command", type=event.type)
            return
        async with self.commands:
            if not self.reconciled or self.holding:
                await self._hold(event)
                return
            try:
                await self._carry_out(event, held=None)
            except BrokerUnavailable as exc:
                # Only a FlattenAll reads the broker before recording anything: the broker stopped
                # answering since the last reconciliation, so it waits for the next one, held.
                self.reconciled = False
                log.warning("broker unavailable; command held", type=event.type, error=str(exc))
                await self._hold(event)

    async def _carry_out(self, command: Command, *, held: int | None) -> None:
        if isinstance(command, ExecuteBasket):
            await self.on_execute(command, held=held)
        elif isinstance(command, CancelOrders):
            await self.on_cancel(command, held=held)
        else:
            await self.on_flatten(command, held=held)

    async def _hold(self, command: Command) -> None:
        """Not reconciled with the broker (or older commands are still held): keep it for later."""
        async with self.ctx.handle_once(command.event_id) as tx:
            if tx is None:
                return
            await tx.conn.execute(
                "insert into execution.held_commands (event_id, command, held_at) values ($1, $2, $3) "
                "on conflict (event_id) do nothing",
                command.event_id,
                command.model_dump_json(),
                command.ts_event,
            )
        self.holding = True
        log.warning("command held until reconciliation", type=command.type, event_id=command.event_id)

    async def release_held(self) -> None:
        """Reconciliation agreed: carry out the held commands in arrival order, then new ones directly."""
        async with self.commands:
            while self.reconciled:
                row = await self.ctx.pool.fetchrow(
                    "select seq, command from execution.held_commands order by seq limit 1"
                )
                if row is None:
                    self.holding = False
                    return
                command = parse_event(_json_text(row["command"]))
                if not isinstance(command, ExecuteBasket | CancelOrders | FlattenAll):
                    raise TypeError(f"held command {row['seq']} is a {command.type}")
                log.info("releasing held command", type=command.type, event_id=command.event_id)
                await self._carry_out(command, held=int(row["seq"]))

    @asynccontextmanager
    async def _once(self, event_id: str, held: int | None) -> AsyncIterator[outbox.OutboxTransaction | None]:
        """The command's one transaction: recorded as handled (a new command) or taken off the held
        list (a released one; it was recorded as handled when it was held)."""
        if held is None:
            async with self.ctx.handle_once(event_id) as tx:
                yield tx
            return
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            released = await tx.conn.fetchval(
                "delete from execution.held_commands where seq = $1 returning seq", held
            )
            yield tx if released is not None else None

    async def on_execute(self, command: ExecuteBasket, *, held: int | None = None) -> None:
        self._saw(command.ts_event)
        async with self._once(command.event_id, held) as tx:
            if tx is None:
                return
            inserted = await tx.conn.fetchval(
                "insert into execution.baskets (basket_id, command, received_at) values ($1, $2, $3) "
                "on conflict (basket_id) do nothing returning basket_id",
                command.basket_id,
                command.model_dump_json(),
                command.ts_event,
            )
        if inserted is None:
            log.warning("basket already known", basket_id=command.basket_id)
            return
        async with self.lock:
            self._remember(command)
            guard = BasketGuard(command, contract=self._contract(), config=self.config, now=self.clock())
            self._quote_guard(guard)
            await self.runner.start(guard)

    async def on_cancel(self, command: CancelOrders, *, held: int | None = None) -> None:
        self._saw(command.ts_event)
        async with self._once(command.event_id, held) as tx:
            if tx is None:
                return
        baskets = set()
        if command.basket_id is not None:
            baskets.add(command.basket_id)
        for guard in self.runner.guards.values():
            for order in guard.orders:
                if order.client_order_id in command.client_order_ids:
                    baskets.add(guard.basket.basket_id)
        async with self.lock:
            for basket_id in sorted(baskets):
                await self.runner.cancel(basket_id, f"CancelOrders: {command.reason}")

    async def on_flatten(self, command: FlattenAll, *, held: int | None = None) -> None:
        self._saw(command.ts_event)
        # The account is read before anything is recorded: a broker that cannot answer fails the command
        # (retried in place, or left held), it never loses it. No answer is not a flat book.
        positions = await self._positions_to_flatten(command)
        async with self.lock:
            working = [
                guard
                for guard in self.runner.guards.values()
                if not guard.ended and (command.bucket is None or guard.basket.bucket is command.bucket)
            ]
            for guard in working:
                if guard.basket.purpose is not IntentKind.EXIT:
                    # Cancelled, it unwinds its own fills (a recovered basket too): closing them here as
                    # well would reverse them twice. A cancelled exit is not reversed: what it left is ours.
                    for key, units in guard.positions().items():
                        positions[key] = positions.get(key, 0) - units
        legs, bucket = self._flatten_legs(command, {k: u for k, u in positions.items() if u})
        basket = (
            ExecuteBasket(
                ts_event=self.clock(),
                source=self.ctx.source,
                correlation_id=command.correlation_id,
                basket_id=f"flatten-{command.event_id}",
                intent_id=None,
                purpose=IntentKind.EXIT,
                exit_reason=command.reason,
                trade_id=f"flatten-{command.event_id}",
                bucket=bucket,
                structure=Structure.CUSTOM,
                lot_size=self.lot_size,
                legs=legs,
                urgency=Urgency.URGENT,
                reason=f"FlattenAll {command.reason}: {command.message}",
            )
            if legs
            else None
        )
        async with self._once(command.event_id, held) as tx:
            if tx is None:
                return
            if basket is not None:
                await tx.conn.execute(
                    "insert into execution.baskets (basket_id, command, received_at) values ($1, $2, $3) "
                    "on conflict (basket_id) do nothing",
                    basket.basket_id,
                    basket.model_dump_json(),
                    basket.ts_event,
                )
        async with self.lock:
            for guard in working:
                await self.runner.cancel(guard.basket.basket_id, f"FlattenAll: {command.reason}")
            # What the account held beyond the working baskets is closed by a basket of its own: shorts
            # bought back first, then the longs sold.
            if basket is not None:
                self._remember(basket)
                guard = BasketGuard(basket, contract=self._contract(), config=self.config, now=self.clock())
                self._quote_guard(guard)
                await self.runner.start(guard)

    async def _positions_to_flatten(self, command: FlattenAll) -> dict[str, int]:
        if command.bucket is None:
            return {p.instrument_key: p.net_quantity for p in await self.broker.positions()}
        rows = await self.ctx.pool.fetch(
            "select f.instrument_key, sum(case when f.side = 'BUY' then f.quantity else -f.quantity end) "
            "as units from execution.fills f join execution.baskets b using (basket_id) "
            "where b.command->>'bucket' = $1 group by f.instrument_key",
            command.bucket.value,
        )
        return {row["instrument_key"]: int(row["units"]) for row in rows if row["units"]}

    def _flatten_legs(self, command: FlattenAll, positions: dict[str, int]) -> tuple[list[BasketLeg], Bucket]:
        basket_id = f"flatten-{command.event_id}"
        legs: list[BasketLeg] = []
        buckets: list[Bucket] = []
        shorts = sorted(k for k, units in positions.items() if units < 0)
        longs = sorted(k for k, units in positions.items() if units > 0)
        for sequence, side, keys in ((0, Side.BUY, shorts), (1, Side.SELL, longs)):
            for key in keys:
                known = self.contracts.get(key)
                if known is None or len(legs) >= MAX_LEGS:
                    # A contract execution never traded has no expiry/strike here: reconciliation reports
                    # it (POSITIONS_NOT_OURS) for an operator; a basket holds at most MAX_LEGS legs and the
                    # rest waits for the next FlattenAll.
                    log.error("not flattened by this basket", instrument_key=key, units=positions[key])
                    continue
                index = len(legs)
                legs.append(
                    BasketLeg(
                        instrument_key=key,
                        expiry=known.expiry,
                        strike=known.strike,
                        option_type=known.option_type,
                        side=side,
                        quantity=abs(positions[key]),
                        limit_price=known.limit_price,
                        leg_index=index,
                        sequence=sequence,
                        client_order_id=client_order_id(basket_id, index, 0),
                    )
                )
                buckets.append(self.basket_meta[key].bucket)
        return legs, command.bucket or (buckets[0] if buckets else Bucket.WEEKLY)

    async def on_chain(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, ChainSnapshot):
            return
        self._saw(event.ts_event)
        self.tick_size = Decimal(repr(event.tick_size))
        self.lot_size = event.lot_size
        if isinstance(self.broker, PaperBroker):
            self.broker.add_instruments(self._rules(event))
            await self.broker.on_chain(event)
        async with self.lock:
            quotes = chain_quotes(event)
            for guard in self.runner.guards.values():
                if not guard.ended:
                    for quote in quotes:
                        guard.on_quote(quote.instrument_key, quote.bid, quote.ask)
            await self._drain_and_tick()

    async def on_tick(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, Tick) or event.bid is None or event.ask is None:
            return
        self._saw(event.ts_event)
        bid, ask = Decimal(repr(event.bid)), Decimal(repr(event.ask))
        if isinstance(self.broker, PaperBroker) and event.instrument_key in self.contracts:
            await self.broker.on_quote(
                Quote(event.instrument_key, bid, ask, event.bid_qty or 0, event.ask_qty or 0, event.ts_event)
            )
        async with self.lock:
            for guard in self.runner.guards.values():
                if not guard.ended:
                    guard.on_quote(event.instrument_key, bid, ask)

    def _rules(self, snapshot: ChainSnapshot) -> dict[str, InstrumentRules]:
        arrays = snapshot.to_numpy()
        rules: dict[str, InstrumentRules] = {}
        for keys in (arrays.call_instrument_key, arrays.put_instrument_key):
            for key in keys:
                if key:
                    rules[str(key)] = InstrumentRules(
                        str(key),
                        snapshot.lot_size,
                        Decimal(repr(snapshot.tick_size)),
                        self.settings.nifty_freeze_quantity,
                        _NO_BAND_LOW,
                        _NO_BAND_HIGH,
                    )
        return rules

    # -- background work ------------------------------------------------------------------------------

    async def _drain_and_tick(self) -> None:
        if not self.time.known:
            # Nothing has said what time it is at the exchange yet (a simulated day may be years ago):
            # the paper exchange must not be moved to the wall clock and then refuse the market's time.
            return
        if isinstance(self.broker, PaperBroker):
            await self.broker.advance(self.clock())
        await self.runner.tick()

    async def run_timer(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            async with self.lock:
                await self._drain_and_tick()

    async def run_updates(self) -> None:
        async for update in self.broker.updates():
            async with self.lock:
                await self.runner.on_update(update)

    async def run_health(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self.settings.broker_health_interval_s)

    async def check_health(self) -> None:
        probe = await self.broker.probe()
        # A broker that answers requests but whose update stream is down is not healthy: fills and
        # cancels would go unseen until the next read-back.
        problem: str | None = None
        if not probe.ok:
            problem = probe.message
        elif not probe.updates_connected:
            problem = "the broker's order update stream is not connected"
        healthy = problem is None
        if healthy:
            self.health_failures = 0
        else:
            self.health_failures += 1
        became_unhealthy = not self.unhealthy and self.health_failures >= self.settings.broker_unhealthy_after
        recovered = self.unhealthy and healthy
        if became_unhealthy:
            self.unhealthy = True
        if recovered:
            self.unhealthy = False
        open_orders = sum(1 for g in self.runner.guards.values() for o in g.orders if o.live)
        unknown = sum(
            1 for g in self.runner.guards.values() for o in g.orders if o.status is OrderStatus.UNKNOWN
        )
        positions = await self._reconciled_positions(probe.ok, open_orders, unknown)
        health = BrokerHealth(
            ts_event=self.clock(),
            source=self.ctx.source,
            broker=self.broker.name,
            # The verdict, not one probe: a single failed check is noise until it is the third in a row.
            connected=not self.unhealthy,
            # Measured, never configured: the newest submit's round trip to its ack, or before any order
            # the probe's own round trip (None where there is none to measure, as in paper).
            latency_ms=self.runner.submit_ack_ms
            if self.runner.submit_ack_ms is not None
            else probe.latency_ms,
            rate_limit=self._rate_limit_headroom(),
            token_expires_at=None,
            open_orders=open_orders,
            in_flight_unknown=unknown,
            reconciled=self.reconciled,
            positions=positions,
            message=probe.message
            if problem is None
            else f"check failed ({self.health_failures} in a row): {problem}",
        )
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            await tx.publish(health)
            if became_unhealthy:
                await tx.publish(
                    self._alert(
                        Severity.CRITICAL,
                        "BROKER_UNHEALTHY",
                        f"{self.broker.name}: {self.health_failures} failed health checks in a row: "
                        f"{problem}",
                    )
                )
            if recovered:
                await tx.publish(
                    self._alert(Severity.INFO, "BROKER_RECOVERED", f"{self.broker.name} answers again")
                )

    async def _reconciled_positions(
        self, broker_ok: bool, open_orders: int, unknown: int
    ) -> dict[str, int] | None:
        """The broker's net positions for risk to compare its book with (BrokerHealth v2), or None:
        not reported (which is not a flat book) until a reconciliation agreed, while the broker does not
        answer, and while orders are working or unresolved - the broker's trades would then run ahead of
        the fills risk has booked, and risk would hold entries for a difference that is only in flight."""
        if not (self.reconciled and broker_ok) or open_orders or unknown:
            return None
        try:
            held = await self.broker.positions()
        except BrokerUnavailable as exc:
            log.warning("positions not reported with broker health", error=str(exc))
            return None
        return {p.instrument_key: p.net_quantity for p in held if p.net_quantity}

    async def run_reconcile(self) -> None:
        while True:
            # Until a reconciliation agrees, new orders wait: try again soon rather than at the interval.
            await asyncio.sleep(self.settings.reconcile_interval_s if self.reconciled else 1.0)
            await self.try_reconcile()

    async def try_reconcile(self) -> None:
        try:
            await self.reconcile()
        except BrokerUnavailable as exc:
            # Unknown is not agreement: new orders wait until the broker answers.
            self.reconciled = False
            log.warning("reconciliation failed", error=str(exc))
            return
        if self.holding:
            try:
                await self.release_held()
            except BrokerUnavailable as exc:
                # A released FlattenAll could not read the account: it stays held, and so do the rest.
                self.reconciled = False
                log.warning("held commands wait: the broker stopped answering", error=str(exc))

    async def reconcile(self) -> None:
        """Read back every order not known to have ended, check the broker's working orders, then
        compare positions with the fills."""
        async with self.lock:
            await self.runner.read_back_live_orders()
            book = await self.broker.order_book()
            working_ids = {o.broker_order_id for g in self.runner.guards.values() for o in g.orders if o.live}
            # An UNKNOWN submit may be at the broker without our knowing its id yet: its tag covers it.
            working_tags = {
                o.client_order_id for g in self.runner.guards.values() for o in g.orders if o.live
            }
        stray = [
            o
            for o in book
            if o.report.status in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
            and o.broker_order_id not in working_ids
            and o.client_order_id not in working_tags
        ]
        if stray and not await self._settle_stray_orders(stray):
            return  # our own stray orders were asked to cancel: agreement waits for the next round
        broker_positions = {p.instrument_key: p.net_quantity for p in await self.broker.positions()}
        rows = await self.ctx.pool.fetch(
            "select instrument_key, sum(case when side = 'BUY' then quantity else -quantity end) as units "
            "from execution.fills group by instrument_key"
        )
        ours = {row["instrument_key"]: int(row["units"]) for row in rows if row["units"]}
        differences = {
            key: (ours.get(key, 0), broker_positions.get(key, 0))
            for key in set(ours) | set(broker_positions)
            if ours.get(key, 0) != broker_positions.get(key, 0)
        }
        if differences:
            async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
                await tx.publish(
                    self._alert(
                        Severity.CRITICAL,
                        "POSITIONS_NOT_OURS",
                        "positions at the broker differ from VolGuard's fills (ours, broker's): "
                        + ", ".join(f"{k} {v[0]} vs {v[1]}" for k, v in sorted(differences.items())),
                        details={k: v[1] for k, v in differences.items()},
                    )
                )
        # A difference is reported for risk to adopt; it does not stop execution of VolGuard's own orders.
        self.reconciled = True

    async def load_contracts(self) -> None:
        """Every contract execution ever traded, from the baskets as commanded: after a restart or a
        takeover, FlattenAll must be able to name (expiry, strike, type) what reconciliation finds."""
        rows = await self.ctx.pool.fetch("select command from execution.baskets order by received_at")
        for row in rows:
            self._remember(ExecuteBasket.model_validate_json(_json_text(row["command"])))

    async def _settle_stray_orders(self, stray: list[BrokerOrder]) -> bool:
        """Working orders at the broker that no basket of this process works. VolGuard's own (its tag is
        in `execution.orders`: a basket that ended, or one this process does not know, left it behind)
        are cancelled, and execution does not agree with the broker until they are gone; anyone else's
        are reported, as positions VolGuard did not open are. True when nothing of ours was stray."""
        tags = sorted({o.client_order_id for o in stray if o.client_order_id})
        ours = {
            row["client_order_id"]
            for row in await self.ctx.pool.fetch(
                "select distinct client_order_id from execution.orders where client_order_id = any($1)",
                tags,
            )
        }
        mine = [o for o in stray if o.client_order_id in ours]
        foreign = [o for o in stray if o.client_order_id not in ours]
        for order in mine:
            await self.broker.cancel(order.broker_order_id)
        alerts = []
        if mine:
            alerts.append(
                self._alert(
                    Severity.WARNING,
                    "STRAY_ORDERS_CANCELLED",
                    "working orders of VolGuard that no basket works were cancelled before trading: "
                    + ", ".join(f"{o.client_order_id} ({o.broker_order_id})" for o in mine),
                    details={o.broker_order_id: o.client_order_id for o in mine},
                )
            )
        if foreign:
            alerts.append(
                self._alert(
                    Severity.CRITICAL,
                    "ORDERS_NOT_OURS",
                    "working orders at the broker that VolGuard did not place: "
                    + ", ".join(f"{o.broker_order_id} {o.instrument_key}" for o in foreign),
                    details={o.broker_order_id: o.instrument_key for o in foreign},
                )
            )
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            for alert in alerts:
                await tx.publish(alert)
        if mine:
            self.reconciled = False
            log.warning("stray orders cancelled; reconciliation waits for them", orders=len(mine))
        return not mine

    async def recover_unfinished(self) -> None:
        """Baskets an earlier process was working: read back from the broker, then finished or unwound."""
        rows = await self.ctx.pool.fetch(
            "select basket_id, command from execution.baskets where status is null order by received_at"
        )
        for row in rows:
            basket = ExecuteBasket.model_validate_json(_json_text(row["command"]))
            orders = await self._load_orders(basket.basket_id)
            self._remember(basket)
            guard = BasketGuard.recover(
                basket,
                orders,
                contract=self._contract(),
                config=self.config,
                now=self.clock(),
                reason="execution failed over while the basket was worked",
            )
            self._quote_guard(guard)
            async with self.lock:
                self.runner.guards[basket.basket_id] = guard
                await self.runner.adopt(guard)
            log.warning("recovered basket", basket_id=basket.basket_id, orders=len(orders))

    async def _load_orders(self, basket_id: str) -> list[Order]:
        rows = await self.ctx.pool.fetch("select * from execution.orders where basket_id = $1", basket_id)
        fills = await self.ctx.pool.fetch("select * from execution.fills where basket_id = $1", basket_id)
        orders: list[Order] = []
        for row in rows:
            key = OrderKey(row["basket_id"], row["leg_index"], row["attempt"], row["slice_index"])
            order = Order(
                key,
                row["instrument_key"],
                Side(row["side"]),
                row["quantity"],
                row["limit_price"],
                status=OrderStatus(row["status"]),
                broker_order_id=row["broker_order_id"],
                reported_filled_qty=row["reported_filled_qty"],
                reported_avg_price=row["reported_avg_price"],
                message=row["message"],
            )
            for fill in fills:
                if (fill["leg_index"], fill["attempt"], fill["slice_index"]) == (
                    key.leg_index,
                    key.attempt,
                    key.slice_index,
                ):
                    order.trades[fill["fill_id"]] = Trade(
                        fill["fill_id"], fill["quantity"], fill["price"], fill["ts_event"]
                    )
            orders.append(order)
        return orders

    # -- the journal (runner callbacks): persisted and published in one fenced transaction each ---------

    async def order_changed(self, guard: BasketGuard, order: Order) -> None:
        basket = guard.basket
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            await tx.conn.execute(
                """insert into execution.orders (basket_id, leg_index, attempt, slice_index, client_order_id,
                       broker_order_id, instrument_key, side, quantity, limit_price, status,
                       reported_filled_qty, reported_avg_price, message, updated_at)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                   on conflict (basket_id, leg_index, attempt, slice_index) do update set
                       broker_order_id = excluded.broker_order_id, limit_price = excluded.limit_price,
                       status = excluded.status, reported_filled_qty = excluded.reported_filled_qty,
                       reported_avg_price = excluded.reported_avg_price, message = excluded.message,
                       updated_at = excluded.updated_at""",
                order.key.basket_id,
                order.key.leg_index,
                order.key.attempt,
                order.key.slice_index,
                order.client_order_id,
                order.broker_order_id,
                order.instrument_key,
                order.side.value,
                order.quantity,
                order.limit_price,
                order.status.value,
                order.reported_filled_qty,
                order.reported_avg_price,
                order.message[:500],
                self.clock(),
            )
            await tx.publish(
                order.to_order_update(
                    ts_event=self.clock(), source=self.ctx.source, correlation_id=basket.correlation_id
                )
            )

    async def filled(self, guard: BasketGuard, order: Order, trade: BrokerTrade) -> None:
        basket = guard.basket
        leg = next(leg for leg in basket.legs if leg.leg_index == order.key.leg_index)
        charges = fill_charges(
            trade.side,
            trade.trade.price,
            trade.trade.quantity,
            to_ist(trade.trade.ts_event).date(),
            first_fill_of_order=trade.first_fill_of_order,
            brokerage_per_order=self.settings.brokerage_per_order,
        )
        fees = charges.total
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            inserted = await tx.conn.fetchval(
                """insert into execution.fills (fill_id, basket_id, leg_index, attempt, slice_index,
                       broker_order_id, instrument_key, side, quantity, price, fees, ts_event)
                   values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   on conflict (fill_id) do nothing returning fill_id""",
                trade.trade.trade_id,
                basket.basket_id,
                order.key.leg_index,
                order.key.attempt,
                order.key.slice_index,
                trade.broker_order_id,
                trade.instrument_key,
                trade.side.value,
                trade.trade.quantity,
                trade.trade.price,
                fees,
                trade.trade.ts_event,
            )
            if inserted is None:
                return  # already told (a recovered order's trade read back again)
            await tx.publish(
                Fill(
                    ts_event=trade.trade.ts_event,
                    source=self.ctx.source,
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
        severity = Severity.CRITICAL if alert.level is AlertLevel.CRITICAL else Severity.WARNING
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            await tx.publish(
                self._alert(
                    severity, alert.code, alert.message, details={"basket_id": guard.basket.basket_id}
                )
            )

    async def basket_ended(self, guard: BasketGuard) -> None:
        outcome = guard.outcome
        assert outcome is not None
        basket = guard.basket
        async with outbox.transaction(self.ctx.pool, publisher=PUBLISHER, fence=self.ctx.fence) as tx:
            fees = await tx.conn.fetchval(
                "select coalesce(sum(fees), 0) from execution.fills where basket_id = $1", basket.basket_id
            )
            result = BasketResult(
                ts_event=self.clock(),
                source=self.ctx.source,
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
                fees=Decimal(fees),
                message=outcome.message[:500],
            )
            await tx.conn.execute(
                "update execution.baskets set status = $2, result = $3, ended_at = $4 where basket_id = $1",
                basket.basket_id,
                outcome.status.value,
                result.model_dump_json(),
                self.clock(),
            )
            await tx.publish(result)
        # After the commit: a basket counts once it is on record.
        for leg in outcome.legs:
            metrics.execution_leg_filled(
                self.ctx.spec.name,
                basket.urgency.value,
                slippage_rupees=float(leg.slippage) if leg.slippage is not None else None,
                time_to_fill_s=leg.time_to_fill_s,
            )

    # -- helpers -------------------------------------------------------------------------------------

    def _rate_limit_headroom(self) -> RateLimitHeadroom:
        if isinstance(self.broker, UpstoxBroker):
            # The limiter's windows are (second, minute, 30 minutes), as order_rate_windows builds them.
            second, minute, half_hour = self.broker.limiter.headroom()
            return RateLimitHeadroom(per_second=second, per_minute=minute, per_30_minutes=half_hour)
        # The paper broker has no order-rate limit of its own: its headroom is the Upstox budget
        # VolGuard keeps to, unused.
        return RateLimitHeadroom(
            per_second=self.settings.upstox_orders_per_second,
            per_minute=self.settings.upstox_orders_per_minute,
            per_30_minutes=self.settings.upstox_orders_per_30_minutes,
        )

    def _contract(self) -> Contract:
        return Contract(self.tick_size, self.settings.nifty_freeze_quantity)

    def _remember(self, basket: ExecuteBasket) -> None:
        for leg in basket.legs:
            self.contracts[leg.instrument_key] = leg
            self.basket_meta[leg.instrument_key] = basket

    def _quote_guard(self, guard: BasketGuard) -> None:
        if isinstance(self.broker, PaperBroker):
            for leg in guard.basket.legs:
                quote = self.broker.exchange.quote(leg.instrument_key)
                if quote is not None:
                    guard.on_quote(leg.instrument_key, quote.bid, quote.ask)

    def _alert(
        self, severity: Severity, code: str, message: str, *, details: dict[str, Any] | None = None
    ) -> Alert:
        return Alert(
            ts_event=self.clock(),
            source=self.ctx.source,
            severity=severity,
            code=code,
            message=message[:1000],
            details=details or {},
        )


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def live_broker(settings: Settings) -> UpstoxBroker:
    """The Upstox broker for `VOLGUARD_MODE=live`: orders to the HFT host through the order-rate limiter
    (Upstox's three windows, strictly under the SEBI algo threshold), reads to the API host. The token is
    held as a secret and never appears in a repr or a log line."""
    token = settings.upstox_access_token
    if token is None or not token.get_secret_value().strip():
        raise RuntimeError(
            f"{env_name('mode')}=live needs an Upstox access token in {env_name('upstox_access_token')}; "
            "paper trading (the default) needs none"
        )
    http = UpstoxHttp(settings.upstox_api_base, token, order_base_url=settings.upstox_order_api_base)
    limiter = OrderRateLimiter(order_rate_windows_from(settings), time.monotonic)
    return UpstoxBroker(http, limiter, algo_name=settings.upstox_algo_name)


async def setup(ctx: ServiceContext) -> None:
    exchange_time = ExchangeTime()
    latest = await ctx.pool.fetchval("select max(updated_at) from execution.orders")
    if latest is not None:
        exchange_time.saw(latest)
    broker: Broker
    if ctx.settings.mode == "live":
        broker = live_broker(ctx.settings)
        log.info(
            "execution_broker",
            broker="upstox",
            api=ctx.settings.upstox_api_base,
            orders=ctx.settings.upstox_order_api_base,
            algo_name=ctx.settings.upstox_algo_name,
        )
    else:
        broker = await _paper_broker(ctx, exchange_time)
    service = ExecutionService(ctx, broker, exchange_time)
    _RUNNING[ctx.source] = service
    await service.load_contracts()
    await service.recover_unfinished()
    await service.try_reconcile()
    for stream, handler in (
        ("ex.commands", service.on_command),
        ("md.chain", service.on_chain),
        ("md.ticks", service.on_tick),
    ):
        ctx.consumer.subscribe(stream, handler)
    for name, work in (
        ("execution-timer", service.run_timer()),
        ("execution-updates", service.run_updates()),
        ("execution-health", service.run_health()),
        ("execution-reconcile", service.run_reconcile()),
    ):
        # Supervised: reconciliation or the broker's update stream dying on an unexpected error must
        # not leave a process that looks healthy while it no longer reconciles or hears fills.
        ctx.spawn(work, name)


async def teardown(ctx: ServiceContext) -> None:
    service = _RUNNING.pop(ctx.source, None)
    if service is not None:
        await service.broker.close()


class _InstalledCalendar:
    """The process's calendar at each call, not the one at start: with the live feed the
    broker-corrected calendar can be installed, or change, while the paper exchange runs."""

    def market_open(self, ts: datetime) -> bool:
        return nse_calendar().market_open(ts)


async def _paper_broker(ctx: ServiceContext, exchange_time: ExchangeTime) -> PaperBroker:
    return await PaperBroker.open(
        instruments={},
        calendar=_InstalledCalendar(),
        margin=UnlimitedPaperMargin(),
        store=PostgresPaperStore(ctx.pool, ctx.fence),
        clock=exchange_time,
        latency=timedelta(milliseconds=ctx.settings.paper_latency_ms),
    )
