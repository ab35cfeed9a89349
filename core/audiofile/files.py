"""Audio files: which ones stemdeck opens, their headers, loading and writing.

libsndfile reads wav, flac, ogg/opus, mp3, aiff, w64, rf64 and caf; PyAV reads
MP4/M4A, stem files (:mod:`stemdeck.core.audiofile.stemfile`) among them. Audio
comes back as float32 ``(channels, samples)``, one or two channels
(:mod:`stemdeck.core.audiofile.samples`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import AudioFileError, ParameterError
from .mp4 import MP4_SUFFIXES, is_mp4_path
from .samples import downmix_to_stereo, resample, validate_audio
from .stemfile import mp4_header, probe, read_mp4_audio, read_stem_file

__all__ = ["AUDIO_SUFFIXES", "AudioInfo", "load", "probe_audio", "write"]

log = logging.getLogger(__name__)

#: File extensions (lower case) of the files stemdeck opens: libsndfile's formats
#: for music, and MP4/M4A through PyAV (stem files end in .stem.mp4 or .stem.m4a).
AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"}
    | {".w64", ".rf64", ".caf"}
    | set(MP4_SUFFIXES)
)

_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
# What libsndfile raises for a file it cannot read as audio (OSError apart).
_NOT_AUDIO = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says (:func:`probe_audio`).

    Attributes
    ----------
    frames : int or None
        Samples per channel: 0 for a file that holds no audio; None for an MP4
        whose header declares no duration (a fragmented file: its audio is
        checked when it is decoded).
    channels : int
        Channels in the file (:func:`load` gives at most two).
    sr : int
        Sample rate.
    """

    frames: int | None
    channels: int
    sr: int

    @property
    def seconds(self) -> float | None:
        """Duration in seconds, or None when the header declares none."""
        return None if self.frames is None or self.sr <= 0 else self.frames / self.sr

    @property
    def holds_audio(self) -> bool:
        """False when the header declares no samples at all."""
        return self.frames != 0


def _check_path(p: Path) -> None:
    if not p.exists():
        raise AudioFileError(f"{str(p)!r}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{str(p)!r} is a folder, not an audio file")


def _not_audio(p: Path, exc: Exception) -> AudioFileError:
    """The error for a file libsndfile refused (``exc``, what it raised)."""
    if isinstance(exc, OSError) and not isinstance(exc, _NOT_AUDIO):
        return AudioFileError(f"{str(p)!r} cannot be read: {exc.strerror or exc}")
    reason = str(exc).split(":")[-1].strip() or type(exc).__name__
    return AudioFileError(
        f"{str(p)!r} is not a readable audio file ({reason}); use wav, flac, ogg or mp3"
    )


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Whether a file is audio stemdeck reads, from its header alone.

    Cheap (no audio is decoded), for a check before a long job or a request:
    libsndfile reads the header of wav, flac, ogg, mp3...; for an MP4/M4A the
    boxes, a stem file's manifest and its streams are checked
    (:func:`~stemdeck.core.audiofile.stemfile.probe`). Whether the file holds
    audio is :attr:`AudioInfo.holds_audio`.

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioFileError
        Missing file, a folder, a file that is not audio or is damaged: the
        message :func:`load` would give (for an MP4, the stem file reader's).
    """
    p = Path(path)
    _check_path(p)
    if is_mp4_path(p):
        frames, channels, sr = mp4_header(p)
        if channels <= 0 or sr <= 0:
            raise AudioFileError(f"{str(p)!r}: its audio stream declares no channels or rate")
        return AudioInfo(frames, channels, sr)
    try:
        # As bytes: libsndfile's path is bytes, and soundfile encodes a str strictly,
        # so a name that is not UTF-8 (a Latin-1 'caf\xe9.wav') would look unreadable.
        info = sf.info(os.fsencode(p))
    except (*_NOT_AUDIO, OSError) as exc:
        raise _not_audio(p, exc) from None
    return AudioInfo(int(info.frames), int(info.channels), int(info.samplerate))


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
    _check_path(p)
    if is_mp4_path(p):
        return _load_mp4(p, sr=sr)
    try:
        data, file_sr = sf.read(os.fsencode(p), dtype="float32", always_2d=True)
    except (*_NOT_AUDIO, OSError) as exc:
        raise _not_audio(p, exc) from None
    return _finish(data.T, int(file_sr), p, sr)


def _finish(y: np.ndarray, file_sr: int, p: Path, sr: int | None) -> tuple[np.ndarray, int]:
    """Decoded audio made a track: stereo at most, validated, at ``sr`` when given."""
    if y.shape[0] > 2:
        log.warning("%s: %d channels downmixed to stereo", p.name, y.shape[0])
        y = downmix_to_stereo(y)
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
