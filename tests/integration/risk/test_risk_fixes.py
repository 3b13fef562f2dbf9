"""Risk in-process on real Redis and Postgres, for the defects issue 16's review found: an approved EXIT
reaches execution, Greeks go out on rk.portfolio, a VIX spike raises REDUCING and the day's P&L survives a
restart."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from redis.asyncio import Redis

from tests.integration.risk.test_risk_book_gaps import (
    broker_health,
    condor,
    decision,
    fill_of,
    in_state,
    last_state,
    market_ready,
)
from tests.integration.risk.test_risk_decisions import WEEKLY, handled, on_stream, publisher
from tests.support.services import running_service
from tests.support.waiting import eventually
from tests.unit.analytics.chains import CONFIG, TS, real_history, sabr_chain
from tests.unit.analytics.test_snapshot import EXPIRIES, _events
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import events, streams
from volguard_common.events.vol import VolSnapshot
from volguard_common.quant.book_greeks import book_greeks
from volguard_common.quant.stress import OptionLeg
from volguard_common.settings import Settings
from volguard_risk.app import SPEC as RISK
from volguard_risk.domain.marks import leg_markets

FLIP = {events.Side.BUY: events.Side.SELL, events.Side.SELL: events.Side.BUY}


@pytest.fixture
def risk_settings(settings: Settings, fresh_database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": fresh_database_url})


def exit_of(entry: events.TradeIntent, name: str) -> events.TradeIntent:
    """The strategy's EXIT of `entry`'s trade: every leg reversed, at the entry's prices."""
    fields = entry.model_dump(exclude={"event_id", "correlation_id"})
    # A new event (its own event id), validated as the strategy would publish it.
    return events.TradeIntent.model_validate(
        fields
        | {
            "intent_id": name,
            "kind": events.IntentKind.EXIT,
            "exit_reason": events.ExitReason.PROFIT_TARGET,
            "trade_id": f"tr-{entry.intent_id}",
            "ts_event": entry.ts_event + timedelta(seconds=5),
            "valid_until": entry.valid_until + timedelta(seconds=5),
            "legs": [lg.model_copy(update={"side": FLIP[lg.side]}) for lg in entry.legs],
            "expected_credit": -entry.expected_credit,
        }
    )


async def test_an_approved_exit_goes_to_execution_as_one_basket_on_the_open_trade(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    strategy = publisher(redis, risk_settings, "strategy")
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, chain)
        entry = condor(chain, "condor-exit")
        await strategy.publish(entry)
        assert (await decision(redis, risk_settings, "condor-exit")).approved
        [opening] = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
        for fill in fill_of(opening, TS + timedelta(seconds=2), 0):
            await publisher(redis, risk_settings, "execution").publish(fill)
        await eventually(lambda: handled(redis, risk_settings, "ex.reports"), what="entry fills booked")

        await strategy.publish(exit_of(entry, "condor-exit-pt"))
        verdict = await decision(redis, risk_settings, "condor-exit-pt")
        assert verdict.approved, verdict.reasons
        await eventually(lambda: handled(redis, risk_settings, "st.intents"), what="the EXIT handled")
        baskets = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
        [closing] = [b for b in baskets if b.intent_id == "condor-exit-pt"]
        assert closing.basket_id == verdict.basket_id == "bk-condor-exit-pt"
        assert closing.purpose is events.IntentKind.EXIT
        assert closing.trade_id == "tr-condor-exit"
        assert closing.exit_reason is events.ExitReason.PROFIT_TARGET
        opened = {(lg.instrument_key, lg.side, lg.quantity) for lg in opening.legs}
        closed = {(lg.instrument_key, lg.side, lg.quantity) for lg in closing.legs}
        assert closed == {(key, FLIP[side], qty) for key, side, qty in opened}
        # The shorts are bought back before the wings are sold.
        assert {lg.sequence for lg in closing.legs if lg.side is events.Side.BUY} == {0}
        assert {lg.sequence for lg in closing.legs if lg.side is events.Side.SELL} == {1}
        assert not await redis.exists(f"{risk_settings.stream_namespace}{streams.dlq_name('st.intents')}")
        # An exit reserves no capital and opens no trade.
        [snapshot] = (await on_stream(redis, risk_settings, "rk.portfolio", events.PortfolioSnapshot))[-1:]
        assert [t.trade_id for t in snapshot.trades] == ["tr-condor-exit"]


async def test_rk_portfolio_carries_each_trades_greeks_and_the_net_from_the_chains_vols(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, chain)
        entry = condor(chain, "condor-greeks")
        await publisher(redis, risk_settings, "strategy").publish(entry)
        assert (await decision(redis, risk_settings, "condor-greeks")).approved
        [opening] = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
        for fill in fill_of(opening, TS + timedelta(seconds=2), 0):
            await publisher(redis, risk_settings, "execution").publish(fill)

        async def booked() -> events.PortfolioSnapshot | None:
            snapshots = await on_stream(redis, risk_settings, "rk.portfolio", events.PortfolioSnapshot)
            last = snapshots[-1] if snapshots else None
            return last if last is not None and len(last.trades) == 1 and len(last.positions) == 4 else None

        snapshot = await eventually(booked, what="the condor's four legs on rk.portfolio")
        assert snapshot is not None
        [trade] = snapshot.trades
        markets = leg_markets(chain)
        spot = chain.spot
        assert spot is not None
        expected = book_greeks(
            [
                OptionLeg(
                    lg.strike,
                    markets[lg.instrument_key].t,
                    lg.option_type is events.OptionType.CE,
                    float(lg.quantity if lg.side is events.Side.BUY else -lg.quantity),
                    markets[lg.instrument_key].vol or 0.0,
                    markets[lg.instrument_key].forward or 0.0,
                )
                for lg in opening.legs
            ],
            spot,
        )
        assert trade.greeks is not None
        assert snapshot.net_greeks == trade.greeks
        for name in ("delta", "gamma", "vega", "theta"):
            assert getattr(trade.greeks, name) == pytest.approx(getattr(expected, name), rel=1e-9)
        # A short condor is short vega and gamma and earns theta.
        assert trade.greeks.vega < 0
        assert trade.greeks.gamma < 0
        assert trade.greeks.theta > 0


def vol_snapshot(seconds: int, *, vix_spike: bool) -> VolSnapshot:
    """Analytics' VolSnapshot at TS + `seconds`, its regime's VIX spike flag as given (a new event)."""
    engine = VolEngine(CONFIG, real_history(), _events())
    snapshot = engine.snapshot([sabr_chain(TS, expiry)[0] for expiry in EXPIRIES])
    fields = snapshot.model_dump(exclude={"event_id", "correlation_id"})
    fields["ts_event"] = TS + timedelta(seconds=seconds)
    fields["regime"]["vix_spike"] = vix_spike
    return VolSnapshot.model_validate(fields)


async def test_a_vix_spike_holds_reducing_until_analytics_no_longer_flags_it(
    redis: Redis, risk_settings: Settings
) -> None:
    analytics = publisher(redis, risk_settings, "analytics")
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, sabr_chain(TS, WEEKLY)[0])
        await analytics.publish(vol_snapshot(5, vix_spike=True))
        reducing = await eventually(
            lambda: in_state(redis, risk_settings, events.TradingStateKind.REDUCING),
            what="REDUCING on a spike",
        )
        assert reducing is not None
        assert [c.cause for c in reducing.causes] == [events.TradingCause.VIX_SPIKE]
        # Still spiking: nothing changes.
        await analytics.publish(vol_snapshot(6, vix_spike=True))
        await eventually(lambda: handled(redis, risk_settings, "an.vol"), what="the second spike handled")
        await analytics.publish(vol_snapshot(7, vix_spike=False))
        running = await eventually(
            lambda: in_state(redis, risk_settings, events.TradingStateKind.RUNNING),
            what="RUNNING once it ends",
        )
        assert running is not None
        assert running.causes == []
        states = await on_stream(redis, risk_settings, "rk.state", events.TradingState)
        assert [s.state for s in states[-2:]] == [
            events.TradingStateKind.REDUCING,
            events.TradingStateKind.RUNNING,
        ]


def without_bid(chain: events.ChainSnapshot, instrument_key: str) -> events.ChainSnapshot:
    """`chain` with no bid for `instrument_key`: a one-sided quote, so no mark."""
    arrays = chain.to_numpy()
    keys = [*chain.call_instrument_key, *chain.put_instrument_key]
    index = keys.index(instrument_key)
    if index < chain.n_strikes:
        arrays.call_bid[index] = np.nan
    else:
        arrays.put_bid[index - chain.n_strikes] = np.nan
    metadata = chain.model_dump(exclude={"columns", "type", "schema_version", "event_id", "correlation_id"})
    return events.ChainSnapshot.from_arrays(arrays, **metadata)


async def causes(redis: Redis, settings: Settings) -> set[events.TradingCause]:
    state = await last_state(redis, settings)
    return set() if state is None else {c.cause for c in state.causes}


async def test_the_days_pnl_and_its_stops_survive_a_restart_and_clear_on_the_next_day(
    redis: Redis, risk_settings: Settings
) -> None:
    # A soft stop low enough for the shocked condor's loss to reach it (REDUCING, no flatten).
    settings = risk_settings.model_copy(update={"soft_stop_pct": Decimal("0.01")})
    chain = sabr_chain(TS, WEEKLY)[0]
    execution = publisher(redis, settings, "execution")
    market = publisher(redis, settings, "market_data")
    async with running_service(RISK, settings, redis):
        await market_ready(redis, settings, chain)
        await publisher(redis, settings, "strategy").publish(condor(chain, "condor-day"))
        assert (await decision(redis, settings, "condor-day")).approved
        [opening] = await on_stream(redis, settings, "ex.commands", events.ExecuteBasket)
        for fill in fill_of(opening, TS + timedelta(seconds=2), 0):
            await execution.publish(fill)
        await eventually(lambda: handled(redis, settings, "ex.reports"), what="entry fills booked")
        await market.publish(sabr_chain(TS + timedelta(seconds=10), WEEKLY, atm_vol=0.30)[0])
        await eventually(
            lambda: in_state(redis, settings, events.TradingStateKind.REDUCING), what="the soft stop"
        )
        assert await causes(redis, settings) == {events.TradingCause.SOFT_STOP}
        before = (await on_stream(redis, settings, "rk.portfolio", events.PortfolioSnapshot))[-1].day_pnl
        assert before is not None
        assert before < -Decimal(200)

    held = {
        lg.instrument_key: (lg.quantity if lg.side is events.Side.BUY else -lg.quantity)
        for lg in opening.legs
    }
    short_call = next(lg.instrument_key for lg in opening.legs if lg.side is events.Side.SELL)

    async def day_pnl_after(seconds: int) -> Decimal | None:
        snapshots = await on_stream(redis, settings, "rk.portfolio", events.PortfolioSnapshot)
        last = snapshots[-1]
        return last.day_pnl if last.ts_event == TS + timedelta(seconds=seconds) else None

    async with running_service(RISK, settings, redis):
        await execution.publish(broker_health(TS + timedelta(seconds=15), held))

        async def only_the_soft_stop() -> bool:
            return await causes(redis, settings) == {events.TradingCause.SOFT_STOP}

        await eventually(only_the_soft_stop, what="reconciled after the restart, the soft stop still held")
        # The first chain after the restart leaves a short leg unmarked: the day's P&L is unknown, and
        # risk holds STALE_DATA rather than run blind to its stops.
        await market.publish(
            without_bid(sabr_chain(TS + timedelta(seconds=20), WEEKLY, atm_vol=0.30)[0], short_call)
        )

        async def stale() -> bool:
            return events.TradingCause.STALE_DATA in await causes(redis, settings)

        await eventually(stale, what="STALE_DATA while the day's P&L is unknown")
        await market.publish(sabr_chain(TS + timedelta(seconds=30), WEEKLY, atm_vol=0.30)[0])
        after = await eventually(lambda: day_pnl_after(30), what="the day's P&L once every leg is marked")
        assert after is not None
        # The loss taken before the restart still counts (only the seconds' theta moved it).
        assert abs(after - before) < abs(before) / 100
        assert await causes(redis, settings) == {events.TradingCause.SOFT_STOP}

    async with running_service(RISK, settings, redis):
        await execution.publish(broker_health(TS + timedelta(days=1), held))
        await eventually(lambda: handled(redis, settings, "ex.health"), what="broker health handled")
        # The next trading day's first chain clears yesterday's soft stop, though risk restarted overnight.
        await market.publish(sabr_chain(TS + timedelta(days=1, seconds=1), WEEKLY, atm_vol=0.30)[0])
        running = await eventually(
            lambda: in_state(redis, settings, events.TradingStateKind.RUNNING), what="the soft stop cleared"
        )
        assert running is not None
        assert running.causes == []


async def test_a_trade_past_its_expiry_is_settled_at_intrinsic_and_stays_settled_after_a_restart(
    redis: Redis, risk_settings: Settings
) -> None:
    chain = sabr_chain(TS, WEEKLY)[0]
    execution = publisher(redis, risk_settings, "execution")
    async with running_service(RISK, risk_settings, redis):
        await market_ready(redis, risk_settings, chain)
        await publisher(redis, risk_settings, "strategy").publish(condor(chain, "condor-expiry"))
        assert (await decision(redis, risk_settings, "condor-expiry")).approved
        [opening] = await on_stream(redis, risk_settings, "ex.commands", events.ExecuteBasket)
        for fill in fill_of(opening, TS + timedelta(seconds=2), 0):
            await execution.publish(fill)
        await eventually(lambda: handled(redis, risk_settings, "ex.reports"), what="entry fills booked")

        # A week on the weekly has expired with NIFTY where it was: every leg of the condor is out of
        # the money and settles at 0; the next expiry's chain is the first risk sees.
        later = TS + timedelta(days=7)
        await publisher(redis, risk_settings, "market_data").publish(sabr_chain(later, EXPIRIES[1])[0])

        async def settled() -> list[events.Alert]:
            alerts = await on_stream(redis, risk_settings, "sys.alerts", events.Alert)
            return [a for a in alerts if a.code == "RISK_EXPIRY_SETTLED"]

        alerts = await eventually(settled, what="the condor's legs settled")
        assert len(alerts) == 4
        assert all("at 0 Rs intrinsic" in a.message for a in alerts)
        snapshot = (await on_stream(redis, risk_settings, "rk.portfolio", events.PortfolioSnapshot))[-1]
        assert snapshot.ts_event == later
        assert snapshot.trades == []
        assert snapshot.positions == []
        [weekly] = [b for b in snapshot.buckets if b.bucket is events.Bucket.WEEKLY]
        assert weekly.closed_trades == 1
        assert weekly.capital_used == 0
        # The whole credit is kept, less the entry's charges (nothing expiring out of the money pays).
        assert Decimal(0) < weekly.realised_pnl < opening_credit(opening)
        assert not await redis.exists(f"{risk_settings.stream_namespace}{streams.dlq_name('md.chain')}")

    async with running_service(RISK, risk_settings, redis):
        # Rebuilt from the fills and the settlements, the book is flat as the broker's.
        reconciled_at = later + timedelta(seconds=1)
        await execution.publish(broker_health(reconciled_at, {}))

        async def reconciled_flat() -> events.TradingState | None:
            state = await in_state(redis, risk_settings, events.TradingStateKind.RUNNING)
            return state if state is not None and state.ts_event == reconciled_at else None

        running = await eventually(reconciled_flat, what="RUNNING, reconciled flat after the restart")
        assert running is not None


def opening_credit(basket: events.ExecuteBasket) -> Decimal:
    return sum(
        (lg.limit_price * lg.quantity * (1 if lg.side is events.Side.SELL else -1) for lg in basket.legs),
        Decimal(0),
    )
