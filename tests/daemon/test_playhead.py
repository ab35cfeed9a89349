"""The heard play head: the mixer's position less what is still to be heard."""

from __future__ import annotations

import numpy as np
import pytest

from stemdeck.core.mixer.commands import Track
from stemdeck.daemon.playhead import GAIN, Head, HeardPlayHead


class Engine:
    def __init__(self) -> None:
        self.track: Track | None = Track(np.zeros((1, 2, 48000), np.float32), 48000, ("mix",))
        self.position = 0
        self.jumps = 0
        self.seq = 0
        self.rate = 1.0
        self.rolling = True

    def seconds(self, frames: int) -> float:
        return frames / 48000


def test_the_output_latency_is_read_at_every_reading() -> None:
    """A sample is heard half a block (on average) and the output's latency after the
    mixer's position says; the latency is asked again each time (a reopened stream
    may have another)."""
    engine = Engine()
    latency = [0.010]
    now = [1.0]
    head = HeardPlayHead(engine, block_s=0.004, latency=lambda: latency[0], clock=lambda: now[0])
    engine.position = 24000  # 0.5 s
    line = head.sample()
    assert line.s_ref == pytest.approx(0.5 - 0.002 - 0.010, abs=1e-12)
    assert line.time_of(0.5) == pytest.approx(1.0 + 0.012, abs=1e-12)
    latency[0] = 0.050  # 40 ms more: the line restarts at the new latency (a slip)
    engine.position = 24048
    now[0] = 1.001
    line = head.sample()
    assert (line.jumps, head.slips) == (1, 1)
    assert line.s_ref == pytest.approx(0.501 - 0.002 - 0.050, abs=1e-12)


def test_a_stall_is_a_slip_of_the_line_and_only_the_mixers_jumps_are_jumps() -> None:
    """The audio stalled 30 ms (an xrun): the head is heard 30 ms late, and the line
    restarts there without a jump (the MIDI clock out sent Stop, a pointer and
    Continue for it). A seek of 10 ms, which the mixer counts, is a jump, however
    small; a head off the line by less than JUMP_S is pulled, neither."""
    engine = Engine()
    now = [1.0]
    head = HeardPlayHead(engine, block_s=0.0, clock=lambda: now[0])
    engine.position = 48000
    assert head.sample() == Head(1.0, 1.0, 1.0, 1)  # the first reading starts the line
    now[0], engine.position = 1.1, 48000 + 4800 - 1440  # 100 ms on, 30 ms short
    line = head.sample()
    assert (line.jumps, head.slips) == (1, 1)
    assert (line.t_ref, line.s_ref) == (1.1, pytest.approx(1.07, abs=1e-12))
    now[0], engine.position = 1.2, 48000 + 9600 - 1440 + 480  # a seek 10 ms on
    engine.jumps = 1
    line = head.sample()
    assert (line.jumps, head.slips) == (2, 1)
    assert line.s_ref == pytest.approx(1.18, abs=1e-12)
    now[0], engine.position = 1.3, 48000 + 14400 - 1440 + 480 + 480  # 10 ms off
    line = head.sample()
    assert (line.jumps, head.slips) == (2, 1)
    assert line.s_ref == pytest.approx(1.28 + GAIN * 0.01, abs=1e-12)


def test_a_reading_held_up_between_its_clock_reads_is_not_taken() -> None:
    """The reading thread was held up (the GIL, the scheduler) between reading the
    clock and the mixer: the reading's time is unknown, and taking it would be a
    slip of the line (a burst or a gap of MIDI clock ticks)."""
    engine = Engine()
    times = iter([1.0, 1.0, 2.0, 2.05, 3.0, 3.0])
    head = HeardPlayHead(engine, block_s=0.0, clock=lambda: next(times))
    engine.position = 48000
    first = head.sample()
    engine.position = 96000  # the mixer 1 s on; the reading took 50 ms
    assert head.sample() is first
    assert head.slips == 0
    engine.position = 144000
    line = head.sample()
    assert (line.t_ref, line.s_ref, line.jumps, head.slips) == (3.0, pytest.approx(3.0), 1, 0)


def test_the_mixer_counts_its_heads_jumps_and_nothing_else() -> None:
    """MixerState.jumps: a seek, a loop's wrap and the end's wrap count; a rate
    change, the landing on a whole frame and a region's channels replacing its
    original do not."""
    from stemdeck.core.mixer.commands import Loop, Play, Rate, Seek, SetTrack
    from stemdeck.core.mixer.engine import Mixer

    sr, block = 48000, 256
    mixer = Mixer(at_end="loop")
    mixer.prepare(sr, block)
    y = np.full((1, 2, sr), 0.1, np.float32)
    mixer.post(SetTrack(Track(y, sr, ("mix",))))
    mixer.post(Play())
    out = np.zeros((block, 2), np.float32)

    def blocks(n: int) -> int:
        for _ in range(n):
            mixer.process(out)
        return mixer.jumps

    start = blocks(1)
    assert blocks(10) == start
    mixer.post(Rate(1.07))
    assert blocks(20) == start  # the read head between rates: no jump
    mixer.post(Rate(1.0))
    assert blocks(20) == start  # back to 1.0: the landing on a whole frame is none
    assert mixer._exact
    mixer.post(Seek(0.5))
    assert blocks(1) == start + 1
    mixer.post(Loop(0.5, 0.55))  # the head inside it: no jump; 2,400 frames
    assert blocks(8) == start + 1  # to 26,304 of 26,400
    assert blocks(1) == start + 2  # the wrap
    assert blocks(10) == start + 3  # 2,560 frames: one more wrap
    mixer.post(Loop(0.0, 0.0))
    mixer.post(Seek(0.9))
    assert blocks(1) == start + 4
    assert blocks(36) == start + 5  # 9,216 frames: the track's end wraps to its start


def test_a_reading_made_while_the_mixer_moves_its_head_is_not_taken() -> None:
    """The audio thread sets a seek's position, then counts the jump: a reading
    between the two paired the new position with the old count, a slip 30 s forward
    (the clock out sent 1,438 ticks at once). The mixer's sequence count is odd while
    it moves the head, and changes across a move: such a reading is not taken."""
    engine = Engine()
    now = [1.0]
    head = HeardPlayHead(engine, block_s=0.0, clock=lambda: now[0])
    engine.position = 48000
    first = head.sample()
    now[0], engine.position = 1.004, 48000 + 192 + 30 * 48000
    engine.seq = 1  # the seek half made: the position moved, the count not yet
    assert head.sample() is first
    engine.seq, engine.jumps = 2, 1  # made
    line = head.sample()
    assert (line.jumps, head.slips) == (2, 0)
    assert line.s_ref == pytest.approx(31.004, abs=1e-12)

    class Moving(Engine):
        """The move made between the reading's first look at the count and its last."""

        @property
        def seq(self) -> int:
            self._reads += 1
            return 2 if self._reads % 2 else 4

        @seq.setter
        def seq(self, value: int) -> None:
            self._reads = 0

    moving = Moving()
    head = HeardPlayHead(moving, block_s=0.0, clock=lambda: now[0])
    assert head.sample() == Head(0.0, 0.0, 0.0, 0)  # nothing taken


def test_a_slip_beyond_a_quarter_second_is_a_jump() -> None:
    engine = Engine()
    now = [1.0]
    head = HeardPlayHead(engine, block_s=0.0, clock=lambda: now[0])
    engine.position = 48000
    head.sample()
    now[0], engine.position = 1.5, 48000 + 24000 - 12480  # 260 ms short: a dropout
    line = head.sample()
    assert (line.jumps, head.slips) == (2, 0)
    now[0], engine.position = 2.0, 48000 + 48000 - 12480 + 11520  # 240 ms on: a slip
    line = head.sample()
    assert (line.jumps, head.slips) == (2, 1)


def test_the_separation_replacing_the_original_is_no_jump_and_a_new_track_is_one() -> None:
    """The track object changes when the separated channels replace the original
    that stood in (the same music, the head where it was): that read as a jump, and
    the clock out sent Stop, a pointer and Continue as the stems came in. A new track
    counts a jump even from its start; the sequence count is even between blocks and
    two more for each move."""
    from stemdeck.core.mixer.commands import Play, SetTrack
    from stemdeck.core.mixer.engine import Mixer

    sr, block = 48000, 256
    mixer = Mixer()
    mixer.prepare(sr, block)
    y = np.full((1, 2, sr), 0.1, np.float32)
    mixer.post(SetTrack(Track(y, sr, ("mix",), is_mix=True)))
    mixer.post(Play())
    out = np.zeros((block, 2), np.float32)
    for _ in range(4):
        mixer.process(out)
    assert (mixer.jumps, mixer.seq) == (1, 2)  # the first track, from its start
    now = [1.0]
    head = HeardPlayHead(mixer, block_s=block / sr, clock=lambda: now[0])
    first = head.sample()
    channels = np.full((2, 2, sr), 0.05, np.float32)
    mixer.post(SetTrack(Track(channels, sr, ("a", "b")), same_audio=True))
    mixer.process(out)
    now[0] += block / sr
    line = head.sample()
    assert (line.jumps, head.slips) == (first.jumps, 0)
    assert (mixer.jumps, mixer.seq) == (1, 4)
    mixer.post(SetTrack(Track(channels, sr, ("a", "b"))))  # another track
    mixer.process(out)
    now[0] += block / sr
    assert head.sample().jumps == first.jumps + 1
    assert (mixer.jumps, mixer.seq) == (2, 6)


def test_the_tracks_end_and_a_stop_take_the_head_to_0_inside_a_section() -> None:
    """Past the track's end, and at a stop's end, the head goes to 0 as the transport
    stops: a reading between the two paired 'rolling' with position 0, a jump to the
    start while playing (the clock out sent a pointer to 0 and Continue, then Stop)."""
    from stemdeck.core.mixer.commands import Play, SetTrack, Stop
    from stemdeck.core.mixer.engine import Mixer

    sr, block = 48000, 256
    mixer = Mixer()
    mixer.prepare(sr, block)
    mixer.post(SetTrack(Track(np.full((1, 2, 4800), 0.1, np.float32), sr, ("mix",))))
    mixer.post(Play())
    out = np.zeros((block, 2), np.float32)
    mixer.process(out)
    seq = mixer.seq
    while mixer.rolling:
        mixer.process(out)
    assert (mixer.position, mixer.seq) == (0, seq + 2)
    mixer.post(Play())
    for _ in range(4):
        mixer.process(out)
    mixer.post(Stop())
    seq = mixer.seq
    for _ in range(8):  # the stop's fade, then at 0
        mixer.process(out)
    assert (mixer.playing, mixer.position, mixer.seq) == (False, 0, seq + 2)
