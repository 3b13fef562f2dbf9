"""The book from fills: P&L from the ledger equals P&L recomputed from fills and the charges schedule."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from volguard_common.charges import exercise_charges, fill_charges
from volguard_common.clock import IST
from volguard_common.events import Bucket, Fill, OptionType, Side, Structure
from volguard_risk.domain.capital import CapitalLedger
from volguard_risk.domain.portfolio import Contract, Portfolio, PortfolioError, TradeOrigin, bucket_state

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
EXPIRY = date(2026, 12, 8)
BROKERAGE = Decimal(20)
KEYS = {
    "NSE_FO|P25800": (25800.0, OptionType.PE),
    "NSE_FO|P25900": (25900.0, OptionType.PE),
    "NSE_FO|C26300": (26300.0, OptionType.CE),
    "NSE_FO|C26400": (26400.0, OptionType.CE),
}


def fill(
    n: int, basket: str, key: str, side: Side, quantity: int, price: str, order: str, at: datetime = T0
) -> Fill:
    strike, kind = KEYS[key]
    return Fill(
        ts_event=at,
        source="execution/test",
        fill_id=f"f{n}",
        client_order_id=f"c{order}",
        broker_order_id=order,
        basket_id=basket,
        leg_index=0,
        instrument_key=key,
        expiry=EXPIRY,
        strike=strike,
        option_type=kind,
        side=side,
        quantity=quantity,
        price=Decimal(price),
        fees=Decimal(0),
    )


def book() -> Portfolio:
    portfolio = Portfolio(Decimal("2000000"), brokerage_per_order=BROKERAGE)
    portfolio.open_trade("t1", Bucket.WEEKLY, Structure.IRON_CONDOR, T0, origin=TradeOrigin.VOLGUARD)
    portfolio.expect_basket("b1", "t1")
    return portfolio


def test_a_short_leg_bought_back_realises_the_premium_difference_less_both_sides_charges() -> None:
    portfolio = book()
    sold = portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    portfolio.expect_basket("b2", "t1")
    bought = portfolio.apply_fill(fill(2, "b2", "NSE_FO|C26300", Side.BUY, 65, "60", "o2"))
    assert sold is not None
    assert bought is not None
    # Selling one lot at Rs 100 costs Rs 36.08 under the current schedule (charges module notes).
    assert sold.charges == Decimal("36.08")
    trade = portfolio.trade("t1")
    assert trade.realised_net == Decimal(40 * 65) - sold.charges - bought.charges
    assert bought.closed_trade


def test_an_open_leg_without_a_mark_makes_unrealised_pnl_unknown_not_zero() -> None:
    portfolio = book()
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    assert portfolio.unrealised() is None
    assert portfolio.equity() is None
    portfolio.mark({"NSE_FO|C26300": Decimal("90")})
    assert portfolio.unrealised() == Decimal(10 * 65)


def test_a_redelivered_fill_changes_nothing() -> None:
    portfolio = book()
    first = fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1")
    portfolio.apply_fill(first)
    assert portfolio.apply_fill(first) is None
    assert portfolio.net_positions() == {"NSE_FO|C26300": -65}


def test_a_fill_of_a_basket_risk_never_issued_is_refused() -> None:
    with pytest.raises(PortfolioError, match="unknown basket"):
        book().apply_fill(fill(1, "b-unknown", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))


def test_brokerage_is_charged_once_per_exchange_order_not_per_fill() -> None:
    portfolio = book()
    one = portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    two = portfolio.apply_fill(fill(2, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    assert one is not None
    assert two is not None
    day = T0.date()
    with_brokerage = fill_charges(
        Side.SELL, Decimal(100), 65, day, first_fill_of_order=True, brokerage_per_order=BROKERAGE
    )
    without = fill_charges(
        Side.SELL, Decimal(100), 65, day, first_fill_of_order=False, brokerage_per_order=BROKERAGE
    )
    assert (one.charges, two.charges) == (with_brokerage.total, without.total)


def test_reconciliation_names_every_instrument_that_differs_and_a_missing_report_is_not_flat() -> None:
    portfolio = book()
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    portfolio.apply_fill(fill(2, "b1", "NSE_FO|C26400", Side.BUY, 65, "40", "o2"))
    differences = portfolio.compare({"NSE_FO|C26300": -65, "NSE_FO|P25800": 130})
    assert [d.describe() for d in differences] == [
        "NSE_FO|C26400: risk 65, broker not reported",
        "NSE_FO|P25800: risk 0, broker 130",
    ]


def test_an_external_position_is_counted_in_the_book() -> None:
    portfolio = book()
    contract = Contract("NSE_FO|P25800", EXPIRY, Decimal(25800), OptionType.PE)
    portfolio.adopt_external("ext-1", contract, -65, Decimal("30"), T0)
    assert portfolio.net_positions() == {"NSE_FO|P25800": -65}
    assert portfolio.trade("ext-1").origin is TradeOrigin.EXTERNAL


class FillsVersusLedger(RuleBasedStateMachine):
    """Random fills (opening, closing, crossing through flat, several orders) against a recomputation."""

    @initialize()
    def start(self) -> None:
        self.portfolio = book()
        self.portfolio.expect_basket("b2", "t1")
        self.fills: list[Fill] = []
        self.orders: set[str] = set()

    @rule(
        key=st.sampled_from(sorted(KEYS)),
        side=st.sampled_from(Side),
        lots=st.integers(1, 5),
        paise=st.integers(5, 40000),
        order=st.integers(0, 6),
        basket=st.sampled_from(["b1", "b2"]),
    )
    def a_fill(self, key: str, side: Side, lots: int, paise: int, order: int, basket: str) -> None:
        price = str(Decimal(paise) / 100)
        made = fill(len(self.fills) + 1, basket, key, side, lots * 65, price, f"o{order}")
        self.portfolio.apply_fill(made)
        self.fills.append(made)

    @rule(key=st.sampled_from(sorted(KEYS)), paise=st.integers(5, 40000))
    def a_mark(self, key: str, paise: int) -> None:
        self.portfolio.mark({key: Decimal(paise) / 100})

    @invariant()
    def ledger_pnl_equals_pnl_from_fills_and_the_schedule(self) -> None:
        cash = Decimal(0)
        charges = Decimal(0)
        held: dict[str, int] = {}
        seen: set[str] = set()
        for f in self.fills:
            cash += f.price * f.quantity * (1 if f.side is Side.SELL else -1)
            charges += fill_charges(
                f.side,
                f.price,
                f.quantity,
                f.ts_event.date(),
                first_fill_of_order=f.broker_order_id not in seen,
                brokerage_per_order=BROKERAGE,
            ).total
            seen.add(f.broker_order_id)
            held[f.instrument_key] = held.get(f.instrument_key, 0) + (
                f.quantity if f.side is Side.BUY else -f.quantity
            )
        marks = self.portfolio.marks
        open_keys = [k for k, q in held.items() if q != 0]
        unrealised = self.portfolio.unrealised()
        if any(k not in marks for k in open_keys):
            assert unrealised is None
            return
        assert unrealised is not None
        value = sum((marks[k] * held[k] for k in open_keys), Decimal(0))
        assert self.portfolio.realised_net() + unrealised == cash + value - charges

    @invariant()
    def positions_are_the_sum_of_fills(self) -> None:
        held: dict[str, int] = {}
        for f in self.fills:
            held[f.instrument_key] = held.get(f.instrument_key, 0) + (
                f.quantity if f.side is Side.BUY else -f.quantity
            )
        assert self.portfolio.net_positions() == {k: q for k, q in held.items() if q != 0}


TestFillsVersusLedger = FillsVersusLedger.TestCase
TestFillsVersusLedger.settings = hypothesis_settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_day_pnl_counts_from_the_open_and_drawdown_from_the_peak() -> None:
    portfolio = book()
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    portfolio.mark({"NSE_FO|C26300": Decimal("100")})
    portfolio.start_day(T0.date())
    assert portfolio.observe_equity() == Decimal(0)
    portfolio.mark({"NSE_FO|C26300": Decimal("120")})
    assert portfolio.day_pnl() == Decimal(-20 * 65)
    assert portfolio.observe_equity() == Decimal(20 * 65)


def test_a_bucket_shows_its_reserved_capital_and_the_performance_of_its_closed_trades() -> None:
    split = {Bucket.WEEKLY: Decimal(40), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(10)}
    ledger = CapitalLedger()
    ledger.allocate(Decimal("2000000"), split, T0, "start")
    portfolio = book()
    # t1: a short put sold at 100 and bought back at 130 - a loss - on 4,000 of committed capital.
    ledger.reserve(Bucket.WEEKLY, "b1", Decimal(4000), T0, "approved")
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|P25900", Side.SELL, 65, "100", "o1"))
    ledger.commit("b1", Decimal(4000), T0, "filled")
    portfolio.expect_basket("b1-exit", "t1")
    portfolio.apply_fill(fill(2, "b1-exit", "NSE_FO|P25900", Side.BUY, 65, "130", "o2"))
    ledger.release("b1", T0, "closed")
    # t2: still open, with 1,500 reserved for its basket.
    portfolio.open_trade("t2", Bucket.WEEKLY, Structure.IRON_CONDOR, T0, origin=TradeOrigin.VOLGUARD)
    portfolio.expect_basket("b2", "t2")
    ledger.reserve(Bucket.WEEKLY, "b2", Decimal(1500), T0, "approved")

    weekly = bucket_state(portfolio, ledger, Bucket.WEEKLY)
    loss = portfolio.trade("t1").realised_net
    assert loss < Decimal(-1950)  # 30 x 65 plus both sides' charges
    assert weekly.capital_reserved == Decimal(1500)
    assert weekly.capital_used == Decimal(1500)
    assert weekly.closed_trades == 1
    assert weekly.win_rate == 0.0
    assert weekly.average_win is None
    assert weekly.average_loss == loss.quantize(Decimal("0.01"))
    assert weekly.roi == float(loss / Decimal(4000))
    monthly = bucket_state(portfolio, ledger, Bucket.MONTHLY)
    assert (monthly.closed_trades, monthly.win_rate, monthly.roi) == (0, None, None)


def test_legs_past_their_expiry_settle_at_intrinsic_and_a_long_in_the_money_pays_stt_on_exercise() -> None:
    portfolio = book()
    sold = portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    bought = portfolio.apply_fill(fill(2, "b1", "NSE_FO|C26400", Side.BUY, 65, "60", "o2"))
    assert sold is not None
    assert bought is not None
    later = datetime(2026, 12, 9, 9, 20, tzinfo=IST)
    # Nothing settles on the expiry day itself.
    assert portfolio.expired_settlements(EXPIRY, later, lambda _: (Decimal(26450), "test")) == []
    asked: list[date] = []

    def level(expiry: date) -> tuple[Decimal, str]:
        asked.append(expiry)
        return Decimal(26450), "the expiry's close"

    settlements = portfolio.expired_settlements(date(2026, 12, 9), later, level)
    assert set(asked) == {EXPIRY}
    by_key = {s.instrument_key: s for s in settlements}
    short, long = by_key["NSE_FO|C26300"], by_key["NSE_FO|C26400"]
    assert (short.quantity, short.price, short.charges) == (-65, Decimal(150), Decimal(0))
    expected_stt = exercise_charges(Decimal(50), 65, EXPIRY).total
    assert expected_stt > 0
    assert (long.quantity, long.price, long.charges) == (65, Decimal(50), expected_stt)
    closed = [portfolio.settle(s) for s in settlements]
    assert closed.count(True) == 1
    trade = portfolio.trade("t1")
    assert not trade.is_open
    assert trade.closed_at == later
    # Sold at 100, settled at 150: -50 a unit; bought at 60, settled at 50: -10 a unit.
    assert trade.realised_net == Decimal(-60 * 65) - sold.charges - bought.charges - expected_stt
    assert portfolio.expired_settlements(date(2026, 12, 9), later, level) == []


def test_a_leg_with_no_settlement_level_stays_open() -> None:
    portfolio = book()
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|P25800", Side.SELL, 65, "100", "o1"))
    later = datetime(2026, 12, 9, 9, 20, tzinfo=IST)
    assert portfolio.expired_settlements(date(2026, 12, 9), later, lambda _: None) == []
    assert portfolio.trade("t1").is_open


def test_an_unmarked_open_leaves_the_days_opening_equity_unknown_until_every_leg_is_marked() -> None:
    portfolio = book()
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    portfolio.start_day(T0.date())
    assert portfolio.day_open_equity is None
    assert portfolio.day_pnl() is None
    portfolio.mark({"NSE_FO|C26300": Decimal("100")})
    opened = portfolio.open_day_if_unknown()
    assert opened == portfolio.equity()
    assert portfolio.day_pnl() == Decimal(0)
    # Taken once: a later call changes nothing and says so.
    portfolio.mark({"NSE_FO|C26300": Decimal("110")})
    assert portfolio.open_day_if_unknown() is None
    assert portfolio.day_pnl() == Decimal(-10 * 65)


def test_a_restored_day_keeps_the_loss_taken_before_the_restart() -> None:
    portfolio = book()
    portfolio.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    portfolio.mark({"NSE_FO|C26300": Decimal("100")})
    opened = portfolio.equity()
    assert opened is not None
    restarted = book()
    restarted.apply_fill(fill(1, "b1", "NSE_FO|C26300", Side.SELL, 65, "100", "o1"))
    restarted.restore_day(T0.date(), opened)
    restarted.mark({"NSE_FO|C26300": Decimal("130")})
    assert restarted.day == T0.date()
    assert restarted.day_pnl() == Decimal(-30 * 65)
    assert restarted.open_day_if_unknown() is None
