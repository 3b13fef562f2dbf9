"""SimSource: batch layout, exchange-time stepping across the close, bounds, determinism, publishing."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import pytest
from redis.asyncio import Redis

from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST
from volguard_common.settings import Settings
from volguard_market_data.adapters.sim_source import INDEX_KEY, SOURCE, VIX_KEY, SimSource
from volguard_market_data.domain.sim.daily_bars import NIFTY, daily_bars
from volguard_market_data.ports import MarketBatch

START = datetime(2026, 12, 2, 9, 15, tzinfo=IST)


def collect(source: SimSource) -> list[MarketBatch]:
    out = []
    while (batch := source.next_batch()) is not None:
        out.append(batch)
    return out


def test_a_batch_holds_three_ticks_then_one_chain_per_expiry() -> None:
    source = SimSource(Settings(), seed=5, start=START, steps=2)
    batch = collect(source)[0]
    parsed = [events.parse_event(p.payload) for p in batch.publications]
    assert [p.stream for p in batch.publications] == ["md.ticks"] * 3 + ["md.chain"] * 6
    index, vix, future = parsed[:3]
    assert isinstance(index, events.Tick)
    assert index.kind == events.InstrumentKind.INDEX
    assert index.instrument_key == INDEX_KEY
    assert index.day_open == index.ltp
    assert index.prev_close is not None
    assert isinstance(vix, events.Tick)
    assert vix.kind == events.InstrumentKind.VIX
    assert vix.instrument_key == VIX_KEY
    assert isinstance(future, events.Tick)
    assert future.kind == events.InstrumentKind.FUTURE
    assert future.symbol == "NIFTY26DECFUT"
    assert future.bid is not None
    assert future.ask is not None
    assert future.bid < future.ltp < future.ask
    chains = parsed[3:]
    assert all(isinstance(c, events.ChainSnapshot) for c in chains)
    assert [c.expiry for c in chains if isinstance(c, events.ChainSnapshot)] == sorted(
        c.expiry for c in chains if isinstance(c, events.ChainSnapshot)
    )
    for event, publication in zip(parsed, batch.publications, strict=True):
        assert event.source == SOURCE
        assert event.ts_event == START == batch.ts_event
        assert publication.event_type == event.type
    ids = [uuid.UUID(e.event_id) for e in parsed]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_exchange_time_steps_by_the_interval_and_crosses_to_the_next_open() -> None:
    settings = Settings(sim_snapshot_interval_s=2.0)
    source = SimSource(settings, seed=5, start=datetime(2026, 12, 4, 15, 39, 54, tzinfo=IST), steps=5)
    times = [b.ts_event for b in collect(source)]
    # Snapshots sit on a grid anchored at the open; Friday 4 Dec 2026 closes at 15:40 (the F&O close
    # from 3 Aug 2026) and the next session is Monday 7 Dec at 09:15.
    assert times == [
        datetime(2026, 12, 4, 15, 39, 54, tzinfo=IST),
        datetime(2026, 12, 4, 15, 39, 56, tzinfo=IST),
        datetime(2026, 12, 4, 15, 39, 58, tzinfo=IST),
        datetime(2026, 12, 7, 9, 15, tzinfo=IST),
        datetime(2026, 12, 7, 9, 15, 2, tzinfo=IST),
    ]
    friday_close = source.market.sessions_opened
    assert friday_close == [date(2026, 12, 4), date(2026, 12, 7)]


def test_the_simulated_day_ends_at_the_dated_close() -> None:
    # Friday 31 July 2026 still closes at 15:30; the next session (Monday 3 August) runs to 15:40.
    settings = Settings(sim_snapshot_interval_s=2.0)
    july = SimSource(settings, seed=5, start=datetime(2026, 7, 31, 15, 29, 56, tzinfo=IST), steps=3)
    assert [b.ts_event for b in collect(july)] == [
        datetime(2026, 7, 31, 15, 29, 56, tzinfo=IST),
        datetime(2026, 7, 31, 15, 29, 58, tzinfo=IST),
        datetime(2026, 8, 3, 9, 15, tzinfo=IST),
    ]
    august = SimSource(settings, seed=5, start=datetime(2026, 8, 3, 15, 29, 58, tzinfo=IST), steps=2)
    assert [b.ts_event for b in collect(august)] == [
        datetime(2026, 8, 3, 15, 29, 58, tzinfo=IST),
        datetime(2026, 8, 3, 15, 30, tzinfo=IST),
    ]
    last_of_day = SimSource(settings, seed=5, start=datetime(2026, 8, 3, 15, 39, 58, tzinfo=IST), steps=2)
    assert [b.ts_event for b in collect(last_of_day)] == [
        datetime(2026, 8, 3, 15, 39, 58, tzinfo=IST),
        datetime(2026, 8, 4, 9, 15, tzinfo=IST),
    ]


def test_monday_opens_from_friday_close() -> None:
    source = SimSource(Settings(), seed=5, start=datetime(2026, 12, 4, 15, 39, 59, tzinfo=IST), steps=2)
    friday, monday = (events.parse_event(b.publications[0].payload) for b in collect(source))
    assert isinstance(friday, events.Tick)
    assert isinstance(monday, events.Tick)
    assert monday.prev_close == friday.ltp
    assert monday.day_open != friday.ltp  # overnight gap


def test_end_time_bounds_the_source() -> None:
    source = SimSource(Settings(), seed=5, start=START, end=datetime(2026, 12, 2, 9, 15, 9, tzinfo=IST))
    assert len(collect(source)) == 10


def test_same_seed_same_bytes_other_seed_other_market() -> None:
    first = [
        p.payload
        for b in collect(SimSource(Settings(), seed=42, start=START, steps=30))
        for p in b.publications
    ]
    again = [
        p.payload
        for b in collect(SimSource(Settings(), seed=42, start=START, steps=30))
        for p in b.publications
    ]
    other = [
        p.payload
        for b in collect(SimSource(Settings(), seed=43, start=START, steps=30))
        for p in b.publications
    ]
    assert first == again
    assert first[0] != other[0]


def test_first_session_continues_the_daily_history() -> None:
    source = SimSource(Settings(), seed=8, start=START, steps=1)
    index = events.parse_event(collect(source)[0].publications[0].payload)
    history = [bar for bar in daily_bars(date(2026, 12, 1), seed=8) if bar.symbol == NIFTY]
    assert isinstance(index, events.Tick)
    assert index.prev_close == history[-1].close


def test_expiry_pin_without_a_start_begins_on_the_next_expiry_day() -> None:
    source = SimSource(
        Settings(sim_scenario="expiry_pin"), seed=1, steps=1, now=datetime(2026, 12, 2, 20, 0, tzinfo=IST)
    )
    assert source.config.start == datetime(2026, 12, 8, 9, 15, tzinfo=IST)


async def test_batches_publish_through_the_bus(redis: Redis, settings: Settings, namespace: str) -> None:
    publisher = Publisher(redis, BusConfig.from_settings(settings), service="market_data", source=SOURCE)
    source = SimSource(settings, seed=3, start=START, steps=4)
    published = 0
    async for batch in source.batches():
        ids = await publisher.publish_many([(p.stream, p.payload, p.event_type) for p in batch.publications])
        published += len(ids)
    await source.close()
    assert published == 4 * 9
    assert await redis.xlen(f"{namespace}md.chain") == 4 * 6
    assert await redis.xlen(f"{namespace}md.ticks") == 4 * 3
    entries = await redis.xrange(f"{namespace}md.chain", count=1)
    snapshot = events.parse_event(entries[0][1][b"event"])
    assert isinstance(snapshot, events.ChainSnapshot)
    assert snapshot.n_strikes == 121


def test_negative_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="steps must be >= 0"):
        SimSource(Settings(), start=START, steps=-1)
