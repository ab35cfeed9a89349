"""The cache is keyed by the source audio at its own rate: a track separated at
one rate starts with its cached channels on an output at any other rate."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Daemon, separated

from conftest import SR, TINY, tone_mix
from stemdeck.core.audiofile.samples import resample, resample_channels
from stemdeck.core.separation.cache import SOURCE_PREFIX
from stemdeck.daemon.cli import main

FAST = TINY
NULL_CLOCK_RATE = 48000  # what `serve --no-audio` runs at (daemon/serve.py)


def test_resampled_channels_still_add_up_to_the_resampled_track() -> None:
    y = tone_mix(1.0, seed=4)
    parts = np.stack([0.25 * y, 0.75 * y, np.zeros_like(y)])
    out = resample_channels(parts, SR, 44100)
    whole = resample(y, SR, 44100)
    assert out.shape == (3, *whole.shape) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), whole, atol=1e-5)
    assert resample_channels(parts, SR, SR) is parts  # same rate: untouched (memory maps stay)


def _wait_loaded(daemon: Daemon, name: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = daemon.client.query("/status")
        if separated(status, name):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{name} not ready: {status}\n{daemon.stderr[-2000:]}")


@pytest.mark.e2e
def test_separated_track_starts_from_the_cache_at_another_rate(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("STEMDECK_CACHE", str(cache))
    library = tmp_path / "library"
    library.mkdir()
    first, second = library / "first.wav", library / "second.flac"
    sf.write(first, tone_mix(3.0, seed=1).T, SR, subtype="FLOAT")  # 22050 Hz
    sf.write(second, tone_mix(3.0, sr=44100, seed=2).T, 44100, subtype="PCM_24")
    common = ["--preset", str(FAST), "--components", "3"]
    for track in (first, second):
        assert main(["separate", str(track), "-o", str(tmp_path / "out"), *common]) == 0
    # two separations, and beside them the beat store with each track's grid
    entries = sorted(p.name for p in cache.iterdir() if p.name != "beats")
    assert len(entries) == 2
    grids = sorted(p.name for p in (cache / "beats").iterdir())
    assert [Path(g).suffix for g in grids] == [".json", ".json"]
    daemon = Daemon(
        [str(first), "--no-audio", *common, "--library", str(library)],
        {"STEMDECK_CACHE": str(cache), "STEMDECK_CONFIG": str(tmp_path / "config")},
        tmp_path,
    )
    try:
        daemon.wait_ready()
        assert "first: 3 channels from the cache" in daemon.stderr
        assert daemon.client.ask("/track/load", str(second)) == [("/track/load", [str(second)])]
        _wait_loaded(daemon, "second")
        assert "second: 3 channels from the cache" in daemon.stderr
        assert daemon.client.query("/ch/3/fader") == 0.75  # the channels are live
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    assert f"null clock, {NULL_CLOCK_RATE} Hz" in err
    assert "while separating" not in err  # no separation worker ever started
    # nothing new but each file's index to its entry's key (core/separation/cache.py)
    added = sorted(p.name for p in cache.iterdir() if p.name not in [*entries, "beats"])
    assert [name[: len(SOURCE_PREFIX)] for name in added] == [SOURCE_PREFIX] * 2, added
    indexed = sorted((cache / name).read_text(encoding="ascii").strip() for name in added)
    assert indexed == entries
    assert sorted(p.name for p in (cache / "beats").iterdir()) == grids  # the grids: read
