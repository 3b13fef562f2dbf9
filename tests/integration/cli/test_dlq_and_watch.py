"""`volguard dlq show|replay|drop` and `volguard streams --watch` against real Redis.

Dead letters are made the way production makes them: a real consumer whose handler fails until the
cause is "fixed", and a payload that does not parse.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.processes import free_port, free_port_block, service_env
from tests.support.samples import sample_intent
from tests.support.waiting import eventually, eventually_sync
from volguard_cli import dead_letters as dlq_commands
from volguard_common import events, metrics
from volguard_common.bus import BusConfig, Consumer, Delivery, Publisher
from volguard_common.settings import Settings

VOLGUARD = [sys.executable, "-m", "volguard_cli.main"]
MALFORMED = b'{"type": "TradeIntent", "legs": "not a list"}'


class Risk:
    """risk's consumer on st.intents, failing every delivery while `broken`."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.config = BusConfig.from_settings(settings)
        self.publisher = Publisher(redis, self.config, service="risk", source="risk/test")
        self.consumer = Consumer(redis, self.config, self.publisher, service="risk", consumer_name="risk-a")
        self.consumer.subscribe("st.intents", self.handle)
        self.broken = True
        self.handled: list[str] = []

    async def handle(self, event: events.Event, delivery: Delivery) -> None:
        if self.broken:
            raise ValueError("strike not in chain")
        self.handled.append(event.event_id)


async def _dead_letter_two(redis: Redis, settings: Settings, risk: Risk) -> events.TradeIntent:
    """One intent that exhausts its deliveries and one payload that never parses, both in the DLQ."""
    intent = sample_intent()
    await risk.publisher.publish(intent)
    await redis.xadd(f"{settings.stream_namespace}st.intents", {b"event": MALFORMED})
    await eventually(
        lambda: dlq_commands.dead_letters(redis, risk.config, "st.intents"),
        what="two dead letters",
    )
    await eventually(
        lambda: _count(redis, risk.config, 2),
        what="both in the DLQ",
    )
    return intent


async def _count(redis: Redis, config: BusConfig, want: int) -> bool:
    return len(await dlq_commands.dead_letters(redis, config, "st.intents")) == want


async def test_show_replay_and_drop_dead_letters(redis: Redis, settings: Settings) -> None:
    risk = Risk(redis, settings)
    await risk.consumer.start()
    try:
        intent = await _dead_letter_two(redis, settings, risk)
        letters = await dlq_commands.dead_letters(redis, risk.config, "st.intents")
        failed, malformed = sorted(letters, key=lambda letter: letter.deliveries, reverse=True)
        assert (failed.event_type, failed.group, failed.consumer) == ("TradeIntent", "risk", "risk-a")
        assert failed.deliveries == settings.bus_max_deliveries
        assert "ValueError: strike not in chain" in failed.error
        assert events.parse_event(failed.original[b"event"]) == intent
        assert malformed.deliveries == 1
        assert "malformed event" in malformed.error
        assert malformed.original == {b"event": MALFORMED}
        # The claimer measures the DLQ's size for /metrics.
        await eventually(
            lambda: _async(
                metrics.REGISTRY.get_sample_value(
                    "volguard_dlq_entries", {"service": "risk", "stream": "st.intents"}
                )
                == 2
            ),
            what="volguard_dlq_entries at 2",
        )

        # The cause is fixed: replaying the intent delivers it again, and only it leaves the DLQ.
        risk.broken = False
        [new_id] = await dlq_commands.replay(redis, risk.config, "st.intents", [failed])
        await eventually(
            lambda: _async(risk.handled == [intent.event_id]), what="the replayed intent handled"
        )
        entry = await redis.xrange(f"{settings.stream_namespace}st.intents", min=new_id, max=new_id)
        assert entry[0][1] == failed.original
        assert [
            letter.dlq_id for letter in await dlq_commands.dead_letters(redis, risk.config, "st.intents")
        ] == [malformed.dlq_id]

        assert await dlq_commands.drop(redis, risk.config, "st.intents", [malformed]) == 1
        assert await dlq_commands.dead_letters(redis, risk.config, "st.intents") == []
    finally:
        await risk.consumer.stop()


async def test_an_unknown_dead_letter_id_is_an_error(redis: Redis, settings: Settings) -> None:
    config = BusConfig.from_settings(settings)
    with pytest.raises(KeyError, match="1-0"):
        await dlq_commands.dead_letters(redis, config, "st.intents", ["1-0"])


async def _async(value: bool) -> bool:
    return value


def _volguard(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VOLGUARD, *args], env=env, cwd=cwd, capture_output=True, text=True, input=stdin, timeout=300
    )


def _env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return service_env(
        settings, dashboard_port=free_port(), port_base=free_port_block(5), state_dir=tmp_path / "state"
    )


async def test_the_dlq_commands_show_errors_and_drop_only_when_confirmed(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    risk = Risk(redis, settings)
    await risk.consumer.start()
    try:
        await _dead_letter_two(redis, settings, risk)
    finally:
        await risk.consumer.stop()
    env = _env(settings, tmp_path)

    shown = await asyncio.to_thread(_volguard, ["dlq", "show", "st.intents"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "dlq.st.intents: 2 dead letter(s)" in shown.stdout
    assert "error: ValueError: strike not in chain" in shown.stdout
    assert "malformed event" in shown.stdout

    refused = await asyncio.to_thread(_volguard, ["dlq", "drop", "st.intents"], env, tmp_path, stdin="n\n")
    assert refused.returncode == 1
    assert "Nothing dropped." in refused.stdout
    still = await asyncio.to_thread(_volguard, ["dlq", "show", "st.intents"], env, tmp_path)
    assert "2 dead letter(s)" in still.stdout

    unknown = await asyncio.to_thread(_volguard, ["dlq", "show", "no.such.stream"], env, tmp_path)
    assert unknown.returncode == 2
    assert "unknown stream" in unknown.stderr

    dropped = await asyncio.to_thread(_volguard, ["dlq", "drop", "st.intents", "--yes"], env, tmp_path)
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped 2 from dlq.st.intents" in dropped.stdout
    emptied = await asyncio.to_thread(_volguard, ["dlq", "show", "st.intents"], env, tmp_path)
    assert "dlq.st.intents: 0 dead letter(s)" in emptied.stdout


def test_streams_watch_refreshes_until_ctrl_c(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings, tmp_path)
    output = tmp_path / "watch.out"
    with open(output, "w") as out, open(tmp_path / "watch.err", "w") as err:
        watcher = subprocess.Popen(
            [*VOLGUARD, "streams", "--watch", "--interval", "0.2"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
        )
    try:
        # Frames keep coming: two headers mean at least one refresh after the first picture.
        eventually_sync(lambda: output.read_text().count("(Ctrl-C to stop)") >= 2, what="a refreshed frame")
        assert "st.intents" in output.read_text()
        assert "dlq" in output.read_text()
    finally:
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(timeout=60)
    assert code == 0, (tmp_path / "watch.err").read_text()
    assert "Traceback" not in (tmp_path / "watch.err").read_text()
