"""Fan-out of live events to WebSocket clients, each with a bounded queue.

A client that cannot keep up (its queue is full) is dropped rather than allowed to grow the
service's memory: its socket is closed with 1013 ("try again later") and the page reconnects and
starts again from the current picture.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("volguard.dashboard.live")


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[str]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self.clients: set[Client] = set()
        self.dropped_slow = 0

    def join(self) -> Client:
        client = Client(asyncio.Queue(maxsize=self._queue_size))
        self.clients.add(client)
        return client

    def leave(self, client: Client) -> None:
        self.clients.discard(client)

    def broadcast(self, message: str) -> None:
        """Queue `message` for every client; a client whose queue is full is dropped."""
        for client in list(self.clients):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                self.clients.discard(client)
                client.dropped.set()
                self.dropped_slow += 1
                log.warning("dropped a slow WebSocket client", queue_size=self._queue_size)
