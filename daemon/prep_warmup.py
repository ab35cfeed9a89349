"""Imported once by the fork server ``stemdeck prep`` starts (``daemon/prep.py``):
a two-second separation, so that every LocalCluster worker forked from the server
starts with the first-call costs already paid (FFT plans, the stems model, numpy's
and scipy's lazy set-up), as a long-lived process has them after its first track.

Importing this module runs the separation; nothing else imports it.
"""

from __future__ import annotations

import numpy as np

from stemdeck.core.separation.separate import separate

__all__: list[str] = []


def _warm_up(sr: int = 44100, seconds: float = 2.0) -> None:
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(0)
    tone = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 880 * t)
    y = np.stack([tone, tone]) + 0.01 * rng.standard_normal((2, t.size))
    separate(y.astype(np.float32), sr, mode="stems")


try:
    _warm_up()
except Exception:  # a cold worker is slower, not wrong: never stop the fork server
    pass
