"""Cache keys are a promise to every user's cache: pinned here, so no refactor turns
a prepared library cold. If a change means to alter a key, it bumps
``FORMAT_VERSION`` (core/separation/entry.py) and updates these digests on purpose."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stemdeck.core.separation.cache import SeparationCache, file_identity, read_identity
from stemdeck.core.separation.keys import Mode, SeparationSpec
from stemdeck.core.separation.presets import load_separation_preset
from stemdeck.core.separation.separate import separate
from stemdeck.core.separation.stem_model import load_stem_model

# preset, mode: settings digest, key of the stereo 44.1 kHz signal, key of the mono 22.05 kHz one
PINNED = {
    ("default", "stems"): (
        "ca1d7ff09fc659316a6081a38605b44b",
        "a860122f4a836588b7e90ca2e5274a62e9672585",
        "af001e95304c0e3eab885cbc4fccde9fcc2677ac",
    ),
    ("default", "components"): (
        "fead8097dc8521c88b6ef07fb9a3b243",
        "dc93a38e92b88bf7fa03dc781fd641404375bd37",
        "e070aa52a6c67fbf5521a758b0faeae24de675a5",
    ),
    ("fast", "stems"): (
        "bf6e76acccd137cf95758b9f01495afc",
        "430a4f95564f3bc439f9ddc7b3fd1caaa2c341bd",
        "ae07b7f186237ab91f663b391a8ce4271cced06a",
    ),
    ("fast", "components"): (
        "c93b88cdabee3723a9b8898e1807ff6a",
        "c9264e5a04d5b953437e2bdebd818d024a622dd1",
        "08286c6e699bd40c9b576525829f7859e27acd06",
    ),
    ("quality", "stems"): (
        "ce56f2ab041642aa546b50441ac6b72c",
        "51b81f9aa7d1bc649c35e2ebf168a6bea3d6dad1",
        "6e53bab4c5e7de4650d7d55fc6c3f1e4699d37c4",
    ),
    ("quality", "components"): (
        "46f1ddd1981171241e18e642d9f5be2f",
        "cafdb8566ed760b3e1da611d9678161a332c1721",
        "e06a92e1cedf1939cd41d413e2aea50019279849",
    ),
}


def _signal() -> np.ndarray:
    """Exact on every platform: small integers over a power of two, no libm."""
    n = 4410
    return ((np.arange(2 * n) % 97 - 48).astype(np.float32) / 64).reshape(2, n)


def test_the_stems_model_digest_is_pinned() -> None:
    assert load_stem_model("default").digest == "8efd53530a86daf8c520503a"


@pytest.mark.parametrize(("preset", "mode"), sorted(PINNED))
def test_keys_of_the_shipped_presets_are_pinned(preset: str, mode: Mode) -> None:
    spec = SeparationSpec(mode, load_separation_preset(preset))
    digest, stereo, mono = PINNED[preset, mode]
    y = _signal()
    assert spec.digest == digest
    assert spec.key(y, 44100) == stereo
    assert spec.key(y[:1], 22050) == mono


def test_separate_files_its_entry_under_the_pinned_key(tmp_path: Path) -> None:
    """The key is taken from the parameters as requested, before the stems model's
    analysis settings rewrite them: the entry's folder is the pinned key."""
    cache = SeparationCache(tmp_path)
    params = load_separation_preset("fast")
    separate(_signal()[:1], 22050, spec=SeparationSpec("stems", params), cache=cache)
    entries = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert entries == [PINNED["fast", "stems"][2]]


@pytest.mark.parametrize(
    ("size", "digest", "identity"),
    [
        (3 * (1 << 20) + 123, "0123456789abcdef", "77ce7cdfa89772027d9499855aca9686fdbedb92"),
        (1000, "d", "0d3b31b23651f786de77bdb10122c298c57b561c"),
    ],
)
def test_a_files_identity_is_pinned_and_read_apart_from_the_digest(
    tmp_path: Path, size: int, digest: str, identity: str
) -> None:
    """The identities in a cache folder's index stay valid from one version to the next
    (the 16 pieces of a long file, the whole of a short one); the loader reads a file's
    pieces before it decodes it and joins the model's digest after the first sound."""
    path = tmp_path / "track.bin"
    path.write_bytes(bytes((i * 7) % 251 for i in range(size)))
    os.utime(path, ns=(1, 1_700_000_000_123_456_789) if size > 1000 else (1, 2))
    read = read_identity(path)
    assert (read.size, read.mtime_ns) == (size, os.stat(path).st_mtime_ns)
    assert len(read.pieces) == min(size, 1 << 20)
    assert read.under(digest) == file_identity(path, digest) == identity
    assert read.under(digest + "0") != identity
