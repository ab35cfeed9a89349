"""Spectral helpers of the separation: the shared magnitude, mel bands, HPSS.

Pure functions on spectrograms, shaped ``(bins, frames)``: :func:`magnitude`
(one magnitude for all audio channels), :func:`mel_filterbank`,
:func:`mel_bands` and :class:`BandExpansion` (mel bands and back), :func:`hpss`
(harmonic/percussive split). The stems model (:mod:`stemdeck.core.separation.stems`) and the
separation (:mod:`stemdeck.core.separation.separate`) build on them.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import ParameterError

__all__ = ["BandExpansion", "MelBands", "hpss", "magnitude", "mel_bands", "mel_filterbank"]


def magnitude(X: np.ndarray) -> np.ndarray:
    """Magnitude spectrogram shared by the channels: the mean of their magnitudes.

    Parameters
    ----------
    X : np.ndarray, shape (channels, bins, frames), complex

    Returns
    -------
    V : np.ndarray, shape (bins, frames), float32, frames-contiguous
    """
    channels = X.shape[0]
    VT = np.abs(X[0].T)
    for c in range(1, channels):
        VT += np.abs(X[c].T)
    if channels > 1:
        VT /= channels
    return VT.T


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (as librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    log_step = np.log(6.4) / 27.0
    high = hz >= 1000.0
    mel[high] = 15.0 + np.log(hz[high] / 1000.0) / log_step
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    hz = mel * f_sp
    log_step = np.log(6.4) / 27.0
    high = mel >= 15.0
    hz[high] = 1000.0 * np.exp(log_step * (mel[high] - 15.0))
    return hz


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmax: float) -> np.ndarray:
    """Triangular mel filters (peak 1) on the bins of an ``n_fft``-point FFT at ``sr``.

    The bands are fixed in Hz (0 to ``fmax``), whatever the rate: above the
    Nyquist frequency a band simply has no bins.

    Returns
    -------
    M : np.ndarray, shape (n_mels, n_fft // 2 + 1), float32
    """
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def hpss(V: np.ndarray, kernel: int, *, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Split a magnitude spectrogram into harmonic and percussive parts (Fitzgerald 2010).

    Median filters across time (``kernel`` frames) and across frequency
    (``kernel`` bands) give the two models; Wiener-like soft masks (power 2)
    share every bin between them, so the parts add up to ``V``. With ``stride``
    above one the medians take every ``stride``-th value of the same span: as
    wide, and ``stride`` times cheaper.

    Parameters
    ----------
    V : np.ndarray, shape (bins, frames), non-negative

    Returns
    -------
    harmonic, percussive : np.ndarray, shape (bins, frames), float32
    """
    harm = _median(V, kernel, stride, axis=1)
    perc = _median(V, kernel, stride, axis=0)
    np.square(harm, out=harm)
    np.square(perc, out=perc)
    den = harm + perc
    den += np.finfo(np.float32).tiny
    share = np.divide(harm, den, out=harm)
    harmonic = V * share
    return harmonic, V - harmonic


def _median(V: np.ndarray, kernel: int, stride: int, *, axis: int) -> np.ndarray:
    """Median over every ``stride``-th value of ``kernel`` along ``axis``, edges
    reflected: the values ``scipy.ndimage.median_filter`` gives (a median only picks
    a value), by a selection network of elementwise minima and maxima over shifted
    views of the padded spectrogram (:func:`_median_network`): for the stems model's
    11 taps, 32 comparisons on whole arrays, five times faster than partitioning a
    stack of the views (per 1-D slice), and outside the GIL (two chunks of a track
    separate side by side)."""
    taps = np.zeros(kernel, dtype=bool)
    taps[kernel // 2 % stride :: stride] = True
    n = V.shape[axis]
    count = int(taps.sum())
    if n < kernel or count % 2 == 0:  # reflections of reflections; an even median
        # Imported here: 0.3 s that the separation worker's fork server would spend
        # before the first worker can start, for a case a track of seconds meets.
        import scipy.ndimage

        footprint = taps[np.newaxis, :] if axis == 1 else taps[:, np.newaxis]
        return scipy.ndimage.median_filter(V, footprint=footprint, mode="reflect")
    half = kernel // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(V, pad, mode="symmetric")  # scipy's "reflect": d c b a | a b c d
    offsets = np.flatnonzero(taps)
    values = [padded[:, o : o + n] if axis == 1 else padded[o : o + n] for o in offsets]
    for a, b in _median_network(count):
        low = np.minimum(values[a], values[b])
        values[b] = np.maximum(values[a], values[b])
        values[a] = low
    return np.ascontiguousarray(values[count // 2])


@functools.cache
def _median_network(count: int) -> tuple[tuple[int, int], ...]:
    """The comparators ``(a, b)`` (``a < b``: after it, ``a`` holds the smaller value)
    that bring the median of ``count`` values (odd) to position ``count // 2``:
    Batcher's odd-even merge sort on the next power of two, comparators with a padding
    position dropped (padding at +inf never moves), then only those the median's
    position depends on (for 11 values, 32 of 38)."""
    size = 1 << max(0, (count - 1).bit_length())
    network = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < count:
                        network.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = {count // 2}
    kept = []
    for a, b in reversed(network):
        if a in needed or b in needed:
            kept.append((a, b))
            needed |= {a, b}
    return tuple(reversed(kept))


class BandExpansion:
    """Values per mel band spread onto FFT bins: each bin takes the (at most two)
    triangular bands covering it, weighted by their filters and normalized."""

    def __init__(self, mel: np.ndarray) -> None:
        n_mels, bins = mel.shape
        cover = mel.sum(axis=0)
        first = np.argmax(mel > 0, axis=0)  # lowest band covering each bin
        self.low = np.minimum(first, n_mels - 2).astype(np.intp)
        self.high = self.low + 1
        cols = np.arange(bins)
        safe = np.where(cover > 0, cover, 1.0)
        self.w_low = (mel[self.low, cols] / safe).astype(np.float32)
        self.w_high = (mel[self.high, cols] / safe).astype(np.float32)
        if np.count_nonzero(mel, axis=0).max(initial=0) > 2:
            raise ParameterError("mel bands overlap by more than two per bin")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``values`` shape (frames, n_mels) -> (frames, bins), float32."""
        # np.take keeps rows contiguous (values[:, idx] would come out column-major,
        # and every product with it strided).
        out = np.take(values, self.low, axis=1)
        out *= self.w_low
        high = np.take(values, self.high, axis=1)
        high *= self.w_high
        out += high
        return out


#: Consecutive mel bands projected by one dense product (:meth:`MelBands.project`).
PROJECT_BANDS = 8


class MelBands:
    """Triangular mel bands on an FFT's bins (:func:`mel_filterbank`), the two ways
    the stems model crosses them: :meth:`project` (bins to bands) and :attr:`expand`
    (bands to bins). Made once per analysis by :func:`mel_bands`: every chunk of a
    track, and every track at that rate, reads the same.

    Each bin feeds at most two bands, so a dense product with the whole matrix would
    do about 180 times the work needed. :meth:`project` takes
    :data:`PROJECT_BANDS` consecutive bands at a time, each group a dense product
    with the bins its bands cover (4.5 times the nonzero filter values, in products
    that run at full speed): 1.6 ms for 1,400 frames at 44.1 kHz, against 9.7 ms
    for ``scipy.sparse``'s product, which the separation no longer imports
    (``scipy.sparse``'s import was 0.3 s of a separation worker's fork server's 0.5).
    """

    def __init__(self, sr: int, n_fft: int, n_mels: int, fmax: float) -> None:
        matrix = mel_filterbank(sr, n_fft, n_mels, fmax)
        matrix.flags.writeable = False
        self.matrix = matrix
        #: ``(first band, end band, first bin, end bin, the filters there)``, or no
        #: filters for a group of bands that covers no bin (all zero).
        self.groups: list[tuple[int, int, int, int, np.ndarray | None]] = []
        for b0 in range(0, n_mels, PROJECT_BANDS):
            rows = matrix[b0 : b0 + PROJECT_BANDS]
            covered = np.flatnonzero(rows.any(axis=0))
            b1 = b0 + len(rows)
            if len(covered) == 0:
                self.groups.append((b0, b1, 0, 0, None))
                continue
            lo, hi = int(covered[0]), int(covered[-1]) + 1
            self.groups.append((b0, b1, lo, hi, np.ascontiguousarray(rows[:, lo:hi])))
        self.expand = BandExpansion(matrix)

    def project(self, V: np.ndarray) -> np.ndarray:
        """``matrix @ V``: ``V`` shape (bins, n) -> (n_mels, n), float32 (sums in
        float32, as the sparse product's were)."""
        V = np.asarray(V, dtype=np.float32)
        if V.ndim != 2 or V.shape[0] != self.matrix.shape[1]:
            raise ParameterError(
                f"a spectrogram of {self.matrix.shape[1]} bins is projected, got shape {V.shape}"
            )
        out = np.empty((self.matrix.shape[0], V.shape[1]), dtype=np.float32)
        for b0, b1, lo, hi, filters in self.groups:
            if filters is None:
                out[b0:b1] = 0.0
            else:
                np.matmul(filters, V[lo:hi], out=out[b0:b1])
        return out


@functools.lru_cache(maxsize=4)
def mel_bands(sr: int, n_fft: int, n_mels: int, fmax: float) -> MelBands:
    """The :class:`MelBands` of one analysis, made once (treat them as read-only)."""
    return MelBands(sr, n_fft, n_mels, fmax)
