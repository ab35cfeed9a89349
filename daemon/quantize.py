"""Quantize: mutes, solos and scene recalls take effect on the next grid point.

:class:`Quantizer` holds the mode (``/quantize``: ``off``, ``beat``, ``bar`` or a
number of beats) and turns a command into a
:class:`~stemdeck.core.mixer.commands.Quantized` one: it computes the next grid
point after the play head, in the track's frames, and the mixer applies the
command at the output sample where its read head reaches that frame, at any
``/transport/rate`` (``core/mixer/control.py``). With the mode ``off``, no grid,
or a transport that is not rolling, a command is posted as it is and acts at
once, exactly as without quantize. ``docs/quantize.md`` is the user's view.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Command, Quantized, Track
from stemdeck.core.mixer.params import MAX_RATE

__all__ = [
    "MAX_QUANTIZE_BEATS",
    "MIN_QUANTIZE_BEATS",
    "QUANTIZED_PARAMS",
    "Quantizer",
    "parse_quantize",
]

#: The finest and the coarsest grid a number of beats may set.
MIN_QUANTIZE_BEATS = 1 / 32
MAX_QUANTIZE_BEATS = 64.0
#: The values whose change waits for the grid point (the last part of a value key:
#: ``/ch/2/mute``, ``/master/mute``); a commit that writes one waits whole.
QUANTIZED_PARAMS = ("mute", "solo")


def parse_quantize(value: Any) -> str:
    """The canonical mode of a ``/quantize`` argument: ``"off"``, ``"beat"``,
    ``"bar"`` or a number of beats as ``%g`` (``"2"``, ``"0.5"``).

    Raises
    ------
    ParameterError
        Not a string, or not one of those, or a number outside 1/32..64 beats.
    """
    usage = (
        "/quantize takes off, beat, bar or a number of beats "
        f"({MIN_QUANTIZE_BEATS:g}..{MAX_QUANTIZE_BEATS:g}) as a string"
    )
    if not isinstance(value, str):
        raise ParameterError(f"{usage}, got {value!r}")
    text = value.strip().lower()
    if text in ("off", "beat", "bar"):
        return text
    try:
        beats = float(text)
    except ValueError:
        raise ParameterError(f"{usage}, got {value!r}") from None
    if not MIN_QUANTIZE_BEATS <= beats <= MAX_QUANTIZE_BEATS:  # NaN fails too
        raise ParameterError(f"{usage}, got {value!r}")
    return f"{beats:g}"


class QuantizeEngine(Protocol):
    """What :class:`Quantizer` reads of the mixer and how it posts."""

    position: int
    track: Track | None
    sr: int
    max_block: int

    @property
    def rolling(self) -> bool: ...

    @property
    def rate(self) -> float: ...

    def post(self, command: Command) -> bool: ...


class Quantizer:
    """The quantize mode and the quantized post.

    Parameters
    ----------
    engine : the mixer (read for its play head; posted to)
    grid : callable
        The playing track's grid in force, or None (``TrackBeats.grid``).
    """

    def __init__(self, engine: QuantizeEngine, grid: Callable[[], BeatGrid | None]) -> None:
        self.engine = engine
        self._grid = grid
        self._lock = threading.Lock()
        self._mode = "off"

    @property
    def mode(self) -> str:
        """The mode, as ``/quantize`` answers it."""
        with self._lock:
            return self._mode

    def set_mode(self, value: Any) -> str:
        """Set the mode from a ``/quantize`` argument; returns the canonical mode.
        Commands already waiting keep their grid point.

        Raises
        ------
        ParameterError
            As :func:`parse_quantize`: nothing changes then.
        """
        mode = parse_quantize(value)
        with self._lock:
            self._mode = mode
        return mode

    def beats(self, grid: BeatGrid) -> float | None:
        """The grid step of the mode in beats on ``grid`` (None: off)."""
        mode = self.mode
        if mode == "off":
            return None
        if mode == "beat":
            return 1.0
        if mode == "bar":
            return float(grid.beats_per_bar)
        return float(mode)

    def target(self) -> int | None:
        """The frame of the track (its own rate) of the next grid point that the
        head can still reach before the mixer drains a command posted now; None when
        a command acts at once (mode off, no grid, no track, not rolling, or no
        grid point left in the track).

        The head may play one more block before it drains the command (it read
        the position at the end of the last one), at up to the fastest rate: a
        grid point closer than that is the next one's turn."""
        engine = self.engine
        track = engine.track
        grid = self._grid()
        if track is None or grid is None or not engine.rolling or not engine.sr:
            return None
        beats = self.beats(grid)
        if beats is None:
            return None
        fps = track.sr
        lead = math.ceil(engine.max_block * fps / engine.sr * MAX_RATE) + 1
        step = beats * grid.period  # seconds between grid points
        earliest = (engine.position + lead) / fps
        k = math.ceil((earliest - grid.downbeat) / step)
        frame = round((grid.downbeat + k * step) * fps)
        if frame < engine.position + lead:  # rounding: a point a hair early
            frame = round((grid.downbeat + (k + 1) * step) * fps)
        return frame if frame < track.length else None

    def seconds_to_target(self) -> float | None:
        """Seconds until the read head reaches :meth:`target` at the present rate
        (what a scene's morph waits, its steps following the clock); None: at once."""
        frame = self.target()
        track = self.engine.track
        if frame is None or track is None:
            return None
        rate = float(self.engine.rate) or 1.0
        return max(0.0, (frame - self.engine.position) / (track.sr * rate))

    def snap(self, seconds: float, length: float) -> float:
        """``seconds`` of the track snapped to the nearest grid point of the mode
        (as it is with the mode off or no grid), kept within 0..``length``."""
        grid = self._grid()
        beats = None if grid is None else self.beats(grid)
        if grid is None or beats is None:
            return seconds
        step = beats * grid.period
        snapped = grid.downbeat + round((seconds - grid.downbeat) / step) * step
        while snapped < 0.0:
            snapped += step
        while snapped > length and snapped - step >= 0.0:
            snapped -= step
        return min(snapped, length)

    def post(self, command: Command, via: Callable[[Command], bool] | None = None) -> bool:
        """Post ``command`` to act on the next grid point (at once when
        :meth:`target` is None) through ``via`` (default the engine's ``post``);
        False when the engine's queue is full."""
        send = via if via is not None else self.engine.post
        frame = self.target()
        return send(command if frame is None else Quantized(frame, command))

    def poster(
        self, written: Iterable[str], post: Callable[[Command], bool]
    ) -> Callable[[Command], bool]:
        """The post for a commit that writes the value keys ``written``: this
        quantized one if it writes a mute or solo (:data:`QUANTIZED_PARAMS`),
        else ``post``."""
        if any(key.rsplit("/", 1)[-1] in QUANTIZED_PARAMS for key in written):
            return partial(self.post, via=post)
        return post
