"""One instant's expiries, gathered: complete on the last one, overtaken sets handed on marked."""

from __future__ import annotations

from datetime import date, timedelta

from volguard_analytics.chain_sets import ChainSetAssembler
from volguard_common import events
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot

EXPIRIES = (date(2026, 2, 10), date(2026, 2, 17), date(2026, 2, 24))


def chain(expiry: date, seconds: int = 0, expected: int | None = 3) -> events.ChainSnapshot:
    snapshot = sample_chain_snapshot(5, expiry=expiry, ts_event=DEFAULT_TS_EVENT + timedelta(seconds=seconds))
    return snapshot.model_copy(update={"expiries_in_set": expected})


def test_set_completes_with_its_last_expiry() -> None:
    assembler = ChainSetAssembler()
    assert assembler.add(chain(EXPIRIES[1])) == []
    assert assembler.add(chain(EXPIRIES[0])) == []
    (done,) = assembler.add(chain(EXPIRIES[2]))
    assert done.complete
    assert done.expiries == EXPIRIES
    assert done.ts_event == DEFAULT_TS_EVENT


def test_a_later_instant_closes_an_incomplete_set_marked_incomplete() -> None:
    assembler = ChainSetAssembler()
    assembler.add(chain(EXPIRIES[0]))
    assembler.add(chain(EXPIRIES[1]))
    (overtaken,) = assembler.add(chain(EXPIRIES[0], seconds=1))
    assert not overtaken.complete
    assert overtaken.expiries == EXPIRIES[:2]


def test_redelivered_snapshot_is_not_counted_twice() -> None:
    assembler = ChainSetAssembler()
    first = chain(EXPIRIES[0])
    assert assembler.add(first) == []
    assert assembler.add(first) == []
    assert assembler.add(chain(EXPIRIES[1])) == []
    (done,) = assembler.add(chain(EXPIRIES[2]))
    assert len(done.snapshots) == 3


def test_late_snapshots_are_ignored() -> None:
    assembler = ChainSetAssembler()
    for expiry in EXPIRIES:
        assembler.add(chain(expiry, seconds=5))
    assert assembler.add(chain(EXPIRIES[0], seconds=4)) == []
    assert assembler.add(chain(EXPIRIES[0], seconds=5)) == []
    assert assembler.late_dropped == 2


def test_without_a_set_size_a_set_closes_at_the_next_instant_or_on_flush() -> None:
    assembler = ChainSetAssembler()
    assembler.add(chain(EXPIRIES[0], expected=None))
    assembler.add(chain(EXPIRIES[1], expected=None))
    (closed,) = assembler.add(chain(EXPIRIES[0], seconds=1, expected=None))
    assert closed.expiries == EXPIRIES[:2]
    (flushed,) = assembler.flush()
    assert flushed.ts_event == DEFAULT_TS_EVENT + timedelta(seconds=1)
    assert assembler.flush() == []
