"""Postgres access for every service: pools, per-service SQL migrations, and the idempotency ledger.

One database, one schema per owning service (DESIGN §6). Each service ships plain SQL files in
`<service package>/migrations/NNNN_description.sql`; `apply_migrations` runs them in order at start-up
under a Postgres advisory lock, so any number of replicas can start at once: the first applies, the
others wait on the lock and then find everything recorded. Each file runs in one transaction with
its ledger row, so a file either applied completely or not at all; statements that cannot run in a
transaction (CREATE INDEX CONCURRENTLY, VACUUM) do not belong in a migration file.

Two shared tables live in `public` and are created by the built-in core migrations
(`ensure_core_schema`):

- `public.volguard_migrations(schema, version, name, checksum, applied_at)`: the migration ledger;
- `public.processed_events(consumer, event_id, processed_at)`: the idempotency ledger (DESIGN §3).
  A side-effecting consumer records the event id in the same transaction as its effect, so a
  redelivered event changes nothing, and an effect that fails rolls the mark back with it. The
  `consumer` column holds the service's consumer group (`streams.group_name`), checked here, so a
  replica-specific name cannot split one service's ledger. Rows are never pruned by age: a log
  stream can redeliver an entry for as long as it holds it, and log streams are trimmed only below
  what every group acknowledged (`volguard_common.outbox.trim_log_streams`), so the record outlives
  every delivery its stream can still make.
- `public.outbox(id, publisher, stream, event_id, event_type, payload, created_at, sent_at,
  entry_id)`: events a handler publishes, written in the handler's transaction with their ids fixed
  there; the relay in `volguard_common.outbox` moves committed rows to Redis in `id` order.
- `public.fencing(name, token)`: the highest lease fencing token that has written, per lease
  (`volguard_common.lease`); a writer holding a lower token is refused inside its transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from volguard_common import streams

# A pooled connection is a proxy, a direct one is a Connection; both speak the same protocol.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
Pool: TypeAlias = "asyncpg.Pool[Any]"

MIGRATIONS_TABLE = "public.volguard_migrations"
PROCESSED_EVENTS_TABLE = "public.processed_events"
OUTBOX_TABLE = "public.outbox"
FENCING_TABLE = "public.fencing"
# The owner name the core migrations are recorded under; no service may use it.
CORE_SCHEMA = "public"

_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<description>[a-z0-9][a-z0-9_]*)\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(RuntimeError):
    """The migrations on disk and the ledger in the database do not agree, or the set is malformed."""


class MigrationChecksumError(MigrationError):
    """An already-applied migration file was edited after it ran."""


class DatabaseUnavailableError(RuntimeError):
    """Postgres could not be reached; the message names host, port, database and user, never the password."""


class NotInTransactionError(RuntimeError):
    """`mark_processed` ran outside a transaction, where the mark could not roll back with the effect."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    # File name, e.g. "0003_fills_index.sql"; named in every error about this migration.
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        # Line endings are normalised so a checkout with CRLF does not look like an edited migration.
        normalised = self.sql.replace("\r\n", "\n")
        return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


# The built-in core migrations. The ledger table is also created (IF NOT EXISTS) before the ledger
# is read, which is why 0001 must stay idempotent; it is recorded like any other migration so an
# edit to it is caught.
_LEDGER_DDL = """\
CREATE TABLE IF NOT EXISTS public.volguard_migrations (
    schema      text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema, version)
);
"""

CORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "0001_volguard_migrations.sql", _LEDGER_DDL),
    Migration(
        2,
        "0002_processed_events.sql",
        """\
CREATE TABLE public.processed_events (
    consumer      text        NOT NULL,
    event_id      text        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
-- Retention jobs prune by age.
CREATE INDEX processed_events_processed_at_idx ON public.processed_events (processed_at);
""",
    ),
    Migration(
        3,
        "0003_outbox_and_fencing.sql",
        """\
-- The transactional outbox (DESIGN §3): rows are inserted in the publishing handler's transaction,
-- under a per-publisher transaction lock, so `id` order is commit order; the relay sends them in
-- that order and stamps sent_at and the Redis entry id.
CREATE TABLE public.outbox (
    id          bigserial   PRIMARY KEY,
    publisher   text        NOT NULL,
    stream      text        NOT NULL,
    event_id    text        NOT NULL UNIQUE,
    event_type  text        NOT NULL,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    entry_id    text
);
CREATE INDEX outbox_unsent_idx ON public.outbox (publisher, id) WHERE sent_at IS NULL;

-- Lease fencing: the highest token that has written under each lease name.
CREATE TABLE public.fencing (
    name   text   PRIMARY KEY,
    token  bigint NOT NULL CHECK (token > 0)
);
""",
    ),
)


# --------------------------------------------------------------------------------------------------
# Connecting


def redact_dsn(dsn: str) -> str:
    """`host:port/database as user`, for messages: the password never leaves this function."""
    parts = urlsplit(dsn)
    host = parts.hostname or "<default host>"
    port = parts.port or 5432
    database = unquote(parts.path.lstrip("/")) or "<default database>"
    user = unquote(parts.username) if parts.username else "<default user>"
    return f"{host}:{port}/{database} as {user}"


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
) -> Pool:
    """Open an asyncpg pool; an unreachable server raises `DatabaseUnavailableError` naming where."""
    try:
        return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailableError(
            f"cannot open a Postgres pool to {redact_dsn(dsn)}: {type(exc).__name__}: {exc}"
        ) from exc


async def _connect(dsn: str, connect_timeout: float) -> asyncpg.Connection[Any]:
    try:
        return await asyncpg.connect(dsn, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to Postgres at {redact_dsn(dsn)}: {type(exc).__name__}: {exc}"
        ) from exc


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(dsn: str, *, connect_timeout: float = 10.0) -> None:
    """Create the DSN's database if it does not exist, via the `postgres` maintenance database.

    Several processes may race here at start-up; the loser's CREATE DATABASE fails with
    DuplicateDatabaseError, which means the database now exists, which is what was asked.
    """
    parts = urlsplit(dsn)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ValueError(f"the DSN names no database ({redact_dsn(dsn)}); ensure_database needs one")
    maintenance_dsn = urlunsplit(parts._replace(path="/postgres"))
    conn = await _connect(maintenance_dsn, connect_timeout)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists is None:
            try:
                await conn.execute(f"CREATE DATABASE {quote_ident(database)}")
            except asyncpg.DuplicateDatabaseError:
                pass  # another process created it between our check and our CREATE
            except asyncpg.UniqueViolationError as exc:
                # Two CREATE DATABASE statements that overlap can also collide on the catalogue's
                # unique index rather than on the friendly duplicate check.
                if exc.constraint_name != "pg_database_datname_index":
                    raise
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------
# Loading migrations


def _check_sequence(migrations: Sequence[Migration], origin: str) -> list[Migration]:
    ordered = sorted(migrations, key=lambda m: m.version)
    seen: dict[int, str] = {}
    for migration in ordered:
        if migration.version in seen:
            raise MigrationError(
                f"{origin}: duplicate migration version {migration.version:04d}: "
                f"{seen[migration.version]} and {migration.name}"
            )
        seen[migration.version] = migration.name
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{origin}: migrations must be numbered 0001, 0002, ... without gaps; "
                f"expected {expected:04d} but found {migration.name}"
            )
    return ordered


def load_migrations_dir(directory: Path | Traversable) -> list[Migration]:
    """Read `NNNN_description.sql` files from a directory, ordered by number, rejecting gaps and duplicates.

    A `.sql` file whose name does not follow the pattern is an error rather than silently skipped:
    a migration that never runs is worse than a start-up that refuses.
    """
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    migrations: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.is_file() or not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(
                f"{directory}: migration file {entry.name} is not named NNNN_description.sql "
                "(four digits, lower-case description)"
            )
        migrations.append(Migration(int(match["version"]), entry.name, entry.read_text(encoding="utf-8")))
    return _check_sequence(migrations, str(directory))


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in `<package>/migrations/*.sql`, via importlib.resources."""
    return load_migrations_dir(resources.files(package).joinpath("migrations"))


def _as_migrations(migrations: Sequence[Migration] | Path | Traversable, origin: str) -> list[Migration]:
    if isinstance(migrations, Path | Traversable):
        return load_migrations_dir(migrations)
    return _check_sequence(migrations, origin)


# --------------------------------------------------------------------------------------------------
# Applying migrations


def advisory_lock_key(schema: str) -> int:
    """A stable signed 64-bit key per schema, so different services migrate in parallel."""
    digest = hashlib.sha256(f"volguard.migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def _connection(pool_or_conn: Pool | Connection) -> AsyncIterator[Connection]:
    if isinstance(pool_or_conn, asyncpg.Pool):
        async with pool_or_conn.acquire() as conn:
            yield conn
    else:
        yield pool_or_conn


@asynccontextmanager
async def _advisory_lock(conn: Connection, schema: str) -> AsyncIterator[None]:
    if conn.is_in_transaction():
        # Each migration needs its own transaction; nested in the caller's they would all commit
        # (or vanish) together, and the session lock would outlive a rolled-back ledger.
        raise MigrationError("migrations must run on a connection that is not inside a transaction")
    key = advisory_lock_key(schema)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def _applied(conn: Connection, schema: str) -> dict[int, tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT version, name, checksum FROM public.volguard_migrations WHERE schema = $1", schema
    )
    return {row["version"]: (row["name"], row["checksum"]) for row in rows}


def _verify_applied(
    schema: str, migrations: Iterable[Migration], applied: dict[int, tuple[str, str]]
) -> None:
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            # The database is ahead of this code (a newer release migrated it); running old code
            # against a newer schema is not something to discover from a failing query later.
            raise MigrationError(
                f"schema {schema!r}: the database has migration {name} (version {version:04d}) "
                "that this code does not ship"
            )
        if migration.checksum != checksum:
            raise MigrationChecksumError(
                f"schema {schema!r}: migration {migration.name} was changed after it was applied "
                f"(recorded as {name}, checksum {checksum[:12]}..., file now {migration.checksum[:12]}...); "
                "add a new migration instead of editing an applied one"
            )
        if migration.name != name:
            raise MigrationError(
                f"schema {schema!r}: migration version {version:04d} was applied as {name} "
                f"but the file is now named {migration.name}"
            )


async def _apply_locked(
    conn: Connection, schema: str, migrations: Sequence[Migration], *, create_schema: bool
) -> list[Migration]:
    applied = await _applied(conn, schema)
    _verify_applied(schema, migrations, applied)
    pending = [m for m in migrations if m.version not in applied]
    for migration in pending:
        async with conn.transaction():
            if create_schema:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                # Unqualified names in a service's migration land in its own schema.
                await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}, public")
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO public.volguard_migrations (schema, version, name, checksum) "
                "VALUES ($1, $2, $3, $4)",
                schema,
                migration.version,
                migration.name,
                migration.checksum,
            )
    return pending


async def ensure_core_schema(pool_or_conn: Pool | Connection) -> list[Migration]:
    """Create the shared ledger tables in `public` (under the advisory lock); returns what it applied."""
    async with _connection(pool_or_conn) as conn, _advisory_lock(conn, CORE_SCHEMA):
        await conn.execute(_LEDGER_DDL)
        return await _apply_locked(conn, CORE_SCHEMA, CORE_MIGRATIONS, create_schema=False)


async def apply_migrations(
    pool_or_conn: Pool | Connection,
    schema: str,
    migrations: Sequence[Migration] | Path | Traversable,
) -> list[Migration]:
    """Apply a service's pending migrations in order; returns the ones this call applied.

    Runs under `pg_advisory_lock(advisory_lock_key(schema))`: a concurrent caller waits, then finds
    them recorded and applies nothing. Each migration runs in its own transaction with
    `search_path = <schema>, public`, and the schema is created if missing. A recorded migration
    whose file changed raises `MigrationChecksumError` naming the file.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} must be a lower-case SQL identifier")
    if schema == CORE_SCHEMA:
        raise ValueError(f"schema {CORE_SCHEMA!r} is reserved for the core migrations")
    ordered = _as_migrations(migrations, f"schema {schema!r}")
    async with _connection(pool_or_conn) as conn:
        await ensure_core_schema(conn)
        async with _advisory_lock(conn, schema):
            return await _apply_locked(conn, schema, ordered, create_schema=True)


async def migrations_applied(
    pool_or_conn: Pool | Connection,
    schema: str,
    migrations: Sequence[Migration] | Path | Traversable,
) -> bool:
    """True when every migration is recorded with its current checksum (for a /ready probe).

    Read-only and lock-free. Unlike `apply_migrations` it reports a mismatch as False instead of
    raising, because a readiness probe answers a question; start-up is where the error is raised.
    """
    ordered = _as_migrations(migrations, f"schema {schema!r}")
    async with _connection(pool_or_conn) as conn:
        if await conn.fetchval("SELECT to_regclass('public.volguard_migrations')") is None:
            return False
        applied = await _applied(conn, schema)
    return all(applied.get(m.version) == (m.name, m.checksum) for m in ordered)


# --------------------------------------------------------------------------------------------------
# Idempotency (DESIGN §3)


class UnknownConsumerGroupError(ValueError):
    """The dedup key is not a service's consumer group, so it could not protect that service."""


def check_consumer_group(group: str) -> str:
    """`group` when it is the consumer group of a known service; raise otherwise.

    Dedup is keyed by the group, the one name every replica of a service shares: free text such as
    `risk-replica-2` would let a redelivery to another replica repeat the effect.
    """
    known = {streams.group_name(service) for service in streams.SERVICES}
    if group not in known:
        raise UnknownConsumerGroupError(
            f"{group!r} is not a consumer group; dedup is keyed by the service's group, "
            f"one of {sorted(known)}"
        )
    return group


async def mark_processed(conn: Connection, group: str, event_id: str) -> bool:
    """Record `event_id` for the consumer group `group` in the caller's transaction.

    True: first time seen, so perform the side effect in this same transaction. False: already
    processed (committed by an earlier delivery), so skip the effect and ack. A concurrent delivery
    of the same event blocks on the row until the first transaction ends, then sees its outcome.
    """
    if not conn.is_in_transaction():
        raise NotInTransactionError(
            "mark_processed must run inside the transaction that performs the side effect, "
            "otherwise a failed effect would leave the event marked as done"
        )
    check_consumer_group(group)
    inserted = await conn.fetchval(
        "INSERT INTO public.processed_events (consumer, event_id) VALUES ($1, $2) "
        "ON CONFLICT (consumer, event_id) DO NOTHING RETURNING true",
        group,
        event_id,
    )
    return inserted is True


@asynccontextmanager
async def once(pool: Pool, group: str, event_id: str) -> AsyncIterator[Connection | None]:
    """`async with once(pool, group, event_id) as tx:` — a connection inside a transaction that has
    already marked the event for the consumer group `group`, or None when an earlier delivery
    processed it. A handler that also publishes uses `volguard_common.outbox.handle_once`, which
    puts the published events in the same transaction.

    An exception in the body rolls back the effect and the mark together, so the redelivery does
    the work again.
    """
    async with pool.acquire() as conn, conn.transaction():
        if await mark_processed(conn, group, event_id):
            yield conn
        else:
            yield None
