"""The beat sidecars: round trips, edits kept across a restart and a re-analysis,
and every damaged or hostile sidecar giving its one exact error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from stemdeck.core.beats.analysis import BeatAnalysis
from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.beats.store import MAX_SIDECAR_BYTES, BeatRecord, BeatStore, audio_hash
from stemdeck.core.errors import BeatStoreError, ParameterError

KEY = "0123456789abcdef0123456789abcdef01234567"
ANALYSIS = BeatAnalysis(BeatGrid(120.0, 0.25, 4), 30.0, None)


def _analyze_counting(calls: list[int]):
    def analyze() -> BeatAnalysis:
        calls.append(1)
        return ANALYSIS

    return analyze


def test_audio_hash_is_the_audio_and_its_rate() -> None:
    y = np.zeros((2, 1000), np.float32)
    y[0, 10] = 0.5
    key = audio_hash(y, 44100)
    assert len(key) == 40 and key == audio_hash(y.copy(), 44100)
    assert audio_hash(y, 48000) != key
    z = y.copy()
    z[1, 999] = 1e-6
    assert audio_hash(z, 44100) != key


def test_round_trip_and_edit_survive_a_restart(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    calls: list[int] = []
    record, computed = store.load_or_analyze(KEY, _analyze_counting(calls))
    assert computed and calls == [1] and record == BeatRecord(ANALYSIS, None)
    store.edit(KEY, BeatGrid.halved)
    again = BeatStore(tmp_path)  # a new process: only the file is shared
    record, computed = again.load_or_analyze(KEY, _analyze_counting(calls))
    assert not computed and calls == [1]
    assert record.analysis == ANALYSIS
    assert record.edit == BeatGrid(60.0, 0.25, 4)
    assert record.grid == BeatGrid(60.0, 0.25, 4)
    assert record.effective() == BeatAnalysis(BeatGrid(60.0, 0.25, 4), 30.0, None)
    assert again.clear_edit(KEY) == BeatRecord(ANALYSIS, None)
    assert BeatStore(tmp_path).load(KEY) == BeatRecord(ANALYSIS, None)


def test_a_new_analysis_keeps_the_edit(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    edit = BeatGrid(99.0, 0.1, 3)
    path = store.path(KEY)
    path.parent.mkdir(parents=True)
    # an analysis of an older version: computed again, the edit kept
    path.write_text(
        '{"format": 1, "analysis": {"bpm": 120, "downbeat": 0, "beats_per_bar": 4,'
        ' "duration": 30, "key": null, "version": 0},'
        ' "edit": {"bpm": 99.0, "downbeat": 0.1, "beats_per_bar": 3}}'
    )
    calls: list[int] = []
    record, computed = store.load_or_analyze(KEY, _analyze_counting(calls))
    assert computed and calls == [1]
    assert record == BeatRecord(ANALYSIS, edit)
    assert store.load(KEY) == BeatRecord(ANALYSIS, edit)


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path: Path) -> None:
    store = BeatStore(tmp_path)
    store.save(KEY, BeatRecord(ANALYSIS, None))
    store.save(KEY, BeatRecord(ANALYSIS, BeatGrid(100.0)))
    assert sorted(p.name for p in (tmp_path / "beats").iterdir()) == [f"{KEY}.json"]


_WHERE = "beat sidecar '{path}'"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "{w}: not JSON (Expecting value: line 1 column 1 (char 0))"),
        (b"\xff\xfe{", "{w}: not UTF-8 text (invalid start byte at byte 0)"),
        (b"[1, 2]", "{w}: expected an object, got list"),
        (b'{"format": 2}', "{w}: format 2, this stemdeck reads 1"),
        (b'{"analysis": null}', "{w}: format None, this stemdeck reads 1"),
        (
            b'{"format": 1, "analysis": {"bpm": "fast", "downbeat": 0, "beats_per_bar": 4}}',
            "{w} analysis: 'bpm' must be a number, got 'fast'",
        ),
        (
            b'{"format": 1, "analysis": {"bpm": NaN, "downbeat": 0, "beats_per_bar": 4}}',
            "{w} analysis: 'bpm' must be finite, got nan",
        ),
        (
            b'{"format": 1, "analysis": {"bpm": 1e9, "downbeat": 0, "beats_per_bar": 4,'
            b' "duration": 3}}',
            "{w} analysis: tempo must be 20 to 400 BPM, got 1000000000.0",
        ),
        (
            b'{"format": 1, "analysis": {"bpm": 120, "downbeat": 0, "beats_per_bar": true}}',
            "{w} analysis: 'beats_per_bar' must be a whole number, got True",
        ),
        (
            b'{"format": 1, "analysis": {"bpm": 120, "downbeat": 0, "beats_per_bar": 4,'
            b' "duration": -1}}',
            "{w} analysis: 'duration' must be positive, got -1.0",
        ),
        (
            b'{"format": 1, "analysis": {"bpm": 120, "downbeat": 0, "beats_per_bar": 4,'
            b' "duration": 3, "key": ["C"]}}',
            "{w} analysis: 'key' must be a short text or null",
        ),
        (b'{"format": 1, "edit": "double"}', "{w} edit: expected an object, got str"),
        (b"[" * 100000, "{w}: larger than 65536 bytes"),
        (
            b"[" * 5000 + b"]" * 5000,
            "{w}: not JSON (maximum recursion depth exceeded while "
            "decoding a JSON array from a unicode string)",
        ),
    ],
)
def test_a_damaged_sidecar_is_one_exact_error_and_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, message: str
) -> None:
    store = BeatStore(tmp_path)
    path = store.path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    expected = message.format(w=_WHERE.format(path=path))
    with pytest.raises(BeatStoreError) as info:
        store.load(KEY)
    assert str(info.value) == expected
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="stemdeck.core.beats.store"):
        record, computed = store.load_or_analyze(KEY, _analyze_counting(calls))
    assert computed and calls == [1] and record == BeatRecord(ANALYSIS, None)
    assert [r.getMessage() for r in caplog.records] == [f"{expected}; analysing the track again"]
    assert store.load(KEY) == BeatRecord(ANALYSIS, None)  # the damaged file was replaced


def test_the_size_limit_is_what_the_error_says() -> None:
    assert MAX_SIDECAR_BYTES == 65536


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 40, "0" * 39, "", "0" * 40 + "/"])
def test_a_key_that_is_not_a_hash_names_no_file(tmp_path: Path, key: str) -> None:
    with pytest.raises(ParameterError) as info:
        BeatStore(tmp_path).path(key)
    assert str(info.value) == f"a beat store key is 40 hex digits, got {key!r}"


def test_editing_a_track_with_no_grid_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(BeatStoreError) as info:
        BeatStore(tmp_path).edit(KEY, BeatGrid.halved)
    assert str(info.value) == f"no beat grid stored for track {KEY}; analyse it first"


def test_an_unwritable_store_still_returns_the_analysis(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A store that cannot be written (here its folder is a file, which stops root too,
    # where a read-only folder would not) still gives the analysis, and says why: it
    # could not read the sidecar, then could not keep the new analysis.
    (tmp_path / "beats").write_text("not a folder")
    store = BeatStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="stemdeck.core.beats.store"):
        record, computed = store.load_or_analyze(KEY, _analyze_counting([]))
    assert computed and record == BeatRecord(ANALYSIS, None)
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read beat sidecar '{store.path(KEY)}': Not a directory; analysing the track again",
        f"cannot write beat sidecar '{store.path(KEY)}': File exists; the analysis is not kept",
    ]


def test_a_store_whose_folder_is_a_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "beats").write_text("not a folder")
    store = BeatStore(tmp_path)
    with pytest.raises(BeatStoreError) as info:
        store.save(KEY, BeatRecord(ANALYSIS, None))
    assert str(info.value) == f"cannot write beat sidecar '{store.path(KEY)}': File exists"


def test_the_separation_cache_never_evicts_the_beat_sidecars(tmp_path: Path) -> None:
    from stemdeck.core.separation.cache import SeparationCache

    BeatStore(tmp_path).save(KEY, BeatRecord(ANALYSIS, BeatGrid(100.0)))
    cache = SeparationCache(tmp_path, max_bytes=1)  # every write evicts all it can
    for key in ("a" * 40, "b" * 40):
        with cache.writer(key, 1, (1, 10)) as w:
            w.add_channel("x", np.zeros((1, 10), np.float32))
    assert not (tmp_path / ("a" * 40)).exists()  # evicted: the limit is real
    assert BeatStore(tmp_path).load(KEY) == BeatRecord(ANALYSIS, BeatGrid(100.0))
