"""The real-time mixer: channel strips, master, transport, meters.

Contract of :meth:`Mixer.process` (the audio callback's only call): it drains
the command queue, then fills the whole output block. It allocates no arrays
(every buffer is made in :meth:`Mixer.prepare`), takes no locks, does no I/O
and never raises for musical reasons; numpy work is in place with ``out=``.

Control threads talk to it only through :meth:`Mixer.post`, a bounded,
non-blocking queue of small immutable commands (a full queue is counted and
the command refused); a new set of channels is published by handing over one
:class:`Track` reference.

Every level change is a linear ramp of ``ramp_ms`` (mute and solo are fades
too); seeks, loop wraps and the end of a loop region crossfade over
``xfade_ms``; play and pause fade in and out. The ramps run per sample, so the
output does not depend on how the stream is cut into blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .errors import ParameterError
from .params import MAX_GAIN, pan_gains

__all__ = [
    "Loop",
    "MasterTarget",
    "Mixer",
    "Pause",
    "Play",
    "Seek",
    "SetTrack",
    "Stop",
    "StripTarget",
    "Track",
]


@dataclass(frozen=True)
class Track:
    """Audio the mixer plays: one or more channels of the same length.

    Attributes
    ----------
    channels : np.ndarray, shape (n_channels, audio_channels, samples), float32
        Mono (1) or stereo (2) audio channels; may be a read-only memory map.
    sr : int
    names : tuple of str
    is_mix : bool
        The original track standing in while separation runs: it plays through
        the master only, at unity, whatever the strips say.
    """

    channels: np.ndarray
    sr: int
    names: tuple[str, ...]
    is_mix: bool = False

    @property
    def length(self) -> int:
        return int(self.channels.shape[2])


# -- commands (immutable, small) ----------------------------------------------------
@dataclass(frozen=True)
class StripTarget:
    """New target state of channel strip ``index`` (0-based)."""

    index: int
    gain: float
    mute: bool
    solo: bool
    pan: float


@dataclass(frozen=True)
class MasterTarget:
    gain: float
    mute: bool


@dataclass(frozen=True)
class Play:
    pass


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Stop:
    """Fade out, then rewind to the start."""


@dataclass(frozen=True)
class Seek:
    seconds: float


@dataclass(frozen=True)
class Loop:
    """Loop ``start``..``end`` seconds; ``end <= start`` clears the loop.

    A play head outside the new region jumps (crossfading) to its start."""

    start: float
    end: float


@dataclass(frozen=True)
class SetTrack:
    track: Track


@dataclass(frozen=True)
class Batch:
    """Commands applied together at the top of one block (an OSC bundle)."""

    commands: tuple[object, ...]


@dataclass
class Meters:
    """Levels since the last :meth:`Mixer.read_meters`, linear: channels then master."""

    peak: np.ndarray
    rms: np.ndarray
    position: float
    playing: bool
    blocks: int
    dropped: int = 0
    names: tuple[str, ...] = field(default_factory=tuple)


class _Ramp:
    """Per-sample linear ramps of one gain per (strip, side)."""

    def __init__(self, n: int, initial: float) -> None:
        self.current = np.full(n, initial, dtype=np.float64)
        self.target = np.full(n, initial, dtype=np.float64)
        self.step = np.zeros(n, dtype=np.float64)
        self.left = np.zeros(n, dtype=np.int64)

    def aim(self, i: int, target: float, length: int) -> None:
        if target == self.target[i] and self.left[i] == 0:
            return
        self.target[i] = target
        self.left[i] = length
        self.step[i] = (target - self.current[i]) / length

    def jump(self, i: int, value: float) -> None:
        self.current[i] = self.target[i] = value
        self.left[i] = 0
        self.step[i] = 0.0

    def curve(self, i: int, frames: int, out: np.ndarray, ramp: np.ndarray) -> bool:
        """Write the gain of ``frames`` samples into ``out``; False if constant."""
        left = int(self.left[i])
        if left == 0:
            out[:frames] = self.current[i]
            return False
        n = min(left, frames)
        np.multiply(ramp[:n], self.step[i], out=out[:n])
        out[:n] += self.current[i]
        if n < frames:
            out[n:frames] = self.target[i]
        self.left[i] = left - n
        self.current[i] = self.target[i] if left == n else self.current[i] + self.step[i] * n
        return True


class Mixer:
    """Channel strips into a stereo master, with transport and meters.

    Parameters
    ----------
    max_channels : int
        Strips allocated up front; a track with more channels is refused.
    ramp_ms : float
        Duration of every level ramp (gain, mute, solo, pan, master).
    xfade_ms : float
        Crossfade of seeks and loop wraps; fade of play, pause and stop.
    queue_size : int
        Commands that can wait for the next block.
    at_end : {"stop", "loop"}
        What the end of the track does when no loop region is set.
    """

    def __init__(
        self,
        *,
        max_channels: int = 64,
        ramp_ms: float = 10.0,
        xfade_ms: float = 5.0,
        queue_size: int = 1024,
        at_end: str = "stop",
    ) -> None:
        if at_end not in ("stop", "loop"):
            raise ParameterError(f"at_end must be 'stop' or 'loop', got {at_end!r}")
        self.max_channels = max_channels
        self.ramp_ms = ramp_ms
        self.xfade_ms = xfade_ms
        self.at_end = at_end
        self._queue: deque[object] = deque()
        self._queue_size = queue_size
        self.dropped = 0
        self.track: Track | None = None
        self.sr = 0
        self.max_block = 0
        self.outputs = "mix"
        self._prepared = False
        self.blocks = 0

    # -- set-up (not real-time) -------------------------------------------------
    def prepare(self, samplerate: int, max_block: int, *, outputs: str = "mix") -> None:
        """Allocate every buffer for blocks of up to ``max_block`` frames.

        ``outputs="mix"`` renders a stereo master (2 output columns);
        ``"channels"`` renders each strip post-fader on its own pair
        (2 * max_channels columns; unused pairs are silent).
        """
        if samplerate <= 0 or max_block <= 0:
            raise ParameterError(f"bad stream format {samplerate} Hz / {max_block} frames")
        if outputs not in ("mix", "channels"):
            raise ParameterError(f"outputs must be 'mix' or 'channels', got {outputs!r}")
        n = self.max_channels
        self.sr = int(samplerate)
        self.max_block = int(max_block)
        self.outputs = outputs
        self._ramp_len = max(1, round(self.ramp_ms * 1e-3 * samplerate))
        self._xfade_len = max(1, round(self.xfade_ms * 1e-3 * samplerate))
        self._ramp = np.arange(1, max(max_block, self._xfade_len) + 1, dtype=np.float64)
        self._fade_in = (np.arange(1, self._xfade_len + 1) / self._xfade_len).astype(np.float32)
        self._fade_out = (1.0 - self._fade_in).astype(np.float32)
        self._mix = np.zeros((2, max_block), np.float32)
        self._xmix = np.zeros((2, max_block), np.float32)
        self._tmp = np.zeros(max_block, np.float32)
        self._tmp2 = np.zeros(max_block, np.float32)
        self._curve = np.zeros(max_block, np.float32)
        self._curves = np.zeros((n, 2, max_block), np.float32)
        self._master_curve = np.zeros(max_block, np.float32)
        self._chan_out = np.zeros((n, 2, max_block), np.float32) if outputs == "channels" else None
        self._xchan = np.zeros((n, 2, max_block), np.float32) if outputs == "channels" else None
        self._strips = _Ramp(2 * n, 1.0)  # index 2*i + side
        self._master = _Ramp(1, 1.0)
        self._transport = _Ramp(1, 0.0)
        self._state = {i: (1.0, False, False, 0.0) for i in range(n)}  # gain, mute, solo, pan
        self._master_state = (1.0, False)
        self._peak = np.zeros(n + 1, np.float32)
        self._sumsq = np.zeros(n + 1, np.float64)
        self._count = 0
        self.position = 0
        self.playing = False
        self._pausing = False
        self._stopping = False
        self._loop: tuple[int, int] | None = None
        self._xfrom: int | None = None  # read head fading out after a jump
        self._xleft = 0
        self._any_solo = False
        self._prepared = True

    def reset(self) -> None:
        """Back to the start: stopped, position 0, ramps settled, meters cleared."""
        self._queue.clear()
        self.position = 0
        self.playing = False
        self._pausing = self._stopping = False
        self._xfrom, self._xleft = None, 0
        self._transport.jump(0, 0.0)
        for i in range(self.max_channels):
            self._apply_strip_targets(i, immediate=True)
        self._peak[:] = 0.0
        self._sumsq[:] = 0.0
        self._count = 0

    def master_view(self, frames: int) -> np.ndarray:
        """The master bus of the block just processed, shape (frames, 2) (a view).

        With ``outputs="channels"`` the output holds the channels, not the master;
        a recorder takes the master from here. Valid until the next ``process``.
        """
        return self._mix[:, :frames].T

    @property
    def out_channels(self) -> int:
        return 2 if self.outputs == "mix" else 2 * self.max_channels

    # -- control side -------------------------------------------------------------
    def post(self, command: object) -> bool:
        """Queue a command for the next block; False (and counted) if the queue is full.

        Safe from any number of control threads: deque appends are atomic.
        """
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            return False
        self._queue.append(command)
        return True

    def read_meters(self) -> Meters:
        """Peak and RMS since the last read (control side; a torn read only blurs a meter)."""
        n = self.track.channels.shape[0] if self.track is not None else 0
        count = max(self._count, 1)
        peaks = np.concatenate([self._peak[:n], self._peak[-1:]])
        rms = np.sqrt(np.concatenate([self._sumsq[:n], self._sumsq[-1:]]) / (2 * count))
        self._peak[:] = 0.0
        self._sumsq[:] = 0.0
        self._count = 0
        names = self.track.names if self.track is not None else ()
        return Meters(
            peak=peaks,
            rms=rms.astype(np.float32),
            position=self.position / self.sr if self.sr else 0.0,
            playing=self.playing and not self._pausing,
            blocks=self.blocks,
            dropped=self.dropped,
            names=names,
        )

    # -- commands (audio thread) --------------------------------------------------
    def _apply(self, cmd: object) -> None:
        if isinstance(cmd, StripTarget):
            if 0 <= cmd.index < self.max_channels:
                was_solo = self._state[cmd.index][2]
                self._state[cmd.index] = (
                    min(max(cmd.gain, 0.0), MAX_GAIN),
                    cmd.mute,
                    cmd.solo,
                    min(max(cmd.pan, -1.0), 1.0),
                )
                if was_solo != cmd.solo:
                    # Solo decides every strip: ramp them all to their new state.
                    self._any_solo = any(st[2] for st in self._state.values())
                    for i in range(self.max_channels):
                        self._apply_strip_targets(i)
                else:
                    self._apply_strip_targets(cmd.index)
        elif isinstance(cmd, MasterTarget):
            self._master_state = (min(max(cmd.gain, 0.0), MAX_GAIN), cmd.mute)
            self._master.aim(0, 0.0 if cmd.mute else self._master_state[0], self._ramp_len)
        elif isinstance(cmd, Play):
            if self.track is not None:
                self.playing = True
                self._pausing = self._stopping = False
                self._transport.aim(0, 1.0, self._xfade_len)
        elif isinstance(cmd, Pause | Stop):
            if self.playing:
                self._pausing = True
                self._stopping = isinstance(cmd, Stop)
                self._transport.aim(0, 0.0, self._xfade_len)
            elif isinstance(cmd, Stop):
                self.position = 0
        elif isinstance(cmd, Seek):
            if self.track is not None:
                target = round(min(max(cmd.seconds, 0.0), self.track.length / self.sr) * self.sr)
                self._jump(min(target, self.track.length))
        elif isinstance(cmd, Loop):
            if cmd.end <= cmd.start or self.track is None:
                self._loop = None
            else:
                start = round(max(cmd.start, 0.0) * self.sr)
                end = min(round(cmd.end * self.sr), self.track.length)
                self._loop = (start, end) if end > start else None
                if self._loop is not None and not start <= self.position < end:
                    self._jump(start)  # outside the new region: go there now
        elif isinstance(cmd, SetTrack):
            self._set_track(cmd.track)
        elif isinstance(cmd, Batch):
            for c in cmd.commands:
                self._apply(c)

    def _set_track(self, track: Track) -> None:
        if track.channels.shape[0] > self.max_channels or track.sr != self.sr:
            self.dropped += 1  # refused: the daemon checks this before posting
            return
        previous = self.track
        self.track = track
        if track.is_mix or previous is None or previous.is_mix:
            # From the stand-in mix to the separated channels: they sum to it, so
            # start every strip at unity and let it glide to its set level.
            for i in range(self.max_channels):
                self._strips.jump(2 * i, 1.0)
                self._strips.jump(2 * i + 1, 1.0)
                if not track.is_mix:
                    self._apply_strip_targets(i)
        if previous is not None and (previous.length != track.length):
            self._jump(0)  # a different track: start from its beginning
            self._loop = None

    def _apply_strip_targets(self, i: int, *, immediate: bool = False) -> None:
        gain, mute, solo, pan = self._state[i]
        audible = not mute and (solo or not self._any_solo)
        left, right = pan_gains(pan)
        for side, g in ((0, left), (1, right)):
            value = gain * g if audible else 0.0
            if immediate:
                self._strips.jump(2 * i + side, value)
            else:
                self._strips.aim(2 * i + side, value, self._ramp_len)

    def _jump(self, target: int) -> None:
        """Move the play head, crossfading from where it was."""
        if self.playing and target != self.position:
            self._xfrom = self.position
            self._xleft = self._xfade_len
        self.position = target

    # -- the audio callback -------------------------------------------------------
    def process(self, out: np.ndarray) -> None:
        """Fill ``out`` (frames, out_channels), float32. See the module docstring."""
        while self._queue:
            self._apply(self._queue.popleft())
        self.blocks += 1
        total = out.shape[0]
        # A host may hand over a block larger than prepared: do it in pieces.
        for start in range(0, total, self.max_block):
            self._process_block(out[start : start + self.max_block])

    def _process_block(self, out: np.ndarray) -> None:
        frames = out.shape[0]
        track = self.track
        transport = self._master_curve[:frames]
        moving = self._transport.curve(0, frames, transport, self._ramp)
        if track is None or (not self.playing and not moving and self._transport.current[0] == 0):
            out[:] = 0.0
            self._mix[:, :frames] = 0.0
            self._count += frames
            return
        self._master.curve(0, frames, self._curve, self._ramp)
        transport *= self._curve[:frames]
        n = track.channels.shape[0]
        if not track.is_mix:
            for i in range(n):
                for side in (0, 1):
                    self._strips.curve(2 * i + side, frames, self._curves[i, side], self._ramp)
        mix = self._mix[:, :frames]
        mix[:] = 0.0
        if self._chan_out is not None:
            self._chan_out[:n, :, :frames] = 0.0
        self._render(track, frames, mix, self._chan_out)
        mix *= transport
        np.abs(mix[0], out=self._tmp[:frames])
        np.abs(mix[1], out=self._tmp2[:frames])
        peak = max(float(self._tmp[:frames].max()), float(self._tmp2[:frames].max()))
        self._peak[-1] = max(self._peak[-1], peak)
        self._sumsq[-1] += float(np.dot(mix[0], mix[0])) + float(np.dot(mix[1], mix[1]))
        self._count += frames
        if self._chan_out is None:
            out[:, 0] = mix[0]
            out[:, 1] = mix[1]
        else:
            co = self._chan_out
            co[:n, :, :frames] *= transport
            out[:] = 0.0
            for i in range(n):
                out[:, 2 * i] = co[i, 0, :frames]
                out[:, 2 * i + 1] = co[i, 1, :frames]
        if self._pausing and self._transport.left[0] == 0:
            self.playing = False
            self._pausing = False
            if self._stopping:
                self._stopping = False
                self.position = 0
                self._loop = None

    def _render(
        self, track: Track, frames: int, mix: np.ndarray, chan_out: np.ndarray | None
    ) -> None:
        """Mix ``frames`` samples from the play head into ``mix`` (2, frames).

        The block is cut where the head meets the loop end or the track end, so
        every jump and its crossfade happen at the same sample whatever the
        block size. A crossfade mixes the old head, going straight on, fading
        out, with the new head fading in.
        """
        pos = self.position
        length = track.length
        off = 0
        while off < frames:
            # Boundaries are handled when the next sample is needed, so a jump
            # lands on the same sample however the stream is cut into blocks.
            if self._loop is not None and pos == self._loop[1]:
                self._xfrom, self._xleft = pos, self._xfade_len
                pos = self._loop[0]
                continue
            if pos >= length:
                if self.at_end == "loop":
                    self._xfrom, self._xleft = pos, self._xfade_len
                    pos = 0
                    continue
                # End of the track: the rest of the block is silent and we stop.
                self.playing = self._pausing = False
                self._transport.jump(0, 0.0)
                self._xfrom, self._xleft = None, 0
                pos = 0
                break
            in_loop = self._loop is not None and pos < self._loop[1]
            end = self._loop[1] if in_loop and self._loop is not None else length
            count = min(frames - off, end - pos)
            self._mix_segment(track, pos, count, off, mix, chan_out, True)
            if self._xleft > 0 and self._xfrom is not None:
                self._crossfade(track, off, count, mix, chan_out)
            pos += count
            off += count
        self.position = pos

    def _crossfade(
        self, track: Track, off: int, count: int, mix: np.ndarray, chan_out: np.ndarray | None
    ) -> None:
        """Fade the new head in over ``mix[:, off:off+count]`` and the old one out."""
        assert self._xfrom is not None
        m = min(self._xleft, count)
        done = self._xfade_len - self._xleft
        xmix = self._xmix[:, off : off + m]
        xmix[:] = 0.0
        xchan = None
        if chan_out is not None and self._xchan is not None:
            xchan = self._xchan[:, :, off : off + m]
            xchan[:] = 0.0
        available = max(0, min(m, track.length - self._xfrom))
        if available > 0:  # past the end of the track the old head is silence
            self._mix_segment(track, self._xfrom, available, off, self._xmix, self._xchan, False)
        fade_in = self._fade_in[done : done + m]
        fade_out = self._fade_out[done : done + m]
        mix[:, off : off + m] *= fade_in
        xmix *= fade_out
        mix[:, off : off + m] += xmix
        if chan_out is not None and xchan is not None:
            chan_out[:, :, off : off + m] *= fade_in
            xchan *= fade_out
            chan_out[:, :, off : off + m] += xchan
        self._xfrom += m
        self._xleft -= m
        if self._xleft == 0:
            self._xfrom = None

    def _mix_segment(
        self,
        track: Track,
        pos: int,
        count: int,
        off: int,
        mix: np.ndarray,
        chan_out: np.ndarray | None,
        meter: bool,
    ) -> None:
        channels = track.channels
        n, audio_ch = channels.shape[0], channels.shape[1]
        tmp = self._tmp[:count]
        for i in range(n):
            for side in (0, 1):
                src = channels[i, side if audio_ch > 1 else 0, pos : pos + count]
                if track.is_mix:
                    tmp[:] = src
                else:
                    np.multiply(src, self._curves[i, side, off : off + count], out=tmp)
                mix[side, off : off + count] += tmp
                if chan_out is not None:
                    chan_out[i, side, off : off + count] += tmp
                if meter:
                    peak = float(np.abs(tmp, out=self._tmp2[:count]).max())
                    if peak > self._peak[i]:
                        self._peak[i] = peak
                    self._sumsq[i] += float(np.dot(tmp, tmp))
