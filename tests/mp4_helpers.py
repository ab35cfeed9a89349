"""Reading what the tests check in an MP4 file and no production code reads."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from stemdeck.core.audiofile.mp4 import find_box, iter_boxes, read_moov


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
