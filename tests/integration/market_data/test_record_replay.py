"""Record md.* with the Recorder, replay with ReplaySource: byte-for-byte the same session (real Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.waiting import eventually
from volguard_common import db, events
from volguard_common.bus import EVENT_FIELD, BusConfig, Publisher
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot
from volguard_common.settings import Settings
from volguard_market_data.adapters.replay_source import ReplaySource
from volguard_market_data.ports import MarketBatch
from volguard_market_data.recording import (
    INDEX_FILE,
    MD_STREAMS,
    PARTIAL_SUFFIX,
    CorruptRecordingError,
    IncompleteRecordingError,
    Recorder,
    RecordingError,
    read_index,
    recover_recording,
)


def session(instants: int, start: int = 0) -> list[list[events.Event]]:
    """Per exchange instant: NIFTY and VIX ticks, a chain snapshot, and every third instant a FeedStatus."""
    out: list[list[events.Event]] = []
    for i in range(start, start + instants):
        ts = DEFAULT_TS_EVENT + timedelta(seconds=i)
        spot = 24_000.0 + 5.0 * i
        instant: list[events.Event] = [
            events.Tick(
                ts_event=ts,
                source="market_data/test",
                instrument_key="NSE_INDEX|Nifty 50",
                symbol="NIFTY",
                kind=events.InstrumentKind.INDEX,
                ltp=spot,
            ),
            events.Tick(
                ts_event=ts,
                source="market_data/test",
                instrument_key="NSE_INDEX|India VIX",
                symbol="INDIAVIX",
                kind=events.InstrumentKind.VIX,
                ltp=13.0 + 0.01 * i,
            ),
            sample_chain_snapshot(11, spot=spot, ts_event=ts),
        ]
        if i % 3 == 0:
            instant.append(
                events.FeedStatus(
                    ts_event=ts,
                    source="market_data/test",
                    feed="sim",
                    mode=events.MarketMode.SIM,
                    state=events.FeedState.CONNECTED,
                    last_tick_at=ts,
                    subscribed_instruments=24,
                )
            )
        out.append(instant)
    return out


async def publish(publisher: Publisher, instants: list[list[events.Event]]) -> int:
    count = 0
    for instant in instants:
        for event in instant:
            await publisher.publish(event)
            count += 1
    return count


async def payloads(redis: Redis, config: BusConfig, stream: str) -> list[bytes]:
    return [fields[EVENT_FIELD] for _, fields in await redis.xrange(config.key(stream))]


async def replay_into(source: ReplaySource, publisher: Publisher) -> list[MarketBatch]:
    batches = [batch async for batch in source.batches()]
    for batch in batches:
        await publisher.publish_many([(p.stream, p.payload, p.event_type) for p in batch.publications])
    return batches


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[db.Pool]:
    created = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    await db.ensure_core_schema(created)
    await db.apply_migrations(created, "market", db.load_migrations("volguard_market_data"))
    yield created
    await created.close()


async def test_recorded_session_replays_byte_for_byte_in_the_same_order(
    redis: Redis, settings: Settings, namespace: str, pool: db.Pool, tmp_path: Path
) -> None:
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    # A service's group on md.chain: the recorder is a tap and must leave it exactly as it was.
    await redis.xgroup_create(config.key("md.chain"), "analytics", id="$", mkstream=True)
    before = await publish(publisher, session(2, start=-2))

    recorder = Recorder(
        redis, config, tmp_path / "rec", pool=pool, feed="sim", segment_entries=7, read_count=5
    )
    async with recorder:
        first_half = await publish(publisher, session(6))
        await eventually(lambda: _is(recorder.entries, first_half), what="the live half recorded")
        second_half = await publish(publisher, session(5, start=6))
    summary = await recorder.stop()

    total = first_half + second_half
    assert before == 6
    assert summary.entries == total == 6 * 3 + 2 + 5 * 3 + 2
    assert summary.per_stream == {"md.ticks": 22, "md.chain": 11, "md.status": 4}
    assert summary.segments == -(-total // 7)
    assert summary.first_event == DEFAULT_TS_EVENT
    assert summary.last_event == DEFAULT_TS_EVENT + timedelta(seconds=10)

    index = json.loads((tmp_path / "rec" / INDEX_FILE).read_text())
    assert (index["format"], index["version"], index["complete"]) == ("volguard-recording", 1, True)
    assert index["streams"] == list(MD_STREAMS)
    assert [segment["entries"] for segment in index["segments"]] == [7, 7, 7, 7, 7, 2]
    assert all(len(segment["sha256"]) == 64 for segment in index["segments"])

    row = await pool.fetchrow(
        "SELECT * FROM market.recorded_sessions WHERE session_id = $1", recorder.session_id
    )
    assert row is not None
    assert (row["entries"], row["streams"], row["feed"]) == (total, list(MD_STREAMS), "sim")
    assert (row["first_event"], row["last_event"]) == (summary.first_event, summary.last_event)
    assert row["ended_at"] is not None
    assert row["directory"] == str((tmp_path / "rec").resolve())

    groups = await redis.xinfo_groups(config.key("md.chain"))
    assert [(g["name"], g["pending"], g["consumers"]) for g in groups] == [(b"analytics", 0, 0)]
    for stream in ("md.ticks", "md.status"):
        assert await redis.xinfo_groups(config.key(stream)) == []

    replay_config = BusConfig(namespace=f"{namespace}replay:")
    replayer = Publisher(redis, replay_config, service="market_data", source="market_data/replay")
    source = ReplaySource(tmp_path / "rec")
    batches = await replay_into(source, replayer)
    await source.close()

    assert [batch.ts_event for batch in batches] == [
        DEFAULT_TS_EVENT + timedelta(seconds=i) for i in range(11)
    ]
    assert all(len({event_ts(p.payload) for p in b.publications}) == 1 for b in batches)
    for stream in MD_STREAMS:
        recorded = (await payloads(redis, config, stream))[_published_before(stream) :]
        replayed = await payloads(redis, replay_config, stream)
        assert replayed == recorded, stream
    types = {p.event_type for batch in batches for p in batch.publications}
    assert types == {"Tick", "ChainSnapshot", "FeedStatus"}


def _published_before(stream: str) -> int:
    # session(2, start=-2): instants -2 and -1 → 4 ticks, 2 chains, 0 statuses (-2 % 3 and -1 % 3 != 0).
    return {"md.ticks": 4, "md.chain": 2, "md.status": 0}[stream]


async def _is(value: int, expected: int) -> bool:
    return value == expected


def event_ts(payload: bytes) -> str:
    return str(json.loads(payload)["ts_event"])


async def test_from_start_records_what_the_streams_already_hold(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    published = await publish(publisher, session(4))

    async with Recorder(redis, config, tmp_path / "rec", from_start=True) as recorder:
        await eventually(lambda: _is(recorder.entries, published), what="the backlog recorded")
    summary = await recorder.stop()

    assert summary.entries == published == 4 * 3 + 2
    batches = [batch async for batch in ReplaySource(tmp_path / "rec").batches()]
    assert sum(len(batch.publications) for batch in batches) == published
    chain = [p.payload for batch in batches for p in batch.publications if p.stream == "md.chain"]
    assert chain == await payloads(redis, config, "md.chain")


async def test_recorder_refuses_a_directory_that_already_holds_a_recording(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    config = BusConfig.from_settings(settings)
    async with Recorder(redis, config, tmp_path / "rec"):
        pass
    with pytest.raises(RecordingError, match="not empty"):
        await Recorder(redis, config, tmp_path / "rec").start()


async def _recording(
    redis: Redis, settings: Settings, directory: Path, *, segment_entries: int = 10_000, read_count: int = 500
) -> int:
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="market_data/test")
    published = await publish(publisher, session(6))
    async with Recorder(
        redis, config, directory, from_start=True, segment_entries=segment_entries, read_count=read_count
    ):
        pass
    return published


async def test_a_damaged_segment_is_refused_before_anything_is_replayed(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "rec"
    await _recording(redis, settings, directory, segment_entries=5)
    index = read_index(directory)
    victim = directory / index.segments[2].file
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    batches = ReplaySource(directory).batches()
    # The very first batch fails: segments 1 and 2 are intact, but nothing is published from a
    # recording that is damaged anywhere.
    with pytest.raises(CorruptRecordingError, match=r"segment-000003.*sha256"):
        await anext(batches)

    victim.write_bytes(bytes(data[:-5]))
    with pytest.raises(CorruptRecordingError, match="bytes on disk"):
        [batch async for batch in ReplaySource(directory).batches()]

    victim.unlink()
    with pytest.raises(CorruptRecordingError, match="missing"):
        [batch async for batch in ReplaySource(directory).batches()]


async def test_a_damaged_index_is_refused(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    directory = tmp_path / "rec"
    await _recording(redis, settings, directory, segment_entries=5)
    index_path = directory / INDEX_FILE
    original = json.loads(index_path.read_text())

    index_path.write_text(json.dumps({**original, "entries": original["entries"] + 1}))
    with pytest.raises(CorruptRecordingError, match="entry count"):
        ReplaySource(directory)

    tampered = json.loads(json.dumps(original))
    tampered["segments"][0]["entries"] += 1
    tampered["entries"] += 1
    index_path.write_text(json.dumps(tampered))
    with pytest.raises(CorruptRecordingError, match="records, index says"):
        [batch async for batch in ReplaySource(directory).batches()]

    index_path.write_text(json.dumps({**original, "version": 2}))
    with pytest.raises(CorruptRecordingError, match="not a valid recording index"):
        ReplaySource(directory)

    index_path.write_text("{ not json")
    with pytest.raises(CorruptRecordingError, match="not a valid recording index"):
        ReplaySource(directory)

    index_path.unlink()
    with pytest.raises(CorruptRecordingError, match=r"no index\.json"):
        ReplaySource(directory)


async def test_a_torn_segment_tail_is_refused_then_recovered_to_its_complete_records(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    directory = tmp_path / "rec"
    # One entry per read: one zstd block per entry, as a busy recorder flushes them.
    published = await _recording(redis, settings, directory, read_count=1)
    complete = [
        p for batch in [b async for b in ReplaySource(directory).batches()] for p in batch.publications
    ]
    assert len(complete) == published

    # What a crash mid-write leaves: the open segment as .partial, cut inside its last block, and an
    # index that does not list it and is not complete.
    index = read_index(directory)
    (segment,) = index.segments
    partial = directory / (segment.file + PARTIAL_SUFFIX)
    partial.write_bytes((directory / segment.file).read_bytes()[:-20])
    (directory / segment.file).unlink()
    crashed = index.model_copy(update={"complete": False, "segments": (), "entries": 0})
    (directory / INDEX_FILE).write_text(crashed.model_dump_json())

    with pytest.raises(IncompleteRecordingError, match=r"not finished.*segment-000001"):
        ReplaySource(directory)

    report = recover_recording(directory)

    ((name, kept, _),) = report.salvaged
    assert name == segment.file + PARTIAL_SUFFIX
    assert 0 < kept < published
    assert report.entries == kept
    recovered_index = read_index(directory)
    assert (recovered_index.complete, recovered_index.recovered) == (True, True)
    replayed = [
        p for batch in [b async for b in ReplaySource(directory).batches()] for p in batch.publications
    ]
    assert replayed == complete[:kept]


def _cli_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOLGUARD_")}
    env.update(
        {
            "VOLGUARD_REDIS_URL": settings.redis_url,
            "VOLGUARD_DATABASE_URL": settings.database_url,
            "VOLGUARD_STREAM_NAMESPACE": settings.stream_namespace,
            "VOLGUARD_STATE_DIR": str(tmp_path / "state"),
            "VOLGUARD_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
    )
    return env


def _start_cli(args: list[str], settings: Settings, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "volguard_cli.market_commands", "record", *args],
        env=_cli_env(settings, tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_cli_record_stops_on_ctrl_c_with_a_complete_recording(
    redis: Redis, settings: Settings, pool: db.Pool, tmp_path: Path
) -> None:
    directory = tmp_path / "rec"
    process = _start_cli(["--out", str(directory)], settings, tmp_path)
    # The index is written once the start positions are fixed: from then on nothing is missed.
    await eventually(lambda: _exists(directory / INDEX_FILE), what="the recorder started")
    publisher = Publisher(redis, BusConfig.from_settings(settings), service="market_data", source="test")
    published = await publish(publisher, session(5))

    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.to_thread(process.communicate)

    assert process.returncode == 0, stderr
    assert f"recorded {published} entries (md.ticks 10, md.chain 5, md.status 2)" in stdout
    index = read_index(directory)
    assert (index.complete, index.entries) == (True, published)
    entries = await pool.fetchval(
        "SELECT entries FROM market.recorded_sessions WHERE session_id = $1", index.session_id
    )
    assert entries == published
    await assert_replays_streams(directory, redis, BusConfig.from_settings(settings))


async def assert_replays_streams(directory: Path, redis: Redis, config: BusConfig) -> None:
    """Each md.* stream of the replay equals the published stream, entry for entry, in order."""
    replayed = [p for b in [b async for b in ReplaySource(directory).batches()] for p in b.publications]
    for stream in MD_STREAMS:
        assert [p.payload for p in replayed if p.stream == stream] == await payloads(redis, config, stream)


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_killed_cli_recorder_leaves_a_recording_that_recovery_makes_whole(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    config = BusConfig.from_settings(settings)
    publisher = Publisher(redis, config, service="market_data", source="test")
    published = await publish(publisher, session(5))  # 17 entries: 3 full segments of 5, 2 in the open one
    directory = tmp_path / "rec"
    process = _start_cli(
        ["--out", str(directory), "--from-start", "--no-db", "--segment-entries", "5"], settings, tmp_path
    )

    async def three_segments_indexed() -> bool:
        return (directory / INDEX_FILE).exists() and len(read_index(directory).segments) == 3

    await eventually(three_segments_indexed, what="three finished segments in the index")
    process.kill()
    await asyncio.to_thread(process.communicate)

    with pytest.raises(IncompleteRecordingError):
        ReplaySource(directory)
    report = recover_recording(directory)

    assert report.entries == published
    await assert_replays_streams(directory, redis, config)
