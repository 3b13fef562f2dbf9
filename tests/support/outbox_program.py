"""A risk-like handler on the real library, which SIGKILLs itself at a named crash point.

Usage: python -m tests.support.outbox_program REDIS_URL DATABASE_URL NAMESPACE CRASH_POINT

It consumes st.intents as the `risk` group (consumer `risk-crash`, the same name at every start, so
a restart drains what the killed run left pending) and, for each intent, in one outbox transaction:
records the intent in `public.crash_effects` (the DB effect), marks it processed and publishes a
RiskDecision. The outbox relay runs alongside. CRASH_POINT is where the process kills itself:

- before_commit: inside the transaction, after the effect and the publish;
- after_commit: right after the commit, before the event loop can run the relay;
- after_xadd: in the relay, after the XADD and before the rows are marked sent;
- after_ack: right after the consumer acknowledged the intent;
- none: never; runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from redis.asyncio import Redis

from volguard_common import db, events, outbox
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher

CRASH_POINTS = ("before_commit", "after_commit", "after_xadd", "after_ack", "none")


def crash_if(point: str, crash_point: str) -> None:
    if point == crash_point:
        os.kill(os.getpid(), signal.SIGKILL)


async def main(redis_url: str, database_url: str, namespace: str, crash_point: str) -> None:
    if crash_point not in CRASH_POINTS:
        raise SystemExit(f"unknown crash point {crash_point!r}; known: {CRASH_POINTS}")
    redis = Redis.from_url(redis_url)
    pool = await db.create_pool(database_url)
    await db.ensure_core_schema(pool)
    await pool.execute("CREATE TABLE IF NOT EXISTS public.crash_effects (intent_id text NOT NULL)")
    config = BusConfig(namespace=namespace, block_ms=100, claim_idle_ms=60_000, claim_interval_ms=60_000)
    publisher = Publisher(redis, config, service="risk", source="risk/crash")
    consumer = Consumer(redis, config, publisher, service="risk", consumer_name="risk-crash")
    relay = outbox.OutboxRelay(
        pool,
        redis,
        config,
        publisher="risk",
        database_url=database_url,
        poll_interval_ms=200,
        crash_hook=lambda point: crash_if(point, crash_point),
    )

    async def decide(event: events.Event, delivery: Delivery) -> None:
        assert isinstance(event, events.TradeIntent)
        async with outbox.handle_once(pool, group="risk", event_id=event.event_id, publisher="risk") as tx:
            if tx is not None:
                await tx.conn.execute("INSERT INTO public.crash_effects VALUES ($1)", event.intent_id)
                await tx.publish(
                    events.RiskDecision(
                        ts_event=event.ts_event,
                        source=publisher.source,
                        correlation_id=event.correlation_id,
                        intent_id=event.intent_id,
                        approved=False,
                        reasons=["crash test: rejected"],
                        checks=[],
                        requested_lots=1,
                        approved_lots=0,
                    )
                )
                crash_if("before_commit", crash_point)
        # No await between the commit and here: the relay cannot have run yet.
        crash_if("after_commit", crash_point)

    consumer.ack_listeners.append(lambda stream, ids: crash_if("after_ack", crash_point))
    consumer.subscribe("st.intents", decide)
    relay_task = asyncio.create_task(relay.run())
    await consumer.start()
    await relay_task


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
