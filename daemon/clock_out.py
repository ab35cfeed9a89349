"""MIDI clock out (``serve --clock-out midi PORT``): stemdeck leads a drum machine or a DAW.

:class:`ClockOutSchedule` is the algorithm, with no port: given the heard play
head (:mod:`.playhead`) and the track's beat grid it says which messages fall
due and when. Tick ``k`` falls where the play head is heard at beat ``k / 24``
of the grid (beats from the first bar start), at the grid's tempo times the
vinyl rate. Play from the grid's first beat or before it (within its first
tick: the play head is read a block or so after play began) sends Start, and the
first tick falls on beat 0; play from anywhere else (after a pause, a seek, a
loop's wrap) sends Continue, after a Song Position Pointer at the next
sixteenth unless the follower is already there. Pause sends Stop; a jump while
playing sends Stop, then the above.

:class:`MidiClockOut` runs it in a thread of its own: every wake-up is an
absolute deadline from the play head's line, never ``sleep(period)``, so
rounding never adds up to drift. The messages go to a :class:`ClockSender`:

- :class:`JackClockPort`, a JACK MIDI port on a JACK client of its own
  (``stemdeck-clock``): the thread hands each tick over a few milliseconds
  early with its deadline, and the client's process callback writes it at the
  frame of that deadline, so a receiver sees it time-stamped to the frame
  whatever the thread's wake-up jitter (the JACK API's way; rtmidi's JACK
  backend would write every message at the start of the next period);
- :class:`RtMidiClockPort`, an rtmidi output (ALSA): the thread waits for each
  deadline (sleep, then a short spin) and sends.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError

from .clock_follow import PPQN
from .playhead import Head, HeardPlayHead, PlayedEngine

__all__ = [
    "CLOCK",
    "CONTINUE",
    "START",
    "STOP",
    "ClockOutSchedule",
    "ClockSender",
    "JackClockPort",
    "MidiClockOut",
    "RtMidiClockPort",
    "song_position",
]

log = logging.getLogger(__name__)

CLOCK = b"\xf8"
START = b"\xfa"
CONTINUE = b"\xfb"
STOP = b"\xfc"
#: The largest Song Position Pointer (14 bits of sixteenths).
MAX_SONG_POSITION = 0x3FFF
#: How often the thread reads the play head between ticks (s).
POLL_S = 0.004


def song_position(sixteenths: int) -> bytes:
    """A Song Position Pointer (0xF2) to ``sixteenths`` (clamped to 14 bits)."""
    value = min(max(int(sixteenths), 0), MAX_SONG_POSITION)
    return bytes((0xF2, value & 0x7F, value >> 7))


class ClockOutSchedule:
    """Which clock messages fall due, and when (see the module docstring).

    Not thread-safe: the clock thread alone calls :meth:`plan`.
    """

    def __init__(self) -> None:
        self.playing = False  # Start or Continue sent, and no Stop since
        self.next_tick = 0  # the grid tick (beats * 24) of the next Clock
        self._jumps = -1
        self._sent_any = False
        #: Ticks sent since the start.
        self.ticks = 0

    def plan(
        self, now: float, head: Head, grid: BeatGrid | None, until: float
    ) -> list[tuple[float, bytes]]:
        """The messages due before ``until``, each with its wall time: transport
        messages at ``now``, then Clocks at their deadlines (in order)."""
        out: list[tuple[float, bytes]] = []
        if grid is None or not head.rolling:
            if self.playing:
                out.append((now, STOP))
                self.playing = False
            self._jumps = head.jumps
            return out
        beat_s = grid.period
        if not self.playing or head.jumps != self._jumps:
            if self.playing:
                out.append((now, STOP))
            beat = grid.beat_at(head.seconds_at(now))
            first = math.ceil(beat * PPQN - 1e-6)  # the next tick at or after now
            if beat * PPQN < 1.0:
                # From the first beat or before: the play head is read a block or so
                # after play began, so "at the first beat" is within its first tick;
                # tick 0 then goes at once, a few ms late, and the rest on time.
                out.append((now, START))
                self.next_tick = 0
            elif not self.playing and self._sent_any and first == self.next_tick:
                out.append((now, CONTINUE))  # the follower is where we paused
            else:
                sixteenth = -(-first // (PPQN // 4))
                out.append((now, song_position(sixteenth)))
                out.append((now, CONTINUE))
                self.next_tick = sixteenth * (PPQN // 4)
            self.playing = True
            self._jumps = head.jumps
        while True:
            due = head.time_of(grid.downbeat + self.next_tick / PPQN * beat_s)
            if due >= until:
                break
            out.append((max(due, now), CLOCK))
            self.next_tick += 1
            self.ticks += 1
            self._sent_any = True
        return out

    def next_due(self, head: Head, grid: BeatGrid | None) -> float | None:
        """The wall time of the next Clock, or None while not playing."""
        if grid is None or not head.rolling or not self.playing:
            return None
        return head.time_of(grid.downbeat + self.next_tick / PPQN * grid.period)


class ClockSender(Protocol):
    """Where the clock goes: a message with the wall time it is due."""

    #: How long before its deadline the thread hands a message over (s).
    lookahead: float

    def send(self, due: float, data: bytes) -> None: ...

    def close(self) -> None: ...


class JackClockPort:
    """A JACK MIDI output on a JACK client of its own, written frame-accurately.

    Parameters
    ----------
    port : str
        ``virtual:NAME``: the port ``stemdeck-clock:NAME`` for the user to connect;
        else the port ``stemdeck-clock:clock_out``, connected to the first JACK
        MIDI input whose name contains ``port``.
    clock : callable
        The wall clock of the deadlines (``time.perf_counter``).

    Raises
    ------
    ParameterError
        No JACK, or no MIDI input matching ``port``.
    """

    def __init__(self, port: str, *, clock: Callable[[], float] = time.perf_counter) -> None:
        from .audio.jack import open_client  # JACK-Client loads libjack: only with JACK

        self.clock = clock
        self.client = open_client("stemdeck-clock")
        self.sr = int(self.client.samplerate)
        virtual = port.startswith("virtual:")
        name = port[len("virtual:") :] if virtual else "clock_out"
        if not name:
            raise ParameterError("--clock-out midi virtual:NAME needs a NAME")
        self.port = self.client.midi_outports.register(name)
        self.lookahead = 2.0 * int(self.client.blocksize) / self.sr + 0.005
        self._queue: deque[tuple[float, bytes]] = deque()
        self._cycle: float | None = None  # smoothed wall time of the cycle's first frame
        self.late = 0  # messages written after their deadline's cycle
        self.client.set_process_callback(self._process)
        self.client.activate()
        if not virtual:
            targets = [
                p
                for p in self.client.get_ports(is_midi=True, is_input=True)
                if port in p.name and not p.name.startswith(self.client.name + ":")
            ]
            if not targets:
                self.close()
                raise ParameterError(f"no JACK MIDI input named like {port!r} for --clock-out")
            self.client.connect(self.port, targets[0])
        self.name = self.port.name

    def send(self, due: float, data: bytes) -> None:
        self._queue.append((due, data))  # one producer, one consumer: deque is enough

    def _process(self, frames: int) -> None:
        port = self.port
        port.clear_buffer()
        now = self.clock()
        since = self.client.frames_since_cycle_start
        measured = now - since / self.sr
        cycle = self._cycle
        period = frames / self.sr
        if cycle is None or abs(measured - (cycle + period)) > 0.005:
            cycle = measured
        else:  # the wake-up jitter out of the frame clock: a slow pull, not a jump
            cycle = cycle + period + 0.02 * (measured - cycle - period)
        self._cycle = cycle
        end = cycle + period
        queue = self._queue
        last = -1
        while queue and queue[0][0] < end:
            due, data = queue.popleft()
            offset = round((due - cycle) * self.sr)
            if offset < 0:
                self.late += 1
                offset = 0
            offset = min(max(offset, last), frames - 1)  # in order within the buffer
            port.write_midi_event(offset, data)
            last = offset

    def close(self) -> None:
        try:
            self.client.deactivate()
            self.client.close()
        except Exception as exc:  # the server may be gone
            log.debug("clock out: closing the JACK client: %r", exc)


class RtMidiClockPort:
    """An rtmidi output (``--midi-api alsa``): the thread sends at each deadline."""

    lookahead = 0.0

    def __init__(
        self, port: str, *, api: str | None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        try:
            import rtmidi
        except ImportError as exc:
            raise ParameterError(f"MIDI backend unavailable: {exc}") from None
        self.clock = clock
        rtapi = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}.get(
            api or "", rtmidi.API_UNSPECIFIED
        )
        try:
            self._out = rtmidi.MidiOut(rtapi=rtapi, name="stemdeck-clock")
            if port.startswith("virtual:"):
                self._out.open_virtual_port(port[len("virtual:") :] or "clock")
                self.name = port
            else:
                names = list(self._out.get_ports())
                match = [i for i, n in enumerate(names) if port in n]
                if not match:
                    raise ParameterError(f"no MIDI output named like {port!r} for --clock-out")
                self._out.open_port(match[0])
                self.name = names[match[0]]
        except ParameterError:
            raise
        except Exception as exc:  # rtmidi raises its own types
            raise ParameterError(f"cannot open MIDI clock output: {exc}") from None

    def send(self, due: float, data: bytes) -> None:
        while True:
            left = due - self.clock()
            if left <= 0:
                break
            if left > 0.0015:
                time.sleep(left - 0.001)  # the last millisecond spun: sleep wakes late
        self._out.send_message(list(data))

    def close(self) -> None:
        self._out.close_port()
        self._out.delete()


class BeatSource(Protocol):
    def grid(self) -> BeatGrid | None: ...


class MidiClockOut:
    """The clock thread: the heard play head and the grid into ticks on a sender.

    Parameters
    ----------
    engine : PlayedEngine
        The mixer.
    beats : BeatSource
        The playing track's grid (:class:`~stemdeck.daemon.track_beats.TrackBeats`).
    sender : ClockSender
    block_s : float
        The audio block's duration (s).
    latency : callable
        The output's latency beyond the block (s), as the sink reports it now: the
        tick falls where its beat is heard.
    """

    def __init__(
        self,
        engine: PlayedEngine,
        beats: BeatSource,
        sender: ClockSender,
        *,
        block_s: float,
        latency: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.beats = beats
        self.sender = sender
        self.clock = clock
        self.head = HeardPlayHead(engine, block_s=block_s, latency=latency, clock=clock)
        self.schedule = ClockOutSchedule()
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-clock-out", daemon=True)

    @property
    def late(self) -> int:
        """Messages written after their deadline (a JACK port's count; else 0)."""
        return int(getattr(self.sender, "late", 0))

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        schedule, sender = self.schedule, self.sender
        while not self._stop.is_set():
            try:
                head = self.head.sample()
                grid = self.beats.grid()
                now = self.clock()
                for due, data in schedule.plan(now, head, grid, now + sender.lookahead + POLL_S):
                    sender.send(due, data)
                wake = now + POLL_S
                tick_due = schedule.next_due(head, grid)
                if tick_due is not None:
                    wake = min(wake, tick_due - sender.lookahead)
            except Exception as exc:  # the clock goes on; the status line counts it
                self.errors += 1
                log.debug("clock out: %r", exc)
                wake = self.clock() + POLL_S
            left = wake - self.clock()
            if left > 0:
                self._stop.wait(left)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self.schedule.playing:
            try:
                self.sender.send(self.clock(), STOP)  # the followers stop with us
                time.sleep(self.sender.lookahead + 0.02)
            except Exception:
                pass
        self.sender.close()
