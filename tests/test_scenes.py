"""Scenes: where they are read from, and recall and morph agreeing on the end state."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from registry_helpers import set_value

from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError
from stemdeck.core.mixer.commands import Command
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
