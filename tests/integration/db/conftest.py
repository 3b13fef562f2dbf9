"""Real-Postgres fixtures for the db tests: every test gets its own throw-away `vg_test_*` database."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from volguard_common import db

# The server's maintenance database; tests only ever create and drop `vg_test_*` databases through it.
ADMIN_DSN = os.environ.get("VOLGUARD_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


class PgServer:
    """The test server, seen from its maintenance database."""

    def dsn_for(self, database: str) -> str:
        return urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{database}"))

    async def database_exists(self, database: str) -> bool:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            return await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database) == 1
        finally:
            await admin.close()

    async def create_database(self, database: str) -> None:
        assert database.startswith("vg_test_"), database
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f"CREATE DATABASE {db.quote_ident(database)}")
        finally:
            await admin.close()

    async def drop_database(self, database: str) -> None:
        assert database.startswith("vg_test_"), database
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {db.quote_ident(database)} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
def pg_server() -> PgServer:
    return PgServer()


@pytest.fixture
async def fresh_database_name(pg_server: PgServer) -> AsyncIterator[str]:
    """A name no database has yet; whatever the test creates under it is dropped afterwards."""
    name = f"vg_test_{secrets.token_hex(6)}"
    yield name
    await pg_server.drop_database(name)


@pytest.fixture
async def pg_dsn(pg_server: PgServer, fresh_database_name: str) -> str:
    await pg_server.create_database(fresh_database_name)
    return pg_server.dsn_for(fresh_database_name)


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[db.Pool]:
    created = await db.create_pool(pg_dsn, min_size=1, max_size=4)
    yield created
    await created.close()


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    connection = await asyncpg.connect(pg_dsn)
    yield connection
    await connection.close()
