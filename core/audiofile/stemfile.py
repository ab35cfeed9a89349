"""NI Stems files (``.stem.mp4``, ``.stem.m4a``): what a stem file is, checked
without decoding: its name, its tracks and its manifest (:func:`probe`), and what
an MP4 file's header says of its audio (:func:`mp4_header`).

A stem file is an MP4 (ISO base media) file with one stereo audio track for the
master (the full mix, the only track marked enabled, so an ordinary player plays
it) followed by the stems, in NI's order drums, bass, other, vocals. A ``stem``
box in ``moov/udta`` holds a JSON manifest with the stems' names and colours and
the master's mastering DSP (:mod:`.manifest`). ``docs/stemfiles.md`` describes the
layout as this module and :mod:`.decode` read it and :mod:`.stemfile_write` writes
it.

The boxes around the audio are read by :mod:`.mp4`, which checks every size
against its parent, so a damaged file is one :class:`AudioFileError`, never a
crash or a hang; the streams are PyAV's (:mod:`.pyav`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AudioFileError
from .manifest import parse_manifest, stem_names
from .mp4 import read_moov, read_stem_box
from .pyav import open_container

__all__ = [
    "MAX_STEMS",
    "MIN_STEMS",
    "STEM_SUFFIXES",
    "StemFileInfo",
    "declared_length",
    "is_stem_path",
    "mp4_header",
    "probe",
    "stem_track_name",
]

STEM_SUFFIXES = (".stem.mp4", ".stem.m4a")
MIN_STEMS, MAX_STEMS = 2, 4


# -- file names ---------------------------------------------------------------------------
def is_stem_path(path: str | os.PathLike[str]) -> bool:
    """True for a name ending in ``.stem.mp4`` or ``.stem.m4a`` (any case)."""
    return str(path).lower().endswith(STEM_SUFFIXES)


def stem_track_name(path: str | os.PathLike[str]) -> str:
    """A track's name from its file name: ``Song.stem.mp4`` and ``Song.wav`` are ``Song``."""
    name = Path(path).name
    if is_stem_path(name):
        return name[: -len(".stem.mp4")]
    return Path(name).stem


@dataclass(frozen=True)
class StemFileInfo:
    """What :func:`probe` finds in a stem file, before any audio is decoded.

    Attributes
    ----------
    names, colours : tuple of str
        The stems' display names and ``#RRGGBB`` colours, in track order.
    manifest : dict or None
        The ``stem`` box's manifest; None for a file without one (MUSDB18).
    streams : tuple of int
        Indices of the file's audio streams: the master, then the stems.
    sr : int
        Sample rate of the stems.
    """

    names: tuple[str, ...]
    colours: tuple[str, ...]
    manifest: dict[str, Any] | None
    streams: tuple[int, ...]
    sr: int


def probe(path: str | os.PathLike[str]) -> StemFileInfo | None:
    """Check a stem file's structure and manifest without decoding its audio.

    Returns
    -------
    StemFileInfo, or None for a plain MP4 with one audio stream and no ``stem``
    box (an ordinary track).

    Raises
    ------
    AudioFileError
        Missing or non-MP4 file, damaged boxes, a broken ``stem`` box, a stream
        the manifest names but the file lacks, fewer than 2 or more than 4
        stems, or streams of different sample rates.
    """
    p = Path(path)
    where = repr(str(p))
    if not p.exists():
        raise AudioFileError(f"{where}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{where} is a folder, not an audio file")
    if read_moov(p) is None:
        raise AudioFileError(f"{where} is not an MP4 file; a stem file is an MP4 (.stem.mp4)")
    payload = read_stem_box(p)
    manifest = None if payload is None else parse_manifest(payload, where=where, path=p)
    with open_container(p) as container:
        audio = [s for s in container.streams if s.type == "audio"]
        if not audio:
            raise AudioFileError(f"{where} has no audio stream")
        if len(audio) == 1 and manifest is None:
            return None
        n_stems = len(audio) - 1
        if manifest is not None and len(manifest["stems"]) != n_stems:
            raise AudioFileError(
                f"{where}: the stem box names {len(manifest['stems'])} stems but the file has "
                f"{n_stems} stem streams (a stream is missing or extra)"
            )
        if not MIN_STEMS <= n_stems <= MAX_STEMS:
            raise AudioFileError(
                f"{where}: {len(audio)} audio streams; a stem file has a master and "
                f"{MIN_STEMS} to {MAX_STEMS} stems"
            )
        rates = {int(s.codec_context.sample_rate or 0) for s in audio}
        if len(rates) != 1 or 0 in rates:
            raise AudioFileError(f"{where}: its streams have different sample rates {rates}")
        for s in audio:
            if not 1 <= int(s.codec_context.channels or 0) <= 2:
                raise AudioFileError(
                    f"{where}: stream {s.index} has {s.codec_context.channels} channels; "
                    "stems are stereo"
                )
        streams = tuple(s.index for s in audio)
        sr = rates.pop()
    names, colours = stem_names(manifest, n_stems, path=p, where=where)
    return StemFileInfo(names, colours, manifest, streams, sr)


def declared_length(stream: Any, rate: int) -> int | None:
    """Samples a stream's header declares, or None when it declares no duration."""
    if stream.duration is None or stream.time_base is None:
        return None
    return round(stream.duration * stream.time_base * rate)


def mp4_header(path: str | os.PathLike[str]) -> tuple[int | None, int, int]:
    """What an MP4 file's header says of its audio, without decoding any.

    Returns
    -------
    frames : int or None
        Samples per channel: a stem file's shortest stem, a plain MP4's one audio
        stream; None when the header declares no duration (a fragmented file).
    channels : int
        Channels of the audio (of the widest stem).
    sr : int
        Sample rate.

    Raises
    ------
    AudioFileError
        See :func:`probe`.
    """
    p = Path(path)
    info = probe(p)
    with open_container(p) as container:
        if info is None:  # a plain MP4: exactly one audio stream
            streams = [s for s in container.streams if s.type == "audio"]
        else:
            streams = [container.streams[i] for i in info.streams[1:]]
        rate = int(streams[0].codec_context.sample_rate or 0)
        channels = max(int(s.codec_context.channels or 0) for s in streams)
        lengths = [declared_length(s, rate) for s in streams]
    known = [n for n in lengths if n is not None]
    return (min(known) if known else None), channels, rate
