"""stemdeck's own JACK client: ports named after the channels, the JACK transport.

``serve --audio jack`` plays through a JACK client of its own, ``stemdeck``,
instead of PortAudio's: ``--outputs mix`` has ``stemdeck:master_L`` and
``master_R``; ``--outputs channels`` has a pair per channel named after it
(``stemdeck:drums_L``, ``drums_R``...), renamed when a track brings other names,
and as many as the channels need (no device limits them). The process callback
runs the mixer as the PortAudio callback does (:class:`~.sinks.Sink`: real-time
set-up, the recorder, the slowest block), reads the JACK transport for
:class:`~stemdeck.daemon.sync.TransportFollower`, and counts the server's xruns.
A server that shuts down is said once by the supervisor, which goes on with a
null clock.

JACK-Client (cffi) loads libjack as it is imported: :func:`open_client` says in
one line when libjack or the server is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from stemdeck.core.errors import ParameterError

from ..c_stderr import captured
from ..sync import TransportFollower
from ..timebase import TimebaseMaster
from .recorder import Recorder
from .sinks import Engine, Sink

__all__ = [
    "CLIENT_NAME",
    "JackOutput",
    "JackSink",
    "open_client",
    "playback_latency_s",
    "port_names",
]

log = logging.getLogger(__name__)

#: The JACK client's name (JACK appends ``-01``... when it is taken).
CLIENT_NAME = "stemdeck"
#: The longest port short name, in bytes of UTF-8 (JACK allows more; a patchbay shows less).
PORT_NAME_MAX = 64
# What a port name may not hold: JACK's separator, control characters, spaces.
_PORT_UNSAFE = re.compile(r"[:\s\x00-\x1f\x7f]")


def _jack() -> Any:
    """The JACK-Client module, or ParameterError in one line (no libjack)."""
    try:
        import jack
    except (OSError, ImportError) as exc:
        raise ParameterError(
            f"JACK unavailable ({exc}): install jackd2 (or libjack), or drop --audio jack"
        ) from None
    return jack


def open_client(name: str = CLIENT_NAME) -> Any:
    """Open (not activate) a JACK client on the running server (JACK_DEFAULT_SERVER).

    Returns
    -------
    jack.Client

    Raises
    ------
    ParameterError
        libjack is missing, or no JACK server runs.
    """
    jack = _jack()
    try:
        # libjack prints "Cannot connect to server socket" and more when there is
        # no server: the one line below says it (c_stderr.py).
        with captured(log, "JACK"):
            return jack.Client(name, no_start_server=True)
    except jack.JackOpenError as exc:
        if exc.status.server_failed:
            server = os.environ.get("JACK_DEFAULT_SERVER", "default")
            raise ParameterError(
                f"cannot open a JACK client: no JACK server {server!r} is running; "
                "start jackd, or drop --audio jack"
            ) from None
        raise ParameterError(f"cannot open a JACK client: {exc}") from None


def port_names(names: Sequence[str], outputs: str) -> list[str]:
    """The output ports' short names: ``master_L``, ``master_R`` for ``"mix"``; for
    ``"channels"`` ``<name>_L``, ``<name>_R`` per channel, with JACK's separator
    ``:``, spaces and control characters as ``_``, cut to :data:`PORT_NAME_MAX`
    bytes and made unique (without regard to case) by ``-2``, ``-3``..."""
    if outputs == "mix":
        return ["master_L", "master_R"]
    out: list[str] = []
    used: set[str] = set()
    room = PORT_NAME_MAX - 2 - 4  # "_L" and room for "-NNN"
    for name in names:
        base = _PORT_UNSAFE.sub("_", name).encode("utf-8")[:room].decode("utf-8", "ignore")
        base = base or "channel"
        stem, n = base, 2
        while stem.casefold() in used:
            stem, n = f"{base}-{n}", n + 1
        used.add(stem.casefold())
        out += [f"{stem}_L", f"{stem}_R"]
    return out


def _libjack() -> ctypes.PyDLL:
    """libjack through ctypes (the library JACK-Client loaded: the same handle); PyDLL
    keeps the GIL across a call (the calls used are short and never block)."""
    try:
        return ctypes.PyDLL("libjack.so.0")
    except OSError:
        name = ctypes.util.find_library("jack")
        if name is None:
            raise
        return ctypes.PyDLL(name)


def _frames_to_time(client: Any) -> tuple[Callable[[int, int], int], int]:
    """libjack's ``jack_frames_to_time`` (the µs of a frame in JACK's clock,
    :meth:`JackSink.clock_us`'s) through ctypes, and the address of ``client``'s
    ``jack_client_t`` to call it with."""
    from jack import _ffi  # JACK-Client's cffi handle: the client's C pointer

    fn = _libjack().jack_frames_to_time
    fn.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    fn.restype = ctypes.c_uint64
    return fn, int(_ffi.cast("uintptr_t", client._ptr))


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


#: ``JackPlaybackLatency`` of ``jack_latency_callback_mode_t`` (jack/types.h).
_PLAYBACK_LATENCY = 1


def playback_latency_s(sink: JackSink) -> float:
    """The largest playback latency of ``sink``'s ports (s; libjack's
    ``jack_port_get_latency_range``, which JACK-Client does not wrap, through
    ctypes): what lies between their output and the physical ports they reach
    (0 when they reach none, or only other clients in the graph). Read from a
    control thread."""
    from jack import _ffi  # JACK-Client's cffi handle: the ports' C pointers

    fn = _libjack().jack_port_get_latency_range
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_LatencyRange)]
    fn.restype = None
    frames = 0
    span = _LatencyRange()
    for ptr in sink._port_ptrs:
        fn(int(_ffi.cast("uintptr_t", ptr)), _PLAYBACK_LATENCY, ctypes.byref(span))
        frames = max(frames, int(span.max))
    return frames / sink.sr


@dataclass
class JackOutput:
    """What :class:`~stemdeck.daemon.supervisor.AudioSupervisor` needs to play
    through JACK: the opened client, where the channel names are read (for
    renames), the output mode, ``--connect``, the transport follower, and the
    timebase master (``--jack-timebase``)."""

    client: Any
    names: Callable[[], Sequence[str]]
    outputs: str
    connect: bool
    follower: TransportFollower | None = None
    timebase: TimebaseMaster | None = None
    #: Take the timebase only if no other master holds it (``--jack-timebase-conditional``).
    conditional: bool = False


def _padded(names: Sequence[str], channels: int) -> list[str]:
    """``names`` for ``channels // 2`` strips: a strip the track does not name is
    called by its number."""
    strips = channels // 2
    return [*names[:strips], *(str(i + 1) for i in range(len(names), strips))]


class JackSink(Sink):
    """The mixer on a JACK client of its own (see the module docstring).

    Parameters
    ----------
    engine, sr, block, channels, recorder, realtime
        As :class:`~.sinks.Sink`; ``sr`` and ``block`` are the client's.
    client : jack.Client
        From :func:`open_client`, not activated; the sink owns it from now on.
    names : sequence of str
        The channels' names (``--outputs channels``).
    outputs : {"mix", "channels"}
    connect : bool
        Connect the ports to the physical playback ports on :meth:`start`.
    follower : TransportFollower or None
        Reads the transport every block (``--sync jack``, ``/sync/source``).
    timebase : TimebaseMaster or None
        Fills the transport's bars, beats and tempo (``--jack-timebase``), taken
        as the client starts (only if no other master holds it when
        ``conditional``) and given up as it stops.
    """

    def __init__(
        self,
        engine: Engine,
        sr: int,
        block: int,
        channels: int,
        recorder: Recorder | None,
        *,
        client: Any,
        names: Sequence[str],
        outputs: str,
        connect: bool,
        follower: TransportFollower | None = None,
        timebase: TimebaseMaster | None = None,
        conditional: bool = False,
        realtime: bool = False,
    ) -> None:
        super().__init__(engine, sr, block, channels, recorder, realtime=realtime)
        jack = _jack()
        self.client = client
        self.outputs = outputs
        self.connect = connect
        self.follower = follower
        self.timebase = timebase
        self.conditional = conditional
        #: Why the server dropped the client (set by JACK's shutdown thread), or None.
        self.shutdown_reason: str | None = None
        self._rolling_state = jack.ROLLING
        self._starting_states = (jack.STARTING, jack.NETSTARTING)
        # The port buffers, fetched each block as JACK 2 requires (JACK-Client's own
        # get_array would also ask the client its block size on every call).
        from jack import _ffi, _lib  # JACK-Client's cffi handles: no public equivalent

        self._ffi, self._lib = _ffi, _lib
        self._buf = np.zeros((max(block, int(client.blocksize)), channels), np.float32)
        self._names = tuple(names)
        wanted = port_names(_padded(names, channels), outputs)
        if len(wanted) != channels:
            raise ParameterError(f"{channels} outputs but {len(wanted)} port names")
        try:
            self.ports = [client.outports.register(n) for n in wanted]
        except jack.JackError as exc:
            raise ParameterError(f"cannot register JACK ports: {exc}") from None
        self._port_ptrs = [p._ptr for p in self.ports]
        # jack_frames_to_time, which JACK-Client does not wrap, through ctypes on the
        # libjack it loaded; PyDLL keeps the GIL (the call is short, never blocks).
        self._frames_to_time, self._client_ptr = _frames_to_time(client)
        self._frame_time = partial(_lib.jack_last_frame_time, client._ptr)
        get_time = _libjack().jack_get_time
        get_time.argtypes = []
        get_time.restype = ctypes.c_uint64
        self._get_time: Callable[[], int] = get_time
        client.set_process_callback(self._process)
        client.set_xrun_callback(self._xrun)
        client.set_blocksize_callback(self._blocksize)
        client.set_shutdown_callback(self._shutdown)
        self.description = (
            f"JACK client {client.name!r}, {sr} Hz, {int(client.blocksize)} frames, "
            f"{len(self.ports)} ports ({wanted[0]} ... {wanted[-1]})"
        )

    # -- JACK's threads ------------------------------------------------------------------
    def _process(self, frames: int) -> None:
        try:
            follower = self.follower
            if follower is not None:
                if follower.sync.source == "jack":  # else no JACK call: sync off costs nothing
                    state, pos = self.client.transport_query_struct()
                    starting = state in self._starting_states
                    rolling = None if starting else state == self._rolling_state
                    follower.block(rolling, int(pos.frame), frames, pos)
                elif follower.following:
                    follower.following = False  # the next "jack" starts afresh
            link = self.link
            if link is not None and (link.following or link.sync.source == "link"):
                # The block's first frame leaves at its cycle's start (JACK's clock, µs),
                # which came before this callback's (the JACK follower above is not
                # running while Link leads).
                started = self._get_time()
                at = self._frames_to_time(self._client_ptr, self._frame_time())
                link.block_jack(at, started, frames, self._get_time)
            buf = self._buf
            if frames > buf.shape[0]:  # before the block size callback: never seen
                buf = np.zeros((frames, self.channels), np.float32)
                self._buf = buf
            out = buf[:frames]
            self._render(out)
            ffi, lib, size = self._ffi, self._lib, frames * 4
            for i, ptr in enumerate(self._port_ptrs):
                dst = np.frombuffer(ffi.buffer(lib.jack_port_get_buffer(ptr, frames), size), "f4")
                dst[:] = out[:, i]
        except Exception:  # JACK drops a client whose callback fails: count it, go on
            self.errors += 1

    def _xrun(self, delayed_usecs: float) -> None:
        if self._rendered >= self.START_BLOCKS:  # not the client's own start
            self.xruns += 1

    def _blocksize(self, blocksize: int) -> None:
        if blocksize > self._buf.shape[0]:
            self._buf = np.zeros((blocksize, self.channels), np.float32)

    def _shutdown(self, status: Any, reason: str) -> None:
        self.shutdown_reason = reason or "the JACK server shut down"

    # -- control side ----------------------------------------------------------------------
    def clock_us(self) -> float:
        """JACK's clock now (µs; libjack's ``jack_get_time``): the clock of
        ``jack_frames_to_time``, so of the blocks' times the Link follower gets.
        Not ``CLOCK_MONOTONIC``: JACK 2 on Linux reads ``CLOCK_MONOTONIC_RAW`` where
        there is one, which NTP's slewing moves away from ``CLOCK_MONOTONIC``
        (daemon/link.py measures the offset to Link's clock from this clock)."""
        return float(self._get_time())

    def rename(self, names: Sequence[str]) -> None:
        """Name the ports after ``names`` (a new track's channels); nothing if they are
        the same, or in ``mix`` mode. A refused rename is logged and leaves the name."""
        if self.outputs == "mix" or tuple(names) == self._names:
            return
        self._names = tuple(names)
        wanted = port_names(_padded(names, len(self.ports)), self.outputs)
        for port, name in zip(self.ports, wanted, strict=False):
            if port.shortname == name:
                continue
            try:
                port.shortname = name
            except Exception as exc:  # jack.JackError; a port keeps its old name
                log.warning("JACK port %s not renamed to %s: %s", port.name, name, exc)

    def start(self) -> None:
        jack = _jack()
        try:
            self.client.activate()
        except jack.JackError as exc:
            raise ParameterError(f"cannot start the JACK client: {exc}") from None
        if self.timebase is not None:
            try:
                taken = self.timebase.attach(self.client, conditional=self.conditional)
            except jack.JackError as exc:
                log.warning("JACK timebase not taken: %s", exc)
            else:
                if taken:
                    log.info("JACK timebase master: bars, beats and tempo from the beat grid")
                else:
                    log.warning("JACK timebase not taken: another client is the master")
        if not self.connect:
            return
        playback = self.client.get_ports(is_audio=True, is_input=True, is_physical=True)
        for port, target in zip(self.ports, playback, strict=False):
            try:
                self.client.connect(port, target)
            except jack.JackError as exc:
                log.warning("%s not connected to %s: %s", port.name, target.name, exc)
        if len(playback) < len(self.ports):
            log.info(
                "%d of %d JACK ports connected to playback (%d physical outputs)",
                min(len(playback), len(self.ports)),
                len(self.ports),
                len(playback),
            )

    def stop(self) -> None:
        if self.shutdown_reason is None:
            if self.timebase is not None:
                self.timebase.release(self.client)  # the transport rolls on, frames alone
            self.client.deactivate()
            self.client.close()
        else:  # libjack says "Server is not running" as the client closes: debug log
            with captured(log, "JACK"):
                self.client.close()
        self._unpin()
