"""The beat grid's addresses: ``/track/bpm``, ``/track/grid``, ``/track/key`` and the
grid's edits ``/track/grid/<verb>`` (halve, double, shift, downbeat, tap, reset).

:class:`GridHandlers` holds the handlers :class:`~.dispatch.OscControl` maps them
to. An edit is checked against the grid as the bundle's earlier edits leave it
(``Group.grid``), applied and stored once the bundle is posted, and answered with
``/track/grid``, the grid in force (docs/osc.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.errors import ParameterError

from ..host import Host
from ..transport import pressed
from .args import no_args, number

if TYPE_CHECKING:  # annotations only: dispatch.py imports this module
    from .dispatch import Group

__all__ = ["GRID_EDITS", "GRID_VALUE", "MAX_SHIFT_MS", "GridHandlers", "grid_args"]

#: The beat grid's edits, ``/track/grid/<verb>``.
GRID_EDITS = ("halve", "double", "shift", "downbeat", "tap", "reset")
#: ``/track/grid`` as OSCQuery lists it (a node with a value has no children there).
GRID_VALUE = "/track/grid/current"
#: The most ``/track/grid/shift`` moves the grid at once (ms).
MAX_SHIFT_MS = 60_000.0


def grid_args(grid: BeatGrid | None) -> list[Any]:
    """``/track/grid``'s arguments: bpm, first downbeat (s), beats per bar; ``0.0 0.0
    0`` with no grid (in ``/state`` and feedback)."""
    if grid is None:
        return [0.0, 0.0, 0]
    return [grid.bpm, grid.downbeat, grid.beats_per_bar]


class GridHandlers:
    """The handlers of the beat grid's addresses, on the daemon's ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def track_key(self, address: str, args: list[Any], group: Group) -> None:
        """``/track/key``: the musical key, ``""`` while unknown (never an error)."""
        no_args(address, args)
        group.plan.replies.append((address, [self.host.beats.key()]))

    def query(self, address: str, args: list[Any], group: Group) -> None:
        no_args(address, args)
        group.plan.replies.append((address, grid_args(self.host.beats.require().grid)))

    def track_bpm(self, address: str, args: list[Any], group: Group) -> None:
        """``/track/bpm``: the grid's tempo; ``/track/bpm f`` sets it, the bar start
        nearest what is heard (``TransportControl.heard``) staying where it is."""
        track = self.host.beats.require()
        if not args:
            group.plan.replies.append((address, [track.grid.bpm]))
            return
        bpm = number(address, args)
        at = self.host.transport.heard()
        self._stage(group, address, track.gen, lambda g: g.with_bpm(bpm, anchor=at))

    def edit(self, address: str, args: list[Any], group: Group) -> None:
        """``/track/grid/<verb>``: validated against the grid as the group's earlier
        edits leave it; applied and stored once the group is posted; answered with
        ``/track/grid`` (the grid in force)."""
        beats = self.host.beats
        track = beats.require()
        verb = address[len("/track/grid/") :]
        change: Callable[[BeatGrid], BeatGrid]
        if verb in ("halve", "double", "tap", "reset"):
            if args and not pressed(address, args):
                return  # a button's release
            if verb == "halve":
                change = BeatGrid.halved
            elif verb == "double":
                change = BeatGrid.doubled
            elif verb == "tap":
                at = self.host.transport.heard()
                gen = track.gen
                group.plan.after.append(
                    (address, lambda: ("/track/grid", grid_args(beats.tap(at, gen=gen))))
                )
                return
            else:
                analysis = track.record.analysis
                assert analysis is not None  # a published record has one
                group.grid = analysis.grid.normalized()
                gen = track.gen
                group.plan.after.append(
                    (address, lambda: ("/track/grid", grid_args(beats.reset(gen=gen))))
                )
                return
        elif verb == "shift":
            ms = number(address, args)
            if abs(ms) > MAX_SHIFT_MS:
                raise ParameterError(
                    f"shift must be -{MAX_SHIFT_MS:g} to {MAX_SHIFT_MS:g} ms, got {ms:g}"
                )
            change = partial(BeatGrid.shifted, ms=ms)
        else:  # downbeat: what is heard now, or the given second
            if args:
                t = number(address, args)
                length = self.host.transport.length()
                if not 0.0 <= t <= length:
                    raise ParameterError(
                        f"downbeat must be 0 to {length:.3f} s (the track), got {t:g}"
                    )
            else:
                t = self.host.transport.heard()
            change = partial(BeatGrid.with_downbeat_at, t=t)
        self._stage(group, address, track.gen, change)

    def _stage(
        self, group: Group, address: str, gen: int, change: Callable[[BeatGrid], BeatGrid]
    ) -> None:
        """Check ``change`` on the group's grid now (a tempo out of range refuses the
        group); apply it to the track of generation ``gen`` once the group is posted."""
        staged = group.grid or self.host.beats.require().grid
        group.grid = change(staged).normalized()
        beats = self.host.beats
        group.plan.after.append(
            (address, lambda: ("/track/grid", grid_args(beats.edit(change, gen=gen))))
        )
