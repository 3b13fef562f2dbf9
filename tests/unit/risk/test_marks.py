"""Marks from a chain snapshot: two-sided mids only, the vol that reproduces them, time to the dated close."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from volguard_common.events import ChainSnapshot, OptionType
from volguard_common.events_samples import sample_chain_snapshot
from volguard_common.quant import black76
from volguard_risk.domain.marks import leg_markets, position_greeks
from volguard_risk.domain.portfolio import Contract, LegPosition


def without_call_bid(chain: ChainSnapshot, index: int) -> ChainSnapshot:
    arrays = chain.to_numpy()
    arrays.call_bid[index] = np.nan
    metadata = chain.model_dump(exclude={"columns", "type", "schema_version"})
    return ChainSnapshot.from_arrays(arrays, **metadata)


def test_every_two_sided_quote_is_a_mark_at_its_mid_with_the_vol_that_reproduces_it() -> None:
    chain = sample_chain_snapshot(21)
    markets = leg_markets(chain)
    atm = chain.n_strikes // 2
    key = chain.call_instrument_key[atm]
    market = markets[key]
    arrays = chain.to_numpy()
    assert float(market.mid) == (arrays.call_bid[atm] + arrays.call_ask[atm]) / 2
    assert market.vol is not None
    assert market.forward is not None
    price = float(black76.price(market.forward, float(arrays.strike[atm]), market.t, market.vol, True, 1.0))
    assert price == pytest.approx(float(market.mid), rel=1e-9)


def test_a_one_sided_quote_is_no_mark_not_zero() -> None:
    chain = without_call_bid(sample_chain_snapshot(21), 10)
    markets = leg_markets(chain)
    assert chain.call_instrument_key[10] not in markets
    assert chain.put_instrument_key[10] in markets


def test_time_runs_to_the_dated_close_of_the_expiry() -> None:
    chain = sample_chain_snapshot(5)
    market = next(iter(leg_markets(chain).values()))
    assert math.isclose(market.t * 365, (market.expiry - chain.ts_event.date()).days, abs_tol=1.0)


def _position(chain: ChainSnapshot, index: int, quantity: int) -> LegPosition:
    key = chain.call_instrument_key[index]
    return LegPosition(
        Contract(key, chain.expiry, Decimal(str(float(chain.strike[index]))), OptionType.CE), quantity
    )


def test_greeks_of_priced_legs_are_signed_and_unpriced_legs_make_them_unknown_not_zero() -> None:
    chain = without_call_bid(sample_chain_snapshot(21), 10)
    markets = leg_markets(chain)
    assert chain.spot is not None
    long_call, _ = position_greeks([_position(chain, 12, 75)], markets, chain.spot)
    short_call, _ = position_greeks([_position(chain, 12, -75)], markets, chain.spot)
    assert long_call is not None
    assert short_call is not None
    assert long_call.vega > 0
    assert long_call.gamma > 0
    assert long_call.delta > 0
    assert short_call.vega == pytest.approx(-long_call.vega)

    greeks, why = position_greeks([_position(chain, 12, 75), _position(chain, 10, -75)], markets, chain.spot)
    assert greeks is None
    assert why is not None
    assert chain.call_instrument_key[10] in why
    assert position_greeks([_position(chain, 12, 75)], markets, None) == (None, "no spot yet")
