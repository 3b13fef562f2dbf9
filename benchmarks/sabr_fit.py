"""SABR calibration, ours vs pysabr 0.4.1, side by side on the same smiles.

    .venv/bin/python benchmarks/sabr_fit.py

20 NIFTY-like smiles (forward 24,000, 41 strikes at +-15 %, 7-90 days, beta 0.5), generated with the
plain Hagan 2002 formula (pysabr's own model, so the data favour neither side) plus 0.2 vol-point
Gaussian quote noise. Each fit is timed REPEATS times; the table shows per-smile medians.

pysabr is run twice: with its default starting point (alpha=0.01, which is meant for rates and is
three orders of magnitude off for an index at beta 0.5) and with a fair starting point
(alpha = ATM vol x F^(1-beta), rho 0, nu 0.5). RMSE is in vol points against the noisy quotes, each
model judged with its own formula (ours: Hagan + Obłój; pysabr: Hagan).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from pysabr import Hagan2002LognormalSABR
from pysabr.models.hagan_2002_lognormal_sabr import lognormal_vol as pysabr_vol

from volguard_common.quant import sabr

FORWARD = 24_000.0
BETA = 0.5
N_SMILES = 20
N_STRIKES = 41
NOISE = 0.002
REPEATS = 15
PYSABR_REPEATS = 3


def smiles() -> list[tuple[float, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20251216)
    strikes = FORWARD * np.linspace(0.85, 1.15, N_STRIKES)
    out = []
    for _ in range(N_SMILES):
        days = int(rng.integers(7, 91))
        t = days / 365.0
        atm, rho, nu = rng.uniform(0.10, 0.20), rng.uniform(-0.7, -0.1), rng.uniform(0.4, 2.5)
        alpha = sabr.alpha_from_atm(atm, FORWARD, t, BETA, rho, nu)
        clean = sabr.vol_hagan(FORWARD, strikes, t, alpha, BETA, rho, nu)
        out.append((t, strikes, clean + rng.normal(0.0, NOISE, N_STRIKES)))
    return out


def median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(t: float, strikes: np.ndarray, vols: np.ndarray) -> float:
    fit = sabr.fit(FORWARD, strikes, t, vols, beta=BETA)
    return 100.0 * fit.rmse


def pysabr_fit(t: float, strikes: np.ndarray, vols: np.ndarray, guess: list[float] | None) -> float:
    model = Hagan2002LognormalSABR(f=FORWARD, shift=0.0, t=t, beta=BETA)
    if guess is None:
        alpha, rho, nu = model.fit(strikes, vols * 100.0)
    else:
        alpha, rho, nu = model.fit(strikes, vols * 100.0, initial_guess=guess)
    fitted = np.array([pysabr_vol(k, FORWARD, t, alpha, BETA, rho, nu) for k in strikes])
    return float(100.0 * np.sqrt(np.mean((fitted - vols) ** 2)))


def main() -> None:
    rows = []
    for t, strikes, vols in smiles():
        atm = float(np.interp(FORWARD, strikes, vols))
        fair = [atm * FORWARD ** (1.0 - BETA), 0.0, 0.5]
        rows.append(
            (
                t * 365.0,
                median_time(partial(ours, t, strikes, vols), REPEATS),
                ours(t, strikes, vols),
                median_time(partial(pysabr_fit, t, strikes, vols, None), PYSABR_REPEATS),
                pysabr_fit(t, strikes, vols, None),
                median_time(partial(pysabr_fit, t, strikes, vols, fair), PYSABR_REPEATS),
                pysabr_fit(t, strikes, vols, fair),
            )
        )
    print(f"{N_SMILES} smiles x {N_STRIKES} strikes, beta {BETA}, quote noise {100 * NOISE:.1f} vol pts")
    print(
        f"{'days':>5} | {'ours ms':>8} {'rmse':>6} | {'pysabr(def) ms':>14} {'rmse':>7} | "
        f"{'pysabr(fair) ms':>15} {'rmse':>6}"
    )
    for days, t_ours, e_ours, t_def, e_def, t_fair, e_fair in rows:
        print(
            f"{days:5.0f} | {1e3 * t_ours:8.2f} {e_ours:6.3f} | {1e3 * t_def:14.1f} {e_def:7.3f} | "
            f"{1e3 * t_fair:15.1f} {e_fair:6.3f}"
        )
    col = list(zip(*rows, strict=True))
    med = {
        name: statistics.median(values)
        for name, values in zip(
            ("days", "t_ours", "e_ours", "t_def", "e_def", "t_fair", "e_fair"), col, strict=True
        )
    }
    print("-" * 78)
    print(
        f"{'median':>5} | {1e3 * med['t_ours']:8.2f} {med['e_ours']:6.3f} | {1e3 * med['t_def']:14.1f} "
        f"{med['e_def']:7.3f} | {1e3 * med['t_fair']:15.1f} {med['e_fair']:6.3f}"
    )
    print(
        f"speed-up vs pysabr default start: {med['t_def'] / med['t_ours']:.0f}x, "
        f"vs pysabr fair start: {med['t_fair'] / med['t_ours']:.0f}x"
    )
    diffs = [e_o - e_f for _, _, e_o, _, _, _, e_f in rows]
    print(
        f"RMSE ours - pysabr(fair), vol pts: min {min(diffs):+.1e}, max {max(diffs):+.1e}, "
        f"mean {statistics.fmean(diffs):+.1e} (both signs: the Obłój vs Hagan formula, not convergence)"
    )
    print(
        f"mean RMSE ours {statistics.fmean(col[2]):.4f}, pysabr(fair) {statistics.fmean(col[6]):.4f}, "
        f"pysabr(default) {statistics.fmean(col[4]):.4f} vol pts"
    )


if __name__ == "__main__":
    main()
