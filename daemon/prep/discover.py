"""Finding the tracks of a library prep: audio files under folders, in a stable order."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from stemdeck.core.audiofile.files import AUDIO_SUFFIXES, printable_name, probe_audio
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.errors import AudioFileError

from .report import NOT_UTF8, not_utf8

__all__ = ["find_tracks", "header_duration"]

log = logging.getLogger(__name__)


def find_tracks(
    paths: Sequence[str], *, exclude: Sequence[Path] = ()
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Audio files under ``paths``, recursively, in a stable order.

    Returns ``(found, problems)``: ``found`` holds ``(file, relative path)`` pairs
    (relative to the folder given, or the file's own name); ``problems`` one
    line per path or folder that could not be read. Hidden files and folders
    (temporary files of an interrupted write among them) and the folders in
    ``exclude`` (the output and cache folders) are skipped; symbolic links to
    folders are not followed, so a link loop cannot recurse forever. A file
    whose path is not UTF-8 is found like any other, with one warning
    (:data:`~stemdeck.daemon.prep.report.NOT_UTF8`).
    """
    skip = {p.resolve() for p in exclude}
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    problems: list[str] = []

    def add(file: Path, rel: Path) -> None:
        try:
            real = file.resolve(strict=True)
        except (OSError, RuntimeError):
            problems.append(f"{str(file)!r}: broken link")
            return
        if real not in seen:
            seen.add(real)
            found.append((file, rel))
            if not_utf8(str(file)):
                log.warning("%s: %s", printable_name(file), NOT_UTF8)

    for given in paths:
        root = Path(given).expanduser()
        if root.is_file():
            add(root, Path(root.name))
            continue
        if not root.is_dir():
            problems.append(f"{given!r}: no such file or folder")
            continue

        here_found: list[tuple[Path, Path]] = []

        def walk_error(exc: OSError) -> None:
            problems.append(f"{exc.filename!r}: cannot be listed ({exc.strerror})")

        for folder, dirs, files in os.walk(root, onerror=walk_error):
            here = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip
            )
            for name in sorted(files):
                if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                here_found.append((here / name, (here / name).relative_to(root)))
        for file, rel in sorted(here_found, key=lambda item: str(item[1])):
            add(file, rel)
    return found, problems


def header_duration(path: Path) -> float | None:
    """Seconds of audio as the file's header says; None for an MP4 or an unreadable header
    (decoding says what is wrong)."""
    if is_mp4_path(path):  # its header is read by PyAV: not worth it for an estimate
        return None
    try:
        return probe_audio(path).seconds
    except AudioFileError:
        return None
