"""NI Stems files: encoding and muxing (:func:`write_stem_file`).

PyAV (its own FFmpeg) encodes every track, the master first, then the stems, on
one thread each; :class:`_Muxer` interleaves their packets in time order into
the file as they come. :func:`stemdeck.core.audiofile.mp4.rewrite_moov` then
sets the track flags and adds the tags and the manifest. ``docs/stemfiles.md``
describes the layout written.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import AudioFileError, ParameterError
from .files import create_temp, disk_full_message, is_disk_full
from .manifest import NI_COLOURS, NI_NAMES, make_manifest, manifest_problems
from .mp4 import make_box, rewrite_moov
from .pyav import ffmpeg_reason, import_av
from .samples import validate_audio
from .stemfile import MAX_STEMS, MIN_STEMS
from .tags import Tags

__all__ = ["AAC_RATES", "CODECS", "check_encodable", "write_stem_file"]

#: The codecs a stem file is written with: lossy AAC, lossless ALAC.
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
_BLOCK = 1 << 16  # samples encoded per track in turn, so the tracks interleave in the file
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


def _ilst(tags: Tags, encoder: str) -> bytes:
    items = []

    def item(kind: str, type_code: int, value: bytes) -> None:
        items.append(make_box(kind, make_box("data", struct.pack(">II", type_code, 0) + value)))

    for kind, value in (("©nam", tags.title), ("©ART", tags.artist), ("©alb", tags.album)):
        if value:
            item(kind, 1, value.encode("utf-8"))
    item("©too", 1, encoder.encode("utf-8"))
    if tags.artwork:
        item("covr", 14 if tags.artwork_mime == "image/png" else 13, tags.artwork)
    return make_box("ilst", b"".join(items))


def _udta(manifest: dict[str, Any], tags: Tags, encoder: str) -> bytes:
    """The ``udta`` box of a stem file: the iTunes-style tags, then the manifest."""
    hdlr = make_box("hdlr", struct.pack(">I I 4s 4s I I", 0, 0, b"mdir", b"appl", 0, 0) + b"\0")
    meta = make_box("meta", b"\0\0\0\0" + hdlr + _ilst(tags, encoder))
    stem = make_box("stem", json.dumps(manifest, separators=(", ", ": ")).encode("utf-8"))
    return make_box("udta", meta + stem)


def _seconds(packet: Any) -> float:
    """A packet's decoding time in seconds."""
    # Floats, not Fractions: Fraction arithmetic on every packet cost a second on a
    # 3-minute file.
    return float(packet.dts * packet.time_base.numerator / packet.time_base.denominator)


class _Muxer:
    """Encodes each track on its own thread and muxes their packets in time order.

    One thread per track, no barrier between them: FFmpeg encodes without the
    GIL, so the cores stay busy until the last block of the last track (a pool
    stepping all tracks block by block idled a core at every step). The thread
    that calls :meth:`run` muxes what they made in time order as they go, so the
    file is interleaved.
    """

    def __init__(
        self, out: Any, streams: Sequence[Any], tracks: Sequence[np.ndarray], *, codec: str, sr: int
    ) -> None:
        self.out = out
        self.streams = streams
        self.tracks = tracks
        self.codec = codec
        self.sr = sr
        self.fmt = _sample_format(codec)
        self.samples = tracks[0].shape[1]
        n = len(tracks)
        self.packets: list[list[Any]] = [[] for _ in range(n)]
        self.reached = [-math.inf] * n  # time of each track's latest packet so far
        self.finished = [False] * n
        self.done = [0] * n  # samples encoded per track, for progress
        self.cursor = [0] * n  # each track's first packet not muxed yet
        self.av = import_av()
        self.stop = threading.Event()
        self.failures: list[BaseException] = []

    def run(self, progress: Callable[[float], None] | None) -> None:
        """Encode and mux every track; re-raises the first failure of a track's thread."""
        threads = [
            threading.Thread(target=self._encode, args=(k,), name=f"stem-encode-{k}", daemon=True)
            for k in range(len(self.tracks))
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
                    if self.failures:
                        break
                    self._mux_ready(final=False)
                    if progress is not None:
                        progress(sum(self.done) / (self.samples * len(self.tracks)))
        finally:
            self.stop.set()  # Ctrl-C or a failure: the other tracks stop at their next block
            for t in threads:
                t.join()
        if self.failures:
            raise self.failures[0]
        self._mux_ready(final=True)
        if progress is not None:
            progress(1.0)

    def _add(self, k: int, new: list[Any]) -> None:
        if new:
            self.packets[k].extend(new)
            self.reached[k] = _seconds(new[-1])  # after: the muxer reads it as a promise

    def _encode(self, k: int) -> None:
        """Thread of track ``k``: encode it block by block, then flush the encoder."""
        av = self.av
        s, y = self.streams[k], self.tracks[k]
        time_base = Fraction(1, self.sr)
        try:
            for pos in range(0, self.samples, _BLOCK):
                if self.stop.is_set():
                    return
                block = y[:, pos : pos + _BLOCK]
                if self.codec == "alac":
                    # 24-bit: the top 24 bits of s32; float -> int24 rounds, full scale clips.
                    q = np.clip(np.round(block * 8388608.0), -8388608, 8388607)
                    block = np.left_shift(q.astype(np.int32), 8)
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block), format=self.fmt, layout="stereo"
                )
                frame.sample_rate = self.sr
                frame.pts = pos
                frame.time_base = time_base
                self._add(k, s.encode(frame))
                self.done[k] = min(self.samples, pos + _BLOCK)
            self._add(k, s.encode(None))  # flush
        except BaseException as exc:  # re-raised in the calling thread
            self.failures.append(exc)
            self.stop.set()
        finally:
            self.finished[k] = True

    def _mux_ready(self, final: bool) -> None:
        """Mux, in time order, every packet no track can still precede: up to the
        latest time each unfinished track has reached. Muxed packets are dropped,
        so memory holds a few blocks, not the whole file."""
        horizon = math.inf
        if not final:
            for k in range(len(self.tracks)):
                if not self.finished[k]:
                    horizon = min(horizon, self.reached[k])
        ready = []
        for k, ps in enumerate(self.packets):
            i, end = self.cursor[k], len(ps)
            while i < end and (t := _seconds(ps[i])) <= horizon:
                ready.append((t, k, i))
                i += 1
            self.cursor[k] = i
        ready.sort()
        for _, k, i in ready:
            self.out.mux(self.packets[k][i])
            self.packets[k][i] = None


def _sample_format(codec: str) -> str:
    return "fltp" if codec == "aac" else "s32p"


def _encode(
    path: Path,
    tracks: Sequence[np.ndarray],
    sr: int,
    *,
    codec: str,
    bitrate: int,
    progress: Callable[[float], None] | None,
) -> None:
    """Encode ``tracks`` (each stereo, ``(2, samples)``) into an MP4 file at ``path``."""
    av = import_av()
    # The movie timescale is the sample rate, so the edit lists that skip the
    # encoder's priming samples and cut its padding are exact to the sample.
    with av.open(str(path), "w", format="ipod", options={"movie_timescale": str(sr)}) as out:
        streams = []
        for i in range(len(tracks)):
            opts = _AAC_OPTIONS if codec == "aac" else {}
            s = out.add_stream(codec, rate=sr, layout="stereo", options=opts)
            s.codec_context.format = _sample_format(codec)
            if codec == "aac":
                s.bit_rate = bitrate
            s.disposition = av.stream.Disposition.default if i == 0 else 0
            streams.append(s)
        _Muxer(out, streams, tracks, codec=codec, sr=sr).run(progress)


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
        tmp = create_temp(dest.parent, label=dest.name, suffix=".part")
    except OSError as exc:
        if is_disk_full(exc):
            raise AudioFileError(disk_full_message(dest)) from None
        raise AudioFileError(f"cannot write {str(dest)!r}: {exc.strerror or exc}") from None
    av = import_av()
    try:
        _encode(tmp, tracks, sr, codec=codec, bitrate=bitrate, progress=progress)
        rewrite_moov(tmp, _udta(manifest, tags or Tags(), f"stemdeck {__version__}"))
        os.replace(tmp, dest)
    except (OSError, av.FFmpegError) as exc:
        tmp.unlink(missing_ok=True)  # first: the space it holds is what the message is about
        if is_disk_full(exc):
            raise AudioFileError(disk_full_message(dest)) from None
        raise AudioFileError(f"cannot write {str(dest)!r}: {ffmpeg_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
