"""The track overview kept in the cache entry (core/separation/overview.py): taken
as the channels are written, chunk by chunk or whole, equal to ``channel_peaks`` of
the channels bit for bit; an entry without it, or with a damaged one, gives None."""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import fail_pwrite_after, open_fds
from stemdeck.core.errors import CacheError
from stemdeck.core.material.demo import demo_track
from stemdeck.core.separation import overview
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.chunks import ChunkedSeparator
from stemdeck.core.separation.entry import seal_entry
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.overview import (
    BINS,
    OVERVIEW_FILE,
    PeakAccumulator,
    channel_peaks,
    stored_peaks,
)
from stemdeck.core.separation.writer import reorder_entry

SONG_SR = 22050


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return demo_track(sr=SONG_SR, seconds=24.0).mix


def noisy(shape: tuple[int, int, int], seed: int = 3) -> np.ndarray:
    """Channels with loud, silent and non-finite samples and some over full scale."""
    rng = np.random.default_rng(seed)
    channels = (rng.standard_normal(shape) * 0.4).astype(np.float32)
    channels[0, 0, 5] = np.nan
    channels[1, 1, 17] = -np.inf
    channels[-1, :, 100:300] = 0.0
    channels[0, 1, 40] = 3.0
    return channels


def test_pieces_in_any_order_and_any_edges_give_channel_peaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channels = noisy((3, 2, 10007))
    want = channel_peaks(channels, 97)  # 104 frames a bin
    rng = np.random.default_rng(11)
    for block in (1 << 18, 50):  # one block a piece; pieces read in blocks across bins
        monkeypatch.setattr(overview, "_BLOCK_FRAMES", block)
        edges = sorted({0, 10007, *rng.integers(1, 10007, 40).tolist()})
        pieces = list(itertools.pairwise(edges))
        assert any(a % 104 for a, _ in pieces)  # edges inside bins
        rng.shuffle(pieces)
        acc = PeakAccumulator(3, 10007, 97)
        for a, b in pieces:
            acc.add(a, channels[:, :, a:b])
        assert acc.peaks.dtype == np.uint8
        assert np.array_equal(acc.peaks, want), block
        by_channel = PeakAccumulator(3, 10007, 97)
        for i in (2, 0, 1):
            by_channel.add_channel(i, channels[i])
        assert np.array_equal(by_channel.peaks, want), block


def test_a_piece_outside_the_track_is_refused() -> None:
    acc = PeakAccumulator(1, 100, 10)
    with pytest.raises(ValueError, match=r"^frames 90:110 are outside 0:100$"):
        acc.add(90, np.zeros((1, 2, 20), np.float32))


def test_a_chunked_separation_stores_the_channels_peaks(song: np.ndarray, tmp_path: Path) -> None:
    """5 s chunks of a 24 s track at 22050 Hz: 110250 samples a chunk, 259 a bin, so
    every chunk boundary is inside a bin; the chunk under the play head goes first."""
    cache = SeparationCache(tmp_path)
    key = SeparationSpec().key(song, SONG_SR)
    separator = ChunkedSeparator(song, SONG_SR, chunk_seconds=5.0)
    step = -(-song.shape[1] // BINS)
    assert all(separator.plan.samples(i)[0] % step for i in range(1, separator.plan.n_chunks))
    chunks = separator.into_cache(cache, key, position=11 * SONG_SR)
    assert chunks is not None
    order = [next(chunks).index]
    partial = cache.open_partial(key)  # the map the daemon plays while chunks arrive
    assert partial is not None and stored_peaks(partial.channels) is None  # not sealed yet
    order += [c.index for c in chunks]
    assert order == [2, 3, 4, 1, 0]
    found = cache.load(key)
    assert found.status == "found" and found.entry is not None
    stored = np.load(found.entry.path / OVERVIEW_FILE)
    want = channel_peaks(found.entry.channels)
    assert stored.dtype == np.uint8 and stored.shape == (4, BINS - 4)  # 529200 / 259
    assert np.array_equal(stored, want)
    peaks = stored_peaks(found.entry.channels)
    assert peaks is not None and np.array_equal(peaks, want)
    # The partial entry's map, published once every chunk is in, finds the sealed entry's.
    peaks = stored_peaks(partial.channels)
    assert peaks is not None and np.array_equal(peaks, want)
    assert cache.verify(found.entry).status == "found"  # its checksums cover the file


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_a_resumed_chunked_separation_stores_the_channels_peaks(
    song: np.ndarray, tmp_path: Path
) -> None:
    cache = SeparationCache(tmp_path)
    key = SeparationSpec().key(song, SONG_SR)
    separator = ChunkedSeparator(song, SONG_SR, chunk_seconds=5.0)
    first = separator.into_cache(cache, key, position=6 * SONG_SR)
    assert first is not None
    assert [next(first).index, next(first).index] == [1, 2]
    first.close()  # a writer killed: the next one keeps its two chunks
    resumed = separator.into_cache(cache, key)
    assert resumed is not None
    assert [c.index for c in resumed] == [0, 3, 4]
    found = cache.load(key)
    assert found.entry is not None
    want = channel_peaks(found.entry.channels)
    assert np.array_equal(np.load(found.entry.path / OVERVIEW_FILE), want)


def whole_entry(cache: SeparationCache, channels: np.ndarray, key: str = "a" * 40) -> Path:
    n, sides, frames = channels.shape
    with cache.writer(key, n, (sides, frames)) as w:
        for i in (1, 0, 2):  # channels may come in any order
            w.add_channel(f"c{i}", channels[i], index=i)
        w.add_array("W", np.ones((4, 2), np.float32))
        w.add_array("H", np.ones((2, 3), np.float32))
        w.meta["sr"] = 100
    return cache.root / key


def test_an_entry_written_whole_stores_the_channels_peaks(tmp_path: Path) -> None:
    cache = SeparationCache(tmp_path)
    channels = noisy((3, 2, 5003))
    folder = whole_entry(cache, channels)
    found = cache.load("a" * 40)
    assert found.entry is not None
    peaks = stored_peaks(found.entry.channels)
    assert peaks is not None and np.array_equal(peaks, channel_peaks(channels))
    assert np.array_equal(np.load(folder / OVERVIEW_FILE), channel_peaks(channels))


@pytest.mark.parametrize("copy_samples", [1000, 1 << 20])
def test_an_entry_rewritten_in_another_order_keeps_its_rows_in_that_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_samples: int
) -> None:
    from stemdeck.core.separation import writer

    monkeypatch.setattr(writer, "_COPY_SAMPLES", copy_samples)  # 1000: six pieces a row
    cache = SeparationCache(tmp_path)
    channels = noisy((3, 2, 5003))
    folder = whole_entry(cache, channels)
    meta = json.loads((folder / "meta.json").read_text())
    reorder_entry(folder, meta, [2, 0, 1])
    found = cache.load("a" * 40)
    assert found.entry is not None and found.entry.names == ["c2", "c0", "c1"]
    assert np.array_equal(np.asarray(found.entry.channels), channels[[2, 0, 1]], equal_nan=True)
    peaks = stored_peaks(found.entry.channels)
    assert peaks is not None and np.array_equal(peaks, channel_peaks(channels[[2, 0, 1]]))
    assert cache.verify(folder).status == "found"


def test_an_entry_is_written_in_pieces_of_at_most_write_piece(
    tmp_path: Path, pwrites: list[int]
) -> None:
    from stemdeck.core.audiofile.scratch import WRITE_PIECE

    cache = SeparationCache(tmp_path)
    frames = WRITE_PIECE // 4 + 10  # a row: a whole piece and 40 bytes
    channels = noisy((3, 2, frames))
    folder = whole_entry(cache, channels)
    assert pwrites == [WRITE_PIECE, WRITE_PIECE, 80] * 3  # a channel (two rows) at a time
    del pwrites[:]
    meta = json.loads((folder / "meta.json").read_text())
    reorder_entry(folder, meta, [2, 0, 1])
    assert pwrites == [WRITE_PIECE, 40] * 6  # a row at a time


def test_a_disk_that_fills_while_an_entry_is_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = SeparationCache(tmp_path / "cache")
    channels = noisy((3, 2, 40000))  # 312.5 KiB a channel: five pieces
    before = open_fds()
    fail_pwrite_after(monkeypatch, 7)  # in the second channel
    message = (
        f"disk full writing the cache in {str(cache.root)!r}; "
        "free space or point STEMDECK_CACHE at another disk"
    )
    with pytest.raises(CacheError, match=f"^{re.escape(message)}$"):
        whole_entry(cache, channels)
    assert open_fds() == before
    assert list(cache.root.iterdir()) == []


def test_a_disk_that_fills_while_an_entry_is_rewritten_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = SeparationCache(tmp_path)
    channels = noisy((3, 2, 40000))
    folder = whole_entry(cache, channels)
    meta = json.loads((folder / "meta.json").read_text())
    before, files = open_fds(), sorted(tmp_path.iterdir())
    fail_pwrite_after(monkeypatch, 7)
    with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device$"):
        reorder_entry(folder, meta, [2, 0, 1])
    assert open_fds() == before
    assert sorted(tmp_path.iterdir()) == files
    found = cache.load("a" * 40)
    assert found.entry is not None and found.entry.names == ["c0", "c1", "c2"]
    assert np.array_equal(np.asarray(found.entry.channels), channels, equal_nan=True)


def reseal(folder: Path) -> None:
    """Seal ``folder`` again as it is now (its checksums then match its files)."""
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").unlink()
    fields = {k: v for k, v in meta.items() if k not in ("format", "names", "shape", "files")}
    seal_entry(folder, fields, meta["names"], tuple(meta["shape"]))


@pytest.mark.parametrize(
    "damage", ["missing", "truncated", "nan bytes", "wrong shape", "float", "empty", "garbage"]
)
def test_an_entry_without_a_good_overview_gives_none_and_one_debug_line(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = SeparationCache(tmp_path)
    channels = noisy((3, 2, 5003))
    folder = whole_entry(cache, channels)
    path = folder / OVERVIEW_FILE
    size = path.stat().st_size
    found = cache.load("a" * 40)  # opened first: a size the entry's checks see removes it
    assert found.entry is not None
    if damage == "missing":  # an entry older than the file
        path.unlink()
        reseal(folder)
        why = "no overview stored"
    elif damage == "truncated":
        with path.open("r+b") as f:
            f.truncate(size - 10)
        why = "overview unusable (its checksum does not match)"
    elif damage == "nan bytes":
        with path.open("r+b") as f:
            f.seek(size - 16)
            f.write(np.full(4, np.nan, np.float32).tobytes())
        assert path.stat().st_size == size
        why = "overview unusable (its checksum does not match)"
    elif damage == "wrong shape":
        np.save(path, channel_peaks(channels)[:, :-1])
        reseal(folder)
        why = "overview unusable (uint8 (3, 1667) is not uint8 (3, 1668))"
    elif damage == "float":
        np.save(path, channel_peaks(channels).astype(np.float32))
        reseal(folder)
        why = "overview unusable (float32 (3, 1668) is not uint8 (3, 1668))"
    elif damage == "empty":  # sealed empty: the checksums match, the file says nothing
        path.write_bytes(b"")
        reseal(folder)
        why = "overview unusable (No data left in file)"
    else:
        path.write_bytes(b"not an array at all")
        reseal(folder)
        why = (
            "overview unusable (This file contains pickled (object) data. If you trust the "
            "file you can load it unsafely using the `allow_pickle=` keyword argument or "
            "`pickle.load()`.)"
        )
    with caplog.at_level(logging.DEBUG, logger=overview.__name__):
        assert stored_peaks(found.entry.channels) is None
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, f"cache entry {'a' * 12}: {why}; computing it")
    ]


def test_channels_that_are_not_an_entrys_have_no_stored_peaks(tmp_path: Path) -> None:
    assert stored_peaks(noisy((3, 2, 50))) is None
    other = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="w+", shape=(1, 2, 10))
    assert stored_peaks(other) is None


@pytest.mark.parametrize("content", [b"", b"not an array at all"])
def test_an_entry_rewritten_with_a_bad_overview_is_rewritten_without_it(
    tmp_path: Path, content: bytes
) -> None:
    cache = SeparationCache(tmp_path)
    channels = noisy((3, 2, 5003))
    folder = whole_entry(cache, channels)
    (folder / OVERVIEW_FILE).write_bytes(content)
    reseal(folder)
    meta = json.loads((folder / "meta.json").read_text())
    reorder_entry(folder, meta, [2, 0, 1])
    assert sorted(p.name for p in folder.iterdir()) == [
        "H.npy",
        "W.npy",
        "channels.f32",
        "meta.json",
    ]
    found = cache.load("a" * 40)
    assert found.entry is not None and found.entry.names == ["c2", "c0", "c1"]
    assert stored_peaks(found.entry.channels) is None
