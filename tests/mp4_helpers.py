"""Reading what the tests check in an MP4 file and no production code reads."""

from __future__ import annotations

import os

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
