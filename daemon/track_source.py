"""What a track load reads: its source, the check before it, and the request.

A source is a path (checked by :func:`check_path`) or :data:`DEMO`. The check
is made from the file's header alone, before anything is decoded: under a
library folder, a regular file, audio (for an MP4, its boxes and a stem file's
manifest), within :class:`~stemdeck.daemon.track_limits.TrackLimits` (length and
memory). :class:`LoadRequest` is one ``/track/load`` on its way: its source and
whom to tell, once, how it ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.decode import StemDecode, StemFile, open_stem_file, read_stem_file
from stemdeck.core.audiofile.files import (
    MappedDecode,
    decode_mapped,
    load,
    load_mapped,
    probe_audio,
)
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.audiofile.samples import resample
from stemdeck.core.audiofile.stemfile import probe, stem_track_name
from stemdeck.core.errors import AudioFileError, ParameterError
from stemdeck.core.mixer.params import plays_at

from .pathnames import listed, resolve_listed
from .track_limits import TrackLimits

__all__ = [
    "DEMO",
    "LoadDone",
    "LoadRequest",
    "check_limits",
    "check_path",
    "check_start",
    "decode_source",
    "read_source",
    "read_stem_source",
    "source_name",
]

log = logging.getLogger(__name__)

DEMO = "demo:"  # the built-in demo track, as a track source

LoadDone = Callable[[str | None], None]
"""Told once how a request ended: None once the track plays, else why it did not."""


def source_name(source: str) -> str:
    """What the status line, ``/track/name`` and the log call a source: its file's name
    without suffix, in :func:`~stemdeck.daemon.pathnames.listed` form (a name that is
    not UTF-8, or holds control characters, escaped: one-to-one, and inert text)."""
    return "demo" if source == DEMO else listed(stem_track_name(source))


@dataclass(eq=False)
class LoadRequest:
    """One load: its source, and whom to tell how it ended (``answered`` once)."""

    source: str
    done: LoadDone | None
    answered: bool = False

    @property
    def name(self) -> str:
        return source_name(self.source)


def read_source(
    source: str, sr: int | None, folder: Path | None = None
) -> tuple[np.ndarray, int, str]:
    """Audio of a track source (a path or the demo), at ``sr`` when given.

    With ``folder`` (and ``sr`` None) a file's audio is a read-only memory map of
    an unlinked file there (:func:`~stemdeck.core.audiofile.files.load_mapped`),
    not the process's heap."""
    if source == DEMO:
        from stemdeck.core.material.demo import demo_track

        demo = demo_track()
        y = demo.mix
        if sr is not None and sr != demo.sr:
            y = resample(y, demo.sr, sr)
        return y, sr or demo.sr, demo.name
    if folder is not None and sr is None:
        try:
            y, file_sr = load_mapped(source, folder)
        except OSError as exc:  # no room there: the heap, as without a folder
            log.info("the track goes to memory, not %s: %s", folder, exc.strerror or exc)
            y, file_sr = load(source, sr=sr)
    else:
        y, file_sr = load(source, sr=sr)
    return y, file_sr, source_name(source)


def decode_source(source: str, folder: Path | None, first: float) -> tuple[MappedDecode, str]:
    """A track source being decoded at its own rate, and its name, once its first
    ``first`` seconds are in (all of a shorter track).

    With ``folder`` a file is decoded block by block into a read-only memory map of
    an unlinked file there (:func:`~stemdeck.core.audiofile.files.decode_mapped`),
    the rest in the background; the demo, or a file when there is no folder or no
    room there, is decoded whole into memory, and returned done.

    Raises
    ------
    AudioFileError
        Not audio, or damaged within its first ``first`` seconds.
    MemoryError
        No memory for it.
    """
    if source == DEMO or folder is None:
        y, sr, name = read_source(source, None)
        return MappedDecode(y, sr), name
    try:
        decode = decode_mapped(source, folder)
        decode.wait(int(first * decode.sr))
    except OSError as exc:  # no room there: the heap, as without a folder
        log.info("the track goes to memory, not %s: %s", folder, exc.strerror or exc)
        y, sr = load(source)
        return MappedDecode(y, sr), source_name(source)
    return decode, source_name(source)


def read_stem_source(source: str, sr: int, folder: Path | None) -> StemFile | StemDecode | None:
    """A stem file's stems (or AudioFileError), else None.

    With ``folder``, at the file's own rate (the read head converts it) in a memory
    map of an unlinked file there, decoding in the background
    (:func:`~stemdeck.core.audiofile.decode.open_stem_file`: page cache, not the
    daemon's heap, however long the file); without one, or no room there, or a rate
    the read head does not take, decoded whole at ``sr``.
    """
    if source == DEMO or not is_mp4_path(source):
        return None
    info = probe(source)
    if info is None:
        return None
    if folder is not None and plays_at(info.sr):
        try:
            return open_stem_file(source, folder, check=False)  # the loader checks spans
        except OSError as exc:  # no room there: the heap, as without a folder
            log.info("the stems go to memory, not %s: %s", folder, exc.strerror or exc)
    return read_stem_file(source, sr=sr, master=False)


def check_limits(source: str, limits: TrackLimits, engine_sr: int, outputs: int) -> None:
    """From the header: ``source`` holds audio within ``limits``, played at
    ``engine_sr`` on ``outputs`` channels.

    Raises
    ------
    AudioFileError
        Not an audio file, or damaged.
    ParameterError
        No audio, too long, or more than the memory available needs.
    """
    if source == DEMO:
        return
    info = probe_audio(source)
    if not info.holds_audio:
        raise ParameterError("the file holds no audio")
    stems = probe(source) if is_mp4_path(source) else None
    limits.check(
        info.frames,
        info.channels,
        info.sr,
        engine_sr,
        outputs=outputs,
        stems=len(stems.names) if stems is not None else 0,
    )


def check_start(source: str, limits: TrackLimits, engine_sr: int, outputs: int) -> None:
    """:func:`check_limits` for the track ``serve`` starts with: a refusal names it.

    Raises
    ------
    AudioFileError, ParameterError
        As :func:`check_limits`.
    """
    try:
        check_limits(source, limits, engine_sr, outputs)
    except ParameterError as exc:
        raise ParameterError(f"{source!r}: {exc}") from None


def check_path(
    path: str, library: Sequence[Path], limits: TrackLimits, engine_sr: int, outputs: int
) -> str:
    """The resolved path of a ``/track/load`` request, or ParameterError saying why not.

    Only regular files under a ``library`` folder (after resolving ``..`` and
    symlinks), whose header says they hold audio (:func:`probe_audio`: for an
    MP4, its boxes and a stem file's manifest; the audio is decoded later),
    within ``limits`` (:func:`check_limits`). A name as ``/track/list`` escapes
    it is taken back (:func:`~stemdeck.daemon.pathnames.resolve_listed`).
    """
    target = Path(resolve_listed(path)).expanduser()
    try:
        resolved = target.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ParameterError(f"refused {path!r}: no such file") from None
    if not any(resolved.is_relative_to(root) for root in library):
        roots = ", ".join(str(r) for r in library) or "(none: use --library)"
        raise ParameterError(f"refused {path!r}: outside the library folders {roots}")
    if not resolved.is_file():
        raise ParameterError(f"refused {path!r}: not a regular file")
    try:
        check_limits(str(resolved), limits, engine_sr, outputs)
    except AudioFileError as exc:
        # A stem file's reader says what is damaged; for the rest, that is enough.
        reason = str(exc) if is_mp4_path(resolved) else "not a readable audio file"
        raise ParameterError(f"refused {path!r}: {reason}") from None
    except ParameterError as exc:
        raise ParameterError(f"refused {path!r}: {exc}") from None
    return str(resolved)
