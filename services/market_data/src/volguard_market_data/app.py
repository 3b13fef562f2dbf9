"""The market_data process (DESIGN §1)."""

from __future__ import annotations

from volguard_common.service import ServiceSpec
from volguard_market_data.service import setup

SPEC = ServiceSpec(
    name="market_data",
    schema="market",
    migrations_package="volguard_market_data",
    setup=setup,
    description=(
        "The system's only window on the market: md.ticks, md.chain and "
        "md.status from the simulator, a replay or Upstox."
    ),
    single_active=True,
)
