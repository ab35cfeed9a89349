"""Scratch files for decoded audio: unlinked files in a folder (the cache's), mapped,
so a long track's samples live in the page cache and not in the process's heap.

A file is unlinked as soon as it is made: it goes when its last descriptor and map do,
whatever ends the process.
"""

from __future__ import annotations

import mmap
import os
import secrets
from pathlib import Path

import numpy as np

__all__ = ["new_file", "scratch_array"]


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


def scratch_array(folder: str | os.PathLike[str], shape: tuple[int, ...]) -> np.ndarray:
    """A writable float32 array of zeros, ``shape``, mapped from a new unlinked file
    in ``folder`` (its pages written back there, never counted as anonymous memory).

    Raises
    ------
    OSError
        ``folder`` cannot hold the file (missing and not creatable, read-only, full).
    """
    size = 4 * int(np.prod(shape, dtype=np.int64))
    fd = new_file(folder, max(size, 1))
    try:
        buffer = mmap.mmap(fd, max(size, 1))
    finally:
        os.close(fd)  # the map keeps the file
    return np.ndarray(shape, np.float32, buffer=buffer)
