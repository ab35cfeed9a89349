"""``/transport/bpm``: the tempo the track plays at, set through the vinyl rate.

The tempo is the beat grid's (``/track/bpm``) times the rate (``/transport/rate``):
``/transport/bpm f`` asks for the rate ``f / grid bpm``, within the rate's range
0.5..2, else one ``/error`` and nothing changes. The pitch follows the rate
unless ``/transport/keylock`` is on (docs/osc.md). :class:`TempoHandlers` holds the handler
:class:`~.dispatch.OscControl` maps the address to; :func:`tempo_rate` is the check
the DAW followers (``reaper.py``) share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

from ..host import Host
from .args import number

if TYPE_CHECKING:  # annotations only: dispatch.py imports this module
    from .dispatch import Group

__all__ = ["TempoHandlers", "current_bpm", "tempo_rate"]


def tempo_rate(address: str, bpm: float, grid_bpm: float) -> float:
    """The rate that plays a grid of ``grid_bpm`` at ``bpm``.

    Raises
    ------
    ParameterError
        The rate would leave 0.5..2 (the message names the tempi this grid allows).
    """
    rate = bpm / grid_bpm
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ParameterError(
            f"{address} {bpm:g} needs rate {rate:.4g} on the grid's {grid_bpm:g} BPM; "
            f"the rate must be within {MIN_RATE:g}..{MAX_RATE:g} "
            f"({grid_bpm * MIN_RATE:g}..{grid_bpm * MAX_RATE:g} BPM for this track)"
        )
    return rate


def current_bpm(host: Host) -> float | None:
    """The tempo the track plays at (grid bpm × rate), or None with no grid."""
    grid = host.beats.grid()
    if grid is None:
        return None
    return grid.bpm * float(host.transport.value("rate")[0])


class TempoHandlers:
    """The handler of ``/transport/bpm`` on the daemon's ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def bpm(self, address: str, args: list[Any], group: Group) -> None:
        """``/transport/bpm``: a query answers the tempo; ``/transport/bpm f`` sets the
        rate that reaches it (on the grid as the group's edits leave it), answering
        nothing, as ``/transport/rate`` does. No grid: the ``/error`` of ``/track/bpm``."""
        grid = group.grid or self.host.beats.require().grid
        if not args:
            rate = float(self.host.transport.value("rate")[0])
            group.plan.replies.append((address, [grid.bpm * rate]))
            return
        bpm = number(address, args)
        rate = tempo_rate(address, bpm, grid.bpm)
        group.plan.transport(
            address, self.host.transport.rate(address, rate, grid.bpm, source=group.source)
        )
