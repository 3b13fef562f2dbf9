"""The market_data process: one market (VOLGUARD_FEED=sim|replay|upstox) onto md.*.

On a first simulated start with no NIFTY history it writes two years of consistent daily NIFTY and
India VIX bars to market.daily_bars, so GARCH and IV percentiles work at once, and the simulator opens
from the last of them. A feed that fails is reported (Alert) and the process exits so the supervisor
restarts it with back-off; a replay that reaches its end simply stops publishing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import datetime

import structlog

from volguard_common import clock, events
from volguard_common.bus import BusConfig
from volguard_common.service import ServiceContext, local_calendar
from volguard_common.settings import Settings
from volguard_market_data.adapters.replay_source import ReplaySource
from volguard_market_data.adapters.sim_source import SimSource, sim_config
from volguard_market_data.domain.sim.daily_bars import NIFTY_ATM_IV, DailyBar, atm_iv_bars, daily_bars
from volguard_market_data.feed import FeedLoop
from volguard_market_data.history import write_daily_bars
from volguard_market_data.ports import MarketSource

log = structlog.get_logger("volguard.market_data")


async def seed_history(ctx: ServiceContext, start: datetime) -> list[DailyBar] | None:
    """Two years of daily bars before the simulated session, written once when there is no history.

    With NIFTY history present but no NIFTY ATM IV history (a database from before it was seeded, or
    one whose NIFTY bars were imported), the simulated market's ATM IV history is written alone, so
    analytics' ATM IV percentile and rank are known there too. It is the ATM IV of the two years the
    simulator opens from (its own, from the same seed); a measured import later replaces it."""
    async with ctx.pool.acquire() as conn:
        known = await conn.fetchval(
            "select count(*) from market.daily_bars where symbol = 'NIFTY' and trade_date < $1", start.date()
        )
        known_atm_iv = await conn.fetchval(
            "select count(*) from market.daily_bars where symbol = $1 and trade_date < $2",
            NIFTY_ATM_IV,
            start.date(),
        )
    source = f"simulator:{ctx.settings.sim_seed}"
    if known and known_atm_iv:
        log.info("daily history present; not seeding", nifty_days=known, atm_iv_days=known_atm_iv)
        return None
    bars = daily_bars(clock.previous_trading_day(start.date()), ctx.settings.sim_seed)
    if known:
        counts = await write_daily_bars(ctx.pool, atm_iv_bars(bars), source)
        log.info("NIFTY history present; seeded the simulator's ATM IV history", inserted=counts.inserted)
        return None
    # With the simulated market's own 30-day ATM IV history: market data of the simulated market,
    # which analytics seeds its ATM IV history (analytics.atm_iv_daily) from.
    counts = await write_daily_bars(ctx.pool, [*bars, *atm_iv_bars(bars)], source)
    log.info("seeded daily history for the simulator", bars=len(bars), inserted=counts.inserted)
    return bars


async def build_source(
    ctx: ServiceContext,
) -> tuple[MarketSource, events.MarketMode, bool, Callable[[datetime], events.Alert | None] | None]:
    """The configured market, its mode, and whether the feed loop publishes md.status for it."""
    settings = ctx.settings
    if settings.feed == "sim":
        start = sim_config(settings).start
        seeded = await seed_history(ctx, start)
        # The simulator opens from the seeded history; with history already present it makes its own
        # consistent two years from the same seed (the table keeps what was imported).
        return SimSource(settings, start=start, history=seeded), events.MarketMode.SIM, True, None
    if settings.feed == "replay":
        if settings.replay_dir is None:
            raise ValueError("VOLGUARD_FEED=replay needs VOLGUARD_REPLAY_DIR")
        return ReplaySource(settings.replay_dir), events.MarketMode.REPLAY, False, None
    from volguard_market_data.adapters.upstox.market_info import BrokerCalendarCheck
    from volguard_market_data.adapters.upstox.source import UpstoxSource

    source = UpstoxSource(settings)
    # The broker's holidays and timings correct the bundled calendar, checked now and once a day.
    calendar_check = BrokerCalendarCheck(
        source.http,
        ctx.publisher,
        redis=ctx.redis,
        namespace=settings.stream_namespace,
        bundled=local_calendar(settings),
    )
    ctx.tasks.append(asyncio.create_task(calendar_check.run(), name="broker-calendar"))
    await source.start()
    return source, events.MarketMode.LIVE, False, source.token_alert


def feed_loop(
    ctx: ServiceContext,
    source: MarketSource,
    mode: events.MarketMode,
    status: bool,
    token_alert: Callable[[datetime], events.Alert | None] | None,
) -> FeedLoop:
    settings: Settings = ctx.settings
    return FeedLoop(
        source,
        ctx.publisher,
        ctx.redis,
        BusConfig.from_settings(settings),
        speed=settings.speed,
        lockstep=settings.lockstep,
        lockstep_max_lag=settings.lockstep_max_lag,
        mode=mode,
        source_name=source.name,
        publish_status=status,
        token_alert=token_alert,
    )


async def run_feed(ctx: ServiceContext, loop: FeedLoop) -> None:
    try:
        stats = await loop.run()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the feed is this process's purpose: report, then exit for a restart
        log.exception("market feed failed; exiting so the supervisor restarts market_data")
        await ctx.publisher.alert(
            events.Severity.CRITICAL,
            "FEED_FAILED",
            f"{loop.source_name} feed failed: {type(exc).__name__}: {exc}",
            # A crash of this process: it happens in wall time.
            ts_event=datetime.now(clock.IST),
        )
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        log.info("market feed finished", batches=stats.batches, last_event=str(stats.last_event))


async def setup(ctx: ServiceContext) -> None:
    source, mode, status, token_alert = await build_source(ctx)
    loop = feed_loop(ctx, source, mode, status, token_alert)
    ctx.tasks.append(asyncio.create_task(run_feed(ctx, loop), name="market-feed"))
