"""The simulated NIFTY market: spot, India VIX, the near-month future and every listed option chain.

`SimulatedMarket.advance()` returns the market at the next snapshot time as plain values plus one
`ChainColumns` per expiry; the adapter (`adapters/sim_source.py`) wraps them in events. Time is exchange
time only: snapshots every `interval_s` seconds from the open; after the close the next call opens the
next NSE trading day (overnight gap). Each session is simulated second by second when it opens
(`spot.simulate_session`) and every snapshot quotes all expiries x strikes in one vectorised step.

Determinism: every random number comes from numpy PCG64 generators seeded from (seed, trading day),
so the same seed gives the same market, and a given day is the same whichever day the run started
(given the same opening state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from volguard_common import clock
from volguard_common.events import ChainColumns
from volguard_common.quant import black76, sabr
from volguard_common.quant._types import Float64Array
from volguard_common.settings import DEFAULT_RISK_FREE_RATE
from volguard_market_data.domain.sim import scenarios
from volguard_market_data.domain.sim.daily_bars import INDIA_VIX, NIFTY, DailyBar, daily_bars
from volguard_market_data.domain.sim.quotes import TICK, OptionBook, from_ticks, open_interest_lots, to_ticks
from volguard_market_data.domain.sim.scenarios import SessionScript
from volguard_market_data.domain.sim.session import (
    intraday_variance_profile,
    session_open_on_or_after,
    session_seconds,
)
from volguard_market_data.domain.sim.spot import SessionPath, SpotModel, overnight_move, simulate_session
from volguard_market_data.domain.sim.surface import (
    BETA,
    DAYS_PER_YEAR,
    ExpiryTruth,
    SmileParams,
    SurfaceModel,
    smile_params,
)
from volguard_market_data.domain.sim.vix import VixModel

# The simulated market prices at the same rate analytics discounts with (Settings.risk_free_rate).
RISK_FREE_RATE = DEFAULT_RISK_FREE_RATE
MONTHLIES = 3
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400.0
# The session's strike grid spans these multiples of the opening spot: wide enough that the +-60
# strike window of even the furthest monthly stays inside it on a black-swan day.
_GRID_LOW, _GRID_HIGH = 0.70, 1.40


def option_instrument_key(expiry: date, strike: float, is_call: bool) -> str:
    """The simulator's instrument key of a NIFTY option, e.g. 'NSE_FO|NIFTY26120124000CE'."""
    return f"NSE_FO|NIFTY{expiry:%y%m%d}{int(strike)}{'CE' if is_call else 'PE'}"


def future_instrument_key(expiry: date) -> str:
    """The simulator's instrument key of a NIFTY future, e.g. 'NSE_FO|NIFTY26DECFUT'."""
    return f"NSE_FO|{future_symbol(expiry)}"


def future_symbol(expiry: date) -> str:
    return f"NIFTY{expiry:%y%b}FUT".upper()


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int
    start: datetime  # first snapshot at or after this exchange time (IST)
    scenario: str = ""
    strikes_each_side: int = 60
    weeklies: int = 4
    monthlies: int = MONTHLIES
    interval_s: float = 1.0
    rate: float = RISK_FREE_RATE


@dataclass(frozen=True, slots=True)
class DayRange:
    """Session OHLC so far, with the previous session's close."""

    open: float
    high: float
    low: float
    prev_close: float


@dataclass(frozen=True, slots=True)
class FutureQuote:
    expiry: date
    lot_size: int
    ltp: float
    bid: float
    ask: float
    bid_qty: int
    ask_qty: int
    volume: int
    oi: int
    day: DayRange


@dataclass(frozen=True, slots=True)
class ChainFrame:
    expiry: date
    forward: float
    lot_size: int
    columns: ChainColumns


@dataclass(frozen=True, slots=True)
class MarketFrame:
    """The market at one snapshot time."""

    ts_event: datetime
    spot: float
    spot_day: DayRange
    vix: float  # published India VIX (true 30-day level x small noise)
    vix_day: DayRange
    future: FutureQuote
    chains: tuple[ChainFrame, ...]


class _Session:
    """Everything fixed for one trading session: its path, expiries, strike grid and option book."""

    def __init__(
        self,
        *,
        open_dt: datetime,
        close_dt: datetime,
        path: SessionPath,
        script: SessionScript,
        config: SimConfig,
        prev_close: float,
        prev_vix: float,
        prev_future_close: float,
        profile: Float64Array,
        rng: np.random.Generator,
        surface_model: SurfaceModel,
    ) -> None:
        self.open_dt = open_dt
        self.close_dt = close_dt
        self.path = path
        self.script = script
        self.profile = profile
        self.prev_close = prev_close
        self.prev_vix = prev_vix
        self.rng = rng
        self.n_seconds = len(path.spot)
        self.spot_high = np.maximum.accumulate(path.spot)
        self.spot_low = np.minimum.accumulate(path.spot)
        self.vix_high = np.maximum.accumulate(path.vix_published)
        self.vix_low = np.minimum.accumulate(path.vix_published)

        active = clock.next_expiries(open_dt, weeklies=config.weeklies, monthlies=config.monthlies)
        self.expiries: tuple[date, ...] = active.all
        monthly = set(active.monthly)
        self.lot_sizes = [clock.lot_size(e) for e in self.expiries]
        self.cutoff_epoch = np.array([clock.expiry_cutoff(e).timestamp() for e in self.expiries])
        # Liquidity per expiry: the nearest weekly trades most, the far monthlies least.
        liquidity = []
        for i, expiry in enumerate(self.expiries):
            base = 1.0 / (1.0 + 0.9 * i)
            if expiry in monthly and expiry != active.monthly[0]:
                base = min(base, 0.25 if expiry == active.monthly[1] else 0.12)
            liquidity.append(base)
        self.liquidity = np.array(liquidity)
        far = {active.monthly[k] for k in range(2, len(active.monthly))}
        self.far_monthly = np.array([e in far for e in self.expiries])
        self.future_expiry = active.monthly[0]

        open_spot = float(path.spot[0])
        step = float(clock.STRIKE_STEP)
        n_rows = 2 * config.strikes_each_side + 1
        low = max(step, math.floor(open_spot * _GRID_LOW / step) * step)
        high = math.ceil(open_spot * _GRID_HIGH / step) * step
        count = max(round((high - low) / step) + 1, n_rows)
        self.grid = low + step * np.arange(count, dtype=np.float64)
        self.n_rows = n_rows
        self.each_side = config.strikes_each_side
        self.row_offsets = np.arange(n_rows, dtype=np.int64)
        self.expiry_index = np.arange(len(self.expiries), dtype=np.int64)[:, None]
        self.round_strike = (self.grid % 500 == 0) | (self.grid % 100 == 0)

        t_open = self.times(open_dt.timestamp())
        pin = script.pin_strike
        oi = open_interest_lots(self.grid, open_spot, t_open, self.liquidity, rng, pin_strike=pin)
        fair, _, _, _ = self.fair_values(
            open_spot, float(path.vix[0]), t_open, config.rate, self.grid[None, :], surface_model
        )
        self.book = OptionBook(fair, oi)
        self._keys: dict[tuple[int, int], tuple[tuple[str, ...], tuple[str, ...]]] = {}

        self.future_lot = clock.lot_size(self.future_expiry)
        self.future_prev_close = prev_future_close
        self.future_open: float | None = None
        self.future_high = -math.inf
        self.future_low = math.inf
        self.future_volume = 0
        self.future_oi = int(rng.integers(150_000, 220_000)) * self.future_lot

    def times(self, epoch: float) -> Float64Array:
        t: Float64Array = np.maximum((self.cutoff_epoch - epoch) / _SECONDS_PER_YEAR, 0.0)
        return t

    @staticmethod
    def fair_values(
        spot: float,
        vix: float,
        t: Float64Array,
        rate: float,
        strike: Float64Array,
        model: SurfaceModel = SurfaceModel(),  # noqa: B008
    ) -> tuple[Float64Array, Float64Array, Float64Array, SmileParams]:
        """Model prices (side, expiry, strike), forwards, discount factors and smile parameters per
        expiry; `strike` broadcasts against (expiry, 1)."""
        forward = spot * np.exp(rate * t)
        discount = np.exp(-rate * t)
        params = smile_params(vix / 100.0, t, forward, model)
        f, d, tt = forward[:, None], discount[:, None], t[:, None]
        vol = sabr.vol(f, strike, tt, params.alpha[:, None], BETA, params.rho[:, None], params.nu[:, None])
        strike_b = np.broadcast_to(strike, vol.shape)
        call_otm = strike_b >= f
        otm = black76.price(f, strike_b, tt, vol, call_otm, d)
        parity = d * (f - strike_b)  # C - P
        call = np.where(call_otm, otm, otm + parity)
        put = np.where(call_otm, otm - parity, otm)
        # Parity can leave -1e-13 on a deep in-the-money side whose OTM twin is worth nothing.
        fair: Float64Array = np.maximum(np.stack([call, put]), 0.0)
        return fair, forward, discount, params

    def keys(self, e: int, start: int, expiry: date) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cached = self._keys.get((e, start))
        if cached is None:
            strikes = self.grid[start : start + self.n_rows]
            cached = (
                tuple(option_instrument_key(expiry, k, True) for k in strikes),
                tuple(option_instrument_key(expiry, k, False) for k in strikes),
            )
            self._keys[(e, start)] = cached
        return cached


class SimulatedMarket:
    """A deterministic simulated NIFTY market; `advance()` gives the next snapshot."""

    def __init__(
        self,
        config: SimConfig,
        history: Sequence[DailyBar] | None = None,
        *,
        spot_model: SpotModel = SpotModel(),  # noqa: B008 - frozen dataclasses, constants
        vix_model: VixModel = VixModel(),  # noqa: B008
        surface_model: SurfaceModel = SurfaceModel(),  # noqa: B008
    ) -> None:
        scenarios.validate(config.scenario)
        if config.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {config.interval_s}")
        self.config = config
        self._spot_model = spot_model
        self._vix_model = vix_model
        self._surface_model = surface_model
        open_dt, close_dt = session_open_on_or_after(config.start)
        if history is None:
            history = daily_bars(clock.previous_trading_day(open_dt.date()), config.seed)
        last_spot = [bar for bar in history if bar.symbol == NIFTY][-1]
        last_vix = [bar for bar in history if bar.symbol == INDIA_VIX][-1]
        self._prev_close = last_spot.close
        self._prev_vix = last_vix.close
        self._log_h = 0.0
        self._prev_future_close: float | None = None
        self._future_close = 0.0
        self._first_session = True
        self._session: _Session | None = None
        self._pending_open: tuple[datetime, datetime] = (open_dt, close_dt)
        start = clock.to_ist(config.start)
        self._next_k = max(0, math.ceil((start - open_dt).total_seconds() / config.interval_s - 1e-9))
        self._truth: dict[date, ExpiryTruth] = {}
        self.sessions_opened: list[date] = []

    # ---- inspection (tests, analytics comparisons) ------------------------------------------------
    def truth(self, expiry: date) -> ExpiryTruth:
        """SABR parameters, ATM vol, forward and time the latest snapshot of `expiry` was priced with."""
        if expiry not in self._truth:
            raise KeyError(f"no snapshot of expiry {expiry} yet (have {sorted(self._truth)})")
        return self._truth[expiry]

    @property
    def session_path(self) -> SessionPath:
        """The current session's second-by-second spot and VIX."""
        return self._current().path

    @property
    def session_script(self) -> SessionScript:
        return self._current().script

    @property
    def session_open(self) -> datetime:
        return self._current().open_dt

    @property
    def expiries(self) -> tuple[date, ...]:
        return self._current().expiries

    def _current(self) -> _Session:
        if self._session is None:
            self._session = self._open_session(*self._pending_open)
        return self._session

    # ---- sessions ---------------------------------------------------------------------------------
    def _open_session(self, open_dt: datetime, close_dt: datetime) -> _Session:
        config = self.config
        day = open_dt.date()
        seeds = np.random.SeedSequence([config.seed & 0xFFFFFFFFFFFFFFFF, day.toordinal()])
        path_rng, quote_rng = (np.random.Generator(np.random.PCG64(s)) for s in seeds.spawn(2))
        n = session_seconds(open_dt, close_dt)
        scenario = config.scenario if self._first_session else ""
        script = scenarios.session_script(scenario, n, self._prev_close, self._prev_vix, path_rng)
        gap, dv, log_h = overnight_move(
            path_rng,
            vix=self._prev_vix,
            log_h=self._log_h,
            spot_model=self._spot_model,
            vix_model=self._vix_model,
        )
        if script.gap_log is not None:
            gap = script.gap_log
        open_spot = self._prev_close * math.exp(gap)
        open_vix = self._prev_vix * math.exp(dv + script.vix_gap_log)
        profile = intraday_variance_profile(n)
        path = simulate_session(
            n_seconds=n,
            open_spot=open_spot,
            prev_close=self._prev_close,
            open_vix=open_vix,
            log_h=log_h,
            profile=profile,
            script=script,
            rng=path_rng,
            spot_model=self._spot_model,
            vix_model=self._vix_model,
        )
        active = clock.next_expiries(open_dt, weeklies=config.weeklies, monthlies=config.monthlies)
        if self._prev_future_close is None:
            t_future = (clock.expiry_cutoff(active.monthly[0]) - open_dt).total_seconds() / _SECONDS_PER_YEAR
            self._prev_future_close = self._prev_close * math.exp(
                config.rate * (t_future + 1.0 / DAYS_PER_YEAR)
            )
        session = _Session(
            open_dt=open_dt,
            close_dt=close_dt,
            path=path,
            script=script,
            config=config,
            prev_close=self._prev_close,
            prev_vix=self._prev_vix,
            prev_future_close=self._prev_future_close,
            profile=profile,
            rng=quote_rng,
            surface_model=self._surface_model,
        )
        self._first_session = False
        self._log_h = path.final_log_h
        self.sessions_opened.append(day)
        return session

    def _close_session(self, session: _Session) -> None:
        self._prev_close = float(session.path.spot[-1])
        self._prev_vix = float(session.path.vix[-1])
        if session.future_open is not None:
            self._prev_future_close = self._future_close
        self._session = None
        self._pending_open = clock.session_bounds(clock.next_trading_day(session.open_dt.date()))
        self._next_k = 0

    # ---- snapshots --------------------------------------------------------------------------------
    def advance(self) -> MarketFrame:
        """The market at the next snapshot time."""
        while True:
            session = self._current()
            offset = self._next_k * self.config.interval_s
            if offset < session.n_seconds:
                break
            self._close_session(session)
        self._next_k += 1
        ts = session.open_dt + timedelta(seconds=offset)
        return self._frame(session, ts, int(offset))

    def _frame(self, session: _Session, ts: datetime, second: int) -> MarketFrame:
        config = self.config
        path = session.path
        spot = float(path.spot[second])
        vix_true = float(path.vix[second])
        t = session.times(ts.timestamp())
        forward = spot * np.exp(config.rate * t)
        step = float(clock.STRIKE_STEP)
        atm_index = np.rint((forward - session.grid[0]) / step).astype(np.int64)
        start = np.clip(atm_index - session.each_side, 0, len(session.grid) - session.n_rows)
        g_idx = start[:, None] + session.row_offsets[None, :]
        strike = session.grid[g_idx]
        fair, forward, discount, params = session.fair_values(
            spot, vix_true, t, config.rate, strike, self._surface_model
        )
        atm_vol = params.atm_vol
        for i, expiry in enumerate(session.expiries):
            self._truth[expiry] = ExpiryTruth(
                expiry=expiry,
                t=float(t[i]),
                forward=float(forward[i]),
                discount=float(discount[i]),
                atm_vol=float(atm_vol[i]),
                alpha=float(params.alpha[i]),
                beta=BETA,
                rho=float(params.rho[i]),
                nu=float(params.nu[i]),
            )

        sqrt_t = np.sqrt(np.maximum(t, 1e-9))[:, None]
        moneyness = np.abs(np.log(strike / forward[:, None])) / (atm_vol[:, None] * sqrt_t)
        itm = np.stack([strike < forward[:, None], strike > forward[:, None]])
        round_row = session.round_strike[g_idx]
        missing_row = session.far_monthly[:, None] & ~round_row & (moneyness > 1.2)
        missing = np.broadcast_to(missing_row[None, :, :], fair.shape)
        quotes = session.book.quote(
            rows=(session.expiry_index, g_idx),
            fair=fair,
            moneyness=moneyness,
            itm=itm,
            liquidity=session.liquidity,
            missing=missing,
            activity=float(session.profile[second]),
            second=second,
            rng=session.rng,
        )

        n_exp = len(session.expiries)
        floats = np.empty((n_exp, 7, session.n_rows))
        floats[:, 0] = strike
        floats[:, 1], floats[:, 2], floats[:, 3] = quotes.bid[0], quotes.ask[0], quotes.ltp[0]
        floats[:, 4], floats[:, 5], floats[:, 6] = quotes.bid[1], quotes.ask[1], quotes.ltp[1]
        lots = np.asarray(session.lot_sizes, dtype=np.int64)[:, None]
        ints = np.empty((n_exp, 10, session.n_rows), dtype=np.int64)
        for side in (0, 1):
            base = 4 * side
            ints[:, base + 0] = quotes.bid_lots[side] * lots
            ints[:, base + 1] = quotes.ask_lots[side] * lots
            ints[:, base + 2] = quotes.volume_lots[side] * lots
            ints[:, base + 3] = quotes.oi_lots[side] * lots
        ints[:, 8], ints[:, 9] = quotes.flags[0], quotes.flags[1]
        chains = []
        for i, expiry in enumerate(session.expiries):
            call_keys, put_keys = session.keys(i, int(start[i]), expiry)
            chains.append(
                ChainFrame(
                    expiry=expiry,
                    forward=round(float(forward[i]), 2),
                    lot_size=session.lot_sizes[i],
                    columns=ChainColumns(floats[i], ints[i], (call_keys, put_keys)),
                )
            )

        return MarketFrame(
            ts_event=ts,
            spot=round(spot, 2),
            spot_day=DayRange(
                open=round(float(path.spot[0]), 2),
                high=round(float(session.spot_high[second]), 2),
                low=round(float(session.spot_low[second]), 2),
                prev_close=round(session.prev_close, 2),
            ),
            vix=round(float(path.vix_published[second]), 4),
            vix_day=DayRange(
                open=round(float(path.vix_published[0]), 4),
                high=round(float(session.vix_high[second]), 4),
                low=round(float(session.vix_low[second]), 4),
                prev_close=round(session.prev_vix, 4),
            ),
            future=self._future(session, spot, ts, second),
            chains=tuple(chains),
        )

    def _future(self, session: _Session, spot: float, ts: datetime, second: int) -> FutureQuote:
        t = (clock.expiry_cutoff(session.future_expiry) - ts).total_seconds() / _SECONDS_PER_YEAR
        rng = session.rng
        draws = rng.random(4)
        # Futures trade within a point or two of fair carry; the basis wobbles with order flow.
        fair = spot * math.exp(self.config.rate * max(t, 0.0)) + 1.5 * (draws[0] - 0.5)
        ltp_ticks = int(to_ticks(np.asarray(fair)))
        spread = 1 + int(draws[1] * 4)
        ltp = float(from_ticks(np.asarray(ltp_ticks)))
        if session.future_open is None:
            session.future_open = ltp
        session.future_high = max(session.future_high, ltp)
        session.future_low = min(session.future_low, ltp)
        activity = float(session.profile[second])
        traded_lots = int(-math.log1p(-draws[2]) * 60.0 * activity) + 1
        session.future_volume += traded_lots * session.future_lot
        session.future_oi += (traded_lots // 5) * session.future_lot * (1 if draws[3] < 0.55 else -1)
        session.future_oi = max(session.future_oi, session.future_lot)
        self._future_close = ltp
        lot = session.future_lot
        return FutureQuote(
            expiry=session.future_expiry,
            lot_size=lot,
            ltp=ltp,
            bid=round(ltp - spread * TICK, 2),
            ask=round(ltp + spread * TICK, 2),
            bid_qty=lot * (1 + int(draws[1] * 40)),
            ask_qty=lot * (1 + int(draws[2] * 40)),
            volume=session.future_volume,
            oi=session.future_oi,
            day=DayRange(
                open=session.future_open,
                high=session.future_high,
                low=session.future_low,
                prev_close=round(session.future_prev_close, 2),
            ),
        )
