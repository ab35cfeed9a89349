"""The echo's delay in beats on the playing track's grid and the vinyl rate.

``/fx/echo/beats f`` sets the echo's delay in beats: beats × 60 / (grid BPM ×
rate) seconds. The registry does the arithmetic and keeps the tempo it follows
(:meth:`Transaction.set_grid <stemdeck.core.control.registry.Transaction.set_grid>`,
and the rate of every ``Rate`` a commit posts); :class:`EchoBeats` tells it the
tempo from the two places that change it outside an OSC group:

- :meth:`EchoBeats.grid_changed`, a :class:`~.track_beats.TrackBeats` listener: the
  grid published (it arrives in a thread after the track starts), edited (halve,
  double, ``/track/bpm``, tap, reset) or gone with a new track (the echo keeps its
  last delay until the new grid is published);
- :meth:`EchoBeats.post`, the post of a poster that sends ``Rate`` outside the
  registry (the MIDI clock follower): the rate and the echo's new delay go in one
  command;
- :meth:`EchoBeats.leader_tempo`, from the daemon's main loop 4 times a second while a
  JACK timebase master leads: the JACK follower sets the rate in the audio thread
  (``daemon/timebase.py``), so the session's tempo over the grid's is told here.

Each is one registry commit: the control side computes the delay and posts one
``EchoTarget``; the audio thread does nothing more per block.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import Command
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

__all__ = ["LEADER_RATE_STEP", "RETRY_INTERVAL_S", "RETRY_S", "EchoBeats"]

log = logging.getLogger(__name__)

#: A leader's rate closer than this share to the one the echo follows leaves it there.
LEADER_RATE_STEP = 1e-4
#: A re-aim the engine's full queue refuses is retried for this long (s), this often.
RETRY_S = 1.0
RETRY_INTERVAL_S = 0.01


class _Beats(Protocol):
    def grid(self) -> BeatGrid | None: ...


class EchoBeats:
    """Keeps the registry told of the tempo the echo's delay in beats follows.

    Parameters
    ----------
    registry : Registry
        The daemon's registry.
    beats : the playing track's grid (:class:`~.track_beats.TrackBeats`), read by
        :meth:`grid_changed`.
    post : callable
        Hands one command to the engine (``Mixer.post``); False if refused.
    """

    def __init__(self, registry: Registry, beats: _Beats, post: Callable[[Command], bool]) -> None:
        self.registry = registry
        self.beats = beats
        self._post = post

    def grid_changed(self) -> None:
        """Tell the registry the grid's tempo now (None without one): an echo delay in
        beats is re-aimed in the same commit. A full queue is retried for
        :data:`RETRY_S`, then logged (the next change of grid or rate re-aims it)."""
        deadline = time.monotonic() + RETRY_S
        while True:
            with self.registry.transaction() as txn:
                grid = self.beats.grid()  # read under the lock: the newest wins
                txn.set_grid(None if grid is None else grid.bpm)
                if txn.commit(self._post):
                    return
            if time.monotonic() >= deadline:
                log.warning("the echo's delay did not follow the beat grid: engine queue full")
                return
            time.sleep(RETRY_INTERVAL_S)

    def leader_tempo(self, bpm: float | None) -> None:
        """A leader that sets the rate in the audio thread plays at ``bpm`` (None: no
        tempo now): the echo's delay in beats follows its rate (``bpm`` over the grid's,
        within the rate's range, the phase nudges left out). Nothing without a grid,
        or when the rate the registry follows is that one already; a full queue waits
        for the next call."""
        grid = self.beats.grid()
        if bpm is None or grid is None or not math.isfinite(bpm) or bpm <= 0:
            return
        rate = min(max(bpm / grid.bpm, MIN_RATE), MAX_RATE)
        if abs(rate - self.registry.rate) <= LEADER_RATE_STEP * rate:
            return
        with self.registry.transaction() as txn:
            txn.set_rate(rate)
            txn.commit(self._post)

    def post(self, command: Command) -> bool:
        """Post ``command`` through a registry commit: a ``Rate`` in it re-aims an
        echo delay in beats in the same command. False if the queue is full (nothing
        changed)."""
        with self.registry.transaction() as txn:
            return txn.commit(self._post, (command,))
