"""SIGKILL of the active execution process mid-basket: the standby takes the lease, reconciles with the
paper account the dead process left in Postgres, and finishes or unwinds the basket — nothing naked,
nothing doubled. Real processes (`python -m volguard_execution`), real Redis and Postgres.

The basket is caught mid-way on purpose: market data is what moves exchange time on the paper exchange,
so once the wings have filled and the shorts are working, the test stops the market, kills the active
replica, and only then lets the market run again.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.integration.execution.test_execution_service import chain, condor_from, reports
from tests.support.replicas import ServiceReplica, killed_at_teardown
from tests.support.waiting import eventually
from volguard_common import db, events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.events._base import Side
from volguard_common.events.orders import BasketStatus, OrderStatus
from volguard_common.events_samples import DEFAULT_TS_EVENT
from volguard_common.settings import Settings

TTL_MS = 2000
POLL_MS = 100


@pytest.fixture
def replicas() -> Iterator[list[ServiceReplica]]:
    yield from killed_at_teardown()


async def test_sigkill_of_the_active_execution_mid_basket_ends_with_the_standby_unwinding_it(
    redis: Redis,
    settings: Settings,
    fresh_database_url: str,
    tmp_path: Path,
    replicas: list[ServiceReplica],
) -> None:
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    config = BusConfig.from_settings(settings)
    market = Publisher(redis, config, service="market_data", source="market_data/test")
    risk = Publisher(redis, config, service="risk", source="risk/test")

    a = ServiceReplica("execution", "a", settings, tmp_path, lease_ttl_ms=TTL_MS, lease_poll_ms=POLL_MS)
    replicas.append(a)
    await eventually(lambda: a.in_role("active"), what="execution-a active", patience_s=120)
    b = ServiceReplica("execution", "b", settings, tmp_path, lease_ttl_ms=TTL_MS, lease_poll_ms=POLL_MS)
    replicas.append(b)
    await eventually(lambda: b.in_role("standby"), what="execution-b standing by", patience_s=120)

    ts = DEFAULT_TS_EVENT
    first = chain(ts)
    await market.publish(first)
    basket = condor_from(first, "basket-failover")
    await risk.publish(basket.model_copy(update={"ts_event": ts + timedelta(milliseconds=10)}))

    async def shorts_working() -> bool:
        nonlocal ts
        everything = await reports(redis, config)
        wings_filled = {
            e.leg_index
            for e in everything
            if isinstance(e, events.OrderUpdate) and e.side is Side.BUY and e.status is OrderStatus.FILLED
        }
        shorts_placed = any(isinstance(e, events.OrderUpdate) and e.side is Side.SELL for e in everything)
        if wings_filled == {0, 1} and shorts_placed:
            return True
        if not shorts_placed:
            # Move the market (and exchange time) only until the shorts go out.
            ts += timedelta(milliseconds=200)
            await market.publish(chain(ts))
        return False

    await eventually(shorts_working, what="wings filled and shorts working", poll_s=0.1, patience_s=120)
    a.process.send_signal(signal.SIGKILL)
    a.process.wait()
    await eventually(lambda: b.in_role("active"), what="execution-b active after a died", patience_s=120)

    async def ended() -> events.BasketResult | None:
        nonlocal ts
        ts += timedelta(seconds=1)
        await market.publish(chain(ts))
        found = [e for e in await reports(redis, config) if isinstance(e, events.BasketResult)]
        return found[0] if found else None

    result = await eventually(ended, what="the basket's end after failover", poll_s=0.2, patience_s=120)
    assert isinstance(result, events.BasketResult)
    assert result.basket_id == basket.basket_id
    assert result.status in (BasketStatus.UNWOUND, BasketStatus.FILLED), result
    everything = await reports(redis, config)
    assert sum(isinstance(e, events.BasketResult) for e in everything) == 1

    pool = await db.create_pool(settings.database_url)
    try:
        positions = {
            row["instrument_key"]: int(row["units"])
            for row in await pool.fetch(
                "select instrument_key, sum(case when side = 'BUY' then quantity else -quantity end) "
                "as units from execution.paper_trades group by instrument_key"
            )
        }
        # Nothing doubled: one exchange order per client order id and slice, across both processes.
        per_tag = await pool.fetch(
            "select client_order_id, count(*) as n from execution.paper_orders group by client_order_id"
        )
        fills = await pool.fetchval("select count(*) from execution.fills")
        paper_trades = await pool.fetchval("select count(*) from execution.paper_trades")
    finally:
        await pool.close()
    assert all(row["n"] == 1 for row in per_tag), [dict(r) for r in per_tag]
    assert fills == paper_trades
    planned = {
        leg.instrument_key: (leg.quantity if leg.side is Side.BUY else -leg.quantity) for leg in basket.legs
    }
    if result.status is BasketStatus.UNWOUND:
        assert not any(positions.values()), positions
        alerts = [
            events.parse_event(fields[b"event"]) for _, fields in await redis.xrange(config.key("sys.alerts"))
        ]
        assert "BASKET_UNWIND" in {a.code for a in alerts if isinstance(a, events.Alert)}
    else:
        assert {k: v for k, v in positions.items() if v} == planned
