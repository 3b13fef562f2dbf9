"""Exchange time, the NSE calendar and NIFTY contract rules (DESIGN §4).

All trading logic reads time from a `Clock`, never from `datetime.now()`: in live mode that is the
wall clock in Asia/Kolkata, in simulation and replay it is the `ts_event` of the market data, so a
whole trading day can run at any speed and every timed rule (safe-trade window, expiry-day flatten,
end-of-day flatten) fires from event time.

The NSE calendar is DATA (`calendar_data/*.csv`, shipped in the package): weekday trading holidays,
special sessions and the dated regular session times (the F&O close moved from 15:30 to 15:40 on
3 August 2026), for the years listed there. Timed rules are offsets from the day's dated open and close
(`TimedRules`), never clock times, so they follow the session when the exchange moves it.

Asking about a date outside those years raises `CalendarCoverageError` rather than guessing that it
is an ordinary day. In live mode the broker's instrument master overrides the contract rules below.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from importlib import resources
from typing import Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")

STRIKE_STEP = 50

# NIFTY lot size: 75 for contracts expiring before January 2026, 65 for the January 2026 series on.
LOT_SIZE_FROM_2026_SERIES = 65
LOT_SIZE_BEFORE_2026_SERIES = 75
LOT_SIZE_CHANGE_FIRST_EXPIRY_MONTH = date(2026, 1, 1)

# NSE moved NIFTY expiries from Thursday to Tuesday for contracts expiring on or after 1 Sep 2025
# (last Thursday expiry 28 Aug 2025, first Tuesday expiry 2 Sep 2025). Kept so 2025 replays are right.
TUESDAY_EXPIRY_FROM = date(2025, 9, 1)

# Before 2025 the lot size changed mid-series (25 → 75 in late 2024); that history is not modelled.
_LOT_SIZE_MODELLED_FROM = date(2025, 1, 1)

_MONDAY, _TUESDAY, _THURSDAY, _SATURDAY = 0, 1, 3, 5
_DATA_PACKAGE = "volguard_common"
_DATA_DIR = "calendar_data"


@dataclass(frozen=True, slots=True)
class TimedRules:
    """The day's timed trading rules as offsets from its dated open and close.

    Defaults are the original VolGuard's times against its 15:30 close (entries 09:30-15:15, expiry
    flatten 14:30, intraday flat 15:15); against the 15:40 close from 3 August 2026 they are
    09:30-15:25, 14:40 and 15:25. `Settings.timed_rules()` builds them from the configuration.
    """

    # New positions only inside [open + this, close - entries_stop_before_close): the first and last
    # minutes are the noisiest.
    entries_from_open: timedelta = timedelta(minutes=15)
    entries_stop_before_close: timedelta = timedelta(minutes=15)
    # On expiry day positions in the expiring contract are flattened from here on: the last hour carries
    # pin risk and settlement gamma with no time left to repair a mistake.
    expiry_flatten_before_close: timedelta = timedelta(minutes=60)
    # The intraday bucket is flat by the close: its positions are closed from here on.
    intraday_flat_before_close: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        for name in (
            "entries_from_open",
            "entries_stop_before_close",
            "expiry_flatten_before_close",
            "intraday_flat_before_close",
        ):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


DEFAULT_TIMED_RULES = TimedRules()


class CalendarCoverageError(ValueError):
    """The date lies outside the years the NSE calendar data covers."""


class ClockNotStartedError(RuntimeError):
    """A simulation clock was read before any market event set it."""


def to_ist(ts: datetime) -> datetime:
    """`ts` expressed in IST. Naive datetimes are refused: their meaning is a guess."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts.isoformat()} has no time zone; exchange time must be tz-aware")
    return ts.astimezone(IST)


def _as_date(day: date | datetime) -> date:
    # datetime is a subclass of date; a datetime is read as the IST calendar day it falls on.
    if isinstance(day, datetime):
        return to_ist(day).date()
    return day


def _at(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=IST)


# ---- clocks ------------------------------------------------------------------------------------


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """Current exchange time, tz-aware in IST."""
        ...


class LiveClock:
    """The wall clock in Asia/Kolkata (live and paper-on-live-feed trading)."""

    def now(self) -> datetime:
        return datetime.now(IST)


class SimulationClock:
    """Exchange time driven by the `ts_event` of market data (simulation and replay).

    Monotone by construction: `advance_to` with an earlier timestamp than the latest seen leaves the
    clock where it is. Events from several streams (ticks, chains) interleave slightly out of order,
    and a late event must neither rewind timed rules nor kill the consumer, so going backwards is
    ignored rather than rejected. `advance_to` returns the clock's time after the call, so a caller
    that cares can compare it with the event's own time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now: datetime | None = None if start is None else to_ist(start)

    @property
    def started(self) -> bool:
        return self._now is not None

    def advance_to(self, ts_event: datetime) -> datetime:
        ts = to_ist(ts_event)
        if self._now is None or ts > self._now:
            self._now = ts
        return self._now

    def now(self) -> datetime:
        if self._now is None:
            raise ClockNotStartedError(
                "simulation clock read before any market event: exchange time is unknown until the "
                "first ts_event arrives"
            )
        return self._now


# ---- calendar data -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holiday:
    day: date
    name: str
    source: str

    @property
    def provisional(self) -> bool:
        """True when the exchange has not published this date yet (derived from festival dates)."""
        return self.source == "provisional"


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """Regular session times in force from `effective_from` until the next rule takes over."""

    effective_from: date
    open: time
    close: time
    source: str


@dataclass(frozen=True, slots=True)
class SpecialSession:
    day: date
    open: time
    close: time
    # "full": a weekend day with normal market hours, a trading day. "muhurat": the Diwali hour on a
    # holiday, recorded but not a trading day for VolGuard.
    kind: Literal["full", "muhurat"]
    description: str
    source: str


def _data_rows(filename: str) -> Iterator[dict[str, str]]:
    text = resources.files(_DATA_PACKAGE).joinpath(_DATA_DIR, filename).read_text(encoding="utf-8")
    yield from csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))


def _load_holidays() -> list[Holiday]:
    return [
        Holiday(day=date.fromisoformat(row["date"]), name=row["holiday"], source=row["source"])
        for row in _data_rows("nse_holidays.csv")
    ]


def _load_special_sessions() -> list[SpecialSession]:
    sessions: list[SpecialSession] = []
    for row in _data_rows("nse_special_sessions.csv"):
        kind = row["kind"]
        if kind not in ("full", "muhurat"):
            raise ValueError(f"nse_special_sessions.csv: unknown kind {kind!r} on {row['date']}")
        sessions.append(
            SpecialSession(
                day=date.fromisoformat(row["date"]),
                open=time.fromisoformat(row["open"]),
                close=time.fromisoformat(row["close"]),
                kind="full" if kind == "full" else "muhurat",
                description=row["description"],
                source=row["source"],
            )
        )
    return sessions


def _load_session_times() -> list[SessionTimes]:
    return [
        SessionTimes(
            effective_from=date.fromisoformat(row["from"]),
            open=time.fromisoformat(row["open"]),
            close=time.fromisoformat(row["close"]),
            source=row["source"],
        )
        for row in _data_rows("nse_session_times.csv")
    ]


@dataclass(frozen=True, slots=True)
class ActiveExpiries:
    """Expiries still tradable at a point in time, nearest first."""

    weekly: tuple[date, ...]
    monthly: tuple[date, ...]

    @property
    def all(self) -> tuple[date, ...]:
        """Weekly and monthly together, without duplicates, nearest first."""
        return tuple(sorted(set(self.weekly) | set(self.monthly)))


class TradingCalendar:
    """Trading days, sessions and NIFTY expiries over the covered years."""

    def __init__(
        self,
        holidays: Iterable[Holiday],
        special_sessions: Iterable[SpecialSession],
        first_day: date,
        last_day: date,
        session_times: Iterable[SessionTimes] | None = None,
    ) -> None:
        """`session_times` are the dated regular sessions; None takes the packaged NSE rules."""
        if last_day < first_day:
            raise ValueError(f"calendar coverage {first_day}..{last_day} is empty")
        rules = sorted(
            _load_session_times() if session_times is None else session_times, key=lambda r: r.effective_from
        )
        if not rules or rules[0].effective_from > first_day:
            raise ValueError(f"no regular session times cover {first_day}, the start of the calendar")
        for earlier, later in itertools.pairwise(rules):
            if earlier.effective_from == later.effective_from:
                raise ValueError(f"session times from {later.effective_from} listed twice")
        for rule in rules:
            if rule.close <= rule.open:
                raise ValueError(f"session times from {rule.effective_from} close before they open")
        self._session_times = tuple(rules)
        self.first_day = first_day
        self.last_day = last_day
        self._holidays: dict[date, Holiday] = {}
        for holiday in holidays:
            if holiday.day.weekday() >= _SATURDAY:
                raise ValueError(
                    f"holiday {holiday.day} ({holiday.name}) falls on a weekend; list weekdays only"
                )
            if holiday.day in self._holidays:
                raise ValueError(f"holiday {holiday.day} listed twice")
            if not first_day <= holiday.day <= last_day:
                raise ValueError(f"holiday {holiday.day} lies outside the coverage {first_day}..{last_day}")
            self._holidays[holiday.day] = holiday
        self._special: dict[date, SpecialSession] = {}
        for session in special_sessions:
            if session.day in self._special:
                raise ValueError(f"special session {session.day} listed twice")
            if session.kind == "full" and session.day in self._holidays:
                raise ValueError(f"full special session {session.day} is also listed as a holiday")
            if session.close <= session.open:
                raise ValueError(f"special session {session.day} closes before it opens")
            self._special[session.day] = session

    # -- days --

    def _check_covered(self, day: date) -> None:
        if not self.first_day <= day <= self.last_day:
            raise CalendarCoverageError(
                f"{day} is outside the NSE calendar data ({self.first_day}..{self.last_day}); "
                "add that year to volguard_common/calendar_data/"
            )

    def holiday(self, day: date | datetime) -> Holiday | None:
        """The listed weekday holiday on `day`, if any."""
        d = _as_date(day)
        self._check_covered(d)
        return self._holidays.get(d)

    def special_session(self, day: date | datetime) -> SpecialSession | None:
        d = _as_date(day)
        self._check_covered(d)
        return self._special.get(d)

    @property
    def special_sessions(self) -> tuple[SpecialSession, ...]:
        return tuple(sorted(self._special.values(), key=lambda s: s.day))

    @property
    def session_times(self) -> tuple[SessionTimes, ...]:
        """The dated regular session rules, oldest first."""
        return self._session_times

    def regular_session(self, day: date | datetime) -> SessionTimes:
        """The regular session rule in force on `day` (whether or not the market trades that day)."""
        d = _as_date(day)
        self._check_covered(d)
        in_force = self._session_times[0]
        for rule in self._session_times[1:]:
            if rule.effective_from > d:
                break
            in_force = rule
        return in_force

    def _close_time(self, day: date) -> time:
        special = self._special.get(day)
        if special is not None and special.kind == "full":
            return special.close
        return self.regular_session(day).close

    @property
    def holidays(self) -> tuple[Holiday, ...]:
        return tuple(sorted(self._holidays.values(), key=lambda h: h.day))

    def _is_regular_trading_day(self, day: date) -> bool:
        # A weekday that is not a holiday: the days contract rules are defined on.
        self._check_covered(day)
        return day.weekday() < _SATURDAY and day not in self._holidays

    def is_trading_day(self, day: date | datetime) -> bool:
        """Does the exchange hold a full session on `day` (weekdays minus holidays, plus weekend sessions)?"""
        d = _as_date(day)
        self._check_covered(d)
        special = self._special.get(d)
        if special is not None and special.kind == "full":
            return True
        return self._is_regular_trading_day(d)

    def previous_trading_day(self, day: date | datetime) -> date:
        """The last trading day strictly before `day`."""
        d = _as_date(day) - timedelta(days=1)
        while not self.is_trading_day(d):
            d -= timedelta(days=1)
        return d

    def next_trading_day(self, day: date | datetime) -> date:
        """The first trading day strictly after `day`."""
        d = _as_date(day) + timedelta(days=1)
        while not self.is_trading_day(d):
            d += timedelta(days=1)
        return d

    def trading_days_between(self, start: date | datetime, end: date | datetime) -> int:
        """Trading days in (start, end]: how many trading-day steps lead from `start` to `end`."""
        a, b = _as_date(start), _as_date(end)
        if b < a:
            raise ValueError(f"end {b} is before start {a}")
        self._check_covered(a)
        return sum(1 for k in range(1, (b - a).days + 1) if self.is_trading_day(a + timedelta(days=k)))

    # -- sessions --

    def session_bounds(self, day: date | datetime) -> tuple[datetime, datetime]:
        """Open and close (IST) of the session on `day`; raises if the market does not trade that day."""
        d = _as_date(day)
        if not self.is_trading_day(d):
            raise ValueError(f"{d} is not a trading day")
        special = self._special.get(d)
        if special is not None:
            return _at(d, special.open), _at(d, special.close)
        regular = self.regular_session(d)
        return _at(d, regular.open), _at(d, regular.close)

    def market_open(self, ts: datetime) -> bool:
        """Is the regular market in session at `ts` (open ≤ ts < close on a trading day)?"""
        t = to_ist(ts)
        if not self.is_trading_day(t.date()):
            return False
        open_dt, close_dt = self.session_bounds(t.date())
        return open_dt <= t < close_dt

    def in_safe_window(self, ts: datetime, rules: TimedRules = DEFAULT_TIMED_RULES) -> bool:
        """May new positions be opened at `ts` (open + 15 min ≤ ts < close - 15 min on a trading day by
        default: 09:30-15:15 against a 15:30 close, 09:30-15:25 against 15:40)?"""
        t = to_ist(ts)
        if not self.is_trading_day(t.date()):
            return False
        open_dt, close_dt = self.session_bounds(t.date())
        return open_dt + rules.entries_from_open <= t < close_dt - rules.entries_stop_before_close

    def intraday_flat_due(self, ts: datetime, rules: TimedRules = DEFAULT_TIMED_RULES) -> bool:
        """Must the intraday bucket be flat at `ts` (from close - 15 min on, by default, on a trading day)?"""
        t = to_ist(ts)
        if not self.is_trading_day(t.date()):
            return False
        _, close_dt = self.session_bounds(t.date())
        return t >= close_dt - rules.intraday_flat_before_close

    def trading_minutes_between(self, start: datetime, end: datetime) -> float:
        """Minutes of trading sessions inside [start, end]; what analytics uses as time to expiry.

        Nights, weekends and holidays count zero. `end` before `start` raises: an expired contract has
        no time left, and saying 0 would hide the mistake from the caller.
        """
        a, b = to_ist(start), to_ist(end)
        if b < a:
            raise ValueError(f"end {b.isoformat()} is before start {a.isoformat()}")
        seconds = 0.0
        day = a.date()
        while day <= b.date():
            if self.is_trading_day(day):
                open_dt, close_dt = self.session_bounds(day)
                overlap = (min(b, close_dt) - max(a, open_dt)).total_seconds()
                if overlap > 0:
                    seconds += overlap
            day += timedelta(days=1)
        return seconds / 60.0

    def minutes_to_close(self, ts: datetime) -> float:
        """Session minutes left today at `ts`: the full session before the open, 0 after the close or on
        a day without a session."""
        t = to_ist(ts)
        if not self.is_trading_day(t.date()):
            return 0.0
        _, close_dt = self.session_bounds(t.date())
        if t >= close_dt:
            return 0.0
        return self.trading_minutes_between(t, close_dt)

    # -- NIFTY expiries --

    def _roll_to_trading_day(self, nominal: date) -> date:
        # A holiday expiry moves to the previous trading day. Weekend special sessions (Budget day)
        # never host an expiry, so the roll walks regular trading days only.
        d = nominal
        while not self._is_regular_trading_day(d):
            d -= timedelta(days=1)
        return d

    def monthly_expiry(self, year: int, month: int) -> date:
        """The NIFTY monthly expiry: the last expiry weekday of the month, rolled back over holidays."""
        first_next = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        d = first_next - timedelta(days=1)
        while d.weekday() != expiry_weekday(d):
            d -= timedelta(days=1)
        return self._roll_to_trading_day(d)

    def is_monthly_expiry(self, day: date | datetime) -> bool:
        d = _as_date(day)
        # The last expiry weekday of a month is on or after the 22nd, and a holiday roll moves it back a
        # few days at most, so a monthly expiry always stays in its own month.
        return self.monthly_expiry(d.year, d.month) == d

    def _nominal_expiries_from(self, day: date) -> Iterator[date]:
        d = day
        while True:
            if d.weekday() == expiry_weekday(d):
                yield d
            d += timedelta(days=1)

    def weekly_expiries(self, from_date: date | datetime, count: int) -> list[date]:
        """The next `count` NIFTY expiry dates on or after `from_date` (weekly series; the monthly is
        the last one of each month), holiday rolls applied."""
        if count < 0:
            raise ValueError(f"count must be ≥ 0, got {count}")
        start = _as_date(from_date)
        self._check_covered(start)
        expiries: list[date] = []
        # Scan from a week early: a holiday roll can pull a later nominal expiry back onto `start`. A
        # nominal day before the coverage can only roll further back, so the scan starts inside it.
        for nominal in self._nominal_expiries_from(max(start - timedelta(days=6), self.first_day)):
            if len(expiries) == count:
                break
            actual = self._roll_to_trading_day(nominal)
            if actual >= start and (not expiries or actual > expiries[-1]):
                expiries.append(actual)
        return expiries

    def is_expiry_day(self, day: date | datetime) -> bool:
        """Does a NIFTY contract (weekly or monthly) expire on this day?"""
        d = _as_date(day)
        nxt = self.weekly_expiries(d, 1)
        return bool(nxt) and nxt[0] == d

    def expiry_cutoff(self, expiry: date) -> datetime:
        """The moment a contract expiring on `expiry` stops trading: that day's dated close."""
        return _at(expiry, self._close_time(expiry))

    def next_expiries(self, as_of: datetime, weeklies: int = 4, monthlies: int = 3) -> ActiveExpiries:
        """Expiries still active at `as_of`: an expiry is active on its own day until that day's close."""
        if weeklies < 0 or monthlies < 0:
            raise ValueError(f"weeklies and monthlies must be ≥ 0, got {weeklies} and {monthlies}")
        t = to_ist(as_of)
        first_day = t.date() if t < self.expiry_cutoff(t.date()) else t.date() + timedelta(days=1)
        weekly = tuple(self.weekly_expiries(first_day, weeklies))
        monthly: list[date] = []
        year, month = first_day.year, first_day.month
        while len(monthly) < monthlies:
            expiry = self.monthly_expiry(year, month)
            if expiry >= first_day:
                monthly.append(expiry)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return ActiveExpiries(weekly=weekly, monthly=tuple(monthly))

    def expiry_flatten_due(self, ts: datetime, rules: TimedRules = DEFAULT_TIMED_RULES) -> bool:
        """On an expiry day, from 60 minutes before the close on (by default; 14:30 against a 15:30 close,
        14:40 against 15:40), positions in the expiring contract must be flattened."""
        t = to_ist(ts)
        if not self.is_expiry_day(t.date()):
            return False
        return t >= self.expiry_cutoff(t.date()) - rules.expiry_flatten_before_close


def expiry_weekday(day: date) -> int:
    """Weekday (Monday=0) on which NIFTY contracts nominally expire in the week of `day`."""
    return _TUESDAY if day >= TUESDAY_EXPIRY_FROM else _THURSDAY


@functools.lru_cache(maxsize=256)
def expiry_cutoff(expiry: date) -> datetime:
    """The moment (the dated close on expiry day: 15:30 IST until July 2026, 15:40 from August) a
    contract stops trading; time to expiry runs to here. Memoised: every chain set asks it of the same
    few expiries, and building an aware datetime costs more than the lookup."""
    return nse_calendar().expiry_cutoff(expiry)


def lot_size(expiry: date) -> int:
    """NIFTY lot size of the contract expiring on `expiry`: 65 from the January 2026 series, 75 before."""
    if expiry < _LOT_SIZE_MODELLED_FROM:
        raise CalendarCoverageError(f"NIFTY lot size for expiry {expiry} (before 2025) is not modelled")
    if expiry >= LOT_SIZE_CHANGE_FIRST_EXPIRY_MONTH:
        return LOT_SIZE_FROM_2026_SERIES
    return LOT_SIZE_BEFORE_2026_SERIES


def round_to_strike(price: float, step: int = STRIKE_STEP) -> int:
    """The listed strike nearest to `price` (halves round up, e.g. 24,925 → 24,950)."""
    if not math.isfinite(price):
        raise ValueError(f"cannot round {price} to a strike")
    if step <= 0:
        raise ValueError(f"strike step must be positive, got {step}")
    return math.floor(price / step + 0.5) * step


# The calendar this process trusts over the bundled data: in live mode, the bundled calendar
# corrected by the broker's market-information endpoints (see `install_calendar`).
_installed_calendar: TradingCalendar | None = None


def nse_calendar() -> TradingCalendar:
    """The process's NSE calendar: the installed one (broker-corrected in live mode), else the bundled."""
    return _installed_calendar if _installed_calendar is not None else bundled_nse_calendar()


def install_calendar(calendar: TradingCalendar | None) -> None:
    """Make `calendar` the process's NSE calendar (None goes back to the bundled data). Every function of
    this module follows it from the next call on."""
    global _installed_calendar
    _installed_calendar = calendar
    expiry_cutoff.cache_clear()


def holidays_from_csv(text: str) -> list[Holiday]:
    """Holidays from text in the format of the bundled `nse_holidays.csv` (date,holiday,source)."""
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    missing = {"date", "holiday", "source"} - set(rows.fieldnames or ())
    if missing:
        raise ValueError(f"holiday file has no {', '.join(sorted(missing))} column")
    return [Holiday(date.fromisoformat(row["date"]), row["holiday"], row["source"]) for row in rows]


def calendar_with_holidays(
    holidays: Iterable[Holiday], base: TradingCalendar | None = None
) -> TradingCalendar:
    """`base` (the bundled calendar by default) with its holidays replaced, year by year, by `holidays`
    for every year they list. A year after the covered ones extends the coverage; a gap is refused."""
    calendar = base or bundled_nse_calendar()
    updated = list(holidays)
    years = {h.day.year for h in updated}
    if not years:
        raise ValueError("the holiday file lists no holidays")
    kept = [h for h in calendar.holidays if h.day.year not in years]
    last_year = max(calendar.last_day.year, *years)
    first_year = min(calendar.first_day.year, *years)
    covered = (
        years | {h.day.year for h in kept} | set(range(calendar.first_day.year, calendar.last_day.year + 1))
    )
    gaps = set(range(first_year, last_year + 1)) - covered
    if gaps:
        raise ValueError(f"coverage must be contiguous: no holidays for {sorted(gaps)}")
    return TradingCalendar(
        [*kept, *updated],
        calendar.special_sessions,
        date(first_year, 1, 1),
        date(last_year, 12, 31),
        calendar.session_times,
    )


@functools.cache
def bundled_nse_calendar() -> TradingCalendar:
    """The NSE calendar built from the packaged data; coverage is every year that has holiday rows."""
    holidays = _load_holidays()
    years = sorted({h.day.year for h in holidays})
    missing = set(range(years[0], years[-1] + 1)) - set(years)
    if missing:
        raise ValueError(f"nse_holidays.csv has no rows for {sorted(missing)}; coverage must be contiguous")
    return TradingCalendar(
        holidays=holidays,
        special_sessions=_load_special_sessions(),
        first_day=date(years[0], 1, 1),
        last_day=date(years[-1], 12, 31),
    )


# ---- the NSE calendar as plain functions -----------------------------------------------------


def is_trading_day(day: date | datetime) -> bool:
    return nse_calendar().is_trading_day(day)


def previous_trading_day(day: date | datetime) -> date:
    return nse_calendar().previous_trading_day(day)


def next_trading_day(day: date | datetime) -> date:
    return nse_calendar().next_trading_day(day)


def trading_days_between(start: date | datetime, end: date | datetime) -> int:
    return nse_calendar().trading_days_between(start, end)


def session_bounds(day: date | datetime) -> tuple[datetime, datetime]:
    return nse_calendar().session_bounds(day)


def market_open(ts: datetime) -> bool:
    return nse_calendar().market_open(ts)


def in_safe_window(ts: datetime, rules: TimedRules = DEFAULT_TIMED_RULES) -> bool:
    return nse_calendar().in_safe_window(ts, rules)


def intraday_flat_due(ts: datetime, rules: TimedRules = DEFAULT_TIMED_RULES) -> bool:
    return nse_calendar().intraday_flat_due(ts, rules)


def minutes_to_close(ts: datetime) -> float:
    return nse_calendar().minutes_to_close(ts)


def trading_minutes_between(start: datetime, end: datetime) -> float:
    return nse_calendar().trading_minutes_between(start, end)


def weekly_expiries(from_date: date | datetime, count: int) -> list[date]:
    return nse_calendar().weekly_expiries(from_date, count)


def monthly_expiry(year: int, month: int) -> date:
    return nse_calendar().monthly_expiry(year, month)


def is_monthly_expiry(day: date | datetime) -> bool:
    return nse_calendar().is_monthly_expiry(day)


def next_expiries(as_of: datetime, weeklies: int = 4, monthlies: int = 3) -> ActiveExpiries:
    return nse_calendar().next_expiries(as_of, weeklies=weeklies, monthlies=monthlies)


def is_expiry_day(day: date | datetime) -> bool:
    return nse_calendar().is_expiry_day(day)


def expiry_flatten_due(ts: datetime, rules: TimedRules = DEFAULT_TIMED_RULES) -> bool:
    return nse_calendar().expiry_flatten_due(ts, rules)
