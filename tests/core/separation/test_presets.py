from pathlib import Path

import pytest

from stemdeck.core.errors import PresetError
from stemdeck.core.separation.presets import SeparationParams, list_presets, load_separation_preset


def test_shipped_presets() -> None:
    names = list_presets("separation")
    assert {"fast", "default", "quality"} <= set(names)
    for name in names:
        assert isinstance(load_separation_preset(name), SeparationParams)


def test_default_preset_matches_dataclass_defaults() -> None:
    assert load_separation_preset("default") == SeparationParams()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("n_fft = ", "not valid TOML"),
        ("n_fftt = 1024", "unknown key 'n_fftt'"),
        ("n_components = 0", "n_components"),
        ("hop = 300", "hop"),
        ("beta = 'kl'", "beta"),
    ],
)
def test_bad_preset_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(PresetError, match=match):
        load_separation_preset(str(path))


def test_unknown_name() -> None:
    with pytest.raises(PresetError, match="no separation preset 'nope'; shipped: default"):
        load_separation_preset("nope")
