"""The running stack trades (issue 15 acceptance): `volguard up --speed 0 --lockstep` over one simulated
hour of the default market. Strategy proposes entries for at least two buckets, each traceable by its
correlation_id to the chain set that caused it; the journal explains every WAIT; risk decides every
intent and execution fills what risk approved."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from redis import Redis as SyncRedis

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.stack import stream_events as _events
from tests.support.stack import volguard as _volguard
from tests.support.waiting import eventually_sync
from volguard_common.clock import IST
from volguard_common.settings import Settings

VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]
# A Wednesday: entries open at 09:30, five minutes in; one simulated hour bounds the test.
START = datetime(2026, 12, 2, 9, 25, tzinfo=IST)
ONE_HOUR = START + timedelta(hours=1)


def _last_vol_time(settings: Settings) -> datetime | None:
    client = SyncRedis.from_url(settings.redis_url)
    try:
        entries = client.xrevrange(settings.stream_namespace + "an.vol", count=1)
    finally:
        client.close()
    return None if not entries else datetime.fromisoformat(json.loads(entries[0][1][b"event"])["ts_event"])


def _entry_buckets(settings: Settings) -> set[str]:
    return {i["bucket"] for i in _events(settings, "st.intents") if i["kind"] == "ENTRY"}


async def _rows(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


@pytest.fixture
def stack(settings: Settings, fresh_database_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    own = settings.model_copy(update={"database_url": fresh_database_url})
    env = service_env(
        own, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=tmp_path / "state"
    )
    env["VOLGUARD_SIM_START"] = START.isoformat()
    up = _volguard(["up", "--detach", "--ready-wait", "600", "--speed", "0", "--lockstep"], env, tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield own, tmp_path / "state"
    finally:
        down = _volguard(["down"], env, tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr


async def test_the_stack_proposes_decides_and_fills_entries_for_two_buckets_within_one_simulated_hour(
    stack: tuple[Settings, Path],
) -> None:
    settings, _ = stack

    def done() -> bool:
        if len(_entry_buckets(settings)) >= 2:
            return True
        last = _last_vol_time(settings)
        return last is not None and last >= ONE_HOUR

    eventually_sync(done, what="entries for two buckets or one simulated hour", patience_s=1800, poll_s=1.0)
    intents = [i for i in _events(settings, "st.intents") if i["kind"] == "ENTRY"]
    journal_waits = await _rows(
        settings.database_url,
        "select bucket, rule, reasons[cardinality(reasons)] from strategy.decisions where structure = 'WAIT'",
    )
    assert len({i["bucket"] for i in intents}) >= 2, (
        "entries for fewer than two buckets in one simulated hour; last waits: " + repr(journal_waits[-6:])
    )
    # Traced to the chain set that caused it: a chain on md.chain carries the intent's correlation id.
    chains = {c["correlation_id"] for c in _events(settings, "md.chain")}
    assert all(i["correlation_id"] in chains for i in intents)
    # Every WAIT is explained.
    assert all(reason for _, _, reason in journal_waits)
    # Risk decides every entry; execution fills what it approved.
    ids = {i["intent_id"] for i in intents}
    decisions = eventually_sync(
        lambda: [d for d in _events(settings, "rk.decisions") if d["intent_id"] in ids] or None,
        what="risk's decisions on the entries",
        patience_s=300,
    )
    approved = [d for d in decisions if d["approved"]]
    states = [(s["ts_event"], s["state"], s["reason"]) for s in _events(settings, "rk.state")]
    assert approved, f"risk rejected every entry: {[d['reasons'] for d in decisions]}; rk.state: {states}"
    baskets = {d["basket_id"] for d in approved}
    fills = eventually_sync(
        lambda: [
            f for f in _events(settings, "ex.reports") if f["type"] == "Fill" and f["basket_id"] in baskets
        ]
        or None,
        what="fills of the approved baskets",
        patience_s=300,
    )
    assert fills
