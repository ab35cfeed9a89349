"""Ardour's OSC strip dialect: a surface laid out for Ardour drives stemdeck's channels
(docs/daw.md).

Strip ``ssid`` is channel ``ssid`` (1-based, as Ardour counts strips in a bank). The
strip number comes where Ardour's surface takes it: the first argument
(``/strip/fader 1 0.75``), or the path (``/strip/1/fader 0.75``,
``/strip/fader/1 0.75``). The parameters, with Ardour's meanings:

- ``fader`` f 0..1: the fader position, on stemdeck's fader taper;
- ``gain`` f dB: the gain in dB (at most stemdeck's +10; below -192, or -inf, off);
- ``mute``, ``solo`` i or f: non-zero after truncation to an integer is on, as
  Ardour reads them (0.5 is off);
- ``pan_stereo_position`` f 0..1: Ardour's pan "interface" value, which runs from
  hard right at 0 to hard left at 1 (Ardour's azimuth inverted): stemdeck's pan is
  ``1 - 2 × position``.

A strip number with no value is a query, answered as Ardour answers it: the value
alone, on the address as sent. :func:`ardour_feedback` writes feedback in this
dialect (``/subscribe PORT ardour``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stemdeck.core.errors import ParameterError

from ..host import Host
from .args import number
from .limits import Reply
from .reaper import channel_number

if TYPE_CHECKING:  # annotations only: dispatch.py imports this module
    from .dispatch import Group

__all__ = ["ARDOUR_FEEDBACK_OFF_DB", "ARDOUR_OFF_DB", "STRIP_PARAMS", "Ardour", "ardour_feedback"]

#: The strip parameters, ``/strip/<param>``.
STRIP_PARAMS = ("fader", "gain", "mute", "solo", "pan_stereo_position")
#: Ardour's ``/strip/gain`` below this many dB is off.
ARDOUR_OFF_DB = -192.0
#: An off gain in Ardour's feedback (dB).
ARDOUR_FEEDBACK_OFF_DB = -200.0


def _ssid(address: str, value: Any) -> str:
    """A strip number argument (i, or f with an integer value) as a token."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"{address} takes a strip number first, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ParameterError(f"{address} takes a whole strip number, got {value!r}")
    if not -(2**31) <= value < 2**31:  # as Ardour reads it: a 32-bit int
        raise ParameterError(f"{address} takes a 32-bit strip number, got {value!r}")
    return str(int(value))


class Ardour:
    """The handler of ``/strip/...`` on the daemon's ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def strip(self, address: str, args: list[Any], group: Group) -> None:
        """``/strip/<param> ssid [value]``, ``/strip/<ssid>/<param> [value]`` or
        ``/strip/<param>/<ssid> [value]``; anything else under ``/strip/`` is unknown."""
        parts = address.split("/")[2:]
        values = list(args)
        if len(parts) == 1 and parts[0] in STRIP_PARAMS:
            if not values:
                raise ParameterError(f"{address} takes a strip number, then the value")
            param, token = parts[0], _ssid(address, values.pop(0))
        elif len(parts) == 2 and parts[1] in STRIP_PARAMS and parts[0].isdigit():
            token, param = parts
        elif len(parts) == 2 and parts[0] in STRIP_PARAMS and parts[1].isdigit():
            param, token = parts
        else:
            raise ParameterError("unknown address")
        if len(values) > 1:
            raise ParameterError(
                f"{address} takes a strip number and one value, got {list(args)!r}"
            )
        ch = f"/ch/{channel_number(token, self.host.registry.names, 'strip')}"
        txn = group.txn
        if not values:  # a query: the value alone, on the address as sent
            if param == "fader":
                value: float | int = txn.get(f"{ch}/fader")
            elif param == "gain":
                value = txn.get(f"{ch}/db")
            elif param == "pan_stereo_position":
                value = (1.0 - float(txn.get(f"{ch}/pan"))) / 2.0
            else:
                value = txn.get(f"{ch}/{param}")
            group.plan.replies.append((address, [value]))
            return
        if param in ("mute", "solo"):
            on = values[0] if isinstance(values[0], bool) else int(number(address, values)) != 0
            txn.set(f"{ch}/{param}", [on])
            return
        gain_off = param == "gain" and values[0] == -math.inf  # as /ch/N/db takes it
        x = -math.inf if gain_off else number(address, values)
        if param == "gain":
            key, arg = f"{ch}/db", (-math.inf if x < ARDOUR_OFF_DB else x)
        elif not 0.0 <= x <= 1.0:
            raise ParameterError(f"{address} takes 0..1, got {x:g}")
        elif param == "fader":
            key, arg = f"{ch}/fader", x
        else:
            key, arg = f"{ch}/pan", 1.0 - 2.0 * x
        try:
            txn.set(key, [arg])
        except ParameterError as exc:
            raise ParameterError(str(exc).replace(key, address)) from None


def _db(value: float) -> float:
    """A gain in dB as Ardour's feedback carries it: -200 for off."""
    return ARDOUR_FEEDBACK_OFF_DB if value == -math.inf else float(value)


def ardour_feedback(replies: Sequence[Reply]) -> list[Reply]:
    """Feedback in Ardour's dialect, as its surface sends it: every value a float, the
    strip number first: ``/strip/fader``, ``/strip/gain`` (dB, -200 for off),
    ``/strip/mute``, ``/strip/solo`` (1.0 or 0.0), ``/strip/pan_stereo_position``,
    ``/strip/name`` (a string); the master as ``/master/fader``, ``/master/gain`` (dB)
    and ``/master/mute``; the transport as ``/transport_play`` and ``/transport_stop``
    (1.0 or 0.0). Other values have no Ardour address and are left out. ``replies``
    address channels by index."""
    out: list[Reply] = []
    for address, args in replies:
        if address.startswith("/ch/"):
            _, _, index, param = address.split("/", 3)
            ssid = int(index)
            if param in ("fader", "mute", "solo"):
                out.append((f"/strip/{param}", [ssid, float(args[0])]))
            elif param == "db":
                out.append(("/strip/gain", [ssid, _db(args[0])]))
            elif param == "pan":
                out.append(("/strip/pan_stereo_position", [ssid, (1.0 - float(args[0])) / 2.0]))
        elif address == "/channels":
            out += [("/strip/name", [i, name]) for i, name in enumerate(args, 1)]
        elif address in ("/master/fader", "/master/mute"):
            out.append((address, [float(args[0])]))
        elif address == "/master/db":
            out.append(("/master/gain", [_db(args[0])]))
        elif address == "/transport/playing":
            playing = float(args[0])
            out += [("/transport_play", [playing]), ("/transport_stop", [1.0 - playing])]
    return out
