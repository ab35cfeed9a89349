"""What a hostile or broken OSC client may cost: the limits, the token buckets, the log.

Limits keep a client from hurting the set (``docs/osc.md``): messages per
datagram, transport commands per bundle, the reply bytes per request byte,
``/state`` per sender, subscribers per host and in total, and the count and
horizon of scheduled bundles. A request a limit turns away raises
:class:`Refused`; bad input is logged at a bounded rate (:class:`RateLimitedLog`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any

from stemdeck.core.errors import ParameterError

from .wire import message_size

__all__ = [
    "ERROR_BUDGET",
    "HORIZON_SECONDS",
    "HOST_BURST",
    "HOST_PER_SECOND",
    "LOG_LINES",
    "LOG_WINDOW",
    "MAX_DATAGRAM",
    "MAX_MESSAGES",
    "MAX_PENDING",
    "MAX_PENDING_PER_HOST",
    "MAX_TRANSPORT_COMMANDS",
    "REPLY_BYTES_BASE",
    "REPLY_BYTES_PER_BYTE",
    "STATE_BURST",
    "STATE_PER_SECOND",
    "STATUS_BURST",
    "STATUS_PER_SECOND",
    "SUBSCRIBERS_PER_HOST",
    "SUBSCRIBERS_TOTAL",
    "RateLimitedLog",
    "Refused",
    "Reply",
    "Sender",
    "TokenBucket",
    "reply_size",
]

MAX_MESSAGES = 128  # messages in one datagram
MAX_DATAGRAM = 65507  # bytes a UDP datagram over IPv4 holds: a larger reply is an /error
ERROR_BUDGET = 1024  # bytes of an /error that stands for a reply that could not be sent
MAX_TRANSPORT_COMMANDS = 16  # transport commands in one bundle
REPLY_BYTES_PER_BYTE = 4  # replies to a datagram: at most 4 bytes per byte received...
REPLY_BYTES_BASE = 96  # ...plus this much, so an /error with its reason always fits
MAX_PENDING = 256  # scheduled bundles waiting, in all
MAX_PENDING_PER_HOST = 64
HORIZON_SECONDS = 60.0  # how far ahead a bundle may be scheduled
SUBSCRIBERS_PER_HOST = 8
SUBSCRIBERS_TOTAL = 64
STATE_BURST, STATE_PER_SECOND = 4, 2.0  # /state and new subscriptions, per sender
STATUS_BURST, STATUS_PER_SECOND = 20, 10.0  # /status, per sender
HOST_BURST, HOST_PER_SECOND = 32, 16.0  # the same, per host (all its ports)
LOG_LINES, LOG_WINDOW = 5, 10.0  # bad-input log lines per window

Reply = tuple[str, Sequence[Any]]
"""One OSC message out: address and arguments."""
Sender = tuple[str, int]
"""Who sent a request: (IP address, UDP port), or ``("ws:<ip>", <tcp port>)`` for a
WebSocket connection (``daemon/web/websocket.py``)."""


def reply_size(address: str, args: Sequence[Any]) -> int:
    """Bytes of the encoded message, without encoding it: exactly what
    :func:`~stemdeck.daemon.osc.wire.encode_message` sends, a string's replaced
    characters included."""
    return message_size(address, args)


class Refused(ParameterError):
    """A well-formed request turned away by a limit (counted as refused)."""


class TokenBucket:
    """``burst`` requests at once, then ``rate`` a second, per key (bounded memory)."""

    def __init__(self, burst: float, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self._tokens: dict[Hashable, tuple[float, float]] = {}

    def available(self, key: Hashable, now: float) -> bool:
        tokens, then = self._tokens.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate) >= 1.0

    def take(self, key: Hashable, now: float) -> None:
        tokens, then = self._tokens.get(key, (self.burst, now))
        if len(self._tokens) > 4096:  # forget full buckets; a full one is the default
            self._tokens = {
                k: v
                for k, v in self._tokens.items()
                if v[0] + (now - v[1]) * self.rate < self.burst
            }
        self._tokens[key] = (min(self.burst, tokens + (now - then) * self.rate) - 1.0, now)


class RateLimitedLog:
    """At most ``lines`` log lines per ``window`` seconds to ``logger``; then one line
    (``more``, with the count) says how many were left out. A flood of bad datagrams
    cannot fill a disk."""

    def __init__(
        self,
        logger: logging.Logger,
        lines: int = LOG_LINES,
        window: float = LOG_WINDOW,
        more: str = "OSC: %d more bad messages not logged",
    ) -> None:
        self.log = logger
        self.lines, self.window = lines, window
        self.more = more
        self._start = -float("inf")
        self._count = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def __call__(self, text: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.window:
                if self._dropped:
                    self.log.info(self.more, self._dropped)
                self._start, self._count, self._dropped = now, 0, 0
            if self._count >= self.lines:
                self._dropped += 1
                return
            self._count += 1
        self.log.info(text, *args)
