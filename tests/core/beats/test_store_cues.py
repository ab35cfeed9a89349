"""Hot cues in the beat sidecar: round trips, kept by edits and re-analyses, and a
damaged ``cues`` field giving its one exact error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stemdeck.core.beats.analysis import BeatAnalysis
from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.beats.store import NO_CUES, BeatRecord, BeatStore, HotCue
from stemdeck.core.errors import BeatStoreError

KEY = "0123456789abcdef0123456789abcdef01234567"
ANALYSIS = BeatAnalysis(BeatGrid(120.0, 0.25, 4), 30.0, None)
CUES = (HotCue(1.5, "acapella"), None, HotCue(0.0), *(None,) * 5)


def test_cues_round_trip_and_survive_edits_and_a_new_analysis(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    store.save(KEY, BeatRecord(ANALYSIS, None, CUES))
    assert BeatStore(tmp_path).load(KEY) == BeatRecord(ANALYSIS, None, CUES)
    raw = json.loads(store.path(KEY).read_text())
    assert raw["cues"] == {
        "1": {"position": 1.5, "scene": "acapella"},
        "3": {"position": 0.0, "scene": None},
    }
    assert store.edit(KEY, BeatGrid.halved).cues == CUES
    assert store.clear_edit(KEY) == BeatRecord(ANALYSIS, None, CUES)
    raw["analysis"]["version"] = 0  # an older analysis: computed again, cues kept
    store.path(KEY).write_text(json.dumps(raw))
    record, computed = store.load_or_analyze(KEY, lambda: ANALYSIS)
    assert computed and record.cues == CUES


def test_no_cues_writes_no_field(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    store.save(KEY, BeatRecord(ANALYSIS))
    assert "cues" not in json.loads(store.path(KEY).read_text())
    assert store.load(KEY).cues == NO_CUES  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("cues", "fault"),
    [
        ([], "cues: expected an object, got list"),
        ({"9": {"position": 1.0}}, "cues: cue '9' is not 1 to 8"),
        ({"01": {"position": 1.0}}, "cues: cue '01' is not 1 to 8"),
        ({"1": 2.0}, "cues 1: expected an object, got float"),
        ({"1": {}}, "cues 1: 'position' must be a number, got None"),
        ({"1": {"position": -1.0}}, "cues 1: 'position' must be >= 0, got -1.0"),
        ({"1": {"position": 1.0, "scene": 3}}, "cues 1: 'scene' must be a scene name or null"),
        ({"1": {"position": 1.0, "scene": ""}}, "cues 1: 'scene' must be a scene name or null"),
        (
            {"1": {"position": 1.0, "scene": "x" * 65}},
            "cues 1: 'scene' must be a scene name or null",
        ),
    ],
)
def test_a_damaged_cues_field_is_one_exact_error(tmp_path: Path, cues: object, fault: str) -> None:
    store = BeatStore(tmp_path)
    store.save(KEY, BeatRecord(ANALYSIS))
    raw = json.loads(store.path(KEY).read_text())
    raw["cues"] = cues
    store.path(KEY).write_text(json.dumps(raw))
    with pytest.raises(BeatStoreError) as failed:
        store.load(KEY)
    assert str(failed.value) == f"beat sidecar {str(store.path(KEY))!r} {fault}"
