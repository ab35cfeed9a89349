"""An in-process OSC host: the real registry, mixer and transport, no sockets or devices."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from stemdeck.core.beats.analysis import BeatAnalysis
from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.beats.store import BeatStore
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Command, Play, SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.daemon.echo_beats import EchoBeats
from stemdeck.daemon.loader import TrackLoader
from stemdeck.daemon.osc import OscControl, OscServer
from stemdeck.daemon.osc.subscriptions import SUBSCRIPTION_SECONDS
from stemdeck.daemon.osc.wire import Message, decode, encode_message
from stemdeck.daemon.pathnames import library_files
from stemdeck.daemon.quantize import Quantizer
from stemdeck.daemon.scenes import SceneStore
from stemdeck.daemon.serve import LIBRARY_LIST_MAX
from stemdeck.daemon.sync import SyncControl
from stemdeck.daemon.track_beats import TrackBeats
from stemdeck.daemon.track_source import LoadDone
from stemdeck.daemon.transport import TransportControl

NAMES = ("drums", "bass", "vocals", "other")
#: Where the tests' datagrams come from (a client's address; nothing listens there).
SENDER = ("127.0.0.1", 40000)
SR = 8000
BLOCK = 64


@dataclass
class FakeHost:
    """What :class:`OscControl` drives, with every side effect recorded."""

    registry: Registry = field(default_factory=lambda: Registry(NAMES))
    engine: Mixer = field(default_factory=lambda: Mixer(max_channels=len(NAMES)))
    calls: list[tuple[str, object]] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)  # none: no /channels/colors
    labels: list[str] = field(default_factory=list)  # none: /channels/labels gives the names
    sync: SyncControl = field(default_factory=SyncControl)  # no JACK client
    beats: TrackBeats = field(default_factory=lambda: TrackBeats(None))  # no grid yet
    scenes: SceneStore | None = None  # None: recalls are recorded in calls

    def __post_init__(self) -> None:
        self.quantize = Quantizer(self.engine, lambda: self.beats.grid())
        self.transport = TransportControl(
            self.engine,
            grid=lambda: self.beats.require().grid,
            quantize=lambda: self.quantize.mode,
        )
        self.echo_beats = EchoBeats(self.registry, self.beats, self.engine.post)
        self.beats.add_listener(self.echo_beats.grid_changed)
        self.engine.prepare(SR, BLOCK)
        rng = np.random.default_rng(0)
        channels = rng.uniform(-0.1, 0.1, (len(NAMES), 2, SR * 4)).astype(np.float32)
        self.engine.post(SetTrack(Track(channels, SR, NAMES)))
        self.engine.post(Play())
        self.block()

    def give_grid(
        self,
        grid: BeatGrid,
        *,
        store: BeatStore | None = None,
        clock: Callable[[], float] | None = None,
    ) -> TrackBeats:
        """Give the playing track ``grid`` (as its analysis found it), kept in
        ``store``; tap tempo reads ``clock``. Returns the new :attr:`beats`."""
        self.beats = TrackBeats(
            store,
            clock=clock or time.monotonic,
            analyze=lambda y, sr: BeatAnalysis(grid, 4.0),
        )
        self.echo_beats.beats = self.beats  # as the daemon's: the echo follows its grid
        self.beats.add_listener(self.echo_beats.grid_changed)
        track = self.engine.track
        assert track is not None
        self.beats.start(track.channels.sum(axis=0), SR, 1, "song").join()
        return self.beats

    def block(self) -> None:
        """One audio block: the engine takes what was posted."""
        self.engine.process(np.zeros((BLOCK, 2), np.float32))

    def post(self, command: Command) -> bool:
        return self.engine.post(command)

    def load_track(self, path: str, done: LoadDone) -> None:
        if path.startswith("/bad"):
            raise ParameterError(f"refused {path!r}: no such file")
        self.calls.append(("load", path))
        done(None)  # loaded at once

    def save_scene(self, name: str) -> None:
        self.calls.append(("save", name))

    def recall_scene(self, name: str, fade: float, extra: Sequence[Command] = ()) -> None:
        if self.scenes is not None:  # a real store (hot cues' scenes)
            self.scenes.recall(name, fade, extra=extra)
        else:
            self.calls.append(("recall", (name, fade)))

    def status(self) -> str:
        return "status line"

    def midi_learn(self, address: str, args: Sequence[Any] = ()) -> None:
        self.calls.append(("learn", (address, *args) if args else address))

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
        strips = [m.strip_state(i) for i in range(m.max_channels)]
        master = m.master_state()
        return (
            tuple(s.gain for s in strips),
            tuple(s.mute for s in strips),
            tuple(s.solo for s in strips),
            tuple(s.pan for s in strips),
            (master.gain, master.mute),
            (*(m.filter_state(i) for i in range(m.max_channels)), m.filter_state(None)),
            (*(m.echo_state(i) for i in range(m.max_channels)), m.echo_state(None)),
            (*(m.reverb_state(i) for i in range(m.max_channels)), m.reverb_state(None)),
            m.loop,
            m.rate,
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
            (*((s.filter, s.res) for s in r.strips), (r.master.filter, r.master.res)),
            (
                *((s.echo, float(s.echo_pre)) for s in r.strips),
                (r.echo.ms, r.echo.feedback, r.echo.filter, r.echo.level),
            ),
            (
                *((s.reverb,) for s in r.strips),
                (r.reverb.size, r.reverb.lowcut, r.reverb.level),
            ),
        )


@dataclass
class LibraryHost(FakeHost):
    """A :class:`FakeHost` whose track list and load check are the daemon's own, on a
    library folder ``root``: ``/track/load`` records the path the check resolved."""

    root: Path = Path("/nonexistent")
    track: str = "song"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.loader = TrackLoader(
            self.engine,
            self.registry,
            NAMES,
            spec=SeparationSpec(),
            cache=None,
            library=[self.root],
        )

    def library_tracks(self) -> list[str]:
        return library_files([self.root], LIBRARY_LIST_MAX)

    def load_track(self, path: str, done: LoadDone) -> None:
        resolved = self.loader.check(path)
        self.calls.append(("load", resolved))
        self.track = Path(resolved).stem
        done(None)

    def track_info(self) -> tuple[str, str, float]:
        return self.track, "ready", 1.0


LATIN1 = b"caf\xe9 live.wav"  # 'café live.wav' as an old disk or a zip wrote it


def latin1_library(root: Path) -> tuple[Path, str]:
    """A library folder with a real WAV named in Latin-1 and one named in UTF-8;
    returns the folder and the Latin-1 file's path as Python reads it."""
    library = (root / "library").resolve()
    library.mkdir()
    audio = np.zeros((4800, 2), np.float32)
    audio[::100] = 0.25
    raw = os.fsencode(library) + b"/" + LATIN1
    sf.write(raw, audio, 48000, format="WAV", subtype="FLOAT")  # bytes: soundfile takes them
    sf.write(library / "song.wav", audio, 48000, subtype="FLOAT")
    return library, os.fsdecode(raw)


def make_server(
    *,
    feedback_form: str = "names",
    subscription_seconds: float = SUBSCRIPTION_SECONDS,
    host: FakeHost | None = None,
) -> tuple[FakeHost, OscServer]:
    """A :class:`FakeHost` (or ``host``) and an OSC server on a free port (not started)."""
    host = FakeHost() if host is None else host
    control = OscControl(
        host, feedback_form=feedback_form, subscription_seconds=subscription_seconds
    )
    return host, OscServer(control, port=0)


#: The grid of :func:`probe_host`'s track: a beat every 0.5 s (4000 frames) from 0.3 s,
#: bars of 2 s.
PROBE_GRID = BeatGrid(120.0, 0.3, 4)


def probe_host(
    seconds: float = 8.0, *, grid: bool = True, store: BeatStore | None = None
) -> FakeHost:
    """A host playing a track whose strip 1 reads its own frame index (the output says
    where the head read) and strips 2-4 a constant 0.5, each strip on its own output
    pair; with :data:`PROBE_GRID` (kept in ``store``) unless ``grid`` is False."""
    host = FakeHost()
    n = int(seconds * SR)
    channels = np.full((len(NAMES), 2, n), 0.5, np.float32)
    channels[0] = np.arange(n, dtype=np.float32)
    host.engine.prepare(SR, BLOCK, outputs="channels")
    host.engine.post(SetTrack(Track(channels, SR, NAMES)))
    host.engine.post(Play())
    if grid:
        host.give_grid(PROBE_GRID, store=store)
    return host


def render(host: FakeHost, blocks: int) -> np.ndarray:
    """``blocks`` blocks of the host's engine: its output, every output pair."""
    m = host.engine
    out = np.zeros((blocks * BLOCK, m.out_channels), np.float32)
    for i in range(blocks):
        m.process(out[i * BLOCK : (i + 1) * BLOCK])
    return out


def m(address: str, *args: object) -> bytes:
    """One OSC message, encoded: ``m("/ch/1/mute", 1)``."""
    return encode_message(address, args)


def received(sock: socket.socket, until: str) -> list[tuple[str, list]]:
    """The messages ``sock`` receives, up to and with the first at ``until``
    (feedback and replies are plain messages, never bundles)."""
    out: list[tuple[str, list]] = []
    while True:
        msg = decode(sock.recvfrom(65536)[0])
        assert isinstance(msg, Message), msg
        out.append((msg.address, list(msg.args)))
        if msg.address == until:
            return out
