"""The compiled chain Greeks against black76.greeks, their numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volguard_common.quant import _greeks_kernels, black76


@pytest.mark.parametrize("seed", range(5))
def test_compiled_greeks_match_black76(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5_000
    forward = rng.uniform(15_000.0, 30_000.0, n)
    # Deep wings (|ln K/F| up to ~1.5) at short and long dates: the erfcx branch of the time value.
    strike = forward * np.exp(rng.normal(0.0, 0.4, n))
    t = np.exp(rng.uniform(math.log(1e-4), math.log(2.0), n))
    vol = rng.uniform(0.02, 1.5, n)
    is_call = rng.random(n) < 0.5
    discount = np.exp(-rng.uniform(0.0, 0.1, n) * t)
    reference = black76.greeks(forward, strike, t, vol, is_call, discount)
    block = _greeks_kernels.delta_gamma_vega_theta(forward, strike, t, vol, is_call, discount)
    for row, name in enumerate(_greeks_kernels.GREEK_ROWS):
        expected = getattr(reference, name)
        np.testing.assert_allclose(block[row], expected, rtol=1e-10, atol=1e-300, err_msg=name)


def test_compiled_greeks_at_the_edges() -> None:
    forward = np.array([24_000.0, 24_000.0, 24_000.0, 24_000.0])
    strike = np.array([24_000.0, 23_000.0, 25_000.0, 24_500.0])
    t = np.array([0.05, 0.05, 0.0, 0.05])
    vol = np.array([0.0, 0.0, 0.2, np.nan])
    is_call = np.array([True, True, False, True])
    discount = np.ones(4)
    block = _greeks_kernels.delta_gamma_vega_theta(forward, strike, t, vol, is_call, discount)
    reference = black76.greeks(forward[:3], strike[:3], t[:3], vol[:3], is_call[:3], discount[:3])
    for row, name in enumerate(_greeks_kernels.GREEK_ROWS):
        # Zero vol or zero time: the payoff kink, exactly as black76 has it (NaN Dirac at the strike).
        np.testing.assert_array_equal(block[row, :3], getattr(reference, name), err_msg=name)
    # No implied vol: every Greek is unknown, not the zero-vol limit.
    assert np.isnan(block[:, 3]).all()
