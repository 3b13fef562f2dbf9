"""Daily history into market.daily_bars: real NSE files, idempotent re-import, bad rows, the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.unit.quant.shared_data import shared_data
from volguard_cli.infra import InfraEndpoints
from volguard_common import db
from volguard_common.daily_bars import read_daily_bars
from volguard_market_data.history import (
    INDIAVIX,
    NIFTY,
    NIFTY_ATM_IV,
    SymbolInferenceError,
    import_daily_bars,
    write_daily_bars,
)
from volguard_market_data.history_files import parse_daily_csv

NIFTY_FILE = shared_data("nifty50_daily_nse.csv")
VIX_FILE = shared_data("india_vix_daily_nse.csv")


def _database_url(endpoints: InfraEndpoints, name: str) -> str:
    return str(urlunsplit(urlsplit(endpoints.database_url)._replace(path=f"/{name}")))


@pytest.fixture
async def fresh_url(endpoints: InfraEndpoints) -> AsyncIterator[str]:
    """A database name nobody has created yet; dropped afterwards."""
    name = f"vg_test_{uuid.uuid4().hex[:12]}"
    yield _database_url(endpoints, name)
    admin = await asyncpg.connect(_database_url(endpoints, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {db.quote_ident(name)} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def pool(fresh_url: str) -> AsyncIterator[db.Pool]:
    await db.ensure_database(fresh_url)
    created = await db.create_pool(fresh_url, min_size=1, max_size=2)
    await db.ensure_core_schema(created)
    await db.apply_migrations(created, "market", db.load_migrations("volguard_market_data"))
    yield created
    await created.close()


async def _row(pool: db.Pool, symbol: str, day: date) -> asyncpg.Record:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT open, high, low, close, volume, source FROM market.daily_bars "
        "WHERE symbol = $1 AND trade_date = $2",
        symbol,
        day,
    )
    assert row is not None, (symbol, day)
    return row


async def test_real_nse_files_import_with_inferred_symbols_and_exact_values(pool: db.Pool) -> None:
    nifty = await import_daily_bars(pool, NIFTY_FILE)
    vix = await import_daily_bars(pool, VIX_FILE)

    assert (nifty.symbol, vix.symbol) == (NIFTY, INDIAVIX)
    assert (nifty.inserted, nifty.updated, nifty.unchanged, nifty.bad_rows) == (250, 0, 0, ())
    assert (vix.inserted, vix.updated, vix.unchanged, vix.bad_rows) == (248, 0, 0, ())
    assert nifty.last_date == date(2025, 12, 16)
    assert vix.first_date == date(2024, 5, 16)

    # First data line of the NIFTY file: 16-DEC-2025,25951.5,25980.75,25834.35,25860.1,264351195,...
    row = await _row(pool, NIFTY, date(2025, 12, 16))
    assert (row["open"], row["high"], row["low"], row["close"]) == (
        Decimal("25951.5"),
        Decimal("25980.75"),
        Decimal("25834.35"),
        Decimal("25860.1"),
    )
    assert row["volume"] == 264351195
    assert row["source"] == "nse-csv:nifty50_daily_nse.csv"
    # India VIX has no volume column: unknown, not zero.
    vix_row = await _row(pool, INDIAVIX, date(2024, 5, 16))
    assert (vix_row["open"], vix_row["close"], vix_row["volume"]) == (
        Decimal("20.2725"),
        Decimal("19.995"),
        None,
    )

    counts = await pool.fetch(
        "SELECT symbol, count(*) AS n FROM market.daily_bars GROUP BY symbol ORDER BY 1"
    )
    assert [(r["symbol"], r["n"]) for r in counts] == [(INDIAVIX, 248), (NIFTY, 250)]


async def test_second_import_changes_nothing_and_a_corrected_value_is_an_update(
    pool: db.Pool, tmp_path: Path
) -> None:
    await import_daily_bars(pool, NIFTY_FILE)
    before = await pool.fetch("SELECT * FROM market.daily_bars ORDER BY symbol, trade_date")

    again = await import_daily_bars(pool, NIFTY_FILE)

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 250)
    assert await pool.fetch("SELECT * FROM market.daily_bars ORDER BY symbol, trade_date") == before

    # A later download corrects one close and adds one day.
    lines = NIFTY_FILE.read_bytes().decode("utf-8-sig").splitlines()
    assert lines[1].startswith("16-DEC-2025,")
    corrected = lines[1].replace(",25860.1,", ",25861.1,")
    extra = "17-DEC-2025,25860.0,25900.0,25800.0,25850.0,100,10.0"
    (tmp_path / "nifty_update.csv").write_text("\n".join([lines[0], extra, corrected, *lines[2:]]) + "\n")

    update = await import_daily_bars(pool, tmp_path / "nifty_update.csv")

    assert (update.inserted, update.updated, update.unchanged) == (1, 1, 249)
    row = await _row(pool, NIFTY, date(2025, 12, 16))
    assert row["close"] == Decimal("25861.1")
    assert row["source"] == "nse-csv:nifty_update.csv"
    unchanged = await _row(pool, NIFTY, date(2025, 12, 15))
    assert unchanged["source"] == "nse-csv:nifty50_daily_nse.csv"


MALFORMED = """\ufeffDate ,Open ,High ,Low ,Close ,Shares Traded ,Turnover (₹ Cr)
16-DEC-2025,25951.5,25980.75,25834.35,25860.1,264351195,23554.69
15-DEC-2025,25930.05,26047.15,25904.75,-,181557703,17444.03
12-DEC-2025,25971.2,26057.6,25938.45,26046.95,216344338,19484.07
32-DEC-2025,25771.4,25922.8,25693.25,25898.55,206099631,20145.19
10-DEC-2025,25900.0,25800.0,25700.0,25750.0,1,1.0
09-DEC-2025,25850.0,25950.0,25800.0,25900.0,2,2.0
"""


async def test_malformed_file_reports_bad_rows_with_line_numbers_and_imports_the_good_ones(
    pool: db.Pool, tmp_path: Path
) -> None:
    path = tmp_path / "nifty_broken.csv"
    path.write_text(MALFORMED, encoding="utf-8")

    report = await import_daily_bars(pool, path)

    assert report.symbol == NIFTY
    assert [bad.line for bad in report.bad_rows] == [3, 5, 6]
    assert "close" in report.bad_rows[0].reason
    assert "date" in report.bad_rows[1].reason
    assert "high" in report.bad_rows[2].reason
    assert not report.ok
    assert (report.inserted, report.rows) == (3, 3)
    days = await pool.fetch("SELECT trade_date FROM market.daily_bars WHERE symbol = 'NIFTY' ORDER BY 1")
    assert [r["trade_date"] for r in days] == [date(2025, 12, 9), date(2025, 12, 12), date(2025, 12, 16)]


async def test_symbol_inference_refuses_contradictions_and_accepts_an_override(
    pool: db.Pool, tmp_path: Path
) -> None:
    # VIX content under a NIFTY name: the file says two things, so nothing is guessed.
    misnamed = tmp_path / "nifty_history.csv"
    misnamed.write_bytes(VIX_FILE.read_bytes())
    with pytest.raises(SymbolInferenceError, match="INDIAVIX"):
        await import_daily_bars(pool, misnamed)

    anonymous = tmp_path / "daily.csv"
    anonymous.write_bytes(VIX_FILE.read_bytes())
    inferred = await import_daily_bars(pool, anonymous)
    assert inferred.symbol == INDIAVIX

    overridden = await import_daily_bars(pool, misnamed, symbol="indiavix")
    assert (overridden.symbol, overridden.inserted, overridden.unchanged) == (INDIAVIX, 0, 248)

    with pytest.raises(ValueError, match="unknown symbol"):
        await import_daily_bars(pool, anonymous, symbol="BANKNIFTY")


async def test_atm_iv_files_import_as_nifty_atm_iv_with_bad_rows_by_line(
    pool: db.Pool, tmp_path: Path
) -> None:
    # nifty_atm_iv_daily.csv: ATM IV in percent, which by its values alone looks like India VIX; the
    # name says ATM IV and decides.
    report = await import_daily_bars(pool, shared_data("nifty_atm_iv_daily.csv"))
    assert report.symbol == NIFTY_ATM_IV
    assert (report.inserted, report.bad_rows) == (247, ())
    # First data line: 2024-10-17,13.05,13.47,11.06,13.39
    row = await _row(pool, NIFTY_ATM_IV, date(2024, 10, 17))
    assert (row["open"], row["high"], row["low"], row["close"]) == tuple(
        Decimal(v) for v in ("13.05", "13.47", "11.06", "13.39")
    )
    broken = tmp_path / "my_atm_iv.csv"
    broken.write_text(
        "Date,Open,High,Low,Close\n2025-11-03,12.1,12.5,11.9,12.2\n2025-11-04,12.2,12.1,11.8,12.0\n"
        "not-a-date,12,12,12,12\n2025-11-06,12.0,12.4,11.7,12.3\n",
        encoding="utf-8",
    )
    partial = await import_daily_bars(pool, broken)
    assert partial.symbol == NIFTY_ATM_IV
    assert [bad.line for bad in partial.bad_rows] == [3, 4]
    assert partial.inserted == 2


@dataclass(frozen=True)
class SeedBar:
    symbol: str
    trade_date: date
    open: float
    high: float
    low: float
    close: float
    volume: int | None


async def test_write_and_load_daily_bars(pool: db.Pool) -> None:
    seed = [
        SeedBar(NIFTY, date(2026, 1, 5), 24000.0, 24100.0, 23950.0, 24050.0, 1000),
        SeedBar(NIFTY, date(2026, 1, 2), 23900.0, 24010.0, 23880.0, 24000.0, 900),
        SeedBar(NIFTY, date(2026, 1, 6), 24050.0, 24060.0, 23900.0, 23920.5, None),
        SeedBar(INDIAVIX, date(2026, 1, 5), 13.1, 13.9, 12.8, 13.4, None),
    ]
    first = await write_daily_bars(pool, seed, "simulator:7")
    second = await write_daily_bars(pool, seed, "simulator:7")
    assert (first.inserted, first.updated, first.unchanged) == (4, 0, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 4)

    frame = await read_daily_bars(pool, NIFTY)
    assert [ts.date() for ts in frame.index] == [date(2026, 1, 2), date(2026, 1, 5), date(2026, 1, 6)]
    assert frame.index.name == "date"
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame["close"].tolist() == [24000.0, 24050.0, 23920.5]
    assert frame["volume"].iloc[:2].tolist() == [900.0, 1000.0]
    assert frame["volume"].isna().tolist() == [False, False, True]

    # Bars known before a day's session: strictly before it.
    limited = await read_daily_bars(pool, NIFTY, before=date(2026, 1, 6), limit=1)
    assert [ts.date() for ts in limited.index] == [date(2026, 1, 5)]
    before = await read_daily_bars(pool, NIFTY, before=date(2026, 1, 6))
    assert [ts.date() for ts in before.index] == [date(2026, 1, 2), date(2026, 1, 5)]
    assert (await read_daily_bars(pool, INDIAVIX))["close"].tolist() == [13.4]
    assert (await read_daily_bars(pool, NIFTY, before=date(2026, 1, 2))).empty
    with pytest.raises(ValueError, match="limit"):
        await read_daily_bars(pool, NIFTY, limit=0)

    with pytest.raises(ValueError, match="two bars"):
        await write_daily_bars(pool, [seed[0], seed[0]], "simulator:7")


async def test_loaded_history_matches_the_parsed_file(pool: db.Pool) -> None:
    await import_daily_bars(pool, NIFTY_FILE)
    loaded = await read_daily_bars(pool, NIFTY)
    parsed = parse_daily_csv(NIFTY_FILE).frame
    assert list(loaded.index) == list(parsed.index)
    for column in ("open", "high", "low", "close"):
        assert loaded[column].tolist() == parsed[column].tolist()
    assert loaded["volume"].tolist() == parsed["shares_traded"].tolist()


def _volguard(args: list[str], database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOLGUARD_")}
    env.update(
        {
            "VOLGUARD_DATABASE_URL": database_url,
            "VOLGUARD_STATE_DIR": str(cwd / "state"),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "volguard_cli.market_commands", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


async def _daily_bar_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM market.daily_bars"))
    finally:
        await conn.close()


async def test_cli_history_import_creates_the_schema_and_reports_each_file(
    fresh_url: str, tmp_path: Path
) -> None:
    first = await asyncio.to_thread(
        _volguard, ["history", "import", str(NIFTY_FILE), str(VIX_FILE)], fresh_url, tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert (
        f"{NIFTY_FILE}: NIFTY, 250 rows (2024-12-16..2025-12-16): 250 new, 0 updated, 0 unchanged, 0 bad rows"
        in first.stdout.splitlines()
    )
    assert "INDIAVIX, 248 rows (2024-05-16..2025-05-15): 248 new" in first.stdout

    again = await asyncio.to_thread(_volguard, ["history", "import", str(NIFTY_FILE)], fresh_url, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 new, 0 updated, 250 unchanged, 0 bad rows" in again.stdout

    assert await _daily_bar_count(fresh_url) == 250 + 248


async def test_cli_history_import_exits_1_on_bad_rows_and_missing_files(
    fresh_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "nifty_broken.csv"
    broken.write_text(MALFORMED, encoding="utf-8")

    result = await asyncio.to_thread(
        _volguard,
        ["history", "import", str(broken), str(tmp_path / "missing.csv"), "--symbol", "NIFTY"],
        fresh_url,
        tmp_path,
    )

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("3 new, 0 updated, 0 unchanged, 3 bad rows")
    assert [line.split(":")[0] for line in lines[1:]] == ["  line 3", "  line 5", "  line 6"]
    assert f"{tmp_path / 'missing.csv'}: FAILED: FileNotFoundError" in result.stderr
    assert await _daily_bar_count(fresh_url) == 3
