"""One real replica of a single-active service as its own process (`python -m volguard_<service>`),
for the tests whose claim is about processes: a lease handed over after SIGKILL, a standby that
decides the rest, a holder that exits when it loses its lease."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port, free_port_block, service_env
from volguard_common.settings import SERVICE_PORT_OFFSETS, Settings


class ServiceReplica:
    """Started at construction; its log goes to `<tmp_path>/<service>-<instance>.log`."""

    def __init__(
        self,
        service: str,
        instance: str,
        settings: Settings,
        tmp_path: Path,
        *,
        lease_ttl_ms: int,
        lease_poll_ms: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        dashboard_port, base = free_port(), free_port_block(max(SERVICE_PORT_OFFSETS.values()))
        self.url = f"http://127.0.0.1:{base + SERVICE_PORT_OFFSETS[service]}"
        process_env = service_env(settings, dashboard_port=dashboard_port, port_base=base, state_dir=tmp_path)
        process_env.update(
            {
                "VOLGUARD_INSTANCE": instance,
                "VOLGUARD_LEASE_TTL_MS": str(lease_ttl_ms),
                "VOLGUARD_LEASE_POLL_INTERVAL_MS": str(lease_poll_ms),
                **(env or {}),
            }
        )
        self.log_path = tmp_path / f"{service}-{instance}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"volguard_{service}"],
                env=process_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def _alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.service} exited early with {self.process.returncode}: "
                f"{self.log_path.read_text()[-3000:]}"
            )

    async def health(self) -> dict[str, Any] | None:
        """The /health body, or None while the process does not answer yet; fails if it exited."""
        self._alive()
        async with httpx.AsyncClient(timeout=2.0) as client:
            try:
                response = await client.get(f"{self.url}/health")
            except httpx.HTTPError:
                return None
        body: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return body

    async def ready(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"{self.url}/ready")
        return response.status_code, response.json()

    async def in_role(self, role: str) -> dict[str, Any] | None:
        health = await self.health()
        return health if health is not None and health.get("role") == role else None

    async def exit_code(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self.process.wait)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def killed_at_teardown() -> Iterator[list[ServiceReplica]]:
    """For a fixture: the replicas a test appends are SIGKILLed when it ends, however it ends."""
    started: list[ServiceReplica] = []
    yield started
    for replica in started:
        replica.kill()
