"""A consumer in a process of its own, for the test that kills it with SIGKILL mid-handler.

Usage: python consumer_process.py REDIS_URL NAMESPACE CONSUMER_NAME
Its handler announces the entry it holds (`<namespace>held` = entry id) and then never returns.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from volguard_common import events
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher


async def main(redis_url: str, namespace: str, name: str) -> None:
    redis = Redis.from_url(redis_url)
    config = BusConfig(namespace=namespace, block_ms=100, claim_idle_ms=60_000, claim_interval_ms=60_000)
    publisher = Publisher(redis, config, service="risk", source=f"risk/{name}")
    consumer = Consumer(redis, config, publisher, service="risk", consumer_name=name)

    async def hold_forever(event: events.Event, delivery: Delivery) -> None:
        await redis.set(f"{namespace}held", delivery.entry_id)
        await asyncio.Event().wait()

    consumer.subscribe("st.intents", hold_forever)
    await consumer.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
