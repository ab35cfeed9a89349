"""On-disk cache of separations: :class:`SeparationCache`.

An entry is a folder named by a hash of the decoded audio, every separation
parameter and :data:`~.entry.FORMAT_VERSION` (:func:`cache_key`). It is written
into a temporary folder and renamed into place in one step (:mod:`.writer`), so a
reader never sees a half-written entry, and read back memory-mapped, so a cached
track starts at once and its audio costs no resident memory until played.

Every byte is checked before an entry's audio is used (:mod:`.checks`):
:meth:`SeparationCache.load` checks them at once by default; a player that wants
to start sooner opens with ``verify=False`` and calls
:meth:`SeparationCache.verify` from a background thread before the channels go
live (the daemon plays the original track meanwhile). An entry is deleted only
when it is proven damaged; an entry that cannot be read now is left alone. Both
return a :class:`~.checks.CacheLookup`: what was found, or why not; the caller
logs it.

An entry can also grow chunk by chunk (:meth:`SeparationCache.chunk_writer`) in a
``.partial-<key>`` folder, readable meanwhile as a memory map and the ranges
ready so far (:meth:`SeparationCache.open_partial`), and moved into place, sealed
like any other, once every chunk is in (:mod:`.chunk_writer`, :mod:`.partial`).

A track file's cheap identity (:func:`file_identity`: its size, mtime and a hash
of a few pieces) indexes the key its decoded audio had last time
(:meth:`SeparationCache.index_source`, :meth:`SeparationCache.indexed_key`), so an
entry can be found before the file is decoded. The index is a hint, never a key:
the daemon confirms it with the key of the whole decoded audio.

After a store the least recently used entries go until the cache fits its size
(:meth:`SeparationCache.evict`). An entry's layout on disk is :mod:`.entry`'s.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audiofile.roles import stem_layout
from ..errors import CacheError
from .checks import (
    CacheLookup,
    EntryChecker,
    check_entry,
    entry_checker,
    remove_damaged,
    verify_entry,
)
from .chunk_writer import ChunkWriter, start_chunk_writer
from .entry import FORMAT_VERSION, CacheEntry
from .partial import (
    LOCK,
    PARTIAL_PREFIX,
    RECORD,
    PartialEntry,
    open_partial,
    try_lock,
)
from .writer import EntryWriter, reorder_entry, write_entry

__all__ = [
    "SOURCE_PREFIX",
    "FileRead",
    "SeparationCache",
    "cache_key",
    "default_cache_dir",
    "file_identity",
    "read_identity",
]

_DEFAULT_MAX_BYTES = 20 * 2**30
_MAX_GB = 2**20  # 1 PiB: more than any disk, and finite
# Less than one 3-minute track's channels (about 250 MB) would be emptied on every write.
_MIN_GB = 0.25


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


#: Bytes hashed at each of :data:`IDENTITY_PIECES` places of a file for its identity.
IDENTITY_PIECE = 64 << 10
IDENTITY_PIECES = 16
#: Name prefix of the index files in the cache folder: ``.source-<identity>`` holds a key.
SOURCE_PREFIX = ".source-"
_HEX40 = re.compile(r"[0-9a-f]{40}")


def identity_pieces(size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the pieces of a file of ``size`` bytes that
    :func:`file_identity` hashes: :data:`IDENTITY_PIECES` of :data:`IDENTITY_PIECE`
    bytes spread evenly from its start to its end (the whole of a smaller file)."""
    if size <= IDENTITY_PIECE * IDENTITY_PIECES:
        return [(0, size)]
    step = (size - IDENTITY_PIECE) / (IDENTITY_PIECES - 1)
    return [(round(i * step), IDENTITY_PIECE) for i in range(IDENTITY_PIECES)]


@dataclass(frozen=True)
class FileRead:
    """What a file's identity is made of, read at once (:func:`read_identity`): its
    size, its mtime and the bytes of :func:`identity_pieces`. The separation's digest
    joins it later (:meth:`under`), so a track's read need not wait for the model."""

    size: int
    mtime_ns: int
    pieces: bytes = field(repr=False)

    def under(self, digest: str) -> str:
        """The file's identity under a separation's ``digest``: :func:`file_identity`."""
        h = hashlib.blake2b(digest_size=20)
        h.update(
            json.dumps(
                {"size": self.size, "mtime_ns": self.mtime_ns, "digest": digest}, sort_keys=True
            ).encode()
        )
        h.update(self.pieces)
        return h.hexdigest()


def read_identity(path: str | os.PathLike[str]) -> FileRead:
    """Read what :func:`file_identity` hashes of the file at ``path`` (1 MiB at most).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    with open(path, "rb") as f:
        fd = f.fileno()
        st = os.fstat(fd)
        pieces = b"".join(
            os.pread(fd, length, offset) for offset, length in identity_pieces(st.st_size)
        )
    return FileRead(st.st_size, st.st_mtime_ns, pieces)


def file_identity(path: str | os.PathLike[str], digest: str) -> str:
    """A file's cheap identity under a separation's ``digest``
    (:attr:`~.keys.SeparationSpec.digest`): a hash of its size, its mtime and the
    bytes of :func:`identity_pieces` (1 MiB at most, whatever its length).

    Two files with the same identity are very likely the same audio, not surely
    (a file rewritten in place with its size and mtime kept): it indexes a key,
    which the decoded audio's key confirms.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    return read_identity(path).under(digest)


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
            return remove_damaged(path, exc)
        except OSError as exc:
            return CacheLookup(
                "unreadable",
                problem=(
                    f"cache entry {key[:12]} is unreadable ({exc.strerror or exc}); "
                    "separating again, the entry is kept"
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            return remove_damaged(path, exc)
        try:
            os.utime(path / "meta.json")  # recency for the LRU eviction
        except OSError:
            pass
        return CacheLookup("found", entry)

    def verify(self, entry: CacheEntry | Path) -> CacheLookup:
        """Check every block of an entry's files and remove the entry if one is wrong
        (:func:`~.checks.verify_entry`: its look-up says what it found; an entry given,
        not a folder, is then ``verified``)."""
        return verify_entry(entry)

    def checker(self, entry: CacheEntry) -> EntryChecker | CacheLookup:
        """An :class:`~.checks.EntryChecker` for an entry opened with ``verify=False``,
        to check its blocks piece by piece; or, when its ``meta.json`` is not readable
        now or no longer matches the files' sizes, the :class:`~.checks.CacheLookup`
        saying why (``damaged``: removed; ``unreadable``: kept)."""
        return entry_checker(entry)

    def _open(self, key: str, path: Path, *, verify: bool) -> CacheEntry:
        with (path / "meta.json").open(encoding="utf-8") as f:
            meta = json.load(f)
        layout = stem_layout([str(n) for n in meta["names"]])
        if not layout.identity:
            # An entry from before one order held every source (drums, bass, vocals,
            # other): rewritten once in that order, then opened as any other.
            check_entry(path, meta, full=True)  # every byte, before it is copied
            try:
                reorder_entry(path, meta, list(layout.order))
            except FileNotFoundError as exc:  # another process moved it: not damaged
                raise OSError(errno.EBUSY, f"being rewritten elsewhere ({exc})") from None
            with (path / "meta.json").open(encoding="utf-8") as f:
                meta = json.load(f)
            verify = False  # checked just now, and written from checked data
        check_entry(path, meta, full=verify)
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

    # -- writing -----------------------------------------------------------------
    def writer(
        self, key: str, n_channels: int, audio_shape: tuple[int, int]
    ) -> AbstractContextManager[EntryWriter]:
        """Write an entry atomically (:func:`~.writer.write_entry`).

        Use as ``with cache.writer(key, n, (channels, samples)) as w:`` then
        ``w.add_channel`` n times, ``w.add_array('W', W)``, ``w.meta[...] = ...``.
        On leaving the block the entry appears in one rename; on any error the
        temporary folder is removed and nothing is left behind.

        Raises
        ------
        CacheError
            The cache folder cannot be created or written (full disk, permissions).
        """
        return write_entry(self, key, n_channels, audio_shape)

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
        """Start, or resume, writing an entry chunk by chunk in ``.partial-<key>``, or
        None when another live process is writing it (:func:`~.chunk_writer.start_chunk_writer`
        says how, what each argument is, and raises :class:`CacheError`)."""
        return start_chunk_writer(self, key, names, audio_shape, W=W, frames=frames, meta=meta)

    def open_partial(self, key: str) -> PartialEntry | None:
        """An entry being written chunk by chunk (by any process), for reading, or None
        (:func:`~.partial.open_partial`)."""
        return open_partial(self.root, key)

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

    # -- the index of track files ------------------------------------------------
    def indexed_key(self, identity: str) -> str | None:
        """The key :meth:`index_source` filed under a file's ``identity``
        (:func:`file_identity`), or None: none, unreadable, or not a key (a damaged
        or forged index file is ignored)."""
        if not _HEX40.fullmatch(identity):
            return None
        try:
            with (self.root / f"{SOURCE_PREFIX}{identity}").open("rb") as f:
                text = f.read(64).decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _HEX40.fullmatch(text) else None

    def index_source(self, identity: str, key: str) -> None:
        """File ``key`` under a file's ``identity``, replacing what was there (one
        rename: a reader sees the old key or the new). A cache folder that cannot be
        written keeps no index: the next load hashes the audio first, as without."""
        if not (_HEX40.fullmatch(identity) and _HEX40.fullmatch(key)):
            return
        final = self.root / f"{SOURCE_PREFIX}{identity}"
        temp = self.root / f".tmp-source-{secrets.token_hex(4)}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            temp.write_text(key + "\n", encoding="ascii")
            os.replace(temp, final)
        except OSError:
            try:
                temp.unlink()
            except OSError:
                pass

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
                if now - p.stat().st_mtime <= older_than:
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:  # an index file's (:meth:`index_source`)
                    p.unlink()
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
