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

A :class:`~.commands.Quantized` command waits for its frame in a ring of
:data:`PENDING_ACTIONS` slots made with the Mixer (:meth:`MixerControl._wait`);
the block is cut where the head reaches it (``Mixer._quantized_block``, with
:meth:`MixerControl._frames_to_due`) and it is applied there. What the head will
never reach (a jump, a stop, a loop's wrap first) is applied at once
(``docs/quantize.md``).

This is the middle layer of the Mixer (see :mod:`.state`): a base class, not an
object the Mixer holds, so the block calls ``self._apply`` and reads
``self._cur`` as it would in one class, with no lookup in between.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import numpy as np

from .commands import (
    Batch,
    Command,
    EchoTarget,
    JumpBy,
    Keylock,
    Loop,
    MasterTarget,
    Pause,
    Pitch,
    Play,
    Quantized,
    Rate,
    ReverbTarget,
    Roll,
    RollEnd,
    Seek,
    SetTrack,
    Stop,
    StripTarget,
    Track,
)
from .heads import FadingHead, Ramp
from .history import StripHistory
from .kernel import READ_MAX_GLIDE, READ_MAX_STEP, READ_REACH
from .params import MAX_GAIN, MAX_RATE, MIN_RATE, plays_at
from .state import MixerState

__all__ = ["PENDING_ACTIONS", "MixerControl"]

#: Quantized commands (one per strip, master or transport command of a
#: :class:`~.commands.Quantized`) that can wait for their frame at once; one more
#: applies every waiting one at once first, so a flood never grows memory.
PENDING_ACTIONS = 256
#: A seek of at most this much (s of the track) to a frame at or before the oldest
#: waiting command's keeps the waiting commands waiting (a sync follower's correction
#: after a missed cycle); any other jump acts them at once.
SEEK_KEEPS_WAITING_S = 0.05


def _progressive_fits(track: Track, block: int, sr: int) -> bool:
    """Whether a track separated as it plays has an original, flags and chunks
    that fit its channels (else refused: the audio thread never indexes past them),
    its chunks longer than what one block of ``block`` output frames at ``sr`` and
    its crossfade read at the fastest step (the track's rate over ``sr`` times
    ``MAX_RATE``), the read head's taps on both sides and a loop's wrap included:
    the block's check looks at two flags."""
    mix, ready, ch = track.mix, track.ready, track.channels
    if not (
        isinstance(mix, np.ndarray)
        and isinstance(ready, np.ndarray)
        and mix.dtype == np.float32
        and mix.shape == (1, *ch.shape[1:])
        and ready.dtype == np.uint8
        and ready.ndim == 1
        and isinstance(track.chunk, int)
        and track.chunk >= 1
        and len(ready) == -(-ch.shape[2] // track.chunk)
    ):
        return False
    fast = max(MAX_RATE * track.sr / sr, 1.0)
    taps = READ_REACH * fast
    # engine.py's check between rates, at its widest: the taps behind (twice on a
    # wrap), the block and the crossfade ahead.
    span = 2 * (int(taps) + 1) + int(block * fast + taps) + 2
    return track.chunk > span


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
    # Each strip's last inputs to the keylock's shifter, before its gain and after
    # (history.py): a strip gain changed is heard at once through the shifter.
    _history: StripHistory
    _master: Ramp  # the master's gain
    _transport: Ramp  # play (1) and pause (0)
    _head: Ramp  # the main play head's fade-in after a jump
    _fading: list[FadingHead]  # the heads a jump left behind, fading out
    _stopping: bool  # the fade out is a stop: then position 0, no loop
    max_block: int
    # A track separated as it plays, or None; its ready flags, their last index and
    # the samples a flag stands for.
    _progressive: Track | None
    _progressive_flags: np.ndarray
    _progressive_last: int
    _progressive_chunk: int
    # The main read head between rates (engine.py): the kernel's ``read`` state,
    # whether it reads frame for frame, the largest step it may take, and the
    # track's rate over the device's.
    _rd: np.ndarray
    _exact: bool
    _fast: float
    _base_step: float
    _glide_len: int  # frames of a rate change's glide
    # Quantized commands waiting for their frame: a ring of PENDING_ACTIONS slots
    # (frame, command), oldest first; frames never decrease along it.
    _pq_frame: list[int]
    _pq_cmd: list[Command | None]
    _pq_head: int
    _pq_count: int
    _firing: bool  # applying waiting commands: the newer-values rule is off
    # A quantized command acted in this block's drain (its frame passed, or the head
    # jumped or stopped): the block's changes go through keylock's shifter as the
    # music does, not at once (_retarget's ``now``).
    _quantized_now: bool
    # A loop roll: running, the loop before it, and where the head would be without
    # it less where it is (track frames; every jump during the roll adds to it).
    _rolling: bool
    _roll_saved: tuple[int, int] | None
    _roll_offset: int

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
        ``Play`` or ``Seek`` with no track, change nothing. A ``Quantized`` waits
        (:meth:`_wait`)."""
        if self._pq_count and not self._firing and isinstance(cmd, StripTarget | MasterTarget):
            cmd = self._hold_switches(cmd)
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
            if self._pq_count:  # the head stops: what waits for it acts now
                self._flush_pending()
            if isinstance(cmd, Stop):
                self._rolling = False
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
            self._rolling = False
            if track is not None:
                fps = track.sr  # positions count the track's own frames
                target = min(
                    round(min(max(cmd.seconds, 0.0), track.length / fps) * fps), track.length
                )
                # A small seek (a follower's correction after a missed cycle) that the
                # head will still play from to the oldest waiting frame keeps what waits:
                # a quantized mute stays on its bar line.
                keep = (
                    self._pq_count > 0
                    and abs(target - self.position) <= SEEK_KEEPS_WAITING_S * fps
                    and target <= self._pq_frame[self._pq_head]
                )
                self._jump(target, 0, keep_waiting=keep)
        elif isinstance(cmd, Loop):
            self._rolling = False
            self._set_loop(cmd)
        elif isinstance(cmd, JumpBy):
            self._jump_by(cmd)
        elif isinstance(cmd, Roll):
            if self.track is not None:
                if not self._rolling:
                    self._roll_saved, self._roll_offset = self._loop, 0
                    self._rolling = True
                self._set_loop(Loop(cmd.start, cmd.end))
                if self._loop is None:  # no room for the loop: no roll
                    self._end_roll()
        elif isinstance(cmd, RollEnd):
            self._end_roll()
        elif isinstance(cmd, Rate):
            rate = min(max(float(cmd.rate), MIN_RATE), MAX_RATE)
            if rate == rate and rate != self.rate:  # NaN changes nothing
                self.rate = rate
                glide = self._glide_len if cmd.glide is None else cmd.glide
                self._aim_step(0 if cmd.at_once else glide)
        elif isinstance(cmd, Keylock):
            self.shifter.set(keylock=cmd.on)
        elif isinstance(cmd, Pitch):
            self.shifter.set(pitch=cmd.semitones)
        elif isinstance(cmd, SetTrack):
            if not cmd.same_audio:
                self._rolling = False
            self._set_track(cmd.track, cmd.same_audio)
        elif isinstance(cmd, Batch):
            for c in cmd.commands:
                self._apply(c)
        elif isinstance(cmd, Quantized):
            self._wait(cmd)

    # -- quantized commands (audio thread; scalar work) ----------------------------------
    def _wait(self, cmd: Quantized) -> None:
        """Queue ``cmd``'s commands for its frame, after every command already
        waiting (its frame is raised to theirs, so they act in the order sent).
        With nothing waiting, a transport that is not rolling or a frame the head
        has passed applies it at once. A full ring applies every waiting command
        first (a flood never grows memory)."""
        inner = cmd.command
        if not self._pq_count and (
            self.track is None or not self.rolling or cmd.frame <= self.position
        ):
            self._quantized_now = True
            self._apply(inner)
            return
        size = len(self._pq_cmd)
        frame = int(cmd.frame)
        if self._pq_count:
            last = self._pq_frame[(self._pq_head + self._pq_count - 1) % size]
            frame = max(frame, last)
        for c in inner.commands if isinstance(inner, Batch) else (inner,):
            if isinstance(c, Quantized):  # nested (the daemon sends none): this frame rules
                c = c.command
            if self._pq_count == size:
                self._flush_pending()
            slot = (self._pq_head + self._pq_count) % size
            self._pq_frame[slot] = frame
            self._pq_cmd[slot] = c
            self._pq_count += 1

    def _hold_switches(self, cmd: StripTarget | MasterTarget) -> StripTarget | MasterTarget:
        """A strip (or master) command while one for the same strip waits: the
        waiting one takes the newer values (it applies them at its frame), and this
        one applies now with the mute and solo the strip has now."""
        size = len(self._pq_cmd)
        index = cmd.index if isinstance(cmd, StripTarget) else None  # None: the master
        found = -1
        slot = self._pq_head
        for _ in range(self._pq_count):
            c = self._pq_cmd[slot]
            if (isinstance(c, StripTarget) and c.index == index) or (
                isinstance(c, MasterTarget) and index is None
            ):
                found = slot
            slot = (slot + 1) % size
        if found < 0:
            return cmd
        self._pq_cmd[found] = cmd
        if isinstance(cmd, StripTarget):
            if not 0 <= cmd.index < self.max_channels:
                return cmd
            now = self._strip_params[cmd.index]
            return replace(cmd, mute=now[1], solo=now[2])
        return replace(cmd, mute=self._master_state[1])

    def _due(self, frame: int) -> bool:
        """A command waiting for ``frame`` acts now: the head is there, or at the
        loop's end (it wraps before it could get there)."""
        loop = self._loop
        return frame <= self.position or (loop is not None and self.position >= loop[1])

    def _fire_due(self) -> int:
        """Apply the waiting commands that are due (oldest first); how many."""
        size = len(self._pq_cmd)
        fired = 0
        firing, self._firing = self._firing, True
        while self._pq_count and self._due(self._pq_frame[self._pq_head]):
            slot = self._pq_head
            c = self._pq_cmd[slot]
            self._pq_cmd[slot] = None
            self._pq_head = (slot + 1) % size
            self._pq_count -= 1
            fired += 1
            if c is not None:
                self._apply(c)
        self._firing = firing
        return fired

    def _flush_pending(self) -> None:
        """Apply every waiting command now, oldest first (the head jumped or stops,
        or the ring is full)."""
        size = len(self._pq_cmd)
        firing, self._firing = self._firing, True
        self._quantized_now = True
        while self._pq_count:
            slot = self._pq_head
            c = self._pq_cmd[slot]
            self._pq_cmd[slot] = None
            self._pq_head = (slot + 1) % size
            self._pq_count -= 1
            if c is not None:
                self._apply(c)
        self._firing = firing

    def _frames_to_due(self, limit: int) -> int:
        """Output frames until the oldest waiting command is due (0: now), if fewer
        than ``limit``; else -1. The head's steps are the kernel's ``read``'s, so
        between rates too this is the first output frame that reads at or past
        the command's frame."""
        target = self._pq_frame[self._pq_head]
        pos = self.position
        loop = self._loop
        if loop is not None:
            if pos >= loop[1]:
                return 0
            target = min(target, loop[1])
        if target <= pos:
            return 0
        if self._exact:
            n = target - pos
            return n if n < limit else -1
        if target - pos > limit * self._fast + 1.0:
            return -1
        rd = self._rd
        p, ph, step, tgt, inc, left = (float(v) for v in rd)
        p = float(pos)
        n = 0
        while p < target:
            if n >= limit:
                return -1
            n += 1
            ph = ph + step
            fl = math.floor(ph)
            p = p + fl
            ph = ph - fl
            if left > 0.0:
                left = left - 1.0
                step = tgt - inc * left if left > 0.0 else tgt
        return n

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

    def _jump_by(self, cmd: JumpBy) -> None:
        """:class:`~.commands.JumpBy`: the head (and the loop) ``frames`` on."""
        track = self.track
        if track is None:
            return
        frames = int(cmd.frames)
        loop = self._loop
        if cmd.with_loop and loop is not None:
            if not (0 <= loop[0] + frames and loop[1] + frames <= track.length):
                return  # the loop would leave the track
            self._loop = (loop[0] + frames, loop[1] + frames)
        self._rolling = False
        target = min(max(self.position + frames, 0), track.length)
        self._jump(target, 0, keep_phase=True)

    def _end_roll(self) -> None:
        """End a loop roll: back to where the head would be, the old loop back."""
        if not self._rolling:
            return
        self._rolling = False
        track = self.track
        if track is None:
            return
        target = self.position + self._roll_offset
        saved = self._roll_saved
        self._loop = saved
        if saved is not None and target >= saved[1]:  # it would have wrapped there
            target = saved[0] + (target - saved[0]) % (saved[1] - saved[0])
        self._jump(min(max(target, 0), track.length), 0, keep_phase=True)

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
            or (
                track.ready is not None
                and not _progressive_fits(track, self.max_block + self._xfade_len, self.sr)
            )
        ):
            self.dropped += 1  # refused: the daemon checks this before posting
            return
        previous = self.track
        if self._pq_count and not (same_audio and previous is not None and previous.sr == track.sr):
            self._flush_pending()  # their frames count another track's (or rate's) frames
        # The silence a stem file's undecoded spans stood in with, if it plays now.
        silent = self._progressive is not None and self._progressive.silent_mix
        if track.ready is not None:
            # Separated as it plays: the original stands in until the block's
            # chunks are ready (the block's check in engine.py switches).
            self._progressive = track
            self._progressive_flags = track.ready
            self._progressive_last = len(track.ready) - 1
            self._progressive_chunk = track.chunk
            track = track.original  # type: ignore[assignment]  # _progressive_fits
        else:
            self._progressive = None
        self._begin_write()  # the track, its position and (a new track) a jump, as one
        try:
            self._place(track, previous, same_audio, silent)
        finally:
            self._end_write()

    def _place(self, track: Track, previous: Track | None, same_audio: bool, silent: bool) -> None:
        """:meth:`_set_track`'s play head on ``track`` (the one the main head reads)."""
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
            if previous.is_mix and not track.is_mix and not silent:
                self._from_unity()
            elif previous.is_mix and not track.is_mix:  # from silence: a fade in, as above
                self._jump(self.position, 0, previous, keep_phase=True)
            self.position = min(self.position, track.length)
            if self._loop is not None and self._loop[1] > track.length:
                self._loop = None  # not the same length after all: no region past its end
            return
        # Another track: it starts from its beginning, with no loop; the old one
        # fades out from where it was, at its own step (taken before the new
        # track's), and the strips keep their levels.
        self._loop = None
        jumps = self.jumps
        self._jump(0, 0, previous)
        if self.jumps == jumps:  # it was at its start: a new track is a jump all the same
            self.jumps += 1
        self._track_step(track)

    def _track_step(self, track: Track) -> None:
        """The main head's step for ``track``'s rate, at once (a glide of the vinyl
        rate goes on when the rate is the same)."""
        if track.sr / self.sr != self._base_step:
            self._base_step = track.sr / self.sr
            self._aim_step(0)

    def _from_unity(self) -> None:
        """Every strip stands at unity and is re-aimed at its level (a glide): the
        channels that replace the original sum to it, so nothing is heard to jump."""
        self._cur.fill(1.0)
        self._tgt.fill(1.0)
        self._left.fill(0.0)
        self._curves_ok = False
        self._dirty = self._dirty_all = True

    def _switch_view(self, view: Track) -> None:
        """Audio thread, at a block's start: the separated-as-it-plays track's
        main head reads ``view`` (its channels or its original) from now on.

        Original to channels (the block's chunks became ready): every strip glides
        from unity, as when a separation replaces the original. Channels to
        original (the head went where nothing is separated yet): the jump's
        crossfade at the same position, the channels fading out."""
        previous = self.track
        self.track = view
        silent = self._progressive is not None and self._progressive.silent_mix
        if view.is_mix or silent:
            # The same music at the same rate: the head keeps its fraction of a frame.
            # From a silent stand-in (a stem file's span not decoded yet) the channels
            # fade in at their strips' levels: a muted stem stays muted.
            self._jump(self.position, 0, previous, keep_phase=True)
        else:
            self._from_unity()
            self._retarget()

    def _retarget(self, *, immediate: bool = False, now: bool = False) -> None:
        """Aim the strips that changed (every strip if the solo set changed, or
        ``immediate``) at their gain, mute, solo and pan: scalar work per strip.

        ``now``: the changes came unquantized, at the top of a block (no quantized
        command acted in its drain: one whose frame passed is late, and goes through
        the shifter with the music as on time it would have). Then, where
        keylock's shifter alone is heard and its strip history is whole
        (:meth:`_heard_at_once`), the change goes into the history
        (:meth:`.history.StripHistory.change`) and :meth:`_settle_history` applies it
        (at once, or at 64-frame blocks up to three blocks later): the strip's gain
        jumps to its target and the shifter changes what it has not played yet,
        heard after a ramp rather than the shifter's latency later."""
        n = self.max_channels
        strips = range(n) if immediate or self._dirty_all else self._dirty_strips
        any_solo = self._solos > 0
        params = self._strip_params
        cur, tgt, step, left = self._cur, self._tgt, self._step, self._left
        ramp = self._ramp_len
        history = self._history
        rows = history.rows if now and not immediate and self._heard_at_once() else 0
        waiting = history.changes  # (strip, side) -> gain: not applied yet
        for i in strips:
            gain, muted, soloed, p = params[i]
            audible = (1.0 if soloed else 0.0) if any_solo else 1.0
            audible = audible * (0.0 if muted else 1.0) * gain
            # Balance law: centre is unity on both sides; turning towards one side
            # lowers the other linearly to silence at the end (-1 left, +1 right).
            # Written out here, not called from params.py: a call per strip would
            # add up to max_channels Python calls to a block that re-aims them all.
            for side, want in ((0, min(1.0 - p, 1.0) * audible), (1, min(1.0 + p, 1.0) * audible)):
                at_once = i < rows and math.isfinite(want) and history.clear_of(i)
                if waiting and not at_once:  # the ordinary way: one waiting is gone
                    history.forget(i, side)
                if immediate:
                    cur[i, side] = tgt[i, side] = want
                    step[i, side] = left[i, side] = 0.0
                elif at_once:
                    if want != waiting.get((i, side), tgt[i, side]):
                        history.change(i, side, want)
                elif want != tgt[i, side]:
                    history.ordinary(i)
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

    def _settle_history(self, *, heard: bool) -> None:
        """The strip changes waiting in the history (audio thread, before a block):
        ``heard``, their gains jump to their targets and the shifter applies them to
        what it holds (:meth:`.history.StripHistory.apply`); else each ramps the
        ordinary way from where its strip is."""
        history = self._history
        cur, tgt, step, left = self._cur, self._tgt, self._step, self._left
        ramp = self._ramp_len
        for (i, side), want in history.changes.items():
            tgt[i, side] = want
            if heard:
                cur[i, side] = want
                step[i, side] = left[i, side] = 0.0
            else:
                history.ordinary(i)
                step[i, side] = (want - cur[i, side]) / ramp
                left[i, side] = float(ramp)
                self._ramping = True
                self._ramp_frames = ramp
        self._curves_ok = False
        if heard:
            history.apply(self._master.current, self.shifter, ramp)
        else:
            history.drop()

    def _heard_at_once(self) -> bool:
        """A strip gain changed now can be heard at once through keylock's shifter:
        the master's shifter alone is heard, the strip history holds the track's last
        steady blocks as far back as the shifter reaches (``outputs="mix"``, playing
        at unity transport, the master's gain standing, no effects), and no effect is
        on now either (its path would take the gain's step)."""
        return not self.fx.active and self.shifter.wet and self._history.ready(self.track)

    def _aim_step(self, glide: float) -> None:
        """Aim the main head's step at the track's rate over the device's times the
        vinyl rate (over ``glide`` frames, or at once with 0; a glide is whole frames
        from 0 to READ_MAX_GLIDE, a NaN the mixer's own)."""
        rd = self._rd
        # The read head's taps reach READ_MAX_STEP at most (a 192 kHz track at rate
        # 2 on an 8 kHz device would be 48): there it plays as fast as it can read,
        # rather than every block refused by the kernel (silence).
        target = min(self._base_step * self.rate, READ_MAX_STEP)
        glide = int(min(max(glide, 0.0), READ_MAX_GLIDE)) if glide == glide else self._glide_len
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
        self,
        target: int,
        offset: int,
        track: Track | None = None,
        *,
        keep_phase: bool = False,
        keep_waiting: bool = False,
    ) -> None:
        """Move the play head to ``target`` at ``offset`` in the block, crossfading:
        the old head (of ``track``, default the current one) fades out from where it
        was, at the step the main head had. ``keep_phase`` (a loop wrap between
        rates): the head keeps its fraction of a frame, so a loop lasts as long at
        every pass; otherwise it lands on the whole frame ``target``. Quantized
        commands still waiting act now: the head will not get to their frame
        (``keep_waiting``: it will, and they wait on)."""
        if self._pq_count and not keep_waiting:
            self._flush_pending()
        if self._rolling:  # a roll's wrap (or its start): where the head would be moves on
            self._roll_offset += self.position - target
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
        self._begin_write()
        if abs(target - self.position) > 1:  # not a landing on the nearest frame
            self.jumps += 1
        self.position = target
        self._end_write()
        if not keep_phase and not self._exact:
            self._rewind_phase()

    def _begin_write(self) -> None:
        """Open a section that moves :attr:`track`, :attr:`position` or :attr:`jumps`
        otherwise than by the head's advance (:attr:`MixerState.seq`: odd while open)."""
        if self._writing == 0:
            self.seq += 1
        self._writing += 1

    def _end_write(self) -> None:
        self._writing -= 1
        if self._writing == 0:
            self.seq += 1
