"""Keylock and pitch shift: one spectral pitch shifter of the stereo master.

The vinyl read head plays the track at rate r (pitch following); with keylock on,
the master then goes through one pitch shifter with transpose factor
``(1 / r) * 2 ** (semitones / 12)``, so the tempo changes and the key stays (or
moves by ``semitones`` on its own). Whatever the number of strips, it is one
shifter: its cost does not depend on the channel count (``bench/stretch.py``),
except where each channel has an output of its own (``outputs="channels"``, below).

The shifter is ``_kernel.c``'s ``shift`` (a phase vocoder moving spectral peaks
with identity phase locking, documented there), every buffer made here once, in
:meth:`Shifter.prepare`. Its frame lasts about 21 ms at any rate (:func:`frame_for`:
1024 samples at 44.1 and 48 kHz, 2048 at 88.2 and 96 kHz), and its latency is fixed:
:func:`latency_at`, the frame and half a hop (:data:`LATENCY`, 1152 samples, at 44.1
and 48 kHz: 24.0 ms at 48 kHz, 26.1 ms at 44.1 kHz): a frame's work is spread
over half a hop (the analysis, the peaks' moves and the synthesis a quarter hop
apart), so at 64-frame blocks no block carries a whole frame. Keylock off and
pitch 0 is *bypass*: the block does not call the shifter and the output is
exactly the unshifted mix. Into and out of bypass the shifter's output
crossfades with the dry mix over :data:`XFADE_MS`; switching on, the crossfade
waits for the shifter to fill (:data:`LATENCY` samples), so nothing but the mix
is ever heard.

With ``outputs="channels"`` (a pair per strip) each channel's pair goes through a
shifter of its own, joined to the master's (:meth:`Shifter.join`, :meth:`Shifter.follow`:
the same state, the same latency), and the master the recorder takes
(``Mixer.master_view``) through the master's. With no compiled
kernel (no C compiler) there is no shifter: keylock and pitch are recorded and
reported but the mix plays vinyl.
"""

from __future__ import annotations

import math

import numpy as np

from . import kernel

__all__ = [
    "FRAME",
    "FRAME_SECONDS",
    "HIDDEN_HZ",
    "HOP",
    "KEYLOCK_QUALITY",
    "LATENCY",
    "MAX_PITCH",
    "MAX_SHIFTED_STRIPS",
    "SHIFT_FIELDS",
    "SHIFT_ROWS",
    "XFADE_MS",
    "ChannelShifters",
    "Shifter",
    "frame_for",
    "frame_latency",
    "full_block",
    "latency_at",
    "shifted_channels",
    "transpose",
]

#: The analysis frame (samples). Chosen by ``bench/stretch.py``: the log-mel distance
#: to the ideal (four songs synthesized at the new tempo, dB, the mean over rates
#: 0.84-1.16) is 2.56 at 512 (10.7 ms at 48 kHz), 2.10 at 1024 (21.3 ms), 1.93 at 2048
#: (42.7 ms), librosa's phase vocoder 3.86, vinyl 5.13; the log-CQT distance (where a
#: partial out of tune shows) 10.37, 6.97, 3.99, 5.43 and 13.14. 1024 is the default
#: for its latency (24 ms); 2048 is ``serve --keylock-quality fine`` (docs/keylock.md).
#: That is the frame at 44.1 and 48 kHz; at other rates the frame lasts as long
#: (:func:`frame_for`).
FRAME = 1024
#: How long a frame lasts (s), at any rate: :data:`FRAME` at 48 kHz.
FRAME_SECONDS = FRAME / 48000
#: ``serve --keylock-quality``: how long a frame lasts (s). "live" (the default):
#: 21.3 ms, a latency of 24 ms at 48 kHz (26.1 at 44.1); "fine": 42.7 ms, a latency of
#: 48 ms at 48 kHz (52.2 at 44.1), and the pitch of
#: low notes and chords kept far better (``bench/stretch.py`` item 5's log-CQT
#: distance 3.99 dB against 6.97; a 110 Hz note's harmonics within 0.0 cents at rates
#: 0.84-1.16 against up to 103), and smoother (log-mel 1.93 against 2.10).
KEYLOCK_QUALITY = {"live": FRAME_SECONDS, "fine": 2 * FRAME_SECONDS}
#: The hop between frames: four frames overlap.
HOP = FRAME // 4
#: The shifter's latency (samples): the frame, and half a hop over which a frame's
#: work is spread (``_kernel.c``'s ``shift``). ``bench/stretch.py``'s engine p99 at
#: 64 channels and 64 frames, keylock on (medians of 3 runs, 2 cores): the whole frame
#: in one block 26.2 % of the block's time, spread 22.3 % (4 channels: 13.3 -> 5.4 %).
LATENCY = FRAME + HOP // 2  # frame_latency(FRAME)
#: Partials hidden by a louder one's main lobe are looked for up to this frequency
#: (Hz; ``_kernel.c``'s ``sh_move``): above it the extra peaks cost more than they keep
#: (``bench/stretch.py`` items 5 and 6, docs/keylock.md).
HIDDEN_HZ = 1125.0
#: The pitch shift's range, semitones either way.
MAX_PITCH = 12.0
#: The crossfade into and out of bypass.
XFADE_MS = 20.0
#: Blocks of read-head rates the shifter remembers (:meth:`Shifter.rate_at`) with a
#: frame of :data:`FRAME`, in proportion for another: a block's frame is read at most
#: 704 samples back (0.69 of a frame), plus half a block (a block is at least 16
#: frames: 50 blocks).
RATE_HISTORY = 128
#: Channels each given a shifter of their own with ``outputs="channels"`` (their
#: pairs keylocked as the master is), at most: :func:`shifted_channels`.
MAX_SHIFTED_STRIPS = 16


def frame_for(samplerate: int, seconds: float = FRAME_SECONDS) -> int:
    """The shifter's frame at ``samplerate``: the power of two nearest ``seconds``
    (:data:`FRAME_SECONDS`: 1024 at 44.1 and 48 kHz, 2048 at 88.2 and 96 kHz, 4096 at
    176.4 and 192 kHz, 128 at 8 kHz), so the keylock sounds alike at any rate: a frame
    of 1024 at 96 kHz (10.7 ms) resolves partials half as finely, and played
    ``bench/stretch.py``'s song 0.06-0.24 dB further from the ideal (log-mel) than
    2048 did."""
    samples = seconds * max(1, int(samplerate))
    return 1 << min(14, max(4, round(math.log2(samples))))


def full_block(frame: int = FRAME) -> int:
    """The smallest block (frames) at which :data:`MAX_SHIFTED_STRIPS` channels have a
    shifter of their own with shifters of ``frame`` samples (:func:`shifted_channels`):
    256 at 44.1 and 48 kHz, 512 at 88.2 and 96 kHz."""
    return 64 * MAX_SHIFTED_STRIPS * max(FRAME, frame) // (4 * FRAME)


def latency_at(samplerate: int, seconds: float = FRAME_SECONDS) -> int:
    """The shifter's latency at ``samplerate`` (samples) with frames of ``seconds``:
    its frame and half a hop (:data:`LATENCY` at 44.1 and 48 kHz)."""
    return frame_latency(frame_for(samplerate, seconds))


def frame_latency(frame: int) -> int:
    """A shifter's latency with frames of ``frame`` samples: the frame and half a hop
    (a quarter frame)."""
    return frame + frame // 8


def shifted_channels(block: int, frame: int = FRAME) -> int:
    """How many channels get a shifter of their own with ``outputs="channels"`` at
    blocks of ``block`` frames and shifters of ``frame`` samples: 4 at 64-frame
    blocks with the shifter of 44.1 and 48 kHz, at most :data:`MAX_SHIFTED_STRIPS`
    (16 from 256-frame blocks; 1 at 16), half as many with a shifter twice as long
    (88.2 and 96 kHz: each FFT costs twice as much). Their frames are the master's,
    so all of them do their FFTs in the same blocks: about 1.2 % of a 64-frame block
    each at 48 kHz; the engine's p99 with keylock at 4 channels and 64 frames
    27.5 %, 8 and 128 34.8 %, 16 and 256 44.1 % (``bench/stretch.py``, medians of 3)."""
    return max(0, min(MAX_SHIFTED_STRIPS, 4 * int(block) * FRAME // (64 * max(FRAME, frame))))


#: ``_kernel.c``'s SH_SIZE and SH_ROWS: the state's fields, the work rows.
SHIFT_FIELDS = 12
SHIFT_ROWS = 52
# The state's fields (``_kernel.c``'s SH_* enum).
_ALPHA, _G, _GTGT, _GSTEP, _WAIT, _COUNT, _POS, _HOP, _SCALE, _RESET, _HIDDEN, _SLOT = range(
    SHIFT_FIELDS
)


def transpose(rate: float, semitones: float) -> float:
    """The shifter's transpose factor at vinyl rate ``rate``, keylock on:
    ``(1 / rate) * 2 ** (semitones / 12)``."""
    return 2.0 ** (semitones / 12.0) / rate


class Shifter:
    """The keylock's state and buffers; :meth:`block` runs it on the master.

    Control (``keylock``, ``pitch``) is set by the Mixer's command side in the
    audio thread (:meth:`set`); the block reads :attr:`active` (one attribute)
    and calls :meth:`block` only while it is True.
    """

    def __init__(self, frame: int | None = None, seconds: float = FRAME_SECONDS) -> None:
        if frame is not None and (frame < 16 or frame > 16384 or frame & (frame - 1)):
            raise ValueError(f"frame must be a power of two in 16..16384, got {frame}")
        if not 0.001 <= seconds <= 0.2:
            raise ValueError(f"a frame lasts 0.001..0.2 s, got {seconds!r}")
        self._fixed = frame  # else the rate's (:func:`frame_for`), set by :meth:`prepare`
        self._seconds = seconds
        frame = frame or frame_for(48000, seconds)  # until prepared
        #: The analysis frame (samples) and the hop (a quarter of it).
        self.frame = frame
        self.hop = frame // 4
        #: Keylock on: the pitch stays at any rate.
        self.keylock = False
        #: The pitch shift in semitones (-12..12).
        self.pitch = 0.0
        #: The shifter runs (on, or crossfading out of it): the block calls :meth:`block`.
        self.active = False
        self.sr = 0
        self._kern = kernel.COMPILED
        self._tables = np.zeros((2, frame))
        self._state = np.zeros(SHIFT_FIELDS)
        self._ring_in = np.zeros((2, frame), np.float32)
        self._ring_out = np.zeros((2, frame))
        self._work = np.zeros((SHIFT_ROWS, frame))
        # The read head's rate at the end of each of the last blocks the shifter ran
        # (a ring): the rate each sample of a frame was read at (:meth:`rate_at`).
        self._history = RATE_HISTORY
        self._ends = [0] * RATE_HISTORY  # samples since the shifter engaged, at each end
        self._rates = [1.0] * RATE_HISTORY
        self._blocks = 0  # blocks recorded since it engaged

    @property
    def latency(self) -> int:
        """The shifter's fixed latency, in samples: the frame and half a hop."""
        return frame_latency(self.frame)

    def prepare(self, samplerate: int) -> None:
        """Every buffer and table, for a stream at ``samplerate`` (not real-time): the
        frame given, or the rate's for the frame's duration (:func:`frame_for`)."""
        self.sr = int(samplerate)
        size = self._fixed or frame_for(self.sr, self._seconds)
        if size != self._ring_in.shape[1]:
            self._ring_in = np.zeros((2, size), np.float32)
            self._ring_out = np.zeros((2, size))
            self._work = np.zeros((SHIFT_ROWS, size))
        self.frame, self.hop = size, size // 4
        self._history = max(RATE_HISTORY, RATE_HISTORY * size // FRAME)
        self._ends = [0] * self._history
        self._rates = [1.0] * self._history
        self._blocks = 0
        n = np.arange(size)
        tables = np.zeros((2, size))
        tables[0] = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / size)  # periodic Hann
        k = np.arange(size // 2)
        tables[1, : size // 2] = np.cos(2.0 * np.pi * k / size)
        tables[1, size // 2 :] = np.sin(2.0 * np.pi * k / size)
        tables.flags.writeable = False
        self._tables = tables
        st = self._state
        st[:] = 0.0
        st[_ALPHA] = 1.0
        st[_GSTEP] = 1.0 / max(1, round(XFADE_MS * 1e-3 * self.sr))
        st[_HOP] = self.hop
        # Hann analysis and synthesis windows overlap-add to 3/8 * frame / hop.
        st[_SCALE] = 8.0 * self.hop / (3.0 * size)
        st[_RESET] = 1.0
        st[_HIDDEN] = min(size // 2, round(HIDDEN_HZ * size / max(1, self.sr)))
        self.active = False

    def xfade_samples(self, samples: int) -> None:
        """Set the crossfade into and out of bypass to ``samples`` (at least 1;
        :data:`XFADE_MS` by default, set again by :meth:`prepare`)."""
        self._state[_GSTEP] = 1.0 / max(1, int(samples))

    @property
    def engaged(self) -> bool:
        """Not bypass: keylock on or a pitch shift."""
        return self.keylock or self.pitch != 0.0

    @property
    def delay(self) -> int:
        """Samples what is heard of the master lags what went in (audio thread, after a
        block): :attr:`latency` once the shifter's output outweighs the dry mix (half
        way through its crossfade in, until half way through its crossfade out), else
        0: in bypass, while it fills (the dry mix plays on), and with no compiled
        kernel (nothing is shifted). A pitch knob passing through 0, the shifter
        engaged for less than its fill, delays nothing."""
        return self.latency if self.active and self._state[_G] >= 0.5 else 0

    @property
    def history(self) -> int:
        """The inputs :meth:`retro` changes (samples): two frames and a hop, as far
        back as the oldest frame the output ring still holds reaches."""
        return 2 * self.frame + self.hop

    def retro_fits(self, block: int, ramp: int) -> bool:
        """:meth:`retro` in blocks of ``block`` frames with the mixer's ramps of
        ``ramp`` samples: its cost (five frames' FFTs, about 0.2 ms for a frame of 1024
        here, in proportion to the frame) stays within a fifth of a block where the
        frame times the rate is at most 16 times 48 kHz times the block (64-frame
        blocks at 44.1 and 48 kHz, 256 at 96 kHz, or 128 at 48 kHz with the fine
        frame); and the ramp is at most half a frame (the change reaches the input
        ring whole: a longer ramp would be cut to about a frame). The rings hold
        two frames and a hop, so a block is at most that."""
        return (
            self.frame * self.sr <= 16 * 48000 * block
            and 0 < ramp <= self.frame // 2
            and block <= self.history
        )

    def quiet(self, frames: int) -> bool:
        """The shifter's next ``frames`` samples do none of a frame's work (its
        analysis, its moves, its synthesis: a hop's three stages): at 64-frame blocks
        one block in four."""
        count, hop = int(self._state[_COUNT]), self.hop
        return all((stage - count - 1) % hop + 1 > frames for stage in (0, hop // 4, hop // 2))

    @property
    def wet(self) -> bool:
        """Only the shifter is heard (engaged, filled and crossfaded in): what the
        block adds to its input is heard only through it."""
        st = self._state
        return self.active and self._kern is not None and st[_G] == 1.0 and st[_GTGT] == 1.0

    def retro(self, delta: np.ndarray, ramp: int) -> None:
        """Change the last :attr:`history` inputs by ``delta`` (float32 (2, history),
        the oldest first), and everything made of them not heard yet; the output's
        change comes in over ``ramp`` samples from the next one (audio thread, between
        blocks, only while :attr:`wet`; ``_kernel.c``'s ``retro``).

        What the mixer does with it (:meth:`StripHistory.apply`): a strip's gain
        changed with keylock on is heard after the ramp, not the shifter's latency
        later."""
        kern = self._kern
        if kern is None or self._state[_RESET]:
            return
        kern.retro(
            delta, int(ramp), self._tables, self._state, self._ring_in, self._ring_out, self._work
        )

    def set(self, keylock: bool | None = None, pitch: float | None = None) -> None:
        """Keylock and/or pitch (audio thread, from a drained command): a pitch is
        clamped to +-:data:`MAX_PITCH`, a non-finite one changes nothing."""
        if keylock is not None:
            self.keylock = bool(keylock)
        if pitch is not None and math.isfinite(pitch):
            self.pitch = min(max(float(pitch), -MAX_PITCH), MAX_PITCH)
        if self._kern is None or self.sr == 0:
            return
        st = self._state
        if self.engaged:
            if not self.active:  # from bypass: a clean shifter, heard once it has filled
                st[_RESET] = 1.0
                st[_G] = 0.0
                st[_WAIT] = float(self.latency)
                self._blocks = 0
                self.active = True
            st[_GTGT] = 1.0
        else:
            st[_GTGT] = 0.0

    def factor(self, rate: float) -> float:
        """The transpose factor at the read head's current ``rate`` (vinyl rate 1
        without keylock), within the kernel's 0.25..4."""
        alpha = 2.0 ** (self.pitch / 12.0)
        if self.keylock:
            alpha /= rate
        return min(max(alpha, 0.25), 4.0)

    def join(self, lead: Shifter) -> None:
        """Start afresh in step with ``lead`` (audio thread, before ``lead``'s block):
        a channel's shifter under ``outputs="channels"`` takes the master's keylock,
        pitch, wet gain and fill, with clean rings, its frames on the master's, so
        its pair comes out as delayed as the master (silent while its rings fill,
        if ``lead`` is heard), and content two channels share is shifted alike (the
        same peaks, phases and moves: the pairs sum to the shifted mix)."""
        self.keylock, self.pitch = lead.keylock, lead.pitch
        st, ls = self._state, lead._state
        # A reset ``lead`` has pending (engaged afresh this block) resets this one in
        # its own call the same way: its frames from the same sample.
        for field in (_G, _GTGT, _GSTEP, _WAIT, _COUNT, _RESET):
            st[field] = ls[field]
        self._ring_in.fill(0.0)
        self._ring_out.fill(0.0)
        self._work.fill(0.0)
        st[_POS] = 0.0
        self.active = True

    def follow(self, lead: Shifter) -> None:
        """Stay in step with ``lead`` (audio thread, each block after :meth:`join`,
        before ``lead``'s block): its keylock, pitch, and whether it crossfades in or
        out; when ``lead`` starts afresh (engaged again from bypass, its reset
        pending), :meth:`join` it again."""
        if lead._state[_RESET]:
            self.join(lead)
            return
        self.keylock, self.pitch = lead.keylock, lead.pitch
        self._state[_GTGT] = lead._state[_GTGT]

    def rate_at(self, sample: float) -> float:
        """The read head's rate at ``sample`` (samples since the shifter engaged) as
        the blocks left it: between two blocks' ends, the line between their rates
        (the mixer's glide is linear); before the first recorded, its rate."""
        n = self._blocks
        if n == 0:
            return 1.0
        ends, rates, size = self._ends, self._rates, self._history
        oldest = max(0, n - size)
        k = n - 1  # the block whose span holds the sample: (end of k - 1, end of k]
        while k > oldest and sample < ends[(k - 1) % size]:
            k -= 1
        j = k % size
        if k == oldest or sample >= ends[j]:
            return rates[j]
        i = (k - 1) % size
        return rates[i] + (rates[j] - rates[i]) * (sample - ends[i]) / (ends[j] - ends[i])

    def block(self, io: np.ndarray, frames: int, rate: float, mix: np.ndarray | None) -> None:
        """The block's master through the shifter, in place (``io`` (frames, 2)),
        also into ``mix`` (2, >= frames) if given; ``rate`` is the read head's at the
        block's end (:meth:`transpose_for`, then :meth:`run`). Leaves
        :attr:`active` False once it has crossfaded into bypass."""
        self.run(io, frames, self.transpose_for(frames, rate), mix)

    def transpose_for(self, frames: int, rate: float) -> float:
        """The transpose factor of the next block of ``frames`` (audio thread, once a
        block, before :meth:`run`), the read head's ``rate`` at its end recorded.

        The factor is the one for the rate the frame being moved was read at
        (:meth:`rate_at`): a peak's frequency is measured by its phase advance from
        the frame before, so the rate half way between the two frames' centres. Its
        samples went in up to a frame before, and the rate of the block's end,
        taken for all of them, swept the pitch through every rate change: 84 cents
        at most for 1.0 -> 1.08 over the mixer's 30 ms glide (8 cents now), 618 for
        1.5 -> 0.9 (74; ``tests/core/mixer/test_keylock.py``)."""
        n, size = self._blocks, self._history
        start = self._ends[(n - 1) % size] if n else 0
        self._ends[n % size] = start + frames
        self._rates[n % size] = rate
        self._blocks = n + 1
        # The frame moved in this block (the block's middle standing for the move):
        # analysed a quarter hop before it, centred half a frame before that, and
        # measured against the frame a hop before: half a hop further back.
        centre = start + 0.5 * frames - 0.75 * self.hop - 0.5 * self.frame
        return self.factor(self.rate_at(centre))

    def run(self, io: np.ndarray, frames: int, alpha: float, mix: np.ndarray | None) -> None:
        """``io`` through the shifter at transpose factor ``alpha`` (0.25..4): the
        master's from :meth:`transpose_for`, given as it is to each channel's shifter
        in step with it. Leaves :attr:`active` False once crossfaded into bypass."""
        kern = self._kern
        if kern is None:
            return
        st = self._state
        st[_ALPHA] = alpha
        kern.shift(io, frames, self._tables, st, self._ring_in, self._ring_out, self._work, mix)
        if st[_GTGT] == 0.0 and st[_G] == 0.0:
            self.active = False


class ChannelShifters:
    """``outputs="channels"``: a :class:`Shifter` for each channel's pair, in step
    with the master's (audio thread, :meth:`block` before the master's block).

    A channel's shifter runs from the block where the channel sounds (one that did
    not run in the last block joins the master's afresh) until its last sound is out
    of it, two frames and a hop after the channel went quiet (a track of fewer
    channels, an eject). As many as :func:`shifted_channels` allows the block.

    Attributes
    ----------
    shifters : list of Shifter
    unshifted : int
        Channels sounding past the last shifter in the last block the master's
        shifter ran (they play unshifted: the daemon says so), else 0.
    """

    def __init__(self, seconds: float = FRAME_SECONDS) -> None:
        self.seconds = seconds  # each shifter's frame (:class:`Shifter`)
        self.shifters: list[Shifter] = []
        self.unshifted = 0
        self._tail: list[int] = []  # samples a quiet channel's shifter still rings
        self._ran: list[bool] = []  # ran in the last block: else joins afresh
        self._running = False  # any ran since the last bypass

    def prepare(self, samplerate: int, count: int) -> None:
        """``count`` shifters for a stream at ``samplerate`` (not real-time)."""
        if len(self.shifters) != count:
            self.shifters = [Shifter(seconds=self.seconds) for _ in range(count)]
        for shifter in self.shifters:
            shifter.prepare(samplerate)
        self._tail = [0] * count
        self._ran = [False] * count
        self._running = False
        self.unshifted = 0

    def block(self, out: np.ndarray, frames: int, alpha: float, rows: int, lead: Shifter) -> None:
        """Each sounding (or still ringing) channel's pair of ``out`` (frames, 2 n)
        through its shifter at transpose factor ``alpha``, in step with ``lead``;
        ``rows`` channels sound in this block."""
        tails, ran = self._tail, self._ran
        self.unshifted = max(0, rows - len(tails))
        for i, shifter in enumerate(self.shifters):
            if i < rows:
                tails[i] = 2 * lead.frame + lead.hop
            elif tails[i] > 0:
                tails[i] = max(0, tails[i] - frames)
            else:
                ran[i] = False
                continue
            if ran[i]:
                shifter.follow(lead)
            else:
                shifter.join(lead)
                ran[i] = True
                self._running = True
            shifter.run(out[:, 2 * i : 2 * i + 2], frames, alpha, None)

    def bypass(self) -> None:
        """The master's shifter is in bypass: each channel's joins afresh when it
        engages again, and none is missing."""
        self.unshifted = 0
        if self._running:
            for i in range(len(self._ran)):
                self._ran[i] = False
                self._tail[i] = 0
            self._running = False
