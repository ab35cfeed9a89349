"""The transport verbs OSC and MIDI share: validated once, one engine command each.

While a sync leader leads, a start, a stop or a rate may be the leader's to act on
(a Link session's start, stop and tempo: :class:`Led`, run once the surface's group
is applied), or refused (the tempo of a JACK timebase master or a MIDI clock).

The verbs in beats (``loop/beats``, ``loop/halve``, ``loop/double``, ``beatjump``,
``roll``) read the playing track's beat grid and the ``/quantize`` mode
(``docs/quantize.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stemdeck.core.beats.grid import MAX_BEATJUMP, MAX_LOOP_BEATS, MIN_LOOP_BEATS, BeatGrid
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import (
    Command,
    JumpBy,
    Keylock,
    Loop,
    Pause,
    Pitch,
    Play,
    Rate,
    Roll,
    RollEnd,
    Seek,
    Stop,
    Track,
)
from stemdeck.core.mixer.keylock import MAX_PITCH, MAX_SHIFTED_STRIPS, full_block
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

__all__ = [
    "VERBS",
    "Led",
    "TransportControl",
    "pressed",
]

VERBS = (
    "play",
    "pause",
    "stop",
    "toggle",
    "seek",
    "loop",
    "loop/region",
    "loop/off",
    "rate",
    "keylock",
    "pitch",
    "loop/beats",
    "loop/halve",
    "loop/double",
    "beatjump",
    "roll",
)


def _no_grid() -> BeatGrid:
    raise ParameterError("no beat grid yet for the track")


#: What a sync leader does with a start or stop (the argument; then the sync source
#: as the surface's group leaves it, None: the one in force), or None to leave it to
#: the engine.
LeadPlaying = Callable[[bool, str | None], Callable[[], None] | None]
#: What a sync leader does with a rate a surface sets (the address, the rate, the
#: grid's tempo it is a rate of, None without a grid, and the sync source as the
#: surface's group leaves it, None: the one in force): its action, None to leave it
#: to the engine, or ParameterError when the leader holds the rate.
LeadRate = Callable[[str, float, float | None, str | None], Callable[[], None] | None]


@dataclass(frozen=True)
class Led:
    """A transport change a sync leader acts on instead of the engine: ``run`` once
    the surface's whole group (an OSC bundle) is applied, so a refused group moves
    no session."""

    run: Callable[[], None]


class TransportState(Protocol):
    """The mixer's public transport state (:class:`stemdeck.core.mixer.engine.Mixer`)."""

    position: int
    track: Track | None
    rate: float
    min_loop_ms: float

    @property
    def keylock(self) -> bool: ...

    @property
    def pitch(self) -> float: ...

    @property
    def rolling(self) -> bool: ...

    @property
    def output_delay(self) -> int: ...

    sr: int
    outputs: str
    max_block: int

    @property
    def strip_shifters(self) -> list[Any]: ...

    @property
    def keylock_frame(self) -> int: ...

    def seconds(self, frames: int) -> float: ...

    @property
    def loop(self) -> tuple[int, int] | None: ...


class TransportControl:
    """Turns ``/transport/<verb> args`` into engine commands.

    Parameters
    ----------
    engine : the mixer, read for its public transport state only
    grid : callable, optional
        The playing track's grid in force; raises ParameterError when there is
        none (``TrackBeats.require``). Default: no grid, ever.
    quantize : callable, optional
        The ``/quantize`` mode (``Quantizer.mode``); default ``"off"``.
    lead : callable, optional
        Offered a surface's start (True) or stop (False) first: a sync leader that
        takes it (a Link session, ``daemon/link.py``) returns its action, made a
        :class:`Led` instead of an engine command (the leader's follower then plays
        or pauses). Default: none takes it.
    lead_rate : callable, optional
        Offered a rate a surface sets (``/transport/rate``, ``/transport/bpm``,
        REAPER's tempo, a MIDI rate fader), with the address: a leader that takes it
        (Link: the session's tempo) returns its action, one that holds the rate
        raises ParameterError. Default: the engine's.
    """

    def __init__(
        self,
        engine: TransportState,
        *,
        grid: Callable[[], BeatGrid] = _no_grid,
        quantize: Callable[[], str] = lambda: "off",
        lead: LeadPlaying = lambda playing, source: None,
        lead_rate: LeadRate = lambda address, rate, grid_bpm, source: None,
    ) -> None:
        self.engine = engine
        self._grid = grid
        self._quantize = quantize
        self._lead = lead
        self._lead_rate = lead_rate

    def position(self) -> float:
        """Play head position in seconds (of the track's time)."""
        return float(self.engine.seconds(self.engine.position))

    def _shifts_every_channel(self, address: str) -> None:
        """With ``outputs="channels"`` each channel's pair has a pitch shifter of its
        own, for as many channels as the block allows
        (:func:`~stemdeck.core.mixer.keylock.shifted_channels`: 4 at 64 frames, 16
        from 256): a track with more is refused keylock and pitch (the rest would
        play unshifted, 24 ms early)."""
        engine = self.engine
        track = engine.track
        if engine.outputs != "channels" or track is None or track.is_mix:
            return
        count = int(track.channels.shape[0])
        most = len(engine.strip_shifters)
        if count > most:
            raise ParameterError(
                f"{address}: with --outputs channels each channel has a pitch shifter "
                f"of its own, at most {most} at {engine.max_block}-frame blocks "
                f"({MAX_SHIFTED_STRIPS} from {full_block(engine.keylock_frame)}); "
                f"this track has {count} channels"
            )

    def heard(self) -> float:
        """The track's second heard now, rolling, as far as the mixer knows: the play
        head less what the keylock's shifter holds back (its delay at the vinyl rate,
        24 ms at rate 1 and 48 kHz); stopped, the play head. Where a tap, a cue or a
        downbeat set by ear lands. Not taken off: the output's own latency, and a
        jump in the last 24 ms (just after a loop's wrap or a seek, what is heard
        is still from before it, and this is that far before the play head)."""
        engine = self.engine
        at = float(engine.seconds(engine.position))
        delay = engine.output_delay
        if not engine.rolling or delay <= 0 or engine.sr <= 0:
            return at
        return max(0.0, at - delay * float(engine.rate) / engine.sr)

    def length(self) -> float:
        """The track's length in seconds (0.0 with no track)."""
        track = self.engine.track
        return self.engine.seconds(track.length) if track is not None else 0.0

    def value(self, query: str) -> list[Any]:
        """The reply to ``/transport/<query>``: ``playing`` (1/0), ``length`` (seconds),
        ``rate`` (the vinyl rate), ``keylock`` (1/0), ``pitch`` (semitones) or ``loop``
        and ``loop/region`` (start and end seconds; 0 0 when there is no loop)."""
        if query == "playing":
            return [int(bool(self.engine.rolling))]
        if query == "length":
            return [self.length()]
        if query == "rate":
            return [float(self.engine.rate)]
        if query == "keylock":
            return [int(bool(self.engine.keylock))]
        if query == "pitch":
            return [float(self.engine.pitch)]
        engine = self.engine
        loop = engine.loop
        if loop is None:
            return [0.0, 0.0]
        return [engine.seconds(loop[0]), engine.seconds(loop[1])]

    def rate(
        self,
        address: str,
        rate: float,
        grid_bpm: float | None = None,
        *,
        source: str | None = None,
    ) -> Rate | Led:
        """The change of the vinyl rate to ``rate`` (checked by the caller), or the
        sync leader's action for it; ParameterError when the leader holds the rate.
        ``grid_bpm``: the tempo of the grid the rate is of (a bundle's edit of it);
        default, the track's grid in force. ``source``: the sync source the rate is
        judged under (a bundle's ``/sync/source``); default, the one in force."""
        if grid_bpm is None:
            try:
                grid_bpm = self._grid().bpm
            except ParameterError:  # no grid: a rate of nothing the leader knows
                grid_bpm = None
        run = self._lead_rate(address, rate, grid_bpm, source)
        return Rate(rate) if run is None else Led(run)

    def command(
        self,
        verb: str,
        args: Sequence[Any] = (),
        *,
        grid_bpm: float | None = None,
        source: str | None = None,
    ) -> Command | Led | None:
        """The command for one verb (``play``, ``seek``, ``loop/off``...), the sync
        leader's :class:`Led` action for a start, a stop or a rate it takes, or
        ``None`` for a button's release.

        ``toggle`` pauses a rolling transport (one that is not already fading
        out) and plays otherwise. The verbs without a value (``play``, ``pause``,
        ``stop``, ``toggle``, ``loop/off``) also take one number or boolean, as a
        button on a control surface sends them (TouchOSC, Open Stage Control: 1 on
        press, 0 on release): non-zero acts, zero is the release and does nothing.

        Raises
        ------
        ParameterError
            Unknown verb, wrong argument count or type, NaN, negative times; a rate
            the sync leader holds.
        """
        if verb in ("play", "pause", "stop", "toggle", "loop/off"):
            if args and not pressed(f"/transport/{verb}", args):
                return None
            if verb != "loop/off":
                starts = verb == "play" or (verb == "toggle" and not self.engine.rolling)
                if (run := self._lead(starts, source)) is not None:
                    return Led(run)
            if verb == "play":
                return Play()
            if verb == "pause":
                return Pause()
            if verb == "stop":
                return Stop()
            if verb == "toggle":
                return Pause() if self.engine.rolling else Play()
            return Loop(0.0, 0.0)
        if verb in ("loop/beats", "loop/halve", "loop/double", "beatjump", "roll"):
            return self._in_beats(verb, args)
        if verb == "rate":
            rate = _number("/transport/rate", args)
            if not MIN_RATE <= rate <= MAX_RATE:
                raise ParameterError(
                    f"/transport/rate must be within {MIN_RATE:g}..{MAX_RATE:g}, got {rate:g}"
                )
            return self.rate("/transport/rate", rate, grid_bpm, source=source)
        if verb == "keylock":
            if len(args) != 1 or args[0] not in (0, 1) or isinstance(args[0], float):
                raise ParameterError(f"/transport/keylock takes 0 or 1, got {list(args)!r}")
            if args[0]:
                self._shifts_every_channel("/transport/keylock")
            return Keylock(bool(args[0]))
        if verb == "pitch":
            semitones = _number("/transport/pitch", args)
            if not -MAX_PITCH <= semitones <= MAX_PITCH:
                raise ParameterError(
                    f"/transport/pitch must be within {-MAX_PITCH:g}..{MAX_PITCH:g} "
                    f"semitones, got {semitones:g}"
                )
            if semitones != 0.0:
                self._shifts_every_channel("/transport/pitch")
            return Pitch(semitones)
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

    # -- in beats ------------------------------------------------------------------------
    def _in_beats(self, verb: str, args: Sequence[Any]) -> Command | None:
        address = f"/transport/{verb}"
        if verb in ("loop/halve", "loop/double"):
            if args and not pressed(address, args):
                return None
            return self._resize(verb, address)
        beats = _number(address, args)
        if verb == "beatjump":
            if not 0 < abs(beats) <= MAX_BEATJUMP:
                raise ParameterError(
                    f"{address} takes beats, non-zero, within ±{MAX_BEATJUMP:g}, got {beats:g}"
                )
            grid = self._grid()
            track = self.engine.track
            if track is None:
                raise ParameterError("no track")
            frames = round(beats * grid.period * track.sr)
            loop = self.engine.loop
            if loop is not None and not (
                0 <= loop[0] + frames and loop[1] + frames <= track.length
            ):
                raise ParameterError(
                    f"{address}: the loop would leave the track ({beats:g} beats from "
                    f"{self.engine.seconds(loop[0]):.3f}..{self.engine.seconds(loop[1]):.3f} s)"
                )
            return JumpBy(frames, with_loop=loop is not None)
        if verb == "roll" and beats == 0:
            return RollEnd()  # the pad's release
        if not MIN_LOOP_BEATS <= beats <= MAX_LOOP_BEATS:
            extra = " (0 ends a roll)" if verb == "roll" else ""
            raise ParameterError(f"{address} must be 1/32 to 64 beats{extra}, got {beats:g}")
        grid = self._grid()
        # A roll always starts on the grid; a loop does when quantize is on, else at the head.
        snap = verb == "roll" or self._quantize() != "off"
        start, end = self._beat_region(grid, beats, snap=snap)
        length = self.length()
        if end > length:
            raise ParameterError(
                f"{address}: {beats:g} beats from {start:.3f} s end past the end of the "
                f"track ({length:.3f} s)"
            )
        return Roll(start, end) if verb == "roll" else Loop(start, end)

    def _beat_region(self, grid: BeatGrid, beats: float, *, snap: bool) -> tuple[float, float]:
        """``beats`` beats from the play head, or (``snap``) from the grid point at or
        before it: whole beats for a loop of a beat or more, else its own length, so
        the head is inside the loop and plays on without a jump."""
        head = self.position()
        if not snap:
            return head, head + beats * grid.period
        unit = min(1.0, beats)
        # A hair of tolerance: a head exactly on a grid point (to 1e-9 beat) starts there.
        first = math.floor(grid.beat_at(head) / unit + 1e-9) * unit
        start = grid.downbeat + first * grid.period
        while start < 0.0:  # before the first grid point of the track: the next one
            start += unit * grid.period
        return start, start + beats * grid.period

    def _resize(self, verb: str, address: str) -> Loop:
        """Halve or double the loop, its start kept."""
        engine = self.engine
        loop = engine.loop
        if loop is None:
            raise ParameterError(f"{address}: no loop is set")
        start, end = engine.seconds(loop[0]), engine.seconds(loop[1])
        span = (end - start) / 2 if verb == "loop/halve" else (end - start) * 2
        shortest = engine.min_loop_ms / 1000.0
        if span < shortest:
            raise ParameterError(
                f"{address}: the loop is at its shortest ({(end - start) * 1000:.1f} ms; "
                f"at least {engine.min_loop_ms:g} ms)"
            )
        length = self.length()
        if start + span > length:
            raise ParameterError(
                f"{address}: the doubled loop would end past the end of the track "
                f"({start + span:.3f} s > {length:.3f} s)"
            )
        return Loop(start, start + span)


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
