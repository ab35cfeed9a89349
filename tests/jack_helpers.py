"""A JACK server with the dummy driver, a JACK client that records ports, one that
is the timebase master of a tempo map (:class:`TimebaseSession`), and a mixer that
keeps what the transport followers post to it (:class:`Counting`)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from stemdeck.core.mixer.commands import Command, Keylock
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.mixer.keylock import FRAME_SECONDS


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

    def connect_from(self, pattern: str, timeout: float = 10.0, poll: float = 0.1) -> list[str]:
        """Connect the output ports whose names contain ``pattern`` to our inputs, as
        soon as they are there (looked for every ``poll`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = [
                p for p in self.client.get_ports(is_audio=True, is_output=True) if pattern in p.name
            ]
            if len(ports) >= len(self.inports):
                for src, dst in zip(ports, self.inports, strict=False):
                    self.client.connect(src, dst)
                return [p.name for p in ports]
            time.sleep(poll)
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


class TimebaseSession:
    """A JACK client of a test's (or a bench's) own: the timebase master of a tempo
    map (segments of constant tempo, each from a frame and beat; ``self.TPB`` ticks a
    beat, cut as Ardour does), and a recorder of two ports with the transport's
    frame (and, as :attr:`positions`, the bars and beats any master wrote).
    ``master=False``: a reader only. ``sr`` is the server's rate."""

    TPB = 1920.0

    def __init__(self, server: str, *, master: bool = True, sr: int = 48000) -> None:
        import jack

        self.jack = jack
        self.sr = sr
        self.client = jack.Client("timebase-test", servername=server, no_start_server=True)
        self.inports = [self.client.inports.register(f"in_{i + 1}") for i in range(2)]
        self.per_bar = 4
        self.segments: list[tuple[int, float, float]] = [(0, 0.0, 126.0)]  # frame, beat, bpm
        self.blocks: list[tuple[int, bool, np.ndarray]] = []
        self.positions: list[tuple[int, int, int, int, float, float]] = []
        self.recording = False
        #: While recording: the beat and tempo written for each transport frame (the
        #: map may change under frames a locate comes back to: this is what was said).
        self.written: dict[int, tuple[float, float]] = {}
        self.lock = threading.Lock()

        @self.client.set_process_callback
        def process(frames: int) -> None:
            if not self.recording:
                return
            state, pos = self.client.transport_query_struct()
            data = np.stack([p.get_array().copy() for p in self.inports], axis=1)
            self.blocks.append((int(pos.frame), state == jack.ROLLING, data))
            if pos.valid & jack.POSITION_BBT:
                self.positions.append(
                    (
                        int(pos.frame),
                        int(pos.bar),
                        int(pos.beat),
                        int(pos.tick),
                        float(pos.beats_per_minute),
                        float(pos.beats_per_bar),
                    )
                )

        if master:
            assert self.client.set_timebase_callback(self._timebase, False)
        self.client.transport_stop()
        self.client.transport_frame = 0
        self.client.activate()

    def _timebase(self, state: int, blocksize: int, pos: Any, new_pos: bool) -> None:
        beat = self.beat_at(int(pos.frame))
        if self.recording:  # the beat and tempo given at each frame, exactly
            self.written[int(pos.frame)] = (beat, self.segment(frame=int(pos.frame))[2])
        bar = math.floor(beat / self.per_bar)
        in_bar = beat - bar * self.per_bar
        b = int(in_bar)
        pos.valid = self.jack.POSITION_BBT
        pos.bar = bar + 1
        pos.beat = b + 1
        pos.tick = int((in_bar - b) * self.TPB)  # cut, as Ardour does
        pos.bar_start_tick = bar * self.per_bar * self.TPB
        pos.beats_per_bar = float(self.per_bar)
        pos.beat_type = 4.0
        pos.ticks_per_beat = self.TPB
        pos.beats_per_minute = self.segment(frame=int(pos.frame))[2]

    def segment(self, *, frame: int | None = None, beat: float | None = None) -> tuple:
        segments = self.segments
        if frame is not None:
            return [s for s in segments if s[0] <= frame][-1] if frame >= 0 else segments[0]
        assert beat is not None
        return [s for s in segments if s[1] <= beat][-1]

    def beat_at(self, frame: int) -> float:
        f0, b0, bpm = self.segment(frame=frame)
        return b0 + (frame - f0) / self.sr * bpm / 60.0

    def frame_of(self, beat: float) -> float:
        f0, b0, bpm = self.segment(beat=beat)
        return f0 + (beat - b0) * 60.0 / bpm * self.sr

    def tempo_from(self, frame: int, bpm: float) -> None:
        """The tempo ``bpm`` from ``frame`` on (the beat continuous)."""
        segment = (frame, self.beat_at(frame), bpm)
        self.segments = [s for s in self.segments if s[0] < frame] + [segment]

    def reset(self, bpm: float, per_bar: int) -> None:
        self.per_bar = per_bar
        self.segments = [(0, 0.0, bpm)]

    def frame(self) -> int:
        return int(self.client.transport_query_struct()[1].frame)

    def state(self) -> tuple[bool, int]:
        """(rolling, frame) of the transport now."""
        state, pos = self.client.transport_query_struct()
        return state == self.jack.ROLLING, int(pos.frame)

    def connect(self, ports: list[str]) -> None:
        for src, dst in zip(ports, self.inports, strict=True):
            self.client.connect(src, dst)

    def record_until(self, frame: float, what: str, timeout: float = 60.0) -> None:
        """Record (from now) until a rolling block past transport ``frame`` (polled)."""
        self.blocks = []
        self.positions = []
        self.recording = True
        deadline = time.monotonic() + timeout
        try:
            while True:
                blocks = list(self.blocks)
                if blocks and blocks[-1][1] and blocks[-1][0] > frame:
                    return
                if time.monotonic() > deadline:
                    last = blocks[-1][:2] if blocks else None
                    raise AssertionError(f"{what}: not in {timeout:g} s; last block {last}")
                time.sleep(0.01)
        finally:
            self.recording = False

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """(transport frame of every recorded sample, -1 where stopped or unknown; the
        audio). A block is unknown when its frame does not follow on from the block
        before it, and so is that block: our callback ran late (a busy machine), read
        the next cycle's position and stamped two blocks with one frame. Which of the
        two holds which cycle's audio cannot be told, so neither is measured (a locate
        costs its two blocks the same way; the tests record after their locates)."""
        blocks = list(self.blocks)
        known = [r for _, r, _ in blocks]
        for i in range(1, len(blocks)):
            (f0, r0, d0), (f1, r1, _) = blocks[i - 1], blocks[i]
            if r0 and r1 and f1 != f0 + len(d0):
                known[i - 1] = known[i] = False
        frames = [
            (f + np.arange(len(d))) if k else np.full(len(d), -1)
            for (f, _, d), k in zip(blocks, known, strict=True)
        ]
        return np.concatenate(frames), np.concatenate([d for _, _, d in blocks])

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class Counting(Mixer):
    """The mixer, keeping every command posted to it (``posted``)."""

    def __init__(self, keylock_frame_s: float = FRAME_SECONDS) -> None:
        super().__init__(max_channels=1, keylock_frame_s=keylock_frame_s)
        self.posted: list[Command] = []

    def post(self, command: Command) -> bool:
        self.posted.append(command)
        return super().post(command)


def keylock_heard(engine: Mixer, on: bool = True) -> int:
    """Keylock on (or off), then blocks until the mixer says the shifter's output is
    what is heard (or no longer is): its delay published, after the fill and half
    the crossfade (1152 samples and 10 ms). Returns the blocks processed (at most
    half a second of them)."""
    engine.post(Keylock(on))
    out = np.zeros((engine.max_block, engine.out_channels), np.float32)
    for n in range(1, math.ceil(0.5 * engine.sr / engine.max_block) + 1):
        engine.process(out)
        if (engine.output_delay > 0) == on:
            return n
    raise AssertionError(f"keylock {'on' if on else 'off'}: output_delay {engine.output_delay}")
