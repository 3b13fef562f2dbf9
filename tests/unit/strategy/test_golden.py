"""The strategy component gives, for a fixed scripted sequence, exactly the Evaluations recorded from
the code before its speed work (see golden.py): decisions, intents and recommendations unchanged."""

from __future__ import annotations

import json

import pytest

from tests.unit.strategy.golden import GOLDEN, replay

GOLDEN_DATA = json.loads(GOLDEN.read_text())
SCENARIOS = GOLDEN_DATA["scenarios"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_evaluations_match_the_recorded_ones(name: str) -> None:
    pairs = replay(SCENARIOS[name], GOLDEN_DATA["expiry_blocks"])
    assert pairs
    for step, (recorded, replayed) in enumerate(pairs):
        assert replayed == recorded, f"{name}: evaluation {step} differs"


def test_the_recording_exercises_entries_exits_hedges_and_waits() -> None:
    evaluations = [
        step["evaluation"] for s in SCENARIOS.values() for step in s["steps"] if step["op"] == "vol"
    ]
    kinds = {i["kind"] for e in evaluations for i in e["intents"]}
    assert kinds == {"ENTRY", "EXIT", "ADJUST"}
    structures = {i["structure"] for e in evaluations for i in e["intents"] if i["kind"] == "ENTRY"}
    assert len(structures) >= 3
    assert any(d["structure"] == "WAIT" for e in evaluations for d in e["decisions"])
    assert all(e["recommendations"]["recommendations"] or e["recommendations"]["waits"] for e in evaluations)
