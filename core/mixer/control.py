"""The mixer's commands: queued by control threads, applied at the top of a block.

:meth:`MixerControl.post` is the control threads' only way in: a bounded,
non-blocking queue of the small immutable commands of
:mod:`stemdeck.core.mixer.commands` (a full queue is counted and the command
refused). :meth:`Mixer.process <stemdeck.core.mixer.engine.Mixer.process>`
drains it at the top of each block, in the audio thread: each command sets
Python scalars (a strip's gain, mute, solo and pan, the master, the transport,
the loop, the track) and the FX's own (:class:`~.fx.Effects`), then the strips a
command changed are re-aimed once, however many commands came
(:meth:`MixerControl._retarget`: every strip when the solo set changed). A block
with no command runs none of this. The play head's crossfading jump
(:meth:`MixerControl._jump`) is here too: seeks, loops and track changes make
it, and so does the block where the loop wraps (or, with ``at_end="loop"``, at the
track's end).

This is the middle layer of the Mixer (see :mod:`.state`): a base class, not an
object the Mixer holds, so the block calls ``self._apply`` and reads
``self._cur`` as it would in one class, with no lookup in between.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .commands import (
    Batch,
    Command,
    EchoTarget,
    Loop,
    MasterTarget,
    Pause,
    Play,
    Rate,
    ReverbTarget,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from .heads import FadingHead, Ramp
from .params import MAX_GAIN, MAX_RATE, MIN_RATE, plays_at
from .state import MixerState

__all__ = ["MixerControl"]


class MixerControl(MixerState):
    """The Mixer's command side: :meth:`post`, and what a drained command changes.

    The attributes are declared here and set up by
    :class:`~stemdeck.core.mixer.engine.Mixer` (its constructor and ``prepare``).
    """

    _queue: deque[Command]
    _queue_size: int
    # Samples of a level ramp, of a crossfade, and of the shortest loop.
    _ramp_len: int
    _xfade_len: int
    _min_loop: int
    _solos: int  # strips soloed
    _dirty: bool  # some strip must be re-aimed
    _dirty_all: bool  # every strip must (the solo set changed)
    _dirty_strips: set[int]
    # Each (strip, side)'s gain ramp: where it is, where it heads, its step a sample
    # and the samples it has left (float64, shape (max_channels, 2)).
    _cur: np.ndarray
    _tgt: np.ndarray
    _step: np.ndarray
    _left: np.ndarray
    _ramping: bool  # some strip ramp runs
    _ramp_frames: int  # samples until the longest running strip ramp ends
    _curves_ok: bool  # the block's gain curves hold the flat gains (no ramp runs)
    _master: Ramp  # the master's gain
    _transport: Ramp  # play (1) and pause (0)
    _head: Ramp  # the main play head's fade-in after a jump
    _fading: list[FadingHead]  # the heads a jump left behind, fading out
    _stopping: bool  # the fade out is a stop: then position 0, no loop
    # The main read head between rates (engine.py): the kernel's ``read`` state,
    # whether it reads frame for frame, the largest step it may take, and the
    # track's rate over the device's.
    _rd: np.ndarray
    _exact: bool
    _fast: float
    _base_step: float
    _glide_len: int  # frames of a rate change's glide

    def post(self, command: Command) -> bool:
        """Queue a command for the next block; False (and counted) if the queue is full.

        Safe from any number of control threads: deque appends are atomic.
        """
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return False
        self._queue.append(command)
        return True

    def _apply(self, cmd: Command) -> None:
        """Apply one drained command (audio thread; scalar work only). A ``Batch``
        applies its commands in order. A ``StripTarget`` outside the strips, and
        ``Play`` or ``Seek`` with no track, change nothing."""
        if isinstance(cmd, StripTarget):
            i = cmd.index
            if 0 <= i < self.max_channels:
                solo = bool(cmd.solo)
                if solo != self._strip_params[i][2]:
                    self._solos += 1 if solo else -1
                    self._dirty_all = True  # who is audible may change on every strip
                self._strip_params[i] = (
                    min(max(float(cmd.gain), 0.0), MAX_GAIN),
                    bool(cmd.mute),
                    solo,
                    min(max(float(cmd.pan), -1.0), 1.0),
                )
                self._dirty_strips.add(i)
                self._dirty = True  # re-aimed once, after the queue
                self.fx.strip(i, cmd)
        elif isinstance(cmd, MasterTarget):
            self._master_state = (min(max(cmd.gain, 0.0), MAX_GAIN), cmd.mute)
            self._master.aim(0.0 if cmd.mute else self._master_state[0], self._ramp_len)
            self.fx.master(cmd)
        elif isinstance(cmd, EchoTarget):
            self.fx.echo(cmd)
        elif isinstance(cmd, ReverbTarget):
            self.fx.reverb(cmd)
        elif isinstance(cmd, Play):
            if self.track is not None:
                if self._ending:  # as after the end: the play head fades in where it is
                    self._ending = False
                    self._head.jump(0.0)
                    self._head.aim(1.0, self._xfade_len)
                self.playing = True
                self._pausing = self._stopping = False
                self._transport.aim(1.0, self._xfade_len)
                self.fx.play()  # a send is open: the bus runs again
        elif isinstance(cmd, Pause | Stop):
            if self.playing:
                self._pausing = True
                self._stopping = isinstance(cmd, Stop)
                self._transport.aim(0.0, self._xfade_len)
            elif isinstance(cmd, Stop):
                self.position = 0
                self._rewind_phase()
                self._loop = None
        elif isinstance(cmd, Seek):
            track = self.track
            if track is not None:
                fps = track.sr  # positions count the track's own frames
                target = round(min(max(cmd.seconds, 0.0), track.length / fps) * fps)
                self._jump(min(target, track.length), 0)
        elif isinstance(cmd, Loop):
            self._set_loop(cmd)
        elif isinstance(cmd, Rate):
            rate = min(max(float(cmd.rate), MIN_RATE), MAX_RATE)
            if rate == rate and rate != self.rate:  # NaN changes nothing
                self.rate = rate
                self._aim_step(self._glide_len)
        elif isinstance(cmd, SetTrack):
            self._set_track(cmd.track, cmd.same_audio)
        elif isinstance(cmd, Batch):
            for c in cmd.commands:
                self._apply(c)

    def _set_loop(self, cmd: Loop) -> None:
        track = self.track
        if cmd.end <= cmd.start or track is None:
            self._loop = None
            return
        length = track.length
        fps = track.sr  # positions count the track's own frames
        start = min(round(max(cmd.start, 0.0) * fps), length)
        end = min(round(cmd.end * fps), length)
        shortest = self._shortest_loop(track)
        if end - start < shortest:
            end = min(start + shortest, length)
            start = max(0, end - shortest)
        if end - start < shortest:
            self._loop = None  # the whole track is shorter than a loop can be
            return
        self._loop = (start, end)
        if not start <= self.position < end:
            self._jump(start, 0)  # outside the new region: go there now

    def _shortest_loop(self, track: Track) -> int:
        """The shortest loop in ``track``'s frames: ``min_loop_ms`` of its time, and
        at least two crossfades of output at the head's step now."""
        if track.sr == self.sr and self._fast <= 1.0:
            return self._min_loop
        ms = round(self._min_loop / self.sr * track.sr)
        return max(ms, math.ceil(2 * self._xfade_len * max(self._fast, 1.0)))

    def _set_track(self, track: Track, same_audio: bool) -> None:
        ch = track.channels
        if (
            not isinstance(ch, np.ndarray)
            or ch.ndim != 3
            or ch.shape[0] > self.max_channels
            or ch.shape[1] not in (1, 2)  # mono or stereo channels
            or ch.shape[2] < 1  # no samples: at_end="loop" would jump to 0 forever
            or not plays_at(track.sr)
            or ch.dtype != np.float32
        ):
            self.dropped += 1  # refused: the daemon checks this before posting
            return
        previous = self.track
        self.track = track
        if same_audio and previous is not None and previous.sr != track.sr:
            # The same music at another rate: the same time in the new track's frames.
            ratio = track.sr / previous.sr
            self.position = round(self.position * ratio)
            if self._loop is not None:
                self._loop = (round(self._loop[0] * ratio), round(self._loop[1] * ratio))
            self._rewind_phase()
        if same_audio and previous is not None:
            self._track_step(track)
            # The same music in other channels (separation replacing the original
            # that stood in): keep the position and loop. The channels sum to the
            # original, so every strip starts at unity and glides to its level.
            if previous.is_mix and not track.is_mix:
                self._cur.fill(1.0)
                self._tgt.fill(1.0)
                self._left.fill(0.0)
                self._curves_ok = False
                self._dirty = self._dirty_all = True
            self.position = min(self.position, track.length)
            if self._loop is not None and self._loop[1] > track.length:
                self._loop = None  # not the same length after all: no region past its end
            return
        # Another track: it starts from its beginning, with no loop; the old one
        # fades out from where it was, at its own step (taken before the new
        # track's), and the strips keep their levels.
        self._loop = None
        self._jump(0, 0, previous)
        self._track_step(track)

    def _track_step(self, track: Track) -> None:
        """The main head's step for ``track``'s rate, at once (a glide of the vinyl
        rate goes on when the rate is the same)."""
        if track.sr / self.sr != self._base_step:
            self._base_step = track.sr / self.sr
            self._aim_step(0)

    def _retarget(self, *, immediate: bool = False) -> None:
        """Aim the strips that changed (every strip if the solo set changed, or
        ``immediate``) at their gain, mute, solo and pan: scalar work per strip."""
        n = self.max_channels
        strips = range(n) if immediate or self._dirty_all else self._dirty_strips
        any_solo = self._solos > 0
        params = self._strip_params
        cur, tgt, step, left = self._cur, self._tgt, self._step, self._left
        ramp = self._ramp_len
        for i in strips:
            gain, muted, soloed, p = params[i]
            audible = (1.0 if soloed else 0.0) if any_solo else 1.0
            audible = audible * (0.0 if muted else 1.0) * gain
            # Balance law: centre is unity on both sides; turning towards one side
            # lowers the other linearly to silence at the end (-1 left, +1 right).
            # Written out here, not called from params.py: a call per strip would
            # add up to max_channels Python calls to a block that re-aims them all.
            for side, want in ((0, min(1.0 - p, 1.0) * audible), (1, min(1.0 + p, 1.0) * audible)):
                if immediate:
                    cur[i, side] = tgt[i, side] = want
                    step[i, side] = left[i, side] = 0.0
                elif want != tgt[i, side]:
                    step[i, side] = (want - cur[i, side]) / ramp
                    left[i, side] = float(ramp)
                    tgt[i, side] = want
                    self._ramping = True
                    self._ramp_frames = ramp
        self._dirty = self._dirty_all = False
        self._dirty_strips.clear()
        if immediate:
            self._ramp_frames = 0
            self._curves_ok = False

    def _aim_step(self, glide: int) -> None:
        """Aim the main head's step at the track's rate over the device's times the
        vinyl rate (over ``glide`` frames, or at once with 0)."""
        rd = self._rd
        target = self._base_step * self.rate
        if glide > 0 and rd[2] != target:
            rd[3] = target
            rd[4] = (target - rd[2]) / glide
            rd[5] = float(glide)
        else:
            rd[2] = rd[3] = target
            rd[4] = rd[5] = 0.0
        self._settle_step()

    def _settle_step(self) -> None:
        """After the head moved between rates: the largest step it may take before
        its glide ends, and whether it reads frame for frame (step 1, phase 0).
        Back at step 1 between two frames (a rate that glided back to 1.0), it
        lands on the nearest whole frame with a jump's crossfade, and from then on
        plays exactly what it would have had the rate never changed (audio thread;
        scalar work)."""
        rd = self._rd
        step, target = float(rd[2]), float(rd[3])
        self._fast = max(step, target)
        if step != 1.0 or rd[5] != 0.0:
            self._exact = False
            return
        if rd[1] == 0.0:
            self._exact = True
            return
        self._exact = False
        track = self.track
        if track is not None:
            # Crossfaded even when the nearest frame is this one (track given).
            land = self.position + (1 if rd[1] >= 0.5 else 0)
            self._jump(min(land, track.length), 0, track)  # phase 0: exact again

    def _rewind_phase(self) -> None:
        """The head lands on a whole frame (a seek, a stop): phase 0."""
        if self._rd[1] != 0.0:
            self._rd[1] = 0.0
            self._settle_step()

    def _jump(
        self, target: int, offset: int, track: Track | None = None, *, keep_phase: bool = False
    ) -> None:
        """Move the play head to ``target`` at ``offset`` in the block, crossfading:
        the old head (of ``track``, default the current one) fades out from where it
        was, at the step the main head had. ``keep_phase`` (a loop wrap between
        rates): the head keeps its fraction of a frame, so a loop lasts as long at
        every pass; otherwise it lands on the whole frame ``target``."""
        old = track if track is not None else self.track
        if (
            self.playing
            and not self._ending  # the play head is silent already: nothing to fade
            and old is not None
            and (target != self.position or track is not None)
        ):
            slot = self._fading[0]
            for h in self._fading:  # a free slot, else the quietest head
                if h.left == 0:
                    slot = h
                    break
                if h.gain < slot.gain:
                    slot = h
            slot.track = old
            slot.position = self.position
            slot.gain = self._head.current
            slot.step = -slot.gain / self._xfade_len
            slot.left = self._xfade_len
            slot.offset = offset
            slot.exact = self._exact
            if not self._exact:  # its own read head, at the step the main one has now
                st = slot.state
                np.copyto(st, self._rd)
                st[3] = st[2]
                st[4] = st[5] = 0.0
            head = self._head
            head.current, head.target = 0.0, 1.0
            head.left = self._xfade_len
            head.step = 1.0 / self._xfade_len
        self.position = target
        if not keep_phase and not self._exact:
            self._rewind_phase()
