"""NI Stems files (``.stem.mp4``, ``.stem.m4a``): the manifest, names, and decoding.

A stem file is an MP4 (ISO base media) file with one stereo audio track for the
master (the full mix, the only track marked enabled, so an ordinary player plays
it) followed by the stems, in NI's order drums, bass, other, vocals. A ``stem``
box in ``moov/udta`` holds a JSON manifest with the stems' names and colours and
the master's mastering DSP. ``docs/stemfiles.md`` describes the layout as this
module reads it and :mod:`stemdeck.core.audiofile.stemfile_write` writes it.

Audio is decoded with PyAV (its own FFmpeg); the boxes around it are read by
:mod:`stemdeck.core.audiofile.mp4`, which checks every size against its parent,
so a damaged file is one :class:`AudioFileError`, never a crash or a hang.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioFileError, ParameterError
from .mp4 import read_moov, read_stem_box
from .roles import StemLayout, permute_rows, stem_layout
from .samples import resample, resample_channels

__all__ = [
    "MANIFEST_DEPTH_MAX",
    "MANIFEST_MAX",
    "MANIFEST_VERSION",
    "MAX_STEMS",
    "MIN_STEMS",
    "NAME_MAX",
    "NI_COLOURS",
    "NI_NAMES",
    "NI_STEMS",
    "STEM_SUFFIXES",
    "StemFile",
    "StemFileInfo",
    "Tags",
    "display_name",
    "ffmpeg_reason",
    "import_av",
    "is_stem_path",
    "make_manifest",
    "manifest_problems",
    "mp4_header",
    "probe",
    "read_mp4_audio",
    "read_stem_file",
    "read_tags",
    "stem_track_name",
]

log = logging.getLogger(__name__)

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
MIN_STEMS, MAX_STEMS = 2, 4
MANIFEST_VERSION = 1

#: Most characters of a stem's display name (longer ones end in an ellipsis).
NAME_MAX = 64
#: Most bytes, and most levels of nesting, of a ``stem`` box's JSON. NI's manifest is
#: about 600 bytes and 4 levels deep; these leave room for other tools' additions and
#: keep a hostile manifest from exhausting the parser (100,000 nested lists overflowed
#: the stack of Python's JSON decoder).
MANIFEST_MAX = 1 << 20
MANIFEST_DEPTH_MAX = 32

_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}\Z")
# A string, possessive and open-ended so an unterminated one costs one pass, not one per quote.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# C0 and C1 control characters and lone surrogates: what breaks a log line or an encoder.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# The bidirectional controls: invisible, and a right-to-left override reverses what follows.
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FIRST_BUFFER_SECONDS = 600
_MAX_PEAK = 16.0  # +24 dBFS: float stems may pass full scale, never by this much


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


def _json_depth(text: bytes) -> int:
    """How deep arrays and objects nest in ``text``, brackets inside strings aside.

    Linear in the length and without recursion, so it is safe on any input; on
    text that is not JSON the figure means nothing (the parser then says why).
    """
    brackets = _JSON_STRING.sub(b'""', text).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return max(0, int(np.cumsum(steps).max()))


def _parse_manifest(payload: bytes, *, where: str, path: Path) -> dict[str, Any]:
    """Decode the ``stem`` box; the parts a player needs must be there and sound.

    Its size and nesting are checked before it is parsed (:data:`MANIFEST_MAX`,
    :data:`MANIFEST_DEPTH_MAX`).
    """
    text = payload.rstrip(b"\0")  # some writers end the JSON with a NUL
    if len(text) > MANIFEST_MAX:
        raise AudioFileError(
            f"{where}: broken stem box ({len(text)} bytes of JSON; a manifest has at most "
            f"{MANIFEST_MAX})"
        )
    depth = _json_depth(text)
    if depth > MANIFEST_DEPTH_MAX:
        raise AudioFileError(
            f"{where}: broken stem box (its JSON nests {depth} levels deep; a manifest "
            f"has at most {MANIFEST_DEPTH_MAX})"
        )
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AudioFileError(f"{where}: broken stem box (not JSON: {exc})") from None
    if not isinstance(manifest, dict):
        raise AudioFileError(f"{where}: broken stem box (a JSON {type(manifest).__name__})")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise AudioFileError(f"{where}: broken stem box (version {_short(version)}, expected >= 1)")
    if version > MANIFEST_VERSION:
        _warn_once(
            path,
            "%s: stem manifest version %s is newer than 1; reading it anyway",
            where,
            _short(version),
        )
    stems = manifest.get("stems")
    if not isinstance(stems, list) or not all(isinstance(s, dict) for s in stems):
        raise AudioFileError(f"{where}: broken stem box ('stems' is not a list of objects)")
    return manifest


# What _warn_once said already: (path, size and mtime, message), the latest 256.
_WARNED: OrderedDict[tuple[str, tuple[int, int] | None, str], None] = OrderedDict()
_WARNED_LOCK = threading.Lock()


def _warn_once(path: Path, fmt: str, *args: object) -> None:
    """``log.warning(fmt, *args)``, once for one version (size, mtime) of the file at
    ``path``: a load probes a stem file up to three times (header, limits, decode)."""
    try:
        st = path.stat()
        version: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
    except OSError:
        version = None
    key = (str(path), version, fmt % args)
    with _WARNED_LOCK:
        if key in _WARNED:
            _WARNED.move_to_end(key)
            return
        _WARNED[key] = None
        if len(_WARNED) > 256:
            _WARNED.popitem(last=False)
    log.warning(fmt, *args)


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: a log line stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- names for the mixer (keys and roles: roles.py) -----------------------------------------
def display_name(name: str) -> str:
    """A stem's name as shown: control characters become spaces, a lone surrogate
    U+FFFD, bidirectional controls (U+202E...) are dropped, the ends are stripped,
    and a name longer than :data:`NAME_MAX` characters is cut to that length, its
    last character an ellipsis.

    Empty when nothing printable is left.
    """
    text = _BIDI.sub("", _SURROGATE.sub("\ufffd", _UNPRINTABLE.sub(" ", name))).strip()
    if len(text) > NAME_MAX:
        text = text[: NAME_MAX - 1].rstrip() + "\u2026"
    return text


# -- file names ---------------------------------------------------------------------------
def is_stem_path(path: str | os.PathLike[str]) -> bool:
    """True for a name ending in ``.stem.mp4`` or ``.stem.m4a`` (any case)."""
    return str(path).lower().endswith(STEM_SUFFIXES)


def stem_track_name(path: str | os.PathLike[str]) -> str:
    """A track's name from its file name: ``Song.stem.mp4`` and ``Song.wav`` are ``Song``."""
    name = Path(path).name
    if is_stem_path(name):
        return name[: -len(".stem.mp4")]
    return Path(name).stem


# -- reading ------------------------------------------------------------------------------
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

    def arrange(self) -> StemLayout:
        """Put the stems in the mixer's order (drums, bass, other, vocals, then the
        stems with no role: :func:`~stemdeck.core.audiofile.roles.stem_layout`), in
        place, names and colours with them; returns the layout, whose ``keys`` are
        the channels' keys. The names stay the file's own (the labels shown)."""
        layout = stem_layout(self.names)
        if not layout.identity:
            permute_rows(self.stems, layout.order)
            self.names = layout.arrange(self.names)
            self.colours = layout.arrange(self.colours)
        return layout


def import_av() -> Any:
    """PyAV, with FFmpeg's own logging off: its errors come back as exceptions.

    Raises
    ------
    AudioFileError
        PyAV is not installed.
    """
    try:
        import av  # here, not at the top: PyAV costs ~50 ms, and most imports never decode
    except ImportError:  # pragma: no cover - a dependency; a broken install
        raise AudioFileError("stem files need PyAV: pip install av") from None
    av.logging.set_level(av.logging.PANIC)  # errors come back as exceptions; no stderr noise
    return av


def _open(path: Path) -> Any:
    av = import_av()
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as exc:
        raise AudioFileError(f"{str(path)!r} cannot be opened: {ffmpeg_reason(exc)}") from None
    except OSError as exc:
        raise AudioFileError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None


def ffmpeg_reason(exc: BaseException) -> str:
    """The reason an FFmpeg or OS error gives, without the file name PyAV appends."""
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
    if read_moov(p) is None:
        raise AudioFileError(f"{where} is not an MP4 file; a stem file is an MP4 (.stem.mp4)")
    payload = read_stem_box(p)
    manifest = None if payload is None else _parse_manifest(payload, where=where, path=p)
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
        if isinstance(name, str):
            name = display_name(name)
        if not isinstance(name, str) or not name:
            _warn_once(
                p, "%s: stem %d has no name in the manifest; calling it stem%d", where, i + 1, i + 1
            )
            name = f"stem{i + 1}"
        if not isinstance(colour, str) or not _COLOUR.match(colour):
            _warn_once(
                p, "%s: stem %r has colour %s; using the default", where, name, _short(colour)
            )
            colour = NI_STEMS[i][1]
        names_l.append(name)
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


def _declared_length(stream: Any, rate: int) -> int | None:
    """Samples a stream's header declares, or None when it declares no duration."""
    if stream.duration is None or stream.time_base is None:
        return None
    return round(stream.duration * stream.time_base * rate)


def mp4_header(path: str | os.PathLike[str]) -> tuple[int | None, int, int]:
    """What an MP4 file's header says of its audio, without decoding any.

    Returns
    -------
    frames : int or None
        Samples per channel: a stem file's shortest stem, a plain MP4's one audio
        stream; None when the header declares no duration (a fragmented file).
    channels : int
        Channels of the audio (of the widest stem).
    sr : int
        Sample rate.

    Raises
    ------
    AudioFileError
        See :func:`probe`.
    """
    p = Path(path)
    info = probe(p)
    with _open(p) as container:
        if info is None:  # a plain MP4: exactly one audio stream
            streams = [s for s in container.streams if s.type == "audio"]
        else:
            streams = [container.streams[i] for i in info.streams[1:]]
        rate = int(streams[0].codec_context.sample_rate or 0)
        channels = max(int(s.codec_context.channels or 0) for s in streams)
        lengths = [_declared_length(s, rate) for s in streams]
    known = [n for n in lengths if n is not None]
    return (min(known) if known else None), channels, rate


def _decode_stream(path: Path, index: int) -> np.ndarray:
    """Decode one audio stream into one growing buffer, trimmed to its declared length.

    A stream whose decoded audio falls short of its declared length is a
    truncated file: an error, so a cut file never plays with silent stems.
    """
    av = import_av()
    where = repr(str(path))
    with _open(path) as container:
        stream = container.streams[index]
        rate = int(stream.codec_context.sample_rate)
        declared = _declared_length(stream, rate)
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
                f"{where} is damaged: its audio cannot be decoded ({ffmpeg_reason(exc)})"
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
        stems = resample_channels(stems, rate, sr)
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
