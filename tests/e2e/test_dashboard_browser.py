"""The web page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser download)
on the running stack: `volguard up --detach` starts the six services as processes on the simulated
market (speed 0, lockstep), so every chart is fed by the real services - analytics' surface and smiles,
risk's capital, Greeks and P&L. The kill switch is pressed on the page with the token; risk halts and
the page shows HALTED.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.waiting import eventually
from volguard_common import clock
from volguard_common.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / ".volguard" / "dashboard.png"
# A Wednesday: entries open at 09:30, so risk has trades (Greeks, capital used) to show.
START = datetime(2026, 12, 2, 9, 25, tzinfo=clock.IST)
VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]
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


def _volguard(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOLGUARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def _events(settings: Settings, stream: str) -> list[dict[str, Any]]:
    client = SyncRedis.from_url(settings.redis_url)
    try:
        entries = client.xrange(settings.stream_namespace + stream)
    finally:
        client.close()
    return [json.loads(fields[b"event"]) for _, fields in entries]


@pytest.fixture
def stack(settings: Settings, fresh_database_url: str, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    own = settings.model_copy(update={"database_url": fresh_database_url})
    dashboard_port = free_port()
    env = service_env(
        own, dashboard_port=dashboard_port, port_base=free_port_block(5), state_dir=tmp_path / "state"
    )
    env["VOLGUARD_SIM_START"] = START.isoformat()
    env["VOLGUARD_DASHBOARD_TOKEN"] = TOKEN
    up = _volguard(["up", "--detach", "--ready-wait", "600", "--speed", "0", "--lockstep"], env, tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield own, f"http://127.0.0.1:{dashboard_port}"
    finally:
        down = _volguard(["down"], env, tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr


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
                for command in _events(settings, "ctl.commands"):
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
            states = [e["state"] for e in _events(settings, "rk.state")]
            assert states[-1] == "HALTED"
            assert all(e["source"].startswith("risk/") for e in _events(settings, "rk.state"))
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
