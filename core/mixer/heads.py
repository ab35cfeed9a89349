"""The mixer's scalar ramps and fading play heads (audio-thread state of :mod:`.engine`).

:class:`Ramp` is a per-sample linear ramp of one gain (the master, the
transport, the main play head's fade-in); :class:`FadingHead` is a play head
that a jump left behind, reading its own track while it fades to silence. Both
are plain state that :class:`~stemdeck.core.mixer.engine.Mixer` drives in its
audio thread; nothing here is called from a control thread.
"""

from __future__ import annotations

import numpy as np

from .commands import Track

__all__ = ["FadingHead", "Ramp"]


class Ramp:
    """Per-sample linear ramp of one scalar gain (master, transport, head fade-in).

    Parameters
    ----------
    initial : float
        The gain it stands at.
    """

    def __init__(self, initial: float) -> None:
        self.current = initial
        self.target = initial
        self.step = 0.0
        self.left = 0

    def aim(self, target: float, length: int) -> None:
        """Glide to ``target`` over ``length`` samples (nothing if already there)."""
        if target == self.target and self.left == 0:
            return
        self.target = target
        self.left = length
        self.step = (target - self.current) / length

    def jump(self, value: float) -> None:
        """Stand at ``value`` at once, with no ramp."""
        self.current = self.target = value
        self.left = 0
        self.step = 0.0

    def curve(self, frames: int, out: np.ndarray, ramp: np.ndarray) -> bool:
        """Write the gain of ``frames`` samples into ``out``; False if constant.

        ``ramp`` holds 1, 2, 3... (float64, at least ``frames`` long): the
        ramp's sample ``t`` is ``current + step * ramp[t]``.
        """
        left = self.left
        if left == 0:
            out[:frames] = self.current
            return False
        n = min(left, frames)
        np.multiply(ramp[:n], self.step, out=out[:n])
        out[:n] += self.current
        if n < frames:
            out[n:frames] = self.target
        self.left = left - n
        self.current = self.target if left == n else self.current + self.step * n
        return True


class FadingHead:
    """A fading play head: reads ``track`` from ``position`` while fading to silence.

    Free when ``left`` is 0. ``gain`` falls by ``step`` a sample; ``offset`` is
    where in the current block it starts (the sample of the jump that left it).
    ``exact``: it reads the track frame for frame (the main head's step was 1 and
    its phase 0 when it was left); otherwise ``state`` is its own read head between
    rates (the kernel's ``read`` state: position, phase, step and a glide that
    has ended), at the step the main head had.
    """

    __slots__ = ("exact", "gain", "left", "offset", "position", "state", "step", "track")

    def __init__(self) -> None:
        self.track: Track | None = None
        self.position = 0
        self.gain = 0.0
        self.step = 0.0
        self.left = 0
        self.offset = 0
        self.exact = True
        self.state = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
