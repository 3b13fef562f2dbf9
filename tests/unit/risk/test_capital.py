"""The capital ledger: balances per bucket, every movement a row, rebuilt from rows alone."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from volguard_common.clock import IST
from volguard_common.events import Bucket
from volguard_risk.domain.capital import (
    CapitalError,
    CapitalLedger,
    MovementKind,
    allocations,
    crossed_up,
    performance,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=IST)
ACCOUNT = Decimal("2000000")
DEFAULT = {Bucket.WEEKLY: Decimal(40), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(10)}


def ledger() -> CapitalLedger:
    book = CapitalLedger()
    book.allocate(ACCOUNT, DEFAULT, T0, "start")
    return book


def test_default_allocation_is_40_50_10_of_the_account() -> None:
    assert allocations(ACCOUNT, DEFAULT) == {
        Bucket.WEEKLY: Decimal("800000"),
        Bucket.MONTHLY: Decimal("1000000"),
        Bucket.INTRADAY: Decimal("200000"),
    }


@pytest.mark.parametrize(
    ("percentages", "message"),
    [
        ({Bucket.WEEKLY: Decimal(40), Bucket.MONTHLY: Decimal(50)}, "missing"),
        (
            {Bucket.WEEKLY: Decimal(40), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(11)},
            "sum to 100",
        ),
        (
            {Bucket.WEEKLY: Decimal(60), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(-10)},
            "negative",
        ),
    ],
)
def test_bad_allocations_are_refused_with_the_reason(
    percentages: dict[Bucket, Decimal], message: str
) -> None:
    with pytest.raises(CapitalError, match=message):
        allocations(ACCOUNT, percentages)


def test_reserve_commit_release_round_trip_moves_capital_and_leaves_rows() -> None:
    book = ledger()
    weekly = book.balance(Bucket.WEEKLY)
    book.reserve(Bucket.WEEKLY, "basket-1", Decimal("60000"), T0, "approved")
    assert (weekly.free, weekly.reserved, weekly.used) == (Decimal("740000"), Decimal("60000"), Decimal(0))
    book.commit("basket-1", Decimal("45000"), T0, "fill")
    assert (weekly.reserved, weekly.used) == (Decimal("15000"), Decimal("45000"))
    released = book.release_reservation("basket-1", T0, "basket ended")
    assert released is not None
    assert released.amount == Decimal("15000")
    assert (weekly.free, weekly.reserved, weekly.used) == (Decimal("755000"), Decimal(0), Decimal("45000"))
    closed = book.release("basket-1", T0, "closed")
    assert closed is not None
    assert weekly.free == weekly.allocated
    kinds = [row.kind for row in book.rows]
    assert kinds[3:] == [
        MovementKind.RESERVE,
        MovementKind.COMMIT,
        MovementKind.RELEASE_RESERVE,
        MovementKind.RELEASE,
    ]


def test_a_basket_that_does_not_fill_gives_everything_back() -> None:
    book = ledger()
    book.reserve(Bucket.INTRADAY, "b", Decimal("4000"), T0, "approved")
    book.release_reservation("b", T0, "rejected")
    assert book.balance(Bucket.INTRADAY).free == Decimal("200000")
    assert book.release("b", T0, "nothing used") is None


def test_no_bucket_lends_to_another_and_overdrafts_are_refused() -> None:
    book = ledger()
    with pytest.raises(CapitalError, match="INTRADAY has 200000 free"):
        book.reserve(Bucket.INTRADAY, "big", Decimal("200001"), T0, "approved")
    book.reserve(Bucket.WEEKLY, "a", Decimal("100"), T0, "approved")
    with pytest.raises(CapitalError, match="cannot commit"):
        book.commit("a", Decimal("101"), T0, "fill")
    with pytest.raises(CapitalError, match="already holds"):
        book.reserve(Bucket.MONTHLY, "a", Decimal("1"), T0, "again")
    with pytest.raises(CapitalError, match="holds no capital"):
        book.commit("unknown", Decimal("1"), T0, "fill")


def test_reallocation_cannot_cut_a_bucket_below_what_it_holds() -> None:
    book = ledger()
    book.reserve(Bucket.INTRADAY, "b", Decimal("150000"), T0, "approved")
    with pytest.raises(CapitalError, match="INTRADAY would get 100000 but holds 150000"):
        book.allocate(
            ACCOUNT,
            {Bucket.WEEKLY: Decimal(45), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(5)},
            T0,
            "cmd",
        )
    book.allocate(
        ACCOUNT,
        {Bucket.WEEKLY: Decimal(35), Bucket.MONTHLY: Decimal(50), Bucket.INTRADAY: Decimal(15)},
        T0,
        "cmd",
    )
    assert book.balance(Bucket.INTRADAY).free == Decimal("150000")


def test_utilisation_alert_fires_once_when_a_bucket_passes_90_percent() -> None:
    book = ledger()
    intraday = book.balance(Bucket.INTRADAY)
    before = intraday.utilisation
    book.reserve(Bucket.INTRADAY, "a", Decimal("170000"), T0, "approved")
    assert not crossed_up(before, intraday.utilisation, Decimal("0.9"))
    before = intraday.utilisation
    book.reserve(Bucket.INTRADAY, "b", Decimal("20000"), T0, "approved")
    assert crossed_up(before, intraday.utilisation, Decimal("0.9"))
    before = intraday.utilisation
    book.reserve(Bucket.INTRADAY, "c", Decimal("5000"), T0, "approved")
    assert not crossed_up(before, intraday.utilisation, Decimal("0.9"))


def test_performance_per_bucket() -> None:
    stats = performance(
        [
            (Decimal("3000"), Decimal("50000")),
            (Decimal("-1000"), Decimal("50000")),
            (Decimal(0), Decimal("10")),
        ]
    )
    assert stats.trades == 3
    assert stats.wins == 1
    assert stats.win_rate == Decimal(1) / Decimal(3)
    assert stats.average_win == Decimal("3000")
    assert stats.average_loss == Decimal("-1000")
    assert stats.return_on_capital == Decimal("2000") / Decimal("100010")
    assert performance([]).win_rate is None


class LedgerModel(RuleBasedStateMachine):
    """Any sequence of movements: allocated = free + reserved + used in every bucket, nothing negative,
    and the rows alone rebuild the same balances."""

    def __init__(self) -> None:
        super().__init__()
        self.book = ledger()
        self.refs: list[str] = []
        self.step = 0

    def _at(self) -> datetime:
        self.step += 1
        return T0 + timedelta(seconds=self.step)

    @rule(bucket=st.sampled_from(Bucket), paise=st.integers(min_value=1, max_value=30_000_000))
    def reserve(self, bucket: Bucket, paise: int) -> None:
        amount = Decimal(paise) / 100
        ref = f"ref-{self.step}"
        if amount > self.book.balance(bucket).free:
            with pytest.raises(CapitalError):
                self.book.reserve(bucket, ref, amount, self._at(), "model")
            return
        self.book.reserve(bucket, ref, amount, self._at(), "model")
        self.refs.append(ref)

    @precondition(lambda self: bool(self.refs))
    @rule(data=st.data(), share=st.integers(min_value=1, max_value=100))
    def commit(self, data: st.DataObject, share: int) -> None:
        ref = data.draw(st.sampled_from(self.refs))
        bucket = self.book.bucket_of(ref)
        if bucket is None:  # its basket ended with nothing filled: nothing left to commit
            with pytest.raises(CapitalError, match="holds no capital"):
                self.book.commit(ref, Decimal("0.01"), self._at(), "model")
            return
        reserved = self.book.balance(bucket).reserved_by.get(ref, Decimal(0))
        amount = (reserved * share / 100).quantize(Decimal("0.01"))
        if amount <= 0 or amount > reserved:
            return
        self.book.commit(ref, amount, self._at(), "model")

    @precondition(lambda self: bool(self.refs))
    @rule(data=st.data())
    def end_basket(self, data: st.DataObject) -> None:
        self.book.release_reservation(data.draw(st.sampled_from(self.refs)), self._at(), "model")

    @precondition(lambda self: bool(self.refs))
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(self.refs))
        self.book.release_reservation(ref, self._at(), "model")
        self.book.release(ref, self._at(), "model")
        self.refs.remove(ref)

    @rule(weekly=st.integers(0, 100), monthly=st.integers(0, 100))
    def reallocate(self, weekly: int, monthly: int) -> None:
        if weekly + monthly > 100:
            return
        pcts = {
            Bucket.WEEKLY: Decimal(weekly),
            Bucket.MONTHLY: Decimal(monthly),
            Bucket.INTRADAY: Decimal(100 - weekly - monthly),
        }
        target = allocations(ACCOUNT, pcts)
        held = {b: self.book.balance(b).reserved + self.book.balance(b).used for b in Bucket}
        if any(target[b] < held[b] for b in Bucket):
            with pytest.raises(CapitalError, match="would get"):
                self.book.allocate(ACCOUNT, pcts, self._at(), "model")
        else:
            self.book.allocate(ACCOUNT, pcts, self._at(), "model")

    @invariant()
    def balanced(self) -> None:
        for bucket in Bucket:
            balance = self.book.balance(bucket)
            assert balance.allocated == balance.free + balance.reserved + balance.used
            assert balance.free >= 0
            assert balance.reserved == sum(balance.reserved_by.values(), Decimal(0))
            assert balance.used == sum(balance.used_by.values(), Decimal(0))

    @invariant()
    def rows_rebuild_the_balances(self) -> None:
        rebuilt = CapitalLedger.rebuild(self.book.rows)
        for bucket in Bucket:
            a, b = rebuilt.balance(bucket), self.book.balance(bucket)
            assert (a.allocated, a.reserved, a.used, a.reserved_by, a.used_by) == (
                b.allocated,
                b.reserved,
                b.used,
                b.reserved_by,
                b.used_by,
            )


TestLedgerModel = LedgerModel.TestCase
