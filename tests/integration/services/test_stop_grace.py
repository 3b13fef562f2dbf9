"""A service's stop is bounded by VOLGUARD_STOP_GRACE_S: a hung handler is cut off, its entry kept."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from tests.support.samples import sample_intent
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Delivery, Publisher
from volguard_common.service import ServiceContext, ServiceSpec, start_service, stop_service
from volguard_common.settings import Settings


async def test_a_hung_handler_is_cut_off_within_the_services_grace_and_its_entry_stays_pending(
    redis: Redis, settings: Settings
) -> None:
    started = asyncio.Event()

    async def hangs(event: events.Event, delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()  # never returns: a broker call that never answers

    async def setup(context: ServiceContext) -> None:
        context.consumer.subscribe("st.intents", hangs)

    spec = ServiceSpec(name="risk", schema=None, migrations_package=None, setup=setup)
    # Far below the bus's own 30 s default stop grace, so only the setting can make the stop this short.
    context = await start_service(spec, settings.model_copy(update={"stop_grace_s": 1.0}), redis)
    publisher = Publisher(
        redis, BusConfig(namespace=settings.stream_namespace), service="strategy", source="t"
    )
    await publisher.publish(sample_intent(), "st.intents")
    await eventually(lambda: asyncio.sleep(0, started.is_set()), what="handler running")

    began = time.monotonic()
    await stop_service(context)
    took_s = time.monotonic() - began

    assert took_s < 15.0, f"stop took {took_s:.1f} s: not bounded by VOLGUARD_STOP_GRACE_S"
    pending = await redis.xpending(settings.stream_namespace + "st.intents", "risk")
    assert pending["pending"] == 1  # cut off, not acknowledged: handled again after the restart
