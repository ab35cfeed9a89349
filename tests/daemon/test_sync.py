"""The sync source and the JACK transport follower, with the real mixer and no JACK:
a fake transport (state and frame per block) drives the follower as the JACK process
callback does, and the assertions are on the mixer's output."""

from __future__ import annotations

import numpy as np
import pytest
from jack_helpers import Counting, keylock_heard
from osc_host import FakeHost

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Keylock, Pitch, Play, Rate, SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import latency_at
from stemdeck.daemon.audio.jack import port_names
from stemdeck.daemon.osc import OscControl
from stemdeck.daemon.sync import SyncControl, TransportFollower

SR = 8000
#: The keylock's latency at SR: a frame of 128 (16 ms) and half a hop.
LATENCY = latency_at(SR)
BLOCK = 64
LENGTH = 4 * SR
MARKER = SR + 123


@pytest.fixture
def rig() -> tuple[Counting, SyncControl, TransportFollower]:
    engine = Counting()
    engine.prepare(SR, BLOCK)
    audio = np.zeros((1, 2, LENGTH), np.float32)
    audio[0, :, MARKER] = 1.0
    engine.post(SetTrack(Track(audio, SR, ("click",))))
    engine.post(Play())
    engine.process(np.zeros((BLOCK, 2), np.float32))
    sync = SyncControl(jack=True)
    sync.set_source("jack")
    engine.posted.clear()
    return engine, sync, TransportFollower(engine, sync)


def run(
    engine: Mixer, follower: TransportFollower, rolling: bool, frame: int, blocks: int
) -> tuple[np.ndarray, np.ndarray]:
    """``blocks`` blocks from transport ``frame`` (rolling or not); returns the
    transport frame of every output sample (-1 stopped) and the output."""
    frames, out = [], []
    for _ in range(blocks):
        follower.block(rolling, frame, BLOCK)
        block = np.zeros((BLOCK, 2), np.float32)
        engine.process(block)
        out.append(block)
        frames.append(frame + np.arange(BLOCK) if rolling else np.full(BLOCK, -1))
        if rolling:
            frame += BLOCK
    return np.concatenate(frames), np.concatenate(out)


def marker_at(frames: np.ndarray, out: np.ndarray) -> int:
    loudest = int(np.argmax(np.abs(out[:, 0])))
    assert out[loudest, 0] > 0.5
    return int(frames[loudest])


def test_start_from_a_located_frame_lands_the_marker_on_its_frame(rig) -> None:
    engine, _, follower = rig
    _, out = run(engine, follower, False, 0, 10)  # stopped: faded out, silent
    assert np.abs(out[-BLOCK:]).max() == 0.0
    start = MARKER - 1000 - 17  # not a block boundary
    frames, out = run(engine, follower, True, start, 40)
    assert marker_at(frames, out) == MARKER


def test_a_rate_set_before_is_rate_one_when_the_transport_leads(rig) -> None:
    """The transport's frames are the track's at rate 1: a rate left from before
    (set while another leader or none led) goes back to 1 on the first block, or
    the marker would drift off its frame."""
    engine, _, follower = rig
    engine.post(Rate(1.25))
    engine.process(np.zeros((BLOCK, 2), np.float32))
    engine.posted.clear()
    start = MARKER - 2000
    frames, out = run(engine, follower, True, start, 60)
    assert engine.posted[0] == Rate(1.0)
    assert [type(c).__name__ for c in engine.posted] == ["Rate", "Batch", "Seek"]
    assert engine.rate == 1.0
    assert marker_at(frames, out) == MARKER


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_with_keylock_on_the_marker_still_sounds_on_its_frame(rig) -> None:
    """The keylock's shifter delays the master by its latency (144 samples at 8 kHz): the
    play head reads that far ahead of the transport, so the marker sounds on its
    frame (it sounded 144 frames late). Keylock off while rolling: one seek back,
    and the marker on its frame again."""
    engine, _, follower = rig
    keylock_heard(engine)
    assert engine.output_delay == LATENCY == 144
    frames, out = run(engine, follower, True, MARKER - 3000 - 17, 60)
    loudest = int(np.argmax(np.abs(out[:, 0])))
    assert frames[loudest] == MARKER, frames[loudest] - MARKER
    # The impulse, spread by the shifter's frames, stands out by far where it sounds.
    level = np.abs(out[:, 0])
    assert level[loudest] > 3 * np.delete(level, range(loudest - 64, loudest + 65)).max()
    frame = int(frames[-1]) + 1
    engine.post(Keylock(False))
    engine.posted.clear()
    frames, out = run(engine, follower, True, frame, 12)  # rolling on: no locate
    assert engine.output_delay == 0  # half way out of the crossfade: the dry mix heard
    assert [type(c).__name__ for c in engine.posted] == ["Seek"], engine.posted
    frames, out = run(engine, follower, True, MARKER - 1000, 30)  # a locate
    assert marker_at(frames, out) == MARKER


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_with_keylock_on_a_track_at_its_own_rate_sounds_on_its_frame() -> None:
    """A track at 11025 Hz on the 8 kHz clock (the read head converts): the delay is
    in the device's frames, the target in the track's: the marker at the track's
    frame m sounds at the transport's frame m * 8000 / 11025, within a frame."""
    rate = 11025
    engine = Counting()
    engine.prepare(SR, BLOCK)
    audio = np.zeros((1, 2, 4 * rate), np.float32)
    marker = 2 * rate + 321
    audio[0, :, marker] = 1.0
    engine.post(SetTrack(Track(audio, rate, ("click",))))
    engine.post(Play())
    keylock_heard(engine)
    sync = SyncControl(jack=True)
    sync.set_source("jack")
    frames, out = run(engine, TransportFollower(engine, sync), True, 14000, 60)
    level = np.abs(out[:, 0])
    i = int(np.argmax(level))
    near = slice(i - 3, i + 4)  # the impulse, interpolated: its centroid
    heard = float(np.sum(frames[near] * level[near]) / np.sum(level[near]))
    assert abs(heard - marker * SR / rate) <= 1.0, heard - marker * SR / rate


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_a_pitch_knob_through_zero_seeks_nothing(rig) -> None:
    """A pitch shift on and off again before the shifter has filled: nothing of it
    was heard, the output never lagged, so the follower does not seek (each pass
    of a knob through 0 moved the head 144 frames and back). It fills in 144 frames
    and is heard half way through its crossfade (80 more): the knob is back at 0
    after two blocks of 64."""
    engine, _, follower = rig
    run(engine, follower, True, 0, 3)
    engine.posted.clear()
    engine.post(Pitch(0.5))
    delays = []
    for n in range(20):
        if n == 2:
            engine.post(Pitch(0.0))
        run(engine, follower, True, (3 + n) * BLOCK, 1)
        delays.append(engine.output_delay)
    assert delays == [0] * 20
    assert [type(c).__name__ for c in engine.posted] == ["Pitch", "Pitch"], engine.posted


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_keylock_off_and_a_pitch_in_one_bundle_keep_the_delay(rig) -> None:
    """``[keylock 0, pitch 2]`` in one Batch: the shifter stays engaged, and the delay
    the followers read (published once a block) never drops to 0 in between."""
    engine, _, _ = rig
    keylock_heard(engine)
    engine.post(Batch((Keylock(False), Pitch(2.0))))
    delays = []
    for _ in range(40):
        engine.process(np.zeros((BLOCK, 2), np.float32))
        delays.append(engine.output_delay)
    assert delays == [LATENCY] * 40


def test_a_rolling_transport_posts_nothing_per_block(rig) -> None:
    engine, _, follower = rig
    run(engine, follower, True, 0, 3)
    engine.posted.clear()
    run(engine, follower, True, 3 * BLOCK, 50)
    assert engine.posted == []


def test_a_locate_while_rolling_is_one_seek(rig) -> None:
    engine, _, follower = rig
    run(engine, follower, True, 0, 3)
    engine.posted.clear()
    frames, out = run(engine, follower, True, MARKER - 777, 20)
    assert [type(c).__name__ for c in engine.posted] == ["Seek"]
    assert marker_at(frames, out) == MARKER


def test_stop_pauses_and_local_verbs_are_not_fought(rig) -> None:
    engine, _, follower = rig
    run(engine, follower, True, 0, 3)
    engine.posted.clear()
    _, out = run(engine, follower, False, 3 * BLOCK, 10)
    assert [type(c).__name__ for c in engine.posted] == ["Pause"]
    assert np.abs(out[-BLOCK:]).max() == 0.0
    engine.posted.clear()
    engine.post(Play())  # a local /transport/play while the session is stopped
    engine.posted.clear()
    run(engine, follower, False, 3 * BLOCK, 10)
    assert engine.posted == []
    assert engine.rolling


def test_anchor_shifts_the_track(rig) -> None:
    engine, sync, follower = rig
    sync.set_anchor(0.5)  # the track's 0.5 s at the session's frame 0
    frames, out = run(engine, follower, True, MARKER - SR // 2 - 300, 10)
    assert marker_at(frames, out) == MARKER - SR // 2


def test_before_the_anchor_and_past_the_end_are_silent(rig) -> None:
    engine, sync, follower = rig
    sync.set_anchor(-1.0)  # the track starts 1 s into the session
    _, out = run(engine, follower, True, 0, SR // 2 // BLOCK)
    assert np.abs(out[-BLOCK:]).max() == 0.0
    sync.set_anchor(0.0)
    _, out = run(engine, follower, True, LENGTH - 2 * BLOCK, 6)
    assert type(engine.posted[-1]).__name__ == "Pause"
    assert np.abs(out[-BLOCK:]).max() == 0.0


def test_source_off_leaves_the_mixer_alone(rig) -> None:
    engine, sync, follower = rig
    sync.set_source("off")
    run(engine, follower, False, 0, 5)
    run(engine, follower, True, 999, 5)
    assert engine.posted == []


def test_sync_control_checks() -> None:
    sync = SyncControl()
    with pytest.raises(ParameterError, match=r"^jack sync needs stemdeck's JACK client"):
        sync.set_source("jack")
    with pytest.raises(
        ParameterError, match=r"^midi sync needs a MIDI clock input: serve --sync-midi PORT$"
    ):
        sync.set_source("midi")
    with pytest.raises(ParameterError, match=r"^link sync is not available in this process$"):
        sync.set_source("link")
    with pytest.raises(ParameterError, match=r"^unknown sync source 'beat'"):
        sync.set_source("beat")
    with pytest.raises(ParameterError, match=r"^anchor must be finite"):
        sync.set_anchor(float("nan"))
    assert sync.source == "off"
    assert sync.anchor == 0.0


def test_port_names() -> None:
    assert port_names(["drums", "bass"], "mix") == ["master_L", "master_R"]
    assert port_names(["drums", "Lead vox", "a:b", "DRUMS"], "channels") == [
        "drums_L",
        "drums_R",
        "Lead_vox_L",
        "Lead_vox_R",
        "a_b_L",
        "a_b_R",
        "DRUMS-2_L",
        "DRUMS-2_R",
    ]
    assert all(len(n.encode()) <= 64 for n in port_names(["é" * 100], "channels"))


def test_sync_over_osc() -> None:
    host = FakeHost()
    control = OscControl(host)
    sender = ("127.0.0.1", 9999)
    assert control.handle([("/sync/source", [])], sender) == [("/sync/source", ["off"])]
    assert control.handle([("/sync/source", ["midi"])], sender) == [
        ("/error", ["/sync/source: midi sync needs a MIDI clock input: serve --sync-midi PORT"])
    ]
    assert control.handle([("/sync/source", ["link"])], sender) == [
        ("/error", ["/sync/source: link sync is not available in this process"])
    ]
    assert control.handle([("/sync/source", ["jack"])], sender) == [
        ("/error", ["/sync/source: jack sync needs stemdeck's JACK client: serve --audio jack"])
    ]
    assert control.handle([("/sync/source", ["off"])], sender) == [("/sync/source", ["off"])]
    assert control.handle([("/sync/anchor", [1.25])], sender) == [("/sync/anchor", [1.25])]
    assert control.handle([("/sync/anchor", [])], sender) == [("/sync/anchor", [1.25])]
    assert control.handle([("/sync/anchor", [float("inf")])], sender) == [
        ("/error", ["/sync/anchor got inf"])
    ]
    assert host.sync.anchor == 1.25


def test_the_anchor_query_answers_the_anchor_in_force() -> None:
    """Under a leader holding the track's grid (a JACK timebase master, Link), bar 1
    is the grid's first downbeat until /sync/anchor is set: the query says so, not
    the 0.0 that was never set; once the leader lets go, the anchor set (or 0)."""
    host = FakeHost()
    control = OscControl(host)
    sender = ("127.0.0.1", 9999)
    host.sync.bars = (0.511, 4)  # the follower's lock: the grid's first downbeat
    assert control.handle([("/sync/anchor", [])], sender) == [("/sync/anchor", [0.511])]
    host.sync.bars = None
    assert control.handle([("/sync/anchor", [])], sender) == [("/sync/anchor", [0.0])]
    assert control.handle([("/sync/anchor", [2.0])], sender) == [("/sync/anchor", [2.0])]
    host.sync.bars = (2.0, 4)
    assert control.handle([("/sync/anchor", [])], sender) == [("/sync/anchor", [2.0])]


def test_the_leaders_tempo_and_phase_over_osc_and_in_the_state() -> None:
    host = FakeHost()
    control = OscControl(host)
    sender = ("127.0.0.1", 9999)
    assert control.handle([("/sync/tempo", [])], sender) == [("/sync/tempo", [0.0])]
    assert control.handle([("/sync/phase", [])], sender) == [("/sync/phase", [0.0])]
    host.sync.leader_bpm, host.sync.phase_error = 126.5, -0.00125
    assert control.handle([("/sync/tempo", [])], sender) == [("/sync/tempo", [126.5])]
    assert control.handle([("/sync/phase", [])], sender) == [("/sync/phase", [-1.25])]
    assert control.handle([("/sync/tempo", [120.0])], sender) == [
        ("/error", ["/sync/tempo takes no arguments, got 1"])
    ]
    state = control.state()
    at = [a for a, _ in state].index("/transport/rate")
    assert state[at + 1 : at + 4] == [
        ("/transport/bpm", [0.0]),  # no beat grid: no tempo plays
        ("/sync/tempo", [126.5]),
        ("/sync/phase", [-1.25]),
    ]
