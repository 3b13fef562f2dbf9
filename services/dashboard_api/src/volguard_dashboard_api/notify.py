"""Alerts reach people: CRITICAL and WARNING alerts go to Telegram and e-mail when configured.

Every alert is always logged and shown on the page. Notifications are de-duplicated and rate
limited in Redis, so several dashboard replicas send one message between them: an alert event is
sent once (`notified:<event_id>`), an alert code at most once per `notify_dedup_s`, and each channel
at most `notify_per_minute` messages a minute. Every attempt is written to `dashboard.notification_log`.
A channel that fails (Telegram down, SMTP refusing) is logged and recorded as failed; it does not
stop the alert reaching the page, and the next alert tries again.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Coroutine
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import structlog
from redis.asyncio import Redis

from volguard_common import events
from volguard_common.logging import redact_text
from volguard_common.settings import Settings

log = structlog.get_logger("volguard.dashboard.notify")

NOTIFIED = frozenset({events.Severity.CRITICAL, events.Severity.WARNING})
SEND_TIMEOUT_S = 10.0


class Notifier:
    def __init__(self, settings: Settings, redis: Redis, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._redis = redis
        self._pool = pool
        self._prefix = f"{settings.stream_namespace}dashboard:notify:"
        token = settings.telegram_bot_token
        self.telegram = (
            token is not None and bool(token.get_secret_value()) and bool(settings.telegram_chat_id)
        )
        self.email = bool(settings.smtp_host and settings.smtp_from and settings.smtp_to)
        self._counts: dict[str, int] = {}

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    async def notify(self, alert: events.Alert) -> None:
        log_method = log.error if alert.severity is events.Severity.CRITICAL else log.warning
        if alert.severity is events.Severity.INFO:
            log_method = log.info
        log_method(
            "alert", code=alert.code, message=alert.message, source=alert.source, details=alert.details
        )
        if alert.severity not in NOTIFIED or not (self.telegram or self.email):
            return
        # One replica sends each alert event, and one message per code per dedup window.
        if not await self._redis.set(f"{self._prefix}event:{alert.event_id}", 1, nx=True, ex=86_400):
            return
        dedup_s = self._settings.notify_dedup_s
        if dedup_s > 0 and not await self._redis.set(
            f"{self._prefix}code:{alert.code}", 1, nx=True, ex=dedup_s
        ):
            await self._record(
                alert, "all", "deduplicated", f"{alert.code} already notified within {dedup_s}s"
            )
            return
        when = alert.ts_event.isoformat()
        text = f"[{alert.severity.value}] {alert.code}: {alert.message} ({alert.source}, {when})"
        if self.telegram:
            await self._through("telegram", alert, self._send_telegram(text))
        if self.email:
            await self._through("email", alert, asyncio.to_thread(self._send_email, alert, text))

    async def _through(self, channel: str, alert: events.Alert, send: Coroutine[Any, Any, None]) -> None:
        # A sliding minute shared by every replica: the messages sent through this channel in the last
        # 60 s (wall time: the limit protects people's phones, not trading logic).
        key = f"{self._prefix}rate:{channel}"
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, now - 60)
            pipe.zadd(key, {alert.event_id: now})
            pipe.zcard(key)
            pipe.expire(key, 120)
            results = await pipe.execute()
        sent_this_minute = int(results[2])
        if sent_this_minute > self._settings.notify_per_minute:
            send.close()  # never awaited
            await self._record(alert, channel, "rate_limited", f"over {self._settings.notify_per_minute}/min")
            return
        try:
            await send
        except (httpx.HTTPError, smtplib.SMTPException, OSError, TimeoutError) as exc:
            # httpx names the URL in its errors, and the Bot API's URL carries the bot token.
            error = redact_text(repr(exc), self._settings.secret_values())
            log.warning("alert notification failed", channel=channel, code=alert.code, error=error)
            await self._record(alert, channel, "failed", error[:500])
            return
        await self._record(alert, channel, "sent", "")

    async def _send_telegram(self, text: str) -> None:
        token = self._settings.telegram_bot_token
        assert token is not None
        url = f"{self._settings.telegram_api_url.rstrip('/')}/bot{token.get_secret_value()}/sendMessage"
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S) as client:
            response = await client.post(url, json={"chat_id": self._settings.telegram_chat_id, "text": text})
            response.raise_for_status()

    def _send_email(self, alert: events.Alert, text: str) -> None:
        s = self._settings
        message = EmailMessage()
        message["Subject"] = f"VolGuard {alert.severity.value}: {alert.code}"
        message["From"] = s.smtp_from
        message["To"] = s.smtp_to
        message.set_content(text)
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SEND_TIMEOUT_S) as smtp:
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_username:
                password = "" if s.smtp_password is None else s.smtp_password.get_secret_value()
                smtp.login(s.smtp_username, password)
            smtp.send_message(message)

    async def _record(self, alert: events.Alert, channel: str, outcome: str, detail: str) -> None:
        self._counts[f"{channel}:{outcome}"] = self._counts.get(f"{channel}:{outcome}", 0) + 1
        await self._pool.execute(
            "INSERT INTO dashboard.notification_log "
            "(alert_event_id, code, severity, channel, outcome, detail) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            alert.event_id,
            alert.code,
            alert.severity.value,
            channel,
            outcome,
            detail,
        )
