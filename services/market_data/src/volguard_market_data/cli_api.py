"""The market_data entry points the `volguard` CLI may use; everything else in the package is internal.

`volguard history import`, `record` and `replay` run market-data work outside the service process. They
call only this module (an import-linter contract in pyproject.toml holds the CLI to it), so the
service can rearrange its adapters, feed loop and migrations without breaking the operator's tools,
and the market schema is migrated by the same specification the service applies at start.
"""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from volguard_common import db
from volguard_common.bus import BusConfig, Publisher
from volguard_common.events import MarketMode
from volguard_market_data.adapters.replay_source import ReplaySource
from volguard_market_data.app import SPEC
from volguard_market_data.feed import FeedLoop, FeedStats
from volguard_market_data.history import ImportReport, import_daily_bars
from volguard_market_data.recording import Recorder, RecordingError, RecordingSummary

__all__ = [
    "FeedStats",
    "ImportReport",
    "Recorder",
    "RecordingError",
    "RecordingSummary",
    "import_daily_bars",
    "open_market_database",
    "replay_recording",
]


async def open_market_database(database_url: str, *, max_size: int = 2) -> db.Pool:
    """A pool on a database that has the core tables and the market schema's migrations applied."""
    assert SPEC.schema is not None
    assert SPEC.migrations_package is not None
    await db.ensure_database(database_url)
    pool = await db.create_pool(database_url, min_size=1, max_size=max_size)
    try:
        await db.ensure_core_schema(pool)
        await db.apply_migrations(pool, SPEC.schema, db.load_migrations(SPEC.migrations_package))
    except BaseException:
        await pool.close()
        raise
    return pool


async def replay_recording(
    redis: Redis,
    config: BusConfig,
    directory: Path,
    *,
    speed: float,
    lockstep: bool,
    lockstep_max_lag: int,
    instance: str,
) -> FeedStats:
    """Publish a recording made by `Recorder` onto md.* as market_data would, without md.status."""
    publisher = Publisher(redis, config, service=SPEC.name, source=f"{SPEC.name}/replay-{instance}")
    loop = FeedLoop(
        ReplaySource(directory),
        publisher,
        redis,
        config,
        speed=speed,
        lockstep=lockstep,
        lockstep_max_lag=lockstep_max_lag,
        mode=MarketMode.REPLAY,
        source_name=f"replay:{directory.name}",
        publish_status=False,
    )
    return await loop.run()
