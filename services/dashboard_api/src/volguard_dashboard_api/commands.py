"""Operator commands from the dashboard: audited, published through the outbox, confirmed on the stream.

The audit row and the Commands commit in one transaction (the outbox), so a command on
`ctl.commands` always has its audit row and a failed request publishes nothing. The request is
answered only once the relay (of any dashboard replica) has put every Command on the stream, with
the stream entry id; the trading state it causes then shows on the next `rk.state`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from volguard_common import db, events, outbox

log = structlog.get_logger("volguard.dashboard.commands")

PUBLISHER = "dashboard_api"


class NotOnStream(Exception):
    """The Commands committed but the relay has not put them on the stream in time (Redis down)."""


@dataclass(frozen=True)
class Published:
    event_ids: list[str]
    entry_ids: list[str]


def actor_of(client: str, token: str | None) -> str:
    """Who asked: the client address and a fingerprint of the token used (never the token)."""
    if token is None:
        return f"{client} (no token)"
    return f"{client} token:{hashlib.sha256(token.encode()).hexdigest()[:12]}"


async def audit(
    conn: db.Connection | asyncpg.Pool,
    *,
    actor: str,
    action: str,
    request: dict[str, Any],
    outcome: str,
    detail: str = "",
    event_ids: Sequence[str] = (),
) -> None:
    await conn.execute(
        "INSERT INTO dashboard.audit_log (actor, action, request, outcome, detail, event_ids) "
        "VALUES ($1, $2, $3::jsonb, $4, $5, $6)",
        actor,
        action,
        json.dumps(request, default=str),
        outcome,
        detail,
        list(event_ids),
    )


async def publish_commands(
    pool: asyncpg.Pool,
    commands: Sequence[events.Command],
    *,
    actor: str,
    action: str,
    request: dict[str, Any],
    confirm_timeout_s: float,
) -> Published:
    """Audit and publish `commands` in one transaction, then wait until they are on ctl.commands."""
    async with outbox.transaction(pool, publisher=PUBLISHER) as tx:
        for command in commands:
            await tx.publish(command)
        await audit(
            tx.conn,
            actor=actor,
            action=action,
            request=request,
            outcome="published",
            event_ids=[c.event_id for c in commands],
        )
    event_ids = [c.event_id for c in commands]
    entry_ids = await _entries_when_sent(pool, event_ids, confirm_timeout_s)
    log.info("operator command on ctl.commands", action=action, actor=actor, event_ids=event_ids)
    return Published(event_ids, entry_ids)


async def _entries_when_sent(pool: asyncpg.Pool, event_ids: list[str], timeout_s: float) -> list[str]:
    # Any replica's relay may send them (one relay per publisher at a time): the outbox row says when.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        rows = await pool.fetch(
            "SELECT event_id, entry_id FROM public.outbox "
            "WHERE publisher = $1 AND event_id = ANY($2::text[]) "
            "AND sent_at IS NOT NULL",
            PUBLISHER,
            event_ids,
        )
        sent = {row["event_id"]: row["entry_id"] for row in rows}
        if len(sent) == len(event_ids):
            return [sent[e] for e in event_ids]
        if loop.time() >= deadline:
            raise NotOnStream(
                f"{len(event_ids) - len(sent)} of {len(event_ids)} commands not yet on ctl.commands"
            )
        await asyncio.sleep(0.02)
