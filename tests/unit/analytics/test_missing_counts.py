"""Missing is not zero (issue 14): a strike whose open interest or volume was not reported is left out
of PCR, max pain and the OI walls, and each expiry says how many strikes those were computed from."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from volguard_analytics.domain.calendar import EventCalendar
from volguard_analytics.domain.config import AnalyticsConfig
from volguard_analytics.domain.expiry import analyse_expiry
from volguard_analytics.domain.history import VolHistory
from volguard_analytics.domain.snapshot import VolEngine
from volguard_common import clock
from volguard_common.events import ChainColumns, ChainSnapshot, QuoteFlag, VolSnapshot, parse_event
from volguard_common.events_samples import sample_chain_snapshot
from volguard_common.quant import stats

CONFIG = AnalyticsConfig()
BAR_COLUMNS = ["trade_date", "open", "high", "low", "close"]


def _minutes(chain: ChainSnapshot) -> float:
    return clock.trading_minutes_between(chain.ts_event, clock.expiry_cutoff(chain.expiry))


def _with(chain: ChainSnapshot, **columns: list[Any]) -> ChainSnapshot:
    lists = chain.columns.as_lists()
    lists.update(columns)
    return chain.model_copy(update={"columns": ChainColumns.from_columns(lists)})


def test_strikes_without_reported_oi_are_left_out_and_counted() -> None:
    chain = sample_chain_snapshot(21)
    n = chain.n_strikes
    lists = chain.columns.as_lists()
    # The producer did not get the put OI of the three strikes nearest the money: their 0 is unknown.
    unknown = [n // 2 - 1, n // 2, n // 2 + 1]
    put_flags = list(lists["put_flags"])
    put_oi = list(lists["put_oi"])
    for i in unknown:
        put_flags[i] |= int(QuoteFlag.OI_MISSING)
        put_oi[i] = 0
    flagged = _with(chain, put_flags=put_flags, put_oi=put_oi)
    ts: datetime = chain.ts_event
    vol = analyse_expiry(flagged, ts, _minutes(flagged), CONFIG).vol

    known = np.ones(n, dtype=bool)
    known[unknown] = False
    assert vol.oi_strikes == n - len(unknown)
    assert vol.volume_strikes == n
    assert vol.pcr_oi is not None
    assert np.isclose(vol.pcr_oi, chain.put_oi[known].sum() / chain.call_oi[known].sum())
    # Max pain weighs only reported OI (both sides of an unknown strike out); every listed strike is
    # still a settlement price it may name.
    call_oi = np.where(known, chain.call_oi, 0)
    put_oi_known = np.where(known, chain.put_oi, 0)
    assert vol.max_pain == stats.max_pain(chain.strike, call_oi, put_oi_known).strike
    # Read as zeros instead, the same strikes would give another PCR: the test can tell the two apart.
    as_zero = _with(chain, put_oi=put_oi)
    zero_vol = analyse_expiry(as_zero, ts, _minutes(as_zero), CONFIG).vol
    assert zero_vol.oi_strikes == n
    assert zero_vol.pcr_oi is not None
    assert not np.isclose(zero_vol.pcr_oi, vol.pcr_oi)


def test_no_reported_oi_at_all_leaves_every_oi_statistic_unknown() -> None:
    chain = sample_chain_snapshot(11)
    n = chain.n_strikes
    lists = chain.columns.as_lists()
    flags = [int(f) | int(QuoteFlag.OI_MISSING | QuoteFlag.VOLUME_MISSING) for f in lists["call_flags"]]
    blank = _with(chain, call_flags=flags, call_oi=[0] * n, call_volume=[0] * n)
    vol = analyse_expiry(blank, blank.ts_event, _minutes(blank), CONFIG).vol
    assert (vol.oi_strikes, vol.volume_strikes) == (0, 0)
    assert vol.pcr_oi is None
    assert vol.pcr_volume is None
    assert vol.max_pain is None
    assert vol.call_oi_wall is None
    assert vol.put_oi_wall is None


def test_version_1_vol_snapshots_still_read() -> None:
    # Schema 2 of VolSnapshot added optional fields (strike counts, trend direction and strength, the
    # 30-day ATM IV): a version 1 payload, written before them, reads with them unknown.
    engine = VolEngine(CONFIG, VolHistory(index_bars=pd.DataFrame(columns=BAR_COLUMNS)), EventCalendar(()))
    snapshot = engine.snapshot([sample_chain_snapshot(21).model_copy(update={"expiries_in_set": 1})])
    payload = json.loads(snapshot.model_dump_json())
    assert payload["schema_version"] == 2
    payload["schema_version"] = 1
    for block in payload["expiries"]:
        del block["oi_strikes"], block["volume_strikes"]
    del payload["regime"]["trend_direction"], payload["regime"]["trend_strength"]
    old = parse_event(json.dumps(payload))
    assert isinstance(old, VolSnapshot)
    assert old.schema_version == 1
    assert old.expiries[0].oi_strikes is None
    assert old.regime.trend_direction is None
