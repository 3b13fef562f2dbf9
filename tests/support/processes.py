"""Start VolGuard processes for tests on free ports, pointed at the test's Redis, database and namespace."""

from __future__ import annotations

import os
import random
import socket
import sys
import time
from pathlib import Path

from volguard_common.settings import Settings


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Ports for test servers come from below the ephemeral range. A port the kernel hands out (bind to 0)
# lies inside it, and between our check and the server's own bind, any outgoing connection - the
# service's first Redis or Postgres connection, say - can be given that same port ("address already
# in use" at startup). Below the range only another listener can take it.
_LISTEN_LOW = 20_000
_random = random.Random(os.getpid() ^ time.time_ns())


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free right now for a test server to listen on, outside the ephemeral range."""
    return free_port_block(0)


def free_port_block(size: int) -> int:
    """A base port such that base .. base+size are free right now (services take base+1..+5), all
    below the ephemeral range."""
    high = min(_ephemeral_range()[0], 65_536) - size - 1
    for _ in range(500):
        base = _random.randrange(_LISTEN_LOW, high)
        if all(_bindable(port) for port in range(base, base + size + 1)):
            return base
    raise RuntimeError(f"no block of {size + 1} free ports found between {_LISTEN_LOW} and {high + size}")


def service_env(
    settings: Settings, *, dashboard_port: int, port_base: int, state_dir: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLGUARD_")}
    env.update(
        {
            "VOLGUARD_REDIS_URL": settings.redis_url,
            "VOLGUARD_DATABASE_URL": settings.database_url,
            "VOLGUARD_STREAM_NAMESPACE": settings.stream_namespace,
            "VOLGUARD_INSTANCE": "test",
            "VOLGUARD_DASHBOARD_PORT": str(dashboard_port),
            "VOLGUARD_SERVICE_PORT_BASE": str(port_base),
            "VOLGUARD_STATE_DIR": str(state_dir),
            "VOLGUARD_BUS_BLOCK_MS": "100",
            "VOLGUARD_LOG_FORMAT": "json",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
    )
    return env
