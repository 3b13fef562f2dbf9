"""Daily CSV parsing against the real NSE files and a deliberately broken sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.unit.quant.shared_data import shared_data
from volguard_common.file_rows import BadRow
from volguard_market_data.history_files import column_key, parse_daily_csv


def test_nifty_nse_file_newest_first_with_bom_and_spaced_headers() -> None:
    bars = parse_daily_csv(shared_data("nifty50_daily_nse.csv"))
    frame = bars.frame
    assert bars.bad_rows == []
    assert len(frame) == 250
    assert list(frame.columns) == ["open", "high", "low", "close", "shares_traded", "turnover_cr"]
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "date"
    assert frame.index.is_monotonic_increasing
    assert frame.index.is_unique
    # Spot values read straight off the file (its first line is the newest day).
    assert frame.index[-1] == pd.Timestamp("2025-12-16")
    assert frame.loc["2025-12-16", "close"] == 25860.1
    assert frame.loc["2025-12-15", "high"] == 26047.15
    assert frame.index[0] == pd.Timestamp("2024-12-16")
    assert all(dtype == np.float64 for dtype in frame.dtypes)


def test_vix_file_oldest_first() -> None:
    bars = parse_daily_csv(shared_data("india_vix_daily_nse.csv"))
    frame = bars.frame
    assert bars.bad_rows == []
    assert len(frame) == 248  # every data line in the file (the data README undercounts by one)
    assert list(frame.columns) == ["open", "high", "low", "close", "prev_close", "change", "pct_change"]
    assert frame.index[0] == pd.Timestamp("2024-05-16")
    assert frame.loc["2024-05-16", "close"] == 19.995
    assert frame.loc["2024-05-17", "pct_change"] == -0.99
    assert frame.index.is_monotonic_increasing


def test_iso_date_files() -> None:
    iv = parse_daily_csv(shared_data("nifty_atm_iv_daily.csv"))
    assert iv.bad_rows == []
    assert len(iv.frame) == 247
    assert iv.frame.loc["2024-10-17", "close"] == 13.39
    ivp = parse_daily_csv(shared_data("nifty_ivp_daily.csv"))
    assert ivp.bad_rows == []
    assert list(ivp.frame.columns) == ["atm_iv", "ivp"]
    assert len(ivp.frame) == 45
    assert ivp.frame.loc["2025-04-25", "ivp"] == 53.1


def test_row_order_does_not_matter() -> None:
    text = shared_data("nifty50_daily_nse.csv").read_bytes().decode("utf-8-sig")
    header, *rows = text.strip().splitlines()
    reversed_text = "\n".join([header, *reversed(rows)]) + "\n"
    pd.testing.assert_frame_equal(
        parse_daily_csv(reversed_text).frame, parse_daily_csv(shared_data("nifty50_daily_nse.csv")).frame
    )


MALFORMED = "\ufeff" + (
    "Date ,Open ,High ,Low ,Close \n"  # line 1
    "03-JAN-2025,100,110,95,105\n"  # 2 good
    "02-JAN-2025,99,101,97,100\n"  # 3 good, out of order
    "2025-01-06,100,104,98,103\n"  # 4 good, ISO date mixed in
    "32-JAN-2025,100,110,95,105\n"  # 5 impossible date
    "07-JAN-2025,100,abc,95,105\n"  # 6 non-numeric high
    "08-JAN-2025,100,90,95,92\n"  # 7 high < low
    "03-JAN-2025,101,111,96,106\n"  # 8 duplicate of line 2
    "\n"  # 9 blank: no data, skipped
    "09-JAN-2025,100,110,95\n"  # 10 short row
    "10-JAN-2025,100,110,95,-\n"  # 11 missing close
    "13-JAN-2025,100,110,95,120\n"  # 12 close above high
    "14-JAN-2025,0,110,95,100\n"  # 13 zero open
    '15-JAN-2025,"1,000.5","1,010",990,1005\n'  # 14 good, thousands separators
)


def test_malformed_sample_reports_every_bad_row_with_its_line() -> None:
    bars = parse_daily_csv(MALFORMED)
    assert [row.line for row in bars.bad_rows] == [5, 6, 7, 8, 10, 11, 12, 13]
    reasons = dict(bars.bad_rows)
    assert "unparseable date" in reasons[5]
    assert "non-numeric high" in reasons[6]
    assert "high 90.0 < low 95.0" in reasons[7]
    assert "duplicate date 2025-01-03 (first on line 2)" in reasons[8]
    assert "expected 5 cells, found 4" in reasons[10]
    assert "non-numeric close" in reasons[11]
    assert "close 120.0 outside" in reasons[12]
    assert "open 0.0 is not positive" in reasons[13]
    assert all(isinstance(row, BadRow) for row in bars.bad_rows)
    frame = bars.frame
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2025-01-02", "2025-01-03", "2025-01-06", "2025-01-15"]
    # The duplicate's values were not used: the first occurrence wins.
    assert frame.loc["2025-01-03", "close"] == 105.0
    assert frame.loc["2025-01-15", "open"] == 1000.5
    # Every non-blank data line is either in the frame or reported.
    assert len(frame) + len(bars.bad_rows) == 12


def test_header_problems_fail_loudly() -> None:
    with pytest.raises(ValueError, match="no Date column"):
        parse_daily_csv("Day,Close\n2025-01-01,1\n")
    with pytest.raises(ValueError, match="no header"):
        parse_daily_csv("\n\n")
    with pytest.raises(ValueError, match="no value columns"):
        parse_daily_csv("Date\n2025-01-01\n")
    with pytest.raises(ValueError, match=r"pathlib\.Path"):
        parse_daily_csv("nifty.csv")


def test_header_only_file_gives_an_empty_frame() -> None:
    bars = parse_daily_csv("Date,Open,High,Low,Close\n")
    assert bars.bad_rows == []
    assert bars.frame.empty
    assert list(bars.frame.columns) == ["open", "high", "low", "close"]


def test_path_input_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_bytes(MALFORMED.encode("utf-8"))
    assert parse_daily_csv(path).bad_rows == parse_daily_csv(MALFORMED).bad_rows


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Date ", "date"),
        ("Turnover (₹ Cr)", "turnover_cr"),
        ("% Change ", "pct_change"),
        ("Prev. Close ", "prev_close"),
    ],
)
def test_column_key(header: str, key: str) -> None:
    assert column_key(header) == key
