"""Analytics on the simulated market (issue 5): the engine recovers the simulator's true smiles, the
scripted days give the regimes they are written to produce, and one seed gives one VolSnapshot sequence.

Pure (no Redis, no Postgres): the simulator's batches are parsed from their published bytes, grouped into
chain sets by the service's own `ChainSetAssembler`, and fed to a `VolEngine` the way the analytics
service does it (`service.Analytics._process`): the index and VIX observations come from each chain
set's own metadata (the front chain's spot, the first VIX on the set), history is the simulator's daily
bars (NIFTY and INDIAVIX, no ATM IV history yet) and the calendar is the built-in one.

Tolerances come from how the simulator quotes (`sim/quotes.py`): every mid is the model price rounded to
the 0.05 tick, so each implied vol is off by at most (tick/2)/vega, plus what the parity forward's own
error does to it (`fit_points`). `linearised_bounds` turns those per-quote bounds into worst-case bounds
on the fitted SABR parameters and the ATM IV. That is also where identifiability shows: a smile seen on
five strikes pins rho and nu far less than one seen on eighty, and the bound says by how much.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd

from volguard_analytics.chain_sets import ChainSetAssembler
from volguard_analytics.domain.calendar import builtin_events
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.history import VolHistory
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import clock, events
from volguard_common.clock import IST
from volguard_common.events.vol import ExpiryVol, IvFlag, Quality, Regime, VolSnapshot
from volguard_common.quant import sabr
from volguard_common.quant._types import Float64Array
from volguard_common.settings import Settings
from volguard_market_data.adapters.sim_source import SimSource
from volguard_market_data.domain.sim.daily_bars import INDIA_VIX, NIFTY, daily_bars
from volguard_market_data.domain.sim.surface import ExpiryTruth

# Tuesday 1 December 2026 is a weekly expiry day (seven expiries listed, the first expiring at 15:40);
# Wednesday 2 December an ordinary day. No built-in RBI or Budget date is within weeks of either, so
# event risk stays far below the EVENT_CRUSH bar and only the simulated market decides the regime.
EXPIRY_DAY_OPEN = datetime(2026, 12, 1, 9, 15, tzinfo=IST)
ORDINARY_DAY_OPEN = datetime(2026, 12, 2, 9, 15, tzinfo=IST)
SOURCE = "analytics/sim-test"
INDEX_KEY = "NSE_INDEX|Nifty 50"
VIX_KEY = "NSE_INDEX|India VIX"
CONFIG = AnalyticsConfig.from_settings(Settings())


@dataclass(frozen=True)
class Step:
    """One VolSnapshot with the chains it came from and what the simulator priced them with."""

    snapshot: VolSnapshot
    chains: dict[date, events.ChainSnapshot]
    truth: dict[date, ExpiryTruth]


def sim_history(seed: int, day: date) -> VolHistory:
    """The bars the market_data service seeds market.daily_bars with, as analytics loads them."""
    bars = daily_bars(clock.previous_trading_day(day), seed)
    index = [bar for bar in bars if bar.symbol == NIFTY]
    vix = [bar for bar in bars if bar.symbol == INDIA_VIX]
    return VolHistory(
        index_bars=pd.DataFrame(
            {
                "trade_date": [bar.trade_date for bar in index],
                **{col: [getattr(bar, col) for bar in index] for col in ("open", "high", "low", "close")},
            }
        ),
        vix_close=pd.Series(
            [bar.close for bar in vix], index=pd.to_datetime([bar.trade_date for bar in vix])
        ),
    )


def analytics_on_sim(
    *, seed: int, start: datetime, steps: int, interval_s: float, scenario: str = ""
) -> Iterator[Step]:
    """Run the simulator from `start` for `steps` snapshots and the engine on every chain set."""
    settings = Settings(sim_seed=seed, sim_scenario=scenario, sim_snapshot_interval_s=interval_s)
    day = start.date()
    engine = VolEngine(
        AnalyticsConfig.from_settings(settings),
        sim_history(seed, day),
        builtin_events(day - timedelta(days=7), day + timedelta(days=60)),
        source=SOURCE,
    )
    source = SimSource(settings, start=start, steps=steps)
    assembler = ChainSetAssembler()
    while (batch := source.next_batch()) is not None:
        chain_sets = [
            chain_set
            for publication in batch.publications
            if isinstance(event := events.parse_event(publication.payload), events.ChainSnapshot)
            for chain_set in assembler.add(event)
        ]
        assert len(chain_sets) == 1
        assert chain_sets[0].complete
        assembler.processed(chain_sets[0])
        chains = chain_sets[0].snapshots
        front = chains[0]
        engine.observe_index(
            events.Tick(
                ts_event=front.ts_event,
                source=SOURCE,
                instrument_key=INDEX_KEY,
                symbol="NIFTY",
                kind=events.InstrumentKind.INDEX,
                ltp=front.spot,
                correlation_id=front.correlation_id,
            )
        )
        vix = next(chain.vix for chain in chains if chain.vix is not None)
        engine.observe_vix(
            events.Tick(
                ts_event=front.ts_event,
                source=SOURCE,
                instrument_key=VIX_KEY,
                symbol="INDIAVIX",
                kind=events.InstrumentKind.VIX,
                ltp=vix,
                correlation_id=front.correlation_id,
            )
        )
        yield Step(
            snapshot=engine.snapshot(chains),
            chains={chain.expiry: chain for chain in chains},
            truth={chain.expiry: source.market.truth(chain.expiry) for chain in chains},
        )


# ---- 1. fitted smiles and ATM IVs track the true ones --------------------------------------------


@dataclass(frozen=True)
class FitPoints:
    """The quotes the engine fitted (clean OTM), read back from the published surface."""

    strike: Float64Array
    vol: Float64Array
    vol_error: Float64Array  # the most each implied vol can be off the true smile
    weight: Float64Array  # the engine's fit weight of each quote


def fit_points(block: ExpiryVol, chain: events.ChainSnapshot, truth: ExpiryTruth) -> FitPoints:
    """The quotes the SABR fit used and, for each, the most its implied vol can be off the true smile.

    The mid is the model price rounded to the tick, off by at most tick/2: (tick/2)/vega in vol. The
    engine solves with its parity forward F^, not the true F: the option price moves by |delta| |dF|,
    so the vol by |delta| |dF| / vega; and the true smile read against F^ moves by |d sigma/dF| |dF|.
    """
    surface = block.surface
    strike = np.asarray(surface.strike)
    sides = (
        (
            surface.iv_call,
            surface.call_flags,
            surface.call_vega,
            surface.call_delta,
            chain.call_bid,
            chain.call_ask,
        ),
        (
            surface.iv_put,
            surface.put_flags,
            surface.put_vega,
            surface.put_delta,
            chain.put_bid,
            chain.put_ask,
        ),
    )
    columns = []
    for ivs, flags, vegas, deltas, bids, asks in sides:
        vol = np.array([np.nan if v is None else v for v in ivs])
        fitted = ~np.isnan(vol) & ((np.asarray(flags) & int(IvFlag.EXCLUDED_FROM_FIT)) == 0)
        vega = 100.0 * np.array([np.nan if v is None else v for v in vegas])  # published per vol point
        delta = np.array([np.nan if v is None else v for v in deltas])
        half_spread = 0.5 * (asks - bids)
        columns.append(
            (strike[fitted], vol[fitted], vega[fitted], np.abs(delta[fitted]), half_spread[fitted])
        )
    k, vol, vega, delta, half_spread = (np.concatenate(parts) for parts in zip(*columns, strict=True))
    forward_error = abs(block.forward - truth.forward)
    dsigma_df = np.abs(_true_vols(truth, k, truth.forward + 0.5) - _true_vols(truth, k, truth.forward - 0.5))
    error = (0.5 * chain.tick_size + delta * forward_error) / vega + dsigma_df * forward_error
    # The engine's weight (`expiry.analyse_expiry`): 1 / ((half-spread + tick/2) / vega)^2.
    weight = (vega / (half_spread + 0.5 * chain.tick_size)) ** 2
    return FitPoints(k, vol, error, weight)


def _true_vols(truth: ExpiryTruth, strike: Float64Array, forward: float) -> Float64Array:
    out: Float64Array = sabr.vol(forward, strike, truth.t, truth.alpha, truth.beta, truth.rho, truth.nu)
    return out


def _true_vol(truth: ExpiryTruth, strike: float, forward: float) -> float:
    return float(sabr.vol(forward, strike, truth.t, truth.alpha, truth.beta, truth.rho, truth.nu))


def linearised_bounds(
    points: FitPoints, forward: float, truth: ExpiryTruth
) -> tuple[Float64Array, Float64Array]:
    """Worst-case errors of the weighted least-squares (alpha, rho, nu) when each fitted vol is off by
    at most `vol_error`, to first order: the fit moves by A e with A = (J'WJ)^-1 J'W, J the smile's
    Jacobian at the true parameters, so |error_j| <= sum_i |A_ji| e_i. Also returns g A, the rows that
    carry quote errors into the smile's own vol at the forward (the ATM IV when read off the fit)."""
    theta = np.array([truth.alpha, truth.rho, truth.nu])
    steps = np.array([1e-6 * truth.alpha, 1e-6, 1e-6 * truth.nu])

    def smile(params: Float64Array, strikes: Float64Array) -> Float64Array:
        out: Float64Array = sabr.vol(forward, strikes, truth.t, params[0], truth.beta, params[1], params[2])
        return out

    def jacobian(strikes: Float64Array) -> Float64Array:
        columns = []
        for j, h in enumerate(steps):
            bump = np.zeros(3)
            bump[j] = h
            columns.append((smile(theta + bump, strikes) - smile(theta - bump, strikes)) / (2.0 * h))
        return np.stack(columns, axis=-1)

    jac = jacobian(points.strike)
    weighted = jac * points.weight[:, None]
    sensitivity = np.linalg.solve(jac.T @ weighted, weighted.T)  # A, shape (3, n)
    at_forward = jacobian(np.asarray([forward]))[0] @ sensitivity  # g A, shape (n,)
    return np.abs(sensitivity) @ points.vol_error, np.abs(at_forward)


def atm_iv_bound(block: ExpiryVol, points: FitPoints, truth: ExpiryTruth, smile_bound: float) -> float:
    """The most the published ATM IV can be off the true ATM vol, following `expiry._atm_iv`: linear
    interpolation between the clean OTM quotes either side of F^ when they are adjacent listed strikes,
    else the fitted smile at F^ (`smile_bound`). Either way plus the true smile's own move from F to F^.
    """
    forward = block.forward
    to_forward = abs(_true_vol(truth, forward, truth.forward) - float(truth.atm_vol))
    below = points.strike <= forward
    above = points.strike >= forward
    if below.any() and above.any():
        k_lo, k_hi = float(points.strike[below].max()), float(points.strike[above].min())
        listed = np.asarray(block.surface.strike)
        if not np.any((listed > k_lo) & (listed < k_hi)):
            e_lo = float(points.vol_error[points.strike == k_lo].max())
            e_hi = float(points.vol_error[points.strike == k_hi].max())
            if k_hi == k_lo:
                return e_lo + to_forward
            w = (forward - k_lo) / (k_hi - k_lo)
            true_lo, true_hi = _true_vol(truth, k_lo, truth.forward), _true_vol(truth, k_hi, truth.forward)
            # Linear interpolation of the true smile misses its curvature between the two strikes.
            curvature = abs((1.0 - w) * true_lo + w * true_hi - _true_vol(truth, forward, truth.forward))
            return (1.0 - w) * e_lo + w * e_hi + curvature + to_forward
    return smile_bound + to_forward


# The bounds are worst cases to first order (every quote's rounding error at its maximum, each with
# the sign that hurts most). The fit is nonlinear, and on the few-strike smile of the expiring weekly
# the errors are large enough for second-order terms to show: 25 % headroom covers them. A fit that
# lands on another local minimum, or a wrong forward or time to expiry, misses by multiples of the
# bound (over seeds 3, 4, 5, 7 and 11 the largest error/bound ratio was 0.86).
LINEARISATION_SLACK = 1.25


def test_fitted_smiles_and_atm_ivs_track_the_true_ones_on_an_expiry_day() -> None:
    # 40 snapshots a minute apart from the open of an expiry day: every expiry of the day, weekly to
    # third monthly, and the one expiring at 15:40, which on this seed's tape is fitted on some
    # snapshots and has too few clean quotes on others.
    steps = 40
    fitted: dict[date, int] = {}
    unfitted: dict[date, int] = {}
    widest = np.zeros(4)  # widest bounds on (alpha/alpha, rho, nu/nu, ATM IV) of the later expiries
    for step in analytics_on_sim(seed=3, start=EXPIRY_DAY_OPEN, steps=steps, interval_s=60.0):
        snapshot = step.snapshot
        assert [block.expiry for block in snapshot.expiries] == sorted(step.truth)
        for block in snapshot.expiries:
            truth = step.truth[block.expiry]
            label = f"{block.expiry} at {snapshot.ts_event.time()}"
            # The parity forward averages K + (C - P)/D over strikes near the money; each mid is within
            # half a tick of its model price, so each term, and their mean, is within tick/D of F.
            tick = step.chains[block.expiry].tick_size
            assert abs(block.forward - truth.forward) <= tick / truth.discount + 1e-9, label
            fit = block.sabr
            if fit is None:
                # Hours before expiry few OTM quotes are clean and two-sided: no fit is legitimate, but
                # only on the expiring chain, and the snapshot must say so rather than look GOOD.
                assert block.expiry == snapshot.ts_event.date(), (label, snapshot.quality_reasons)
                assert snapshot.quality is not Quality.GOOD
                assert any(
                    reason.startswith(f"{block.expiry.isoformat()}: only") and reason.endswith("no SABR fit")
                    for reason in snapshot.quality_reasons
                ), snapshot.quality_reasons
                if block.atm_iv is None:
                    assert snapshot.quality is Quality.BAD
                unfitted[block.expiry] = unfitted.get(block.expiry, 0) + 1
                continue
            points = fit_points(block, step.chains[block.expiry], truth)
            assert points.strike.size == fit.n_points, label
            assert fit.converged, label
            assert fit.beta == truth.beta, label
            bounds, at_forward = linearised_bounds(points, block.forward, truth)
            errors = np.abs(np.array([fit.alpha - truth.alpha, fit.rho - truth.rho, fit.nu - truth.nu]))
            assert np.all(errors <= LINEARISATION_SLACK * bounds), (label, errors, bounds)
            assert block.atm_iv is not None, label
            atm_bound = atm_iv_bound(block, points, truth, float(at_forward @ points.vol_error))
            atm_error = abs(block.atm_iv - truth.atm_vol)
            assert atm_error <= LINEARISATION_SLACK * atm_bound, (label, atm_error, atm_bound)
            fitted[block.expiry] = fitted.get(block.expiry, 0) + 1
            if block.expiry != snapshot.ts_event.date():
                relative = np.array([bounds[0] / truth.alpha, bounds[1], bounds[2] / truth.nu, atm_bound])
                widest = np.maximum(widest, relative)
    expiring, *later = clock.next_expiries(EXPIRY_DAY_OPEN).all
    assert all(fitted.get(expiry) == steps for expiry in later), fitted
    assert fitted.get(expiring, 0) > 0, fitted
    assert unfitted.get(expiring, 0) > 0, unfitted
    assert fitted.get(expiring, 0) + unfitted.get(expiring, 0) == steps
    # The bounds are tight, so passing them means tracking: on every later expiry alpha within 0.2 %,
    # rho within 0.02, nu within 5 % and the ATM IV within 0.02 vol points of the truth.
    assert np.all(widest < np.array([0.002, 0.02, 0.05, 0.0002])), widest


def smile_rmse_by_expiry(seed: int, start: datetime, steps: int, interval_s: float) -> dict[date, float]:
    """Per expiry, the RMSE (vol, fraction) of the fitted SABR smile against the true one, pooled over
    the snapshots from `start` and over the listed strikes within 2.5 ATM standard deviations of the
    forward (where quotes are two-sided and strategies trade); expiries never fitted are absent."""
    squares: dict[date, list[float]] = {}
    for step in analytics_on_sim(seed=seed, start=start, steps=steps, interval_s=interval_s):
        for block in step.snapshot.expiries:
            fit, truth = block.sabr, step.truth[block.expiry]
            if fit is None:
                continue
            strike = np.asarray(block.surface.strike)
            near = np.abs(np.log(strike / truth.forward)) <= 2.5 * truth.atm_vol * math.sqrt(truth.t)
            fitted = sabr.vol(block.forward, strike[near], truth.t, fit.alpha, fit.beta, fit.rho, fit.nu)
            squares.setdefault(block.expiry, []).extend(((fitted - truth.vol(strike[near])) ** 2).tolist())
    return {expiry: math.sqrt(float(np.mean(values))) for expiry, values in squares.items()}


def test_first_minutes_fits_on_an_expiry_day_track_the_true_smile_as_well_as_mid_session() -> None:
    # Issue 14: a quote with a valid bid and ask was left out of the fit because its last trade was
    # stale, which starved the fits of a mid-session start and of quiet wings. Ten snapshots 30 s apart
    # from 09:16, against ten from 12:30 of the same expiry day and seed: every expiry at least one
    # trading day out fits the true smile within 1.5x of its mid-session RMSE. Measured on this seed:
    # ratios 0.64-1.38 (RMSEs 0.0002-0.0015 vol points, the quotes' tick rounding); the expiring
    # weekly at the open: 0.014 vol points from ~4 clean quotes, no fit at all mid-session. With the
    # stale exclusion the mid-session fits used about half as many quotes (21-41 against 35-112).
    seed, steps, interval_s = 3, 10, 30.0
    opening = smile_rmse_by_expiry(seed, EXPIRY_DAY_OPEN + timedelta(minutes=1), steps, interval_s)
    midday = smile_rmse_by_expiry(
        seed, datetime.combine(EXPIRY_DAY_OPEN.date(), time(12, 30), IST), steps, interval_s
    )
    expiring, *later = clock.next_expiries(EXPIRY_DAY_OPEN).all
    assert expiring in opening  # the 0DTE smile is fitted in the first minutes
    for expiry in later:
        assert clock.trading_days_between(EXPIRY_DAY_OPEN.date(), expiry) >= 1
        assert opening[expiry] <= 1.5 * midday[expiry], (expiry, opening[expiry], midday[expiry])


# ---- 2. scripted days give their regimes -------------------------------------------------------------


def spike_time(seed: int, day_open: datetime) -> datetime:
    """When the vix_spike scenario's jump starts (drawn when the simulator opens the session)."""
    source = SimSource(Settings(sim_seed=seed, sim_scenario="vix_spike"), start=day_open, steps=1)
    assert source.next_batch() is not None
    second = source.market.session_script.event_second
    assert second is not None
    session_open: datetime = source.market.session_open
    return session_open + timedelta(seconds=second)


def test_vix_spike_turns_the_spike_filter_on_and_the_regime_to_event_crush() -> None:
    seed, interval_s = 7, 5.0
    spike_at = spike_time(seed, ORDINARY_DAY_OPEN)
    # From two minutes before the jump to six after it: the jump takes one minute and the filter looks
    # back `vix_spike_window_s` (three minutes), so by the end it has seen the spike come and go.
    start = spike_at - timedelta(minutes=2)
    steps = int(timedelta(minutes=8) / timedelta(seconds=interval_s))
    window = timedelta(seconds=CONFIG.vix_spike_window_s)
    snapshots = [
        step.snapshot
        for step in analytics_on_sim(
            seed=seed, start=start, steps=steps, interval_s=interval_s, scenario="vix_spike"
        )
    ]
    flags = [snapshot.regime.vix_spike for snapshot in snapshots]
    # The documented rule on the prints the engine saw: VIX more than vix_spike_pct above its low of
    # the trailing window.
    expected = []
    for snapshot in snapshots:
        trailing = [s.vix for s in snapshots if snapshot.ts_event - window <= s.ts_event <= snapshot.ts_event]
        assert snapshot.vix is not None
        assert None not in trailing
        low = min(vix for vix in trailing if vix is not None)
        expected.append(snapshot.vix > (1.0 + CONFIG.vix_spike_pct / 100.0) * low)
    assert flags == expected
    on = [snapshot for snapshot in snapshots if snapshot.regime.vix_spike]
    assert on, "the scripted 14 % jump never tripped the spike filter"
    assert all(spike_at < s.ts_event <= spike_at + timedelta(seconds=60) + window for s in on)
    # EVENT_CRUSH scores 1 while the filter is on and every other regime is scaled to 0 by it: the
    # regime switches at once (score margin) and its confidence is exactly 1.
    assert all(s.regime.regime is Regime.EVENT_CRUSH and s.regime.confidence == 1.0 for s in on)
    before = [s for s in snapshots if s.ts_event < spike_at]
    assert before
    assert all(s.regime.regime is not Regime.EVENT_CRUSH for s in before)
    # Once the filter is off again the override does not stick.
    assert not snapshots[-1].regime.vix_spike
    assert snapshots[-1].regime.regime is not Regime.EVENT_CRUSH

    # The same seed and window on an ordinary day: no spike, no EVENT_CRUSH.
    calm = [
        step.snapshot for step in analytics_on_sim(seed=seed, start=start, steps=steps, interval_s=interval_s)
    ]
    assert not any(s.regime.vix_spike or s.regime.regime is Regime.EVENT_CRUSH for s in calm)


def test_calm_low_vix_day_gives_low_vol() -> None:
    # Seed 3's history ends with India VIX near 13, in the bottom fifth of its last year, and the
    # morning is quiet: the tape LOW_VOL describes.
    snapshots = [
        step.snapshot for step in analytics_on_sim(seed=3, start=ORDINARY_DAY_OPEN, steps=30, interval_s=60.0)
    ]
    for snapshot in snapshots:
        percentile = snapshot.percentiles.vix_percentile
        assert percentile is not None
        assert percentile < CONFIG.vix_low_percentile
        assert not snapshot.is_expiry_day
        assert not snapshot.regime.vix_spike
    assert [s.regime.regime for s in snapshots] == [Regime.LOW_VOL] * len(snapshots)


def test_expiry_pin_day_gives_gamma_pin() -> None:
    # Every ten minutes of an expiry day, open to close.
    steps, interval_s = 38, 600.0
    source = SimSource(Settings(sim_seed=7, sim_scenario="expiry_pin"), start=EXPIRY_DAY_OPEN, steps=1)
    assert source.next_batch() is not None
    pin = source.market.session_script.pin_strike
    snapshots = [
        step.snapshot
        for step in analytics_on_sim(
            seed=7, start=EXPIRY_DAY_OPEN, steps=steps, interval_s=interval_s, scenario="expiry_pin"
        )
    ]
    assert snapshots[-1].ts_event.time() >= time(15, 20)
    for snapshot in snapshots:
        assert snapshot.is_expiry_day
        # The engine sees the OI pile the scenario put on the expiring chain at the pinned strike.
        assert snapshot.expiries[0].expiry == EXPIRY_DAY_OPEN.date()
        assert snapshot.expiries[0].call_oi_wall == pin
        assert snapshot.regime.regime is Regime.GAMMA_PIN, (snapshot.ts_event, snapshot.regime)

    # The same seed's ordinary expiry day has OI spread the usual way: no pin.
    ordinary = [
        step.snapshot
        for step in analytics_on_sim(seed=7, start=EXPIRY_DAY_OPEN, steps=steps, interval_s=interval_s)
    ]
    assert not any(s.regime.regime is Regime.GAMMA_PIN for s in ordinary)


# ---- 3. determinism ------------------------------------------------------------------------------------


def test_same_seed_and_scenario_give_identical_vol_snapshots() -> None:
    seed, interval_s = 11, 5.0
    start = spike_time(seed, ORDINARY_DAY_OPEN) - timedelta(minutes=1)

    def run() -> list[str]:
        return [
            step.snapshot.model_dump_json()
            for step in analytics_on_sim(
                seed=seed, start=start, steps=48, interval_s=interval_s, scenario="vix_spike"
            )
        ]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == len(first)
    # The window holds the spike, so the filter's and the regime's state are part of what repeated.
    assert any(VolSnapshot.model_validate_json(payload).regime.vix_spike for payload in first)
