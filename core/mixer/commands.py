"""What control threads send to the mixer: small immutable commands and :class:`Track`.

Every command is a frozen dataclass; :data:`Command` is their union, so a
producer (OSC, MIDI, scenes, the track loader) and the consumer
(:meth:`stemdeck.core.mixer.engine.Mixer.post`) agree on one closed set of types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Batch",
    "Command",
    "EchoTarget",
    "JumpBy",
    "Keylock",
    "Loop",
    "MasterTarget",
    "Pause",
    "Pitch",
    "Play",
    "Quantized",
    "Rate",
    "ReverbTarget",
    "Roll",
    "RollEnd",
    "Seek",
    "SetTrack",
    "Stop",
    "StripTarget",
    "Track",
]


@dataclass(frozen=True, eq=False)
class Track:
    """Audio the mixer plays: one or more channels of the same length.

    Attributes
    ----------
    channels : np.ndarray, shape (n_channels, audio_channels, samples), float32
        Mono (1) or stereo (2) audio channels; may be a read-only memory map.
    sr : int
    names : tuple of str
    is_mix : bool
        The original track standing in while separation runs: it plays through
        the master only, at unity, whatever the strips say.
    mix : np.ndarray or None
        A track separated as it plays: the original, shape (1, audio_channels,
        samples), which plays (as an ``is_mix`` track, :attr:`original`) wherever
        ``channels`` are not ready yet. With ``ready`` and ``chunk``.
    ready : np.ndarray or None
        One flag (uint8) per chunk of ``chunk`` samples: 1 once that chunk of
        ``channels`` holds its separation. Set by one control thread after the
        samples are in, read by the audio thread (a byte: no lock); never cleared.
    chunk : int
        Samples per ready flag (the last chunk may be shorter).
    original : Track or None
        The ``is_mix`` track over ``mix`` (made from it; None without it).
    silent_mix : bool
        ``mix`` is silence, not the channels' sum (a stem file whose spans are not
        decoded yet): channels coming in crossfade from it with every strip at its
        level, where channels replacing an original glide from unity.
    """

    channels: np.ndarray
    sr: int
    names: tuple[str, ...]
    is_mix: bool = False
    mix: np.ndarray | None = None
    ready: np.ndarray | None = None
    chunk: int = 0
    silent_mix: bool = False
    original: Track | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mix is not None:
            object.__setattr__(self, "original", Track(self.mix, self.sr, ("mix",), is_mix=True))

    @property
    def length(self) -> int:
        return int(self.channels.shape[2])


@dataclass(frozen=True)
class StripTarget:
    """New target state of channel strip ``index`` (0-based).

    ``filter`` is the DJ filter's knob (-1..1: low-pass below 0, high-pass above,
    0 a true bypass) and ``res`` its resonance (0..1). ``echo`` is the send to the
    echo bus (0..1), tapped after the fader, mute and filter, or before the fader
    and mute (and the filter) with ``echo_pre``. ``reverb`` is the send to the
    reverb bus (0..1), tapped after the fader, mute and filter.
    """

    index: int
    gain: float
    mute: bool
    solo: bool
    pan: float
    filter: float = 0.0
    res: float = 0.0
    echo: float = 0.0
    echo_pre: bool = False
    reverb: float = 0.0


@dataclass(frozen=True)
class EchoTarget:
    """The echo bus: delay in milliseconds (clamped to the mixer's range), feedback
    (0..1), the DJ filter knob on its return (-1..1) and the return level (0..1)."""

    ms: float
    feedback: float
    filter: float
    level: float


@dataclass(frozen=True)
class ReverbTarget:
    """The reverb bus: room size (0..1, the combs' feedback), the low-cut on its
    input in Hz (clamped to the mixer's range) and the return level (0..1)."""

    size: float
    lowcut: float
    level: float


@dataclass(frozen=True)
class MasterTarget:
    """The master's gain and mute, and its DJ filter (as :class:`StripTarget`'s)."""

    gain: float
    mute: bool
    filter: float = 0.0
    res: float = 0.0


@dataclass(frozen=True)
class Play:
    pass


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Stop:
    """Fade out, then rewind to the start and clear the loop (playing or not)."""


@dataclass(frozen=True)
class Seek:
    seconds: float


@dataclass(frozen=True)
class Rate:
    """Play at ``rate`` times the track's speed, pitch following (vinyl mode):
    0.5..2.0 (clamped; NaN changes nothing), 1.0 the track's own. The read head's
    step glides to it over the mixer's ``rate_glide_ms``, so a fader's steps are
    smooth, or over ``glide`` frames of the output when given (a sync leader's
    tempo step bends over two blocks: daemon/timebase.py); ``at_once`` (or
    ``glide`` 0): from this block's first sample, as a leader's start or locate
    is, under its fade (the head's position stays continuous, the pitch steps
    with the tempo), so the beat is not left behind by the glide."""

    rate: float
    at_once: bool = False
    glide: int | None = None


@dataclass(frozen=True)
class Keylock:
    """Keylock on (True) or off: with it on, a rate changes the tempo and the
    pitch stays (one pitch shifter of the master, :mod:`.keylock`). Switching
    crossfades; off with :class:`Pitch` 0 is bypass (exactly the vinyl mix)."""

    on: bool


@dataclass(frozen=True)
class Pitch:
    """Shift the pitch by ``semitones`` (-12..12, clamped; not finite: nothing
    changes), keylock on or off, through the master's pitch shifter."""

    semitones: float


@dataclass(frozen=True)
class Loop:
    """Loop ``start``..``end`` seconds; ``end <= start`` clears the loop.

    A play head outside the new region jumps (crossfading) to its start. A
    region shorter than the mixer's ``min_loop_ms`` (a parameter of
    :class:`stemdeck.core.mixer.engine.Mixer`, and at least two crossfades) is
    lengthened to it, so a wrap never lands inside the previous wrap's crossfade.
    """

    start: float
    end: float


@dataclass(frozen=True)
class JumpBy:
    """Move the play head by ``frames`` of the track (negative: back), crossfading,
    from where it is when the command is drained (a beat jump: exactly that many
    frames, its fraction of a frame kept between rates); clamped to the track.
    ``with_loop``: the loop region moves by as much, if it stays inside the track
    (else the head stays where it is)."""

    frames: int
    with_loop: bool = False


@dataclass(frozen=True)
class Roll:
    """Start (or resize) a loop roll: loop ``start``..``end`` seconds (as
    :class:`Loop`) while the mixer counts where the head would have been without
    it; :class:`RollEnd` goes there and puts back the loop there was before."""

    start: float
    end: float


@dataclass(frozen=True)
class RollEnd:
    """End a loop roll (nothing if none runs): the head jumps, crossfading, to where
    it would be had the roll not happened, and the loop from before the roll (or
    none) is back. A seek, a stop, a new track or a loop command during the roll
    ends it where it is instead."""


@dataclass(frozen=True)
class SetTrack:
    """Play ``track``.

    ``same_audio`` says the new channels are the same music as the track now
    playing (its separation replacing the original that stood in, or a cache
    entry verified after the original started): the position and loop are
    kept and the swap is seamless. Otherwise the new track starts from its
    beginning with no loop, while the old one fades out over the crossfade.
    """

    track: Track
    same_audio: bool = False


@dataclass(frozen=True)
class Quantized:
    """Apply ``command`` when the main play head reaches track frame ``frame`` (a
    grid point the control side computed), at that exact output sample.

    While it waits: a strip or master command that arrives is applied at once,
    except its mute and solo, which wait with it (the waiting command takes the
    newer values). Applied at once instead: a ``frame`` the head has passed, a
    transport that is not rolling, and anything that moves the head other than
    by playing (a seek, a loop's wrap, a new track, a pause or stop): see
    ``docs/quantize.md``.
    """

    frame: int
    command: Command


@dataclass(frozen=True)
class Batch:
    """Commands applied together at the top of one block (an OSC bundle)."""

    commands: tuple[Command, ...]


Command = (
    StripTarget
    | MasterTarget
    | EchoTarget
    | ReverbTarget
    | Play
    | Pause
    | Stop
    | Seek
    | Loop
    | JumpBy
    | Roll
    | RollEnd
    | Rate
    | Keylock
    | Pitch
    | SetTrack
    | Quantized
    | Batch
)
