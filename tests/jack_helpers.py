"""A JACK server with the dummy driver, and a JACK client that records ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def start_jack(name: str, *, rate: int = 48000, period: int = 256) -> subprocess.Popen | None:
    """Start ``jackd -n name -d dummy``; None when jackd is not installed.

    Real-time (SCHED_FIFO for the server and its clients' process threads) where the
    system allows it: on a busy machine a normal-priority graph misses its deadlines
    whatever the clients do. Where it is not allowed, the server runs without.
    """
    if shutil.which("jackd") is None:
        return None
    for realtime in (True, False):
        proc = _jackd(name, rate, period, realtime)
        if proc is not None:
            return proc
    raise RuntimeError("jackd did not start")


def _jackd(name: str, rate: int, period: int, realtime: bool) -> subprocess.Popen | None:
    proc = subprocess.Popen(
        # -t: a busy 2-core CI machine must not get clients thrown out for slowness
        [
            "jackd",
            "-n",
            name,
            "--realtime" if realtime else "--no-realtime",
            "-t",
            "5000",
            "-d",
            "dummy",
            "-r",
            str(rate),
            "-p",
            str(period),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import jack

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None  # refused (no real-time allowed here): try without
        try:
            jack.Client("stemdeck-probe", servername=name, no_start_server=True).close()
            return proc
        except jack.JackError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    return None


class JackRecorder:
    """Records JACK output ports; every block is stamped with its JACK frame time."""

    def __init__(self, server: str, channels: int = 2) -> None:
        import jack

        self.client = jack.Client("stemdeck-rec", servername=server, no_start_server=True)
        self.inports = [self.client.inports.register(f"in_{i + 1}") for i in range(channels)]
        self.blocks: list[tuple[int, np.ndarray]] = []
        self.lock = threading.Lock()
        self.recording = False

        @self.client.set_process_callback
        def process(frames: int) -> None:
            if self.recording:
                data = np.stack([p.get_array().copy() for p in self.inports], axis=1)
                self.blocks.append((self.client.last_frame_time, data))

        self.client.activate()

    @property
    def sr(self) -> int:
        return int(self.client.samplerate)

    def connect_from(self, pattern: str, timeout: float = 10.0) -> list[str]:
        """Connect the output ports whose names contain ``pattern`` to our inputs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = [
                p for p in self.client.get_ports(is_audio=True, is_output=True) if pattern in p.name
            ]
            if len(ports) >= len(self.inports):
                for src, dst in zip(ports, self.inports, strict=False):
                    self.client.connect(src, dst)
                return [p.name for p in ports]
            time.sleep(0.1)
        raise AssertionError(f"no JACK output ports matching {pattern!r}")

    def record(self, seconds: float, timeout: float = 60.0) -> tuple[int, np.ndarray]:
        """Record ``seconds`` of JACK time (not of wall-clock time, which a busy machine
        stretches); returns (JACK frame time of the first sample, audio)."""
        self.start()
        try:
            self.wait_frames(round(seconds * self.sr), timeout=timeout)
        finally:
            self.stop()
        return self.take()

    def start(self) -> None:
        """Forget what was recorded and record from the next block on."""
        self.blocks = []
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def wait_frames(
        self, frames: int, since: int | None = None, timeout: float = 60.0
    ) -> tuple[int, np.ndarray]:
        """Until ``frames`` frames are recorded (of the blocks stamped at JACK frame time
        ``since`` or later); returns :meth:`take` of them. Recording goes on."""
        deadline = time.monotonic() + timeout
        while True:
            first, audio = self.take(since)
            if len(audio) >= frames:
                return first, audio
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(audio)} of {frames} frames recorded in {timeout:g} s")
            time.sleep(0.01)

    def take(self, since: int | None = None) -> tuple[int, np.ndarray]:
        """(JACK frame time of the first sample, audio) of the blocks recorded so far,
        or of those stamped at ``since`` or later."""
        blocks = [b for b in list(self.blocks) if since is None or b[0] >= since]
        if not blocks:
            return 0, np.zeros((0, len(self.inports)), np.float32)
        return blocks[0][0], np.concatenate([b for _, b in blocks])

    def now(self) -> int:
        return int(self.client.frame_time)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def alignment(recorded: np.ndarray, reference: np.ndarray) -> int:
    """Offset into ``reference`` (looped) where ``recorded`` starts, by cross-correlation."""
    from scipy.signal import fftconvolve

    probe = recorded[: min(len(recorded), 24000), 0].astype(np.float64)
    ref = np.concatenate([reference[:, 0], reference[: len(probe), 0]]).astype(np.float64)
    corr = fftconvolve(ref, probe[::-1], mode="valid")
    return int(np.argmax(corr)) % reference.shape[0]


def chunk_residuals(recorded: np.ndarray, reference: np.ndarray, chunk: int) -> list[float]:
    """Residual (dB) of each ``chunk``-sample piece of a recording against the looped
    reference, each piece aligned on its own: one glitch on a busy machine spoils one
    piece, while a wrong signal path spoils them all."""
    out = []
    for start in range(0, len(recorded) - chunk + 1, chunk):
        piece = recorded[start : start + chunk]
        offset = alignment(piece, reference)
        ref = looped(reference, offset, chunk)
        err = np.sum((piece - ref) ** 2) / max(float(np.sum(ref**2)), 1e-12)
        out.append(10 * np.log10(max(float(err), 1e-30)))
    return out


def looped(reference: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples of ``reference`` (samples, channels) from ``start``, wrapping around."""
    idx = (start + np.arange(n)) % reference.shape[0]
    return reference[idx]


def env_for(server: str) -> dict[str, str]:
    return {"JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1"}


@contextmanager
def jack_in_this_process(
    name: str, *, rate: int = 48000, period: int = 256
) -> Iterator[str | None]:
    """A dummy JACK server that this process's own clients (rtmidi) use by default;
    yields None when jackd is not installed. The environment is restored after."""
    proc = start_jack(name, rate=rate, period=period)
    if proc is None:
        yield None
        return
    saved = {k: os.environ.get(k) for k in env_for(name)}
    os.environ.update(env_for(name))
    try:
        yield name
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


def change_latency_ms(first: int, sent: int, audio: np.ndarray, sr: int) -> tuple[float, float]:
    """From a recording that starts at JACK frame ``first``, the ms from ``sent`` to the
    onset of a level drop (below 90 % of the level before) and to silence; NaN if not seen."""
    ms = sr // 1000
    level = np.abs(audio).max(axis=1)
    steps = len(level) // ms
    peaks = level[: steps * ms].reshape(steps, ms).max(axis=1)
    before = max(0, (sent - first) // ms)
    steady = float(np.median(peaks[max(0, before - 50) : before])) if before else 0.0
    below = np.nonzero(peaks[before:] < 0.9 * steady)[0]
    silent = np.nonzero(peaks[before:] < 1e-6)[0]
    return (
        float(below[0]) if len(below) else float("nan"),
        float(silent[0]) if len(silent) else float("nan"),
    )
