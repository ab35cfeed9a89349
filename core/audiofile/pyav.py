"""PyAV, the FFmpeg binding that decodes and encodes MP4 audio: imported when first
needed, a file opened, and the reason an FFmpeg error gives.

Used by :mod:`.stemfile` (probing), :mod:`.decode`, :mod:`.tags` and
:mod:`.stemfile_write`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import AudioFileError

__all__ = ["ffmpeg_reason", "import_av", "open_container"]


def import_av() -> Any:
    """PyAV, with FFmpeg's own logging off: its errors come back as exceptions.

    Raises
    ------
    AudioFileError
        PyAV is not installed.
    """
    try:
        import av  # here, not at the top: PyAV costs ~50 ms, and most imports never decode
    except ImportError:  # pragma: no cover - a dependency; a broken install
        raise AudioFileError("stem files need PyAV: pip install av") from None
    av.logging.set_level(av.logging.PANIC)  # errors come back as exceptions; no stderr noise
    return av


def open_container(path: Path) -> Any:
    """``av.open`` on ``path``, for reading, its tags' bad bytes replaced.

    Raises
    ------
    AudioFileError
        FFmpeg cannot open the file, or the OS cannot read it.
    """
    av = import_av()
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as exc:
        raise AudioFileError(f"{str(path)!r} cannot be opened: {ffmpeg_reason(exc)}") from None
    except OSError as exc:
        raise AudioFileError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None


def ffmpeg_reason(exc: BaseException) -> str:
    """The reason an FFmpeg or OS error gives, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '", 1)[0]
