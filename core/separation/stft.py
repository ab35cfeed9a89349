"""Short-time Fourier transform with exact overlap-add inversion, float32.

Layout: a spectrogram has the librosa shape ``(..., bins, frames)`` but is stored
frames-contiguous (each frame's bins are adjacent in memory), which is what the
FFT produces and what the NMF and the masking walk through block by block.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from itertools import pairwise

import numpy as np

from ..errors import ParameterError
from .fft import irfft_rows, rfft_rows
from .presets import check_stft_params

__all__ = [
    "InverseSTFT",
    "frame_blocks",
    "istft",
    "n_frames",
    "spread_frames",
    "stft",
    "stft_frames",
]

_CHUNK_FRAMES = 256


def _window(n_fft: int) -> np.ndarray:
    # Periodic Hann: its overlap-added square is flat for every hop n_fft/r, r >= 2.
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def n_frames(length: int, n_fft: int, hop: int) -> int:
    """Number of frames ``stft`` makes for ``length`` samples."""
    # Pad n_fft/2 on both sides (frames centred on t * hop) and cover the end.
    return -(-length // hop) + 1


def stft(y: np.ndarray, *, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """Complex spectrogram of every channel.

    Parameters
    ----------
    y : np.ndarray, shape (channels, samples), float32
    n_fft : int
        Frame length and FFT size (Hann window).
    hop : int
        Frame advance; must divide ``n_fft``.

    Returns
    -------
    X : np.ndarray, shape (channels, 1 + n_fft // 2, frames), complex64
        Frame ``t`` is centred on sample ``t * hop``; memory is frames-contiguous.
    """
    check_stft_params(n_fft, hop)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[np.newaxis]
    channels, length = y.shape
    frames = n_frames(length, n_fft, hop)
    pad = n_fft // 2
    padded_len = (frames - 1) * hop + n_fft
    window = _window(n_fft)
    out = np.empty((channels, frames, n_fft // 2 + 1), dtype=np.complex64)
    padded = np.zeros(padded_len, dtype=np.float32)
    for c in range(channels):
        padded[pad : pad + length] = y[c]
        framed = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
        for s in range(0, frames, _CHUNK_FRAMES):
            block = framed[s : s + _CHUNK_FRAMES] * window
            rfft_rows(block, out[c, s : s + _CHUNK_FRAMES])
        padded[pad : pad + length] = 0.0
    return out.transpose(0, 2, 1)


def spread_frames(frames: int, count: int) -> np.ndarray:
    """At most ``count`` frame indices spread evenly over ``frames`` (all of them when
    there are no more, or ``count`` is 0), ascending and distinct."""
    if count <= 0 or count >= frames:
        return np.arange(frames)
    return np.unique(np.linspace(0, frames - 1, count).round().astype(np.intp))


def stft_frames(
    y: np.ndarray, frames: np.ndarray, *, n_fft: int = 2048, hop: int = 512
) -> np.ndarray:
    """Frames ``frames`` of :func:`stft` alone, the same values, without the others.

    Parameters
    ----------
    y : np.ndarray, shape (channels, samples), float32
    frames : np.ndarray of int
        Frame indices (frame ``t`` is centred on sample ``t * hop``).

    Returns
    -------
    X : np.ndarray, shape (channels, 1 + n_fft // 2, len(frames)), complex64
    """
    check_stft_params(n_fft, hop)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[np.newaxis]
    channels, length = y.shape
    frames = np.asarray(frames, dtype=np.intp)
    pad = n_fft // 2
    window = _window(n_fft)
    offsets = np.arange(n_fft)
    out = np.empty((channels, len(frames), n_fft // 2 + 1), dtype=np.complex64)
    zero = np.float32(0.0)
    # Each frame's samples are gathered from the track itself, zeros where the
    # padded signal would hold them: no padded copy of the track (its length in
    # memory, and a pass over all of it, for a few thousand frames).
    for s in range(0, len(frames), _CHUNK_FRAMES):
        at = frames[s : s + _CHUNK_FRAMES, np.newaxis] * hop - pad + offsets
        inside = (at >= 0) & (at < length)
        at = np.clip(at, 0, max(length - 1, 0))
        for c in range(channels):
            samples = np.where(inside, y[c][at], zero) if length else np.zeros(at.shape, np.float32)
            rfft_rows(samples * window, out[c, s : s + _CHUNK_FRAMES])
    return out.transpose(0, 2, 1)


@lru_cache(maxsize=8)
def _ola_norm(n_fft: int, hop: int, frames: int) -> np.ndarray:
    """1 / overlap-added squared window of ``frames`` frames; the same for every
    channel of a separation, so cached (read-only). Only short ones are made
    (:func:`_normalize`): a track's would be as long as the track."""
    window_sq = _window(n_fft) ** 2
    total = np.zeros((frames - 1) * hop + n_fft, dtype=np.float32)
    _overlap_add(total, np.broadcast_to(window_sq, (frames, n_fft)), 0, hop)
    tiny = np.finfo(np.float32).tiny
    norm = np.where(total > tiny, 1.0 / np.maximum(total, tiny), 0.0).astype(np.float32)
    norm.flags.writeable = False
    return norm


def _normalize(out: np.ndarray, n_fft: int, hop: int, frames: int) -> None:
    """``out *= _ola_norm(n_fft, hop, frames)`` (``out``: C-contiguous, its last axis
    the overlap-add of ``frames`` frames), with no array of the track's length.

    The overlap-added squared window is the same in every hop of the interior, to
    the bit (:func:`_overlap_add` adds frame part ``j`` of every frame at once, so each
    interior sample sums the same values in the same order), and its first and last
    ``n_fft`` samples are those of any overlap-add of ``2 * n_fft / hop + 2`` frames:
    that short one's head, interior hop and tail make the product, bit for bit. A
    track's norm, one float per sample, was made and cached per track length (a
    whole-track ``separate`` of an hour: 635 MB, up to eight of them kept)."""
    if not out.flags.c_contiguous:
        raise ValueError("the overlap-add to normalize is not C-contiguous")
    r = n_fft // hop
    short = 2 * r + 2
    if frames <= short:
        out *= _ola_norm(n_fft, hop, frames)
        return
    norm = _ola_norm(n_fft, hop, short)
    length = (frames - 1) * hop + n_fft
    head, period, tail = norm[:n_fft], norm[n_fft : n_fft + hop], norm[len(norm) - n_fft :]
    for row in out.reshape(-1, length):  # each a contiguous row: views below
        row[:n_fft] *= head
        row[length - n_fft :] *= tail
        row[n_fft : length - n_fft].reshape(-1, hop)[...] *= period


def _overlap_add(out: np.ndarray, frames: np.ndarray, first: int, hop: int) -> None:
    """Add ``frames`` (n, n_fft) into ``out`` starting at frame index ``first``."""
    n, n_fft = frames.shape
    r = n_fft // hop
    # out viewed as hop-sized rows: frame t covers rows t .. t + r - 1.
    rows = out[: (len(out) // hop) * hop].reshape(-1, hop)
    parts = frames.reshape(n, r, hop)
    for j in range(r):
        rows[first + j : first + j + n] += parts[:, j]


MaskFn = Callable[[int, int], np.ndarray]


def frame_blocks(frames: int, first_frame: int, size: int = _CHUNK_FRAMES) -> list[tuple[int, int]]:
    """Blocks ``[s, e)`` of ``size`` frames on the grid of a spectrogram whose frame
    ``first_frame`` is this one's frame 0."""
    edges = [0, *range((-first_frame) % size or size, frames, size), frames]
    return [(s, e) for s, e in pairwise(edges) if s < e]


class InverseSTFT:
    """An inverse STFT of several signals of one spectrogram's frames, assembled
    block by block: :meth:`add` inverts a block of frames of one signal and adds it
    in, :meth:`result` normalizes and returns the signals. What :func:`istft` does
    for one mask; a caller with several masks of the same frames inverts each block
    of all of them while it is in the CPU's cache (:func:`~.separate.reconstruct_spectra`).

    Parameters
    ----------
    shape : tuple of int
        The signals' leading shape (``(stems, channels)``, say).
    frames : int
        The spectrogram's frames.
    first_frame : int
        Index of frame 0 in a longer spectrogram (:func:`istft`'s).

    Attributes
    ----------
    blocks : list of (int, int)
        The frame blocks ``[s, e)`` to add, on the longer spectrogram's grid (as
        :func:`istft` adds them: every sample two chunks of a track share is the
        same float sum).
    """

    def __init__(
        self, shape: tuple[int, ...], frames: int, *, n_fft: int, hop: int, first_frame: int = 0
    ) -> None:
        check_stft_params(n_fft, hop)
        self.n_fft, self.hop, self.frames = n_fft, hop, frames
        self.window = _window(n_fft)
        self.out = np.zeros((*shape, (frames - 1) * hop + n_fft), dtype=np.float32)
        self.blocks = frame_blocks(frames, first_frame)

    def add(
        self,
        index: tuple[int, ...],
        start: int,
        spec: np.ndarray,
        frame_weights: np.ndarray | None = None,
    ) -> None:
        """Invert ``spec`` (frames ``start...``, shape ``(frames, bins)``, complex; it may
        be overwritten) and add it to signal ``index``, weighted by the window (and
        each frame by ``frame_weights``, shape ``(frames,)``, if given)."""
        block = irfft_rows(spec, self.n_fft)
        block *= self.window
        if frame_weights is not None:
            block *= frame_weights[:, np.newaxis]
        _overlap_add(self.out[index], block, start, self.hop)

    def result(self, length: int) -> np.ndarray:
        """The signals, shape ``(*shape, length)``: views of one padded buffer (each
        signal a contiguous row), normalized by the overlap-added squared window."""
        _normalize(self.out, self.n_fft, self.hop, self.frames)
        pad = self.n_fft // 2
        return self.out[..., pad : pad + length]


def istft(
    X: np.ndarray,
    *,
    n_fft: int = 2048,
    hop: int = 512,
    length: int,
    mask: MaskFn | None = None,
    bin_weights: np.ndarray | None = None,
    frame_weights: np.ndarray | None = None,
    first_frame: int = 0,
) -> np.ndarray:
    """Invert :func:`stft` by weighted overlap-add.

    Parameters
    ----------
    X : np.ndarray, shape (channels, 1 + n_fft // 2, frames) or (bins, frames), complex
    length : int
        Number of samples to return (the original signal's length).
    mask : callable, optional
        ``mask(start, stop)`` returns a real ``(stop - start, bins)`` array that
        multiplies frames ``start:stop`` of every channel before inversion. It is
        made one chunk at a time and shared by the channels, so no full-size mask
        is ever allocated.
    bin_weights : np.ndarray, shape (bins,), optional
        Real weights multiplying every frame: with ``frame_weights`` a rank-one
        mask ``outer(bin_weights, frame_weights)`` at the cost of one multiply.
    frame_weights : np.ndarray, shape (frames,), optional
        Real gain of each frame, applied after the inverse FFT (cheaper than on
        the complex spectrum, and the same by linearity).
    first_frame : int
        Index of ``X``'s first frame in a longer spectrogram ``X`` is part of: the
        frames are added up in blocks on that one's grid, so every sample both
        cover is the same float sum (a chunk of a track inverts to the track's
        samples bit for bit).

    Returns
    -------
    y : np.ndarray, shape (channels, length) or (length,), float32
        ``istft(stft(y), length=len(y))`` equals ``y`` to float32 rounding. Each
        channel is a contiguous row (the array itself is a view of a padded one).
    """
    check_stft_params(n_fft, hop)
    squeeze = X.ndim == 2
    if squeeze:
        X = X[np.newaxis]
    channels, bins, frames = X.shape
    if bins != n_fft // 2 + 1:
        raise ParameterError(f"spectrogram has {bins} bins; n_fft={n_fft} needs {n_fft // 2 + 1}")
    inverse = InverseSTFT((channels,), frames, n_fft=n_fft, hop=hop, first_frame=first_frame)
    spec_buf = np.empty((_CHUNK_FRAMES, bins), dtype=np.complex64)
    for s, e in inverse.blocks:
        chunk_mask = None if mask is None else mask(s, e)
        for c in range(channels):
            spec = X[c].T[s:e]  # (frames, bins), contiguous for stft's output
            weights = chunk_mask if chunk_mask is not None else bin_weights
            if weights is not None:
                spec = np.multiply(spec, weights, out=spec_buf[: e - s])
                if chunk_mask is not None and bin_weights is not None:
                    spec *= bin_weights
            else:
                spec = spec.copy()  # the inverse FFT may overwrite its input
            inverse.add((c,), s, spec, None if frame_weights is None else frame_weights[s:e])
    y = inverse.result(length)
    return y[0] if squeeze else y
