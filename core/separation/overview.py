"""A track's overview: each channel's peak level in bins along the whole track,
computed as the separation writes the channels and kept in the cache entry.

The browser mixer draws it (``docs/web.md``, "The overview"). :func:`channel_peaks`
is the definition: the track is cut into ``min(bins, frames)`` stretches of
``ceil(frames / bins)`` frames and each bin is the largest absolute sample of
either side in its stretch, as an integer 0..255 (255 is full scale or over;
non-finite samples count as full scale).

:class:`PeakAccumulator` computes the same peaks from the samples as they are
written, in pieces of any size in any order (a bin's peak is a maximum, so the
pieces' maxima combine exactly, a bin cut by a piece's edge from both sides).
Both writers of an entry (:mod:`.writer`, :mod:`.chunk_writer`) fold what they
write into one and store its peaks as :data:`OVERVIEW_FILE` (``overview.npy``,
uint8, shape ``(n_channels, bins)``) beside the channels before the entry is
sealed, so its checksums cover it like every other file.

:func:`stored_peaks` reads them back for a track whose channels are an entry's
memory map; it returns None (and says why in one debug line) for an entry
without the file (older than it), a file that does not match its checksum, its
shape or its type, or channels that are not an entry's: the caller then computes
them with :func:`channel_peaks`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zlib
from pathlib import Path

import numpy as np

from .partial import PARTIAL_PREFIX

__all__ = ["BINS", "OVERVIEW_FILE", "PeakAccumulator", "channel_peaks", "stored_peaks"]

log = logging.getLogger(__name__)

BINS = 2048  # about one bin per device pixel of a wide screen
OVERVIEW_FILE = "overview.npy"
_BLOCK_FRAMES = 1 << 18  # frames read at a time: 2 MiB of a stereo channel


def bin_layout(frames: int, bins: int = BINS) -> tuple[int, int]:
    """``(step, count)``: frames per bin and the number of bins of a track of
    ``frames`` frames cut into at most ``bins`` bins (``(1, 0)`` for no frames)."""
    if frames <= 0:
        return 1, 0
    step = math.ceil(frames / bins)
    return step, math.ceil(frames / step)


def _sample_peaks(part: np.ndarray) -> np.ndarray:
    """Per frame of ``part`` (..., sides, frames), the largest |sample| of either
    side, non-finite as 1.0."""
    peak = np.abs(np.asarray(part)).max(axis=-2)
    peak[~np.isfinite(peak)] = 1.0
    return peak


def _bin_peaks(part: np.ndarray, edges: list[int]) -> np.ndarray:
    """Per stretch of ``part`` (..., sides, frames) from each of ``edges``, the
    largest |sample| of either side, non-finite as 1.0: :func:`_sample_peaks`'
    maxima, from each stretch's largest and smallest sample (no array of the
    |samples| made: 10 -> 2.4 ms for a 15 s chunk of four stereo stems)."""
    part = np.asarray(part)
    high = np.maximum.reduceat(part, edges, axis=-1)
    low = np.minimum.reduceat(part, edges, axis=-1)
    np.negative(low, out=low)
    np.maximum(high, low, out=high)  # a NaN stays NaN
    peak = high.max(axis=-2)
    peak[~np.isfinite(peak)] = 1.0
    return peak


def _to_levels(peaks: np.ndarray) -> np.ndarray:
    return np.round(np.clip(peaks, 0.0, 1.0) * 255.0).astype(np.uint8)


def channel_peaks(channels: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Peak per bin of every channel of ``channels`` (n, sides, frames), as uint8.

    The track is cut into ``min(bins, frames)`` stretches of ``ceil(frames / bins)``
    frames (the last one shorter, the count the number needed), so a bin never
    mixes two points of the track far apart. Non-finite samples count as full scale.
    The channels are read block by block: a one-hour memory map is never copied whole.
    """
    n, _, frames = channels.shape
    if frames == 0 or n == 0:
        return np.zeros((n, 0), dtype=np.uint8)
    step, count = bin_layout(frames, bins)
    out = np.zeros((n, count), dtype=np.float32)
    block = max(step, _BLOCK_FRAMES // step * step)  # whole bins per block
    for c in range(n):
        for start in range(0, frames, block):
            peak = _sample_peaks(channels[c, :, start : start + block])
            whole = len(peak) // step * step
            first = start // step
            if whole:
                out[c, first : first + whole // step] = peak[:whole].reshape(-1, step).max(axis=1)
            if whole < len(peak):
                out[c, first + whole // step] = peak[whole:].max()
    return _to_levels(out)


class PeakAccumulator:
    """:func:`channel_peaks` of ``n`` channels of ``frames`` frames, from pieces.

    Fold each piece of samples in with :meth:`add` (every channel at once, as a
    chunk writer has them) or :meth:`add_channel` (one whole channel); once every
    sample has been folded, :attr:`peaks` equals :func:`channel_peaks` of the
    channels bit for bit, whatever the pieces' order and edges. Samples never
    folded count as silence.
    """

    def __init__(self, n: int, frames: int, bins: int = BINS) -> None:
        self.n = int(n)
        self.frames = int(frames)
        self.step, self.count = bin_layout(self.frames, bins)
        self._max = np.zeros((self.n, self.count), dtype=np.float32)

    def add(self, start: int, samples: np.ndarray) -> None:
        """Fold in frames ``[start, start + m)`` of every channel: ``samples`` has
        shape ``(n, sides, m)``. Read :data:`_BLOCK_FRAMES` frames at a time."""
        self._fold(slice(None), start, samples)

    def add_channel(self, index: int, audio: np.ndarray) -> None:
        """Fold in the whole of channel ``index``: ``audio`` has shape ``(sides, frames)``."""
        self._fold(slice(index, index + 1), 0, audio[np.newaxis])

    def _fold(self, rows: slice, start: int, samples: np.ndarray) -> None:
        samples = np.asarray(samples)  # a view (a memory map is read block by block below)
        length = int(samples.shape[-1])
        if length == 0:
            return
        if start < 0 or start + length > self.frames:
            raise ValueError(f"frames {start}:{start + length} are outside 0:{self.frames}")
        step = self.step
        for offset in range(0, length, _BLOCK_FRAMES):
            a = start + offset
            b = min(start + length, a + _BLOCK_FRAMES)
            first, last = a // step, (b - 1) // step
            edges = [0, *(k * step - a for k in range(first + 1, last + 1))]
            part = _bin_peaks(samples[..., offset : offset + (b - a)], edges)
            target = self._max[rows, first : last + 1]
            np.maximum(target, part, out=target)

    @property
    def peaks(self) -> np.ndarray:
        """The peaks folded so far, uint8, shape ``(n, count)``."""
        return _to_levels(self._max)

    def save(self, folder: Path) -> None:
        """Write :attr:`peaks` as ``folder``/:data:`OVERVIEW_FILE`."""
        np.save(folder / OVERVIEW_FILE, self.peaks)


def entry_folder(channels: np.ndarray) -> Path | None:
    """The cache entry whose ``channels.f32`` ``channels`` maps, or None: a partial
    entry's map (``.partial-<key>``) stands for the entry it becomes (``<key>``)."""
    filename = getattr(channels, "filename", None)
    if not isinstance(channels, np.memmap) or not filename:
        return None
    path = Path(filename)
    if path.name != "channels.f32":
        return None
    folder = path.parent
    if folder.name.startswith(PARTIAL_PREFIX):
        folder = folder.parent / folder.name[len(PARTIAL_PREFIX) :]
    return folder


def stored_peaks(channels: np.ndarray, bins: int = BINS) -> np.ndarray | None:
    """The peaks stored in the cache entry ``channels`` (a memory map of an entry's
    channels) belongs to, checked against the entry's ``meta.json`` (the file's size
    and checksums, the channels' shape) and against ``bins``; None when there are
    none to trust (the caller computes them): said in one debug line."""
    folder = entry_folder(channels)
    if folder is None:
        return None
    try:
        with (folder / "meta.json").open(encoding="utf-8") as f:
            meta = json.load(f)
        info = meta["files"].get(OVERVIEW_FILE)
        if info is None:
            log.debug("cache entry %s: no overview stored; computing it", folder.name[:12])
            return None
        if [int(s) for s in meta["shape"]] != list(channels.shape):
            raise ValueError(f"the entry's shape {meta['shape']} is not {list(channels.shape)}")
        data = (folder / OVERVIEW_FILE).read_bytes()
        block = int(info["block"])
        crc = [zlib.crc32(data[i : i + block]) for i in range(0, len(data), block)]
        if len(data) != int(info["size"]) or crc != list(info["crc"]):
            raise ValueError("its checksum does not match")
        peaks = np.load(io.BytesIO(data), allow_pickle=False)
        want = (channels.shape[0], bin_layout(int(channels.shape[2]), bins)[1])
        if peaks.dtype != np.uint8 or peaks.shape != want:
            raise ValueError(f"{peaks.dtype} {peaks.shape} is not uint8 {want}")
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("cache entry %s: overview unusable (%s); computing it", folder.name[:12], exc)
        return None
    return np.asarray(peaks)
