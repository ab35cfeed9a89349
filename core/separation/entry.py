"""A cache entry's format on disk: its version, block checksums, and ``meta.json``.

Shared by the finished entries of :mod:`.cache` and the entries that grow chunk by
chunk in :mod:`.partial`.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CHECK_BLOCK", "FORMAT_VERSION", "DamagedEntry", "block_checksums", "seal_entry"]

FORMAT_VERSION = 3  # 2: a CRC32 for every block; 3: keyed by the source at its own rate
CHECK_BLOCK = 1 << 20  # bytes per checksum block


class DamagedEntry(ValueError):
    """Proof that an entry is damaged (as opposed to unreadable just now)."""


def block_checksums(path: Path, block: int = CHECK_BLOCK) -> list[int]:
    """CRC32 of every ``block`` bytes of ``path`` (the last block may be shorter).

    Reads through one reusable buffer; zlib releases the GIL on large buffers,
    so other threads (the audio callback) run meanwhile.
    """
    out: list[int] = []
    buf = bytearray(block)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return out
            out.append(zlib.crc32(view[:n]))


def seal_entry(
    folder: Path, fields: Mapping[str, Any], names: list[str], shape: tuple[int, ...]
) -> None:
    """Write an entry's ``meta.json``: ``fields``, the format, and every file's checksums."""
    meta = dict(fields)
    meta.update(
        {
            "format": FORMAT_VERSION,
            "names": names,
            "shape": list(shape),
            "files": {
                p.name: {
                    "size": p.stat().st_size,
                    "block": CHECK_BLOCK,
                    "crc": block_checksums(p),
                }
                for p in sorted(folder.iterdir())
            },
            "created": time.time(),
        }
    )
    with (folder / "meta.json").open("w", encoding="utf-8") as f:
        json.dump(meta, f)
