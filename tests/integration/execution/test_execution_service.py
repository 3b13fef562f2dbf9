"""The execution service in-process against real Redis and Postgres, with the paper broker.

An ExecuteBasket on ex.commands becomes a filled paper basket: OrderUpdates, Fills and a BasketResult on
ex.reports, a BrokerHealth on ex.health, orders, fills and the basket persisted in `execution.*`. And the
gaps closed since: a throttled submit goes again under its own key; commands wait for reconciliation
held, not dead-lettered, also across a restart; reconciliation cancels our stray working orders;
FlattenAll after a restart closes what the books found, and never doubles a working basket's unwind.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import db, events, metrics
from volguard_common.bus import BusConfig, Publisher
from volguard_common.events._base import Bucket, Side
from volguard_common.events.orders import (
    BasketLeg,
    BasketStatus,
    ExecuteBasket,
    IntentKind,
    OrderStatus,
    Structure,
    Urgency,
    client_order_id,
)
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_common.settings import Settings
from volguard_execution.adapters.paper_broker import PaperBroker
from volguard_execution.app import SPEC
from volguard_execution.domain.orders import OrderKey
from volguard_execution.ports import OrderRequest
from volguard_execution.service import running_service as running_execution


def chain(ts: datetime) -> events.ChainSnapshot:
    return sample_chain_snapshot(41, ts_event=ts)


def condor_from(snapshot: events.ChainSnapshot, basket_id: str) -> ExecuteBasket:
    """A one-lot iron condor around the money: short ±200, wings ±400, wings bought first."""
    arrays = snapshot.to_numpy()
    strikes = [float(s) for s in arrays.strike]
    atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - (snapshot.forward or snapshot.spot)))
    plan = [
        (atm + 8, "CE", Side.BUY, 0),
        (atm - 8, "PE", Side.BUY, 0),
        (atm + 4, "CE", Side.SELL, 1),
        (atm - 4, "PE", Side.SELL, 1),
    ]
    legs = []
    for index, (row, option_type, side, sequence) in enumerate(plan):
        keys = arrays.call_instrument_key if option_type == "CE" else arrays.put_instrument_key
        bids = arrays.call_bid if option_type == "CE" else arrays.put_bid
        asks = arrays.call_ask if option_type == "CE" else arrays.put_ask
        mid = (float(bids[row]) + float(asks[row])) / 2
        legs.append(
            BasketLeg(
                instrument_key=str(keys[row]),
                expiry=snapshot.expiry,
                strike=strikes[row],
                option_type=events.OptionType(option_type),
                side=side,
                quantity=snapshot.lot_size,
                limit_price=round(Decimal(str(mid)), 2),
                leg_index=index,
                sequence=sequence,
                client_order_id=client_order_id(basket_id, index, 0),
            )
        )
    return ExecuteBasket(
        ts_event=snapshot.ts_event,
        source="risk/test",
        basket_id=basket_id,
        intent_id="intent-svc",
        purpose=IntentKind.ENTRY,
        bucket=Bucket.WEEKLY,
        structure=Structure.IRON_CONDOR,
        lot_size=snapshot.lot_size,
        legs=legs,
        urgency=Urgency.URGENT,
        reason="service test",
    )


async def reports(redis: Redis, config: BusConfig) -> list[events.Event]:
    return [
        events.parse_event(fields[b"event"]) for _, fields in await redis.xrange(config.key("ex.reports"))
    ]


async def test_an_execute_basket_becomes_a_filled_paper_basket_with_its_reports(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(
        update={"database_url": fresh_database_url, "broker_health_interval_s": 0.05}
    )
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with running_service(SPEC, settings, redis):
        ts = DEFAULT_TS_EVENT
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-svc-1")
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def ended() -> events.BasketResult | None:
            nonlocal ts
            # Market data keeps coming: it is what moves exchange time on the paper exchange.
            ts += timedelta(seconds=1)
            await market.publish(chain(ts))
            found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
            return found[0] if found else None

        result = await eventually(ended, what="a BasketResult", poll_s=0.1)
        everything = await reports(redis, config)
        net: dict[str, int] = {}
        for fill in (e for e in everything if isinstance(e, events.Fill)):
            net[fill.instrument_key] = net.get(fill.instrument_key, 0) + (
                fill.quantity if fill.side is Side.BUY else -fill.quantity
            )

        async def reported() -> events.BrokerHealth | None:
            # Reconciled and quiet: the broker's positions go to risk, equal to the fills it booked.
            found = await _health(redis, config, connected=True)
            return found if found is not None and found.positions is not None and found.positions else None

        reconciled = await eventually(reported, what="a BrokerHealth with the broker's positions")
        health = await redis.xrange(config.key("ex.health"))
    assert reconciled is not None
    assert reconciled.reconciled
    assert reconciled.positions == net
    # Latency is measured, never the configured paper latency: nothing before the first order went out,
    # the submit's round trip to its ack after.
    first_health = events.parse_event(health[0][1][b"event"])
    assert isinstance(first_health, events.BrokerHealth)
    assert first_health.latency_ms is None
    assert reconciled.latency_ms is not None
    assert reconciled.latency_ms != settings.paper_latency_ms

    assert isinstance(result, events.BasketResult)
    assert result.status is BasketStatus.FILLED, result
    assert result.basket_id == basket.basket_id
    # Fill quality per leg, measured against the mid when the leg went out.
    for leg, sent in zip(result.legs, basket.legs, strict=True):
        assert leg.mid_at_submission is not None
        assert leg.avg_price is not None
        worse = leg.avg_price - leg.mid_at_submission
        assert leg.slippage == (worse if sent.side is Side.BUY else -worse).quantize(Decimal("0.0001"))
        assert leg.time_to_fill_s is not None
        assert 0 <= leg.time_to_fill_s <= settings.partial_fill_timeout_s
    observed = metrics.REGISTRY.get_sample_value(
        "volguard_execution_leg_time_to_fill_seconds_count", {"service": "execution", "urgency": "URGENT"}
    )
    assert observed is not None
    assert observed >= len(basket.legs)
    assert result.correlation_id == basket.correlation_id
    assert [leg.filled_qty for leg in result.legs] == [leg.quantity for leg in basket.legs]
    assert result.net_premium > 0  # a condor is a credit
    assert result.fees > 0
    updates = [e for e in everything if isinstance(e, events.OrderUpdate)]
    fills = [e for e in everything if isinstance(e, events.Fill)]
    assert {u.status for u in updates} >= {OrderStatus.NEW, OrderStatus.OPEN, OrderStatus.FILLED}
    assert sum(f.quantity for f in fills) == sum(leg.quantity for leg in basket.legs)
    # Hedges first: every wing was reported FILLED before the first short was even placed.
    first_short_placed = min(
        i for i, e in enumerate(everything) if isinstance(e, events.OrderUpdate) and e.side is Side.SELL
    )
    wings_filled = {
        e.leg_index
        for e in everything[:first_short_placed]
        if isinstance(e, events.OrderUpdate) and e.side is Side.BUY and e.status is OrderStatus.FILLED
    }
    assert wings_filled == {leg.leg_index for leg in basket.legs if leg.side is Side.BUY}
    assert health, "no BrokerHealth on ex.health"
    pool = await db.create_pool(settings.database_url)
    try:
        status = await pool.fetchval(
            "select status from execution.baskets where basket_id = $1", basket.basket_id
        )
        persisted_fills = await pool.fetchval("select count(*) from execution.fills")
        paper_trades = await pool.fetchval("select count(*) from execution.paper_trades")
    finally:
        await pool.close()
    assert status == "FILLED"
    assert persisted_fills == paper_trades == len(fills)


async def alerts(redis: Redis, config: BusConfig) -> list[events.Alert]:
    found = [
        events.parse_event(fields[b"event"]) for _, fields in await redis.xrange(config.key("sys.alerts"))
    ]
    return [a for a in found if isinstance(a, events.Alert)]


async def test_three_failed_health_checks_make_the_broker_unhealthy_and_recovery_is_announced(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(
        update={"database_url": fresh_database_url, "broker_health_interval_s": 0.05}
    )
    config = BusConfig.from_settings(settings)
    async with running_service(SPEC, settings, redis) as ctx:
        service = running_execution(ctx)
        assert isinstance(service.broker, PaperBroker)
        await eventually(lambda: _health(redis, config, connected=True), what="a healthy BrokerHealth")
        service.broker.faults.down = True
        unhealthy = await eventually(
            lambda: _health(redis, config, connected=False), what="an unhealthy BrokerHealth"
        )
        codes = [a.code for a in await alerts(redis, config)]
        assert codes.count("BROKER_UNHEALTHY") == 1
        assert service.health_failures >= settings.broker_unhealthy_after
        assert unhealthy is not None
        assert unhealthy.broker == "paper"
        service.broker.faults.down = False

        async def recovered() -> bool:
            return "BROKER_RECOVERED" in [a.code for a in await alerts(redis, config)]

        await eventually(recovered, what="recovery announced")
        assert not service.unhealthy


async def _health(redis: Redis, config: BusConfig, *, connected: bool) -> events.BrokerHealth | None:
    for _, fields in reversed(await redis.xrange(config.key("ex.health"))):
        event = events.parse_event(fields[b"event"])
        if isinstance(event, events.BrokerHealth) and event.connected is connected:
            return event
    return None


async def test_a_position_volguard_did_not_open_is_reported_at_start(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    # Someone traded on the account while execution was down: the paper account knows, our fills do not.
    async with running_service(SPEC, settings, redis):
        pass
    pool = await db.create_pool(settings.database_url)
    try:
        await pool.execute(
            "insert into execution.paper_trades values ('999', '1', 'manual', 'NSE_FO|40001', 'SELL', 65, "
            "12.5, true, $1)",
            DEFAULT_TS_EVENT,
        )
    finally:
        await pool.close()
    async with running_service(SPEC, settings, redis):
        found = await eventually(
            lambda: _codes(redis, config, "POSITIONS_NOT_OURS"), what="the foreign position reported"
        )
    assert found[0].details == {"NSE_FO|40001": -65}


async def _codes(redis: Redis, config: BusConfig, code: str) -> list[events.Alert]:
    return [a for a in await alerts(redis, config) if a.code == code]


async def test_flatten_all_buys_back_the_shorts_before_selling_the_wings(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with running_service(SPEC, settings, redis) as ctx:
        ts = DEFAULT_TS_EVENT
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-to-flatten")
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def results(count: int) -> list[events.BasketResult] | None:
            nonlocal ts
            ts += timedelta(seconds=1)
            await market.publish(chain(ts))
            found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
            return found if len(found) >= count else None

        await eventually(lambda: results(1), what="the condor filled", poll_s=0.1)
        await risk.publish(
            events.FlattenAll(ts_event=ts, source="risk/test", reason=events.ExitReason.KILL_SWITCH)
        )
        done = await eventually(lambda: results(2), what="the flatten basket's end", poll_s=0.1)
        positions = await running_execution(ctx).broker.positions()
    assert done is not None
    flatten = done[1]
    assert flatten.status is BasketStatus.FILLED, flatten
    assert positions == []
    updates = [
        e
        for e in await reports(redis, config)
        if isinstance(e, events.OrderUpdate) and e.basket_id == flatten.basket_id
    ]
    first_sell = min(i for i, u in enumerate(updates) if u.side is Side.SELL)
    bought_back = {u.instrument_key for u in updates[:first_sell] if u.status is OrderStatus.FILLED}
    assert bought_back == {leg.instrument_key for leg in basket.legs if leg.side is Side.SELL}


async def test_a_throttled_wing_is_sent_again_under_its_own_key_not_rejected(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with running_service(SPEC, settings, redis) as ctx:
        service = running_execution(ctx)
        assert isinstance(service.broker, PaperBroker)
        ts = DEFAULT_TS_EVENT
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-throttled")
        wing = basket.legs[0]
        # The broker refuses the wing before taking it (a 429, no connection): nothing is placed.
        service.broker.faults.refuse.add(wing.client_order_id)
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def refused_once() -> bool:
            nonlocal ts
            ts += timedelta(milliseconds=300)
            await market.publish(chain(ts))
            return any(
                isinstance(e, events.OrderUpdate)
                and e.client_order_id == wing.client_order_id
                and "refused" in e.message
                for e in await reports(redis, config)
            )

        await eventually(refused_once, what="the wing refused", poll_s=0.05)
        refused_at = len(await reports(redis, config))
        # Still refused a while longer (a persistent throttle), then the broker takes orders again.

        async def refused_again() -> bool:
            nonlocal ts
            ts += timedelta(milliseconds=300)
            await market.publish(chain(ts))
            later = (await reports(redis, config))[refused_at:]
            return any(
                isinstance(e, events.OrderUpdate) and e.client_order_id == wing.client_order_id for e in later
            )

        await eventually(refused_again, what="the wing tried again", poll_s=0.05)
        service.broker.faults.refuse.clear()

        async def ended() -> events.BasketResult | None:
            nonlocal ts
            ts += timedelta(seconds=1)
            await market.publish(chain(ts))
            found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
            return found[0] if found else None

        result = await eventually(ended, what="a BasketResult", poll_s=0.1)
        everything = await reports(redis, config)
        book = await service.broker.order_book()

    assert result.status is BasketStatus.FILLED, result
    assert result.legs[0].attempts == 1
    assert result.legs[0].client_order_id == wing.client_order_id
    updates = [e for e in everything if isinstance(e, events.OrderUpdate)]
    assert not [u for u in updates if u.status is OrderStatus.REJECTED]
    # One exchange order under the wing's key, however many times the broker refused it.
    assert len([o for o in book if o.client_order_id == wing.client_order_id]) == 1
    assert not [a for a in await alerts(redis, config) if a.code == "BASKET_LEG_REPAIR"]
    # Never a short before every wing filled.
    first_short = min(i for i, u in enumerate(updates) if u.side is Side.SELL)
    wings_filled = {
        u.leg_index for u in updates[:first_short] if u.side is Side.BUY and u.status is OrderStatus.FILLED
    }
    assert wings_filled == {leg.leg_index for leg in basket.legs if leg.side is Side.BUY}


async def test_a_basket_sent_while_not_reconciled_is_held_then_carried_out_never_dead_lettered(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url, "reconcile_interval_s": 0.1})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    pool = await db.create_pool(settings.database_url)
    try:
        async with running_service(SPEC, settings, redis) as ctx:
            service = running_execution(ctx)
            assert isinstance(service.broker, PaperBroker)
            # The broker stops answering: the periodic reconciliation cannot agree.
            service.broker.faults.down = True

            async def unreconciled() -> bool:
                return not service.reconciled

            await eventually(unreconciled, what="reconciliation failing")
            ts = DEFAULT_TS_EVENT
            first = chain(ts)
            await market.publish(first)
            basket = condor_from(first, "basket-held")
            await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

            async def held() -> bool:
                count = await pool.fetchval("select count(*) from execution.held_commands")
                return bool(count)

            await eventually(held, what="the basket held")
            # Held: acknowledged on the stream (not retried towards the dead-letter stream), not placed.
            await eventually(lambda: _stream_drained(redis, config), what="the command acknowledged")
            assert not await redis.xrange(config.key("dlq.ex.commands"))
            assert await pool.fetchval("select count(*) from execution.orders") == 0
            assert not [e for e in await reports(redis, config) if isinstance(e, events.OrderUpdate)]

            service.broker.faults.down = False

            async def ended() -> events.BasketResult | None:
                nonlocal ts
                ts += timedelta(seconds=1)
                await market.publish(chain(ts))
                found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
                return found[0] if found else None

            result = await eventually(ended, what="the held basket's result", poll_s=0.1)
        assert result.status is BasketStatus.FILLED, result
        assert result.basket_id == basket.basket_id
        assert await pool.fetchval("select count(*) from execution.held_commands") == 0
        assert not await redis.xrange(config.key("dlq.ex.commands"))
    finally:
        await pool.close()


async def _stream_drained(redis: Redis, config: BusConfig) -> bool:
    pending = await redis.xpending(config.key("ex.commands"), "execution")
    return int(pending["pending"]) == 0


async def test_flatten_all_after_a_restart_closes_what_reconciliation_found(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    ts = DEFAULT_TS_EVENT

    async def results(count: int) -> list[events.BasketResult] | None:
        nonlocal ts
        ts += timedelta(seconds=1)
        await market.publish(chain(ts))
        found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
        return found if len(found) >= count else None

    async with running_service(SPEC, settings, redis):
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-before-restart")
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))
        await eventually(lambda: results(1), what="the condor filled", poll_s=0.1)
    # A new process (a restart, or the standby taking over) knows the condor only from the books.
    async with running_service(SPEC, settings, redis) as ctx:
        service = running_execution(ctx)
        await market.publish(chain(ts))
        await risk.publish(
            events.FlattenAll(ts_event=ts, source="risk/test", reason=events.ExitReason.KILL_SWITCH)
        )
        done = await eventually(lambda: results(2), what="the flatten basket's end", poll_s=0.1)
        positions = await service.broker.positions()
    assert done is not None
    flatten = done[1]
    assert flatten.status is BasketStatus.FILLED, flatten
    assert positions == []
    assert {leg.filled_qty for leg in flatten.legs} == {basket.lot_size}


async def test_reconciliation_cancels_our_stray_working_orders_and_reports_foreign_ones(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url, "reconcile_interval_s": 0.2})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with running_service(SPEC, settings, redis) as ctx:
        service = running_execution(ctx)
        ts = DEFAULT_TS_EVENT
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-stray")
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def ended() -> bool:
            nonlocal ts
            ts += timedelta(seconds=1)
            await market.publish(chain(ts))
            return any(isinstance(e, events.BasketResult) for e in await reports(redis, config))

        await eventually(ended, what="the condor's end", poll_s=0.1)
        wing = basket.legs[0]
        # Working orders no basket works: one under a VolGuard tag (left behind), one placed by hand.
        async with service.lock:
            left_behind = await service.broker.submit(
                OrderRequest(
                    OrderKey(basket.basket_id, 0, 0, 7), wing.instrument_key, Side.BUY, 65, Decimal("0.05")
                )
            )
            by_hand = await service.broker.submit(
                OrderRequest(OrderKey("manual", 0, 0), wing.instrument_key, Side.BUY, 65, Decimal("0.05"))
            )

        async def cancelled() -> bool:
            nonlocal ts
            ts += timedelta(milliseconds=200)
            await market.publish(chain(ts))
            book = {o.broker_order_id: o for o in await service.broker.order_book()}
            return book[left_behind.broker_order_id].report.status is OrderStatus.CANCELLED

        await eventually(cancelled, what="our stray order cancelled", poll_s=0.05)
        await eventually(lambda: _codes(redis, config, "ORDERS_NOT_OURS"), what="the foreign order reported")

        async def reconciled() -> bool:
            return service.reconciled

        await eventually(reconciled, what="agreement once the stray order is gone")
        book = {o.broker_order_id: o for o in await service.broker.order_book()}
        found = await _codes(redis, config, "STRAY_ORDERS_CANCELLED")
    assert book[by_hand.broker_order_id].report.status is OrderStatus.OPEN  # not ours to cancel
    assert found
    assert found[0].details == {left_behind.broker_order_id: wing.client_order_id}


async def test_flatten_all_while_a_basket_works_leaves_its_fills_to_its_own_unwind_never_doubled(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with running_service(SPEC, settings, redis) as ctx:
        service = running_execution(ctx)
        assert isinstance(service.broker, PaperBroker)
        ts = DEFAULT_TS_EVENT
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-flattened-midway")
        shorts = [leg for leg in basket.legs if leg.side is Side.SELL]
        for leg in shorts:
            for attempt in range(3):
                # The shorts rest at the exchange and never fill: the basket is caught with its wings.
                service.broker.exchange.faults.fill_cap[
                    client_order_id(basket.basket_id, leg.leg_index, attempt)
                ] = 0
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def shorts_working() -> bool:
            nonlocal ts
            ts += timedelta(milliseconds=100)
            await market.publish(chain(ts))
            return any(
                isinstance(e, events.OrderUpdate) and e.side is Side.SELL and e.status is OrderStatus.OPEN
                for e in await reports(redis, config)
            )

        await eventually(shorts_working, what="wings filled and the shorts working", poll_s=0.05)
        await risk.publish(
            events.FlattenAll(ts_event=ts, source="risk/test", reason=events.ExitReason.KILL_SWITCH)
        )

        async def all_ended() -> bool:
            nonlocal ts
            ts += timedelta(seconds=1)
            await market.publish(chain(ts))
            results = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
            return bool(results) and all(guard.ended for guard in service.runner.guards.values())

        await eventually(all_ended, what="every basket ended", poll_s=0.1)
        positions = await service.broker.positions()
        results = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
    assert positions == []  # the wings sold once, by the basket's own unwind: nothing short
    assert [r.basket_id for r in results] == [basket.basket_id]
    assert results[0].status is BasketStatus.UNWOUND, results[0]


async def test_a_held_command_survives_a_restart_and_is_carried_out_once_the_next_process_reconciles(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url, "reconcile_interval_s": 0.1})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    ts = DEFAULT_TS_EVENT
    first = chain(ts)
    basket = condor_from(first, "basket-held-over-a-restart")
    pool = await db.create_pool(settings.database_url)
    try:
        async with running_service(SPEC, settings, redis) as ctx:
            service = running_execution(ctx)
            assert isinstance(service.broker, PaperBroker)
            service.broker.faults.down = True

            async def unreconciled() -> bool:
                return not service.reconciled

            await eventually(unreconciled, what="reconciliation failing")
            await market.publish(first)
            await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

            async def held() -> bool:
                return bool(await pool.fetchval("select count(*) from execution.held_commands"))

            await eventually(held, what="the basket held")
            await eventually(lambda: _stream_drained(redis, config), what="the command acknowledged")
        # The next process (a restart, or the standby taking over) reconciles, then releases it.
        async with running_service(SPEC, settings, redis):

            async def ended() -> events.BasketResult | None:
                nonlocal ts
                ts += timedelta(seconds=1)
                await market.publish(chain(ts))
                found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
                return found[0] if found else None

            result = await eventually(ended, what="the held basket's result", poll_s=0.1)
        assert result.status is BasketStatus.FILLED, result
        assert result.basket_id == basket.basket_id
        assert await pool.fetchval("select count(*) from execution.held_commands") == 0
        assert await pool.fetchval("select count(*) from execution.baskets") == 1
    finally:
        await pool.close()
