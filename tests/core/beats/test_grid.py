"""The beat grid's edits and tap tempo: exact values."""

from __future__ import annotations

import numpy as np
import pytest

from stemdeck.core.beats.grid import BeatGrid, TapTempo
from stemdeck.core.errors import ParameterError


def test_beats_and_downbeats_cover_the_track_from_its_start() -> None:
    grid = BeatGrid(120.0, 2.25, 4)
    assert grid.beats(3.0).tolist() == [0.25, 0.75, 1.25, 1.75, 2.25, 2.75]
    assert grid.downbeats(6.0).tolist() == [0.25, 2.25, 4.25]


def test_a_point_a_hair_before_zero_is_the_first_beat_at_zero() -> None:
    grid = BeatGrid(120.0, 1.99, 4)  # bar 2 s: a downbeat at -0.01 s
    assert grid.downbeats(5.0).tolist() == [0.0, 1.99, 3.99]
    assert grid.beats(1.0).tolist() == [0.0, 0.49, 0.99]


def test_halve_and_double_keep_the_downbeat() -> None:
    grid = BeatGrid(128.0, 0.3, 4)
    assert grid.halved() == BeatGrid(64.0, 0.3, 4)
    assert grid.doubled() == BeatGrid(256.0, 0.3, 4)
    assert grid.doubled().halved() == grid


def test_set_bpm_keeps_the_bar_start_nearest_the_anchor() -> None:
    grid = BeatGrid(120.0, 0.5, 4)  # bars at 0.5, 2.5, 4.5, ...
    assert grid.with_bpm(100.0) == BeatGrid(100.0, 0.5, 4)
    moved = grid.with_bpm(100.0, anchor=4.4)  # the bar at 4.5 s stays; bars now 2.4 s
    assert moved.bpm == 100.0
    assert moved.downbeats(5.0).tolist() == pytest.approx([2.1, 4.5])


def test_shift_by_milliseconds_and_to_the_play_head() -> None:
    grid = BeatGrid(120.0, 0.5, 4)
    assert grid.shifted(25.0).downbeat == pytest.approx(0.525)
    assert grid.shifted(-600.0).downbeat == pytest.approx(1.9)  # -0.1 s is bar 1.9 s
    at = grid.with_downbeat_at(7.3)
    assert at.downbeat == pytest.approx(1.3)
    assert 7.3 in [round(t, 9) for t in at.downbeats(10.0)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BeatGrid(0.0), "tempo must be 20 to 400 BPM, got 0.0"),
        (lambda: BeatGrid(float("nan")), "tempo must be 20 to 400 BPM, got nan"),
        (lambda: BeatGrid("fast"), "tempo must be a number of BPM, got 'fast'"),  # type: ignore[arg-type]
        (
            lambda: BeatGrid(120.0, float("inf")),
            "downbeat must be a finite number of seconds, got inf",
        ),
        (lambda: BeatGrid(120.0, 0.0, 0), "beats per bar must be 1 to 32, got 0"),
        (lambda: BeatGrid(120.0, 0.0, True), "beats per bar must be a whole number, got True"),
        (lambda: BeatGrid(300.0).doubled(), "tempo must be 20 to 400 BPM, got 600.0"),
        (
            lambda: BeatGrid(120.0).shifted(float("nan")),
            "shift must be a finite number of seconds, got nan",
        ),
    ],
)
def test_invalid_grids_are_one_clear_error(make, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        make()
    assert str(info.value) == message


def test_tap_tempo_from_steady_taps() -> None:
    tap = TapTempo()
    assert tap.tap(10.0) is None
    assert tap.tap(10.5) is None
    assert tap.tap(11.0) == pytest.approx(120.0)
    assert tap.tap(11.5) == pytest.approx(120.0)
    grid = tap.grid()
    assert grid is not None and grid.bpm == pytest.approx(120.0)
    assert grid.downbeat == pytest.approx(11.5 % 2.0)


def test_tap_tempo_ignores_a_stray_tap_and_counts_a_missed_one() -> None:
    tap = TapTempo()
    for t in (0.0, 0.5, 1.0, 1.18, 1.5, 2.0, 3.0, 3.5):  # 1.18 stray, 2.5 missed
        tap.tap(t)
    assert tap.bpm == pytest.approx(120.0)


def test_tap_tempo_fits_jittered_taps_by_least_squares() -> None:
    rng = np.random.default_rng(3)
    taps = 0.5 * np.arange(16) + rng.uniform(-0.01, 0.01, 16)
    tap = TapTempo()
    for t in taps:
        tap.tap(float(t))
    assert tap.bpm == pytest.approx(120.0, abs=0.5)


def test_tap_tempo_starts_over_after_a_pause() -> None:
    tap = TapTempo(reset_after=2.0)
    for t in (0.0, 0.5, 1.0):
        tap.tap(t)
    assert tap.tap(5.0) is None  # 4 s later: a new run
    assert tap.taps == [5.0]
    for t in (5.4, 5.8):
        tap.tap(t)
    assert tap.bpm == pytest.approx(150.0)
