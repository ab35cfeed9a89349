"""Read memory-mapped audio ahead of the play head, so the audio callback never
waits for the disk (page faults are I/O too).

``madvise(MADV_WILLNEED)`` starts the kernel's reads and returns at once; the
prefetcher asks for the next seconds after the play head and after the loop
start, a few times a second, from the daemon's main loop (never the audio
thread). Arrays in memory need nothing.
"""

from __future__ import annotations

import mmap

import numpy as np

from stemdeck.core.audiofile.scratch import mapping_of
from stemdeck.core.mixer.engine import Mixer

__all__ = ["Prefetcher", "mapping_of", "will_need"]


def will_need(channels: np.ndarray, start: int, end: int) -> int:
    """Ask the kernel for samples ``start:end`` of every row of a memory-mapped
    C-contiguous (n, audio_channels, samples) float32 array. Returns the number of
    rows advised (0 for arrays in memory)."""
    found = mapping_of(channels)
    if found is None or not channels.flags.c_contiguous:
        return 0
    mm, base = found
    length = channels.shape[2]
    start, end = max(0, start), min(end, length)
    if end <= start:
        return 0
    page = mmap.PAGESIZE
    rows = channels.shape[0] * channels.shape[1]
    for row in range(rows):
        first = base + (row * length + start) * 4
        aligned = first - first % page
        try:
            mm.madvise(mmap.MADV_WILLNEED, aligned, (end - start) * 4 + (first - aligned))
        except (OSError, ValueError):
            return row
    return rows


class Prefetcher:
    """Keeps the next ``seconds`` after the play head and the loop start in memory."""

    def __init__(self, engine: Mixer, *, seconds: float = 8.0) -> None:
        self.engine = engine
        self.seconds = seconds

    def tick(self) -> None:
        engine = self.engine
        track = engine.track
        if track is None:
            return
        ahead = int(self.seconds * track.sr)  # positions count the track's frames
        starts = [engine.position]
        loop = engine.loop
        if loop is not None:
            starts.append(loop[0])
        for start in starts:
            will_need(track.channels, start, start + ahead)
