"""Gathers the ChainSnapshots of one instant (one per expiry) into the set analytics works on.

market_data publishes every expiry of an instant together and says how many (`expiries_in_set`), so
a set is complete as soon as the last expiry arrives: no waiting for the next instant (which would
deadlock a lockstep backtest and never close the last instant of a session). A set overtaken by a
later instant before it completed is handed on marked incomplete, never silently dropped; a
snapshot older than the newest set seen is late and ignored. A redelivered snapshot replaces its
earlier copy instead of being counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import structlog

from volguard_common import events

log = structlog.get_logger("volguard.analytics.chain_sets")


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


class ChainSetAssembler:
    def __init__(self) -> None:
        self._pending: _Pending | None = None
        self._newest_done: datetime | None = None
        self.late_dropped = 0

    def add(self, snapshot: events.ChainSnapshot) -> list[ChainSet]:
        """Take one snapshot; return the sets it completed (or overtook), oldest first."""
        done: list[ChainSet] = []
        if self._newest_done is not None and snapshot.ts_event <= self._newest_done:
            self.late_dropped += 1
            log.warning(
                "late chain snapshot ignored",
                ts_event=snapshot.ts_event.isoformat(),
                expiry=snapshot.expiry.isoformat(),
                newest_done=self._newest_done.isoformat(),
            )
            return done
        pending = self._pending
        if pending is not None and snapshot.ts_event != pending.ts_event:
            if snapshot.ts_event < pending.ts_event:
                self.late_dropped += 1
                log.warning("late chain snapshot ignored", ts_event=snapshot.ts_event.isoformat())
                return done
            done.append(self._close(pending, complete=False))
            pending = None
        if pending is None:
            pending = self._pending = _Pending(snapshot.ts_event, snapshot.expiries_in_set)
        pending.by_expiry[snapshot.expiry] = snapshot
        if pending.expected is not None and len(pending.by_expiry) >= pending.expected:
            done.append(self._close(pending, complete=True))
        return done

    def flush(self) -> list[ChainSet]:
        """Hand on what is pending (end of a replay, or shutdown)."""
        if self._pending is None:
            return []
        return [self._close(self._pending, complete=False)]

    def _close(self, pending: _Pending, *, complete: bool) -> ChainSet:
        self._pending = None
        self._newest_done = pending.ts_event
        snapshots = tuple(pending.by_expiry[e] for e in sorted(pending.by_expiry))
        if not complete:
            log.warning(
                "chain set incomplete",
                ts_event=pending.ts_event.isoformat(),
                received=len(snapshots),
                expected=pending.expected,
            )
        return ChainSet(pending.ts_event, snapshots, complete, pending.expected)
