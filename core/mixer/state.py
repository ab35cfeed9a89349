"""What control threads read of the mixer: its state views and the methods that give them.

:class:`~stemdeck.core.mixer.engine.Mixer` is one class built in three layers, one
module each, so that each job reads on its own while the audio thread still sees
one object (every attribute the block reads is the Mixer's own, no object in
between, and every call stays ``self.method``):

- :class:`MixerState` (here): the state a control thread may read, declared, and
  the read side: :meth:`~MixerState.read_meters`, :meth:`~MixerState.strip_state`,
  :meth:`~MixerState.master_state`, :meth:`~MixerState.filter_state`,
  :meth:`~MixerState.echo_state`, :meth:`~MixerState.echo_delay`,
  :meth:`~MixerState.reverb_state`,
  :attr:`~MixerState.rolling`, :attr:`~MixerState.loop`,
  :attr:`~MixerState.echo_running`, :attr:`~MixerState.reverb_running`;
- :class:`~stemdeck.core.mixer.control.MixerControl` (:mod:`.control`): the
  commands, from :meth:`~stemdeck.core.mixer.control.MixerControl.post` to what a
  drained command changes;
- :class:`~stemdeck.core.mixer.engine.Mixer` (:mod:`.engine`): set-up and the
  block.

None of this runs in the audio thread. A torn read of the meters only blurs a
meter; strip, master, filter, echo and reverb states are tuples the audio thread
replaces whole, so each read is the value of one command, never half of two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import ParameterError
from .commands import Track
from .fx import Effects
from .keylock import Shifter

__all__ = ["MasterState", "Meters", "MixerState", "StripState"]


class StripState(NamedTuple):
    """One strip's parameters as the engine holds them (:meth:`MixerState.strip_state`).

    Clamped as the engine applies them: ``gain`` linear in 0..+10 dB, ``pan``
    in -1 (left) .. 1 (right).
    """

    gain: float
    mute: bool
    solo: bool
    pan: float


class MasterState(NamedTuple):
    """The master's gain (linear, clamped) and mute (:meth:`MixerState.master_state`)."""

    gain: float
    mute: bool


@dataclass
class Meters:
    """Levels since the last :meth:`MixerState.read_meters`, linear: channels then master.

    Channel meters show what each strip sends to the master bus (after its
    fader, pan, filter and the transport fades); the master meter shows the
    output (after the master fader, the echo's return included). There is
    always one value per strip: while the original track stands in during
    separation, the strips are silent.
    """

    peak: np.ndarray
    rms: np.ndarray
    position: float
    playing: bool
    blocks: int
    dropped: int = 0
    names: tuple[str, ...] = field(default_factory=tuple)


class MixerState:
    """The Mixer's state that its layers share, and what control threads read of it.

    The attributes are declared here and set up by
    :class:`~stemdeck.core.mixer.engine.Mixer` (its constructor and ``prepare``).
    """

    max_channels: int
    sr: int
    #: The track the main play head reads, or None before the first ``SetTrack``.
    track: Track | None
    #: The main play head, in the track's frames (at its own rate: :attr:`frame_rate`).
    position: int
    #: Jumps of the main play head in time (seeks, loop wraps, beat jumps, cues, a new
    #: track). Whatever else moves the head against the wall clock (an audio stall, a
    #: same-audio track at another rate) is not one.
    jumps: int
    #: A sequence count around every change of :attr:`track`, :attr:`position` and
    #: :attr:`jumps` that is not the head's advance: odd while the audio thread makes
    #: one, two more after it. A reader takes it, then those, then it again, and keeps
    #: its reading only when both are the same even number (a seqlock: the audio thread
    #: never waits).
    seq: int
    _writing: int  # nesting of the audio thread's sections that move the count
    playing: bool
    #: The vinyl rate (:class:`~.commands.Rate`): the speed and pitch over the
    #: track's own, 1.0 by default; the read head glides to it.
    rate: float
    #: Keylock and the pitch shift (:mod:`.keylock`): the master's pitch shifter.
    shifter: Shifter
    #: Blocks processed, and commands refused (a full queue, a track that does not fit).
    blocks: int
    dropped: int
    fx: Effects
    _prepared: bool
    # Fading out to a pause (or stop), and past the track's end while fading heads finish.
    _pausing: bool
    _ending: bool
    _loop: tuple[int, int] | None
    # One (gain, mute, solo, pan) tuple per strip, replaced whole by a command, so a
    # control thread reading one (strip_state) never sees half of two.
    _strip_params: list[tuple[float, bool, bool, float]]
    _master_state: tuple[float, bool]  # (gain, mute), replaced whole as a strip's are
    # Meters, in the rows' order: master, then strips (read_meters reorders); the
    # samples they have summed since the last read.
    _peak: np.ndarray
    _sumsq: np.ndarray
    _count: int

    @property
    def keylock(self) -> bool:
        """Keylock on (:class:`~.commands.Keylock`): the pitch stays at any rate."""
        return self.shifter.keylock

    @property
    def pitch(self) -> float:
        """The pitch shift in semitones (:class:`~.commands.Pitch`), 0.0 by default."""
        return self.shifter.pitch

    @property
    def rolling(self) -> bool:
        """Playing and not fading out to a pause or stop (or past the track's end):
        what a play LED shows."""
        return self.playing and not self._pausing and not self._ending

    @property
    def loop(self) -> tuple[int, int] | None:
        """The loop region in the track's frames (start, end), or None."""
        return self._loop

    @property
    def frame_rate(self) -> int:
        """Frames a second of what :attr:`position`, :attr:`loop` and the track's
        length count: the track's own rate (the read head converts it to the
        device's as it reads), or the device's with no track; 0 before
        ``prepare`` with no track."""
        track = self.track
        return track.sr if track is not None else self.sr

    def seconds(self, frames: int) -> float:
        """``frames`` of the track (a position, a length) in seconds (0.0 when
        there is no rate yet)."""
        rate = self.frame_rate
        return frames / rate if rate else 0.0

    def read_meters(self) -> Meters:
        """Peak and RMS since the last read (control side; a torn read only blurs a meter)."""
        count = max(self._count, 1)
        peaks = np.roll(self._peak, -1)  # strips, then the master
        rms = np.sqrt(np.roll(self._sumsq, -1).astype(np.float64) / (2 * count)).astype(np.float32)
        self._peak[:] = 0.0
        self._sumsq[:] = 0.0
        self._count = 0
        track = self.track
        names = track.names if track is not None and not track.is_mix else ()
        return Meters(
            peak=peaks,
            rms=rms,
            position=self.seconds(self.position),
            playing=self.rolling,
            blocks=self.blocks,
            dropped=self.dropped,
            names=names,
        )

    def strip_state(self, index: int) -> StripState:
        """Strip ``index``'s parameters as the audio thread last applied them.

        For control threads and tests; never called in the audio thread. Safe
        from any thread: the audio thread replaces a strip's parameters as one
        tuple (one list store, atomic under the GIL), and this reads it in one
        step, so the value is that of one command, never half of two. Strips
        read one after another may be from different blocks; a command still
        in the queue shows only after the block that applies it.

        Raises
        ------
        ParameterError
            Not prepared yet, or ``index`` outside ``0..max_channels - 1``.
        """
        if not self._prepared:
            raise ParameterError("the mixer is not prepared: no strips yet")
        if not 0 <= index < self.max_channels:
            raise ParameterError(f"strip {index} out of 0..{self.max_channels - 1}")
        return StripState(*self._strip_params[index])

    def master_state(self) -> MasterState:
        """The master's gain and mute as the audio thread last applied them.

        For control threads and tests, never the audio thread. Consistent from
        any thread: the pair is one tuple, replaced whole by each command.

        Raises
        ------
        ParameterError
            Not prepared yet.
        """
        if not self._prepared:
            raise ParameterError("the mixer is not prepared: no master yet")
        return MasterState(*self._master_state)

    def filter_state(self, index: int | None) -> tuple[float, float]:
        """The DJ filter (knob, resonance) of strip ``index`` (None: the master) as
        the audio thread last applied it (clamped). For control threads and tests;
        consistent as :meth:`strip_state` is (one tuple, replaced whole).

        Raises
        ------
        ParameterError
            Not prepared yet, or ``index`` outside ``0..max_channels - 1``.
        """
        self._check_fx_index(index, "no filters yet")
        return self.fx.filter_state(index)

    def echo_state(self, index: int | None) -> tuple[float, ...]:
        """Strip ``index``'s echo send (send, pre as 0/1), or with None the echo bus
        (ms, feedback, filter, return), as the audio thread last applied them. For
        control threads and tests, as :meth:`filter_state`.

        Raises
        ------
        ParameterError
            Not prepared yet, or ``index`` outside ``0..max_channels - 1``.
        """
        self._check_fx_index(index, "no echo yet")
        return self.fx.echo_state(index)

    def echo_delay(self) -> float:
        """The echo's delay in samples at the device's rate, as the audio thread last
        applied it (where a glide goes): ``/fx/echo/ms`` or ``/fx/echo/beats`` as the
        delay line sees it. For control threads and tests.

        Raises
        ------
        ParameterError
            Not prepared yet.
        """
        self._check_fx_index(None, "no echo yet")
        return self.fx.echo_delay()

    def reverb_state(self, index: int | None) -> tuple[float, ...]:
        """Strip ``index``'s reverb send (send,), or with None the reverb bus (size,
        lowcut in Hz, return), as the audio thread last applied them. For control
        threads and tests, as :meth:`filter_state`.

        Raises
        ------
        ParameterError
            Not prepared yet, or ``index`` outside ``0..max_channels - 1``.
        """
        self._check_fx_index(index, "no reverb yet")
        return self.fx.reverb_state(index)

    def _check_fx_index(self, index: int | None, unprepared: str) -> None:
        if not self._prepared:
            raise ParameterError(f"the mixer is not prepared: {unprepared}")
        if index is not None and not 0 <= index < self.max_channels:
            raise ParameterError(f"strip {index} out of 0..{self.max_channels - 1}")

    @property
    def echo_running(self) -> bool:
        """The echo bus runs: a send is open, or its tail has not died away yet."""
        return self._prepared and self.fx.echo_on

    @property
    def reverb_running(self) -> bool:
        """The reverb bus runs: a send is open, or its tail has not died away yet."""
        return self._prepared and self.fx.reverb_on
