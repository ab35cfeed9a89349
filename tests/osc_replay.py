"""Replaying OSC as other programs send it: messages with exact type tags, and a
record of the commands a :class:`~osc_host.FakeHost`'s engine was posted."""

from __future__ import annotations

import struct

from osc_host import FakeHost

from stemdeck.core.mixer.commands import Batch, Command, MasterTarget, StripTarget


def osc(address: str, tags: str = "", *args: object) -> bytes:
    """One message with exactly these type tags (``i``, ``f``, ``s``; ``T``, ``F``
    carry no value)."""

    def pad(raw: bytes) -> bytes:
        return raw + b"\0" * (4 - len(raw) % 4)

    values = iter(args)
    body = b""
    for tag in tags:
        if tag == "i":
            body += struct.pack(">i", next(values))
        elif tag == "f":
            body += struct.pack(">f", next(values))
        elif tag == "s":
            body += pad(str(next(values)).encode())
    assert next(values, None) is None
    return pad(address.encode()) + pad(("," + tags).encode()) + body


class Recorder:
    """The host's post, recording every command the engine is given (a bundle's
    commands one by one)."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.posted: list[Command] = []
        self._post = host.post
        host.post = self  # type: ignore[method-assign]

    def __call__(self, command: Command) -> bool:
        self.posted += list(command.commands) if isinstance(command, Batch) else [command]
        return self._post(command)

    def take(self) -> list[Command]:
        """The transport commands posted since the last call (the controls' targets
        are left out: the tests read the registry, which the engine matches)."""
        out: list[Command] = [
            c for c in self.posted if not isinstance(c, StripTarget | MasterTarget)
        ]
        self.posted = []
        return out
