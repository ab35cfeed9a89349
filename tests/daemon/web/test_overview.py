"""The track overview the page draws (daemon/web/overview.py, its peaks
core/separation/overview.py): exact peaks per bin, read block by block, kept per
track, taken from the cache entry when there is one, and served at /_mixer/overview."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from osc_host import BLOCK, NAMES, SR, FakeHost, make_server

from stemdeck.core.mixer.commands import SetTrack, Track
from stemdeck.core.mixer.engine import Mixer
from stemdeck.core.separation import overview
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.overview import OVERVIEW_FILE, channel_peaks
from stemdeck.daemon.web.overview import Overviews
from stemdeck.daemon.web.server import WebApp


def naive_peaks(channels: np.ndarray, bins: int) -> np.ndarray:
    """The definition, bin by bin: the largest |sample| of either side, 0..255."""
    frames = channels.shape[2]
    step = -(-frames // bins)
    out = []
    for c in range(channels.shape[0]):
        row = []
        for start in range(0, frames, step):
            part = np.abs(channels[c, :, start : start + step].astype(np.float64))
            part[~np.isfinite(part)] = 1.0
            row.append(round(min(float(part.max()), 1.0) * 255.0))
        out.append(row)
    return np.array(out, dtype=np.uint8)


def test_peaks_are_the_largest_sample_of_either_side_per_bin() -> None:
    channels = np.zeros((2, 2, 10), np.float32)
    channels[0, 0, 1] = 0.5  # bin 0 (frames 0-2)
    channels[0, 1, 4] = -1.0  # bin 1 (frames 3-5), the right side, negative
    channels[1, 0, 6] = 2.0  # bin 2 (frames 6-8): over full scale is full scale
    channels[1, 1, 9] = 0.2  # bin 3: the last frame alone
    peaks = channel_peaks(channels, bins=4)  # 3 frames a bin: 0-2, 3-5, 6-8, 9
    assert peaks.dtype == np.uint8
    assert peaks.tolist() == [[128, 255, 0, 0], [0, 0, 255, 51]]


def test_non_finite_samples_are_full_scale_and_short_tracks_have_a_bin_a_frame() -> None:
    channels = np.zeros((1, 2, 3), np.float32)
    channels[0, 0, 0] = np.nan
    channels[0, 1, 2] = -np.inf
    assert channel_peaks(channels, bins=2048).tolist() == [[255, 0, 255]]
    assert channel_peaks(np.zeros((3, 2, 0), np.float32)).shape == (3, 0)


def test_blocks_cut_anywhere_give_the_same_peaks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    channels = (rng.standard_normal((3, 2, 10007)) * 0.3).astype(np.float32)
    want = naive_peaks(channels, 97)
    for block in (1, 8, 104, 1 << 18):  # under a bin, a few bins, one bin more, the default
        monkeypatch.setattr(overview, "_BLOCK_FRAMES", block)
        assert np.array_equal(channel_peaks(channels, 97), want), block


def test_the_overview_is_read_once_per_track() -> None:
    reads = []

    class Counted(np.ndarray):
        def __getitem__(self, key: Any) -> Any:
            reads.append(key)
            return super().__getitem__(key)

    data = np.ones((2, 2, 100), np.float32).view(Counted)
    track = Track(data, 100, ("a", "b"))
    keep = Overviews(bins=10)
    first = keep.get(track)
    assert first.as_json() == {
        "names": ["a", "b"],
        "seconds": 1.0,
        "bins": 10,
        "peaks": [[255] * 10, [255] * 10],
    }
    count = len(reads)
    assert keep.get(track) is first and len(reads) == count
    other = Track(data, 50, ("a", "b"))  # another track: read again
    assert keep.get(other).seconds == 2.0 and len(reads) == 2 * count


def serve(fake: FakeHost, test: Any) -> None:
    async def main() -> None:
        _, osc = make_server(host=fake)
        app = WebApp(osc)
        try:
            async with TestClient(TestServer(app.app, host="127.0.0.1")) as client:
                await test(client)
        finally:
            osc.sock.close()

    asyncio.run(main())


def test_the_page_gets_the_playing_tracks_overview() -> None:
    fake = FakeHost()
    track = fake.engine.track
    assert track is not None

    async def body(client: TestClient) -> None:
        r = await client.get("/_mixer/overview")
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == {
            "names": list(NAMES),
            "seconds": 4.0,
            "bins": 2000,  # 32000 frames: 2048 bins would be 15.6 frames, so 2000 of 16
            "peaks": channel_peaks(track.channels).tolist(),
        }

    serve(fake, body)


def test_no_track_and_an_unreadable_track_are_one_clear_error() -> None:
    fake = FakeHost()
    fake.engine = Mixer(max_channels=len(NAMES))
    fake.engine.prepare(SR, BLOCK)  # no track posted

    async def none(client: TestClient) -> None:
        r = await client.get("/_mixer/overview")
        assert r.status == 404 and await r.json() == {"error": "no track plays"}

    serve(fake, none)

    class Gone(np.ndarray):
        def __getitem__(self, key: Any) -> Any:
            raise OSError(5, "Input/output error")

    gone = np.zeros((1, 2, 64), np.float32).view(Gone)
    fake.engine.post(SetTrack(Track(gone, SR, ("mix",), is_mix=True)))
    fake.block()

    async def unreadable(client: TestClient) -> None:
        r = await client.get("/_mixer/overview")
        assert r.status == 503 and await r.json() == {
            "error": "the overview could not be read: [Errno 5] Input/output error"
        }

    serve(fake, unreadable)


class CountedMap(np.memmap):
    """An entry's memory map that counts the reads of its samples."""

    reads: ClassVar[list[Any]] = []

    def __getitem__(self, key: Any) -> Any:
        CountedMap.reads.append(key)
        return super().__getitem__(key)


def cached_track(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str | None = None
) -> tuple[Track, np.ndarray]:
    """A track playing from a cache entry (its channels the entry's memory map, reads
    counted), and the peaks of its channels; ``damage`` done to the entry's overview
    after it was opened."""
    cache = SeparationCache(tmp_path)
    rng = np.random.default_rng(5)
    channels = rng.uniform(-0.5, 0.5, (len(NAMES), 2, SR * 2 + 7)).astype(np.float32)
    key = "c" * 40
    with cache.writer(key, len(NAMES), (2, channels.shape[2])) as w:
        for i, name in enumerate(("drums", "bass", "other", "vocals")):  # the stored order
            w.add_channel(name, channels[i])
        w.add_array("W", np.ones((4, 2), np.float32))
        w.add_array("H", np.ones((2, 3), np.float32))
        w.meta["sr"] = SR
    found = cache.load(key, verify=False)
    assert found.entry is not None
    path = found.entry.path / OVERVIEW_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size - 3)
    elif damage == "nan bytes":
        with path.open("r+b") as f:
            f.seek(200)
            f.write(np.full(8, np.nan, np.float32).tobytes())
    elif damage == "wrong shape":
        np.save(path, np.zeros((len(NAMES) - 1, 2048), np.uint8))
    monkeypatch.setattr(CountedMap, "reads", [])
    return Track(found.entry.channels.view(CountedMap), SR, NAMES), channel_peaks(channels)


@pytest.mark.parametrize("damage", [None, "missing", "truncated", "nan bytes", "wrong shape"])
def test_a_cached_tracks_overview_comes_from_its_entry_or_else_from_the_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str | None
) -> None:
    """A sound entry's stored overview is served without a read of the channels; an
    entry without a good one has it read from them (one block a channel: 2 s of
    audio), the same peaks either way."""
    fake = FakeHost()
    track, peaks = cached_track(tmp_path, monkeypatch, damage)
    fake.engine.post(SetTrack(track))
    fake.block()
    assert fake.engine.track is track
    CountedMap.reads.clear()  # whatever the engine read to play its first block

    async def body(client: TestClient) -> None:
        r = await client.get("/_mixer/overview")
        assert r.status == 200
        assert await r.json() == {
            "names": list(NAMES),
            "seconds": (SR * 2 + 7) / SR,
            "bins": peaks.shape[1],
            "peaks": peaks.tolist(),
        }

    serve(fake, body)
    assert len(CountedMap.reads) == (0 if damage is None else len(NAMES))


def test_stems_arriving_chunk_by_chunk_are_folded_in_as_they_come() -> None:
    """A track whose stems arrive chunk by chunk (its ready flags), with no overview in an
    entry: each request covers the chunks ready then (the others flat), each chunk is read
    once, and the final overview is ``channel_peaks`` of the channels exactly."""
    reads: list[Any] = []

    class Counted(np.ndarray):
        def __getitem__(self, key: Any) -> Any:
            reads.append(key)
            return super().__getitem__(key)

    rng = np.random.default_rng(9)
    channels = rng.uniform(-0.9, 0.9, (2, 2, 1000)).astype(np.float32)
    channels[1, 0, 333] = np.nan
    chunk = 300  # 10 frames a bin: chunk edges at 300, 600, 900 are bin edges; 7 a bin are not
    for bins in (100, 143):
        ready = np.zeros(4, np.uint8)
        track = Track(
            channels.view(Counted), 100, ("a", "b"), mix=channels[:1], ready=ready, chunk=chunk
        )
        keep = Overviews(bins=bins)
        seen = np.zeros_like(channels)
        for i in (1, 2, 0, 3):
            ready[i] = 1
            seen[:, :, i * chunk : (i + 1) * chunk] = channels[:, :, i * chunk : (i + 1) * chunk]
            reads.clear()
            got = keep.get(track)
            assert got.peaks == channel_peaks(seen, bins).tolist(), (bins, i)
            assert reads == [(slice(None), slice(None), slice(i * chunk, (i + 1) * chunk))]
        assert got.peaks == channel_peaks(channels, bins).tolist()
        reads.clear()
        assert keep.get(track) is got and reads == []  # complete: kept
