"""Ableton Link: follow a Link session's tempo, phase and start/stop (``--sync link``).

Link's Python bindings (``LinkPython-extern``, the module ``link``) carry Ableton
Link, which is GPL-2.0-or-later: they are the optional extra ``stemdeck[link]``,
and this module alone imports them, lazily (:func:`load_link`), when ``--sync
link`` or ``/sync/source link`` first asks for them. Without them both are refused
with one error naming the extra (:data:`MISSING`), and nothing changes.

:class:`LinkSession` is stemdeck's Link instance (start/stop sync enabled) and a
thread that keeps what is slow to read out of the audio thread: the number of
peers, the offsets to Link's clock from the clocks the blocks' times come in
(``CLOCK_MONOTONIC``, and JACK's own clock under ``--audio jack``), the output
latency; it enables the instance while ``link`` leads and disables it otherwise.

The offsets are measured, not assumed (:func:`clock_offset_us`): Link's clock is
``CLOCK_MONOTONIC_RAW`` on Linux, and JACK 2's (``jack_get_time``, the clock of
``jack_frames_to_time``) is ``CLOCK_MONOTONIC_RAW`` too where the system has it.
``CLOCK_MONOTONIC`` drifts from them as NTP slews it (0.32 s apart after nine
hours on the development machine): a JACK time taken for ``CLOCK_MONOTONIC`` put
stemdeck's beat that far off the session's.

:class:`LinkFollower` runs in the audio callback, once per block while ``link``
leads: the host time the block's first sample is heard at (:func:`link_time_us`:
when JACK's cycle began (:class:`CycleTime`), or the null clock's time of the block,
moved to Link's clock by its offset, plus the output latency) gives the session's beat, tempo and
play state (Link's audio-thread capture, ``beatAtTime`` with quantum = the grid's
beats per bar), and :class:`~.timebase.BbtFollower`'s lock turns them into the
play head, the rate and the phase nudge as it does a JACK timebase master's
bars. The track's bar 1 beat 1 (``/sync/anchor``, else the grid's first
downbeat) sits on the session's first bar line at or after the moment it began
to play (:func:`bar_origin`); the session's start plays, its stop pauses.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError

from .sync import SyncControl
from .timebase import BbtFollower, FollowedRate

__all__ = [
    "CYCLE_SLACK_US",
    "CYCLE_WINDOW",
    "DEFAULT_BPM",
    "MISSING",
    "START_SLACK",
    "CycleTime",
    "LinkFollower",
    "LinkSession",
    "bar_origin",
    "clock_offset_us",
    "link_time_us",
    "load_link",
    "monotonic_us",
]

log = logging.getLogger(__name__)

#: The one error ``--sync link`` and ``/sync/source link`` give without the extra.
MISSING = "link sync needs Ableton Link's Python bindings: pip install 'stemdeck[link]'"
#: The tempo stemdeck's Link instance starts with when the track has no grid yet
#: (a session it joins gives its own).
DEFAULT_BPM = 120.0
#: A bar line this many beats before the session's start still counts as the one
#: it started on (a peer starting on a bar line, seen a moment later).
START_SLACK = 0.05
#: How often the session's thread refreshes peers, offset, latency (s).
REFRESH_S = 0.1
#: How far into its cycle a JACK callback may start before :class:`CycleTime` takes
#: JACK's time of the cycle for early (µs): stemdeck's start 0.04-0.42 ms in here.
CYCLE_SLACK_US = 1500.0
#: The callbacks whose starts bound a cycle's time (:class:`CycleTime`): 43 ms of
#: 256-frame blocks at 48 kHz.
CYCLE_WINDOW = 8


def load_link() -> Any:
    """The bindings' module ``link``, or :class:`ParameterError` (:data:`MISSING`)."""
    try:
        import link  # GPL (Ableton Link): the optional extra, only ever imported here
    except ImportError:
        raise ParameterError(MISSING) from None
    return link


def monotonic_us() -> float:
    """``CLOCK_MONOTONIC`` now, in µs: the clock of the null clock's and PortAudio's
    block times (``time.monotonic``)."""
    return time.monotonic_ns() / 1000.0


def clock_offset_us(
    target: Callable[[], float], source: Callable[[], float], reads: int = 5
) -> float:
    """``target``'s clock minus ``source``'s (µs, both read in µs), from the closest
    of ``reads`` bracketed readings: ``source`` read between two reads of
    ``target``, the pair nearest together (the least preempted)."""
    best, offset = math.inf, 0.0
    for _ in range(reads):
        a = target()
        m = source()
        b = target()
        if b - a < best:
            best, offset = b - a, (a + b) / 2.0 - m
    return offset


def link_time_us(time_us: float, offset_us: float, latency_us: float) -> int:
    """Link's host time (µs of Link's clock) at which a sample is heard: the time
    of its block's first frame in the clock it came in (JACK's: when its cycle
    began, :class:`CycleTime`; the null clock's time of the block), moved to Link's
    clock by that clock's ``offset_us`` (:func:`clock_offset_us`), plus the
    output's ``latency_us``."""
    return round(time_us + offset_us + latency_us)


def bar_origin(beat: float, phase: float, quantum: float) -> float:
    """The session's beat of its first bar line at or after a moment whose beat is
    ``beat`` and phase (``phaseAtTime``, 0..quantum) ``phase``; a bar line up to
    :data:`START_SLACK` beats before it counts."""
    if phase <= START_SLACK:
        return beat - phase
    return beat - phase + quantum


class CycleTime:
    """Audio thread: when each JACK cycle began (µs of JACK's clock), from JACK's
    time of it (``jack_frames_to_time`` of its first frame) and the time its
    callback began (``jack_get_time``).

    JACK 2 smooths its cycles' times with a delay-locked loop, which a stalled
    driver throws off for seconds: jackd's dummy driver stopped for 60 ms ran its
    cycles 53 ms later than its frames said from then on, while JACK's times of
    them slid there over 2 s, past it (64.5 ms at 2.9 s) and back, still 1.4 ms off
    at 6 s (``bench/jack_cycle_times.py``, docs/sync.md). The Link follower, placing
    each block by those times, drifted up to 90 ms off the session's beats for
    seconds, nudging at 1 % after a target that moved faster.

    A callback never starts before its cycle, so the least of the last
    :data:`CYCLE_WINDOW` callbacks' starts less JACK's times of their cycles tells
    how early JACK's time may be (when above 0) or how late it is (below 0). While
    that bound is within 0 .. :data:`CYCLE_SLACK_US` JACK's time is taken as it
    is, its smooth steps as before; beyond, it is moved by the part outside. Each
    block's time then stays within that slack of when its cycle began, and a
    stall is a jump of the blocks' times, which the follower takes as a lost
    block (a seek), some :data:`CYCLE_WINDOW` blocks after it.
    """

    __slots__ = ("_late", "_next")

    def __init__(self) -> None:
        self._late = [0.0] * CYCLE_WINDOW  # a ring: callbacks' starts less JACK's times
        self._next = -1  # the ring's next slot; -1: empty

    def reset(self) -> None:
        """Forget the callbacks seen (a new stream)."""
        self._next = -1

    def time(self, jack_us: float, started_us: float) -> float:
        """The time the cycle began of a block whose JACK time is ``jack_us`` and
        whose callback began at ``started_us`` (both µs of JACK's clock)."""
        late = started_us - jack_us
        ring = self._late
        if self._next < 0:  # the first: as if every callback before had started so
            for k in range(CYCLE_WINDOW):
                ring[k] = late
            self._next = 0
        ring[self._next] = late
        self._next = (self._next + 1) % CYCLE_WINDOW
        bound = min(ring)
        if bound < 0.0:
            return jack_us + bound
        if bound > CYCLE_SLACK_US:
            return jack_us + bound - CYCLE_SLACK_US
        return jack_us


class LinkFollower(BbtFollower):
    """Audio thread: a Link session's beat, tempo and start/stop into the play head
    and rate (see the module docstring).

    Parameters
    ----------
    engine : the mixer
    sync : SyncControl
        Followed while its source is ``link``; :attr:`~.sync.SyncControl.link_bpm`,
        :attr:`~.sync.SyncControl.link_phase` and :attr:`~.sync.SyncControl.bars`
        say the session's tempo, the phase error and its bar lines.
    grid : callable
        The playing track's grid in force, or None (nothing to lock then).
    """

    #: Link's beat is read at each block's own time: after a lost block it is the
    #: session's, never a stale one (a JACK master's can be: BbtFollower's slips).
    slips = False

    def __init__(
        self,
        engine: FollowedRate,
        sync: SyncControl,
        grid: Callable[[], BeatGrid | None],
    ) -> None:
        super().__init__(engine, sync, grid)
        #: The Link instance's owner once opened (:class:`LinkSession`), else None.
        self.session: LinkSession | None = None
        #: Link's clock minus CLOCK_MONOTONIC (µs), and minus JACK's clock (NaN
        #: without a JACK client): measured by the session before it is given to
        #: the follower, and every :data:`REFRESH_S` after (:func:`clock_offset_us`).
        self.offset_us = math.nan
        self.jack_offset_us = math.nan
        #: The output's latency beyond the block (µs), refreshed by the session.
        self.latency_us = 0.0
        #: The session's beat at the track's bar 1 beat 1 (NaN: not playing).
        self.origin = math.nan
        self._next_us = math.nan  # the next block's time if no block is lost
        self._cycle = CycleTime()

    def block_at(self, monotonic_s: float, frames: int) -> None:
        """One block whose first frame leaves the stream at ``monotonic_s``
        (``time.monotonic``'s clock: the null clock's due time, PortAudio's)."""
        self.block_us(monotonic_s * 1e6, frames)

    def block_us(self, monotonic_us: float, frames: int) -> None:
        """One block whose first frame leaves the stream at ``monotonic_us``
        (CLOCK_MONOTONIC µs)."""
        self._block(monotonic_us, self.offset_us, frames)

    def block_jack(
        self, jack_us: float, started_us: float, frames: int, clock: Callable[[], float]
    ) -> None:
        """One block whose cycle JACK says began at ``jack_us`` (µs of JACK's
        clock: ``jack_frames_to_time`` of the cycle's first frame), whose callback
        began at ``started_us`` (``jack_get_time``; ``clock`` reads it): its first
        frame leaves the stream when the cycle began (:class:`CycleTime`). The first
        block after the session opened before the JACK client (``--sync link`` at
        the start) measures JACK's offset itself: two clock reads a pair, no lock;
        the session's thread refreshes it from then on."""
        session = self.session
        if math.isnan(self.jack_offset_us) and session is not None:
            self.jack_offset_us = clock_offset_us(session.link_us, clock, reads=3)
        self._block(self._cycle.time(jack_us, started_us), self.jack_offset_us, frames)

    def _block(self, time_us: float, offset_us: float, frames: int) -> None:
        """One block whose first frame leaves the stream at ``time_us`` of a clock
        ``offset_us`` behind Link's (NaN: not measured yet)."""
        sync, session = self.sync, self.session
        if sync.source != "link" or session is None or math.isnan(offset_us):
            self._cycle.reset()  # the callbacks' starts from before do not count
            self.end_bend(frames)
            if self.locked:  # the bars were ours
                sync.bars = None
            sync.link_phase = None
            self.following = self.locked = False
            self.origin = math.nan
            return
        grid = self.grid()
        track = self.engine.track
        state = session.link.captureSessionState()
        bpm = state.tempo()
        sync.link_bpm = bpm
        if grid is None or track is None or self.engine.sr <= 0:
            self.end_bend(frames)
            sync.link_phase = None
            sync.bars = None
            self.locked = False
            return
        quantum = float(grid.beats_per_bar)
        host = link_time_us(time_us, offset_us, self.latency_us)
        beat = state.beatAtTime(host, quantum)
        rolling = bool(state.isPlaying())
        if rolling:
            # Once per start: Link keeps the start in beats, so its time moves with a
            # tempo change, and the bar line it fell on must not be chosen again.
            if math.isnan(self.origin):
                started = state.timeForIsPlaying()
                self.origin = bar_origin(
                    state.beatAtTime(started, quantum),
                    state.phaseAtTime(started, quantum),
                    quantum,
                )
            beat -= self.origin
        else:
            self.origin = math.nan
            beat = 0.0
        # Link has no frames: a block the stream lost (an xrun) shows as a gap in the
        # blocks' times, and seeks as a JACK transport's locate does.
        # (In the blocks' own clock: an offset measured again is no gap.)
        gap = abs(time_us - self._next_us) > 0.5e6 * frames / self.engine.sr
        self._next_us = time_us + 1e6 * frames / self.engine.sr
        frame = self._expect + 1 if gap else self._expect
        sync.link_phase = self._lock(rolling, frame, frames, (beat, bpm, quantum, 0.0), grid, track)


class LinkSession:
    """stemdeck's Link instance and the thread that tends it.

    Parameters
    ----------
    sync : SyncControl
    follower : LinkFollower
        Given the session (:attr:`LinkFollower.session`) and the thread's readings.
    bpm : float
        The tempo to start with (a session joined gives its own).
    latency : callable
        The output's latency beyond the block (s), as the sink says now.
    jack_clock : callable
        The JACK client's clock (``jack_get_time``, µs) while the audio goes to
        JACK, else None: called for it at each refresh.

    Raises
    ------
    ParameterError
        The bindings are not installed (:data:`MISSING`).
    """

    def __init__(
        self,
        sync: SyncControl,
        follower: LinkFollower,
        *,
        bpm: float = DEFAULT_BPM,
        latency: Callable[[], float] = lambda: 0.0,
        jack_clock: Callable[[], Callable[[], float] | None] = lambda: None,
    ) -> None:
        module = load_link()
        self.sync = sync
        self.follower = follower
        self.latency = latency
        self.jack_clock = jack_clock
        self.link: Any = module.Link(float(bpm))
        self.link.startStopSyncEnabled = True
        #: Link's clock now (µs).
        self.link_us: Callable[[], float] = self.link.clock().micros
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-link", daemon=True)
        self.errors = 0
        self.measure()  # before the follower has the session (JACK's: see block_jack)
        follower.session = self
        sync.link_peers = 0
        self._thread.start()

    def measure(self) -> None:
        """The clocks' offsets to Link's and the output's latency, for the follower."""
        follower = self.follower
        follower.offset_us = clock_offset_us(self.link_us, monotonic_us)
        jack = self.jack_clock()
        follower.jack_offset_us = math.nan if jack is None else clock_offset_us(self.link_us, jack)
        follower.latency_us = max(0.0, float(self.latency())) * 1e6

    def refresh(self) -> None:
        """Enable the instance while ``link`` leads; peers, offsets and latency."""
        sync = self.sync
        on = sync.source == "link"
        if bool(self.link.enabled) != on:
            self.link.enabled = on
        sync.link_peers = int(self.link.numPeers()) if on else 0
        self.measure()

    def request_playing(self, playing: bool, quantum: float) -> None:
        """Start or stop the session from stemdeck's own transport (a control thread).

        Nothing changes when the session already plays (or stops). A start asks
        for beat 0 as soon as the track can sound there: now plus :meth:`lead_us`
        (alone in a session Link grants it, and the track's anchor, bar 1 beat 1,
        is heard on beat 0 whole: asked for now, the first 6 ms of it were never
        heard, 30 ms with keylock on); with peers the session's beats cannot move,
        and the follower puts bar 1 on the next bar line as for any peer's start.
        A stop stops now.
        """
        link = self.link
        state = link.captureAppSessionState()
        if bool(state.isPlaying()) == playing:
            return  # a second play must not move the session's beats
        now = link.clock().micros()
        if playing:
            state.setIsPlayingAndRequestBeatAtTime(True, round(now + self.lead_us()), 0.0, quantum)
        else:
            state.setIsPlaying(False, now)
        link.commitAppSessionState(state)

    def lead_us(self) -> float:
        """How long after now the play head's audio can first be heard (µs): the
        output's latency, the keylock's delay (the mixer's ``output_delay``) and
        two blocks (the one the audio thread may be in, and the next)."""
        engine = self.follower.engine
        if engine.sr <= 0:
            return self.follower.latency_us
        blocks = (engine.output_delay + 2 * engine.max_block) / engine.sr
        return self.follower.latency_us + blocks * 1e6

    def request_tempo(self, bpm: float) -> None:
        """Set the session's tempo from stemdeck's own transport (``/transport/bpm``,
        ``/transport/rate``, a rate fader: a control thread), now: every peer takes it,
        and the follower plays the track at it. Link keeps a session's tempo within
        20..999 BPM (it clamps)."""
        link = self.link
        state = link.captureAppSessionState()
        state.setTempo(float(bpm), link.clock().micros())
        link.commitAppSessionState(state)

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:  # the music goes on; counted
                self.errors += 1
                log.debug("Link: %r", exc)

    def stop(self) -> None:
        """Stop tending the session (peers, offset, latency): before the audio stream
        closes, since the latency is read from its JACK ports (libjack aborts the
        process on a port of a closed client)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def close(self) -> None:
        """Leave the session (after the audio stream stopped: the follower reads
        the instance in the audio callback) and free the instance now, while the
        interpreter runs: its threads must not outlive it."""
        self.stop()
        self.follower.session = None
        self.sync.link_peers = None
        self.link.enabled = False
        self.link = None
