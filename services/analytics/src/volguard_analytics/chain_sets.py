"""Gathers the ChainSnapshots of one instant (one per expiry) into the set analytics works on.

market_data publishes every expiry of an instant together and says how many (`expiries_in_set`), so
a set is complete as soon as the last expiry arrives: no waiting for the next instant (which would
deadlock a lockstep backtest and never close the last instant of a session). A set overtaken by a
later instant before it completed is handed on marked incomplete, never silently dropped; a
snapshot older than the newest set processed is late and ignored. A redelivered snapshot replaces
its earlier copy instead of being counted twice.

A set handed on is not done until the caller says it was processed (`processed`): a set whose
processing failed (a transient database error, say) stays ready and is handed on again with the next
snapshot, including the redelivery of the snapshot that completed it. Only a processed set moves the
"late" mark, so a redelivery after a failure is processed, not dropped as late. A set that fails
`max_attempts` times is abandoned (logged and counted), so one poison set cannot hold back every
later instant: its entry goes to the DLQ through the bus's own delivery limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import structlog

from volguard_common import events

log = structlog.get_logger("volguard.analytics.chain_sets")

DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class ChainSet:
    ts_event: datetime
    snapshots: tuple[events.ChainSnapshot, ...]  # sorted by expiry
    complete: bool
    expected: int | None

    @property
    def expiries(self) -> tuple[date, ...]:
        return tuple(s.expiry for s in self.snapshots)


@dataclass
class _Pending:
    ts_event: datetime
    expected: int | None
    by_expiry: dict[date, events.ChainSnapshot] = field(default_factory=dict)
    # Set when the set was handed on (complete, or overtaken); then it waits for `processed`.
    complete: bool | None = None
    attempts: int = 0

    def chain_set(self) -> ChainSet:
        snapshots = tuple(self.by_expiry[e] for e in sorted(self.by_expiry))
        return ChainSet(self.ts_event, snapshots, bool(self.complete), self.expected)


class ChainSetAssembler:
    def __init__(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._max_attempts = max_attempts
        self._pending: _Pending | None = None
        # Sets handed on and not yet processed, oldest first.
        self._ready: list[_Pending] = []
        self._newest_done: datetime | None = None
        self.late_dropped = 0
        self.abandoned = 0

    def add(self, snapshot: events.ChainSnapshot) -> list[ChainSet]:
        """Take one snapshot; return every set ready to process (earlier unprocessed ones first),
        oldest first. Call `processed` with each set once it is published."""
        ts = snapshot.ts_event
        if self._newest_done is not None and ts <= self._newest_done:
            self._late(snapshot)
            return self._hand_on()
        waiting = next((ready for ready in self._ready if ready.ts_event == ts), None)
        if waiting is not None:
            # A redelivery of a snapshot of a set that is ready but not yet processed.
            waiting.by_expiry[snapshot.expiry] = snapshot
            return self._hand_on()
        if self._ready and ts < self._ready[-1].ts_event:
            self._late(snapshot)
            return self._hand_on()
        pending = self._pending
        if pending is not None and ts != pending.ts_event:
            if ts < pending.ts_event:
                self._late(snapshot)
                return self._hand_on()
            self._close(pending, complete=False)
            pending = None
        if pending is None:
            pending = self._pending = _Pending(ts, snapshot.expiries_in_set)
        pending.by_expiry[snapshot.expiry] = snapshot
        if pending.expected is not None and len(pending.by_expiry) >= pending.expected:
            self._close(pending, complete=True)
        return self._hand_on()

    def processed(self, chain_set: ChainSet) -> None:
        """`chain_set` was processed: it, and anything at or before its instant, is done."""
        ts = chain_set.ts_event
        self._ready = [ready for ready in self._ready if ready.ts_event > ts]
        if self._newest_done is None or ts > self._newest_done:
            self._newest_done = ts

    def flush(self) -> list[ChainSet]:
        """Hand on what is pending (end of a replay, or shutdown) with what is still unprocessed."""
        if self._pending is not None:
            self._close(self._pending, complete=False)
        return self._hand_on()

    def _hand_on(self) -> list[ChainSet]:
        sets = []
        for ready in list(self._ready):
            if ready.attempts >= self._max_attempts:
                self._ready.remove(ready)
                self.abandoned += 1
                log.error(
                    "chain set abandoned: its processing failed on every attempt",
                    ts_event=ready.ts_event.isoformat(),
                    attempts=ready.attempts,
                )
                continue
            ready.attempts += 1
            sets.append(ready.chain_set())
        return sets

    def _late(self, snapshot: events.ChainSnapshot) -> None:
        self.late_dropped += 1
        log.warning(
            "late chain snapshot ignored",
            ts_event=snapshot.ts_event.isoformat(),
            expiry=snapshot.expiry.isoformat(),
            newest_done=self._newest_done.isoformat() if self._newest_done is not None else None,
        )

    def _close(self, pending: _Pending, *, complete: bool) -> None:
        self._pending = None
        pending.complete = complete
        self._ready.append(pending)
        if not complete:
            log.warning(
                "chain set incomplete",
                ts_event=pending.ts_event.isoformat(),
                received=len(pending.by_expiry),
                expected=pending.expected,
            )
