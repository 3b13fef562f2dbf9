"""A full simulated trading day, generated and published, against the real-time length of that day.

    .venv/bin/python benchmarks/simulator.py [--seconds 22500] [--seed 7] [--start 2026-12-01T09:15:00+05:30]

One-second snapshots over 22,500 seconds of a session (09:15-15:30; a day from 3 Aug 2026, when F&O
closes at 15:40, has 23,100): per batch the NIFTY, India VIX and near-future Ticks plus one
121-strike ChainSnapshot per listed expiry (4 weeklies + 3 monthlies; 6 or 7 expiries depending on
the overlap). Two passes with the same seed:
1. generation only: simulate, quote, build and serialise every event (SimSource.next_batch);
2. generation + publication: the same, each batch XADDed to the local Redis with
   `Publisher.publish_many` (one pipelined round trip per batch), in a unique key namespace that the
   script deletes at the end.
Target (issue 4): the published day runs >= 100x faster than real time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path

from redis.asyncio import Redis

from volguard_cli import infra
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings
from volguard_market_data.adapters.sim_source import SimSource

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_START = "2026-12-01T09:15:00+05:30"  # a Tuesday (weekly expiry day): 7 expiries listed


def source(settings: Settings, seed: int, start: datetime, seconds: int) -> SimSource:
    return SimSource(settings, seed=seed, start=start, steps=seconds, scenario="")


def generate_only(settings: Settings, seed: int, start: datetime, seconds: int) -> tuple[float, int, int]:
    sim = source(settings, seed, start, seconds)
    events = 0
    payload_bytes = 0
    began = time.perf_counter()
    while (batch := sim.next_batch()) is not None:
        events += len(batch.publications)
        payload_bytes += sum(len(p.payload) for p in batch.publications)
    return time.perf_counter() - began, events, payload_bytes


async def generate_and_publish(
    settings: Settings, seed: int, start: datetime, seconds: int, redis_url: str
) -> tuple[float, int, int]:
    namespace = f"vgbench:{uuid.uuid4().hex[:10]}:"
    redis = Redis.from_url(redis_url)
    publisher = Publisher(
        redis, BusConfig(namespace=namespace), service="market_data", source="market_data/sim"
    )
    sim = source(settings, seed, start, seconds)
    events = 0
    try:
        began = time.perf_counter()
        async for batch in sim.batches():
            await publisher.publish_many([(p.stream, p.payload, p.event_type) for p in batch.publications])
            events += len(batch.publications)
        elapsed = time.perf_counter() - began
        chain_len = await redis.xlen(f"{namespace}md.chain")
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{namespace}*", count=500)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    return elapsed, events, int(chain_len)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=22_500, help="one-second snapshots to produce")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", default=DEFAULT_START)
    args = parser.parse_args()
    start = datetime.fromisoformat(args.start)
    settings = Settings()
    redis_url, _ = infra.ensure_redis(ROOT / ".volguard" / "bench", "redis://127.0.0.1:6379/0")
    sim = source(settings, args.seed, start, 1)
    expiries = len(sim.market.expiries)
    rows = 2 * settings.sim_strikes_each_side + 1
    print(
        f"day {start:%Y-%m-%d}: {args.seconds} one-second batches, "
        f"{expiries} expiries x {rows} strikes + 3 ticks"
    )

    gen_s, events, payload = generate_only(settings, args.seed, start, args.seconds)
    real_time = args.seconds * settings.sim_snapshot_interval_s
    print(
        f"generation only      : {gen_s:7.2f} s  {events / gen_s:9,.0f} events/s  "
        f"{gen_s / args.seconds * 1e3:6.3f} ms/batch  {real_time / gen_s:6.1f}x real time  "
        f"({payload / 1e6:,.0f} MB of payloads)"
    )
    pub_s, events, chain_len = asyncio.run(
        generate_and_publish(settings, args.seed, start, args.seconds, redis_url)
    )
    print(
        f"generation + publish : {pub_s:7.2f} s  {events / pub_s:9,.0f} events/s  "
        f"{pub_s / args.seconds * 1e3:6.3f} ms/batch  {real_time / pub_s:6.1f}x real time  "
        f"(md.chain capped at {chain_len} entries)"
    )
    print(f"publishing share     : {max(pub_s - gen_s, 0.0):7.2f} s; target >= 100x real time")


if __name__ == "__main__":
    main()
