"""Recording the master output to a WAV file from a writer thread.

The audio thread only copies each block into a ring (:meth:`Recorder.push`); the
writer thread appends to a :class:`WavFile` whose header it keeps true as it grows.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np

from stemdeck.core.errors import AudioFileError

__all__ = ["Recorder", "WavFile"]

log = logging.getLogger(__name__)


class WavFile:
    """A 32-bit float WAV file whose header is kept true while it grows.

    :meth:`update_header` rewrites the RIFF and data sizes in place (two
    ``pwrite`` calls), so a process killed at any moment leaves a file every
    player opens, holding everything written up to the last update. The
    classic RIFF header counts 32 bits: a file stops at 4 GiB (about three
    hours of stereo at 48 kHz) and says so.
    """

    HEADER = 58  # RIFF(12) + fmt (8 + 18) + fact (12) + data header (8)
    LIMIT = 2**32 - 1 - HEADER

    def __init__(self, path: Path, sr: int, channels: int) -> None:
        self.path = path
        self.channels = channels
        self.frames = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._header_frames = -1
        fmt = struct.pack(
            "<HHIIHHH", 3, channels, sr, sr * channels * 4, channels * 4, 32, 0
        )  # WAVE_FORMAT_IEEE_FLOAT
        head = b"RIFF" + struct.pack("<I", 0) + b"WAVE"
        head += b"fmt " + struct.pack("<I", len(fmt)) + fmt
        head += b"fact" + struct.pack("<II", 4, 0)
        head += b"data" + struct.pack("<I", 0)
        assert len(head) == self.HEADER
        os.write(self._fd, head)
        self.update_header()

    def write(self, frames: np.ndarray) -> None:
        """Append (n, channels) float32 frames. Raises OSError (full disk...)."""
        data = np.ascontiguousarray(frames, dtype="<f4")
        if (self.frames + len(data)) * self.channels * 4 > self.LIMIT:
            raise OSError(errno.EFBIG, "WAV file reached its 4 GiB limit")
        view = memoryview(data.tobytes())
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.frames += len(data)

    def update_header(self) -> None:
        if self._header_frames == self.frames:
            return
        size = self.frames * self.channels * 4
        os.pwrite(self._fd, struct.pack("<I", 50 + size), 4)
        os.pwrite(self._fd, struct.pack("<I", self.frames), 46)
        os.pwrite(self._fd, struct.pack("<I", size), 54)
        self._header_frames = self.frames

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.update_header()
            finally:
                os.close(self._fd)
                self._fd = -1


class Recorder:
    """Writes the master output from a writer thread.

    The audio thread copies each block into a preallocated ring (no allocation,
    no lock: one writer index, one reader index). The writer thread appends to
    a WAV file whose header it updates every :attr:`HEADER_SECONDS`, so a killed
    process loses at most that much. A write error (full disk) stops the
    recording, is kept in :attr:`error` and shown on the status line; blocks the
    writer could not take in time are counted in :attr:`overruns`.
    """

    HEADER_SECONDS = 0.5

    def __init__(
        self,
        path: str | Path,
        sr: int,
        channels: int,
        *,
        seconds: float = 8.0,
        max_block: int = 8192,
    ) -> None:
        self.path = Path(path)
        try:
            self._file = WavFile(self.path, sr, channels)
        except OSError as exc:
            raise AudioFileError(
                f"cannot record to {str(self.path)!r}: {exc.strerror or exc}"
            ) from None
        self._ring = np.zeros((int(seconds * sr) + max_block, channels), np.float32)
        self._write = 0  # total frames written by the audio thread
        self._read = 0
        self.overruns = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-record", daemon=True)
        self._thread.start()

    @property
    def frames(self) -> int:
        """Frames in the file so far."""
        return self._file.frames

    def push(self, block: np.ndarray) -> None:
        """Audio thread: copy one block in (drops it, counted, if the writer fell behind)."""
        n = block.shape[0]
        size = self._ring.shape[0]
        if self._write + n - self._read > size:
            self.overruns += 1
            return
        start = self._write % size
        first = min(n, size - start)
        self._ring[start : start + first] = block[:first, : self._ring.shape[1]]
        if first < n:
            self._ring[: n - first] = block[first:, : self._ring.shape[1]]
        self._write += n

    def _drain(self) -> None:
        size = self._ring.shape[0]
        while self._read < self._write:
            start = self._read % size
            n = min(self._write - self._read, size - start)
            if self.error is None:
                try:
                    self._file.write(self._ring[start : start + n])
                except OSError as exc:
                    self.error = f"recording stopped: {exc.strerror or exc}"
                    log.error("%s (%s); the music goes on", self.error, self.path)
            self._read += n

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.05):
            self._drain()
            if time.monotonic() - last >= self.HEADER_SECONDS:
                last = time.monotonic()
                self._header()

    def _header(self) -> None:
        try:
            self._file.update_header()
        except OSError as exc:
            if self.error is None:
                self.error = f"recording header not written: {exc.strerror or exc}"
                log.error("%s (%s)", self.error, self.path)

    def close(self) -> None:
        """Write what is left and close: the file is complete and valid."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._drain()
        self._header()
        try:
            self._file.close()
        except OSError:
            pass
