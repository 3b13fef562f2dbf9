"""A real dashboard_api process configured with a token, a bot token, an SMTP password and a database
password (secrets come from the environment only): none of them appears in its log, its
/api/config/summary, the answers to commands or the notification log, while the token still works.

The Bot API here refuses the bot token, so the failure's error text (httpx names the URL, which
carries the token) goes through the log and the notification log.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.waiting import eventually
from volguard_common import events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.clock import IST
from volguard_common.settings import Settings

DASHBOARD_TOKEN = "dash-token-3c1f9a7e5b"
TELEGRAM_TOKEN = "123456:tg-bot-token-8d2e4f6a"
SMTP_PASSWORD = "smtp-pass-71b0c9d8"
# Postgres here trusts local connections, so a password in the URL is carried but never checked: it
# goes through every place the URL does.
DATABASE_PASSWORD = "pg-pass-5e4d3c2b1a"
SECRETS = (DASHBOARD_TOKEN, TELEGRAM_TOKEN, SMTP_PASSWORD, DATABASE_PASSWORD)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _refuse(request: Request) -> JSONResponse:
    return JSONResponse({"ok": False, "description": "Unauthorized"}, status_code=401)


@contextlib.asynccontextmanager
async def refusing_bot_api() -> AsyncIterator[str]:
    """A Bot API that answers every sendMessage 401, as Telegram does a revoked token."""
    app = Starlette(routes=[Route("/{token}/sendMessage", _refuse, methods=["POST"])])
    port = free_port()
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", ws="none")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    await eventually(started, what="the Bot API serves")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _telegram_failures(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT detail FROM dashboard.notification_log WHERE channel = 'telegram' AND outcome = 'failed'"
        )
    finally:
        await conn.close()
    return [row["detail"] for row in rows]


async def _get(url: str) -> httpx.Response | None:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            return await client.get(url)
        except httpx.TransportError:
            return None


async def test_no_configured_secret_reaches_the_log_or_the_config_summary(
    settings: Settings, redis: Redis, tmp_path: Path, fresh_database_url: str
) -> None:
    # A database of its own: the notification log it fills is no other test's business.
    settings = settings.model_copy(update={"database_url": fresh_database_url})
    port = free_port()
    env = service_env(settings, dashboard_port=port, port_base=free_port_block(5), state_dir=tmp_path)
    assert settings.database_url.startswith("postgresql://postgres@")
    env.update(
        {
            "VOLGUARD_INSTANCE": "secrets",
            "VOLGUARD_DATABASE_URL": settings.database_url.replace(
                "postgresql://postgres@", f"postgresql://postgres:{DATABASE_PASSWORD}@", 1
            ),
            "VOLGUARD_DASHBOARD_TOKEN": DASHBOARD_TOKEN,
            "VOLGUARD_TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "VOLGUARD_SMTP_PASSWORD": SMTP_PASSWORD,
            "VOLGUARD_LOG_LEVEL": "DEBUG",
        }
    )
    log_path = tmp_path / "dashboard.log"
    url = f"http://127.0.0.1:{port}"
    bot_api = contextlib.AsyncExitStack()
    env["VOLGUARD_TELEGRAM_API_URL"] = await bot_api.enter_async_context(refusing_bot_api())
    env["VOLGUARD_TELEGRAM_CHAT_ID"] = "-1001"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "volguard_dashboard_api"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        async def ready() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            response = await _get(f"{url}/ready")
            return response is not None and response.status_code == 200

        await eventually(ready, what="dashboard ready", patience_s=180)
        summary_response = await _get(f"{url}/api/config/summary")
        assert summary_response is not None
        assert summary_response.status_code == 200
        summary = summary_response.json()
        for name in ("dashboard_token", "telegram_bot_token", "smtp_password", "database_url"):
            assert summary[f"{name}_configured"] is True, name
            assert name not in summary
        async with httpx.AsyncClient(timeout=10) as client:
            refused = await client.post(f"{url}/api/stop", json={}, headers={"Authorization": "Bearer wrong"})
            accepted = await client.post(
                f"{url}/api/stop", json={}, headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
            )
        assert refused.status_code == 403
        assert accepted.status_code == 200, accepted.text
        answers = summary_response.text + refused.text + accepted.text

        alert = events.Alert(
            ts_event=datetime.now(IST),
            source="risk/test",
            severity=events.Severity.CRITICAL,
            code="DAILY_LOSS_LIMIT",
            message="daily loss limit reached",
        )
        await Publisher(redis, BusConfig.from_settings(settings), service="risk", source="risk/test").publish(
            alert
        )
        failures = await eventually(
            lambda: _telegram_failures(settings.database_url), what="the refused Telegram send recorded"
        )
        assert "401" in failures[0]
        answers += "".join(failures)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 120)
        await bot_api.aclose()
    assert code == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "dashboard" in log  # the log was written: its silence would prove nothing
    for secret in SECRETS:
        assert secret not in log, secret
        assert secret not in answers, secret
