"""A recorded session as a market (`VOLGUARD_FEED=replay`): the exact bytes `volguard record` captured.

Opening a recording reads and validates its index and refuses an unfinished one
(`IncompleteRecordingError`; see `recording.recover_recording`). Before the first batch, every
segment's size and sha256 are checked against the index, so a damaged recording fails before
anything is published rather than half-way through a session; each segment is checked again in full
(framing, record count, ts_event range) when it is read.

Batches follow the recorded order: consecutive entries with the same ts_event form one batch. A
recording whose ts_event goes backwards (it should not) is replayed as recorded, not re-sorted:
re-sorting would reorder entries within a stream and the replay would no longer be the session.
Pacing and lockstep belong to the feed loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from volguard_market_data.ports import MarketBatch, Publication
from volguard_market_data.recording import (
    RecordedEntry,
    RecordingIndex,
    check_complete,
    read_index,
    read_segment,
    verify_segment_file,
)


class ReplaySource:
    """`ports.MarketSource` over a recording directory."""

    name = "replay"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.index: RecordingIndex = read_index(self.directory)
        check_complete(self.directory, self.index)
        self._closed = False

    def _verify_all(self) -> None:
        for segment in self.index.segments:
            verify_segment_file(self.directory, segment)

    async def batches(self) -> AsyncIterator[MarketBatch]:
        await asyncio.to_thread(self._verify_all)
        pending: list[RecordedEntry] = []
        for segment in self.index.segments:
            if self._closed:
                return
            entries = await asyncio.to_thread(read_segment, self.directory, segment)
            for entry in entries:
                if pending and entry.ts_event != pending[0].ts_event:
                    yield _batch(pending)
                    pending = []
                    if self._closed:
                        return
                pending.append(entry)
        if pending and not self._closed:
            yield _batch(pending)

    async def close(self) -> None:
        self._closed = True


def _batch(entries: list[RecordedEntry]) -> MarketBatch:
    return MarketBatch(
        ts_event=entries[0].ts_event,
        publications=tuple(Publication(entry.stream, entry.event_type, entry.payload) for entry in entries),
    )
