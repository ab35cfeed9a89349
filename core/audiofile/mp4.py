"""MP4 (ISO base media) boxes: read, checked, and the ``moov`` box rewritten.

A small parser for the boxes around the audio of an MP4 file: the manifest,
the tags and the track flags of a stem file (``docs/stemfiles.md``). It checks
every size against its parent, so a damaged file is one :class:`AudioFileError`,
never a crash or a hang. The audio itself (``mdat``) is never read here: PyAV
decodes and encodes it (:mod:`stemdeck.core.audiofile.decode`,
:mod:`stemdeck.core.audiofile.stemfile_write`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import AudioFileError

__all__ = [
    "MP4_SUFFIXES",
    "Box",
    "check_tree",
    "find_box",
    "is_mp4_path",
    "iter_boxes",
    "make_box",
    "read_moov",
    "read_stem_box",
    "rewrite_moov",
]

#: Names of MP4-family audio files (stem files end in ``.stem.mp4``/``.stem.m4a``).
MP4_SUFFIXES = (".mp4", ".m4a")

# Boxes that only hold other boxes (the ones on the paths we read and write).
_CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "udta", "edts", "dinf", "ilst"})
_MAX_MOOV = 64 << 20  # a 3-hour 5-track file has a moov of a few MB
_MAX_DEPTH = 16
_TKHD_ENABLED, _TKHD_IN_MOVIE = 0x1, 0x2


def is_mp4_path(path: str | os.PathLike[str]) -> bool:
    """True for an MP4-family audio name (``.mp4``, ``.m4a``), stem files included."""
    return str(path).lower().endswith(MP4_SUFFIXES)


# -- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    """Where one box sits in a buffer or a file.

    Attributes
    ----------
    type : str
        The four-character type (``"moov"``, ``"trak"``, ``"©nam"``).
    start : int
        Offset of the box's header.
    header : int
        Length of the header: 8, or 16 with a 64-bit size.
    size : int
        Length of the whole box, header included.
    """

    type: str
    start: int
    header: int
    size: int

    @property
    def body(self) -> int:
        """Offset of the box's payload."""
        return self.start + self.header

    @property
    def end(self) -> int:
        """Offset just past the box."""
        return self.start + self.size


def _box_type(raw: bytes) -> str:
    return raw.decode("latin-1")


def _box_header(data: bytes, offset: int, left: int) -> tuple[str, int, int]:
    """(type, size, header length) of the box at ``data[offset:]``, with ``left`` bytes
    to the end of its parent; a header length of 0 means a cut 64-bit size."""
    size, raw = struct.unpack_from(">I4s", data, offset)
    header = 8
    if size == 1:
        if len(data) - offset < 16 or left < 16:
            return _box_type(raw), size, 0
        (size,) = struct.unpack_from(">Q", data, offset + 8)
        header = 16
    elif size == 0:
        size = left
    return _box_type(raw), size, header


def iter_boxes(buf: bytes, start: int, end: int, *, where: str) -> Iterator[Box]:
    """The boxes in ``buf[start:end]``, one level.

    Raises
    ------
    AudioFileError
        A box whose size does not fit (``where`` names the file in the message).
    """
    pos = start
    while pos < end:
        if end - pos < 8:
            raise AudioFileError(f"{where}: {end - pos} stray bytes where a box should start")
        kind, size, header = _box_header(buf, pos, end - pos)
        if header == 0:
            raise AudioFileError(f"{where}: box {kind!r} has a cut 64-bit size")
        if size < header or pos + size > end:
            raise AudioFileError(
                f"{where}: box {kind!r} at byte {pos} claims {size} bytes, {end - pos} are left"
            )
        yield Box(kind, pos, header, size)
        pos += size


def _top_level(f: BinaryIO, file_size: int, *, where: str) -> list[Box]:
    """The top-level boxes of an open file, read by seeking (mdat is never read)."""
    boxes = []
    pos = 0
    while pos < file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise AudioFileError(f"{where}: {len(head)} stray bytes at the end of the file")
        kind, size, header = _box_header(head, 0, file_size - pos)
        if header == 0:
            raise AudioFileError(f"{where}: the last box has a cut 64-bit size")
        if size < header or pos + size > file_size:
            raise AudioFileError(
                f"{where}: box {kind!r} at byte {pos} claims {size} bytes but the "
                f"file has {file_size - pos} left (truncated or damaged file)"
            )
        boxes.append(Box(kind, pos, header, size))
        pos += size
    return boxes


def _read_moov_in_file(path: Path) -> tuple[bytes, list[Box], Box] | None:
    """The moov box's bytes, the top-level boxes and the moov box; None if not an MP4."""
    where = repr(str(path))
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"free", b"mdat", b"wide"):
                return None
            boxes = _top_level(f, file_size, where=where)
            moovs = [b for b in boxes if b.type == "moov"]
            if len(moovs) != 1:
                raise AudioFileError(
                    f"{where}: {len(moovs)} moov boxes (an MP4 file has exactly one); "
                    "the file is damaged"
                )
            moov = moovs[0]
            if moov.size > _MAX_MOOV:
                raise AudioFileError(f"{where}: moov box of {moov.size} bytes is implausibly large")
            f.seek(moov.start)
            data = f.read(moov.size)
    except OSError as exc:
        raise AudioFileError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if len(data) != moov.size:
        raise AudioFileError(f"{where}: the file changed while it was read")
    return data, boxes, moov


def read_moov(path: str | os.PathLike[str]) -> tuple[bytes, Box] | None:
    """The ``moov`` box of an MP4 file: its bytes, and the box at offset 0 of them.

    Returns None when the file does not start like an MP4 file.

    Raises
    ------
    AudioFileError
        The file cannot be read, has no or several ``moov`` boxes, or a top-level
        box size is damaged.
    """
    got = _read_moov_in_file(Path(path))
    if got is None:
        return None
    data, _, moov = got
    return data, Box("moov", 0, moov.header, moov.size)


def find_box(buf: bytes, box: Box, path: Sequence[str], *, where: str) -> Box | None:
    """The first box along ``path`` (types, one per level) below ``box``, or None.

    Raises
    ------
    AudioFileError
        A size on the way does not fit.
    """
    node = box
    for name in path:
        found = None
        for child in iter_boxes(buf, node.body, node.end, where=where):
            if child.type == name:
                found = child
                break
        if found is None:
            return None
        node = found
    return node


def check_tree(buf: bytes, box: Box, *, where: str, depth: int = 0) -> None:
    """Walk every container below ``box``, so a damaged size anywhere is found now.

    Raises
    ------
    AudioFileError
        A size that does not fit, or boxes nested implausibly deep.
    """
    if depth > _MAX_DEPTH:
        raise AudioFileError(f"{where}: boxes nested deeper than {_MAX_DEPTH} levels")
    for child in iter_boxes(buf, box.body, box.end, where=where):
        if child.type in _CONTAINERS:
            check_tree(buf, child, where=where, depth=depth + 1)


def read_stem_box(path: str | os.PathLike[str]) -> bytes | None:
    """The payload of the ``moov/udta/stem`` box, or None when the file has none.

    Raises
    ------
    AudioFileError
        The file is not an MP4 file, or a box size is damaged.
    """
    where = repr(str(path))
    got = read_moov(path)
    if got is None:
        raise AudioFileError(f"{where} is not an MP4 file")
    buf, moov = got
    check_tree(buf, moov, where=where)
    stem = find_box(buf, moov, ("udta", "stem"), where=where)
    return None if stem is None else bytes(buf[stem.body : stem.end])


# -- writing ------------------------------------------------------------------------------
def make_box(kind: str, payload: bytes) -> bytes:
    """A box of type ``kind`` around ``payload``, with a 64-bit size when it needs one."""
    if len(payload) + 8 > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, kind.encode("latin-1"), len(payload) + 16) + payload
    return struct.pack(">I4s", len(payload) + 8, kind.encode("latin-1")) + payload


def _patch_tkhd(buf: bytearray, tkhd: Box, *, enabled: bool) -> None:
    body = tkhd.body
    version = buf[body]
    flags = (_TKHD_ENABLED | _TKHD_IN_MOVIE) if enabled else _TKHD_IN_MOVIE
    buf[body + 1 : body + 4] = flags.to_bytes(3, "big")
    # Every audio track is an alternative of the others: a player plays one, the enabled one.
    alt = body + (46 if version == 1 else 34)
    buf[alt : alt + 2] = (1).to_bytes(2, "big")


def rewrite_moov(path: str | os.PathLike[str], udta: bytes) -> None:
    """Rewrite the ``moov`` box an encoder wrote at the end of a file, in place.

    Every track becomes an alternative of the others, and only the first is
    enabled (a player plays it: a stem file's master); the ``udta`` box is
    replaced by ``udta``, a whole box (:func:`make_box`). The file is synced.

    Raises
    ------
    AudioFileError
        The file is not an MP4 whose ``moov`` box comes last, after the audio.
    OSError
        The file cannot be written.
    """
    p = Path(path)
    where = repr(str(p))
    got = _read_moov_in_file(p)
    if got is None:  # pragma: no cover - the caller just wrote it
        raise AudioFileError(f"{where}: the encoder wrote no MP4 file")
    data, boxes, moov = got
    if boxes[-1] is not moov or not any(b.type == "mdat" for b in boxes[:-1]):
        raise AudioFileError(f"{where}: unexpected layout from the encoder (moov not last)")
    buf = bytearray(data)
    local = Box("moov", 0, moov.header, moov.size)
    children = []
    first = True
    for child in iter_boxes(bytes(buf), local.body, local.end, where=where):
        if child.type == "udta":
            continue  # replaced below
        if child.type == "trak":
            tkhd = find_box(bytes(buf), child, ("tkhd",), where=where)
            if tkhd is None:
                raise AudioFileError(f"{where}: a track without tkhd from the encoder")
            _patch_tkhd(buf, tkhd, enabled=first)
            first = False
        children.append(bytes(buf[child.start : child.end]))
    children.append(udta)
    new_moov = make_box("moov", b"".join(children))
    with open(p, "r+b") as f:
        f.seek(moov.start)
        f.write(new_moov)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
