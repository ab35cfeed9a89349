"""The beat grid in a running `stemdeck serve` (issue 23): it arrives after a load
(polled), follows ``/track/load``, and its edits survive a restart of the daemon.

The expected values are the analysis of the very audio the daemon decodes, as OSC
carries them (float32).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon, poll

from stemdeck.core.audiofile.files import load
from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.beats.store import BeatStore, audio_hash
from stemdeck.core.material.songs import SongSpec, render_song

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # `stemdeck serve` subprocesses

SR = 22050


def f32(x: float) -> float:
    return float(np.float32(x))


def grid_reply(grid: BeatGrid) -> list:
    return [f32(grid.bpm), f32(grid.downbeat), grid.beats_per_bar]


def replies_to(client: Client, address: str) -> list[tuple[str, list]]:
    return [
        r for r in client.ask(address, timeout=10.0) if r[0] in ("/track/grid", address, "/error")
    ]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("beats") / "library"
    folder.mkdir()
    for name, bpm in (("fast.wav", 124.0), ("slow.wav", 96.0)):
        song = render_song(SongSpec(bpm=bpm, bars=8), sr=SR)
        sf.write(folder / name, song.mix.T, SR, subtype="FLOAT")
    return folder


def _start(library: Path, root: Path) -> Daemon:
    env = {"STEMDECK_CACHE": str(root / "cache"), "STEMDECK_CONFIG": str(root / "config")}
    daemon = Daemon(  # -v: the grid's line is a debug line
        [str(library / "fast.wav"), "--no-audio", "--library", str(library)],
        env,
        root,
        verbose=True,
    )
    daemon.wait_ready(separated=False)
    return daemon


def _grid(client: Client, *, timeout: float = 60.0) -> list:
    """``/track/grid``'s reply once there is a grid (an /error until then)."""
    found = poll(
        lambda: replies_to(client, "/track/grid"),
        lambda r: bool(r) and r[0][0] == "/track/grid",
        "a beat grid",
        timeout=timeout,
        every=0.1,
    )
    return found[0][1]


def test_the_grid_arrives_follows_loads_and_its_edits_survive_a_restart(
    library: Path, tmp_path: Path
) -> None:
    y, sr = load(library / "fast.wav")
    fast = analyze_beats(y, sr).grid
    slow = analyze_beats(*load(library / "slow.wav")).grid
    daemon = _start(library, tmp_path)
    try:
        client = daemon.client
        assert _grid(client) == grid_reply(fast)
        assert replies_to(client, "/track/bpm") == [("/track/bpm", [f32(fast.bpm)])]
        assert replies_to(client, "/track/key") == [("/track/key", [""])]
        line = [x for x in daemon.lines if "beat grid analysed in" in x]
        assert len(line) == 1 and re.fullmatch(
            rf"stemdeck: debug: fast: {fast.bpm:.2f} BPM, first downbeat at "
            rf"{fast.downbeat:.3f} s \(beat grid analysed in \d+\.\d\d s\)\n",
            line[0],
        ), line
        # another track: its own grid, and the first one's edits stay with the first
        client.send("/track/load", str(library / "slow.wav"))
        assert _grid_of(client, slow) == grid_reply(slow)
        client.send("/track/load", str(library / "fast.wav"))
        assert _grid_of(client, fast) == grid_reply(fast)
        assert replies_to(client, "/track/grid/halve") == [
            ("/track/grid", grid_reply(fast.halved()))
        ]
        assert replies_to(client, "/track/grid/shift") == [
            ("/error", ["/track/grid/shift takes a number, got []"])
        ]
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    record = BeatStore(tmp_path / "cache").load(audio_hash(y, sr))
    assert record is not None and record.edit is not None
    halved = fast.halved()  # the daemon's arithmetic may differ in the last bits of a float
    assert (record.edit.bpm, record.edit.beats_per_bar) == (halved.bpm, halved.beats_per_bar)
    assert record.edit.downbeat == pytest.approx(halved.downbeat, abs=1e-9)
    daemon = _start(library, tmp_path)  # a restart: the edit is in force, not analysed again
    try:
        assert _grid(daemon.client) == grid_reply(fast.halved())
        assert not [x for x in daemon.lines if "beat grid analysed" in x]
        assert [x for x in daemon.lines if "beat grid stored" in x]
        assert replies_to(daemon.client, "/track/grid/reset") == [("/track/grid", grid_reply(fast))]
    finally:
        code, err = daemon.stop()
    assert code == 0, err


def _grid_of(client: Client, grid: BeatGrid) -> list:
    """``/track/grid`` once it is ``grid``'s (the old track's, or an /error, before)."""
    found = poll(
        lambda: replies_to(client, "/track/grid"),
        lambda r: r == [("/track/grid", grid_reply(grid))],
        f"the grid of {grid.bpm:.2f} BPM",
        timeout=60.0,
        every=0.1,
    )
    return found[0][1]


def test_the_echo_in_beats_follows_the_grid_the_rate_and_a_new_track(
    library: Path, tmp_path: Path
) -> None:
    """``/fx/echo/beats`` in a running daemon (issue 25): set before the grid is there
    or after, the delay follows the grid as it arrives, the rate, an edit, and the
    next track's grid once it is published."""
    fast = analyze_beats(*load(library / "fast.wav")).grid
    slow = analyze_beats(*load(library / "slow.wav")).grid
    daemon = _start(library, tmp_path)
    try:
        client = daemon.client
        assert client.ask("/fx/echo/beats", 0.5) == []  # accepted, with a grid or without

        def ms_at(grid: BeatGrid, rate: float) -> list:
            want = [("/fx/echo/ms", [f32(0.5 * 60000.0 / (grid.bpm * rate))])]
            return poll(
                lambda: client.ask("/fx/echo/ms", timeout=10.0),
                lambda r: r == want,
                f"the echo at {grid.bpm:.2f} BPM × {rate:g}",
                timeout=60.0,
                every=0.1,
            )

        ms_at(fast, 1.0)
        assert client.ask("/transport/rate", 1.25) == []
        ms_at(fast, 1.25)
        assert replies_to(client, "/track/grid/double") == [
            ("/track/grid", grid_reply(fast.doubled()))
        ]
        ms_at(fast.doubled(), 1.25)
        client.send("/track/load", str(library / "slow.wav"))
        ms_at(slow, 1.25)
        assert client.ask("/fx/echo/beats") == [("/fx/echo/beats", [0.5])]
    finally:
        code, err = daemon.stop()
    assert code == 0, err
