"""Cache entries that grow chunk by chunk while a track is separated, as a reader
sees them.

A partial entry lives in ``.partial-<key>/`` beside the finished entries of
:mod:`.cache`: the channels file preallocated, ``ready.json`` (the chunks in, each
with its CRC32, replaced by rename after their samples are written) and
``writer.lock``, which its writer holds locked while it lives. A reader
(:class:`PartialEntry`, from :func:`open_partial`) maps the channels and polls the
record; the writer (:class:`.chunk_writer.ChunkWriter`) seals the entry
(:func:`.entry.seal_entry`) when every chunk is in and renames it into place.

The writer lock is an advisory ``flock``; where there is none (Windows), locking
always succeeds: two processes writing one entry at once are then not kept apart.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

__all__ = [
    "LOCK",
    "PARTIAL_PREFIX",
    "RECORD",
    "PartialEntry",
    "covers",
    "discard_partial",
    "open_partial",
    "try_lock",
    "writer_alive",
]


def _fcntl() -> ModuleType | None:
    """The POSIX ``fcntl`` module, or ``None`` where there is none (Windows)."""
    try:
        return importlib.import_module("fcntl")
    except ImportError:
        return None


def try_lock(fd: int, *, exclusive: bool = True) -> bool:
    """Take an advisory lock on ``fd`` without waiting: False when another process
    holds it. Always True where the system has no ``flock`` (Windows).

    Raises
    ------
    OSError
        The lock could not be tried (other than being held).
    """
    fcntl = _fcntl()
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


PARTIAL_PREFIX = ".partial-"
RECORD = "ready.json"
LOCK = "writer.lock"


def writer_alive(folder: Path) -> bool:
    """Whether a process holds the writer lock of a partial entry's folder."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not try_lock(fd, exclusive=False)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a shared lock taken here


def discard_partial(root: Path, key: str) -> None:
    """Remove the partial entry ``key`` of the cache in ``root`` unless a process is
    writing it (one whose writer was ended: nobody can resume a provisional name)."""
    folder = root / f"{PARTIAL_PREFIX}{key}"
    try:
        fd = os.open(folder / LOCK, os.O_RDWR)
    except OSError:
        return
    try:
        if try_lock(fd):
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass
    finally:
        os.close(fd)


def covers(ranges: list[tuple[int, int]], start: int, stop: int) -> bool:
    """Whether ``ranges`` (sorted by start) cover ``[start, stop)``."""
    at = start
    for a, b in ranges:
        if a > at:
            break
        at = max(at, b)
    return at >= stop


@dataclass
class PartialEntry:
    """An entry being written chunk by chunk, as a reader sees it.

    Attributes
    ----------
    key : str
    path : Path
        The partial entry's folder (``.partial-<key>`` in the cache folder).
    channels : np.ndarray, shape (n_channels, audio_channels, samples), float32
        A read-only memory map of the whole entry: the samples of :meth:`ready`
        ranges hold the separation, the others zeros.
    names : list of str
    sr : int
    """

    key: str
    path: Path
    channels: np.ndarray
    names: list[str]
    sr: int

    def ready(self) -> list[tuple[int, int]]:
        """Sample ranges ``[start, stop)`` written so far, sorted; read afresh each call.

        Once the entry is complete and moved into place, its whole length.
        """
        try:
            with (self.path / RECORD).open(encoding="utf-8") as f:
                record = json.load(f)
            return sorted((int(c["start"]), int(c["stop"])) for c in record["chunks"])
        except (OSError, ValueError, KeyError, TypeError):
            final = self.path.parent / self.key
            if (final / "meta.json").is_file():
                return [(0, int(self.channels.shape[2]))]
            return []

    @property
    def complete(self) -> bool:
        """Every sample is in (the entry may still be sealing: :meth:`SeparationCache.load`
        finds it once it is in place)."""
        return covers(self.ready(), 0, int(self.channels.shape[2]))

    def writer_alive(self) -> bool:
        """Whether a process is still writing it (False: complete, or its writer died)."""
        return writer_alive(self.path)


def open_partial(root: Path, key: str) -> PartialEntry | None:
    """An entry of the cache in ``root`` being written chunk by chunk (by any
    process), for reading (:meth:`SeparationCache.open_partial`).

    Returns
    -------
    PartialEntry or None
        A read-only memory map of the whole entry and its ready ranges
        (:meth:`PartialEntry.ready`, to poll); None when there is no partial
        entry under ``key`` or it cannot be read (a complete one is
        :meth:`SeparationCache.load`'s).
    """
    folder = root / f"{PARTIAL_PREFIX}{key}"
    try:
        with (folder / RECORD).open(encoding="utf-8") as f:
            record = json.load(f)
        shape = tuple(int(v) for v in record["shape"])
        channels = np.memmap(folder / "channels.f32", dtype=np.float32, mode="r", shape=shape)
        return PartialEntry(
            key=key,
            path=folder,
            channels=channels,
            names=list(record["names"]),
            sr=int(record["meta"]["sr"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
