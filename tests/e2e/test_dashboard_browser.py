"""The web page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser download)
on the running stack: `volguard up --detach` starts the six services as processes on the simulated
market (speed 0, lockstep), so every chart is fed by the real services - analytics' surface and smiles,
risk's capital, Greeks and P&L. The kill switch is pressed on the page with the token; risk halts and
the page shows HALTED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.stack import running_stack, stream_events
from tests.support.waiting import eventually
from volguard_common import clock
from volguard_common.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / ".volguard" / "dashboard.png"
# A Wednesday, after entries have stopped for the day (15 minutes before the 15:40 close): the market
# is live, risk publishes its book, and the kill switch halts a flat book at once. (With positions open
# it does not reach HALTED yet: see tests/e2e/test_cli_control.py's soak test.)
START = datetime(2026, 12, 2, 15, 27, tzinfo=clock.IST)
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


@pytest.fixture
def stack(settings: Settings, fresh_database_url: str, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    with running_stack(
        settings, fresh_database_url, tmp_path, START, {"VOLGUARD_DASHBOARD_TOKEN": TOKEN}
    ) as running:
        yield running.settings, running.dashboard_url


async def test_the_page_shows_the_live_market_and_the_kill_switch_halts(stack: tuple[Settings, str]) -> None:
    from playwright.async_api import async_playwright

    settings, base_url = stack
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.goto(base_url + "/")

            seen: dict[str, int] = {}

            async def every_chart_has_data() -> dict[str, int] | None:
                seen.update({c: int(await page.get_attribute(f"#{c}", "data-points") or 0) for c in CHARTS})
                return dict(seen) if all(seen.values()) else None

            try:
                points = await eventually(
                    every_chart_has_data, what="every chart plotted from the running stack", patience_s=300
                )
            except AssertionError as exc:
                empty = sorted(c for c, n in seen.items() if not n)
                raise AssertionError(f"{exc}; charts still empty: {empty}") from exc
            assert all(n > 0 for n in points.values())
            assert await page.text_content("#kpi-spot") not in ("–", None)

            await page.fill("#token", TOKEN)
            await page.click("#btn-kill")

            async def kill_switch_sent() -> str | None:
                for command in stream_events(settings, "ctl.commands"):
                    if command.get("command") == "KILL_SWITCH":
                        return str(command["event_id"])
                return None

            event_id = await eventually(kill_switch_sent, what="KILL_SWITCH on ctl.commands")

            async def answer_names_the_command() -> bool:
                return event_id in (await page.text_content("#command-result") or "")

            await eventually(answer_names_the_command, what="the page shows the command's event id")

            # Risk's own answer: the kill switch flattens, then halts.
            async def halted() -> bool:
                return await page.text_content("#kpi-state") == "HALTED"

            await eventually(halted, what="the page shows HALTED from risk's rk.state", patience_s=120)
            states = [e["state"] for e in stream_events(settings, "rk.state")]
            assert states[-1] == "HALTED"
            assert all(e["source"].startswith("risk/") for e in stream_events(settings, "rk.state"))
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
