"""A MIDI input's thread (daemon/midi.py ``_Input``): it takes rtmidi's queue, never
rtmidi's thread; what it cannot decode is skipped and the rest arrives in order."""

from __future__ import annotations

import threading
from typing import Any

from daemon_helpers import poll

from stemdeck.daemon.midi import _Input


class Queue:
    """What the input uses of an ``rtmidi.MidiIn``: its queue, closed and deleted."""

    def __init__(self, events: list[list[int]]) -> None:
        self.events = [(e, 0.0) for e in events]
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def get_message(self) -> tuple[list[int], float] | None:
        with self.lock:
            return self.events.pop(0) if self.events else None

    def close_port(self) -> None:
        self.calls.append("close_port")

    def delete(self) -> None:
        self.calls.append("delete")


def test_an_input_skips_what_it_cannot_decode_and_delivers_the_rest_in_order() -> None:
    rt = Queue([[0xB0, 7, 1], [], [0xF8], [0x90, 200], [0xB0, 7, 2]])
    got: list[Any] = []
    port = _Input(rt, "pads", got.append, owned=True)
    try:
        poll(lambda: list(got), lambda g: len(g) == 3, "the three messages", timeout=10)
        assert not rt.events
    finally:
        port.close()
    assert [m.bytes() for m in got] == [[0xB0, 7, 1], [0xF8], [0xB0, 7, 2]]
    assert not port._thread.is_alive()
    assert rt.calls == ["close_port", "delete"]  # the thread stopped first: no read after


def test_a_controllers_input_leaves_its_shared_client_to_the_controller() -> None:
    """The controller's client outlives an unplug: what rtmidi queued before its
    port closed is dropped, not acted on when the controller returns."""
    rt = Queue([])
    port = _Input(rt, "pads", print)
    port._stop.set()
    port._thread.join()
    rt.events = [([0x90, 36, 127], 0.0)]  # queued as the port closed, after its last look
    port.close()
    assert rt.calls == ["close_port"]
    assert rt.events == []
