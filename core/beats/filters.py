"""librosa's mel and chroma filter banks, computed in numpy by the same formulas.

``librosa.filters.mel`` (Slaney's mel scale and norm) and ``librosa.filters.chroma``:
importing ``librosa.filters`` takes about 2 s (scipy.signal, numba), more than a
first grid in the daemon may take. tests/core/beats/test_analysis.py holds them
equal to librosa's bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["chroma_filters", "mel_filters", "mel_frequencies"]

_MEL_LOG_HZ = 1000.0  # Slaney's mel scale: linear below, logarithmic above
_MEL_SP = 200.0 / 3
_MEL_LOGSTEP = math.log(6.4) / 27.0


def mel_frequencies(n_mels: int, fmax: float) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on Slaney's mel scale from 0 to
    ``fmax`` (``librosa.mel_frequencies(n_mels, fmax=fmax)``)."""
    log_mel = _MEL_LOG_HZ / _MEL_SP
    top = fmax / _MEL_SP
    if fmax >= _MEL_LOG_HZ:
        top = log_mel + math.log(fmax / _MEL_LOG_HZ) / _MEL_LOGSTEP
    mels = np.linspace(0.0, top, n_mels)
    hz = _MEL_SP * mels
    high = mels >= log_mel
    hz[high] = _MEL_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[high] - log_mel))
    return hz


def mel_filters(sr: int, n_fft: int, n_mels: int, fmax: float) -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), float32, Slaney-normalized
    (``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmax=fmax)``)."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_frequencies(n_mels + 2, fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def chroma_filters(sr: int, n_fft: int, ctroct: float, octwidth: float) -> np.ndarray:
    """Chroma filters (12, n_fft // 2 + 1), float32, C first, each FFT bin's column
    of unit length before the octave weighting centred on octave ``ctroct``
    (``librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, ctroct=ctroct,
    octwidth=octwidth)``)."""
    n_chroma = 12
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(frequencies / (440.0 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    d = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    d = np.remainder(d + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * d / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    length = np.sum(np.abs(wts) ** 2, axis=0, keepdims=True) ** 0.5
    length[length < np.finfo(wts.dtype).tiny] = 1.0
    wts = wts / length
    wts *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - ctroct) / octwidth) ** 2)), (n_chroma, 1))
    wts = np.roll(wts, -3, axis=0)
    return np.ascontiguousarray(wts[:, : int(1 + n_fft / 2)], dtype=np.float32)
