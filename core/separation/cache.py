"""On-disk cache of separations.

An entry is a folder named by a hash of the decoded audio, every separation
parameter and :data:`FORMAT_VERSION`. It is written into a temporary folder and
renamed into place in one step, so a reader never sees a half-written entry,
and read back memory-mapped, so a cached track starts at once and its audio
costs no resident memory until played.

Every file carries a CRC32 per 1 MiB block, and every byte is checked before
an entry's audio is used: :meth:`SeparationCache.load` checks them at once by
default; a player that wants to start sooner opens with ``verify=False`` and
calls :meth:`SeparationCache.verify` from a background thread before the
channels go live (the daemon plays the original track meanwhile). An entry is
deleted only when it is proven damaged (a checksum, size or format mismatch, a
missing file); an entry that cannot be read now (permissions, too many open
files) is left alone. Both return a :class:`CacheLookup`: what was found, or
why not; the caller logs it.

An entry can also grow chunk by chunk (:meth:`SeparationCache.chunk_writer`) in a
``.partial-<key>`` folder, readable meanwhile as a memory map and the ranges
ready so far (:meth:`SeparationCache.open_partial`), and moved into place, sealed
like any other, once every chunk is in.

Layout of an entry::

    meta.json      format version, names, shapes, rate, parameters, block checksums
    channels.f32   raw float32, shape (n_channels, audio_channels, samples)
    W.npy, H.npy   NMF templates (bins, K) and activations (K, frames)

A partial entry has the same files but ``meta.json``, preallocated, and
``ready.json`` (the chunks written so far: sample and frame ranges, a CRC32 of
each), and ``writer.lock``, which its writer holds locked while it lives.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..audiofile.roles import stem_layout
from ..errors import CacheError
from .entry import FORMAT_VERSION, DamagedEntry, block_checksums, seal_entry
from .partial import LOCK, PARTIAL_PREFIX, RECORD, ChunkWriter, PartialEntry, try_lock

__all__ = [
    "CacheEntry",
    "CacheLookup",
    "EntryChecker",
    "LookupStatus",
    "SeparationCache",
    "cache_key",
    "default_cache_dir",
]

_DEFAULT_MAX_BYTES = 20 * 2**30
_MAX_GB = 2**20  # 1 PiB: more than any disk, and finite
# Less than one 3-minute track's channels (about 250 MB) would be emptied on every write.
_MIN_GB = 0.25
_COPY_SAMPLES = 1 << 20  # per audio channel: 4 MiB at a time when an entry is rewritten


def default_cache_dir() -> Path:
    """``$STEMDECK_CACHE`` if set, else the platform's user cache folder."""
    env = os.environ.get("STEMDECK_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("stemdeck"))


def cache_key(y: np.ndarray, sr: int, params: Mapping[str, Any]) -> str:
    """Hex key from the decoded audio, its rate, every parameter and the format version."""
    h = hashlib.blake2b(digest_size=20)
    described = {
        "format": FORMAT_VERSION,
        "sr": int(sr),
        "shape": list(y.shape),
        "dtype": str(y.dtype),
        "params": dict(params),
    }
    h.update(json.dumps(described, sort_keys=True).encode())
    h.update(np.ascontiguousarray(y).data)
    return h.hexdigest()


@dataclass
class CacheEntry:
    """A cached separation; ``channels`` and ``H`` are read-only memory maps."""

    key: str
    path: Path
    channels: np.ndarray
    names: list[str]
    sr: int
    W: np.ndarray
    H: np.ndarray
    extra: dict[str, Any]
    verified: bool = True


LookupStatus = Literal["found", "absent", "damaged", "unreadable"]


@dataclass(frozen=True)
class CacheLookup:
    """What a look-up in the cache found, or why it found nothing.

    Attributes
    ----------
    status : {"found", "absent", "damaged", "unreadable"}
        ``found``: the entry is there (and checked as far as asked);
        ``absent``: no entry under the key; ``damaged``: the entry was proven
        damaged and removed; ``unreadable``: it cannot be read just now
        (permissions, too many open files) and is kept.
    entry : CacheEntry or None
        The entry, when found (None from :meth:`SeparationCache.verify` given
        a folder).
    problem : str or None
        Why not, one line for the log: set when damaged or unreadable.
    """

    status: LookupStatus
    entry: CacheEntry | None = None
    problem: str | None = None

    @property
    def found(self) -> bool:
        return self.status == "found"


class EntryChecker:
    """Checks one entry's blocks piece by piece: the audio under a play head first.

    Made by :meth:`SeparationCache.checker`, which has checked the format and the
    sizes. :meth:`files` checks every file but the channels (the templates and
    activations); :meth:`samples` the blocks of ``channels.f32`` that hold the
    samples ``[start, stop)`` of every channel. A block is read once, however many
    ranges share it. Once every range has been checked, every byte of the entry has.

    Both return a :class:`CacheLookup`: ``found`` (checked), ``damaged`` (a block
    is wrong: the entry is removed; a memory map of it stays readable) or
    ``unreadable`` (kept).
    """

    def __init__(self, cache: SeparationCache, entry: CacheEntry, meta: dict[str, Any]) -> None:
        self.cache = cache
        self.entry = entry
        self._files = meta["files"]
        shape = tuple(int(s) for s in meta["shape"])
        self._planes = shape[0] * shape[1]
        self._length = shape[2]
        info = self._files["channels.f32"]
        self._block = int(info["block"])
        self._crc = [int(c) for c in info["crc"]]
        if len(self._crc) != -(-int(info["size"]) // self._block):
            raise DamagedEntry(f"channels.f32 has {len(self._crc)} block checksums")
        self._checked = bytearray(len(self._crc))

    @property
    def complete(self) -> bool:
        """Every block of the channels has been checked."""
        return all(self._checked)

    def files(self) -> CacheLookup:
        """Check every block of every file but ``channels.f32``."""
        path = self.entry.path
        for name, info in self._files.items():
            if name == "channels.f32":
                continue
            try:
                if block_checksums(path / name, int(info["block"])) != list(info["crc"]):
                    raise DamagedEntry(f"{name} checksum mismatch")
            except FileNotFoundError as exc:
                return self.cache._damaged(path, exc)
            except OSError as exc:
                return self._unreadable(exc)
            except DamagedEntry as exc:
                return self.cache._damaged(path, exc)
        return CacheLookup("found", self.entry)

    def samples(self, start: int, stop: int) -> CacheLookup:
        """Check the blocks of ``channels.f32`` holding samples ``[start, stop)`` of
        every channel (the whole entry once every range has been asked for)."""
        start, stop = max(0, int(start)), min(self._length, int(stop))
        path = self.entry.path / "channels.f32"
        block = self._block
        try:
            with path.open("rb", buffering=0) as f:
                buf = bytearray(block)
                view = memoryview(buf)
                for plane in range(self._planes):
                    first = (plane * self._length + start) * 4 // block
                    last = ((plane * self._length + stop) * 4 - 1) // block
                    for b in range(first, last + 1):
                        if self._checked[b]:
                            continue
                        f.seek(b * block)
                        n = f.readinto(buf)
                        if zlib.crc32(view[:n]) != self._crc[b]:
                            raise DamagedEntry("channels.f32 checksum mismatch")
                        self._checked[b] = 1
        except FileNotFoundError as exc:
            return self.cache._damaged(self.entry.path, exc)
        except OSError as exc:
            return self._unreadable(exc)
        except DamagedEntry as exc:
            return self.cache._damaged(self.entry.path, exc)
        if self.complete:
            self.entry.verified = True
        return CacheLookup("found", self.entry)

    def _unreadable(self, exc: OSError) -> CacheLookup:
        return CacheLookup(
            "unreadable", problem=f"cache entry {self.entry.path.name[:12]} is unreadable ({exc})"
        )


class EntryWriter:
    """Collects one entry in a temporary folder; see :meth:`SeparationCache.writer`."""

    def __init__(self, tmp: Path, n_channels: int, audio_shape: tuple[int, int]) -> None:
        self.tmp = tmp
        self.n_channels = n_channels
        self.audio_shape = audio_shape
        self._names: dict[int, str] = {}
        self._file = (tmp / "channels.f32").open("wb")
        self.meta: dict[str, Any] = {}

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
        self._file.seek(index * data.nbytes)
        data.tofile(self._file)
        self._names[index] = name

    def add_array(self, name: str, array: np.ndarray) -> None:
        np.save(self.tmp / f"{name}.npy", np.asarray(array))

    def _finish(self) -> None:
        # No fsync: after a power cut a renamed entry may hold garbage, which the
        # size and checksum checks on load catch (the entry is then rebuilt);
        # syncing a gigabyte on every separation would cost more than that.
        self._file.close()
        if len(self.names) != self.n_channels:
            raise ValueError(f"entry has {len(self.names)} channels, expected {self.n_channels}")
        seal_entry(self.tmp, self.meta, self.names, (self.n_channels, *self.audio_shape))

    def _abort(self) -> None:
        if not self._file.closed:
            self._file.close()


def _max_bytes_from_env() -> int:
    """The cache's size limit from ``$STEMDECK_CACHE_MAX_GB`` (GiB), else 20 GiB.

    Raises
    ------
    CacheError
        The value is not a finite number from :data:`_MIN_GB` to :data:`_MAX_GB`.
    """
    env = os.environ.get("STEMDECK_CACHE_MAX_GB")
    if not env:
        return _DEFAULT_MAX_BYTES
    try:
        gib = float(env)
    except ValueError:
        problem = "is not a number"
    else:
        if not math.isfinite(gib):
            problem = "is not a finite number"
        elif gib < _MIN_GB:
            problem = "leaves no room: the cache would empty itself on every write"
        elif gib > _MAX_GB:
            problem = f"is more than {_MAX_GB} GiB"
        else:
            return int(gib * 2**30)
    raise CacheError(
        f"STEMDECK_CACHE_MAX_GB={env!r} {problem}; set it to the cache's size in GiB, "
        f"at least {_MIN_GB} and at most {_MAX_GB} (unset, it is {_DEFAULT_MAX_BYTES // 2**30})"
    )


class SeparationCache:
    """Separations on disk, keyed by :func:`cache_key`.

    Parameters
    ----------
    root : path-like, optional
        Cache folder; default :func:`default_cache_dir`.
    max_bytes : int, optional
        After a store, least recently used entries are removed until the cache
        fits (default 20 GiB, or ``$STEMDECK_CACHE_MAX_GB``: a number of GiB above 0
        and at most 1048576; any other value is a :class:`CacheError`).
    verify_on_load : bool
        Default of :meth:`load`'s ``verify``. The daemon sets it False and
        verifies in the background (:meth:`verify`) while the original plays.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int | None = None,
        verify_on_load: bool = True,
    ) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        if max_bytes is None:
            max_bytes = _max_bytes_from_env()
        self.max_bytes = max_bytes
        self.verify_on_load = verify_on_load

    # -- reading -----------------------------------------------------------------
    def load(self, key: str, *, verify: bool = True) -> CacheLookup:
        """The entry for ``key``, or why there is none.

        With ``verify`` (default) every block checksum is checked first; with
        ``verify=False`` only the format and sizes are, and ``entry.verified`` is
        False: call :meth:`verify` before the audio is used.

        Returns
        -------
        CacheLookup
            ``found`` with the entry; ``absent``; ``damaged``: the entry was
            removed; ``unreadable``: it cannot be read just now and is kept. The
            last two say why in ``problem``, a line for the log.
        """
        path = self.root / key
        if not path.is_dir():
            return CacheLookup("absent")
        verify = verify and self.verify_on_load
        try:
            entry = self._open(key, path, verify=verify)
        except FileNotFoundError as exc:  # a listed file is missing: damaged
            return self._damaged(path, exc)
        except OSError as exc:
            return CacheLookup(
                "unreadable",
                problem=(
                    f"cache entry {key[:12]} is unreadable ({exc.strerror or exc}); "
                    "separating again, the entry is kept"
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            return self._damaged(path, exc)
        try:
            os.utime(path / "meta.json")  # recency for the LRU eviction
        except OSError:
            pass
        return CacheLookup("found", entry)

    def verify(self, entry: CacheEntry | Path) -> CacheLookup:
        """Check every block of an entry's files; remove the entry if one is wrong.

        Returns
        -------
        CacheLookup
            ``found`` when every byte matches (with the entry, now
            ``verified``, when one was given rather than a folder);
            ``damaged``: the entry was removed; ``unreadable`` (an OSError other
            than a missing file): the entry is kept.
        """
        path = entry.path if isinstance(entry, CacheEntry) else Path(entry)
        try:
            with (path / "meta.json").open(encoding="utf-8") as f:
                meta = json.load(f)
            self._check(path, meta, full=True)
        except FileNotFoundError as exc:
            return self._damaged(path, exc)
        except OSError as exc:
            return CacheLookup(
                "unreadable", problem=f"cache entry {path.name[:12]} is unreadable ({exc})"
            )
        except (ValueError, KeyError, TypeError) as exc:
            return self._damaged(path, exc)
        if isinstance(entry, CacheEntry):
            entry.verified = True
            return CacheLookup("found", entry)
        return CacheLookup("found")

    def checker(self, entry: CacheEntry) -> EntryChecker | CacheLookup:
        """An :class:`EntryChecker` for an entry opened with ``verify=False``, to check
        its blocks piece by piece; or, when its ``meta.json`` is not readable now or
        no longer matches the files' sizes, the :class:`CacheLookup` saying why
        (``damaged``: removed; ``unreadable``: kept)."""
        path = entry.path
        try:
            with (path / "meta.json").open(encoding="utf-8") as f:
                meta = json.load(f)
            self._check(path, meta, full=False)
            return EntryChecker(self, entry, meta)
        except FileNotFoundError as exc:
            return self._damaged(path, exc)
        except OSError as exc:
            return CacheLookup(
                "unreadable", problem=f"cache entry {path.name[:12]} is unreadable ({exc})"
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return self._damaged(path, exc)

    @staticmethod
    def _damaged(path: Path, exc: BaseException) -> CacheLookup:
        shutil.rmtree(path, ignore_errors=True)
        return CacheLookup(
            "damaged", problem=f"cache entry {path.name[:12]} was damaged ({exc}); rebuilding it"
        )

    @staticmethod
    def _check(path: Path, meta: dict[str, Any], *, full: bool) -> None:
        if meta.get("format") != FORMAT_VERSION:
            raise DamagedEntry(f"format {meta.get('format')} is not {FORMAT_VERSION}")
        for name, info in meta["files"].items():
            p = path / name
            size = p.stat().st_size
            if size != info["size"]:
                raise DamagedEntry(f"{name} has {size} bytes, expected {info['size']}")
            if full and block_checksums(p, int(info["block"])) != list(info["crc"]):
                raise DamagedEntry(f"{name} checksum mismatch")

    def _open(self, key: str, path: Path, *, verify: bool) -> CacheEntry:
        with (path / "meta.json").open(encoding="utf-8") as f:
            meta = json.load(f)
        layout = stem_layout([str(n) for n in meta["names"]])
        if not layout.identity:
            # An entry from before one order held every source (drums, bass, vocals,
            # other): rewritten once in that order, then opened as any other.
            self._check(path, meta, full=True)  # every byte, before it is copied
            try:
                self._reorder(key, path, meta, list(layout.order))
            except FileNotFoundError as exc:  # another process moved it: not damaged
                raise OSError(errno.EBUSY, f"being rewritten elsewhere ({exc})") from None
            with (path / "meta.json").open(encoding="utf-8") as f:
                meta = json.load(f)
            verify = False  # checked just now, and written from checked data
        self._check(path, meta, full=verify)
        shape = tuple(int(s) for s in meta["shape"])
        channels = np.memmap(path / "channels.f32", dtype=np.float32, mode="r", shape=shape)
        W = np.load(path / "W.npy")
        H = np.load(path / "H.npy", mmap_mode="r")  # (K, frames): grows with the track
        return CacheEntry(
            key=key,
            path=path,
            channels=channels,
            names=list(meta["names"]),
            sr=int(meta["sr"]),
            W=W,
            H=H,
            extra=dict(meta.get("extra", {})),
            verified=verify,
        )

    def _reorder(self, key: str, path: Path, meta: dict[str, Any], order: list[int]) -> None:
        """Rewrite the checked entry at ``path`` with its channels in ``order`` (channel
        ``j`` becomes old channel ``order[j]``; the groups follow), atomically: the new
        entry is made aside, then takes the old one's place in two renames.

        It costs one copy of the channels on disk, once (about 1 s for a 3-minute
        track's 250 MB), never a copy in memory: the channels are streamed through
        a buffer of :data:`_COPY_SAMPLES` samples. A reader of the old entry keeps
        its memory map (the old file lives on until unmapped).

        Raises
        ------
        OSError
            The entry cannot be rewritten now (a full disk; another process
            rewriting it at the same moment): it is kept as it was.
        """
        shape = tuple(int(n) for n in meta["shape"])
        old = np.memmap(path / "channels.f32", dtype=np.float32, mode="r", shape=shape)
        tmp = self.root / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
        aside = self.root / f".tmp-old-{key[:12]}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            with (tmp / "channels.f32").open("wb") as f:
                for src in order:
                    for start in range(0, shape[2], _COPY_SAMPLES):
                        np.ascontiguousarray(old[src, :, start : start + _COPY_SAMPLES]).tofile(f)
            del old
            for name in meta["files"]:
                if name != "channels.f32":
                    shutil.copy2(path / name, tmp / name)
            fields = {
                k: v for k, v in meta.items() if k not in ("format", "names", "shape", "files")
            }
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

    # -- writing -----------------------------------------------------------------
    @contextmanager
    def writer(
        self, key: str, n_channels: int, audio_shape: tuple[int, int]
    ) -> Iterator[EntryWriter]:
        """Write an entry atomically.

        Use as ``with cache.writer(key, n, (channels, samples)) as w:`` then
        ``w.add_channel`` n times, ``w.add_array('W', W)``, ``w.meta[...] = ...``.
        On leaving the block the entry appears in one rename; on any error the
        temporary folder is removed and nothing is left behind.

        Raises
        ------
        CacheError
            The cache folder cannot be created or written (full disk, permissions).
        """
        tmp = self.root / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
        w: EntryWriter | None = None
        try:
            tmp.mkdir(parents=True)
            w = EntryWriter(tmp, n_channels, audio_shape)
            yield w
            w._finish()
            final = self.root / key
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
            raise self.write_error(exc) from None
        except BaseException:
            if w is not None:
                w._abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.evict(keep=key)

    def write_error(self, exc: OSError) -> CacheError:
        """The one error for a failed cache write: disk full, or the OS's reason."""
        if exc.errno == errno.ENOSPC:
            return CacheError(
                f"disk full writing the cache in {str(self.root)!r}; free space or "
                "point STEMDECK_CACHE at another disk"
            )
        return CacheError(f"cannot write the cache in {str(self.root)!r}: {exc.strerror or exc}")

    # -- chunk by chunk ----------------------------------------------------------
    def chunk_writer(
        self,
        key: str,
        names: list[str],
        audio_shape: tuple[int, int],
        *,
        W: np.ndarray,
        frames: int,
        meta: Mapping[str, Any],
    ) -> ChunkWriter | None:
        """Start, or resume, writing an entry chunk by chunk.

        The entry grows in ``.partial-<key>`` in the cache folder: its channels
        file is preallocated at full size and each :meth:`ChunkWriter.add_chunk`
        writes its samples in place and then records them (with their CRC32) in
        ``ready.json``, which a reader polls (:meth:`open_partial`).
        :meth:`ChunkWriter.finish` seals the entry (the same ``meta.json`` as
        :meth:`writer`'s: complete entries of either writer are alike) and renames
        it into place; :meth:`load` never sees a partial entry.

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
            Fields of ``meta.json`` (``sr``, ``extra``) as :meth:`writer`'s ``w.meta``.

        Returns
        -------
        ChunkWriter or None
            None when another live process is writing this entry.

        Raises
        ------
        CacheError
            The cache folder cannot be created or written.
        """
        folder = self.root / f"{PARTIAL_PREFIX}{key}"
        shape = (len(names), int(audio_shape[0]), int(audio_shape[1]))
        W = np.asarray(W, dtype=np.float32)
        lock_fd = -1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            if not try_lock(lock_fd):
                os.close(lock_fd)
                return None
            chunks = self._resumable(folder, list(names), shape, frames, W)
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
                self, key, folder, lock_fd, list(names), shape, frames, dict(meta), chunks
            )
            writer._write_record()
            return writer
        except OSError as exc:
            if lock_fd >= 0:
                try:
                    os.close(lock_fd)
                except OSError:
                    pass
            raise self.write_error(exc) from None

    @staticmethod
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

    def open_partial(self, key: str) -> PartialEntry | None:
        """An entry being written chunk by chunk (by any process), for reading.

        Returns
        -------
        PartialEntry or None
            A read-only memory map of the whole entry and its ready ranges
            (:meth:`PartialEntry.ready`, to poll); None when there is no partial
            entry under ``key`` or it cannot be read (a complete one is :meth:`load`'s).
        """
        folder = self.root / f"{PARTIAL_PREFIX}{key}"
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

    def may_hold(self, sr: int, audio_shape: tuple[int, int]) -> bool:
        """Whether an entry, finished or partial, may be the separation of audio of
        ``audio_shape`` ``(channels, samples)`` at ``sr``: False only when none is
        (a key hashes the shape and the rate), so the audio need not be hashed to
        know it is not cached. Any entry that cannot be read counts as a maybe.
        """
        if not self.root.is_dir():
            return False
        want = [int(audio_shape[0]), int(audio_shape[1])]
        for p in self.root.iterdir():
            if p.name.startswith(PARTIAL_PREFIX):
                record = p / RECORD
            elif p.name.startswith(".") or not p.is_dir():
                continue
            else:
                record = p / "meta.json"
            try:
                with record.open(encoding="utf-8") as f:
                    meta = json.load(f)
                fields = meta.get("meta", meta)  # a partial record keeps sr in its meta
                if list(meta["shape"])[1:] == want and int(fields["sr"]) == int(sr):
                    return True
            except (OSError, ValueError, KeyError, TypeError):
                return True
        return False

    def evict(self, *, keep: str) -> None:
        """Remove the least recently used entries past the size limit, never ``keep``."""
        entries = []
        total = 0
        for p in self.root.iterdir():
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                size = sum(f.stat().st_size for f in p.iterdir())
                used = (p / "meta.json").stat().st_mtime
            except OSError:
                continue
            entries.append((used, size, p))
            total += size
        for _used, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            if p.name == keep:
                continue
            shutil.rmtree(p, ignore_errors=True)
            total -= size

    def clean_stale(self, older_than: float = 3600.0) -> None:
        """Remove temporary folders left by a process killed mid-write, and partial
        entries (:meth:`chunk_writer`) no process has written for ``older_than`` s."""
        if not self.root.is_dir():
            return
        now = time.time()
        for p in self.root.glob(".tmp-*"):
            try:
                if now - p.stat().st_mtime > older_than:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass
        for p in self.root.glob(f"{PARTIAL_PREFIX}*"):
            try:
                if now - p.stat().st_mtime <= older_than:
                    continue
                fd = os.open(p / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                continue
            try:
                if try_lock(fd):  # no live writer
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass
            finally:
                os.close(fd)
