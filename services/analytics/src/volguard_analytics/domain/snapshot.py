"""VolEngine: one VolSnapshot from one set of chain snapshots (every expiry at one ts_event), the latest
index and VIX ticks and the daily history. Pure: no I/O, no wall clock; time is ts_event.

State carried between snapshots (so the same sequence of inputs gives the same sequence of outputs):
today's intraday bar (index ticks), the VIX spike window, the regime hysteresis, the premium trend, the
GARCH fit of the trading day and a cache of trading minutes from today's close to each expiry.

Envelope determinism: `event_id` defaults to a UUIDv7 derived from (source, ts_event, chain event ids) -
time-ordered by ts_event and identical on replay - and `ts_init` defaults to ts_event. A live service
passes `event_id=new_event_id()` and `ts_init=<wall time>`; replays compare payloads either way.
`correlation_id` is the front chain's, so a decision on this snapshot traces back to its quotes.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta

from volguard_analytics.domain import history as hist
from volguard_analytics.domain.calendar import EventCalendar
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.event_risk import DayEventRisk, ScoredEvents, scored_events
from volguard_analytics.domain.expiry import ExpiryAnalysis, analyse_expiries
from volguard_analytics.domain.premium import PremiumTracker
from volguard_analytics.domain.regime import RegimeInputs, RegimeTracker
from volguard_analytics.domain.surface import skew_view, term_structure
from volguard_analytics.domain.vix_spike import VixSpike, VixSpikeDetector
from volguard_common import clock
from volguard_common.events import ChainSnapshot, Tick
from volguard_common.events.market import InstrumentKind
from volguard_common.events.vol import Quality, RealisedVol, TermPoint, VolSnapshot
from volguard_common.quant import sabr

LAST_HOUR_FROM = time(14, 30)
_SEVERITY = {Quality.GOOD: 0, Quality.DEGRADED: 1, Quality.BAD: 2}


def deterministic_event_id(source: str, ts_event: datetime, chain_event_ids: Sequence[str]) -> str:
    """A UUIDv7 whose time is ts_event (ms) and whose random bits hash (source, ts_event, chain ids)."""
    digest = hashlib.sha256("|".join((source, ts_event.isoformat(), *chain_event_ids)).encode()).digest()
    ms = int(ts_event.timestamp() * 1000) & ((1 << 48) - 1)
    rand_a = int.from_bytes(digest[:2], "big") & 0xFFF
    rand_b = int.from_bytes(digest[2:10], "big") & ((1 << 62) - 1)
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    # str(uuid.UUID(int=value)) spelled out: the same 8-4-4-4-12 lower-case hex without building a UUID.
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class VolEngine:
    """Assembles VolSnapshots; feed it index and VIX ticks as they come, and chain sets to snapshot."""

    def __init__(
        self,
        config: AnalyticsConfig,
        history: hist.VolHistory,
        events: EventCalendar,
        *,
        source: str = "analytics",
    ) -> None:
        self.config = config
        self.history = history
        self.events = events.events
        self._scored_events = scored_events(self.events)
        self.source = source
        self.garch = hist.GarchCache(max_horizon=config.garch_max_horizon_days)
        self._regime = RegimeTracker(config)
        self._premium = PremiumTracker(config)
        self._vix = VixSpikeDetector(config.vix_spike_window_s, config.vix_spike_pct)
        self._vix_last: tuple[datetime, float] | None = None
        self._bar: hist.IntradayBar | None = None
        self._day: hist.DayInputs | None = None
        self._tail_minutes: dict[tuple[date, date], float] = {}
        # (day, its session's open and close, None when it does not trade) of the last snapshot.
        self._session: tuple[date, tuple[datetime, datetime] | None] | None = None
        # (ts, minutes left today and today's close) of the last snapshot: see _minutes_left_today.
        self._today: tuple[datetime, tuple[float, datetime] | None] | None = None
        self._calendar = _DayCalendar(None, self._scored_events, config)
        # (today's bar, realised vol, reasons) of the last snapshot: reused until the bar moves.
        self._realised: tuple[hist.IntradayBar | None, RealisedVol, list[str]] | None = None
        # Last converged SABR fit per expiry: the warm start of the next snapshot's calibration.
        self._smiles: dict[date, sabr.SabrFit] = {}

    # ---- ticks ------------------------------------------------------------------------------------
    def observe_index(self, tick: Tick) -> None:
        """One NIFTY index print: extends today's partial bar."""
        if tick.kind is not InstrumentKind.INDEX:
            raise ValueError(f"observe_index got a {tick.kind.value} tick ({tick.instrument_key})")
        self._bar = hist.intraday_bar_update(
            self._bar, tick.ts_event, tick.ltp, tick.day_open, tick.day_high, tick.day_low
        )

    def observe_vix(self, tick: Tick) -> VixSpike:
        """One India VIX print; the result says whether a spike is on and whether it just started."""
        if tick.kind is not InstrumentKind.VIX:
            raise ValueError(f"observe_vix got a {tick.kind.value} tick ({tick.instrument_key})")
        self._vix_last = (tick.ts_event, tick.ltp)
        return self._vix.update(tick.ts_event, tick.ltp)

    def observe_chain_set(self, chains: Sequence[ChainSnapshot]) -> VixSpike | None:
        """The index level and India VIX a chain set carries (the front chain's spot, the first VIX on
        any chain), fed as prints at the set's time: what the service does with every set, so that a
        replay needs nothing but the chains. Returns the VIX spike state, None when no chain has VIX."""
        front = min(chains, key=lambda chain: chain.expiry)
        self._bar = hist.intraday_bar_update(self._bar, front.ts_event, front.spot, None, None, None)
        vix = next((chain.vix for chain in chains if chain.vix is not None), None)
        if vix is None or not vix > 0:
            return None
        self._vix_last = (front.ts_event, vix)
        return self._vix.update(front.ts_event, vix)

    # ---- snapshot ---------------------------------------------------------------------------------
    def snapshot(
        self,
        chains: Sequence[ChainSnapshot],
        *,
        event_id: str | None = None,
        ts_init: datetime | None = None,
    ) -> VolSnapshot:
        ordered = _check_chain_set(chains)
        ts = ordered[0].ts_event
        day = ts.date()
        config = self.config
        reasons: list[str] = []
        quality = Quality.GOOD

        def worsen(to: Quality) -> None:
            nonlocal quality
            if _SEVERITY[to] > _SEVERITY[quality]:
                quality = to

        analyses = analyse_expiries(
            ordered,
            ts,
            [self._trading_minutes(ts, chain.expiry) for chain in ordered],
            config,
            [self._smiles.get(chain.expiry) for chain in ordered],
        )
        smiles: dict[date, sabr.SabrFit] = {}
        for chain, analysis in zip(ordered, analyses, strict=True):
            reasons.extend(analysis.reasons)
            worsen(analysis.quality)
            if analysis.sabr_fit is not None and analysis.sabr_fit.converged:
                smiles[chain.expiry] = analysis.sabr_fit
        # Expiries absent from this set (or whose fit failed) start cold next time.
        self._smiles = smiles

        reference = _reference(analyses)
        ref_vol = reference.vol
        spot = ordered[0].spot
        vix = self._vix_at(ts, ordered)
        if vix is None:
            reasons.append("India VIX unknown: no VIX tick and no VIX on the chain")
            worsen(Quality.DEGRADED)

        term, term_reason = term_structure(
            [
                (
                    TermPoint(expiry=a.vol.expiry, days_to_expiry=a.vol.days_to_expiry, atm_iv=a.vol.atm_iv),
                    a.t_years,
                )
                for a in analyses
            ],
            config,
        )
        if term_reason is not None:
            reasons.append(term_reason)
        skew = skew_view(ref_vol.rr25, config)
        if ref_vol.rr25 is None:
            reasons.append(f"skew unknown on reference expiry {ref_vol.expiry}: signal NEUTRAL by default")
            worsen(Quality.DEGRADED)

        days = self._day_inputs(day)
        bar = self._bar if self._bar is not None and self._bar.trade_date == day else None
        realised, rv_reasons = self._realised_vol(days, bar)
        horizon = max(1, self._calendar.trading_days_to(ref_vol.expiry))
        garch_view, garch_reason = self.garch.forecast(days, horizon)
        percentiles, pct_reasons = hist.percentiles(days, vix, ref_vol.atm_iv, config)
        reasons.extend(rv_reasons + pct_reasons)
        if garch_reason is not None:
            reasons.append(garch_reason)
        if rv_reasons or garch_reason is not None:
            worsen(Quality.DEGRADED)

        reference_rv = realised.yang_zhang if realised.yang_zhang is not None else realised.cc21
        premium = self._premium.evaluate(
            ts, ref_vol.atm_iv, reference_rv, garch_view.vol if garch_view is not None else None
        )
        risk = self._calendar.event_risk.at(ts)

        expiry_day = self._calendar.is_expiry_day
        expiring = next((a for a in analyses if a.vol.expiry == day), None)
        move_sigmas = None
        if bar is not None and ref_vol.atm_iv is not None:
            move_sigmas = (bar.last - bar.open) / (spot * ref_vol.atm_iv / math.sqrt(252.0))
        regime, regime_reason = self._regime.update(
            RegimeInputs(
                vix=vix,
                vix_spike=self._vix_spike_at(ts),
                vix_percentile=percentiles.vix_percentile,
                vix_change_5d=hist.vix_change(days, vix),
                atm_iv=ref_vol.atm_iv,
                cc7=realised.cc7,
                cc21=realised.cc21,
                is_expiry_day=expiry_day,
                pin_oi_share=expiring.pin_oi_share if expiring is not None else None,
                event_score=risk.score,
                move_sigmas=move_sigmas,
            )
        )
        if regime_reason is not None:
            reasons.append(regime_reason)
            worsen(Quality.DEGRADED)

        chain_ids = [chain.event_id for chain in ordered]
        return VolSnapshot(
            event_id=event_id if event_id is not None else deterministic_event_id(self.source, ts, chain_ids),
            ts_event=ts,
            ts_init=ts_init if ts_init is not None else ts,
            source=self.source,
            correlation_id=ordered[0].correlation_id,
            underlying=ordered[0].underlying,
            spot=spot,
            vix=vix,
            chain_event_ids=chain_ids,
            expiries=[a.vol for a in analyses],
            term=term,
            skew=skew,
            realised=realised,
            garch=garch_view,
            percentiles=percentiles,
            premium=premium,
            regime=regime,
            event_risk=risk,
            is_expiry_day=expiry_day,
            is_last_hour=self._calendar.is_last_hour(ts),
            quality=quality,
            quality_reasons=reasons,
        )

    # ---- helpers ----------------------------------------------------------------------------------
    def _day_inputs(self, day: date) -> hist.DayInputs:
        if self._day is None or self._day.trade_date != day:
            self._day = hist.day_inputs(self.history, day, self.config.percentile_lookback_days)
            self._realised = None
        if self._calendar.day != day:
            self._calendar = _DayCalendar(day, self._scored_events, self.config)
        return self._day

    def _realised_vol(
        self, days: hist.DayInputs, bar: hist.IntradayBar | None
    ) -> tuple[RealisedVol, list[str]]:
        # Daily history changes once a day and the partial bar only with index ticks: without a new
        # tick the last answer stands.
        if self._realised is None or self._realised[0] != bar:
            self._realised = (bar, *hist.realised_vol(days, bar))
        _, realised, reasons = self._realised
        return realised, list(reasons)

    def _vix_at(self, ts: datetime, chains: Sequence[ChainSnapshot]) -> float | None:
        if self._vix_last is not None and self._vix_last[0] <= ts:
            return self._vix_last[1]
        for chain in chains:
            if chain.vix is not None:
                return chain.vix
        return None

    def _vix_spike_at(self, ts: datetime) -> bool:
        # The spike is on only while the last VIX print is inside the window of this snapshot.
        if self._vix_last is None or self._vix_last[0] < ts - timedelta(
            seconds=self.config.vix_spike_window_s
        ):
            return False
        return self._vix.active

    def _trading_minutes(self, ts: datetime, expiry: date) -> float:
        """Trading minutes to the expiry cutoff; the part after today's close is cached per day."""
        day = ts.date()
        if expiry <= day:
            return clock.trading_minutes_between(ts, clock.expiry_cutoff(expiry))
        today = self._minutes_left_today(ts)
        if today is None:
            return clock.trading_minutes_between(ts, clock.expiry_cutoff(expiry))
        left, close = today
        key = (day, expiry)
        tail = self._tail_minutes.get(key)
        if tail is None:
            if len(self._tail_minutes) > 64:
                self._tail_minutes = {k: v for k, v in self._tail_minutes.items() if k[0] == day}
            tail = clock.trading_minutes_between(close, clock.expiry_cutoff(expiry))
            self._tail_minutes[key] = tail
        return left + tail

    def _minutes_left_today(self, ts: datetime) -> tuple[float, datetime] | None:
        """(trading minutes from ts to today's close, the close); None on a non-trading day. The same
        for every expiry of a snapshot, so worked out once per ts."""
        if self._today is None or self._today[0] != ts:
            day = ts.date()
            session = self._session_on(day)
            today: tuple[float, datetime] | None = None
            if session is not None:
                _, close = session
                today = (clock.trading_minutes_between(ts, close) if ts < close else 0.0, close)
            self._today = (ts, today)
        return self._today[1]

    def _session_on(self, day: date) -> tuple[datetime, datetime] | None:
        """The day's session (open, close), None when the exchange does not trade; kept for the day."""
        if self._session is None or self._session[0] != day:
            self._session = (day, clock.session_bounds(day) if clock.is_trading_day(day) else None)
        return self._session[1]


class _DayCalendar:
    """What the calendar says about one trading day, worked out once for the day's snapshots."""

    def __init__(self, day: date | None, events: ScoredEvents, config: AnalyticsConfig) -> None:
        self.day = day
        self.is_expiry_day = day is not None and clock.is_expiry_day(day)
        self._trading_days: dict[date, int] = {}
        self._close: datetime | None = None
        if day is not None and clock.is_trading_day(day):
            self._close = clock.session_bounds(day)[1]
        # Only events that can weigh at some instant of this day: ended before it starts, or further
        # than the horizon after it ends, they score 0 all day (event_risk._weight).
        if day is not None:
            start = datetime.combine(day, time(0, 0), tzinfo=clock.IST)
            last = start + timedelta(days=1) + timedelta(days=config.event_horizon_days)
            events = tuple(
                (event, severity)
                for event, severity in events
                if (event.at + timedelta(days=1) if event.all_day else event.at) > start and event.at <= last
            )
        self.event_risk = DayEventRisk(events, config)

    def trading_days_to(self, expiry: date) -> int:
        if self.day is None:
            raise ValueError("no trading day set")
        days = self._trading_days.get(expiry)
        if days is None:
            days = clock.trading_days_between(self.day, expiry)
            self._trading_days[expiry] = days
        return days

    def is_last_hour(self, ts: datetime) -> bool:
        return self._close is not None and ts.time() >= LAST_HOUR_FROM and ts < self._close


def _reference(analyses: Sequence[ExpiryAnalysis]) -> ExpiryAnalysis:
    """The nearest expiry not expiring today that has an ATM IV; else the nearest with one; else the
    nearest. Expiring-day IVs are dominated by hours-to-expiry noise, so they do not drive signals."""
    for analysis in analyses:
        if analysis.vol.days_to_expiry >= 1 and analysis.vol.atm_iv is not None:
            return analysis
    for analysis in analyses:
        if analysis.vol.atm_iv is not None:
            return analysis
    return analyses[0]


def _check_chain_set(chains: Sequence[ChainSnapshot]) -> list[ChainSnapshot]:
    if not chains:
        raise ValueError("a VolSnapshot needs at least one chain snapshot")
    ts = chains[0].ts_event
    underlying = chains[0].underlying
    for chain in chains:
        if chain.ts_event != ts:
            raise ValueError(
                f"chain set mixes times: {chain.expiry} at {chain.ts_event.isoformat()}, "
                f"expected {ts.isoformat()}"
            )
        if chain.underlying != underlying:
            raise ValueError(f"chain set mixes underlyings {underlying} and {chain.underlying}")
    ordered = sorted(chains, key=lambda chain: chain.expiry)
    for previous, current in itertools.pairwise(ordered):
        if previous.expiry == current.expiry:
            raise ValueError(f"chain set has expiry {current.expiry} twice")
    return ordered
