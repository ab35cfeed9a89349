"""A constant-tempo beat grid, its edits, and tap tempo.

A :class:`BeatGrid` is three numbers: the tempo, one downbeat's time and the
beats in a bar. Every beat of the track follows from them, before and after that
downbeat, so an edit is a new grid: :meth:`~BeatGrid.halved`,
:meth:`~BeatGrid.doubled`, :meth:`~BeatGrid.with_bpm`, :meth:`~BeatGrid.shifted`
(by milliseconds) and :meth:`~BeatGrid.with_downbeat_at` (the play head).
:class:`TapTempo` turns a performer's taps into a tempo and a phase, ignoring a
stray tap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

__all__ = [
    "BPM_LIMITS",
    "EDGE",
    "MAX_BEATJUMP",
    "MAX_LOOP_BEATS",
    "MIN_LOOP_BEATS",
    "BeatGrid",
    "TapTempo",
    "fit_taps",
]

#: The tempi a grid may have (BPM), edits included.
BPM_LIMITS = (20.0, 400.0)
_MAX_BEATS_PER_BAR = 32
#: Seconds before 0 within which a grid point still counts as the track's first.
EDGE = 0.02
#: A loop or roll in beats: 1/32 to 64 beats (OSC, MIDI maps).
MIN_LOOP_BEATS = 1 / 32
MAX_LOOP_BEATS = 64.0
#: The longest beat jump, in beats either way.
MAX_BEATJUMP = 1024.0


def _check_bpm(bpm: float) -> float:
    lo, hi = BPM_LIMITS
    try:
        value = float(bpm)
    except (TypeError, ValueError):
        raise ParameterError(f"tempo must be a number of BPM, got {bpm!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ParameterError(f"tempo must be {lo:g} to {hi:g} BPM, got {bpm!r}")
    return value


def _check_time(t: float, what: str) -> float:
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise ParameterError(f"{what} must be a number of seconds, got {t!r}") from None
    if not math.isfinite(value):
        raise ParameterError(f"{what} must be a finite number of seconds, got {t!r}")
    return value


@dataclass(frozen=True)
class BeatGrid:
    """A constant-tempo grid: what the mixer quantizes to.

    Parameters
    ----------
    bpm : float
        Tempo in beats per minute, within :data:`BPM_LIMITS`.
    downbeat : float
        The time (s of the track) of one bar start; every bar starts a whole
        number of bars from it. :meth:`normalized` gives the first one at or
        after 0.
    beats_per_bar : int
        1 to 32.

    Raises
    ------
    ParameterError
        A value out of range, NaN or of the wrong type.
    """

    bpm: float
    downbeat: float = 0.0
    beats_per_bar: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "bpm", _check_bpm(self.bpm))
        object.__setattr__(self, "downbeat", _check_time(self.downbeat, "downbeat"))
        bpb = self.beats_per_bar
        if isinstance(bpb, bool) or not isinstance(bpb, (int, np.integer)):
            raise ParameterError(f"beats per bar must be a whole number, got {bpb!r}")
        if not 1 <= int(bpb) <= _MAX_BEATS_PER_BAR:
            raise ParameterError(f"beats per bar must be 1 to {_MAX_BEATS_PER_BAR}, got {bpb!r}")
        object.__setattr__(self, "beats_per_bar", int(bpb))

    @property
    def period(self) -> float:
        """Seconds per beat."""
        return 60.0 / self.bpm

    @property
    def bar(self) -> float:
        """Seconds per bar."""
        return self.period * self.beats_per_bar

    def normalized(self) -> BeatGrid:
        """The same grid with ``downbeat`` the first bar start at or after 0 s."""
        return BeatGrid(self.bpm, self.downbeat % self.bar, self.beats_per_bar)

    def beats(self, duration: float) -> np.ndarray:
        """Every beat in ``[0, duration)`` seconds, shape (n,); see :meth:`_points`."""
        return self._points(self.period, duration)

    def downbeats(self, duration: float) -> np.ndarray:
        """Every bar start in ``[0, duration)`` seconds, shape (n,)."""
        return self._points(self.bar, duration)

    def _points(self, step: float, duration: float) -> np.ndarray:
        """The grid's points ``step`` apart in ``[0, duration)``; a point up to
        :data:`EDGE` before 0 is the track's first beat, a hair early, and is
        listed at 0."""
        first = self.downbeat % step
        if first > step - EDGE:
            first -= step
        points = first + step * np.arange(max(0, math.ceil((duration - first) / step)))
        return np.maximum(points, 0.0)

    def beat_at(self, t: float) -> float:
        """The grid position of time ``t`` in beats from ``downbeat`` (fractional)."""
        return (float(t) - self.downbeat) / self.period

    # -- edits: each returns a new grid ---------------------------------------------
    def halved(self) -> BeatGrid:
        """Half the tempo; the downbeat stays where it is."""
        return BeatGrid(self.bpm / 2, self.downbeat, self.beats_per_bar).normalized()

    def doubled(self) -> BeatGrid:
        """Twice the tempo; the downbeat stays where it is."""
        return BeatGrid(self.bpm * 2, self.downbeat, self.beats_per_bar).normalized()

    def with_bpm(self, bpm: float, *, anchor: float | None = None) -> BeatGrid:
        """The tempo set to ``bpm``; the bar start nearest ``anchor`` (s; default
        the first one) stays where it is, so the music around it stays on the grid."""
        bpm = _check_bpm(bpm)
        if anchor is None:
            fixed = self.normalized().downbeat
        else:
            anchor = _check_time(anchor, "anchor")
            fixed = self.downbeat + round((anchor - self.downbeat) / self.bar) * self.bar
        return BeatGrid(bpm, fixed, self.beats_per_bar).normalized()

    def shifted(self, ms: float) -> BeatGrid:
        """The grid moved later by ``ms`` milliseconds (earlier when negative)."""
        ms = _check_time(ms, "shift")
        return BeatGrid(self.bpm, self.downbeat + ms / 1000.0, self.beats_per_bar).normalized()

    def with_downbeat_at(self, t: float) -> BeatGrid:
        """The grid moved so that a bar starts at ``t`` seconds (the play head)."""
        t = _check_time(t, "play head")
        return BeatGrid(self.bpm, t, self.beats_per_bar).normalized()

    def as_dict(self) -> dict[str, float | int]:
        """``{"bpm", "downbeat", "beats_per_bar"}``: the stored form."""
        return {"bpm": self.bpm, "downbeat": self.downbeat, "beats_per_bar": self.beats_per_bar}


class TapTempo:
    """A tempo from taps, as a performer taps along on a button.

    Taps more than ``reset_after`` seconds after the previous one start over.
    A stray tap (a double press, a tap off the beat) is ignored: each interval
    is read against the median interval, an interval near a whole multiple of it
    counts that many beats (a missed tap), any other drops its tap. The tempo
    is the least-squares slope of the kept taps against their beat numbers.

    Parameters
    ----------
    reset_after : float
        Seconds without a tap after which the next tap starts a new tempo
        (default 2.0).
    """

    def __init__(self, *, reset_after: float = 2.0) -> None:
        if not (math.isfinite(reset_after) and reset_after > 0):
            raise ParameterError(f"reset_after must be positive seconds, got {reset_after!r}")
        self.reset_after = float(reset_after)
        self._taps: list[float] = []

    def tap(self, t: float) -> float | None:
        """Add a tap at ``t`` seconds (any clock that only goes forward); returns
        the tempo so far (:attr:`bpm`)."""
        t = _check_time(t, "tap time")
        if self._taps and not (0.0 < t - self._taps[-1] <= self.reset_after):
            self._taps.clear()
        self._taps.append(t)
        return self.bpm

    def reset(self) -> None:
        """Forget every tap."""
        self._taps.clear()

    @property
    def taps(self) -> list[float]:
        """The taps of the current run, oldest first."""
        return list(self._taps)

    @property
    def bpm(self) -> float | None:
        """The tapped tempo, or ``None`` before three taps that agree."""
        fit = self._fit()
        return None if fit is None else 60.0 / fit[0]

    def grid(self, beats_per_bar: int = 4) -> BeatGrid | None:
        """A grid with the tapped tempo and a bar starting on the last kept tap
        (normalized), or ``None`` before three taps that agree (or for a tempo
        out of :data:`BPM_LIMITS`). Its phase means something when the taps
        were given in track time (the play head's positions)."""
        fit = self._fit()
        if fit is None:
            return None
        period, last = fit
        try:
            return BeatGrid(60.0 / period, last, beats_per_bar).normalized()
        except ParameterError:
            return None

    def _fit(self) -> tuple[float, float] | None:
        """(period, time of the last kept beat) from the kept taps, or None."""
        return fit_taps(self._taps)


def fit_taps(taps: Sequence[float]) -> tuple[float, float] | None:
    """(seconds per beat, fitted time of the last kept tap) of ``taps``, or ``None``
    when fewer than three of them agree; see :class:`TapTempo`."""
    if len(taps) < 3:
        return None
    t = np.asarray(taps, dtype=float)
    gaps = np.diff(t)
    unit = float(np.median(gaps))
    if unit <= 0:
        return None
    # Read every tap against the first: its beat number, and how far off it is.
    kept_t = [t[0]]
    kept_n = [0]
    for x in t[1:]:
        n = round((x - kept_t[-1]) / unit)
        if n < 1 or abs((x - kept_t[-1]) / unit - n) > 0.25:
            continue  # a stray tap
        kept_t.append(x)
        kept_n.append(kept_n[-1] + n)
    if len(kept_t) < 3:
        return None
    slope, intercept = np.polyfit(np.asarray(kept_n, float), np.asarray(kept_t), 1)
    if slope <= 0:
        return None
    return float(slope), float(intercept + slope * kept_n[-1])
