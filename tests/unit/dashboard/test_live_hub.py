"""WebSocket fan-out: every client gets every message; a client that falls behind is dropped."""

from __future__ import annotations

from volguard_dashboard_api.live import Hub


async def test_every_client_gets_every_message_in_order() -> None:
    hub = Hub(queue_size=4)
    first, second = hub.join(), hub.join()
    for n in range(3):
        hub.broadcast(f"m{n}")
    assert [first.queue.get_nowait() for _ in range(3)] == ["m0", "m1", "m2"]
    assert [second.queue.get_nowait() for _ in range(3)] == ["m0", "m1", "m2"]


async def test_a_slow_client_is_dropped_and_the_others_keep_receiving() -> None:
    hub = Hub(queue_size=2)
    slow, reader = hub.join(), hub.join()
    for n in range(5):
        hub.broadcast(f"m{n}")
        reader.queue.get_nowait()
    assert slow.dropped.is_set()
    assert slow not in hub.clients
    assert reader in hub.clients
    assert hub.dropped_slow == 1
    # Memory is bounded: the dropped client's queue stopped at its size.
    assert slow.queue.qsize() == 2
