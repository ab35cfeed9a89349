"""REAPER's OSC dialect: REAPER's transport drives stemdeck's, and surfaces made for
REAPER drive stemdeck's channels (docs/daw.md).

REAPER is an OSC server; with ``presets/daw/stemdeck.ReaperOSC`` as the pattern of
an OSC device aimed at stemdeck's port, it sends stemdeck its transport as feedback:

- ``/play``, ``/stop``, ``/pause`` with 1 (or 1.0) when that state begins and 0 when
  it ends: ``/play 1`` plays stemdeck, ``/stop 1`` and ``/pause 1`` pause it (REAPER's
  stop is stemdeck's pause: the position follows REAPER's ``/time``), a 0 does
  nothing (the state that begins says it). A play from standing starts at REAPER's
  last ``/time`` (stemdeck's pause fade moved its play head on by a few milliseconds);
- ``/time f``, the project's seconds, many times a second: stemdeck follows a jump
  (a locate), not every tick. :class:`Reaper` predicts REAPER's time from its last
  report, its play state and its play rate; a report off that prediction by more
  than :data:`TIME_JUMP_S` while REAPER rolls (:data:`STILL_JUMP_S` while it stands)
  seeks stemdeck to it, mapped through the tempo and ``/sync/anchor``;
- ``/tempo/raw f`` and ``/playrate/raw f``: the tempo that plays is tempo × play rate,
  set as ``/transport/bpm`` does (rate = that tempo / the grid's tempo). A new tempo
  while REAPER stands moves stemdeck to REAPER's last ``/time`` on the new mapping.

A surface made for REAPER (TouchOSC's REAPER layouts) sends REAPER's track dialect,
taken here as stemdeck's channels (track N is channel N): ``/track/N/volume`` (n,
0..1 on stemdeck's fader taper), ``/track/N/volume/db`` (f), ``/track/N/mute`` and
``/track/N/solo`` (b: 0 or 1), ``/track/N/mute/toggle`` and ``/track/N/solo/toggle``
(t: no argument or non-zero flips it), ``/track/N/pan`` (n: 0 left, 0.5 centre, 1
right). Sent with no argument, each is answered on its address with its value.
:func:`reaper_feedback` writes feedback in that dialect (``/subscribe PORT reaper``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Command, Pause, Play, Seek
from stemdeck.core.mixer.params import MAX_RATE, MIN_RATE

from ..host import Host
from ..transport import pressed
from .args import number
from .limits import Reply
from .tempo import tempo_rate

if TYPE_CHECKING:  # annotations only: dispatch.py imports this module
    from .dispatch import Group, Handler

__all__ = [
    "STILL_JUMP_S",
    "TIME_JUMP_S",
    "TRACK_PARAMS",
    "Following",
    "Reaper",
    "channel_number",
    "reaper_feedback",
]

#: How far REAPER's ``/time`` may stray from where its clock should be, while it
#: rolls, before it counts as a locate: more than the jitter of its reports and of
#: this daemon's handling of them (a stall of the OSC thread), less than a locate.
TIME_JUMP_S = 0.25
#: While REAPER stands, any move of its ``/time`` over this is a locate; and a
#: locate moves stemdeck only when its play head is further than this from it.
STILL_JUMP_S = 0.001
#: The track dialect's parameters, ``/track/N/<param>``.
TRACK_PARAMS = ("volume", "volume/db", "mute", "solo", "mute/toggle", "solo/toggle", "pan")


def channel_number(token: str, names: Sequence[str], what: str) -> int:
    """The 1-based channel a REAPER track or Ardour strip number names.

    Raises
    ------
    ParameterError
        Not ASCII digits, or no such channel.
    """
    if token.isascii() and token.isdigit() and 1 <= int(token) <= len(names):
        return int(token)
    raise ParameterError(
        f"{what} {token!r} is not a channel; {what}s are 1..{len(names)} ({', '.join(names)})"
    )


def _set_control(group: Group, key: str, address: str, args: Sequence[Any]) -> None:
    """Stage ``key args``; a refusal quotes ``address``, as sent, not the key."""
    try:
        group.txn.set(key, args)
    except ParameterError as exc:
        raise ParameterError(str(exc).replace(key, address)) from None


def _unit(address: str, args: Sequence[Any]) -> float:
    """The one number of a normalized (``n``) argument: 0..1."""
    value = number(address, args)
    if not 0.0 <= value <= 1.0:
        raise ParameterError(f"{address} takes 0..1, got {value:g}")
    return value


@dataclass(frozen=True)
class Following:
    """What REAPER's transport feedback has said: its play state, its last ``/time``
    (REAPER's seconds, and this daemon's clock when it came; None before the first),
    its tempo (None before the first) and play rate."""

    rolling: bool = False
    time: tuple[float, float] | None = None
    tempo: float | None = None
    playrate: float = 1.0


class Reaper:
    """The REAPER dialect's handlers on the daemon's ``host``, and what REAPER's
    transport feedback has said (:class:`Following`).

    A group's messages read and change a staged copy (``Group.staged["reaper"]``), so
    a bundle's ``/time`` counts for its ``/tempo/raw`` and the other way round; the
    copy is kept once the group is posted, and dropped if it is refused.

    Parameters
    ----------
    host : Host
        The daemon.
    clock : callable
        Seconds, monotonic: when each ``/time`` came (tests give their own).
    """

    def __init__(self, host: Host, clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.clock = clock
        self._lock = threading.Lock()
        self._following = Following()

    def handlers(self) -> dict[str, Handler]:
        """The exact addresses REAPER's transport feedback comes on, and their handlers."""
        return {
            "/play": partial(self._state, Play(), True),
            "/stop": partial(self._state, Pause(), False),
            "/pause": partial(self._state, Pause(), False),
            "/time": self.time,
            "/tempo/raw": self.tempo,
            "/playrate/raw": self.playrate,
        }

    def following(self) -> Following:
        """What REAPER's feedback has said, as far as groups were posted."""
        with self._lock:
            return self._following

    def _staged(self, group: Group) -> Following:
        staged = group.staged.get("reaper")
        if staged is None:
            staged = group.staged["reaper"] = self.following()
            group.plan.after.append(("/reaper", partial(self._keep, group)))
        return staged

    def _stage(self, group: Group, following: Following) -> None:
        group.staged["reaper"] = following

    def _keep(self, group: Group) -> None:
        with self._lock:
            self._following = group.staged["reaper"]

    def _seek(self, group: Group, target: float) -> None:
        """Seek to ``target`` unless stemdeck's play head is within :data:`STILL_JUMP_S`."""
        if abs(target - self.host.transport.position()) > STILL_JUMP_S:
            group.plan.commands.append(Seek(target))

    # -- REAPER's transport ---------------------------------------------------------------
    def _state(
        self, command: Command, rolling: bool, address: str, args: list[Any], group: Group
    ) -> None:
        """``/play``, ``/stop``, ``/pause``: 1 (or no argument) acts, 0 does nothing."""
        if args and not pressed(address, args):
            return
        now = self.clock()
        was = self._staged(group)
        last = was.time
        if rolling and not was.rolling and last is not None:
            # REAPER starts where it stood; stemdeck's pause fade moved it on a little.
            self._seek(group, self.track_seconds(last[0], was.tempo, group))
            last = (last[0], now)  # REAPER's clock runs from here, now
        group.plan.commands.append(command)
        self._stage(group, replace(was, rolling=rolling, time=last))

    def time(self, address: str, args: list[Any], group: Group) -> None:
        """``/time f``: seek stemdeck when REAPER's time jumped (see the module)."""
        seconds = number(address, args)
        now = self.clock()
        was = self._staged(group)
        last = was.time
        if last is None:
            jumped = True
        elif was.rolling:
            jumped = abs(seconds - (last[0] + (now - last[1]) * was.playrate)) > TIME_JUMP_S
        else:
            jumped = abs(seconds - last[0]) > STILL_JUMP_S
        if jumped:
            self._seek(group, self.track_seconds(seconds, was.tempo, group))
        self._stage(group, replace(was, time=(seconds, now)))

    def track_seconds(self, seconds: float, tempo: float | None, group: Group) -> float:
        """The track's second at REAPER's ``seconds``: the anchor plus REAPER's beats
        on the track's grid (its seconds as they are without a tempo or a grid),
        within the track."""
        grid = group.grid or self.host.beats.grid()
        scale = tempo / grid.bpm if tempo is not None and grid is not None else 1.0
        target = self.host.sync.anchor + seconds * scale
        return min(max(target, 0.0), self.host.transport.length())

    def tempo(self, address: str, args: list[Any], group: Group) -> None:
        """``/tempo/raw f``: play the grid at REAPER's tempo × its play rate; while
        REAPER stands, go to its last time on the new tempo's mapping."""
        bpm = number(address, args)
        if bpm <= 0.0:
            raise ParameterError(f"{address} takes a tempo above 0 BPM, got {bpm:g}")
        grid = group.grid or self.host.beats.require().grid
        was = self._staged(group)
        rate = tempo_rate(address, bpm * was.playrate, grid.bpm)
        group.plan.transport(
            address, self.host.transport.rate(address, rate, grid.bpm, source=group.source)
        )
        if was.time is not None and not was.rolling:
            self._seek(group, self.track_seconds(was.time[0], bpm, group))
        self._stage(group, replace(was, tempo=bpm))

    def playrate(self, address: str, args: list[Any], group: Group) -> None:
        """``/playrate/raw f``: REAPER's play rate; with its tempo known, the tempo that
        plays is tempo × rate (on the grid); else stemdeck's rate is REAPER's."""
        playrate = number(address, args)
        was = self._staged(group)
        if was.tempo is not None:
            grid = group.grid or self.host.beats.require().grid
            rate = tempo_rate(address, was.tempo * playrate, grid.bpm)
        elif MIN_RATE <= playrate <= MAX_RATE:
            rate = playrate
        else:
            raise ParameterError(
                f"{address} must be within {MIN_RATE:g}..{MAX_RATE:g}, got {playrate:g}"
            )
        group_bpm = group.grid.bpm if group.grid is not None else None
        group.plan.transport(
            address, self.host.transport.rate(address, rate, group_bpm, source=group.source)
        )
        last = was.time
        if was.rolling and last is not None:
            # REAPER's clock runs at the new rate from now: predict from here.
            now = self.clock()
            last = (last[0] + (now - last[1]) * was.playrate, now)
        self._stage(group, replace(was, playrate=playrate, time=last))

    # -- the track dialect ----------------------------------------------------------------
    def track(self, address: str, args: list[Any], group: Group) -> None:
        """``/track/N/<param>`` (:data:`TRACK_PARAMS`) on channel N; any other address
        under ``/track/`` is unknown."""
        parts = address.split("/", 3)
        if len(parts) != 4 or parts[3] not in TRACK_PARAMS:
            raise ParameterError("unknown address")
        param = parts[3]
        index = channel_number(parts[2], self.host.registry.names, "track")
        ch = f"/ch/{index}"
        txn = group.txn
        if param.endswith("/toggle"):
            if args and not pressed(address, args):
                return
            key = f"{ch}/{param[: -len('/toggle')]}"
            txn.set(key, [1 - int(txn.get(key))])
            return
        if not args:  # a query: the value, on the address as sent
            if param == "volume":
                value: float | int = txn.get(f"{ch}/fader")
            elif param == "volume/db":
                value = txn.get(f"{ch}/db")
            elif param == "pan":
                value = (float(txn.get(f"{ch}/pan")) + 1.0) / 2.0
            else:
                value = txn.get(f"{ch}/{param}")
            group.plan.replies.append((address, [value]))
            return
        if param == "volume":
            _set_control(group, f"{ch}/fader", address, [_unit(address, args)])
        elif param == "volume/db":
            _set_control(group, f"{ch}/db", address, [number(address, args)])
        elif param == "pan":
            _set_control(group, f"{ch}/pan", address, [_unit(address, args) * 2.0 - 1.0])
        else:  # mute, solo: b, 0 or 1
            _set_control(group, f"{ch}/{param}", address, args)


def reaper_feedback(replies: Sequence[Reply]) -> list[Reply]:
    """Feedback in REAPER's dialect: channel N's fader, dB, mute, solo and pan as track
    N's ``/track/N/volume``, ``/volume/db``, ``/mute``, ``/solo``, ``/pan`` (0..1),
    the channel names as ``/track/N/name``, the master fader as ``/master/volume``, the
    transport as ``/play`` and ``/stop`` (1 or 0), ``/time``, ``/tempo/raw`` (while
    there is a grid) and ``/playrate/raw``. Other values have no REAPER address and
    are left out. ``replies`` address channels by index."""
    out: list[Reply] = []
    for address, args in replies:
        if address.startswith("/ch/"):
            _, _, index, param = address.split("/", 3)
            track = f"/track/{index}"
            if param == "fader":
                out.append((f"{track}/volume", list(args)))
            elif param == "db":
                out.append((f"{track}/volume/db", list(args)))
            elif param in ("mute", "solo"):
                out.append((f"{track}/{param}", list(args)))
            elif param == "pan":
                out.append((f"{track}/pan", [(float(args[0]) + 1.0) / 2.0]))
        elif address == "/channels":
            out += [(f"/track/{i}/name", [name]) for i, name in enumerate(args, 1)]
        elif address == "/master/fader":
            out.append(("/master/volume", list(args)))
        elif address == "/transport/playing":
            out += [("/play", [int(args[0])]), ("/stop", [1 - int(args[0])])]
        elif address == "/transport/position":
            out.append(("/time", list(args)))
        elif address == "/transport/bpm" and float(args[0]) > 0.0:
            out.append(("/tempo/raw", list(args)))
        elif address == "/transport/rate":
            out.append(("/playrate/raw", list(args)))
    return out
