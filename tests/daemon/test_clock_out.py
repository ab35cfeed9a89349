"""MIDI clock out: the schedule from the heard play head and the grid (no port)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from jack_helpers import keylock_heard

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.mixer.commands import Keylock, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.kernel import COMPILED
from stemdeck.core.mixer.keylock import LATENCY
from stemdeck.daemon.clock_out import CLOCK, CONTINUE, START, STOP, ClockOutSchedule, song_position
from stemdeck.daemon.playhead import Head
from stemdeck.daemon.serve import Daemon

GRID = BeatGrid(120.0, 1.0)  # beat 0 at the track's 1.0 s; 0.5 s a beat
TICK = 0.5 / 24


def test_play_from_the_start_sends_start_and_ticks_on_the_beats() -> None:
    s = ClockOutSchedule()
    head = Head(10.0, 0.0, 1.0, 1)  # the track's 0 s heard at 10 s: beat 0 at 11 s
    out = s.plan(10.0, head, GRID, 11.0 + 3 * TICK + 1e-9)
    assert out[0] == (10.0, START)
    assert [d for d, _ in out[1:]] == pytest.approx(
        [11.0, 11.0 + TICK, 11.0 + 2 * TICK, 11.0 + 3 * TICK], abs=1e-9
    )
    assert {m for _, m in out[1:]} == {CLOCK}


def test_rate_pause_continue_and_seek() -> None:
    s = ClockOutSchedule()
    fast = Head(0.0, 1.0, 1.5, 1)  # at beat 0, rate 1.5
    out = s.plan(0.0, fast, GRID, 0.035)
    assert out[0] == (0.0, START)
    assert [d for d, _ in out[1:]] == pytest.approx([k * TICK / 1.5 for k in range(3)], abs=1e-9)
    # Pause: Stop; the same place again: Continue, no pointer, the next tick on.
    stopped = Head(0.04, 1.0 + 2.5 / 24 * 0.5, 0.0, 2)
    assert s.plan(0.04, stopped, GRID, 1.0) == [(0.04, STOP)]
    resumed = Head(5.0, 1.0 + 2.5 / 24 * 0.5, 1.5, 3)
    out = s.plan(5.0, resumed, GRID, 5.0 + 0.001)
    assert out == [(5.0, CONTINUE)]
    assert s.next_tick == 3
    # A seek while playing: Stop, the pointer at the next sixteenth, Continue.
    seeked = Head(6.0, 1.0 + 2.3, 1.0, 4)  # beat 4.6
    out = s.plan(6.0, seeked, GRID, 6.0)
    assert out == [(6.0, STOP), (6.0, song_position(19)), (6.0, CONTINUE)]
    assert s.next_tick == 19 * 6
    out = s.plan(6.0, seeked, GRID, 6.1)
    assert [d for d, _ in out] == pytest.approx(
        [6.0 + (4.75 - 4.6) * 0.5 + k * TICK for k in range(len(out))], abs=1e-9
    )


def test_no_grid_no_clock() -> None:
    s = ClockOutSchedule()
    assert s.plan(0.0, Head(0.0, 0.0, 1.0, 1), None, 1.0) == []
    assert song_position(20000) == bytes((0xF2, 0x7F, 0x7F))


def test_play_from_the_first_beat_read_a_block_late_still_sends_start() -> None:
    """The play head is read a block or so after play began: a few ms past beat 0 is
    still play from the first beat (it sent a pointer and Continue: a follower never
    saw Start)."""
    s = ClockOutSchedule()
    head = Head(10.0, 1.003, 1.25, 1)  # beat 0 (1.0 s) was heard 2.4 ms ago
    out = s.plan(10.0, head, GRID, 10.0 + 2 * TICK / 1.25)
    assert out[:2] == [(10.0, START), (10.0, CLOCK)]  # tick 0 at once
    assert [d for d, _ in out[2:]] == pytest.approx(
        [10.0 + (k * TICK - 0.003) / 1.25 for k in (1, 2)], abs=1e-9
    )
    s = ClockOutSchedule()
    later = Head(10.0, 1.0 + 1.5 * TICK, 1.0, 1)  # past tick 1: a pointer, the next sixteenth
    assert s.plan(10.0, later, GRID, 10.0)[:2] == [(10.0, song_position(1)), (10.0, CONTINUE)]


def test_an_audio_stall_mid_play_delays_the_ticks_and_sends_no_stop_pointer_or_continue() -> None:
    """The audio stalled 30 ms (an xrun, a busy GIL) half a second in: the heard play
    head is 30 ms late from then on. The clock out sent Stop, a Song Position Pointer
    and Continue for it, so a drum machine following stopped and restarted mid-set.
    Now the ticks go on in order, those across the stall 30 ms late in all and the
    rest on the new line; a seek, which the mixer counts, still sends the three."""
    from stemdeck.daemon.playhead import HeardPlayHead

    sr = 48000

    class Engine:
        track: Track | None = Track(np.zeros((1, 2, sr * 10), np.float32), sr, ("mix",))
        position = 0
        jumps = 0
        seq = 0
        rate = 1.0
        rolling = True

        def seconds(self, frames: int) -> float:
            return frames / sr

    engine = Engine()
    now = [10.0]
    head = HeardPlayHead(engine, block_s=0.0, clock=lambda: now[0])
    s = ClockOutSchedule()
    grid = BeatGrid(120.0, 0.0)
    sent: list[tuple[float, bytes]] = []
    for step in range(250):  # a reading every 4 ms for a second
        t = step * 0.004
        now[0] = 10.0 + t
        engine.position = round(sr * (t if t < 0.5 else max(0.5, t - 0.03)))
        sent += s.plan(now[0], head.sample(), grid, now[0] + 0.004)
    assert sent[0] == (10.0, START)
    assert {m for _, m in sent[1:]} == {CLOCK}
    ticks = np.array([d for d, _ in sent[1:]])
    assert len(ticks) == 47  # the track to 0.97 s, heard by 11.0 s
    late = np.diff(ticks) - TICK
    assert (late > -1e-9).all()  # never a tick early (a burst)
    assert late.sum() == pytest.approx(0.03, abs=1e-4)  # the stall, once, then on the line
    assert late.max() > 0.02  # most of it across the stall
    assert head.slips == 1
    engine.position += sr // 10  # a seek 100 ms on
    engine.jumps += 1
    now[0] += 0.004
    out = s.plan(now[0], head.sample(), grid, now[0])
    assert [m for _, m in out] == [STOP, song_position(s.next_tick // 6), CONTINUE]


@pytest.mark.skipif(COMPILED is None, reason="the compiled kernel is not built")
def test_the_clocks_hear_the_play_head_after_the_output_and_the_keylock() -> None:
    """The MIDI clocks' latency (the daemon's ``_output_latency``): the output's
    beyond the block, plus the keylock's shifter's delay while it runs (without it
    the clock out ticked 24 ms ahead of the audio, and clock in placed the beat
    24 ms late); under JACK audio and JACK MIDI, the delay alone."""
    engine = Mixer()
    engine.prepare(48000, 256)
    daemon = SimpleNamespace(
        engine=engine,
        opts=SimpleNamespace(audio="portaudio", midi_api="alsa"),
        audio=SimpleNamespace(output_latency_s=0.01),
    )
    latency = Daemon._output_latency
    assert latency(daemon) == 0.01  # type: ignore[arg-type]
    engine.post(Keylock(True))
    engine.process(np.zeros((256, 2), np.float32))
    assert latency(daemon) == 0.01  # type: ignore[arg-type]  # filling: the dry mix heard
    keylock_heard(engine)
    assert latency(daemon) == 0.01 + LATENCY / 48000  # type: ignore[arg-type]
    daemon.opts = SimpleNamespace(audio="jack", midi_api="jack")
    assert latency(daemon) == LATENCY / 48000  # type: ignore[arg-type]
    keylock_heard(engine, False)
    assert latency(daemon) == 0.0  # type: ignore[arg-type]
