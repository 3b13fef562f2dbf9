"""Strategy's ranked view of what is worth trading now (stream st.recommendations).

One event per evaluation: the best proposals across the three buckets, each with its structure, legs,
suitability score, the capital it needs and the return the model expects (the same figures as the
entry intent would carry, not constants). The dashboard shows it; nothing trades on it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from volguard_common import streams
from volguard_common.events._base import (
    Bucket,
    EventBase,
    EventId,
    Money,
    NonNegativeMoney,
    Part,
    Text,
    UnitInterval,
)
from volguard_common.events.orders import MAX_LEGS, OrderLeg, Structure

MAX_RECOMMENDATIONS = 5


class Recommendation(Part):
    rank: Annotated[int, Field(ge=1, le=MAX_RECOMMENDATIONS)]
    bucket: Bucket
    structure: Structure
    legs: Annotated[list[OrderLeg], Field(min_length=1, max_length=MAX_LEGS)]
    # 0-1: the model's expected value per rupee at risk, squashed (0.5 = break-even after costs).
    suitability: UnitInterval
    capital_required: NonNegativeMoney  # margin estimate for the proposed lots
    expected_return: Money  # expected value net of costs, rupees
    max_loss: NonNegativeMoney
    reason: Text


class StrategyRecommendations(EventBase):
    STREAM: ClassVar[str] = streams.ST_RECOMMENDATIONS.name
    type: Literal["StrategyRecommendations"] = "StrategyRecommendations"

    # The VolSnapshot evaluated.
    vol_event_id: EventId
    recommendations: Annotated[list[Recommendation], Field(max_length=MAX_RECOMMENDATIONS)]
    # Buckets that proposed nothing, each with why (one line per bucket).
    waits: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ranked(self) -> StrategyRecommendations:
        ranks = [r.rank for r in self.recommendations]
        if ranks != list(range(1, len(ranks) + 1)):
            raise ValueError(f"StrategyRecommendations: ranks must be 1..{len(ranks)} in order, got {ranks}")
        if any(r.structure is Structure.WAIT for r in self.recommendations):
            raise ValueError("StrategyRecommendations: WAIT is not a recommendation")
        return self
