"""A cache entry's checks: its format and sizes, and every block against its CRC32.

Every file of an entry carries a CRC32 per 1 MiB block (:func:`.entry.seal_entry`),
and every byte is checked before an entry's audio is used: at once
(:func:`verify_entry`), or piece by piece, the audio under a play head first
(:class:`EntryChecker`). An entry is deleted only when it is proven damaged (a
checksum, size or format mismatch, a missing file: :func:`remove_damaged`); an
entry that cannot be read now (permissions, too many open files) is left alone.
Each says what it found in a :class:`CacheLookup`; the caller logs it.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .entry import FORMAT_VERSION, CacheEntry, DamagedEntry, block_checksums

__all__ = [
    "CacheLookup",
    "EntryChecker",
    "LookupStatus",
    "check_entry",
    "entry_checker",
    "remove_damaged",
    "unreadable",
    "verify_entry",
]

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


def remove_damaged(path: Path, exc: BaseException) -> CacheLookup:
    """Remove the entry at ``path``, proven damaged by ``exc``, and say so."""
    shutil.rmtree(path, ignore_errors=True)
    return CacheLookup(
        "damaged", problem=f"cache entry {path.name[:12]} was damaged ({exc}); rebuilding it"
    )


def unreadable(path: Path, exc: OSError) -> CacheLookup:
    """The entry at ``path`` cannot be read now (``exc``): it is kept."""
    return CacheLookup("unreadable", problem=f"cache entry {path.name[:12]} is unreadable ({exc})")


def check_entry(path: Path, meta: dict[str, Any], *, full: bool) -> None:
    """Check the entry at ``path`` against its ``meta.json``: the format and every
    file's size, and with ``full`` every block's checksum.

    Raises
    ------
    DamagedEntry
        A mismatch.
    OSError
        A file cannot be read (FileNotFoundError: one is missing).
    KeyError, TypeError, ValueError
        ``meta`` is not an entry's.
    """
    if meta.get("format") != FORMAT_VERSION:
        raise DamagedEntry(f"format {meta.get('format')} is not {FORMAT_VERSION}")
    for name, info in meta["files"].items():
        p = path / name
        size = p.stat().st_size
        if size != info["size"]:
            raise DamagedEntry(f"{name} has {size} bytes, expected {info['size']}")
        if full and block_checksums(p, int(info["block"])) != list(info["crc"]):
            raise DamagedEntry(f"{name} checksum mismatch")


def verify_entry(entry: CacheEntry | Path) -> CacheLookup:
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
        check_entry(path, meta, full=True)
    except FileNotFoundError as exc:
        return remove_damaged(path, exc)
    except OSError as exc:
        return unreadable(path, exc)
    except (ValueError, KeyError, TypeError) as exc:
        return remove_damaged(path, exc)
    if isinstance(entry, CacheEntry):
        entry.verified = True
        return CacheLookup("found", entry)
    return CacheLookup("found")


def entry_checker(entry: CacheEntry) -> EntryChecker | CacheLookup:
    """An :class:`EntryChecker` for an entry opened with ``verify=False``, to check
    its blocks piece by piece; or, when its ``meta.json`` is not readable now or
    no longer matches the files' sizes, the :class:`CacheLookup` saying why
    (``damaged``: removed; ``unreadable``: kept)."""
    path = entry.path
    try:
        with (path / "meta.json").open(encoding="utf-8") as f:
            meta = json.load(f)
        check_entry(path, meta, full=False)
        return EntryChecker(entry, meta)
    except FileNotFoundError as exc:
        return remove_damaged(path, exc)
    except OSError as exc:
        return unreadable(path, exc)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return remove_damaged(path, exc)


class EntryChecker:
    """Checks one entry's blocks piece by piece: the audio under a play head first.

    Made by :func:`entry_checker` (:meth:`SeparationCache.checker`), which has
    checked the format and the sizes. :meth:`files` checks every file but the
    channels (the templates and activations); :meth:`samples` the blocks of
    ``channels.f32`` that hold the samples ``[start, stop)`` of every channel. A
    block is read once, however many ranges share it. Once every range has been
    checked, every byte of the entry has.

    Both return a :class:`CacheLookup`: ``found`` (checked), ``damaged`` (a block
    is wrong: the entry is removed; a memory map of it stays readable) or
    ``unreadable`` (kept).
    """

    def __init__(self, entry: CacheEntry, meta: dict[str, Any]) -> None:
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
                return remove_damaged(path, exc)
            except OSError as exc:
                return unreadable(path, exc)
            except DamagedEntry as exc:
                return remove_damaged(path, exc)
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
            return remove_damaged(self.entry.path, exc)
        except OSError as exc:
            return unreadable(self.entry.path, exc)
        except DamagedEntry as exc:
            return remove_damaged(self.entry.path, exc)
        if self.complete:
            self.entry.verified = True
        return CacheLookup("found", self.entry)
