"""Record the market-data streams of a session to disk, and read recordings back (`volguard record`).

The recorder is a tap: it follows `md.ticks`, `md.chain` and `md.status` with plain XREAD, never a
consumer group, so it cannot take entries away from the services' groups or leave pending entries
behind. It starts at the streams' current ends (only what is published from now on) or, with
`from_start`, at their beginnings.

On disk a recording is a directory:

- `segment-NNNNNN.vgrec.zst`: one zstandard frame (with zstd's content checksum) holding the magic
  `SEGMENT_MAGIC` followed by length-prefixed records. A record is
  `>I body_length` then the body `>BBBq` (stream name length, event type length, Redis entry id
  length, ts_event in UTC epoch microseconds) followed by those three strings (UTF-8) and the
  entry's `event` field, byte for byte as it was in Redis. A segment is closed after
  `segment_entries` records or `segment_bytes` uncompressed bytes.
- `index.json`: format name and version, the session, the streams, whether the recording was
  finished (`complete`), and per finished segment its file name, entry count, first/last ts_event,
  compressed and uncompressed size and sha256. It is rewritten atomically (temp file + rename)
  whenever a segment is finished and at stop.

Crash behaviour, chosen deliberately: the segment being written lives as `<name>.partial` and is
flushed to the OS after every read from Redis, so a crash loses at most the read in hand. Reading a
recording that was never finished (index `complete: false`, or a segment file the index does not
list) fails with `IncompleteRecordingError` — a replay must never quietly be a shorter session than
the one recorded. `recover_recording(directory)` then keeps every complete record of the unfinished
segment, drops the torn tail (logged as a warning and returned in its report), writes it as a normal
segment and marks the index complete and `recovered`. A finished segment whose bytes do not match the
index (size, sha256, entry count, ts range, framing) raises `CorruptRecordingError`: that is damage,
not a crash, and nothing is salvaged automatically.

An md.* entry whose `event` field is missing or has no readable `type`/`ts_event` cannot be placed
in event time; it is not recorded, but listed in the index under `skipped` with its entry id and
the reason (the services dead-letter such entries anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import os
import re
import struct
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
import zstandard
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from volguard_common import db, streams
from volguard_common.bus import EVENT_FIELD, BusConfig
from volguard_common.clock import IST

log = structlog.get_logger("volguard.market_data.recording")

FORMAT_NAME = "volguard-recording"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
SEGMENT_SUFFIX = ".vgrec.zst"
PARTIAL_SUFFIX = ".partial"
SEGMENT_MAGIC = b"VGREC1\n"
MD_STREAMS: tuple[str, ...] = (streams.MD_TICKS.name, streams.MD_CHAIN.name, streams.MD_STATUS.name)

DEFAULT_SEGMENT_ENTRIES = 10_000
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

_RECORD_LENGTH = struct.Struct(">I")
_RECORD_HEAD = struct.Struct(">BBBq")
_SEGMENT_NAME = re.compile(r"^segment-(\d{6})" + re.escape(SEGMENT_SUFFIX) + r"$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRANSIENT_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class RecordingError(RuntimeError):
    """A recording directory cannot be read as a complete, intact recording."""


class CorruptRecordingError(RecordingError):
    """The index or a finished segment does not match what was written (damage, not a crash)."""


class IncompleteRecordingError(RecordingError):
    """The recording was never finished (the recorder crashed); see `recover_recording`."""


# --------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class RecordedEntry:
    """One stream entry as recorded: `payload` is the Redis `event` field, byte for byte."""

    stream: str
    event_type: str
    ts_event: datetime
    entry_id: str
    payload: bytes


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return (_EPOCH + timedelta(microseconds=micros)).astimezone(IST)


def encode_record(entry: RecordedEntry) -> bytes:
    stream = entry.stream.encode()
    event_type = entry.event_type.encode()
    entry_id = entry.entry_id.encode()
    head = _RECORD_HEAD.pack(len(stream), len(event_type), len(entry_id), _micros(entry.ts_event))
    body_length = len(head) + len(stream) + len(event_type) + len(entry_id) + len(entry.payload)
    return b"".join((_RECORD_LENGTH.pack(body_length), head, stream, event_type, entry_id, entry.payload))


def decode_records(raw: bytes, where: str) -> tuple[list[RecordedEntry], int]:
    """Records from a segment's uncompressed bytes; also how many bytes they span (a torn tail is left).

    Raises CorruptRecordingError when the magic is wrong or a complete record is malformed.
    """
    if not raw.startswith(SEGMENT_MAGIC):
        if SEGMENT_MAGIC.startswith(raw):
            return [], 0
        raise CorruptRecordingError(f"{where}: not a VolGuard recording segment (bad magic)")
    entries: list[RecordedEntry] = []
    offset = len(SEGMENT_MAGIC)
    while offset + _RECORD_LENGTH.size <= len(raw):
        (body_length,) = _RECORD_LENGTH.unpack_from(raw, offset)
        body_start = offset + _RECORD_LENGTH.size
        if body_start + body_length > len(raw):
            break
        if body_length < _RECORD_HEAD.size:
            raise CorruptRecordingError(f"{where}: record at byte {offset} is shorter than its header")
        stream_len, type_len, id_len, micros = _RECORD_HEAD.unpack_from(raw, body_start)
        cursor = body_start + _RECORD_HEAD.size
        payload_start = cursor + stream_len + type_len + id_len
        body_end = body_start + body_length
        if payload_start > body_end:
            raise CorruptRecordingError(f"{where}: record at byte {offset} has inconsistent lengths")
        try:
            stream = raw[cursor : cursor + stream_len].decode()
            event_type = raw[cursor + stream_len : cursor + stream_len + type_len].decode()
            entry_id = raw[cursor + stream_len + type_len : payload_start].decode()
        except UnicodeDecodeError as exc:
            raise CorruptRecordingError(
                f"{where}: record at byte {offset} has a garbled name: {exc}"
            ) from exc
        entries.append(
            RecordedEntry(stream, event_type, _from_micros(micros), entry_id, raw[payload_start:body_end])
        )
        offset = body_end
    return entries, offset


# --------------------------------------------------------------------------------------------------
# Index


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SegmentInfo(_Model):
    file: str
    entries: int = Field(ge=1)
    first_ts_event: AwareDatetime
    last_ts_event: AwareDatetime
    bytes: int = Field(ge=0)
    raw_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SkippedEntry(_Model):
    stream: str
    entry_id: str
    reason: str


class RecordingIndex(_Model):
    format: Literal["volguard-recording"] = "volguard-recording"
    version: Literal[1] = 1
    session_id: str
    streams: tuple[str, ...]
    feed: str
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    complete: bool = False
    recovered: bool = False
    entries: int = 0
    first_event: AwareDatetime | None = None
    last_event: AwareDatetime | None = None
    segments: tuple[SegmentInfo, ...] = ()
    skipped: tuple[SkippedEntry, ...] = ()


def _write_index(directory: Path, index: RecordingIndex) -> None:
    target = directory / INDEX_FILE
    temporary = directory / (INDEX_FILE + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(index.model_dump(mode="json"), indent=2))
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def read_index(directory: Path) -> RecordingIndex:
    """The recording's index, validated; CorruptRecordingError when it is missing or malformed."""
    path = directory / INDEX_FILE
    if not path.is_file():
        raise CorruptRecordingError(f"{directory}: no {INDEX_FILE}; not a VolGuard recording")
    try:
        index = RecordingIndex.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise CorruptRecordingError(f"{path}: not a valid recording index: {exc}") from exc
    names = [segment.file for segment in index.segments]
    if len(set(names)) != len(names):
        raise CorruptRecordingError(f"{path}: a segment is listed twice")
    if sum(segment.entries for segment in index.segments) != index.entries:
        raise CorruptRecordingError(f"{path}: entry count {index.entries} disagrees with its segments")
    return index


def unfinished_files(directory: Path, index: RecordingIndex) -> list[Path]:
    """Segment files on disk the index does not list: what a crash left behind."""
    listed = {segment.file for segment in index.segments}
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(PARTIAL_SUFFIX) or (_SEGMENT_NAME.match(path.name) and path.name not in listed):
            found.append(path)
    return found


def check_complete(directory: Path, index: RecordingIndex) -> None:
    leftovers = unfinished_files(directory, index)
    if not index.complete or leftovers:
        detail = f"; unfinished segment(s): {', '.join(p.name for p in leftovers)}" if leftovers else ""
        raise IncompleteRecordingError(
            f"{directory}: recording {index.session_id} was not finished (the recorder stopped without "
            f"closing it){detail}. recover_recording() keeps its complete records and drops a torn tail"
        )


def verify_segment_file(directory: Path, segment: SegmentInfo) -> bytes:
    """The segment's compressed bytes after checking size and sha256 against the index."""
    path = directory / segment.file
    if not path.is_file():
        raise CorruptRecordingError(f"{path}: listed in the index but missing")
    data = path.read_bytes()
    if len(data) != segment.bytes:
        raise CorruptRecordingError(f"{path}: {len(data)} bytes on disk, index says {segment.bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != segment.sha256:
        raise CorruptRecordingError(f"{path}: sha256 {digest[:16]}... does not match the index")
    return data


def read_segment(directory: Path, segment: SegmentInfo) -> list[RecordedEntry]:
    """Every record of a finished segment, after checking it against the index in every respect."""
    data = verify_segment_file(directory, segment)
    where = str(directory / segment.file)
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        raw = decompressor.decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptRecordingError(f"{where}: cannot decompress: {exc}") from exc
    if not decompressor.eof or decompressor.unused_data:
        raise CorruptRecordingError(f"{where}: the zstandard frame is truncated or followed by junk")
    entries, used = decode_records(raw, where)
    if used != len(raw) or len(raw) != segment.raw_bytes:
        raise CorruptRecordingError(f"{where}: ends inside a record")
    if len(entries) != segment.entries:
        raise CorruptRecordingError(f"{where}: {len(entries)} records, index says {segment.entries}")
    if entries[0].ts_event != segment.first_ts_event or entries[-1].ts_event != segment.last_ts_event:
        raise CorruptRecordingError(f"{where}: first/last ts_event disagree with the index")
    return entries


# --------------------------------------------------------------------------------------------------
# Writing segments


class _SegmentWriter:
    """One segment being written: `<name>.partial` until finished, then renamed to `<name>`."""

    def __init__(self, directory: Path, name: str, level: int) -> None:
        self.name = name
        self.final_path = directory / name
        self.partial_path = directory / (name + PARTIAL_SUFFIX)
        self._file = open(self.partial_path, "xb")  # noqa: SIM115 - closed in finish()
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self._sha = hashlib.sha256()
        self.bytes = 0
        self.raw_bytes = 0
        self.entries = 0
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None
        self._emit(self._compressor.compress(SEGMENT_MAGIC))
        self.raw_bytes += len(SEGMENT_MAGIC)

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self._file.write(chunk)
            self._sha.update(chunk)
            self.bytes += len(chunk)

    def append(self, entry: RecordedEntry) -> None:
        record = encode_record(entry)
        self._emit(self._compressor.compress(record))
        self.raw_bytes += len(record)
        self.entries += 1
        if self.first_ts is None:
            self.first_ts = entry.ts_event
        self.last_ts = entry.ts_event

    def flush(self) -> None:
        """Push everything appended so far to the OS as complete zstd blocks (readable after a crash)."""
        self._emit(self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        self._file.flush()

    def finish(self) -> SegmentInfo:
        self._emit(self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial_path, self.final_path)
        # A segment is opened by its first record, so it is never empty.
        assert self.first_ts is not None
        assert self.last_ts is not None
        return SegmentInfo(
            file=self.name,
            entries=self.entries,
            first_ts_event=self.first_ts,
            last_ts_event=self.last_ts,
            bytes=self.bytes,
            raw_bytes=self.raw_bytes,
            sha256=self._sha.hexdigest(),
        )


def segment_name(number: int) -> str:
    return f"segment-{number:06d}{SEGMENT_SUFFIX}"


def write_segment(
    directory: Path, name: str, entries: Sequence[RecordedEntry], level: int = 3
) -> SegmentInfo:
    writer = _SegmentWriter(directory, name, level)
    for entry in entries:
        writer.append(entry)
    return writer.finish()


# --------------------------------------------------------------------------------------------------
# Recovery after a crash


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    directory: Path
    # (file, records kept, bytes of torn tail dropped) per unfinished segment found
    salvaged: tuple[tuple[str, int, int], ...]
    entries: int


def recover_recording(directory: Path | str, *, level: int = 3) -> RecoveryReport:
    """Finish a recording whose recorder crashed: keep every complete record, drop the torn tail.

    Each unfinished segment becomes a normal segment holding its complete records (an unfinished
    segment with none is removed); the index is marked complete and `recovered`. Finished segments
    are verified, not touched.
    """
    directory = Path(directory)
    index = read_index(directory)
    for segment in index.segments:
        verify_segment_file(directory, segment)
    segments = list(index.segments)
    salvaged: list[tuple[str, int, int]] = []
    for path in unfinished_files(directory, index):
        name = path.name.removesuffix(PARTIAL_SUFFIX)
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        try:
            raw = decompressor.decompress(path.read_bytes())
        except zstandard.ZstdError as exc:
            raise CorruptRecordingError(f"{path}: cannot decompress even its beginning: {exc}") from exc
        entries, used = decode_records(raw, str(path))
        dropped = len(raw) - used
        if dropped or not decompressor.eof:
            log.warning(
                "dropping the torn tail of an unfinished segment",
                segment=path.name,
                kept_records=len(entries),
                dropped_bytes=dropped,
            )
        path.unlink()
        if entries:
            segments.append(write_segment(directory, name, entries, level))
        salvaged.append((path.name, len(entries), dropped))
    segments.sort(key=lambda segment: segment.file)
    all_first = [segment.first_ts_event for segment in segments]
    all_last = [segment.last_ts_event for segment in segments]
    recovered = index.model_copy(
        update={
            "complete": True,
            "recovered": True,
            "segments": tuple(segments),
            "entries": sum(segment.entries for segment in segments),
            "first_event": all_first[0] if all_first else None,
            "last_event": all_last[-1] if all_last else None,
        }
    )
    _write_index(directory, recovered)
    return RecoveryReport(directory, tuple(salvaged), recovered.entries)


# --------------------------------------------------------------------------------------------------
# The recorder


class _Envelope(BaseModel):
    """The two envelope fields the recorder needs; the rest of the event is kept as opaque bytes."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(min_length=1, max_length=200)
    ts_event: AwareDatetime


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    session_id: str
    directory: Path
    entries: int
    per_stream: dict[str, int]
    segments: int
    first_event: datetime | None
    last_event: datetime | None
    skipped: int


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Recorder:
    """Records md.* entries published after `start()` (or all of them, `from_start=True`) into `directory`.

    `async with Recorder(...) as recorder:` starts and stops it; or call `start()` and `stop()`.
    `stop()` reads everything the streams held at that moment, closes the open segment and marks the
    index complete, so nothing published before `stop()` is lost.
    """

    def __init__(
        self,
        redis: Redis,
        config: BusConfig,
        directory: Path | str,
        *,
        pool: db.Pool | None = None,
        stream_names: Sequence[str] = MD_STREAMS,
        from_start: bool = False,
        feed: str = "unknown",
        session_id: str | None = None,
        segment_entries: int = DEFAULT_SEGMENT_ENTRIES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        read_count: int = 500,
        block_ms: int = 200,
        compression_level: int = 3,
    ) -> None:
        if segment_entries < 1 or segment_bytes < 1 or read_count < 1 or block_ms < 1:
            raise ValueError("segment_entries, segment_bytes, read_count and block_ms must be positive")
        for name in stream_names:
            streams.spec(name)
        self._redis = redis
        self._config = config
        self.directory = Path(directory)
        self._pool = pool
        self.stream_names = tuple(stream_names)
        self._from_start = from_start
        self._feed = feed
        self.session_id = session_id or uuid.uuid4().hex
        self._segment_entries = segment_entries
        self._segment_bytes = segment_bytes
        self._read_count = read_count
        self._block_ms = block_ms
        self._level = compression_level
        self._keys = {config.key(name): name for name in self.stream_names}
        self._order = {name: position for position, name in enumerate(self.stream_names)}
        self._cursors: dict[Any, Any] = {}
        self._buffers: dict[str, deque[tuple[int, RecordedEntry]]] = {
            name: deque() for name in self.stream_names
        }
        self._writer: _SegmentWriter | None = None
        self._segments: list[SegmentInfo] = []
        self._skipped: list[SkippedEntry] = []
        self._per_stream = dict.fromkeys(self.stream_names, 0)
        self._first_event: datetime | None = None
        self._last_event: datetime | None = None
        self._started_at: datetime | None = None
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._summary: RecordingSummary | None = None
        self.entries = 0

    # ---- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the directory and index, fix the starting positions, and start reading.

        When this returns, every entry published afterwards will be recorded.
        """
        if self._task is not None:
            raise RuntimeError("recorder already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        if any(self.directory.iterdir()):
            raise RecordingError(f"{self.directory} is not empty; record each session into a new directory")
        for key in self._keys:
            # "$" resolved once, here: passing "$" to every XREAD would miss what arrives between reads.
            self._cursors[key] = "0-0" if self._from_start else await self._last_id(key)
        self._started_at = datetime.now(IST)
        await asyncio.to_thread(_write_index, self.directory, self._index(complete=False))
        if self._pool is not None:
            await self._pool.execute(
                "INSERT INTO market.recorded_sessions (session_id, directory, started_at, streams, feed) "
                "VALUES ($1, $2, $3, $4, $5)",
                self.session_id,
                str(self.directory.resolve()),
                self._started_at,
                list(self.stream_names),
                self._feed,
            )
        self._task = asyncio.create_task(self._read_loop(), name=f"recorder:{self.session_id}")
        log.info("recording started", session_id=self.session_id, directory=str(self.directory))

    def request_stop(self) -> None:
        """Ask the reader to finish (safe from a signal handler); `stop()` completes the recording."""
        self._stop_requested.set()

    async def wait(self) -> None:
        """Return when the reader ended: after a stop request, or when it failed (raising its error)."""
        if self._task is None:
            raise RuntimeError("recorder not started")
        await asyncio.shield(self._task)

    async def stop(self) -> RecordingSummary:
        """Record what the streams hold now, close the open segment and mark the recording complete.

        If the reader had failed, the recording is still closed (everything read is kept) and the
        reader's error is raised afterwards.
        """
        if self._summary is not None:
            return self._summary
        if self._task is None:
            raise RuntimeError("recorder not started")
        self.request_stop()
        try:
            await self._task
            await self._drain_to_tail()
        finally:
            # Also when the reader failed: everything read so far is made durable before the error
            # propagates.
            if any(self._buffers.values()):
                await self._take([], final=True)
            if self._writer is not None:
                await self._finish_segment()
            ended_at = datetime.now(IST)
            await asyncio.to_thread(
                _write_index, self.directory, self._index(complete=True, ended_at=ended_at)
            )
            await self._update_session(ended_at)
            self._summary = RecordingSummary(
                session_id=self.session_id,
                directory=self.directory,
                entries=self.entries,
                per_stream=dict(self._per_stream),
                segments=len(self._segments),
                first_event=self._first_event,
                last_event=self._last_event,
                skipped=len(self._skipped),
            )
            log.info("recording stopped", session_id=self.session_id, entries=self.entries)
        return self._summary

    # ---- reading ------------------------------------------------------------------------------
    async def _last_id(self, key: str) -> str:
        newest = await self._redis.xrevrange(key, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def _read_loop(self) -> None:
        failures = 0
        while not self._stop_requested.is_set():
            try:
                response = await self._redis.xread(
                    dict(self._cursors), count=self._read_count, block=self._block_ms
                )
            except _TRANSIENT_REDIS_ERRORS as exc:
                failures += 1
                log.warning("recorder: redis unavailable; backing off", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), min(5.0, 0.05 * 2**failures))
                continue
            failures = 0
            if response:
                await self._take(response)
            elif any(self._buffers.values()):
                # Nothing new anywhere: no stream can still return an entry earlier than the buffered.
                await self._take([], final=True)

    async def _drain_to_tail(self) -> None:
        tails = {key: _id_tuple(await self._last_id(key)) for key in self._keys}
        while True:
            behind = {key: cursor for key, cursor in self._cursors.items() if _id_tuple(cursor) < tails[key]}
            if not behind:
                break
            response = await self._redis.xread(behind, count=self._read_count)
            if not response:
                break
            await self._take(response)
        # Everything up to the tails is read: the rest of the buffer can be placed.
        await self._take([], final=True)

    async def _take(self, response: Iterable[Any], *, final: bool = False) -> None:
        """Buffer what one XREAD returned, then write every entry whose place in the session is known.

        XREAD returns up to `read_count` entries per stream, so one stream's reply can run ahead of
        another's in time. Entries are merged across streams by entry-id millisecond (the order Redis
        received them), ties by ts_event then stream; each stream keeps its own order exactly. An
        entry is only written once no stream that may hold more (its reply was full) could still
        return an earlier one.
        """
        may_have_more: list[int] = []
        for raw_key, entries in response:
            key = _text(raw_key)
            stream = self._keys[key]
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                self._cursors[key] = entry_id
                entry = self._entry(stream, entry_id, fields)
                if entry is not None:
                    self._buffers[stream].append((_id_tuple(entry_id)[0], entry))
            if len(entries) >= self._read_count:
                may_have_more.append(_id_tuple(self._cursors[key])[0])
        horizon = None if final or not may_have_more else min(may_have_more)
        ready: list[list[tuple[int, RecordedEntry]]] = []
        for buffer in self._buffers.values():
            count = len(buffer)
            if horizon is not None:
                count = next((i for i, (ms, _) in enumerate(buffer) if ms >= horizon), len(buffer))
            ready.append([buffer.popleft() for _ in range(count)])
        # heapq.merge only ever compares the heads, so each stream's own order is kept as read.
        merged = heapq.merge(
            *ready, key=lambda item: (item[0], item[1].ts_event, self._order[item[1].stream])
        )
        batch = [entry for _, entry in merged]
        if batch:
            await self._write(batch)

    def _entry(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> RecordedEntry | None:
        payload = fields.get(EVENT_FIELD)
        if payload is None:
            self._skip(stream, entry_id, "no event field")
            return None
        try:
            envelope = _Envelope.model_validate_json(payload)
        except ValidationError as exc:
            self._skip(stream, entry_id, f"unreadable envelope: {exc.errors(include_url=False)[:1]}")
            return None
        return RecordedEntry(stream, envelope.type, envelope.ts_event.astimezone(IST), entry_id, payload)

    def _skip(self, stream: str, entry_id: str, reason: str) -> None:
        log.error("md entry not recorded", stream=stream, entry_id=entry_id, reason=reason)
        self._skipped.append(SkippedEntry(stream=stream, entry_id=entry_id, reason=reason[:500]))

    # ---- writing ------------------------------------------------------------------------------
    async def _write(self, entries: Sequence[RecordedEntry]) -> None:
        finished = await asyncio.to_thread(self._append_all, entries)
        for entry in entries:
            self._per_stream[entry.stream] += 1
            if self._first_event is None:
                self._first_event = entry.ts_event
            self._last_event = entry.ts_event
        self.entries += len(entries)
        if finished:
            await asyncio.to_thread(_write_index, self.directory, self._index(complete=False))
            await self._update_session(None)

    def _append_all(self, entries: Sequence[RecordedEntry]) -> bool:
        """Append in a worker thread; True when a segment was finished (the index must be rewritten)."""
        finished = False
        for entry in entries:
            if self._writer is None:
                self._writer = _SegmentWriter(
                    self.directory, segment_name(len(self._segments) + 1), self._level
                )
            self._writer.append(entry)
            if self._writer.entries >= self._segment_entries or self._writer.raw_bytes >= self._segment_bytes:
                self._segments.append(self._writer.finish())
                self._writer = None
                finished = True
        if self._writer is not None:
            self._writer.flush()
        return finished

    async def _finish_segment(self) -> None:
        writer = self._writer
        assert writer is not None
        self._writer = None
        self._segments.append(await asyncio.to_thread(writer.finish))

    def _index(self, *, complete: bool, ended_at: datetime | None = None) -> RecordingIndex:
        assert self._started_at is not None
        segments = tuple(self._segments)
        return RecordingIndex(
            session_id=self.session_id,
            streams=self.stream_names,
            feed=self._feed,
            started_at=self._started_at,
            ended_at=ended_at,
            complete=complete,
            entries=sum(segment.entries for segment in segments),
            first_event=segments[0].first_ts_event if segments else None,
            last_event=segments[-1].last_ts_event if segments else None,
            segments=segments,
            skipped=tuple(self._skipped),
        )

    async def _update_session(self, ended_at: datetime | None) -> None:
        if self._pool is None:
            return
        # Counts what is durable: entries in finished segments.
        index = self._index(complete=ended_at is not None, ended_at=ended_at)
        await self._pool.execute(
            "UPDATE market.recorded_sessions SET ended_at = $2, first_event = $3, last_event = $4, "
            "entries = $5 WHERE session_id = $1",
            self.session_id,
            ended_at,
            index.first_event,
            index.last_event,
            index.entries,
        )
