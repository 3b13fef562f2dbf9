"""The strategy process: Proposes trades (st.intents) from the volatility picture and the portfolio."""

from __future__ import annotations

from volguard_common.service import ServiceSpec
from volguard_strategy.service import setup

SPEC = ServiceSpec(
    name="strategy",
    schema="strategy",
    migrations_package="volguard_strategy",
    setup=setup,
    description="Proposes trades (st.intents) from the volatility picture and the portfolio.",
    single_active=True,
)
