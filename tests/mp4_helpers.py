"""Reading what the tests check in an MP4 file and no production code reads."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.mp4 import find_box, iter_boxes, read_moov
from stemdeck.core.audiofile.stemfile_write import write_stem_file


def damaged_stem_file(path: Path, sr: int = 48000) -> Path:
    """A one-second stem file at ``path`` whose boxes and manifest are fine and whose
    audio is noise: it passes the header check and fails when it is decoded."""
    rng = np.random.default_rng(1)
    stems = rng.uniform(-0.1, 0.1, (4, 2, sr)).astype(np.float32)
    write_stem_file(path, stems.sum(axis=0), stems, sr, names=("a", "b", "c", "d"))
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4  # the samples; the boxes around them stay
    end = data.index(b"moov") - 4
    data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def track_flags(path: str | os.PathLike[str]) -> list[int]:
    """The ``tkhd`` flags of every track, in file order (bit 0: enabled, bit 1: in movie)."""
    where = repr(str(path))
    got = read_moov(path)
    assert got is not None, f"{where} is not an MP4 file"
    buf, moov = got
    flags = []
    for trak in iter_boxes(buf, moov.body, moov.end, where=where):
        if trak.type != "trak":
            continue
        tkhd = find_box(buf, trak, ("tkhd",), where=where)
        assert tkhd is not None and tkhd.size - tkhd.header >= 4, f"{where}: a track without tkhd"
        flags.append(int.from_bytes(buf[tkhd.body + 1 : tkhd.body + 4], "big"))
    return flags


def with_stem_box(src: Path, dst: Path, payload: bytes) -> Path:
    """A copy of the stem file ``src`` at ``dst`` whose ``stem`` box holds ``payload``
    (any bytes: a hostile manifest too). The box is the last of the ``moov``, which
    ends the file, as stemdeck writes it; the sizes of ``moov`` and ``udta`` follow."""
    data = src.read_bytes()
    stem = data.rindex(b"stem{") - 4  # not the word "stems" inside the JSON
    (size,) = struct.unpack_from(">I", data, stem)
    assert stem + size == len(data)  # the stem box is the moov's last box, the file's end
    moov = data.rindex(b"moov") - 4
    udta = data.rindex(b"udta") - 4
    grow = len(payload) + 8 - size
    out = bytearray(data[:stem]) + struct.pack(">I4s", len(payload) + 8, b"stem") + payload
    for at in (moov, udta):
        (old,) = struct.unpack_from(">I", out, at)
        struct.pack_into(">I", out, at, old + grow)
    dst.write_bytes(bytes(out))
    return dst


def mapped_base(a: np.ndarray) -> mmap.mmap | None:
    """The memory map (a file's pages) ``a`` views, or None: ``a`` is on the heap."""
    base: object = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base if isinstance(base, mmap.mmap) else None
