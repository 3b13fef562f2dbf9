"""Dead letters: read them, replay them to their stream, drop them (`volguard dlq`).

An entry lands in `dlq.<stream>` after `max_deliveries` failed deliveries or when its payload cannot
be read (`volguard_common.bus`); the copy keeps the original fields and adds `dlq_*` fields: the
group and consumer that gave up, the deliveries, the last error and when.

- `show` lists them with their errors.
- `replay` puts the original fields back on the stream as new entries (every group reads them
  again; the idempotent consumers skip an event they already handled by its `event_id`) and removes
  the dead letters it replayed, both in one transaction. Replay after fixing the cause: a poison
  message replayed unchanged fails again and returns to the DLQ.
- `drop` deletes them, after a confirmation (or `--yes`).

`--id` narrows any of them to chosen dead letters (DLQ entry ids, as `show` prints them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from volguard_common import streams
from volguard_common.bus import EVENT_FIELD, BusConfig

DLQ_FIELD_PREFIX = b"dlq_"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq_id: str
    stream: str
    entry_id: str
    group: str
    consumer: str
    deliveries: int
    error: str
    at: str
    # The `type` of the event in the payload; None when the payload is not a JSON object with one.
    event_type: str | None
    # The entry as it was on its stream: what a replay writes back.
    original: dict[bytes, bytes]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event_type(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    try:
        decoded = json.loads(payload)
    except ValueError:  # UnicodeDecodeError is one too: an unreadable payload has no type to show
        return None
    event_type = decoded.get("type") if isinstance(decoded, dict) else None
    return event_type if isinstance(event_type, str) else None


def _dead_letter(dlq_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    meta = {_text(k)[len("dlq_") :]: _text(v) for k, v in fields.items() if k.startswith(DLQ_FIELD_PREFIX)}
    return DeadLetter(
        dlq_id=_text(dlq_id),
        stream=meta["stream"],
        entry_id=meta["entry_id"],
        group=meta["group"],
        consumer=meta["consumer"],
        deliveries=int(meta["deliveries"]),
        error=meta["error"],
        at=meta["at"],
        event_type=_event_type(fields.get(EVENT_FIELD)),
        original={k: v for k, v in fields.items() if not k.startswith(DLQ_FIELD_PREFIX)},
    )


async def dead_letters(
    redis: Redis, config: BusConfig, stream: str, ids: Sequence[str] = ()
) -> list[DeadLetter]:
    """The dead letters of `stream`, oldest first; only `ids` when given (an unknown id is an error)."""
    key = config.key(streams.dlq_name(streams.spec(stream).name))
    letters = [_dead_letter(dlq_id, fields) for dlq_id, fields in await redis.xrange(key)]
    if not ids:
        return letters
    wanted = set(ids)
    missing = wanted - {letter.dlq_id for letter in letters}
    if missing:
        raise KeyError(f"not in {streams.dlq_name(stream)}: {', '.join(sorted(missing))}")
    return [letter for letter in letters if letter.dlq_id in wanted]


async def replay(redis: Redis, config: BusConfig, stream: str, letters: Sequence[DeadLetter]) -> list[str]:
    """Write each letter's original entry back to `stream` and remove it from the DLQ, atomically;
    the new entry ids, in order."""
    spec = streams.spec(stream)
    if not letters:
        return []
    async with redis.pipeline(transaction=True) as pipe:
        for letter in letters:
            fields: dict[Any, Any] = dict(letter.original)
            # Capped like any publication to a snapshot stream; log streams are never trimmed here.
            pipe.xadd(config.key(stream), fields, maxlen=spec.maxlen, approximate=spec.maxlen is not None)
        pipe.xdel(config.key(streams.dlq_name(stream)), *[letter.dlq_id for letter in letters])
        results = await pipe.execute()
    return [_text(entry_id) for entry_id in results[: len(letters)]]


async def drop(redis: Redis, config: BusConfig, stream: str, letters: Sequence[DeadLetter]) -> int:
    """Delete the letters from the DLQ; how many were deleted."""
    if not letters:
        return 0
    return int(await redis.xdel(config.key(streams.dlq_name(stream)), *[letter.dlq_id for letter in letters]))


def format_letter(letter: DeadLetter) -> list[str]:
    return [
        f"{letter.dlq_id}  {letter.event_type or '(unreadable payload)'}  from {letter.stream} "
        f"{letter.entry_id}  group {letter.group}  consumer {letter.consumer}  "
        f"deliveries {letter.deliveries}  at {letter.at}",
        f"    error: {letter.error}",
    ]
