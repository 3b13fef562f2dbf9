"""VolEngine end to end: one VolSnapshot per chain set, determinism, quality, regime scenarios."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.unit.analytics.chains import CONFIG, SHARED, TS, real_history, sabr_chain
from volguard_analytics.domain.calendar import EventCalendar, EventKind, builtin_events, parse_events_calendar
from volguard_analytics.domain.snapshot import VolEngine, deterministic_event_id
from volguard_common import clock
from volguard_common.clock import IST
from volguard_common.events import Tick
from volguard_common.events.market import InstrumentKind
from volguard_common.events.vol import Quality, Regime

EXPIRIES = (date(2025, 12, 23), date(2025, 12, 30), date(2026, 1, 27))


def _events() -> EventCalendar:
    return parse_events_calendar(SHARED / "events_calendar.csv").merged(
        builtin_events(date(2025, 11, 1), date(2026, 3, 31))
    )


def _chains(ts: datetime, **kwargs: Any) -> list[Any]:
    return [sabr_chain(ts, expiry, **kwargs)[0] for expiry in EXPIRIES]


def _tick(kind: InstrumentKind, ts: datetime, ltp: float) -> Tick:
    key = "NSE_INDEX|India VIX" if kind is InstrumentKind.VIX else "NSE_INDEX|Nifty 50"
    return Tick(
        ts_event=ts, ts_init=ts, source="md/test", instrument_key=key, symbol=key, kind=kind, ltp=ltp,
        event_id=deterministic_event_id("md/test", ts, [key]),
    )  # fmt: skip


def _run(engine: VolEngine, steps: int = 4) -> list[str]:
    out = []
    for i in range(steps):
        ts = TS + timedelta(seconds=i)
        engine.observe_index(_tick(InstrumentKind.INDEX, ts, 24_000.0 + 3.0 * i))
        engine.observe_vix(_tick(InstrumentKind.VIX, ts, 11.0))
        out.append(engine.snapshot(_chains(ts)).model_dump_json())
    return out


def test_same_inputs_give_identical_snapshots() -> None:
    first = _run(VolEngine(CONFIG, real_history(), _events()))
    second = _run(VolEngine(CONFIG, real_history(), _events()))
    assert first == second
    assert len(set(first)) == len(first)  # time moves on, so the snapshots differ from each other


def test_every_replica_gives_a_chain_set_the_same_event_id() -> None:
    # A standby that takes over recomputes the set its predecessor may have published already: the
    # same id lets consumers drop the second copy. Live stamps wall time, which does not change the id.
    chains = _chains(TS)
    one = VolEngine(CONFIG, real_history(), _events(), source="analytics/analytics-0").snapshot(chains)
    other = VolEngine(CONFIG, real_history(), _events(), source="analytics/analytics-1").snapshot(
        chains, ts_init=TS + timedelta(seconds=3)
    )
    assert one.event_id == other.event_id
    assert one.source != other.source
    assert (
        one.event_id
        != VolEngine(CONFIG, real_history(), _events()).snapshot(_chains(TS + timedelta(seconds=1))).event_id
    )


def test_snapshot_carries_the_whole_picture() -> None:
    engine = VolEngine(CONFIG, real_history(), _events())
    engine.observe_index(_tick(InstrumentKind.INDEX, TS, 24_000.0))
    engine.observe_vix(_tick(InstrumentKind.VIX, TS, 11.0))
    chains = _chains(TS)
    snap = engine.snapshot(chains)
    assert snap.quality is Quality.GOOD, snap.quality_reasons
    assert [block.expiry for block in snap.expiries] == list(EXPIRIES)
    assert snap.chain_event_ids == [chain.event_id for chain in chains]
    assert snap.ts_init == snap.ts_event
    assert snap.correlation_id == chains[0].correlation_id
    assert snap.term.signal is not None
    assert len(snap.term.points) == 3
    assert snap.realised.cc7 is not None
    assert snap.realised.yang_zhang is not None
    assert snap.garch is not None
    assert snap.garch.horizon_days == 4
    # The VIX file's last year holds Dec 2024 - May 2025, every close above 11.
    assert snap.percentiles.vix_percentile == 0.0
    assert snap.percentiles.vix_rank == 0.0
    assert snap.percentiles.atm_iv_percentile is not None
    assert snap.premium.iv_rv_spread is not None
    assert snap.event_risk.severity is not None
    assert not snap.is_expiry_day
    assert not snap.is_last_hour
    assert snap.vix == 11.0


def test_garch_refits_once_per_trading_day() -> None:
    engine = VolEngine(CONFIG, real_history(), EventCalendar(()))
    engine.snapshot(_chains(TS))
    engine.snapshot(_chains(TS + timedelta(minutes=5)))
    assert engine.garch.refits == 1
    next_day = TS + timedelta(days=1)
    engine.snapshot(_chains(next_day))
    assert engine.garch.refits == 2


def test_stale_chain_makes_the_snapshot_bad() -> None:
    engine = VolEngine(CONFIG, real_history(), EventCalendar(()))
    chains = _chains(TS)
    stale, _ = sabr_chain(TS, EXPIRIES[1], stale=True)
    snap = engine.snapshot([chains[0], stale, chains[2]])
    assert snap.quality is Quality.BAD
    assert any("stale" in reason for reason in snap.quality_reasons)


def test_missing_history_is_explicitly_unknown() -> None:
    short = real_history()
    bars = short.index_bars.iloc[-10:].reset_index(drop=True)
    engine = VolEngine(CONFIG, type(short)(index_bars=bars), EventCalendar(()))
    snap = engine.snapshot(_chains(TS))
    assert snap.garch is None
    assert snap.realised.cc21 is None
    assert snap.percentiles.vix_percentile is None
    assert snap.percentiles.atm_iv_rank is None
    assert snap.premium.iv_garch_spread is None
    assert snap.quality is Quality.DEGRADED
    assert any("GARCH unknown" in reason for reason in snap.quality_reasons)


def test_vix_spike_sequence_gives_event_crush() -> None:
    engine = VolEngine(CONFIG, real_history(), EventCalendar(()))
    regimes = []
    for i, vix in enumerate([11.0, 11.0, 11.1, 11.6, 12.2, 12.4]):
        ts = TS + timedelta(seconds=20 * i)
        spike = engine.observe_vix(_tick(InstrumentKind.VIX, ts, vix))
        snap = engine.snapshot(_chains(ts, vix=vix))
        regimes.append((snap.regime.regime, snap.regime.vix_spike, spike.started))
    assert regimes[0][0] is Regime.LOW_VOL
    assert regimes[4] == (Regime.EVENT_CRUSH, True, True)  # 12.2 / 11.0 = +10.9 % in 80 s
    assert regimes[5][0] is Regime.EVENT_CRUSH
    # Once the window has passed with no further rise, the flag clears.
    late = TS + timedelta(seconds=100 + CONFIG.vix_spike_window_s + 1)
    engine.observe_vix(_tick(InstrumentKind.VIX, late, 12.4))
    assert not engine.snapshot(_chains(late, vix=12.4)).regime.vix_spike


def test_expiry_day_with_oi_near_the_money_is_gamma_pin_and_flags_the_last_hour() -> None:
    expiry_day = datetime(2025, 12, 23, 14, 45, tzinfo=IST)

    def pinned(strikes: Any) -> Any:
        return np.where(np.abs(strikes - 24_000.0) <= 100.0, 2_000_000, 20_000).astype(np.int64)

    chains = [sabr_chain(expiry_day, EXPIRIES[0], oi=pinned)[0]] + [
        sabr_chain(expiry_day, expiry)[0] for expiry in EXPIRIES[1:]
    ]
    engine = VolEngine(CONFIG, real_history(), EventCalendar(()))
    engine.observe_vix(_tick(InstrumentKind.VIX, expiry_day, 11.0))
    snap = engine.snapshot(chains)
    assert snap.is_expiry_day
    assert snap.is_last_hour
    assert snap.expiries[0].days_to_expiry == 0
    assert snap.expiries[0].trading_minutes_to_expiry == 45.0
    assert snap.regime.regime is Regime.GAMMA_PIN
    # Signals use the nearest expiry that is not expiring today.
    assert snap.garch is not None
    assert snap.garch.horizon_days == 4


def test_warm_started_smiles_publish_the_cold_answer() -> None:
    # A live engine warm-starts each expiry's SABR fit from its previous snapshot; what it publishes
    # must be what a fresh engine (explicit initial guess) publishes for the same chains.
    live = VolEngine(CONFIG, real_history(), EventCalendar(()))
    live.snapshot(_chains(TS))
    later = TS + timedelta(seconds=1)
    warm = live.snapshot(_chains(later, spot=24_004.0))
    cold = VolEngine(CONFIG, real_history(), EventCalendar(())).snapshot(_chains(later, spot=24_004.0))
    for warm_vol, cold_vol in zip(warm.expiries, cold.expiries, strict=True):
        assert warm_vol.sabr is not None
        assert cold_vol.sabr is not None
        assert warm_vol.sabr.alpha == pytest.approx(cold_vol.sabr.alpha, rel=1e-7)
        assert warm_vol.sabr.rho == pytest.approx(cold_vol.sabr.rho, abs=1e-7)
        assert warm_vol.sabr.nu == pytest.approx(cold_vol.sabr.nu, rel=1e-6)
        assert warm_vol.rr25 == pytest.approx(cold_vol.rr25, abs=1e-8)


def _minutes_to_expiry(ts: datetime, expiry: date) -> float:
    """What the engine publishes: minutes to today's close plus the close-to-cutoff tail it keeps per
    day (the split is part of the answer: a sum over one span can round differently)."""
    cutoff = clock.expiry_cutoff(expiry)
    day = ts.date()
    if expiry <= day or not clock.is_trading_day(day):
        return clock.trading_minutes_between(ts, cutoff)
    close = clock.session_bounds(day)[1]
    return clock.trading_minutes_between(ts, max(ts, close)) + clock.trading_minutes_between(close, cutoff)


def test_day_caches_answer_for_the_day_asked_forwards_and_back() -> None:
    # One engine runs across days and is then rewound, as a replay can be: whatever depends only on the
    # time, the calendar and the history must equal a fresh engine's answer for the same chains.
    history = real_history()
    rbi = next(event.at for event in _events().events if event.kind is EventKind.RBI_POLICY)
    odd = timedelta(microseconds=123_457)
    times = [
        TS + odd,
        TS + timedelta(seconds=1) + odd,
        datetime(2025, 12, 18, 9, 0, tzinfo=IST),  # before the open
        datetime(2025, 12, 18, 15, 45, tzinfo=IST) + odd,  # after the close
        datetime(2025, 12, 20, 11, 0, tzinfo=IST),  # a Saturday
        datetime(2025, 12, 23, 14, 45, tzinfo=IST) + odd,  # expiry day, last hour
        TS + timedelta(seconds=2) + odd,  # rewound to the first day
        rbi - timedelta(seconds=1),  # the RBI decision in play...
        rbi + timedelta(seconds=1),  # ...and announced
        datetime(2025, 12, 23, 14, 45, 1, tzinfo=IST),
    ]
    engine = VolEngine(CONFIG, history, _events())
    scores: set[int] = set()
    flags: set[tuple[bool, bool]] = set()
    for ts in times:
        chains = _chains(ts)
        got = engine.snapshot(chains)
        fresh = VolEngine(CONFIG, history, _events()).snapshot(chains)
        assert got.event_risk == fresh.event_risk
        assert got.garch == fresh.garch
        # The ATM IV's own percentile and rank follow the ATM IV, whose solve starts from this engine's
        # last set: a fresh engine's to the solve's conditioning, not to the bit.
        got_p, fresh_p = got.percentiles, fresh.percentiles
        assert (got_p.lookback_days, got_p.vix_percentile, got_p.vix_rank) == (
            fresh_p.lookback_days,
            fresh_p.vix_percentile,
            fresh_p.vix_rank,
        )
        for mine, theirs in (
            (got_p.atm_iv_percentile, fresh_p.atm_iv_percentile),
            (got_p.atm_iv_rank, fresh_p.atm_iv_rank),
        ):
            assert mine == pytest.approx(theirs, rel=1e-9)
        assert (got.is_expiry_day, got.is_last_hour) == (fresh.is_expiry_day, fresh.is_last_hour)
        minutes = [block.trading_minutes_to_expiry for block in got.expiries]
        assert minutes == [block.trading_minutes_to_expiry for block in fresh.expiries]
        assert minutes == [_minutes_to_expiry(ts, expiry) for expiry in EXPIRIES]
        scores.add(got.event_risk.score)
        flags.add((got.is_expiry_day, got.is_last_hour))
    # The path crosses the situations the caches distinguish.
    assert 5 in scores
    assert len(scores) >= 3
    assert (True, True) in flags
    assert (False, False) in flags


def test_minutes_to_expiry_follow_the_expiries_of_each_set() -> None:
    # The day keeps a close-to-cutoff tail per expiry: a set with other expiries, a later day and a
    # rewind must each get the minutes a direct count gives.
    engine = VolEngine(CONFIG, real_history(), EventCalendar(()))
    steps = [
        (TS, EXPIRIES[:2]),
        (TS + timedelta(seconds=1), EXPIRIES[1:]),
        (TS + timedelta(days=1, seconds=2), EXPIRIES),
        (TS + timedelta(seconds=3), EXPIRIES[::2]),
    ]
    for ts, expiries in steps:
        snap = engine.snapshot([sabr_chain(ts, expiry)[0] for expiry in expiries])
        minutes = [block.trading_minutes_to_expiry for block in snap.expiries]
        assert minutes == [_minutes_to_expiry(ts, expiry) for expiry in expiries]


def test_a_chain_set_feeds_its_own_spot_and_vix_like_the_ticks_would() -> None:
    # What the service does with every set: the front chain's spot as the index print, the set's VIX
    # as the VIX print. Same snapshots as feeding the two ticks by hand.
    by_ticks = VolEngine(CONFIG, real_history(), EventCalendar(()))
    by_set = VolEngine(CONFIG, real_history(), EventCalendar(()))
    realised = []
    for i, vix in enumerate([11.0, 11.0, 11.6, 12.2]):
        ts = TS + timedelta(seconds=20 * i)
        # Each expiry a different spot, so only the front one's can match the ticks.
        chains = [
            sabr_chain(ts, expiry, spot=24_000.0 + 40.0 * i + k, vix=vix)[0]
            for k, expiry in enumerate(EXPIRIES)
        ]
        by_ticks.observe_index(_tick(InstrumentKind.INDEX, ts, chains[0].spot))
        expected = by_ticks.observe_vix(_tick(InstrumentKind.VIX, ts, vix))
        # Chains arrive in any order; the front expiry's spot is the index.
        assert by_set.observe_chain_set(list(reversed(chains))) == expected
        snapshot = by_set.snapshot(chains)
        assert snapshot == by_ticks.snapshot(chains)
        realised.append(snapshot.realised.cc7)
    # Today's bar moved with the spots: realised vol saw it.
    assert len(set(realised)) == len(realised)
    no_vix = _chains(TS + timedelta(seconds=100), vix=None)
    assert by_set.observe_chain_set(no_vix) is None


def test_day_calendar_minutes_are_the_clocks_at_every_instant_of_the_day() -> None:
    # The day calendar works out today's minutes from its cached session bounds; the clock's count is
    # the rule. Before the open, in the session, at the close, after it, and in another time zone.
    from datetime import UTC

    from volguard_analytics.domain.event_risk import scored_events
    from volguard_analytics.domain.snapshot import _DayCalendar

    day = TS.date()
    calendar = _DayCalendar(day, scored_events(()), CONFIG)
    start = datetime.combine(day, datetime.min.time(), tzinfo=IST)
    instants = [start + timedelta(minutes=m, seconds=s) for m in range(0, 24 * 60, 7) for s in (0, 31)]
    instants += [clock.session_bounds(day)[0], clock.session_bounds(day)[1]]
    instants += [ts.astimezone(UTC) for ts in instants[::5]]
    close = clock.session_bounds(day)[1]
    for ts in instants:
        got = calendar.trading_minutes_to(ts, list(EXPIRIES))
        # The minutes left today, then the tail from the close (the split the calendar documents).
        left = clock.trading_minutes_between(ts, close) if ts < close else 0.0
        want = [left + clock.trading_minutes_between(close, clock.expiry_cutoff(e)) for e in EXPIRIES]
        assert got == want, ts
        assert got == pytest.approx([_minutes_to_expiry(ts, e) for e in EXPIRIES], rel=1e-12)


def test_premium_compares_the_30_day_atm_iv_and_says_when_it_falls_back() -> None:
    # Issue 14: the IV-RV thresholds are calibrated on 30-day implied vol, so the premium signals on
    # the 30-day constant-maturity ATM IV, not on the reference (usually weekly) expiry's.
    engine = VolEngine(CONFIG, real_history(), _events())
    engine.observe_vix(_tick(InstrumentKind.VIX, TS, 11.0))
    snap = engine.snapshot(
        [
            sabr_chain(TS, expiry, atm_vol=vol)[0]
            for expiry, vol in zip(EXPIRIES, (0.11, 0.13, 0.16), strict=True)
        ]
    )
    atm_iv_30d = snap.percentiles.atm_iv_30d
    assert atm_iv_30d is not None
    assert snap.realised.yang_zhang is not None
    assert snap.premium.iv_rv_spread == pytest.approx(atm_iv_30d - snap.realised.yang_zhang)
    assert not any("30-day ATM IV unknown" in reason for reason in snap.quality_reasons)

    # Two weeklies only: nothing brackets 30 days, so the reference expiry's ATM IV stands in, and
    # the snapshot says the spreads are not the calibrated measure.
    near = VolEngine(CONFIG, real_history(), _events())
    near.observe_vix(_tick(InstrumentKind.VIX, TS, 11.0))
    weeklies = near.snapshot(
        [
            sabr_chain(TS, expiry, atm_vol=vol)[0]
            for expiry, vol in zip(EXPIRIES[:2], (0.11, 0.13), strict=True)
        ]
    )
    assert weeklies.percentiles.atm_iv_30d is None
    assert weeklies.realised.yang_zhang is not None
    assert weeklies.premium.iv_rv_spread is not None
    fallback = weeklies.premium.iv_rv_spread + weeklies.realised.yang_zhang
    assert fallback in [pytest.approx(block.atm_iv) for block in weeklies.expiries]
    assert any("30-day ATM IV unknown" in reason for reason in weeklies.quality_reasons)
