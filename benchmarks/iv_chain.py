"""Implied vol for a 2,400-option NIFTY-like chain: ours vs py_vollib_vectorized vs scipy brentq.

Run: .venv/bin/python benchmarks/iv_chain.py

Errors are measured against the vol that generated each price, over the options whose price carries
the vol at all: where one ulp of price moves the vol by less than 1e-12 (ε·price/vega < 1e-12).
Deep ITM one-day options are intrinsic to the last bit; no solver can recover their vol, and
counting them would only measure how each library fails.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from py_vollib_vectorized import vectorized_implied_volatility_black
from scipy.optimize import brentq

from volguard_common.quant import _reference, black76, iv
from volguard_common.quant._types import BoolArray, Float64Array

FORWARD = 24_000.0
RATE = 0.065
EXPIRY_DAYS = (1, 7, 14, 30, 60, 90)
N_STRIKES = 200
TARGET_SPEEDUP = 2.0
TARGET_ERROR = 1e-10


@dataclass(frozen=True)
class Chain:
    forward: float
    strike: Float64Array
    t: Float64Array
    vol: Float64Array
    is_call: BoolArray
    discount: Float64Array


def nifty_chain() -> Chain:
    """6 expiries × 200 strikes (±20 %) × call/put = 2,400 options on a 10–40 % skewed smile."""
    t_one = np.array(EXPIRY_DAYS, dtype=np.float64) / 365.0
    k_one = np.linspace(0.8 * FORWARD, 1.2 * FORWARD, N_STRIKES)
    t_grid, k_grid = np.meshgrid(t_one, k_one, indexing="ij")
    t = np.repeat(t_grid.ravel(), 2)
    strike = np.repeat(k_grid.ravel(), 2)
    is_call = np.tile(np.array([True, False]), t_grid.size)
    # Smile in log-moneyness per √t (steeper for short expiries), clipped to the 10–40 % band.
    z = np.log(strike / FORWARD) / np.sqrt(np.maximum(t, 7.0 / 365.0))
    vol = np.clip(0.13 - 0.10 * z + 0.35 * z * z, 0.10, 0.40)
    return Chain(FORWARD, strike, t, vol, is_call, np.exp(-RATE * t))


def median_seconds(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Median over ``repeats`` timings, each the mean of ``inner`` back-to-back calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return float(np.median(samples))


def main() -> int:
    chain = nifty_chain()
    n = chain.strike.size
    price = black76.price(chain.forward, chain.strike, chain.t, chain.vol, chain.is_call, chain.discount)
    vega = black76.greeks(chain.forward, chain.strike, chain.t, chain.vol, chain.is_call, chain.discount).vega
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_per_ulp = np.finfo(np.float64).eps * price / vega
    identifiable = vol_per_ulp < 1e-12
    flags = np.where(chain.is_call, "c", "p")
    rate = np.full(n, RATE)

    def ours() -> Float64Array:
        return iv.implied_vol(price, chain.forward, chain.strike, chain.t, chain.is_call, chain.discount)

    def anchor() -> Float64Array:
        out: Float64Array = vectorized_implied_volatility_black(
            price, chain.forward, chain.strike, rate, chain.t, flags, on_error="ignore", return_as="numpy"
        )
        return out

    def brentq_loop() -> Float64Array:
        out = np.full(n, np.nan)
        for i in range(n):
            f, k, t, c, d = (
                chain.forward,
                chain.strike[i],
                chain.t[i],
                bool(chain.is_call[i]),
                chain.discount[i],
            )
            target = float(price[i])

            def gap(
                v: float,
                f: float = f,
                k: float = k,
                t: float = t,
                c: bool = c,
                d: float = d,
                p: float = target,
            ) -> float:
                return _reference.black76_price(f, k, t, v, c, d) - p

            if gap(1e-4) < 0.0 < gap(5.0):
                out[i] = brentq(gap, 1e-4, 5.0, xtol=1e-14, rtol=4 * np.finfo(np.float64).eps)
        return out

    # Warm up: numba compiles (or loads from its disk cache) both libraries' kernels on first call.
    anchor()
    ours()

    # Ours and the anchor are timed interleaved, so machine noise hits both alike.
    ours_samples, anchor_samples = [], []
    for _ in range(41):
        ours_samples.append(median_seconds(ours, 1, 10))
        anchor_samples.append(median_seconds(anchor, 1, 10))
    timings = {
        "volguard iv": float(np.median(ours_samples)),
        "py_vollib_vectorized": float(np.median(anchor_samples)),
        "scipy brentq loop": median_seconds(brentq_loop, 3),
    }
    rows = []
    for name, fn in (
        ("volguard iv", ours),
        ("py_vollib_vectorized", anchor),
        ("scipy brentq loop", brentq_loop),
    ):
        vols = fn()
        seconds = timings[name]
        err = np.abs(vols - chain.vol)[identifiable]
        max_err = float(np.max(np.where(np.isnan(err), np.inf, err)))
        rows.append((name, seconds, max_err, int(np.isnan(vols[identifiable]).sum())))

    ours_seconds = rows[0][1]
    print(f"IV chain: {n} options ({len(EXPIRY_DAYS)} expiries × {N_STRIKES} strikes × call/put), ")
    print(f"{int(identifiable.sum())} identifiable (one ulp of price moves the vol < 1e-12)")
    print(f"{'solver':<22}{'ms/chain':>10}{'µs/option':>11}{'max |err|':>12}{'NaN':>6}{'× ours':>9}")
    for name, seconds, max_err, nans in rows:
        print(
            f"{name:<22}{seconds * 1e3:>10.3f}{seconds / n * 1e6:>11.3f}{max_err:>12.2e}{nans:>6}"
            f"{seconds / ours_seconds:>9.2f}"
        )
    speedup = rows[1][1] / ours_seconds
    ok = speedup >= TARGET_SPEEDUP and rows[0][2] <= TARGET_ERROR and math.isfinite(rows[0][2])
    print(
        f"target: ≥{TARGET_SPEEDUP:.0f}× py_vollib_vectorized at ≤{TARGET_ERROR:.0e}: "
        f"{speedup:.2f}×, {rows[0][2]:.2e} -> {'MET' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
