"""The analytics process: every complete set of chain snapshots becomes one VolSnapshot on an.vol.

Event time only. The engine's index and VIX observations come from each chain set's own metadata
(spot and VIX at that ts_event) rather than from md.ticks, whose interleaving with md.chain differs
from run to run: so the output depends only on the ordered md.chain stream, and two replays of one
recorded session give identical an.vol payloads (with ts_init = ts_event in sim and replay; live runs
stamp wall time). Event ids are derived from the chain set in every mode, so a set processed twice
(a crash between publish and ack, a takeover) is published as the same event.

History (daily NIFTY and VIX bars from market.daily_bars, the daily ATM IV history of
analytics.atm_iv_daily, the events calendar) is loaded at start and again when the trading day
changes; if market_data has not seeded it yet, it is retried each minute of exchange time.
Snapshots are persisted to analytics.vol_snapshots at most once per `PERSIST_EVERY` of exchange time.

Single-active (`ServiceSpec(single_active=True)`, one lease per account): the chain-set assembler,
the IV warm starts, the VIX-spike filter and the regime tracker are state of this process, so two
replicas sharing the `analytics` group would split chain sets between them and interleave `an.vol`.
Extra replicas are hot standbys that take over when the holder's lease lapses.

ATM IV history - who writes what. Each service writes only its own schema. The series is analytics'
own measure (the 30-day constant-maturity ATM IV of its snapshots), so it lives in analytics: every
persisted snapshot upserts its day's row, and the last one of a session stands as that day's close.
Days analytics did not see come from market data: `market.daily_bars` symbol NIFTYATMIV, which
market_data fills from imported files (`volguard history import nifty_atm_iv_daily.csv`) and, on a
fresh simulated stack, from the simulator's own history (its 30-day ATM vol is VIX/100 by
construction). On each history load analytics copies the days it lacks from there through the one
reader, read_daily_bars (a close analytics measured is never overwritten; a copied day follows a
later import), so the ATM IV percentile and rank are known from the first snapshot of a fresh
stack and stay consistent with the simulated market's past.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta

import asyncpg
import pandas as pd
import structlog

from volguard_analytics.chain_sets import ChainSet, ChainSetAssembler
from volguard_analytics.domain import history as hist
from volguard_analytics.domain.calendar import EventCalendar, builtin_events, scheduled_event
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import clock, events, streams
from volguard_common.bus import Delivery
from volguard_common.daily_bars import read_daily_bars
from volguard_common.events.vol import Quality, VolSnapshot
from volguard_common.service import ServiceContext

log = structlog.get_logger("volguard.analytics")

PERSIST_EVERY = timedelta(seconds=60)
HISTORY_RETRY = timedelta(seconds=60)

NIFTY_ATM_IV = "NIFTYATMIV"  # market data's symbol for its daily ATM IV series in market.daily_bars

# Market data's ATM IV series (percent, market.daily_bars NIFTYATMIV) for the days analytics has no
# close of its own for: a row analytics measured is never overwritten, one copied from market data is
# replaced when a later import changes it.
COPY_ATM_IV_SQL = """
insert into analytics.atm_iv_daily (trade_date, atm_iv, source)
values ($1, $2, $3)
on conflict (trade_date) do update set atm_iv = excluded.atm_iv, source = excluded.source, stored_at = now()
where analytics.atm_iv_daily.source <> 'analytics'
  and (analytics.atm_iv_daily.atm_iv, analytics.atm_iv_daily.source)
      is distinct from (excluded.atm_iv, excluded.source)
"""


async def load_history(pool: asyncpg.Pool, before: date) -> hist.VolHistory | None:
    """Daily bars known before `before`; None while market.daily_bars holds no NIFTY history."""
    async with pool.acquire() as conn:
        has_market = await conn.fetchval("select to_regclass('market.daily_bars') is not null")
        if not has_market:
            return None
    market_atm_iv = await read_daily_bars(pool, NIFTY_ATM_IV, before=before, with_source=True)
    async with pool.acquire() as conn:
        if not market_atm_iv.empty:
            await conn.executemany(
                COPY_ATM_IV_SQL,
                [
                    (day.date(), close / 100.0, f"market.daily_bars:{source}")
                    for day, close, source in zip(
                        market_atm_iv.index, market_atm_iv["close"], market_atm_iv["source"], strict=True
                    )
                ],
            )
        atm = await conn.fetch(
            "select trade_date, atm_iv from analytics.atm_iv_daily where trade_date < $1 order by trade_date",
            before,
        )
    index = await read_daily_bars(pool, "NIFTY", before=before)
    if index.empty:
        return None
    bars = pd.DataFrame(
        {
            "trade_date": [ts.date() for ts in index.index],
            **{col: index[col].to_numpy() for col in ("open", "high", "low", "close")},
        }
    )
    vix_bars = await read_daily_bars(pool, "INDIAVIX", before=before)
    vix = (
        None if vix_bars.empty else pd.Series(vix_bars["close"].to_numpy(), index=vix_bars.index.rename(None))
    )
    atm_iv = (
        pd.Series([float(r["atm_iv"]) for r in atm], index=pd.to_datetime([r["trade_date"] for r in atm]))
        if atm
        else None
    )
    return hist.VolHistory(index_bars=bars, vix_close=vix, atm_iv_close=atm_iv)


async def load_calendar(pool: asyncpg.Pool, first: date, last: date) -> EventCalendar:
    """Imported calendar rows merged with the built-in RBI, Budget and expiry dates."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "select event_date, event_time, name, country, importance from analytics.event_calendar "
            "where event_date between $1 and $2",
            first,
            last,
        )
    imported = EventCalendar(
        tuple(
            scheduled_event(r["event_date"], r["event_time"] or "", r["name"], r["country"], r["importance"])
            for r in rows
        )
    )
    return imported.merged(builtin_events(first, last))


class Analytics:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.config = AnalyticsConfig.from_settings(ctx.settings)
        # Sim and replay are event-time runs: envelopes are derived, so replays compare byte for byte.
        self.deterministic = ctx.settings.feed != "upstox"
        self.assembler = ChainSetAssembler()
        self.engine: VolEngine | None = None
        self._engine_day: date | None = None
        self._history_tried: datetime | None = None
        self._last_persisted: datetime | None = None
        self.published = 0

    async def on_chain(self, event: events.Event, delivery: Delivery) -> None:
        if not isinstance(event, events.ChainSnapshot):
            raise TypeError(f"md.chain carries ChainSnapshots, got {event.type}")
        # A set counts as done only once processed: if processing fails, the entry stays pending and
        # its redelivery (or the next snapshot) hands the same set on again instead of dropping it
        # as late.
        for chain_set in self.assembler.add(event):
            await self._process(chain_set)
            self.assembler.processed(chain_set)

    async def on_tick(self, event: events.Event, delivery: Delivery) -> None:
        # Ticks are consumed (DESIGN table) but the engine reads spot and VIX from the chain set
        # itself, so that its output does not depend on how md.ticks and md.chain interleave.
        if not isinstance(event, events.Tick):
            raise TypeError(f"md.ticks carries Ticks, got {event.type}")

    async def _engine_for(self, ts: datetime) -> VolEngine:
        day = ts.date()
        retry = (
            self.engine is not None
            and self.engine.history.index_bars.empty
            and (self._history_tried is None or ts - self._history_tried >= HISTORY_RETRY)
        )
        if self.engine is None or self._engine_day != day or retry:
            self._history_tried = ts
            history = await load_history(self.ctx.pool, day)
            if history is None:
                log.warning(
                    "no NIFTY daily history yet: realised vol, GARCH and percentiles unknown", day=str(day)
                )
                history = hist.VolHistory(
                    index_bars=pd.DataFrame(columns=["trade_date", "open", "high", "low", "close"])
                )
            calendar = await load_calendar(self.ctx.pool, day - timedelta(days=7), day + timedelta(days=60))
            previous = self.engine
            self.engine = VolEngine(self.config, history, calendar, source=self.ctx.source)
            if previous is not None and previous.history is not history and self._engine_day == day:
                log.info("history reloaded", day=str(day), bars=len(history.index_bars))
            self._engine_day = day
        return self.engine

    async def _process(self, chain_set: ChainSet) -> None:
        engine = await self._engine_for(chain_set.ts_event)
        front = chain_set.snapshots[0]
        spike = engine.observe_chain_set(chain_set.snapshots)
        if spike is not None and spike.started:
            await self.ctx.publisher.alert(
                events.Severity.WARNING,
                "VIX_SPIKE",
                f"India VIX {spike.vix:.2f} is up {spike.change_pct:.1f}% within "
                f"{self.config.vix_spike_window_s:.0f}s (from {spike.window_low:.2f})",
                # The chain set whose VIX print turned the spike on.
                ts_event=front.ts_event,
                correlation_id=front.correlation_id,
                details={"vix": spike.vix, "change_pct": spike.change_pct},
            )
        # The event id is derived from the chain set in every mode (a set handled again after a crash
        # between publish and ack is the same event, deduplicated downstream); live stamps wall time.
        if self.deterministic:
            snapshot = engine.snapshot(chain_set.snapshots)
        else:
            snapshot = engine.snapshot(chain_set.snapshots, ts_init=datetime.now(front.ts_event.tzinfo))
        if not chain_set.complete:
            snapshot = _degraded(
                snapshot,
                f"chain set incomplete: {len(chain_set.snapshots)} of "
                f"{chain_set.expected or 'an unknown number of'} expiries",
            )
        await self.ctx.publisher.publish(snapshot)
        self.published += 1
        if self._last_persisted is None or snapshot.ts_event - self._last_persisted >= PERSIST_EVERY:
            await self._persist(snapshot)
            self._last_persisted = snapshot.ts_event

    async def _persist(self, snapshot: VolSnapshot) -> None:
        front = snapshot.expiries[0]
        async with self.ctx.pool.acquire() as conn:
            # Keyed by ts_event: a redelivered set rewrites the same row instead of adding one.
            await conn.execute(
                "insert into analytics.vol_snapshots "
                "(ts_event, event_id, quality, regime, atm_iv_front, vix, payload) "
                "values ($1, $2, $3, $4, $5, $6, $7::jsonb) "
                "on conflict (ts_event) do update set event_id = excluded.event_id, "
                "quality = excluded.quality, regime = excluded.regime, atm_iv_front = excluded.atm_iv_front, "
                "vix = excluded.vix, payload = excluded.payload, stored_at = now()",
                snapshot.ts_event,
                snapshot.event_id,
                snapshot.quality.value,
                snapshot.regime.regime.value,
                front.atm_iv,
                snapshot.vix,
                snapshot.model_dump_json(),
            )
            atm_iv_30d = snapshot.percentiles.atm_iv_30d
            if atm_iv_30d is not None:
                # The day's row follows the session: the last persisted snapshot's value is its close.
                await conn.execute(
                    "insert into analytics.atm_iv_daily (trade_date, atm_iv, source) "
                    "values ($1, $2, 'analytics') on conflict (trade_date) do update "
                    "set atm_iv = excluded.atm_iv, source = excluded.source, stored_at = now()",
                    snapshot.ts_event.astimezone(clock.IST).date(),
                    atm_iv_30d,
                )


def _degraded(snapshot: VolSnapshot, reason: str) -> VolSnapshot:
    quality = Quality.DEGRADED if snapshot.quality is Quality.GOOD else snapshot.quality
    # Re-validated, not model_copy: the snapshot's own rules (reasons for a non-GOOD quality) still apply.
    data = json.loads(snapshot.model_dump_json())
    data["quality"] = quality.value
    data["quality_reasons"] = [*snapshot.quality_reasons, reason]
    return VolSnapshot.model_validate_json(json.dumps(data))


def warm_up(config: AnalyticsConfig) -> None:
    """Run a throwaway engine over two small synthetic chain sets a second apart so numba compiles (or
    loads from its cache) every kernel now, before the service says it is ready: on a fresh install
    that is seconds, and on the first live snapshot it would stall the event loop, health checks
    included. The second set is solved from the first's vols, which takes kernels of its own."""
    from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot

    expiries = (date(2026, 2, 10), date(2026, 2, 17))
    empty = pd.DataFrame(columns=["trade_date", "open", "high", "low", "close"])
    engine = VolEngine(
        config, hist.VolHistory(index_bars=empty), EventCalendar(()), source="analytics/warm-up"
    )
    for ts_event in (DEFAULT_TS_EVENT, DEFAULT_TS_EVENT + timedelta(seconds=1)):
        engine.snapshot(
            [
                sample_chain_snapshot(21, expiry=expiry, ts_event=ts_event).model_copy(
                    update={"expiries_in_set": len(expiries)}
                )
                for expiry in expiries
            ]
        )


async def setup(ctx: ServiceContext) -> None:
    analytics = Analytics(ctx)
    started = datetime.now().astimezone()
    # Off the event loop: compiling takes seconds on a fresh install and health checks must answer.
    await asyncio.to_thread(warm_up, analytics.config)
    log.info("kernels ready", seconds=round((datetime.now().astimezone() - started).total_seconds(), 2))
    ctx.consumer.subscribe(streams.MD_CHAIN.name, analytics.on_chain)
    ctx.consumer.subscribe(
        streams.MD_TICKS.name, analytics.on_tick, conflate_key=lambda e: getattr(e, "instrument_key", "")
    )
