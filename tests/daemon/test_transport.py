"""The transport verbs OSC and MIDI share."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from jack_helpers import keylock_heard

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import (
    Keylock,
    Loop,
    Pause,
    Pitch,
    Play,
    Rate,
    Seek,
    SetTrack,
    Stop,
    Track,
)
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import FRAME_SECONDS, KEYLOCK_QUALITY, LATENCY
from stemdeck.daemon.serve import Daemon
from stemdeck.daemon.transport import TransportControl

SR = 48000


@pytest.fixture
def mixer() -> Mixer:
    m = Mixer(max_channels=1)
    m.prepare(SR, 256)
    m.post(SetTrack(Track(np.zeros((1, 2, SR), np.float32), SR, ("a",))))
    m.process(np.zeros((256, 2), np.float32))  # the track is in
    return m


def test_verbs(mixer: Mixer) -> None:
    t = TransportControl(mixer)
    assert t.command("play") == Play()
    assert t.command("pause") == Pause()
    assert t.command("stop") == Stop()
    assert t.command("seek", [1.5]) == Seek(1.5)
    assert t.command("seek", [2]) == Seek(2.0)
    assert t.command("loop", [0.5, 1.0]) == Loop(0.5, 1.0)
    assert t.command("loop/off") == Loop(0.0, 0.0)
    assert t.command("rate", [1.08]) == Rate(1.08)
    assert t.command("rate", [2]) == Rate(2.0)
    assert t.command("rate", [0.5]) == Rate(0.5)
    assert t.value("rate") == [1.0]


def test_a_button_acts_on_its_press_and_not_on_its_release(mixer: Mixer) -> None:
    # TouchOSC and Open Stage Control buttons send 1 on press and 0 on release.
    t = TransportControl(mixer)
    for press in ([1], [1.0], [True], [127]):
        assert t.command("play", press) == Play()
        assert t.command("pause", press) == Pause()
        assert t.command("stop", press) == Stop()
        assert t.command("toggle", press) == Play()  # the fixture's mixer is not rolling
        assert t.command("loop/off", press) == Loop(0.0, 0.0)
    for release in ([0], [0.0], [False]):
        for verb in ("play", "pause", "stop", "toggle", "loop/off"):
            assert t.command(verb, release) is None


@pytest.mark.parametrize(
    ("verb", "args", "reason"),
    [
        (
            "play",
            [1, 0],
            r"takes no arguments or one button value \(1 press, 0 release\), got \[1, 0\]",
        ),
        (
            "stop",
            ["go"],
            r"takes no arguments or one button value \(1 press, 0 release\), got \['go'\]",
        ),
        ("toggle", [float("nan")], r"/transport/toggle got nan"),
        ("seek", [], "takes a number"),
        ("seek", [-1.0], ">= 0"),
        ("seek", [float("nan")], "nan"),
        ("seek", [True], "takes a number"),
        ("loop", [2.0, 1.0], "start < end"),
        ("loop", [1.0], "start and end"),
        ("loop", [0.0, 1e306], r"loop end 1e\+306 s is past the end of the track \(1.000 s\)"),
        ("loop", [0.5, 1.01], r"loop end 1.01 s is past the end of the track \(1.000 s\)"),
        ("rewind", [], "unknown address /transport/rewind"),
        ("rate", [2.01], r"^/transport/rate must be within 0.5..2, got 2.01$"),
        ("rate", [0.25], r"^/transport/rate must be within 0.5..2, got 0.25$"),
        ("rate", [float("nan")], r"^/transport/rate got nan$"),
        ("rate", [True], r"^/transport/rate takes a number, got \[True\]$"),
        ("rate", [1.0, 2.0], r"^/transport/rate takes a number, got \[1.0, 2.0\]$"),
    ],
)
def test_bad_verbs(mixer: Mixer, verb: str, args: list, reason: str) -> None:
    with pytest.raises(ParameterError, match=reason):
        TransportControl(mixer).command(verb, args)


def test_toggle_follows_the_rolling_state(mixer: Mixer) -> None:
    t = TransportControl(mixer)
    out = np.zeros((256, 2), np.float32)
    assert t.command("toggle") == Play()
    mixer.post(Play())
    mixer.process(out)
    assert t.command("toggle") == Pause()
    mixer.post(Pause())
    mixer.process(out[:16])  # fading out: still playing, no longer rolling
    assert mixer.playing and not mixer.rolling
    assert t.command("toggle") == Play()  # a second press brings it back, not pause again
    assert t.position() == pytest.approx(mixer.position / SR)


def test_no_loop_before_a_track() -> None:
    m = Mixer(max_channels=1)
    m.prepare(SR, 256)
    with pytest.raises(ParameterError, match=r"past the end of the track \(0.000 s\)"):
        TransportControl(m).command("loop", [0.0, 1.0])


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_what_is_heard_is_the_play_head_less_the_keylocks_delay(mixer: Mixer) -> None:
    """``heard`` (where taps, cues and downbeats set by ear land): rolling with the
    shifter heard, the play head less its 1152 samples at the vinyl rate; stopped,
    or keylock off, the play head."""
    t = TransportControl(mixer)
    mixer.post(Rate(1.25, at_once=True))
    mixer.post(Play())
    keylock_heard(mixer)
    head = mixer.position / SR
    assert t.heard() == head - LATENCY * 1.25 / SR
    assert t.heard() < t.position() == head
    mixer.post(Pause())
    for _ in range(40):  # faded out: stopped
        mixer.process(np.zeros((256, 2), np.float32))
    assert not mixer.rolling and t.heard() == t.position()


def test_outputs_channels_refuses_keylock_for_more_channels_than_shifters() -> None:
    """``outputs="channels"`` gives each channel a shifter of its own, for as many
    channels as the block allows (4 at 64 frames, 16 from 256; at 96 kHz, or with
    the fine keylock's frames, twice as long, 8 at 256 and 16 from 512): keylock or
    a pitch for a track of more is refused in one line (its other channels would
    play unshifted, 24 ms early); as many take it, and off is always taken."""
    names = tuple(f"c{i}" for i in range(24))
    fine = KEYLOCK_QUALITY["fine"]
    for sr, frame_s, block, most, more, full in (
        (SR, FRAME_SECONDS, 256, 16, 24, 256),
        (SR, FRAME_SECONDS, 64, 4, 8, 256),
        (96000, FRAME_SECONDS, 256, 8, 12, 512),
        (SR, fine, 256, 8, 12, 512),
    ):
        m = Mixer(max_channels=24, keylock_frame_s=frame_s)
        m.prepare(sr, block, outputs="channels")
        assert len(m.strip_shifters) == most
        t = TransportControl(m)
        m.post(SetTrack(Track(np.zeros((more, 2, SR), np.float32), SR, names[:more])))
        m.process(np.zeros((block, m.out_channels), np.float32))
        held = (
            "with --outputs channels each channel has a pitch shifter of its own, "
            f"at most {most} at {block}-frame blocks (16 from {full}); "
            f"this track has {more} channels"
        )
        with pytest.raises(ParameterError) as info:
            t.command("keylock", [1])
        assert str(info.value) == f"/transport/keylock: {held}"
        with pytest.raises(ParameterError) as info:
            t.command("pitch", [-2.0])
        assert str(info.value) == f"/transport/pitch: {held}"
        assert t.command("keylock", [0]) == Keylock(False)
        assert t.command("pitch", [0.0]) == Pitch(0.0)
        m.post(SetTrack(Track(np.zeros((most, 2, SR), np.float32), SR, names[:most])))
        m.process(np.zeros((block, m.out_channels), np.float32))
        assert t.command("keylock", [1]) == Keylock(True)
        assert t.command("pitch", [-2.0]) == Pitch(-2.0)


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_a_track_of_more_channels_than_shifters_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Keylock on under ``outputs="channels"`` at 64-frame blocks (4 shifters), then a
    track of 6 (the refusal cannot stop a track loaded after keylock, or posted just
    before it): the mixer counts the 2 channels it plays unshifted, and the daemon's
    loop says so once for the track, not every quarter second."""
    m = Mixer(max_channels=8)
    m.prepare(SR, 64, outputs="channels")
    keylock_heard(m)
    six = tuple(f"c{i}" for i in range(6))
    m.post(SetTrack(Track(np.zeros((6, 2, SR), np.float32), SR, six)))
    m.post(Play())
    m.process(np.zeros((64, m.out_channels), np.float32))
    assert m.unshifted == 2
    daemon = SimpleNamespace(engine=m, loader=SimpleNamespace(generation=3), _unshifted_said=-1)
    with caplog.at_level(logging.WARNING, logger="stemdeck.daemon.serve"):
        for _ in range(3):
            Daemon._say_unshifted(daemon)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "keylock with --outputs channels: 4 channels have a pitch shifter at 64-frame "
        "blocks; channels 5 to 6 play unshifted (a larger --block gives more, 16 from 256)"
    ]
    keylock_heard(m, False)
    while m.shifter.active:  # crossfaded into bypass: no shifter runs, none missing
        m.process(np.zeros((64, m.out_channels), np.float32))
    assert m.unshifted == 0
