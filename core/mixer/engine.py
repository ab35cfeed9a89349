"""The real-time mixer: channel strips, master, transport, meters.

Contract of :meth:`Mixer.process` (the audio callback's only call): it drains
the command queue, then fills the whole output block. It takes no locks, does
no I/O, never raises for musical reasons and allocates no array data: every
buffer is made in :meth:`Mixer.prepare` and numpy works in place with
``out=``. What it does create are small Python objects that are freed within
the block: numpy *views* of the track (``channels[:, :, a:b]``, about 100
bytes each, no data), Python/numpy scalars, and the buffers numpy 2's ufunc
iterator takes for non-contiguous operands (``bufsize`` elements per operand,
freed when the call returns). :func:`enter_audio_thread` sets that size to
:data:`AUDIO_BUFSIZE` elements in the calling thread only, which keeps each
under 1 KiB; every sink calls it in its audio thread. ``tests/core/mixer/test_engine.py``
(``test_block_allocates_no_array_data``) holds every block, ramps and
crossfades included, under 8 KiB of transient allocation (less than one
channel's block of audio) and a block with no command under 4 KiB.

Control threads talk to it only through :meth:`Mixer.post`, a bounded,
non-blocking queue of the small immutable commands of
:mod:`stemdeck.core.mixer.commands` (a full queue is counted and the command
refused); a new set of channels is published by handing over one
:class:`~stemdeck.core.mixer.commands.Track` reference. They read it through
the methods of :mod:`.state` (``read_meters``, ``strip_state``...).

The Mixer is one class in three layers, one module each: :mod:`.state` (the
state control threads read, and the read side), :mod:`.control` (``post`` and
what a drained command changes), this module (set-up and the block). Base
classes, not objects the Mixer holds: the block reads every attribute as its
own and calls every method on ``self``, as in one class, with no extra lookup
or call per block.

Every level change is a linear ramp of ``ramp_ms`` (mute and solo are fades
too); seeks, loop wraps and track changes crossfade over ``xfade_ms``; play
and pause fade in and out. The ramps run per sample, so the output does not
depend on how the stream is cut into blocks. Strip targets (gain, mute, solo,
pan) are recomputed once per block, whatever the number of commands, and only
for the strips that changed (every strip when the solo set changes): strip
parameters are Python scalars, so a fader move costs a few scalar operations,
not a dozen numpy calls.

The arithmetic of a block (strip gain curves, the strips into the mix, the
master, meters, the output) goes through a kernel of :mod:`.kernel`: the
compiled ``core/mixer/_kernel.c`` when it was built, in one call for the common
block (playing at unity, one play head, no boundary inside:
:meth:`Mixer._steady_block`) and a few calls otherwise. A compiled call keeps the
GIL from start to end, where numpy hands it over in every call on more than 500
elements and the callback then waits for a control thread to give it back
(``bench/web.py`` measured that wait). What stays in numpy here is per-sample
work on one row (transport and head fades, the master ramp): below that size
for blocks up to 500 frames (the daemon's is 256). The numpy kernel
(:class:`~.numpy_kernel.NumpyKernel`) stays as the reference: the compiled one computes
the same float32 operations in the same order, and ``tests/core/mixer/test_kernel.py``
checks the two give the same samples. The scalar ramps and fading heads the
block drives are in :mod:`.heads`.
A track plays at its own rate: positions (the play head, the loop, seeks, the
length) count its frames, and the read head steps through them by
``track.sr / sr`` times the vinyl rate (:class:`~.commands.Rate`) per output
frame, interpolating (the kernel's ``read``, into ``_resampled``) whenever that
step is not exactly 1 or the head stands between two frames; otherwise it
reads the track as it is, with no extra call. A rate change glides the step
over ``rate_glide_ms``.
A play head that jumps leaves a *fading head* behind (up to
:data:`FADING_HEADS` at once), which goes straight on reading its own track
while it fades out, so a jump during a crossfade, or a track change, never
cuts audio that is still audible; nor does the end of the track (a seek to the
end): the transport stops there once no fading head sounds.

A track separated as it plays (``Track.ready``, one flag per chunk, set by the
loader as chunks land) plays its channels where the block, and the crossfade
after it (between rates with the interpolator's taps), lie in ready chunks and
its original (``Track.original``, master only) elsewhere: one check of two flags
a block. Original to channels glides every strip from unity (the channels sum
to the original, so nothing jumps); channels to original (a seek or the play
head into an unseparated region) is the jump's crossfade at the same position
(:meth:`~.control.MixerControl._switch_view`).

Every strip and the master have a DJ filter (``StripTarget.filter``, ``.res``),
and every strip a send to one stereo echo bus (``StripTarget.echo``, ``.echo_pre``;
the bus by :class:`~stemdeck.core.mixer.commands.EchoTarget`) and one to a stereo
reverb bus (``StripTarget.reverb``; the bus by
:class:`~stemdeck.core.mixer.commands.ReverbTarget`), held by the
:class:`~.fx.Effects` the Mixer owns (``Mixer.fx``): while every knob stands at 0
and no send is open and both buses are silent, the block is exactly as described
above; otherwise it renders through the FX path (:meth:`.fx.Effects.block`:
per-strip sums over every play head, each strip's filter, the mixdown, the echo
and reverb buses, the master's filter), never the one-call shortcut. Their tails
ring out after mute, pause, stop and track change (:meth:`.fx.Effects.tail` runs
the buses while no head sounds), until they are quiet.

With keylock on or a pitch shift (:class:`~.commands.Keylock`, :class:`~.commands.Pitch`),
the block's master then goes through the one pitch shifter :mod:`.keylock` holds
(``Mixer.shifter``), one more compiled call, and with ``outputs="channels"`` each
channel's pair through its own (``Mixer.strip_shifters``, in step with the master's);
in bypass nothing is called.

The output is always finite: a block with a NaN or infinite sample (a damaged
file that slipped through) is replaced by silence and counted in
:attr:`Mixer.nonfinite_blocks`.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..errors import ParameterError
from . import kernel
from .commands import Track
from .control import PENDING_ACTIONS, MixerControl
from .fx import Effects
from .heads import FadingHead, Ramp
from .history import StripHistory
from .kernel import READ_REACH, READ_TABLE, Kernel
from .keylock import FRAME_SECONDS, ChannelShifters, Shifter, shifted_channels
from .numpy_kernel import NumpyKernel

__all__ = ["AUDIO_BUFSIZE", "FADING_HEADS", "Mixer", "enter_audio_thread"]

FADING_HEADS = 4  # play heads that can fade out at once (jumps within one crossfade)
AUDIO_BUFSIZE = 64  # numpy iterator buffer (elements) in the audio thread


def enter_audio_thread() -> None:
    """Set up the calling thread to run :meth:`Mixer.process`: numpy's ufunc
    buffer size there becomes :data:`AUDIO_BUFSIZE` (numpy keeps it per thread)."""
    np.setbufsize(AUDIO_BUFSIZE)


class Mixer(MixerControl):
    """Channel strips into a stereo master, with transport and meters.

    Parameters
    ----------
    max_channels : int
        Strips allocated up front; a track with more channels is refused.
    ramp_ms : float
        Duration of every level ramp (gain, mute, solo, pan, master).
    xfade_ms : float
        Crossfade of seeks, loop wraps and track changes; fade of play, pause and stop.
    min_loop_ms : float
        Shortest loop region; shorter requests are lengthened to it (at least
        two crossfades, so every wrap's crossfade ends before the next wrap).
    queue_size : int
        Commands that can wait for the next block.
    at_end : {"stop", "loop"}
        What the end of the track does when no loop region is set.
    rate_glide_ms : float
        How long the read head's step takes to glide to a new rate (:class:`~.commands.Rate`).
    keylock_frame_s : float
        How long the keylock's frames last (:data:`~.keylock.KEYLOCK_QUALITY`): its
        latency is a frame and an eighth.
    compiled : bool or None
        Do the block arithmetic in the compiled kernel (``core/mixer/_kernel.c``),
        which keeps the GIL for the whole of each step, or in numpy, which hands
        it over in every large call (the reference the kernel is tested
        against). None: the kernel if it was built. True without the kernel
        raises ParameterError.
    """

    def __init__(
        self,
        *,
        max_channels: int = 64,
        ramp_ms: float = 10.0,
        xfade_ms: float = 5.0,
        min_loop_ms: float = 20.0,
        queue_size: int = 1024,
        at_end: str = "stop",
        rate_glide_ms: float = 30.0,
        keylock_frame_s: float = FRAME_SECONDS,
        compiled: bool | None = None,
    ) -> None:
        if at_end not in ("stop", "loop"):
            raise ParameterError(f"at_end must be 'stop' or 'loop', got {at_end!r}")
        if max_channels < 1:
            raise ParameterError(f"max_channels must be >= 1, got {max_channels}")
        built = kernel.COMPILED
        if compiled and built is None:
            raise ParameterError("the compiled mixer kernel is not built (no C compiler)")
        # The compiled kernel, or None: the numpy reference (made by prepare).
        self._compiled = built if compiled or compiled is None else None
        #: "compiled" or "numpy": what does the block arithmetic (the status line shows it).
        self.kernel = "numpy" if self._compiled is None else "compiled"
        self.max_channels = max_channels
        self.ramp_ms = ramp_ms
        self.xfade_ms = xfade_ms
        self.min_loop_ms = min_loop_ms
        self.rate_glide_ms = rate_glide_ms
        self.rate = 1.0
        self.shifter = Shifter(seconds=keylock_frame_s)
        #: With ``outputs="channels"``: a shifter a channel, in step with :attr:`shifter`.
        self.channel_shifters = ChannelShifters(keylock_frame_s)
        self._history = StripHistory()
        self._out_delay = 0  # output_delay, published after each block
        self.at_end = at_end
        self._queue = deque()
        self._queue_size = queue_size
        self.dropped = 0
        self.nonfinite_blocks = 0
        self.track = None
        self._progressive = None
        self._progressive_flags = np.zeros(1, np.uint8)
        self._progressive_last = 0
        self._progressive_chunk = 1
        self.sr = 0
        self.max_block = 0
        self.outputs = "mix"
        self._prepared = False
        self.blocks = 0
        self.position = 0
        self.jumps = 0
        self.seq = 0
        self._writing = 0
        self.playing = False
        self._pausing = False
        self._ending = False
        self._loop = None
        self._pq_frame = [0] * PENDING_ACTIONS
        self._pq_cmd = [None] * PENDING_ACTIONS
        self._pq_head = self._pq_count = 0
        self._firing = False
        self._quantized_now = False
        self._rolling = False
        self._roll_saved = None
        self._roll_offset = 0

    # -- set-up (not real-time) -------------------------------------------------
    def prepare(self, samplerate: int, max_block: int, *, outputs: str = "mix") -> None:
        """Allocate every buffer for blocks of up to ``max_block`` frames.

        ``outputs="mix"`` renders a stereo master (2 output columns);
        ``"channels"`` renders each strip post-fader on its own pair
        (2 * max_channels columns).
        """
        if samplerate <= 0 or max_block <= 0:
            raise ParameterError(f"bad stream format {samplerate} Hz / {max_block} frames")
        if outputs not in ("mix", "channels"):
            raise ParameterError(f"outputs must be 'mix' or 'channels', got {outputs!r}")
        n = self.max_channels
        b = int(max_block)
        self.sr = int(samplerate)
        self.max_block = b
        self.outputs = outputs
        self._ramp_len = max(1, round(self.ramp_ms * 1e-3 * samplerate))
        self._xfade_len = max(1, round(self.xfade_ms * 1e-3 * samplerate))
        self._min_loop = max(2 * self._xfade_len, round(self.min_loop_ms * 1e-3 * samplerate))
        self._ramp = np.arange(1, max(b, self._xfade_len, self._ramp_len) + 1, dtype=np.float64)
        self._kern: Kernel = self._compiled if self._compiled is not None else NumpyKernel(n, b)
        # Strip parameters (set by commands) and their gain ramps, one per (strip, side).
        # Parameters are Python scalars: a change re-aims only its own strip, in a
        # few scalar operations, where numpy would take a dozen calls for every block
        # with a command (each costing microseconds when the callback runs cache-cold).
        # They stay attributes of the Mixer, not of a strips object it would hold:
        # the block reads the ramps' arrays and flags below as its own attributes,
        # and an object in between would add a lookup to each, in every block.
        # One (gain, mute, solo, pan) tuple per strip, replaced whole by a command,
        # so a control thread reading one (strip_state) never sees half of two.
        self._strip_params = [(1.0, False, False, 0.0)] * n
        self._solos = 0  # strips soloed
        self._dirty = False  # some strip must be re-aimed
        self._dirty_all = False  # every strip must (the solo set changed)
        self._dirty_strips = set()
        self._ramp_frames = 0  # samples until the longest running strip ramp ends
        # Each (strip, side)'s ramp: where it is, where it heads, its step a
        # sample and the samples it has left (float64).
        self._cur = np.ones((n, 2))
        self._tgt = np.ones((n, 2))
        self._step = np.zeros((n, 2))
        self._left = np.zeros((n, 2))
        self._ramping = False
        self._curves_ok = False  # _curves hold the flat gains (no ramp runs)
        self._flat_rows = 0  # strips whose flat curves are written
        self._transport_moving = False
        self._transport_filled = -1.0  # constant value _transport_curve holds (-1: none)
        self._curves = np.ones((n, 2, b), np.float32)  # each (strip, side)'s gain per sample
        # Mixing buffers.
        # Row 0: the master; rows 1..n: what each strip of the main play head sends
        # to the master bus. Meters reduce over all rows at once, at the end of a block.
        self._metered = np.zeros((n + 1, 2, b), np.float32)
        self._fading_sends = np.zeros((n, 2, b), np.float32)  # a fading head's strips
        self._segment_gain = np.zeros(b, np.float32)  # head fade times transport
        self._mix = np.zeros((2, b), np.float32)  # the master bus
        # Scalar ramps run in float64, then one cast copy to float32 per block.
        self._head_fade64 = np.zeros(b)
        self._transport64 = np.zeros(b)
        self._master64 = np.zeros(b)
        self._transport_curve = np.zeros(b, np.float32)
        self._master_curve = np.zeros(b, np.float32)
        self._chan_out = np.zeros((n, 2, b), np.float32) if outputs == "channels" else None
        self._held_mix = np.zeros((2, b), np.float32)  # a cut block's master bus
        self._master = Ramp(1.0)
        self._transport = Ramp(0.0)
        self._master_state = (1.0, False)
        # Meters, in the rows' order: master, then strips (read_meters reorders).
        self._peak = np.zeros(n + 1, np.float32)
        self._sumsq = np.zeros(n + 1, np.float32)
        self._finite = np.zeros(n + 1, bool)
        self._count = 0
        # Transport: the main head fades in after a jump; fading heads fade out.
        self.position = 0
        self.playing = False
        self._pausing = False
        self._stopping = False
        self._ending = False  # past the track's end while fading heads finish (_render)
        self._loop = None
        self._head = Ramp(1.0)
        self._fading = [FadingHead() for _ in range(FADING_HEADS)]
        # The main read head between rates (the kernel's ``read`` state: position,
        # phase, step, and the step's glide target, change a frame, frames left).
        # ``_exact``: the step is 1 and the phase 0, the track is read as it is.
        self._rd = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
        self._exact = True
        self._fast = 1.0  # the largest step the head may take before its glide ends
        self._base_step = 1.0  # the track's rate over the device's (times self.rate: the step)
        self._resampled = np.zeros((n, 2, b), np.float32)  # a head's frames between rates
        self._glide_len = max(1, round(self.rate_glide_ms * 1e-3 * samplerate))
        self.shifter.prepare(self.sr)
        self.shifter.set()  # keylock or a pitch set before: engaged again
        # The strips' last inputs, for a strip gain heard at once through the shifter:
        # only where the master's shifter alone is heard (written in the compiled
        # steady blocks) and its cost fits the block, for tracks of at most a strip
        # for every 4 frames of the block (16 at 64 frames, 64 at 256): the block that
        # applies a change does five frames' FFTs more (0.13 ms), which with 64
        # strips at 64 frames took the engine's p99 from 21 to 28-33 % of the block
        # (bench/stretch.py item 2, a change every 50 blocks).
        kept = (
            outputs == "mix"
            and self._compiled is not None
            and self.shifter.retro_fits(b, self._ramp_len)
        )
        self._history.prepare(min(n, b // 4) if kept else 0, self.shifter.history)
        self._out_delay = 0
        # A shifter costs about 1.2 % of a 64-frame block at 48 kHz, and every
        # channel's does its FFTs in the same blocks as the master's (their frames are
        # the master's): 4 channels at 64-frame blocks, 16 from 256 (half at 96 kHz).
        count = min(n, shifted_channels(b, self.keylock_frame)) if outputs == "channels" else 0
        self.channel_shifters.prepare(self.sr, count)
        if self.track is not None:  # prepared again with a track in: its step at this rate
            self._track_step(self.track)
        #: The DJ filters and the echo bus (:class:`~.fx.Effects`); the block reads
        #: ``fx.active`` (the FX path runs), ``fx.echo_on`` and ``fx.reverb_on`` (they ring).
        self.fx = Effects(
            self._kern,
            n,
            b,
            self.sr,
            self._ramp_len,
            mix=self._mix,
            metered=self._metered,
            fading=self._fading,
            render=self._render,
        )
        self._prepared = True

    def fault_in(self) -> int:
        """Write every buffer :meth:`prepare` made once (a byte of each page, left
        as it was), so each is in memory before the audio starts: a page first
        written in the callback is a page fault there, and the daemon's memory lock
        (``daemon/realtime.py``) keeps only what is in memory, or touched later.
        Not real-time; returns the bytes of the buffers."""
        if not self._prepared:
            raise RuntimeError("Mixer.fault_in before prepare")
        total = 0
        for array in _buffers(self):
            pages = array.reshape(-1).view(np.uint8)[::_PAGE]
            pages += 0  # a write to each page: no value changes
            total += array.nbytes
        return total

    def reset(self) -> None:
        """Back to the start: stopped, position 0, ramps settled, meters cleared
        (commands queued or waiting for a grid point dropped)."""
        self._queue.clear()
        self._pq_cmd[:] = [None] * PENDING_ACTIONS
        self._pq_head = self._pq_count = 0
        self._rolling = False
        self.position = 0
        self.playing = False
        self._pausing = self._stopping = self._ending = False
        self._loop = None
        self._transport.jump(0.0)
        self._head.jump(1.0)
        for h in self._fading:
            h.track, h.left = None, 0
        self._rewind_phase()
        self._retarget(immediate=True)
        self._history.clear()
        self.fx.reset()
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
    def output_delay(self) -> int:
        """Frames the audio out lags the play head by (read by any thread): the pitch
        shifter's latency while keylock or a pitch shift runs the master (and, with
        ``outputs="channels"``, each channel's pair) through it and its output is
        heard (:attr:`.keylock.Shifter.delay`), else 0. Published once a block,
        after it: a Batch of keylock off and a pitch is never seen half applied. A
        leader's beat (docs/sync.md) is placed that far ahead of the play head."""
        return self._out_delay

    @property
    def out_channels(self) -> int:
        return 2 if self.outputs == "mix" else 2 * self.max_channels

    # -- the audio callback -------------------------------------------------------
    def process(self, out: np.ndarray) -> None:
        """Fill ``out`` (frames, out_channels), float32. See the module docstring."""
        self._quantized_now = False
        while self._queue:
            self._apply(self._queue.popleft())
        if self._dirty:
            self._retarget(now=not self._quantized_now)
        history = self._history
        if history.pending:  # heard at once through the shifter (StripHistory)
            if not self._heard_at_once():
                self._settle_history(heard=False)
            elif history.due(self.shifter, min(out.shape[0], self.max_block), out.shape[0]):
                self._settle_history(heard=True)
        self.blocks += 1
        total = out.shape[0]
        # A host may hand over a block larger than prepared: do it in pieces.
        shifter = self.shifter
        for start in range(0, total, self.max_block):
            piece = out[start : start + self.max_block]
            if self._pq_count:
                self._quantized_block(piece)
            else:
                self._process_block(piece)
            if shifter.active:  # keylock or a pitch shift: the master through the shifter
                frames = piece.shape[0]
                rate = float(self._rd[2]) / self._base_step
                if self.outputs == "mix":
                    shifter.block(piece, frames, rate, self._mix)
                else:
                    alpha = shifter.transpose_for(frames, rate)
                    # Before the master's block: each channel's joins it in step.
                    self.channel_shifters.block(piece, frames, alpha, self._live_rows(), shifter)
                    shifter.run(self._mix[:, :frames].T, frames, alpha, None)
        if not shifter.active:
            self.channel_shifters.bypass()
        self._out_delay = shifter.delay

    @property
    def keylock_frame(self) -> int:
        """The keylock's frame (samples) at the prepared rate: 1024 at 48 kHz, 2048 with
        frames of 42.7 ms (:data:`~.keylock.KEYLOCK_QUALITY` "fine")."""
        return self.shifter.frame

    @property
    def strip_shifters(self) -> list[Shifter]:
        """With ``outputs="channels"``: each channel's pitch shifter (as many as
        :func:`~.keylock.shifted_channels` allows the block), else none."""
        return self.channel_shifters.shifters

    @property
    def unshifted(self) -> int:
        """Channels sounding past the last of :attr:`strip_shifters` while keylock or
        a pitch runs (unshifted: the daemon says so), else 0."""
        return self.channel_shifters.unshifted

    def _live_rows(self) -> int:
        """The most channels a play head reads now (the main head's track's, or a
        fading head's): 0 for the original while it plays alone."""
        rows = 0
        for t in (self.track, *(h.track for h in self._fading if h.left)):
            if t is not None and not t.is_mix and t.channels.shape[0] > rows:
                rows = t.channels.shape[0]
        return rows

    def _quantized_block(self, out: np.ndarray) -> None:
        """A block while quantized commands wait (:class:`~.commands.Quantized`):
        cut where the play head reaches the oldest one's frame, which is applied
        between the two parts, so its ramp starts at that output sample. The
        ramps run per sample, so the cut itself changes no sample."""
        frames = out.shape[0]
        off = 0
        mix, held = self._mix, self._held_mix
        while off < frames and self._pq_count:
            if self.track is None or not self.rolling:
                self._flush_pending()  # the head will not get there: act now
            else:
                k = self._frames_to_due(frames - off)
                if k < 0:
                    break
                if k:
                    self._process_block(out[off : off + k])
                    np.copyto(held[:, off : off + k], mix[:, :k])
                    off += k
                if not self._fire_due():
                    self._flush_pending()  # never expected: no block is cut for nothing
            if self._dirty:
                self._retarget()
        if off == 0:
            self._process_block(out)
            return
        if off < frames:
            self._process_block(out[off:])
            np.copyto(held[:, off:frames], mix[:, : frames - off])
        # Each piece wrote its master bus from the start of ``_mix``: the block's, in
        # order (the recorder's, and under outputs="channels" the master's shifter's).
        np.copyto(mix[:, :frames], held[:, :frames])

    def _transport_curve_for(self, frames: int) -> bool:
        """The transport gain of each sample into ``_transport_curve``; True if it moves.

        A constant gain is written once, not every block."""
        t = self._transport
        moving = t.left > 0
        if moving or t.current != self._transport_filled:
            t.curve(frames, self._transport64, self._ramp)
            if moving:
                np.copyto(self._transport_curve[:frames], self._transport64[:frames])
                self._transport_filled = -1.0
            else:
                self._transport_curve.fill(t.current)
                self._transport_filled = t.current
        self._transport_moving = moving
        return moving

    def _master_curve_for(self, frames: int) -> np.ndarray | None:
        """The master gain of each sample into ``_master_curve`` while it ramps
        (returned); None when it stands at ``_master.current``."""
        master = self._master
        if not master.left:
            return None
        master.curve(frames, self._master64, self._ramp)
        np.copyto(self._master_curve[:frames], self._master64[:frames])
        return self._master_curve

    def _strip_curves(self, frames: int) -> None:
        """Gain of each (strip, side) for each sample of the block into ``_curves``.

        Curves only for the strips a play head reads: the kernel's cost is then
        that of the track, not of ``max_channels`` (every strip's ramp still
        moves on)."""
        rows = self._live_rows()
        if not self._ramping:
            if not self._curves_ok or rows > self._flat_rows:
                # Every ramp has ended: the curves are flat at cur, written once.
                self._kern.ramp_curves(
                    self._cur,
                    self._step,
                    self._left,
                    self._ramp,
                    self._curves,
                    self.max_block,
                    rows,
                )
                self._curves_ok = True
                self._flat_rows = rows
            return
        self._kern.ramp_curves(
            self._cur, self._step, self._left, self._ramp, self._curves, frames, rows
        )
        self._end_ramps(frames)

    def _end_ramps(self, frames: int) -> None:
        self._ramp_frames = max(self._ramp_frames - frames, 0)
        self._ramping = self._ramp_frames > 0
        if not self._ramping:  # every ramp ends exactly on its target, rounding undone
            np.copyto(self._cur, self._tgt)
        self._curves_ok = False

    def _steady_block(self, track: Track, frames: int, out: np.ndarray) -> bool:
        """The common block in one compiled call, if this is one: playing at unity
        transport, one play head, no boundary inside the block. False if not
        (nothing done); the general path below then takes it.

        The numpy reference has no such shortcut (``_compiled`` is None): it
        takes every block the general way, which ``tests/core/mixer/test_kernel.py``
        compares this one against."""
        kern = self._compiled
        t, h = self._transport, self._head
        if kern is None or not self.playing or t.left or t.current != 1.0:
            return False
        if h.left or h.current != 1.0:
            return False
        for f in self._fading:
            if f.left:
                return False
        pos = self.position
        loop = self._loop
        if loop is not None and pos < loop[1]:
            end = loop[1]
        elif loop is not None and self._wraps(pos, loop[1]):
            return False  # the loop wraps at the block's first sample
        else:
            end = track.length
        src = track.channels
        at = pos
        if self._exact:
            if pos + frames > end:
                return False
        else:
            # Between rates: the head must stay short of the end for the whole block.
            if pos + 1 + frames * self._fast >= end:
                return False
            rd = self._rd
            rd[0] = pos
            kern.read(src, rd, frames, end, self._resampled, READ_TABLE)
            src = self._resampled[: src.shape[0], : src.shape[1]]
            at = 0
        rows = 0 if track.is_mix else track.channels.shape[0]
        if self._ramping:
            curve_frames = frames
        elif not self._curves_ok or rows > self._flat_rows:
            curve_frames = self.max_block  # the ramps have ended: write flat curves
        else:
            curve_frames = 0
        curve = self._master_curve_for(frames)
        finite = kern.block(
            self._cur,
            self._step,
            self._left,
            self._ramp,
            self._curves,
            curve_frames,
            rows,
            src,
            at,
            frames,
            track.is_mix,
            self._metered,
            self._mix,
            curve,
            self._master.current,
            self._peak,
            self._sumsq,
            out,
            self._chan_out,
        )
        if self._ramping:
            self._end_ramps(frames)
        elif curve_frames:
            self._curves_ok = True
            self._flat_rows = rows
        if finite and curve is None and self.shifter.active:
            self._history.write(track, src, at, self._metered, rows, frames)
        else:
            self._history.clear()
        if self._exact:
            self.position = pos + frames
        else:
            self.position = int(self._rd[0])
            self._settle_step()
        if finite:
            self._count += frames
        else:
            self._silence(out, self._mix[:, :frames], self._chan_out, frames)
        return True

    def _process_block(self, out: np.ndarray) -> None:
        frames = out.shape[0]
        track = self.track
        prog = self._progressive
        if prog is not None:
            # Separated as it plays: its channels where every frame the block reads,
            # and the crossfade after it, is in a ready chunk (a head the block leaves
            # fades out over ready frames), the original elsewhere; the same for a
            # loop's wrap in the block. Between rates the read head also reads its
            # interpolator's taps on either side, and up to ``_fast`` frames an
            # output frame. The span is at most one chunk (_set_track), so two
            # flags cover it.
            flags, last = self._progressive_flags, self._progressive_last
            size, pos = self._progressive_chunk, self.position
            if self._exact:
                back, ahead, reach = 0, frames, frames + self._xfade_len - 1
            else:
                fast = self._fast
                taps = READ_REACH * fast if fast > 1.0 else READ_REACH
                back = int(taps) + 1
                ahead = int(frames * fast) + 2
                reach = int((frames + self._xfade_len) * fast + taps) + 2
            lo = pos - back if pos > back else 0
            ok = flags[min(lo // size, last)] and flags[min((pos + reach) // size, last)]
            loop = self._loop
            if ok and loop is not None and pos - back <= loop[1] < pos + ahead:
                # The head wraps in the block: to the loop's start (between rates
                # at most a step past it).
                pos = loop[0]
                lo = pos - back if pos > back else 0
                ok = flags[min(lo // size, last)] and flags[min((pos + back + reach) // size, last)]
            view = prog if ok else prog.original
            if view is not track:
                self._switch_view(view)  # type: ignore[arg-type]  # never None (_set_track)
                track = view
        fx = self.fx
        if track is not None and not fx.active and self._steady_block(track, frames, out):
            return
        self._history.clear()  # its samples no longer lead here
        moving = self._transport_curve_for(frames)
        self._strip_curves(frames)
        mix = self._mix[:, :frames]
        chan_out = self._chan_out
        kern = self._kern
        tail = track is None or (not self.playing and not moving and self._transport.current == 0)
        if tail and not (fx.echo_on or fx.reverb_on):
            kern.zero(out)  # the compiled zero keeps the GIL, where a large fill hands it over
            kern.zero(mix)
            self._count += frames
            return
        if chan_out is not None:
            kern.zero(chan_out[:, :, :frames])
        if tail:
            # No play head sounds, but a bus rings out: its return, through the
            # master's filter, is the master bus (per-strip outputs stay silent).
            fx.tail(frames)
            rows = 1
        else:
            assert track is not None
            if fx.active:
                fx.block(track, frames, chan_out)
            else:
                self._render(track, frames, mix, chan_out, None)  # the main head writes all of mix
            rows = 1 if track.is_mix else 1 + track.channels.shape[0]
        gain = self._master.current
        curve = self._master_curve_for(frames)
        finite = kern.finish(
            self._metered,
            rows,
            frames,
            self._mix,
            curve,
            gain,
            self._peak,
            self._sumsq,
            out,
            chan_out,
        )
        if not finite:
            self._silence(out, mix, chan_out, frames)
            return
        self._count += frames
        if not tail:
            self._after_block()

    def _wraps(self, pos: int, end: int) -> bool:
        """The head at ``pos`` has just reached the loop's ``end``: exactly there, or
        between rates up to one step past it (a seek further on plays on)."""
        if pos == end:
            return True
        return not self._exact and end < pos <= end + self._fast

    def _after_block(self) -> None:
        if self._pausing and self._transport.left == 0:
            self._begin_write()  # stopped and at 0 as one (MixerState.seq)
            self.playing = False
            self._pausing = self._ending = False
            for h in self._fading:
                h.track, h.left = None, 0
            self._head.jump(1.0)
            if self._stopping:
                self._stopping = False
                self.position = 0
                self._rewind_phase()
                self._loop = None
            self._end_write()
        elif self._ending:  # past the track's end: stop once no head sounds
            for h in self._fading:
                if h.left:
                    return
            self._stop_at_end()

    def _stop_at_end(self) -> None:
        """The end of the track: stopped, the transport at 0, the play head unfaded."""
        self.playing = self._pausing = self._ending = False
        self._transport.jump(0.0)
        self._head.jump(1.0)

    def _silence(
        self, out: np.ndarray, mix: np.ndarray, chan_out: np.ndarray | None, frames: int
    ) -> None:
        self.nonfinite_blocks += 1
        out.fill(0.0)
        mix.fill(0.0)
        if chan_out is not None:
            chan_out[:, :, :frames].fill(0.0)
        for meter in (self._peak, self._sumsq):
            np.isfinite(meter, out=self._finite)
            np.logical_not(self._finite, out=self._finite)
            np.copyto(meter, 0.0, where=self._finite)
        self._count += frames

    def _render(
        self,
        track: Track,
        frames: int,
        mix: np.ndarray,
        chan_out: np.ndarray | None,
        pre: Effects | None,
    ) -> None:
        """Mix ``frames`` samples of every play head into ``mix`` (2, frames),
        and each strip into its row of ``chan_out`` when given; with ``pre`` (the
        FX path while a send is tapped before its fader) also each strip before
        its fader into ``pre.pre_sum``.

        The main head's block is cut where it meets the loop end or the track
        end, so every jump and its crossfade happen at the same sample whatever
        the block size. Fading heads then go straight on from where they were
        left, each on its own track, until they are silent.
        """
        pos = self.position
        length = track.length
        off = 0
        kern = self._kern
        # No fade anywhere in this block (the transport curve was made before the loop).
        unity = not self._transport_moving and self._transport.current == 1.0
        if self._ending:  # past the track's end: only the fading heads sound
            kern.zero(mix)
            kern.zero(self._metered[:, :, :frames])
            off = frames
        while off < frames:
            # Boundaries are handled when the next sample is needed, so a jump
            # lands on the same sample however the stream is cut into blocks.
            loop = self._loop
            if loop is not None and self._wraps(pos, loop[1]):
                # Between rates the head may pass the end: it wraps by as much.
                self.position = pos
                self._jump(min(loop[0] + (pos - loop[1]), loop[1] - 1), off, keep_phase=True)
                pos = self.position
                continue
            if pos >= length:
                if self.at_end == "loop":
                    self.position = pos
                    self._jump(0, off)
                    pos = 0
                    continue
                # End of the track: the rest of the block is silent and we stop, at
                # position 0. A head a jump left behind (a seek to the end) may
                # still sound: it ends its fade first, never cut (_after_block).
                kern.zero(mix[:, off:])
                kern.zero(self._metered[:, :, off:frames])
                self._begin_write()  # at 0 and ending (or stopped) as one (MixerState.seq)
                pos = self.position = 0
                if not self._exact:
                    self._rewind_phase()
                for h in self._fading:
                    if h.left:
                        self._ending = True
                if not self._ending:
                    self._stop_at_end()
                self._end_write()
                break
            end = loop[1] if loop is not None and pos < loop[1] else length
            src = track.channels
            at = pos
            if self._exact:
                count = min(frames - off, end - pos)
                pos += count
            else:  # between rates: the kernel reads up to the end, into _resampled
                rd = self._rd
                rd[0] = pos
                count = kern.read(src, rd, frames - off, end, self._resampled, READ_TABLE)
                src = self._resampled[: src.shape[0], : src.shape[1]]
                at = 0
                pos = int(rd[0])
            fades = self._segment_gain[:count]
            gain: np.ndarray | None = fades
            if self._head.left and self._head.curve(count, self._head_fade64, self._ramp):
                np.copyto(fades, self._head_fade64[:count])
                np.multiply(fades, self._transport_curve[off : off + count], out=fades)
            elif unity and self._head.current == 1.0:
                gain = None  # nothing fades: skip a multiply of the whole block
            else:
                np.copyto(fades, self._transport_curve[off : off + count])
            # The main head's strip signals stay in rows 1.. of _metered for the meters.
            kern.segment(
                src,
                at,
                count,
                None if track.is_mix else self._curves,
                gain,
                self._metered,
                1,
                off,
                self._mix,
                False,
                chan_out,
            )
            if pre is not None and not track.is_mix:  # before the faders
                kern.segment(
                    src,
                    at,
                    count,
                    None,
                    gain,
                    pre.pre_prod,
                    0,
                    off,
                    pre.pre_mix,
                    False,
                    pre.pre_sum,
                )
            off += count
        self.position = pos
        for h in self._fading:
            if h.left > 0 and h.track is not None:
                self._fade_out(h, frames, chan_out, pre)
        if not self._exact:  # last: a landing jump it makes starts with the next block
            self._settle_step()

    def _fade_out(
        self, h: FadingHead, frames: int, chan_out: np.ndarray | None, pre: Effects | None
    ) -> None:
        """Add fading head ``h``'s share of this block to the mix (and to ``chan_out``
        and ``pre`` as :meth:`_render` says), and move it on."""
        track = h.track
        assert track is not None
        off = h.offset
        count = min(frames - off, h.left)
        src = track.channels
        at = h.position
        if h.exact:
            available = max(0, min(count, track.length - h.position))
            h.position += count
        elif h.position < track.length:  # between rates: read into _resampled
            st = h.state
            st[0] = h.position
            available = self._kern.read(src, st, count, track.length, self._resampled, READ_TABLE)
            src = self._resampled[: src.shape[0], : src.shape[1]]
            at = 0
            h.position = int(st[0])
        else:
            available = 0
        if available > 0:  # past the end of its track a head is silence
            gain = self._segment_gain[:available]
            fade = self._head_fade64[:available]
            np.multiply(self._ramp[:available], h.step, out=fade)
            fade += h.gain
            np.copyto(gain, fade)
            np.multiply(gain, self._transport_curve[off : off + available], out=gain)
            self._kern.segment(
                src,
                at,
                available,
                None if track.is_mix else self._curves,
                gain,
                self._fading_sends,
                0,
                off,
                self._mix,
                True,
                chan_out,
            )
            if pre is not None and not track.is_mix:  # before the faders
                self._kern.segment(
                    src,
                    at,
                    available,
                    None,
                    gain,
                    pre.pre_prod,
                    0,
                    off,
                    pre.pre_mix,
                    False,
                    pre.pre_sum,
                )
        h.left -= count
        h.gain = 0.0 if h.left == 0 else h.gain + h.step * count
        h.offset = 0
        if h.left == 0:
            h.track = None


_PAGE = 4096  # bytes: the smallest page (a larger one is written more than once)


def _buffers(root: object) -> list[np.ndarray]:
    """The arrays owning their memory that ``root`` and the objects of this package
    it holds (the effects, the shifter, the numpy kernel, the fading heads), in
    attributes, lists, tuples and dicts, hold: each once. Not a track's audio."""
    seen: set[int] = set()
    found: list[np.ndarray] = []
    todo: list[object] = [root]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            if item.base is None and item.flags.c_contiguous and item.flags.writeable:
                found.append(item)
        elif isinstance(item, list | tuple):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, Track):
            continue
        elif type(item).__module__.startswith(__package__ or "stemdeck.core.mixer"):
            todo.extend(getattr(item, "__dict__", {}).values())
    return found
