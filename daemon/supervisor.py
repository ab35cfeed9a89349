"""The audio output and its recovery.

:class:`AudioSupervisor` opens the sink (a PortAudio stream, or the null clock
when there is no device or ``--no-audio``), and, checked from the daemon's main
loop, reopens it when the stream stopped calling the engine for a second (the
audio server dropped the client, the device went away). Until the device is
back a null clock keeps time, so the transport and recording go on.
"""

from __future__ import annotations

import logging
import time

from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.mixer.engine import Mixer

from .audio import NullSink, Recorder, Sink, SoundDeviceSink, output_device

__all__ = ["AudioSupervisor"]

log = logging.getLogger(__name__)


class AudioSupervisor:
    """Owns the sink for ``engine``.

    Parameters
    ----------
    engine : Mixer
        The prepared mixer.
    device : int or None
        PortAudio device index; None runs the null clock.
    device_name : str or None
        What the user asked for (``--audio-device``), used to find it again.
    block : int
    recorder : Recorder or None
    realtime : bool
        Ask for SCHED_FIFO in the audio thread (daemon/realtime.py).
    stall_s : float
        How long the engine may go without a block before the stream is reopened.
    """

    def __init__(
        self,
        engine: Mixer,
        *,
        device: int | None,
        device_name: str | None,
        block: int,
        recorder: Recorder | None,
        realtime: bool = True,
        stall_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.device = device
        self.device_name = device_name
        self.block = block
        self.recorder = recorder
        self.realtime = realtime
        self.stall_s = stall_s
        self.sink: Sink | None = None
        self.restarts = 0
        self._last_blocks = -1
        self._since = time.monotonic()

    def _make(self, device: int | None) -> Sink:
        e = self.engine
        args = (e, e.sr, self.block, e.out_channels, self.recorder)
        if device is None:
            return NullSink(*args, realtime=self.realtime)
        return SoundDeviceSink(*args, device=device, realtime=self.realtime)

    def start(self) -> Sink:
        self.sink = self._make(self.device)
        self.sink.start()
        self._since = time.monotonic()
        return self.sink

    @property
    def xruns(self) -> int:
        return self.sink.xruns if self.sink is not None else 0

    def check(self) -> None:
        """From the main loop: reopen the stream if it stalled."""
        blocks = self.engine.blocks
        now = time.monotonic()
        if blocks != self._last_blocks:
            self._last_blocks, self._since = blocks, now
        elif now - self._since > self.stall_s:
            self.restart()
            self._since = time.monotonic()

    def restart(self) -> None:
        log.warning("audio stream stalled; reopening it")
        old = self.sink
        if old is not None:
            old.stop()
        xruns = old.xruns if old is not None else 0
        sink: Sink
        try:
            index, _, reason = output_device(self.device_name)
            if index is None or self.device is None:
                raise ParameterError(reason or "no audio output")
            sink = self._make(index)
        except StemdeckError as exc:
            log.warning("audio output unavailable (%s): null clock until it returns", exc)
            sink = self._make(None)
        sink.xruns = xruns + 1
        sink.start()
        self.sink = sink
        self.restarts += 1
        log.info("audio: %s", sink.description)

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()
