"""What control threads send to the mixer: small immutable commands and :class:`Track`.

Every command is a frozen dataclass; :data:`Command` is their union, so a
producer (OSC, MIDI, scenes, the track loader) and the consumer
(:meth:`stemdeck.core.mixer.engine.Mixer.post`) agree on one closed set of types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Batch",
    "Command",
    "EchoTarget",
    "Loop",
    "MasterTarget",
    "Pause",
    "Play",
    "Rate",
    "ReverbTarget",
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
    """

    channels: np.ndarray
    sr: int
    names: tuple[str, ...]
    is_mix: bool = False

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
    step glides to it over the mixer's ``rate_glide_ms``, so a change never clicks."""

    rate: float


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
    | Rate
    | SetTrack
    | Batch
)
