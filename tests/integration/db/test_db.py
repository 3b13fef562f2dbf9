"""volguard_common.db against a real Postgres: migrations, their locking, and the idempotency ledger."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.waiting import eventually
from volguard_common import db

ACCOUNTS_V1 = db.Migration(
    1,
    "0001_accounts.sql",
    "CREATE TABLE accounts (account_id text PRIMARY KEY);",
)
ACCOUNTS_V2 = db.Migration(
    2,
    "0002_accounts_capital.sql",
    "ALTER TABLE accounts ADD COLUMN capital numeric NOT NULL DEFAULT 0;",
)
ACCOUNTS_V3 = db.Migration(
    3,
    "0003_seed_account.sql",
    "INSERT INTO accounts (account_id, capital) VALUES ('paper', 2000000);",
)


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


async def ledger(conn: Any, schema: str) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT version, name FROM public.volguard_migrations WHERE schema = $1 ORDER BY applied_at, version",
        schema,
    )
    return [(row["version"], row["name"]) for row in rows]


# ---------------------------------------------------------------------------------------------- loading


def test_load_migrations_from_package_orders_by_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"vg_migrations_pkg_{secrets.token_hex(4)}"
    package_dir = tmp_path / package
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text("", encoding="utf-8")
    # Written out of order, and with a non-SQL file that must be ignored.
    write_migrations(
        package_dir / "migrations",
        {
            "0010_ten.sql": "SELECT 10;",
            "0002_two.sql": "SELECT 2;",
            "0001_one.sql": "SELECT 1;",
            "README.md": "not a migration",
            **{f"{n:04d}_step.sql": f"SELECT {n};" for n in range(3, 10)},
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    migrations = db.load_migrations(package)

    assert [m.version for m in migrations] == list(range(1, 11))
    assert migrations[0] == db.Migration(1, "0001_one.sql", "SELECT 1;")
    assert migrations[-1].name == "0010_ten.sql"


def test_gap_in_directory_is_rejected(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "migrations", {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"}
    )
    with pytest.raises(db.MigrationError, match=re.escape("0003_c.sql")):
        db.load_migrations_dir(directory)


def test_numbering_must_start_at_one(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "migrations", {"0002_b.sql": "SELECT 2;"})
    with pytest.raises(db.MigrationError, match=re.escape("0002_b.sql")):
        db.load_migrations_dir(directory)


def test_duplicate_version_is_rejected(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "migrations", {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"}
    )
    with pytest.raises(db.MigrationError, match="duplicate"):
        db.load_migrations_dir(directory)


def test_misnamed_sql_file_is_rejected_not_skipped(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "migrations", {"0001_a.sql": "SELECT 1;", "2_b.sql": "SELECT 2;"})
    with pytest.raises(db.MigrationError, match=re.escape("2_b.sql")):
        db.load_migrations_dir(directory)


def test_checksum_ignores_line_endings_only() -> None:
    unix = db.Migration(1, "0001_a.sql", "SELECT 1;\nSELECT 2;\n")
    windows = db.Migration(1, "0001_a.sql", "SELECT 1;\r\nSELECT 2;\r\n")
    edited = db.Migration(1, "0001_a.sql", "SELECT 1;\nSELECT 3;\n")
    assert unix.checksum == windows.checksum
    assert unix.checksum != edited.checksum


def test_advisory_lock_keys_are_stable_signed_64_bit_and_distinct() -> None:
    keys = {db.advisory_lock_key(schema) for schema in ("public", "market", "risk", "execution")}
    assert len(keys) == 4
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert db.advisory_lock_key("risk") == db.advisory_lock_key("risk")


# ---------------------------------------------------------------------------------------------- applying


async def test_core_schema_is_created_once(pool: db.Pool) -> None:
    first = await db.ensure_core_schema(pool)
    second = await db.ensure_core_schema(pool)

    assert [m.version for m in first] == [1, 2, 3]
    assert second == []
    async with pool.acquire() as conn:
        assert await ledger(conn, db.CORE_SCHEMA) == [
            (1, "0001_volguard_migrations.sql"),
            (2, "0002_processed_events.sql"),
            (3, "0003_outbox_and_fencing.sql"),
        ]
        assert (
            await conn.fetchval("SELECT to_regclass('public.processed_events')::text") == "processed_events"
        )
        assert await conn.fetchval("SELECT to_regclass('public.outbox')::text") == "outbox"
        assert await conn.fetchval("SELECT to_regclass('public.fencing')::text") == "fencing"


async def test_migrations_apply_in_order_into_their_schema(pool: db.Pool) -> None:
    # Given out of order: 0002 alters the table 0001 creates, so any other order fails.
    applied = await db.apply_migrations(pool, "svc", [ACCOUNTS_V3, ACCOUNTS_V1, ACCOUNTS_V2])

    assert [m.version for m in applied] == [1, 2, 3]
    async with pool.acquire() as conn:
        assert await ledger(conn, "svc") == [
            (1, "0001_accounts.sql"),
            (2, "0002_accounts_capital.sql"),
            (3, "0003_seed_account.sql"),
        ]
        # Unqualified names in the SQL landed in the service's own schema.
        assert await conn.fetchval("SELECT capital FROM svc.accounts WHERE account_id = 'paper'") == 2000000
        assert await conn.fetchval("SELECT to_regclass('public.accounts')") is None


async def test_reapplying_applies_only_new_migrations(pool: db.Pool) -> None:
    assert len(await db.apply_migrations(pool, "svc", [ACCOUNTS_V1])) == 1
    assert await db.apply_migrations(pool, "svc", [ACCOUNTS_V1]) == []

    later = await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, ACCOUNTS_V2, ACCOUNTS_V3])

    assert [m.name for m in later] == ["0002_accounts_capital.sql", "0003_seed_account.sql"]


async def test_apply_from_directory(pool: db.Pool, tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "migrations",
        {ACCOUNTS_V1.name: ACCOUNTS_V1.sql, ACCOUNTS_V2.name: ACCOUNTS_V2.sql},
    )
    applied = await db.apply_migrations(pool, "svc", directory)

    assert [m.version for m in applied] == [1, 2]
    assert await db.migrations_applied(pool, "svc", directory)


async def test_gap_in_list_is_rejected_before_touching_the_database(pool: db.Pool) -> None:
    with pytest.raises(db.MigrationError, match=re.escape("0003_seed_account.sql")):
        await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, ACCOUNTS_V3])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('public.volguard_migrations')") is None


async def test_changed_checksum_is_a_hard_error_naming_the_file(pool: db.Pool) -> None:
    await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, ACCOUNTS_V2])
    edited = db.Migration(2, ACCOUNTS_V2.name, ACCOUNTS_V2.sql.replace("DEFAULT 0", "DEFAULT 1"))

    with pytest.raises(db.MigrationChecksumError, match=re.escape("0002_accounts_capital.sql")):
        await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, edited, ACCOUNTS_V3])

    assert not await db.migrations_applied(pool, "svc", [ACCOUNTS_V1, edited])
    async with pool.acquire() as conn:
        # Nothing after the mismatch ran.
        assert [version for version, _ in await ledger(conn, "svc")] == [1, 2]


async def test_renamed_applied_migration_is_an_error(pool: db.Pool) -> None:
    await db.apply_migrations(pool, "svc", [ACCOUNTS_V1])
    renamed = db.Migration(1, "0001_renamed.sql", ACCOUNTS_V1.sql)
    with pytest.raises(db.MigrationError, match=re.escape("0001_renamed.sql")):
        await db.apply_migrations(pool, "svc", [renamed])


async def test_database_ahead_of_code_is_an_error(pool: db.Pool) -> None:
    await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, ACCOUNTS_V2])
    with pytest.raises(db.MigrationError, match=re.escape("0002_accounts_capital.sql")):
        await db.apply_migrations(pool, "svc", [ACCOUNTS_V1])


async def test_failing_migration_rolls_back_alone_and_releases_the_lock(pool: db.Pool) -> None:
    broken = db.Migration(2, "0002_broken.sql", "ALTER TABLE accounts ADD COLUMN capital numerc;")

    with pytest.raises(asyncpg.UndefinedObjectError):
        await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, broken])

    async with pool.acquire() as conn:
        assert await ledger(conn, "svc") == [(1, "0001_accounts.sql")]
        # This database's advisory locks only: other databases on a shared server take their own.
        locks_held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert locks_held == 0
    # The fixed file goes through on the next start.
    assert len(await db.apply_migrations(pool, "svc", [ACCOUNTS_V1, ACCOUNTS_V2])) == 1


async def test_migrations_applied_for_ready_probe(pool: db.Pool) -> None:
    migrations = [ACCOUNTS_V1, ACCOUNTS_V2]
    assert not await db.migrations_applied(pool, "svc", migrations)  # no ledger table yet
    await db.apply_migrations(pool, "svc", [ACCOUNTS_V1])
    assert not await db.migrations_applied(pool, "svc", migrations)  # one missing
    await db.apply_migrations(pool, "svc", migrations)
    assert await db.migrations_applied(pool, "svc", migrations)
    assert not await db.migrations_applied(pool, "other", migrations)


async def test_direct_connection_inside_a_transaction_is_refused(conn: asyncpg.Connection[Any]) -> None:
    async with conn.transaction():
        with pytest.raises(db.MigrationError, match="transaction"):
            await db.apply_migrations(conn, "svc", [ACCOUNTS_V1])


async def test_direct_connection_works(conn: asyncpg.Connection[Any]) -> None:
    assert len(await db.apply_migrations(conn, "svc", [ACCOUNTS_V1])) == 1
    assert await db.migrations_applied(conn, "svc", [ACCOUNTS_V1])


@pytest.mark.parametrize("schema", ["public", "Risk", "risk;drop", ""])
async def test_reserved_or_invalid_schema_names_are_refused(pool: db.Pool, schema: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        await db.apply_migrations(pool, schema, [ACCOUNTS_V1])


async def test_concurrent_appliers_apply_each_migration_exactly_once(pg_dsn: str) -> None:
    """Four processes' worth of pools start at once; one applies, three wait on the lock, then see it done."""
    setup = await asyncpg.connect(pg_dsn)
    try:
        await setup.execute(
            "CREATE TABLE public.migration_runs (version integer NOT NULL);"
            "CREATE TABLE public.migration_gate (id integer);"
        )
        migrations = [
            # The first migration waits on a gate the test holds, so all four appliers are provably
            # in flight together: one inside the migration, three queued on the advisory lock.
            db.Migration(
                1,
                "0001_first.sql",
                "LOCK TABLE public.migration_gate IN ACCESS SHARE MODE;"
                "CREATE TABLE counted (n integer);"
                "INSERT INTO public.migration_runs VALUES (1);",
            ),
            db.Migration(2, "0002_second.sql", "INSERT INTO public.migration_runs VALUES (2);"),
            db.Migration(3, "0003_third.sql", "INSERT INTO public.migration_runs VALUES (3);"),
        ]
        pools = [await db.create_pool(pg_dsn, min_size=1, max_size=1) for _ in range(4)]
        try:
            gate = setup.transaction()
            await gate.start()
            await setup.execute("LOCK TABLE public.migration_gate IN ACCESS EXCLUSIVE MODE")
            appliers = [asyncio.create_task(db.apply_migrations(p, "svc", migrations)) for p in pools]

            async def one_in_migration_three_queued() -> bool:
                waiting = await setup.fetch(
                    "SELECT locktype FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE NOT l.granted AND d.datname = current_database()"
                )
                kinds = sorted(row["locktype"] for row in waiting)
                return kinds == ["advisory", "advisory", "advisory", "relation"]

            await eventually(
                one_in_migration_three_queued, what="one applier inside migration 3, three queued"
            )
            await gate.rollback()
            results = await asyncio.gather(*appliers)
        finally:
            for p in pools:
                await p.close()

        assert sorted(len(applied) for applied in results) == [0, 0, 0, 3]
        runs = await setup.fetch("SELECT version, count(*) AS n FROM public.migration_runs GROUP BY version")
        assert {row["version"]: row["n"] for row in runs} == {1: 1, 2: 1, 3: 1}
        assert await ledger(setup, "svc") == [
            (1, "0001_first.sql"),
            (2, "0002_second.sql"),
            (3, "0003_third.sql"),
        ]
        assert await ledger(setup, db.CORE_SCHEMA) == [
            (1, "0001_volguard_migrations.sql"),
            (2, "0002_processed_events.sql"),
            (3, "0003_outbox_and_fencing.sql"),
        ]
    finally:
        await setup.close()


# ---------------------------------------------------------------------------------------------- connecting


async def test_ensure_database_creates_it_once_under_concurrency(
    pg_server: Any, fresh_database_name: str
) -> None:
    dsn = pg_server.dsn_for(fresh_database_name)
    assert not await pg_server.database_exists(fresh_database_name)

    await asyncio.gather(*(db.ensure_database(dsn) for _ in range(4)))

    assert await pg_server.database_exists(fresh_database_name)
    await db.ensure_database(dsn)  # already there: nothing to do, no error
    created = await db.create_pool(dsn)
    try:
        assert await created.fetchval("SELECT current_database()") == fresh_database_name
    finally:
        await created.close()


async def test_ensure_database_needs_a_database_name() -> None:
    with pytest.raises(ValueError, match="no database"):
        await db.ensure_database("postgresql://postgres@127.0.0.1:5432")


async def test_unreachable_server_names_host_and_database_but_not_password() -> None:
    # Port 1 on loopback refuses at once.
    dsn = "postgresql://trader:s3cr3t-pw@127.0.0.1:1/volguard"
    with pytest.raises(db.DatabaseUnavailableError) as raised:
        await db.create_pool(dsn, connect_timeout=5)
    message = str(raised.value)
    assert "127.0.0.1:1/volguard as trader" in message
    assert "s3cr3t-pw" not in message

    with pytest.raises(db.DatabaseUnavailableError) as raised_ensure:
        await db.ensure_database(dsn, connect_timeout=5)
    assert "127.0.0.1:1/postgres as trader" in str(raised_ensure.value)
    assert "s3cr3t-pw" not in str(raised_ensure.value)


def test_redact_dsn_never_shows_the_password() -> None:
    assert db.redact_dsn("postgresql://u:p%40ss@db.internal:6543/vg") == "db.internal:6543/vg as u"
    assert "p%40ss" not in db.redact_dsn("postgresql://u:p%40ss@db.internal/vg")


# ---------------------------------------------------------------------------------------------- idempotency


async def test_mark_processed_is_true_once_per_consumer(pool: db.Pool) -> None:
    await db.ensure_core_schema(pool)
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await db.mark_processed(conn, "risk", "evt-1")
        async with conn.transaction():
            assert not await db.mark_processed(conn, "risk", "evt-1")
        async with conn.transaction():
            assert await db.mark_processed(conn, "execution", "evt-1")
            assert await db.mark_processed(conn, "risk", "evt-2")
        rows = await conn.fetch("SELECT consumer, event_id FROM public.processed_events ORDER BY 1, 2")
        assert [tuple(row) for row in rows] == [("execution", "evt-1"), ("risk", "evt-1"), ("risk", "evt-2")]


async def test_dedup_is_keyed_by_a_service_consumer_group_not_free_text(pool: db.Pool) -> None:
    """A replica-specific name would give each replica its own ledger, so a redelivery to another
    replica would repeat the effect: only a service's consumer group is accepted."""
    await db.ensure_core_schema(pool)
    async with pool.acquire() as conn:
        for name in ("risk-replica-2", "risk/a", "Risk", ""):
            async with conn.transaction():
                with pytest.raises(db.UnknownConsumerGroupError):
                    await db.mark_processed(conn, name, "evt-1")
        with pytest.raises(db.UnknownConsumerGroupError):
            async with db.once(pool, "execution-0", "evt-1"):
                pass
        assert await conn.fetchval("SELECT count(*) FROM public.processed_events") == 0


async def test_mark_processed_outside_a_transaction_is_refused(pool: db.Pool) -> None:
    await db.ensure_core_schema(pool)
    async with pool.acquire() as conn:
        with pytest.raises(db.NotInTransactionError):
            await db.mark_processed(conn, "risk", "evt-1")
        assert await conn.fetchval("SELECT count(*) FROM public.processed_events") == 0


class EffectFailed(RuntimeError):
    pass


async def test_failed_effect_rolls_back_the_mark_so_redelivery_does_the_work(pool: db.Pool) -> None:
    await db.ensure_core_schema(pool)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE public.fills (event_id text, qty integer)")

    async def handle(event_id: str, *, fail: bool) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            if not await db.mark_processed(conn, "execution", event_id):
                return False
            await conn.execute("INSERT INTO public.fills VALUES ($1, 65)", event_id)
            if fail:
                raise EffectFailed(event_id)
            return True

    with pytest.raises(EffectFailed):
        await handle("evt-1", fail=True)
    assert await handle("evt-1", fail=False)  # redelivery: the mark was rolled back with the effect
    assert not await handle("evt-1", fail=False)  # and now it is a duplicate
    assert await pool.fetchval("SELECT count(*) FROM public.fills") == 1


async def test_once_yields_a_transaction_the_first_time_and_none_after(pool: db.Pool) -> None:
    await db.ensure_core_schema(pool)
    await pool.execute("CREATE TABLE public.fills (event_id text, qty integer)")

    async def deliver_and_fail() -> None:
        async with db.once(pool, "execution", "evt-9") as tx:
            assert tx is not None
            assert tx.is_in_transaction()
            await tx.execute("INSERT INTO public.fills VALUES ('evt-9', 65)")
            raise EffectFailed("broker timeout")

    with pytest.raises(EffectFailed):
        await deliver_and_fail()

    for _ in range(2):
        async with db.once(pool, "execution", "evt-9") as tx:
            if tx is not None:
                await tx.execute("INSERT INTO public.fills VALUES ('evt-9', 65)")

    assert await pool.fetchval("SELECT count(*) FROM public.fills") == 1
    async with db.once(pool, "execution", "evt-9") as tx:
        assert tx is None


async def test_concurrent_delivery_waits_for_the_first_and_then_skips(pool: db.Pool) -> None:
    """A claimer redelivers while the original consumer is still mid-transaction: exactly one effect."""
    await db.ensure_core_schema(pool)
    first_inside = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> bool:
        async with db.once(pool, "risk", "evt-7") as tx:
            first_inside.set()
            await release_first.wait()
            return tx is not None

    async def second() -> bool:
        async with db.once(pool, "risk", "evt-7") as tx:
            return tx is not None

    first_task = asyncio.create_task(first())
    await first_inside.wait()
    second_task = asyncio.create_task(second())

    async def second_blocked_on_first() -> bool:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
        )
        return waiting == 1

    await eventually(second_blocked_on_first, what="the second delivery waits on the first's lock")
    release_first.set()
    assert await first_task
    assert not await second_task
