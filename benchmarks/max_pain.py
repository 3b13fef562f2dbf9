"""Max pain, O(n log n) prefix sums vs the naive O(n^2) double loop, on a 200-strike chain.

    .venv/bin/python benchmarks/max_pain.py

Strikes every 50 points from 20,000 with integer OI, as on NSE; both sides must pick the same strike
and the same pain curve (exact: integer sums are exact in float64). Medians of repeated timings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from volguard_common.quant import _reference_vol as ref
from volguard_common.quant import stats

N_STRIKES = 200
REPEATS = 51
NAIVE_REPEATS = 7


def median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(7)
    strikes = 20_000.0 + 50.0 * np.arange(N_STRIKES)
    centre = strikes[N_STRIKES // 2]
    # OI humped around the money, calls heavier above, puts below, like a real weekly chain.
    shape = np.exp(-(((strikes - centre) / 1500.0) ** 2))
    call_oi = np.round(shape * rng.uniform(0.5, 1.5, N_STRIKES) * 4e6 * (strikes >= centre - 500)).astype(
        float
    )
    put_oi = np.round(shape * rng.uniform(0.5, 1.5, N_STRIKES) * 4e6 * (strikes <= centre + 500)).astype(
        float
    )
    strike_list, call_list, put_list = list(strikes), list(call_oi), list(put_oi)

    fast = stats.max_pain(strikes, call_oi, put_oi)
    naive_strike, naive_pain = ref.max_pain(strike_list, call_list, put_list)
    assert fast.strike == naive_strike
    assert np.array_equal(fast.pain, naive_pain)

    t_fast = median_time(lambda: stats.max_pain(strikes, call_oi, put_oi), REPEATS)
    t_naive = median_time(lambda: ref.max_pain(strike_list, call_list, put_list), NAIVE_REPEATS)
    print(f"max pain on {N_STRIKES} strikes (median of {REPEATS} / {NAIVE_REPEATS} runs)")
    print(f"{'method':<28} {'time':>12} {'max-pain strike':>16}")
    print(f"{'prefix sums (stats)':<28} {1e6 * t_fast:9.1f} us {fast.strike:16.0f}")
    print(f"{'naive double loop (twin)':<28} {1e6 * t_naive:9.1f} us {naive_strike:16.0f}")
    print(f"speed-up: {t_naive / t_fast:.0f}x; identical pain curves: yes")


if __name__ == "__main__":
    main()
