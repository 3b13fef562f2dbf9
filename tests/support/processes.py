"""Start VolGuard processes for tests on free ports, pointed at the test's Redis, database and namespace."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from volguard_common.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int) -> int:
    """A base port such that base+1 .. base+size are free right now (services take base+1..+5)."""
    for _ in range(200):
        base = free_port()
        if base + size >= 65535:
            continue
        ok = True
        for port in range(base + 1, base + size + 1):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports found")


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
