"""Sizing: whole lots rounded down once after every factor, and the correlation rule against the book."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.strategy.market import empty_portfolio, later, market, running
from volguard_common.events import Bucket, IntentKind, Position, Side, Structure
from volguard_strategy.domain.config import StrategyConfig
from volguard_strategy.domain.sizing import correlation_cap, size
from volguard_strategy.domain.strategist import Strategist


@given(
    max_loss=st.floats(1.0, 1e6),
    budget=st.integers(1, 10**6).map(Decimal),
    multiplier=st.sampled_from([0.3, 0.5, 1.0]),
    margin=st.floats(0.0, 1e6),
    free=st.integers(0, 10**7).map(Decimal),
)
def test_lots_are_whole_and_every_factor_holds(
    max_loss: float, budget: Decimal, multiplier: float, margin: float, free: Decimal
) -> None:
    sized = size(max_loss, budget, multiplier, margin, free, None)
    assert isinstance(sized.lots, int)
    assert sized.lots >= 0
    assert sized.lots * max_loss <= float(budget) * multiplier + 1e-6
    if margin > 0:
        assert sized.lots * margin <= float(free) + 1e-6
    # Rounded once: one lot more would break a factor.
    one_more = sized.lots + 1
    assert one_more * max_loss > float(budget) * multiplier or (
        margin > 0 and one_more * margin > float(free)
    )


def test_a_budget_that_is_whole_in_lots_is_not_lost_to_float_rounding() -> None:
    # 15625 / 1.5 x 0.3 is 3125 exactly, 3124.9999999999995 in binary floats.
    assert size(1.5, Decimal(15625), 0.3, 0.0, Decimal(0), None).lots == 3125


def test_three_factors_of_0_8_round_down_once() -> None:
    # 2 lots by budget x 0.5 = 1.0 lot: rounding after each factor could only lose lots, never add.
    assert size(1000.0, Decimal(2000), 0.5, 0.0, Decimal(0), None).lots == 1
    assert size(1000.0, Decimal(2999), 1.0, 0.0, Decimal(0), None).lots == 2


def test_correlation_cap_only_for_books_that_move_together() -> None:
    book = np.array([-3000.0, -1000.0, 500.0, 800.0, -2000.0])
    alike = book / 3.0
    opposite = -alike
    cap, said = correlation_cap(book, opposite, 8000.0, 0.7)
    assert cap is None
    assert "no shrink" in said
    cap, said = correlation_cap(book, alike, 8000.0, 0.7)
    # Worst scenario: -3000 - n x 1000 >= -8000  ->  n <= 5.
    assert cap == 5.0
    assert "> 0.70" in said
    assert correlation_cap(np.zeros(5), alike, 8000.0, 0.7)[0] is None


def test_a_second_condor_beside_the_first_is_cut_by_the_correlation_rule() -> None:
    config = StrategyConfig(cooldown_seconds=0.0)
    strategist = Strategist(config)
    strategist.on_trading_state(running())
    strategist.on_portfolio(empty_portfolio())
    snapshot, chains = market()
    first = next(i for i in strategist.on_vol(snapshot, chains).intents if i.bucket is Bucket.WEEKLY)
    # The book now holds ten of those condors.
    positions = [
        Position(
            instrument_key=leg.instrument_key,
            expiry=leg.expiry,
            strike=leg.strike,
            option_type=leg.option_type,
            quantity=(10 if leg.side is Side.BUY else -10) * leg.quantity,
            avg_price=leg.limit_price,
            mark=leg.limit_price,
            unrealised_pnl=Decimal(0),
            realised_pnl=Decimal(0),
        )
        for leg in first.legs
    ]
    strategist.on_portfolio(empty_portfolio(later(1), positions=positions))
    again = strategist.on_vol(snapshot.model_copy(update={"ts_event": later(1)}), chains)
    weekly = next(d for d in again.decisions if d.bucket is Bucket.WEEKLY)
    assert not [i for i in again.intents if i.bucket is Bucket.WEEKLY and i.kind is IntentKind.ENTRY]
    # Ten condors' worst scenario is already near the Rs 60,000 loss budget: the eleventh is cut to zero.
    assert weekly.structure is Structure.WAIT
    assert "scenario P&L correlation with the book" in weekly.reasons[-1]
    assert "capped by the correlation rule" in weekly.reasons[-1]
