"""The Upstox instrument master (BOD JSON file), reduced to the NIFTY index options VolGuard trades.

In live mode the broker's master overrides the calendar's contract rules (DESIGN §4): expiries, strikes,
lot size and freeze quantity come from here, not from `volguard_common.clock`.

Master facts relied on (upstox.com/developer/api-documentation/instruments, and the option-contract
API that shares its fields):
- the JSON file (e.g. .../instruments/exchange/NSE.json.gz) is a gzip'd JSON array of objects;
- NIFTY options have segment "NSE_FO", instrument_type "CE"/"PE", underlying_symbol (or name) "NIFTY";
- `expiry` is epoch milliseconds (the option-contract API gives "YYYY-MM-DD"; both are accepted) and is
  read as an IST calendar day, never the machine's local zone;
- `tick_size` is in paise (a NIFTY option shows 5, i.e. ₹0.05) and is converted to rupees here;
- `instrument_key` ("NSE_FO|12345") is the stable id; `exchange_token` may be reused after expiry.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from volguard_common.clock import IST
from volguard_common.events import OptionType
from volguard_common.upstox_http import UpstoxHttp, UpstoxResponseError

log = logging.getLogger(__name__)

NIFTY_SYMBOL = "NIFTY"
NIFTY_INDEX_KEY = "NSE_INDEX|Nifty 50"
INDIA_VIX_KEY = "NSE_INDEX|India VIX"
PAISE_PER_RUPEE = 100.0
_GZIP_MAGIC = b"\x1f\x8b"


class InstrumentMasterError(UpstoxResponseError):
    """The instrument master cannot be read or contradicts itself (e.g. two lot sizes in one expiry)."""


@dataclass(frozen=True, slots=True)
class NiftyOption:
    instrument_key: str
    trading_symbol: str
    expiry: date
    strike: float
    option_type: OptionType
    lot_size: int
    freeze_quantity: int | None
    tick_size: float  # rupees


@dataclass(frozen=True, slots=True)
class ExpiryContracts:
    """Every listed strike of one expiry with its call and put keys (None where a side is not listed)."""

    expiry: date
    strikes: tuple[float, ...]
    call_keys: tuple[str | None, ...]
    put_keys: tuple[str | None, ...]
    lot_size: int
    tick_size: float
    freeze_quantity: int | None

    def instrument_keys(self) -> list[str]:
        return [key for key in (*self.call_keys, *self.put_keys) if key is not None]

    def around(self, spot: float, strikes_each_side: int) -> ExpiryContracts:
        """Only the `strikes_each_side` strikes either side of the strike nearest `spot`."""
        if not self.strikes:
            return self
        atm = min(range(len(self.strikes)), key=lambda i: abs(self.strikes[i] - spot))
        lo, hi = max(0, atm - strikes_each_side), atm + strikes_each_side + 1
        return ExpiryContracts(
            expiry=self.expiry,
            strikes=self.strikes[lo:hi],
            call_keys=self.call_keys[lo:hi],
            put_keys=self.put_keys[lo:hi],
            lot_size=self.lot_size,
            tick_size=self.tick_size,
            freeze_quantity=self.freeze_quantity,
        )


@dataclass(frozen=True, slots=True)
class NiftyOptionUniverse:
    """The NIFTY options of one master file. `dropped_rows` counts NIFTY rows that could not be read."""

    options: tuple[NiftyOption, ...]
    dropped_rows: int = 0

    def expiries(self) -> tuple[date, ...]:
        return tuple(sorted({option.expiry for option in self.options}))

    def contracts(self, expiry: date) -> ExpiryContracts:
        legs = [option for option in self.options if option.expiry == expiry]
        if not legs:
            raise InstrumentMasterError(
                f"the instrument master lists no NIFTY options expiring {expiry}; listed expiries: "
                f"{[d.isoformat() for d in self.expiries()[:8]]}"
            )
        lot_sizes = {leg.lot_size for leg in legs}
        if len(lot_sizes) != 1:
            raise InstrumentMasterError(f"NIFTY {expiry}: contracts disagree on lot size {sorted(lot_sizes)}")
        ticks = {leg.tick_size for leg in legs}
        if len(ticks) != 1:
            raise InstrumentMasterError(f"NIFTY {expiry}: contracts disagree on tick size {sorted(ticks)}")
        freezes = {leg.freeze_quantity for leg in legs if leg.freeze_quantity is not None}
        strikes = sorted({leg.strike for leg in legs})
        calls = {leg.strike: leg.instrument_key for leg in legs if leg.option_type is OptionType.CE}
        puts = {leg.strike: leg.instrument_key for leg in legs if leg.option_type is OptionType.PE}
        return ExpiryContracts(
            expiry=expiry,
            strikes=tuple(strikes),
            call_keys=tuple(calls.get(strike) for strike in strikes),
            put_keys=tuple(puts.get(strike) for strike in strikes),
            lot_size=lot_sizes.pop(),
            tick_size=ticks.pop(),
            # The exchange freeze limit is per underlying; if rows disagree, the smallest is the safe one.
            freeze_quantity=min(freezes) if freezes else None,
        )

    def nearest_expiries(self, as_of: date, count: int) -> tuple[date, ...]:
        return tuple(d for d in self.expiries() if d >= as_of)[:count]


def _expiry(value: Any) -> date:
    if isinstance(value, bool):
        raise ValueError(f"expiry {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=IST).date()
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    raise ValueError(f"expiry {value!r}")


def _positive_number(row: dict[str, Any], name: str) -> float:
    value = row.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}={value!r}")
    return float(value)


def _is_nifty_option(row: dict[str, Any]) -> bool:
    symbol = row.get("underlying_symbol") or row.get("name")
    return (
        row.get("segment") == "NSE_FO"
        and row.get("instrument_type") in ("CE", "PE")
        and isinstance(symbol, str)
        and symbol.strip().upper() == NIFTY_SYMBOL
    )


def parse_instrument_master(raw: bytes) -> NiftyOptionUniverse:
    """NIFTY options from the master file's bytes (gzip'd or plain JSON)."""
    try:
        text = gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
        rows = json.loads(text)
    except (OSError, EOFError, ValueError) as exc:
        raise InstrumentMasterError(f"instrument master is not (gzip'd) JSON: {exc}") from None
    if not isinstance(rows, list):
        raise InstrumentMasterError(f"instrument master must be a JSON array, got {type(rows).__name__}")
    options: list[NiftyOption] = []
    reasons: Counter[str] = Counter()
    for row in rows:
        if not isinstance(row, dict) or not _is_nifty_option(row):
            continue
        try:
            key = row["instrument_key"]
            if not isinstance(key, str) or not key:
                raise ValueError(f"instrument_key={key!r}")
            freeze = row.get("freeze_quantity")
            options.append(
                NiftyOption(
                    instrument_key=key,
                    trading_symbol=str(row.get("trading_symbol", "")),
                    expiry=_expiry(row.get("expiry")),
                    strike=_positive_number(row, "strike_price"),
                    option_type=OptionType(row["instrument_type"]),
                    lot_size=int(_positive_number(row, "lot_size")),
                    freeze_quantity=int(freeze) if isinstance(freeze, int | float) and freeze > 0 else None,
                    tick_size=_positive_number(row, "tick_size") / PAISE_PER_RUPEE,
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            reasons[f"{type(exc).__name__}: {exc}"] += 1
    dropped = sum(reasons.values())
    if dropped:
        log.warning("instrument master: dropped %d unreadable NIFTY option rows: %s", dropped, dict(reasons))
    if not options:
        raise InstrumentMasterError("instrument master holds no NIFTY index options (segment NSE_FO)")
    return NiftyOptionUniverse(options=tuple(options), dropped_rows=dropped)


async def load_instrument_master(source: str | Path, http: UpstoxHttp | None = None) -> NiftyOptionUniverse:
    """Read the master from an http(s) URL (through `http`) or a local file (gzip'd or not)."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        if http is None:
            raise ValueError("loading the instrument master from a URL needs an UpstoxHttp client")
        raw = await http.get_bytes(text)
    else:
        raw = Path(source).read_bytes()
    universe = parse_instrument_master(raw)
    log.info(
        "instrument master: %d NIFTY options over %d expiries (%d rows dropped)",
        len(universe.options),
        len(universe.expiries()),
        universe.dropped_rows,
    )
    return universe


def subscription_keys(contracts: Iterable[ExpiryContracts]) -> list[str]:
    """Every option key of the given expiries, in a stable order, without duplicates."""
    seen: dict[str, None] = {}
    for expiry_contracts in contracts:
        for key in expiry_contracts.instrument_keys():
            seen.setdefault(key, None)
    return list(seen)


def describe(expiries: Sequence[date]) -> str:
    return ", ".join(d.isoformat() for d in expiries)
