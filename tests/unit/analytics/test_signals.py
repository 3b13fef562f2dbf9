"""Term structure, skew, premium, VIX spike filter and regime classifier with hysteresis."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta

import pytest
from pydantic import ValidationError

from tests.unit.analytics.chains import CONFIG
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.premium import PremiumTracker
from volguard_analytics.domain.regime import PRIORITY, RegimeInputs, RegimeTracker, _best_two
from volguard_analytics.domain.surface import constant_maturity_atm_iv, skew_view, term_structure
from volguard_analytics.domain.vix_spike import VixSpikeDetector
from volguard_common.clock import IST
from volguard_common.events.vol import (
    PremiumSignal,
    Regime,
    RegimeView,
    SkewSignal,
    TermPoint,
    TermSignal,
    TrendDirection,
)
from volguard_common.settings import Settings

T0 = datetime(2025, 12, 17, 10, 0, tzinfo=IST)


def test_config_defaults_equal_settings_defaults() -> None:
    fields = Settings.model_fields
    for name in ("iv_rv_sell_big_pts", "skew_threshold_pts", "vix_spike_window_s", "vix_spike_pct",
                 "event_multiplier_a", "term_structure_threshold_pts"):  # fmt: skip
        assert getattr(AnalyticsConfig(), name) == fields[name].default


def _points(ivs: list[float], days: list[int]) -> list[tuple[TermPoint, float]]:
    return [
        (TermPoint(expiry=date(2026, 1, 1) + timedelta(days=d), days_to_expiry=d, atm_iv=v), d / 365.0)
        for v, d in zip(ivs, days, strict=True)
    ]


@pytest.mark.parametrize(
    ("ivs", "signal"),
    [
        ([0.12, 0.13, 0.14], TermSignal.STEEP),  # +1.67 pts per 30 days
        ([0.13, 0.1305, 0.131], TermSignal.FLAT),
        ([0.18, 0.16, 0.15], TermSignal.INVERTED),
    ],
)
def test_term_signal_uses_the_configured_threshold(ivs: list[float], signal: TermSignal) -> None:
    term, reason = term_structure(_points(ivs, [7, 35, 63]), CONFIG)
    assert reason is None
    assert term.signal is signal
    assert term.slope is not None
    assert term.curvature is not None
    expected = {TermSignal.STEEP: "opportunity", TermSignal.FLAT: "cautious", TermSignal.INVERTED: "avoid"}
    assert expected[signal] in term.regime_implication


def test_term_structure_with_one_usable_expiry_is_unknown() -> None:
    points = _points([0.12, 0.13], [7, 35])
    points[1] = (TermPoint(expiry=points[1][0].expiry, days_to_expiry=35, atm_iv=None), 35 / 365.0)
    term, reason = term_structure(points, CONFIG)
    assert term.signal is None
    assert term.slope is None
    assert reason is not None


@pytest.mark.parametrize(
    ("rr25", "signal", "words"),
    [
        (-0.035, SkewSignal.PUT_SKEWED, "reduce short puts"),
        (0.03, SkewSignal.CALL_SKEWED, "add call shorts"),
        (-0.01, SkewSignal.NEUTRAL, "maintain"),
    ],
)
def test_skew_signal(rr25: float, signal: SkewSignal, words: str) -> None:
    view = skew_view(rr25, CONFIG)
    assert view.signal is signal
    assert words in view.recommendation


def test_premium_bands_and_trend_downgrade() -> None:
    tracker = PremiumTracker(CONFIG)
    big = tracker.evaluate(T0, 0.19, 0.12, 0.13)  # 7 and 6 points: the binding spread is 6
    assert big.signal is PremiumSignal.SELL_BIG
    assert big.iv_rv_spread == pytest.approx(0.07)
    # Ten minutes later the binding spread is 4.7 points: SELL_BIG by level, but it fell 1.3 points
    # (more than premium_trend_pts) inside the trend window, so the signal weakens one step.
    later = tracker.evaluate(T0 + timedelta(minutes=10), 0.167, 0.12, 0.12)
    assert later.signal is PremiumSignal.SELL_SMALL
    assert later.confidence < big.confidence
    steady = PremiumTracker(CONFIG)
    steady.evaluate(T0, 0.167, 0.12, 0.12)
    assert steady.evaluate(T0 + timedelta(minutes=10), 0.167, 0.12, 0.12).signal is PremiumSignal.SELL_BIG
    avoid = PremiumTracker(CONFIG).evaluate(T0, 0.09, 0.12, None)
    assert avoid.signal is PremiumSignal.AVOID
    assert avoid.iv_garch_spread is None
    unknown = PremiumTracker(CONFIG).evaluate(T0, None, 0.12, 0.11)
    assert unknown.signal is PremiumSignal.NEUTRAL
    assert unknown.confidence == 0.0
    assert unknown.iv_rv_spread is None


def test_vix_spike_within_and_outside_the_window() -> None:
    detector = VixSpikeDetector(window_s=180, threshold_pct=8.0)
    assert not detector.update(T0, 13.0).active
    inside = detector.update(T0 + timedelta(seconds=120), 14.2)  # +9.2 % in two minutes
    assert inside.active
    assert inside.started
    assert inside.change_pct == pytest.approx(100 * (14.2 / 13.0 - 1))
    assert not detector.update(T0 + timedelta(seconds=130), 14.3).started  # still on, not new
    slow = VixSpikeDetector(window_s=180, threshold_pct=8.0)
    slow.update(T0, 13.0)
    slow.update(T0 + timedelta(seconds=100), 13.5)
    # +9.2 % over 240 s, but within the last 180 s VIX only rose from 13.5: no spike.
    assert not slow.update(T0 + timedelta(seconds=240), 14.2).active
    with pytest.raises(ValueError, match="older"):
        slow.update(T0, 14.0)


def _inputs(**overrides: object) -> RegimeInputs:
    values: dict[str, object] = {
        "vix": 11.0,
        "vix_spike": False,
        "vix_percentile": 10.0,
        "vix_change_5d": 0.0,
        "atm_iv": 0.11,
        "cc7": 0.08,
        "cc21": 0.09,
        "is_expiry_day": False,
        "pin_oi_share": None,
        "event_score": 0,
        "move_sigmas": 0.1,
    }
    values.update(overrides)
    return RegimeInputs(**values)  # type: ignore[arg-type]


def test_calm_low_vix_tape_is_low_vol() -> None:
    view, reason = RegimeTracker(CONFIG).update(_inputs())
    assert reason is None
    assert view.regime is Regime.LOW_VOL
    assert view.confidence > 0.8


def test_vix_spike_switches_to_event_crush_at_once() -> None:
    tracker = RegimeTracker(CONFIG)
    for _ in range(5):
        tracker.update(_inputs())
    view, _ = tracker.update(_inputs(vix=12.2, vix_spike=True))
    assert view.regime is Regime.EVENT_CRUSH
    assert view.vix_spike


def test_expiry_day_oi_pin_is_gamma_pin() -> None:
    tracker = RegimeTracker(CONFIG)
    tracker.update(_inputs(is_expiry_day=True, pin_oi_share=0.1))
    view, _ = tracker.update(_inputs(is_expiry_day=True, pin_oi_share=0.6))
    assert view.regime is Regime.GAMMA_PIN
    not_expiry, _ = RegimeTracker(CONFIG).update(_inputs(is_expiry_day=False, pin_oi_share=0.6))
    assert not_expiry.regime is Regime.LOW_VOL


def test_alternating_borderline_inputs_do_not_flap() -> None:
    tracker = RegimeTracker(CONFIG)
    # Percentile 50 vs 62 sits either side of the middle of the bands: LOW_VOL-ish vs HIGH_VOL-ish,
    # both weak, so neither wins by the margin and no challenger wins three times in a row.
    regimes = [tracker.update(_inputs(vix_percentile=p, cc7=None))[0].regime for p in [50.0, 62.0] * 10]
    assert len(set(regimes[1:])) == 1
    # A persistent challenger (HIGH_VOL at percentile 66, short of the margin) takes over only after
    # regime_confirm_snapshots consecutive wins.
    for _ in range(CONFIG.regime_confirm_snapshots - 1):
        assert tracker.update(_inputs(vix_percentile=66.0, cc7=None))[0].regime is regimes[-1]
    assert tracker.update(_inputs(vix_percentile=66.0, cc7=None))[0].regime is Regime.HIGH_VOL


@pytest.mark.parametrize(("move", "direction"), [(2.0, TrendDirection.UP), (-2.0, TrendDirection.DOWN)])
def test_trend_is_published_with_its_direction_and_strength(move: float, direction: TrendDirection) -> None:
    # Mid-range VIX, no VIX trend: a 2-sigma move from the open is the strongest evidence there is.
    tape = {"vix": 15.0, "vix_percentile": 50.0, "cc7": None}
    view, _ = RegimeTracker(CONFIG).update(_inputs(move_sigmas=move, **tape))
    assert view.regime is Regime.TREND
    assert view.trend_direction is direction
    assert view.trend_strength == abs(move)
    # Not a trend: neither is said.
    calm, _ = RegimeTracker(CONFIG).update(_inputs())
    assert calm.regime is not Regime.TREND
    assert (calm.trend_direction, calm.trend_strength) == (None, None)


def test_a_direction_without_the_trend_regime_is_refused() -> None:
    with pytest.raises(ValidationError, match="trend direction or strength with regime LOW_VOL"):
        RegimeView(
            regime=Regime.LOW_VOL,
            confidence=0.5,
            vix_spike=False,
            trend_direction=TrendDirection.UP,
            trend_strength=1.0,
        )


def test_no_evidence_gives_zero_confidence_and_a_reason() -> None:
    view, reason = RegimeTracker(CONFIG).update(
        _inputs(vix=None, vix_percentile=None, vix_change_5d=None, move_sigmas=None)
    )
    assert view.confidence == 0.0
    assert reason is not None


def test_best_two_is_the_head_of_the_ranking_ties_by_priority() -> None:
    # Reference: sort every regime by score, ties in PRIORITY order.
    rng = random.Random(7)
    for k in range(2_000):
        # Half the draws from a few levels, so ties (to the top and the runner-up) are common.
        values = [rng.choice((0.0, 0.3, 0.6, 1.0)) if k % 2 else rng.random() for _ in PRIORITY]
        score = dict(zip(PRIORITY, values, strict=True))
        ranked = sorted(PRIORITY, key=lambda regime: (-score[regime], PRIORITY.index(regime)))
        assert _best_two(score) == (ranked[0], ranked[1])


def test_thirty_day_atm_iv_interpolates_total_variance_between_the_expiries_around_it() -> None:
    def point(days: int, vol: float | None) -> tuple[TermPoint, float]:
        return TermPoint(
            expiry=date(2026, 1, 1) + timedelta(days=days), days_to_expiry=days, atm_iv=vol
        ), days / 365.0

    t1, t2, t = 21 / 365.0, 49 / 365.0, 30 / 365.0
    curve = [point(7, 0.10), point(21, 0.12), point(35, None), point(49, 0.14)]
    expected = math.sqrt((0.12**2 * t1 + (0.14**2 * t2 - 0.12**2 * t1) * (t - t1) / (t2 - t1)) / t)
    assert constant_maturity_atm_iv(curve) == pytest.approx(expected, rel=1e-12)
    assert 0.12 < expected < 0.14
    # An expiry at 30 days gives its own vol; a curve that does not reach 30 days gives none.
    assert constant_maturity_atm_iv([point(7, 0.10), point(30, 0.13)]) == pytest.approx(0.13)
    assert constant_maturity_atm_iv([point(7, 0.10), point(21, 0.12)]) is None
    assert constant_maturity_atm_iv([point(45, 0.12), point(80, 0.13)]) is None
