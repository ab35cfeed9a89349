"""Writing a cache entry chunk by chunk (:func:`start_chunk_writer`,
:class:`ChunkWriter`), and resuming what a dead writer left.

The entry grows in a partial entry's folder (:mod:`.partial`, where its layout and
its reader are): each chunk's samples are written in place, then recorded in
``ready.json``; the writer holds ``writer.lock`` while it lives, and seals the
entry and renames it into place once every chunk is in.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audiofile.scratch import write_at
from ..errors import CacheError
from .entry import CHECK_BLOCK, FORMAT_VERSION, seal_entry
from .overview import PeakAccumulator
from .partial import LOCK, PARTIAL_PREFIX, RECORD, covers, try_lock

if TYPE_CHECKING:  # annotations only: cache.py imports this module
    from .cache import SeparationCache

__all__ = ["ChunkWriter", "start_chunk_writer"]


class ChunkWriter:
    """Writes one entry chunk by chunk; see :func:`start_chunk_writer`.

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
        # The activations (K, frames) are written as the samples are, with pwrite,
        # never through a writable map: a full disk is an OSError (a store into a
        # map of the sparse file would be a SIGBUS), and the file is written back as
        # any other where it is closed (a shared folder: no page left unflushed).
        # Its shape is (K, frames): made so, or checked so by _resumable.
        H_map = np.load(folder / "H.npy", mmap_mode="r")
        self._K, self._H_offset = int(H_map.shape[0]), int(H_map.offset)
        del H_map
        self._fd = os.open(folder / "channels.f32", os.O_RDWR)
        try:
            self._H_fd = os.open(folder / "H.npy", os.O_WRONLY)
        except BaseException:
            os.close(self._fd)
            raise
        self._overview = PeakAccumulator(shape[0], shape[2])
        # The seal's checksum of each CHECK_BLOCK bytes of the channels, taken as soon
        # as every sample of its block is in (read back from the page cache while the
        # next chunks are separated), rather than all of them at the seal, after the
        # last chunk: 0.16 s for a 3-minute track, with one core idle.
        self._block_crcs: dict[int, int] = {}
        if chunks:  # a dead writer's chunks, kept: their peaks from the file
            written = np.memmap(folder / "channels.f32", dtype=np.float32, mode="r", shape=shape)
            for c in chunks:
                start, stop = int(c["start"]), int(c["stop"])
                self._overview.add(start, written[:, :, start:stop])
            del written
        self.closed = False

    @property
    def ready(self) -> list[tuple[int, int]]:
        return sorted((int(c["start"]), int(c["stop"])) for c in self._chunks)

    @property
    def complete(self) -> bool:
        return covers(self.ready, 0, self.shape[2])

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
        K = self._K
        if H.shape != (K, f1 - f0) or not 0 <= f0 < f1 <= self.frames:
            raise ValueError(f"activations of shape {H.shape} do not fit frames {f0}:{f1}")
        rows = np.ascontiguousarray(H, dtype=np.float32)
        try:
            self._forget_blocks(start, stop)  # samples written again: their blocks change
            for j in range(n):
                for c in range(audio):
                    write_at(self._fd, block[j, c], ((j * audio + c) * length + start) * 4)
            # No sync, as the samples (a msync of a map of them waited 4-25 ms for the
            # disk per chunk): a resumed entry checks each chunk's activations against
            # its checksum, so a power cut costs a chunk separated again, not garbage.
            for k in range(K):
                row = self._H_offset + 4 * (k * self.frames + f0)
                write_at(self._H_fd, rows[k], row)
            self._overview.add(start, block)
            self._chunks.append(
                {
                    "start": int(start),
                    "stop": int(stop),
                    "crc": zlib.crc32(block.data),
                    "frames": [int(f0), int(f1)],
                    "h_crc": zlib.crc32(rows.data),
                }
            )
            self._write_record()
            self._checksum_blocks(start, stop)
        except OSError as exc:
            raise self.cache.write_error(exc) from None

    def _blocks(self, start: int, stop: int) -> list[int]:
        """The blocks of the channels file that samples ``[start, stop)`` of every
        channel touch."""
        rows, length = self.shape[0] * self.shape[1], self.shape[2]
        out: list[int] = []
        for r in range(rows):
            first = (4 * (r * length + start)) // CHECK_BLOCK
            last = (4 * (r * length + stop) - 1) // CHECK_BLOCK
            out.extend(range(max(first, out[-1] + 1 if out else 0), last + 1))
        return out

    def _forget_blocks(self, start: int, stop: int) -> None:
        """Drop the checksums of the blocks samples ``[start, stop)`` touch (a chunk
        written over part of one a dead writer left, of other edges: taken again)."""
        for b in self._blocks(start, stop):
            self._block_crcs.pop(b, None)

    def _checksum_blocks(self, start: int, stop: int) -> None:
        """Take the checksums of the blocks of the channels file that samples
        ``[start, stop)`` touch and that are now wholly written."""
        rows, length = self.shape[0] * self.shape[1], self.shape[2]
        total = 4 * rows * length
        ready = self.ready
        for b in self._blocks(start, stop):
            if b in self._block_crcs:
                continue
            lo, hi = b * CHECK_BLOCK, min((b + 1) * CHECK_BLOCK, total)
            # Every row the block crosses, its samples there all written.
            whole = all(
                covers(
                    ready,
                    max(lo, 4 * q * length) // 4 - q * length,
                    min(hi, 4 * (q + 1) * length) // 4 - q * length,
                )
                for q in range(lo // (4 * length), (hi - 1) // (4 * length) + 1)
            )
            if whole:
                self._block_crcs[b] = self._read_block_crc(lo, hi)

    def _read_block_crc(self, lo: int, hi: int) -> int:
        data = os.pread(self._fd, hi - lo, lo)
        if len(data) != hi - lo:
            raise OSError(errno.EIO, "short read")
        return zlib.crc32(data)

    def _channel_checksums(self) -> list[int]:
        """Every block's checksum of the channels file (those not taken yet read now:
        the blocks of a dead writer's chunks this one kept)."""
        total = 4 * math.prod(self.shape)
        out = []
        for b in range(-(-total // CHECK_BLOCK)):
            crc = self._block_crcs.get(b)
            if crc is None:
                crc = self._read_block_crc(b * CHECK_BLOCK, min((b + 1) * CHECK_BLOCK, total))
            out.append(crc)
        return out

    def file_under(self, key: str) -> None:
        """File the entry under ``key``, its writer having been started under a
        provisional name before the track's key was known: its folder becomes
        ``.partial-<key>`` (a writer killed from then on is resumed under the key),
        unless a folder of that name holds something already (another writer's:
        this one goes on under its provisional name), and :meth:`finish` seals it
        under ``key``. A reader's map of the entry stays valid.

        Raises
        ------
        CacheError
            The folder cannot be renamed for another reason than a taken name.
        """
        target = self.folder.parent / f"{PARTIAL_PREFIX}{key}"
        try:
            os.rename(self.folder, target)  # an empty folder there is replaced
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise self.cache.write_error(exc) from None
        else:
            self.folder = target
        self.key = key

    def discard(self) -> None:
        """Stop writing and remove the partial entry (a provisional one whose track
        got no key)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

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
        """Seal the complete entry, with its channels' overview peaks (:mod:`.overview`,
        taken chunk by chunk as they were written), and move it into place (one
        rename): from then on :meth:`SeparationCache.load` serves it like any other.

        Raises
        ------
        CacheError
            Chunks are missing, or the folder cannot be written.
        """
        if not self.complete:
            raise CacheError(f"cache entry {self.key[:12]} is missing chunks: ready {self.ready}")
        try:
            known = {"channels.f32": self._channel_checksums()}
            self._close_files()
            fields = dict(self.meta)
            names = self.names
            # The record goes last: a reader polling it meanwhile sees every chunk
            # ready, then the entry in place.
            sealed = self.folder.parent / f".tmp-{self.key[:12]}-{uuid.uuid4().hex[:8]}"
            sealed.mkdir()
            for name in ("channels.f32", "W.npy", "H.npy"):
                os.link(self.folder / name, sealed / name)
            self._overview.save(sealed)
            seal_entry(sealed, fields, names, self.shape, known)
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
        if self._H_fd >= 0:
            os.close(self._H_fd)
            self._H_fd = -1

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


def start_chunk_writer(
    cache: SeparationCache,
    key: str,
    names: list[str],
    audio_shape: tuple[int, int],
    *,
    W: np.ndarray,
    frames: int,
    meta: Mapping[str, Any],
) -> ChunkWriter | None:
    """Start, or resume, writing an entry of ``cache`` chunk by chunk
    (:meth:`SeparationCache.chunk_writer`).

    The entry grows in ``.partial-<key>`` in the cache folder: its channels
    file is preallocated at full size and each :meth:`ChunkWriter.add_chunk`
    writes its samples in place and then records them (with their CRC32) in
    ``ready.json``, which a reader polls (:func:`open_partial`).
    :meth:`ChunkWriter.finish` seals the entry (the same ``meta.json`` as
    :func:`.writer.write_entry`'s: complete entries of either writer are alike) and
    renames it into place; :meth:`SeparationCache.load` never sees a partial entry.

    The writer holds a lock on the folder while it lives. A partial entry whose
    writer died (killed, crashed) is resumed: the chunks whose data still match
    their recorded checksums are kept (:attr:`ChunkWriter.ready`), the others
    are dropped and must be written again; one recorded for another shape,
    other channels or other templates is started afresh.

    Parameters
    ----------
    names : list of str
        One per channel.
    audio_shape : (int, int)
        ``(audio_channels, samples)`` of each channel.
    W : np.ndarray, shape (bins, K)
        The templates, stored at once.
    frames : int
        Frames of the activations ``H``, shape (K, frames), filled chunk by chunk.
    meta : mapping
        Fields of ``meta.json`` (``sr``, ``extra``) as :class:`.writer.EntryWriter`'s
        ``meta``.

    Returns
    -------
    ChunkWriter or None
        None when another live process is writing this entry.

    Raises
    ------
    CacheError
        The cache folder cannot be created or written.
    """
    folder = cache.root / f"{PARTIAL_PREFIX}{key}"
    shape = (len(names), int(audio_shape[0]), int(audio_shape[1]))
    W = np.asarray(W, dtype=np.float32)
    lock_fd = -1
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if not try_lock(lock_fd):
            os.close(lock_fd)
            return None
        chunks = _resumable(folder, list(names), shape, frames, W)
        if chunks is None:
            for p in folder.iterdir():
                if p.name != LOCK:
                    p.unlink()
            with (folder / "channels.f32").open("wb") as f:
                f.truncate(4 * math.prod(shape))
            np.save(folder / "W.npy", W)
            H = np.lib.format.open_memmap(
                folder / "H.npy", mode="w+", dtype=np.float32, shape=(W.shape[1], frames)
            )
            del H
            chunks = []
        writer = ChunkWriter(
            cache, key, folder, lock_fd, list(names), shape, frames, dict(meta), chunks
        )
        writer._write_record()
        return writer
    except OSError as exc:
        if lock_fd >= 0:
            try:
                os.close(lock_fd)
            except OSError:
                pass
        raise cache.write_error(exc) from None


def _resumable(
    folder: Path, names: list[str], shape: tuple[int, int, int], frames: int, W: np.ndarray
) -> list[dict[str, Any]] | None:
    """The chunks of a dead writer's partial entry that are still good, or None
    when nothing of it can be kept."""
    try:
        with (folder / RECORD).open(encoding="utf-8") as f:
            record = json.load(f)
        if (
            record["format"] != FORMAT_VERSION
            or record["names"] != names
            or tuple(record["shape"]) != shape
            or record["frames"] != frames
            or (folder / "channels.f32").stat().st_size != 4 * math.prod(shape)
            or not np.array_equal(np.load(folder / "W.npy"), W)
        ):
            return None
        channels = np.memmap(folder / "channels.f32", dtype=np.float32, mode="r", shape=shape)
        H = np.load(folder / "H.npy", mmap_mode="r")
        if H.shape != (W.shape[1], frames):
            return None
        good = []
        for c in record["chunks"]:
            start, stop = int(c["start"]), int(c["stop"])
            f0, f1 = (int(v) for v in c["frames"])
            data = np.ascontiguousarray(channels[:, :, start:stop])
            h = np.ascontiguousarray(H[:, f0:f1])
            if zlib.crc32(data.data) == c["crc"] and zlib.crc32(h.data) == c["h_crc"]:
                good.append(c)
        del channels, H
        return good
    except (OSError, ValueError, KeyError, TypeError):
        return None
