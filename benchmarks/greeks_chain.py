"""All seven Black-76 Greeks for the 2,400-option chain vs one price pass (and the scalar twin).

Run: .venv/bin/python benchmarks/greeks_chain.py
Target: greeks() ≤ 3× the time of one price() pass over the same chain.
"""

from __future__ import annotations

import sys

import numpy as np
from iv_chain import median_seconds, nifty_chain

from volguard_common.quant import _reference, black76

TARGET_RATIO = 3.0


def main() -> int:
    chain = nifty_chain()
    n = chain.strike.size
    args = (chain.forward, chain.strike, chain.t, chain.vol, chain.is_call, chain.discount)

    def one_price() -> object:
        return black76.price(*args)

    def all_greeks() -> object:
        return black76.greeks(*args)

    def scalar_greeks() -> object:
        return [
            _reference.black76_greeks(
                chain.forward,
                float(chain.strike[i]),
                float(chain.t[i]),
                float(chain.vol[i]),
                bool(chain.is_call[i]),
                float(chain.discount[i]),
            )
            for i in range(n)
        ]

    one_price()
    all_greeks()
    # Interleave the two timed kernels so machine noise hits both alike.
    price_samples, greeks_samples = [], []
    for _ in range(41):
        price_samples.append(median_seconds(one_price, 1, 20))
        greeks_samples.append(median_seconds(all_greeks, 1, 20))
    price_s = float(np.median(price_samples))
    greeks_s = float(np.median(greeks_samples))
    scalar_s = median_seconds(scalar_greeks, 3)

    print(f"Greeks chain: {n} options")
    print(f"{'kernel':<34}{'ms/chain':>10}{'µs/option':>11}{'× price':>9}")
    for name, seconds in (
        ("black76.price (one pass)", price_s),
        ("black76.greeks (all seven)", greeks_s),
        ("scalar reference greeks loop", scalar_s),
    ):
        print(f"{name:<34}{seconds * 1e3:>10.3f}{seconds / n * 1e6:>11.3f}{seconds / price_s:>9.2f}")
    ratio = greeks_s / price_s
    ok = ratio <= TARGET_RATIO
    print(f"target: greeks ≤ {TARGET_RATIO:.0f}× price: {ratio:.2f}× -> {'MET' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
