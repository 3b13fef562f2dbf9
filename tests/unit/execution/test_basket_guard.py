"""The basket guard against the paper exchange with an unreliable broker in between.

The exchange is the real domain simulator; between it and the guard sits the world's unreliability:
forced rejects, fill caps (partial fills that never complete), delays, accepted-then-silent orders,
submits whose answer is lost (UNKNOWN), submits refused before the broker took them (throttled: sent
again later under the same key), a report channel that delivers late, shuffled and duplicated,
and disconnects that drop reports until the broker's book is read back; and execution itself failing
over mid-basket (the guard rebuilt from the persisted orders, its reports in flight lost). The market
moves underneath.

Invariants, checked after every step against the exchange's own trades (the truth, not the guard's view):
- never a short option without its hedge: per expiry and option type, short units ≤ long units of the
  account (the position held before the basket plus everything traded);
- at most one live order per (client order id, slice), and no new attempt at a leg while one is live;
and once the basket has ended: nothing of it is live at the exchange, positions equal the sum of the fills,
and the status agrees with what remains (FILLED = the whole structure, UNWOUND/REJECTED/CANCELLED = the
position before the basket, STUCK = something hedged in between).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from volguard_common.clock import IST, nse_calendar
from volguard_common.events._base import Bucket, OptionType, Side
from volguard_common.events.orders import (
    BasketLeg,
    BasketStatus,
    ExecuteBasket,
    ExitReason,
    IntentKind,
    OrderStatus,
    Structure,
    Urgency,
    client_order_id,
)
from volguard_execution.domain.basket_guard import (
    Action,
    BasketGuard,
    Cancel,
    Contract,
    GuardConfig,
    Modify,
    Place,
    RaiseAlert,
    Resolve,
    Withdrawn,
)
from volguard_execution.domain.fill_schedule import FillScheduleConfig
from volguard_execution.domain.orders import LIVE_STATUSES, BrokerReport, Order, OrderKey, Trade
from volguard_execution.domain.paper_exchange import (
    Accepted,
    Cancelled,
    InstrumentRules,
    Modified,
    OrderType,
    PaperExchange,
    PaperOrder,
    PaperOrderState,
    Quote,
    Rejected,
    Report,
    Traded,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
EXPIRY = date(2026, 12, 15)
LOT = 65
TICK = Decimal("0.05")
# A low freeze quantity so that 3 lots go out as two slices.
FREEZE = 130


@dataclass(frozen=True)
class Contract_:
    key: str
    strike: float
    option_type: OptionType
    mid_ticks: int


CONTRACTS = {
    "CE_WING": Contract_("NSE_FO|CE26000", 26000.0, OptionType.CE, 400),
    "PE_WING": Contract_("NSE_FO|PE25000", 25000.0, OptionType.PE, 380),
    "CE_SHORT": Contract_("NSE_FO|CE25800", 25800.0, OptionType.CE, 1200),
    "PE_SHORT": Contract_("NSE_FO|PE25200", 25200.0, OptionType.PE, 1100),
}
OPTION_TYPE = {c.key: c.option_type for c in CONTRACTS.values()}

CONFIG = GuardConfig(
    partial_fill_timeout_s=10.0,
    fill=FillScheduleConfig(
        passive_s=1.0,
        max_reprices=3,
        wait_s={Urgency.PASSIVE: 2.0, Urgency.NORMAL: 1.0, Urgency.URGENT: 0.5},
    ),
    max_repairs=1,
    max_unwind_attempts=3,
    resolve_after_s=1.0,
)


def condor(basket_id: str, purpose: IntentKind, lots: int, urgency: Urgency) -> ExecuteBasket:
    """An iron condor entry (wings bought first) or its exit (shorts bought back first)."""
    qty = lots * LOT
    if purpose is IntentKind.ENTRY:
        plan = [
            ("CE_WING", Side.BUY, 0),
            ("PE_WING", Side.BUY, 0),
            ("CE_SHORT", Side.SELL, 1),
            ("PE_SHORT", Side.SELL, 1),
        ]
    else:
        plan = [
            ("CE_SHORT", Side.BUY, 0),
            ("PE_SHORT", Side.BUY, 0),
            ("CE_WING", Side.SELL, 1),
            ("PE_WING", Side.SELL, 1),
        ]
    legs = [
        BasketLeg(
            instrument_key=CONTRACTS[name].key,
            expiry=EXPIRY,
            strike=CONTRACTS[name].strike,
            option_type=CONTRACTS[name].option_type,
            side=side,
            quantity=qty,
            limit_price=CONTRACTS[name].mid_ticks * TICK,
            leg_index=i,
            sequence=sequence,
            client_order_id=client_order_id(basket_id, i, 0),
        )
        for i, (name, side, sequence) in enumerate(plan)
    ]
    return ExecuteBasket(
        ts_event=T0,
        source="test",
        basket_id=basket_id,
        intent_id=None if purpose is IntentKind.EXIT else "intent-1",
        purpose=purpose,
        exit_reason=ExitReason.OPERATOR if purpose is IntentKind.EXIT else None,
        trade_id="trade-1" if purpose is IntentKind.EXIT else None,
        bucket=Bucket.WEEKLY,
        structure=Structure.IRON_CONDOR,
        lot_size=LOT,
        legs=legs,
        urgency=urgency,
        reason="test",
    )


class UnlimitedMargin:
    def shortfall(self, order: PaperOrder, ts_event: datetime) -> str | None:
        return None


def hedged(position: dict[str, int]) -> bool:
    """Per option type (one expiry here), short units never exceed long units."""
    for option_type in OptionType:
        long = sum(u for k, u in position.items() if OPTION_TYPE[k] is option_type and u > 0)
        short = -sum(u for k, u in position.items() if OPTION_TYPE[k] is option_type and u < 0)
        if short > long:
            return False
    return True


class GuardAgainstAnUnreliableBroker(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.exchange = PaperExchange(
            instruments={
                c.key: InstrumentRules(c.key, LOT, TICK, FREEZE, TICK, Decimal(5000))
                for c in CONTRACTS.values()
            },
            calendar=nse_calendar(),
            margin=UnlimitedMargin(),
            latency=timedelta(milliseconds=20),
        )
        self.now = T0
        self.guard: BasketGuard | None = None
        self.initial: dict[str, int] = {}
        self.routes: dict[str, OrderKey] = {}  # exchange order id → order (the adapter's table)
        self.channel: list[Report] = []
        self.connected = True
        self.rng = random.Random(0)
        self.fault_plan: list[str] = []
        self.alerts: list[RaiseAlert] = []
        self.placed_keys: set[OrderKey] = set()  # keys that reached the exchange (each at most once)
        self.refused: list[OrderKey] = []  # submits refused before the broker took them (retryable)
        self.withdrawn: list[OrderKey] = []
        self.failed_over = False
        for name in CONTRACTS:
            self._quote(name, 0, 2, 650)

    # -- the world ---------------------------------------------------------------------------------

    def _quote(self, name: str, shift_ticks: int, half_spread_ticks: int, qty: int) -> None:
        contract = CONTRACTS[name]
        mid = contract.mid_ticks + shift_ticks
        bid, ask = (mid - half_spread_ticks) * TICK, (mid + half_spread_ticks) * TICK
        reports = self.exchange.on_quote(Quote(contract.key, bid, ask, qty, qty, self.now))
        self._receive(reports)
        if self.guard is not None:
            self.guard.on_quote(contract.key, bid, ask)

    def _receive(self, reports: list[Report]) -> None:
        if self.connected:
            self.channel.extend(reports)

    def _deliver(self, report: Report) -> None:
        assert self.guard is not None
        key = self.routes[report.exchange_order_id]
        order = self.guard.orders[key]
        if isinstance(report, Accepted):
            self.guard.acknowledged(key, report.exchange_order_id)
        elif isinstance(report, Traded):
            trade = Trade(report.trade_id, report.quantity, report.price, report.ts_event)
            self.guard.trade(key, trade, report.exchange_order_id)
        elif isinstance(report, Rejected | Cancelled):
            entry = self.exchange.entry(report.exchange_order_id)
            self.guard.report(key, entry.broker_report())
        elif isinstance(report, Modified):
            order.repriced(report.limit_price)

    def _resolve(self, key: OrderKey) -> None:
        assert self.guard is not None
        entries = [e for e in self.exchange.order_book() if self.routes[e.exchange_order_id] == key]
        if not entries:
            self.guard.resolved(key, None, [], self.now)
            return
        entry = entries[0]
        trades = [
            Trade(t.trade_id, t.quantity, t.price, t.ts_event)
            for t in self.exchange.trades()
            if t.exchange_order_id == entry.exchange_order_id
        ]
        self.guard.resolved(key, entry.broker_report(), trades, self.now)

    def _act(self, actions: list[Action]) -> None:
        assert self.guard is not None
        for action in actions:
            if isinstance(action, Place):
                assert action.key not in self.placed_keys, f"{action.key} placed twice"
                fault = self.fault_plan.pop(0) if self.fault_plan else "none"
                if fault == "throttle":
                    # A 429 (or no connection) before the broker took it: nothing exists at the exchange.
                    self.refused.append(action.key)
                    self.guard.submit_refused(action.key, "429 too many requests", self.now)
                    continue
                self.placed_keys.add(action.key)
                tag = action.key.client_order_id
                if fault == "reject":
                    self.exchange.faults.reject[tag] = "forced reject"
                elif fault == "cap":
                    self.exchange.faults.fill_cap[tag] = LOT
                elif fault == "delay":
                    self.exchange.faults.delay[tag] = timedelta(seconds=2)
                elif fault == "silent":
                    self.exchange.faults.silent.add(tag)
                exchange_order_id, reports = self.exchange.submit(
                    PaperOrder(
                        tag,
                        action.instrument_key,
                        action.side,
                        action.quantity,
                        OrderType.LIMIT,
                        action.limit_price,
                    ),
                    self.now,
                )
                self.routes[exchange_order_id] = action.key
                self._receive(reports)
                if fault == "unknown":
                    self.guard.submit_unknown(action.key, "timeout after sending")
                else:
                    self.guard.acknowledged(action.key, exchange_order_id)
            elif isinstance(action, Modify):
                self._receive(self.exchange.modify(action.broker_order_id, action.limit_price, self.now))
            elif isinstance(action, Cancel):
                self._receive(self.exchange.cancel(action.broker_order_id, self.now))
            elif isinstance(action, Resolve):
                if self.connected:
                    self._resolve(action.key)
            elif isinstance(action, Withdrawn):
                assert action.key not in self.placed_keys, f"{action.key} withdrawn but at the exchange"
                assert self.guard.orders[action.key].status is OrderStatus.CANCELLED
                self.withdrawn.append(action.key)
            else:
                self.alerts.append(action)

    def _progress(self) -> None:
        assert self.guard is not None
        self._act(self.guard.progress(self.now))

    def _account(self) -> dict[str, int]:
        position = dict(self.initial)
        for t in self.exchange.trades():
            signed = t.quantity if t.side is Side.BUY else -t.quantity
            position[t.instrument_key] = position.get(t.instrument_key, 0) + signed
        return position

    # -- rules ------------------------------------------------------------------------------------

    @precondition(lambda self: self.guard is None)
    @rule(
        purpose=st.sampled_from(IntentKind),
        lots=st.integers(1, 3),
        urgency=st.sampled_from(Urgency),
        faults=st.lists(
            st.sampled_from(["none", "none", "reject", "cap", "delay", "silent", "unknown", "throttle"]),
            max_size=12,
        ),
        seed=st.integers(0, 2**16),
    )
    def start(self, purpose: IntentKind, lots: int, urgency: Urgency, faults: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.fault_plan = list(faults)
        basket = condor("basket-1", purpose, lots, urgency)
        if purpose is IntentKind.EXIT:
            # The condor the exit closes is already held.
            for leg in condor("basket-0", IntentKind.ENTRY, lots, urgency).legs:
                self.initial[leg.instrument_key] = leg.quantity if leg.side is Side.BUY else -leg.quantity
        self.basket = basket
        self.guard = BasketGuard(basket, contract=Contract(TICK, FREEZE), config=CONFIG, now=self.now)
        for name in CONTRACTS:
            quote = self.exchange.quote(CONTRACTS[name].key)
            assert quote is not None
            self.guard.on_quote(quote.instrument_key, quote.bid, quote.ask)
        self._act(self.guard.start(self.now))

    @precondition(lambda self: self.guard is not None)
    @rule(ms=st.integers(10, 3000))
    def time_passes(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)
        self._receive(self.exchange.advance(self.now))
        self._progress()

    @precondition(lambda self: self.guard is not None)
    @rule(
        name=st.sampled_from(sorted(CONTRACTS)),
        shift=st.integers(-20, 20),
        half_spread=st.integers(1, 6),
        qty=st.sampled_from([0, 65, 130, 650]),
    )
    def market_moves(self, name: str, shift: int, half_spread: int, qty: int) -> None:
        self.now += timedelta(milliseconds=5)
        self._quote(name, shift, half_spread, qty)
        self._progress()

    @precondition(lambda self: self.guard is not None and bool(self.channel))
    @rule(count=st.integers(1, 6), shuffle=st.booleans(), duplicate=st.booleans())
    def reports_arrive(self, count: int, shuffle: bool, duplicate: bool) -> None:
        batch, self.channel = self.channel[:count], self.channel[count:]
        if duplicate:
            batch = batch + batch[: max(1, len(batch) // 2)]
        if shuffle:
            self.rng.shuffle(batch)
        for report in batch:
            self._deliver(report)
        self._progress()

    @precondition(lambda self: self.guard is not None and self.connected)
    @rule()
    def disconnect(self) -> None:
        self.channel.clear()
        self.connected = False

    @precondition(lambda self: self.guard is not None and not self.connected)
    @rule()
    def reconnect(self) -> None:
        # What the service does after UpdatesInterrupted: read back every order it has not seen end.
        self.connected = True
        assert self.guard is not None
        for order in list(self.guard.orders):
            if order.live:
                self._resolve(order.key)
        self._progress()

    @precondition(lambda self: self.guard is not None and not self.guard.ended and not self.failed_over)
    @rule()
    def execution_fails_over(self) -> None:
        """The process working the basket dies; the standby rebuilds the guard from what was persisted
        (every order's latest state and its trades), then reads back what is live, as the service does."""
        assert self.guard is not None
        self.failed_over = True
        persisted = [replace(order, trades=dict(order.trades)) for order in self.guard.orders]
        self.channel.clear()  # the dead process's updates in flight are gone
        self.guard = BasketGuard.recover(
            self.basket,
            persisted,
            contract=Contract(TICK, FREEZE),
            config=CONFIG,
            now=self.now,
            reason="execution failed over",
        )
        for name in CONTRACTS:
            quote = self.exchange.quote(CONTRACTS[name].key)
            if quote is not None:
                self.guard.on_quote(quote.instrument_key, quote.bid, quote.ask)
        if self.connected:
            for order in list(self.guard.orders):
                if order.live:
                    self._resolve(order.key)
        self._progress()

    @precondition(lambda self: self.guard is not None)
    @rule()
    def risk_cancels_the_basket(self) -> None:
        assert self.guard is not None
        self._act(self.guard.cancel(self.now, "CancelOrders from risk"))

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def never_a_short_without_its_hedge(self) -> None:
        assert hedged(self._account()), self._account()

    @invariant()
    def at_most_one_live_order_per_leg_slice(self) -> None:
        if self.guard is None:
            return
        live: dict[tuple[str, int, int], OrderKey] = {}
        for order in self.guard.orders:
            if order.live:
                assert order.key.leg not in live, f"{order.key} and {live[order.key.leg]} both live"
                live[order.key.leg] = order.key
        exchange_live = [
            e
            for e in self.exchange.order_book()
            if e.state in (PaperOrderState.OPEN, PaperOrderState.IN_TRANSIT)
        ]
        per_tag_slice = [(self.routes[e.exchange_order_id]) for e in exchange_live]
        assert len(per_tag_slice) == len(set(per_tag_slice))

    def teardown(self) -> None:
        if self.guard is not None:
            self.run_to_the_end(faults_go_on=False)

    def run_to_the_end(self, *, faults_go_on: bool) -> None:
        """Run the basket to its end: a calm, deep market, a reliable channel, time passing; new orders
        meet no more faults unless `faults_go_on` (the pinned examples script them)."""
        assert self.guard is not None
        if not faults_go_on:
            self.fault_plan = []
        self.connected = True
        for order in list(self.guard.orders):
            if order.live:
                self._resolve(order.key)
        for _ in range(800):
            if self.guard.ended:
                break
            self.now += timedelta(milliseconds=250)
            for name in CONTRACTS:
                self._quote(name, 0, 2, 650)
            self._receive(self.exchange.advance(self.now))
            batch, self.channel = self.channel, []
            for report in batch:
                self._deliver(report)
            self._progress()
        assert self.guard.ended, [(o.key, o.status) for o in self.guard.orders]
        outcome = self.guard.outcome
        assert outcome is not None
        # Settle what is in flight: the exchange's late reports and every order's book entry.
        self.now += timedelta(seconds=1)
        self._receive(self.exchange.advance(self.now))
        for report in self.channel:
            self._deliver(report)
        for order in list(self.guard.orders):
            self._resolve(order.key)
        assert all(
            e.state not in (PaperOrderState.OPEN, PaperOrderState.IN_TRANSIT)
            for e in self.exchange.order_book()
        ), "an order of an ended basket is still working"
        assert not any(o.status in LIVE_STATUSES for o in self.guard.orders)
        # Positions equal the sum of the fills: the guard's (from trades) and the exchange's.
        exchange_net: dict[str, int] = {}
        for t in self.exchange.trades():
            exchange_net[t.instrument_key] = exchange_net.get(t.instrument_key, 0) + (
                t.quantity if t.side is Side.BUY else -t.quantity
            )
        assert {k: v for k, v in self.guard.positions().items() if v} == {
            k: v for k, v in exchange_net.items() if v
        }
        account = self._account()
        assert hedged(account)
        planned = {
            leg.instrument_key: (leg.quantity if leg.side is Side.BUY else -leg.quantity)
            for leg in self.basket.legs
        }
        if outcome.status is BasketStatus.FILLED:
            assert {k: v for k, v in exchange_net.items() if v} == planned
            assert all(
                leg.filled_qty == leg_plan.quantity
                for leg, leg_plan in zip(
                    outcome.legs, sorted(self.basket.legs, key=lambda l: l.leg_index), strict=True
                )
            )
        elif outcome.status in (BasketStatus.UNWOUND, BasketStatus.REJECTED, BasketStatus.CANCELLED):
            assert not any(exchange_net.values()), exchange_net
        else:
            assert outcome.status is BasketStatus.STUCK
            assert any(a.code == "BASKET_STUCK" for a in self.alerts)
        if outcome.status is BasketStatus.UNWOUND:
            assert any(a.code == "BASKET_UNWIND" for a in self.alerts)


TestGuardAgainstAnUnreliableBroker = GuardAgainstAnUnreliableBroker.TestCase
TestGuardAgainstAnUnreliableBroker.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---- examples the state machine covers by chance, pinned down ------------------------------------


class Harness(GuardAgainstAnUnreliableBroker):
    def run(self) -> BasketStatus:
        self.run_to_the_end(faults_go_on=True)
        assert self.guard is not None
        outcome = self.guard.outcome
        assert outcome is not None
        status: BasketStatus = outcome.status
        return status


def harness(purpose: IntentKind, faults: list[str], *, urgency: Urgency = Urgency.NORMAL) -> Harness:
    h = Harness()
    h.start(purpose, 2, urgency, faults, 1)
    return h


def test_a_calm_market_fills_the_whole_condor_wings_first() -> None:
    h = harness(IntentKind.ENTRY, [])
    # Only the wings are working until they have filled.
    assert h.guard is not None
    sides = {h.guard.orders[k].side for k in h.placed_keys}
    assert sides == {Side.BUY}
    assert h.run() is BasketStatus.FILLED
    assert h.guard.net_premium() > 0
    assert not h.alerts


def test_a_short_leg_rejected_twice_unwinds_the_wings_and_alerts() -> None:
    # Two lots are one slice per leg: the wings fill, the CE short's first attempt and its repair are
    # rejected.
    faults = ["none", "none", "reject", "none", "reject"]
    h = harness(IntentKind.ENTRY, faults)
    assert h.run() is BasketStatus.UNWOUND
    codes = [a.code for a in h.alerts]
    assert "BASKET_LEG_REPAIR" in codes
    assert "BASKET_UNWIND" in codes


def test_a_wing_rejected_once_is_repaired_and_the_basket_fills() -> None:
    h = harness(IntentKind.ENTRY, ["reject"])
    assert h.run() is BasketStatus.FILLED
    assert [a.code for a in h.alerts] == ["BASKET_LEG_REPAIR"]


def test_a_submit_with_a_lost_answer_is_found_in_the_book_not_sent_again() -> None:
    h = harness(IntentKind.ENTRY, ["unknown"])
    assert h.run() is BasketStatus.FILLED
    # Leg 0 slice 0 went out once: attempt 0 filled it, no second attempt.
    assert h.guard is not None
    assert {k.attempt for k in h.placed_keys if k.leg_index == 0} == {0}


def test_a_throttled_wing_is_sent_again_under_the_same_key_and_no_short_goes_before_it() -> None:
    # Both slices of the CE wing are refused (throttled) twice before the broker takes them.
    h = harness(IntentKind.ENTRY, ["throttle", "none", "none", "throttle"])
    assert h.guard is not None
    refused = h.refused[0]
    assert h.guard.orders[refused].status is OrderStatus.NEW  # unsent, not rejected
    # Time passes: the wing goes again, same key; meanwhile no short has been placed.
    for _ in range(3):
        h.time_passes(400)
        assert {h.guard.orders[k].side for k in h.placed_keys} == {Side.BUY}
    assert h.run() is BasketStatus.FILLED
    assert refused in h.placed_keys
    assert {k.attempt for k in h.placed_keys if k.leg_index == refused.leg_index} == {0}
    assert not h.alerts  # no repair: a refusal before the broker took the order is not a rejection
    assert h.guard.outcome is not None
    assert h.guard.outcome.legs[refused.leg_index].attempts == 1


def test_a_wing_throttled_past_the_stage_deadline_is_withdrawn_and_nothing_is_left_short() -> None:
    h = harness(IntentKind.ENTRY, ["throttle"] * 40)
    assert h.run() is BasketStatus.REJECTED
    assert h.withdrawn
    assert not h.placed_keys  # nothing ever reached the exchange
    assert h._account() == h.initial


def test_an_exit_whose_first_buy_back_cannot_be_placed_stops_with_nothing_done() -> None:
    h = harness(IntentKind.EXIT, ["reject", "none", "reject"])
    assert h.run() is BasketStatus.REJECTED
    assert h._account() == h.initial


def test_a_failed_exit_is_not_reversed_and_what_remains_is_hedged() -> None:
    # The shorts are bought back; the CE wing's sale is rejected on every try: the exit stops STUCK with
    # the CE wing still held (long options only), and nothing bought back is sold again.
    h = harness(IntentKind.EXIT, ["none", "none", "reject", "none", "reject"])
    assert h.run() is BasketStatus.STUCK
    assert h._account()["NSE_FO|CE26000"] == 2 * LOT
    assert h._account()["NSE_FO|CE25800"] == 0
    assert hedged(h._account())
    assert any(a.code == "BASKET_STUCK" for a in h.alerts)


def test_a_lost_submit_stays_unknown_through_empty_reads_until_the_absent_window_passes() -> None:
    # A book that lags the exchange shows nothing a second after the submit: that is no proof the order
    # never arrived, so the leg waits (no second attempt that could double it) until reads spread over
    # `absent_after_s` all come back empty.
    config = replace(CONFIG, absent_after_s=20.0)
    basket = condor("basket-lost", IntentKind.ENTRY, 1, Urgency.NORMAL)
    guard = BasketGuard(basket, contract=Contract(TICK, FREEZE), config=config, now=T0)
    first = [a for a in guard.start(T0) if isinstance(a, Place)]
    lost = next(p.key for p in first if p.key.leg_index == 0)
    guard.submit_unknown(lost, "timeout after sending")
    for other in (p.key for p in first if p.key != lost):
        guard.acknowledged(other, f"x-{other.leg_index}")
    placed_later: list[Place] = []
    reads = 0
    for second in range(1, 20):
        now = T0 + timedelta(seconds=second)
        actions = guard.progress(now)
        placed_later += [a for a in actions if isinstance(a, Place)]
        if any(isinstance(a, Resolve) and a.key == lost for a in actions):
            reads += 1
            guard.resolved(lost, None, [], now)
        assert guard.orders[lost].status is OrderStatus.UNKNOWN, second
    assert reads >= 5  # the guard kept asking the broker
    assert not [p for p in placed_later if p.key.leg_index == 0]
    assert not guard.ended
    # Reads keep coming back empty past the window: only now is it taken as never arrived.
    guard.resolved(lost, None, [], T0 + timedelta(seconds=25))
    assert guard.orders[lost].status is OrderStatus.REJECTED


def test_absent_window_shorter_than_one_resolve_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="absent_after_s"):
        replace(CONFIG, absent_after_s=CONFIG.resolve_after_s / 2)


def test_config_refuses_a_fill_schedule_longer_than_the_basket_timeout() -> None:
    with pytest.raises(ValueError, match="must end inside"):
        GuardConfig(partial_fill_timeout_s=CONFIG.fill.duration_s(Urgency.PASSIVE) - 0.5, fill=CONFIG.fill)


# ---- a basket another process was working when it died ---------------------------------------------


def recovered(
    purpose: IntentKind, fills: dict[int, int], *, live: frozenset[int] = frozenset()
) -> BasketGuard:
    """A guard rebuilt from persisted orders: leg i's attempt 0 filled `fills[i]` units (cancelled with the
    rest), or still working when in `live`."""
    basket = condor("basket-r", purpose, 2, Urgency.NORMAL)
    orders = []
    for leg in basket.legs:
        if leg.leg_index not in fills and leg.leg_index not in live:
            continue
        key = OrderKey(basket.basket_id, leg.leg_index, 0)
        order = Order(key, leg.instrument_key, leg.side, leg.quantity, leg.limit_price)
        order.acknowledge(f"x{leg.leg_index}")
        filled = fills.get(leg.leg_index, 0)
        if filled:
            order.add_trade(Trade(f"t{leg.leg_index}", filled, leg.limit_price, T0))
        if leg.leg_index not in live and order.live:
            order.apply_report(
                BrokerReport(
                    OrderStatus.CANCELLED, filled, leg.limit_price if filled else None, f"x{leg.leg_index}"
                )
            )
        orders.append(order)
    return BasketGuard.recover(
        basket, orders, contract=Contract(TICK, FREEZE), config=CONFIG, now=T0, reason="failover"
    )


def test_a_recovered_entry_with_only_its_wings_filled_sells_them_back() -> None:
    guard = recovered(IntentKind.ENTRY, {0: 130, 1: 130})
    actions = guard.progress(T0)
    places = [a for a in actions if isinstance(a, Place)]
    assert {(p.key.leg_index, p.side, p.quantity) for p in places} == {
        (0, Side.SELL, 130),
        (1, Side.SELL, 130),
    }
    assert all(p.key.attempt == 1 for p in places)  # never attempt 0 again
    assert any(isinstance(a, RaiseAlert) and a.code == "BASKET_UNWIND" for a in actions)


def test_a_recovered_basket_that_had_filled_in_full_is_filled() -> None:
    guard = recovered(IntentKind.ENTRY, {0: 130, 1: 130, 2: 130, 3: 130})
    assert guard.progress(T0) == []
    assert guard.outcome is not None
    assert guard.outcome.status is BasketStatus.FILLED


def test_a_recovered_basket_cancels_what_still_works_before_unwinding() -> None:
    guard = recovered(IntentKind.ENTRY, {0: 130, 1: 130, 2: 65}, live=frozenset({2}))
    actions = guard.progress(T0)
    assert [type(a) for a in actions] == [Cancel]
    assert not guard.ended


def test_a_recovered_exit_is_not_reversed() -> None:
    guard = recovered(IntentKind.EXIT, {0: 130})
    guard.progress(T0)
    assert guard.outcome is not None
    assert guard.outcome.status is BasketStatus.STUCK
