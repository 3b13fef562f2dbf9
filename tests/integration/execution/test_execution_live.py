"""The execution service in live mode: the same basket as the paper test, but through the Upstox order
adapter against a real fake Upstox on 127.0.0.1 (HTTP + portfolio stream), with real Redis and Postgres.
The test plays the exchange: whatever is working at the fake is filled at its limit price."""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr
from redis.asyncio import Redis

from tests.fakes.upstox_orders import running_fake_upstox_orders
from tests.fakes.upstox_server import TOKEN
from tests.integration.execution.test_execution_service import chain, condor_from, reports
from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.events._base import Bucket, Side
from volguard_common.events.orders import BasketStatus
from volguard_common.events_samples import DEFAULT_TS_EVENT
from volguard_common.settings import Settings
from volguard_execution.adapters.upstox_broker import UpstoxBroker
from volguard_execution.app import SPEC
from volguard_execution.service import running_service as running_execution


async def test_live_mode_fills_a_basket_through_the_upstox_adapter(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    with running_fake_upstox_orders() as fake:
        settings = settings.model_copy(
            update={
                "database_url": fresh_database_url,
                "mode": "live",
                "feed": "upstox",
                "upstox_access_token": SecretStr(TOKEN),
                "upstox_api_base": fake.base_url,
                "upstox_order_api_base": fake.base_url,
            }
        )
        config = BusConfig.from_settings(settings)
        market = Publisher(redis, config, service="market_data", source="market_data/test")
        risk = Publisher(redis, config, service="risk", source="risk/test")
        async with running_service(SPEC, settings, redis) as ctx:
            assert isinstance(running_execution(ctx).broker, UpstoxBroker)
            ts = DEFAULT_TS_EVENT
            first = chain(ts)
            await market.publish(first)
            basket = condor_from(first, "basket-live-1")
            await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

            async def ended() -> events.BasketResult | None:
                nonlocal ts
                ts += timedelta(seconds=1)
                await market.publish(chain(ts))
                for order in list(fake.orders.values()):
                    if order.status == "open":
                        fake.fill(order.order_id, order.quantity - order.filled_quantity, order.price)
                found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
                return found[0] if found else None

            result = await eventually(ended, what="a BasketResult", poll_s=0.1)
            everything = await reports(redis, config)

    assert isinstance(result, events.BasketResult)
    assert result.status is BasketStatus.FILLED, result
    assert [leg.filled_qty for leg in result.legs] == [leg.quantity for leg in basket.legs]
    fills = [e for e in everything if isinstance(e, events.Fill)]
    assert sum(f.quantity for f in fills) == sum(leg.quantity for leg in basket.legs)
    # One Upstox order per leg, under the leg's deterministic tag; nothing placed twice.
    assert sorted(o.tag for o in fake.orders.values()) == sorted(leg.client_order_id for leg in basket.legs)
    # Hedges first at the broker too: both wings were placed before either short.
    placed = [body["transaction_type"] for body in fake.place_bodies]
    assert placed[:2] == [Side.BUY.value, Side.BUY.value]
    # A weekly trade carries forward: Upstox product D on every order.
    assert {body["product"] for body in fake.place_bodies} == {"D"}


async def test_live_mode_places_the_intraday_buckets_trades_as_upstox_intraday_product(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    with running_fake_upstox_orders() as fake:
        settings = settings.model_copy(
            update={
                "database_url": fresh_database_url,
                "mode": "live",
                "feed": "upstox",
                "upstox_access_token": SecretStr(TOKEN),
                "upstox_api_base": fake.base_url,
                "upstox_order_api_base": fake.base_url,
            }
        )
        config = BusConfig.from_settings(settings)
        market = Publisher(redis, config, service="market_data", source="market_data/test")
        risk = Publisher(redis, config, service="risk", source="risk/test")
        async with running_service(SPEC, settings, redis) as ctx:
            assert isinstance(running_execution(ctx).broker, UpstoxBroker)
            ts = DEFAULT_TS_EVENT
            first = chain(ts)
            await market.publish(first)
            basket = condor_from(first, "basket-live-intraday").model_copy(
                update={"bucket": Bucket.INTRADAY, "ts_event": ts + timedelta(milliseconds=10)}
            )
            await risk.publish(basket)

            async def ended() -> events.BasketResult | None:
                nonlocal ts
                ts += timedelta(seconds=1)
                await market.publish(chain(ts))
                for order in list(fake.orders.values()):
                    if order.status == "open":
                        fake.fill(order.order_id, order.quantity - order.filled_quantity, order.price)
                found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
                return found[0] if found else None

            result = await eventually(ended, what="a BasketResult", poll_s=0.1)

    assert result.status is BasketStatus.FILLED, result
    # Intraday bucket: Upstox product I (squared off by the broker at the end of the day), never D.
    assert [body["product"] for body in fake.place_bodies] == ["I"] * len(basket.legs)


async def test_live_mode_persistent_429s_delay_the_wings_under_their_own_tags_never_reject_them(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    with running_fake_upstox_orders() as fake:
        settings = settings.model_copy(
            update={
                "database_url": fresh_database_url,
                "mode": "live",
                "feed": "upstox",
                "upstox_access_token": SecretStr(TOKEN),
                "upstox_api_base": fake.base_url,
                "upstox_order_api_base": fake.base_url,
            }
        )
        config = BusConfig.from_settings(settings)
        market = Publisher(redis, config, service="market_data", source="market_data/test")
        risk = Publisher(redis, config, service="risk", source="risk/test")
        async with running_service(SPEC, settings, redis) as ctx:
            broker = running_execution(ctx).broker
            assert isinstance(broker, UpstoxBroker)
            # More 429s than the adapter retries by itself: both wings' first submits are refused.
            fake.fail(
                "POST", "/v3/order/place", 429, times=2 * (broker.max_throttled_retries + 1), retry_after="0"
            )
            ts = DEFAULT_TS_EVENT
            first = chain(ts)
            await market.publish(first)
            basket = condor_from(first, "basket-live-429")
            await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

            async def ended() -> events.BasketResult | None:
                nonlocal ts
                ts += timedelta(seconds=1)
                await market.publish(chain(ts))
                for order in list(fake.orders.values()):
                    if order.status == "open":
                        fake.fill(order.order_id, order.quantity - order.filled_quantity, order.price)
                found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
                return found[0] if found else None

            result = await eventually(ended, what="a BasketResult", poll_s=0.1)
            everything = await reports(redis, config)

    assert result.status is BasketStatus.FILLED, result
    assert [leg.attempts for leg in result.legs] == [1, 1, 1, 1]
    assert not [
        e for e in everything if isinstance(e, events.OrderUpdate) and e.status is events.OrderStatus.REJECTED
    ]
    # Refused before Upstox took them, so each tag holds exactly one Upstox order.
    assert sorted(o.tag for o in fake.orders.values()) == sorted(leg.client_order_id for leg in basket.legs)
    placed = [body["transaction_type"] for body in fake.place_bodies]
    assert placed[:2] == [Side.BUY.value, Side.BUY.value]


async def test_live_mode_a_portfolio_stream_that_stays_down_makes_the_broker_unhealthy(
    redis: Redis, settings: Settings, fresh_database_url: str
) -> None:
    with running_fake_upstox_orders() as fake:
        settings = settings.model_copy(
            update={
                "database_url": fresh_database_url,
                "mode": "live",
                "feed": "upstox",
                "upstox_access_token": SecretStr(TOKEN),
                "upstox_api_base": fake.base_url,
                "upstox_order_api_base": fake.base_url,
                "broker_health_interval_s": 0.05,
            }
        )
        config = BusConfig.from_settings(settings)

        async def health(*, connected: bool) -> events.BrokerHealth | None:
            for _, fields in reversed(await redis.xrange(config.key("ex.health"))):
                found = events.parse_event(fields[b"event"])
                if isinstance(found, events.BrokerHealth):
                    return found if found.connected is connected else None
            return None

        async with running_service(SPEC, settings, redis) as ctx:
            assert isinstance(running_execution(ctx).broker, UpstoxBroker)
            await eventually(lambda: health(connected=True), what="a healthy BrokerHealth")
            # Upstox still answers every request, but the portfolio stream drops and cannot come back.
            fake.fail("GET", "/v2/feed/portfolio-stream-feed/authorize", 500, times=10_000)
            fake.drop_stream()
            unhealthy = await eventually(lambda: health(connected=False), what="an unhealthy BrokerHealth")
            raised = [
                found
                for _, fields in await redis.xrange(config.key("sys.alerts"))
                if isinstance(found := events.parse_event(fields[b"event"]), events.Alert)
            ]

    assert unhealthy is not None
    assert "stream" in unhealthy.message
    assert [a.code for a in raised].count("BROKER_UNHEALTHY") == 1
