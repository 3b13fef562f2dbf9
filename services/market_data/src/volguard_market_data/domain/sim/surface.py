"""The true option surface: SABR parameters per expiry, driven by India VIX.

ATM term structure (variance mean reversion, the shape a Heston-type model gives):

    atm(T)^2 = L^2 + (vix30^2 - L^2) * phi(T) / phi(30d),   phi(T) = (1 - e^{-kT}) / (kT)

so the 30-day ATM vol is exactly VIX/100, the curve slopes upward when VIX is below the long-run
level L (the calm NIFTY norm: weeklies ~1 vol point under the monthly) and inverts when VIX spikes
above it. Smile per expiry: SABR (Hagan with the Obłój correction, `quant.sabr.vol`) with beta 0.5 —
the value analytics calibrates with, so fitted and true parameters are directly comparable — rho
negative (put skew, steeper when VIX is high) and nu growing as expiry nears (nu ~ T^-0.4: short-dated
smiles are steeper in log-strike, as on the exchange). alpha follows from the ATM vol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from volguard_common.quant import sabr
from volguard_common.quant._types import Float64Array

BETA = 0.5
DAYS_PER_YEAR = 365.0
THIRTY_DAYS = 30.0 / DAYS_PER_YEAR


@dataclass(frozen=True, slots=True)
class SurfaceModel:
    long_run_vol: float = 0.155
    kappa: float = 6.0  # per calendar year
    rho_calm: float = -0.55
    rho_per_stress: float = -0.10
    nu_30d: float = 1.3
    nu_per_stress: float = 0.3
    nu_power: float = 0.4
    nu_max: float = 6.0
    # nu stops growing inside the last trading hour: Hagan's expansion is not meant for T -> 0 with
    # an exploding nu, and the last hour's options are priced almost entirely off intrinsic anyway.
    nu_min_t: float = 1.0 / (DAYS_PER_YEAR * 6.25)


@dataclass(frozen=True, slots=True)
class ExpiryTruth:
    """What the simulator priced one expiry with at one instant (analytics tests compare fits to it)."""

    expiry: date
    t: float  # years to expiry_cutoff, ACT/365
    forward: float
    discount: float
    atm_vol: float
    alpha: float
    beta: float
    rho: float
    nu: float

    def vol(self, strike: Float64Array) -> Float64Array:
        """The true implied vol at `strike`."""
        out: Float64Array = sabr.vol(self.forward, strike, self.t, self.alpha, self.beta, self.rho, self.nu)
        return out


@dataclass(frozen=True, slots=True)
class SmileParams:
    """Arrays over expiries."""

    atm_vol: Float64Array
    alpha: Float64Array
    rho: Float64Array
    nu: Float64Array


def _phi(kappa: float, t: Float64Array) -> Float64Array:
    kt = kappa * np.maximum(t, 1e-9)
    out: Float64Array = -np.expm1(-kt) / kt
    return out


def atm_term_structure(vol30: float, t: Float64Array, model: SurfaceModel = SurfaceModel()) -> Float64Array:  # noqa: B008
    """ATM vol for each time to expiry `t` (years) when the 30-day ATM vol is `vol30`."""
    ratio = _phi(model.kappa, t) / _phi(model.kappa, np.asarray(THIRTY_DAYS))
    long2 = model.long_run_vol**2
    var = long2 + (vol30 * vol30 - long2) * ratio
    # A very calm market with a long-run level far above it could push the short end to nothing;
    # no NIFTY weekly has traded below half the 30-day vol.
    out: Float64Array = np.sqrt(np.maximum(var, (0.5 * vol30) ** 2))
    return out


def smile_params(
    vol30: float,
    t: Float64Array,
    forward: Float64Array,
    model: SurfaceModel = SurfaceModel(),  # noqa: B008
) -> SmileParams:
    """SABR parameters (beta = BETA) for expiries with times `t` and forwards `forward`."""
    atm = atm_term_structure(vol30, t, model)
    stress = min(max((vol30 - 0.14) / 0.10, -0.5), 1.5)
    rho = np.full(t.shape, min(max(model.rho_calm + model.rho_per_stress * stress, -0.85), -0.3))
    t_nu = np.maximum(t, model.nu_min_t)
    nu = np.minimum(
        model.nu_30d * (1.0 + model.nu_per_stress * stress) * (t_nu / THIRTY_DAYS) ** (-model.nu_power),
        model.nu_max,
    )
    alpha = np.array(
        [
            sabr.alpha_from_atm(float(a), float(f), float(tt), BETA, float(r), float(n))
            for a, f, tt, r, n in zip(atm, forward, t, rho, nu, strict=True)
        ]
    )
    return SmileParams(atm_vol=atm, alpha=alpha, rho=rho, nu=nu)


def years_between(seconds: float) -> float:
    return seconds / (DAYS_PER_YEAR * 86_400.0)


def discount_factor(rate: float, t: float) -> float:
    return math.exp(-rate * t)
