"""The JACK timebase end to end on jackd's dummy driver: a JACK client of the test's
own is the timebase master (bars, beats and tempo from a tempo map of its own) and
records stemdeck's ports stamped with the transport frame; ``serve --audio jack
--sync jack`` locks the track's grid to it. The assertions are on the recorded
audio: clicks on the track's beats sound on the session's beats, through a tempo
change and a locate, and a quantized mute lands on the session's bar line. A
second daemon with ``--jack-timebase`` is the master, and the test's client reads
the bars, beats and tempo it writes."""

from __future__ import annotations

import math
import operator
import os
import re
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Daemon, poll
from fx_helpers import cents, frequency
from jack_helpers import TimebaseSession as Master
from jack_helpers import env_for, start_jack

from stemdeck.daemon.realtime import SWITCH_INTERVAL_S

SR = 48000
PERIOD = 256
pytestmark = [pytest.mark.jack, pytest.mark.e2e, pytest.mark.slow, pytest.mark.realtime]

#: The track: clicks on every beat at 120 BPM for its first CLICKS_S seconds, then
#: a steady 1 kHz tone (for the mute's ramp).
TRACK_BPM = 120.0
CLICKS_S = 20
TONE_S = 20
#: The target: within a millisecond of the session's frame.
MS = SR // 1000
TPB = 1920.0


@pytest.fixture(scope="module", autouse=True)
def _prompt_gil_handover() -> Iterator[None]:
    """Our JACK client's callbacks must get the GIL quickly, as the daemon's do."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    yield
    sys.setswitchinterval(old)


#: A click, and where its peak is (samples).
CLICK = 0.8 * np.exp(-np.arange(480) / 60.0) * np.sin(np.arange(480) * 0.3)
CLICK_PEAK = int(np.argmax(np.abs(CLICK)))


def _track(path: Path) -> None:
    y = np.zeros(((CLICKS_S + TONE_S) * SR, 2), np.float32)
    click = CLICK
    for beat in range(int(CLICKS_S * TRACK_BPM / 60)):
        at = round(beat * 60 / TRACK_BPM * SR)
        y[at : at + 480] += click[:, None].astype(np.float32)
    t = np.arange(TONE_S * SR) / SR
    y[CLICKS_S * SR :] = (0.5 * np.sin(2 * np.pi * 1000.0 * t))[:, None].astype(np.float32)
    sf.write(path, y, SR, subtype="FLOAT")


def _set_grid(daemon: Daemon) -> None:
    """The grid: the analysis's, then exactly 120 BPM with its downbeat on the first click."""
    poll(
        lambda: daemon.client.ask("/track/bpm"),
        lambda r: len(r) == 1 and r[0][0] == "/track/bpm",
        "a beat grid",
    )
    reply = daemon.client.ask("/track/bpm", TRACK_BPM)
    assert [(a, v[0]) for a, v in reply] == [("/track/grid", TRACK_BPM)], reply
    assert daemon.client.ask("/track/grid/downbeat", 0.0) == [("/track/grid", [TRACK_BPM, 0.0, 4])]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    name = f"stemdeck-timebase-{os.getpid()}"
    jackd = start_jack(name, rate=SR, period=PERIOD)
    if jackd is None:
        pytest.skip("jackd is not installed (scripts/setup installs jackd2)")
    root = tmp_path_factory.mktemp("timebase")
    track = root / "clicks-tone.wav"
    _track(track)
    try:
        yield name, root, track
    finally:
        jackd.terminate()
        jackd.wait(timeout=10)


@pytest.fixture(scope="module")
def locked(server: tuple[str, Path, Path]) -> Iterator[tuple[Daemon, Master]]:
    name, root, track = server
    env = {
        **env_for(name),
        "STEMDECK_CACHE": str(root / "cache"),
        "STEMDECK_CONFIG": str(root / "config"),
    }
    daemon = Daemon([str(track), "--audio", "jack", "--sync", "jack"], env, root)
    master = None
    try:
        daemon.wait_ready(timeout=180)  # separated: no stems arrive while we record
        _set_grid(daemon)
        master = Master(name)
        master.connect(["stemdeck:master_L", "stemdeck:master_R"])
        yield daemon, master
    finally:
        if master is not None:
            master.client.transport_stop()
            master.close()
        code, err = daemon.stop()
    assert code == 0, err


def _onsets(frames: np.ndarray, audio: np.ndarray) -> list[float]:
    """Transport frames where a click starts: its peak (the separation smears a
    little of a click into the milliseconds before it, so not its first sample)
    less where the peak is in the click, :data:`CLICK_PEAK` (within a sample at
    rates 0.8..1.1: a fifth of the distance between them)."""
    x = np.abs(audio[:, 0])
    out: list[float] = []
    last = -SR
    for i in map(int, np.flatnonzero(x > 0.4)):
        if i - last < SR // 10:
            continue
        last = i
        peak = i + int(np.argmax(x[i : i + 2 * MS]))
        if frames[peak] >= 0 and frames[i] >= 0:
            out.append(float(frames[peak]) - CLICK_PEAK)
    return out


def _beat_errors_ms(master: Master, onsets: list[float]) -> list[float]:
    """Each click's distance from the session's nearest beat (ms)."""
    out = []
    for onset in onsets:
        beat = round(master.beat_at(round(onset)))
        out.append((onset - master.frame_of(beat)) / SR * 1000)
    return out


def _clicks_on_the_beats(
    master: Master, until: float, after: float, label: str, at_least: int
) -> None:
    """Record the session to frame ``until``: every click after frame ``after`` on the
    session's beat within 1 ms, at least ``at_least`` of them."""
    master.record_until(until, f"the session at frame {until:.0f}")
    onsets = [o for o in _onsets(*master.take()) if o > after]
    errors = _beat_errors_ms(master, onsets)
    print(f"{label}: click - beat (ms): {[round(e, 3) for e in errors]}")
    assert len(onsets) >= at_least, onsets
    assert max(abs(e) for e in errors) <= 1.0, errors


def _clicks_on_beats_4_to_14(master: Master, label: str) -> None:
    """Record the session to its beat 14: every click after beat 4 on its beat."""
    _clicks_on_the_beats(master, master.frame_of(14.0), master.frame_of(4.0), label, 9)


def test_clicks_sound_on_the_sessions_beats_through_a_tempo_change_and_a_locate(
    locked: tuple[Daemon, Master],
) -> None:
    daemon, master = locked
    client = daemon.client
    master.reset(126.0, 4)
    master.client.transport_frame = round(master.frame_of(2.0))  # bar 1 beat 3
    master.client.transport_start()
    try:
        # Bar 1 beat 1 is the grid's first downbeat (no anchor set): the track's beat k
        # sounds at the session's beat k, at 126 / 120 of the track's speed.
        _clicks_on_beats_4_to_14(master, "126 BPM")
        assert client.ask("/sync/tempo") == [("/sync/tempo", [126.0])]
        ((_, (phase,)),) = client.ask("/sync/phase")
        assert abs(phase) <= 1.0, phase
        rate = client.query("/transport/rate")
        assert abs(rate - 126.0 / 120.0) <= 0.01 * 126.0 / 120.0, rate
        ((address, (line,)),) = client.ask("/status")
        said = re.search(r" \| sync jack 126\.00 BPM ([+-]\d+\.\d) ms(?: \||$)", line)
        assert address == "/status" and said is not None, line
        assert abs(float(said[1])) <= 1.0, line
        # The rate is the session's: a surface's is refused, naming the leader.
        held = "the tempo follows the JACK transport; set it there, or /sync/source off first"
        assert client.ask("/transport/rate", 1.2) == [("/error", [f"/transport/rate: {held}"])]
        assert client.ask("/transport/bpm", 130.0) == [("/error", [f"/transport/bpm: {held}"])]
        # The master slows to 100 BPM half a second from now: the rate follows, the
        # clicks stay on the beats.
        change = master.frame() + SR // 2
        master.tempo_from(change, 100.0)
        beat = 60 / 100 * SR
        _clicks_on_the_beats(master, change + 8 * beat, change + 2 * beat, "100 BPM", 5)
        assert client.ask("/sync/tempo") == [("/sync/tempo", [100.0])]
        rate = client.query("/transport/rate")
        assert abs(rate - 100.0 / 120.0) <= 0.01 * 100.0 / 120.0, rate
        # A locate while rolling, between beats: the next clicks on the beats again.
        target = master.beat_at(master.frame()) - 3.5
        master.client.transport_frame = round(master.frame_of(target))
        located = poll(master.frame, lambda f: f < master.frame_of(target + 1), "the locate")
        _clicks_on_the_beats(master, located + 5 * beat, located, "after the locate", 3)
    finally:
        master.client.transport_stop()


def test_with_keylock_on_the_clicks_still_sound_on_the_sessions_beats(
    locked: tuple[Daemon, Master],
) -> None:
    """Keylock on, at 126 BPM (rate 1.05): the pitch shifter delays the master by
    1152 samples, and the play head reads that far ahead, so the clicks sound on
    the session's beats (they sounded 24.0 ms late). Off again: on the beats too."""
    daemon, master = locked
    client = daemon.client
    master.reset(126.0, 4)
    assert client.ask("/transport/keylock", 1) == []  # a set answers nothing
    master.client.transport_frame = round(master.frame_of(2.0))  # bar 1 beat 3
    master.client.transport_start()
    try:
        _clicks_on_beats_4_to_14(master, "keylock on")
        assert client.ask("/transport/keylock", 0) == []
        start, beat = master.frame(), 60 / 126 * SR
        _clicks_on_the_beats(master, start + 6 * beat, start + 2 * beat, "keylock off", 3)
    finally:
        master.client.transport_stop()
        client.ask("/transport/keylock", 0)


def _ramp_start(audio: np.ndarray, after: int) -> float:
    """The sample where the mute's linear ramp (down from a steady tone) starts,
    from the tone's envelope between 80 % and 20 % of its level, extrapolated up."""
    from scipy.signal import hilbert

    env = np.abs(hilbert(audio[:, 0].astype(np.float64)))
    level = float(np.median(env[max(after - SR // 10, SR // 100) : after]))
    below = np.flatnonzero(env[after:] < 0.5 * level)
    assert len(below), "the mute never came"
    mid = after + int(below[0])
    span = np.arange(mid - SR // 50, mid + SR // 50)
    part = span[(env[span] < 0.8 * level) & (env[span] > 0.2 * level)]
    slope, icpt = np.polyfit(part, env[part], 1)
    return (level - icpt) / slope


def test_a_quantized_mute_lands_on_the_sessions_next_bar_line(
    locked: tuple[Daemon, Master],
) -> None:
    daemon, master = locked
    client = daemon.client
    # Three beats a bar in the session (the track's grid has four), at 132 BPM, bar 1
    # at the tone (the track's 20 s).
    master.reset(132.0, 3)
    assert client.ask("/sync/anchor", float(CLICKS_S)) == [("/sync/anchor", [float(CLICKS_S)])]
    assert client.ask("/quantize", "bar") == [("/quantize", ["bar"])]
    master.client.transport_frame = 0
    master.client.transport_start()
    try:
        poll(master.state, lambda s: s[0] and s[1] < SR, "rolling from frame 0")
        measured: list[float] = []
        client.drain()
        # Two bars measured: a bar whose recording our own callback stamped late around
        # the line (see TimebaseSession.take) is not a measurement; the next but one is.
        for bar in (3, 5, 7, 9, 11):
            # Send the mute in the middle of a bar (beat 2 of 3), then record past the
            # next bar line. (Sent, not asked: an ask waits its whole timeout for the
            # reply that does not come, two seconds, and the next bar would be missed.)
            send_at = master.frame_of(3 * (bar - 1) + 1.2)
            poll(master.frame, partial(operator.le, send_at), f"bar {bar} beat 2")
            master.blocks = []
            master.positions = []
            master.recording = True
            sent = master.frame()
            client.send("/master/mute", 1)
            line = master.frame_of(3 * math.ceil(master.beat_at(sent) / 3))
            poll(master.frame, partial(operator.lt, line + SR // 10), "the bar line passed")
            master.recording = False
            client.send("/master/mute", 0)  # at the next bar line, before the next send
            assert client.receive(0.05) == [], "a reply to /master/mute"
            frames, audio = master.take()
            # The window the ramp is read in: 1/5 s before the line to 1/20 s after it.
            first = math.ceil(line) - SR // 5
            at = int(np.argmax(frames == first))  # 0 when it is not there: then no window
            window = frames[at : at + SR // 5 + SR // 20] if frames[at] == first else frames[:0]
            if len(window) < SR // 5 + SR // 20 or not np.all(np.diff(window) == 1):
                print(f"bar {bar}: the recording has a gap by the line; not measured")
                continue
            if not np.abs(audio[at : at + SR // 10]).any():
                # Muted before the window: a cycle the daemon missed (a busy machine) moves
                # the JACK frame on, its follower seeks back onto it, and a jump acts the
                # commands still waiting (core/mixer/control.py). CI saw it once in four
                # runs; not ours to measure, as a gap is not.
                print(f"bar {bar}: muted before the line's window; not measured")
                continue
            landed = first + _ramp_start(audio[at:], SR // 5 - SR // 20)
            print(f"bar {bar}: the mute landed {(landed - line) / SR * 1000:+.3f} ms from the line")
            measured.append(landed - line)
            if len(measured) == 2:
                break
        assert len(measured) == 2, f"two bars measured in five: {measured}"
        assert max(abs(d) for d in measured) <= MS, measured
    finally:
        master.client.transport_stop()
        client.ask("/quantize", "off")
        client.ask("/master/mute", 0)
        client.ask("/sync/anchor", 0.0)


def test_a_masters_tempo_change_keeps_the_key_with_keylock(
    locked: tuple[Daemon, Master],
) -> None:
    """The master goes from 120 to 150 BPM with stemdeck's keylock on: the rate
    follows (1.25), the 1 kHz tone of the track stays at 1 kHz within a cent."""
    daemon, master = locked
    client = daemon.client
    master.reset(120.0, 4)
    assert client.ask("/sync/anchor", float(CLICKS_S)) == [("/sync/anchor", [float(CLICKS_S)])]
    assert client.ask("/transport/keylock", 1) == []  # a set answers nothing
    assert client.query("/transport/keylock") == 1
    master.client.transport_frame = 0
    master.client.transport_start()
    try:
        poll(master.state, lambda s: s[0] and s[1] < SR, "rolling from frame 0")
        change = master.frame() + SR // 2
        master.tempo_from(change, 150.0)
        master.record_until(change + 3 * SR, "three seconds at 150 BPM")
        frames, audio = master.take()
        assert client.ask("/sync/tempo") == [("/sync/tempo", [150.0])]
        rate = client.query("/transport/rate")
        assert abs(rate - 1.25) <= 0.01 * 1.25, rate
        # From a second after the change, the longest stretch recorded without a gap
        # (a cycle our own client missed would move the crossings), at least 0.5 s.
        after = np.flatnonzero(frames > change + SR)
        breaks = np.flatnonzero(np.diff(frames[after]) != 1) + 1
        run = max(np.split(after, breaks), key=len)
        assert len(run) >= SR // 2, len(run)
        heard = frequency(audio[run, 0], SR)
        assert abs(cents(heard, 1000.0)) < 1.0, heard
    finally:
        master.client.transport_stop()
        client.ask("/transport/keylock", 0)
        client.ask("/sync/anchor", 0.0)


def test_jack_timebase_master_writes_the_grids_bars_beats_and_tempo(
    server: tuple[str, Path, Path], locked: tuple[Daemon, Master]
) -> None:
    # After the locked daemon (module order): its client closes before this one starts.
    name, root, track = server
    env = {
        **env_for(name),
        "STEMDECK_CACHE": str(root / "cache"),
        "STEMDECK_CONFIG": str(root / "config"),
    }
    args = [str(track), "--audio", "jack", "--sync", "jack", "--jack-timebase"]
    daemon = Daemon(args, env, root)
    reader = None
    try:
        daemon.wait_ready(separated=False)
        _set_grid(daemon)
        assert daemon.client.ask("/sync/anchor", 0.375) == [("/sync/anchor", [0.375])]
        reader = Master(name, master=False)
        reader.client.transport_frame = 3 * SR + 77
        reader.client.transport_start()
        reader.record_until(8 * SR, "the transport past 8 s")
        reader.client.transport_stop()
        positions = [p for p in reader.positions if p[0] >= 3 * SR + 77]
        assert len(positions) >= 100, len(positions)

        def off(frame: int, bar: int, beat: int, tick: int) -> float:
            """Ticks between what was written and the grid at ``frame``: the track's
            second there (the follower's: anchor + frame / sr) in beats of the grid
            (120 BPM, bar 1 at 0 s, four beats)."""
            beats = (0.375 + frame / SR) * TRACK_BPM / 60.0
            return abs((bar - 1) * 4 + (beat - 1) + tick / TPB - beats) * TPB

        # Ticks are cut to whole ones: at most one tick short (float rounding aside).
        tick_most = 1.0 + 1e-6
        # A cycle the daemon missed (a busy machine): JACK moves the frame on under the
        # bars, beats and ticks it wrote a cycle or two before, exactly those (the cycle
        # before may be one the reader missed too, CI saw it); not ours to measure, and
        # a few at most.
        stale = [
            p
            for p in positions
            if off(*p[:4]) > tick_most
            and any(off(p[0] - k * PERIOD, *p[1:4]) <= tick_most for k in (1, 2))
        ]
        assert len(stale) <= len(positions) // 10, (len(stale), len(positions))
        worst = max(off(*p[:4]) for p in positions if p not in stale)
        assert worst <= tick_most, worst
        assert {p[4:] for p in positions} == {(TRACK_BPM, 4.0)}
        # Given up at shutdown: the transport rolls on with frames alone.
        code, err = daemon.stop()
        assert code == 0, err
        reader.client.transport_start()
        reader.record_until(reader.frame() + SR // 2, "half a second without a master")
        assert reader.positions == []
    finally:
        if reader is not None:
            reader.client.transport_stop()
            reader.close()
        if daemon.proc.poll() is None:
            daemon.stop()
