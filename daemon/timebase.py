"""The JACK timebase: follow a master's bars, beats and tempo, or be the master.

:class:`BbtFollower` is the :class:`~.sync.TransportFollower` of ``--sync jack``
when a timebase master (a DAW) fills the transport's bars, beats and tempo: it
locks the track's grid to the session's. The session's bar 1 beat 1 is the
track's anchor (``/sync/anchor`` once set, else the grid's first downbeat), the
session's beat ``b`` is the track's second ``anchor + b * period``, and the vinyl
rate is the session's tempo over the track's (within the mixer's 0.5..2). The
phase is measured every block, in the JACK process callback, exactly: the mixer's
play head at the block's first sample against the session's beat at the
transport frame of that sample. It is held by nudging that rate by at most
:data:`~.clock_in.NUDGE` as the MIDI clock follower does (over :data:`CORRECT_S`,
shorter than its); a locate, a start or
an error over :data:`~.clock_in.JUMP_S` seeks. Without bars and beats in the
transport (or without a grid) it is the position follower it extends.

:class:`TimebaseMaster` (``--jack-timebase``) fills the bars, beats and tempo in
JACK's timebase callback from the track's grid at the play head and the vinyl
rate, so a DAW follows the track's tempo.

:func:`leader_grid` is the grid quantize uses: the leader's bar lines while a
leader holds the track (:attr:`SyncControl.bars <.sync.SyncControl.bars>`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, Rate, Seek, Track
from stemdeck.core.mixer.keylock import Shifter
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

from .clock_in import JUMP_S, NUDGE
from .sync import FollowedEngine, SyncControl, TransportFollower

__all__ = [
    "BBT_VALID",
    "CORRECT_S",
    "MAX_SLIP_BLOCKS",
    "RATE_STEP",
    "TICKS_PER_BEAT",
    "BbtFollower",
    "TimebaseMaster",
    "leader_grid",
    "session_beat",
]

#: JACK's ``JackPositionBBT`` bit of ``jack_position_t.valid`` (jack/types.h).
BBT_VALID = 0x10
#: Ticks per beat stemdeck writes as the timebase master (as Ardour and most
#: JACK timebase masters do).
TICKS_PER_BEAT = 1920.0
#: Seconds over which a phase error is taken out (before the nudge's bound): the
#: error is measured exactly every block (no clock jitter to smooth, unlike MIDI
#: clock's :data:`~.clock_in.CORRECT_S`), so the few milliseconds a rate's glide
#: leaves after a start or a tempo change are gone within a beat.
CORRECT_S = 0.2
#: The least change of the nudged rate worth a post (a fraction of the rate): a
#: phase error moving by 0.1 ms; smaller ones wait, so a locked block posts nothing.
RATE_STEP = 5e-4
#: The most beats in a session's bar that quantize follows (a grid's limit).
MAX_BAR_BEATS = 32
#: A rolling transport's frame off from the one expected by at most this many
#: blocks is a slip (a cycle missed or run twice on a busy machine), not a locate:
#: the beat is carried on from the last block's, not read from a position the
#: master may not have written for this cycle (see :meth:`BbtFollower._lock`).
MAX_SLIP_BLOCKS = 4


class FollowedRate(FollowedEngine, Protocol):
    """The follower also reads the mixer's vinyl rate and whether its pitch shifter
    is engaged (keylock or a pitch shift)."""

    rate: float
    shifter: Shifter
    #: The largest block the mixer was prepared for (frames).
    max_block: int


def session_beat(pos: Any) -> tuple[float, float, float, float] | None:
    """The session's position in a JACK ``jack_position_t`` (or anything with its
    fields): (beats since bar 1 beat 1, BPM, beats per bar, a tick in beats); None
    without bars and
    beats (``valid`` lacks :data:`BBT_VALID`) or with values no session has (a
    tempo outside 1..1000 BPM, a bar of less than one beat or over 1000, no ticks
    per beat, a beat or tick outside its bar or beat). The meter is taken as
    constant since bar 1."""
    if not int(pos.valid) & BBT_VALID:
        return None
    bpm = float(pos.beats_per_minute)
    per_bar = float(pos.beats_per_bar)
    per_beat = float(pos.ticks_per_beat)
    bar, beat, tick = int(pos.bar), int(pos.beat), int(pos.tick)
    if not (1.0 <= bpm <= 1000.0 and 1.0 <= per_bar <= 1000.0 and 0.0 < per_beat < 1e9):
        return None  # NaN fails too
    if not (1 <= beat <= math.ceil(per_bar) and 0 <= tick < per_beat):
        return None
    return (bar - 1) * per_bar + (beat - 1) + tick / per_beat, bpm, per_bar, 1.0 / per_beat


def leader_grid(grid: BeatGrid | None, bars: tuple[float, int] | None) -> BeatGrid | None:
    """The grid quantize follows: ``grid`` (the track's) with its bars on the
    leader's (``bars``: the track's second at the leader's bar 1 and its beats per
    bar, :attr:`~.sync.SyncControl.bars`) while a leader holds the track, else
    ``grid`` itself."""
    if grid is None or bars is None:
        return grid
    anchor, per_bar = bars
    try:
        return BeatGrid(grid.bpm, anchor, per_bar)
    except ParameterError:  # a bar a grid cannot have: the track's own bars
        return grid


class BbtFollower(TransportFollower):
    """Audio thread: the transport's bars, beats and tempo into the track's play
    head and rate (see the module docstring).

    Parameters
    ----------
    engine : the mixer
    sync : SyncControl
        Followed while its source is ``jack``; :attr:`~.sync.SyncControl.jack_bpm`,
        :attr:`~.sync.SyncControl.jack_phase` and :attr:`~.sync.SyncControl.bars`
        say the session's tempo, the phase error and the session's bar lines.
    grid : callable
        The playing track's grid in force, or None (``TrackBeats.grid``: no lock,
        read once a block while locked).
    """

    #: A frame a few blocks off the one expected is a slip (JACK's frames; see
    #: :data:`MAX_SLIP_BLOCKS`). A follower whose session's beat is right in any
    #: block (Link's, read at the block's time) has no slips.
    slips = True

    def __init__(
        self,
        engine: FollowedRate,
        sync: SyncControl,
        grid: Callable[[], BeatGrid | None],
    ) -> None:
        super().__init__(engine, sync)
        self.engine: FollowedRate = engine
        self.grid = grid
        #: Locked to bars and beats now (False: the position follower, or not following).
        self.locked = False
        self._rate = 1.0  # the rate last posted
        self._base = 0.0  # the session's tempo over the grid's at the last block
        self._bend = False  # a tempo step's bend is half way: its second block next
        self._grid_bpm = 0.0  # the grid's tempo of the last block
        self._anchor_s = math.nan  # the anchor (s) of the last block
        self._delay = 0  # the mixer's output delay at the last block (frames)
        self._beat = math.nan  # the session's beat expected at the next block

    def end_bend(self, frames: int) -> None:
        """A tempo step's bend left half way (a block that does not lock: another
        source, no grid, no bars): down (or up) to the step's rate over this block."""
        if self._bend:
            self._bend = False
            if self.engine.post(Rate(self._base, glide=frames)):
                self._rate = self._base

    def block(self, rolling: bool | None, frame: int, frames: int, pos: Any = None) -> None:
        sync = self.sync
        if sync.source != "jack":
            self.end_bend(frames)
            if self.locked:  # the bars were ours
                sync.bars = None
                sync.jack_phase = None
            self.following = self.locked = False
            return
        bbt = None if pos is None or sync.timebase_master else session_beat(pos)
        grid = self.grid() if bbt is not None else None
        sync.jack_bpm = bbt[1] if bbt is not None else None
        track = self.engine.track
        if bbt is None or grid is None or track is None or self.engine.sr <= 0:
            self.end_bend(frames)
            if self.locked:  # bars gone: position alone again, from a seek at rate 1
                self.locked = False
                self._expect = -1  # a locate to the position follower: it seeks
                self._rate = 1.0
                self.engine.post(Rate(1.0))
            sync.jack_phase = None
            sync.bars = None
            super().block(rolling, frame, frames, pos)
            return
        sync.jack_phase = self._lock(rolling, frame, frames, bbt, grid, track)

    def _lock(
        self,
        rolling: bool | None,
        frame: int,
        frames: int,
        bbt: tuple[float, float, float, float],
        grid: BeatGrid,
        track: Track,
    ) -> float | None:
        """Lock to the session's position ``bbt`` (:func:`session_beat`'s tuple) in
        one block; the phase error (s), or None while not locked (a jump, a start,
        a stop). ``frame`` tells a locate: the last block's plus ``frames``, none."""
        engine, sync = self.engine, self.sync
        beat, bpm, per_bar, tick = bbt
        anchor = sync.anchor if sync.anchor_set else grid.downbeat
        first = not (self.following and self.locked)
        if rolling is None:
            rolling = self._playing
        # The keylock's shifter delays what the head reads: the head reads the beat the
        # session reaches that much later (a change of it, keylock on or off, seeks).
        delay = engine.output_delay
        same = (
            anchor == self._anchor_s
            and grid.bpm == self._grid_bpm
            and track is self._track
            and delay == self._delay
        )
        moved = frame != self._expect or not same
        # The master's beat is to a tick (most cut it: the true beat is within the
        # tick after), 0.25 ms at 120 BPM: the beat carried on at the tempo from the
        # last block, held within that tick, is the session's without the steps.
        if not moved and beat - tick <= self._beat <= beat + 2.0 * tick:
            beat = min(max(self._beat, beat), beat + tick)
        elif (
            self.slips
            and same
            and frame != self._expect
            and not first
            and rolling
            and self._playing
            and abs(frame - self._expect) <= MAX_SLIP_BLOCKS * frames
        ):
            # A slip, not a locate: a cycle this client missed (the frame is ahead)
            # or ran twice (behind). The master missed it too, as a rule (one busy
            # machine): JACK then moved the frame on under the bars and beats it
            # wrote for the frame before. The beat carried on from the last block to
            # this frame is the session's; the seek below puts the play head on it.
            beat = self._beat + (frame - self._expect) / engine.sr * bpm / 60.0
        elif rolling:
            beat += 0.5 * tick  # a tick's middle: its mean
        self._beat = beat + frames / engine.sr * bpm / 60.0 if rolling else beat
        self.following = self.locked = True
        self._expect = frame + frames if rolling else frame
        self._anchor_s, self._grid_bpm, self._track = anchor, grid.bpm, track
        self._delay = delay
        bars = sync.bars
        if bars is None or bars[0] != anchor or bars[1] != per_bar:  # a new tuple on change only
            whole = per_bar == int(per_bar) <= MAX_BAR_BEATS
            sync.bars = (anchor, int(per_bar)) if whole else None
        fps = track.sr
        base = min(max(bpm / grid.bpm, MIN_RATE), MAX_RATE)
        before, self._base = self._base, base
        bend, self._bend = self._bend, False
        heard = beat + delay / engine.sr * bpm / 60.0  # the beat when this block is heard
        target = round((anchor + heard * grid.period) * fps)  # the track's frame now
        span = math.ceil(frames * base * fps / engine.sr)
        want = rolling and 0 <= target and target + span < track.length
        if first or moved or want != self._playing:
            parts: list[Command] = []
            if (want or moved or first) and engine.position != target:
                parts.append(Seek(min(max(target, 0), track.length) / fps))
            if base != self._rate or first:
                # At once: under the seek's crossfade or the start's fade in, the step
                # is not heard, and a glide would leave the first beats behind.
                parts.append(Rate(base, at_once=True))
            if first or want != self._playing:
                parts.append(self._play if want else self._pause)
            if parts and engine.post(parts[0] if len(parts) == 1 else Batch(tuple(parts))):
                self._playing = want
                self._rate = base
            return None
        if not want:
            return None
        ahead = engine.position - target  # the track's frames
        error = ahead / fps / base  # s of the session
        if abs(error) > JUMP_S:
            if engine.post(Batch((Seek(target / fps), Rate(base, at_once=True)))):
                self._rate = base
            return None
        if bend:  # a tempo step's second block: down (or up) to the tempo
            if engine.post(Rate(base, glide=frames)):
                self._rate = base
            return error
        if before > 0.0 and abs(base - before) > RATE_STEP * base and not engine.shifter.engaged:
            # A tempo step of the leader: the rate bends to it over two blocks, past
            # it and back, so the head covers what the new tempo does from this
            # block's first frame (plus the error now): the beat is not left behind,
            # as a glide leaves it (7.5 ms for 150 -> 90 BPM over 30 ms), and the
            # pitch moves without a step. Through a linear rise from r0 to p over
            # this block and a fall to ``base`` over the next, the head covers
            # F (r0 + 2p + base) / 2 for 2 F base less the frames ahead. Not with
            # the pitch shifter engaged: a rate moving that much within its frame
            # puts audio read at two rates into one frame, whose pitch blips (a
            # one-block glide from 1.5 to 0.9: 1,186 cents at 64 frames, the
            # mixer's 30 ms glide 101; tests/core/mixer/test_keylock.py); the
            # mixer's glide then, and the nudge takes out what it leaves.
            r0, lead = self._rate, 0 if abs(ahead) <= 1 else ahead  # a frame: rounding
            catch = min(max(-lead * engine.sr / (fps * frames), -abs(base - r0)), abs(base - r0))
            peak = min(max(base + (base - r0) / 2.0 + catch, MIN_RATE), MAX_RATE)
            if engine.post(Rate(peak, glide=frames)):
                self._rate, self._bend = peak, True
            return error
        # The play head is a whole frame: a frame either way is its rounding, not an error.
        nudge = 0.0 if abs(ahead) <= 1 else min(max(-error / CORRECT_S, -NUDGE), NUDGE)
        rate = min(max(base * (1.0 + nudge), MIN_RATE), MAX_RATE)
        if abs(rate - self._rate) > RATE_STEP * base and engine.post(Rate(rate)):
            self._rate = rate
        return error


class MasterEngine(Protocol):
    """What the timebase master reads of the mixer (audio thread)."""

    position: int
    rate: float
    sr: int
    track: Track | None

    @property
    def output_delay(self) -> int: ...


class TimebaseMaster:
    """stemdeck as the JACK timebase master (``--jack-timebase``).

    JACK calls :meth:`callback` in stemdeck's process thread right after its
    process callback, with the position structure of the next cycle: the mixer's
    play head is then where that cycle starts. The bars and beats are the
    track's grid at what the cycle sounds: the play head less the keylock's
    delay (:attr:`~stemdeck.core.mixer.engine.Mixer.output_delay`) at the vinyl
    rate (bar 1 beat 1 the grid's first downbeat; before it, bar 0 and below),
    the tempo the grid's times the vinyl rate. While ``--sync jack``
    follows the transport's position, the track's second at the cycle is the one
    the follower seeks to (``anchor + frame / sr``, the rate 1: it moves frame by
    frame), so a locate's new position has its bars at once.

    Parameters
    ----------
    engine : the mixer
    sync : SyncControl
    grid : callable
        The playing track's grid in force, or None (no bars then).
    """

    def __init__(
        self, engine: MasterEngine, sync: SyncControl, grid: Callable[[], BeatGrid | None]
    ) -> None:
        self.engine = engine
        self.sync = sync
        self.grid = grid
        #: Callbacks that failed (JACK drops a client whose callback raises: counted).
        self.errors = 0

    def attach(self, client: Any, *, conditional: bool = False) -> bool:
        """Register :meth:`callback` with ``client`` (a ``jack.Client``); False when
        ``conditional`` and another master holds the timebase."""
        taken = bool(client.set_timebase_callback(self.callback, conditional))
        self.sync.timebase_master = taken
        return taken

    def release(self, client: Any) -> None:
        """Give the timebase up (before the client closes): the transport rolls on
        with frames alone."""
        if self.sync.timebase_master:
            self.sync.timebase_master = False
            client.release_timebase()

    def callback(self, state: int, blocksize: int, pos: Any, new_pos: bool) -> None:
        """JACK's timebase callback: the bars, beats and tempo of ``pos``."""
        try:
            self.fill(pos)
        except Exception:
            self.errors += 1

    def fill(self, pos: Any) -> None:
        """Write bars, beats and tempo into ``pos`` (its ``frame`` is the cycle's),
        or clear :data:`BBT_VALID` with no track or grid."""
        engine, sync = self.engine, self.sync
        grid = self.grid()
        track = engine.track
        if grid is None or track is None or engine.sr <= 0:
            pos.valid = int(pos.valid) & ~BBT_VALID
            return
        if sync.source == "jack":  # following the transport's frames, at rate 1
            seconds = (int(pos.frame) + round(sync.anchor * engine.sr)) / engine.sr
            bpm = grid.bpm
        else:
            # What the cycle's first frame sounds: the play head's less what the
            # keylock's shifter holds back (its delay, at the vinyl rate).
            rate = float(engine.rate)
            seconds = engine.position / track.sr - engine.output_delay * rate / engine.sr
            bpm = grid.bpm * rate
        per_bar = grid.beats_per_bar
        beats = (seconds - grid.downbeat) / grid.period
        bar = math.floor(beats / per_bar)
        in_bar = beats - bar * per_bar
        beat = min(int(in_bar), per_bar - 1)
        tick = min(int((in_bar - beat) * TICKS_PER_BEAT), int(TICKS_PER_BEAT) - 1)
        pos.bar = bar + 1
        pos.beat = beat + 1
        pos.tick = tick
        pos.bar_start_tick = bar * per_bar * TICKS_PER_BEAT
        pos.beats_per_bar = float(per_bar)
        pos.beat_type = 4.0
        pos.ticks_per_beat = TICKS_PER_BEAT
        pos.beats_per_minute = bpm
        pos.valid = int(pos.valid) | BBT_VALID
