"""REAPER, a REAPER-layout surface and an Ardour-layout surface against a running
`stemdeck serve` over UDP (docs/daw.md): the messages each sends, with their type tags,
and what the daemon then says over OSC.

The exact command-by-command behaviour is in tests/daemon/osc/test_daw.py; here the
same messages cross a real socket into a real daemon, its grid analysed from the
audio it decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon, poll
from osc_replay import osc

from stemdeck.core.audiofile.files import load
from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.material.songs import SongSpec, render_song
from stemdeck.daemon.osc.wire import encode_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a `stemdeck serve` subprocess

SR = 22050


def f32(x: float) -> float:
    return float(np.float32(x))


def value(client: Client, address: str) -> list:
    replies = [r for r in client.ask(address, timeout=10.0) if r[0] in (address, "/error")]
    assert len(replies) == 1, replies
    return replies[0][1] if replies[0][0] == address else replies


def test_reaper_and_surfaces_drive_a_running_daemon(tmp_path: Path) -> None:
    song = render_song(SongSpec(bpm=124.0, bars=8), sr=SR)
    path = tmp_path / "song.wav"
    sf.write(path, song.mix.T, SR, subtype="FLOAT")
    grid = analyze_beats(*load(path)).grid
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "c")}
    daemon = Daemon([str(path), "--no-audio"], env, tmp_path)
    try:
        daemon.wait_ready(separated=False)
        client = daemon.client
        poll(
            lambda: value(client, "/track/bpm"),
            lambda r: r == [f32(grid.bpm)],
            "the beat grid",
            every=0.1,
        )
        # REAPER's device starts: its whole transport state, standing at 2 s, 10 % faster
        tempo = f32(grid.bpm * 1.1)
        client.drain()
        client.send_raw(
            encode_bundle(
                [
                    osc("/stop", "f", 1.0),
                    osc("/play", "f", 0.0),
                    osc("/pause", "f", 0.0),
                    osc("/time", "f", 2.0),
                    osc("/playrate/raw", "f", 1.0),
                    osc("/tempo/raw", "f", tempo),
                ]
            )
        )
        rate = tempo / grid.bpm
        assert client.receive(0.5) == []  # no /error
        poll(lambda: value(client, "/transport/playing"), lambda r: r == [0], "a pause")
        assert value(client, "/transport/rate") == [f32(rate)]
        assert value(client, "/transport/bpm") == [f32(grid.bpm * rate)]
        # 2 s of REAPER at 1.1 × the track's tempo: 2.2 s of the track (and the pause
        # fade's few milliseconds)
        position = value(client, "/transport/position")[0]
        assert 2.0 * rate <= position < 2.0 * rate + 0.05, position
        # REAPER plays: from where it stood
        client.send_raw(encode_bundle([osc("/play", "f", 1.0), osc("/stop", "f", 0.0)]))
        poll(lambda: value(client, "/transport/playing"), lambda r: r == [1], "play")
        # a locate while rolling: REAPER's 5 s
        client.send_raw(osc("/time", "f", 5.0))
        poll(
            lambda: value(client, "/transport/position")[0],
            lambda p: 5.0 * rate <= p < 5.0 * rate + 1.0,
            "the locate",
        )
        # a tempo out of the rate's range: one /error, the rate stays
        fast = f32(grid.bpm * 3)
        assert client.ask("/tempo/raw", fast) == [
            (
                "/error",
                [
                    f"/tempo/raw {fast:g} needs rate {fast / grid.bpm:.4g}"
                    f" on the grid's {grid.bpm:g} BPM; the rate must be within 0.5..2 "
                    f"({grid.bpm * 0.5:g}..{grid.bpm * 2:g} BPM for this track)"
                ],
            )
        ]
        assert value(client, "/transport/rate") == [f32(rate)]
        # a REAPER-layout surface and an Ardour-layout surface move the stems
        client.send_raw(osc("/track/2/volume", "f", 0.5))
        client.send_raw(osc("/strip/mute", "ii", 3, 1))
        client.send_raw(osc("/strip/pan_stereo_position", "if", 4, 0.0))
        assert value(client, "/ch/2/fader") == [0.5]
        assert value(client, "/ch/3/mute") == [1]
        assert value(client, "/ch/4/pan") == [1.0]
        assert value(client, "/track/2/volume") == [0.5]
        assert value(client, "/strip/mute/3") == [1]
        client.drain()
        client.send_raw(osc("/track/9/volume", "f", 0.5))
        assert client.receive(2.0, settle=0.15) == [
            (
                "/error",
                [
                    "/track/9/volume: track '9' is not a channel; tracks are 1..4 "
                    "(drums, bass, other, vocals)"
                ],
            )
        ]
    finally:
        code, err = daemon.stop()
    assert code == 0, err
