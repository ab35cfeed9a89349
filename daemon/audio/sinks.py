"""Audio out: the sink seam, a PortAudio sink and a null clock.

A sink owns the thread that calls ``engine.process(block)`` at the stream's
pace. :class:`SoundDeviceSink` is a PortAudio stream (JACK, ALSA,
PulseAudio/PipeWire); :class:`NullSink` is a real-time clock for machines
without an output or for ``--no-audio``; ``jack.py`` has stemdeck's own JACK
client. Every sink feeds an optional :class:`~.recorder.Recorder`, whose writer
thread (never the audio thread) writes the file.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.engine import enter_audio_thread

from ..c_stderr import captured
from ..realtime import make_realtime, pin_threads, unpin_threads
from .recorder import Recorder

if TYPE_CHECKING:  # the follower imports the mixer's commands: not needed at run time
    from ..link import LinkFollower

__all__ = ["Engine", "NullSink", "Sink", "SoundDeviceSink", "output_device"]

log = logging.getLogger(__name__)


class Engine(Protocol):
    max_block: int

    def process(self, out: np.ndarray) -> None: ...

    def master_view(self, frames: int) -> np.ndarray: ...


class Sink:
    """Base: runs ``engine.process`` on blocks and counts xruns.

    The first block also sets the audio thread up (scheduling, CPU pinning) and may
    come late, with nothing played yet to miss: that is the stream's start, not an
    xrun. So a null clock does not count the first block's lateness, and a sound
    card's underflow flag is not counted in the first :data:`START_BLOCKS` callbacks
    (PortAudio reports the first block's lateness with the next one).
    """

    #: Callbacks at a stream's start whose underflow flag is not an xrun (see above).
    START_BLOCKS = 2

    RECENT_S = 5

    def __init__(
        self,
        engine: Engine,
        sr: int,
        block: int,
        channels: int,
        recorder: Recorder | None,
        *,
        realtime: bool = False,
    ) -> None:
        self.engine = engine
        self.realtime = realtime
        self.scheduling = "not started"  # what the audio thread got (daemon/realtime.py)
        self.sr = sr
        self.block = block
        self.channels = channels
        self.recorder = recorder
        self.xruns = 0
        self.errors = 0
        self.description = ""
        self.max_render_s = 0.0  # slowest engine.process since the start
        # Slowest block of each of the last RECENT_S seconds (a ring the audio thread
        # writes by index: no allocation), for "slowest lately" on the status line.
        self._per_second = [0.0] * self.RECENT_S
        self._blocks_per_second = max(1, sr // block)
        self._rendered = 0
        self._entered = False
        self._pinned = False
        self._slow_blocks = 0
        self._overload_s = 0.5 * block / sr  # see _give_up_pin
        #: Follows a Link session before each block is rendered (daemon/link.py),
        #: set by the supervisor; called only while it leads or just stopped.
        self.link: LinkFollower | None = None

    def _render(self, out: np.ndarray) -> None:
        if not self._entered:  # first block, in the audio thread itself
            enter_audio_thread()
            self.scheduling = make_realtime() if self.realtime else "not real-time (off)"
            if self.scheduling.startswith("SCHED_FIFO"):
                pinned = pin_threads()  # daemon/realtime.py says why
                if pinned:
                    self._pinned = True
                    self.scheduling += f", {pinned}"
            self._entered = True
        t0 = time.perf_counter()
        try:
            self.engine.process(out)
        except Exception:  # the stream must never stop: silence this block, count it
            out.fill(0.0)
            self.errors += 1
        took = time.perf_counter() - t0
        if took > self.max_render_s:
            self.max_render_s = took
        slot = (self._rendered // self._blocks_per_second) % self.RECENT_S
        if self._rendered % self._blocks_per_second == 0:
            self._per_second[slot] = took  # a new second starts
        elif took > self._per_second[slot]:
            self._per_second[slot] = took
        self._rendered += 1
        if self._pinned:
            self._slow_blocks = self._slow_blocks + 1 if took > self._overload_s else 0
            if self._slow_blocks >= 3:
                self._give_up_pin()
        if self.recorder is not None:
            if out.shape[0] <= self.engine.max_block:
                self.recorder.push(self.engine.master_view(out.shape[0]))
            else:  # processed in pieces: only mix-mode output is the master
                self.recorder.push(out[:, :2])

    def _give_up_pin(self) -> None:
        """The callback is overloaded: three blocks in a row took more than half their
        period (a block too small for the work, too many channels). Pinned, it would
        leave the control threads (OSC, web, the main loop) only the kernel's
        real-time allowance, about 5 % of the CPU, just when a performer must reach
        the daemon to lower the load. The threads get every CPU back for the rest of
        the stream, and the status line says why. (Not on an xrun: the null clock
        counts one as the daemon starts.)"""
        self._unpin()
        self.scheduling = self.scheduling.split(", threads on CPU")[0]
        self.scheduling += ", threads on every CPU (the audio was overloaded)"

    def _unpin(self) -> None:
        """After the stream stopped: the process's threads get its CPUs back."""
        if self._pinned:
            self._pinned = False
            unpin_threads()

    @property
    def output_latency_s(self) -> float:
        """How long after its block's start a sample rendered at a block's start is
        heard, beyond the block itself (s): the output's buffering, as the stream
        reports it. 0 for a clock with no output, and for stemdeck's JACK client:
        JACK-Client has no call for a port's latency, and a JACK MIDI port's clock
        meets the audio of its frame anyway (one graph, one latency downstream).
        Read from control threads."""
        return 0.0

    @property
    def recent_max_render_s(self) -> float:
        """Slowest ``engine.process`` in about the last :attr:`RECENT_S` seconds."""
        return max(self._per_second)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class NullSink(Sink):
    """A real-time clock instead of a sound card: same pace, no device."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buf = np.zeros((self.block, self.channels), np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-clock", daemon=True)
        self.description = f"null clock, {self.sr} Hz, {self.block} frames"
        #: When the block being rendered was due (time.monotonic): a sound card's
        #: callback is late by the thread's wake-up and its wait for the GIL too.
        self.due = 0.0

    def _run(self) -> None:
        period = self.block / self.sr
        deadline = time.monotonic()
        while not self._stop.is_set():
            self.due = deadline
            link = self.link
            if link is not None and (link.following or link.sync.source == "link"):
                link.block_at(deadline, self.block)  # the block's own time: no device
            self._render(self._buf)
            deadline += period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # fell behind by more than a block: resynchronize
                if self._rendered >= self.START_BLOCKS:  # not the first block (the start)
                    self.xruns += 1
                deadline = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._unpin()


class SoundDeviceSink(Sink):
    """A PortAudio output stream; the callback only calls ``engine.process``."""

    def __init__(self, *args: Any, device: str | int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # sounddevice loads PortAudio as it is imported (OSError without it): only a
        # daemon with a device does; --no-audio and the null clock never need it.
        import sounddevice as sd

        self._sd = sd
        self._check_outputs(sd, device)
        try:
            self.stream = sd.OutputStream(
                samplerate=self.sr,
                blocksize=self.block,
                channels=self.channels,
                dtype="float32",
                device=device,
                callback=self._callback,
                latency="low",
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise ParameterError(
                f"cannot open audio output {device or '(default)'}: {exc}"
            ) from None
        info = sd.query_devices(self.stream.device)
        api = sd.query_hostapis(info["hostapi"])["name"]
        self.description = (
            f"{info['name']} ({api}), {self.sr} Hz, {self.block} frames, "
            f"{self.stream.latency * 1000:.1f} ms"
        )

    def _check_outputs(self, sd: Any, device: str | int | None) -> None:
        """PortAudio says only "Invalid number of channels" when the device has fewer
        outputs than the stream needs: ``--outputs channels`` needs two per channel,
        and a JACK device has as many as the server's ``system:playback`` ports."""
        try:
            info = sd.query_devices(device, "output")
        except (sd.PortAudioError, ValueError):
            return  # no such device: opening the stream says so
        have = int(info["max_output_channels"])
        if self.channels <= have:
            return
        need = f"{self.channels} outputs"
        if self.channels > 2:
            need += f" (--outputs channels: 2 for each of {self.channels // 2} channels)"
        raise ParameterError(
            f"cannot open audio output {info['name']!r}: {need}, it has {have}; use a "
            "device with more outputs (under JACK: a server with that many playback ports), "
            "or --outputs mix"
        )

    @property
    def output_latency_s(self) -> float:
        """PortAudio's output latency (which counts the block) less the block."""
        return max(0.0, float(self.stream.latency) - self.block / self.sr)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.output_underflow and self._rendered >= self.START_BLOCKS:
            self.xruns += 1
        link = self.link
        if link is not None and (link.following or link.sync.source == "link"):
            # The callback's own time: PortAudio's DAC time is in a clock of its own.
            link.block_at(time.monotonic(), frames)
        self._render(outdata)

    def start(self) -> None:
        self.stream.start()

    def stop(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except self._sd.PortAudioError:
            pass
        self._unpin()


def output_device(name: str | None) -> tuple[int | None, int | None, str]:
    """Find an output device by name prefix (or the default).

    Returns (device index or None, its default rate or None, reason when none).
    """
    # PortAudio starts as sounddevice is first imported, and probes ALSA and JACK, whose
    # libraries print what they do not find: that goes to the debug log. Only then: a
    # stream reopened later (other threads logging meanwhile) probes nothing new.
    first = "sounddevice" not in sys.modules
    try:
        with captured(log, "PortAudio") if first else contextlib.nullcontext():
            import sounddevice as sd  # PortAudio may be missing: that is an answer here

            devices = sd.query_devices()
    except (OSError, ImportError) as exc:
        return None, None, f"PortAudio unavailable ({exc})"
    outputs = [(i, d) for i, d in enumerate(devices) if d["max_output_channels"] >= 2]
    if not outputs:
        return None, None, "no audio output device found"
    if name is None:
        try:
            index = sd.default.device[1]
        except (TypeError, IndexError):
            index = -1
        if index is None or index < 0 or devices[index]["max_output_channels"] < 2:
            index = outputs[0][0]
        return index, int(devices[index]["default_samplerate"]), ""
    for i, d in outputs:
        if d["name"].startswith(name) or d["name"] == name:
            return i, int(d["default_samplerate"]), ""
    known = ", ".join(repr(d["name"]) for _, d in outputs)
    raise ParameterError(f"no audio output named {name!r}; outputs: {known}")
