"""Execution end to end: an ExecuteBasket on ex.commands → the first broker ack (OrderUpdate OPEN on
ex.reports) and → the basket filled (BasketResult FILLED), for a 4-leg iron condor on the paper exchange,
against the bus hop floor measured in the same run.

The execution service runs in-process (real Redis, real Postgres, the fenced outbox, the paper broker).
What is timed is wall time from the command's publish to the report's arrival at a reader of
ex.reports. A command→ack is at least two bus hops (command in, report out through the outbox relay)
plus Postgres transactions (dedup, the NEW order, the OPEN order); the floor is one bus hop of the same
ExecuteBasket payload, publish → handled, through the same Redis.

The paper exchange runs in exchange time, which market data moves: a feeder publishes a chain snapshot
every FEED_MS of wall time, each advancing exchange time by 100 ms, with bid = ask = the mid on the
tick grid, so a resting limit at or through mid fills on the next snapshot. Basket filled therefore
includes waiting for market data (about one feeder period per stage: wings, then shorts) - reported with
the feeder period, not hidden.

Run: .venv/bin/python benchmarks/execution.py [--baskets N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
import uuid
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from volguard_cli import infra
from volguard_common import events
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_common.service import start_service, stop_service
from volguard_common.settings import Settings
from volguard_execution.app import SPEC

ROOT = Path(__file__).resolve().parents[1]
FEED_MS = 20
TICK = Decimal("0.05")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def locked_chain(ts: Any) -> events.ChainSnapshot:
    """The sample chain with every quote locked at its mid (rounded to the tick): resting limits at or
    through mid fill."""
    base = sample_chain_snapshot(41, ts_event=ts)
    data = base.model_dump(mode="python", exclude={"columns", "event_id", "correlation_id"})
    columns = {
        name: [v.item() if hasattr(v, "item") else v for v in getattr(base, name)]
        for name in events.CHAIN_COLUMNS
    }
    for side in ("call", "put"):
        for i, (bid, ask) in enumerate(zip(columns[f"{side}_bid"], columns[f"{side}_ask"], strict=True)):
            if math.isnan(float(bid)) or math.isnan(float(ask)):
                continue
            mid = (Decimal(repr(float(bid))) + Decimal(repr(float(ask)))) / 2
            locked = float((mid / TICK).quantize(Decimal(1), rounding=ROUND_HALF_UP) * TICK)
            columns[f"{side}_bid"][i] = locked
            columns[f"{side}_ask"][i] = locked
    data["columns"] = columns
    return events.ChainSnapshot.model_validate(data)


def condor(snapshot: events.ChainSnapshot, basket_id: str) -> events.ExecuteBasket:
    strikes = [float(s) for s in snapshot.strike]
    atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - (snapshot.forward or snapshot.spot)))
    plan = [
        (atm + 8, "CE", "BUY", 0),
        (atm - 8, "PE", "BUY", 0),
        (atm + 4, "CE", "SELL", 1),
        (atm - 4, "PE", "SELL", 1),
    ]
    legs = []
    for index, (row, option_type, side, sequence) in enumerate(plan):
        call = option_type == "CE"
        key = (snapshot.call_instrument_key if call else snapshot.put_instrument_key)[row]
        bid = float((snapshot.call_bid if call else snapshot.put_bid)[row])
        ask = float((snapshot.call_ask if call else snapshot.put_ask)[row])
        mid = (bid + ask) / 2
        legs.append(
            events.BasketLeg(
                instrument_key=str(key),
                expiry=snapshot.expiry,
                strike=strikes[row],
                option_type=events.OptionType(option_type),
                side=events.Side(side),
                quantity=snapshot.lot_size,
                limit_price=round(Decimal(str(mid)), 2),
                leg_index=index,
                sequence=sequence,
                client_order_id=events.client_order_id(basket_id, index, 0),
            )
        )
    return events.ExecuteBasket(
        ts_event=snapshot.ts_event,
        source="risk/bench",
        basket_id=basket_id,
        intent_id=f"intent-{basket_id}",
        purpose=events.IntentKind.ENTRY,
        bucket=events.Bucket.WEEKLY,
        structure=events.Structure.IRON_CONDOR,
        lot_size=snapshot.lot_size,
        legs=legs,
        urgency=events.Urgency.URGENT,
        reason="benchmark",
    )


async def bus_floor(redis: Redis, namespace: str, snapshot: events.ChainSnapshot, n: int) -> list[float]:
    """One bus hop of the same payload: publish → handled, one message in flight."""
    config = BusConfig(namespace=namespace, block_ms=1000)
    publisher = Publisher(redis, config, service="risk", source="risk/bench")
    consumer = Consumer(redis, config, publisher, service="execution", consumer_name="floor")
    handled: asyncio.Queue[float] = asyncio.Queue()

    async def handle(event: events.Event, delivery: Delivery) -> None:
        handled.put_nowait(time.perf_counter())

    consumer.subscribe("ex.commands", handle)
    await consumer.start()
    samples = []
    try:
        for i in range(n):
            start = time.perf_counter()
            await publisher.publish(condor(snapshot, f"floor-{i}"))
            samples.append(await handled.get() - start)
    finally:
        await consumer.stop()
    return samples


async def main(baskets: int) -> None:
    endpoints = infra.ensure_infra(
        ROOT / ".volguard" / "bench",
        "redis://127.0.0.1:6379/0",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    redis = Redis.from_url(endpoints.redis_url)
    bench_db = f"vgbench_{uuid.uuid4().hex[:8]}"
    admin_url = endpoints.database_url
    database_url = admin_url.rsplit("/", 1)[0] + f"/{bench_db}"
    prefix = f"vgbench:{uuid.uuid4().hex[:8]}:"
    settings = Settings(
        redis_url=endpoints.redis_url,
        database_url=database_url,
        stream_namespace=f"{prefix}svc:",
        instance="bench",
        bus_block_ms=100,
    )
    config = BusConfig.from_settings(settings)
    ack_s: list[float] = []
    filled_s: list[float] = []
    ts = DEFAULT_TS_EVENT
    context = await start_service(SPEC, settings, redis)
    market = Publisher(redis, config, service="market_data", source="market_data/bench")
    risk = Publisher(redis, config, service="risk", source="risk/bench")
    stop_feed = asyncio.Event()

    async def feed() -> None:
        nonlocal ts
        while not stop_feed.is_set():
            ts += timedelta(milliseconds=100)
            await market.publish(locked_chain(ts))
            await asyncio.sleep(FEED_MS / 1000)

    try:
        first = locked_chain(ts)
        await market.publish(first)
        feeder = asyncio.create_task(feed())
        reports_key = config.key("ex.reports")
        last_id = "$"
        for i in range(baskets):
            basket = condor(first, f"bench-{i}").model_copy(update={"ts_event": ts})
            start = time.perf_counter()
            await risk.publish(basket)
            acked = None
            while True:
                response = await redis.xread({reports_key: last_id}, block=5000, count=100)
                if not response:
                    raise RuntimeError(f"no report for {basket.basket_id} within 5 s")
                for entry_id, fields in response[0][1]:
                    last_id = entry_id
                    event = events.parse_event(fields[b"event"])
                    if getattr(event, "basket_id", None) != basket.basket_id:
                        continue
                    now = time.perf_counter()
                    opened = isinstance(event, events.OrderUpdate) and event.status is events.OrderStatus.OPEN
                    if acked is None and opened:
                        acked = now - start
                    if isinstance(event, events.BasketResult):
                        if event.status is not events.BasketStatus.FILLED:
                            raise RuntimeError(f"{basket.basket_id} ended {event.status}: {event.message}")
                        assert acked is not None
                        ack_s.append(acked)
                        filled_s.append(now - start)
                        break
                else:
                    continue
                break
        stop_feed.set()
        await feeder
        floor = await bus_floor(redis, f"{prefix}floor:", first, baskets * 5)
    finally:
        stop_feed.set()
        await stop_service(context)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')
        finally:
            await admin.close()

    def line(name: str, samples: list[float]) -> tuple[float, float]:
        p50, p99 = percentile(samples, 0.5) * 1e3, percentile(samples, 0.99) * 1e3
        print(f"{name:34}{p50:10.1f}{p99:10.1f}{statistics.mean(samples) * 1e3:10.1f}")
        return p50, p99

    print(
        f"{baskets} baskets (4-leg iron condor, 1 lot, URGENT) on the paper exchange; market data every "
        f"{FEED_MS} ms of wall time (+100 ms of exchange time each); Redis {endpoints.redis_url}"
    )
    print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    f50, f99 = line("bus hop floor (publish → handled)", floor)
    a50, a99 = line("command → first broker ack", ack_s)
    b50, b99 = line("command → basket filled", filled_s)
    print(
        f"ack / floor: p50 {a50 / f50:.1f}x  p99 {a99 / f99:.1f}x;  "
        f"filled / floor: p50 {b50 / f50:.1f}x  p99 {b99 / f99:.1f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baskets", type=int, default=30)
    asyncio.run(main(parser.parse_args().baskets))
