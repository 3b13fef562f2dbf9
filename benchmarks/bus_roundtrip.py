"""One publish → handle → ack hop through `volguard_common.bus` against a raw redis.asyncio loop.

Both sides move the same ~20 KB ChainSnapshot through the same Redis, in one run:
- raw: XADD the pre-serialised bytes → XREADGROUP → XACK, nothing parsed;
- bus: `Publisher.publish(snapshot)` (serialises) → `Consumer` reads, validates the event, calls the
  handler, acknowledges.
Latency is measured one message in flight (publish until the XACK reply is in), the raw hop, a raw
hop with a parked reader and the bus hop taken in turn, message by message, so machine noise lands on
all alike. Throughput: a producer publishes N messages while the consumer handles and acknowledges
them, timed until the last ack. In
VolGuard the producer and the consumer are different processes (market_data publishes, analytics
consumes), so the headline throughput runs the producer in a process of its own, for raw and bus
alike; the same figure with both in one Python thread (their CPU costs then add up) is printed too.
Targets (issue 2): bus p99 ≤ 1.5× raw, bus throughput ≥ 0.6× raw.

Outbox (issue 13): the same snapshot published through `volguard_common.outbox` - inserted in a
Postgres transaction, committed, then moved to Redis by the relay woken by NOTIFY. Its line reports
commit → published (the relay's XADD done) p50/p99, next to the raw hop of the same run, plus the
whole transaction-to-published time; the hops are taken in turn with the others, message by message.

Run: .venv/bin/python benchmarks/bus_roundtrip.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from volguard_cli import infra
from volguard_common import db, events, outbox
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher
from volguard_common.events_samples import STRIKES_FOR_20KB, sample_chain_snapshot

ROOT = Path(__file__).resolve().parents[1]
STREAM = "md.chain"
GROUP = "analytics"


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _producer(kind: str, redis_url: str, target: str, n: int, go: Any, ready: Any) -> None:
    """A producer process: raw XADDs of the serialised snapshot, or bus publishes of the model."""

    async def produce() -> None:
        redis = Redis.from_url(redis_url)
        snapshot = sample_chain_snapshot(STRIKES_FOR_20KB)
        payload = snapshot.model_dump_json().encode()
        publisher = Publisher(
            redis, BusConfig(namespace=target), service="market_data", source="market_data/bench"
        )
        await redis.ping()
        ready.set()
        go.wait()
        for _ in range(n):
            if kind == "raw":
                await redis.xadd(target, {b"event": payload})
            else:
                await publisher.publish(snapshot)
        await redis.aclose()

    asyncio.run(produce())


async def _with_producer_process(kind: str, redis_url: str, target: str, n: int, consume: Any) -> float:
    context = multiprocessing.get_context("spawn")
    go, ready = context.Event(), context.Event()
    process = context.Process(target=_producer, args=(kind, redis_url, target, n, go, ready))
    process.start()
    await asyncio.get_running_loop().run_in_executor(None, ready.wait)
    start = time.perf_counter()
    go.set()
    await consume()
    elapsed = time.perf_counter() - start
    await asyncio.get_running_loop().run_in_executor(None, process.join)
    return n / elapsed


async def raw_throughput_2p(redis: Redis, redis_url: str, key: str, n: int, batch: int) -> float:
    await redis.xgroup_create(key, GROUP, id="$", mkstream=True)

    async def consume() -> None:
        acked = 0
        while acked < n:
            response = await redis.xreadgroup(GROUP, "raw", {key: ">"}, count=batch, block=1000)
            if response:
                ids = [entry_id for entry_id, _ in response[0][1]]
                await redis.xack(key, GROUP, *ids)
                acked += len(ids)

    return await _with_producer_process("raw", redis_url, key, n, consume)


async def bus_throughput_2p(redis: Redis, redis_url: str, namespace: str, n: int, batch: int) -> float:
    config = BusConfig(namespace=namespace, block_ms=1000, batch=batch)
    publisher = Publisher(redis, config, service="analytics", source="analytics/bench")
    consumer = Consumer(redis, config, publisher, service=GROUP, consumer_name="bus")
    done = asyncio.Event()
    acked = 0

    def count(stream: str, ids: Sequence[str]) -> None:
        nonlocal acked
        acked += len(ids)
        if acked >= n:
            done.set()

    async def handle(event: events.Event, delivery: Delivery) -> None:
        assert isinstance(event, events.ChainSnapshot)

    consumer.ack_listeners.append(count)
    consumer.subscribe(STREAM, handle)
    await consumer.start()
    try:
        return await _with_producer_process("bus", redis_url, namespace, n, done.wait)
    finally:
        await consumer.stop()


async def latencies_interleaved(
    redis: Redis, prefix: str, payload: bytes, snapshot: events.ChainSnapshot, n: int
) -> dict[str, list[float]]:
    """n hops of each kind, taken in turn - raw, raw with a parked reader, bus, raw, ... - so that
    whatever the machine does during the run (another process, a frequency step, an interrupt storm)
    lands on all three alike; tails are where that matters most. Each kind has its own stream and
    connection; the parked reader and the bus consumer wait on their own streams meanwhile.

    A hop ends when its XACK reply is in, timestamped right there for all three kinds: the loop
    raw hop reads the clock after its own XACK; the parked reader and the bus consumer (through
    its ack listener) pass the time of theirs to the timing task. What the event loop runs before it
    resumes the timing task - the reader re-arming its XREADGROUP - is the next read's cost, not
    this hop's; in VolGuard the producer is another process and nothing waits on the ack."""
    raw_key, parked_key = f"{prefix}raw", f"{prefix}parked"
    await redis.xgroup_create(raw_key, GROUP, id="$", mkstream=True)
    await redis.xgroup_create(parked_key, GROUP, id="$", mkstream=True)
    parked_acked: asyncio.Queue[float] = asyncio.Queue()

    async def parked_reader() -> None:
        while True:
            response = await redis.xreadgroup(GROUP, "raw", {parked_key: ">"}, count=32, block=1000)
            if response:
                await redis.xack(parked_key, GROUP, *[entry_id for entry_id, _ in response[0][1]])
                parked_acked.put_nowait(time.perf_counter())

    config = BusConfig(namespace=f"{prefix}bus:", block_ms=1000)
    publisher = Publisher(redis, config, service="market_data", source="market_data/bench")
    consumer = Consumer(redis, config, publisher, service=GROUP, consumer_name="bus")
    bus_acked: asyncio.Queue[float] = asyncio.Queue()
    consumer.ack_listeners.append(lambda stream, ids: bus_acked.put_nowait(time.perf_counter()))

    async def handle(event: events.Event, delivery: Delivery) -> None:
        assert isinstance(event, events.ChainSnapshot)

    consumer.subscribe(STREAM, handle)
    await consumer.start()
    reader = asyncio.create_task(parked_reader())
    samples: dict[str, list[float]] = {"raw": [], "raw_blocked": [], "bus": []}
    try:
        for _ in range(n):
            start = time.perf_counter()
            await redis.xadd(raw_key, {b"event": payload})
            response = await redis.xreadgroup(GROUP, "raw", {raw_key: ">"}, count=1, block=1000)
            await redis.xack(raw_key, GROUP, response[0][1][0][0])
            samples["raw"].append(time.perf_counter() - start)

            start = time.perf_counter()
            await redis.xadd(parked_key, {b"event": payload})
            samples["raw_blocked"].append(await parked_acked.get() - start)

            start = time.perf_counter()
            await publisher.publish(snapshot)
            samples["bus"].append(await bus_acked.get() - start)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
    return samples


async def outbox_latencies(
    redis: Redis, pool: db.Pool, database_url: str, prefix: str, snapshot: events.ChainSnapshot, n: int
) -> dict[str, list[float]]:
    """n outbox publishes, one in flight: commit → published, and transaction start → published."""
    relay = outbox.OutboxRelay(
        pool, redis, BusConfig(namespace=prefix), publisher="market_data", database_url=database_url
    )
    sent: asyncio.Queue[float] = asyncio.Queue()
    relay.sent_listeners.append(lambda event_ids: sent.put_nowait(time.perf_counter()))
    task = asyncio.create_task(relay.run())
    samples: dict[str, list[float]] = {"outbox_commit": [], "outbox_total": []}
    try:
        # The relay LISTENs once it has started; the first publish waits for it through the poll.
        async with outbox.transaction(pool, publisher="market_data") as tx:
            await tx.publish(snapshot.model_copy(update={"event_id": events.new_event_id()}))
        await sent.get()
        for _ in range(n):
            event = snapshot.model_copy(update={"event_id": events.new_event_id()})
            start = time.perf_counter()
            async with outbox.transaction(pool, publisher="market_data") as tx:
                await tx.publish(event)
            committed = time.perf_counter()
            published = await sent.get()
            samples["outbox_commit"].append(published - committed)
            samples["outbox_total"].append(published - start)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return samples


async def raw_throughput(redis: Redis, key: str, payload: bytes, n: int, batch: int) -> float:
    await redis.xgroup_create(key, GROUP, id="$", mkstream=True)
    done = asyncio.Event()
    acked = 0

    async def consume() -> None:
        nonlocal acked
        while acked < n:
            response = await redis.xreadgroup(GROUP, "raw", {key: ">"}, count=batch, block=1000)
            if not response:
                continue
            ids = [entry_id for entry_id, _ in response[0][1]]
            await redis.xack(key, GROUP, *ids)
            acked += len(ids)
        done.set()

    start = time.perf_counter()
    consumer = asyncio.create_task(consume())
    for _ in range(n):
        await redis.xadd(key, {b"event": payload})
    await done.wait()
    await consumer
    return n / (time.perf_counter() - start)


async def bus_throughput(
    redis: Redis, namespace: str, snapshot: events.ChainSnapshot, n: int, batch: int
) -> float:
    config = BusConfig(namespace=namespace, block_ms=1000, batch=batch)
    publisher = Publisher(redis, config, service="market_data", source="market_data/bench")
    consumer = Consumer(redis, config, publisher, service=GROUP, consumer_name="bus")
    done = asyncio.Event()
    acked = 0

    def count(stream: str, ids: Sequence[str]) -> None:
        nonlocal acked
        acked += len(ids)
        if acked >= n:
            done.set()

    consumer.ack_listeners.append(count)

    async def handle(event: events.Event, delivery: Delivery) -> None:
        assert isinstance(event, events.ChainSnapshot)

    consumer.subscribe(STREAM, handle)
    await consumer.start()
    try:
        start = time.perf_counter()
        for _ in range(n):
            await publisher.publish(snapshot)
        await done.wait()
        elapsed = time.perf_counter() - start
    finally:
        await consumer.stop()
    return n / elapsed


async def main(messages: int, rounds: int) -> None:
    endpoints = infra.ensure_infra(
        ROOT / ".volguard" / "bench",
        "redis://127.0.0.1:6379/0",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    redis = Redis.from_url(endpoints.redis_url)
    bench_db = f"vgbench_{uuid.uuid4().hex[:8]}"
    admin_url = endpoints.database_url
    database_url = admin_url.rsplit("/", 1)[0] + f"/{bench_db}"
    await db.ensure_database(database_url)
    pool = await db.create_pool(database_url, min_size=1, max_size=4)
    await db.ensure_core_schema(pool)
    snapshot = sample_chain_snapshot(STRIKES_FOR_20KB)
    payload = snapshot.model_dump_json().encode()
    prefix = f"vgbench:{uuid.uuid4().hex[:8]}:"
    batch = 32
    results: dict[str, dict[str, list[float]]] = {
        "raw": {"lat": [], "tput": [], "tput1": []},
        "raw_blocked": {"lat": []},
        "bus": {"lat": [], "tput": [], "tput1": []},
        "outbox_commit": {"lat": []},
        "outbox_total": {"lat": []},
    }
    try:
        # Latency hop by hop in turn (see latencies_interleaved); throughput in rounds, side by side.
        for r in range(rounds):
            hops = await latencies_interleaved(redis, f"{prefix}lat{r}:", payload, snapshot, messages)
            for side, samples in hops.items():
                results[side]["lat"] += samples
            box = await outbox_latencies(redis, pool, database_url, f"{prefix}box{r}:", snapshot, messages)
            for side, samples in box.items():
                results[side]["lat"] += samples
            for side in ("raw", "bus"):
                ns = f"{prefix}{side}{r}:"
                url = endpoints.redis_url
                if side == "raw":
                    results[side]["tput"].append(
                        await raw_throughput_2p(redis, url, f"{ns}tput2", messages, batch)
                    )
                    results[side]["tput1"].append(
                        await raw_throughput(redis, f"{ns}tput", payload, messages, batch)
                    )
                else:
                    results[side]["tput"].append(
                        await bus_throughput_2p(redis, url, f"{ns}tput2:", messages, batch)
                    )
                    results[side]["tput1"].append(
                        await bus_throughput(redis, f"{ns}tput:", snapshot, messages, batch)
                    )
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await pool.close()
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')
        finally:
            await admin.close()

    print(f"payload: ChainSnapshot with {len(snapshot.strike)} strikes, {len(payload):,} bytes of JSON")
    print(f"{rounds} rounds x {messages} messages per side (latency hop by hop in turn, throughput "
          f"round by round); Redis at {endpoints.redis_url}")  # fmt: skip
    print(f"{'':6}{'p50 µs':>10}{'p99 µs':>10}{'msg/s':>10}{'msg/s, 1 thread':>17}")
    summary = {}
    for side in ("raw", "bus"):
        lat = results[side]["lat"]
        p50, p99 = percentile(lat, 0.50) * 1e6, percentile(lat, 0.99) * 1e6
        tput = statistics.median(results[side]["tput"])
        tput1 = statistics.median(results[side]["tput1"])
        summary[side] = (p50, p99, tput, tput1)
        print(f"{side:6}{p50:10.0f}{p99:10.0f}{tput:10.0f}{tput1:17.0f}")
    blocked = results["raw_blocked"]["lat"]
    b50, b99 = percentile(blocked, 0.50) * 1e6, percentile(blocked, 0.99) * 1e6
    print(f"{'raw, consumer parked in XREADGROUP BLOCK (reference, not the anchor)':<6}")
    print(f"{'':6}{b50:10.0f}{b99:10.0f}")
    p50_ratio = summary["bus"][0] / summary["raw"][0]
    p99_ratio = summary["bus"][1] / summary["raw"][1]
    tput_ratio = summary["bus"][2] / summary["raw"][2]
    tput1_ratio = summary["bus"][3] / summary["raw"][3]
    print(
        f"ratio bus/raw: p50 {p50_ratio:.2f}x  p99 {p99_ratio:.2f}x (target ≤ 1.5x)  "
        f"throughput {tput_ratio:.2f}x (target ≥ 0.6x; producer and consumer in one thread "
        f"{tput1_ratio:.2f}x)"
    )
    print(
        f"bus vs the same hop shape done raw (consumer parked in a blocking read): "
        f"p50 {summary['bus'][0] / b50:.2f}x  p99 {summary['bus'][1] / b99:.2f}x"
    )
    c50, c99 = (percentile(results["outbox_commit"]["lat"], q) * 1e6 for q in (0.50, 0.99))
    t50, t99 = (percentile(results["outbox_total"]["lat"], q) * 1e6 for q in (0.50, 0.99))
    print(
        f"outbox commit → published: p50 {c50:.0f} µs  p99 {c99:.0f} µs "
        f"({c50 / summary['raw'][0]:.2f}x / {c99 / summary['raw'][1]:.2f}x the raw hop); "
        f"transaction start → published p50 {t50:.0f} µs  p99 {t99:.0f} µs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.rounds))
