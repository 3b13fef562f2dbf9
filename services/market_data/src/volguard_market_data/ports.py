"""What the market_data service needs from a market, whichever it is (simulator, replay, Upstox).

A source yields `MarketBatch`es in event-time order: everything the market said at one instant,
already serialised. The publishing loop (`feed.py`) owns pacing (`--speed`), lockstep back-pressure
and publication; sources never touch Redis. Payloads are the exact bytes that go on the stream, which
is what lets a replay be byte-for-byte the recorded session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Publication:
    stream: str  # logical stream name, e.g. "md.chain"
    event_type: str  # the event's `type`, for metrics
    payload: bytes  # the event's JSON, exactly as published


@dataclass(frozen=True, slots=True)
class MarketBatch:
    ts_event: datetime  # IST-aware exchange time of every event in the batch
    publications: tuple[Publication, ...] = field(default_factory=tuple)
    # Distinct instruments the batch carries (ticks plus both sides of every chain strike), for
    # md.status; None when the source does not know without parsing its payloads (replay).
    instruments: int | None = None


class MarketSource(Protocol):
    """A market: sim, replay or upstox."""

    name: str

    def batches(self) -> AsyncIterator[MarketBatch]:
        """Event-time ordered batches until the source ends (replay, a finished sim day) or is closed."""
        ...

    async def close(self) -> None:
        """Release sockets, files and tasks."""
        ...
