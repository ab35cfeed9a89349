"""Where the play head is heard: a smooth line of track time over wall time.

The mixer moves its play head a block at a time, in the audio thread, ahead of
what is heard by the block and the output's latency. :class:`HeardPlayHead`
reads it from a control thread (the MIDI clock's), with no call in the audio
thread, and keeps a line ``seconds = s_ref + (t - t_ref) * speed`` that it pulls
gently towards each reading: the clock's ticks and the follower's phase come
from that line, not from the block-by-block steps.

The line restarts and counts a jump when the mixer says its head jumped
(:attr:`MixerState.jumps <stemdeck.core.mixer.state.MixerState.jumps>`: a seek,
a loop wrap, a beat jump, a cue, a new track), on play and on pause; not when
the same music comes in other channels (the separation replacing the original,
which plays on at the same place). A reading off the line by more than
:data:`JUMP_S` without any of those is a *slip*: the sound itself came late
(an audio stall, an xrun) or the output's latency changed. The line restarts at
the reading, since that is what is heard, but no jump is counted: the MIDI
clock out goes on ticking (a follower sees one long tick) instead of sending
Stop, Song Position Pointer and Continue mid-set. A slip beyond
:data:`SLIP_MAX_S` is taken for a jump (a follower that long out of place is
told where to go).

The mixer's track, position and jump count are read as a seqlock
(:attr:`MixerState.seq <stemdeck.core.mixer.state.MixerState.seq>`): a reading
during a change the audio thread is making (a seek's new position with the old
count reads as a slip forward, and a burst of clock ticks) is not taken, nor is
one the reading thread was held up in (more than :data:`READ_S` between the
clock read before and after it: its time is not known).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from stemdeck.core.mixer.commands import Track

__all__ = ["Head", "HeardPlayHead", "PlayedEngine"]

#: How far a reading may be from the line before it is a slip (s of track time).
JUMP_S = 0.02
#: The longest a reading may take and still be placed in time (s).
READ_S = 0.001
#: The largest slip (s of track time) taken as a slip; beyond it, a jump.
SLIP_MAX_S = 0.25
#: How much of a reading's distance from the line is taken per reading.
GAIN = 0.05


class PlayedEngine(Protocol):
    """What the estimator reads of the mixer (its public state)."""

    position: int
    jumps: int
    seq: int
    rate: float
    track: Track | None

    @property
    def rolling(self) -> bool: ...

    def seconds(self, frames: int) -> float: ...


@dataclass(frozen=True)
class Head:
    """The heard play head as a line.

    Attributes
    ----------
    t_ref, s_ref : float
        At wall time ``t_ref`` (s), the track's second ``s_ref`` is heard.
    speed : float
        Track seconds per second: the vinyl rate while rolling, else 0.
    jumps : int
        Counts restarts of the line (seeks, wraps, tracks, play and pause).
    """

    t_ref: float
    s_ref: float
    speed: float
    jumps: int

    @property
    def rolling(self) -> bool:
        return self.speed > 0.0

    def seconds_at(self, t: float) -> float:
        """The track second heard at wall time ``t``."""
        return self.s_ref + (t - self.t_ref) * self.speed

    def time_of(self, seconds: float) -> float:
        """The wall time the track's second ``seconds`` is heard (rolling only)."""
        return self.t_ref + (seconds - self.s_ref) / self.speed


class HeardPlayHead:
    """The mixer's play head as heard, from readings of its public state.

    Parameters
    ----------
    engine : PlayedEngine
        The mixer.
    block_s : float
        The audio block's duration (s): a reading is on average half a block
        behind the block it ends, and a block ahead of the sound.
    latency : callable
        The output's latency beyond the block (s), as the sink reports it now
        (:attr:`AudioSupervisor.output_latency_s
        <stemdeck.daemon.supervisor.AudioSupervisor.output_latency_s>`; read at
        every reading: a reopened stream may have another).
    clock : callable
        Wall time in seconds (``time.perf_counter``).
    """

    def __init__(
        self,
        engine: PlayedEngine,
        *,
        block_s: float,
        latency: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.block_s = block_s
        self.latency = latency
        self.head = Head(0.0, 0.0, 0.0, 0)
        #: Slips of the line (see the module docstring), for the log and the tests.
        self.slips = 0
        self._jumps = -1  # the mixer's count at the last reading taken

    def sample(self) -> Head:
        """Read the mixer now and return the line (replaced whole: any thread may
        read :attr:`head`)."""
        engine = self.engine
        ahead_s = 0.5 * self.block_s + self.latency()
        before = self.clock()
        seq = engine.seq
        track = engine.track
        rolling = engine.rolling and track is not None
        speed = float(engine.rate) if rolling else 0.0
        position = engine.position
        jumps = engine.jumps
        heard = engine.seconds(position) - ahead_s * speed  # the track's rate: read now
        consistent = not seq & 1 and engine.seq == seq
        after = self.clock()
        head = self.head
        if not consistent or after - before > READ_S:
            return head  # read mid-change, or held up: not placed in time
        now = 0.5 * (before + after)
        predicted = head.seconds_at(now)
        off = abs(heard - predicted) / max(speed, 1.0)
        rolled = (speed > 0.0) != head.rolling
        jumped = rolled or jumps != self._jumps or (speed > 0.0 and off > SLIP_MAX_S)
        slipped = not jumped and off > JUMP_S
        self._jumps = jumps
        if jumped:
            head = Head(now, heard, speed, head.jumps + 1)
        elif slipped:
            self.slips += 1
            head = Head(now, heard, speed, head.jumps)
        else:
            head = Head(now, predicted + GAIN * (heard - predicted), speed, head.jumps)
        self.head = head
        return head
