"""Per-expiry analysis on chains priced from known SABR parameters (tick-rounded, with a spread).

Tolerances: a quote's mid is the true price to within half a tick (0.025), the bid and ask being rounded
outward. In vol that is 0.025 / vega: about 2e-5 at the money of a 6-day NIFTY option (vega ~1,300
points per 1.00 of vol) and more in the wings, where the inverse-uncertainty weights give those
quotes correspondingly less say. The tolerances below are ~5-10x what that noise produces.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest

from tests.unit.analytics.chains import CONFIG, TS, sabr_chain
from volguard_analytics.domain.expiry import (
    analyse_expiry,
    analyse_set,
    classify_quotes,
    delta_25_vols,
)
from volguard_common.events import QuoteFlag
from volguard_common.events.vol import ForwardSource, IvFlag, Quality
from volguard_common.quant import black76, iv, sabr, stats

WEEKLY = date(2025, 12, 23)
MONTHLY = date(2026, 1, 27)


@pytest.mark.parametrize("expiry", [WEEKLY, MONTHLY])
def test_fit_recovers_known_sabr_parameters(expiry: date) -> None:
    chain, truth = sabr_chain(TS, expiry, atm_vol=0.14, rho=-0.35, nu=1.2)
    analysis = analyse_expiry(chain, TS, 1000.0, CONFIG)
    vol = analysis.vol
    assert analysis.quality is Quality.GOOD, analysis.reasons
    assert vol.forward_source is ForwardSource.PARITY
    # Parity over 5 near strikes averages half-tick noise: well inside a tenth of a point.
    assert vol.forward == pytest.approx(truth.forward, abs=0.1)
    assert vol.atm_iv == pytest.approx(float(truth.vol(truth.forward)), abs=1e-4)
    fit = vol.sabr
    assert fit is not None
    assert fit.converged
    assert fit.alpha == pytest.approx(truth.alpha, rel=5e-3)
    assert fit.rho == pytest.approx(truth.rho, abs=0.02)
    assert fit.nu == pytest.approx(truth.nu, rel=0.03)
    assert fit.rmse < 1e-3
    reference = stats.risk_reversal_butterfly_25d(truth.forward, truth.t, truth)
    assert vol.rr25 == pytest.approx(reference.rr25, abs=1e-4)
    assert vol.bf25 == pytest.approx(reference.bf25, abs=1e-4)


def test_straddle_expected_move_and_oi_statistics() -> None:
    def oi(strikes: Any) -> Any:
        out = np.full(strikes.shape, 6500, dtype=np.int64)
        out[strikes == 24_300.0] = 650_000
        return out

    def skew_oi(columns: dict[str, Any]) -> None:
        columns["put_oi"] = [x * 2 for x in columns["put_oi"]]
        columns["put_oi"][10] = 2_000_000
        columns["call_volume"] = [100] * len(columns["strike"])
        columns["put_volume"] = [150] * len(columns["strike"])

    chain, truth = sabr_chain(TS, WEEKLY, oi=oi, edit=skew_oi)
    vol = analyse_expiry(chain, TS, 1000.0, CONFIG).vol
    j = int(np.flatnonzero(chain.strike == vol.atm_strike)[0])
    mids = 0.5 * (chain.call_bid[j] + chain.call_ask[j]) + 0.5 * (chain.put_bid[j] + chain.put_ask[j])
    assert vol.atm_strike == round(truth.forward / 50.0) * 50.0
    assert vol.straddle_price == pytest.approx(mids)
    assert vol.expected_move is not None
    assert vol.expected_move.pct == pytest.approx(mids / chain.spot)
    assert vol.expected_move.lower_breakeven == pytest.approx(vol.atm_strike - mids)
    assert vol.expected_move.upper_breakeven == pytest.approx(vol.atm_strike + mids)
    assert vol.call_oi_wall == 24_300.0
    assert vol.put_oi_wall == float(chain.strike[10])
    assert vol.pcr_oi == pytest.approx(chain.put_oi.sum() / chain.call_oi.sum())
    assert vol.pcr_volume == pytest.approx(1.5)
    assert vol.max_pain == stats.max_pain(chain.strike, chain.call_oi, chain.put_oi).strike
    assert vol.days_to_expiry == 6


def test_greeks_per_strike_match_black76_at_the_solved_vol() -> None:
    chain, _truth = sabr_chain(TS, WEEKLY)
    analysis = analyse_expiry(chain, TS, 1000.0, CONFIG)
    surface = analysis.vol.surface
    i = len(surface.strike) // 2 + 3
    iv_call = float(surface.iv_call[i])
    assert not math.isnan(iv_call)
    g = black76.greeks(
        analysis.vol.forward, surface.strike[i], analysis.t_years, iv_call, True, analysis.discount
    )
    assert surface.call_delta[i] == pytest.approx(float(g.delta))
    assert surface.call_gamma[i] == pytest.approx(float(g.gamma))
    assert surface.call_vega[i] == pytest.approx(float(g.vega) / 100.0)
    assert surface.call_theta[i] == pytest.approx(float(g.theta) / 365.0)
    # Put and call IVs at one strike agree (same forward, same smile) to quote noise.
    assert surface.iv_put[i] == pytest.approx(iv_call, abs=5e-4)


def test_each_bad_quote_type_is_flagged_and_kept_out_of_the_fit() -> None:
    rows: dict[str, int] = {}

    def spoil(columns: dict[str, Any]) -> None:
        strikes = columns["strike"]
        centre = len(strikes) // 2
        # OTM side above the forward is the call; below it the put.
        rows["crossed"] = centre + 4
        rows["zero_bid"] = centre + 6
        rows["stale"] = centre + 8
        rows["wide"] = centre + 10
        rows["below_intrinsic"] = centre - 12  # ITM call
        rows["missing"] = centre + 14
        r = rows["crossed"]
        columns["call_bid"][r], columns["call_ask"][r] = columns["call_ask"][r] + 1.0, columns["call_bid"][r]
        columns["call_flags"][r] |= int(QuoteFlag.CROSSED)
        r = rows["zero_bid"]
        columns["call_bid"][r] = None
        columns["call_flags"][r] |= int(QuoteFlag.ZERO_BID)
        r = rows["stale"]
        columns["call_flags"][r] |= int(QuoteFlag.STALE_LTP)
        r = rows["wide"]
        columns["call_bid"][r] = round(columns["call_ask"][r] * 0.4, 2)
        r = rows["below_intrinsic"]
        intrinsic = 24_000.0 - strikes[r]
        columns["call_bid"][r], columns["call_ask"][r] = intrinsic - 30.0, intrinsic - 20.0
        r = rows["missing"]
        columns["call_bid"][r] = columns["call_ask"][r] = None
        columns["call_flags"][r] = int(QuoteFlag.MISSING)

    clean_chain, _ = sabr_chain(TS, WEEKLY)
    chain, _ = sabr_chain(TS, WEEKLY, edit=spoil)
    clean = analyse_expiry(clean_chain, TS, 1000.0, CONFIG).vol
    vol = analyse_expiry(chain, TS, 1000.0, CONFIG).vol
    flags = vol.surface.call_flags
    assert flags[rows["crossed"]] & IvFlag.CROSSED
    assert flags[rows["crossed"]] & IvFlag.EXCLUDED_FROM_FIT
    assert not math.isnan(vol.surface.iv_call[rows["crossed"]])  # solved despite the crossed quote
    assert flags[rows["zero_bid"]] == IvFlag.NO_QUOTE
    assert math.isnan(vol.surface.iv_call[rows["zero_bid"]])  # unknown is NaN in the packed surface
    # A stale last trade with a good bid and ask: the mid is as good as any, and it is fitted.
    assert flags[rows["stale"]] == 0
    assert flags[rows["wide"]] == IvFlag.WIDE_SPREAD | IvFlag.EXCLUDED_FROM_FIT
    assert flags[rows["below_intrinsic"]] == IvFlag.BELOW_INTRINSIC
    assert math.isnan(vol.surface.iv_call[rows["below_intrinsic"]])
    assert math.isnan(vol.surface.call_delta[rows["below_intrinsic"]])
    assert flags[rows["missing"]] == IvFlag.NO_QUOTE
    # Clean OTM calls stay unflagged; ITM calls are solved but never fitted.
    assert flags[rows["crossed"] - 1] == 0
    assert flags[len(flags) // 2 - 5] == IvFlag.EXCLUDED_FROM_FIT
    assert clean.sabr is not None
    assert vol.sabr is not None
    # Four OTM calls left the fit (the ITM call was never in it, the stale one stays); the smile is
    # unchanged.
    assert vol.sabr.n_points == clean.sabr.n_points - 4
    assert vol.sabr.rho == pytest.approx(clean.sabr.rho, abs=0.01)


def test_spread_rule_needs_both_the_fraction_and_the_tick_floor() -> None:
    bid = np.array([0.05, 100.0, 100.0, np.nan])
    ask = np.array([0.15, 101.0, 140.0, 5.0])
    _, _, flags = classify_quotes(bid, ask, np.zeros(4, dtype=np.int64), 0.05, CONFIG)
    # 0.05/0.15: wide as a fraction of the mid, but only two ticks: not wide.
    assert flags.tolist() == [0, 0, int(IvFlag.WIDE_SPREAD), int(IvFlag.NO_QUOTE)]


def test_forward_falls_back_to_snapshot_forward_then_spot_carry() -> None:
    def no_puts(columns: dict[str, Any]) -> None:
        n = len(columns["strike"])
        columns["put_bid"] = [None] * n
        columns["put_ask"] = [None] * n
        columns["put_flags"] = [int(QuoteFlag.MISSING)] * n

    chain, truth = sabr_chain(TS, WEEKLY, edit=no_puts)
    analysis = analyse_expiry(chain, TS, 1000.0, CONFIG)
    assert analysis.vol.forward_source is ForwardSource.FUTURE
    assert analysis.vol.forward == chain.forward
    assert analysis.quality is Quality.DEGRADED
    bare, _ = sabr_chain(TS, WEEKLY, edit=no_puts, forward_on_chain=False)
    carried = analyse_expiry(bare, TS, 1000.0, CONFIG)
    assert carried.vol.forward_source is ForwardSource.SPOT_CARRY
    assert carried.vol.forward == pytest.approx(truth.forward, rel=1e-12)
    assert carried.vol.forward_quality is Quality.DEGRADED
    assert any("spot carry" in reason for reason in carried.reasons)


def test_stale_chain_is_bad_with_a_reason() -> None:
    chain, _ = sabr_chain(TS, WEEKLY, stale=True)
    analysis = analyse_expiry(chain, TS, 1000.0, CONFIG)
    assert analysis.quality is Quality.BAD
    assert any("stale" in reason for reason in analysis.reasons)


def test_too_few_clean_quotes_means_no_fit_and_no_skew() -> None:
    chain, _ = sabr_chain(TS, WEEKLY, n_strikes=3)
    analysis = analyse_expiry(chain, TS, 1000.0, CONFIG)
    assert analysis.vol.sabr is None
    assert analysis.vol.rr25 is None
    assert analysis.vol.bf25 is None
    assert analysis.vol.atm_iv is not None  # still read off the quotes around the forward
    assert analysis.quality is Quality.DEGRADED


def test_expired_contract_is_rejected() -> None:
    chain, _ = sabr_chain(TS, WEEKLY)
    with pytest.raises(ValueError, match="expired"):
        analyse_expiry(chain, TS.replace(day=24), 0.0, CONFIG)


def test_fast_25_delta_matches_the_reference_solver() -> None:
    cases = ((24_000.0, 0.02, 20.0, -0.4, 3.0), (24_000.0, 0.3, 20.0, -0.6, 1.0))
    fits = [sabr.SabrFit(alpha, 0.5, rho, nu, 0.0, True, 0, 0, 0) for _, _, alpha, rho, nu in cases]
    all_wings = delta_25_vols([case[0] for case in cases], [case[1] for case in cases], fits)
    for (forward, t, *_), fit, wings in zip(cases, fits, all_wings, strict=True):
        assert wings is not None
        reference = stats.risk_reversal_butterfly_25d(forward, t, fit)
        assert wings[0] - wings[1] == pytest.approx(reference.rr25, abs=1e-6)
        assert 0.5 * (wings[0] + wings[1]) - wings[2] == pytest.approx(reference.bf25, abs=1e-6)
    assert delta_25_vols([], [], []) == []


def test_previous_fit_warm_starts_the_smile() -> None:
    chain, _ = sabr_chain(TS, WEEKLY)
    first = analyse_expiry(chain, TS, 1000.0, CONFIG)
    assert first.sabr_fit is not None
    assert not first.sabr_fit.warm_start
    moved, _ = sabr_chain(TS, WEEKLY, spot=24_004.0)
    warm = analyse_expiry(moved, TS, 1000.0, CONFIG, previous_fit=first.sabr_fit)
    cold = analyse_expiry(moved, TS, 1000.0, CONFIG)
    assert warm.sabr_fit is not None
    assert cold.sabr_fit is not None
    assert warm.sabr_fit.warm_start
    assert warm.sabr_fit.iterations < cold.sabr_fit.iterations
    assert warm.sabr_fit.alpha == pytest.approx(cold.sabr_fit.alpha, rel=1e-7)
    assert warm.vol.rr25 == pytest.approx(cold.vol.rr25, abs=1e-8)


def test_a_chain_set_analysed_at_once_equals_each_expiry_alone() -> None:
    def spoil(columns: dict[str, Any]) -> None:
        # Different tick sizes, OI and a missing quote per expiry, so a mixed-up row would show.
        columns["call_bid"][3] = None
        columns["call_flags"][3] = int(QuoteFlag.ZERO_BID)
        columns["put_oi"] = [x * 3 for x in columns["put_oi"]]

    chains = [
        sabr_chain(TS, WEEKLY)[0],
        sabr_chain(TS, date(2025, 12, 30), atm_vol=0.15, rho=-0.5, edit=spoil)[0],
        # Too few strikes for a smile, between two that have one: the set's fit points are regathered
        # around it.
        sabr_chain(TS, date(2026, 1, 6), n_strikes=3)[0],
        sabr_chain(TS, MONTHLY, atm_vol=0.13, nu=0.8)[0],
    ]
    minutes = [1000.0, 3000.0, 5000.0, 9000.0]
    alone = [analyse_expiry(chain, TS, m, CONFIG) for chain, m in zip(chains, minutes, strict=True)]
    assert [a.sabr_fit is None for a in alone] == [False, False, True, False]
    together = analyse_set(chains, TS, minutes, CONFIG, [None] * 4).expiries
    assert [a.vol for a in together] == [a.vol for a in alone]
    assert [(a.quality, a.reasons, a.pin_oi_share) for a in together] == [
        (a.quality, a.reasons, a.pin_oi_share) for a in alone
    ]
    # Warm starts are per expiry too.
    warm = analyse_set(chains, TS, minutes, CONFIG, [a.sabr_fit for a in alone]).expiries
    assert [a.sabr_fit.warm_start for a in warm if a.sabr_fit is not None] == [True, True, True]


def test_a_set_solved_from_the_last_sets_vols_publishes_the_cold_surfaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The IV solve starts from the last set's vols wherever the same quote was listed: a second later
    with spot moved, a strike window that moved, an expiry gone and one new. What it publishes is the
    cold solve's: the same flags, vols to 1e-12, and so the same fits."""
    second = TS + timedelta(seconds=1)
    before = [
        sabr_chain(TS, WEEKLY, n_strikes=81)[0],
        sabr_chain(TS, date(2025, 12, 30), atm_vol=0.15)[0],
        sabr_chain(TS, MONTHLY, atm_vol=0.13)[0],
    ]
    after = [
        sabr_chain(second, WEEKLY, spot=24_006.0, n_strikes=85)[0],
        sabr_chain(second, MONTHLY, spot=24_006.0, atm_vol=0.1302)[0],
        sabr_chain(second, date(2026, 3, 31), spot=24_006.0)[0],
    ]
    minutes = [1000.0, 9000.0, 30_000.0]
    last = analyse_set(before, TS, [1000.0, 3000.0, 9000.0], CONFIG, [None] * 3)

    starts: list[np.ndarray | None] = []
    solve = iv.implied_vol_and_status_block

    def spy(inputs: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        starts.append(start)
        return solve(inputs, start)

    monkeypatch.setattr(iv, "implied_vol_and_status_block", spy)
    warm = analyse_set(after, second, minutes, CONFIG, [None] * 3, last.quote_vols)
    cold = analyse_set(after, second, minutes, CONFIG, [None] * 3)

    # The weekly and the monthly quotes listed a second ago started from their vols; the new expiry's
    # started cold.
    start = starts[0]
    assert start is not None
    bounds = warm.quote_vols.bounds
    n = int(bounds[-1])
    listed = np.isfinite(last.quote_vols.vols).sum()
    assert np.isfinite(start).sum() > 0.6 * listed
    assert np.isnan(start[bounds[2] : n]).all()
    assert np.isnan(start[n + bounds[2] :]).all()

    np.testing.assert_allclose(warm.quote_vols.vols, cold.quote_vols.vols, rtol=0.0, atol=1e-12)
    for w, c in zip(warm.expiries, cold.expiries, strict=True):
        w_surface, c_surface = w.vol.surface, c.vol.surface
        np.testing.assert_array_equal(w_surface.call_flags, c_surface.call_flags)
        np.testing.assert_array_equal(w_surface.put_flags, c_surface.put_flags)
        np.testing.assert_allclose(w_surface.iv_call, c_surface.iv_call, rtol=0.0, atol=1e-12)
        np.testing.assert_allclose(w_surface.iv_put, c_surface.iv_put, rtol=0.0, atol=1e-12)
        assert (w.quality, w.reasons) == (c.quality, c.reasons)
        assert w.vol.atm_iv == pytest.approx(c.vol.atm_iv, abs=1e-12)
        assert w.sabr_fit is not None
        assert c.sabr_fit is not None
        assert w.sabr_fit.alpha == pytest.approx(c.sabr_fit.alpha, rel=1e-9)
        assert w.sabr_fit.rho == pytest.approx(c.sabr_fit.rho, abs=1e-9)
        assert w.sabr_fit.nu == pytest.approx(c.sabr_fit.nu, rel=1e-9)
