"""Who gets feedback: the subscribers of ``/subscribe`` and the fixed targets of
``serve --feedback`` (``docs/osc.md``).

A subscriber gets feedback for the subscription time unless it renews, or for the
seconds it asks for (0: until ``/unsubscribe``), within the per-host and total caps;
a fixed target never expires and sits outside the caps. :class:`Subscriptions` is
thread-safe: the OSC thread adds and removes, the feedback thread takes the targets.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from stemdeck.core.errors import ParameterError

from . import FORMS
from .args import own_port
from .limits import SUBSCRIBERS_PER_HOST, SUBSCRIBERS_TOTAL, Refused, Sender

__all__ = ["FORMS", "SUBSCRIPTION_SECONDS", "Subscriber", "Subscriptions", "subscribe_args"]

SUBSCRIPTION_SECONDS = 10.0  # feedback goes to a subscriber this long unless it renews


@dataclass
class Subscriber:
    address: Sender
    expires: float  # time.monotonic(); math.inf: until /unsubscribe
    form: str = "names"  # feedback addresses by channel name or index, or a DAW's (FORMS)
    fresh: bool = True  # the full state is still to be sent
    fixed: bool = False  # serve --feedback: never expires, outside the per-host caps


def subscribe_args(
    args: list[Any], sender: Sender, default_form: str
) -> tuple[int, str, int | float | None]:
    """``/subscribe [i port] [s form] [seconds]``: (port, form, seconds or None for the
    subscription time).

    Raises
    ------
    ParameterError
        An argument of the wrong kind or range, or too many.
    """
    port, form = sender[1], default_form
    seconds: int | float | None = None
    rest = list(args)
    if rest and not isinstance(rest[0], str):
        port = own_port("/subscribe", rest.pop(0), sender)
    if rest and isinstance(rest[0], str):
        if rest[0] not in FORMS:
            raise ParameterError(
                "/subscribe takes [port] ['names', 'index', 'reaper' or 'ardour'] [seconds], "
                f"got {rest[0]!r}"
            )
        form = rest.pop(0)
    if rest:
        seconds = rest.pop(0)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < math.inf
        ):
            raise ParameterError(
                f"/subscribe seconds must be a number >= 0 (0: until /unsubscribe), got {seconds!r}"
            )
    if rest:
        raise ParameterError(f"/subscribe takes [port] [form] [seconds], got {len(args)} arguments")
    return port, form, seconds


class Subscriptions:
    """The feedback targets, under one lock.

    Parameters
    ----------
    seconds : float
        How long feedback goes to a subscriber that does not renew.
    """

    def __init__(self, seconds: float = SUBSCRIPTION_SECONDS) -> None:
        self.seconds = seconds
        self._subscribers: dict[Sender, Subscriber] = {}
        self._lock = threading.Lock()

    def count(self) -> int:
        """Subscribers now (some may have expired since the last feedback round)."""
        with self._lock:
            return len(self._subscribers)

    def senders(self) -> list[Sender]:
        """Who is subscribed now, in the order they first subscribed."""
        with self._lock:
            return list(self._subscribers)

    def add_fixed(self, address: Sender, form: str) -> None:
        """Feedback to ``address`` until the daemon stops, outside the caps."""
        with self._lock:
            self._subscribers[address] = Subscriber(address, math.inf, form, fixed=True)

    def remove(self, address: Sender) -> None:
        """Stop feedback to ``address`` (nothing if it has none)."""
        with self._lock:
            self._subscribers.pop(address, None)

    def check_room(self, key: Sender) -> bool:
        """Whether ``key`` would be a new subscriber (True) or a renewal (False).

        Raises
        ------
        Refused
            New, and its host or the daemon has no room for more.
        """
        with self._lock:
            if key in self._subscribers:
                return False
            host = key[0]
            from_host = sum(1 for k, s in self._subscribers.items() if k[0] == host and not s.fixed)
            if from_host >= SUBSCRIBERS_PER_HOST:
                raise Refused(
                    f"{from_host} subscribers from {host} already; "
                    f"at most {SUBSCRIBERS_PER_HOST} per host"
                )
            if sum(not s.fixed for s in self._subscribers.values()) >= SUBSCRIBERS_TOTAL:
                raise Refused(f"{SUBSCRIBERS_TOTAL} subscribers already; no room for more")
            return True

    def add(self, key: Sender, form: str, seconds: float | None) -> None:
        """Feedback to ``key`` for ``seconds`` from now (None: the subscription time;
        0: until /unsubscribe); a fixed target keeps its lifetime.

        A new subscriber, a new form, and a ``/subscribe`` with 0 seconds get the full
        state first. A subscription until /unsubscribe is never renewed, so its repeat
        is a surface starting again (TouchOSC or Open Stage Control reloaded, a second
        page), whose widgets show their defaults until they are sent the state. A
        renewal with a lifetime gets only the changes."""
        with self._lock:
            old = self._subscribers.get(key)
            fresh = old is None or old.form != form or old.fresh or seconds == 0
            fixed = old is not None and old.fixed
            if fixed or seconds == 0:
                expires = math.inf
            else:
                expires = time.monotonic() + (self.seconds if seconds is None else seconds)
            self._subscribers[key] = Subscriber(key, expires, form, fresh, fixed)

    def targets(self, now: float) -> list[tuple[Sender, str, bool]]:
        """Drop the subscribers expired at ``now`` (``time.monotonic()``); for each
        other one, (address, address form, whether it needs the full state). The
        full state is then taken as sent."""
        with self._lock:
            for key in [k for k, s in self._subscribers.items() if s.expires < now]:
                del self._subscribers[key]
            targets = [(s.address, s.form, s.fresh) for s in self._subscribers.values()]
            for s in self._subscribers.values():
                s.fresh = False
        return targets
