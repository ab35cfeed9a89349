"""OSC control: UDP datagrams in, validated engine commands out, replies to the sender.

Transport is kept apart from dispatch: tests drive dispatch directly and the
server over real UDP.

Modules
-------
wire
    Strict OSC 1.0 decoding and encoding: ``decode``, ``encode_message``,
    ``encode_bundle``, ``Message``, ``Bundle``, ``OscDecodeError``.
limits
    The limits a client lives within, ``Reply`` and ``Sender``, ``reply_size``,
    ``TokenBucket``, ``RateLimitedLog``, ``Refused``.
dispatch
    :class:`OscControl`, the address space (a table of handlers: ``map``,
    ``map_prefix``, ``Handler``, ``Group``), its counters (``Counters``), replies
    that come after their request was handled (``LateReply``, ``LateDeliver``:
    ``/track/load`` is answered when the load ends).
grid
    The beat grid's addresses: ``GridHandlers`` (``/track/bpm``, ``/track/grid``,
    ``/track/key``, the grid's edits), ``grid_args``, ``GRID_EDITS``, ``GRID_VALUE``,
    ``MAX_SHIFT_MS``.
tempo
    ``/transport/bpm``: ``TempoHandlers``, ``tempo_rate``, ``current_bpm``.
reaper
    REAPER's dialect (docs/daw.md): ``Reaper`` (its transport feedback followed, its
    track addresses on the channels), ``reaper_feedback``, ``channel_number``.
ardour
    Ardour's strip dialect: ``Ardour``, ``ardour_feedback``.
subscriptions
    Who gets feedback: ``Subscriptions`` (``/subscribe`` within the caps, the fixed
    targets of ``serve --feedback``), ``Subscriber``, ``SUBSCRIPTION_SECONDS``.
args
    The handlers' argument checks (``no_args``, ``number``, ``string``...).
server
    :class:`OscServer`: the UDP loop, the bundle scheduler, routes for senders that
    are not UDP addresses (WebSocket connections).
feedback
    :class:`Feedback` rounds to subscribers, and :class:`FeedbackFrame` to listeners.

``docs/osc.md`` describes the address space and every limit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dispatch import Counters, OscControl
    from .feedback import Feedback, FeedbackFrame
    from .limits import Reply, Sender
    from .server import OscServer

__all__ = [
    "FORMS",
    "Counters",
    "Feedback",
    "FeedbackFrame",
    "OscControl",
    "OscServer",
    "Reply",
    "Sender",
]

#: Feedback's address forms: channels by name or index, or REAPER's or Ardour's
#: dialect (``/subscribe`` and ``serve --feedback``, whose parser reads it here).
FORMS = ("names", "index", "reaper", "ardour")

#: Where each name above is defined: imported when first asked for, so that
#: importing this package alone (the CLI's parser reads ``FORMS``) does not import
#: the server, its dispatch table and the wire format, 25 ms of the daemon's way to
#: its first sound (``daemon/serve.py`` imports them once the audio runs; with MIDI,
#: ``daemon/midi.py`` imports most of them before).
_HOMES = {
    "Counters": "dispatch",
    "OscControl": "dispatch",
    "Feedback": "feedback",
    "FeedbackFrame": "feedback",
    "Reply": "limits",
    "Sender": "limits",
    "OscServer": "server",
}


if not TYPE_CHECKING:  # the type checker sees the imports above: a misspelt name is an error

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{home}", __name__), name)
        globals()[name] = value
        return value
