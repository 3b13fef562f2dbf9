"""The dashboard_api process (DESIGN §1)."""

from __future__ import annotations

from volguard_common.service import ServiceSpec

SPEC = ServiceSpec(
    name="dashboard_api",
    schema=None,
    migrations_package=None,  # reads the other services' schemas; owns none
    description=("REST, WebSocket and the web page over every snapshot stream; issues operator commands."),
)
