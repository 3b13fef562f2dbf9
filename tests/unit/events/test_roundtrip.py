"""Property tests over the whole catalogue: every event type survives the bus's JSON round trip, and a
NaN or infinity anywhere in any event (scalar, list element, nested model, dict value) is rejected."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from volguard_common.events import (
    ALL_IV_FLAGS,
    ALL_QUOTE_FLAGS,
    CROSSED,
    EVENT_ADAPTER,
    EVENT_TYPES,
    IST,
    MAX_LEGS,
    Alert,
    BasketLeg,
    BasketResult,
    BasketStatus,
    BrokerHealth,
    Bucket,
    BucketState,
    CancelOrders,
    ChainSnapshot,
    Command,
    CommandKind,
    EventBase,
    EventRisk,
    EventSeverity,
    ExecuteBasket,
    ExitReason,
    ExpectedMove,
    ExpiryVol,
    FeedState,
    FeedStatus,
    Fill,
    FlattenAll,
    ForwardSource,
    GarchForecast,
    Greeks,
    InstrumentKind,
    IntentKind,
    IntentPricing,
    LegResult,
    MarketMode,
    OpenTrade,
    OptionType,
    OrderLeg,
    OrderStatus,
    OrderUpdate,
    PortfolioSnapshot,
    Position,
    PremiumSignal,
    Quality,
    RateLimitHeadroom,
    RealisedVol,
    Recommendation,
    Regime,
    RegimeView,
    RiskCheck,
    RiskDecision,
    SabrFit,
    Severity,
    Side,
    SkewSignal,
    SkewView,
    StrategyRecommendations,
    StrikeSurface,
    Structure,
    TermPoint,
    TermSignal,
    TermStructure,
    Tick,
    TradeIntent,
    TradingState,
    TradingStateKind,
    Urgency,
    VolPercentiles,
    VolPremium,
    VolSnapshot,
    client_order_id,
    parse_event,
)

# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------

timezones = st.sampled_from([IST, UTC, timezone(timedelta(hours=-4)), timezone(timedelta(hours=9))])
aware_datetimes = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=timezones
)
dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
event_ids = st.builds(
    lambda ms, rand_a, rand_b: f"{ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b:032x}",
    st.integers(0, 2**48 - 1),
    st.integers(0, 2**12 - 1),
    st.integers(0, 2**62 - 1),
).map(lambda h: f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
names = st.text(min_size=1, max_size=16)
texts = st.text(max_size=24)
idents = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_|", min_size=1, max_size=24)
instrument_keys = st.integers(1, 999_999).map(lambda n: f"NSE_FO|{n}")

any_float = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
pos_float = st.floats(min_value=0.0, exclude_min=True, max_value=1e7, allow_nan=False)
nonneg_float = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0)
pct = st.floats(min_value=0.0, max_value=100.0)
vols = st.floats(min_value=1e-4, max_value=5.0)
qty = st.integers(0, 10_000_000)
pos_qty = st.integers(1, 10_000_000)
money = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False)
nonneg_money = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False)
pos_money = st.decimals(
    min_value=Decimal("0.05"), max_value=10**7, places=2, allow_nan=False, allow_infinity=False
)
lot_sizes = st.sampled_from([1, 25, 50, 65, 75])
greeks = st.builds(Greeks, delta=any_float, gamma=any_float, vega=any_float, theta=any_float)
client_ids = st.builds(client_order_id, idents, st.integers(0, MAX_LEGS - 1), st.integers(0, 99))


@st.composite
def envelope(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": draw(event_ids),
        "ts_event": draw(aware_datetimes),
        "ts_init": draw(aware_datetimes),
        "source": draw(st.sampled_from(["market_data/host-1", "analytics/a-2", "risk/0", "execution/0"])),
    }
    if draw(st.booleans()):
        fields["correlation_id"] = draw(st.one_of(event_ids, idents))
    return fields


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def columns(n: int, **element: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, list[Any]]]:
    """Equal-length columns: each named column is a list of exactly n draws of its element strategy."""
    return st.fixed_dictionaries({name: st.lists(s, min_size=n, max_size=n) for name, s in element.items()})


def increasing_floats(n: int) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(min_value=1.0, max_value=1e5), min_size=n, max_size=n, unique=True).map(sorted)


# ----------------------------------------------------------------------------------------------------
# Market data
# ----------------------------------------------------------------------------------------------------


@st.composite
def ticks(draw: st.DrawFn) -> Tick:
    bid, ask = draw(optional(pos_float)), draw(optional(pos_float))
    if bid is not None and ask is not None and bid > ask:
        bid, ask = ask, bid
    low, high = draw(optional(pos_float)), draw(optional(pos_float))
    if low is not None and high is not None and low > high:
        low, high = high, low
    return Tick(
        **draw(envelope()),
        instrument_key=draw(instrument_keys),
        symbol=draw(names),
        kind=draw(st.sampled_from(InstrumentKind)),
        ltp=draw(pos_float),
        bid=bid,
        ask=ask,
        bid_qty=draw(optional(qty)),
        ask_qty=draw(optional(qty)),
        volume=draw(optional(qty)),
        oi=draw(optional(qty)),
        day_open=draw(optional(pos_float)),
        day_high=high,
        day_low=low,
        prev_close=draw(optional(pos_float)),
    )


@st.composite
def chain_side(draw: st.DrawFn, n: int, side: str) -> dict[str, Any]:
    """One side's columns; a drawn crossed quote (bid > ask) always carries CROSSED, as producers must."""
    bids, asks, flags = [], [], []
    for _ in range(n):
        bid, ask = draw(optional(pos_float)), draw(optional(pos_float))
        flag = draw(st.integers(0, ALL_QUOTE_FLAGS))
        if bid is not None and ask is not None and bid > ask:
            flag |= CROSSED
        bids.append(bid)
        asks.append(ask)
        flags.append(flag)
    rest = draw(
        columns(
            n,
            ltp=optional(pos_float),
            bid_qty=qty,
            ask_qty=qty,
            volume=qty,
            oi=qty,
            instrument_key=instrument_keys,
        )
    )
    out: dict[str, Any] = {f"{side}_bid": bids, f"{side}_ask": asks, f"{side}_flags": flags}
    out.update({f"{side}_{name}": values for name, values in rest.items()})
    return out


@st.composite
def chain_snapshots(draw: st.DrawFn) -> ChainSnapshot:
    n = draw(st.integers(1, 12))
    return ChainSnapshot(
        **draw(envelope()),
        underlying="NIFTY",
        expiry=draw(dates),
        spot=draw(pos_float),
        forward=draw(optional(pos_float)),
        vix=draw(optional(nonneg_float)),
        lot_size=draw(lot_sizes),
        tick_size=draw(st.sampled_from([0.05, 0.1, 1.0])),
        stale=draw(st.booleans()),
        dropped_rows=draw(st.integers(0, 50)),
        expiries_in_set=draw(optional(st.integers(1, 64))),
        columns={
            "strike": draw(increasing_floats(n)),
            **draw(chain_side(n, "call")),
            **draw(chain_side(n, "put")),
        },
    )


feed_statuses = st.builds(
    lambda env, **kw: FeedStatus(**env, **kw),
    envelope(),
    feed=names,
    mode=st.sampled_from(MarketMode),
    state=st.sampled_from(FeedState),
    last_tick_at=optional(aware_datetimes),
    lag_ms=optional(nonneg_float),
    subscribed_instruments=qty,
    message=texts,
)

# ----------------------------------------------------------------------------------------------------
# Volatility
# ----------------------------------------------------------------------------------------------------


@st.composite
def strike_surfaces(draw: st.DrawFn) -> StrikeSurface:
    n = draw(st.integers(0, 8))
    greek = optional(any_float)
    return StrikeSurface(
        strike=draw(increasing_floats(n)),
        **draw(
            columns(
                n,
                iv_call=optional(vols),
                iv_put=optional(vols),
                call_flags=st.integers(0, ALL_IV_FLAGS),
                put_flags=st.integers(0, ALL_IV_FLAGS),
                call_delta=greek,
                call_gamma=greek,
                call_vega=greek,
                call_theta=greek,
                put_delta=greek,
                put_gamma=greek,
                put_vega=greek,
                put_theta=greek,
            )
        ),
    )


sabr_fits = st.builds(
    SabrFit,
    alpha=pos_float,
    beta=unit,
    rho=st.floats(min_value=-0.999, max_value=0.999),
    nu=nonneg_float,
    rmse=nonneg_float,
    converged=st.booleans(),
    n_points=st.integers(0, 200),
)
expected_moves = st.builds(
    lambda points, pct_, a, b: ExpectedMove(
        points=points, pct=pct_, lower_breakeven=min(a, b), upper_breakeven=max(a, b)
    ),
    nonneg_float,
    nonneg_float,
    pos_float,
    pos_float,
)
expiry_vols = st.builds(
    ExpiryVol,
    expiry=dates,
    days_to_expiry=st.integers(0, 400),
    trading_minutes_to_expiry=nonneg_float,
    forward=pos_float,
    forward_source=st.sampled_from(ForwardSource),
    forward_quality=st.sampled_from(Quality),
    atm_strike=pos_float,
    atm_iv=optional(vols),
    surface=strike_surfaces(),
    sabr=optional(sabr_fits),
    rr25=optional(any_float),
    bf25=optional(any_float),
    straddle_price=optional(pos_float),
    expected_move=optional(expected_moves),
    pcr_oi=optional(nonneg_float),
    pcr_volume=optional(nonneg_float),
    max_pain=optional(pos_float),
    call_oi_wall=optional(pos_float),
    put_oi_wall=optional(pos_float),
)
term_structures = st.builds(
    TermStructure,
    points=st.lists(
        st.builds(TermPoint, expiry=dates, days_to_expiry=st.integers(0, 400), atm_iv=optional(vols)),
        max_size=4,
    ),
    slope=optional(any_float),
    curvature=optional(any_float),
    signal=optional(st.sampled_from(TermSignal)),
    regime_implication=texts,
)


@st.composite
def vol_snapshots(draw: st.DrawFn) -> VolSnapshot:
    expiries = draw(st.lists(expiry_vols, min_size=1, max_size=3, unique_by=lambda e: e.expiry))
    return VolSnapshot(
        **draw(envelope()),
        underlying="NIFTY",
        spot=draw(pos_float),
        vix=draw(optional(nonneg_float)),
        chain_event_ids=draw(st.lists(event_ids, max_size=3)),
        expiries=sorted(expiries, key=lambda e: e.expiry),
        term=draw(term_structures),
        skew=draw(
            st.builds(
                SkewView,
                signal=st.sampled_from(SkewSignal),
                rr25=optional(any_float),
                recommendation=texts,
            )
        ),
        realised=draw(
            st.builds(
                RealisedVol,
                cc7=optional(vols),
                cc21=optional(vols),
                parkinson=optional(vols),
                yang_zhang=optional(vols),
            )
        ),
        garch=draw(
            optional(
                st.builds(
                    GarchForecast,
                    model=st.sampled_from(["GARCH(1,1)", "GJR-GARCH(1,1)"]),
                    vol=vols,
                    horizon_days=st.integers(1, 30),
                    persistence=unit,
                )
            )
        ),
        percentiles=draw(
            st.builds(
                VolPercentiles,
                lookback_days=st.integers(1, 1000),
                vix_percentile=optional(pct),
                vix_rank=optional(pct),
                atm_iv_percentile=optional(pct),
                atm_iv_rank=optional(pct),
            )
        ),
        premium=draw(
            st.builds(
                VolPremium,
                iv_rv_spread=optional(any_float),
                iv_garch_spread=optional(any_float),
                signal=st.sampled_from(PremiumSignal),
                confidence=unit,
            )
        ),
        regime=draw(
            st.builds(RegimeView, regime=st.sampled_from(Regime), confidence=unit, vix_spike=st.booleans())
        ),
        event_risk=draw(
            st.builds(
                EventRisk,
                score=st.integers(0, 5),
                severity=optional(st.sampled_from(EventSeverity)),
                size_multiplier=unit,
                events=st.lists(names, max_size=3),
            )
        ),
        is_expiry_day=draw(st.booleans()),
        is_last_hour=draw(st.booleans()),
        quality=draw(st.sampled_from(Quality)),
        quality_reasons=draw(st.lists(texts, min_size=1, max_size=3)),
    )


# ----------------------------------------------------------------------------------------------------
# Intents, decisions, execution
# ----------------------------------------------------------------------------------------------------


def leg_fields(lot_size: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "instrument_key": instrument_keys,
            "expiry": dates,
            "strike": pos_float,
            "option_type": st.sampled_from(OptionType),
            "side": st.sampled_from(Side),
            "quantity": st.integers(1, 100).map(lambda lots: lots * lot_size),
            "limit_price": pos_money,
        }
    )


@st.composite
def exit_fields(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(IntentKind))
    if kind is IntentKind.EXIT:
        return {"exit_reason": draw(st.sampled_from(ExitReason)), "trade_id": draw(idents), "kind": kind}
    if kind is IntentKind.ADJUST:
        return {"trade_id": draw(idents), "kind": kind}
    return {"kind": kind}


TRADED_STRUCTURES = [s for s in Structure if s is not Structure.WAIT]

intent_pricings = st.builds(
    IntentPricing,
    max_profit=optional(nonneg_money),
    breakevens=st.lists(pos_float, max_size=4),
    probability_of_profit=unit,
    probability_of_touch=optional(unit),
    expected_value=money,
    costs=nonneg_money,
    margin_required=nonneg_money,
    max_loss_basis=names,
)


@st.composite
def trade_intents(draw: st.DrawFn) -> TradeIntent:
    env = draw(envelope())
    lot_size = draw(lot_sizes)
    legs = draw(st.lists(leg_fields(lot_size).map(lambda f: OrderLeg(**f)), min_size=1, max_size=MAX_LEGS))
    return TradeIntent(
        **env,
        **draw(exit_fields()),
        intent_id=draw(idents),
        bucket=draw(st.sampled_from(Bucket)),
        structure=draw(st.sampled_from(TRADED_STRUCTURES)),
        lot_size=lot_size,
        legs=legs,
        expected_credit=draw(money),
        max_loss=draw(optional(nonneg_money)),
        greeks=draw(optional(greeks)),
        valid_until=env["ts_event"] + draw(st.timedeltas(timedelta(0), timedelta(hours=1))),
        reason=draw(texts),
        pricing=draw(optional(intent_pricings)),
        reasons=draw(st.lists(texts, max_size=3)),
    )


@st.composite
def strategy_recommendations(draw: st.DrawFn) -> StrategyRecommendations:
    env = draw(envelope())
    count = draw(st.integers(0, 5))
    recommendations = []
    for rank in range(1, count + 1):
        lot_size = draw(lot_sizes)
        legs = draw(st.lists(leg_fields(lot_size).map(lambda f: OrderLeg(**f)), min_size=1, max_size=4))
        recommendations.append(
            Recommendation(
                rank=rank,
                bucket=draw(st.sampled_from(Bucket)),
                structure=draw(st.sampled_from(TRADED_STRUCTURES)),
                legs=legs,
                suitability=draw(unit),
                capital_required=draw(nonneg_money),
                expected_return=draw(money),
                max_loss=draw(nonneg_money),
                reason=draw(texts),
            )
        )
    return StrategyRecommendations(
        **env,
        vol_event_id=draw(event_ids),
        recommendations=recommendations,
        waits=draw(st.lists(texts, max_size=3)),
    )


risk_checks = st.builds(
    RiskCheck,
    name=names,
    passed=st.booleans(),
    value=optional(any_float),
    limit=optional(any_float),
    message=texts,
)


@st.composite
def risk_decisions(draw: st.DrawFn) -> RiskDecision:
    approved = draw(st.booleans())
    requested = draw(st.integers(1, 100))
    return RiskDecision(
        **draw(envelope()),
        intent_id=draw(idents),
        approved=approved,
        reasons=draw(st.lists(texts, min_size=0 if approved else 1, max_size=3)),
        checks=draw(st.lists(risk_checks, max_size=4)),
        requested_lots=requested,
        approved_lots=draw(st.integers(1, requested)) if approved else 0,
        adjusted_quantities=draw(optional(st.lists(pos_qty, min_size=1, max_size=4))) if approved else None,
        basket_id=draw(idents) if approved else None,
    )


@st.composite
def execute_baskets(draw: st.DrawFn) -> ExecuteBasket:
    basket_id = draw(idents)
    lot_size = draw(lot_sizes)
    fields = draw(st.lists(leg_fields(lot_size), min_size=1, max_size=MAX_LEGS))
    order = draw(st.permutations(range(len(fields))))
    legs = []
    for leg_index, leg in zip(order, fields, strict=True):
        # Hedges first: BUY sequences 0-3, SELL sequences 4-7.
        sequence = draw(st.integers(0, 3) if leg["side"] is Side.BUY else st.integers(4, 7))
        legs.append(
            BasketLeg(
                **leg,
                leg_index=leg_index,
                sequence=sequence,
                client_order_id=client_order_id(basket_id, leg_index, 0),
            )
        )
    exit_ = draw(exit_fields())
    return ExecuteBasket(
        **draw(envelope()),
        basket_id=basket_id,
        intent_id=draw(optional(idents)),
        purpose=exit_.pop("kind"),
        **exit_,
        bucket=draw(st.sampled_from(Bucket)),
        structure=draw(st.sampled_from(Structure)),
        lot_size=lot_size,
        legs=legs,
        urgency=draw(st.sampled_from(Urgency)),
        reason=draw(texts),
    )


@st.composite
def cancel_orders(draw: st.DrawFn) -> CancelOrders:
    basket_id = draw(optional(idents))
    ids = draw(st.lists(client_ids, min_size=0 if basket_id else 1, max_size=4))
    return CancelOrders(**draw(envelope()), basket_id=basket_id, client_order_ids=ids, reason=draw(texts))


flatten_alls = st.builds(
    lambda env, **kw: FlattenAll(**env, **kw),
    envelope(),
    reason=st.sampled_from(ExitReason),
    bucket=optional(st.sampled_from(Bucket)),
    message=texts,
)


@st.composite
def order_updates(draw: st.DrawFn) -> OrderUpdate:
    status = draw(st.sampled_from(OrderStatus))
    quantity = draw(st.integers(2, 10_000))
    if status is OrderStatus.FILLED:
        filled = quantity
    elif status is OrderStatus.PARTIALLY_FILLED:
        filled = draw(st.integers(1, quantity - 1))
    else:
        filled = draw(st.integers(0, quantity))
    return OrderUpdate(
        **draw(envelope()),
        client_order_id=draw(client_ids),
        broker_order_id=draw(optional(idents)),
        basket_id=draw(idents),
        leg_index=draw(st.integers(0, MAX_LEGS - 1)),
        attempt=draw(st.integers(0, 99)),
        slice_index=draw(st.integers(0, 999)),
        instrument_key=draw(instrument_keys),
        side=draw(st.sampled_from(Side)),
        quantity=quantity,
        limit_price=draw(pos_money),
        status=status,
        filled_qty=filled,
        avg_price=draw(pos_money) if filled else None,
        message=draw(texts),
    )


fills = st.builds(
    lambda env, **kw: Fill(**env, **kw),
    envelope(),
    fill_id=idents,
    client_order_id=client_ids,
    broker_order_id=idents,
    basket_id=idents,
    leg_index=st.integers(0, MAX_LEGS - 1),
    instrument_key=instrument_keys,
    expiry=dates,
    strike=pos_float,
    option_type=st.sampled_from(OptionType),
    side=st.sampled_from(Side),
    quantity=pos_qty,
    price=pos_money,
    fees=nonneg_money,
)


@st.composite
def leg_results(draw: st.DrawFn, leg_index: int) -> LegResult:
    filled = draw(st.integers(0, 10_000))
    mid = draw(optional(pos_money))
    return LegResult(
        leg_index=leg_index,
        client_order_id=draw(client_ids),
        attempts=draw(st.integers(1, 100)),
        status=draw(st.sampled_from(OrderStatus)),
        filled_qty=filled,
        avg_price=draw(pos_money) if filled else None,
        mid_at_submission=mid,
        slippage=draw(optional(money)) if filled and mid is not None else None,
        time_to_fill_s=draw(optional(st.floats(0, 3600))) if filled else None,
    )


@st.composite
def basket_results(draw: st.DrawFn) -> BasketResult:
    n = draw(st.integers(0, MAX_LEGS))
    return BasketResult(
        **draw(envelope()),
        basket_id=draw(idents),
        intent_id=draw(optional(idents)),
        status=draw(st.sampled_from(BasketStatus)),
        legs=[draw(leg_results(i)) for i in range(n)],
        net_premium=draw(money),
        fees=draw(nonneg_money),
        message=draw(texts),
    )


# ----------------------------------------------------------------------------------------------------
# Portfolio, state, control
# ----------------------------------------------------------------------------------------------------

positions = st.builds(
    Position,
    instrument_key=instrument_keys,
    expiry=dates,
    strike=pos_float,
    option_type=st.sampled_from(OptionType),
    quantity=st.integers(-100_000, 100_000),
    avg_price=nonneg_money,
    mark=optional(pos_money),
    unrealised_pnl=optional(money),
    realised_pnl=money,
)
open_trades = st.builds(
    OpenTrade,
    trade_id=idents,
    intent_id=optional(idents),
    bucket=st.sampled_from(Bucket),
    structure=st.sampled_from(Structure),
    opened_at=aware_datetimes,
    nearest_expiry=dates,
    legs=st.lists(positions, max_size=4),
    entry_credit=money,
    cost_to_close=optional(money),
    unrealised_pnl=optional(money),
    greeks=optional(greeks),
)
bucket_states = st.builds(
    BucketState,
    bucket=st.sampled_from(Bucket),
    capital_allocated=nonneg_money,
    capital_used=nonneg_money,
    realised_pnl=money,
    unrealised_pnl=optional(money),
    open_trades=st.integers(0, 50),
)
portfolio_snapshots = st.builds(
    lambda env, **kw: PortfolioSnapshot(**env, **kw),
    envelope(),
    account_capital=nonneg_money,
    positions=st.lists(positions, max_size=4, unique_by=lambda p: p.instrument_key),
    trades=st.lists(open_trades, max_size=3),
    buckets=st.lists(bucket_states, max_size=3, unique_by=lambda b: b.bucket),
    net_greeks=optional(greeks),
    realised_pnl=money,
    unrealised_pnl=optional(money),
    day_pnl=optional(money),
    margin_used=optional(nonneg_money),
    margin_available=optional(money),
    reconciled=st.booleans(),
)
trading_states = st.builds(
    lambda env, **kw: TradingState(**env, **kw),
    envelope(),
    state=st.sampled_from(TradingStateKind),
    previous=optional(st.sampled_from(TradingStateKind)),
    reason=texts,
    since=aware_datetimes,
)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    kind = draw(st.sampled_from(CommandKind))
    takes_bucket = kind in (CommandKind.SET_CAPITAL, CommandKind.FLATTEN)
    return Command(
        **draw(envelope()),
        command=kind,
        issued_by=draw(names),
        reason=draw(texts),
        capital=draw(pos_money) if kind is CommandKind.SET_CAPITAL else None,
        bucket=draw(optional(st.sampled_from(Bucket))) if takes_bucket else None,
    )


alerts = st.builds(
    lambda env, **kw: Alert(**env, **kw),
    envelope(),
    severity=st.sampled_from(Severity),
    code=st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
    message=texts,
    details=st.dictionaries(
        names,
        st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), any_float, texts),
        max_size=5,
    ),
)
broker_healths = st.builds(
    lambda env, **kw: BrokerHealth(**env, **kw),
    envelope(),
    broker=st.sampled_from(["upstox", "paper"]),
    connected=st.booleans(),
    latency_ms=optional(nonneg_float),
    rate_limit=st.builds(RateLimitHeadroom, per_second=qty, per_minute=qty, per_30_minutes=qty),
    token_expires_at=optional(aware_datetimes),
    open_orders=qty,
    in_flight_unknown=qty,
    reconciled=st.booleans(),
    message=texts,
)

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "Tick": ticks(),
    "ChainSnapshot": chain_snapshots(),
    "FeedStatus": feed_statuses,
    "VolSnapshot": vol_snapshots(),
    "TradeIntent": trade_intents(),
    "StrategyRecommendations": strategy_recommendations(),
    "RiskDecision": risk_decisions(),
    "ExecuteBasket": execute_baskets(),
    "CancelOrders": cancel_orders(),
    "FlattenAll": flatten_alls,
    "OrderUpdate": order_updates(),
    "Fill": fills,
    "BasketResult": basket_results(),
    "PortfolioSnapshot": portfolio_snapshots,
    "TradingState": trading_states,
    "Command": commands(),
    "Alert": alerts,
    "BrokerHealth": broker_healths,
}

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_event_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(EVENT_TYPES)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@PROPERTY
@given(data=st.data())
def test_json_round_trip(type_name: str, data: st.DataObject) -> None:
    event = data.draw(STRATEGIES[type_name])
    payload = event.model_dump_json()
    parsed = parse_event(payload)
    assert type(parsed) is EVENT_TYPES[type_name]
    assert parsed == event
    # Byte-identical re-serialisation: no field drifts (time zones, decimals, float repr) across hops.
    assert parsed.model_dump_json() == payload
    assert parse_event(payload.encode()) == event


# ----------------------------------------------------------------------------------------------------
# NaN / ±inf anywhere is rejected
# ----------------------------------------------------------------------------------------------------

Path = tuple[str | int, ...]


def _number_paths(value: Any, path: Path = ()) -> list[tuple[Path, type]]:
    """Paths of every float and Decimal inside a model_dump() tree."""
    if isinstance(value, bool):
        return []
    if isinstance(value, float | Decimal):
        return [(path, type(value))]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _number_paths(item, (*path, key))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _number_paths(item, (*path, i))]
    return []


def _replace(tree: Any, path: Path, new: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = new


def _non_finite(kind: type) -> st.SearchStrategy[Any]:
    if kind is Decimal:
        return st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN")])
    return st.sampled_from([math.nan, math.inf, -math.inf])


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@PROPERTY
@given(data=st.data())
def test_non_finite_number_anywhere_is_rejected(type_name: str, data: st.DataObject) -> None:
    event: EventBase = data.draw(STRATEGIES[type_name])
    tree = event.model_dump()
    paths = _number_paths(tree)
    if not paths:
        # Types with no number at all (TradingState) or a draw with every number None: nothing to poison,
        # but the unpoisoned tree must still validate, so the injection below is what fails.
        assert EVENT_ADAPTER.validate_python(tree) == event
        return
    path, kind = data.draw(st.sampled_from(paths))
    _replace(tree, path, data.draw(_non_finite(kind)))
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python(tree)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["spot", "strike", "call_ltp", "put_ask"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_non_finite_json_literal_in_chain_is_rejected(literal: str, field: str, data: st.DataObject) -> None:
    """The bus parses JSON text: NaN/Infinity tokens (which json.dumps writes) fail at parse time."""
    snapshot: ChainSnapshot = data.draw(chain_snapshots())
    tree = json.loads(snapshot.model_dump_json())
    if field in tree:
        tree[field] = float(literal)
    else:
        # Columns in their list form (the packed form has no place for a JSON number).
        tree["columns"] = snapshot.columns.as_lists()
        column = tree["columns"][field]
        column[data.draw(st.integers(0, len(column) - 1))] = float(literal)
    poisoned = json.dumps(tree)
    assert literal in poisoned
    with pytest.raises(ValidationError):
        parse_event(poisoned)
