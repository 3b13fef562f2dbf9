"""`volguard status` shows the role an instance reports in /health, and "-" when it reports none."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from volguard_cli.probes import health_role

BODIES: dict[str, object] = {
    "/active": {"service": "risk", "instance": "risk-0", "status": "ok", "role": "active"},
    "/standby": {"service": "risk", "instance": "risk-1", "status": "ok", "role": "standby"},
    "/silent": {"service": "risk", "instance": "risk-0", "status": "ok"},
}


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = BODIES.get(self.path)
        self.send_response(200 if body is not None else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body or {"status": "starting"}).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_the_reported_role_is_shown(server: str) -> None:
    assert health_role(f"{server}/active") == (True, "active")
    assert health_role(f"{server}/standby") == (True, "standby")


def test_no_reported_role_is_shown_as_a_dash_never_guessed(server: str) -> None:
    assert health_role(f"{server}/silent") == (True, "-")
    assert health_role(f"{server}/not-yet") == (False, "-")
