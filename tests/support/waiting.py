"""Wait on conditions, never on fixed sleeps (STYLE: tests wait with `eventually`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Generous: the bound only turns a hang into a failure; passing tests return as soon as the
# condition holds, so this never limits how fast the machine must be.
DEFAULT_PATIENCE_S = 60.0


async def eventually(
    condition: Callable[[], Awaitable[T]],
    *,
    what: str,
    patience_s: float = DEFAULT_PATIENCE_S,
    poll_s: float = 0.02,
) -> T:
    """Return the first truthy result of `condition()`; fail naming `what` if it never comes."""
    deadline = time.monotonic() + patience_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(poll_s)
    raise AssertionError(f"never happened: {what} (last value {last!r})")


def eventually_sync(
    condition: Callable[[], T], *, what: str, patience_s: float = DEFAULT_PATIENCE_S, poll_s: float = 0.05
) -> T:
    deadline = time.monotonic() + patience_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"never happened: {what} (last value {last!r})")
