"""Scenes: where they are read from, recall and morph agreeing on the end state, and
a morph that moves only what its scene names and leaves what a hand moves."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_helpers import poll
from registry_helpers import commit, set_value

from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Batch, Command, MasterTarget, ReverbTarget, StripTarget
from stemdeck.core.mixer.params import fader_to_gain, gain_to_fader
from stemdeck.daemon.config import config_dir
from stemdeck.daemon.scenes import SceneStore

NAMES = ["drums", "bass", "vocals", "other"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SceneStore:
    monkeypatch.chdir(tmp_path)  # the daemon's working directory
    posted: list[Command] = []

    def post(command: Command) -> bool:
        posted.append(command)
        return True

    return SceneStore(Registry(NAMES), post, tmp_path / "scenes")


def test_save_then_recall(store: SceneStore) -> None:
    set_value(store.registry, "/ch/bass/fader", [0.5])
    set_value(store.registry, "/ch/vocals/mute", [1])
    path = store.save("verse")
    assert path == store.folder / "verse.toml"
    set_value(store.registry, "/ch/*/fader", [0.75])
    set_value(store.registry, "/ch/*/mute", [0])
    store.recall("verse")
    assert store.registry.get("/ch/2/fader") == pytest.approx(0.5)
    assert store.registry.get("/ch/3/mute") == 1


def test_names_never_read_the_working_directory(store: SceneStore, tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text("[master]\ngain = 0.1\n")
    (tmp_path / "unity.toml").write_text("[master]\ngain = 0.1\n")
    with pytest.raises(ParameterError, match=r"no scene 'x\.toml'"):
        store.recall("x.toml")
    store.recall("unity")  # the shipped scene, not ./unity.toml
    assert store.registry.get("/master/gain") == 1.0
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ParameterError, match="scene name"):
            store.recall(bad)


def test_a_fifo_is_refused_without_blocking(store: SceneStore) -> None:
    store.folder.mkdir(parents=True)
    os.mkfifo(store.folder / "trap.toml")
    done: list[BaseException] = []

    def recall() -> None:
        try:
            store.recall("trap")
        except ParameterError as exc:
            done.append(exc)

    t = threading.Thread(target=recall, daemon=True)
    t.start()
    t.join(timeout=5)
    if t.is_alive():  # unblock the reader so the test process can end
        fd = os.open(store.folder / "trap.toml", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("recall blocked on a FIFO")
    assert len(done) == 1 and "not a regular file" in str(done[0])


def test_saved_scene_wins_over_shipped(store: SceneStore) -> None:
    set_value(store.registry, "/ch/drums/fader", [0.25])
    store.save("unity")
    set_value(store.registry, "/ch/drums/fader", [0.75])
    store.recall("unity")
    assert store.registry.get("/ch/1/fader") == pytest.approx(0.25)


@pytest.mark.parametrize("fade", [0.0, 0.15])
def test_values_a_scene_does_not_name_keep_their_current_value(
    store: SceneStore, fade: float
) -> None:
    store.folder.mkdir(parents=True)
    (store.folder / "drums-only.toml").write_text('[channels."drums"]\ngain = 0.5\n')
    set_value(store.registry, "/ch/bass/fader", [0.5])
    set_value(store.registry, "/ch/vocals/pan", [-0.5])
    set_value(store.registry, "/master/fader", [0.6])
    before = store.registry.snapshot()
    store.recall("drums-only", fade)
    if fade:
        time.sleep(0.1)  # mid-morph: the untouched values do not move either
        assert store.registry.snapshot()["channels"]["bass"] == before["channels"]["bass"]
        deadline = time.monotonic() + 60  # until the morph has ended, however busy the machine
        while store.registry.snapshot()["channels"]["drums"]["gain"] != 0.5:
            assert time.monotonic() < deadline, "the morph never ended"
            time.sleep(0.01)
    after = store.registry.snapshot()
    assert after["channels"]["drums"]["gain"] == 0.5
    for name in ("bass", "vocals", "other"):
        assert after["channels"][name] == before["channels"][name]
    assert after["master"] == before["master"]


def test_a_bad_scene_changes_nothing(store: SceneStore) -> None:
    store.folder.mkdir(parents=True)
    (store.folder / "bad.toml").write_text('[channels."bass"]\ngain = "loud"\n')
    before = store.registry.snapshot()
    for fade in (0.0, 1.0):
        with pytest.raises(ParameterError, match="not a number"):
            store.recall("bad", fade)
    assert store.registry.snapshot() == before


def test_scenes_and_learned_maps_share_one_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platformdirs

    monkeypatch.setenv("STEMDECK_CONFIG", str(tmp_path / "cfg"))
    assert SceneStore(Registry(NAMES), lambda c: True).folder == tmp_path / "cfg" / "scenes"
    assert config_dir("midi") == tmp_path / "cfg" / "midi"
    monkeypatch.delenv("STEMDECK_CONFIG")
    home = Path(platformdirs.user_config_dir("stemdeck"))
    assert SceneStore(Registry(NAMES), lambda c: True).folder == home / "scenes"


class FakeClock:
    """The morph's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Morphing:
    """A scene store on a fake clock, with what it posted to the engine."""

    store: SceneStore
    clock: FakeClock
    posted: list[Command]

    def scene(self, name: str, text: str) -> None:
        self.store.folder.mkdir(parents=True, exist_ok=True)
        (self.store.folder / f"{name}.toml").write_text(text)

    def at(self, t: float, key: str, value: float) -> None:
        """Move the clock to ``t`` seconds after the recall; wait for the step there."""
        self.clock.now = 100.0 + t
        poll(lambda: self.store.registry.get(key), lambda v: v == value, f"{key} at {t} s")

    def commands(self) -> list[Command]:
        """The morph's engine commands so far (a Batch unpacked), then forgotten."""
        out = [c for p in self.posted for c in (p.commands if isinstance(p, Batch) else [p])]
        self.posted.clear()
        return out


@pytest.fixture
def morphing(tmp_path: Path) -> Iterator[Morphing]:
    posted: list[Command] = []

    def post(command: Command) -> bool:
        posted.append(command)
        return True

    clock = FakeClock()
    m = Morphing(SceneStore(Registry(NAMES), post, tmp_path / "scenes", clock=clock), clock, posted)
    yield m
    m.store.stop()


def fader_at(start: float, end: float, x: float) -> float:
    """The gain a morph's level has a fraction ``x`` of the way (along the fader)."""
    fa, fb = gain_to_fader(start), gain_to_fader(end)
    return fader_to_gain(fa + (fb - fa) * x)


def ended(store: SceneStore) -> None:
    poll(lambda: store.morphing, lambda busy: not busy, "the end of the morph")


def test_a_morph_moves_only_what_the_scene_names_and_never_a_hand(morphing: Morphing) -> None:
    """The reproduction of #21 item 5: a scene naming only the master's gain, a 5 s
    morph, three hand moves on other channels 1 s in; they stay, half a second later
    and after the morph, and the master reaches the scene's gain."""
    reg = morphing.store.registry
    morphing.scene("master-half", "[master]\ngain = 0.5\n")
    morphing.store.recall("master-half", 5.0)
    morphing.at(1.0, "/master/gain", fader_at(1.0, 0.5, 0.2))
    set_value(reg, "/ch/2/mute", [1])
    set_value(reg, "/ch/3/fader", [0.2])
    set_value(reg, "/ch/4/solo", [1])
    hands = {"/ch/2/mute": 1, "/ch/3/fader": pytest.approx(0.2), "/ch/4/solo": 1}
    morphing.at(1.5, "/master/gain", fader_at(1.0, 0.5, 0.3))
    assert {key: reg.get(key) for key in hands} == hands
    morphing.at(5.0, "/master/gain", 0.5)
    ended(morphing.store)
    assert {key: reg.get(key) for key in hands} == hands
    assert reg.snapshot()["channels"]["drums"] == {
        "gain": 1.0,
        "mute": False,
        "solo": False,
        "pan": 0.0,
        "filter": 0.0,
        "res": 0.0,
        "echo": 0.0,
        "echo_pre": False,
        "reverb": 0.0,
    }
    assert reg.get("/master/mute") == 0
    # The engine was sent the master's values only: no channel was ever written.
    commands = morphing.commands()
    assert commands and all(isinstance(c, MasterTarget) and not c.mute for c in commands)


def test_a_hand_on_a_value_the_scene_names_takes_it_from_the_morph(morphing: Morphing) -> None:
    """The hand's value stays (a switch the scene would flip included, even set to
    the value it had); the rest of the scene completes."""
    reg = morphing.store.registry
    morphing.scene(
        "verse",
        '[channels."drums"]\ngain = 0.25\npan = 0.5\n'
        '[channels."bass"]\nmute = true\ngain = 0.5\n[master]\ngain = 0.5\n',
    )
    morphing.store.recall("verse", 2.0)
    morphing.at(0.5, "/ch/1/gain", fader_at(1.0, 0.25, 0.25))
    set_value(reg, "/ch/drums/fader", [0.6])  # a level the scene names
    set_value(reg, "/ch/bass/mute", [0])  # a switch it would flip: kept as it is
    morphing.at(1.0, "/ch/1/pan", 0.25)
    assert reg.get("/ch/1/fader") == pytest.approx(0.6)
    morphing.at(2.0, "/master/gain", 0.5)
    ended(morphing.store)
    after = reg.snapshot()["channels"]
    rest = {"filter": 0.0, "res": 0.0, "echo": 0.0, "echo_pre": False, "reverb": 0.0}
    assert after["drums"] == {
        "gain": fader_to_gain(0.6),
        "mute": False,
        "solo": False,
        "pan": 0.5,
        **rest,
    }
    assert after["bass"] == {"gain": 0.5, "mute": False, "solo": False, "pan": 0.0, **rest}
    assert (
        after["vocals"]
        == after["other"]
        == {
            "gain": 1.0,
            "mute": False,
            "solo": False,
            "pan": 0.0,
            "filter": 0.0,
            "res": 0.0,
            "echo": 0.0,
            "echo_pre": False,
            "reverb": 0.0,
        }
    )


def test_a_second_recall_stops_the_first_morph(morphing: Morphing) -> None:
    reg = morphing.store.registry
    morphing.scene("first", '[channels."drums"]\npan = -1.0\n[master]\ngain = 0.5\n')
    morphing.scene("second", '[channels."bass"]\npan = 1.0\n')
    morphing.store.recall("first", 5.0)
    morphing.at(1.0, "/master/gain", fader_at(1.0, 0.5, 0.2))
    assert reg.get("/ch/1/pan") == pytest.approx(-0.2)
    morphing.commands()
    morphing.store.recall("second", 2.0)  # its course starts at this clock's time
    morphing.at(3.0, "/ch/2/pan", 1.0)
    ended(morphing.store)
    # The first morph wrote nothing after the second recall: its values stay halfway.
    assert reg.get("/master/gain") == fader_at(1.0, 0.5, 0.2)
    assert reg.get("/ch/1/pan") == pytest.approx(-0.2)
    commands = morphing.commands()
    assert commands and all(isinstance(c, StripTarget) and c.index == 1 for c in commands)


def test_a_new_track_with_other_channels_takes_them_from_the_morph(morphing: Morphing) -> None:
    """Channel indices mean other stems after a track change: the morph leaves the
    channels to the new track and glides the master on."""
    reg = morphing.store.registry
    morphing.scene("verse", '[channels."bass"]\npan = 1.0\n[master]\ngain = 0.5\n')
    morphing.store.recall("verse", 2.0)
    morphing.at(1.0, "/ch/2/pan", 0.5)
    commit(reg, lambda txn: txn.set_names(["piano", "voice"]))
    morphing.at(2.0, "/master/gain", 0.5)
    ended(morphing.store)
    assert reg.get("/ch/2/pan") == 0.5


def test_scenes_save_recall_and_morph_the_filters(morphing: Morphing) -> None:
    """A saved scene holds every DJ filter and resonance (channels and master); a
    recall restores them at once; a morph glides them linearly."""
    reg = morphing.store.registry
    set_value(reg, "/ch/bass/filter", [-0.5])
    set_value(reg, "/ch/bass/filter/res", [0.5])
    set_value(reg, "/master/filter", [0.25])
    path = morphing.store.save("dub")
    text = path.read_text()
    assert "filter = -0.5\nres = 0.5\n" in text and "filter = 0.25\nres = 0.0\n" in text
    set_value(reg, "/ch/bass/filter", [0.0])
    set_value(reg, "/master/filter", [0.0])
    morphing.store.recall("dub")
    assert reg.get("/ch/2/filter") == -0.5 and reg.get("/ch/2/filter/res") == 0.5
    assert reg.get("/master/filter") == 0.25
    morphing.commands()
    set_value(reg, "/ch/bass/filter", [0.5])
    morphing.store.recall("dub", 2.0)
    morphing.at(1.0, "/ch/2/filter", 0.0)  # halfway from 0.5 to -0.5
    morphing.at(2.0, "/ch/2/filter", -0.5)
    ended(morphing.store)
    assert any(isinstance(c, StripTarget) and c.filter == 0.0 for c in morphing.commands())


def test_scenes_save_recall_and_morph_the_echo(morphing: Morphing) -> None:
    """A saved scene holds every echo send (and its tap) and the echo bus; a recall
    restores them; a morph glides the sends and the bus, and flips a tap at the end."""
    reg = morphing.store.registry
    set_value(reg, "/ch/vocals/echo", [0.5])
    set_value(reg, "/ch/vocals/echo/pre", [1])
    set_value(reg, "/fx/echo/ms", [250.0])
    set_value(reg, "/fx/echo/return", [0.75])
    text = morphing.store.save("throw").read_text()
    assert "echo = 0.5\necho_pre = true\n" in text
    assert "[echo]\nms = 250.0\nbeats = 0.0\nfeedback = 0.5\nfilter = 0.0\nlevel = 0.75\n" in text
    set_value(reg, "/ch/vocals/echo", [0.0])
    set_value(reg, "/ch/vocals/echo/pre", [0])
    set_value(reg, "/fx/echo/ms", [450.0])
    morphing.store.recall("throw", 2.0)
    morphing.at(1.0, "/fx/echo/ms", 350.0)
    assert reg.get("/ch/3/echo") == 0.25 and reg.get("/ch/3/echo/pre") == 0
    morphing.at(2.0, "/ch/3/echo/pre", 1)
    ended(morphing.store)
    assert reg.snapshot()["echo"] == {
        "ms": 250.0,
        "beats": 0.0,
        "feedback": 0.5,
        "filter": 0.0,
        "level": 0.75,
    }
    assert reg.get("/ch/3/echo") == 0.5


def test_scenes_save_recall_and_morph_the_reverb(morphing: Morphing) -> None:
    """A saved scene holds every reverb send and the reverb bus; a recall restores
    them; a morph glides the sends and the bus's size, low-cut and return."""
    reg = morphing.store.registry
    set_value(reg, "/ch/vocals/reverb", [0.5])
    set_value(reg, "/fx/reverb/size", [0.75])
    set_value(reg, "/fx/reverb/lowcut", [400.0])
    set_value(reg, "/fx/reverb/return", [0.5])
    text = morphing.store.save("hall").read_text()
    assert "echo_pre = false\nreverb = 0.5\n" in text
    assert "[reverb]\nsize = 0.75\nlowcut = 400.0\nlevel = 0.5\n" in text
    set_value(reg, "/ch/vocals/reverb", [0.0])
    set_value(reg, "/fx/reverb/size", [0.25])
    set_value(reg, "/fx/reverb/lowcut", [200.0])
    set_value(reg, "/fx/reverb/return", [1.0])
    morphing.store.recall("hall", 2.0)
    morphing.at(1.0, "/fx/reverb/lowcut", 300.0)
    assert reg.get("/ch/3/reverb") == 0.25 and reg.get("/fx/reverb/size") == 0.5
    assert reg.get("/fx/reverb/return") == 0.75
    morphing.at(2.0, "/fx/reverb/lowcut", 400.0)
    ended(morphing.store)
    assert reg.snapshot()["reverb"] == {"size": 0.75, "lowcut": 400.0, "level": 0.5}
    assert reg.get("/ch/3/reverb") == 0.5
    commands = morphing.commands()
    assert any(isinstance(c, ReverbTarget) and c.lowcut == 300.0 for c in commands)
    assert ReverbTarget(0.75, 400.0, 0.5) in commands


def test_a_morph_glides_the_echo_towards_ms_and_sets_beats_at_its_end(morphing: Morphing) -> None:
    """The echo's delay is one setting in two units: a morph to a scene in beats keeps
    the delay until its end, then sets the beats (on the grid in force); a morph to a
    scene in ms glides from the delay in force, in ms from its first step."""
    reg = morphing.store.registry
    commit(reg, lambda txn: txn.set_grid(120.0))
    set_value(reg, "/fx/echo/beats", [0.5])
    set_value(reg, "/ch/1/pan", [0.5])
    morphing.store.save("half-beat")
    set_value(reg, "/fx/echo/ms", [450.0])
    set_value(reg, "/ch/1/pan", [0.0])
    morphing.store.save("ms450")
    morphing.store.recall("half-beat", 2.0)
    morphing.at(1.0, "/ch/1/pan", 0.25)  # halfway: the delay has not moved
    assert (reg.get("/fx/echo/ms"), reg.get("/fx/echo/beats")) == (450.0, 0.0)
    morphing.at(2.0, "/fx/echo/beats", 0.5)
    ended(morphing.store)
    assert (reg.get("/fx/echo/ms"), reg.get("/fx/echo/beats")) == (250.0, 0.5)
    morphing.clock.now = 100.0  # the next recall's start
    morphing.store.recall("ms450", 2.0)
    morphing.at(1.0, "/fx/echo/ms", 350.0)
    assert reg.get("/fx/echo/beats") == 0.0
    morphing.at(2.0, "/fx/echo/ms", 450.0)
    ended(morphing.store)
