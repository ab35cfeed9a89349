"""MIDI clock in: a leader's 24 PPQN clock into a smooth tempo and beat position.

:class:`ClockFollower` is the algorithm, fed time-stamped messages and asked for
the leader's state at any time; it opens no port, so tests and
``bench/sync.py`` drive it with made-up clocks. The tempo is a least-squares
line through the last :data:`WINDOW` ticks (four beats): clock jitter moves it
by hundredths of a BPM, not enough to be heard as pitch wobble. A tempo change
is noticed when the last :data:`DETECT` ticks arrive early or late on average
by more than the jitter can explain. The tick where it began (the knee) is then
found among the ticks before, and the old and the new tempo are fitted as two
lines that meet there (:class:`_Bend`): the new tempo's line starts from every
tick of it, at a phase the old tempo's many ticks pin down, so the new tempo is
in force within two beats. Once the window holds the new tempo alone, it is the
plain line again.

The tick counter runs whether or not the leader plays (many clocks tick while
stopped so a follower knows the tempo before Start); the position counts from
Start (beat 0), from a Song Position Pointer (sixteenths), and on from where
the leader stopped on Continue. The first tick after Start or Continue falls
on the position (the MIDI 1.0 specification).

:class:`MidiClockIn` is the daemon's side (``serve --sync midi --sync-midi
PORT``): an input whose messages carry the time they were sent at, so the
callback's own lateness (the GIL) is not jitter (under ``--midi-api jack`` a JACK
MIDI port of a JACK client of its own, ``stemdeck-sync``, each message stamped
with its frame; else an rtmidi input with the backend's time stamps), and a
thread that makes the play head follow while
``/sync/source`` is ``midi``: the track's second ``anchor + beat * period`` of its
grid is heard at the leader's beat, the vinyl rate is the leader's tempo over
the track's, and the phase error is taken out by nudging that rate by at most
:data:`NUDGE` (a jump only on Start, Continue, Song Position Pointer, or an
error over :data:`JUMP_S`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, Pause, Play, Rate, Seek
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

from .playhead import HeardPlayHead, PlayedEngine
from .sync import SyncControl

__all__ = [
    "DETECT",
    "INBOX",
    "JUMP_S",
    "KNEE_SEARCH",
    "NUDGE",
    "PPQN",
    "WINDOW",
    "ClockFollower",
    "LeaderState",
    "MidiClockIn",
]

log = logging.getLogger(__name__)

#: Clock ticks per quarter note (beat).
PPQN = 24
#: Ticks in the tempo fit (four beats).
WINDOW = 4 * PPQN
#: Ticks whose mean prediction error tells a tempo change from jitter.
DETECT = 8
#: How many ticks before a tempo change is noticed may be where it began.
KNEE_SEARCH = 3 * DETECT
#: The least standard deviation of the clock's jitter assumed (s): a clean clock
#: must not make the change test hair-triggered.
MIN_JITTER = 0.0003
#: Ticks further apart than this many periods (or a second): the clock stopped.
GAP_PERIODS = 4.0
#: The largest rate nudge that takes out a phase error (a fraction of the rate).
NUDGE = 0.01
#: Seconds over which a phase error is taken out (before the nudge's bound).
CORRECT_S = 1.0
#: A phase error larger than this (s) is a jump, not a nudge.
JUMP_S = 0.25
#: How often the follower thread looks (s).
FOLLOW_S = 0.01
#: Messages the JACK input holds for the follower thread (seconds of a fast clock).
INBOX = 1024
#: The status bytes the clock is made of: Clock, Start, Continue, Stop, Song Position.
_CLOCK_STATUS = frozenset((0xF8, 0xFA, 0xFB, 0xFC, 0xF2))


@dataclass(frozen=True)
class LeaderState:
    """The leader at one moment.

    Attributes
    ----------
    running : bool
        Between Start (or Continue) and Stop.
    bpm : float or None
        The smoothed tempo; None until two ticks came.
    beat : float or None
        The leader's position in beats from its song's start, at that moment;
        None while stopped or before the first tick after Start.
    jumps : int
        Counts Start, Continue and Song Position Pointer: a change tells a
        follower to jump, not to glide.
    """

    running: bool
    bpm: float | None
    beat: float | None
    jumps: int


class ClockFollower:
    """A leader's MIDI clock, time-stamped, into its tempo and position.

    Every method takes the message's time ``t`` in seconds of the receiver's
    clock; times must not go backwards by more than jitter. Not thread-safe: one
    thread feeds it (the MIDI port's), others read :meth:`state`, which only
    reads fields replaced whole.
    """

    def __init__(self) -> None:
        self._ticks: deque[tuple[float, int]] = deque(maxlen=WINDOW)
        self._errors: deque[float] = deque(maxlen=DETECT)
        self._k = 0  # raw ticks since the first one
        self._noise = MIN_JITTER
        # The line t = t0 + (k - k0) * s as (t0, k0, s): a point on it and seconds per tick.
        self._fit: tuple[float, float, float] | None = None
        self._bend: _Bend | None = None  # a tempo change, until the window is past it
        self._running = False
        self._armed = False  # Start or Continue came: the next tick is at _position
        self._position = 0  # ticks of the song at the next armed tick
        self._origin: tuple[int, int] | None = None  # (raw tick, song tick) while running
        self._last_song_tick = 0
        self.jumps = 0
        #: Tempo changes noticed (each fitted from its knee on).
        self.changes = 0

    # -- messages ------------------------------------------------------------------------
    def tick(self, t: float) -> None:
        """A Clock message (0xF8)."""
        ticks = self._ticks
        fit = self._fit
        if ticks:
            gap = t - ticks[-1][0]
            period = fit[2] if fit is not None else 0.0
            if gap > max(GAP_PERIODS * period, 1.0) or gap < 0:
                ticks.clear()
                self._errors.clear()
                fit = self._fit = self._bend = None
        self._k += 1
        k = self._k
        ticks.append((t, k))
        bend = self._bend
        if bend is not None:
            bend.add(t, k)
        if fit is not None:
            error = t - _time_of(fit, k)
            errors = self._errors
            errors.append(error)
            if len(errors) == DETECT:
                mean = sum(errors) / DETECT
                if abs(mean) > 4.5 * self._noise / math.sqrt(DETECT):
                    bend = self._bend = _Bend.since(list(ticks), bend, self._noise)
                    errors.clear()
                    self.changes += 1
                elif abs(error) < 4.0 * self._noise:  # a step's errors are not jitter
                    self._noise = max(MIN_JITTER, 0.98 * self._noise + 0.02 * abs(error) * 1.25)
        if bend is not None and bend.after_knee() >= WINDOW:
            bend = self._bend = None  # the window holds the new tempo alone
        bent = bend.fit() if bend is not None else None
        if bent is not None:
            self._fit = bent
        else:  # the plain line (also while too few ticks say where a change began)
            line = _line(list(ticks), None)
            self._fit = None if line is None else line[:3]
        if self._armed:
            self._armed = False
            self._origin = (k, self._position)
        if self._running and self._origin is not None:
            self._last_song_tick = k - self._origin[0] + self._origin[1]

    def start(self, t: float) -> None:
        """Start (0xFA): play from the song's start at the next tick."""
        self._arm(0)

    def continue_(self, t: float) -> None:
        """Continue (0xFB): play on from the position at the next tick."""
        self._arm(self._position)

    def stop(self, t: float) -> None:
        """Stop (0xFC): the position stays after the last tick played."""
        if self._running and self._origin is not None:
            self._position = self._last_song_tick + 1
        self._running = False
        self._armed = False
        self._origin = None

    def song_position(self, t: float, sixteenths: int) -> None:
        """Song Position Pointer (0xF2): the position in sixteenth notes (6 ticks each)."""
        self._position = 6 * int(sixteenths)
        if self._running:  # a leader may locate while playing: the next tick is there
            self._armed = True
            self._origin = None
        self.jumps += 1

    def _arm(self, position: int) -> None:
        self._position = position
        self._running = True
        self._armed = True
        self._origin = None
        self.jumps += 1

    # -- reading -------------------------------------------------------------------------
    @property
    def bpm(self) -> float | None:
        """The smoothed tempo, or None before two ticks."""
        fit = self._fit
        return None if fit is None else 60.0 / (PPQN * fit[2])

    def state(self, t: float) -> LeaderState:
        """The leader at time ``t`` (now, or a little ahead)."""
        fit, origin = self._fit, self._origin
        bpm = None if fit is None else 60.0 / (PPQN * fit[2])
        beat = None
        if self._running and origin is not None and fit is not None:
            k = fit[1] + (t - fit[0]) / fit[2]  # raw ticks at t
            beat = (k - origin[0] + origin[1]) / PPQN
        return LeaderState(self._running, bpm, beat, self.jumps)


def _time_of(fit: tuple[float, float, float], k: float) -> float:
    return fit[0] + (k - fit[1]) * fit[2]


def _line(
    points: list[tuple[float, int]], anchor: tuple[float, float] | None
) -> tuple[float, float, float, float] | None:
    """The least-squares line ``t = t0 + (k - k0) * s`` through ``points`` (t, k), or
    through ``anchor`` (t0, k0) when given, as (t0, k0, s, squared error); None with
    too few points or a slope that is not positive (a clock gone backwards)."""
    n = len(points)
    if anchor is None:
        if n < 2:
            return None
        t0 = sum(t for t, _ in points) / n
        k0 = sum(k for _, k in points) / n
    else:
        if n < 1:
            return None
        t0, k0 = anchor
    skk = sum((k - k0) ** 2 for _, k in points)
    if not skk > 0:
        return None
    slope = sum((t - t0) * (k - k0) for t, k in points) / skk
    if not slope > 0:
        return None
    sse = sum((t - t0 - (k - k0) * slope) ** 2 for t, k in points)
    return (t0, k0, slope, sse)


class _Bend:
    """A tempo change: where it began, and the new tempo's line from there.

    Tick times are continuous in the tick count whatever the tempo does: a change
    bends the line, it does not break it. So the old and the new tempo are fitted
    together as two lines that meet at the knee, the tick where the change began:
    the many ticks before it pin the meeting point down to a fraction of the
    jitter, and the new line is fitted to every tick after the knee, including
    those that came before the change was noticed. The knee is one of the
    :data:`KNEE_SEARCH` ticks before the change was noticed: the one whose two
    lines leave the least squared error. It is chosen again at every tick: right
    after a small step, a tick either side fits almost as well, and a knee one
    tick off would tilt the new line by a tenth of a BPM for beats; a few more
    ticks of the new tempo tell.

    Sums make a tick cost a constant time: those of the old tempo's ticks before
    the first candidate, of the ticks up to each candidate, and of all since.
    """

    def __init__(
        self, before: list[tuple[float, int]], points: list[tuple[float, int]], noise: float
    ) -> None:
        self.noise = noise
        self.t_ref, self.k_ref = points[0]  # local coordinates: small numbers, exact sums
        # (n, sum x, sum x^2, sum y, sum y x, sum y^2) with x = k - k_ref, y = t - t_ref
        self._base = [0.0] * 6
        for t, k in before:
            self._sum(self._base, t, k)
        self._total = [0.0] * 6
        self._prefix: list[tuple[float, ...]] = []
        for t, k in points:
            self._sum(self._total, t, k)
            self._prefix.append(tuple(self._total))
        self._prefix.pop()  # a knee has a tick after it
        self._fits: list[tuple[float, float, float, float]] = []
        self.best = self._choose()

    @classmethod
    def since(cls, ticks: list[tuple[float, int]], bend: _Bend | None, noise: float) -> _Bend:
        """The change noticed at the last of ``ticks`` (the window; ``bend`` the
        change it was fitting, if any: the old tempo began at its knee; ``noise``
        the jitter's standard deviation, s)."""
        points = ticks[-(KNEE_SEARCH + 1) :]
        first = points[0][1]
        since = bend.knee()[1] if bend is not None else -math.inf
        before = [p for p in ticks if since <= p[1] < first]
        return cls(before, points, noise)

    def _sum(self, sums: list[float], t: float, k: int) -> None:
        x, y = k - self.k_ref, t - self.t_ref
        for i, v in enumerate((1.0, x, x * x, y, y * x, y * y)):
            sums[i] += v

    def add(self, t: float, k: int) -> None:
        """A tick after the last candidate knee."""
        self._sum(self._total, t, k)
        self.best = self._choose()

    def _at(self, i: int) -> tuple[float, float, float, float] | None:
        """The two lines meeting at candidate ``i`` (x = i): (squared error, the
        meeting point's y, x, the new slope), or None if they cannot be fitted."""
        base, p, total = self._base, self._prefix[i], self._total
        old = [base[j] + p[j] for j in range(6)]
        new = [total[j] - p[j] for j in range(6)]
        xc = float(i)
        # Sums in u = x - xc, per side: sum u, sum u^2, sum y u.
        su1 = old[1] - old[0] * xc
        suu1 = old[2] - 2 * xc * old[1] + old[0] * xc * xc
        syu1 = old[4] - xc * old[3]
        su2 = new[1] - new[0] * xc
        suu2 = new[2] - 2 * xc * new[1] + new[0] * xc * xc
        syu2 = new[4] - xc * new[3]
        if not (suu1 > 0 and suu2 > 0):
            return None
        n, sy, syy = old[0] + new[0], old[3] + new[3], old[5] + new[5]
        # Least squares of y = a + s1 u (old side), a + s2 u (new side): the normal
        # equations with s1 and s2 eliminated.
        den = n - su1 * su1 / suu1 - su2 * su2 / suu2
        if not den > 0:
            return None
        a = (sy - su1 * syu1 / suu1 - su2 * syu2 / suu2) / den
        s1 = (syu1 - a * su1) / suu1
        s2 = (syu2 - a * su2) / suu2
        return (syy - a * sy - s1 * syu1 - s2 * syu2, a, xc, s2)

    def _choose(self) -> tuple[float, float, float, float] | None:
        fits = [f for f in (self._at(i) for i in range(len(self._prefix))) if f is not None]
        self._fits = fits
        return min(fits) if fits else None

    def knee(self) -> tuple[float, float]:
        """(t, k) of the knee (the first candidate if none fits yet)."""
        best = self.best
        if best is None:
            return (self.t_ref, float(self.k_ref))
        return (self.t_ref + best[1], self.k_ref + best[2])

    def after_knee(self) -> int:
        """Ticks after the knee."""
        return round(self._total[0] - 1 - self.knee()[1] + self.k_ref)

    def fit(self) -> tuple[float, float, float] | None:
        """The new tempo's line (t0, k0, s) at the latest tick, or None (none fits, or
        it runs backwards).

        Not the best knee's line alone: each candidate's, weighted by how likely
        its squared error makes it under the clock's jitter (``exp(-SSE / 2
        noise^2)``). Where two knees fit about as well, the tempo is between
        theirs, not the one that jitter happened to favour.
        """
        best = self.best
        if best is None:
            return None
        x_last = self._total[0] - 1  # the latest tick, local
        two_var = 2.0 * self.noise * self.noise
        w_sum = t_sum = s_sum = 0.0
        for fit in self._fits:
            w = math.exp(-(fit[0] - best[0]) / two_var)
            w_sum += w
            t_sum += w * (fit[1] + (x_last - fit[2]) * fit[3])
            s_sum += w * fit[3]
        slope = s_sum / w_sum
        if not slope > 0:
            return None
        return (self.t_ref + t_sum / w_sum, self.k_ref + x_last, slope)


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
    ) -> None:
        self.engine = engine
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
            ahead = self.follower.state(now + 1.5 * self.block_s + self.latency())
        sync.leader_bpm = leader.bpm
        if sync.source != "midi":
            self._jumps = -1  # the next "midi" starts afresh
            self._playing = False
            sync.phase_error = None
            return
        grid = self.beats.grid()
        engine = self.engine
        if not leader.running or leader.beat is None or leader.bpm is None or grid is None:
            if self._playing:
                self._playing = False
                engine.post(Pause())
            sync.phase_error = None
            return
        base = min(max(leader.bpm / grid.bpm, MIN_RATE), MAX_RATE)
        target = sync.anchor + leader.beat * grid.period
        error = (head.seconds_at(now) - target) / base if head.rolling else math.inf
        if not self._playing or leader.jumps != self._jumps or abs(error) > JUMP_S:
            assert ahead.beat is not None
            seek = max(0.0, sync.anchor + ahead.beat * grid.period)
            self._rate = base
            if engine.post(Batch((Seek(seek), Rate(base), Play()))):
                self._playing = True
                self._jumps = leader.jumps
            sync.phase_error = None
            return
        nudge = min(max(-error / CORRECT_S, -NUDGE), NUDGE)
        rate = min(max(base * (1.0 + nudge), MIN_RATE), MAX_RATE)
        if abs(rate - self._rate) > 1e-6 * base and engine.post(Rate(rate)):
            self._rate = rate
        sync.phase_error = error
