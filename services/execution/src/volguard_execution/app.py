"""The execution process (DESIGN §1)."""

from __future__ import annotations

from volguard_common.service import ServiceSpec
from volguard_execution.service import setup, teardown

SPEC = ServiceSpec(
    name="execution",
    schema="execution",
    migrations_package="volguard_execution",
    description=("The only process that talks to a broker: leg-by-leg baskets, fills and reconciliation."),
    single_active=True,
    setup=setup,
    teardown=teardown,
)
