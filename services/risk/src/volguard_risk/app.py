"""The risk process: Turns approved proposals into orders, owns positions, capital and the trading state."""

from __future__ import annotations

from volguard_common.service import ServiceSpec

SPEC = ServiceSpec(
    name="risk",
    schema="risk",
    migrations_package="volguard_risk",
    description=("Turns approved proposals into orders, owns positions, capital and the trading state."),
    single_active=True,
)
