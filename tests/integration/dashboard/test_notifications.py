"""CRITICAL and WARNING alerts reach people: a fake Telegram Bot API and a local SMTP server
(aiosmtpd) on 127.0.0.1, both real servers; de-duplication and the rate limit hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import asyncpg
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.dashboard import running_dashboard
from tests.support.processes import free_port
from tests.support.waiting import eventually
from tests.unit.analytics.chains import TS
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings

BOT_TOKEN = "123:fake-bot"
CHAT = "-1001"


class FakeTelegram:
    """The Bot API's sendMessage, recording what it was sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send_message(self, request: Request) -> JSONResponse:
        if request.path_params["token"] != f"bot{BOT_TOKEN}":
            return JSONResponse({"ok": False, "description": "Unauthorized"}, status_code=401)
        self.messages.append(await request.json())
        return JSONResponse({"ok": True, "result": {"message_id": len(self.messages)}})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def fake_telegram() -> AsyncIterator[tuple[FakeTelegram, str]]:
    fake = FakeTelegram()
    app = Starlette(routes=[Route("/{token}/sendMessage", fake.send_message, methods=["POST"])])
    port = free_port()
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", ws="none")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await eventually(started, what="the fake Telegram serves")
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[Message] = []

    async def handle_DATA(
        self, server: Any, session: Any, envelope: Any
    ) -> str:  # aiosmtpd calls this by name
        self.mails.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def alert(code: str, severity: events.Severity) -> events.Alert:
    return events.Alert(
        ts_event=TS, source="risk/test", severity=severity, code=code, message=f"{code} happened"
    )


async def _log(database_url: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT code, channel, outcome FROM dashboard.notification_log ORDER BY id")
    finally:
        await conn.close()
    return [(r["code"], r["channel"], r["outcome"]) for r in rows]


async def test_critical_and_warning_alerts_reach_telegram_and_email_once(
    redis: Redis, settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    async with fake_telegram() as (telegram, telegram_url):
        configured = settings.model_copy(
            update={
                "telegram_bot_token": SecretStr(BOT_TOKEN),
                "telegram_chat_id": CHAT,
                "telegram_api_url": telegram_url,
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp_port,
                "smtp_starttls": False,
                "smtp_from": "volguard@example.test",
                "smtp_to": "trader@example.test",
                "notify_dedup_s": 300,
                "notify_per_minute": 2,
            }
        )
        publisher = Publisher(redis, BusConfig.from_settings(configured), service="risk", source="risk/test")
        async with running_dashboard(configured):
            await publisher.publish(alert("KILL_SWITCH", events.Severity.CRITICAL))
            await publisher.publish(alert("KILL_SWITCH", events.Severity.CRITICAL))  # same code: deduplicated
            await publisher.publish(alert("BROKER_RECONNECTED", events.Severity.INFO))  # page and log only
            await publisher.publish(alert("STALE_FEED", events.Severity.WARNING))
            await publisher.publish(alert("DAILY_LOSS_LIMIT", events.Severity.CRITICAL))  # third this minute

            async def all_handled() -> list[tuple[str, str, str]] | None:
                rows = await _log(configured.database_url)
                return rows if len(rows) >= 7 else None

            log = await eventually(all_handled, what="every notification attempt logged")

    assert [m["text"].split(":")[0] for m in telegram.messages] == [
        "[CRITICAL] KILL_SWITCH",
        "[WARNING] STALE_FEED",
    ]
    assert all(m["chat_id"] == CHAT for m in telegram.messages)
    assert [m["Subject"] for m in box.mails] == [
        "VolGuard CRITICAL: KILL_SWITCH",
        "VolGuard WARNING: STALE_FEED",
    ]
    assert log == [
        ("KILL_SWITCH", "telegram", "sent"),
        ("KILL_SWITCH", "email", "sent"),
        ("KILL_SWITCH", "all", "deduplicated"),
        ("STALE_FEED", "telegram", "sent"),
        ("STALE_FEED", "email", "sent"),
        ("DAILY_LOSS_LIMIT", "telegram", "rate_limited"),
        ("DAILY_LOSS_LIMIT", "email", "rate_limited"),
    ]
