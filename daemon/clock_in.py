"""MIDI clock in, the daemon's side (``serve --sync midi --sync-midi PORT``).

:class:`MidiClockIn` feeds :class:`~.clock_follow.ClockFollower` (the algorithm:
a smooth tempo and beat position from a leader's 24 PPQN clock) from an input
whose messages carry the time they were sent at, so the callback's own lateness
(the GIL) is not jitter (under ``--midi-api jack`` a JACK MIDI port of a JACK
client of its own, ``stemdeck-sync``, each message stamped with its frame; else
an rtmidi input with the backend's time stamps), and runs a thread that makes the
play head follow while ``/sync/source`` is ``midi``: the track's second ``anchor
+ beat * period`` of its grid is heard at the leader's beat, the vinyl rate is
the leader's tempo over the track's, and the phase error is taken out by nudging
that rate by at most :data:`NUDGE` (a jump only on Start, Continue, Song Position
Pointer, an error over :data:`JUMP_S`, or the heard latency moving by more than
:data:`LATENCY_STEP_S`: keylock on or off, whose shifter delays the audio). While
it follows, its bars (from song position 0 at the anchor, the grid's beats per
bar) are :attr:`SyncControl.bars <.sync.SyncControl.bars>`, which quantize follows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, Pause, Play, Rate, Seek
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

from .clock_follow import ClockFollower
from .playhead import HeardPlayHead, PlayedEngine
from .sync import SyncControl

__all__ = ["INBOX", "JUMP_S", "NUDGE", "MidiClockIn"]

log = logging.getLogger(__name__)

#: The largest rate nudge that takes out a phase error (a fraction of the rate).
NUDGE = 0.01
#: Seconds over which a phase error is taken out (before the nudge's bound).
CORRECT_S = 1.0
#: A phase error larger than this (s) is a jump, not a nudge.
JUMP_S = 0.25
#: How often the follower thread looks (s).
FOLLOW_S = 0.01
#: A change of the latency the play head is heard after (s) larger than this
#: seeks at once (the keylock's shifter adds 24 ms): a nudge would take seconds.
LATENCY_STEP_S = 0.002
#: Messages the JACK input holds for the follower thread (seconds of a fast clock).
INBOX = 1024
#: The status bytes the clock is made of: Clock, Start, Continue, Stop, Song Position.
_CLOCK_STATUS = frozenset((0xF8, 0xFA, 0xFB, 0xFC, 0xF2))

#: ``--midi-api`` to rtmidi's API constant.
_RTAPI: dict[str, Callable[[Any], int]] = {
    "alsa": lambda rtmidi: rtmidi.API_LINUX_ALSA,
    "jack": lambda rtmidi: rtmidi.API_UNIX_JACK,
}


class _Engine(PlayedEngine, Protocol):
    def post(self, command: Command) -> bool: ...


class _Beats(Protocol):
    def grid(self) -> BeatGrid | None: ...


class MidiClockIn:
    """A MIDI clock input and the thread that makes the play head follow it.

    Parameters
    ----------
    engine : the mixer
    beats : the playing track's grid (:class:`~stemdeck.daemon.track_beats.TrackBeats`)
    sync : SyncControl
        Followed while its source is ``midi``; its :attr:`~SyncControl.leader`
        fields say the tempo and the phase error.
    port : str
        ``virtual:NAME`` (a port for the leader to connect to) or a name (part of
        an input port's name).
    api : str or None
        rtmidi's API (``alsa``, ``jack``; None: rtmidi's default).
    block_s : float
        The audio block (s).
    latency : callable
        The output's latency beyond the block (s), as the sink reports it now.
    post : callable, optional
        Hands the follower's commands to the engine (default ``engine.post``); the
        daemon's goes through the registry, so a ``Rate`` re-aims the echo's delay
        in beats in the same command (``echo_beats.py``).

    Raises
    ------
    ParameterError
        The MIDI backend is missing or the port cannot be opened.
    """

    def __init__(
        self,
        engine: _Engine,
        beats: _Beats,
        sync: SyncControl,
        port: str,
        *,
        api: str | None = None,
        block_s: float,
        latency: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.perf_counter,
        post: Callable[[Command], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.post = post if post is not None else engine.post
        self.beats = beats
        self.sync = sync
        self.clock = clock
        self.follower = ClockFollower()
        self.head = HeardPlayHead(engine, block_s=block_s, latency=latency, clock=clock)
        self.block_s = block_s
        self.latency = latency
        self.received = 0
        self.errors = 0
        self._stamp: float | None = None  # the backend's time of the last message
        self._offset = math.inf  # wall time minus backend time, least seen
        self._jack: Any = None  # the JACK client of --midi-api jack
        # Messages with their times from the JACK process callback, to the follower
        # from the follow thread: one producer, one consumer.
        self._inbox: deque[tuple[float, bytes]] = deque()
        self._frames = 0  # JACK frame time unwrapped (its counter is 32 bits)
        self._playing = False
        self._jumps = -1
        self._latency = 0.0  # the latency the last seek was placed with (s)
        self._rate = 0.0
        self._lock = threading.Lock()  # the follower: fed by rtmidi, read by the thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-midi-clock", daemon=True)
        self.name = port
        self._in: Any = None
        self._open(port, api)
        sync.midi = True

    def _open(self, port: str, api: str | None) -> None:
        """Open the input and set :attr:`name` (tests replace this): a JACK MIDI port
        of a JACK client of its own under ``--midi-api jack``, else rtmidi's."""
        if api == "jack":
            self._open_jack(port)
            return
        try:
            import rtmidi
        except ImportError as exc:
            raise ParameterError(f"MIDI backend unavailable: {exc}") from None
        rtapi = _RTAPI[api](rtmidi) if api else rtmidi.API_UNSPECIFIED
        try:
            self._in = rtmidi.MidiIn(rtapi=rtapi, name="stemdeck-sync")
            self._in.ignore_types(True, False, True)  # keep timing messages, drop the rest
            if port.startswith("virtual:"):
                self._in.open_virtual_port(port[len("virtual:") :] or "clock_in")
                self.name = port
            else:
                names = list(self._in.get_ports())
                match = [i for i, n in enumerate(names) if port in n]
                if not match:
                    raise ParameterError(f"no MIDI input named like {port!r} for --sync-midi")
                self._in.open_port(match[0])
                self.name = names[match[0]]
            self._in.set_callback(self._message)
        except ParameterError:
            raise
        except Exception as exc:  # rtmidi raises its own types
            raise ParameterError(f"cannot open the MIDI clock input: {exc}") from None

    def _open_jack(self, port: str) -> None:
        """A JACK client ``stemdeck-sync`` with one MIDI input: ``virtual:NAME`` is the
        port NAME for the leader to connect to; else the port ``clock_in``, connected
        from the first JACK MIDI output whose name contains ``port``. Its messages
        carry the frame they were written at (rtmidi's JACK backend stamps them at
        the period instead: up to 5 ms of jitter at 256 frames)."""
        from .audio.jack import open_client  # JACK-Client loads libjack: only with JACK

        virtual = port.startswith("virtual:")
        name = (port[len("virtual:") :] or "clock_in") if virtual else "clock_in"
        client = open_client("stemdeck-sync")
        try:
            self._jack_port = client.midi_inports.register(name)
            self._sr = float(client.samplerate)
            client.set_process_callback(self._jack_process)
            client.activate()
            if virtual:
                self.name = self._jack_port.name
            else:
                sources = [
                    p
                    for p in client.get_ports(is_midi=True, is_output=True)
                    if port in p.name and not p.name.startswith(client.name + ":")
                ]
                if not sources:
                    raise ParameterError(f"no JACK MIDI output named like {port!r} for --sync-midi")
                client.connect(sources[0], self._jack_port)
                self.name = sources[0].name
        except BaseException:
            client.close()
            raise
        self._jack = client

    # -- the input's thread ----------------------------------------------------------------
    def _jack_process(self, frames: int) -> None:
        """JACK's process callback: each message with the wall time of its frame, to
        :attr:`_inbox` (the follow thread feeds the follower: no fit here)."""
        try:
            client = self._jack
            now = self.clock()
            since = client.frames_since_cycle_start
            base = client.last_frame_time
            self._frames += (base - self._frames) % (1 << 32)  # unwrapped
            stamp = self._frames / self._sr
            # The frame clock against ours: the least delayed callback says it; allow
            # 0.1 ms/s of drift between the two clocks.
            self._offset = min(
                self._offset + 1e-4 * frames / self._sr, now - since / self._sr - stamp
            )
            inbox = self._inbox
            for offset, data in self._jack_port.incoming_midi_events():
                message = bytes(data)  # a cffi buffer: indexing it gives bytes, not ints
                if not message or message[0] not in _CLOCK_STATUS:
                    continue  # notes, controllers, SysEx: not the clock's
                if len(inbox) >= INBOX:  # a flood, or the follow thread stalled
                    self.errors += 1
                    continue
                inbox.append((stamp + offset / self._sr + self._offset, message))
        except Exception as exc:
            self.errors += 1
            log.debug("MIDI clock JACK input: %r", exc)

    def _message(self, event: tuple[list[int], float], data: Any) -> None:
        """rtmidi's callback: one message with its delta time; never raises."""
        try:
            message, delta = event
            arrival = self.clock()
            stamp = 0.0 if self._stamp is None else self._stamp + float(delta)
            self._stamp = stamp
            # The backend's clock against ours: the earliest arrival is the least
            # delayed; allow 0.1 ms/s of drift between the two clocks.
            self._offset = min(self._offset + 1e-4 * float(delta), arrival - stamp)
            with self._lock:
                self._deliver(stamp + self._offset, message)
        except Exception as exc:
            self.errors += 1
            log.debug("MIDI clock message %r: %r", event, exc)

    def _deliver(self, t: float, message: bytes | list[int]) -> None:
        """One message at wall time ``t`` to the follower (under :attr:`_lock`)."""
        self.received += 1
        status = message[0] if message else 0
        if status == 0xF8:
            self.follower.tick(t)
        elif status == 0xFA:
            self.follower.start(t)
        elif status == 0xFB:
            self.follower.continue_(t)
        elif status == 0xFC:
            self.follower.stop(t)
        elif status == 0xF2 and len(message) == 3:
            self.follower.song_position(t, message[1] | message[2] << 7)

    # -- following -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            if self._in is not None:
                self._in.close_port()
                self._in.delete()
            if self._jack is not None:
                self._jack.deactivate()
                self._jack.close()
        except Exception as exc:  # the server may be gone
            log.debug("MIDI clock in: closing: %r", exc)
        self.sync.midi = False

    def _run(self) -> None:
        while not self._stop.wait(FOLLOW_S):
            try:
                self.follow()
            except Exception as exc:  # the music goes on; counted
                self.errors += 1
                log.debug("MIDI clock follow: %r", exc)

    def follow(self) -> None:
        """One look: post what the play head needs to follow the leader (any thread,
        one at a time)."""
        sync = self.sync
        head = self.head.sample()
        now = self.clock()
        with self._lock:
            inbox = self._inbox
            while inbox:
                try:
                    self._deliver(*inbox.popleft())
                except Exception as exc:  # one bad message: counted, the rest go on
                    self.errors += 1
                    log.debug("MIDI clock message: %r", exc)
            leader = self.follower.state(now)
            # A seek posted now is heard a block and a half and the latency later.
            latency = self.latency()
            ahead = self.follower.state(now + 1.5 * self.block_s + latency)
        sync.leader_bpm = leader.bpm
        if sync.source != "midi":
            if self._jumps != -1 and self._playing:  # the bars were ours
                sync.bars = None
            self._jumps = -1  # the next "midi" starts afresh
            self._playing = False
            sync.phase_error = None
            return
        grid = self.beats.grid()
        post = self.post
        if not leader.running or leader.beat is None or leader.bpm is None or grid is None:
            if self._playing:
                self._playing = False
                post(Pause())
            sync.phase_error = None
            sync.bars = None
            return
        # The leader's bars (quantize follows them): its song position 0 at the anchor.
        bars = (sync.anchor, grid.beats_per_bar)
        if sync.bars != bars:
            sync.bars = bars
        base = min(max(leader.bpm / grid.bpm, MIN_RATE), MAX_RATE)
        target = sync.anchor + leader.beat * grid.period
        error = (head.seconds_at(now) - target) / base if head.rolling else math.inf
        moved = abs(latency - self._latency) > LATENCY_STEP_S
        if not self._playing or leader.jumps != self._jumps or abs(error) > JUMP_S or moved:
            assert ahead.beat is not None
            seek = max(0.0, sync.anchor + ahead.beat * grid.period)
            self._rate = base
            if post(Batch((Seek(seek), Rate(base), Play()))):
                self._playing = True
                self._jumps = leader.jumps
                self._latency = latency
            sync.phase_error = None
            return
        nudge = min(max(-error / CORRECT_S, -NUDGE), NUDGE)
        rate = min(max(base * (1.0 + nudge), MIN_RATE), MAX_RATE)
        if abs(rate - self._rate) > 1e-6 * base and post(Rate(rate)):
            self._rate = rate
        sync.phase_error = error
