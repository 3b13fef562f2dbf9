"""Dashboard fan-out: 50 WebSocket clients and a REST poller on a running dashboard_api process.

The dashboard runs as its own process (`python -m volguard_dashboard_api`) against the local Redis
and a database of the benchmark's own. A publisher puts TradingStates on rk.state at a steady pace;
every WebSocket client notes when each one arrives. Latency is from the stream entry (its id is the
Redis clock in ms; Redis runs on the same machine) to the client, against one bus hop in the same run: a plain
XREAD reader of the same stream in this process. The dashboard's CPU share is its process CPU time
(/proc/<pid>/stat) over the wall time of the run. A REST poller reads /api/dashboard/data all along.

Run: .venv/bin/python benchmarks/dashboard.py [--clients 50] [--messages 500] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import websockets
from redis.asyncio import Redis

from volguard_cli import infra
from volguard_common import clock, db, events
from volguard_common.bus import BusConfig, Publisher

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def ws_client(
    url: str, latencies: list[float], offset_ms: float, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.recv()  # hello
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            message = json.loads(raw)
            if message["kind"] == "state":
                latencies.append(time.time() * 1000 + offset_ms - entry_ms(message["entry_id"]))


async def bus_reader(
    redis: Redis, key: str, latencies: list[float], offset_ms: float, stop: asyncio.Event
) -> None:
    last = "$"
    while not stop.is_set():
        reply = await redis.xread({key: last}, block=200, count=100)
        now = time.time() * 1000 + offset_ms
        for _, entries in reply:
            for entry_id, _ in entries:
                last = entry_id.decode()
                latencies.append(now - entry_ms(last))


async def rest_poller(base_url: str, durations: list[float], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        while not stop.is_set():
            started = time.perf_counter()
            response = await http.get("/api/dashboard/data")
            response.raise_for_status()
            durations.append(1000 * (time.perf_counter() - started))
            await asyncio.sleep(0.1)


async def main(clients: int, messages: int, rate: float) -> None:
    endpoints = infra.ensure_infra(
        ROOT / ".volguard" / "bench",
        "redis://127.0.0.1:6379/0",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    bench_db = f"vgbench_{uuid.uuid4().hex[:8]}"
    admin_url = endpoints.database_url
    database_url = admin_url.rsplit("/", 1)[0] + f"/{bench_db}"
    await db.ensure_database(database_url)
    prefix = f"vgbench:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLGUARD_")} | {
        "VOLGUARD_REDIS_URL": endpoints.redis_url,
        "VOLGUARD_DATABASE_URL": database_url,
        "VOLGUARD_STREAM_NAMESPACE": prefix,
        "VOLGUARD_INSTANCE": "bench",
        "VOLGUARD_DASHBOARD_PORT": str(port),
        "VOLGUARD_SERVICE_PORT_BASE": str(free_port()),
        "VOLGUARD_STATE_DIR": str(ROOT / ".volguard" / "bench"),
        "VOLGUARD_LOG_LEVEL": "WARNING",
        "VOLGUARD_DASHBOARD_WS_QUEUE": "1024",
    }
    # The service under test, in a process of its own so its CPU time is its own.
    process = subprocess.Popen([sys.executable, "-m", "volguard_dashboard_api"], env=env)  # noqa: ASYNC220
    redis = Redis.from_url(endpoints.redis_url)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as http:
            for _ in range(600):
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the dashboard never became ready")
        # Entry ids carry Redis's clock in ms; Redis runs on this machine, so it is our wall clock (a
        # measured offset through a busy event loop was noisier than the clocks' actual agreement).
        offset_ms = 0.0
        stop = asyncio.Event()
        ws_latencies: list[list[float]] = [[] for _ in range(clients)]
        bus_latencies: list[float] = []
        rest: list[float] = []
        readies = [asyncio.Event() for _ in range(clients)]
        tasks = [
            asyncio.create_task(
                ws_client(f"ws://127.0.0.1:{port}/ws", ws_latencies[i], offset_ms, readies[i], stop)
            )
            for i in range(clients)
        ]
        await asyncio.gather(*(r.wait() for r in readies))
        config = BusConfig(namespace=prefix)
        tasks.append(
            asyncio.create_task(bus_reader(redis, config.key("rk.state"), bus_latencies, offset_ms, stop))
        )
        tasks.append(asyncio.create_task(rest_poller(base_url, rest, stop)))
        publisher = Publisher(redis, config, service="risk", source="risk/bench")
        kinds = [events.TradingStateKind.RUNNING, events.TradingStateKind.PAUSED]
        cpu_start, wall_start = cpu_seconds(process.pid), time.perf_counter()
        for n in range(messages):
            now = datetime.now(clock.IST)
            state = events.TradingState(
                ts_event=now, source="risk/bench", state=kinds[n % 2], previous=kinds[(n + 1) % 2],
                reason="benchmark", since=now,
            )  # fmt: skip
            await publisher.publish(state)
            await asyncio.sleep(1 / rate)
        for _ in range(100):
            if all(len(samples) >= messages for samples in ws_latencies):
                break
            await asyncio.sleep(0.1)
        cpu = cpu_seconds(process.pid) - cpu_start
        wall = time.perf_counter() - wall_start
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        process.terminate()
        process.wait(timeout=30)
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')
        finally:
            await admin.close()

    fan_out = [x for samples in ws_latencies for x in samples]
    delivered = sum(len(s) for s in ws_latencies)
    print(f"{clients} WebSocket clients, {messages} TradingStates at {rate:g}/s, REST poll every 100 ms")
    print(f"delivered {delivered} of {clients * messages} client messages")
    print(
        f"fan-out stream entry -> client: p50 {percentile(fan_out, 0.5):.2f} ms, "
        f"p99 {percentile(fan_out, 0.99):.2f} ms"
    )
    print(
        f"one bus hop (XREAD, same run):   p50 {percentile(bus_latencies, 0.5):.2f} ms, "
        f"p99 {percentile(bus_latencies, 0.99):.2f} ms"
    )
    print(
        f"REST /api/dashboard/data: p50 {statistics.median(rest):.2f} ms, p99 {percentile(rest, 0.99):.2f} ms"
    )
    print(f"dashboard CPU: {cpu:.2f} s over {wall:.1f} s wall = {100 * cpu / wall:.1f} % of one core")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.messages, args.rate))
