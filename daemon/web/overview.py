"""The track overview the browser mixer draws: each channel's peak level in bins
along the whole track, so the page can draw the waveform with every stem in its
colour at the current gains (``docs/web.md``, "The overview").

The peaks are :func:`stemdeck.core.separation.overview.channel_peaks`: ``bins`` per
channel, each the largest absolute sample of either side in its stretch of the
track, as integers 0..255. A track from the cache has them in its entry, computed
as the separation wrote the channels
(:func:`~stemdeck.core.separation.overview.stored_peaks`): no pass over the
channels. Any other track (stems from a file, a separation not cached, an entry
older than the file or with a damaged one) has them read from its channels once.
:class:`Overviews` keeps the last track's result, so every page that asks for the
same track gets it without a second read, and reads one track at a time whatever
the number of requests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from stemdeck.core.mixer.commands import Track
from stemdeck.core.separation.overview import BINS, channel_peaks, stored_peaks

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
    """The overview of the playing track, read once per track (any thread)."""

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self._lock = threading.Lock()  # one read at a time; the memo below
        self._track: Track | None = None
        self._overview: Overview | None = None

    def get(self, track: Track) -> Overview:
        """``track``'s overview: the one kept when it is the last track asked for,
        else its cache entry's, else read from its channels now (blocking: call it
        off the web loop)."""
        with self._lock:
            if self._track is track and self._overview is not None:
                return self._overview
            peaks = stored_peaks(track.channels, self.bins)
            if peaks is None:
                peaks = channel_peaks(track.channels, self.bins)
            overview = Overview(
                tuple(track.names), track.length / track.sr, [row.tolist() for row in peaks]
            )
            self._track, self._overview = track, overview
            return overview
