"""Who leads the play head: the sync source, its anchor, and the JACK transport follower.

:class:`SyncControl` holds what ``serve --sync`` and OSC ``/sync/source`` and
``/sync/anchor`` set (docs/osc.md): the source (``off``, ``jack``, ``midi`` or
``link``, the last with the optional extra ``stemdeck[link]``), the anchor, the
second of the track that sits at the session's frame 0 (for MIDI clock: at the
leader's song position 0), and what the leader says (:meth:`SyncControl.describe`,
:meth:`~SyncControl.tempo`, :meth:`~SyncControl.phase`, :meth:`~SyncControl.peers`:
its tempo, the phase error, Link's peers; ``clock_in.py`` follows MIDI clock,
``timebase.py`` a JACK timebase master's bars and beats, ``link.py`` a Link
session). :class:`TransportFollower` runs in the JACK process callback
(``audio/jack.py``): it reads the transport once per block and turns its changes
into the mixer's own Play, Pause and Seek, so a locate crossfades as a seek does
and a start or stop fades as play and pause do. A rolling transport that moves by
the block posts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, Pause, Play, Rate, Seek, Track

__all__ = [
    "LEADS_THE_RATE",
    "MAX_ANCHOR_S",
    "SOURCES",
    "SyncControl",
    "TransportFollower",
]

#: Every sync source ``--sync`` and ``/sync/source`` name.
SOURCES = ("off", "jack", "midi", "link")
#: The largest anchor, either way (a day: no track is longer).
MAX_ANCHOR_S = 86400.0
#: Longer than the mixer's rate glide (``Mixer.rate_glide_ms``, 30 ms): the position
#: follower seeks again this long after it set the rate back to 1.
RATE_SETTLE_S = 0.05
#: The leaders that hold the track's rate while they lead, as errors name them: their
#: tempo is the rate (a timebase master's; a MIDI clock's; the JACK transport's 1
#: without one), so a rate a surface sets is refused. Link's session takes it instead.
LEADS_THE_RATE = {"jack": "the JACK transport", "midi": "the MIDI clock"}


class SyncControl:
    """The sync source and anchor (any thread writes; the audio thread reads).

    Parameters
    ----------
    jack : bool
        The JACK transport can be read: the daemon plays through its own JACK
        client (``--audio jack``).
    midi : bool
        A MIDI clock input is open (``--sync-midi PORT``).
    open_link : callable or None
        Opens the Link session (``link.py``) the first time ``link`` is asked for;
        raises ParameterError without the extra. None: this process has no Link.
    """

    def __init__(
        self,
        *,
        jack: bool = False,
        midi: bool = False,
        open_link: Callable[[], None] | None = None,
    ) -> None:
        self.jack = jack
        self.midi = midi
        self.open_link = open_link
        #: One of :data:`SOURCES`; the audio thread reads it every block.
        self.source = "off"
        #: Seconds of the track at the session's frame 0.
        self.anchor = 0.0
        #: The anchor was set (``/sync/anchor``, :meth:`set_anchor`): a JACK
        #: timebase's bar 1 uses it, else the grid's first downbeat.
        self.anchor_set = False
        #: The MIDI clock's smoothed tempo (None: no clock heard).
        self.leader_bpm: float | None = None
        #: The play head's distance ahead of the MIDI clock (s; None: not following).
        self.phase_error: float | None = None
        #: The JACK timebase master's tempo (None: no bars and beats in the transport).
        self.jack_bpm: float | None = None
        #: The play head's distance ahead of the JACK session's beat (s; None: not
        #: locked to it).
        self.jack_phase: float | None = None
        #: The Link session's tempo (None: not heard yet, or no session).
        self.link_bpm: float | None = None
        #: The play head's distance ahead of the Link session's beat (s; None: not
        #: locked to it).
        self.link_phase: float | None = None
        #: Link peers (None: no Link session open).
        self.link_peers: int | None = None
        #: stemdeck is the JACK timebase master (``--jack-timebase``): ``jack`` then
        #: follows the transport's position only, not its own bars.
        self.timebase_master = False
        #: The leader's bar lines in the track while a leader holds the track's grid
        #: (quantize follows them): (the track's second at the leader's bar 1 beat 1,
        #: beats per bar), or None. Replaced whole by the follower.
        self.bars: tuple[float, int] | None = None

    def check_source(self, source: str) -> None:
        """Raise unless ``source`` can lead now.

        Raises
        ------
        ParameterError
            An unknown source, ``jack`` without the JACK backend, ``midi``
            without a clock input, or ``link`` without the extra (``link``
            opens the Link session the first time).
        """
        if source not in SOURCES:
            raise ParameterError(f"unknown sync source {source!r}; one of {', '.join(SOURCES)}")
        if source == "link":
            if self.open_link is None:
                raise ParameterError("link sync is not available in this process")
            self.open_link()
        if source == "jack" and not self.jack:
            raise ParameterError("jack sync needs stemdeck's JACK client: serve --audio jack")
        if source == "midi" and not self.midi:
            raise ParameterError("midi sync needs a MIDI clock input: serve --sync-midi PORT")

    def set_source(self, source: str) -> None:
        """Follow ``source`` from the next block on (checked by :meth:`check_source`)."""
        self.check_source(source)
        self.source = source

    @staticmethod
    def check_anchor(seconds: float) -> None:
        """Raise unless ``seconds`` is a finite anchor within :data:`MAX_ANCHOR_S`."""
        if not math.isfinite(seconds) or abs(seconds) > MAX_ANCHOR_S:
            raise ParameterError(
                f"anchor must be finite and within +-{MAX_ANCHOR_S:g} s, got {seconds:g}"
            )

    def set_anchor(self, seconds: float) -> None:
        """The track's second ``seconds`` sits at the session's frame 0 from now on
        (negative: the track starts that long into the session)."""
        self.check_anchor(seconds)
        self.anchor = float(seconds)
        self.anchor_set = True

    def anchor_in_force(self) -> float:
        """The anchor the play head follows now, what ``/sync/anchor`` answers: while
        a leader holds the track's grid, the track's second at the leader's bar 1
        beat 1 (:attr:`bars`: the grid's first downbeat under a JACK timebase master
        or Link until :attr:`anchor` is set); else :attr:`anchor`."""
        bars = self.bars
        return bars[0] if bars is not None else self.anchor

    def tempo(self) -> float | None:
        """The leader's tempo in BPM: the JACK timebase's under ``jack``, the Link
        session's under ``link``, else the MIDI clock's (heard whatever the
        source), or None."""
        if self.source == "jack":
            return self.jack_bpm
        return self.link_bpm if self.source == "link" else self.leader_bpm

    def phase(self) -> float | None:
        """How far the play head is ahead of the leader (s), or None (not locked)."""
        if self.source == "jack":
            return self.jack_phase
        return self.link_phase if self.source == "link" else self.phase_error

    def peers(self) -> int:
        """Link peers (0 without a Link session)."""
        return self.link_peers or 0

    def describe(self) -> str:
        """Who leads, for the status line: ``off``; ``jack`` (the transport's
        position alone) or ``jack`` with the timebase's tempo and the phase error
        (``jack 126.00 BPM +0.1 ms``); ``midi`` with the leader's tempo and the
        phase error (``midi 120.00 BPM +0.4 ms``; ``midi no clock`` before any tick);
        ``link`` with the session's tempo, the phase error and the peers
        (``link 120.00 BPM +0.1 ms 1 peer``; the phase only while locked)."""
        source = self.source
        if source not in ("jack", "midi", "link"):
            return source
        bpm, error = self.tempo(), self.phase()
        if bpm is None:
            return "midi no clock" if source == "midi" else source
        text = f"{source} {bpm:.2f} BPM"
        if error is not None:
            text += f" {error * 1000:+.1f} ms"
        if source == "link":
            peers = self.peers()
            text += f" {peers} peer" if peers == 1 else f" {peers} peers"
        return text

    def jack_lost(self) -> None:
        """The JACK client is gone (the server shut down): nothing to follow."""
        self.jack = False
        self.source = "off"
        self.jack_bpm = self.jack_phase = None
        self.bars = None


class FollowedEngine(Protocol):
    """What the follower reads of the mixer (audio thread) and posts to it."""

    position: int
    sr: int
    track: Track | None
    rate: float

    @property
    def output_delay(self) -> int:
        """Frames the audio out lags the play head by (the keylock's shifter): the
        play head is placed that far ahead of the session."""
        ...

    def post(self, command: Command) -> bool: ...


class TransportFollower:
    """Audio thread: the JACK transport of each block into Play, Pause and Seek.

    Called once per block, before the mixer renders it, with the transport's state
    and frame at the block's first sample. The track position the transport asks
    for is ``frame / sr + anchor`` seconds, in the track's own frames (its rate may
    not be the device's ``sr``: the mixer's read head converts it), plus the
    mixer's :attr:`~.FollowedEngine.output_delay` (the keylock's shifter delays
    what the head reads by that much: the head reads it ahead, and the session
    hears the track's second at its frame). A change posts, to be applied at the
    top of this very block:

    - the transport starts rolling (with the target inside the track): a Seek to
      the target when the play head is elsewhere, then Play (a fade in);
    - it stops, or the target leaves the track (before its start, or within a
      block of its end): Pause (a fade out);
    - a locate (a frame other than the last one plus the block), a new anchor, a
      new track or a new output delay (keylock on or off): a Seek to the target
      when the play head is elsewhere (the crossfade of any seek);
    - the first block it follows, with the mixer at another rate: Rate 1 (a
      surface's rate is refused while it leads, ``LEADS_THE_RATE``), and once the
      rate has glided there (:data:`RATE_SETTLE_S`), a Seek to the target.

    A rolling transport that moves by the block posts nothing, and nothing between
    changes overrides the local transport verbs (``/transport/pause`` while the
    session rolls pauses until the next change). A transport that is starting
    (``STARTING``: waiting for slow clients) keeps the last state.
    """

    def __init__(self, engine: FollowedEngine, sync: SyncControl) -> None:
        self.engine = engine
        self.sync = sync
        #: Following now: False until the first block with the source ``jack``, and
        #: again once it is not (the caller may set it so, instead of calling).
        self.following = False
        self._playing = False  # what the follower last asked for
        self._expect = 0  # the next block's frame, if nothing moves the transport
        self._anchor = 0
        self._delay = 0  # the output delay of the last block
        self._track: Track | None = None
        self._play = Play()
        self._pause = Pause()
        self._settling = 0  # blocks until a rate set back to 1 has glided there

    def block(self, rolling: bool | None, frame: int, frames: int, pos: Any = None) -> None:
        """One block: ``rolling`` (None: starting, no change), the transport ``frame``
        of the block's first sample, the block's ``frames`` (``pos``, JACK's position
        structure, is for :class:`~stemdeck.daemon.timebase.BbtFollower`)."""
        if self.sync.source != "jack":
            self.following = False
            return
        engine = self.engine
        sr = engine.sr
        anchor = round(self.sync.anchor * sr)
        delay = engine.output_delay
        track = engine.track
        first = not self.following
        if rolling is None:
            rolling = self._playing
        moved = (
            frame != self._expect
            or anchor != self._anchor
            or track is not self._track
            or delay != self._delay
        )
        if self._settling > 0:
            self._settling -= 1
            moved = moved or self._settling == 0  # the glide is over: on the frame again
        self.following = True
        self._expect = frame + frames if rolling else frame
        self._anchor = anchor
        self._delay = delay
        self._track = track
        if track is None or sr <= 0:
            return
        target = frame + anchor + delay  # device frames, the track's at the device's rate
        span = frames
        if track.sr != sr:  # the track's own frames
            target = round(target * track.sr / sr)
            span = math.ceil(frames * track.sr / sr)
        inside = 0 <= target and target + span < track.length
        want = rolling and inside
        if not first and want == self._playing and not moved:
            return  # the steady state: nothing to post
        seek = None
        if (want or moved) and engine.position != target:
            clamped = min(max(target, 0), track.length)
            seek = Seek(clamped / track.sr)
        if first and engine.rate != 1.0 and engine.post(Rate(1.0)):
            # The transport's frames are the track's at rate 1: a rate set before
            # (a surface's, under another leader) would drift from them unseen. The
            # rate glides there; a seek once it has puts the play head on the frame.
            self._settling = math.ceil(RATE_SETTLE_S * sr / frames)
        if first or want != self._playing:
            self._playing = want
            if want:
                engine.post(Batch((seek, self._play)) if seek is not None else self._play)
            else:
                engine.post(self._pause)  # a seek waits for the start: no fade to fight
        elif seek is not None:
            engine.post(seek)
