"""The publishing loop: takes a source's batches and puts them on md.* at the right pace.

Three ways to pace (settings `speed`, `lockstep`):
- real time or N× real time: batch k waits until `(ts_event_k - ts_event_anchor) / speed` of wall time
  has passed since the anchor; when the market is closed between two batches (overnight, weekend) the
  anchor moves, so a simulated week does not sleep through its nights;
- as fast as possible (`speed=0`);
- lockstep: before each batch, every consumer group on the md.* streams must have at most
  `lockstep_max_lag` entries undelivered or unacknowledged, so a backtest runs exactly as fast as the
  slowest service and no snapshot is skipped. With `lockstep_max_lag` 0 it is also what makes a replay's
  sys.alerts come out in one order: market_data's alerts on a batch, then what consumers raise on it,
  then the next batch. Without lockstep the processes run at their own pace and their alerts interleave
  as they happen to (each process's own alerts keep their order).

Feed health (`md.status`) is published every `STATUS_EVERY_S` of exchange time and whenever the state
changes; a source that can go quiet (Upstox) is watched in wall time and reported STALE with an Alert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from redis.asyncio import Redis

from volguard_common import events, streams
from volguard_common.bus import BusConfig, Publisher, stream_report
from volguard_market_data.ports import MarketBatch, MarketSource

log = structlog.get_logger("volguard.market_data.feed")

# A gap in exchange time longer than this between two batches is a closed market, not a slow one.
CLOSED_MARKET_GAP = timedelta(minutes=5)
STATUS_EVERY_S = 5.0
LOCKSTEP_STREAMS = (streams.MD_TICKS.name, streams.MD_CHAIN.name, streams.MD_STATUS.name)
LOCKSTEP_POLL_S = 0.002
LOCKSTEP_LOG_EVERY_S = 10.0


@dataclass
class FeedStats:
    batches: int = 0
    publications: int = 0
    first_event: datetime | None = None
    last_event: datetime | None = None
    # Wall seconds spent waiting for consumers in lockstep.
    lockstep_wait_s: float = 0.0
    by_stream: dict[str, int] = field(default_factory=dict)


class Pacer:
    """Maps exchange time to wall time at `speed`, re-anchoring across closed-market gaps."""

    def __init__(self, speed: float) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.speed = speed
        self._anchor_event: datetime | None = None
        self._anchor_wall = 0.0
        self._last_event: datetime | None = None
        # Wall time (monotonic) the latest batch was due at; None when unpaced.
        self.last_due: float | None = None

    def delay(self, ts_event: datetime, now_wall: float) -> float:
        """Seconds to wait before publishing a batch stamped `ts_event` (0 when due or unpaced)."""
        if self.speed == 0:
            self.last_due = None
            return 0.0
        if (
            self._anchor_event is None
            or self._last_event is None
            or ts_event - self._last_event > CLOSED_MARKET_GAP
        ):
            self._anchor_event = ts_event
            self._anchor_wall = now_wall
        self._last_event = ts_event
        due = self._anchor_wall + (ts_event - self._anchor_event).total_seconds() / self.speed
        self.last_due = due
        return max(0.0, due - now_wall)

    def lag_ms(self, now_wall: float) -> float | None:
        """How far (wall ms) publishing at `now_wall` runs behind the latest batch's due time; None when
        unpaced, where exchange time has no wall time to be behind."""
        if self.last_due is None:
            return None
        return max(0.0, (now_wall - self.last_due) * 1000.0)


class FeedLoop:
    def __init__(
        self,
        source: MarketSource,
        publisher: Publisher,
        redis: Redis,
        config: BusConfig,
        *,
        speed: float,
        lockstep: bool,
        lockstep_max_lag: int,
        mode: events.MarketMode,
        source_name: str,
        publish_status: bool = True,
        token_alert: Callable[[datetime], events.Alert | None] | None = None,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.redis = redis
        self.config = config
        self.pacer = Pacer(speed)
        self.lockstep = lockstep
        self.lockstep_max_lag = lockstep_max_lag
        self.mode = mode
        self.source_name = source_name
        # Off for replay: the recording holds its own md.status, and a replay adds nothing.
        self.publish_status = publish_status
        # Live sources say when their credentials run out (Upstox: 03:30 IST); alerted on each change.
        self.token_alert = token_alert
        self._token_code: str | None = None
        self._feed_state: events.FeedState | None = None
        self.stats = FeedStats()
        self._last_status_event: datetime | None = None

    async def run(self) -> FeedStats:
        """Publish every batch of the source; returns when the source ends."""
        log.info(
            "feed started",
            source=self.source_name,
            speed=self.pacer.speed,
            lockstep=self.lockstep,
            max_lag=self.lockstep_max_lag,
        )
        try:
            async for batch in self.source.batches():
                await self._publish(batch)
        finally:
            await self.source.close()
        log.info(
            "feed ended",
            source=self.source_name,
            batches=self.stats.batches,
            publications=self.stats.publications,
            first_event=str(self.stats.first_event),
            last_event=str(self.stats.last_event),
        )
        return self.stats

    async def _publish(self, batch: MarketBatch) -> None:
        delay = self.pacer.delay(batch.ts_event, time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)
        if self.lockstep:
            await self.wait_for_consumers()
        # A batch's own alerts (its recorded feed status turning stale, the token) go out before the
        # batch: every alert a consumer raises on the batch comes after them, and in lockstep before the
        # next batch, so sys.alerts holds the same alerts in the same order on every replay.
        await self._watch_health(batch)
        publications = [(p.stream, p.payload, p.event_type) for p in batch.publications]
        if self.publish_status and self._status_due(batch):
            status = self._status(batch.ts_event, batch.instruments)
            publications.append((streams.MD_STATUS.name, status.model_dump_json().encode(), status.type))
        if publications:
            await self.publisher.publish_many(publications)
        stats = self.stats
        stats.batches += 1
        stats.publications += len(publications)
        stats.first_event = stats.first_event or batch.ts_event
        stats.last_event = batch.ts_event
        for stream, _, _ in publications:
            stats.by_stream[stream] = stats.by_stream.get(stream, 0) + 1

    async def _watch_health(self, batch: MarketBatch) -> None:
        """Alert once per change: a source's own md.status turning stale/degraded/back, token expiry."""
        for publication in batch.publications:
            if publication.stream == streams.MD_STATUS.name:
                status = events.parse_event(publication.payload)
                if isinstance(status, events.FeedStatus):
                    await self._on_feed_state(status)
        if self.token_alert is not None:
            alert = self.token_alert(batch.ts_event)
            code = None if alert is None else alert.code
            if code != self._token_code:
                self._token_code = code
                if alert is not None:
                    await self.publisher.publish(alert)

    async def _on_feed_state(self, status: events.FeedStatus) -> None:
        previous, state = self._feed_state, status.state
        self._feed_state = state
        if state is previous:
            return
        details: dict[str, str | int | float | bool | None] = {
            "feed": status.feed,
            "state": state.value,
            "previous": None if previous is None else previous.value,
            "last_tick_at": None if status.last_tick_at is None else status.last_tick_at.isoformat(),
            "lag_ms": status.lag_ms,
        }
        bad = (events.FeedState.STALE, events.FeedState.DISCONNECTED)
        if state in bad:
            await self.publisher.alert(
                events.Severity.CRITICAL,
                f"FEED_{state.value}",
                f"{status.feed} feed is {state.value.lower()} (last tick {details['last_tick_at']}): "
                f"risk stops new entries until it recovers. {status.message}".strip(),
                ts_event=status.ts_event,
                correlation_id=status.correlation_id,
                details=details,
            )
        elif state is events.FeedState.DEGRADED:
            await self.publisher.alert(
                events.Severity.WARNING,
                "FEED_DEGRADED",
                f"{status.feed} feed degraded: {status.message}",
                ts_event=status.ts_event,
                correlation_id=status.correlation_id,
                details=details,
            )
        elif previous is not None:
            await self.publisher.alert(
                events.Severity.INFO,
                "FEED_RECOVERED",
                f"{status.feed} feed is {state.value.lower()} again",
                ts_event=status.ts_event,
                correlation_id=status.correlation_id,
                details=details,
            )

    def _status_due(self, batch: MarketBatch) -> bool:
        # Sources that judge their own health (Upstox) publish FeedStatus themselves.
        if any(p.stream == streams.MD_STATUS.name for p in batch.publications):
            self._last_status_event = batch.ts_event
            return False
        last = self._last_status_event
        if last is None or (batch.ts_event - last).total_seconds() >= STATUS_EVERY_S:
            self._last_status_event = batch.ts_event
            return True
        return False

    def _status(self, ts_event: datetime, instruments: int | None) -> events.FeedStatus:
        return events.FeedStatus(
            ts_event=ts_event,
            source=self.publisher.source,
            feed=self.source_name,
            mode=self.mode,
            # An in-process source has no connection to lose: it is connected while it yields batches.
            state=events.FeedState.CONNECTED,
            last_tick_at=ts_event,
            lag_ms=self.pacer.lag_ms(time.monotonic()),
            subscribed_instruments=instruments,
            message=f"{self.source_name} at {self.pacer.speed:g}x"
            + (" in lockstep" if self.lockstep else ""),
        )

    async def consumer_backlog(self) -> dict[tuple[str, str], int]:
        """(stream, group) → entries not yet delivered plus delivered but not acknowledged."""
        backlog: dict[tuple[str, str], int] = {}
        for stream in LOCKSTEP_STREAMS:
            report = await stream_report(self.redis, self.config, stream)
            for group in report.groups:
                if group.lag is not None:
                    undelivered = group.lag
                elif report.last_id is not None and group.last_delivered_id == report.last_id:
                    undelivered = 0
                else:
                    # Redis cannot count the lag (entries trimmed past the group): assume behind.
                    undelivered = self.lockstep_max_lag + 1
                backlog[(stream, group.group)] = undelivered + group.pending
        return backlog

    async def wait_for_consumers(self) -> None:
        started = time.monotonic()
        last_log = started
        while True:
            backlog = await self.consumer_backlog()
            behind = {key: n for key, n in backlog.items() if n > self.lockstep_max_lag}
            if not behind:
                break
            now = time.monotonic()
            if now - last_log >= LOCKSTEP_LOG_EVERY_S:
                last_log = now
                log.warning(
                    "lockstep: waiting for consumers",
                    behind={f"{stream}/{group}": n for (stream, group), n in behind.items()},
                    waited_s=round(now - started, 1),
                )
            await asyncio.sleep(LOCKSTEP_POLL_S)
        self.stats.lockstep_wait_s += time.monotonic() - started
