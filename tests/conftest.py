"""Shared fixtures: real Redis and real Postgres, each test in its own corner of them.

The suite uses Redis on 127.0.0.1:6379 and Postgres on 127.0.0.1:5432 when they answer and otherwise
starts embedded ones under `.volguard/test/` (the same fallback as `volguard up`). Every test gets a
unique Redis key namespace, deleted afterwards; the session gets its own database, dropped at the end.
Nothing outside what the tests create is ever flushed or dropped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from tests.support.threads import run_in_thread
from volguard_cli import infra
from volguard_common.settings import Settings

# anyio imports its file helpers lazily, on first use, and starlette's FileResponse first uses them in
# a test's server thread, where CPython 3.11's AST builder can race pytest's rewriting of that import
# ("SystemError: AST constructor recursion depth mismatch", seen once in a full run). Import them
# here, once, in the main thread.
anyio.open_file  # noqa: B018

# Shared 2-core machines: generation speed is noise, not a defect. CI runs a fixed example set so a
# green run is reproducible; locally examples vary, to keep exploring.
settings_profile = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
hypothesis_settings.register_profile("dev", **settings_profile)  # type: ignore[arg-type]
hypothesis_settings.register_profile("ci", derandomize=True, **settings_profile)  # type: ignore[arg-type]
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def endpoints() -> infra.InfraEndpoints:
    return infra.ensure_infra(
        ROOT / ".volguard" / "test",
        os.environ.get("VOLGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        os.environ.get("VOLGUARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def database_url(endpoints: infra.InfraEndpoints) -> Iterator[str]:
    """A database of this test session's own, dropped at the end."""
    yield from _own_database(endpoints)


@pytest.fixture
def fresh_database_url(endpoints: infra.InfraEndpoints) -> Iterator[str]:
    """A database of this test's own, for tests about a first start or otherwise needing a clean slate."""
    yield from _own_database(endpoints)


def _own_database(endpoints: infra.InfraEndpoints) -> Iterator[str]:
    name = f"vg_test_{uuid.uuid4().hex[:12]}"
    admin = _with_database(endpoints.database_url, "postgres")

    async def _create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'create database "{name}"')
        finally:
            await conn.close()

    async def _drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await conn.close()

    run_in_thread(_create())
    yield _with_database(endpoints.database_url, name)
    run_in_thread(_drop())


@pytest.fixture
def namespace(endpoints: infra.InfraEndpoints) -> Iterator[str]:
    """A Redis key prefix unique to this test; every key under it is deleted afterwards, whoever
    wrote it - the test's own client or the service processes it started (they stop first: their
    fixtures depend on this one) - so a test leaves Redis as it found it."""
    prefix = f"vgtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = SyncRedis.from_url(endpoints.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def redis(endpoints: infra.InfraEndpoints, namespace: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(endpoints.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(endpoints: infra.InfraEndpoints, database_url: str, namespace: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test infrastructure, with delivery timings short enough for tests."""
    return Settings(
        redis_url=endpoints.redis_url,
        database_url=database_url,
        stream_namespace=namespace,
        instance="test",
        bus_block_ms=100,
        bus_claim_idle_ms=300,
        bus_claim_interval_ms=100,
        bus_max_deliveries=3,
        state_dir=tmp_path / "state",
        log_format="console",
    )
