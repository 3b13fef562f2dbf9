"""A submit whose answer was lost, against real Redis and Postgres with the paper broker.

The broker's book may lag the exchange: a lost submit that its reads do not show yet is not a submit
that never arrived. The leg waits (never a second order that could double it) until reads over
`unknown_order_absent_after_s` have all come back empty. And when the broker later contradicts what was
concluded (the order it did not show turns up and trades), the basket ends STUCK for an operator with a
CRITICAL Alert; the process does not die on it.
"""

from __future__ import annotations

from datetime import timedelta

from redis.asyncio import Redis

from tests.integration.execution.test_execution_service import alerts, chain, condor_from, reports
from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.events._base import Side
from volguard_common.events.orders import BasketStatus, OrderStatus, client_order_id
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_common.settings import Settings
from volguard_execution.adapters.paper_broker import PaperBroker
from volguard_execution.app import SPEC
from volguard_execution.service import running_service as running_execution


async def test_a_lost_submit_the_book_does_not_show_yet_is_waited_for_not_placed_again(
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
        basket = condor_from(first, "basket-lost-late")
        wing = basket.legs[0]
        # The wing's answer is lost, the order takes 6 s to reach the exchange, and until then the
        # broker's book and history do not show it.
        service.broker.faults.lose_answer.add(wing.client_order_id)
        service.broker.faults.unlisted.add(wing.client_order_id)
        service.broker.exchange.faults.delay[wing.client_order_id] = timedelta(seconds=6)
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def unknown() -> bool:
            return any(
                isinstance(e, events.OrderUpdate)
                and e.client_order_id == wing.client_order_id
                and e.status is OrderStatus.UNKNOWN
                for e in await reports(redis, config)
            )

        await eventually(unknown, what="the wing UNKNOWN", poll_s=0.05)
        # Five seconds of exchange time with empty reads (the broker reads again every second or two).
        for _ in range(10):
            ts += timedelta(milliseconds=500)
            await market.publish(chain(ts))
        service.broker.faults.unlisted.clear()

        async def ended() -> events.BasketResult | None:
            nonlocal ts
            ts += timedelta(seconds=1)
            await market.publish(chain(ts))
            found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
            return found[0] if found else None

        result = await eventually(ended, what="a BasketResult", poll_s=0.1)
        everything = await reports(redis, config)
        book = await service.broker.order_book()

    wing_updates = [
        e for e in everything if isinstance(e, events.OrderUpdate) and e.leg_index == wing.leg_index
    ]
    assert not [u for u in wing_updates if u.attempt == 0 and u.status is OrderStatus.REJECTED], [
        (u.attempt, u.status, u.message) for u in wing_updates
    ]
    # While the first order was unknown, no other order for the wing was sent.
    arrived = min(
        i
        for i, u in enumerate(wing_updates)
        if u.attempt == 0 and u.status not in (OrderStatus.NEW, OrderStatus.UNKNOWN)
    )
    assert not [u for u in wing_updates[:arrived] if u.attempt > 0]
    assert result.status is BasketStatus.FILLED, result
    # Never doubled: what the wing holds is what risk asked for.
    fills = [e for e in everything if isinstance(e, events.Fill) and e.leg_index == wing.leg_index]
    assert sum(f.quantity for f in fills) == wing.quantity
    live = [
        o for o in book if o.instrument_key == wing.instrument_key and o.report.status is OrderStatus.OPEN
    ]
    assert not live


async def test_a_lost_submit_that_shows_up_after_it_was_given_up_ends_the_basket_stuck_not_the_process(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    # A short absent window, so the lost wing is given up before it arrives and then trades: the broker
    # contradicts a final REJECTED.
    settings = settings.model_copy(
        update={
            "database_url": fresh_database_url,
            "unknown_order_absent_after_s": 3.0,
            "broker_health_interval_s": 0.05,
        }
    )
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with running_service(SPEC, settings, redis) as ctx:
        service = running_execution(ctx)
        assert isinstance(service.broker, PaperBroker)
        ts = DEFAULT_TS_EVENT
        first = chain(ts)
        await market.publish(first)
        basket = condor_from(first, "basket-lost-contradicted")
        wing = basket.legs[0]
        assert wing.side is Side.BUY
        service.broker.faults.lose_answer.add(wing.client_order_id)
        service.broker.faults.unlisted.add(wing.client_order_id)
        service.broker.exchange.faults.delay[wing.client_order_id] = timedelta(seconds=6)
        await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

        async def given_up() -> bool:
            nonlocal ts
            ts += timedelta(milliseconds=500)
            await market.publish(chain(ts))
            return any(
                isinstance(e, events.OrderUpdate)
                and e.client_order_id == wing.client_order_id
                and e.status is OrderStatus.REJECTED
                for e in await reports(redis, config)
            )

        await eventually(given_up, what="the lost wing given up as never arrived", poll_s=0.05)
        # The market falls: the call wing's ask drops below the lost order's limit, so when it arrives it
        # trades at once.

        async def stuck() -> events.BasketResult | None:
            nonlocal ts
            ts += timedelta(seconds=1)
            await market.publish(sample_chain_snapshot(41, spot=23_700.0, ts_event=ts))
            found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
            return found[0] if found else None

        result = await eventually(stuck, what="a BasketResult", poll_s=0.1)
        # The process is still working: it keeps publishing broker health after the contradiction.
        seen = await redis.xlen(config.key("ex.health"))

        async def still_running() -> bool:
            return await redis.xlen(config.key("ex.health")) > seen

        await eventually(still_running, what="BrokerHealth after the STUCK basket")
        raised = await alerts(redis, config)

    assert result.status is BasketStatus.STUCK, result
    assert client_order_id(basket.basket_id, wing.leg_index, 0) == wing.client_order_id
    stuck_alerts = [a for a in raised if a.code == "BASKET_STUCK"]
    assert stuck_alerts
    assert stuck_alerts[0].severity is events.Severity.CRITICAL
    assert stuck_alerts[0].details == {"basket_id": basket.basket_id}
