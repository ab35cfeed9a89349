"""The track overview the browser mixer draws: each channel's peak level in bins
along the whole track, so the page can draw the waveform with every stem in its
colour at the current gains (``docs/web.md``, "The overview").

:func:`channel_peaks` reads a track's channels once, block by block (a one-hour
track's memory map is never copied whole), into ``bins`` peaks per channel, each
the largest absolute sample of either side in its stretch of the track, as
integers 0..255 (255 is full scale or over). :class:`Overviews` keeps the last
track's result, so every page that asks for the same track gets it without a
second read, and reads one track at a time whatever the number of requests.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from stemdeck.core.mixer.commands import Track

__all__ = ["BINS", "Overview", "Overviews", "channel_peaks"]

BINS = 2048  # about one bin per device pixel of a wide screen
_BLOCK_FRAMES = 1 << 18  # frames read at a time: 2 MiB of a stereo channel


@dataclass(frozen=True)
class Overview:
    """One track's overview: its channels' names, its length in seconds, and per
    channel ``bins`` peaks 0..255 (a list of lists, ready for JSON)."""

    names: tuple[str, ...]
    seconds: float
    peaks: list[list[int]]

    def as_json(self) -> dict[str, object]:
        return {
            "names": list(self.names),
            "seconds": self.seconds,
            "bins": len(self.peaks[0]) if self.peaks else 0,
            "peaks": self.peaks,
        }


def channel_peaks(channels: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Peak per bin of every channel of ``channels`` (n, sides, frames), as uint8.

    The track is cut into ``min(bins, frames)`` stretches of ``ceil(frames / bins)``
    frames (the last one shorter, the count the number needed), so a bin never
    mixes two points of the track far apart. Non-finite samples count as full scale.
    """
    n, _, frames = channels.shape
    if frames == 0 or n == 0:
        return np.zeros((n, 0), dtype=np.uint8)
    step = math.ceil(frames / bins)
    count = math.ceil(frames / step)
    out = np.zeros((n, count), dtype=np.float32)
    block = max(step, _BLOCK_FRAMES // step * step)  # whole bins per block
    for c in range(n):
        for start in range(0, frames, block):
            part = np.abs(np.asarray(channels[c, :, start : start + block]))
            peak = part.max(axis=0)
            peak[~np.isfinite(peak)] = 1.0
            whole = len(peak) // step * step
            first = start // step
            if whole:
                out[c, first : first + whole // step] = peak[:whole].reshape(-1, step).max(axis=1)
            if whole < len(peak):
                out[c, first + whole // step] = peak[whole:].max()
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


class Overviews:
    """The overview of the playing track, read once per track (any thread)."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self._lock = threading.Lock()  # one read at a time; the memo below
        self._track: Track | None = None
        self._overview: Overview | None = None

    def get(self, track: Track) -> Overview:
        """``track``'s overview: the one kept when it is the last track asked for,
        else read now (blocking: call it off the web loop)."""
        with self._lock:
            if self._track is track and self._overview is not None:
                return self._overview
            peaks = channel_peaks(track.channels, self.bins)
            overview = Overview(
                tuple(track.names), track.length / track.sr, [row.tolist() for row in peaks]
            )
            self._track, self._overview = track, overview
            return overview
