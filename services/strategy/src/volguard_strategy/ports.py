"""What the strategy service needs from the world, said in its own terms (adapters implement them).

- `ChainSource`: the ChainSnapshots a VolSnapshot was computed from (`VolSnapshot.chain_event_ids`),
  which the domain prices strikes on.
- `Journal`: the decision journal and the state a replica rebuilds on start or failover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from volguard_common.events import Bucket, ChainSnapshot
from volguard_common.events.vol import Regime, VolSnapshot
from volguard_strategy.domain.strategist import Evaluation


@dataclass(frozen=True, slots=True)
class ChainSet:
    """The chains found for one VolSnapshot, by expiry, and the event ids that could not be found."""

    chains: dict[date, ChainSnapshot]
    missing: tuple[str, ...]


class ChainSource(Protocol):
    def remember(self, chain: ChainSnapshot) -> None: ...

    async def chains_for(self, snapshot: VolSnapshot) -> ChainSet: ...


@dataclass(frozen=True, slots=True)
class StrategistState:
    """What makes strategy single-active: cooldowns and once-per-trade exits (see `Strategist`)."""

    last_entry: dict[Bucket, datetime] = field(default_factory=dict)
    proposed: frozenset[tuple[str, str]] = frozenset()
    regime_of_intent: dict[str, Regime] = field(default_factory=dict)
    regime_of_trade: dict[str, Regime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StateChange:
    """What one evaluation added to the strategist's state (written with the evaluation)."""

    proposed: frozenset[tuple[str, str]]
    regime_of_intent: dict[str, Regime]
    regime_of_trade: dict[str, Regime]


class Journal(Protocol):
    async def restore(self) -> StrategistState: ...

    async def record(
        self,
        conn: Any,
        snapshot: VolSnapshot,
        evaluation: Evaluation,
        missing: tuple[str, ...],
        change: StateChange,
        fencing_token: int | None,
    ) -> None: ...
