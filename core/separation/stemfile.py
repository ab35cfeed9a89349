"""NI Stems files (``.stem.mp4``, ``.stem.m4a``): read and write.

A stem file is an MP4 (ISO base media) file with one stereo audio track for the
master (the full mix, the only track marked enabled, so an ordinary player plays
it) followed by the stems, in NI's order drums, bass, other, vocals. A ``stem``
box in ``moov/udta`` holds a JSON manifest with the stems' names and colours and
the master's mastering DSP. ``docs/stemfiles.md`` describes the layout as this
module writes and reads it.

Audio is encoded and decoded with PyAV (its own FFmpeg); the boxes around it
(the manifest, the tags, the track flags) are read and written by the small
parser in this module, which checks every size against its parent, so a damaged
file is one :class:`AudioFileError`, never a crash or a hang.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioFileError, ParameterError

__all__ = [
    "CODECS",
    "NI_STEMS",
    "StemFile",
    "StemFileInfo",
    "Tags",
    "channel_keys",
    "check_encodable",
    "is_stem_path",
    "make_manifest",
    "manifest_problems",
    "probe",
    "read_mp4_audio",
    "read_stem_box",
    "read_stem_file",
    "read_tags",
    "stem_track_name",
    "track_flags",
    "write_stem_file",
]

log = logging.getLogger("stemdeck")

#: The four stems of an NI Stems file, in track order (tracks 2-5), with the
#: colours stemdeck writes (the palette Mixxx also falls back to).
NI_STEMS: tuple[tuple[str, str], ...] = (
    ("drums", "#009E73"),
    ("bass", "#D55E00"),
    ("other", "#CC79A7"),
    ("vocals", "#56B4E9"),
)
#: The names and colours stemdeck writes into a four-stem manifest.
NI_NAMES = tuple(n.capitalize() for n, _ in NI_STEMS)
NI_COLOURS = tuple(c for _, c in NI_STEMS)
STEM_SUFFIXES = (".stem.mp4", ".stem.m4a")
CODECS = ("aac", "alac")
#: Sample rates the AAC encoder takes (ALAC takes any).
AAC_RATES = (
    7350,
    8000,
    11025,
    12000,
    16000,
    22050,
    24000,
    32000,
    44100,
    48000,
    64000,
    88200,
    96000,
)
MIN_STEMS, MAX_STEMS = 2, 4
MANIFEST_VERSION = 1

# Boxes that only hold other boxes (the ones on the paths we read and write).
_CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "udta", "edts", "dinf", "ilst"})
_MAX_MOOV = 64 << 20  # a 3-hour 5-track file has a moov of a few MB
_MAX_DEPTH = 16
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}\Z")
_BLOCK = 1 << 16  # samples encoded per track in turn, so the tracks interleave in the file
_TKHD_ENABLED, _TKHD_IN_MOVIE = 0x1, 0x2
_FIRST_BUFFER_SECONDS = 600
# FFmpeg's AAC encoder, tuned for stems that must add back up to the track. Noise
# substitution and intensity stereo replace waveforms by parametric imitations, which
# a sum of stems cannot survive: off. The fast coder, and no TNS or M/S search, cost
# nothing in fidelity at 256 kb/s. Against FFmpeg's defaults, on 20 s of each demo
# stem: SNR 24.2/46.8/51.8/69.9 dB (drums/bass/other/vocals) instead of
# 23.7/44.9/38.6/57.8, in less than half the time.
_AAC_OPTIONS = {
    "aac_coder": "fast",
    "aac_pns": "0",
    "aac_is": "0",
    "aac_tns": "0",
    "aac_ms": "0",
}
_MAX_PEAK = 16.0  # +24 dBFS: float stems may pass full scale, never by this much


# -- boxes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Box:
    type: str
    start: int  # offset of the header
    header: int  # 8, or 16 with a 64-bit size
    size: int  # header included

    @property
    def body(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
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


def _boxes(buf: bytes, start: int, end: int, *, where: str) -> Iterator[_Box]:
    """The boxes in ``buf[start:end]``; raises AudioFileError on a size that does not fit."""
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
        yield _Box(kind, pos, header, size)
        pos += size


def _top_level(f: Any, file_size: int, *, where: str) -> list[_Box]:
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
        boxes.append(_Box(kind, pos, header, size))
        pos += size
    return boxes


def _read_moov(path: Path) -> tuple[bytes, list[_Box], _Box] | None:
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


def _find(buf: bytes, box: _Box, path: Sequence[str], *, where: str) -> _Box | None:
    """The first box along ``path`` below ``box`` (strictly checked), or None."""
    node = box
    for name in path:
        found = None
        for child in _boxes(buf, node.body, node.end, where=where):
            if child.type == name:
                found = child
                break
        if found is None:
            return None
        node = found
    return node


def _check_tree(buf: bytes, box: _Box, *, where: str, depth: int = 0) -> None:
    """Walk every container below ``box`` so a damaged size anywhere is found now."""
    if depth > _MAX_DEPTH:
        raise AudioFileError(f"{where}: boxes nested deeper than {_MAX_DEPTH} levels")
    for child in _boxes(buf, box.body, box.end, where=where):
        if child.type in _CONTAINERS:
            _check_tree(buf, child, where=where, depth=depth + 1)


def read_stem_box(path: str | os.PathLike[str]) -> bytes | None:
    """The payload of the ``moov/udta/stem`` box, or None when the file has none.

    Raises
    ------
    AudioFileError
        The file is not an MP4 file, or a box size is damaged.
    """
    p = Path(path)
    got = _read_moov(p)
    if got is None:
        raise AudioFileError(f"{str(p)!r} is not an MP4 file")
    buf, _, moov = got
    local = _Box("moov", 0, moov.header, moov.size)
    _check_tree(buf, local, where=repr(str(p)))
    stem = _find(buf, local, ("udta", "stem"), where=repr(str(p)))
    return None if stem is None else bytes(buf[stem.body : stem.end])


def track_flags(path: str | os.PathLike[str]) -> list[int]:
    """The ``tkhd`` flags of every track, in file order (bit 0: enabled)."""
    p = Path(path)
    got = _read_moov(p)
    if got is None:
        raise AudioFileError(f"{str(p)!r} is not an MP4 file")
    buf, _, moov = got
    local = _Box("moov", 0, moov.header, moov.size)
    flags = []
    for trak in _boxes(buf, local.body, local.end, where=repr(str(p))):
        if trak.type != "trak":
            continue
        tkhd = _find(buf, trak, ("tkhd",), where=repr(str(p)))
        if tkhd is None or tkhd.size - tkhd.header < 4:
            raise AudioFileError(f"{str(p)!r}: a track has no valid tkhd box")
        flags.append(int.from_bytes(buf[tkhd.body + 1 : tkhd.body + 4], "big"))
    return flags


# -- the manifest -------------------------------------------------------------------------
def make_manifest(names: Sequence[str], colours: Sequence[str]) -> dict[str, Any]:
    """The JSON manifest of the ``stem`` box, as NI's format defines it.

    The mastering DSP (compressor and limiter on the master when a player mixes
    the stems) is present, as NI's readers expect, and disabled: stemdeck's stems
    add up to the master as they are.
    """
    if len(names) != len(colours):
        raise ParameterError(f"{len(names)} names but {len(colours)} colours")
    return {
        "version": MANIFEST_VERSION,
        "stems": [{"name": n, "color": c} for n, c in zip(names, colours, strict=True)],
        "mastering_dsp": {
            "compressor": {
                "enabled": False,
                "input_gain": 0.5,
                "output_gain": 0.5,
                "threshold": 0,
                "dry_wet": 50,
                "attack": 0.003,
                "release": 0.3,
                "ratio": 3,
                "hp_cutoff": 300,
            },
            "limiter": {"enabled": False, "threshold": 0, "ceiling": -0.35, "release": 0.05},
        },
    }


def manifest_problems(manifest: object, *, n_stems: int | None = None) -> list[str]:
    """What breaks NI's rules (and Mixxx's reader) in a manifest; empty when it is valid.

    NI's format: a JSON object with an integer ``version`` of at least 1, a
    ``stems`` list with one ``{"name", "color"}`` object per stem track, colours
    as ``#RRGGBB``, and ``mastering_dsp`` with a ``compressor`` and a ``limiter``
    each carrying a boolean ``enabled``. Mixxx ignores a file whose version is
    missing or below 1 or whose ``stems`` is not a list of objects.
    """
    if not isinstance(manifest, dict):
        return [f"the manifest is a JSON {type(manifest).__name__}, not an object"]
    problems = []
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append(f"version must be an integer >= 1, got {version!r}")
    stems = manifest.get("stems")
    if not isinstance(stems, list):
        problems.append(f"stems must be a list, got {stems!r}")
    else:
        if n_stems is not None and len(stems) != n_stems:
            problems.append(f"{len(stems)} stems named for {n_stems} stem tracks")
        for i, stem in enumerate(stems, 1):
            if not isinstance(stem, dict):
                problems.append(f"stem {i} is not an object: {stem!r}")
                continue
            name, colour = stem.get("name"), stem.get("color")
            if not isinstance(name, str) or not name.strip():
                problems.append(f"stem {i} has no name: {name!r}")
            if not isinstance(colour, str) or not _COLOUR.match(colour):
                problems.append(f"stem {i} colour must be #RRGGBB, got {colour!r}")
    dsp = manifest.get("mastering_dsp")
    if not isinstance(dsp, dict):
        problems.append(f"mastering_dsp must be an object, got {dsp!r}")
    else:
        for unit in ("compressor", "limiter"):
            part = dsp.get(unit)
            if not isinstance(part, dict) or not isinstance(part.get("enabled"), bool):
                problems.append(f"mastering_dsp.{unit} needs a boolean 'enabled', got {part!r}")
    return problems


def _parse_manifest(payload: bytes, *, where: str) -> dict[str, Any]:
    """Decode the ``stem`` box; the parts a player needs must be there and sound."""
    text = payload.rstrip(b"\0")  # some writers end the JSON with a NUL
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AudioFileError(f"{where}: broken stem box (not JSON: {exc})") from None
    if not isinstance(manifest, dict):
        raise AudioFileError(f"{where}: broken stem box (a JSON {type(manifest).__name__})")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise AudioFileError(f"{where}: broken stem box (version {version!r}, expected >= 1)")
    if version > MANIFEST_VERSION:
        log.warning(
            "%s: stem manifest version %d is newer than 1; reading it anyway", where, version
        )
    stems = manifest.get("stems")
    if not isinstance(stems, list) or not all(isinstance(s, dict) for s in stems):
        raise AudioFileError(f"{where}: broken stem box ('stems' is not a list of objects)")
    return manifest


# -- names for the mixer ------------------------------------------------------------------
def channel_keys(names: Sequence[str]) -> list[str]:
    """Mixer channel names for stem names: lower case, OSC-safe, unique, never all digits.

    ``/ch/NAME/...`` must stay one OSC address component, and a name made of
    digits would read as a channel index.
    """
    keys: list[str] = []
    for i, name in enumerate(names, 1):
        key = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")
        if not key or key.isdigit():
            key = f"stem{i}"
        base, n = key, 2
        while key in keys:
            key = f"{base}-{n}"
            n += 1
        keys.append(key)
    return keys


# -- reading ------------------------------------------------------------------------------
def is_stem_path(path: str | os.PathLike[str]) -> bool:
    """True for a name ending in ``.stem.mp4`` or ``.stem.m4a`` (any case)."""
    return str(path).lower().endswith(STEM_SUFFIXES)


def stem_track_name(path: str | os.PathLike[str]) -> str:
    """A track's name from its file name: ``Song.stem.mp4`` and ``Song.wav`` are ``Song``."""
    name = Path(path).name
    if is_stem_path(name):
        return name[: -len(".stem.mp4")]
    return Path(name).stem


def is_mp4_path(path: str | os.PathLike[str]) -> bool:
    """True for an MP4-family audio name (``.mp4``, ``.m4a``), stem files included."""
    return str(path).lower().endswith((".mp4", ".m4a"))


@dataclass(frozen=True)
class StemFileInfo:
    """What :func:`probe` finds in a stem file, before any audio is decoded.

    Attributes
    ----------
    names, colours : tuple of str
        The stems' display names and ``#RRGGBB`` colours, in track order.
    manifest : dict or None
        The ``stem`` box's manifest; None for a file without one (MUSDB18).
    streams : tuple of int
        Indices of the file's audio streams: the master, then the stems.
    sr : int
        Sample rate of the stems.
    """

    names: tuple[str, ...]
    colours: tuple[str, ...]
    manifest: dict[str, Any] | None
    streams: tuple[int, ...]
    sr: int


@dataclass(frozen=True)
class Tags:
    """The tags a stem file carries over from its source track."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    artwork: bytes | None = None
    artwork_mime: str | None = None  # "image/jpeg" or "image/png"


@dataclass
class StemFile:
    """A decoded stem file.

    Attributes
    ----------
    stems : np.ndarray, shape (n_stems, channels, samples), float32
        One row per stem, cut to one length.
    names, colours : list of str
        Display names and ``#RRGGBB`` colours, one per stem.
    sr : int
    master : np.ndarray, shape (channels, samples), float32, or None
        The file's master track (it may differ from the sum of the stems by
        the mastering the file's maker applied); None when not decoded.
    manifest : dict or None
    tags : Tags
    """

    stems: np.ndarray
    names: list[str]
    colours: list[str]
    sr: int
    master: np.ndarray | None
    manifest: dict[str, Any] | None
    tags: Tags = field(default_factory=Tags)

    @property
    def mix(self) -> np.ndarray:
        """The sum of the stems, ``(channels, samples)``: what unity on every channel plays."""
        return np.asarray(self.stems.sum(axis=0, dtype=np.float32))


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - a dependency; a broken install
        raise AudioFileError("stem files need PyAV: pip install av") from None
    av.logging.set_level(av.logging.PANIC)  # errors come back as exceptions; no stderr noise
    return av


def _open(path: Path) -> Any:
    av = _av()
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as exc:
        raise AudioFileError(f"{str(path)!r} cannot be opened: {_reason(exc)}") from None
    except OSError as exc:
        raise AudioFileError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '", 1)[0]


def probe(path: str | os.PathLike[str]) -> StemFileInfo | None:
    """Check a stem file's structure and manifest without decoding its audio.

    Returns
    -------
    StemFileInfo, or None for a plain MP4 with one audio stream and no ``stem``
    box (an ordinary track).

    Raises
    ------
    AudioFileError
        Missing or non-MP4 file, damaged boxes, a broken ``stem`` box, a stream
        the manifest names but the file lacks, fewer than 2 or more than 4
        stems, or streams of different sample rates.
    """
    p = Path(path)
    where = repr(str(p))
    if not p.exists():
        raise AudioFileError(f"{where}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{where} is a folder, not an audio file")
    got = _read_moov(p)
    if got is None:
        raise AudioFileError(f"{where} is not an MP4 file; a stem file is an MP4 (.stem.mp4)")
    payload = read_stem_box(p)
    manifest = None if payload is None else _parse_manifest(payload, where=where)
    with _open(p) as container:
        audio = [s for s in container.streams if s.type == "audio"]
        if not audio:
            raise AudioFileError(f"{where} has no audio stream")
        if len(audio) == 1 and manifest is None:
            return None
        n_stems = len(audio) - 1
        if manifest is not None and len(manifest["stems"]) != n_stems:
            raise AudioFileError(
                f"{where}: the stem box names {len(manifest['stems'])} stems but the file has "
                f"{n_stems} stem streams (a stream is missing or extra)"
            )
        if not MIN_STEMS <= n_stems <= MAX_STEMS:
            raise AudioFileError(
                f"{where}: {len(audio)} audio streams; a stem file has a master and "
                f"{MIN_STEMS} to {MAX_STEMS} stems"
            )
        rates = {int(s.codec_context.sample_rate or 0) for s in audio}
        if len(rates) != 1 or 0 in rates:
            raise AudioFileError(f"{where}: its streams have different sample rates {rates}")
        for s in audio:
            if not 1 <= int(s.codec_context.channels or 0) <= 2:
                raise AudioFileError(
                    f"{where}: stream {s.index} has {s.codec_context.channels} channels; "
                    "stems are stereo"
                )
        streams = tuple(s.index for s in audio)
        sr = rates.pop()
    if manifest is None:
        if n_stems == len(NI_STEMS):
            names = tuple(n for n, _ in NI_STEMS)
            colours = tuple(c for _, c in NI_STEMS)
        else:
            names = tuple(f"stem{i}" for i in range(1, n_stems + 1))
            colours = tuple(NI_STEMS[i][1] for i in range(n_stems))
        return StemFileInfo(names, colours, None, streams, sr)
    names_l, colours_l = [], []
    for i, stem in enumerate(manifest["stems"]):
        name, colour = stem.get("name"), stem.get("color")
        if not isinstance(name, str) or not name.strip():
            log.warning(
                "%s: stem %d has no name in the manifest; calling it stem%d", where, i + 1, i + 1
            )
            name = f"stem{i + 1}"
        if not isinstance(colour, str) or not _COLOUR.match(colour):
            log.warning("%s: stem %r has colour %r; using the default", where, name, colour)
            colour = NI_STEMS[i][1]
        names_l.append(name.strip())
        colours_l.append(colour.upper())
    return StemFileInfo(tuple(names_l), tuple(colours_l), manifest, streams, sr)


def _to_float(frame: Any) -> np.ndarray:
    """A decoded frame as float32 ``(channels, samples)``, exact for integer formats."""
    fmt = frame.format.name
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    if fmt.startswith("s16"):
        return data.astype(np.float32) * np.float32(2.0**-15)
    if fmt.startswith("s32"):
        return data.astype(np.float32) * np.float32(2.0**-31)
    if fmt.startswith(("flt", "dbl")):
        return data.astype(np.float32, copy=False)
    raise AudioFileError(f"unexpected decoded sample format {fmt!r}")


def _decode_stream(path: Path, index: int) -> np.ndarray:
    """Decode one audio stream into one growing buffer, trimmed to its declared length.

    A stream whose decoded audio falls short of its declared length is a
    truncated file: an error, so a cut file never plays with silent stems.
    """
    av = _av()
    where = repr(str(path))
    with _open(path) as container:
        stream = container.streams[index]
        rate = int(stream.codec_context.sample_rate)
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = round(stream.duration * stream.time_base * rate)
        # The declared length sizes the buffer, bounded: a damaged header must not
        # make us allocate what the file cannot hold. The buffer doubles if needed.
        capacity = min(declared or 0, _FIRST_BUFFER_SECONDS * rate) + 8192
        buf: np.ndarray | None = None
        n = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    y = _to_float(frame)
                    if buf is None:
                        buf = np.empty((y.shape[0], capacity), dtype=np.float32)
                    elif y.shape[0] != buf.shape[0]:
                        raise AudioFileError(f"{where}: stream {index} changes its channel count")
                    if n + y.shape[1] > buf.shape[1]:
                        bigger = np.empty((buf.shape[0], 2 * (n + y.shape[1])), dtype=np.float32)
                        bigger[:, :n] = buf[:, :n]
                        buf = bigger
                    buf[:, n : n + y.shape[1]] = y
                    n += y.shape[1]
        except av.FFmpegError as exc:
            raise AudioFileError(
                f"{where} is damaged: its audio cannot be decoded ({_reason(exc)})"
            ) from None
        except (ValueError, MemoryError) as exc:
            raise AudioFileError(f"{where} is damaged: {exc}") from None
    if buf is None or n == 0:
        raise AudioFileError(f"{where}: stream {index} holds no audio")
    if declared is not None and declared > 0:
        # One codec frame of slack: decoders differ in how they trim the last one.
        if n < declared - 2048:
            raise AudioFileError(
                f"{where} is truncated: stream {index} decodes to {n} samples of "
                f"the {declared} it declares"
            )
        n = min(n, declared)
    return buf[:, :n]


def _decode_streams(path: Path, streams: Sequence[int]) -> list[np.ndarray]:
    """Decode audio streams side by side (FFmpeg decodes without the GIL)."""
    workers = min(len(streams), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(_decode_stream, path, i) for i in streams]
        return [job.result() for job in jobs]


def read_stem_file(
    path: str | os.PathLike[str], *, sr: int | None = None, master: bool = True
) -> StemFile:
    """Decode a stem file: every stem (and the master), fully, before anything plays.

    Parameters
    ----------
    path : path-like
        A ``.stem.mp4``/``.stem.m4a`` file: NI's layout, with or without a
        ``stem`` box (MUSDB18's files have none: their stems take NI's default
        names, and the log says so).
    sr : int or None
        Resample to this rate with soxr; None keeps the file's rate.
    master : bool
        Decode the master track too; players that mix the stems need not.

    Raises
    ------
    AudioFileError
        See :func:`probe`; also a file that is a plain MP4 (one audio stream),
        damaged audio data, a truncated file, or NaN/inf samples.
    """
    from .audio import resample

    p = Path(path)
    where = repr(str(p))
    info = probe(p)
    if info is None:
        raise AudioFileError(f"{where} is a plain MP4 with one audio stream, not a stem file")
    if info.manifest is None:
        log.info(
            "%s has no stem manifest: its %d stems take the default names %s",
            p.name,
            len(info.names),
            ", ".join(info.names),
        )
    decoded = _decode_streams(p, info.streams if master else info.streams[1:])
    master_y = decoded.pop(0) if master else None
    channels = max(y.shape[0] for y in decoded)
    n = min(y.shape[1] for y in decoded)
    longest = max(y.shape[1] for y in decoded)
    if longest - n > 2048:
        log.warning(
            "%s: stems differ in length by %d samples; cut to the shortest", p.name, longest - n
        )
    # One array for the mixer; a mono stream is spread to both sides by broadcasting.
    stems = np.empty((len(decoded), channels, n), dtype=np.float32)
    for k, y in enumerate(decoded):
        stems[k] = y[:, :n]
    del decoded
    if master_y is not None:
        m = np.zeros((channels, n), dtype=np.float32)
        m[:, : min(n, master_y.shape[1])] = master_y[:, :n]
        master_y = m
    # One track at a time, so the checks' temporaries stay small.
    checks = [(f"stem {name!r}", y) for name, y in zip(info.names, stems, strict=True)]
    if master_y is not None:
        checks.append(("master", master_y))
    for what, audio in checks:
        if not np.isfinite(audio).all():
            raise AudioFileError(f"{where}: its {what} holds NaN or infinite samples")
        # Damaged AAC data can decode to finite but deafening values; no mix holds those.
        peak = max(float(audio.max()), -float(audio.min()))
        if peak > _MAX_PEAK:
            raise AudioFileError(
                f"{where} is damaged: its {what} peaks at {20 * np.log10(peak):+.0f} dBFS"
            )
    rate = info.sr
    if sr is not None and sr != rate:
        first = resample(stems[0], rate, sr)
        out = np.empty((len(stems), channels, first.shape[1]), dtype=np.float32)
        out[0] = first
        for k in range(1, len(stems)):
            out[k] = resample(stems[k], rate, sr)
        stems = out
        if master_y is not None:
            master_y = resample(master_y, rate, sr)
        rate = sr
    return StemFile(
        stems=stems,
        names=list(info.names),
        colours=list(info.colours),
        sr=rate,
        master=master_y,
        manifest=info.manifest,
        tags=read_tags(p),
    )


def read_mp4_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode the one audio stream of a plain MP4/M4A file: ``(channels, samples)``, sr."""
    p = Path(path)
    with _open(p) as container:
        audio = [s for s in container.streams if s.type == "audio"]
        if len(audio) != 1:
            raise AudioFileError(
                f"{str(p)!r} has {len(audio)} audio streams; name a stem file .stem.mp4"
            )
        index, rate = audio[0].index, int(audio[0].codec_context.sample_rate)
    (y,) = _decode_streams(p, [index])
    return y, rate


def read_tags(path: str | os.PathLike[str]) -> Tags:
    """Title, artist, album and artwork of any file FFmpeg reads (none is an error)."""
    p = Path(path)
    av = _av()
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


# -- writing ------------------------------------------------------------------------------
def _box(kind: str, payload: bytes) -> bytes:
    if len(payload) + 8 > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, kind.encode("latin-1"), len(payload) + 16) + payload
    return struct.pack(">I4s", len(payload) + 8, kind.encode("latin-1")) + payload


def _ilst(tags: Tags, encoder: str) -> bytes:
    items = []

    def item(kind: str, type_code: int, value: bytes) -> None:
        items.append(_box(kind, _box("data", struct.pack(">II", type_code, 0) + value)))

    for kind, value in (("©nam", tags.title), ("©ART", tags.artist), ("©alb", tags.album)):
        if value:
            item(kind, 1, value.encode("utf-8"))
    item("©too", 1, encoder.encode("utf-8"))
    if tags.artwork:
        item("covr", 14 if tags.artwork_mime == "image/png" else 13, tags.artwork)
    return _box("ilst", b"".join(items))


def _udta(manifest: dict[str, Any], tags: Tags, encoder: str) -> bytes:
    hdlr = _box("hdlr", struct.pack(">I I 4s 4s I I", 0, 0, b"mdir", b"appl", 0, 0) + b"\0")
    meta = _box("meta", b"\0\0\0\0" + hdlr + _ilst(tags, encoder))
    stem = _box("stem", json.dumps(manifest, separators=(", ", ": ")).encode("utf-8"))
    return _box("udta", meta + stem)


def _patch_tkhd(buf: bytearray, tkhd: _Box, *, enabled: bool) -> None:
    body = tkhd.body
    version = buf[body]
    flags = (_TKHD_ENABLED | _TKHD_IN_MOVIE) if enabled else _TKHD_IN_MOVIE
    buf[body + 1 : body + 4] = flags.to_bytes(3, "big")
    # Every audio track is an alternative of the others: a player plays one, the enabled one.
    alt = body + (46 if version == 1 else 34)
    buf[alt : alt + 2] = (1).to_bytes(2, "big")


def _finish_moov(path: Path, manifest: dict[str, Any], tags: Tags, encoder: str) -> None:
    """Rewrite the moov box FFmpeg wrote at the end: track flags, tags and the stem box."""
    got = _read_moov(path)
    if got is None:  # pragma: no cover - we just wrote it
        raise AudioFileError(f"{str(path)!r}: the encoder wrote no MP4 file")
    data, boxes, moov = got
    if boxes[-1] is not moov or not any(b.type == "mdat" for b in boxes[:-1]):
        raise AudioFileError(f"{str(path)!r}: unexpected layout from the encoder (moov not last)")
    buf = bytearray(data)
    where = repr(str(path))
    local = _Box("moov", 0, moov.header, moov.size)
    children = []
    first = True
    for child in _boxes(bytes(buf), local.body, local.end, where=where):
        if child.type == "udta":
            continue  # replaced below
        if child.type == "trak":
            tkhd = _find(bytes(buf), child, ("tkhd",), where=where)
            if tkhd is None:
                raise AudioFileError(f"{where}: a track without tkhd from the encoder")
            _patch_tkhd(buf, tkhd, enabled=first)
            first = False
        children.append(bytes(buf[child.start : child.end]))
    children.append(_udta(manifest, tags, encoder))
    new_moov = _box("moov", b"".join(children))
    with open(path, "r+b") as f:
        f.seek(moov.start)
        f.write(new_moov)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def _encode(
    path: Path,
    tracks: Sequence[np.ndarray],
    sr: int,
    *,
    codec: str,
    bitrate: int,
    progress: Callable[[float], None] | None,
) -> None:
    av = _av()
    n = tracks[0].shape[1]
    fmt = "fltp" if codec == "aac" else "s32p"
    # The movie timescale is the sample rate, so the edit lists that skip the
    # encoder's priming samples and cut its padding are exact to the sample.
    with av.open(str(path), "w", format="ipod", options={"movie_timescale": str(sr)}) as out:
        streams = []
        for i in range(len(tracks)):
            opts = _AAC_OPTIONS if codec == "aac" else {}
            s = out.add_stream(codec, rate=sr, layout="stereo", options=opts)
            s.codec_context.format = fmt
            if codec == "aac":
                s.bit_rate = bitrate
            s.disposition = av.stream.Disposition.default if i == 0 else 0
            streams.append(s)
        time_base = Fraction(1, sr)
        packets: list[list[Any]] = [[] for _ in tracks]
        reached = [-math.inf] * len(tracks)  # time of each track's latest packet so far
        finished = [False] * len(tracks)
        done = [0] * len(tracks)  # samples encoded per track, for progress
        stop = threading.Event()
        failures: list[BaseException] = []

        def add(k: int, new: list[Any]) -> None:
            if new:
                packets[k].extend(new)
                reached[k] = seconds(new[-1])  # after: the muxer reads it as a promise

        def encode(k: int) -> None:
            s, y = streams[k], tracks[k]
            try:
                for pos in range(0, n, _BLOCK):
                    if stop.is_set():
                        return
                    block = y[:, pos : pos + _BLOCK]
                    if codec == "alac":
                        # 24-bit: the top 24 bits of s32; float -> int24 rounds, full
                        # scale clips.
                        q = np.clip(np.round(block * 8388608.0), -8388608, 8388607)
                        block = np.left_shift(q.astype(np.int32), 8)
                    frame = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(block), format=fmt, layout="stereo"
                    )
                    frame.sample_rate = sr
                    frame.pts = pos
                    frame.time_base = time_base
                    add(k, s.encode(frame))
                    done[k] = min(n, pos + _BLOCK)
                add(k, s.encode(None))  # flush
            except BaseException as exc:  # re-raised in the calling thread
                failures.append(exc)
                stop.set()
            finally:
                finished[k] = True

        def seconds(packet: Any) -> float:
            # Floats, not Fractions: Fraction arithmetic on every packet cost a second
            # on a 3-minute file.
            return float(packet.dts * packet.time_base.numerator / packet.time_base.denominator)

        cursor = [0] * len(tracks)

        def mux_ready(final: bool) -> None:
            """Mux, in time order, every packet no track can still precede: up to the
            latest time each unfinished track has reached. Muxed packets are dropped,
            so memory holds a few blocks, not the whole file."""
            horizon = math.inf
            if not final:
                for k in range(len(tracks)):
                    if not finished[k]:
                        horizon = min(horizon, reached[k])
            ready = []
            for k, ps in enumerate(packets):
                i, end = cursor[k], len(ps)
                while i < end and (t := seconds(ps[i])) <= horizon:
                    ready.append((t, k, i))
                    i += 1
                cursor[k] = i
            ready.sort()
            for _, k, i in ready:
                out.mux(packets[k][i])
                packets[k][i] = None

        # One thread per track, no barrier between them: FFmpeg encodes without the
        # GIL, so the cores stay busy until the last block of the last track (a pool
        # stepping all tracks block by block idled a core at every step). This thread
        # muxes what they made in time order as they go, so the file is interleaved.
        threads = [
            threading.Thread(target=encode, args=(k,), name=f"stem-encode-{k}", daemon=True)
            for k in range(len(tracks))
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
                    if failures:
                        break
                    mux_ready(final=False)
                    if progress is not None:
                        progress(sum(done) / (n * len(tracks)))
        finally:
            stop.set()  # Ctrl-C or a failure: the other tracks stop at their next block
            for t in threads:
                t.join()
        if failures:
            raise failures[0]
        mux_ready(final=True)
        if progress is not None:
            progress(1.0)


def check_encodable(sr: int, *, codec: str = "aac", bitrate: int = 256_000) -> None:
    """Raise ParameterError unless a stem file of this rate and codec can be written
    (callers check before a long separation, not after it)."""
    if codec not in CODECS:
        raise ParameterError(f"unknown codec {codec!r}; use aac or alac")
    if codec == "aac" and sr not in AAC_RATES:
        raise ParameterError(f"AAC cannot store {sr} Hz; use --codec alac or resample the track")
    if codec == "aac" and not 32_000 <= bitrate <= 512_000:
        raise ParameterError(f"AAC bit rate {bitrate} is outside 32000..512000 bits/s")


def write_stem_file(
    path: str | os.PathLike[str],
    master: np.ndarray,
    stems: np.ndarray,
    sr: int,
    *,
    names: Sequence[str] = NI_NAMES,
    colours: Sequence[str] = NI_COLOURS,
    codec: str = "aac",
    bitrate: int = 256_000,
    tags: Tags | None = None,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Write an NI Stems file, atomically (a temporary file renamed into place).

    Parameters
    ----------
    path : path-like
        Destination, normally ``<name>.stem.mp4``.
    master : np.ndarray, shape (channels, samples)
        The full mix: track 1, the only enabled track.
    stems : np.ndarray, shape (n_stems, channels, samples)
        2 to 4 stems in NI's order (drums, bass, other, vocals for four).
        Mono is written as stereo (NI's players expect stereo tracks).
    sr : int
    names, colours : sequence of str
        One display name and ``#RRGGBB`` colour per stem, for the manifest.
    codec : {"aac", "alac"}
        AAC (lossy, ``bitrate`` bits/s per stereo track) or ALAC (lossless, 24-bit).
    tags : Tags, optional
        Title, artist, album and artwork to carry over.
    progress : callable, optional
        Called with the fraction encoded, 0..1.

    Raises
    ------
    ParameterError
        Unknown codec, a sample rate AAC cannot take, a stem count outside 2-4,
        shapes that do not match, bad names or colours.
    AudioFileError
        The file cannot be written (folder missing, disk full, permissions).
    """
    from .. import __version__
    from .audio import validate_audio

    check_encodable(sr, codec=codec, bitrate=bitrate)
    stems = np.asarray(stems)
    if stems.ndim != 3 or not MIN_STEMS <= stems.shape[0] <= MAX_STEMS:
        raise ParameterError(f"stems must be (2..4, channels, samples), got shape {stems.shape}")
    master = validate_audio(master, name="master")
    if master.shape != stems.shape[1:] or master.shape[0] > 2:
        raise ParameterError(f"master {master.shape} and stems {stems.shape[1:]} do not match")
    manifest = make_manifest(list(names), list(colours))
    problems = manifest_problems(manifest, n_stems=stems.shape[0])
    if problems:
        raise ParameterError("; ".join(problems))
    tracks = [master] + [
        validate_audio(s, name=f"stem {n}") for n, s in zip(names, stems, strict=True)
    ]
    if master.shape[0] == 1:
        tracks = [np.repeat(t, 2, axis=0) for t in tracks]
    dest = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}-", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise AudioFileError(f"cannot write {str(dest)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
    av = _av()
    try:
        _encode(tmp, tracks, sr, codec=codec, bitrate=bitrate, progress=progress)
        _finish_moov(tmp, manifest, tags or Tags(), f"stemdeck {__version__}")
        os.replace(tmp, dest)
    except (OSError, av.FFmpegError) as exc:
        raise AudioFileError(f"cannot write {str(dest)!r}: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
