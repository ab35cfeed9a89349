"""Scratch files for decoded audio: unlinked files in a folder (the cache's), written
with ``pwrite`` and then mapped read-only, so a long track's samples live in the page
cache and not in the process's heap.

A file is unlinked as soon as it is made: it goes when its last descriptor and map do,
whatever ends the process. It is written with ``pwrite``, never through a writable
map: a disk that fills up is then an ``OSError`` (ENOSPC) the caller can answer,
where a store into a map of a sparse file past the disk's room is a SIGBUS that
kills the process.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import weakref
from pathlib import Path

import numpy as np

__all__ = ["WRITE_PIECE", "Rows", "map_file", "mapped_file", "mapping_of", "new_file", "write_at"]

#: Bytes per ``pwrite`` of :func:`write_at`. The kernel copies a write into the page
#: cache a folio at a time and makes the folios as large as the write allows (up to
#: 2 MiB), and a kernel without full preemption (``PREEMPT_NONE`` or ``_VOLUNTARY``,
#: the common defaults) lets no other thread on that CPU run until a folio is taken and
#: filled: the audio thread, woken on time, waited 2.5 to 3.5 ms behind the worker's
#: rows written whole (2 to 4 MB) on this project's 2-core VM.
#: 64 KiB folios bound that at about 0.1 ms (docs/architecture.md, "Writes and the
#: kernel's preemption"; ``bench/write_latency.py``), at no cost that shows: 256 MB of new
#: file took 62-75 ms either way, in three rounds of each.
WRITE_PIECE = 64 << 10

#: A descriptor of the file behind each live map of :func:`map_file`, by the map's
#: ``id`` (the entry goes with the map): :func:`mapped_file` hands it to a process.
#: No lock: a dict's get, set and pop are atomic, and the garbage collector may free a
#: map (and so call :func:`_forget`) inside any of them, in any thread.
_FILES: dict[int, int] = {}


def new_file(folder: str | os.PathLike[str], size: int) -> int:
    """The descriptor of a new file of ``size`` bytes in ``folder``, already unlinked
    (sparse: what is never written takes no room)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    name = Path(folder) / f".tmp-original-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.unlink(name)
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_at(fd: int, a: np.ndarray, offset: int) -> None:
    """All of the contiguous array ``a`` into ``fd`` at ``offset``, :data:`WRITE_PIECE`
    bytes per call."""
    view = memoryview(a.data).cast("B")
    while view:
        n = os.pwrite(fd, view[:WRITE_PIECE], offset)
        if n <= 0:  # a regular file takes some of any write, or raises
            raise OSError(errno.EIO, f"write of {len(view)} bytes at {offset} took none")
        view, offset = view[n:], offset + n


def map_file(fd: int, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only float32 memory map of ``fd``'s first ``shape`` samples (``fd`` may
    be closed after: the map keeps the file; :func:`mapped_file` finds it again)."""
    size = 4 * int(np.prod(shape, dtype=np.int64))
    mapping = mmap.mmap(fd, max(size, 1), prot=mmap.PROT_READ)
    try:
        kept = os.dup(fd)
    except OSError:  # no descriptor left: the map works, only mapped_file will not find it
        kept = -1
    if kept >= 0:
        _FILES[id(mapping)] = kept
        weakref.finalize(mapping, _forget, id(mapping), kept)
    return np.ndarray(shape, np.float32, buffer=mapping)


def _forget(key: int, fd: int) -> None:
    if _FILES.get(key) == fd:  # a map of the same id is made only once this one is gone
        _FILES.pop(key, None)
    os.close(fd)


def mapping_of(array: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The memory map under ``array`` and the array's byte offset in it, or None.

    Follows the public ``base`` chain (a ``np.memmap``'s base is its ``mmap``).
    """
    base: object = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None:
        return None
    start = np.frombuffer(base, dtype=np.uint8, count=1).ctypes.data
    return base, int(array.ctypes.data - start)


def mapped_file(a: np.ndarray) -> tuple[int, int] | None:
    """Where the samples of ``a``, an array over a map of :func:`map_file` (or a view
    of one), are: a new descriptor of the file (the caller closes it) and the byte
    offset of ``a``'s first sample in it; None when ``a`` is not such an array, its
    map is closed, or no descriptor is left. Another process maps the file from it
    with no copy (daemon/beats_worker.py)."""
    found = mapping_of(a)
    if found is None or found[0].closed:
        return None
    fd = _FILES.get(id(found[0]), -1)  # open while the map lives
    if fd < 0:
        return None
    try:
        return os.dup(fd), found[1]
    except OSError:
        return None


class Rows:
    """``channels`` rows of ``length`` float32 samples at byte ``offset`` of the file
    ``fd`` (row after row), filled from their start a block at a time.

    :meth:`put` takes ``(1 or channels, samples)`` (one row is written to every row),
    up to :attr:`length` samples in all; :meth:`flush` writes what it holds.

    Raises
    ------
    OSError
        From :meth:`put` or :meth:`flush`: the file cannot take it (a full disk).
    """

    def __init__(self, fd: int, offset: int, channels: int, length: int, block: int = 1 << 16):
        self.fd = fd
        self.offset = offset
        self.channels = channels
        self.length = length
        self.count = 0  # samples taken
        self._written = 0  # samples written
        self._buf = np.empty((channels, block), np.float32)

    @property
    def full(self) -> bool:
        return self.count == self.length

    @property
    def landed(self) -> int:
        """Samples written to the file (readable through a map of it) so far."""
        return self._written

    def put(self, y: np.ndarray) -> None:
        y = y[:, : self.length - self.count]
        block = self._buf.shape[1]
        while y.shape[1]:
            held = self.count - self._written
            take = min(y.shape[1], block - held)
            self._buf[:, held : held + take] = y[:, :take]
            self.count += take
            y = y[:, take:]
            if self.count - self._written == block:
                self.flush()

    def flush(self) -> None:
        held = self.count - self._written
        for c in range(self.channels):
            at = self.offset + 4 * (c * self.length + self._written)
            write_at(self.fd, self._buf[c, :held], at)
        self._written = self.count
