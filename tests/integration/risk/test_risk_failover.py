"""Two real risk processes: SIGKILL of the active one mid-stream, the standby decides the rest, and every
intent has exactly one decision (none lost, none doubled)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.replicas import ServiceReplica, killed_at_teardown
from tests.support.samples import SESSION, sample_intent
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings

TTL_MS = 2000
POLL_MS = 200
INTENTS = 40


@pytest.fixture
def failover_settings(settings: Settings, fresh_database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": fresh_database_url})


@pytest.fixture
def replicas() -> Iterator[list[ServiceReplica]]:
    yield from killed_at_teardown()


async def _decisions(redis: Redis, settings: Settings) -> list[events.RiskDecision]:
    entries = await redis.xrange(f"{settings.stream_namespace}rk.decisions")
    found = [events.parse_event(fields[b"event"]) for _, fields in entries]
    return [d for d in found if isinstance(d, events.RiskDecision)]


async def test_sigkill_of_the_active_risk_loses_and_doubles_no_decision(
    failover_settings: Settings, redis: Redis, replicas: list[ServiceReplica], tmp_path: Path
) -> None:
    a = ServiceReplica("risk", "a", failover_settings, tmp_path, lease_ttl_ms=TTL_MS, lease_poll_ms=POLL_MS)
    replicas.append(a)
    await eventually(lambda: a.in_role("active"), what="risk-a active", patience_s=120)
    b = ServiceReplica("risk", "b", failover_settings, tmp_path, lease_ttl_ms=TTL_MS, lease_poll_ms=POLL_MS)
    replicas.append(b)
    await eventually(lambda: b.in_role("standby"), what="risk-b standing by", patience_s=120)

    publisher = Publisher(
        redis, BusConfig.from_settings(failover_settings), service="strategy", source="strategy/test"
    )
    intents = [sample_intent(SESSION + timedelta(seconds=n)) for n in range(INTENTS)]
    for intent in intents[: INTENTS // 2]:
        await publisher.publish(intent)
    # Kill risk-a while it is deciding: some of the first half decided, the rest in flight or unread.
    await eventually(
        lambda: _some_decided(redis, failover_settings), what="risk-a deciding the first intents"
    )
    a.process.send_signal(signal.SIGKILL)
    await asyncio.get_running_loop().run_in_executor(None, a.process.wait)
    for intent in intents[INTENTS // 2 :]:
        await publisher.publish(intent)
    await eventually(lambda: b.in_role("active"), what="risk-b active after risk-a died", patience_s=120)

    async def all_decided() -> list[events.RiskDecision] | None:
        decided = await _decisions(redis, failover_settings)
        return decided if {d.intent_id for d in decided} >= {i.intent_id for i in intents} else None

    decided = await eventually(all_decided, what="a decision for every intent", patience_s=120)
    ids = [d.intent_id for d in decided]
    assert sorted(ids) == sorted(i.intent_id for i in intents)  # each exactly once
    b.process.send_signal(signal.SIGTERM)
    await asyncio.get_running_loop().run_in_executor(None, b.process.wait)
    assert b.process.returncode == 0, b.log_path.read_text()[-3000:]


async def _some_decided(redis: Redis, settings: Settings) -> bool:
    return len(await _decisions(redis, settings)) >= 3
