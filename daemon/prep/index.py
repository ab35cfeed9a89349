"""The prep index: the cache key each file had, so a rerun of an unchanged library only
stats its files.

A key is a hash of the decoded audio
(:meth:`~stemdeck.core.separation.keys.SeparationSpec.key`), so finding out that a
track is already in the cache costs a decode and a hash. DJ tools keep an index
instead; so does prep, in the cache folder (``.prep-index.json``): for each file
(resolved path) its size, its modification time in nanoseconds, its duration,
and its key under each set of separation settings it was prepared with. A file
whose size and mtime are those recorded is taken to hold the same audio; any
other file is decoded and hashed again, and its record replaced.

The index is a convenience, never trusted: one that cannot be read, is not
JSON, has a field of the wrong type or a key that is not a cache key, or is
larger than ``MAX_INDEX_BYTES`` is ignored with one warning (every file is
hashed again, and the index rewritten). It is written to a temporary file and
renamed, merged with what another run may have written meanwhile.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["INDEX_NAME", "MAX_INDEX_BYTES", "FileStamp", "TrackIndex", "file_stamp"]

log = logging.getLogger(__name__)

INDEX_NAME = ".prep-index.json"
#: Past this size the index is ignored: 100,000 tracks take about 25 MB.
MAX_INDEX_BYTES = 64 * 2**20
VERSION = 1
_KEY = re.compile(r"[0-9a-f]{40}")  # a cache key names a folder: nothing else may pass
_SETTINGS = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class FileStamp:
    """What says a file is unchanged: where it really is, its size and mtime."""

    path: str
    size: int
    mtime_ns: int


def file_stamp(path: Path) -> FileStamp:
    """The file's stamp; raises OSError when it cannot be statted."""
    real = path.resolve(strict=True)
    st = real.stat()
    return FileStamp(str(real), st.st_size, st.st_mtime_ns)


class IndexProblem(ValueError):
    pass


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(doc: Any) -> dict[str, dict[str, Any]]:
    """The ``files`` of a parsed index, or IndexProblem saying what is wrong."""
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise IndexProblem(f"not a version {VERSION} index")
    files = doc.get("files")
    if not isinstance(files, dict):
        raise IndexProblem("no 'files' object")
    for path, rec in files.items():
        if not isinstance(rec, dict) or set(rec) != {"size", "mtime_ns", "duration", "keys"}:
            raise IndexProblem(f"bad record for {path!r}")
        duration, keys = rec["duration"], rec["keys"]
        if not (_int(rec["size"]) and rec["size"] >= 0 and _int(rec["mtime_ns"])):
            raise IndexProblem(f"bad size or mtime for {path!r}")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise IndexProblem(f"bad duration for {path!r}")
        if not (math.isfinite(duration) and duration >= 0):
            raise IndexProblem(f"bad duration for {path!r}")
        if not isinstance(keys, dict) or not all(
            isinstance(s, str) and _SETTINGS.fullmatch(s) and isinstance(k, str)
            and _KEY.fullmatch(k)
            for s, k in keys.items()
        ):  # fmt: skip
            raise IndexProblem(f"bad keys for {path!r}")
    return files


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """The index's files; {} when there is none; IndexProblem when it is unusable."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_INDEX_BYTES:
                raise IndexProblem(f"{size} bytes, more than {MAX_INDEX_BYTES}")
            raw = f.read(MAX_INDEX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise IndexProblem(f"unreadable: {exc.strerror or exc}") from None
    if len(raw) > MAX_INDEX_BYTES:  # grew while being read
        raise IndexProblem(f"more than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON; absurd nesting
        raise IndexProblem(f"not JSON: {exc}") from None
    return _checked(doc)


class TrackIndex:
    """The index of one cache folder, for one set of separation settings.

    Parameters
    ----------
    root : Path
        The cache folder.
    settings : str
        Digest of the separation settings
        (:attr:`stemdeck.core.separation.keys.SeparationSpec.digest`): a file has
        one key per settings.
    """

    def __init__(self, root: Path, settings: str) -> None:
        if not _SETTINGS.fullmatch(settings):
            raise ValueError(f"settings digest {settings!r} is not hex")
        self.path = root / INDEX_NAME
        self.settings = settings
        self.changes: dict[str, dict[str, Any]] = {}
        try:
            self.files = _read(self.path)
        except IndexProblem as exc:
            log.warning(
                "prep index %r ignored (%s): every file is hashed again, and the index rewritten",
                str(self.path),
                exc,
            )
            self.files = {}

    def lookup(self, stamp: FileStamp) -> tuple[str, float] | None:
        """``(key, duration)`` recorded for this very file, or None."""
        rec = self.changes.get(stamp.path) or self.files.get(stamp.path)
        if rec is None or rec["size"] != stamp.size or rec["mtime_ns"] != stamp.mtime_ns:
            return None
        key = rec["keys"].get(self.settings)
        return (key, float(rec["duration"])) if key is not None else None

    def remember(self, stamp: FileStamp, key: str, duration: float) -> None:
        """Record ``key`` for the file as it was when ``stamp`` was taken."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"{key!r} is not a cache key")
        old = self.changes.get(stamp.path) or self.files.get(stamp.path)
        same = old is not None and (old["size"], old["mtime_ns"]) == (stamp.size, stamp.mtime_ns)
        keys = dict(old["keys"]) if same and old is not None else {}
        if keys.get(self.settings) == key:
            return
        keys[self.settings] = key
        self.changes[stamp.path] = {
            "size": stamp.size,
            "mtime_ns": stamp.mtime_ns,
            "duration": round(float(duration), 6),
            "keys": keys,
        }

    def save(self) -> None:
        """Write the changes, merged over the index as it is now on disk; atomic.

        A failure to write is a warning: the index only saves work.
        """
        if not self.changes:
            return
        try:
            files = _read(self.path)
        except IndexProblem:  # already warned about when loaded, or written since
            files = {}
        files.update(self.changes)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".prep-index-", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": VERSION, "files": files}, f, separators=(",", ":"))
            os.replace(tmp, self.path)
            tmp = None
        except OSError as exc:
            log.warning("cannot write the prep index %r: %s", str(self.path), exc.strerror or exc)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        self.files, self.changes = files, {}
