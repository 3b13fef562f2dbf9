"""What one chain snapshot says about each instrument: its mid (the mark) and what prices it.

- mid = (bid + ask) / 2 only when both sides are quoted; one side, or none, is no mark (never zero);
- forward: the snapshot's own when it carries one, else from put-call parity on its mids (discount 1:
  NIFTY options settle in cash at expiry, and over days the discounting is far below a tick);
- t: calendar years from the snapshot's event time to the dated close of the expiry;
- vol: Black-76 implied vol of the mid on that forward; NaN (no vol reproduces the mid) -> no vol.

Pure: the chain in, a mapping out; and the book's Greeks from those markets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal

import numpy as np

from volguard_common.clock import expiry_cutoff
from volguard_common.events import ChainSnapshot, Greeks, OptionType
from volguard_common.quant import iv
from volguard_common.quant.book_greeks import book_greeks
from volguard_common.quant.parity import forward_from_parity
from volguard_common.quant.stress import OptionLeg
from volguard_risk.domain.portfolio import Contract, LegPosition
from volguard_risk.domain.pretrade import LegMarket

YEAR = timedelta(days=365)


def chain_forward(chain: ChainSnapshot) -> float | None:
    if chain.forward is not None:
        return chain.forward
    arrays = chain.to_numpy()
    call_mid = (arrays.call_bid + arrays.call_ask) / 2
    put_mid = (arrays.put_bid + arrays.put_ask) / 2
    try:
        forward, _ = forward_from_parity(arrays.strike, call_mid, put_mid, 1.0)
    except ValueError:
        # No strike with both a call and a put quote: the forward is not known from this snapshot.
        return None
    return forward if math.isfinite(forward) and forward > 0 else None


def leg_markets(chain: ChainSnapshot) -> dict[str, LegMarket]:
    """Every instrument of the snapshot with a two-sided quote."""
    arrays = chain.to_numpy()
    t = (expiry_cutoff(chain.expiry) - chain.ts_event) / YEAR
    forward = chain_forward(chain)
    found: dict[str, LegMarket] = {}
    sides = (
        (chain.call_instrument_key, arrays.call_bid, arrays.call_ask, True),
        (chain.put_instrument_key, arrays.put_bid, arrays.put_ask, False),
    )
    for keys, bid, ask, is_call in sides:
        quoted = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
        mid = np.where(quoted, (bid + ask) / 2, np.nan)
        if forward is not None and t > 0:
            vols = iv.implied_vol(np.where(quoted, mid, 1.0), forward, arrays.strike, t, is_call)
        else:
            vols = np.full(mid.shape, np.nan)
        for i, key in enumerate(keys):
            if not quoted[i]:
                continue
            vol = float(vols[i])
            found[key] = LegMarket(
                mid=Decimal(repr(float(mid[i]))),
                quoted_at=chain.ts_event,
                vol=vol if math.isfinite(vol) and vol > 0 else None,
                forward=forward,
                t=max(t, 0.0),
                expiry=chain.expiry,
            )
    return found


def chain_contracts(chain: ChainSnapshot) -> dict[str, Contract]:
    """What each instrument key of the snapshot is (expiry, strike, type): a position the broker reports
    by key alone can be booked once a chain has described its key."""
    found: dict[str, Contract] = {}
    for i, strike in enumerate(chain.strike):
        # As the book writes a fill's strike, so a contract from a chain and one from a fill are equal.
        exact = Decimal(str(float(strike)))
        for keys, option_type in (
            (chain.call_instrument_key, OptionType.CE),
            (chain.put_instrument_key, OptionType.PE),
        ):
            found[keys[i]] = Contract(keys[i], chain.expiry, exact, option_type)
    return found


def position_greeks(
    legs: Sequence[LegPosition], markets: Mapping[str, LegMarket], spot: float | None
) -> tuple[Greeks | None, str | None]:
    """The Greeks of `legs` (signed units) from the chains' vols and forwards, in the limit units; or
    None and why, when any leg has no priced market (a missing Greek is unknown, never zero)."""
    if spot is None:
        return None, "no spot yet"
    priced: list[OptionLeg] = []
    unpriced: list[str] = []
    for leg in legs:
        key = leg.contract.instrument_key
        market = markets.get(key)
        if market is None or market.vol is None or market.forward is None or market.t <= 0.0:
            unpriced.append(key)
            continue
        priced.append(
            OptionLeg(
                float(leg.contract.strike),
                market.t,
                leg.contract.option_type is OptionType.CE,
                float(leg.quantity),
                market.vol,
                market.forward,
            )
        )
    if unpriced:
        return None, f"no vol, forward or time left for {', '.join(sorted(unpriced))}"
    greeks = book_greeks(priced, spot)
    return Greeks(delta=greeks.delta, gamma=greeks.gamma, vega=greeks.vega, theta=greeks.theta), None
