"""The tags a track carries: title, artist, album and artwork (:class:`Tags`), read
from any file FFmpeg reads (:func:`read_tags`); :mod:`.stemfile_write` writes them
into a stem file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .pyav import import_av

__all__ = ["Tags", "read_tags"]


@dataclass(frozen=True)
class Tags:
    """The tags a stem file carries over from its source track."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    artwork: bytes | None = None
    artwork_mime: str | None = None  # "image/jpeg" or "image/png"


def read_tags(path: str | os.PathLike[str]) -> Tags:
    """Title, artist, album and artwork of any file FFmpeg reads (none is an error)."""
    p = Path(path)
    av = import_av()
    try:
        container = av.open(str(p), metadata_errors="replace")
    except (av.FFmpegError, OSError):
        return Tags()
    with container:
        meta = {k.lower(): v for k, v in container.metadata.items()}
        artwork = mime = None
        for s in container.streams:
            if s.type == "video" and s.disposition & av.stream.Disposition.attached_pic:
                name = s.codec_context.name
                if name in ("mjpeg", "png"):
                    try:
                        packet = next(container.demux(s), None)
                    except av.FFmpegError:
                        packet = None
                    if packet is not None and packet.size:
                        artwork = bytes(packet)
                        mime = "image/png" if name == "png" else "image/jpeg"
                break

    def text(key: str) -> str | None:
        value = meta.get(key)
        return value.strip() or None if isinstance(value, str) else None

    return Tags(text("title"), text("artist"), text("album"), artwork, mime)
