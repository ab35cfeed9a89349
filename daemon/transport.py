"""The transport verbs OSC and MIDI share: validated once, one engine command each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Command, Loop, Pause, Play, Rate, Seek, Stop, Track
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

__all__ = ["VERBS", "TransportControl", "pressed"]

VERBS = ("play", "pause", "stop", "toggle", "seek", "loop", "loop/region", "loop/off", "rate")


class TransportState(Protocol):
    """The mixer's public transport state (:class:`stemdeck.core.mixer.engine.Mixer`)."""

    position: int
    track: Track | None
    rate: float

    @property
    def rolling(self) -> bool: ...

    def seconds(self, frames: int) -> float: ...

    @property
    def loop(self) -> tuple[int, int] | None: ...


class TransportControl:
    """Turns ``/transport/<verb> args`` into engine commands.

    Parameters
    ----------
    engine : the mixer, read for its public transport state only
    """

    def __init__(self, engine: TransportState) -> None:
        self.engine = engine

    def position(self) -> float:
        """Play head position in seconds (of the track's time)."""
        return float(self.engine.seconds(self.engine.position))

    def length(self) -> float:
        """The track's length in seconds (0.0 with no track)."""
        track = self.engine.track
        return self.engine.seconds(track.length) if track is not None else 0.0

    def value(self, query: str) -> list[Any]:
        """The reply to ``/transport/<query>``: ``playing`` (1/0), ``length`` (seconds),
        ``rate`` (the vinyl rate) or ``loop`` and ``loop/region`` (start and end
        seconds; 0 0 when there is no loop)."""
        if query == "playing":
            return [int(bool(self.engine.rolling))]
        if query == "length":
            return [self.length()]
        if query == "rate":
            return [float(self.engine.rate)]
        engine = self.engine
        loop = engine.loop
        if loop is None:
            return [0.0, 0.0]
        return [engine.seconds(loop[0]), engine.seconds(loop[1])]

    def command(self, verb: str, args: Sequence[Any] = ()) -> Command | None:
        """The command for one verb (``play``, ``seek``, ``loop/off``...), or ``None``
        for a button's release.

        ``toggle`` pauses a rolling transport (one that is not already fading
        out) and plays otherwise. The verbs without a value (``play``, ``pause``,
        ``stop``, ``toggle``, ``loop/off``) also take one number or boolean, as a
        button on a control surface sends them (TouchOSC, Open Stage Control: 1 on
        press, 0 on release): non-zero acts, zero is the release and does nothing.

        Raises
        ------
        ParameterError
            Unknown verb, wrong argument count or type, NaN, negative times.
        """
        if verb in ("play", "pause", "stop", "toggle", "loop/off"):
            if args and not pressed(f"/transport/{verb}", args):
                return None
            if verb == "play":
                return Play()
            if verb == "pause":
                return Pause()
            if verb == "stop":
                return Stop()
            if verb == "toggle":
                return Pause() if self.engine.rolling else Play()
            return Loop(0.0, 0.0)
        if verb == "rate":
            rate = _number("/transport/rate", args)
            if not MIN_RATE <= rate <= MAX_RATE:
                raise ParameterError(
                    f"/transport/rate must be within {MIN_RATE:g}..{MAX_RATE:g}, got {rate:g}"
                )
            return Rate(rate)
        if verb == "seek":
            seconds = _seconds("/transport/seek", args)
            if seconds < 0:
                raise ParameterError(f"seek position must be >= 0 s, got {seconds:g}")
            return Seek(seconds)
        if verb in ("loop", "loop/region"):  # the same: /transport/loop also has children
            address = f"/transport/{verb}"
            if len(args) != 2:
                raise ParameterError(f"{address} takes start and end seconds")
            start = _seconds(address, args[:1])
            end = _seconds(address, args[1:])
            if not 0 <= start < end:
                raise ParameterError(f"loop needs 0 <= start < end, got {start:g}..{end:g}")
            # Checked against the track here, so the audio thread never converts
            # a time like 1e306 s to samples.
            length = self.length()
            if end > length:
                raise ParameterError(
                    f"loop end {end:g} s is past the end of the track ({length:.3f} s)"
                )
            return Loop(start, end)
        raise ParameterError(f"unknown address /transport/{verb}")


def pressed(address: str, args: Sequence[Any]) -> bool:
    """Whether a button's one value is a press (non-zero) rather than its release."""
    if len(args) != 1 or not isinstance(args[0], int | float):
        raise ParameterError(
            f"{address} takes no arguments or one button value (1 press, 0 release), "
            f"got {list(args)!r}"
        )
    value = float(args[0])
    if math.isnan(value):
        raise ParameterError(f"{address} got {value}")
    return value != 0.0


def _seconds(address: str, args: Sequence[Any]) -> float:
    return _number(address, args)


def _number(address: str, args: Sequence[Any]) -> float:
    """One finite number (not a boolean), or ParameterError."""
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int | float):
        raise ParameterError(f"{address} takes a number, got {list(args)!r}")
    value = float(args[0])
    if math.isnan(value) or math.isinf(value):
        raise ParameterError(f"{address} got {value}")
    return value
