"""The mixer's FX (issue #25): a DJ filter on every strip and on the master, and
one stereo echo bus and one stereo reverb bus every strip sends to.

:class:`Effects` holds their state, made by :meth:`Mixer.prepare
<stemdeck.core.mixer.engine.Mixer.prepare>` (the ``Mixer.fx`` it owns): the
filters' knob and resonance ramps and states, the echo's send ramps, delay line
and scalars, the reverb's send ramps, delay lines (sized once, here) and
scalars, the filter's cutoff table and the buffers of the FX path. Commands
reach it from the audio thread (:meth:`Effects.strip`, :meth:`Effects.master`,
:meth:`Effects.echo`, :meth:`Effects.reverb`), as the Mixer's own do: scalar
work only.

While every knob stands at 0, no send is open and both buses are silent,
:attr:`Effects.active` is False and the Mixer's block does not touch any of it:
the output is exactly what it is without FX. Otherwise the block renders through
:meth:`Effects.block` (one call, in place of the plain render: per-strip sums
over every play head, each strip's filter, the mixdown, the echo bus, the
reverb bus, the master's filter); while no play head sounds and a bus still
rings, :meth:`Effects.tail` runs the buses alone, so no tail is cut. The
arithmetic is the kernel's (:mod:`.kernel`: ``filter``, ``mixdown``, ``echo``,
``reverb``); like the rest of the block, no call here allocates array data.

The reverb is Jezar's Freeverb (public domain): per side eight damped combs in
parallel and four allpasses in series, the right side's delays longer by the
stereo spread (:data:`REVERB_COMBS_44K`, :data:`REVERB_ALLPASSES_44K`,
:data:`REVERB_SPREAD_44K`, in samples at 44.1 kHz, scaled to the rate). The
room size sets the combs' feedback (0.7 + 0.28 size, Freeverb's own law), the
damping is fixed at Freeverb's default (:data:`REVERB_DAMP`), and a low-cut
(12 dB/octave) on its input spares the bass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .commands import EchoTarget, MasterTarget, ReverbTarget, StripTarget, Track
from .heads import FadingHead
from .kernel import (
    ECHO_BUS_FIELDS,
    REVERB_BUS_FIELDS,
    REVERB_COMBS,
    REVERB_STATE,
    Kernel,
    glide_at,
)
from .params import (
    ECHO_FEEDBACK,
    ECHO_MAX_MS,
    ECHO_MIN_MS,
    ECHO_MS,
    ECHO_RETURN,
    MAX_TRACK_RATE,
    REVERB_LOWCUT,
    REVERB_MAX_LOWCUT,
    REVERB_MIN_LOWCUT,
    REVERB_RETURN,
    REVERB_SIZE,
)

__all__ = [
    "ECHO_GLIDE_S",
    "FILTER_HP_HZ",
    "FILTER_LP_HZ",
    "FILTER_TABLE",
    "REVERB_ALLPASSES_44K",
    "REVERB_COMBS_44K",
    "REVERB_DAMP",
    "REVERB_SPREAD_44K",
    "Effects",
    "FilterRamps",
    "Render",
    "reverb_feedback",
    "reverb_lengths",
]

ECHO_GLIDE_S = 0.25  # a change of the echo's delay glides over this (tape-like)
FILTER_TABLE = 4096  # steps of the DJ filter's cutoff table over |knob| 0..1
# The DJ filter's cutoff at |knob| 0 and 1: the low-pass closes from 20 kHz to
# 20 Hz, the high-pass opens from 20 Hz to 20 kHz (exponentially: even in pitch).
FILTER_LP_HZ = (20000.0, 20.0)
FILTER_HP_HZ = (20.0, 20000.0)

# Freeverb's delays in samples at 44.1 kHz (left side; the right adds the spread).
REVERB_COMBS_44K = (1116, 1188, 1277, 1356, 1422, 1491, 1557, 1617)
REVERB_ALLPASSES_44K = (556, 441, 341, 225)
REVERB_SPREAD_44K = 23
REVERB_DAMP = 0.2  # Freeverb's default damping (0.5 of its 0.4 scale)
# The reverb bus stops once quiet (-90 dBFS) for as many round trips of its longest
# comb as its feedback needs to take what may be left 30 dB further down.
_REVERB_MARGIN = 10 ** (-30 / 20)
_REVERB_NEVER = float(2**53)  # the reverb's quiet count when it is silent

# A DJ filter's knob and resonance ramps: (target, step, samples left) each, float64.
FilterRamps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# The Mixer's render of every play head: (track, frames, master bus, per-strip
# rows, the Effects when strips are tapped before their faders, else None).
Render = Callable[[Track, int, np.ndarray, "np.ndarray | None", "Effects | None"], None]


def _filter_ramps(n: int) -> FilterRamps:
    return (np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))


def reverb_lengths(sr: int) -> np.ndarray:
    """The reverb's twelve delays per side at ``sr`` (eight combs, four allpasses),
    float64 (2, 12), whole samples of at least 1: Freeverb's, scaled to the rate."""
    out = np.zeros((2, 12))
    for side in (0, 1):
        spread = REVERB_SPREAD_44K * side
        for j, t in enumerate((*REVERB_COMBS_44K, *REVERB_ALLPASSES_44K)):
            out[side, j] = max(1, round((t + spread) * sr / 44100))
    return out


def reverb_feedback(size: float) -> float:
    """The combs' feedback at room size 0..1 (Freeverb's law: 0.7 + 0.28 size)."""
    return 0.7 + 0.28 * size


def _within(value: float, lo: float, hi: float) -> float:
    """An FX value clamped to lo..hi; NaN is lo (the registry refuses NaN, and a
    command that slips past it must not reach the filters or the echo)."""
    v = float(value)
    return lo if v != v else min(max(v, lo), hi)


class Effects:
    """The DJ filters and the echo bus of a prepared Mixer (its ``fx``).

    Parameters
    ----------
    kern : Kernel
        The Mixer's kernel (compiled or numpy).
    n, b : int
        Strips and the largest block (frames).
    sr : int
        Sample rate.
    ramp_len : int
        Samples of every knob, resonance and send glide (the Mixer's ``ramp_ms``).
    mix : numpy.ndarray
        The Mixer's master bus, (2, b) float32: the echo adds its return there,
        the master's filter runs on it.
    metered : numpy.ndarray
        The Mixer's metered rows (master, then strips), (n + 1, 2, b) float32.
    fading : sequence of FadingHead
        The Mixer's fading play heads (read to size the block's rows).
    render : Render
        The Mixer's render of every play head into per-strip rows.

    Attributes
    ----------
    active : bool
        The FX path runs: some filter is engaged or gliding, a send is open, or
        the echo rings. Read by the Mixer's block; set here only.
    echo_on : bool
        The echo bus runs (a send is open, or its tail has not died away yet).
    reverb_on : bool
        The reverb bus runs (a send is open, or its tail has not died away yet).
    echo_glide : int
        Samples a change of the echo's delay glides over (``ECHO_GLIDE_S``, at
        least ``ramp_len``).
    table : numpy.ndarray
        ``tan(pi fc / sr)`` at ``|knob| = i / FILTER_TABLE``, (2, FILTER_TABLE + 1):
        low-pass then high-pass; both kernels read this one table.
    pre_taps : int
        Strips whose send is tapped before the fader.
    pre_sum, pre_prod, pre_mix : numpy.ndarray
        The strips before their faders (what a pre send reads), the scratch of
        their segments and of their sum (the render writes them when
        ``pre_taps``).
    """

    def __init__(
        self,
        kern: Kernel,
        n: int,
        b: int,
        sr: int,
        ramp_len: int,
        *,
        mix: np.ndarray,
        metered: np.ndarray,
        fading: Sequence[FadingHead],
        render: Render,
    ) -> None:
        self._kern = kern
        self._ramp_len = ramp_len
        self._mix = mix
        self._mix3 = mix[np.newaxis]  # the master bus as one "strip" to filter
        self._metered = metered
        self._fading = fading
        self._render = render
        self.active = False
        self._filters: list[tuple[float, float]] = [(0.0, 0.0)] * n  # (filter, res)
        self._master_filter = (0.0, 0.0)
        self._filtered: set[int] = set()  # strips (and -1, the master) with a knob off 0
        self._filter_frames = 0  # samples until the longest filter glide ends
        # Knob and resonance ramps (target, step, samples left), strips and master.
        self._fparams = _filter_ramps(n)
        self._mfparams = _filter_ramps(1)
        self._fstate = np.zeros((n, 2, 2))  # (ic1, ic2) per (strip, side)
        self._mfstate = np.zeros((1, 2, 2))
        self._strip_sum = np.zeros((n, 2, b), np.float32)  # each strip, all heads
        # The echo bus: each strip's send ramp (target, step, left) and pre flag,
        # the delay line (its longest delay, fixed here) and the bus's scalars.
        self._sr = sr
        self._sends = np.zeros((4, n))
        self._send_params: list[tuple[float, bool]] = [(0.0, False)] * n  # (send, pre)
        self._sending: set[int] = set()  # strips whose send is off 0
        self._send_frames = 0  # samples until the longest send glide ends
        self.pre_taps = 0
        self.echo_on = False
        self._echo_len = math.ceil(ECHO_MAX_MS * 1e-3 * sr) + 4
        self._echo_line = np.zeros((2, self._echo_len), np.float32)
        self._echo_bus = np.zeros(ECHO_BUS_FIELDS)
        self._echo_fstate = np.zeros((2, 2))
        self.echo_glide = max(ramp_len, round(ECHO_GLIDE_S * sr))
        self._echo_state = (ECHO_MS, ECHO_FEEDBACK, 0.0, ECHO_RETURN)
        bus = self._echo_bus
        bus[1], bus[4], bus[7] = self._delay(ECHO_MS), ECHO_FEEDBACK, ECHO_RETURN
        bus[14] = float(self.echo_glide)
        bus[13] = 2.0 * self._echo_len  # quiet for longer than any delay: silent
        # The reverb bus: each strip's send ramp (target, step, left), its delay
        # lines (sized for the highest rate, so no rate allocates more), its state
        # (positions, comb stores, low-cut) and scalars.
        self.reverb_on = False
        self._rsends = np.zeros((3, n))
        self._rsend_params = [0.0] * n
        self._rsending: set[int] = set()
        self._rsend_frames = 0
        self._reverb_state = (REVERB_SIZE, REVERB_LOWCUT, REVERB_RETURN)
        self._rlens = reverb_lengths(sr)
        self._rlongest = int(self._rlens[:, :REVERB_COMBS].max())
        capacity = int(reverb_lengths(max(sr, MAX_TRACK_RATE)).sum(axis=1).max())
        self._rlines = np.zeros((2, capacity), np.float32)
        self._rstate = np.zeros((2, REVERB_STATE))
        self._rbus = np.zeros(REVERB_BUS_FIELDS)
        rb = self._rbus
        rb[0], rb[3] = reverb_feedback(REVERB_SIZE), REVERB_RETURN
        rb[6], rb[9] = self._lowcut(REVERB_LOWCUT), REVERB_DAMP
        rb[10] = _REVERB_NEVER  # quiet for longer than any decay: silent
        self.pre_sum = np.zeros((n, 2, b), np.float32)
        self.pre_prod = np.zeros((n, 2, b), np.float32)
        self.pre_mix = np.zeros((2, b), np.float32)
        # Both kernels read this one table, so how tan rounds does not matter.
        share = np.arange(FILTER_TABLE + 1) / FILTER_TABLE
        table = np.zeros((2, FILTER_TABLE + 1))
        for row, (f0, f1) in enumerate((FILTER_LP_HZ, FILTER_HP_HZ)):
            fc = np.minimum(f0 * (f1 / f0) ** share, 0.45 * sr)  # far from tan's pole
            np.tan(np.pi * fc / sr, out=table[row])
        self.table = table

    # -- control side ---------------------------------------------------------------
    def filter_state(self, index: int | None) -> tuple[float, float]:
        """Strip ``index``'s (None: the master's) filter (knob, resonance) as last
        applied; one tuple, replaced whole (``Mixer.filter_state`` checks ``index``)."""
        return self._master_filter if index is None else self._filters[index]

    def echo_state(self, index: int | None) -> tuple[float, ...]:
        """Strip ``index``'s send (send, pre as 0/1), or with None the bus (ms,
        feedback, filter, return), as last applied (``Mixer.echo_state`` checks ``index``)."""
        if index is None:
            return self._echo_state
        send, pre = self._send_params[index]
        return (send, float(pre))

    def echo_delay(self) -> float:
        """The echo's delay in samples (of the device's rate), as last applied: where
        its glide goes (``Mixer.echo_delay``)."""
        return float(self._echo_bus[1])

    def reverb_state(self, index: int | None) -> tuple[float, ...]:
        """Strip ``index``'s reverb send (send,), or with None the bus (size,
        lowcut, return), as last applied (``Mixer.reverb_state`` checks ``index``)."""
        if index is None:
            return self._reverb_state
        return (self._rsend_params[index],)

    def reset(self) -> None:
        """Filter states, the echo's line and the reverb's lines cleared; the buses silent."""
        self._fstate.fill(0.0)
        self._mfstate.fill(0.0)
        self._echo_line.fill(0.0)
        self._echo_fstate.fill(0.0)
        self._echo_bus[13] = 2.0 * self._echo_len
        self._rlines.fill(0.0)
        self._rstate.fill(0.0)
        self._rbus[10] = _REVERB_NEVER

    # -- commands (audio thread) ----------------------------------------------------
    def strip(self, i: int, cmd: StripTarget) -> None:
        """Strip ``i``'s filter and send from ``cmd`` (clamped), gliding if they changed."""
        fx = (_within(cmd.filter, -1.0, 1.0), _within(cmd.res, 0.0, 1.0))
        if fx != self._filters[i]:
            self._filters[i] = fx
            self._aim_filter(self._fparams, i, fx)
        send = (_within(cmd.echo, 0.0, 1.0), bool(cmd.echo_pre))
        if send != self._send_params[i]:
            self._aim_send(i, send)
        rsend = _within(cmd.reverb, 0.0, 1.0)
        if rsend != self._rsend_params[i]:
            self._aim_reverb_send(i, rsend)

    def master(self, cmd: MasterTarget) -> None:
        """The master's filter from ``cmd`` (clamped), gliding if it changed."""
        fx = (_within(cmd.filter, -1.0, 1.0), _within(cmd.res, 0.0, 1.0))
        if fx != self._master_filter:
            self._master_filter = fx
            self._aim_filter(self._mfparams, 0, fx, master=True)

    def play(self) -> None:
        """The transport plays: with a send open, its bus runs again."""
        if self._sending:
            self.echo_on = self.active = True
        if self._rsending:
            self.reverb_on = self.active = True

    def _aim_filter(
        self,
        params: FilterRamps,
        i: int,
        fx: tuple[float, float],
        *,
        master: bool = False,
    ) -> None:
        """Glide filter ``i`` of ``params`` (strips', or the master's) to ``fx``
        (knob, resonance) over ``ramp_len``, from where it stands now."""
        length = self._ramp_len
        for j, want in ((0, fx[0]), (3, fx[1])):
            tgt, step, left = params[j], params[j + 1], params[j + 2]
            now = tgt[i] - step[i] * left[i]  # the ramp's value at the last sample played
            tgt[i] = want
            step[i] = (want - now) / length
            left[i] = float(length)
        key = -1 if master else i
        if fx[0] != 0.0:
            self._filtered.add(key)
        else:
            self._filtered.discard(key)
        self._filter_frames = length
        self.active = True

    def _aim_send(self, i: int, send: tuple[float, bool]) -> None:
        """Glide strip ``i``'s echo send to ``send`` (level, pre) over ``ramp_len``.

        A change of the tap (pre or post) switches at once: its level may jump."""
        self.pre_taps += int(send[1]) - int(self._send_params[i][1])
        self._send_params[i] = send
        tgt, step, left = self._sends[0], self._sends[1], self._sends[2]
        now = tgt[i] - step[i] * left[i]
        tgt[i] = send[0]
        step[i] = (send[0] - now) / self._ramp_len
        left[i] = float(self._ramp_len)
        self._sends[3, i] = 1.0 if send[1] else 0.0
        if send[0] != 0.0:
            self._sending.add(i)
        else:
            self._sending.discard(i)
        self._send_frames = self._ramp_len
        self.echo_on = self.active = True

    def _aim_reverb_send(self, i: int, send: float) -> None:
        """Glide strip ``i``'s reverb send to ``send`` over ``ramp_len``."""
        self._rsend_params[i] = send
        tgt, step, left = self._rsends[0], self._rsends[1], self._rsends[2]
        now = tgt[i] - step[i] * left[i]
        tgt[i] = send
        step[i] = (send - now) / self._ramp_len
        left[i] = float(self._ramp_len)
        if send != 0.0:
            self._rsending.add(i)
        else:
            self._rsending.discard(i)
        self._rsend_frames = self._ramp_len
        self.reverb_on = self.active = True

    def _lowcut(self, hz: float) -> float:
        """The reverb low-cut's coefficient g = tan(pi fc / sr) (fc far below Nyquist)."""
        return math.tan(math.pi * min(hz, 0.45 * self._sr) / self._sr)

    def _reverb_silent(self) -> bool:
        """Nothing audible is left in the reverb: quiet (-90 dBFS) for as many round
        trips of its longest comb as its feedback (the larger, while it glides) needs
        to fall 30 dB further."""
        rb = self._rbus
        fb = max(rb[0], rb[0] - rb[1] * rb[2])
        trips = math.ceil(math.log(_REVERB_MARGIN) / math.log(min(fb, 0.999)))
        return bool(rb[10] > self._rlongest * trips)

    def reverb(self, cmd: ReverbTarget) -> None:
        """Glide the reverb bus to ``cmd`` over ``ramp_len`` (at once while the bus
        is silent); the bus then runs until it is quiet again."""
        state = (
            _within(cmd.size, 0.0, 1.0),
            _within(cmd.lowcut, REVERB_MIN_LOWCUT, REVERB_MAX_LOWCUT),
            _within(cmd.level, 0.0, 1.0),
        )
        if state == self._reverb_state:
            return
        self._reverb_state = state
        rb = self._rbus
        wants = ((0, reverb_feedback(state[0])), (3, state[2]), (6, self._lowcut(state[1])))
        if self._reverb_silent():  # nothing in the bus to click: it stands there at once
            for j, want in wants:
                rb[j], rb[j + 1], rb[j + 2] = want, 0.0, 0.0
            self._rstate[0, 20:22] = 0.0
        else:
            for j, want in wants:
                now = rb[j] - rb[j + 1] * rb[j + 2]
                rb[j], rb[j + 1], rb[j + 2] = want, (want - now) / self._ramp_len, self._ramp_len
        self.reverb_on = self.active = True

    def _delay(self, ms: float) -> float:
        """A delay in milliseconds as samples, within what the line holds."""
        return min(max(ms, ECHO_MIN_MS), ECHO_MAX_MS) * 1e-3 * self._sr

    def _silent(self) -> bool:
        """Nothing audible is left in the echo bus: quiet for longer than its delay."""
        bus = self._echo_bus
        return bool(bus[13] > max(bus[1], bus[1] - bus[2]) + 2.0)

    def echo(self, cmd: EchoTarget) -> None:
        """Glide the echo bus to ``cmd``: the delay over ``echo_glide``, the rest
        over ``ramp_len``; at once while the bus is not running (it is silent).
        The bus then runs until it is quiet again."""
        state = (
            _within(cmd.ms, ECHO_MIN_MS, ECHO_MAX_MS),
            _within(cmd.feedback, 0.0, 1.0),
            _within(cmd.filter, -1.0, 1.0),
            _within(cmd.level, 0.0, 1.0),
        )
        if state == self._echo_state:
            return
        self._echo_state = state
        bus = self._echo_bus
        if self._silent():  # nothing in the bus to click: it stands there at once
            bus[1], bus[2], bus[3] = self._delay(state[0]), 0.0, 0.0
            for j, want in ((4, state[1]), (7, state[3]), (10, state[2])):
                bus[j], bus[j + 1], bus[j + 2] = want, 0.0, 0.0
            self._echo_fstate.fill(0.0)
            self.echo_on = self.active = True
            return
        # The delay on a raised cosine (its span, not a step: kernel.glide_at).
        delay = self._delay(state[0])
        now = glide_at(bus[1], bus[2], bus[3] + 1.0, bus[14], 0)  # where it stands
        bus[1], bus[2], bus[3] = delay, delay - now, float(self.echo_glide)
        for j, want in ((4, state[1]), (7, state[3]), (10, state[2])):
            now = bus[j] - bus[j + 1] * bus[j + 2]
            bus[j], bus[j + 1], bus[j + 2] = want, (want - now) / self._ramp_len, self._ramp_len
        self.echo_on = self.active = True

    # -- the block (audio thread) ---------------------------------------------------
    def block(self, track: Track, frames: int, chan_out: np.ndarray | None) -> None:
        """Render through the FX: every play head into its strips (the Mixer's
        render into per-strip rows), each strip through its DJ filter, the strips
        into the master bus (and the strips' meters and outputs), the echo bus,
        the master's filter on the bus."""
        rows = filtered = 0
        for t in (track, *(h.track for h in self._fading if h.left)):
            if t is not None:
                m = t.channels.shape[0]
                rows = max(rows, m)
                if not t.is_mix:
                    filtered = max(filtered, m)
        kern = self._kern
        sums = self._strip_sum
        kern.zero(sums[:rows, :, :frames])
        if self.pre_taps:
            kern.zero(self.pre_sum[:rows, :, :frames])
        self._render(track, frames, self._mix[:, :frames], sums, self if self.pre_taps else None)
        kern.filter(sums, filtered, frames, *self._fparams, self._fstate, self.table)
        kern.mixdown(sums, rows, frames, self._mix, self._metered, chan_out)
        if self.echo_on:
            kern.echo(
                sums,
                self.pre_sum,
                filtered,
                frames,
                self._sends,
                self._echo_bus,
                self._echo_line,
                self._echo_fstate,
                self.table,
                self._mix,
            )
        if self.reverb_on:
            kern.reverb(
                sums,
                filtered,
                frames,
                self._rsends,
                self._rbus,
                self._rlens,
                self._rlines,
                self._rstate,
                self._mix,
            )
        kern.filter(self._mix3, 1, frames, *self._mfparams, self._mfstate, self.table)
        self._moved_on(frames)

    def tail(self, frames: int) -> None:
        """A block with no play head sounding (paused, stopped, past the end, no
        track) while the echo or the reverb rings out: nothing enters them, their
        returns go through the master's filter into the master bus (the Mixer then
        applies the master gain and meters it). The tails are on the master only."""
        kern = self._kern
        kern.zero(self._mix)
        # Every strip's filter and send ramp moves on, as in any block.
        kern.filter(self._strip_sum, 0, frames, *self._fparams, self._fstate, self.table)
        if self.echo_on:
            kern.echo(
                self._strip_sum,
                self.pre_sum,
                0,
                frames,
                self._sends,
                self._echo_bus,
                self._echo_line,
                self._echo_fstate,
                self.table,
                self._mix,
            )
        if self.reverb_on:
            kern.reverb(
                self._strip_sum,
                0,
                frames,
                self._rsends,
                self._rbus,
                self._rlens,
                self._rlines,
                self._rstate,
                self._mix,
            )
        kern.filter(self._mix3, 1, frames, *self._mfparams, self._mfstate, self.table)
        self._moved_on(frames, tail=True)

    def _moved_on(self, frames: int, *, tail: bool = False) -> None:
        """After an FX block: glides counted down; a bus stops once nothing can
        send to it (no send open, or a ``tail`` block: no head sounds, until the
        next Play) and it has been quiet long enough (the echo: longer than its
        delay; the reverb: see ``_reverb_silent``); the plain path comes back when
        no filter is engaged and both buses have stopped."""
        self._filter_frames = max(self._filter_frames - frames, 0)
        self._send_frames = max(self._send_frames - frames, 0)
        self._rsend_frames = max(self._rsend_frames - frames, 0)
        if self.echo_on and (tail or not self._sending) and not self._send_frames:
            if self._silent() and not self._echo_bus[3]:
                self.echo_on = False
                self._echo_fstate.fill(0.0)
        if self.reverb_on and (tail or not self._rsending) and not self._rsend_frames:
            if self._reverb_silent():
                self.reverb_on = False
                self._rstate[0, 20:22] = 0.0
        if (
            not self._filter_frames
            and not self._filtered
            and not self.echo_on
            and not self.reverb_on
        ):
            # Every knob is back at 0 and the buses are silent: the plain path from the
            # next block on, with clean filter states for the next time.
            self.active = False
            self._fstate.fill(0.0)
            self._mfstate.fill(0.0)
