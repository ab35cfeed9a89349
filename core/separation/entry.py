"""A cache entry: its format on disk (version, block checksums, ``meta.json``) and
the entry as opened (:class:`CacheEntry`).

Shared by the finished entries of :mod:`.cache` (checked by :mod:`.checks`, written
by :mod:`.writer`) and the entries that grow chunk by chunk in :mod:`.partial`.

Layout of an entry::

    meta.json      format version, names, shapes, rate, parameters, block checksums
    channels.f32   raw float32, shape (n_channels, audio_channels, samples)
    W.npy, H.npy   NMF templates (bins, K) and activations (K, frames)
    overview.npy   the channels' overview peaks, uint8 (n_channels, bins) (:mod:`.overview`;
                   entries written before it have none)

A partial entry has the same files but ``meta.json``, preallocated, and
``ready.json`` (the chunks written so far: sample and frame ranges, a CRC32 of
each), and ``writer.lock``, which its writer holds locked while it lives.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHECK_BLOCK",
    "FORMAT_VERSION",
    "CacheEntry",
    "DamagedEntry",
    "block_checksums",
    "seal_entry",
]

FORMAT_VERSION = 3  # 2: a CRC32 for every block; 3: keyed by the source at its own rate
CHECK_BLOCK = 1 << 20  # bytes per checksum block


class DamagedEntry(ValueError):
    """Proof that an entry is damaged (as opposed to unreadable just now)."""


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
    folder: Path,
    fields: Mapping[str, Any],
    names: list[str],
    shape: tuple[int, ...],
    known: Mapping[str, list[int]] | None = None,
) -> None:
    """Write an entry's ``meta.json``: ``fields``, the format, and every file's checksums
    (those of ``known``, by file name, as :func:`block_checksums` gives them, are not
    read again: a chunk writer took them as its chunks landed)."""
    known = known or {}
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
                    "crc": known[p.name] if p.name in known else block_checksums(p),
                }
                for p in sorted(folder.iterdir())
            },
            "created": time.time(),
        }
    )
    with (folder / "meta.json").open("w", encoding="utf-8") as f:
        json.dump(meta, f)
