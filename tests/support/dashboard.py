"""Run the dashboard_api app (its real ASGI app, lifespan and all) under uvicorn in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn

from tests.support.processes import free_port
from tests.support.waiting import eventually
from volguard_common.service import build_app
from volguard_common.settings import Settings
from volguard_dashboard_api.app import SPEC


@dataclass(frozen=True)
class RunningDashboard:
    base_url: str
    ws_url: str


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test runner owns the signals, not the server.
        yield


@asynccontextmanager
async def running_dashboard(settings: Settings) -> AsyncIterator[RunningDashboard]:
    port = free_port()
    config = uvicorn.Config(
        build_app(SPEC, settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await eventually(started, what="the dashboard serves")
    try:
        yield RunningDashboard(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws")
    finally:
        server.should_exit = True
        await task
