"""One instant's expiries, gathered: complete on the last one, overtaken sets handed on marked, and a
set is done only once it was processed."""

from __future__ import annotations

from datetime import date, timedelta

from volguard_analytics.chain_sets import ChainSet, ChainSetAssembler
from volguard_common import events
from volguard_common.events_samples import DEFAULT_TS_EVENT, sample_chain_snapshot

EXPIRIES = (date(2026, 2, 10), date(2026, 2, 17), date(2026, 2, 24))


def chain(expiry: date, seconds: int = 0, expected: int | None = 3) -> events.ChainSnapshot:
    snapshot = sample_chain_snapshot(5, expiry=expiry, ts_event=DEFAULT_TS_EVENT + timedelta(seconds=seconds))
    return snapshot.model_copy(update={"expiries_in_set": expected})


def processed(assembler: ChainSetAssembler, sets: list[ChainSet]) -> list[ChainSet]:
    """What the service does: every set handed on is processed, then marked so."""
    for chain_set in sets:
        assembler.processed(chain_set)
    return sets


def test_set_completes_with_its_last_expiry() -> None:
    assembler = ChainSetAssembler()
    assert assembler.add(chain(EXPIRIES[1])) == []
    assert assembler.add(chain(EXPIRIES[0])) == []
    (done,) = processed(assembler, assembler.add(chain(EXPIRIES[2])))
    assert done.complete
    assert done.expiries == EXPIRIES
    assert done.ts_event == DEFAULT_TS_EVENT


def test_a_later_instant_closes_an_incomplete_set_marked_incomplete() -> None:
    assembler = ChainSetAssembler()
    assembler.add(chain(EXPIRIES[0]))
    assembler.add(chain(EXPIRIES[1]))
    (overtaken,) = processed(assembler, assembler.add(chain(EXPIRIES[0], seconds=1)))
    assert not overtaken.complete
    assert overtaken.expiries == EXPIRIES[:2]


def test_redelivered_snapshot_is_not_counted_twice() -> None:
    assembler = ChainSetAssembler()
    first = chain(EXPIRIES[0])
    assert assembler.add(first) == []
    assert assembler.add(first) == []
    assert assembler.add(chain(EXPIRIES[1])) == []
    (done,) = processed(assembler, assembler.add(chain(EXPIRIES[2])))
    assert len(done.snapshots) == 3


def test_late_snapshots_are_ignored() -> None:
    assembler = ChainSetAssembler()
    for expiry in EXPIRIES:
        processed(assembler, assembler.add(chain(expiry, seconds=5)))
    assert assembler.add(chain(EXPIRIES[0], seconds=4)) == []
    assert assembler.add(chain(EXPIRIES[0], seconds=5)) == []
    assert assembler.late_dropped == 2


def test_without_a_set_size_a_set_closes_at_the_next_instant_or_on_flush() -> None:
    assembler = ChainSetAssembler()
    assembler.add(chain(EXPIRIES[0], expected=None))
    assembler.add(chain(EXPIRIES[1], expected=None))
    (closed,) = processed(assembler, assembler.add(chain(EXPIRIES[0], seconds=1, expected=None)))
    assert closed.expiries == EXPIRIES[:2]
    (flushed,) = processed(assembler, assembler.flush())
    assert flushed.ts_event == DEFAULT_TS_EVENT + timedelta(seconds=1)
    assert assembler.flush() == []


def test_a_set_whose_processing_failed_is_handed_on_again_with_the_redelivery() -> None:
    # Issue 13 item 8: the set was marked done before it was processed, so the redelivery of its last
    # snapshot after a transient failure was dropped as late and the instant never published.
    assembler = ChainSetAssembler()
    assembler.add(chain(EXPIRIES[0]))
    assembler.add(chain(EXPIRIES[1]))
    last = chain(EXPIRIES[2])
    (first_attempt,) = assembler.add(last)  # processing fails: `processed` is not called
    (retried,) = assembler.add(last)  # the bus redelivers the entry that failed
    assert retried == first_attempt
    assert retried.complete
    assert retried.expiries == EXPIRIES
    assert assembler.late_dropped == 0
    assembler.processed(retried)
    # Once processed, a further copy is late, and the set is not handed on again.
    assert assembler.add(last) == []
    assert assembler.late_dropped == 1


def test_an_unprocessed_set_goes_first_when_the_next_instant_arrives() -> None:
    assembler = ChainSetAssembler()
    for expiry in EXPIRIES:
        failed = assembler.add(chain(expiry))
    assert [s.ts_event for s in failed] == [DEFAULT_TS_EVENT]  # processing fails
    # The next instant's first snapshot brings the failed set back first; this time it is processed.
    (again,) = processed(assembler, assembler.add(chain(EXPIRIES[0], seconds=1)))
    assert (again.ts_event, again.complete) == (DEFAULT_TS_EVENT, True)
    assembler.add(chain(EXPIRIES[1], seconds=1))
    (later,) = processed(assembler, assembler.add(chain(EXPIRIES[2], seconds=1)))
    assert (later.ts_event, later.complete) == (DEFAULT_TS_EVENT + timedelta(seconds=1), True)


def test_a_set_that_always_fails_is_abandoned_after_its_attempts() -> None:
    assembler = ChainSetAssembler(max_attempts=2)
    for expiry in EXPIRIES:
        assembler.add(chain(expiry))
    assert len(assembler.add(chain(EXPIRIES[2]))) == 1  # second attempt
    assert assembler.add(chain(EXPIRIES[2])) == []  # a third is not made
    assert assembler.abandoned == 1
