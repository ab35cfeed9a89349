"""Audio files: which ones stemdeck opens, their headers, loading and writing.

libsndfile reads wav, flac, ogg/opus, mp3, aiff, w64, rf64 and caf; PyAV reads
MP4/M4A, stem files (:mod:`stemdeck.core.audiofile.stemfile`,
:mod:`stemdeck.core.audiofile.decode`) among them. Audio
comes back as float32 ``(channels, samples)``, one or two channels
(:mod:`stemdeck.core.audiofile.samples`).

File names are whatever the file system holds: a name that is not UTF-8 (copied
from an old disk or a zip) reaches Python with its bad bytes as surrogate
escapes. Every function here opens such a file; :func:`printable_name` gives
the form to show or write into a report; :func:`create_temp` and
:func:`disk_full_message` serve the writers of outputs.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import threading
import time
import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..errors import AudioFileError, ParameterError, bare_error
from ..priority import nice_this_thread
from .decode import map_mp4_audio, read_mp4_audio, read_stem_file
from .mp4 import MP4_SUFFIXES, is_mp4_path
from .samples import downmix_to_stereo, resample, validate_audio
from .scratch import map_file, new_file, write_at
from .stemfile import mp4_header, probe

__all__ = [
    "AUDIO_SUFFIXES",
    "AudioInfo",
    "MappedDecode",
    "create_temp",
    "decode_mapped",
    "disk_full_message",
    "is_disk_full",
    "is_inert",
    "load",
    "load_mapped",
    "printable_name",
    "probe_audio",
    "write",
]

log = logging.getLogger(__name__)

#: File extensions (lower case) of the files stemdeck opens: libsndfile's formats
#: for music, and MP4/M4A through PyAV (stem files end in .stem.mp4 or .stem.m4a).
AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"}
    | {".w64", ".rf64", ".caf"}
    | set(MP4_SUFFIXES)
)

_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
# What libsndfile raises for a file it cannot read as audio (OSError apart).
_NOT_AUDIO = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)
#: A temporary output untouched this long was left by a killed process (:func:`create_temp`).
STALE_TEMP_SECONDS = 3600.0
# The errors of a disk with no room left: full, or the user's quota reached.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def printable_name(name: str | os.PathLike[str]) -> str:
    """A file name as valid, inert text, to show, log or write into a report.

    A name that is not UTF-8 reaches Python with each bad byte as a surrogate
    escape, which no UTF-8 encoder takes; here each such byte is written
    ``\\xNN`` (its value in hex): the Latin-1 ``caf\\xe9 live.wav`` stays
    readable and tells which byte it was. Any other lone surrogate is written
    ``\\udNNN``. Control characters (C0, DEL, C1: a newline would forge a log
    line, an escape sequence recolour the terminal) are written ``\\xNN``, and
    the invisible format characters (a right-to-left override reverses what
    follows it) ``\\uNNNN``; spaces of every kind stay. Any other UTF-8 name
    comes back as it is.
    """
    text = os.fspath(name)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    else:
        text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if is_inert(c) else _escaped(c) for c in text)


def is_inert(text: str) -> bool:
    """No control or format character in ``text``: nothing that forges a log line,
    recolours a terminal or reverses the text after it (spaces of every kind are fine)."""
    return text.isprintable() or all(
        c.isprintable() or unicodedata.category(c) == "Zs" for c in text
    )


def _escaped(c: str) -> str:
    """One unprintable character as Python writes it in a string: ``\\x1b``, ``\\u202e``."""
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says (:func:`probe_audio`).

    Attributes
    ----------
    frames : int or None
        Samples per channel: 0 for a file that holds no audio; None for an MP4
        whose header declares no duration (a fragmented file: its audio is
        checked when it is decoded).
    channels : int
        Channels in the file (:func:`load` gives at most two).
    sr : int
        Sample rate.
    """

    frames: int | None
    channels: int
    sr: int

    @property
    def seconds(self) -> float | None:
        """Duration in seconds, or None when the header declares none."""
        return None if self.frames is None or self.sr <= 0 else self.frames / self.sr

    @property
    def holds_audio(self) -> bool:
        """False when the header declares no samples at all."""
        return self.frames != 0


def _check_path(p: Path) -> None:
    if not p.exists():
        raise AudioFileError(f"{str(p)!r}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{str(p)!r} is a folder, not an audio file")


def _not_audio(p: Path, exc: Exception) -> AudioFileError:
    """The error for a file libsndfile refused (``exc``, what it raised)."""
    if isinstance(exc, OSError) and not isinstance(exc, _NOT_AUDIO):
        return AudioFileError(f"{str(p)!r} cannot be read: {exc.strerror or exc}")
    reason = str(exc).split(":")[-1].strip() or type(exc).__name__
    return AudioFileError(
        f"{str(p)!r} is not a readable audio file ({reason}); use wav, flac, ogg or mp3"
    )


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Whether a file is audio stemdeck reads, from its header alone.

    Cheap (no audio is decoded), for a check before a long job or a request:
    libsndfile reads the header of wav, flac, ogg, mp3...; for an MP4/M4A the
    boxes, a stem file's manifest and its streams are checked
    (:func:`~stemdeck.core.audiofile.stemfile.probe`). Whether the file holds
    audio is :attr:`AudioInfo.holds_audio`.

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioFileError
        Missing file, a folder, a file that is not audio or is damaged: the
        message :func:`load` would give (for an MP4, the stem file reader's).
    """
    p = Path(path)
    _check_path(p)
    if is_mp4_path(p):
        frames, channels, sr = mp4_header(p)
        if channels <= 0 or sr <= 0:
            raise AudioFileError(f"{str(p)!r}: its audio stream declares no channels or rate")
        return AudioInfo(frames, channels, sr)
    try:
        # As bytes: libsndfile's path is bytes, and soundfile encodes a str strictly,
        # so a name that is not UTF-8 (a Latin-1 'caf\xe9.wav') would look unreadable.
        info = sf.info(os.fsencode(p))
    except (*_NOT_AUDIO, OSError) as exc:
        raise _not_audio(p, exc) from None
    return AudioInfo(int(info.frames), int(info.channels), int(info.samplerate))


def load(path: str | os.PathLike[str], *, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32, planar, mono or stereo kept.

    Parameters
    ----------
    path : path-like
        Any file libsndfile reads: wav, flac, ogg, mp3 (libsndfile >= 1.1), aiff, ...;
        MP4/M4A through PyAV (a stem file gives the sum of its stems).
    sr : int or None
        Resample to this rate with soxr (very high quality) when the file's rate
        differs; ``None`` keeps the original rate.

    Returns
    -------
    y : np.ndarray, shape (channels, samples), float32
        One or two channels; more are averaged down to stereo with a warning.
    sr : int
        Sample rate of ``y``.

    Raises
    ------
    AudioFileError
        Missing, unreadable, non-audio or empty file, or NaN/inf samples.
    """
    p = Path(path)
    _check_path(p)
    if is_mp4_path(p):
        return _load_mp4(p, sr=sr)
    try:
        data, file_sr = sf.read(os.fsencode(p), dtype="float32", always_2d=True)
    except (*_NOT_AUDIO, OSError) as exc:
        raise _not_audio(p, exc) from None
    return _finish(data.T, int(file_sr), p, sr)


#: Frames decoded at a time by :func:`load_mapped` (8 MiB of stereo float32) ...
MAPPED_BLOCK = 1 << 20
#: ... from a first block this long, doubled from block to block (1.5 s at 44.1 kHz:
#: a track's first seconds are in within milliseconds, where a whole block of an MP3
#: or a FLAC took 40 ms).
FIRST_MAPPED_BLOCK = 1 << 16


class MappedDecode:
    """A file being decoded into a read-only memory map, ``block`` frames at a time,
    in a thread of its own (:func:`decode_mapped`).

    :attr:`audio` is the map of the whole track, ``(channels, frames)`` as the
    header says, from the start: its first :attr:`decoded` frames hold the file's
    samples (each block is checked before it is written: no NaN is ever in the
    map), the rest zeros until decoded. :meth:`wait` waits for a number of frames,
    :meth:`result` for the end; both raise what :func:`load_mapped` would.
    :meth:`share` hands the map's file to another process while it is decoded.
    """

    def __init__(self, audio: np.ndarray, sr: int, *, frames: int | None = None) -> None:
        self.audio = audio
        self.sr = int(sr)
        self._frames = int(audio.shape[1]) if frames is None else frames
        self._decoded = self._frames if frames is None else 0
        self._final: np.ndarray | None = audio if frames is None else None
        self._error: BaseException | None = None
        self._done = frames is None
        self._stop = False
        self._cond = threading.Condition()
        self._fd = -1  # the file decoded into (closed when this object goes)
        self._fd_box: list[int] = []  # the same, for the finalizer
        self._nice: int | None = None  # asked by lower_priority, not yet taken
        self._counters: list[Any] = []  # shared frame counts (share)

    @property
    def decoded(self) -> int:
        """Frames decoded so far (all of them once :attr:`done`, if it succeeded)."""
        return self._decoded

    @property
    def done(self) -> bool:
        """The decode ended (every frame in, the file ended early, or it failed)."""
        return self._done

    def wait(self, frames: int, timeout: float | None = None) -> int:
        """Wait until ``frames`` frames are decoded (or the decode ends); the frames
        decoded then. Those frames are given even when the decode failed after them
        (damage further in: :meth:`result` raises it), however soon it failed.

        Raises
        ------
        AudioFileError, OSError, MemoryError
            The decode failed before ``frames`` frames were in (as :func:`load_mapped`).
        """
        with self._cond:
            wanted = min(frames, self._frames)
            self._cond.wait_for(lambda: self._done or self._decoded >= wanted, timeout)
            if self._error is not None and self._decoded < wanted:
                raise bare_error(self._error)  # a copy: the one kept holds no frame
            return self._decoded

    def result(self, timeout: float | None = None) -> np.ndarray:
        """The whole track once decoded: :attr:`audio`, or a map of the frames the
        file held when it ended before its header's count.

        Raises
        ------
        AudioFileError, OSError, MemoryError
            The decode failed (as :func:`load_mapped`).
        TimeoutError
            Not decoded within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError("the track is still being decoded")
            if self._error is not None:
                raise bare_error(self._error)  # a copy: the one kept holds no frame
            assert self._final is not None
            return self._final

    @property
    def cancelled(self) -> bool:
        """:meth:`cancel` was called (the decode stops at its next block)."""
        return self._stop

    def cancel(self) -> None:
        """Stop decoding (a superseded load): :meth:`result` raises ``AudioFileError``."""
        with self._cond:
            self._stop = True

    def share(self, counter: Any) -> int | None:
        """The file decoded into, for another process to map and read while the rest
        decodes (or once it has): a new descriptor of it (the caller closes it), or
        None when the map is not the track (the decode failed, was cancelled or the
        file ended early: :meth:`result` says how), or there is no such file (a track
        decoded whole, in memory).

        ``counter`` is a shared 64-bit integer (``multiprocessing.RawValue("q")``)
        this object keeps up to date: the frames in after each block (every one of
        them checked: the reader waits for the frames it reads), all of them at the
        end, and -1 when the decode fails, is cancelled, or the file ends before its
        header's count (the map is then not the track: :meth:`result` is another).
        """
        with self._cond:
            if self._fd < 0 or (self._done and self._final is not self.audio):
                return None
            fd = os.dup(self._fd)
            counter.value = self._decoded
            if not self._done:
                self._counters.append(counter)
            return fd

    @property
    def stopped_short(self) -> bool:
        """The decode ended and the map is not the track (failed, cancelled, or the file
        held fewer frames than its header said)."""
        with self._cond:
            return self._done and self._final is not self.audio

    def _run(self, f: sf.SoundFile, p: Path, fd: int, folder: Path, block: int) -> None:
        final: np.ndarray | None = None
        error: BaseException | None = None
        try:
            with f:
                at = _decode_into(f, p, fd, self._frames, int(self.audio.shape[0]), block, self)
            if at == 0:
                load(p)  # no samples: load's error
                raise AudioFileError(f"{str(p)!r} holds no samples")
            final = self.audio
            if at < self._frames:  # the file ended early: its frames in a map of their own
                final = _mapped(self.audio[:, :at], folder, block=block)
        except BaseException as exc:
            error = bare_error(exc)  # its traceback holds this decode: core/errors.py
        with self._cond:
            whole = error is None and final is self.audio
            if not whole:  # nothing to share: its disk space goes with the last map now
                _close_box(self._fd_box)
                self._fd = -1
            for counter in self._counters:
                counter.value = self._frames if whole else -1
            self._counters.clear()
            if error is not None and self._decoded == 0:
                # Nothing to give: the map goes with its last reader (its descriptor
                # with it). A map with frames in stays: wait() may give them (what was
                # decoded before the damage).
                self.audio = np.empty((int(self.audio.shape[0]), 0), np.float32)
            self._final = final
            self._error = error
            self._done = True
            self._cond.notify_all()

    def lower_priority(self, nice: int) -> None:
        """Decode the rest at the niceness ``nice`` (from its next block): once the
        original plays, the decode is background work beside a separation of the
        part decoded, which it should not starve. Where threads have no niceness of
        their own (not Linux), or it is refused, nothing changes."""
        with self._cond:
            self._nice = nice

    def _landed(self, at: int) -> bool:
        """``at`` frames are in; False when cancelled. In the decode's thread."""
        with self._cond:
            self._decoded = at
            for counter in self._counters:
                counter.value = at
            self._cond.notify_all()
            nice, self._nice = self._nice, None
            stop = self._stop
        if nice is not None:
            nice_this_thread(nice)
        return not stop


def _close_box(box: list[int]) -> None:
    """Close the descriptor ``box`` holds, once (a decode's, at its end or its object's)."""
    while box:
        os.close(box.pop())


def decode_mapped(
    path: str | os.PathLike[str], folder: str | os.PathLike[str], *, block: int = MAPPED_BLOCK
) -> MappedDecode:
    """Start decoding ``path`` at its own rate into a read-only memory map of an
    unlinked file in ``folder`` (as :func:`load_mapped`), ``block`` frames at a
    time in a thread of its own; its first blocks can play while the rest decode.

    A file that is not decoded block by block (MP4/M4A, more than two channels,
    a header without frames) is decoded whole here, and returned done: a plain
    MP4 whose header gives its length straight into the map
    (:func:`~.decode.map_mp4_audio`: never whole in the heap), the others through
    the heap.

    Raises
    ------
    AudioFileError
        The file is missing or not audio (later errors: :meth:`MappedDecode.wait`,
        :meth:`MappedDecode.result`).
    OSError
        ``folder`` cannot hold the file (missing, read-only, full).
    """
    p = Path(path)
    _check_path(p)
    if is_mp4_path(p):
        if probe(p) is None:  # a plain MP4: straight into the map, if its header allows
            mapped = map_mp4_audio(p, folder)
            if mapped is not None:
                return MappedDecode(*mapped)
        y, sr = load(p)
        return MappedDecode(_mapped(y, folder), sr)
    try:
        f = sf.SoundFile(os.fsencode(p))
    except (*_NOT_AUDIO, OSError) as exc:
        raise _not_audio(p, exc) from None
    frames, channels, sr = int(f.frames), int(f.channels), int(f.samplerate)
    if frames <= 0 or channels > 2:  # load says why (or downmixes, with its warning)
        f.close()
        return MappedDecode(_mapped(load(p)[0], folder), sr)
    try:
        fd = new_file(folder, 4 * channels * frames)
    except BaseException:
        f.close()
        raise
    try:
        out = map_file(fd, (channels, frames))
    except BaseException:
        f.close()
        os.close(fd)
        raise
    decode = MappedDecode(out, sr, frames=frames)
    decode._fd = fd  # for share(), as long as the decode object lives
    decode._fd_box.append(fd)
    weakref.finalize(decode, _close_box, decode._fd_box)
    threading.Thread(
        target=decode._run,
        args=(f, p, fd, Path(folder), block),
        name="stemdeck-decode",
        daemon=True,
    ).start()
    return decode


def load_mapped(
    path: str | os.PathLike[str], folder: str | os.PathLike[str], *, block: int = MAPPED_BLOCK
) -> tuple[np.ndarray, int]:
    """:func:`load` at the file's own rate, into a read-only memory map of a file
    in ``folder`` rather than the process's heap: the same samples, decoded
    ``block`` frames at a time (MP4/M4A whole, then copied); :func:`decode_mapped`
    waited for.

    The file is unlinked as soon as it is made: it takes disk space while the
    map lives and nothing after, even if the process is killed. Its pages are the
    kernel's page cache (``RssFile``), which it writes back and drops under
    pressure, not anonymous memory (``RssAnon``). The blocks are written with
    ``pwrite`` and mapped once written: as fast as :func:`load` (stores into a
    fresh shared map fault on every page, which took twice as long), and a full
    disk is an ``OSError``, never a ``SIGBUS`` in a store.

    Raises
    ------
    AudioFileError
        As :func:`load`'s.
    OSError
        ``folder`` cannot hold the file (missing, read-only, full).
    """
    decode = decode_mapped(path, folder, block=block)
    return decode.result(), decode.sr


def _decode_into(
    f: sf.SoundFile,
    p: Path,
    fd: int,
    frames: int,
    channels: int,
    block: int,
    decode: MappedDecode | None = None,
) -> int:
    """Decode ``f`` into ``fd``, planar float32 of ``frames`` a channel, in blocks of
    :data:`FIRST_MAPPED_BLOCK` frames doubled each time up to ``block``; the frames
    decoded (fewer when the file ends early). Each block is told to ``decode`` once
    written; a cancelled one stops (``AudioFileError``)."""
    interleaved = np.empty((block, channels), np.float32)
    planar = np.empty((channels, block), np.float32)
    at = 0
    size = min(block, FIRST_MAPPED_BLOCK)
    while at < frames:
        try:
            data = f.read(
                dtype="float32", always_2d=True, out=interleaved[: min(size, frames - at)]
            )
        except (*_NOT_AUDIO, OSError) as exc:
            raise _not_audio(p, exc) from None
        n = len(data)
        if n == 0:
            break
        if not np.isfinite(data.sum(dtype=np.float64)):
            load(p)  # raises load's own error (the count of bad samples)
        np.copyto(planar[:, :n], data.T)
        for c in range(channels):
            write_at(fd, planar[c, :n], 4 * (c * frames + at))
        at += n
        size = min(block, 2 * size)
        if decode is not None and not decode._landed(at):
            raise AudioFileError(f"{str(p)!r}: decode cancelled")
    return at


def _mapped(
    y: np.ndarray, folder: str | os.PathLike[str], *, block: int = MAPPED_BLOCK
) -> np.ndarray:
    """``y`` (channels, frames) as a read-only memory map of a new file in ``folder``,
    copied ``block`` frames of a channel at a time (``y`` may be a map itself: no
    copy of it is made whole in the heap)."""
    shape = (int(y.shape[0]), int(y.shape[1]))
    fd = new_file(folder, 4 * shape[0] * shape[1])
    try:
        for c in range(shape[0]):
            for a in range(0, shape[1], block):
                part = np.ascontiguousarray(y[c, a : a + block], np.float32)
                write_at(fd, part, 4 * (c * shape[1] + a))
        return map_file(fd, shape)
    finally:
        os.close(fd)


def _finish(y: np.ndarray, file_sr: int, p: Path, sr: int | None) -> tuple[np.ndarray, int]:
    """Decoded audio made a track: stereo at most, validated, at ``sr`` when given."""
    if y.shape[0] > 2:
        log.warning("%s: %d channels downmixed to stereo", p.name, y.shape[0])
        y = downmix_to_stereo(y)
    y = validate_audio(y, name=repr(str(p)))
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
        file_sr = sr
    return y, int(file_sr)


def _load_mp4(p: Path, *, sr: int | None) -> tuple[np.ndarray, int]:
    """An MP4/M4A track (libsndfile reads none): a stem file is the sum of its stems
    (what unity on every channel plays), a plain one is its one audio stream."""
    if probe(p) is not None:
        stems = read_stem_file(p, sr=sr, master=False)
        return stems.mix, stems.sr
    y, file_sr = read_mp4_audio(p)
    return _finish(y, file_sr, p, sr)


def write(path: str | os.PathLike[str], y: np.ndarray, sr: int, *, fmt: str = "wav") -> None:
    """Write ``(channels, samples)`` audio; wav is 32-bit float, flac 24-bit.

    Float wav never clips, so channels written this way still add up to the
    track exactly; flac is integer and clips peaks above full scale.

    Raises
    ------
    ParameterError
        Unknown format.
    AudioFileError
        The file cannot be written (folder missing, permissions).
    OSError
        ``ENOSPC``: the disk is full (libsndfile says only "System error": a
        failed write that the disk's free space could not have held is taken
        for a full disk).
    """
    if fmt not in _FORMATS:
        raise ParameterError(f"unknown format {fmt!r}; use one of {sorted(_FORMATS)}")
    container, subtype = _FORMATS[fmt]
    y = np.asarray(y)
    try:
        sf.write(os.fsencode(path), y.T, sr, format=container, subtype=subtype)
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise
        # libsndfile says only "System error": name a missing folder or a refused
        # one first, and take the failure for a full disk only when neither.
        folder = Path(path).parent
        if not folder.is_dir():
            raise AudioFileError(f"cannot write {str(path)!r}: its folder does not exist") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise AudioFileError(f"cannot write {str(path)!r}: permission denied") from None
        if _short_of(folder, 4 * y.size + 4096):  # float32 samples, a header
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path)) from None
        raise AudioFileError(f"cannot write {str(path)!r}: {exc}") from None


def _short_of(folder: Path, size: int) -> bool:
    """True when the disk of ``folder`` has less than ``size`` bytes free for us."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < size


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``OSError`` (PyAV's among them) that says the disk has no room left."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def _mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (or would hold it)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def disk_full_message(where: str | os.PathLike[str]) -> str:
    """The one line for a write to ``where`` (a file or a folder) that found its disk full."""
    return (
        f"cannot write {os.fspath(where)!r}: {os.strerror(errno.ENOSPC)} (the disk at "
        f"{str(_mount_point(Path(where)))!r} is full; free some space on it or choose "
        "another output folder)"
    )


def create_temp(
    parent: Path, *, label: str = "stemdeck", suffix: str, folder: bool = False
) -> Path:
    """A new empty file (or folder) with a hidden random name in ``parent``:
    ``.<label>-<random><suffix>``, ``label`` cut to 32 characters.

    Its mode is what the umask gives an ordinary file (``0666``, ``0777`` for a
    folder), as for any file a program writes: ``tempfile`` makes them private,
    and a mode survives the rename into place. Those of the same label and suffix
    left by a process killed mid-write (untouched for :data:`STALE_TEMP_SECONDS`)
    are removed first, so a killed write never leaves its partial output forever.

    Raises
    ------
    OSError
        ``parent`` cannot be written.
    """
    _remove_stale(parent, label[:32], suffix)
    for _ in range(100):
        path = parent / f".{label[:32]}-{secrets.token_hex(4)}{suffix}"
        try:
            if folder:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(parent))


def _remove_stale(parent: Path, label: str, suffix: str) -> None:
    """Remove :func:`create_temp`'s files and folders of ``label`` and ``suffix`` in
    ``parent`` (exactly its name pattern) untouched for :data:`STALE_TEMP_SECONDS`."""
    own = re.compile(re.escape(f".{label}-") + "[0-9a-f]{8}" + re.escape(suffix) + r"\Z")
    now = time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if not own.match(entry.name):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime <= STALE_TEMP_SECONDS:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue  # another user's, or gone meanwhile: not ours to force
        log.info("removed %s, left by a write that was killed", printable_name(entry.path))
