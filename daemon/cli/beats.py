"""``stemdeck beats``: a track's tempo, beat grid and downbeats, and the grid's edits.

The analysis is read from the track's sidecar in the cache folder
(``core/beats/store.py``) when there is one, else computed and stored there; an
edit flag changes the grid in force and stores it as the user's edit, which a
new analysis never overwrites.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from stemdeck.core.audiofile.files import load, printable_name
from stemdeck.core.beats.analysis import BeatAnalysis, analyze_beats
from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.beats.store import BeatRecord, BeatStore, audio_hash
from stemdeck.core.separation.cache import default_cache_dir

__all__ = ["cmd_beats", "summary_lines"]

log = logging.getLogger(__name__)


def _edit_of(args: argparse.Namespace) -> tuple[str, Callable[[BeatGrid], BeatGrid]] | None:
    """The edit the flags ask for, as (description, change), or None."""
    if args.halve:
        return "halved", BeatGrid.halved
    if args.double:
        return "doubled", BeatGrid.doubled
    if args.set_bpm is not None:
        bpm = args.set_bpm
        return f"set to {bpm:g} BPM", lambda g: g.with_bpm(bpm)
    if args.shift is not None:
        ms = args.shift
        return f"shifted {ms:+g} ms", lambda g: g.shifted(ms)
    if args.downbeat_at is not None:
        t = args.downbeat_at
        return f"a downbeat at {t:g} s", lambda g: g.with_downbeat_at(t)
    return None


def _first_downbeat(analysis: BeatAnalysis) -> float:
    """The first bar start the track holds (the grid's, for a track shorter than a bar)."""
    downbeats = analysis.downbeats()
    return float(downbeats[0]) if len(downbeats) else analysis.grid.downbeat


def summary_lines(name: str, record: BeatRecord) -> list[str]:
    """The text form: the grid in force, how many beats and bars, the key."""
    shown = record.effective()
    assert shown is not None  # a record from load_or_analyze has an analysis
    grid = shown.grid
    lines = [
        f"{name}: {grid.bpm:.2f} BPM, {grid.beats_per_bar} beats a bar, "
        f"first downbeat at {_first_downbeat(shown):.3f} s",
        f"{len(shown.beats())} beats, {len(shown.downbeats())} bars in {shown.duration:.1f} s; "
        f"key: {shown.key or 'not estimated'}",
    ]
    if record.edit is not None and record.analysis is not None:
        lines.append(
            f"edited grid (the analysis found {record.analysis.bpm:.2f} BPM, "
            f"first downbeat at {_first_downbeat(record.analysis):.3f} s)"
        )
    return lines


def cmd_beats(args: argparse.Namespace) -> int:
    y, sr = load(args.track)  # a stem file gives its mix
    name = printable_name(args.track)
    key = audio_hash(y, sr)
    store = BeatStore(default_cache_dir())

    def analyze() -> BeatAnalysis:
        t0 = time.perf_counter()
        analysis = analyze_beats(y, sr)
        log.debug("%s: analysed in %.2f s", name, time.perf_counter() - t0)
        return analysis

    if args.no_cache:
        record = BeatRecord(analyze())
    else:
        record, _ = store.load_or_analyze(key, analyze)
    edit = _edit_of(args)
    if args.reset_edit and not args.no_cache:
        record = store.clear_edit(key) or record
    elif edit is not None:
        what, change = edit
        if args.no_cache:
            assert record.grid is not None  # an analysis was just made
            record = replace(record, edit=change(record.grid))
        else:
            record = store.edit(key, change)
        log.info("%s: grid %s", name, what)
    shown = record.effective()
    assert shown is not None
    if args.json:
        print(json.dumps(shown.as_dict()))
    else:
        for line in summary_lines(name, record):
            print(line)
    return 0
