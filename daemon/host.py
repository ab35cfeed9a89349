"""The seam between the control surfaces and the daemon: what OSC and the web may use.

:class:`~stemdeck.daemon.serve.Daemon` is the real host; ``tests/osc_host.py``
fakes it with the real registry, mixer and transport and no devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import Command
from stemdeck.core.mixer.engine import Mixer

from .quantize import Quantizer
from .sync import SyncControl
from .track_beats import TrackBeats
from .track_source import LoadDone
from .transport import TransportControl

__all__ = ["Host"]


class Host(Protocol):
    """What OSC dispatch and the web server need from the daemon.

    ``registry`` holds every control value, ``engine`` is read for its public
    state (transport, meters) and written only through :meth:`post`; ``sync`` is
    who leads the play head (``/sync/source``, ``/sync/anchor``); ``beats`` the
    playing track's beat grid (``/track/grid`` and its edits); ``quantize`` the
    ``/quantize`` mode and the post that makes a mute, solo or scene recall wait
    for the next grid point.
    """

    registry: Registry
    engine: Mixer
    transport: TransportControl
    sync: SyncControl
    beats: TrackBeats
    quantize: Quantizer

    @property
    def colours(self) -> list[str]:
        """``#RRGGBB`` per channel (empty: the channels have no colours)."""
        ...

    @property
    def labels(self) -> list[str]:
        """Each channel's display name: a stem file's own name for its stem ("Vox"
        on ``/ch/vocals``), else the channel's key."""
        ...

    def post(self, command: Command) -> bool:
        """Queue ``command`` for the audio thread; False when the queue is full."""
        ...

    def load_track(self, path: str, done: LoadDone) -> None:
        """``/track/load``: check ``path`` now, load it in the background, and tell
        ``done`` once how it ended: None once the track plays, else why not
        (:class:`~stemdeck.daemon.loader.TrackLoader`). ``done`` may be called
        before this returns.

        Raises
        ------
        StemdeckError
            The path is refused (outside the library, not audio...).
        """
        ...

    def save_scene(self, name: str) -> None: ...

    def recall_scene(self, name: str, fade: float, extra: Sequence[Command] = ()) -> None:
        """``/scene/recall``: at once (on the grid point when quantize is on) with
        ``extra`` commands in the same block (a hot cue's jump), or as a morph."""
        ...

    def status(self) -> str:
        """The status line (``daemon/status.py``)."""
        ...

    def midi_learn(self, address: str, args: Sequence[Any] = ()) -> None:
        """Bind the next moved MIDI control to ``address`` (an action with ``args``)."""
        ...

    def track_info(self) -> tuple[str, str, float]:
        """The track's name, its separation stage and the stage's fraction done."""
        ...

    def library_tracks(self) -> list[str]:
        """Audio files ``/track/load`` may open."""
        ...

    def scene_names(self) -> list[str]: ...
