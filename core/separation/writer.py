"""Writing a finished cache entry whole (:func:`write_entry`, its
:class:`EntryWriter`), and an entry rewritten in the mixer's channel order
(:func:`reorder_entry`).

Both collect the entry in a temporary folder (``.tmp-<key>-<random>``) in the
cache folder, seal it (:func:`.entry.seal_entry`) and rename it into place in one
step, so a reader never sees a half-written entry. Entries written chunk by chunk
are :mod:`.partial`'s.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audiofile.scratch import write_at
from .entry import seal_entry
from .overview import OVERVIEW_FILE, PeakAccumulator

if TYPE_CHECKING:  # annotations only: cache.py imports this module
    from .cache import SeparationCache

__all__ = ["EntryWriter", "reorder_entry", "write_entry"]

_COPY_SAMPLES = 1 << 20  # samples of a row per write_at when an entry is rewritten


class EntryWriter:
    """Collects one entry in a temporary folder; see :func:`write_entry`."""

    def __init__(self, tmp: Path, n_channels: int, audio_shape: tuple[int, int]) -> None:
        self.tmp = tmp
        self.n_channels = n_channels
        self.audio_shape = audio_shape
        self._names: dict[int, str] = {}
        self._overview = PeakAccumulator(n_channels, audio_shape[1])
        self.meta: dict[str, Any] = {}
        self._fd = os.open(tmp / "channels.f32", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    @property
    def names(self) -> list[str]:
        """The names of the channels added so far, in channel order."""
        return [self._names[i] for i in sorted(self._names)]

    def add_channel(self, name: str, audio: np.ndarray, *, index: int | None = None) -> None:
        """Write one channel's audio, shape ``audio_shape``, straight to disk: as channel
        ``index`` (channels may come in any order), by default the next one."""
        if audio.shape != self.audio_shape:
            raise ValueError(
                f"channel {name!r} has shape {audio.shape}, expected {self.audio_shape}"
            )
        if index is None:
            index = len(self._names)
        if not 0 <= index < self.n_channels or index in self._names:
            raise ValueError(f"channel {index} of {self.n_channels} is taken or out of range")
        data = np.ascontiguousarray(audio, dtype=np.float32)
        write_at(self._fd, data, index * data.nbytes)
        self._overview.add_channel(index, data)
        self._names[index] = name

    def add_array(self, name: str, array: np.ndarray) -> None:
        np.save(self.tmp / f"{name}.npy", np.asarray(array))

    def _finish(self) -> None:
        # No fsync: after a power cut a renamed entry may hold garbage, which the
        # size and checksum checks on load catch (the entry is then rebuilt);
        # syncing a gigabyte on every separation would cost more than that.
        self._close()
        if len(self.names) != self.n_channels:
            raise ValueError(f"entry has {len(self.names)} channels, expected {self.n_channels}")
        self._overview.save(self.tmp)
        seal_entry(self.tmp, self.meta, self.names, (self.n_channels, *self.audio_shape))

    def _abort(self) -> None:
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def reorder_entry(path: Path, meta: dict[str, Any], order: list[int]) -> None:
    """Rewrite the checked entry at ``path`` with its channels in ``order`` (channel
    ``j`` becomes old channel ``order[j]``; the groups follow), atomically: the new
    entry is made aside, then takes the old one's place in two renames.

    It costs one copy of the channels on disk, once (about 1 s for a 3-minute
    track's 250 MB), never a copy in memory: each row goes from the old file's map
    to the new file :data:`_COPY_SAMPLES` samples at a time. A reader of the old entry keeps
    its memory map (the old file lives on until unmapped).

    Raises
    ------
    OSError
        The entry cannot be rewritten now (a full disk; another process
        rewriting it at the same moment): it is kept as it was.
    """
    shape = tuple(int(n) for n in meta["shape"])
    old = np.memmap(path / "channels.f32", dtype=np.float32, mode="r", shape=shape)
    root, key = path.parent, path.name
    tmp = root / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
    aside = root / f".tmp-old-{key[:12]}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        fd = os.open(tmp / "channels.f32", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            for j, src in enumerate(order):
                for c in range(shape[1]):
                    row = (j * shape[1] + c) * shape[2]
                    for start in range(0, shape[2], _COPY_SAMPLES):
                        piece = np.ascontiguousarray(old[src, c, start : start + _COPY_SAMPLES])
                        write_at(fd, piece, 4 * (row + start))
        finally:
            os.close(fd)
        del old
        for name in meta["files"]:
            if name == OVERVIEW_FILE:
                _reorder_overview(path / name, tmp / name, order)
            elif name != "channels.f32":
                shutil.copy2(path / name, tmp / name)
        fields = {k: v for k, v in meta.items() if k not in ("format", "names", "shape", "files")}
        extra = dict(fields.get("extra", {}))
        groups = extra.get("groups")
        if isinstance(groups, list) and len(groups) == len(order):
            extra["groups"] = [groups[i] for i in order]
        fields["extra"] = extra
        seal_entry(tmp, fields, [meta["names"][i] for i in order], shape)
        os.rename(path, aside)
        try:
            os.rename(tmp, path)
        except OSError:
            os.rename(aside, path)  # put the old entry back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)


def _reorder_overview(src: Path, dst: Path, order: list[int]) -> None:
    """Write the overview ``src`` with its rows in ``order``; one that cannot be read
    as the channels' peaks is left out (the daemon then computes it)."""
    try:
        peaks = np.load(src, allow_pickle=False)
        if peaks.dtype != np.uint8 or peaks.ndim != 2 or len(peaks) != len(order):
            return
    except (OSError, EOFError, ValueError):  # EOFError: an empty file
        return
    np.save(dst, peaks[order])


@contextmanager
def write_entry(
    cache: SeparationCache, key: str, n_channels: int, audio_shape: tuple[int, int]
) -> Iterator[EntryWriter]:
    """Write an entry of ``cache`` atomically (:meth:`SeparationCache.writer`).

    Use as ``with write_entry(cache, key, n, (channels, samples)) as w:`` then
    ``w.add_channel`` n times, ``w.add_array('W', W)``, ``w.meta[...] = ...``.
    Each channel's overview peaks (:mod:`.overview`) are taken as it is written
    and stored beside the channels. On leaving the block the entry appears in one
    rename and the cache evicts what no longer fits; on any error the temporary
    folder is removed and nothing is left behind.

    Raises
    ------
    CacheError
        The cache folder cannot be created or written (full disk, permissions).
    """
    tmp = cache.root / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
    w: EntryWriter | None = None
    try:
        tmp.mkdir(parents=True)
        w = EntryWriter(tmp, n_channels, audio_shape)
        yield w
        w._finish()
        final = cache.root / key
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another process stored the same key first; its entry is as good.
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        if w is not None:
            w._abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise cache.write_error(exc) from None
    except BaseException:
        if w is not None:
            w._abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache.evict(keep=key)
