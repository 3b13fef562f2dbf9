"""The simulated market as a `MarketSource` (ports.py): one MarketBatch per snapshot interval.

Each batch holds, in this order: a Tick for the NIFTY index ("NSE_INDEX|Nifty 50", INDEX, with the
session's open/high/low and previous close), a Tick for India VIX ("NSE_INDEX|India VIX", VIX), a
Tick for the near-month future (FUTURE), then one ChainSnapshot per listed expiry, nearest first
(stream md.chain). `ts_event` advances by `sim_snapshot_interval_s` of exchange time inside the NSE
session and jumps from the close to the next trading day's open.

Same seed, same bytes: the envelope is deterministic too. `ts_init` is the event's own exchange time
(the simulator has no wall clock to report) and `event_id` is a UUIDv7 whose millisecond field is
`ts_event` and whose random bits come from a generator seeded with the simulator's seed. So two runs
with one seed publish identical payloads — and identical event ids: do not point two same-seed runs
at one database that deduplicates on `event_id`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import numpy as np

from volguard_common import clock
from volguard_common.events import ChainSnapshot, InstrumentKind, Tick
from volguard_common.settings import Settings
from volguard_market_data.domain.sim.daily_bars import DailyBar
from volguard_market_data.domain.sim.market import (
    DayRange,
    MarketFrame,
    SimConfig,
    SimulatedMarket,
    future_instrument_key,
    future_symbol,
)
from volguard_market_data.domain.sim.quotes import TICK
from volguard_market_data.domain.sim.session import default_start
from volguard_market_data.ports import MarketBatch, Publication

SOURCE = "market_data/sim"
UNDERLYING = "NIFTY"
INDEX_KEY = "NSE_INDEX|Nifty 50"
VIX_KEY = "NSE_INDEX|India VIX"
INDEX_SYMBOL = "NIFTY"
VIX_SYMBOL = "INDIA VIX"

_EPOCH = datetime(1970, 1, 1, tzinfo=clock.IST)
_ONE_MS = timedelta(milliseconds=1)
_TICK_STREAM = Tick.STREAM
_CHAIN_STREAM = ChainSnapshot.STREAM


class DeterministicEventIds:
    """UUIDv7 ids from exchange time and a seeded generator: time-ordered, reproducible.

    Layout as in `events._base.new_event_id`: 48-bit milliseconds (of ts_event) | version 7 | a 42-bit
    counter of ids within that millisecond | 32 seeded random bits.
    """

    _BLOCK = 4096

    def __init__(self, seed: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & (2**64 - 1), 0xE1D])))
        self._tails: list[int] = []
        self._last_ms = -1
        self._counter = 0

    def next(self, ts_event: datetime) -> str:
        ms = (ts_event - _EPOCH) // _ONE_MS
        if ms > self._last_ms:
            self._last_ms = ms
            self._counter = 0
        else:
            self._counter += 1
        if not self._tails:
            self._tails = self._rng.integers(0, 2**32, self._BLOCK, dtype=np.uint64).tolist()
        tail = self._tails.pop()
        counter = self._counter
        rand_a = counter >> 30
        rand_b = ((counter & ((1 << 30) - 1)) << 32) | tail
        value = (self._last_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        return str(uuid.UUID(int=value))


def sim_config(
    settings: Settings,
    *,
    seed: int | None = None,
    start: datetime | None = None,
    scenario: str | None = None,
    now: datetime | None = None,
) -> SimConfig:
    """The simulator's configuration from Settings and overrides.

    Start: the override, else `sim_start`, else Settings' documented default (today's open if the
    market is open at `now`, else the next open; `now` defaults to the wall clock — the only place the
    simulator reads it, and only when no start is configured). An `expiry_pin` day without a configured
    start begins on the next expiry day.
    """
    chosen_scenario = settings.sim_scenario if scenario is None else scenario
    chosen_start = start if start is not None else settings.sim_start
    if chosen_start is None:
        chosen_start = default_start(now if now is not None else datetime.now(clock.IST))
        if chosen_scenario == "expiry_pin":
            day = chosen_start.date()
            while not clock.is_expiry_day(day):
                day = clock.next_trading_day(day)
            chosen_start, _ = clock.session_bounds(day)
    return SimConfig(
        seed=settings.sim_seed if seed is None else seed,
        start=clock.to_ist(chosen_start),
        scenario=chosen_scenario,
        strikes_each_side=settings.sim_strikes_each_side,
        weeklies=settings.sim_weeklies,
        interval_s=settings.sim_snapshot_interval_s,
        rate=settings.risk_free_rate,
    )


class SimSource:
    """A simulated NIFTY market (ports.MarketSource). `steps` or `end` bound it; neither = forever."""

    name = "sim"

    def __init__(
        self,
        settings: Settings,
        *,
        seed: int | None = None,
        start: datetime | None = None,
        steps: int | None = None,
        end: datetime | None = None,
        scenario: str | None = None,
        now: datetime | None = None,
        history: Sequence[DailyBar] | None = None,
    ) -> None:
        if steps is not None and steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.config = sim_config(settings, seed=seed, start=start, scenario=scenario, now=now)
        self.market = SimulatedMarket(self.config, history)
        self._ids = DeterministicEventIds(self.config.seed)
        self._remaining = steps
        self._end = None if end is None else clock.to_ist(end)
        self._closed = False

    async def batches(self) -> AsyncIterator[MarketBatch]:
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            yield batch

    def next_batch(self) -> MarketBatch | None:
        """The next batch, or None once the configured steps or end time are used up or after close()."""
        if self._closed or self._remaining == 0:
            return None
        frame = self.market.advance()
        if self._end is not None and frame.ts_event > self._end:
            self._closed = True
            return None
        if self._remaining is not None:
            self._remaining -= 1
        # The index, VIX and future ticks, and a call and a put on every listed strike.
        instruments = 3 + sum(2 * len(chain.columns.floats("strike")) for chain in frame.chains)
        return MarketBatch(
            ts_event=frame.ts_event, publications=self.publications(frame), instruments=instruments
        )

    def _tick(
        self,
        ts: datetime,
        key: str,
        symbol: str,
        kind: InstrumentKind,
        ltp: float,
        day: DayRange,
        *,
        bid: float | None = None,
        ask: float | None = None,
        bid_qty: int | None = None,
        ask_qty: int | None = None,
        volume: int | None = None,
        oi: int | None = None,
    ) -> Tick:
        """One tick with the session's OHLC; ids are drawn in call order, so the bytes stay seeded."""
        return Tick(
            event_id=self._ids.next(ts),
            ts_event=ts,
            ts_init=ts,
            source=SOURCE,
            instrument_key=key,
            symbol=symbol,
            kind=kind,
            ltp=ltp,
            bid=bid,
            ask=ask,
            bid_qty=bid_qty,
            ask_qty=ask_qty,
            volume=volume,
            oi=oi,
            day_open=day.open,
            day_high=day.high,
            day_low=day.low,
            prev_close=day.prev_close,
        )

    def publications(self, frame: MarketFrame) -> tuple[Publication, ...]:
        ts = frame.ts_event
        ids = self._ids
        future = frame.future
        ticks = (
            self._tick(ts, INDEX_KEY, INDEX_SYMBOL, InstrumentKind.INDEX, frame.spot, frame.spot_day),
            self._tick(ts, VIX_KEY, VIX_SYMBOL, InstrumentKind.VIX, frame.vix, frame.vix_day),
            self._tick(
                ts,
                future_instrument_key(future.expiry),
                future_symbol(future.expiry),
                InstrumentKind.FUTURE,
                future.ltp,
                future.day,
                bid=future.bid,
                ask=future.ask,
                bid_qty=future.bid_qty,
                ask_qty=future.ask_qty,
                volume=future.volume,
                oi=future.oi,
            ),
        )
        publications = [Publication(_TICK_STREAM, "Tick", tick.model_dump_json().encode()) for tick in ticks]
        for chain in frame.chains:
            snapshot = ChainSnapshot.model_validate(
                {
                    "event_id": ids.next(ts),
                    "ts_event": ts,
                    "ts_init": ts,
                    "source": SOURCE,
                    "underlying": UNDERLYING,
                    "expiry": chain.expiry,
                    "spot": frame.spot,
                    "forward": chain.forward,
                    "vix": frame.vix,
                    "lot_size": chain.lot_size,
                    "tick_size": TICK,
                    # Analytics knows the instant is complete when it holds this many expiries.
                    "expiries_in_set": len(frame.chains),
                    "columns": chain.columns,
                }
            )
            publications.append(
                Publication(_CHAIN_STREAM, "ChainSnapshot", snapshot.model_dump_json().encode())
            )
        return tuple(publications)

    async def close(self) -> None:
        self._closed = True
