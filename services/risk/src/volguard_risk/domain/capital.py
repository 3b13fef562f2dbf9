"""The capital buckets and their append-only ledger (issue "Risk and capital service", Capital).

Each bucket (weekly, monthly, intraday) is allocated a share of the account. Capital moves through three
balances, and every movement is one row of the ledger, so the balances can be rebuilt from the rows alone:

    allocated = free + reserved + used        (in every bucket, after every movement)

- RESERVE on approval: free -> reserved, for one basket (its id is the movement's reference);
- COMMIT on a fill: reserved -> used, in proportion to what filled;
- RELEASE_RESERVE when the basket ends: whatever is still reserved for it -> free (a basket that does
  not fill gives everything back);
- RELEASE on close: the trade's used capital -> free;
- ALLOCATE when the account or the bucket percentages change.

Rupees are `Decimal` and exact: no rounding happens here, amounts are what the caller computed. Pure: no
I/O and no clock; the service writes each `Movement` to `risk.capital_ledger` in the transaction that
caused it, and `CapitalLedger.rebuild` reads them back after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from volguard_common.events import Bucket

HUNDRED = Decimal(100)
ZERO = Decimal(0)


class MovementKind(StrEnum):
    ALLOCATE = "ALLOCATE"
    RESERVE = "RESERVE"
    COMMIT = "COMMIT"
    RELEASE_RESERVE = "RELEASE_RESERVE"
    RELEASE = "RELEASE"


class CapitalError(ValueError):
    """A movement the ledger refuses (not enough free capital, unknown reference, bad allocation)."""


@dataclass(frozen=True, slots=True)
class Movement:
    """One ledger row. `amount` is always >= 0; the kind says which balances it moves between.

    For ALLOCATE, `amount` is the bucket's new allocation (not a delta).
    """

    seq: int
    at: datetime
    bucket: Bucket
    kind: MovementKind
    amount: Decimal
    reference: str
    reason: str


@dataclass(slots=True)
class BucketBalance:
    bucket: Bucket
    allocated: Decimal = ZERO
    reserved: Decimal = ZERO
    used: Decimal = ZERO
    # Per basket / trade reference: what is reserved and what is used for it.
    reserved_by: dict[str, Decimal] = field(default_factory=dict)
    used_by: dict[str, Decimal] = field(default_factory=dict)

    @property
    def free(self) -> Decimal:
        return self.allocated - self.reserved - self.used

    @property
    def utilisation(self) -> Decimal | None:
        """Share of the allocation reserved or used, 0..1; None for a bucket with nothing allocated."""
        if self.allocated == 0:
            return None
        return (self.reserved + self.used) / self.allocated


def allocations(account: Decimal, percentages: Mapping[Bucket, Decimal]) -> dict[Bucket, Decimal]:
    """Each bucket's rupees from the account and the three percentages (which must sum to exactly 100)."""
    if set(percentages) != set(Bucket):
        missing = sorted(b.value for b in set(Bucket) - set(percentages))
        raise CapitalError(f"a re-allocation needs all three buckets' percentages; missing {missing}")
    if any(p < 0 for p in percentages.values()):
        raise CapitalError(f"bucket percentages must not be negative: {_show(percentages)}")
    total = sum(percentages.values(), ZERO)
    if total != HUNDRED:
        raise CapitalError(f"bucket percentages must sum to 100, got {total} ({_show(percentages)})")
    if account < 0:
        raise CapitalError(f"account capital must not be negative, got {account}")
    return {bucket: account * percentages[bucket] / HUNDRED for bucket in Bucket}


def _show(percentages: Mapping[Bucket, Decimal]) -> str:
    return ", ".join(f"{b.value} {p} %" for b, p in sorted(percentages.items()))


class CapitalLedger:
    """Balances per bucket plus the rows that explain them; every method appends the rows it made."""

    def __init__(self) -> None:
        self._balances = {bucket: BucketBalance(bucket) for bucket in Bucket}
        self._rows: list[Movement] = []

    @classmethod
    def rebuild(cls, rows: Iterable[Movement]) -> CapitalLedger:
        """Replay persisted rows in order (after a restart): the same balances as before it."""
        ledger = cls()
        for row in sorted(rows, key=lambda r: r.seq):
            if row.seq != len(ledger._rows) + 1:
                raise CapitalError(
                    f"ledger rows are not contiguous: expected seq {len(ledger._rows) + 1}, got {row.seq}"
                )
            ledger._apply(row)
        return ledger

    # ---- reading ------------------------------------------------------------------------------
    def balance(self, bucket: Bucket) -> BucketBalance:
        return self._balances[bucket]

    @property
    def rows(self) -> tuple[Movement, ...]:
        return tuple(self._rows)

    def committed_by_reference(self, bucket: Bucket) -> dict[str, Decimal]:
        """Everything ever committed in `bucket`, per basket: what its fills used, also after release."""
        committed: dict[str, Decimal] = {}
        for row in self._rows:
            if row.bucket is bucket and row.kind is MovementKind.COMMIT:
                committed[row.reference] = committed.get(row.reference, ZERO) + row.amount
        return committed

    def bucket_of(self, reference: str) -> Bucket | None:
        for balance in self._balances.values():
            if reference in balance.reserved_by or reference in balance.used_by:
                return balance.bucket
        return None

    # ---- movements ----------------------------------------------------------------------------
    def allocate(
        self, account: Decimal, percentages: Mapping[Bucket, Decimal], at: datetime, reason: str
    ) -> list[Movement]:
        """Set every bucket's allocation; refused if a bucket would drop below what it already holds."""
        target = allocations(account, percentages)
        held = {bucket: self._balances[bucket].reserved + self._balances[bucket].used for bucket in Bucket}
        short = [
            f"{bucket.value} would get {target[bucket]} but holds {held[bucket]}"
            for bucket in Bucket
            if target[bucket] < held[bucket]
        ]
        if short:
            raise CapitalError("re-allocation refused: " + "; ".join(short))
        return [
            self._append(at, bucket, MovementKind.ALLOCATE, target[bucket], "account", reason)
            for bucket in Bucket
        ]

    def reserve(self, bucket: Bucket, reference: str, amount: Decimal, at: datetime, reason: str) -> Movement:
        """Hold `amount` of the bucket's free capital for an approved basket."""
        if amount <= 0:
            raise CapitalError(f"a reservation must be positive, got {amount}")
        if self.bucket_of(reference) is not None:
            raise CapitalError(f"{reference} already holds capital")
        balance = self._balances[bucket]
        if amount > balance.free:
            raise CapitalError(f"{bucket.value} has {balance.free} free, {reference} needs {amount}")
        return self._append(at, bucket, MovementKind.RESERVE, amount, reference, reason)

    def commit(self, reference: str, amount: Decimal, at: datetime, reason: str) -> Movement:
        """A fill: `amount` of the basket's reservation is now in use (at most what is still reserved)."""
        bucket = self._holder(reference)
        reserved = self._balances[bucket].reserved_by.get(reference, ZERO)
        if amount <= 0 or amount > reserved:
            raise CapitalError(f"{reference}: cannot commit {amount}, {reserved} is reserved")
        return self._append(at, bucket, MovementKind.COMMIT, amount, reference, reason)

    def release_reservation(self, reference: str, at: datetime, reason: str) -> Movement | None:
        """The basket ended: what is still reserved for it goes back to free (None if nothing is)."""
        bucket = self.bucket_of(reference)
        if bucket is None:
            return None
        reserved = self._balances[bucket].reserved_by.get(reference, ZERO)
        if reserved == 0:
            return None
        return self._append(at, bucket, MovementKind.RELEASE_RESERVE, reserved, reference, reason)

    def release(self, reference: str, at: datetime, reason: str) -> Movement | None:
        """The trade closed: its used capital goes back to free (None if it holds none)."""
        bucket = self.bucket_of(reference)
        if bucket is None:
            return None
        used = self._balances[bucket].used_by.get(reference, ZERO)
        if used == 0:
            return None
        return self._append(at, bucket, MovementKind.RELEASE, used, reference, reason)

    # ---- internals ----------------------------------------------------------------------------
    def _holder(self, reference: str) -> Bucket:
        bucket = self.bucket_of(reference)
        if bucket is None:
            raise CapitalError(f"{reference} holds no capital in any bucket")
        return bucket

    def _append(
        self, at: datetime, bucket: Bucket, kind: MovementKind, amount: Decimal, reference: str, reason: str
    ) -> Movement:
        row = Movement(len(self._rows) + 1, at, bucket, kind, amount, reference, reason)
        self._apply(row)
        return row

    def _apply(self, row: Movement) -> None:
        balance = self._balances[row.bucket]
        ref = row.reference
        if row.kind is MovementKind.ALLOCATE:
            balance.allocated = row.amount
        elif row.kind is MovementKind.RESERVE:
            balance.reserved += row.amount
            balance.reserved_by[ref] = balance.reserved_by.get(ref, ZERO) + row.amount
        elif row.kind is MovementKind.COMMIT:
            balance.reserved -= row.amount
            balance.used += row.amount
            _move(balance.reserved_by, ref, -row.amount)
            balance.used_by[ref] = balance.used_by.get(ref, ZERO) + row.amount
        elif row.kind is MovementKind.RELEASE_RESERVE:
            balance.reserved -= row.amount
            _move(balance.reserved_by, ref, -row.amount)
        elif row.kind is MovementKind.RELEASE:
            balance.used -= row.amount
            _move(balance.used_by, ref, -row.amount)
        if balance.reserved < 0 or balance.used < 0:
            raise CapitalError(f"ledger row {row.seq} drives {row.bucket.value} negative")
        self._rows.append(row)


def _move(by_reference: dict[str, Decimal], reference: str, delta: Decimal) -> None:
    left = by_reference.get(reference, ZERO) + delta
    if left < 0:
        raise CapitalError(f"{reference} would hold {left}")
    if left == 0:
        by_reference.pop(reference, None)
    else:
        by_reference[reference] = left


@dataclass(frozen=True, slots=True)
class BucketPerformance:
    """Closed trades of one bucket: realised P&L net of charges and what it earned on the capital used."""

    trades: int
    wins: int
    realised_pnl: Decimal
    average_win: Decimal | None
    average_loss: Decimal | None
    capital_used: Decimal

    @property
    def win_rate(self) -> Decimal | None:
        return None if self.trades == 0 else Decimal(self.wins) / Decimal(self.trades)

    @property
    def return_on_capital(self) -> Decimal | None:
        return None if self.capital_used == 0 else self.realised_pnl / self.capital_used


def performance(closed: Iterable[tuple[Decimal, Decimal]]) -> BucketPerformance:
    """From (net realised P&L, capital the trade used) of each closed trade; a flat trade is not a win."""
    pnls: list[Decimal] = []
    capital = ZERO
    for pnl, used in closed:
        pnls.append(pnl)
        capital += used
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    return BucketPerformance(
        trades=len(pnls),
        wins=len(wins),
        realised_pnl=sum(pnls, ZERO),
        average_win=sum(wins, ZERO) / len(wins) if wins else None,
        average_loss=sum(losses, ZERO) / len(losses) if losses else None,
        capital_used=capital,
    )


def crossed_up(before: Decimal | None, after: Decimal | None, threshold: Decimal) -> bool:
    """True when a bucket's utilisation passed `threshold` with this movement (alert once, not every tick)."""
    return after is not None and after > threshold and (before is None or before <= threshold)
