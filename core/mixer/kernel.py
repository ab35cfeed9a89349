"""The mixer's block arithmetic: the compiled kernel, or its numpy reference.

:class:`~stemdeck.core.mixer.engine.Mixer` does the arithmetic of a block
through one :class:`Kernel` chosen when it is prepared, so the engine has no
``if compiled`` in its block:

- :data:`COMPILED` is the C module ``core/mixer/_kernel.c`` itself (None when it
  was not built, or is a stale build). Each call keeps the GIL from start to
  end. It is used as it is, not wrapped: a wrapper class would put a Python call
  or an attribute lookup between the engine and every C call, in every block.
  It has one more call, ``block``, the common block in one call
  (:class:`CompiledKernel`).
- :class:`~.numpy_kernel.NumpyKernel` (``core/mixer/numpy_kernel.py``) computes the
  same float32 operations in the same order with numpy, on scratch buffers of its
  own; ``tests/core/mixer/test_kernel.py`` checks the two give the same samples.
  It has no ``block``: the engine's numpy path takes every block the general
  way, which is what the compiled shortcut is compared against.

``read`` is the read head between rates: a track read at a fractional position
that steps by the track's rate over the device's (times the vinyl rate), each
frame a windowed sinc (:data:`READ_TABLE`) over :data:`READ_TAPS` frames of the
track, its cutoff lowered when the head reads faster than the output. The
engine calls it only when the step is not exactly 1 (or the phase not 0): at
ratio 1 the track is read as it is, sample for sample.

The interpolator, measured by ``tests/core/mixer/test_readhead.py``: a Kaiser
window (beta :data:`READ_BETA`) over 32 taps, cutoff at :data:`READ_CUT` of the
lower rate's Nyquist. Measured: passband ripple 0.0012 dB (within 0.0008 dB
of unity) up to 0.4 of the lower rate; stop band at least 83 dB down from 0.6
of the output's rate when the head reads faster (what folds back from 0.5..0.6
lands above 0.4: nothing aliases into the passband); a sum of sines up to 0.4
comes out within 86.5-87.5 dB SNR of the ideal band-limited signal, and of
``scipy.signal.resample_poly`` with a long filter alike.

The FX calls (issue #25) are here too: ``filter`` (the DJ filter of strips or of
the master bus), ``mixdown`` (the FX path's strips into the bus), ``echo`` (the
echo bus) and ``reverb`` (the reverb bus: a Freeverb behind a low-cut), both
sample by sample; their numpy references (``numpy_kernel.py``) loop in Python
floats, fine as references, too slow for an FX-heavy real-time block.

One call is not the mixer's: ``fold``, the beat analysis's fold of an onset envelope
by phase (``core/beats/analysis.py``, whose numpy ``_fold_reference`` it matches bit
for bit), which the tempo search makes 642 times a track.

Every call's arguments and meaning are documented in ``core/mixer/_kernel.c``.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

__all__ = [
    "COMPILED",
    "ECHO_BUS_FIELDS",
    "KERNEL_ABI",
    "KERNEL_BUILT",
    "READ_BETA",
    "READ_CUT",
    "READ_HALF",
    "READ_MAX_GLIDE",
    "READ_MAX_STEP",
    "READ_REACH",
    "READ_RES",
    "READ_TABLE",
    "READ_TAPS",
    "REVERB_BUS_FIELDS",
    "REVERB_COMBS",
    "REVERB_QUIET",
    "REVERB_STAGES",
    "REVERB_STATE",
    "CompiledKernel",
    "Kernel",
    "glide_at",
    "read_table",
]

KERNEL_ABI = 11  # the _kernel.c this package calls (its KERNEL_ABI)


class Kernel(Protocol):
    """The calls every kernel has (``core/mixer/_kernel.c`` documents each)."""

    def ramp_curves(
        self,
        cur: np.ndarray,
        step: np.ndarray,
        left: np.ndarray,
        ramp: np.ndarray,
        curves: np.ndarray,
        frames: int,
        rows: int,
        /,
    ) -> None: ...

    def segment(
        self,
        src: np.ndarray,
        pos: int,
        count: int,
        curves: np.ndarray | None,
        row: np.ndarray | None,
        prod: np.ndarray,
        first: int,
        off: int,
        mix: np.ndarray,
        add: bool,
        co: np.ndarray | None,
        /,
    ) -> None: ...

    def finish(
        self,
        prod: np.ndarray,
        rows: int,
        frames: int,
        mix: np.ndarray,
        master: np.ndarray | None,
        gain: float,
        peak: np.ndarray,
        sumsq: np.ndarray,
        out: np.ndarray,
        co: np.ndarray | None,
        /,
    ) -> bool: ...

    def filter(
        self,
        x: np.ndarray,
        rows: int,
        frames: int,
        tgt: np.ndarray,
        step: np.ndarray,
        left: np.ndarray,
        rtgt: np.ndarray,
        rstep: np.ndarray,
        rleft: np.ndarray,
        state: np.ndarray,
        table: np.ndarray,
        /,
    ) -> None: ...

    def echo(
        self,
        x: np.ndarray,
        xpre: np.ndarray,
        rows: int,
        frames: int,
        sends: np.ndarray,
        bus: np.ndarray,
        line: np.ndarray,
        fstate: np.ndarray,
        table: np.ndarray,
        mix: np.ndarray,
        /,
    ) -> None: ...

    def reverb(
        self,
        x: np.ndarray,
        rows: int,
        frames: int,
        sends: np.ndarray,
        bus: np.ndarray,
        lens: np.ndarray,
        lines: np.ndarray,
        state: np.ndarray,
        mix: np.ndarray,
        /,
    ) -> None: ...

    def mixdown(
        self,
        x: np.ndarray,
        rows: int,
        frames: int,
        mix: np.ndarray,
        prod: np.ndarray,
        co: np.ndarray | None,
        /,
    ) -> None: ...

    def read(
        self,
        src: np.ndarray,
        state: np.ndarray,
        count: int,
        end: int,
        dst: np.ndarray,
        table: np.ndarray,
        /,
    ) -> int: ...

    def zero(self, a: np.ndarray, /) -> None: ...


class CompiledKernel(Kernel, Protocol):
    """The compiled kernel: the calls of :class:`Kernel`, the common block in one, and
    the beat analysis's fold."""

    def block(
        self,
        cur: np.ndarray,
        step: np.ndarray,
        left: np.ndarray,
        ramp: np.ndarray,
        curves: np.ndarray,
        curve_frames: int,
        rows: int,
        src: np.ndarray,
        pos: int,
        frames: int,
        is_mix: bool,
        prod: np.ndarray,
        mix: np.ndarray,
        master: np.ndarray | None,
        gain: float,
        peak: np.ndarray,
        sumsq: np.ndarray,
        out: np.ndarray,
        co: np.ndarray | None,
        /,
    ) -> bool: ...

    def shift(
        self,
        io: np.ndarray,
        frames: int,
        tables: np.ndarray,
        state: np.ndarray,
        ring_in: np.ndarray,
        ring_out: np.ndarray,
        work: np.ndarray,
        mix: np.ndarray | None,
        /,
    ) -> bool: ...

    def keep(
        self,
        src: np.ndarray,
        pos: int,
        prod: np.ndarray,
        rows: int,
        frames: int,
        pre: np.ndarray,
        post: np.ndarray,
        at: int,
        /,
    ) -> None: ...

    def retro(
        self,
        delta: np.ndarray,
        ramp: int,
        tables: np.ndarray,
        state: np.ndarray,
        ring_in: np.ndarray,
        ring_out: np.ndarray,
        work: np.ndarray,
        /,
    ) -> bool: ...

    def retro_delta(
        self,
        pre: np.ndarray,
        post: np.ndarray,
        at: int,
        want: np.ndarray,
        changed: np.ndarray,
        gain: float,
        delta: np.ndarray,
        /,
    ) -> bool: ...

    def fold(self, env: np.ndarray, period: float, out: np.ndarray, /) -> None:
        """The beat analysis's fold (``core/beats/analysis.py``), not a block's."""


# The read head's interpolator (``_kernel.c``'s READ_* constants: keep them equal).
READ_HALF = 16  # taps each side of the read position at cutoff READ_CUT
READ_TAPS = 2 * READ_HALF
READ_RES = 512  # table entries per unit of w (lerped between)
READ_CUT = 0.96  # the cutoff, as a share of the lower rate's Nyquist
READ_BETA = 8.0  # the Kaiser window's beta
READ_MAX_STEP = 32.0  # the fastest read: track frames per output frame
READ_MAX_GLIDE = 10**9  # the longest glide of the step, in frames (the C's read refuses more)
#: Track frames the read head's taps reach on either side of its position at a
#: step up to 1 (times the step above 1, where the cutoff is lowered).
READ_REACH = READ_HALF / READ_CUT


def read_table() -> np.ndarray:
    """The read head's kernel h(w) = sinc(w) * kaiser(w / READ_HALF) at
    w = i / READ_RES, i = 0 .. READ_HALF * READ_RES, and one 0 past the end
    (float64, READ_HALF * READ_RES + 2 entries)."""
    w = np.arange(READ_HALF * READ_RES + 2, dtype=np.float64) / READ_RES
    x = np.minimum(w / READ_HALF, 1.0)
    window = np.i0(READ_BETA * np.sqrt(1.0 - x * x)) / np.i0(READ_BETA)
    table = np.sinc(w) * window
    table[READ_HALF * READ_RES :] = 0.0
    return table


#: The read head's kernel table (:func:`read_table`), made once at import.
READ_TABLE = read_table()
READ_TABLE.flags.writeable = False


def _load() -> CompiledKernel | None:
    try:  # the block arithmetic in C, holding the GIL (core/mixer/_kernel.c)
        from . import _kernel
    except ImportError:  # built without a C compiler: the numpy reference path
        return None
    if getattr(_kernel, "ABI", None) != KERNEL_ABI:  # a stale build: scripts/setup rebuilds
        return None
    return _kernel


#: The compiled kernel (the C module), or None if it is not built or stale.
COMPILED: CompiledKernel | None = _load()
#: The compiled block arithmetic is there.
KERNEL_BUILT = COMPILED is not None


# The echo bus's scalars (``_kernel.c``'s ``echo``): the write position, the
# delay's glide (target, span, samples left: ``glide_at``), the ramps (target,
# step, samples left) of the feedback, return and filter knob, the samples it
# has been quiet, and the delay glide's length.
ECHO_BUS_FIELDS = 15


# The reverb bus's scalars (``_kernel.c``'s ``reverb``): the ramps (target, step,
# samples left) of the comb feedback, the return and the low-cut's g, the
# damping, the samples it has been quiet. Its state per side: twelve positions
# (eight combs, four allpasses), eight comb stores, the low-cut's (ic1, ic2).
REVERB_BUS_FIELDS = 11
REVERB_COMBS = 8
REVERB_STAGES = 12
REVERB_STATE = 22
REVERB_QUIET = 3.1622776601683795e-05  # -90 dBFS


def glide_at(tgt: float, span: float, left: float, length: float, t: int) -> float:
    """The echo delay's raised-cosine glide at sample ``t`` (``_kernel.c``'s ``glide_at``)."""
    rem = left - float(t + 1)
    if not rem > 0.0:
        return tgt
    q = rem / length
    return tgt - span * ((1.0 - math.cos(3.141592653589793 * q)) * 0.5)
