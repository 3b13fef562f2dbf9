"""Run a service in-process against the test's Redis, database and namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from volguard_common.service import ServiceContext, ServiceSpec, start_service, stop_service
from volguard_common.settings import Settings


@asynccontextmanager
async def running_service(
    spec: ServiceSpec, settings: Settings, redis: Redis
) -> AsyncIterator[ServiceContext]:
    context = await start_service(spec, settings, redis)
    try:
        yield context
    finally:
        await stop_service(context)
