"""The analytics process: The full volatility picture (an.vol) on every set of chain snapshots."""

from __future__ import annotations

from volguard_analytics.service import setup
from volguard_common.service import ServiceSpec

SPEC = ServiceSpec(
    name="analytics",
    schema="analytics",
    migrations_package="volguard_analytics",
    setup=setup,
    description="The full volatility picture (an.vol) on every set of chain snapshots.",
    single_active=True,
)
