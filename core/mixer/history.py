"""Keylock's strip history: a strip control heard at once through the pitch shifter.

With keylock on (or a pitch shift) the master goes through one pitch shifter
(:mod:`.keylock`), which delays what it shifts by a frame and half a hop (24 ms at 48
kHz). :class:`StripHistory` keeps each strip's last inputs before and after its gain,
so an unquantized change of a strip's gain is applied to what the shifter holds and
has not played yet (:meth:`.keylock.Shifter.retro`, ``_kernel.c``'s ``keep``,
``retro_delta`` and ``retro``): heard after the mixer's ramp, as with keylock off
(docs/keylock.md, "Strip controls heard at once"). The mixer's command side decides
what goes this way (``MixerControl._retarget``, ``_settle_history``).
"""

from __future__ import annotations

import numpy as np

from . import kernel
from .keylock import Shifter

__all__ = ["StripHistory"]


class StripHistory:
    """Each strip's last inputs to the master before its gain and after, so a strip
    gain changed with keylock on is heard at once (:meth:`Shifter.retro`), not the
    shifter's latency later (audio thread; every buffer made in :meth:`prepare`).

    The mixer writes the rings in its steady blocks (one play head at unity
    transport, the master's gain standing, no effects) while the master's shifter
    runs (:meth:`write`); any other block clears what they hold. Once they hold
    :attr:`Shifter.history` samples of the track playing, an unquantized change of
    strip gains (:meth:`change`, then :meth:`apply`) is applied to those samples
    too: what each changed strip sent is taken out of the shifter's inputs and it
    is put back at its new gain (``_kernel.c``'s ``retro_delta``), and the shifter
    changes what it has made of them and not played yet. At 64-frame blocks a
    change waits up to three blocks for one where the shifter does no frame work
    (:meth:`due`); the strip plays at its gain until then, and a change that can
    no longer be applied so ramps the ordinary way. A quantized change keeps its
    place in the music (it goes through the shifter with it).
    """

    def __init__(self) -> None:
        self.length = 0
        self.have = 0  # samples of the current track's steady blocks in the rings
        self.track: object | None = None  # the track (view) they hold
        self.rows = 0  # its strips
        self._at = 0  # the next sample's place in the rings (their oldest)
        # (samples, strips, sides), time-major (``_kernel.c``'s ``keep``).
        self._pre = np.zeros((0, 0, 2), np.float32)
        self._post = np.zeros((0, 0, 2), np.float32)
        self._delta = np.zeros((2, 0), np.float32)
        self._want = np.zeros((0, 2))
        self._changed = np.zeros((0, 2))
        #: The changes waiting for :meth:`apply`: (strip, side) -> the gain wanted
        #: (the strip plays at its gain until then).
        self.changes: dict[tuple[int, int], float] = {}
        self.waited = 0  # samples it has waited for a quiet block (:meth:`due`)
        self.clock = 0  # samples written since prepared
        # Each strip's last change made the ordinary way (a ramp, a quantized action),
        # on :attr:`clock`: until it has left the rings the strip changes so again.
        self._ordinary = np.zeros(0)

    @property
    def pending(self) -> bool:
        """Some change waits for :meth:`apply`."""
        return bool(self.changes)

    def prepare(self, strips: int, length: int) -> None:
        """Rings of ``length`` samples for ``strips`` strips (0: none, never ready): a
        track of more strips is not kept (:meth:`write`)."""
        if self._pre.shape != (length, strips, 2):
            self._pre = np.zeros((length, strips, 2), np.float32)
            self._post = np.zeros((length, strips, 2), np.float32)
            self._delta = np.zeros((2, length), np.float32)
            self._want = np.zeros((strips, 2))
            self._changed = np.zeros((strips, 2))
            self._ordinary = np.zeros(strips)
        self.length = length if strips else 0
        self._at = 0
        self.clock = 0
        self._ordinary.fill(-float(length))
        self.drop()
        self.clear()

    def clear(self) -> None:
        """What the rings hold no longer leads to the next block (scalars only: it
        is called by every block that does not write them)."""
        self.have = 0
        self.track = None

    def write(
        self, track: object, src: np.ndarray, at: int, prod: np.ndarray, rows: int, frames: int
    ) -> None:
        """A steady block of ``track``: each of its ``rows`` strips' ``frames`` samples
        before its gain (``src[:rows, :, at:]``) and after (``prod[1 : rows + 1]``, the
        mixer's strip rows; ``_kernel.c``'s ``keep``)."""
        length = self.length
        if rows <= 0 or rows > self._pre.shape[1] or frames > length or src.shape[1] > 2:
            self.clear()
            return
        if track is not self.track or rows != self.rows:
            self.have = 0
            self.track = track
            self.rows = rows
        kern = kernel.COMPILED
        if kern is None:
            self.clear()
            return
        kern.keep(src, at, prod, rows, frames, self._pre, self._post, self._at)
        self._at = (self._at + frames) % length
        self.have = min(length, self.have + frames)
        self.clock += frames

    def ordinary(self, strip: int) -> None:
        """Strip ``strip`` changed the ordinary way now (a ramp in the mix before the
        shifter: a quantized action, or a change the shifter could not take at once)."""
        if strip < len(self._ordinary):
            self._ordinary[strip] = self.clock

    def clear_of(self, strip: int) -> bool:
        """Strip ``strip``'s last ordinary change has left the rings: a change now
        may rewrite all they hold of it. Else it goes the ordinary way too: rewriting
        the samples before a quantized action at the new gain would bring the action
        forward, heard before its bar line (the shifter holds the music it falls on)."""
        return strip < len(self._ordinary) and self.clock - self._ordinary[strip] >= self.length

    def ready(self, track: object) -> bool:
        """The rings hold a whole :attr:`Shifter.history` of ``track`` playing."""
        return self.length > 0 and self.have >= self.length and track is self.track

    def change(self, strip: int, side: int, want: float) -> None:
        """Strip ``strip``'s ``side`` wants gain ``want``, to be applied at once
        through the shifter (:meth:`apply`; its gain then jumps there: the shifter's
        overlap-add and the ramp of what it has made take the step)."""
        self.changes[strip, side] = want

    def forget(self, strip: int, side: int) -> None:
        """A later change of strip ``strip``'s ``side`` goes the ordinary way (a
        quantized one, or one the shifter cannot take at once): the waiting one is
        gone."""
        self.changes.pop((strip, side), None)
        if not self.changes:
            self.waited = 0

    def due(self, shifter: Shifter, frames: int, block: int) -> bool:
        """The change waiting is to be applied before the next block of ``frames``:
        a block where the shifter does none of a frame's work (:meth:`Shifter.quiet`:
        where the shifter's stages and :meth:`Shifter.retro` met in a 64-frame block
        at 64 strips, the block took 34 % of its time, against 24 % apart), or once
        it has waited a hop; at once with blocks of half a hop or more (128 frames and
        more at 48 kHz), which have no quiet one. ``frames`` is the block's first
        piece (a host's block larger than the mixer's is made in pieces), ``block``
        the whole. Otherwise it waits, counting the host's blocks' samples: at most
        three 64-frame blocks (4 ms at 48 kHz), a hop at most in any blocks."""
        hop = shifter.hop
        if block >= hop // 2 or self.waited >= hop or shifter.quiet(frames):
            return True
        self.waited += block
        return False

    def drop(self) -> None:
        """Forget the changes waiting (the mixer ramps them the ordinary way: the
        shifter or the history no longer allow them)."""
        self.changes.clear()
        self.waited = 0

    def apply(self, gain: float, shifter: Shifter, ramp: int) -> None:
        """The changes waiting (their gains set by the mixer from this block on), at
        master gain ``gain``, into ``shifter``'s last inputs and what it has made of
        them, coming in over ``ramp`` samples."""
        kern = kernel.COMPILED
        want, changed = self._want, self._changed
        try:
            if kern is not None:
                for (strip, side), gain_wanted in self.changes.items():
                    want[strip, side] = gain_wanted
                    changed[strip, side] = 1.0
                kern.retro_delta(self._pre, self._post, self._at, want, changed, gain, self._delta)
                shifter.retro(self._delta, ramp)
        finally:  # whatever happens, no change is left to be applied again
            for strip, side in self.changes:
                changed[strip, side] = 0.0
            self.drop()
