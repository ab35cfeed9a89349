"""Hot cues over OSC: ``/cue/N`` (a query), ``/cue/N/set``, ``/cue/N/jump``,
``/cue/N/clear`` and ``/cue/N/scene``, N = 1..8 (``docs/quantize.md``).

:class:`CueHandlers` holds the handler :class:`~.dispatch.OscControl` maps the
``/cue/`` prefix to. A cue lives with the track's beat grid (its sidecar, keyed by
the audio hash: :meth:`~stemdeck.daemon.track_beats.TrackBeats.set_cue`), so a track
has cues once it has a grid. Each message is checked with its group and applied once
the group is posted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stemdeck.core.beats.store import MAX_CUE_SCENE, MAX_CUES, HotCue
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Seek

from ..host import Host
from ..transport import pressed
from .args import no_args
from .limits import Reply

if TYPE_CHECKING:  # annotations only: dispatch.py imports this module
    from .dispatch import Group

__all__ = ["CUE_VERBS", "NOT_SET", "CueHandlers", "cue_state"]

#: ``/cue/N``'s position while the cue is not set (a position is never negative).
NOT_SET = -1.0

#: What follows ``/cue/N/``; ``position`` is ``/cue/N`` as OSCQuery lists it (a node
#: with a value has no children there).
CUE_VERBS = ("set", "jump", "clear", "scene", "position")


def cue_state(host: Host) -> list[Reply]:
    """Every cue's value: ``/cue/N`` with its position in seconds (:data:`NOT_SET`:
    not set) and ``/cue/N/scene`` (``""``: none), N = 1..8 (in ``/state`` and feedback)."""
    out: list[Reply] = []
    for n in range(1, MAX_CUES + 1):
        cue = host.beats.cue(n)
        out.append((f"/cue/{n}", [NOT_SET if cue is None else cue.position]))
        out.append((f"/cue/{n}/scene", ["" if cue is None or cue.scene is None else cue.scene]))
    return out


class CueHandlers:
    """The handler of ``/cue/...`` on the daemon's ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def handle(self, address: str, args: list[Any], group: Group) -> None:
        parts = address.split("/")  # "", "cue", N[, verb]
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in CUE_VERBS):
            raise ParameterError("unknown address")
        token = parts[2]
        if not (token.isascii() and token.isdigit() and 1 <= int(token) <= MAX_CUES):
            raise ParameterError(f"hot cues are numbered 1 to {MAX_CUES}, got {token!r}")
        n = int(token)
        verb = parts[3] if len(parts) == 4 else "position"
        if verb == "position":
            no_args(address, args)
            cue = self.host.beats.cue(n)
            group.plan.replies.append((address, [NOT_SET if cue is None else cue.position]))
        elif verb == "scene":
            self._scene(address, n, args, group)
        elif args and not pressed(address, args):
            return  # a pad's release
        elif verb == "set":
            self._set(address, n, group)
        elif verb == "clear":
            self._clear(address, n, group)
        else:
            self._jump(address, n, group)

    def _set(self, address: str, n: int, group: Group) -> None:
        """At what is heard now (``TransportControl.heard``: the play head less the
        keylock's delay), snapped to the grid when quantize is on; the cue keeps its
        scene. Answers ``/cue/N f``."""
        host = self.host
        track = host.beats.require()  # cues live with the grid
        transport = host.transport
        position = host.quantize.snap(transport.heard(), transport.length())
        old = host.beats.cue(n)
        cue = HotCue(position, None if old is None else old.scene)

        def run() -> Reply:
            host.beats.set_cue(n, cue, gen=track.gen)
            return (f"/cue/{n}", [position])

        group.plan.after.append((address, run))

    def _clear(self, address: str, n: int, group: Group) -> None:
        """Clear the cue (and its scene); answers ``/cue/N -1.0``."""
        host = self.host
        track = host.beats.require()

        def run() -> Reply:
            host.beats.set_cue(n, None, gen=track.gen)
            return (f"/cue/{n}", [NOT_SET])

        group.plan.after.append((address, run))

    def _jump(self, address: str, n: int, group: Group) -> None:
        """To the cue on the next grid point (quantize), with its scene if it has one."""
        host = self.host
        host.beats.require()
        cue = host.beats.cue(n)
        if cue is None:
            raise ParameterError(f"cue {n} is not set")
        seek = Seek(cue.position)
        scene = cue.scene

        def run() -> None:
            if scene is not None:
                host.recall_scene(scene, 0.0, (seek,))
            elif not host.quantize.post(seek):
                raise ParameterError("engine queue full: no jump; try again")

        group.plan.after.append((address, run))

    def _scene(self, address: str, n: int, args: list[Any], group: Group) -> None:
        """``/cue/N/scene``: the scene a jump recalls (a query answers it, ``""``
        none); ``""`` clears it. Answers ``/cue/N/scene s``."""
        host = self.host
        if not args:
            cue = host.beats.cue(n)
            name = "" if cue is None or cue.scene is None else cue.scene
            group.plan.replies.append((address, [name]))
            return
        if len(args) != 1 or not isinstance(args[0], str):
            raise ParameterError(f'{address} takes one scene name ("" for none), got {args!r}')
        name = args[0]
        track = host.beats.require()
        cue = host.beats.cue(n)
        if cue is None:
            raise ParameterError(f"cue {n} is not set")
        if name and (len(name) > MAX_CUE_SCENE or name not in host.scene_names()):
            raise ParameterError(f"no scene named {name!r}")
        updated = HotCue(cue.position, name or None)

        def run() -> Reply:
            host.beats.set_cue(n, updated, gen=track.gen)
            return (address, [name])

        group.plan.after.append((address, run))
