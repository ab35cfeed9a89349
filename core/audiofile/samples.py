"""Sample arrays: checked, resampled, downmixed.

Audio inside stemdeck is always a float32 array of shape ``(channels, samples)``
with one or two channels: planar, so each channel is a contiguous row that the
STFT and the mixer can work on without copies.
"""

from __future__ import annotations

import numpy as np
import soxr

from ..errors import AudioFileError, ParameterError

__all__ = ["downmix_to_stereo", "resample", "resample_channels", "validate_audio"]


def validate_audio(y: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Check a signal and return it as C-contiguous float32 ``(channels, samples)``.

    Parameters
    ----------
    y : np.ndarray, shape (samples,) or (channels, samples)
        Signal; a 1-D array is taken as mono.
    name : str
        What to call the signal in an error message.

    Raises
    ------
    AudioFileError
        If the signal is empty, has more than two dimensions, or holds NaN or inf.
    """
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[np.newaxis, :]
    if y.ndim != 2 or y.shape[0] < 1:
        raise AudioFileError(f"{name}: expected shape (channels, samples), got {y.shape}")
    if y.shape[1] == 0:
        raise AudioFileError(f"{name}: no samples (zero-length audio)")
    y = np.ascontiguousarray(y, dtype=np.float32)
    # A float64 sum of finite float32 samples cannot overflow, and a NaN or inf
    # makes it non-finite: one pass with no array the size of the track (a mask
    # would be 345 MB for an hour of stereo at 48 kHz).
    if not np.isfinite(y.sum(dtype=np.float64)):
        bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
        raise AudioFileError(f"{name}: {bad} samples are NaN or infinite; re-export the file")
    return y


def downmix_to_stereo(y: np.ndarray) -> np.ndarray:
    """Audio of three or more channels, ``(channels, samples)``, as ``(2, samples)``.

    Even channels go to the left, odd ones to the right: for 5.1/7.1 in wav order
    (L R C LFE Ls Rs ...) this keeps each side's content on its side.
    """
    left = y[0::2].mean(axis=0)
    right = y[1::2].mean(axis=0)
    return np.stack([left, right])


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(channels, samples)`` audio with soxr; returns float32.

    Raises
    ------
    ParameterError
        A rate that is not positive.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ParameterError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    out = soxr.resample(y.T, sr_in, sr_out, quality="VHQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).T)


def resample_channels(channels: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample every mixer channel of a separation, shape ``(n, channels, samples)``.

    Resampling is linear, so channels that add up to a track still add up to the
    track resampled the same way (to float rounding): separated channels from the
    cache, at the source's rate, replace the original played at the output rate
    without a seam. Returns ``channels`` itself when the rates match (a memory map
    stays a memory map).
    """
    if sr_in == sr_out:
        return channels
    first = resample(np.asarray(channels[0]), sr_in, sr_out)
    out = np.empty((channels.shape[0], *first.shape), dtype=np.float32)
    out[0] = first
    for i in range(1, channels.shape[0]):
        out[i] = resample(np.asarray(channels[i]), sr_in, sr_out)
    return out
