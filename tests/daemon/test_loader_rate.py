"""The loader posts channels at their own rate: the mixer's read head converts it
as it reads, so a cache entry goes live as its memory map, with no resampled copy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import Batch, Command, SetTrack
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.daemon.loader import TrackLoader

NAMES = ("c1", "c2", "c3")


@dataclass
class RecordingEngine:
    """What the loader uses of the mixer: its rate, its strips, and ``post``."""

    sr: int = 48000
    max_channels: int = len(NAMES)
    posted: list[Command] = field(default_factory=list)

    def post(self, command: Command) -> bool:
        self.posted.append(command)
        return True

    def tracks(self) -> list[SetTrack]:
        out = []
        for command in self.posted:
            inner = command.commands if isinstance(command, Batch) else (command,)
            out += [c for c in inner if isinstance(c, SetTrack)]
        return out


def _loader(engine: RecordingEngine) -> TrackLoader:
    spec = SeparationSpec("components")
    return TrackLoader(engine, Registry(NAMES), NAMES, spec=spec, cache=None, library=[])


def test_a_cached_entry_goes_live_as_its_memory_map(tmp_path) -> None:
    path = tmp_path / "channels.f32"
    np.memmap(path, np.float32, "w+", shape=(3, 2, 44100)).flush()
    entry = np.memmap(path, np.float32, "r", shape=(3, 2, 44100))
    engine = RecordingEngine()
    loader = _loader(engine)
    assert loader._publish(entry, 44100, loader.generation)
    (command,) = engine.tracks()
    assert command.track.channels is entry  # no copy, no resampling
    assert command.track.sr == 44100
    assert command.same_audio
    loader.close()


def test_a_rate_the_read_head_does_not_take_is_resampled_to_the_engines() -> None:
    channels = np.zeros((3, 2, 4000), np.float32)
    engine = RecordingEngine()
    loader = _loader(engine)
    assert loader._publish(channels, 4000, loader.generation)  # below 8 kHz
    (command,) = engine.tracks()
    assert command.track.sr == 48000
    assert command.track.channels.shape == (3, 2, 48000)
    loader.close()
