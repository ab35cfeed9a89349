"""The audio output and its recovery.

:class:`AudioSupervisor` opens the sink (a PortAudio stream, stemdeck's own
JACK client with ``--audio jack``, or the null clock when there is no device or
``--no-audio``), and, checked from the daemon's main loop, reopens it when the
stream stopped calling the engine for a second (the audio server dropped the
client, the device went away). Until the device is back a null clock keeps
time, so the transport and recording go on. A JACK server that shuts down (or
stops calling the client) is said in one line, and a null clock takes over for
the rest of the run: the JACK ports and the transport sync are gone with it.
The main loop's check also renames the JACK ports after a new track's channels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.mixer.engine import Mixer

from .audio.jack import JackOutput, JackSink
from .audio.recorder import Recorder
from .audio.sinks import NullSink, Sink, SoundDeviceSink, output_device
from .link import LinkFollower

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
    jack : JackOutput or None
        Play through this JACK client (``--audio jack``) instead of ``device``.
    on_jack_lost : callable or None
        Called once when the JACK client is gone (the daemon turns sync off).
    link : LinkFollower or None
        Given to every sink it opens: it follows a Link session before each block.
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
        jack: JackOutput | None = None,
        on_jack_lost: Callable[[], None] | None = None,
        link: LinkFollower | None = None,
    ) -> None:
        self.engine = engine
        self.device = device
        self.device_name = device_name
        self.block = block
        self.recorder = recorder
        self.realtime = realtime
        self.stall_s = stall_s
        self.jack = jack
        self.on_jack_lost = on_jack_lost
        self.link = link
        self.sink: Sink | None = None
        self.restarts = 0
        self._last_blocks = -1
        self._since = time.monotonic()

    def _make(self, device: int | None) -> Sink:
        sink = self._sink(device)
        sink.link = self.link
        return sink

    def _sink(self, device: int | None) -> Sink:
        e = self.engine
        args = (e, e.sr, self.block, e.out_channels, self.recorder)
        if self.jack is not None:
            j = self.jack
            return JackSink(
                *args,
                client=j.client,
                names=j.names(),
                outputs=j.outputs,
                connect=j.connect,
                follower=j.follower,
                timebase=j.timebase,
                conditional=j.conditional,
                realtime=self.realtime,
            )
        if device is None:
            return NullSink(*args, realtime=self.realtime)
        return SoundDeviceSink(*args, device=device, realtime=self.realtime)

    def start(self) -> Sink:
        self.sink = self._make(self.device)
        self.sink.start()
        self._since = time.monotonic()
        return self.sink

    @property
    def output_latency_s(self) -> float:
        """The sink's output latency beyond the block (s; 0 before the start)."""
        sink = self.sink
        return sink.output_latency_s if sink is not None else 0.0

    @property
    def xruns(self) -> int:
        return self.sink.xruns if self.sink is not None else 0

    def check(self) -> None:
        """From the main loop: reopen the stream if it stalled; a JACK client that the
        server dropped gives way to a null clock; JACK ports follow the channel names."""
        sink = self.sink
        if isinstance(sink, JackSink) and self.jack is not None:
            if sink.shutdown_reason is not None:
                self._jack_lost(sink.shutdown_reason)
                return
            sink.rename(self.jack.names())
        blocks = self.engine.blocks
        now = time.monotonic()
        if blocks != self._last_blocks:
            self._last_blocks, self._since = blocks, now
        elif now - self._since > self.stall_s:
            self.restart()
            self._since = time.monotonic()

    def _jack_lost(self, reason: str) -> None:
        """One line, and a null clock for the rest of the run."""
        log.warning(
            "JACK stopped (%s): a null clock keeps time, without JACK ports or "
            "transport sync, until serve is restarted",
            reason,
        )
        old = self.sink
        # Out of sight before its client closes: the Link session's thread reads the
        # ports' latency through the sink in force (libjack aborts on a closed client's).
        self.sink = None
        if old is not None:
            old.stop()
        self.jack = None
        if self.on_jack_lost is not None:
            self.on_jack_lost()
        sink = self._make(None)
        sink.xruns = old.xruns if old is not None else 0
        sink.start()
        self.sink = sink
        self.restarts += 1
        self._since = time.monotonic()
        self._last_blocks = -1

    def restart(self) -> None:
        if isinstance(self.sink, JackSink):
            self._jack_lost("the server stopped calling stemdeck")
            return
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
