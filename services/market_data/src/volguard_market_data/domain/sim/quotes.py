"""Exchange-looking quotes around fair values, and the per-session option book (LTP, volume, OI).

Everything works on arrays shaped (side, expiry, strike) with side 0 = call, 1 = put, so one step
quotes every listed option at once.

Quote rules (NSE F&O): prices on the 0.05 tick, never below 0.05; a side with nothing to show is
None (NaN in arrays) and flagged, never 0. The quote is centred on the fair value rounded to the tick,
so the mid is within half a tick of the model price (the no-arbitrage and IV-recovery tests rely on
exactly that bound). Half-spreads are whole ticks: one tick at the money on liquid weeklies, wider
away from the money (grows with standardised moneyness squared), in the money, and on the far
monthlies. When the centre is too close to zero for a bid the side shows only an offer (ZERO_BID).
On the far monthlies some far-from-the-money, non-round strikes have no quotes at all (MISSING).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volguard_common.events import QuoteFlag
from volguard_common.quant._types import BoolArray, Float64Array, Int64Array

TICK = 0.05
# Last trade older than this (seconds of the session) gets STALE_LTP.
STALE_AFTER_S = 300
WIDE_SPREAD_FRACTION = 0.10  # of the mid, and more than WIDE_SPREAD_MIN_TICKS ticks
WIDE_SPREAD_MIN_TICKS = 2

_ZERO_BID = int(QuoteFlag.ZERO_BID)
_MISSING = int(QuoteFlag.MISSING)
_STALE = int(QuoteFlag.STALE_LTP)
_WIDE = int(QuoteFlag.WIDE_SPREAD)


def to_ticks(price: Float64Array) -> Int64Array:
    """Nearest whole number of ticks."""
    out: Int64Array = np.rint(price / TICK).astype(np.int64)
    return out


def from_ticks(ticks: Int64Array | Float64Array) -> Float64Array:
    # Rounded to the paisa so 3 ticks reads 0.15, not 0.15000000000000002.
    out: Float64Array = np.round(np.asarray(ticks, dtype=np.float64) * TICK, 2)
    return out


def open_interest_lots(
    strike: Float64Array,
    spot: float,
    t: Float64Array,
    weight: Float64Array,
    rng: np.random.Generator,
    pin_strike: float | None = None,
) -> Int64Array:
    """Opening OI in lots, shape (2, expiry, strike): clustered at round strikes and near the money,
    puts heavier below spot, calls above; `weight` scales each expiry (near weeklies hold the most).

    With `pin_strike` the nearest expiry's OI piles up at that strike (expiry-day pinning)."""
    k = strike[None, :]
    width = spot * (0.015 + 0.05 * np.sqrt(np.maximum(t, 1.0 / 365.0) / 0.25))[:, None]
    call = np.exp(-0.5 * ((k - spot - 0.6 * width) / width) ** 2) + 0.15 * np.exp(
        -0.5 * ((k - spot) / (2.5 * width)) ** 2
    ) * (k > spot)
    put = np.exp(-0.5 * ((k - spot + 0.6 * width) / width) ** 2) + 0.15 * np.exp(
        -0.5 * ((k - spot) / (2.5 * width)) ** 2
    ) * (k < spot)
    round_bonus = (1.0 + 0.6 * (strike % 100 == 0) + 1.5 * (strike % 500 == 0) + 1.0 * (strike % 1000 == 0))[
        None, :
    ]
    shape = np.stack([call, put]) * round_bonus * weight[None, :, None]
    if pin_strike is not None:
        near = np.abs(strike - pin_strike)
        pin_boost = 1.0 + 5.0 * (near < 1.0) + 1.2 * ((near > 1.0) & (near <= 100.0))
        shape[:, 0, :] *= pin_boost
        shape[:, 0, :] += 0.8 * (near < 1.0) * shape[:, 0, :].max()
    noise = rng.lognormal(0.0, 0.25, shape.shape)
    out: Int64Array = np.floor(150_000.0 * shape * noise).astype(np.int64) + 1
    return out


@dataclass(frozen=True, slots=True)
class QuoteBlock:
    """Quotes of one step, arrays (side, expiry, strike); prices NaN for none, quantities in lots."""

    bid: Float64Array
    ask: Float64Array
    ltp: Float64Array
    bid_lots: Int64Array
    ask_lots: Int64Array
    volume_lots: Int64Array
    oi_lots: Int64Array
    flags: Int64Array


class OptionBook:
    """Last trade, volume and OI of every option on the session's strike grid (side, expiry, strike)."""

    def __init__(self, opening_fair: Float64Array, oi_lots: Int64Array) -> None:
        self.ltp_ticks = np.maximum(to_ticks(opening_fair), 1)
        self.last_trade_s = np.zeros(opening_fair.shape, dtype=np.int64)
        # Second of the session each option was last quoted (0: the open). Trades arrive in market time,
        # so a quote step accounts for every second since the previous one, however far apart they are.
        self.last_quoted_s = np.zeros(opening_fair.shape, dtype=np.int64)
        self.volume_lots = np.zeros(opening_fair.shape, dtype=np.int64)
        self.oi_lots = oi_lots.copy()

    def quote(
        self,
        *,
        rows: tuple[Int64Array, Int64Array],
        fair: Float64Array,
        moneyness: Float64Array,
        itm: BoolArray,
        liquidity: Float64Array,
        missing: BoolArray,
        activity: float,
        second: int,
        rng: np.random.Generator,
    ) -> QuoteBlock:
        """Quote the options at `rows` (expiry index, grid index; each (expiry, strike)-shaped), trade
        some of them and return the step's quotes.

        fair: model prices (side, expiry, strike); moneyness: |ln(K/F)| / (atm vol sqrt(t)), (expiry,
        strike); itm: in-the-money mask (side, expiry, strike); liquidity: per expiry in (0, 1];
        missing: no market at all on these (side, expiry, strike); activity: the intraday U-shape factor.
        """
        liq = liquidity[None, :, None]
        m = moneyness[None, :, :]
        draws = rng.random((6, *fair.shape))
        centre = to_ticks(fair)
        half = 1.0 + fair * (0.0003 / liq) / TICK + 0.3 * m * m / np.sqrt(liq) + draws[0]
        half = np.where(itm, half * (1.2 + 0.3 * m), half)
        half_ticks = np.minimum(np.floor(half), 400).astype(np.int64)
        bid_ticks = centre - half_ticks
        ask_ticks = np.maximum(centre + half_ticks, 1)
        has_bid = (bid_ticks >= 1) & ~missing
        has_ask = ~missing

        depth = 2.0 + 80.0 * liq * np.exp(-0.5 * m * m)
        bid_lots = np.where(has_bid, 1 + np.floor(draws[1] * depth).astype(np.int64), 0)
        ask_lots = np.where(has_ask, 1 + np.floor(draws[2] * depth).astype(np.int64), 0)

        e_idx, g_idx = rows
        # Trades arrive as a Poisson process in market time: likelier near the money, on liquid
        # expiries, at the open and close. The rate is set so a one-second step trades with the
        # probability it always had (0.3 % to 90 % a second); a step `elapsed` seconds after the
        # previous quote of an option sees a trade with probability 1 - exp(-rate * elapsed), and the
        # latest one lies an exponential gap before now. So a coarse snapshot interval or a start in
        # mid-session does not leave liquid strikes with a stale last trade.
        per_second = np.clip(0.7 * liq * np.exp(-m * m / 3.0) * activity, 0.003, 0.9)
        rate = -np.log1p(-per_second)
        elapsed = np.maximum(second - self.last_quoted_s[:, e_idx, g_idx], 0).astype(np.float64)
        gap = -np.log1p(-draws[3]) / rate
        traded = (gap < elapsed) & has_ask
        at_bid = (draws[4] < 0.45) & has_bid
        at_mid = (draws[4] > 0.9) & has_bid
        trade_ticks = np.where(at_bid, bid_ticks, np.where(at_mid, centre, ask_ticks))
        # Size of what traded since the previous quote: the expected number of trades given at least
        # one, relative to a one-second step's (1 at one-second steps).
        expected = rate * elapsed
        one_second = rate / -np.expm1(-rate)
        trades = np.where(traded, expected / -np.expm1(-np.maximum(expected, 1e-12)) / one_second, 1.0)
        lots = 1 + np.floor(
            -np.log1p(-draws[5]) * 40.0 * liq * np.exp(-0.5 * m * m) * activity * np.maximum(trades, 1.0)
        ).astype(np.int64)
        lots = np.where(traded, lots, 0)
        # Buyers lifting offers mostly open positions, sellers hitting bids mostly close them: OI builds
        # through the day as it does on the exchange.
        oi_change = np.where(at_bid, -(lots // 4), (lots * 3) // 10)

        ltp_ticks = self.ltp_ticks[:, e_idx, g_idx]
        ltp_ticks = np.where(traded, trade_ticks, ltp_ticks)
        latest = second - np.floor(np.minimum(gap, elapsed)).astype(np.int64)
        last_trade = np.where(traded, latest, self.last_trade_s[:, e_idx, g_idx])
        self.last_quoted_s[:, e_idx, g_idx] = second
        volume = self.volume_lots[:, e_idx, g_idx] + lots
        oi = np.maximum(self.oi_lots[:, e_idx, g_idx] + np.where(traded, oi_change, 0), 0)
        self.ltp_ticks[:, e_idx, g_idx] = ltp_ticks
        self.last_trade_s[:, e_idx, g_idx] = last_trade
        self.volume_lots[:, e_idx, g_idx] = volume
        self.oi_lots[:, e_idx, g_idx] = oi

        bid = np.where(has_bid, from_ticks(bid_ticks), np.nan)
        ask = np.where(has_ask, from_ticks(ask_ticks), np.nan)
        spread_ticks = ask_ticks - bid_ticks
        wide = (
            has_bid & (spread_ticks > WIDE_SPREAD_MIN_TICKS) & (spread_ticks > WIDE_SPREAD_FRACTION * centre)
        )
        flags = (
            np.where(has_ask & ~has_bid, _ZERO_BID, 0)
            | np.where(missing, _MISSING, 0)
            | np.where(second - last_trade > STALE_AFTER_S, _STALE, 0)
            | np.where(wide, _WIDE, 0)
        ).astype(np.int64)
        return QuoteBlock(
            bid=bid,
            ask=ask,
            ltp=from_ticks(ltp_ticks),
            bid_lots=bid_lots,
            ask_lots=ask_lots,
            volume_lots=volume,
            oi_lots=oi,
            flags=flags,
        )
