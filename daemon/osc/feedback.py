"""Feedback: changes, meters and position to subscribers and listeners, 25 times a second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stemdeck.core.mixer.params import gain_to_db

from ..realtime import name_os_thread, raise_priority
from .limits import Reply
from .server import OscServer

__all__ = ["Feedback", "FeedbackFrame", "Listener"]


@dataclass(frozen=True)
class FeedbackFrame:
    """One feedback round, for listeners in other threads (the web server).

    ``state`` is every value (channels by index, no position), ``changes`` the part
    of it that changed since the last round; meters are dBFS (floor -120), one per
    channel then the master; ``beat`` is the play head's beat position on the grid
    (None: no grid).
    """

    state: list[Reply]
    changes: list[Reply]
    peak_db: list[float]
    rms_db: list[float]
    position: float
    names: list[str]
    status: str
    beat: float | None = None


Listener = Callable[[FeedbackFrame], None]


class Feedback:
    """Sends changes, meters and position to subscribers, about 25 times a second.

    A new subscriber (or one that changed its address form) first gets every
    current value; then all subscribers get what changed. Listeners
    (:meth:`add_listener`) get a :class:`FeedbackFrame` in rounds when any of
    them wants one.

    Parameters
    ----------
    server : OscServer
        Sends to the subscribers of its :class:`~stemdeck.daemon.osc.dispatch.OscControl`.
    rate_hz : float
        Rounds a second.
    extra : callable, optional
        More messages for every round (the daemon's ``/status``).
    """

    def __init__(
        self,
        server: OscServer,
        *,
        rate_hz: float = 25.0,
        extra: Callable[[], list[Reply]] | None = None,
    ) -> None:
        self.server = server
        self.period = 1.0 / rate_hz
        self.extra = extra
        self._last: dict[str, Any] = {}
        self._listeners: list[tuple[Listener, Callable[[], bool]]] = []
        self._lock = threading.Lock()  # the listeners
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-feedback", daemon=True)

    def add_listener(self, listener: Listener, wanted: Callable[[], bool] = lambda: True) -> None:
        """Call ``listener`` with every round's frame while any listener's ``wanted()``
        is true. Both are called in the feedback thread: they must not block."""
        with self._lock:
            self._listeners.append((listener, wanted))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        name_os_thread()
        if self.server.nice is not None:
            raise_priority(self.server.nice)  # it takes the GIL 25 times a second
        while not self._stop.wait(self.period):
            try:
                self.tick()
            except Exception as exc:  # feedback must never take the daemon down
                self.server.control.bad_log("feedback: %r", exc)

    def tick(self) -> None:
        """One round of feedback to every subscriber and listener."""
        control = self.server.control
        targets = control.feedback_targets(time.monotonic())
        meters = control.host.engine.read_meters()
        with self._lock:
            listeners = list(self._listeners)
        wanted = any(want() for _, want in listeners)
        if not targets and not wanted:
            return
        state = [r for r in control.state("index") if r[0] != "/transport/position"]
        changes = self.changes(state)
        names = list(control.host.registry.names)
        peak_db = [max(gain_to_db(float(p)), -120.0) for p in meters.peak]
        position = float(meters.position)
        tail: list[Reply] = [
            ("/meter", peak_db),
            ("/transport/position", [position]),
        ]
        beat = control.host.beats.beat(position)
        if beat is not None:  # at the position's rate, while there is a grid
            tail.append(("/transport/beat", [beat]))
        if self.extra is not None:
            tail += self.extra()
        if wanted:
            frame = FeedbackFrame(
                state=state,
                changes=changes,
                peak_db=peak_db,
                rms_db=[max(gain_to_db(float(r)), -120.0) for r in meters.rms],
                position=position,
                names=names,
                status=next((a[0] for k, a in tail if k == "/status"), ""),
                beat=beat,
            )
            for listener, _ in listeners:
                listener(frame)
        for target, form, fresh in targets:
            for address, args in (state if fresh else changes) + tail:
                self.server.send(target, control.form(address, form, names), args)

    def changes(self, state: list[Reply]) -> list[Reply]:
        """Values that changed since the last call (all of them the first time)."""
        out = []
        for address, args in state:
            if self._last.get(address) != args:
                self._last[address] = args
                out.append((address, args))
        return out
