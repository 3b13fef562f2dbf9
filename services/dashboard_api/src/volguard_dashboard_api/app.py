"""The dashboard_api process (DESIGN §1): REST, WebSocket and the web page over every snapshot stream.

Each replica reads every stream through a consumer group of its own (`streams.GROUP_PER_REPLICA`)
and keeps its own view; commands go through `ctl.commands`, so replicas behind a proxy agree.
"""

from __future__ import annotations

import structlog

from volguard_common import events, streams
from volguard_common.bus import EVENT_FIELD, BusConfig, Delivery
from volguard_common.service import ServiceContext, ServiceSpec
from volguard_dashboard_api.api import build_api
from volguard_dashboard_api.notify import Notifier
from volguard_dashboard_api.runtime import Dashboard

log = structlog.get_logger("volguard.dashboard")


async def setup(context: ServiceContext) -> None:
    settings = context.settings
    dashboard = Dashboard(
        ws_queue=settings.dashboard_ws_queue, notifier=Notifier(settings, context.redis, context.pool)
    )
    await _seed(context, dashboard)
    for stream in streams.SUBSCRIPTIONS["dashboard_api"]:
        context.consumer.subscribe(stream, dashboard.handle)
    context.extensions["dashboard"] = dashboard


async def _seed(context: ServiceContext, dashboard: Dashboard) -> None:
    """A new replica's group starts at the end of snapshot streams: take the newest of each now, so
    the page shows the current state before the next snapshot is published."""
    for name in streams.SUBSCRIPTIONS["dashboard_api"]:
        if streams.spec(name).retention is not streams.Retention.SNAPSHOT:
            continue
        key = BusConfig.from_settings(context.settings).key(name)
        # Ticks interleave index, VIX and futures: enough of them to find the newest of each.
        newest = await context.redis.xrevrange(key, count=20 if name == streams.MD_TICKS.name else 1)
        for entry_id, fields in reversed(newest):
            payload = fields.get(EVENT_FIELD)
            if payload is None:
                continue
            event = events.parse_event(payload)
            entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            await dashboard.handle(event, Delivery(name, entry, 0, "seed"))


SPEC = ServiceSpec(
    name="dashboard_api",
    schema="dashboard",
    migrations_package="volguard_dashboard_api",
    setup=setup,
    edge=build_api,
    description="REST, WebSocket and the web page over every snapshot stream; issues operator commands.",
)
