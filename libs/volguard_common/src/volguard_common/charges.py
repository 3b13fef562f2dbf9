"""Transaction costs of NIFTY index options from one dated schedule, shared by strategy, risk,
execution and the backtest (DESIGN §4, §5).

The figures are DATA: `calendar_data/nse_option_charges.csv`, one row per change of one charge with
its effective date and source. Code here only knows what each charge is levied on:

| charge           | base                              | side            |
|------------------|-----------------------------------|-----------------|
| brokerage        | per executed order (a setting)    | both            |
| STT on sale      | premium x quantity                | sell            |
| STT on exercise  | intrinsic value x quantity        | the exercised long (index options settle in cash) |
| NSE transaction  | premium x quantity                | both            |
| IPFT             | premium x quantity                | both            |
| SEBI fee         | premium x quantity, Rs per crore  | both            |
| stamp duty       | premium x quantity                | buy             |
| GST              | brokerage + transaction + IPFT + SEBI fee | both    |

Brokerage is charged once per executed order however many fills it has; each slice of an order sliced
at the freeze quantity is its own order. Exercise carries no brokerage or exchange charge here: index
options settle in cash at expiry, and what a broker bills for that is the broker's to confirm.

Rounding rule, used everywhere: every component is exact Decimal rupees and is never rounded; a total
is rounded once, to the paisa, half up (`Charges.total`). Charges of several fills, legs or days add
their exact components and round once at the end. Selling one lot (65) at Rs 100 under the April 2026
schedule therefore costs Rs 36.08, not the Rs 36.09 that rounding each component first gives.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

from volguard_common.events import Side

PAISA = Decimal("0.01")
_PERCENT = Decimal("100")
_CRORE = Decimal("10000000")

CHARGE_NAMES: tuple[str, ...] = (
    "stt_option_sale",
    "stt_exercise",
    "nse_transaction",
    "ipft",
    "sebi_fee",
    "stamp_duty",
    "gst",
)
_UNITS = {"pct": _PERCENT, "rupees_per_crore": _CRORE}
_DATA_FILE = "nse_option_charges.csv"


class ChargesNotKnownError(ValueError):
    """The schedule has no figure for that charge on that day; a cost is never guessed."""


def round_to_paisa(amount: Decimal) -> Decimal:
    """The one rounding of a money total: to the paisa, halves away from zero."""
    return amount.quantize(PAISA, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class DatedRate:
    """One row of the schedule. `rate` is a fraction of the charge's base (0.001 for 0.1 %)."""

    charge: str
    effective_from: date
    rate: Decimal
    source: str


@dataclass(frozen=True, slots=True)
class ChargeRates:
    """Every rate in force on `day`, as fractions of their bases, with the rows they came from."""

    day: date
    stt_option_sale: Decimal
    stt_exercise: Decimal
    nse_transaction: Decimal
    ipft: Decimal
    sebi_fee: Decimal
    stamp_duty: Decimal
    gst: Decimal
    rows: tuple[DatedRate, ...]


class ChargeSchedule:
    """Dated rates of every charge. A day before a charge's first row has no rate for it."""

    def __init__(self, rows: Iterable[DatedRate]) -> None:
        by_charge: dict[str, list[DatedRate]] = {name: [] for name in CHARGE_NAMES}
        for row in rows:
            if row.charge not in by_charge:
                raise ValueError(f"unknown charge {row.charge!r}; known: {', '.join(CHARGE_NAMES)}")
            if not (row.rate.is_finite() and row.rate >= 0):
                raise ValueError(
                    f"charge {row.charge} from {row.effective_from}: rate must be >= 0, got {row.rate}"
                )
            by_charge[row.charge].append(row)
        for name, dated in by_charge.items():
            if not dated:
                raise ValueError(f"the schedule has no row for {name}")
            dated.sort(key=lambda r: r.effective_from)
            days = [r.effective_from for r in dated]
            if len(set(days)) != len(days):
                raise ValueError(f"the schedule has two rows for {name} on the same day")
        self._rows = {name: tuple(dated) for name, dated in by_charge.items()}
        # The schedule is complete only from the day every charge has a figure.
        self.starts: date = max(dated[0].effective_from for dated in self._rows.values())

    def rate(self, charge: str, day: date) -> DatedRate:
        """The row of `charge` in force on `day`."""
        dated = self._rows.get(charge)
        if dated is None:
            raise ValueError(f"unknown charge {charge!r}; known: {', '.join(CHARGE_NAMES)}")
        in_force = [row for row in dated if row.effective_from <= day]
        if not in_force:
            raise ChargesNotKnownError(
                f"no {charge} rate on {day}: "
                f"the schedule's first {charge} figure is from {dated[0].effective_from}"
            )
        return in_force[-1]

    def rates_on(self, day: date) -> ChargeRates:
        """All rates on `day`; refuses a day before the schedule starts rather than mix in a guess."""
        if day < self.starts:
            raise ChargesNotKnownError(
                f"charges on {day} are not known: the schedule starts on {self.starts} (before then "
                "NSE's transaction charge depended on the member's volume slab: no single client figure)"
            )
        rows = {name: self.rate(name, day) for name in CHARGE_NAMES}
        return ChargeRates(
            day=day,
            stt_option_sale=rows["stt_option_sale"].rate,
            stt_exercise=rows["stt_exercise"].rate,
            nse_transaction=rows["nse_transaction"].rate,
            ipft=rows["ipft"].rate,
            sebi_fee=rows["sebi_fee"].rate,
            stamp_duty=rows["stamp_duty"].rate,
            gst=rows["gst"].rate,
            rows=tuple(rows.values()),
        )


def _data_rows() -> list[DatedRate]:
    text = (
        resources.files("volguard_common").joinpath("calendar_data", _DATA_FILE).read_text(encoding="utf-8")
    )
    rows: list[DatedRate] = []
    for row in csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")):
        if None in row or None in row.values():
            # A comma inside a source would shift the columns; refuse rather than read a wrong rate.
            raise ValueError(f"{_DATA_FILE}: row for {row['charge']} does not have exactly five columns")
        unit = _UNITS.get(row["unit"])
        if unit is None:
            raise ValueError(f"{_DATA_FILE}: unknown unit {row['unit']!r} for {row['charge']}")
        rows.append(
            DatedRate(
                charge=row["charge"],
                effective_from=date.fromisoformat(row["effective_from"]),
                rate=Decimal(row["rate"]) / unit,
                source=row["source"],
            )
        )
    return rows


@functools.cache
def nse_option_charges() -> ChargeSchedule:
    """The packaged schedule for NIFTY options on NSE, read once."""
    return ChargeSchedule(_data_rows())


@dataclass(frozen=True, slots=True)
class Charges:
    """Charges of one fill, exercise, leg or structure: exact components in rupees.

    `exchange` is the NSE transaction charge plus IPFT (the exchange bills them together). `total` is
    the amount to book: the exact sum rounded once to the paisa.
    """

    brokerage: Decimal = Decimal(0)
    stt: Decimal = Decimal(0)
    exchange: Decimal = Decimal(0)
    sebi_fee: Decimal = Decimal(0)
    stamp_duty: Decimal = Decimal(0)
    gst: Decimal = Decimal(0)

    @property
    def unrounded_total(self) -> Decimal:
        return self.brokerage + self.stt + self.exchange + self.sebi_fee + self.stamp_duty + self.gst

    @property
    def total(self) -> Decimal:
        return round_to_paisa(self.unrounded_total)

    def __add__(self, other: Charges) -> Charges:
        return Charges(
            brokerage=self.brokerage + other.brokerage,
            stt=self.stt + other.stt,
            exchange=self.exchange + other.exchange,
            sebi_fee=self.sebi_fee + other.sebi_fee,
            stamp_duty=self.stamp_duty + other.stamp_duty,
            gst=self.gst + other.gst,
        )


def _check_quantity(quantity: int) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise ValueError(f"quantity must be a positive whole number of units, got {quantity!r}")


def _check_price(name: str, value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite Decimal >= 0 rupees, got {value!r}")


def fill_charges(
    side: Side,
    premium: Decimal,
    quantity: int,
    trade_date: date,
    *,
    first_fill_of_order: bool,
    brokerage_per_order: Decimal,
    schedule: ChargeSchedule | None = None,
) -> Charges:
    """Charges of one fill: `quantity` units at `premium` rupees per unit on `trade_date`.

    Brokerage is charged on the order's first fill only (`first_fill_of_order`); the other charges
    are proportional to the fill's premium turnover."""
    _check_price("premium", premium)
    _check_price("brokerage_per_order", brokerage_per_order)
    _check_quantity(quantity)
    rates = (schedule or nse_option_charges()).rates_on(trade_date)
    turnover = premium * quantity
    brokerage = brokerage_per_order if first_fill_of_order else Decimal(0)
    exchange = turnover * (rates.nse_transaction + rates.ipft)
    sebi_fee = turnover * rates.sebi_fee
    return Charges(
        brokerage=brokerage,
        stt=turnover * rates.stt_option_sale if side is Side.SELL else Decimal(0),
        exchange=exchange,
        sebi_fee=sebi_fee,
        stamp_duty=turnover * rates.stamp_duty if side is Side.BUY else Decimal(0),
        gst=(brokerage + exchange + sebi_fee) * rates.gst,
    )


def exercise_charges(
    intrinsic: Decimal, quantity: int, expiry: date, *, schedule: ChargeSchedule | None = None
) -> Charges:
    """Charges of a long option exercised at expiry: STT on its intrinsic value x quantity. A short
    assigned at expiry pays nothing here (the exercise STT is the holder's); an option expiring
    worthless (`intrinsic` 0) costs nothing."""
    _check_price("intrinsic", intrinsic)
    _check_quantity(quantity)
    rates = (schedule or nse_option_charges()).rates_on(expiry)
    return Charges(stt=intrinsic * quantity * rates.stt_exercise)


@dataclass(frozen=True, slots=True)
class StructureLeg:
    """One leg of a structure for a round-trip cost estimate.

    `side` is the opening side. The leg closes either by trading at `exit_premium` or by settling
    at expiry with `expiry_intrinsic` (exactly one of them). `orders` is the number of orders each
    trade of the leg needs (more than one when the quantity is sliced at the freeze quantity).
    """

    side: Side
    quantity: int
    entry_premium: Decimal
    exit_premium: Decimal | None = None
    expiry_intrinsic: Decimal | None = None
    orders: int = field(default=1)

    def __post_init__(self) -> None:
        _check_quantity(self.quantity)
        _check_price("entry_premium", self.entry_premium)
        if (self.exit_premium is None) == (self.expiry_intrinsic is None):
            raise ValueError("a structure leg closes either at an exit premium or at expiry, exactly one")
        if self.exit_premium is not None:
            _check_price("exit_premium", self.exit_premium)
        if self.expiry_intrinsic is not None:
            _check_price("expiry_intrinsic", self.expiry_intrinsic)
        _check_quantity(self.orders)
        if self.orders > self.quantity:
            raise ValueError(f"a leg of {self.quantity} units cannot need {self.orders} orders")


def _orders_of(
    leg: StructureLeg, side: Side, premium: Decimal, day: date, brokerage: Decimal, schedule: ChargeSchedule
) -> Charges:
    # The charges other than brokerage are proportional to turnover, so slicing changes only the
    # brokerage: one order per slice.
    base = fill_charges(
        side,
        premium,
        leg.quantity,
        day,
        first_fill_of_order=False,
        brokerage_per_order=brokerage,
        schedule=schedule,
    )
    rates = schedule.rates_on(day)
    sliced_brokerage = brokerage * leg.orders
    return base + Charges(brokerage=sliced_brokerage, gst=sliced_brokerage * rates.gst)


def structure_charges(
    legs: Sequence[StructureLeg],
    entry_date: date,
    exit_date: date,
    *,
    brokerage_per_order: Decimal,
    schedule: ChargeSchedule | None = None,
) -> Charges:
    """Round-trip charges of a whole structure: every leg opened on `entry_date` and closed on
    `exit_date` (a trade at its exit premium, or settlement at expiry on that day)."""
    if exit_date < entry_date:
        raise ValueError(f"exit {exit_date} is before entry {entry_date}")
    _check_price("brokerage_per_order", brokerage_per_order)
    chosen = schedule or nse_option_charges()
    total = Charges()
    for leg in legs:
        total += _orders_of(leg, leg.side, leg.entry_premium, entry_date, brokerage_per_order, chosen)
        if leg.exit_premium is not None:
            closing = Side.SELL if leg.side is Side.BUY else Side.BUY
            total += _orders_of(leg, closing, leg.exit_premium, exit_date, brokerage_per_order, chosen)
        elif leg.expiry_intrinsic is not None and leg.side is Side.BUY and leg.expiry_intrinsic > 0:
            total += exercise_charges(leg.expiry_intrinsic, leg.quantity, exit_date, schedule=chosen)
    return total
