"""The playing track's beat grid in the daemon: found or computed on load, edited live.

:class:`TrackBeats` is told of every track that starts playing (the loader calls
:meth:`TrackBeats.start` once the original, or a stem file's stems, play). In a
thread of its own it hashes the decoded audio, reads the track's sidecar from the
beat store (``core/beats/store.py``) or analyses the track and stores the result,
then publishes the grid, unless a newer track has started meanwhile: a grid is
published only for the track it was computed from, and read only while that track
plays (the loader's generation). The analysis never runs in the audio thread nor
before the first sound; a failure is one log line and no grid, never a failed load.

Edits (``/track/grid/halve`` ... ``/track/grid/reset``, ``/track/bpm f``, tap
tempo) change the grid in force and store it as the track's edit in the same
sidecar, so it survives a restart; without a cache (``serve --no-cache``) they
last until the next load. Hot cues (``/cue/N/...``) are kept the same way.

Listeners (:meth:`TrackBeats.add_listener`) hear every change of the grid in force:
a new track (no grid yet), a grid published, an edit (the echo's delay in beats
follows them: ``echo_beats.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from stemdeck.core.beats.analysis import BeatAnalysis, analyze_beats
from stemdeck.core.beats.grid import BeatGrid, TapTempo
from stemdeck.core.beats.store import MAX_CUES, BeatRecord, BeatStore, HotCue, track_record
from stemdeck.core.errors import BeatStoreError, ParameterError

from .realtime import name_os_thread

__all__ = ["TrackBeats", "TrackGrid"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackGrid:
    """The grid of one playing track.

    Attributes
    ----------
    gen : int
        The loader's generation of the track (:attr:`TrackLoader.generation
        <stemdeck.daemon.loader.TrackLoader.generation>`).
    name : str
        The track's name.
    key : str
        Its audio hash: the sidecar's name.
    record : BeatRecord
        The analysis and the user's edit.
    """

    gen: int
    name: str
    key: str
    record: BeatRecord

    @property
    def grid(self) -> BeatGrid:
        """The grid in force, normalized (its downbeat the first bar start at or
        after 0 s)."""
        grid = self.record.grid
        assert grid is not None  # a published record has an analysis
        return grid.normalized()


class _Superseded(Exception):
    """A newer track started before this one's analysis began."""


class TrackBeats:
    """The playing track's grid: computed in the background, edited, stored.

    Parameters
    ----------
    store : BeatStore or None
        Where analyses and edits are kept; None: nowhere (no cache).
    current : callable
        ``current(gen)``: whether the loader's generation ``gen`` still plays
        (:meth:`TrackLoader.current <stemdeck.daemon.loader.TrackLoader.current>`).
    clock : callable
        Seconds of a clock that only goes forward, for tap tempo (the daemon's
        ``time.monotonic``).
    analyze : callable
        ``analyze(y, sr)``: the analysis (:func:`~stemdeck.core.beats.analysis.analyze_beats`
        in this thread; the daemon's: :func:`~.beats_worker.analyze_apart`, in a process,
        which takes ``wanted=`` too, and ends the process when a newer track starts).
    ready : callable
        Called before each analysis, in its thread: the daemon's waits until its audio
        runs and its BLAS limit is taken (:func:`~stemdeck.daemon.realtime.one_blas_thread`):
        the hash and the analysis's start never come before the first sound.
    """

    def __init__(
        self,
        store: BeatStore | None,
        *,
        current: Callable[[int], bool] = lambda gen: True,
        clock: Callable[[], float] = time.monotonic,
        analyze: Callable[..., BeatAnalysis] = analyze_beats,
        ready: Callable[[], object] = lambda: None,
    ) -> None:
        self.store = store
        self.current = current
        self.clock = clock
        self.analyze = analyze
        self.ready = ready
        self._lock = threading.Lock()  # the fields below
        self._edit_lock = threading.Lock()  # one edit (compute, publish, store) at a time
        self._token = 0  # of the newest start()
        self._name = ""  # the newest started track
        self._failed: str | None = None  # why the newest track has no grid
        self._track: TrackGrid | None = None
        self._tap = TapTempo()
        self._listeners: list[Callable[[], None]] = []
        #: Seconds from :meth:`start` to the grid's publication, of the last grid.
        self.last_seconds: float | None = None

    # -- who hears of a change ------------------------------------------------------------
    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of the grid in force (a new track,
        a grid published, an edit), in the thread that made it, with no lock of this
        object held: it reads the grid itself (:meth:`grid`), so listeners told out
        of order still end on the newest grid. What it raises is logged, and the
        grid (and the other listeners) go on."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception as exc:  # a listener's bug: one line, the grid still stands
                log.warning("beat grid listener %r failed: %r", listener, exc)

    # -- the track's grid arrives ----------------------------------------------------
    def start(self, y: np.ndarray, sr: int, gen: int, name: str) -> threading.Thread:
        """Find or compute the grid of ``y`` (the track of generation ``gen``, at its
        rate ``sr``) in a new thread (returned, started); any older track's grid is
        gone now, and an older analysis still running publishes nothing."""
        with self._lock:
            self._token += 1
            token = self._token
            self._name = name
            self._failed = None
            self._track = None
            self._tap.reset()
        self._changed()
        thread = threading.Thread(
            target=self._run,
            args=(y, sr, gen, name, token, time.monotonic()),
            name="stemdeck-beats",
            daemon=True,
        )
        thread.start()
        return thread

    def _latest(self, token: int) -> bool:
        return token == self._token

    def _run(self, y: np.ndarray, sr: int, gen: int, name: str, token: int, t0: float) -> None:
        # At the daemon's niceness: a nicer thread could be stopped by the scheduler
        # holding the GIL, which the audio callback then waits for. The analysis
        # itself runs in a niced process of its own (the daemon's analyze:
        # beats_worker.py); this thread hashes the track and waits.
        name_os_thread()  # stemdeck-beats in top -H and /proc

        def analyze() -> BeatAnalysis:
            self.ready()  # the daemon's: its audio runs, its BLAS limit taken (realtime.py)
            if not self._latest(token):
                raise _Superseded
            if getattr(self.analyze, "takes_wanted", False):  # in a process: ended if superseded
                return self.analyze(y, sr, wanted=lambda: self._latest(token))
            return self.analyze(y, sr)

        try:
            key, record, computed = track_record(y, sr, self.store, analyze)
        except _Superseded:
            return
        except MemoryError:
            self._fail(token, name, "not enough memory")
            return
        except Exception as exc:  # one line, never a traceback nor a failed load
            self._fail(token, name, str(exc) or repr(exc))
            return
        with self._lock:
            if not (self._latest(token) and self.current(gen)):
                return  # another track plays: its own analysis publishes
            self._track = TrackGrid(gen, name, key, record)
            self.last_seconds = time.monotonic() - t0
        self._changed()
        grid = self._track.grid
        log.debug(  # a debug line: what serve says by default stays what a user needs
            "%s: %.2f BPM, first downbeat at %.3f s (beat grid %s in %.2f s)",
            name,
            grid.bpm,
            grid.downbeat,
            "analysed" if computed else "stored",
            self.last_seconds,
        )

    def _fail(self, token: int, name: str, reason: str) -> None:
        with self._lock:
            if not self._latest(token):
                return
            self._failed = reason
        log.warning("%s: no beat grid: %s", name, reason)

    # -- reading -------------------------------------------------------------------------
    def track(self) -> TrackGrid | None:
        """The playing track's grid, or None (not yet, failed, or another track plays)."""
        track = self._track
        if track is None or not self.current(track.gen):
            return None
        return track

    def grid(self) -> BeatGrid | None:
        """The grid in force of the playing track (normalized), or None."""
        track = self.track()
        return None if track is None else track.grid

    def key(self) -> str:
        """The playing track's musical key; ``""`` when unknown (the analysis
        estimates none yet, docs/beats.md)."""
        track = self.track()
        if track is None or track.record.analysis is None:
            return ""
        return track.record.analysis.key or ""

    def beat(self, seconds: float) -> float | None:
        """The grid position of ``seconds`` of the track in beats from the first bar
        start (negative before it), or None without a grid."""
        grid = self.grid()
        return None if grid is None else grid.beat_at(seconds)

    def require(self) -> TrackGrid:
        """The playing track's grid.

        Raises
        ------
        ParameterError
            No grid: ``no beat grid yet for NAME`` (being computed), or ``no beat
            grid for NAME: REASON`` (the analysis failed).
        """
        track = self.track()
        if track is not None:
            return track
        with self._lock:
            name, failed = self._name or "the track", self._failed
        if failed is not None:
            raise ParameterError(f"no beat grid for {name}: {failed}")
        raise ParameterError(f"no beat grid yet for {name}")

    # -- edits ---------------------------------------------------------------------------
    def edit(self, change: Callable[[BeatGrid], BeatGrid], *, gen: int | None = None) -> BeatGrid:
        """Apply ``change`` to the grid in force and keep the result as the track's
        edit; returns the new grid (normalized).

        Raises
        ------
        ParameterError
            No grid (:meth:`require`), another track plays than generation ``gen``
            (when given), or ``change`` gives an invalid grid.
        """
        with self._edit_lock:
            track = self._check(gen)
            grid = change(track.grid)
            kept = self._keep(track, replace(track.record, edit=grid.normalized()))
        self._changed()
        return kept

    def reset(self, *, gen: int | None = None) -> BeatGrid:
        """Drop the track's edit: the analysis's grid is in force again (returned)."""
        with self._edit_lock:
            track = self._check(gen)
            kept = self._keep(track, replace(track.record, edit=None))
        self._changed()
        return kept

    def tap(self, at: float, *, gen: int | None = None) -> BeatGrid:
        """One tap now (:attr:`clock`); once three taps agree, the tempo is the
        tapped one, the bar start nearest ``at`` (the play head, s) staying where it
        is. Returns the grid in force. Taps more than 2 s apart start over, as does
        a new track."""
        with self._edit_lock:
            track = self._check(gen)
            with self._lock:
                bpm = self._tap.tap(self.clock())
            if bpm is None:
                return track.grid
            grid = track.grid.with_bpm(bpm, anchor=at)
            kept = self._keep(track, replace(track.record, edit=grid))
        self._changed()
        return kept

    # -- hot cues ------------------------------------------------------------------------
    def cue(self, number: int) -> HotCue | None:
        """Hot cue ``number`` (1..MAX_CUES) of the playing track; None: not set, or no
        track with a grid plays."""
        track = self.track()
        return None if track is None else track.record.cues[number - 1]

    def set_cue(self, number: int, cue: HotCue | None, *, gen: int | None = None) -> None:
        """Set (or with None clear) hot cue ``number`` of the playing track and store
        it with the grid (its sidecar): it survives a restart.

        Raises
        ------
        ParameterError
            No grid (:meth:`require`: cues live with the track's grid), another
            track plays than generation ``gen``, or ``number`` outside 1..MAX_CUES.
        """
        if not 1 <= number <= MAX_CUES:
            raise ParameterError(f"hot cues are numbered 1 to {MAX_CUES}, got {number}")
        with self._edit_lock:
            track = self._check(gen)
            cues = list(track.record.cues)
            cues[number - 1] = cue
            self._keep(track, replace(track.record, cues=tuple(cues)), f"hot cue {number}")

    def _check(self, gen: int | None) -> TrackGrid:
        track = self.require()
        if gen is not None and track.gen != gen:
            raise ParameterError(f"another track plays now: the grid of {track.name} not edited")
        return track

    def _keep(self, track: TrackGrid, record: BeatRecord, what: str = "the grid edit") -> BeatGrid:
        """Publish ``record`` for ``track`` (if it still plays) and store it (a failed
        write logs that ``what`` lasts until the next load)."""
        updated = TrackGrid(track.gen, track.name, track.key, record)
        with self._lock:
            if self._track is track:
                self._track = updated
        if self.store is not None:
            try:
                self.store.save(track.key, record)
            except BeatStoreError as exc:
                log.warning("%s; %s of %s lasts until the next load", exc, what, track.name)
        return updated.grid
