"""Stable instance names where nothing outside gives one (VOLGUARD_INSTANCE=auto): claims in real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

from redis.asyncio import Redis

from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_common.instance import claim_instance, slot_key
from volguard_common.service import ServiceSpec, consumer_name
from volguard_common.settings import Settings

CLAIMER = """
import asyncio, sys
from redis.asyncio import Redis
from volguard_common.instance import claim_instance

async def main() -> None:
    claim = await claim_instance(Redis.from_url(sys.argv[1]), sys.argv[2], sys.argv[3])
    print("claimed", claim.instance, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _claiming_process(settings: Settings, service: str) -> tuple[subprocess.Popen[str], str]:
    """Another process of this host holding a claim: (the process, the name it claimed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, settings.redis_url, settings.stream_namespace, service],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # past the process's own log lines
        if line.startswith("claimed "):
            return process, line.split()[1]
    raise AssertionError(f"the claiming process ended with {process.wait()} before claiming")


def _kill(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


async def test_replicas_claim_the_lowest_free_slots_and_a_released_slot_is_reused(
    redis: Redis, namespace: str
) -> None:
    first = await claim_instance(redis, namespace, "risk", host="host-a")
    second = await claim_instance(redis, namespace, "risk", host="host-b")
    other_service = await claim_instance(redis, namespace, "execution", host="host-a")
    assert (first.instance, second.instance, other_service.instance) == ("risk-0", "risk-1", "execution-0")

    await first.release()
    third = await claim_instance(redis, namespace, "risk", host="host-c")
    assert third.instance == "risk-0"
    assert await redis.exists(slot_key(namespace, "risk", 0)) == 1


async def test_a_replica_restarted_on_the_same_host_gets_its_name_back_at_once(
    redis: Redis, settings: Settings
) -> None:
    crashed, name = _claiming_process(settings, "analytics")
    _kill(crashed)  # SIGKILL: its claim is still within its TTL, held by a pid that is gone
    restarted = await claim_instance(redis, settings.stream_namespace, "analytics")
    assert restarted.instance == name == "analytics-0"
    assert await restarted.renew() is True


async def test_a_claim_with_our_own_pid_from_an_earlier_life_is_ours_again(
    redis: Redis, namespace: str
) -> None:
    # A container's PID 1 restarted: the claim names this host and this pid, but not this process's token.
    earlier = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "earlier-life"})
    await redis.set(slot_key(namespace, "risk", 0), earlier, px=15_000)
    assert (await claim_instance(redis, namespace, "risk")).instance == "risk-0"


async def test_a_live_replica_on_the_same_host_keeps_its_name(redis: Redis, settings: Settings) -> None:
    neighbour, name = _claiming_process(settings, "strategy")
    try:
        mine = await claim_instance(redis, settings.stream_namespace, "strategy")
        assert (name, mine.instance) == ("strategy-0", "strategy-1")
    finally:
        _kill(neighbour)


async def test_a_name_held_from_another_host_frees_only_when_its_ttl_lapses(
    redis: Redis, namespace: str
) -> None:
    await claim_instance(redis, namespace, "risk", host="gone-host", ttl_s=0.5)
    meanwhile = await claim_instance(redis, namespace, "risk", host="here")
    assert meanwhile.instance == "risk-1"

    async def slot_zero_claimed() -> bool:
        claim = await claim_instance(redis, namespace, "risk", host="here-too")
        if claim.instance == "risk-0":
            return True
        await claim.release()
        return False

    await eventually(slot_zero_claimed, what="risk-0 free once the other host's claim expired")


async def test_a_replica_that_loses_its_claim_is_told_once(redis: Redis, namespace: str) -> None:
    claim = await claim_instance(redis, namespace, "execution", host="box")
    lost: list[str] = []
    keeper = asyncio.create_task(claim.keep(lost.append, every_s=0.05))
    # Its TTL lapsed while it was paused and another replica took the name.
    await redis.set(claim.key, "someone else")
    await eventually(lambda: asyncio.sleep(0, bool(lost)), what="loss reported")
    await keeper  # keep() returns after reporting
    assert len(lost) == 1
    assert "execution-0" in lost[0]


async def test_a_service_with_instance_auto_runs_under_its_claimed_name_and_frees_it_on_stop(
    redis: Redis, settings: Settings
) -> None:
    auto = settings.model_copy(update={"instance": "auto"})
    spec = ServiceSpec(name="dashboard_api", schema=None, migrations_package=None)
    async with running_service(spec, auto, redis) as first, running_service(spec, auto, redis) as second:
        assert (first.settings.instance, second.settings.instance) == ("dashboard_api-0", "dashboard_api-1")
        assert first.consumer.name == "dashboard_api-0"
        assert first.publisher.source == "dashboard_api/dashboard_api-0"
    assert await redis.exists(slot_key(settings.stream_namespace, "dashboard_api", 0)) == 0
    assert await redis.exists(slot_key(settings.stream_namespace, "dashboard_api", 1)) == 0


def test_consumer_names_are_the_instance_when_it_names_the_service_else_prefixed() -> None:
    assert consumer_name("risk", "risk-1") == "risk-1"
    assert consumer_name("risk", "vm-7f3a") == "risk-vm-7f3a"
    assert consumer_name("market_data", "market-data-0") == "market_data-market-data-0"
