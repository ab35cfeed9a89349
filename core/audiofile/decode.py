"""Decoding MP4 audio with PyAV: a stem file's stems and master, in full
(:func:`read_stem_file`, a :class:`StemFile`), and a plain MP4's one track
(:func:`read_mp4_audio`).

Each stream is decoded on a thread of its own (FFmpeg decodes without the GIL)
into one growing buffer, bounded by what the header declares. A truncated file, a
stream that changes its channel count, NaN, infinite or deafening samples are each
one :class:`AudioFileError`: a damaged file never plays silent or garbage stems.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import AudioFileError, bare_error
from .pyav import ffmpeg_reason, import_av, open_container
from .roles import StemLayout, permute_rows, stem_layout
from .samples import resample, resample_channels
from .scratch import Rows, map_file, new_file, write_at
from .stemfile import declared_length, probe
from .tags import Tags, read_tags

__all__ = [
    "StemDecode",
    "StemFile",
    "check_audio",
    "map_mp4_audio",
    "map_stem_file",
    "open_stem_file",
    "read_mp4_audio",
    "read_stem_file",
]

log = logging.getLogger(__name__)

_FIRST_BUFFER_SECONDS = 600
_MAX_PEAK = 16.0  # +24 dBFS: float stems may pass full scale, never by this much


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

    def mixed(self, folder: str | os.PathLike[str] | None, block: int = 1 << 18) -> np.ndarray:
        """:attr:`mix`, summed ``block`` samples at a time into a read-only memory map
        of an unlinked file in ``folder`` (None, or no room there, a full disk
        included: the heap), so a long file's mix takes no more of the heap than its
        stems do."""
        if folder is None:
            return self.mix
        channels, n = self.stems.shape[1:]
        try:
            fd = new_file(folder, 4 * channels * n)
        except OSError as exc:
            log.info("the stems' mix goes to memory, not %s: %s", folder, exc.strerror or exc)
            return self.mix
        try:
            part = np.empty((channels, block), np.float32)
            for a in range(0, n, block):
                b = min(a + block, n)
                self.stems[:, :, a:b].sum(axis=0, dtype=np.float32, out=part[:, : b - a])
                for c in range(channels):
                    write_at(fd, part[c, : b - a], 4 * (c * n + a))
            return map_file(fd, (channels, n))
        except OSError as exc:
            log.info("the stems' mix goes to memory, not %s: %s", folder, exc.strerror or exc)
            return self.mix
        finally:
            os.close(fd)

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


class _Growing:
    """The heap buffer a stream decodes into: sized by what the header declares,
    bounded (a damaged header must not make us allocate what the file cannot hold),
    doubled when needed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buf: np.ndarray | None = None
        self.count = 0
        self.full = False

    def put(self, y: np.ndarray) -> None:
        n = self.count
        if self.buf is None:
            self.buf = np.empty((y.shape[0], self.capacity), dtype=np.float32)
        if n + y.shape[1] > self.buf.shape[1]:
            bigger = np.empty((self.buf.shape[0], 2 * (n + y.shape[1])), dtype=np.float32)
            bigger[:, :n] = self.buf[:, :n]
            self.buf = bigger
        self.buf[:, n : n + y.shape[1]] = y
        self.count += y.shape[1]


class _Width(AudioFileError):
    """A stream decodes to more channels than its rows were made for (its header said
    fewer: HE-AAC v2's parametric stereo): decode it into the heap instead."""


def _decode_stream(path: Path, index: int) -> np.ndarray:
    """Decode one audio stream into one growing buffer, trimmed to its declared length.

    A stream whose decoded audio falls short of its declared length is a
    truncated file: an error, so a cut file never plays with silent stems.
    """
    with open_container(path) as container:
        stream = container.streams[index]
        rate = int(stream.codec_context.sample_rate)
        declared = declared_length(stream, rate)
    sink = _Growing(min(declared or 0, _FIRST_BUFFER_SECONDS * rate) + 8192)
    n = _decode_into(path, index, sink)
    assert sink.buf is not None
    return sink.buf[:, :n]


def _decode_into(
    path: Path, index: int, sink: _Growing | Rows, cancel: threading.Event | None = None
) -> int:
    """Decode stream ``index`` of ``path`` into ``sink`` (:func:`_decode_steps`, run
    through); the samples it holds, trimmed to the declared length."""
    steps = _decode_steps(path, index, sink, cancel)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return int(stop.value)


def _decode_steps(
    path: Path, index: int, sink: _Growing | Rows, cancel: threading.Event | None = None
) -> Generator[None, None, int]:
    """Decode stream ``index`` of ``path`` into ``sink`` (a heap buffer, or rows of a
    scratch file, which take a mono stream into each of their rows and no more than
    their length), a packet a step; returns the samples it holds, trimmed to the
    declared length. Stops, an AudioFileError, once ``cancel`` is set (another
    stream failed).

    Raises
    ------
    AudioFileError
        Damaged, truncated, no audio, a channel count that changes; :class:`_Width`.
    OSError
        The rows' file cannot take them (a full disk).
    """
    av = import_av()
    where = repr(str(path))
    width = 0  # the stream's channels
    with open_container(path) as container:
        stream = container.streams[index]
        declared = declared_length(stream, int(stream.codec_context.sample_rate))
        try:
            for packet in container.demux(stream):
                if cancel is not None and cancel.is_set():
                    raise AudioFileError(f"{where}: stream {index} not decoded (another failed)")
                for frame in packet.decode():
                    y = _to_float(frame)
                    if width == 0:
                        width = y.shape[0]
                        if isinstance(sink, Rows) and width not in (1, sink.channels):
                            raise _Width(
                                f"{where}: stream {index} has {width} channels, "
                                f"its header {sink.channels}"
                            )
                    elif y.shape[0] != width:
                        raise AudioFileError(f"{where}: stream {index} changes its channel count")
                    sink.put(y)
                    if sink.full:
                        break  # all the rows take: the rest is cut anyway
                if sink.full:
                    break
                yield
            if isinstance(sink, Rows):
                sink.flush()
        except av.FFmpegError as exc:
            raise AudioFileError(
                f"{where} is damaged: its audio cannot be decoded ({ffmpeg_reason(exc)})"
            ) from None
        except (ValueError, MemoryError) as exc:
            raise AudioFileError(f"{where} is damaged: {exc}") from None
    n = sink.count
    if n == 0:
        raise AudioFileError(f"{where}: stream {index} holds no audio")
    if declared is not None and declared > 0:
        # One codec frame of slack: decoders differ in how they trim the last one.
        if n < declared - 2048 and not sink.full:
            raise AudioFileError(
                f"{where} is truncated: stream {index} decodes to {n} samples of "
                f"the {declared} it declares"
            )
        n = min(n, declared)
    return n


def _round_robin(steps: list[Generator[None, None, int]]) -> list[int]:
    """Run decodes a packet of each in turn, to their ends: what each returned. On a
    failure the others are closed (their files with them) before it is raised."""
    out = [0] * len(steps)
    live = list(range(len(steps)))
    try:
        while live:
            for i in list(live):
                try:
                    next(steps[i])
                except StopIteration as stop:
                    out[i] = int(stop.value)
                    live.remove(i)
    finally:
        for step in steps:
            step.close()
    return out


def _decode_streams(path: Path, streams: Sequence[int]) -> list[np.ndarray]:
    """Decode audio streams side by side (FFmpeg decodes without the GIL)."""
    workers = min(len(streams), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(_decode_stream, path, i) for i in streams]
        return [job.result() for job in jobs]


def check_audio(where: str, what: str, audio: np.ndarray, block: int = 1 << 20) -> None:
    """NaN, infinite or deafening samples in ``audio`` (channels, samples) are an
    AudioFileError; read ``block`` samples at a time (a map stays out of the heap)."""
    for a in range(0, audio.shape[-1], block):
        part = audio[..., a : a + block]
        if not np.isfinite(part).all():
            raise AudioFileError(f"{where}: its {what} holds NaN or infinite samples")
        # Damaged AAC data can decode to finite but deafening values; no mix holds those.
        peak = max(float(part.max()), -float(part.min()))
        if peak > _MAX_PEAK:
            raise AudioFileError(
                f"{where} is damaged: its {what} peaks at {20 * np.log10(peak):+.0f} dBFS"
            )


def _say_default_names(p: Path, info: Any) -> None:
    """Log that a stem file without a manifest (MUSDB18's) takes NI's default names."""
    if info.manifest is None:
        log.info(
            "%s has no stem manifest: its %d stems take the default names %s",
            p.name,
            len(info.names),
            ", ".join(info.names),
        )


def _header_channels(stream: Any) -> int:
    """The channels a stream's header says it holds (its decoder may give more)."""
    return int(stream.codec_context.channels)


def _decode_side_by_side(
    path: Path, jobs: list[tuple[int, Rows]], cancel: threading.Event | None = None
) -> list[int]:
    """Each (stream, rows) decoded on a thread of its own; the samples each holds.
    The first failure stops the others (a damaged file costs no full decode) and is
    raised; so does ``cancel``, once set."""
    cancel = cancel or threading.Event()
    # A thread a core, each taking its streams a packet at a time in turn: the stems
    # land side by side (what has landed of every one is what can play), never one
    # pair after another; a thread a stream cost a quarter more CPU (the GIL).
    workers = min(len(jobs), os.cpu_count() or 1)
    steps = [_decode_steps(path, i, rows, cancel) for i, rows in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_round_robin, steps[w::workers]) for w in range(workers)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            cancel.set()
            wait(futures)
            raise cast(BaseException, failed[0].exception())
        out = [0] * len(jobs)
        for w, future in enumerate(futures):
            out[w::workers] = future.result()
        return out


def _mapped_whole(p: Path, folder: str | os.PathLike[str]) -> StemFile:
    """A stem file decoded into the heap (:func:`read_stem_file`), arranged, then its
    stems copied into a scratch file's read-only map (the heap's copy goes)."""
    whole = read_stem_file(p, master=False)
    whole.arrange()
    shape = whole.stems.shape
    fd = new_file(folder, 4 * int(np.prod(shape)))
    try:
        for i in range(shape[0]):
            for c in range(shape[1]):
                write_at(
                    fd, np.ascontiguousarray(whole.stems[i, c]), 4 * (i * shape[1] + c) * shape[2]
                )
        whole.stems = map_file(fd, shape)
    finally:
        os.close(fd)
    return whole


class StemDecode:
    """A stem file's stems decoding into a scratch file's map on threads of their own
    (:func:`open_stem_file`): :attr:`file` is the whole map now, read-only, zeros
    where nothing has landed yet (:meth:`landed`, checked by nobody yet:
    :func:`check_audio` a part before it plays); :meth:`result` the stems once all
    are in (checked, unless opened with ``check=False``)."""

    def __init__(
        self,
        p: Path,
        file: StemFile,
        fd: int,
        jobs: list[tuple[int, Rows]],
        folder: Any,
        check: bool,
    ) -> None:
        self.file = file
        self._check = check
        self._path = p
        self._folder = folder
        self._rows = [rows for _, rows in jobs]
        self._fd = fd
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._n: int | None = None
        self._thread = threading.Thread(
            target=self._run, args=(jobs,), name="stemdeck-stem-decode", daemon=True
        )
        self._thread.start()

    def _run(self, jobs: list[tuple[int, Rows]]) -> None:
        try:
            n = min(_decode_side_by_side(self._path, jobs, self._cancel))
            where = repr(str(self._path))
            stems = self.file.stems[:, :, :n] if self._check else ()
            for name, row in zip(self.file.names, stems, strict=False):
                check_audio(where, f"stem {name!r}", row)
            self._n = n
        except BaseException as exc:
            # Bare: its frames hold this decode (and its map of a file as large as the
            # track) in a cycle only a full collection would break (core/errors.py).
            self._error = bare_error(exc)
        finally:
            os.close(self._fd)
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def complete(self) -> bool:
        """Done, and every stem is in (:meth:`landed` is then their length)."""
        return self._done.is_set() and self._n is not None

    def landed(self) -> int:
        """Samples of every stem written so far (all of them once done)."""
        if self._done.is_set() and self._n is not None:
            return self._n
        return min(rows.landed for rows in self._rows)

    def wait(self, samples: int, timeout: float | None = None) -> bool:
        """Wait until ``samples`` of every stem are in, or the decode ended; whether
        it is one or the other within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.landed() < samples and not self._done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._done.wait(0.005)
        return True

    def result(self) -> StemFile:
        """The stems once all are in, cut to the shortest, checked (waits).

        Raises
        ------
        AudioFileError
            Damaged, truncated, NaN or deafening samples, or cancelled.
        OSError
            The scratch file could not take them (a full disk).
        """
        self._done.wait()
        if isinstance(self._error, _Width):  # the header said fewer channels
            log.info("%s", self._error)
            return _mapped_whole(self._path, self._folder)
        if self._error is not None:
            # A copy: the one raised takes a traceback through frames that hold this
            # decode; kept here it would close a cycle (and keep the scratch map open).
            raise bare_error(self._error)
        assert self._n is not None
        file = self.file
        return StemFile(
            stems=file.stems[:, :, : self._n],
            names=file.names,
            colours=file.colours,
            sr=file.sr,
            master=None,
            manifest=file.manifest,
            tags=file.tags,
        )

    def cancel(self) -> None:
        """Stop decoding (:meth:`result` then raises)."""
        self._cancel.set()


def open_stem_file(
    path: str | os.PathLike[str], folder: str | os.PathLike[str], *, check: bool = True
) -> StemDecode | StemFile:
    """Start decoding a stem file's stems (not its master) at the file's own rate, in
    the mixer's order (:meth:`StemFile.arrange` finds them arranged), into a
    read-only memory map of an unlinked file in ``folder``: however long the file,
    the stems take page cache, not the heap. Each stream goes straight into its row
    as it decodes, side by side, in the background (:class:`StemDecode`). A file
    whose header declares no length (a fragmented MP4) is decoded as
    :func:`read_stem_file` does, then mapped, and returned done (a StemFile).
    ``check=False``: :meth:`StemDecode.result` does not look for NaN or deafening
    samples (its caller checks each part with :func:`check_audio` as it lands).

    Raises
    ------
    AudioFileError
        Not a stem file (the rest: :meth:`StemDecode.result`).
    OSError
        ``folder`` cannot hold the stems (missing, read-only).
    """
    p = Path(path)
    where = repr(str(p))
    info = probe(p)
    if info is None:
        raise AudioFileError(f"{where} is a plain MP4 with one audio stream, not a stem file")
    streams = list(info.streams[1:])
    with open_container(p) as container:
        audio = [container.streams[i] for i in streams]
        declared = [declared_length(a, int(a.codec_context.sample_rate)) for a in audio]
        widths = [_header_channels(a) for a in audio]
    if any(d is None or d <= 0 for d in declared) or not 1 <= max(widths) <= 2:
        return _mapped_whole(p, folder)
    _say_default_names(p, info)
    layout = stem_layout(info.names)
    # The stems are cut to the shortest: no row need hold more than the shortest declares
    # (nor a forged header's longest make a file of that size).
    shortest, longest = min(d or 0 for d in declared), max(d or 0 for d in declared)
    if longest - shortest > 2048:
        log.warning(
            "%s: stems differ in length by %d samples; cut to the shortest",
            p.name,
            longest - shortest,
        )
    shape = (len(streams), max(widths), shortest)
    fd = new_file(folder, 4 * shape[0] * shape[1] * shape[2])
    try:
        rows = [Rows(fd, 4 * i * shape[1] * shape[2], shape[1], shape[2]) for i in range(shape[0])]
        stems = map_file(fd, shape)
        file = StemFile(
            stems=stems,
            names=layout.arrange(info.names),
            colours=layout.arrange(info.colours),
            sr=info.sr,
            master=None,
            manifest=info.manifest,
            tags=read_tags(p),
        )
        jobs = [(streams[k], rows[layout.order.index(k)]) for k in range(len(streams))]
        return StemDecode(p, file, fd, jobs, folder, check)
    except BaseException:
        os.close(fd)
        raise


def map_stem_file(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> StemFile:
    """:func:`open_stem_file`, waited for: the stems once all are in, checked.

    Raises
    ------
    AudioFileError
        As :func:`read_stem_file`.
    OSError
        ``folder`` cannot hold the stems (missing, read-only, full).
    """
    opened = open_stem_file(path, folder)
    return opened.result() if isinstance(opened, StemDecode) else opened


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
    _say_default_names(p, info)
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
        check_audio(where, what, audio)
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


def map_mp4_audio(
    path: str | os.PathLike[str], folder: str | os.PathLike[str]
) -> tuple[np.ndarray, int] | None:
    """A plain MP4's one audio stream decoded straight into a read-only memory map of
    an unlinked file in ``folder`` (C-contiguous ``(channels, samples)``), and its
    rate; None where its header declares no length or more than two channels (then
    :func:`read_mp4_audio` decodes it).

    Raises
    ------
    AudioFileError
        As :func:`read_mp4_audio`; NaN or infinite samples, as
        :func:`~.samples.validate_audio` says them.
    OSError
        ``folder`` cannot hold it.
    """
    p = Path(path)
    index, rate, declared, width = _one_audio_stream(p)
    if declared is None or declared <= 0 or not 1 <= width <= 2:
        return None
    fd = new_file(folder, 4 * width * declared)
    try:
        try:
            n = _decode_into(p, index, Rows(fd, 0, width, declared))
        except _Width:
            return None
        y = map_file(fd, (width, declared))
    finally:
        os.close(fd)
    if n < declared:  # a frame or so short of the header: the map made exact
        fd = new_file(folder, 4 * width * n)
        try:
            for c in range(width):
                for a in range(0, n, 1 << 20):
                    b = min(a + (1 << 20), n)
                    write_at(fd, np.ascontiguousarray(y[c, a:b]), 4 * (c * n + a))
            y = map_file(fd, (width, n))
        finally:
            os.close(fd)
    blocks = [y[:, a : a + (1 << 20)] for a in range(0, n, 1 << 20)]
    if not all(np.isfinite(b.sum(dtype=np.float64)) for b in blocks):  # validate_audio's
        bad = sum(int(b.size - np.count_nonzero(np.isfinite(b))) for b in blocks)
        raise AudioFileError(f"{str(p)!r}: {bad} samples are NaN or infinite; re-export the file")
    return y, rate


def _one_audio_stream(p: Path) -> tuple[int, int, int | None, int]:
    """A plain MP4's one audio stream: its index, rate, declared length (None: none
    declared) and the channels its header says.

    Raises
    ------
    AudioFileError
        Not one audio stream (or not an MP4 PyAV opens).
    """
    with open_container(p) as container:
        audio = [s for s in container.streams if s.type == "audio"]
        if len(audio) != 1:
            raise AudioFileError(
                f"{str(p)!r} has {len(audio)} audio streams; name a stem file .stem.mp4"
            )
        rate = int(audio[0].codec_context.sample_rate)
        return audio[0].index, rate, declared_length(audio[0], rate), _header_channels(audio[0])


def read_mp4_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode the one audio stream of a plain MP4/M4A file: ``(channels, samples)``, sr."""
    p = Path(path)
    index, rate, _, _ = _one_audio_stream(p)
    (y,) = _decode_streams(p, [index])
    return y, rate
