"""HTTP probes of the services' /health and /ready, for `volguard up` and `volguard status`."""

from __future__ import annotations

import httpx

# How long `volguard up` waits for every instance's /ready before it says which are not.
READY_WAIT_S = 120.0


def probe(url: str) -> tuple[bool, str]:
    """(answers 200, the status code or the error's name)."""
    try:
        response = httpx.get(url, timeout=2.0)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    return response.status_code == 200, str(response.status_code)


def health_role(url: str) -> tuple[bool, str]:
    """(answers 200, its role): the role the instance reports in /health, '-' when it reports none."""
    try:
        response = httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False, "-"
    if response.status_code != 200:
        return False, "-"
    try:
        body = response.json()
    except ValueError:
        return True, "-"
    role = body.get("role") if isinstance(body, dict) else None
    return True, role if isinstance(role, str) and role else "-"
