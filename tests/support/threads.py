"""Run a coroutine to completion from synchronous test code without touching pytest-asyncio's loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    # asyncio.run() on the main thread resets its current event loop and orphans the one pytest-asyncio
    # set, whose self-pipe then leaks as an "unclosed socket" in some later test: use a thread instead.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
