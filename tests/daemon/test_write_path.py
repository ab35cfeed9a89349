"""One write path: MIDI, a scene recall, a morph and a track load on a full engine queue.

Every writer stages a registry transaction and commits it through the engine's
``post``; the registry keeps only what the engine took. Each test fills a real
mixer's bounded queue (prepared, posted to until ``post`` says no, no block run),
sends one writer's change, and checks that the registry still holds the old values
exactly; then it lets the audio thread drain the queue and checks that the registry
and the mixer's strip and master targets agree exactly. With room in the queue the
same writer changes both.

The mixer's targets are read as ``tests/osc_host.py`` reads them
(:meth:`FakeHost.engine_state`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import mido
import numpy as np
import pytest
from osc_host import NAMES, FakeHost
from registry_helpers import set_value

from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.control.midimap import load_midi_map
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, Play, SetTrack
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.daemon import loader_base
from stemdeck.daemon.loader import TrackLoader
from stemdeck.daemon.midi import MidiControl
from stemdeck.daemon.scenes import SceneStore

SCENE = '[channels."drums"]\ngain = 0.25\npan = 0.5\n[master]\ngain = 0.5\n'


@pytest.fixture
def host() -> FakeHost:
    """A playing mixer whose registry is off its defaults, engine and registry agreeing."""
    host = FakeHost()
    set_value(host.registry, "/ch/bass/fader", [0.5], host.post)
    set_value(host.registry, "/ch/vocals/pan", [-0.5], host.post)
    set_value(host.registry, "/master/fader", [0.6], host.post)
    agree(host)
    return host


def fill(host: FakeHost) -> int:
    """Post until the engine's queue refuses; returns the refusals counted so far."""
    posted = 0
    while host.engine.post(Play()):
        posted += 1
    assert posted > 0
    assert not host.engine.post(Play())  # full: the next post is refused too
    return host.engine.dropped


def agree(host: FakeHost) -> None:
    """Drain the queue (one audio block), then compare exactly, strip by strip and the master."""
    host.block()
    assert host.engine_state()[:8] == host.registry_as_engine()


def wait_for(
    condition: Callable[[], bool], timeout: float = 10.0, *, drain: FakeHost | None = None
) -> None:
    """Poll ``condition`` (running audio blocks on ``drain`` meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if drain is not None:
            drain.block()
        time.sleep(0.005)


def test_a_midi_fader_on_a_full_queue_changes_nothing(host: FakeHost) -> None:
    midi = MidiControl(host, load_midi_map("generic"), virtual="stemdeck-test")  # not started
    fader = mido.Message("control_change", channel=0, control=20, value=96)  # /ch/1/fader
    before = host.registry.snapshot()
    fill(host)
    midi._on_message(fader)
    assert host.registry.snapshot() == before
    assert (midi.received, midi.errors) == (1, 1)  # the status line's MIDI errors
    agree(host)

    midi._on_message(fader)  # room in the queue: the registry and the audio move
    assert host.registry.get("/ch/1/fader") == pytest.approx(96 / 127)
    assert (midi.received, midi.errors) == (2, 1)
    agree(host)
    assert host.engine_state()[0][0] != before["channels"]["drums"]["gain"]


def test_a_scene_recall_on_a_full_queue_answers_an_error(host: FakeHost, tmp_path: Path) -> None:
    store = SceneStore(host.registry, host.post, tmp_path)
    (tmp_path / "verse.toml").write_text(SCENE)
    before = host.registry.snapshot()
    fill(host)
    with pytest.raises(ParameterError, match=r"^engine queue full: scene not recalled; try again$"):
        store.recall("verse")
    assert host.registry.snapshot() == before
    agree(host)

    store.recall("verse")
    assert host.registry.get("/ch/1/gain") == 0.25
    assert host.registry.get("/ch/1/pan") == 0.5
    assert host.registry.get("/master/gain") == 0.5
    agree(host)


def test_a_refused_morph_step_is_retried(host: FakeHost, tmp_path: Path) -> None:
    store = SceneStore(host.registry, host.post, tmp_path)
    (tmp_path / "verse.toml").write_text(SCENE)
    before = host.registry.snapshot()
    dropped = fill(host)
    try:
        store.recall("verse", fade=0.1)
        # Steps are refused past the fade's end: the last frame keeps being retried.
        wait_for(lambda: host.engine.dropped >= dropped + 8)
        assert host.registry.snapshot() == before
        agree(host)  # drains the queue: the next step goes through
        wait_for(lambda: host.registry.get("/ch/1/gain") == 0.25, drain=host)
    finally:
        store.stop()
    assert host.registry.get("/master/gain") == 0.5
    agree(host)

    (tmp_path / "chorus.toml").write_text('[channels."bass"]\nmute = true\n')
    try:
        store.recall("chorus", fade=0.05)  # room in the queue: a morph to its end
        wait_for(lambda: host.registry.get("/ch/2/mute") == 1, drain=host)
    finally:
        store.stop()
    agree(host)


@pytest.fixture
def stem_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    stems = rng.uniform(-0.1, 0.1, (4, 2, 11025)).astype(np.float32)
    path = tmp_path / "song.stem.mp4"
    names = ("Kick", "Bass", "Keys", "Voice")
    write_stem_file(path, stems.sum(axis=0), stems, 44100, names=names, codec="alac")
    return path


def test_a_track_load_on_a_full_queue_is_reported(
    host: FakeHost, stem_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader_base, "POST_RETRY_S", 0.05)
    loader = TrackLoader(
        host.engine,
        host.registry,
        NAMES,
        spec=SeparationSpec(),
        cache=None,
        library=[tmp_path],
    )
    posted: list[Command] = []
    real_post = host.engine.post

    def post(command: Command) -> bool:
        ok = real_post(command)
        if ok:
            posted.append(command)
        return ok

    monkeypatch.setattr(host.engine, "post", post)
    before, track = host.registry.snapshot(), host.engine.track
    fill(host)
    posted.clear()
    loader.open(str(stem_file))
    assert loader.problem == "engine queue full: song not loaded; load it again"
    assert host.registry.snapshot() == before and host.registry.names == list(NAMES)
    assert posted == []
    agree(host)
    assert host.engine.track is track  # the old track plays on

    loader.open(str(stem_file))  # room in the queue: the track and the whole state, at once
    assert loader.problem is None and loader.track_name == "song"
    # Addressed by role, labelled by the file's own names.
    assert host.registry.names == ["drums", "bass", "other", "vocals"]
    assert loader.labels == ["Kick", "Bass", "Keys", "Voice"]
    (batch,) = posted
    assert isinstance(batch, Batch)
    assert [type(c).__name__ for c in batch.commands].count("StripTarget") == len(NAMES)
    assert isinstance(batch.commands[-1], SetTrack)
    agree(host)
    assert host.engine.track is not None and host.engine.track.names == (
        "drums",
        "bass",
        "other",
        "vocals",
    )
