"""One stem, one channel: NI's names, MUSDB18's files, stemdeck's own stem files and its
own separation all put the vocal stem on ``/ch/vocals`` (channel 4), and the shipped
scenes and MIDI maps reach the same stem on each (#26 finding 1)."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
from osc_host import SR, FakeHost
from registry_helpers import set_value

from conftest import tone_mix
from stemdeck.core.audiofile.decode import read_stem_file
from stemdeck.core.audiofile.manifest import NI_COLOURS, NI_NAMES
from stemdeck.core.audiofile.roles import ROLES
from stemdeck.core.audiofile.stemfile_write import write_stem_file
from stemdeck.core.audiofile.tags import Tags
from stemdeck.core.control.midimap import load_midi_map, track_target
from stemdeck.core.control.registry import Registry
from stemdeck.core.mixer.commands import SetTrack, Track
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams, list_presets
from stemdeck.core.separation.separate import reconstruct_spectra, separate
from stemdeck.core.separation.spectral import magnitude
from stemdeck.core.separation.stem_model import load_stem_model
from stemdeck.core.separation.stems import estimate_stems, track_level
from stemdeck.core.separation.stft import stft
from stemdeck.daemon.loader import TrackLoader
from stemdeck.daemon.midi import MidiControl
from stemdeck.daemon.outputs import write_separated_stem_file
from stemdeck.daemon.scenes import SceneStore

SECONDS = 1.0


def _stems(n: int) -> np.ndarray:
    """``n`` different stereo stems at the fake host's rate, each its own noise."""
    rng = np.random.default_rng(26)
    return rng.uniform(-0.2, 0.2, (n, 2, int(SECONDS * SR))).astype(np.float32)


def _without_manifest(path: Path) -> Path:
    """MUSDB18's files carry no ``stem`` box: the box becomes a ``free`` one."""
    data = bytearray(path.read_bytes())
    at = data.rindex(b"stem{")
    data[at : at + 4] = b"free"
    path.write_bytes(bytes(data))
    return path


# name -> (the file's stem names in its order, the index of its vocal stem in the file,
# the labels of channels drums, bass, other, vocals)
SOURCES = {
    "ni": (["Drums", "Bass", "Other", "Vox"], 3, ["Drums", "Bass", "Other", "Vox"]),
    "ni-other-order": (["Vox", "Synth", "Kick", "Sub"], 0, ["Kick", "Sub", "Synth", "Vox"]),
    "musdb": (["drums", "bass", "other", "vocals"], 3, ["drums", "bass", "other", "vocals"]),
    "stemdeck": (list(NI_NAMES), 3, ["Drums", "Bass", "Other", "Vocals"]),
}


def _write(kind: str, folder: Path) -> tuple[Path, list[str], int]:
    names, vocal, _ = SOURCES[kind]
    stems = _stems(len(names))
    path = folder / f"{kind}.stem.m4a"
    if kind == "stemdeck":  # as `stemdeck separate --format stem.mp4` writes a separation
        write_separated_stem_file(
            path,
            stems.sum(axis=0),
            list(ROLES),
            stems,
            SR,
            codec="alac",
            tags=Tags(),
            show_progress=False,
        )
    else:
        write_stem_file(path, stems.sum(axis=0), stems, SR, names=names, codec="alac")
    if kind == "musdb":
        _without_manifest(path)
    return path, names, vocal


def _load(host: FakeHost, path: Path) -> TrackLoader:
    loader = TrackLoader(
        host.engine,
        host.registry,
        host.registry.names,
        spec=SeparationSpec(),
        cache=None,
        library=[path.parent],
    )
    loader.open(str(path))
    host.block()
    return loader


def _gains(host: FakeHost) -> list[float]:
    host.block()
    return [host.engine.strip_state(i).gain for i in range(len(host.registry.names))]


@pytest.mark.parametrize("kind", list(SOURCES))
def test_ch_vocals_is_the_vocal_stem_of_every_file(kind: str, tmp_path: Path) -> None:
    path, names, vocal = _write(kind, tmp_path)
    decoded = read_stem_file(path)  # the file's own order, as decoded
    assert decoded.names == names
    host = FakeHost()
    loader = _load(host, path)
    assert loader.problem is None
    assert host.registry.names == ["drums", "bass", "other", "vocals"]
    track = host.engine.track
    assert track is not None and track.names == ("drums", "bass", "other", "vocals")
    # /ch/vocals is channel 4, and channel 4 is the file's vocal stem, sample for sample.
    assert host.registry.resolve("/ch/vocals/fader") == ["/ch/4/fader"]
    np.testing.assert_array_equal(track.channels[3], decoded.stems[vocal])
    # The file's own names are the labels, in the channels' order.
    assert loader.labels == SOURCES[kind][2]
    # A fader on /ch/vocals moves the vocal stem's strip and no other.
    set_value(host.registry, "/ch/vocals/fader", [0.0], host.post)
    assert _gains(host) == [1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("kind", list(SOURCES))
def test_the_acapella_scene_leaves_only_the_vocals(kind: str, tmp_path: Path) -> None:
    path, _, _ = _write(kind, tmp_path)
    host = FakeHost()
    _load(host, path)
    store = SceneStore(host.registry, host.post, tmp_path / "scenes")
    assert store.recall("acapella") == []
    assert _gains(host) == [0.0, 0.0, 0.0, 1.0]
    assert store.recall("instrumental") == []
    assert _gains(host) == [1.0, 1.0, 1.0, 0.0]


def test_a_separation_gives_the_same_order_and_the_model_s_vocals_on_ch_vocals() -> None:
    """stemdeck's own separation: channel 4 is exactly the vocal stem the model
    computes (its third), and the acapella scene leaves it alone."""
    y = tone_mix(2.0)
    spec = SeparationSpec(params=SeparationParams(stems_iter=10))
    result = separate(y, 22050, spec=spec)
    assert result.names == ["drums", "bass", "other", "vocals"] == spec.channel_names()
    params = spec.settings_at(22050)
    model = load_stem_model(params.stems_model)
    assert model.names[2] == "vocals"
    X = stft(y, n_fft=params.n_fft, hop=params.hop)
    estimate = estimate_stems(
        model,
        magnitude(X),
        sr=22050,
        n_fft=params.n_fft,
        n_iter=params.stems_iter,
        level=track_level(model, y, sr=22050, n_fft=params.n_fft, hop=params.hop),
    )
    computed = list(
        reconstruct_spectra(X, estimate, y=y, n_fft=params.n_fft, hop=params.hop, frame_floor=True)
    )
    for channel, stem in zip(range(4), spec.channel_order(), strict=True):
        np.testing.assert_array_equal(result.channels[channel], computed[stem])
    np.testing.assert_array_equal(result.channels[3], computed[2])  # the vocals

    host = FakeHost(registry=Registry(result.names))
    host.engine.post(SetTrack(Track(result.channels[:, :, :SR], SR, tuple(result.names))))
    store = SceneStore(host.registry, host.post, Path("/nonexistent/scenes"))
    assert store.recall("acapella") == []
    assert _gains(host) == [0.0, 0.0, 0.0, 1.0]


def test_a_scene_naming_a_channel_the_track_lacks_applies_the_rest(tmp_path: Path) -> None:
    stems = _stems(3)
    path = tmp_path / "three.stem.m4a"
    write_stem_file(
        path,
        stems.sum(axis=0),
        stems,
        SR,
        names=["Vox", "Drums", "Bass"],
        colours=list(NI_COLOURS[:3]),
        codec="alac",
    )
    host = FakeHost()
    _load(host, path)
    assert host.registry.names == ["drums", "bass", "vocals"]
    store = SceneStore(host.registry, host.post, tmp_path / "scenes")
    assert store.recall("acapella") == ["other"]
    assert _gains(host) == [0.0, 0.0, 1.0]


def test_an_old_scene_that_named_vox_sets_the_vocals(tmp_path: Path) -> None:
    """A scene saved when NI's "Vox" was /ch/vox keeps working: "vox" finds the vocals."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    (folder / "old.toml").write_text(
        "[channels.vox]\ngain = 0.5\n[channels.synth]\nmute = true\n", encoding="utf-8"
    )
    host = FakeHost(registry=Registry(["drums", "bass", "other", "vocals"]))
    store = SceneStore(host.registry, host.post, folder)
    assert store.recall("old") == []
    assert _gains(host) == [1.0, 1.0, 1.0, 0.5]
    host.block()
    assert [host.engine.strip_state(i).mute for i in range(4)] == [False, False, True, False]


@pytest.mark.parametrize("name", list_presets("midi"))
def test_shipped_midi_maps_put_fader_4_on_the_vocals(name: str) -> None:
    """Every shipped map's fourth fader is /ch/vocals: on any stem track the vocal stem,
    on a components track channel 4, as an index map would."""
    m = load_midi_map(name)
    faders = [b.target for b in m.bindings if b.target.endswith("/fader") and "/ch/" in b.target]
    assert faders[:4] == [
        "/ch/drums/fader",
        "/ch/bass/fader",
        "/ch/other/fader",
        "/ch/vocals/fader",
    ]
    components = [f"component_{i:02d}" for i in range(1, 9)]
    assert [track_target(t, components) for t in faders[:4]] == [
        "/ch/1/fader",
        "/ch/2/fader",
        "/ch/3/fader",
        "/ch/4/fader",
    ]
    # A stem track without an "other" stem: the role target names nothing there.
    assert track_target("/ch/other/fader", ["drums", "bass", "vocals"]) == "/ch/other/fader"


@pytest.mark.parametrize(
    ("names", "moved"),
    [
        (["drums", "bass", "other", "vocals"], 3),  # a stem track: the vocal stem
        (["vocals", "drums", "bass", "fx"], 0),  # vocals elsewhere: found by its key
        ([f"component_{i:02d}" for i in range(1, 5)], 3),  # components: channel 4
    ],
)
def test_the_generic_map_s_fourth_fader_moves_the_vocals(names: list[str], moved: int) -> None:
    host = FakeHost(registry=Registry(names))
    host.engine.post(SetTrack(Track(_stems(4), SR, tuple(names))))
    midi = MidiControl(host, load_midi_map("generic"), virtual="stemdeck-test")  # not started
    for value in (95, 0):  # picked up at unity (soft takeover), then all the way down
        midi._on_message(mido.Message("control_change", channel=0, control=23, value=value))
    assert (midi.received, midi.errors) == (2, 0)
    want = [1.0] * 4
    want[moved] = 0.0
    assert _gains(host) == want
