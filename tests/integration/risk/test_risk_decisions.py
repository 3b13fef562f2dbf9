"""Risk in-process on real market events: a reconciled book, a chain and a VolSnapshot, then an intent
that fits is approved as one basket and one that breaches the vega limit is rejected with the numbers;
a fill moves the book and goes out on rk.portfolio."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from tests.unit.analytics.chains import CONFIG, TS, real_history, sabr_chain
from tests.unit.analytics.test_snapshot import EXPIRIES, _events
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings
from volguard_risk.app import SPEC as RISK
from volguard_risk.domain.marks import leg_markets

E = TypeVar("E", bound=events.Event)
WEEKLY = EXPIRIES[0]


@pytest.fixture
def risk_settings(settings: Settings, fresh_database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": fresh_database_url})


async def on_stream(redis: Redis, settings: Settings, stream: str, kind: type[E]) -> list[E]:
    entries = await redis.xrange(f"{settings.stream_namespace}{stream}")
    found = [events.parse_event(fields[b"event"]) for _, fields in entries]
    return [e for e in found if isinstance(e, kind)]


def publisher(redis: Redis, settings: Settings, service: str) -> Publisher:
    return Publisher(redis, BusConfig.from_settings(settings), service=service, source=f"{service}/test")


def leg(
    chain: events.ChainSnapshot, strike: float, kind: events.OptionType, side: events.Side, lots: int
) -> events.OrderLeg:
    index = [float(k) for k in chain.strike].index(strike)
    key = (chain.call_instrument_key if kind is events.OptionType.CE else chain.put_instrument_key)[index]
    return events.OrderLeg(
        instrument_key=key,
        expiry=chain.expiry,
        strike=strike,
        option_type=kind,
        side=side,
        quantity=lots * chain.lot_size,
        limit_price=leg_markets(chain)[key].mid,
    )


def intent(
    chain: events.ChainSnapshot, name: str, structure: events.Structure, legs: Sequence[events.OrderLeg]
) -> events.TradeIntent:
    credit = sum(
        (lg.limit_price * lg.quantity * (1 if lg.side is events.Side.SELL else -1) for lg in legs), Decimal(0)
    )
    return events.TradeIntent(
        ts_event=TS + timedelta(seconds=1),
        source="strategy/test",
        intent_id=name,
        kind=events.IntentKind.ENTRY,
        bucket=events.Bucket.WEEKLY,
        structure=structure,
        lot_size=chain.lot_size,
        legs=list(legs),
        expected_credit=credit,
        max_loss=None,
        valid_until=TS + timedelta(seconds=30),
        reason="test",
    )


async def handled(redis: Redis, settings: Settings, stream: str) -> bool:
    groups = {g["name"].decode(): g for g in await redis.xinfo_groups(f"{settings.stream_namespace}{stream}")}
    group = groups.get("risk")
    return group is not None and group["pending"] == 0 and group["lag"] == 0


async def test_a_condor_is_approved_as_one_basket_and_a_vega_breach_is_rejected_with_the_numbers(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    engine = VolEngine(CONFIG, real_history(), _events())
    vol = engine.snapshot([sabr_chain(TS, expiry)[0] for expiry in EXPIRIES])
    execution = publisher(redis, risk_settings, "execution")
    market = publisher(redis, risk_settings, "market_data")
    async with running_service(RISK, risk_settings, redis):
        await execution.publish(
            events.BrokerHealth(
                ts_event=TS,
                source="execution/test",
                broker="paper",
                connected=True,
                latency_ms=None,
                rate_limit=events.RateLimitHeadroom(per_second=10, per_minute=500, per_30_minutes=2000),
                token_expires_at=None,
                open_orders=0,
                in_flight_unknown=0,
                reconciled=True,
                positions={},
            )
        )

        async def running() -> bool:
            states = await on_stream(redis, risk_settings, "rk.state", events.TradingState)
            return bool(states) and states[-1].state is events.TradingStateKind.RUNNING

        await eventually(running, what="RUNNING once the empty book agrees with execution's")
        await publisher(redis, risk_settings, "analytics").publish(vol)
        await market.publish(chain)
        await eventually(lambda: handled(redis, risk_settings, "an.vol"), what="an.vol handled")
        await eventually(lambda: handled(redis, risk_settings, "md.chain"), what="md.chain handled")

        forward = chain.forward
        assert forward is not None
        atm = round(forward / 50) * 50
        condor = intent(
            chain,
            "condor-1",
            events.Structure.IRON_CONDOR,
            [
                leg(chain, atm - 500.0, events.OptionType.PE, events.Side.BUY, 1),
                leg(chain, atm - 400.0, events.OptionType.PE, events.Side.SELL, 1),
                leg(chain, atm + 400.0, events.OptionType.CE, events.Side.SELL, 1),
                leg(chain, atm + 500.0, events.OptionType.CE, events.Side.BUY, 1),
            ],
        )
        strangle = intent(
            chain,
            "strangle-20",
            events.Structure.STRANGLE,
            [
                leg(chain, atm - 200.0, events.OptionType.PE, events.Side.SELL, 20),
                leg(chain, atm + 200.0, events.OptionType.CE, events.Side.SELL, 20),
            ],
        )
        strategy = publisher(redis, risk_settings, "strategy")
        await strategy.publish(condor)
        await strategy.publish(strangle)

        async def decided() -> list[events.RiskDecision] | None:
            found = await on_stream(redis, risk_settings, "rk.decisions", events.RiskDecision)
            return found if len(found) == 2 else None

        approved, rejected = await eventually(decided, what="both intents decided")
        assert approved.approved, approved.reasons
        baskets = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
        assert [b.basket_id for b in baskets] == [approved.basket_id]
        assert not rejected.approved
        vega = next(c for c in rejected.checks if c.name == "vega")
        assert vega.value is not None
        assert vega.limit == 1000.0
        assert abs(vega.value) > vega.limit

        basket = baskets[0]
        first = basket.legs_in_order()[0]
        await execution.publish(
            events.Fill(
                ts_event=TS + timedelta(seconds=2),
                source="execution/test",
                fill_id="fill-1",
                client_order_id=first.client_order_id,
                broker_order_id="order-1",
                basket_id=basket.basket_id,
                leg_index=first.leg_index,
                instrument_key=first.instrument_key,
                expiry=first.expiry,
                strike=first.strike,
                option_type=first.option_type,
                side=first.side,
                quantity=first.quantity,
                price=first.limit_price,
                fees=Decimal(0),
            )
        )

        async def booked() -> events.PortfolioSnapshot | None:
            snapshots = await on_stream(redis, risk_settings, "rk.portfolio", events.PortfolioSnapshot)
            with_fill = [s for s in snapshots if s.positions]
            return with_fill[-1] if with_fill else None

        snapshot = await eventually(booked, what="the fill on rk.portfolio")
        assert [(p.instrument_key, p.quantity) for p in snapshot.positions] == [
            (first.instrument_key, first.quantity)
        ]
