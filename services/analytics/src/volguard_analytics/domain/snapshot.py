"""VolEngine: one VolSnapshot from one set of chain snapshots (every expiry at one ts_event), the latest
index and VIX ticks and the daily history. Pure: no I/O, no wall clock; time is ts_event.

State carried between snapshots (so the same sequence of inputs gives the same sequence of outputs):
today's intraday bar (index ticks), the VIX spike window, the regime hysteresis, the premium trend, the
GARCH fit of the trading day, what the calendar says about the day (session, expiry day, events in
reach, trading minutes from the close to each expiry), and the last set's SABR fits and solved vols,
where the next set's calibrations and IV solve start.

Envelope determinism: `event_id` defaults to a UUIDv7 derived from (the publishing service, ts_event,
chain event ids) - time-ordered by ts_event, identical on replay, and the same whichever replica computes
it, so a chain set processed twice (a crash between publishing and acknowledging, a takeover) gives one
event that consumers deduplicate - and `ts_init` defaults to ts_event. A live service passes
`ts_init=<wall time>`; replays compare payloads either way.
`correlation_id` is the front chain's, so a decision on this snapshot traces back to its quotes.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from operator import attrgetter

from volguard_analytics.domain import history as hist
from volguard_analytics.domain.calendar import EventCalendar
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.event_risk import DayEventRisk, ScoredEvents, in_reach, scored_events
from volguard_analytics.domain.expiry import ExpiryAnalysis, QuoteVols, analyse_set
from volguard_analytics.domain.premium import PREMIUM_HORIZON_TRADING_DAYS, PremiumTracker
from volguard_analytics.domain.regime import RegimeInputs, RegimeTracker
from volguard_analytics.domain.surface import constant_maturity_atm_iv, skew_view, term_structure
from volguard_analytics.domain.vix_spike import VixSpike, VixSpikeDetector
from volguard_common import clock
from volguard_common.events import ChainSnapshot, Tick
from volguard_common.events.market import InstrumentKind
from volguard_common.events.vol import ExpiryVol, Quality, RealisedVol, VolSnapshot
from volguard_common.quant import sabr

# The session's last hour, measured back from the day's dated close (15:30 until July 2026, 15:40 on).
LAST_HOUR = timedelta(hours=1)
_SEVERITY = {Quality.GOOD: 0, Quality.DEGRADED: 1, Quality.BAD: 2}
_BITS_48 = (1 << 48) - 1
_BITS_62 = (1 << 62) - 1
_UUID_GROUPS = "%08x-%04x-%04x-%04x-%012x"
_EXPIRY = attrgetter("expiry")


def deterministic_event_id(source: str, ts_event: datetime, chain_event_ids: Sequence[str]) -> str:
    """A UUIDv7 whose time is ts_event (ms) and whose random bits hash (source, ts_event, chain ids)."""
    digest = hashlib.sha256("|".join((source, ts_event.isoformat(), *chain_event_ids)).encode()).digest()
    ms = int(ts_event.timestamp() * 1000) & _BITS_48
    rand_a = (digest[0] & 0x0F) << 8 | digest[1]
    rand_b = int.from_bytes(digest[2:10], "big") & _BITS_62
    # str(uuid.UUID(int=ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)) spelled out group by
    # group: the same 8-4-4-4-12 lower-case hex without building the 128-bit value or a UUID.
    return _UUID_GROUPS % (ms >> 16, ms & 0xFFFF, 0x7000 | rand_a, 0x8000 | rand_b >> 48, rand_b & _BITS_48)


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
        self._calendar = _DayCalendar(None, self._scored_events, config)
        self._vix_spike_window = timedelta(seconds=config.vix_spike_window_s)
        # (today's bar, realised vol, reasons) of the last snapshot: reused until the bar moves.
        self._realised: tuple[hist.IntradayBar | None, RealisedVol, tuple[str, ...]] | None = None
        # Last converged SABR fit per expiry: the warm start of the next snapshot's calibration.
        self._smiles: dict[date, sabr.SabrFit] = {}
        # Last set's solved vols: where the next set's IV solve starts.
        self._quote_vols: QuoteVols | None = None

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
        front = min(chains, key=_EXPIRY)
        self._bar = hist.intraday_bar_update(self._bar, front.ts_event, front.spot, None, None, None)
        vix = _chain_vix(chains)
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
        front = ordered[0]
        ts = front.ts_event
        day = ts.date()
        config = self.config
        calendar = self._calendar_on(day)
        expiries = [chain.expiry for chain in ordered]

        analysed = analyse_set(
            ordered,
            ts,
            calendar.trading_minutes_to(ts, expiries),
            config,
            [self._smiles.get(expiry) for expiry in expiries],
            self._quote_vols,
        )
        analyses = analysed.expiries
        self._quote_vols = analysed.quote_vols
        # One pass over the expiries for what the snapshot takes from each: the published vol, its point
        # on the term structure, its reasons and verdict, its smile as the next warm start.
        vols: list[ExpiryVol] = []
        points: list[tuple[ExpiryVol, float]] = []
        reasons: list[str] = []
        quality = Quality.GOOD
        smiles: dict[date, sabr.SabrFit] = {}
        for expiry, analysis in zip(expiries, analyses, strict=True):
            vol = analysis.vol
            vols.append(vol)
            points.append((vol, analysis.t_years))
            reasons.extend(analysis.reasons)
            if _SEVERITY[analysis.quality] > _SEVERITY[quality]:
                quality = analysis.quality
            fit = analysis.sabr_fit
            if fit is not None and fit.converged:
                smiles[expiry] = fit
        # Expiries absent from this set (or whose fit failed) start cold next time.
        self._smiles = smiles
        # An input that stays unknown (VIX, skew, realised vol, GARCH, regime) degrades the snapshot.
        degraded = False

        reference = _reference(analyses)
        ref_vol = reference.vol
        spot = front.spot
        vix = self._vix_at(ts, ordered)
        if vix is None:
            reasons.append("India VIX unknown: no VIX tick and no VIX on the chain")
            degraded = True

        term, term_reason = term_structure(points, config)
        if term_reason is not None:
            reasons.append(term_reason)
        skew = skew_view(ref_vol.rr25, config)
        if ref_vol.rr25 is None:
            reasons.append(f"skew unknown on reference expiry {ref_vol.expiry}: signal NEUTRAL by default")
            degraded = True

        days = self._day_inputs(day)
        bar = self._bar if self._bar is not None and self._bar.trade_date == day else None
        realised, rv_reasons = self._realised_vol(days, bar)
        horizon = max(1, calendar.trading_days_to(ref_vol.expiry))
        garch_view, garch_reason = self.garch.forecast(days, horizon)
        atm_iv_30d = constant_maturity_atm_iv(points)
        percentiles, pct_reasons = hist.percentiles(days, vix, atm_iv_30d, config)
        reasons.extend(rv_reasons)
        reasons.extend(pct_reasons)
        if garch_reason is not None:
            reasons.append(garch_reason)
        if rv_reasons or garch_reason is not None:
            degraded = True

        reference_rv = realised.yang_zhang if realised.yang_zhang is not None else realised.cc21
        # The IV-RV thresholds are calibrated on 30-day implied vol against 21-session realised vol, so
        # the premium compares the 30-day constant-maturity ATM IV, and GARCH over the same 30 days.
        # When no two expiries bracket 30 days it falls back to the reference expiry, and says so.
        premium_iv: float | None
        if atm_iv_30d is not None:
            premium_iv = atm_iv_30d
            premium_garch, _ = self.garch.forecast(days, PREMIUM_HORIZON_TRADING_DAYS)
        else:
            premium_iv = ref_vol.atm_iv
            premium_garch = garch_view
            reasons.append(
                f"premium on reference expiry {ref_vol.expiry} ATM IV: 30-day ATM IV unknown "
                "(no two expiries bracket 30 days), so the spreads are not the calibrated measure"
            )
        premium = self._premium.evaluate(
            ts, premium_iv, reference_rv, premium_garch.vol if premium_garch is not None else None
        )
        risk = calendar.event_risk.at(ts)

        expiry_day = calendar.is_expiry_day
        # Sorted, and an expiry before today fails trading_minutes_to: one expiring today is the front.
        expiring = analyses[0] if expiries[0] == day else None
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
            degraded = True

        if degraded and quality is Quality.GOOD:
            quality = Quality.DEGRADED
        chain_ids = [chain.event_id for chain in ordered]
        if event_id is None:
            # The service, not the replica ("analytics/analytics-1"): a standby that takes over and
            # recomputes a set its predecessor published must give it the same id.
            event_id = deterministic_event_id(self.source.partition("/")[0], ts, chain_ids)
        return VolSnapshot.model_validate(
            {
                "event_id": event_id,
                "ts_event": ts,
                "ts_init": ts_init if ts_init is not None else ts,
                "source": self.source,
                "correlation_id": front.correlation_id,
                "underlying": front.underlying,
                "spot": spot,
                "vix": vix,
                "chain_event_ids": chain_ids,
                "expiries": vols,
                "term": term,
                "skew": skew,
                "realised": realised,
                "garch": garch_view,
                "percentiles": percentiles,
                "premium": premium,
                "regime": regime,
                "event_risk": risk,
                "is_expiry_day": expiry_day,
                "is_last_hour": calendar.is_last_hour(ts),
                "quality": quality,
                "quality_reasons": reasons,
            }
        )

    # ---- helpers ----------------------------------------------------------------------------------
    def _calendar_on(self, day: date) -> _DayCalendar:
        if self._calendar.day != day:
            self._calendar = _DayCalendar(day, self._scored_events, self.config)
        return self._calendar

    def _day_inputs(self, day: date) -> hist.DayInputs:
        if self._day is None or self._day.trade_date != day:
            self._day = hist.day_inputs(self.history, day, self.config.percentile_lookback_days)
            self._realised = None
        return self._day

    def _realised_vol(
        self, days: hist.DayInputs, bar: hist.IntradayBar | None
    ) -> tuple[RealisedVol, tuple[str, ...]]:
        # Daily history changes once a day and the partial bar only with index ticks: without a new
        # tick the last answer stands.
        if self._realised is None or self._realised[0] != bar:
            realised, reasons = hist.realised_vol(days, bar)
            self._realised = (bar, realised, tuple(reasons))
        return self._realised[1], self._realised[2]

    def _vix_at(self, ts: datetime, chains: Sequence[ChainSnapshot]) -> float | None:
        if self._vix_last is not None and self._vix_last[0] <= ts:
            return self._vix_last[1]
        return _chain_vix(chains)

    def _vix_spike_at(self, ts: datetime) -> bool:
        # The spike is on only while the last VIX print is inside the window of this snapshot.
        if self._vix_last is None or self._vix_last[0] < ts - self._vix_spike_window:
            return False
        return self._vix.active


class _DayCalendar:
    """What the calendar says about one trading day, worked out once for the day's snapshots."""

    def __init__(self, day: date | None, events: ScoredEvents, config: AnalyticsConfig) -> None:
        self.day = day
        self.is_expiry_day = day is not None and clock.is_expiry_day(day)
        self._trading_days: dict[date, int] = {}
        # Trading minutes from the day's close to the cutoff of each later expiry.
        self._tail_minutes: dict[date, float] = {}
        self._open: datetime | None = None
        self._close: datetime | None = None
        if day is not None and clock.is_trading_day(day):
            self._open, self._close = clock.session_bounds(day)
        # Only events that can be in play at some instant of this day: the others change nothing.
        if day is not None:
            start = datetime.combine(day, time(0, 0), tzinfo=clock.IST)
            events = in_reach(events, start, start + timedelta(days=1), config)
        self.event_risk = DayEventRisk(events, config)

    def trading_days_to(self, expiry: date) -> int:
        if self.day is None:
            raise ValueError("no trading day set")
        days = self._trading_days.get(expiry)
        if days is None:
            days = clock.trading_days_between(self.day, expiry)
            self._trading_days[expiry] = days
        return days

    def trading_minutes_to(self, ts: datetime, expiries: Sequence[date]) -> list[float]:
        """Trading minutes from `ts`, an instant of this day, to each expiry's cutoff. For an expiry after
        a trading day: the minutes left today, worked out once for all expiries, plus the tail from the
        close to the cutoff, kept for the day (the split is part of the answer: a sum over one span can
        round differently)."""
        day, open_, close = self.day, self._open, self._close
        if day is None or open_ is None or close is None:
            return [clock.trading_minutes_between(ts, clock.expiry_cutoff(expiry)) for expiry in expiries]
        # clock.trading_minutes_between(ts, close) for an instant of this day, worked out as it does:
        # the one session's overlap with [ts, close], in seconds, over 60.
        left = (close - max(ts, open_)).total_seconds() / 60.0 if ts < close else 0.0
        minutes = []
        for expiry in expiries:
            if expiry <= day:
                minutes.append(clock.trading_minutes_between(ts, clock.expiry_cutoff(expiry)))
                continue
            tail = self._tail_minutes.get(expiry)
            if tail is None:
                tail = clock.trading_minutes_between(close, clock.expiry_cutoff(expiry))
                self._tail_minutes[expiry] = tail
            minutes.append(left + tail)
        return minutes

    def is_last_hour(self, ts: datetime) -> bool:
        return self._close is not None and self._close - LAST_HOUR <= ts < self._close


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


def _chain_vix(chains: Sequence[ChainSnapshot]) -> float | None:
    """The India VIX a chain set carries: the first chain's that has one."""
    for chain in chains:
        if chain.vix is not None:
            return chain.vix
    return None


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
    ordered = sorted(chains, key=_EXPIRY)
    for previous, current in itertools.pairwise(ordered):
        if previous.expiry == current.expiry:
            raise ValueError(f"chain set has expiry {current.expiry} twice")
    return ordered
