"""A MIDI controller unplugged mid-set, with real JACK MIDI ports.

Its own module (and JACK server): rtmidi opens JACK clients while holding the
GIL, so it must not run beside another module's JACK client with a Python
process callback in this same process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import soundfile as sf
from daemon_helpers import Daemon
from jack_helpers import env_for, jack_in_this_process

from conftest import tone_mix

SR = 48000
pytestmark = pytest.mark.jack


@pytest.fixture(scope="module")
def jack_name():
    with jack_in_this_process(f"stemdeck-unplug-{os.getpid()}", rate=SR) as name:
        if name is None:
            pytest.skip("jackd is not installed (scripts/setup installs jackd2)")
        yield name


def settle() -> None:
    time.sleep(0.3)


def test_unplugged_controller_reconnects(jack_name: str, tmp_path: Path) -> None:
    """A controller that disappears mid-set: a warning, music goes on, and the port is
    reopened when it returns. (Audio on the null clock here: see daemon/midi.py on
    reopening JACK MIDI while JACK audio runs.)"""
    import mido

    name = jack_name
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    controller = backend.open_output("fake-controller", virtual=True)
    sf.write(tmp_path / "t.wav", tone_mix(2.0, sr=SR).T, SR, subtype="FLOAT")
    daemon = Daemon(
        [
            str(tmp_path / "t.wav"),
            "--no-audio",
            "--midi",
            "fake-controller",
            "--midi-api",
            "jack",
        ],
        {**env_for(name), "STEMDECK_CACHE": str(tmp_path / "c")},
        tmp_path,
    )
    try:
        daemon.wait_ready()
        controller.send(mido.Message("note_on", channel=0, note=36, velocity=127))
        settle()
        assert daemon.client.query("/ch/1/mute") == 1
        controller.close()  # unplugged
        time.sleep(2.5)
        assert ("/pong", []) in daemon.client.ask("/ping")
        before = daemon.client.query("/transport/position")
        time.sleep(0.3)
        assert daemon.client.query("/transport/position") != before  # still playing
        controller = backend.open_output("fake-controller", virtual=True)  # plugged back
        time.sleep(2.5)
        # The daemon reopens the port within about a second; on a busy machine the
        # reopen (rtmidi holds the GIL while it opens a JACK client) can take longer.
        # A press before it is lost and the mute stays on: press again only then.
        deadline = time.monotonic() + 30
        mute = 1
        while mute != 0 and time.monotonic() < deadline:
            controller.send(mido.Message("note_on", channel=0, note=36, velocity=127))
            until = time.monotonic() + 3.0
            while mute != 0 and time.monotonic() < until:
                settle()
                try:
                    mute = daemon.client.query("/ch/1/mute")
                except AssertionError:  # no reply in 2 s: the daemon is opening the port
                    continue
        assert mute == 0, "the replugged controller was never heard"
        controller.close()
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    assert "unplugged" in err and err.count("MIDI: ") >= 2  # warned, then reopened
