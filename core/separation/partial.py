"""Cache entries that grow chunk by chunk while a track is separated.

A partial entry lives in ``.partial-<key>/`` beside the finished entries of
:mod:`.cache`: the channels file preallocated, ``ready.json`` (the chunks in, each
with its CRC32, replaced by rename after their samples are written) and
``writer.lock``, which its writer holds locked while it lives. A reader
(:class:`PartialEntry`) maps the channels and polls the record; the writer
(:class:`ChunkWriter`) seals the entry (:func:`.entry.seal_entry`) when every chunk
is in, and :class:`~.cache.SeparationCache` renames it into place.

The writer lock is an advisory ``flock``; where there is none (Windows), locking
always succeeds: two processes writing one entry at once are then not kept apart.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CacheError
from .entry import FORMAT_VERSION, seal_entry

if TYPE_CHECKING:  # annotations only: cache.py imports this module
    from .cache import SeparationCache

__all__ = [
    "LOCK",
    "PARTIAL_PREFIX",
    "RECORD",
    "ChunkWriter",
    "PartialEntry",
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


def _covered(ranges: list[tuple[int, int]], length: int) -> bool:
    """Whether ``ranges`` (sorted, disjoint) cover ``[0, length)``."""
    at = 0
    for start, stop in ranges:
        if start > at:
            return False
        at = max(at, stop)
    return at >= length


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
        return _covered(self.ready(), int(self.channels.shape[2]))

    def writer_alive(self) -> bool:
        """Whether a process is still writing it (False: complete, or its writer died)."""
        return writer_alive(self.path)


class ChunkWriter:
    """Writes one entry chunk by chunk; see :meth:`SeparationCache.chunk_writer`.

    Attributes
    ----------
    ready : list of (int, int)
        Sample ranges already in (a resumed entry's verified chunks, then each
        :meth:`add_chunk`'s), sorted.
    """

    def __init__(
        self,
        cache: SeparationCache,
        key: str,
        folder: Path,
        lock_fd: int,
        names: list[str],
        shape: tuple[int, int, int],
        frames: int,
        meta: dict[str, Any],
        chunks: list[dict[str, Any]],
    ) -> None:
        self.cache = cache
        self.key = key
        self.folder = folder
        self._lock_fd = lock_fd
        self.names = names
        self.shape = shape
        self.frames = frames
        self.meta = meta
        self._chunks = chunks
        self._fd = os.open(folder / "channels.f32", os.O_RDWR)
        self._H = np.load(folder / "H.npy", mmap_mode="r+")
        self.closed = False

    @property
    def ready(self) -> list[tuple[int, int]]:
        return sorted((int(c["start"]), int(c["stop"])) for c in self._chunks)

    @property
    def complete(self) -> bool:
        return _covered(self.ready, self.shape[2])

    def add_chunk(
        self, start: int, stop: int, channels: np.ndarray, frames: tuple[int, int], H: np.ndarray
    ) -> None:
        """Write samples ``[start, stop)`` of every channel and their activations, then
        record them as ready (the record is replaced in one rename, after the data).

        Parameters
        ----------
        channels : np.ndarray, shape (n_channels, audio_channels, stop - start)
        frames : (int, int)
            The activations' frames ``[start, stop)``.
        H : np.ndarray, shape (K, frames[1] - frames[0])

        Raises
        ------
        CacheError
            The disk is full or the folder cannot be written.
        ValueError
            Shapes that do not fit the entry.
        """
        n, audio, length = self.shape
        block = np.ascontiguousarray(channels, dtype=np.float32)
        if block.shape != (n, audio, stop - start) or not 0 <= start < stop <= length:
            raise ValueError(
                f"chunk {start}:{stop} of shape {block.shape} does not fit {self.shape}"
            )
        f0, f1 = frames
        if H.shape != (self._H.shape[0], f1 - f0) or not 0 <= f0 < f1 <= self.frames:
            raise ValueError(f"activations of shape {H.shape} do not fit frames {f0}:{f1}")
        try:
            for j in range(n):
                for c in range(audio):
                    offset = ((j * audio + c) * length + start) * 4
                    data = block[j, c].data
                    written = os.pwrite(self._fd, data, offset)
                    if written != data.nbytes:
                        raise OSError(errno.EIO, "short write")
            self._H[:, f0:f1] = H
            self._H.flush()
            self._chunks.append(
                {
                    "start": int(start),
                    "stop": int(stop),
                    "crc": zlib.crc32(block.data),
                    "frames": [int(f0), int(f1)],
                    "h_crc": zlib.crc32(np.ascontiguousarray(H, dtype=np.float32).data),
                }
            )
            self._write_record()
        except OSError as exc:
            raise self.cache.write_error(exc) from None

    def _write_record(self) -> None:
        record = {
            "format": FORMAT_VERSION,
            "names": self.names,
            "shape": list(self.shape),
            "frames": self.frames,
            "meta": self.meta,
            "chunks": self._chunks,
        }
        tmp = self.folder / f".{RECORD}.{uuid.uuid4().hex[:8]}"
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, self.folder / RECORD)

    def finish(self) -> None:
        """Seal the complete entry and move it into place (one rename): from then on
        :meth:`SeparationCache.load` serves it like any other.

        Raises
        ------
        CacheError
            Chunks are missing, or the folder cannot be written.
        """
        if not self.complete:
            raise CacheError(f"cache entry {self.key[:12]} is missing chunks: ready {self.ready}")
        try:
            self._close_files()
            fields = dict(self.meta)
            names = self.names
            # The record goes last: a reader polling it meanwhile sees every chunk
            # ready, then the entry in place.
            sealed = self.folder.parent / f".tmp-{self.key[:12]}-{uuid.uuid4().hex[:8]}"
            sealed.mkdir()
            for name in ("channels.f32", "W.npy", "H.npy"):
                os.link(self.folder / name, sealed / name)
            seal_entry(sealed, fields, names, self.shape)
            try:
                os.rename(sealed, self.folder.parent / self.key)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                shutil.rmtree(sealed, ignore_errors=True)  # another process stored it first
        except OSError as exc:
            raise self.cache.write_error(exc) from None
        finally:
            self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.cache.evict(keep=self.key)

    def _close_files(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._H is not None:
            self._H.flush()
            self._H = None

    def close(self) -> None:
        """Stop writing: the lock is released and the partial entry left for a later
        writer to resume (or :meth:`SeparationCache.clean_stale` to remove)."""
        if self.closed:
            return
        self._close_files()
        os.close(self._lock_fd)
        self.closed = True

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
