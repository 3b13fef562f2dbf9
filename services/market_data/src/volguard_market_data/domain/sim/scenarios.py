"""Scripted market days (`sim_scenario`): what happens to NIFTY and India VIX on the first simulated day.

A scenario only shapes the drivers of the ordinary model (`spot.simulate_session`): a forced overnight
gap, deterministic pushes to the log price and log VIX, and "targets" the price or VIX is pulled
towards (an Ornstein-Uhlenbeck steer: the noise stays, the day ends where the script says). Later days
are ordinary days. All randomness comes from the generator passed in, so a scenario is as
deterministic as the seed.

    gap_up_N / gap_down_N   open N % (1, 2, 3 or 5) above/below the previous close; VIX opens lower
                            (-1.5 x gap) after a gap up, higher (+5 x gap) after a gap down
    vix_spike               at a random time between 10:30 and 13:25 VIX jumps ~14 % within a minute
                            while NIFTY drops ~0.7 %; VIX stays elevated (slow mean reversion)
    event_day               VIX opens 15 % up and climbs another 10 % into a 12:15 event, then is
                            crushed ~26 % within ten minutes while NIFTY moves 1 % either way
    black_swan              1.5 % gap down, NIFTY grinds to -8 % by the close, VIX doubles over the day
    expiry_pin              a quiet expiry day: NIFTY is pulled ever harder towards a round, high-OI
                            strike near the previous close (`pin_strike`)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from volguard_common.quant._types import Float64Array

GAP_SIZES = (1, 2, 3, 5)
SCENARIOS = (
    "",
    *(f"gap_{way}_{n}" for way in ("up", "down") for n in GAP_SIZES),
    "vix_spike",
    "event_day",
    "black_swan",
    "expiry_pin",
)
_GAP = re.compile(r"^gap_(up|down)_(\d+)$")

# Seconds after the open (09:15) of the event_day event: 12:15.
EVENT_SECOND = 3 * 3600
VIX_SPIKE_SECONDS = 60
VIX_SPIKE_LOG = math.log(1.14)
EVENT_CRUSH_SECONDS = 600
BLACK_SWAN_CLOSE = 0.92
# Pull strengths per second. 6e-4 leaves the price within ~0.3 % of its target (one standard
# deviation of the steered noise at VIX ~26) while the target moves slowly.
BLACK_SWAN_PULL = 6e-4
PIN_PULL_MORNING = 2e-4
PIN_PULL_LATE = 1.4e-3


@dataclass(frozen=True, slots=True)
class SessionScript:
    """Per-second drivers of one scripted session (arrays of the session's length).

    Targets are log(spot / previous close) and log VIX; a pull of 0 leaves that second unsteered.
    """

    gap_log: float | None
    vix_gap_log: float
    spot_push: Float64Array
    vix_push: Float64Array
    spot_target: Float64Array
    spot_pull: Float64Array
    vix_target: Float64Array
    vix_pull: Float64Array
    pin_strike: float | None = None
    event_second: int | None = None
    notes: dict[str, float] = field(default_factory=dict)


def validate(name: str) -> str:
    """`name` if it is a known scenario, else ValueError listing the known ones."""
    if name not in SCENARIOS:
        known = ", ".join(repr(s) for s in SCENARIOS)
        raise ValueError(f"unknown sim scenario {name!r}; known: {known}")
    return name


def _quiet(n: int) -> SessionScript:
    zeros = np.zeros(n)
    return SessionScript(
        gap_log=None,
        vix_gap_log=0.0,
        spot_push=zeros,
        vix_push=zeros.copy(),
        spot_target=zeros.copy(),
        spot_pull=zeros.copy(),
        vix_target=zeros.copy(),
        vix_pull=zeros.copy(),
    )


def _spread(n: int, start: int, seconds: int, total: float) -> Float64Array:
    push = np.zeros(n)
    end = min(n, start + seconds)
    if end > start:
        push[start:end] = total / (end - start)
    return push


def pin_strike_near(prev_close: float) -> float:
    """The strike option writers defend on an expiry day: the nearest multiple of 500 when it lies within
    0.4 % of the previous close, else the nearest multiple of 100."""
    k500 = round(prev_close / 500.0) * 500.0
    if abs(k500 - prev_close) <= 0.004 * prev_close:
        return k500
    return round(prev_close / 100.0) * 100.0


def session_script(
    name: str, n_seconds: int, prev_close: float, prev_vix: float, rng: np.random.Generator
) -> SessionScript:
    """The drivers of a session of `n_seconds` under scenario `name` ('' = an ordinary day)."""
    validate(name)
    n = n_seconds
    script = _quiet(n)
    if name == "":
        return script
    tau = (np.arange(n) + 0.5) / n
    gap = _GAP.match(name)
    if gap is not None:
        size = int(gap.group(2)) / 100.0
        log_gap = math.log(1.0 + size) if gap.group(1) == "up" else math.log(1.0 - size)
        log_gap += float(rng.normal(0.0, 0.0005))
        vix_gap = -1.5 * log_gap if log_gap > 0 else -5.0 * log_gap
        return SessionScript(
            gap_log=log_gap,
            vix_gap_log=vix_gap,
            spot_push=script.spot_push,
            vix_push=script.vix_push,
            spot_target=script.spot_target,
            spot_pull=script.spot_pull,
            vix_target=script.vix_target,
            vix_pull=script.vix_pull,
        )
    if name == "vix_spike":
        start = int(rng.integers(4_500, 15_000)) if n > 15_000 + VIX_SPIKE_SECONDS else n // 3
        return SessionScript(
            gap_log=None,
            vix_gap_log=0.0,
            spot_push=_spread(n, start, VIX_SPIKE_SECONDS, math.log(0.993)),
            vix_push=_spread(n, start, VIX_SPIKE_SECONDS, VIX_SPIKE_LOG),
            spot_target=script.spot_target,
            spot_pull=script.spot_pull,
            vix_target=script.vix_target,
            vix_pull=script.vix_pull,
            event_second=start,
        )
    if name == "event_day":
        event = min(EVENT_SECOND, n // 2)
        direction = 1.0 if rng.random() < 0.5 else -1.0
        vix_push = _spread(n, 0, event, math.log(1.10)) + _spread(
            n, event, EVENT_CRUSH_SECONDS, -math.log(1.35)
        )
        return SessionScript(
            gap_log=None,
            vix_gap_log=math.log(1.15),
            spot_push=_spread(n, event, 60, direction * 0.01),
            vix_push=vix_push,
            spot_target=script.spot_target,
            spot_pull=script.spot_pull,
            vix_target=script.vix_target,
            vix_pull=script.vix_pull,
            event_second=event,
            notes={"direction": direction},
        )
    if name == "black_swan":
        shape = (1.0 - np.exp(-tau / 0.3)) / (1.0 - math.exp(-1.0 / 0.3))
        open_log = math.log(0.985)
        spot_target = open_log + (math.log(BLACK_SWAN_CLOSE) - open_log) * shape
        vix_target = math.log(prev_vix) + math.log(1.25) + (math.log(2.0) - math.log(1.25)) * shape
        return SessionScript(
            gap_log=open_log,
            vix_gap_log=math.log(1.25),
            spot_push=script.spot_push,
            vix_push=script.vix_push,
            spot_target=spot_target,
            spot_pull=np.full(n, BLACK_SWAN_PULL),
            vix_target=vix_target,
            vix_pull=np.full(n, 1e-3),
        )
    # expiry_pin
    pin = pin_strike_near(prev_close)
    return SessionScript(
        gap_log=float(rng.normal(0.0, 0.001)),
        vix_gap_log=-0.03,
        spot_push=script.spot_push,
        vix_push=script.vix_push,
        spot_target=np.full(n, math.log(pin / prev_close)),
        spot_pull=PIN_PULL_MORNING + (PIN_PULL_LATE - PIN_PULL_MORNING) * tau * tau,
        vix_target=script.vix_target,
        vix_pull=script.vix_pull,
        pin_strike=pin,
    )
