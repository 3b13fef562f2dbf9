"""A consumer replica in a process of its own with an instrumented slow handler.

Usage: python replica_process.py REDIS_URL NAMESPACE CONSUMER_NAME CLAIM_IDLE_MS HANDLER_MS
Each handled entry adds its id to `<namespace>active` while the handler runs (an id already there
means another replica is running it at the same moment: recorded in `<namespace>overlaps`) and
appends "consumer entry_id" to `<namespace>runs` when it is done. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from redis.asyncio import Redis

from volguard_common import events
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher


async def main(redis_url: str, namespace: str, name: str, claim_idle_ms: int, handler_ms: int) -> None:
    redis = Redis.from_url(redis_url)
    config = BusConfig(namespace=namespace, block_ms=100, claim_idle_ms=claim_idle_ms, claim_interval_ms=100)
    publisher = Publisher(redis, config, service="risk", source=f"risk/{name}")
    consumer = Consumer(redis, config, publisher, service="risk", consumer_name=name)

    async def slow(event: events.Event, delivery: Delivery) -> None:
        if not await redis.sadd(f"{namespace}active", delivery.entry_id):
            await redis.rpush(f"{namespace}overlaps", f"{name} {delivery.entry_id}")  # type: ignore[misc]
        await asyncio.sleep(handler_ms / 1000)
        await redis.srem(f"{namespace}active", delivery.entry_id)
        await redis.rpush(f"{namespace}runs", f"{name} {delivery.entry_id}")  # type: ignore[misc]

    consumer.subscribe("st.intents", slow, handler_timeout_s=60)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await redis.set(f"{namespace}started:{name}", "1")
    await stop.wait()
    await consumer.stop()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
