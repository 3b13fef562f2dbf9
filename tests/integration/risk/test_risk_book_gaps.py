"""Risk in-process on real Redis and Postgres, for what issue 16's first cut left out: positions the
broker holds that VolGuard did not open, the order budget's count of orders actually sent, the per-trade
forced exit at a trade's max loss and each bucket's performance on rk.portfolio."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from tests.integration.risk.test_risk_decisions import WEEKLY, handled, intent, leg, on_stream, publisher
from tests.support.services import running_service
from tests.support.waiting import eventually
from tests.unit.analytics.chains import CONFIG, TS, real_history, sabr_chain
from tests.unit.analytics.test_snapshot import EXPIRIES, _events
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import events
from volguard_common.settings import Settings
from volguard_risk.app import SPEC as RISK


@pytest.fixture
def risk_settings(settings: Settings, fresh_database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": fresh_database_url})


def broker_health(at: datetime, positions: dict[str, int]) -> events.BrokerHealth:
    return events.BrokerHealth(
        ts_event=at,
        source="execution/test",
        broker="paper",
        connected=True,
        latency_ms=None,
        rate_limit=events.RateLimitHeadroom(per_second=10, per_minute=500, per_30_minutes=2000),
        token_expires_at=None,
        open_orders=0,
        in_flight_unknown=0,
        reconciled=True,
        positions=positions,
    )


async def last_state(redis: Redis, settings: Settings) -> events.TradingState | None:
    states = await on_stream(redis, settings, "rk.state", events.TradingState)
    return states[-1] if states else None


async def in_state(
    redis: Redis, settings: Settings, kind: events.TradingStateKind
) -> events.TradingState | None:
    state = await last_state(redis, settings)
    return state if state is not None and state.state is kind else None


async def market_ready(redis: Redis, settings: Settings, chain: events.ChainSnapshot) -> None:
    """Reconciled on an empty book (RUNNING), with a VolSnapshot and `chain` handled."""
    await publisher(redis, settings, "execution").publish(broker_health(TS, {}))
    await eventually(
        lambda: in_state(redis, settings, events.TradingStateKind.RUNNING), what="RUNNING on an empty book"
    )
    engine = VolEngine(CONFIG, real_history(), _events())
    await publisher(redis, settings, "analytics").publish(
        engine.snapshot([sabr_chain(TS, expiry)[0] for expiry in EXPIRIES])
    )
    await publisher(redis, settings, "market_data").publish(chain)
    await eventually(lambda: handled(redis, settings, "an.vol"), what="an.vol handled")
    await eventually(lambda: handled(redis, settings, "md.chain"), what="md.chain handled")


async def decision(redis: Redis, settings: Settings, intent_id: str) -> events.RiskDecision:
    async def found() -> events.RiskDecision | None:
        decided = await on_stream(redis, settings, "rk.decisions", events.RiskDecision)
        return next((d for d in decided if d.intent_id == intent_id), None)

    verdict = await eventually(found, what=f"a decision on {intent_id}")
    assert verdict is not None
    return verdict


def check(verdict: events.RiskDecision, name: str) -> events.RiskCheck:
    return next(c for c in verdict.checks if c.name == name)


def condor(chain: events.ChainSnapshot, name: str) -> events.TradeIntent:
    forward = chain.forward
    assert forward is not None
    atm = round(forward / 50) * 50
    return intent(
        chain,
        name,
        events.Structure.IRON_CONDOR,
        [
            leg(chain, atm - 500.0, events.OptionType.PE, events.Side.BUY, 1),
            leg(chain, atm - 400.0, events.OptionType.PE, events.Side.SELL, 1),
            leg(chain, atm + 400.0, events.OptionType.CE, events.Side.SELL, 1),
            leg(chain, atm + 500.0, events.OptionType.CE, events.Side.BUY, 1),
        ],
    )


def fill_of(basket: events.ExecuteBasket, at: datetime, n: int) -> list[events.Fill]:
    return [
        events.Fill(
            ts_event=at,
            source="execution/test",
            fill_id=f"fill-{n}-{lg.leg_index}",
            client_order_id=lg.client_order_id,
            broker_order_id=f"order-{n}-{lg.leg_index}",
            basket_id=basket.basket_id,
            leg_index=lg.leg_index,
            instrument_key=lg.instrument_key,
            expiry=lg.expiry,
            strike=lg.strike,
            option_type=lg.option_type,
            side=lg.side,
            quantity=lg.quantity,
            price=lg.limit_price,
            fees=Decimal(0),
        )
        for lg in basket.legs_in_order()
    ]


async def test_an_external_position_is_adopted_counted_in_the_greeks_alerted_and_survives_a_restart(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    trade = condor(chain, "probe")
    short_put = trade.legs[1]
    execution = publisher(redis, risk_settings, "execution")
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, chain)
        # Someone sold a lot of the put by hand: the broker reports it, VolGuard never opened it.
        await execution.publish(broker_health(TS + timedelta(seconds=1), {short_put.instrument_key: -65}))

        async def external_alerts() -> list[events.Alert]:
            alerts = await on_stream(redis, risk_settings, "sys.alerts", events.Alert)
            return [a for a in alerts if a.code == "RISK_EXTERNAL_POSITIONS"]

        [alert] = await eventually(external_alerts, what="an Alert naming the EXTERNAL position")
        assert short_put.instrument_key in alert.message
        state = await eventually(
            lambda: in_state(redis, risk_settings, events.TradingStateKind.REDUCING), what="REDUCING"
        )
        assert state is not None
        assert [c.cause for c in state.causes] == [events.TradingCause.EXTERNAL_POSITIONS]

        async def adopted() -> events.PortfolioSnapshot | None:
            snapshots = await on_stream(redis, risk_settings, "rk.portfolio", events.PortfolioSnapshot)
            return next((s for s in reversed(snapshots) if s.positions), None)

        snapshot = await eventually(adopted, what="the EXTERNAL position on rk.portfolio")
        assert snapshot is not None
        assert [(p.instrument_key, p.quantity) for p in snapshot.positions] == [
            (short_put.instrument_key, -65)
        ]
        assert snapshot.reconciled  # the book now explains what the broker holds

        # The operator acknowledges; an intent buying that put back is checked on the book that holds
        # it: the short and the long cancel, so the book's delta and vega after the trade are zero.
        await publisher(redis, risk_settings, "dashboard_api").publish(
            events.Command(
                ts_event=TS + timedelta(seconds=1),
                source="cli/test",
                command=events.CommandKind.ACKNOWLEDGE,
                issued_by="test",
                reason="seen",
            )
        )
        await eventually(
            lambda: in_state(redis, risk_settings, events.TradingStateKind.RUNNING),
            what="RUNNING once acknowledged",
        )
        buy_back = intent(
            chain,
            "buy-back",
            events.Structure.CUSTOM,
            [short_put.model_copy(update={"side": events.Side.BUY})],
        )
        await publisher(redis, risk_settings, "strategy").publish(buy_back)
        verdict = await decision(redis, risk_settings, "buy-back")
        delta, vega = check(verdict, "delta"), check(verdict, "vega")
        assert delta.value is not None
        assert vega.value is not None
        assert abs(delta.value) < 1e-9
        assert abs(vega.value) < 1e-9

    async with running_service(RISK, risk_settings, redis):
        # Rebuilt from Postgres, the book agrees with the broker at once: no second adoption or Alert.
        await execution.publish(broker_health(TS + timedelta(seconds=3), {short_put.instrument_key: -65}))
        await eventually(
            lambda: in_state(redis, risk_settings, events.TradingStateKind.RUNNING),
            what="RUNNING after the restart: the restored book agrees with the broker",
        )
        assert len(await external_alerts()) == 1


def order_update(at: datetime, coid: str, slice_index: int, status: events.OrderStatus) -> events.OrderUpdate:
    return events.OrderUpdate(
        ts_event=at,
        source="execution/test",
        client_order_id=coid,
        broker_order_id=None,
        basket_id="b-earlier",
        leg_index=0,
        attempt=0,
        slice_index=slice_index,
        instrument_key="NSE_FO|put30",
        side=events.Side.SELL,
        quantity=65,
        limit_price=Decimal("10"),
        status=status,
        filled_qty=0,
        avg_price=None,
    )


async def test_the_order_budget_counts_exchange_orders_execution_sent(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, chain)
        execution = publisher(redis, risk_settings, "execution")
        # Three exchange orders went out (a second report of one is not another order; a freeze slice
        # is); one went out 40 minutes ago, outside every window.
        for update in (
            order_update(TS - timedelta(minutes=40), "vgold", 0, events.OrderStatus.OPEN),
            order_update(TS, "vga", 0, events.OrderStatus.NEW),
            order_update(TS, "vga", 0, events.OrderStatus.OPEN),
            order_update(TS, "vga", 1, events.OrderStatus.OPEN),
            order_update(TS, "vgb", 0, events.OrderStatus.REJECTED),
        ):
            await execution.publish(update)
        await eventually(lambda: handled(redis, risk_settings, "ex.reports"), what="order updates handled")
        await publisher(redis, risk_settings, "strategy").publish(condor(chain, "condor-budget"))
        budget = check(await decision(redis, risk_settings, "condor-budget"), "order_budget")
        # Four orders for the condor's legs, after the three already sent this minute.
        assert budget.value == 7
        assert "7/500 a minute, 7/2000 per 30 minutes" in budget.message


async def test_a_trade_past_its_max_loss_is_forced_out_and_its_bucket_shows_the_loss(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    execution = publisher(redis, risk_settings, "execution")
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, chain)
        entry = condor(chain, "condor-stop").model_copy(update={"max_loss": Decimal(500)})
        await publisher(redis, risk_settings, "strategy").publish(entry)
        verdict = await decision(redis, risk_settings, "condor-stop")
        assert verdict.approved, verdict.reasons
        [basket] = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
        for fill in fill_of(basket, TS + timedelta(seconds=2), 0):
            await execution.publish(fill)
        await eventually(lambda: handled(redis, risk_settings, "ex.reports"), what="entry fills booked")

        # Volatility doubles: the short strikes gain far more than the wings, the condor loses more than
        # the Rs 500 it was approved to lose, and risk closes it whole.
        shocked = sabr_chain(TS + timedelta(seconds=10), WEEKLY, atm_vol=0.30)[0]
        await publisher(redis, risk_settings, "market_data").publish(shocked)

        async def stop_exit() -> events.ExecuteBasket | None:
            baskets = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
            return next((b for b in baskets if b.exit_reason is events.ExitReason.STOP_LOSS), None)

        exit_basket = await eventually(stop_exit, what="a STOP_LOSS ExecuteBasket")
        assert exit_basket is not None
        assert exit_basket.trade_id == "tr-condor-stop"
        assert exit_basket.urgency is events.Urgency.URGENT
        closing = {(lg.instrument_key, lg.side, lg.quantity) for lg in exit_basket.legs}
        opening = {(lg.instrument_key, lg.side, lg.quantity) for lg in basket.legs}
        flip = {events.Side.BUY: events.Side.SELL, events.Side.SELL: events.Side.BUY}
        assert closing == {(key, flip[side], qty) for key, side, qty in opening}
        # Shorts are bought back first.
        assert {lg.sequence for lg in exit_basket.legs if lg.side is events.Side.BUY} == {0}

        for fill in fill_of(exit_basket, TS + timedelta(seconds=11), 1):
            await execution.publish(fill)

        async def closed() -> events.BucketState | None:
            snapshots = await on_stream(redis, risk_settings, "rk.portfolio", events.PortfolioSnapshot)
            weekly = [b for s in snapshots for b in s.buckets if b.bucket is events.Bucket.WEEKLY]
            return weekly[-1] if weekly and weekly[-1].closed_trades == 1 else None

        weekly = await eventually(closed, what="the closed trade in the weekly bucket's performance")
        assert weekly is not None
        assert weekly.open_trades == 0
        assert weekly.realised_pnl < -500
        assert weekly.win_rate == 0.0
        assert weekly.average_win is None
        assert weekly.average_loss == weekly.realised_pnl.quantize(Decimal("0.01"))
        assert weekly.capital_reserved == 0
        assert weekly.capital_used == 0
        assert weekly.roi is not None
        assert weekly.roi < 0
        # No second stop-loss basket for the same trade on a later chain.
        await publisher(redis, risk_settings, "market_data").publish(
            sabr_chain(TS + timedelta(seconds=20), WEEKLY, atm_vol=0.30)[0]
        )
        await eventually(lambda: handled(redis, risk_settings, "md.chain"), what="the later chain handled")
        stops = [
            b
            for b in await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
            if b.exit_reason is events.ExitReason.STOP_LOSS
        ]
        assert len(stops) == 1
