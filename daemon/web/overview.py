"""The track overview the browser mixer draws: each channel's peak level in bins
along the whole track, so the page can draw the waveform with every stem in its
colour at the current gains (``docs/web.md``, "The overview").

The peaks are :func:`stemdeck.core.separation.overview.channel_peaks`: ``bins`` per
channel, each the largest absolute sample of either side in its stretch of the
track, as integers 0..255. A track from the cache has them in its entry, computed
as the separation wrote the channels
(:func:`~stemdeck.core.separation.overview.stored_peaks`): no pass over the
channels. Any other track (stems from a file, a separation not cached, an entry
older than the file or with a damaged one) has them read from its channels once;
while its stems arrive chunk by chunk, each chunk once as it becomes ready.
:class:`Overviews` keeps the last track's result, so every page that asks for the
same track gets it without a second read, and reads one track at a time whatever
the number of requests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from stemdeck.core.mixer.commands import Track
from stemdeck.core.separation.overview import (
    BINS,
    PeakAccumulator,
    channel_peaks,
    stored_peaks,
)

__all__ = ["Overview", "Overviews"]


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


class Overviews:
    """The overview of the playing track, read once per track (any thread).

    A track whose stems arrive chunk by chunk (its ``ready`` flags) and whose entry
    has no overview yet has its peaks folded in chunk by chunk as the chunks become
    ready (each read once, :class:`~stemdeck.core.separation.overview.PeakAccumulator`):
    each request covers what is ready then, the chunks not yet in are flat, and once
    every chunk is in the overview is :func:`channel_peaks` of the channels exactly.
    """

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self._lock = threading.Lock()  # one read at a time; the memo below
        self._track: Track | None = None
        self._overview: Overview | None = None
        self._growing: PeakAccumulator | None = None  # the track's, while chunks arrive
        self._folded: set[int] = set()  # its chunks folded in

    def get(self, track: Track) -> Overview:
        """``track``'s overview: the one kept when it is the last track asked for (and
        complete), else its cache entry's, else read from its channels now (blocking:
        call it off the web loop)."""
        with self._lock:
            if self._track is track and self._overview is not None and self._growing is None:
                return self._overview
            if self._track is not track or self._growing is None:
                self._track, self._overview, self._growing = None, None, None
                peaks = stored_peaks(track.channels, self.bins)
                if peaks is None and track.ready is not None and track.chunk > 0:
                    n, _, frames = track.channels.shape
                    self._growing = PeakAccumulator(n, frames, self.bins)
                    self._folded = set()
                elif peaks is None:
                    peaks = channel_peaks(track.channels, self.bins)
                self._track = track
                if peaks is not None:
                    self._overview = self._make(track, peaks)
                    return self._overview
            growing = self._growing
            assert growing is not None and track.ready is not None
            ready = np.flatnonzero(track.ready)  # flags set by another thread: a snapshot
            if self._overview is None or len(ready) > len(self._folded):
                for i in ready.tolist():
                    if i not in self._folded:
                        start = i * track.chunk
                        growing.add(start, track.channels[:, :, start : start + track.chunk])
                        self._folded.add(i)
                self._overview = self._make(track, growing.peaks)
            overview = self._overview
            if len(self._folded) == len(track.ready):
                self._growing = None  # complete: kept as it is
            return overview

    @staticmethod
    def _make(track: Track, peaks: np.ndarray) -> Overview:
        return Overview(
            tuple(track.names), track.length / track.sr, [row.tolist() for row in peaks]
        )
