"""Loading and writing audio files.

Audio inside stemdeck is always a float32 array of shape ``(channels, samples)``
with one or two channels: planar, so each channel is a contiguous row that the
STFT and the mixer can work on without copies.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import AudioFileError, ParameterError
from .stemfile import is_mp4_path, probe, read_mp4_audio, read_stem_file

__all__ = ["load", "resample", "resample_channels", "validate_audio", "write"]

log = logging.getLogger("stemdeck")

_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}


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
    if not np.isfinite(y).all():
        bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
        raise AudioFileError(f"{name}: {bad} samples are NaN or infinite; re-export the file")
    return y


def load(path: str | os.PathLike[str], *, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32, planar, mono or stereo kept.

    Parameters
    ----------
    path : path-like
        Any file libsndfile reads: wav, flac, ogg, mp3 (libsndfile >= 1.1), aiff, ...;
        MP4/M4A through PyAV (a stem file gives the sum of its stems).
    sr : int or None
        Resample to this rate with soxr (very high quality) when the file's rate
        differs; ``None`` keeps the original rate.

    Returns
    -------
    y : np.ndarray, shape (channels, samples), float32
        One or two channels; more are averaged down to stereo with a warning.
    sr : int
        Sample rate of ``y``.

    Raises
    ------
    AudioFileError
        Missing, unreadable, non-audio or empty file, or NaN/inf samples.
    """
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{str(p)!r}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{str(p)!r} is a folder, not an audio file")
    if is_mp4_path(p):
        return _load_mp4(p, sr=sr)
    try:
        data, file_sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioFileError(
            f"{str(p)!r} is not a readable audio file ({reason}); use wav, flac, ogg or mp3"
        ) from None
    except OSError as exc:
        raise AudioFileError(f"{str(p)!r} cannot be read: {exc.strerror or exc}") from None
    return _finish(data.T, int(file_sr), p, sr)


def _finish(y: np.ndarray, file_sr: int, p: Path, sr: int | None) -> tuple[np.ndarray, int]:
    """Decoded audio made a track: stereo at most, validated, at ``sr`` when given."""
    if y.shape[0] > 2:
        log.warning("%s: %d channels downmixed to stereo", p.name, y.shape[0])
        y = _downmix_to_stereo(y)
    y = validate_audio(y, name=repr(str(p)))
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
        file_sr = sr
    return y, int(file_sr)


def _load_mp4(p: Path, *, sr: int | None) -> tuple[np.ndarray, int]:
    """An MP4/M4A track (libsndfile reads none): a stem file is the sum of its stems
    (what unity on every channel plays), a plain one is its one audio stream."""
    if probe(p) is not None:
        stems = read_stem_file(p, sr=sr, master=False)
        return stems.mix, stems.sr
    y, file_sr = read_mp4_audio(p)
    return _finish(y, file_sr, p, sr)


def _downmix_to_stereo(y: np.ndarray) -> np.ndarray:
    # Even channels to the left, odd to the right: for 5.1/7.1 wav order
    # (L R C LFE Ls Rs ...) this keeps each side's content on its side.
    left = y[0::2].mean(axis=0)
    right = y[1::2].mean(axis=0)
    return np.stack([left, right])


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(channels, samples)`` audio with soxr; returns float32."""
    import soxr

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


def write(path: str | os.PathLike[str], y: np.ndarray, sr: int, *, fmt: str = "wav") -> None:
    """Write ``(channels, samples)`` audio; wav is 32-bit float, flac 24-bit.

    Float wav never clips, so channels written this way still add up to the
    track exactly; flac is integer and clips peaks above full scale.

    Raises
    ------
    ParameterError
        Unknown format.
    AudioFileError
        The file cannot be written (folder missing, disk full, permissions).
    """
    if fmt not in _FORMATS:
        raise ParameterError(f"unknown format {fmt!r}; use one of {sorted(_FORMATS)}")
    container, subtype = _FORMATS[fmt]
    try:
        sf.write(str(path), np.asarray(y).T, sr, format=container, subtype=subtype)
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        raise AudioFileError(f"cannot write {str(path)!r}: {exc}") from None
