"""An in-process OSC host: the real registry, mixer and transport, no sockets or devices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Play, SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.daemon.osc import OscControl, OscServer
from stemdeck.daemon.transport import TransportControl

NAMES = ("drums", "bass", "vocals", "other")
SR = 8000
BLOCK = 64


@dataclass
class FakeHost:
    """What :class:`OscControl` drives, with every side effect recorded."""

    registry: Registry = field(default_factory=lambda: Registry(NAMES))
    engine: Mixer = field(default_factory=lambda: Mixer(max_channels=len(NAMES)))
    calls: list[tuple[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transport = TransportControl(self.engine)
        self.engine.prepare(SR, BLOCK)
        rng = np.random.default_rng(0)
        channels = rng.uniform(-0.1, 0.1, (len(NAMES), 2, SR * 4)).astype(np.float32)
        self.engine.post(SetTrack(Track(channels, SR, NAMES)))
        self.engine.post(Play())
        self.block()

    def block(self) -> None:
        """One audio block: the engine takes what was posted."""
        self.engine.process(np.zeros((BLOCK, 2), np.float32))

    def post(self, command: object) -> bool:
        return self.engine.post(command)

    def load_track(self, path: str) -> None:
        if path.startswith("/bad"):
            raise ParameterError(f"refused {path!r}: no such file")
        self.calls.append(("load", path))

    def save_scene(self, name: str) -> None:
        self.calls.append(("save", name))

    def recall_scene(self, name: str, fade: float) -> None:
        self.calls.append(("recall", (name, fade)))

    def status(self) -> str:
        return "status line"

    def midi_learn(self, address: str) -> None:
        self.calls.append(("learn", address))

    def track_info(self) -> tuple[str, str, float]:
        return "song", "ready", 1.0

    def library_tracks(self) -> list[str]:
        return ["/music/song.wav", "/music/other.flac"]

    def scene_names(self) -> list[str]:
        return ["acapella", "instrumental", "unity"]

    def engine_state(self) -> tuple:
        """What the audio thread holds, after one more block."""
        self.block()
        m = self.engine
        return (
            tuple(m._gain),
            tuple(m._mute),
            tuple(m._solo),
            tuple(m._pan),
            m._master_state,
            m.loop,
        )

    def registry_as_engine(self) -> tuple:
        """The registry's state in the engine's terms (must equal :meth:`engine_state`)."""
        r = self.registry
        return (
            tuple(s.gain for s in r.strips),
            tuple(s.mute for s in r.strips),
            tuple(s.solo for s in r.strips),
            tuple(s.pan for s in r.strips),
            (r.master.gain, r.master.mute),
        )


def make_server(**kwargs: object) -> tuple[FakeHost, OscServer]:
    host = FakeHost()
    server = OscServer(OscControl(host, **kwargs), port=0)
    return host, server
