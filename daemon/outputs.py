"""Files a separation is written to: one audio file per channel, or one stem file.

``stemdeck separate`` and ``stemdeck prep`` write through these functions, so a
track prepared either way gives the same files under the same names:

- **Names.** Every file and folder name made from a track's or a stem's name
  goes through :func:`output_name`: no ``/``, no control character, no byte
  that is not UTF-8, none of what FAT refuses, no leading dot, at most 255 bytes,
  unique in its folder (without regard to case).
- **A set is all or nothing.** :class:`ChannelFiles` writes a track's channel
  files into a hidden temporary folder beside the output folder and moves them
  into place only once every one is written: Ctrl-C, a killed process, an
  encoder error or a full disk never leave part of a set (or half a file) under
  the final names, and a set written before stays as it was. A stem file is
  written to a temporary file and renamed.
- **Modes.** Files and folders get the mode the umask gives, like any file a
  program writes (``tempfile`` would make them private).
- **A full disk** is one error naming the disk and the folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.files import create_temp, disk_full_message, is_disk_full, write
from stemdeck.core.audiofile.manifest import NI_COLOURS, NI_NAMES, NI_STEMS
from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.audiofile.tags import Tags
from stemdeck.core.errors import AudioFileError, ParameterError

from .progress import ProgressLine

__all__ = [
    "NAME_MAX_BYTES",
    "ChannelFiles",
    "ChannelWriter",
    "check_format",
    "make_folder",
    "ni_order",
    "output_name",
    "output_names",
    "output_path",
    "write_channel",
    "write_separated_stem_file",
    "write_stem_mp4",
]

log = logging.getLogger(__name__)

#: Most bytes of a file name (``NAME_MAX`` of Linux, macOS and Windows file systems).
NAME_MAX_BYTES = 255
# Replaced by "_" in a name: "/", C0 and C1 control characters, the surrogate
# escapes that stand for the bytes of a file name that are not UTF-8, and what
# FAT and exFAT (a USB stick) and Windows refuse: " * : < > ? \ |.
_UNSAFE = re.compile(r'[/\x00-\x1f\x7f-\x9f\ud800-\udfff"*:<>?\\|]')
# Dots and spaces ending a name: Windows and FAT drop them ("Song." is "Song").
_TRAILING = re.compile(r"[. ]+\Z")

#: Writes one channel's audio ``(channels, samples)`` to a path: ``(path, audio, sr, fmt)``.
ChannelWriter = Callable[[Path, np.ndarray, int, str], None]


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


def _fit(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8, at a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore")


def output_name(name: str, *, suffix: str = "", taken: Collection[str] = ()) -> str:
    """A file or folder name for ``name`` followed by ``suffix``, safe on any file system.

    ``/``, control characters, the bytes of a name that are not UTF-8 and the
    characters FAT and Windows refuse (``" * : < > ? \\ |``) become ``_``, as do a
    leading dot (a hidden file) and, in a name with no suffix (a folder), dots and
    spaces that end it (FAT drops them); an empty name is ``_``;
    the name is cut so that it and ``suffix`` fit in :data:`NAME_MAX_BYTES` bytes
    of UTF-8, and a name already in ``taken`` (compared without case: ``Drums``
    and ``drums`` are one file on some disks) gets ``-2``, ``-3``... before the
    suffix. Names that are safe already come back as they are.

    Parameters
    ----------
    name : str
        A track's or a stem's name, a file name without its suffix.
    suffix : str
        Appended as it is (``.wav``, ``.stem.mp4``): ASCII, chosen by stemdeck.
    taken : collection of str
        Names (suffixes included) already used in the same folder.
    """
    stem = _UNSAFE.sub("_", name)
    if stem.startswith("."):
        stem = "_" + stem[1:]
    if not suffix:
        stem = _TRAILING.sub(lambda m: "_" * len(m[0]), stem)
    stem = stem or "_"
    room = NAME_MAX_BYTES - len(suffix.encode("utf-8"))
    out = _fit(stem, room) + suffix
    used = {t.casefold() for t in taken}
    n = 2
    while out.casefold() in used:
        tail = f"-{n}"
        out = _fit(stem, room - len(tail)) + tail + suffix
        n += 1
    return out


def output_names(names: Sequence[str], *, suffix: str = "") -> list[str]:
    """:func:`output_name` of each of ``names``, unique among them: the files of a
    set, as :class:`ChannelFiles` names them."""
    out: list[str] = []
    for name in names:
        out.append(output_name(name, suffix=suffix, taken=out))
    return out


def output_path(root: Path, parts: Sequence[str], *, suffix: str = "") -> Path:
    """``root`` joined with ``parts`` (folders, then a name), each made an
    :func:`output_name`; ``suffix`` is added to the last."""
    *folders, name = parts
    return root.joinpath(*(output_name(f) for f in folders), output_name(name, suffix=suffix))


def _write_error(where: Path, exc: OSError) -> AudioFileError:
    """The one line for an ``OSError`` met while writing ``where``."""
    if is_disk_full(exc):
        return AudioFileError(disk_full_message(where))
    return AudioFileError(f"cannot write {str(where)!r}: {exc.strerror or exc}")


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise AudioFileError(disk_full_message(folder)) from None
        raise AudioFileError(f"cannot create {str(folder)!r}: {exc.strerror}") from None


def write_channel(path: Path, audio: np.ndarray, sr: int, fmt: str) -> None:
    """The :data:`ChannelWriter` of :class:`ChannelFiles`: one audio file
    (:func:`~stemdeck.core.audiofile.files.write`)."""
    write(path, audio, sr, fmt=fmt)


class ChannelFiles:
    """``folder/<channel>.<fmt>`` for each channel, all of them or none.

    Call the instance as ``files(index, name, audio)`` (a
    :data:`~stemdeck.core.separation.separate.ChannelSink`), then :meth:`close`,
    which waits for every file, raises the first error, and only then moves the
    set into place. Use it as a context manager: on an error (or Ctrl-C) nothing
    is moved, and the temporary folder is removed.

    The files are written by one writer thread (while the next channels are
    computed, in components mode; stems mode's come all at once), into a hidden
    temporary folder in ``folder``'s parent.
    When ``folder`` does not exist that folder is renamed to it; when it does,
    the new files are moved into it one by one (each replacing its namesake), so
    other files there, a user's or another format's, are kept.

    Parameters
    ----------
    folder : Path
        The output folder; its name is used as it is (see :func:`output_path`).
    sr : int
    fmt : {"wav", "flac"}
    write : ChannelWriter
        Writes one file (default :func:`write_channel`); tests pass one that fails.

    Attributes
    ----------
    written : list of Path
        The final path of every channel given so far.

    Raises
    ------
    AudioFileError
        A folder or a file cannot be written; a full disk names the disk and
        ``folder``.
    """

    def __init__(
        self, folder: Path, sr: int, fmt: str, *, write: ChannelWriter = write_channel
    ) -> None:
        make_folder(folder.parent)
        try:
            self._tmp = create_temp(folder.parent, label=folder.name, suffix=".part", folder=True)
        except OSError as exc:
            raise _write_error(folder, exc) from None
        self.folder = folder
        self.sr = sr
        self.fmt = fmt
        self.written: list[Path] = []
        self.clipped: list[str] = []
        self._write = write
        self._names: list[str] = []
        self._failed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stemdeck-write")
        self._futures: list[Future[None]] = []

    def __call__(self, index: int, channel: str, audio: np.ndarray) -> None:
        name = output_name(channel, suffix=f".{self.fmt}", taken=self._names)
        self._names.append(name)
        if self.fmt == "flac" and float(np.abs(audio).max()) > 1.0:
            self.clipped.append(channel)
        self._futures.append(self._pool.submit(self._write_one, self._tmp / name, audio))
        self.written.append(self.folder / name)

    def _write_one(self, path: Path, audio: np.ndarray) -> None:
        """The writer thread's task: one file, none once one has failed (the set is lost)."""
        if self._failed:
            return
        try:
            self._write(path, audio, self.sr, self.fmt)
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        """Wait for every file, then move the set into place; on any error, none of it."""
        try:
            try:
                for f in self._futures:
                    f.result()
            finally:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._move_into_place()
        except OSError as exc:
            self._discard()
            raise _write_error(self.folder, exc) from None
        except BaseException:
            self._discard()
            raise
        if self.clipped:
            log.warning(
                "%s peak above full scale and clip in 24-bit flac; "
                "use --format wav (float) to keep them",
                ", ".join(self.clipped),
            )

    def _move_into_place(self) -> None:
        if not os.path.lexists(self.folder):
            try:
                os.rename(self._tmp, self.folder)
                return
            except OSError:  # made meanwhile, by someone else: move the files in
                if not self.folder.is_dir():
                    raise
        elif not self.folder.is_dir():
            raise AudioFileError(f"{str(self.folder)!r} is a file; the channels need a folder")
        for name in self._names:  # checked first: a set is moved whole or not at all
            if (self.folder / name).is_dir():
                raise AudioFileError(f"{str(self.folder / name)!r} is a folder; remove it")
        for name in self._names:
            os.replace(self._tmp / name, self.folder / name)
        os.rmdir(self._tmp)

    def _discard(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ChannelFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: wait for the writer, keep the first error, keep nothing
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._discard()


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
