"""Where a backtest's market comes from: the simulator, or a recorded session on disk.

Either gives market instants: every expiry's ChainSnapshot at one ts_event, in event-time order, the
unit the analytics service snapshots on. The simulator's market is market_data's own SimulatedMarket,
wrapped in events exactly as its SimSource wraps them (ticks are not needed: the engine, like the
analytics service, reads spot and VIX from the chain set).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from volguard_analytics.domain import history as hist
from volguard_backtest.domain.days import BacktestInputError, TradingDay
from volguard_common import clock
from volguard_common.events import ChainSnapshot
from volguard_common.settings import Settings
from volguard_market_data.adapters.sim_source import SOURCE, UNDERLYING, DeterministicEventIds, sim_config
from volguard_market_data.domain.sim.daily_bars import INDIA_VIX, NIFTY, DailyBar, atm_iv_bars, daily_bars
from volguard_market_data.domain.sim.market import SimulatedMarket
from volguard_market_data.domain.sim.quotes import TICK
from volguard_market_data.recording import RecordingError, check_complete, read_index, read_segment


@dataclass(frozen=True, slots=True)
class Instant:
    ts_event: datetime
    chains: tuple[ChainSnapshot, ...]  # nearest expiry first


class SimMarket:
    """The simulated market over the run's days (it jumps from each close to the next open itself)."""

    name = "sim"

    def __init__(self, settings: Settings, days: list[TradingDay], seed: int, scenario: str | None) -> None:
        self.days = days
        self.seed = seed
        self.history = daily_bars(clock.previous_trading_day(days[0].day), seed)
        config = sim_config(settings, seed=seed, start=days[0].open, scenario=scenario)
        self.interval_s = config.interval_s
        self.market = SimulatedMarket(config, self.history)
        self._ids = DeterministicEventIds(seed)

    def instants(self) -> Iterator[Instant]:
        last_close = self.days[-1].close
        while True:
            frame = self.market.advance()
            if frame.ts_event > last_close:
                return
            ts = frame.ts_event
            chains = tuple(
                ChainSnapshot.model_validate(
                    {
                        "event_id": self._ids.next(ts),
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
                        "expiries_in_set": len(frame.chains),
                        "columns": chain.columns,
                    }
                )
                for chain in frame.chains
            )
            yield Instant(ts, chains)

    def vol_history(self) -> hist.VolHistory:
        """The simulator's own past, as market_data seeds it for analytics on a fresh stack."""
        return history_from_bars(self.history)


class RecordedMarket:
    """A recorded session directory (`volguard record`): its md.chain entries, grouped by ts_event."""

    name = "recording"

    def __init__(self, directory: Path, days: list[TradingDay]) -> None:
        self.directory = directory
        self.days = days
        try:
            self.index = read_index(directory)
            check_complete(directory, self.index)
        except RecordingError as exc:
            raise BacktestInputError(f"--source {directory}: {exc}") from exc
        if self.index.first_event is None or self.index.last_event is None:
            raise BacktestInputError(f"--source {directory}: the recording holds no entries")
        first, last = clock.to_ist(self.index.first_event).date(), clock.to_ist(self.index.last_event).date()
        wanted = {d.day for d in days}
        if not any(first <= day <= last for day in wanted):
            raise BacktestInputError(
                f"--source {directory} covers {first}..{last}; none of the requested trading days is in it"
            )
        self.interval_s: float | None = None

    def instants(self) -> Iterator[Instant]:
        wanted = {d.day for d in self.days}
        pending: list[ChainSnapshot] = []
        for segment in self.index.segments:
            for entry in read_segment(self.directory, segment):
                if entry.stream != ChainSnapshot.STREAM:
                    continue
                chain = ChainSnapshot.model_validate_json(entry.payload)
                if chain.ts_event > self.days[-1].close:
                    break
                if chain.ts_event.date() not in wanted:
                    continue
                if pending and chain.ts_event != pending[0].ts_event:
                    yield _instant(pending)
                    pending = []
                pending.append(chain)
        if pending:
            yield _instant(pending)

    def vol_history(self) -> hist.VolHistory:
        # A recording carries no daily history: realised vol, GARCH and percentiles start unknown, as on
        # a stack whose market.daily_bars is empty.
        return hist.VolHistory(
            index_bars=pd.DataFrame(columns=["trade_date", "open", "high", "low", "close"])
        )


def _instant(chains: list[ChainSnapshot]) -> Instant:
    ordered = tuple(sorted(chains, key=lambda c: c.expiry))
    return Instant(ordered[0].ts_event, ordered)


def history_from_bars(bars: list[DailyBar]) -> hist.VolHistory:
    index = [b for b in bars if b.symbol == NIFTY]
    vix = [b for b in bars if b.symbol == INDIA_VIX]
    atm = atm_iv_bars(bars)
    frame = pd.DataFrame(
        {
            "trade_date": [b.trade_date for b in index],
            "open": [b.open for b in index],
            "high": [b.high for b in index],
            "low": [b.low for b in index],
            "close": [b.close for b in index],
        }
    )
    return hist.VolHistory(
        index_bars=frame,
        vix_close=pd.Series([b.close for b in vix], index=pd.to_datetime([b.trade_date for b in vix])),
        atm_iv_close=pd.Series(
            [b.close / 100.0 for b in atm], index=pd.to_datetime([b.trade_date for b in atm])
        ),
    )


def day_bar(day: date, prices: list[float]) -> tuple[float, float, float, float]:
    return prices[0], max(prices), min(prices), prices[-1]
