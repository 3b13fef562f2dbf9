"""NIFTY spot and India VIX on a one-second grid: one session at a time, jointly.

Per second j of a session (x = log spot, v = log VIX, lh = log short-term variance factor):

    sigma2_j = (k_rv * VIX/100)^2 * (1 - overnight_share) / seconds_per_year * U(j) * h_j
    x  += sqrt(sigma2_j) z_j - sigma2_j / 2 + jump_j + scripted push/pull
    lh  = phi lh + xi (rho_h z_j + sqrt(1 - rho_h^2) w_j)            (log-normal stochastic variance)
    v  += kappa (ln theta - v) dt + eta sqrt(dt) (rho z_j + sqrt(1 - rho^2) e_j) - jump_beta jump_j + script

- z_j: Student-t shocks (5 degrees of freedom) scaled to unit variance: fat tails.
- h = exp(lh - var/2): a Heston-like variance factor with E h = 1 and a 15-minute half-life, so big
  moves come in clusters; rho_h < 0 makes falls raise it (leverage at the one-minute scale).
- VIX sets the level of realised vol (k_rv = 0.85: realised runs below implied, the variance risk
  premium) and moves against the index (rho = -0.7): the leverage effect at the daily scale.
- U(j): the intraday U-shape (`session.intraday_variance_profile`).
- jumps: about two a day, skewed down, each lifting VIX by `jump_beta` times its size.

Plain-Python loop over floats (the recursion is sequential): ~60 ms for a 22,500-second session, far
below the cost of quoting and serialising the chains it drives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from volguard_common.quant._types import Float64Array
from volguard_market_data.domain.sim.scenarios import SessionScript
from volguard_market_data.domain.sim.vix import SESSIONS_PER_YEAR, VixModel


@dataclass(frozen=True, slots=True)
class SpotModel:
    realised_to_implied: float = 0.85  # k_rv: realised vol / VIX
    overnight_share: float = 0.15  # part of daily variance that arrives overnight (the gap)
    drift: float = 0.11  # annual expected return (NIFTY's long-run ~11 %)
    t_dof: float = 5.0
    sv_half_life_s: float = 900.0
    sv_sd: float = 0.55  # stationary sd of log h
    sv_rho: float = -0.4
    jumps_per_day: float = 2.0
    jump_mean: float = -0.0005
    jump_sd: float = 0.0012
    jump_vix_beta: float = 8.0  # a -0.2 % jump lifts VIX by 1.6 %


@dataclass(frozen=True, slots=True)
class SessionPath:
    """One session, second by second: element j is the state at open + j seconds."""

    spot: Float64Array
    vix: Float64Array  # the true 30-day level (drives the surface)
    vix_published: Float64Array  # what the India VIX tick shows: true level x small noise
    final_log_h: float


def standard_t(rng: np.random.Generator, dof: float, size: int) -> Float64Array:
    """Student-t draws scaled to unit variance."""
    draws: Float64Array = rng.standard_t(dof, size) * math.sqrt((dof - 2.0) / dof)
    return draws


def simulate_session(
    *,
    n_seconds: int,
    open_spot: float,
    prev_close: float,
    open_vix: float,
    log_h: float,
    profile: Float64Array,
    script: SessionScript,
    rng: np.random.Generator,
    spot_model: SpotModel = SpotModel(),  # noqa: B008 - frozen dataclass, a constant
    vix_model: VixModel = VixModel(),  # noqa: B008
) -> SessionPath:
    """Simulate one session from its opening print (`open_spot`, `open_vix`) for `n_seconds` seconds."""
    n = n_seconds
    z = standard_t(rng, spot_model.t_dof, n).tolist()
    e = rng.standard_normal(n).tolist()
    w = rng.standard_normal(n).tolist()
    jump_at = rng.random(n) < spot_model.jumps_per_day / n
    jumps = np.where(jump_at, rng.normal(spot_model.jump_mean, spot_model.jump_sd, n), 0.0).tolist()
    noise = rng.standard_normal(n) * vix_model.tick_noise

    # Year fraction of one second of this session: a session is 1/252 of a year, however long it is.
    dt = 1.0 / (SESSIONS_PER_YEAR * n)
    var_scale = spot_model.realised_to_implied**2 * (1.0 - spot_model.overnight_share) * dt / 1e4
    drift = spot_model.drift * dt
    phi = math.exp(-math.log(2.0) / spot_model.sv_half_life_s)
    xi = spot_model.sv_sd * math.sqrt(1.0 - phi * phi)
    sv_rho, sv_rho_c = spot_model.sv_rho, math.sqrt(1.0 - spot_model.sv_rho**2)
    half_var_lh = 0.5 * spot_model.sv_sd**2
    vix_kappa = vix_model.kappa * dt
    vix_eta = vix_model.eta * math.sqrt(dt)
    rho, rho_c = vix_model.rho, math.sqrt(1.0 - vix_model.rho**2)
    log_theta = math.log(vix_model.theta)
    log_floor, log_cap = math.log(vix_model.floor), math.log(vix_model.cap)
    jump_beta = spot_model.jump_vix_beta

    prof = profile.tolist()
    s_push, s_target, s_pull = (
        script.spot_push.tolist(),
        script.spot_target.tolist(),
        script.spot_pull.tolist(),
    )
    v_push, v_target, v_pull = (
        script.vix_push.tolist(),
        script.vix_target.tolist(),
        script.vix_pull.tolist(),
    )

    log_prev = math.log(prev_close)
    x = math.log(open_spot) - log_prev  # log(spot / previous close): what the script targets
    v = vix_model.clamp_log(math.log(open_vix))
    lh = log_h
    xs = [0.0] * n
    vs = [0.0] * n
    xs[0], vs[0] = x, v
    exp, sqrt = math.exp, math.sqrt
    for j in range(1, n):
        zj = z[j]
        vol_level = exp(v)
        sigma2 = var_scale * vol_level * vol_level * prof[j] * exp(lh - half_var_lh)
        jump = jumps[j]
        x += sqrt(sigma2) * zj - 0.5 * sigma2 + drift + jump + s_push[j] + s_pull[j] * (s_target[j] - x)
        zc = 4.0 if zj > 4.0 else (-4.0 if zj < -4.0 else zj)
        lh = phi * lh + xi * (sv_rho * zc + sv_rho_c * w[j])
        v += (
            vix_kappa * (log_theta - v)
            + vix_eta * (rho * zc + rho_c * e[j])
            - jump_beta * jump
            + v_push[j]
            + v_pull[j] * (v_target[j] - v)
        )
        v = log_floor if v < log_floor else (log_cap if v > log_cap else v)
        xs[j], vs[j] = x, v

    spot = np.exp(np.asarray(xs) + log_prev)
    vix = np.exp(np.asarray(vs))
    return SessionPath(spot=spot, vix=vix, vix_published=vix * np.exp(noise), final_log_h=lh)


def overnight_move(
    rng: np.random.Generator,
    *,
    vix: float,
    log_h: float,
    spot_model: SpotModel = SpotModel(),  # noqa: B008
    vix_model: VixModel = VixModel(),  # noqa: B008
) -> tuple[float, float, float]:
    """(log gap of the index, log change of VIX, next morning's log h) between two sessions.

    The gap carries `overnight_share` of a day's variance with fat tails; VIX moves against it and
    mean-reverts for one day; the short-term variance factor mostly forgets the previous afternoon.
    """
    daily_sd = spot_model.realised_to_implied * vix / 100.0 / math.sqrt(252.0)
    z = float(standard_t(rng, spot_model.t_dof, 1)[0])
    gap = math.sqrt(spot_model.overnight_share) * daily_sd * z
    e = float(rng.standard_normal())
    night = 0.4 / 252.0  # VIX keeps moving overnight (global markets): ~40 % of a day's variance
    dv = vix_model.kappa / 252.0 * (math.log(vix_model.theta) - math.log(vix)) + vix_model.eta * math.sqrt(
        night
    ) * (vix_model.rho * z + math.sqrt(1.0 - vix_model.rho**2) * e)
    return gap, dv, 0.2 * log_h
