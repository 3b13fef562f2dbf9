"""Parsers for daily history files as people download them (NSE index and VIX CSVs, ISO-date CSVs).

Reading files is I/O, so this lives with market_data (which imports history), not in the pure quant
package; `volguard history import` and the tests over ../shared/data use it.

The real files carry quirks this module absorbs: a UTF-8 byte-order mark, trailing spaces in the
column names (`"Date "`), `16-DEC-2025` dates, newest-first or oldest-first row order, thousands
separators inside quoted numbers. Every data row either lands in the frame or is reported in
`bad_rows` with its file line number and the reason: nothing is dropped silently, because a gap
the caller cannot see turns into a wrong realised vol or a wrong GARCH fit later.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from volguard_common.file_rows import BadRow

# Formats seen in NSE downloads and in hand-made files; tried in order, first match wins. A row
# whose date matches none of them is a bad row, not a guess.
_DATE_FORMATS = ("%d-%b-%Y", "%Y-%m-%d", "%d-%m-%Y", "%d %b %Y", "%d-%b-%y", "%d/%m/%Y")
_PRICE_COLUMNS = ("open", "high", "low", "close")
# Cells that mean "no value" in broker and exchange exports; they make the row bad, never zero.
_MISSING_MARKERS = frozenset({"", "-", "na", "n/a", "nan", "null", "none"})


@dataclass(frozen=True, slots=True)
class DailyBars:
    """Parsed daily history: `frame` is indexed by a DatetimeIndex named `date`, ascending, unique.

    Columns are the file's value columns in snake_case (`open`, `high`, `low`, `close`,
    `shares_traded`, `turnover_cr`, `pct_change`, `atm_iv`, ...), all float64.
    """

    frame: pd.DataFrame
    bad_rows: list[BadRow]


def column_key(header: str) -> str:
    """Normalise a header cell: `"Turnover (₹ Cr)"` -> `turnover_cr`, `"% Change "` -> `pct_change`."""
    text = header.strip().lower().replace("%", " pct ")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def _parse_date(text: str) -> date | None:
    cell = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cell, fmt).date()
        except ValueError:
            continue
    return None


def _parse_number(text: str) -> float | None:
    cell = text.strip().replace(",", "")
    if cell.lower() in _MISSING_MARKERS:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_text(source: Path | str) -> str:
    if isinstance(source, Path):
        return source.read_bytes().decode("utf-8-sig")
    if "\n" not in source and "," not in source:
        raise ValueError("a str is parsed as CSV text; pass a pathlib.Path to read a file")
    return source.removeprefix("\ufeff")


def parse_daily_csv(source: Path | str) -> DailyBars:
    """Parse a daily CSV (a `Path` is read as a file, a `str` is the CSV text itself).

    The first non-blank line is the header and must contain a `Date` column and at least one value
    column. A data row is rejected (and reported) when its date does not parse, a value is missing
    or non-numeric, a price is not positive, high < low, open or close lies outside [low, high],
    it has the wrong number of cells, or its date repeats an earlier row (the first is kept).
    Blank lines carry no data and are skipped.
    """
    reader = csv.reader(io.StringIO(_read_text(source)))
    header: list[str] | None = None
    header_line = 0
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [column_key(cell) for cell in row]
            header_line = reader.line_num
            break
    if header is None:
        raise ValueError("no header line found")
    if "date" not in header:
        raise ValueError(f"header on line {header_line} has no Date column: {header}")
    if len(set(header)) != len(header):
        raise ValueError(f"duplicate column names after normalisation: {header}")
    date_pos = header.index("date")
    value_columns = [name for name in header if name != "date"]
    if not value_columns:
        raise ValueError("the file has a Date column but no value columns")

    bad_rows: list[BadRow] = []
    dates: list[date] = []
    values: list[list[float]] = []
    first_seen: dict[date, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad_rows.append(BadRow(line, f"expected {len(header)} cells, found {len(row)}"))
            continue
        day = _parse_date(row[date_pos])
        if day is None:
            bad_rows.append(BadRow(line, f"unparseable date {row[date_pos].strip()!r}"))
            continue
        record: dict[str, float] = {}
        reason = None
        for name, cell in zip(header, row, strict=True):
            if name == "date":
                continue
            number = _parse_number(cell)
            if number is None:
                reason = f"non-numeric {name} {cell.strip()!r}"
                break
            record[name] = number
        if reason is None:
            reason = _price_problem(record)
        if reason is not None:
            bad_rows.append(BadRow(line, reason))
            continue
        if day in first_seen:
            bad_rows.append(
                BadRow(line, f"duplicate date {day.isoformat()} (first on line {first_seen[day]})")
            )
            continue
        first_seen[day] = line
        dates.append(day)
        values.append([record[name] for name in value_columns])

    index = pd.DatetimeIndex(pd.to_datetime(dates), name="date")
    data = np.array(values, dtype=np.float64).reshape(len(values), len(value_columns))
    frame = pd.DataFrame(data, index=index, columns=value_columns).sort_index()
    return DailyBars(frame=frame, bad_rows=bad_rows)


def _price_problem(record: dict[str, float]) -> str | None:
    for name in _PRICE_COLUMNS:
        if name in record and record[name] <= 0.0:
            return f"{name} {record[name]} is not positive"
    high = record.get("high")
    low = record.get("low")
    if high is None or low is None:
        return None
    if high < low:
        return f"high {high} < low {low}"
    for name in ("open", "close"):
        price = record.get(name)
        if price is not None and not low <= price <= high:
            return f"{name} {price} outside [low {low}, high {high}]"
    return None
