"""Files a separation is written to: one audio file per channel, or one stem file.

``stemdeck separate`` and ``stemdeck prep`` write through these functions, so a
track prepared either way gives the same files. Every file is written to a
temporary name in its folder and renamed into place: Ctrl-C, a killed process
or a full disk never leaves half a file under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.files import write
from stemdeck.core.audiofile.stemfile import NI_COLOURS, NI_NAMES, NI_STEMS, Tags
from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.errors import AudioFileError, ParameterError

from .progress import ProgressLine

__all__ = [
    "ChannelFiles",
    "check_format",
    "make_folder",
    "ni_order",
    "write_atomic",
    "write_separated_stem_file",
    "write_stem_mp4",
]

log = logging.getLogger(__name__)


def check_format(fmt: str, *, mode: str) -> None:
    """Refuse an output format the separation mode cannot fill, before any work.

    Raises
    ------
    ParameterError
        ``stem.mp4`` in components mode: a stem file holds the four stems.
    """
    if fmt == "stem.mp4" and mode != "stems":
        raise ParameterError(
            "--format stem.mp4 holds the four stems; components mode has no stems "
            "(drop --components, or use --format wav or flac)"
        )


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AudioFileError(f"cannot create {str(folder)!r}: {exc.strerror}") from None


def write_atomic(path: Path, audio: np.ndarray, sr: int, fmt: str) -> None:
    """Write one audio file under a temporary name, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=f".{fmt}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp, audio, sr, fmt=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ChannelFiles:
    """``folder/<channel>.<fmt>`` for each channel, written by one writer thread,
    so the next channels are computed meanwhile.

    Call the instance as ``files(index, name, audio)`` (a
    :data:`~stemdeck.core.separation.separate.ChannelSink`), then :meth:`close`,
    which waits for every file and raises the first error. Use it as a context
    manager.
    """

    def __init__(self, folder: Path, sr: int, fmt: str) -> None:
        make_folder(folder)
        self.folder = folder
        self.sr = sr
        self.fmt = fmt
        self.written: list[Path] = []
        self.clipped: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stemdeck-write")
        self._futures: list[Future[None]] = []

    def __call__(self, index: int, channel: str, audio: np.ndarray) -> None:
        path = self.folder / f"{channel}.{self.fmt}"
        if self.fmt == "flac" and float(np.abs(audio).max()) > 1.0:
            self.clipped.append(channel)
        self._futures.append(self._pool.submit(write_atomic, path, audio, self.sr, self.fmt))
        self.written.append(path)

    def close(self) -> None:
        try:
            for f in self._futures:
                f.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.clipped:
            log.warning(
                "%s peak above full scale and clip in 24-bit flac; "
                "use --format wav (float) to keep them",
                ", ".join(self.clipped),
            )

    def __enter__(self) -> ChannelFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: wait for the writer, keep the first error
            self._pool.shutdown(wait=True, cancel_futures=True)


def ni_order(names: list[str], channels: np.ndarray) -> np.ndarray:
    """Separated stems in the order of an NI Stems file (drums, bass, other, vocals)."""
    order = [n for n, _ in NI_STEMS]
    if sorted(names) != sorted(order):
        raise ParameterError(f"stems {names} do not match NI's {order}; cannot write stem.mp4")
    return np.stack([channels[names.index(n)] for n in order])


def write_stem_mp4(
    path: Path,
    master: np.ndarray,
    stems: np.ndarray,
    sr: int,
    *,
    names: list[str],
    colours: list[str],
    codec: str,
    tags: Tags,
    show_progress: bool = True,
) -> None:
    if codec == "alac" and max(float(np.abs(master).max()), float(np.abs(stems).max())) > 1.0:
        log.warning("peaks above full scale clip in 24-bit alac; use --codec aac to keep them")
    bar = ProgressLine(f"encoding {path.name}", enabled=show_progress)
    try:
        write_stem_file(
            path,
            master,
            stems,
            sr,
            names=names,
            colours=colours,
            codec=codec,
            tags=tags,
            progress=lambda fraction: bar("encoding", fraction),
        )
    finally:
        bar.close()


def write_separated_stem_file(
    path: Path,
    track: np.ndarray,
    names: list[str],
    channels: np.ndarray,
    sr: int,
    *,
    codec: str,
    tags: Tags,
    show_progress: bool = True,
) -> None:
    """A stems-mode separation of ``track`` as one NI Stems file at ``path``."""
    write_stem_mp4(
        path,
        track,
        ni_order(names, np.asarray(channels)),
        sr,
        names=list(NI_NAMES),
        colours=list(NI_COLOURS),
        codec=codec,
        tags=tags,
        show_progress=show_progress,
    )
