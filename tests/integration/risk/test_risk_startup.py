"""The real risk process on a cold numba cache: the first chains it marks compile the implied-vol
kernels, which stalled its event loop (and the lease renewals on it) past the lease's ttl, so risk lost
its lease and restarted once on every cold `volguard up`. It must take its lease once and keep it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.replicas import ServiceReplica
from tests.support.waiting import eventually
from tests.unit.analytics.chains import TS, sabr_chain
from tests.unit.analytics.test_snapshot import EXPIRIES
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings


@pytest.fixture
def startup_settings(settings: Settings, fresh_database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": fresh_database_url})


async def _handled(redis: Redis, settings: Settings, stream: str) -> bool:
    groups = {g["name"].decode(): g for g in await redis.xinfo_groups(f"{settings.stream_namespace}{stream}")}
    group = groups.get("risk")
    return group is not None and group["pending"] == 0 and group["lag"] == 0


async def test_risk_takes_its_lease_once_and_keeps_it_while_its_kernels_compile(
    startup_settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    # An empty cache directory of its own: numba compiles the kernels as on a first start.
    risk = ServiceReplica(
        "risk",
        "a",
        startup_settings,
        tmp_path,
        lease_ttl_ms=2000,
        lease_poll_ms=200,
        env={"NUMBA_CACHE_DIR": str(tmp_path / "numba")},
    )
    try:
        active = await eventually(lambda: risk.in_role("active"), what="risk active", patience_s=120)
        assert active is not None
        token = active["fencing_token"]
        market = Publisher(
            redis, BusConfig.from_settings(startup_settings), service="market_data", source="md/test"
        )
        for expiry in EXPIRIES[:2]:
            await market.publish(sabr_chain(TS, expiry)[0])

        async def chains_handled() -> bool:
            # in_role raises if the process exited (a lost lease exits with status 4).
            assert await risk.in_role("active") is not None, "risk stopped acting"
            return await _handled(redis, startup_settings, "md.chain")

        await eventually(chains_handled, what="both chains marked", patience_s=120)
        later = await risk.in_role("active")
        assert later is not None
        assert later["fencing_token"] == token
        holders = await redis.get(f"{startup_settings.stream_namespace}lease:risk:main")
        assert holders is not None
        assert holders.decode().endswith(f"|{token}")
        risk.process.send_signal(signal.SIGTERM)
        assert await risk.exit_code() == 0, risk.log_path.read_text()[-3000:]
        log = risk.log_path.read_text()
        assert log.count('"event": "lease acquired"') == 1, log[-3000:]
        assert "stops acting" not in log, log[-3000:]
    finally:
        risk.kill()
