"""MIDI clock in, the algorithm: a leader's 24 PPQN clock into a smooth tempo and
beat position (:class:`ClockFollower`), fed time-stamped messages and asked for
the leader's state at any time. It opens no port, so tests and ``bench/sync.py``
drive it with made-up clocks; :mod:`.clock_in` feeds it from a real port.

The tempo is a least-squares line through the last :data:`WINDOW` ticks (four
beats): clock jitter moves it by hundredths of a BPM, not enough to be heard as
pitch wobble. A tempo change is noticed when the last :data:`DETECT` ticks arrive
early or late on average by more than the jitter can explain. The tick where it
began (the knee) is then found among the ticks before, and the old and the new
tempo are fitted as two lines that meet there (:class:`_Bend`): the new tempo's
line starts from every tick of it, at a phase the old tempo's many ticks pin
down, so the new tempo is in force within two beats. Once the window holds the
new tempo alone, it is the plain line again.

The tick counter runs whether or not the leader plays (many clocks tick while
stopped so a follower knows the tempo before Start); the position counts from
Start (beat 0), from a Song Position Pointer (sixteenths), and on from where
the leader stopped on Continue. The first tick after Start or Continue falls
on the position (the MIDI 1.0 specification).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["DETECT", "KNEE_SEARCH", "PPQN", "WINDOW", "ClockFollower", "LeaderState"]

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
