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

from .dispatch import Counters, OscControl
from .feedback import Feedback, FeedbackFrame
from .limits import Reply, Sender
from .server import OscServer

__all__ = ["Counters", "Feedback", "FeedbackFrame", "OscControl", "OscServer", "Reply", "Sender"]
