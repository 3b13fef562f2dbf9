"""The web page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser download)
on a running stack: the simulated market and analytics in-process, the dashboard under uvicorn.

Risk is not wired as a service yet, so this test plays risk's part on its two streams: it publishes
PortfolioSnapshots (P&L, capital, Greeks charts) and, once the kill switch's Command is on
ctl.commands, the HALTED TradingState risk would publish. The page must show it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from tests.support.dashboard import running_dashboard
from tests.support.services import running_service
from tests.support.waiting import eventually
from volguard_analytics.app import SPEC as ANALYTICS
from volguard_common import clock, events
from volguard_common.bus import BusConfig, Publisher
from volguard_common.settings import Settings
from volguard_market_data.app import SPEC as MARKET_DATA

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / ".volguard" / "dashboard.png"
START = datetime(2026, 1, 13, 9, 15, tzinfo=clock.IST)
TOKEN = "browser-test-token"
CHARTS = (
    "chart-surface",
    "chart-heatmap",
    "chart-smiles",
    "chart-term",
    "chart-straddle",
    "chart-vols",
    "chart-regime",
    "chart-capital",
    "chart-greeks",
    "chart-pnl",
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def portfolio(ts: datetime, day_pnl: Decimal) -> events.PortfolioSnapshot:
    return events.PortfolioSnapshot(
        ts_event=ts, source="risk/test", account_capital=Decimal("2000000"), positions=[], trades=[],
        buckets=[
            events.BucketState(bucket=bucket, capital_allocated=allocated, capital_used=used,
                               realised_pnl=Decimal("0"), unrealised_pnl=day_pnl, open_trades=1)
            for bucket, allocated, used in (
                (events.Bucket.WEEKLY, Decimal("800000"), Decimal("150000")),
                (events.Bucket.MONTHLY, Decimal("1000000"), Decimal("210000")),
                (events.Bucket.INTRADAY, Decimal("200000"), Decimal("0")),
            )
        ],
        net_greeks=events.Greeks(delta=-15.0, gamma=-4.0, vega=-700.0, theta=2400.0),
        realised_pnl=Decimal("0"), unrealised_pnl=day_pnl, day_pnl=day_pnl, margin_used=Decimal("360000"),
        margin_available=Decimal("1640000"), reconciled=True,
    )  # fmt: skip


async def _kill_switch_on_stream(redis: Redis, key: str) -> events.Command | None:
    for _, fields in await redis.xrange(key):
        command = events.parse_event(fields[b"event"])
        if isinstance(command, events.Command) and command.command is events.CommandKind.KILL_SWITCH:
            return command
    return None


async def test_the_page_shows_the_live_market_and_the_kill_switch_halts(
    redis: Redis, settings: Settings
) -> None:
    from playwright.async_api import async_playwright

    stack = settings.model_copy(
        update={
            "feed": "sim",
            "sim_start": START,
            "speed": 0.0,
            "sim_seed": 7,
            "dashboard_token": SecretStr(TOKEN),
        }
    )
    config = BusConfig.from_settings(stack)
    risk = Publisher(redis, config, service="risk", source="risk/test")
    async with (
        running_service(MARKET_DATA, stack, redis),
        running_service(ANALYTICS, stack, redis),
        running_dashboard(stack) as dashboard,
        async_playwright() as playwright,
    ):
        await eventually(lambda: redis.xlen(config.key("an.vol")), what="analytics publishes VolSnapshots")
        for i in range(5):
            await risk.publish(portfolio(START + timedelta(minutes=i), Decimal(1000 - 600 * i)))
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.goto(dashboard.base_url + "/")

            async def every_chart_has_data() -> dict[str, int] | None:
                points = {c: int(await page.get_attribute(f"#{c}", "data-points") or 0) for c in CHARTS}
                return points if all(points.values()) else None

            points = await eventually(every_chart_has_data, what="every chart plotted from the live market")
            assert all(n > 0 for n in points.values())
            assert await page.text_content("#kpi-spot") not in ("–", None)

            await page.fill("#token", TOKEN)
            await page.click("#btn-kill")
            command = await eventually(
                lambda: _kill_switch_on_stream(redis, config.key("ctl.commands")),
                what="KILL_SWITCH on ctl.commands",
            )

            # The page shows the answer once its request returns, which may be after the command is on
            # the stream (the answer waits for that).
            async def answer_names_the_command() -> bool:
                return command.event_id in (await page.text_content("#command-result") or "")

            await eventually(answer_names_the_command, what="the page shows the command's event id")
            # Risk's part: the kill switch flattens, then halts.
            halted_state = events.TradingState(
                ts_event=command.ts_event, source="risk/test", state=events.TradingStateKind.HALTED,
                previous=events.TradingStateKind.FLATTENING, reason="kill switch", since=command.ts_event,
            )  # fmt: skip
            await risk.publish(halted_state)

            async def halted() -> bool:
                return await page.text_content("#kpi-state") == "HALTED"

            await eventually(halted, what="the page shows HALTED")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
