"""Separation in overlapping chunks: the same as the whole track, in any order, into the cache."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import SR, tone_mix
from stemdeck.core.errors import CacheError, ParameterError
from stemdeck.core.material.demo import demo_track
from stemdeck.core.separation import stems as stems_module
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.chunk_writer import ChunkWriter
from stemdeck.core.separation.chunks import ChunkedSeparator, ChunkPlan, iter_chunks
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.core.separation.separate import reconstruct_spectra, separate
from stemdeck.core.separation.spectral import magnitude, mel_filterbank
from stemdeck.core.separation.stem_model import load_stem_model
from stemdeck.core.separation.stems import estimate_stems, level_samples, track_level
from stemdeck.core.separation.stft import istft, stft


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    err = np.sum((ref - estimate.astype(np.float64)) ** 2)
    return float(10 * np.log10(np.sum(ref**2) / max(err, 1e-300)))


def assemble(separator: ChunkedSeparator, *, workers: int = 1) -> tuple[np.ndarray, list[int]]:
    out = np.full(separator.shape, np.nan, dtype=np.float32)
    order = []
    for c in separator.stream(workers=workers):
        out[:, :, c.start : c.stop] = c.channels
        order.append(c.index)
    return out, order


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return demo_track(sr=22050, seconds=24.0).mix


def test_istft_of_a_chunk_on_the_tracks_grid_is_the_tracks_samples(rng: np.random.Generator):
    y = rng.standard_normal((2, 200_000)).astype(np.float32)
    X = stft(y, n_fft=1024, hop=256)
    whole = istft(X, n_fft=1024, hop=256, length=y.shape[1])
    first, last = 301, 650  # not on the 256-frame block grid
    part = istft(
        np.ascontiguousarray(X[:, :, first:last]),
        n_fft=1024,
        hop=256,
        length=(last - first - 1) * 256,
        first_frame=first,
    )
    inner = slice(4 * 256, (last - first - 5) * 256)  # samples every chunk frame covers
    np.testing.assert_array_equal(part[:, inner], whole[:, first * 256 :][:, inner])


def test_plan_covers_the_track_once_in_play_order() -> None:
    plan = ChunkPlan(length=100_000, hop=256, chunk_frames=50, margin=7)
    assert plan.n_chunks == 8  # 12800 samples a chunk
    spans = [plan.samples(i) for i in range(plan.n_chunks)]
    assert spans[0] == (0, 12800) and spans[-1] == (89600, 100_000)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    owned = [plan.owned(i) for i in range(plan.n_chunks)]
    assert owned[0][0] == 0 and owned[-1][1] == plan.frames == 392
    assert all(a[1] == b[0] for a, b in itertools.pairwise(owned))
    assert plan.analysed(0) == (0, 57) and plan.analysed(3) == (143, 207)
    assert plan.order(50_000) == [3, 4, 5, 6, 7, 2, 1, 0]
    assert plan.order(0) == list(range(8))
    assert plan.order(10**9) == [7, 6, 5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize(("seconds", "chunk_seconds"), [(2.7, 0.05), (1.3, 0.4), (0.2, 1.0)])
def test_each_chunk_inverts_the_frames_its_samples_are_made_of(
    seconds: float, chunk_seconds: float
) -> None:
    """A chunk fits, masks and inverts only the frames its output needs (its own and an
    overlap either side): chunks shorter than an overlap (0.05 s: two frames at 8 kHz),
    a track shorter than a chunk and than the margin, the track's first and last frames,
    mono, an odd length, against the whole track's separation."""
    y = tone_mix(seconds, sr=8000, seed=3)[:, :-37]
    for audio in (y, y[:1].copy()):
        whole = np.asarray(separate(audio, 8000).channels)
        separator = ChunkedSeparator(audio, 8000, chunk_seconds=chunk_seconds)
        chunked, _ = assemble(separator, workers=2)
        assert not np.isnan(chunked).any()  # every sample written, once
        for j in range(4):
            assert sdr_db(whole[j], chunked[j]) >= 110.0
        residual = np.abs(chunked.astype(np.float64).sum(axis=0) - audio).max()
        assert residual <= 1e-6 * np.abs(audio).max()


def test_the_stems_are_the_same_bits_on_one_thread_or_two() -> None:
    y = tone_mix(3.0, sr=8000, seed=4)
    params = SeparationSpec().settings_at(8000)
    X = stft(y, n_fft=params.n_fft, hop=params.hop)
    est = estimate_stems(
        load_stem_model(), magnitude(X), sr=8000, n_fft=params.n_fft, n_iter=params.stems_iter
    )
    one, two = (
        list(
            reconstruct_spectra(
                X, est, y=y, n_fft=params.n_fft, hop=params.hop, frame_floor=True, threads=t
            )
        )
        for t in (1, 2)
    )
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_stems_chunked_equals_whole(song: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    # A level on fewer frames than the track has: the bounded first pass as on a long track.
    monkeypatch.setattr(stems_module, "LEVEL_FRAMES", 200)
    whole = separate(song, 22050)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    assert separator.plan.n_chunks == 5
    chunked, _ = assemble(separator)
    for j in range(4):
        assert sdr_db(whole.channels[j], chunked[j]) >= 120.0
    # The channels add up to the track as the whole separation's do.
    residual = np.abs(chunked.astype(np.float64).sum(axis=0) - song).max()
    assert residual <= 1e-6 * np.abs(song).max()


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_chunk_rules_cost_nothing_against_the_previous_whole_track_ones(song: np.ndarray) -> None:
    """The frame-relative mask floor and the sampled level (what makes chunks equal)
    against a block-relative floor (blocks of 256 frames; of 1,024 before the masks were
    made block by block with the inverse STFT) and the full mean the separation had before."""
    spec = SeparationSpec()
    params = spec.settings_at(22050)
    model = load_stem_model()
    X = stft(song, n_fft=params.n_fft, hop=params.hop)
    est = estimate_stems(
        model, magnitude(X), sr=22050, n_fft=params.n_fft, n_iter=params.stems_iter
    )
    before = list(reconstruct_spectra(X, est, y=song, n_fft=params.n_fft, hop=params.hop))
    now = separate(song, 22050, spec=spec).channels
    for j, i in enumerate(spec.channel_order()):  # computed stem i is channel j
        assert sdr_db(before[i], now[j]) >= 60.0


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_components_chunked_close_to_whole(small_params: SeparationParams) -> None:
    y = tone_mix(12.0)
    params = small_params.with_overrides(fit_frames=400, refine_iter=10)
    spec = SeparationSpec("components", params)
    whole = separate(y, SR, spec=spec)
    separator = ChunkedSeparator(y, SR, spec, chunk_seconds=2.0)
    np.testing.assert_array_equal(separator.W, whole.W)
    chunked, _ = assemble(separator)
    for j in range(4):
        assert sdr_db(whole.channels[j], chunked[j]) >= 100.0
    residual = np.abs(chunked.astype(np.float64).sum(axis=0) - y).max()
    assert residual <= 1e-6 * np.abs(y).max()


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_a_long_tracks_level_is_its_first_minutes() -> None:
    """The level reads the first minute and a half window, no more: a separation of a
    track being decoded waits for that, and what follows changes nothing."""
    model = load_stem_model()
    params = SeparationSpec().settings_at(SR)
    y = tone_mix(75.0, seed=11)
    n = level_samples(y.shape[1], sr=SR, n_fft=params.n_fft, hop=params.hop)
    last_frame = -(-60 * SR // params.hop)  # frames centred within the first minute
    assert n == last_frame * params.hop + params.n_fft // 2
    level = track_level(model, y, sr=SR, n_fft=params.n_fft, hop=params.hop)
    other = y.copy()
    other[:, n:] *= 3.0
    assert track_level(model, other, sr=SR, n_fft=params.n_fft, hop=params.hop) == level
    assert track_level(model, y[:, :n], sr=SR, n_fft=params.n_fft, hop=params.hop) == level
    changed = y.copy()
    changed[:, n - params.n_fft // 2] += 0.5  # the centre of the last frame it reads
    assert track_level(model, changed, sr=SR, n_fft=params.n_fft, hop=params.hop) != level
    short = y[:, : 20 * SR]  # a track under a minute: all of it
    assert level_samples(short.shape[1], sr=SR, n_fft=params.n_fft, hop=params.hop) == 20 * SR


def test_a_tracks_level_reads_at_most_level_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """The level's cost is bounded: LEVEL_FRAMES frames spread over the first minute,
    the first and the last of it included (every frame of a track with fewer)."""
    model = load_stem_model()
    params = SeparationSpec().settings_at(SR)
    read: list[np.ndarray] = []
    real = stems_module.stft_frames

    def spy(y: np.ndarray, frames: np.ndarray, **kw: int) -> np.ndarray:
        read.append(np.asarray(frames).copy())
        return real(y, frames, **kw)

    monkeypatch.setattr(stems_module, "stft_frames", spy)
    y = tone_mix(75.0, seed=11)
    track_level(model, y, sr=SR, n_fft=params.n_fft, hop=params.hop)
    minute = -(-60 * SR // params.hop) + 1  # frames centred within the first minute
    assert len(read) == 1 and len(read[0]) == stems_module.LEVEL_FRAMES == 512
    assert read[0][0] == 0 and read[0][-1] == minute - 1
    read.clear()
    few = y[:, : 3 * SR]  # 3 s: fewer frames than that, all of them
    level = track_level(model, few, sr=SR, n_fft=params.n_fft, hop=params.hop)
    frames = -(-few.shape[1] // params.hop) + 1
    np.testing.assert_array_equal(read[0], np.arange(frames))
    V = magnitude(stft(few, n_fft=params.n_fft, hop=params.hop))
    mel = mel_filterbank(SR, params.n_fft, model.n_mels, model.fmax)
    assert level == pytest.approx(float((mel @ V).mean()), rel=1e-5)


def test_a_track_being_decoded_must_be_float32_channels_by_samples() -> None:
    with pytest.raises(ParameterError, match=r"^a track being decoded is a float32"):
        ChunkedSeparator(np.zeros(1000), SR, available=lambda n: None)


def test_two_threads_give_the_same_chunks_in_the_same_order(song: np.ndarray) -> None:
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    one, order_one = assemble(separator, workers=1)
    two, order_two = assemble(separator, workers=2)
    assert order_one == order_two == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(one, two)


def test_iter_chunks_starts_at_the_play_head(song: np.ndarray) -> None:
    got = [(start, stop) for start, stop, _ in iter_chunks(song, 22050, position=20 * 22050)]
    step = 646 * 512  # 15 s at 22050 Hz in whole frames of the model's hop there (512)
    assert got == [(step, song.shape[1]), (0, step)]


def test_bad_chunk_requests_are_refused(song: np.ndarray) -> None:
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    with pytest.raises(ParameterError, match=r"^chunk 5 is not one of the track's 5$"):
        separator.chunk(5)
    with pytest.raises(ParameterError, match=r"^workers must be a positive integer, got 0$"):
        next(separator.stream(workers=0))
    with pytest.raises(ParameterError, match=r"^chunk_seconds must be a positive number, got 0$"):
        ChunkedSeparator(song, 22050, chunk_seconds=0)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_into_cache_makes_the_entry_separate_serves(song: np.ndarray, tmp_path) -> None:
    cache = SeparationCache(tmp_path)
    spec = SeparationSpec()
    key = spec.key(song, 22050)
    separator = ChunkedSeparator(song, 22050, spec, chunk_seconds=5.0)
    chunks = separator.into_cache(cache, key, position=11 * 22050)
    assert chunks is not None
    assert [c.index for c in chunks] == [2, 3, 4, 1, 0]
    assert cache.open_partial(key) is None
    served = separate(song, 22050, spec=spec, cache=cache)
    assert served.from_cache
    direct = separate(song, 22050, spec=spec)
    # Equal to the last bits of float32: OpenBLAS 0.3.31 rounds a product's rows by
    # the product's shape, and a chunk's products are shorter than the track's.
    for j in range(4):
        assert sdr_db(direct.channels[j], np.asarray(served.channels[j])) >= 120.0
    np.testing.assert_allclose(served.H, direct.H, rtol=1e-5, atol=1e-6 * direct.H.max())
    assert served.names == direct.names and served.groups == direct.groups


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_partial_entry_is_readable_and_resumed(song: np.ndarray, tmp_path) -> None:
    cache = SeparationCache(tmp_path)
    key = SeparationSpec().key(song, 22050)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    first = separator.into_cache(cache, key, position=6 * 22050)
    assert first is not None
    got = [next(first), next(first)]
    partial = cache.open_partial(key)
    assert partial is not None
    assert partial.ready() == [(got[0].start, got[0].stop), (got[1].start, got[1].stop)]
    assert partial.writer_alive() and not partial.complete
    ready = partial.channels[:, :, got[0].start : got[0].stop]
    np.testing.assert_array_equal(ready, got[0].channels)
    assert not partial.channels[:, :, : got[0].start].any()
    assert cache.load(key).status == "absent"  # never served before it is complete
    assert separator.into_cache(cache, key) is None  # another writer is alive
    first.close()  # the writer stops (as a killed one would): the entry stays partial
    assert not partial.writer_alive()

    resumed = separator.into_cache(cache, key)
    assert resumed is not None
    assert [c.index for c in resumed] == [0, 3, 4]  # only what was missing
    assert partial.complete and partial.ready() == [(0, song.shape[1])]
    found = cache.load(key)
    assert found.status == "found" and found.entry is not None
    np.testing.assert_array_equal(np.asarray(found.entry.channels), np.asarray(partial.channels))
    whole, _ = assemble(separator)
    np.testing.assert_array_equal(np.asarray(found.entry.channels), whole)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_damaged_chunk_of_a_dead_writer_is_redone(song: np.ndarray, tmp_path) -> None:
    cache = SeparationCache(tmp_path)
    key = SeparationSpec().key(song, 22050)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    it = separator.into_cache(cache, key)
    assert it is not None
    done = [next(it), next(it)]
    it.close()
    with (tmp_path / f".partial-{key}" / "channels.f32").open("r+b") as f:
        f.seek(4 * (done[1].start + 10))  # channel 0, audio channel 0, inside chunk 1
        f.write(np.float32(0.5).tobytes())
    resumed = separator.into_cache(cache, key)
    assert resumed is not None
    assert [c.index for c in resumed] == [1, 2, 3, 4]
    whole, _ = assemble(separator)
    found = cache.load(key)
    assert found.entry is not None
    np.testing.assert_array_equal(np.asarray(found.entry.channels), whole)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_clean_stale_removes_abandoned_partial_entries_only(song: np.ndarray, tmp_path) -> None:
    cache = SeparationCache(tmp_path)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    abandoned = separator.into_cache(cache, "a" * 40)
    live = separator.into_cache(cache, "b" * 40)
    assert abandoned is not None and live is not None
    next(abandoned)
    abandoned.close()
    next(live)
    cache.clean_stale(older_than=-1.0)
    assert not (tmp_path / f".partial-{'a' * 40}").exists()
    assert (tmp_path / f".partial-{'b' * 40}").is_dir()
    live.close()


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_a_garbled_ready_record_starts_the_entry_afresh(song: np.ndarray, tmp_path) -> None:
    cache = SeparationCache(tmp_path)
    key = "c" * 40
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    it = separator.into_cache(cache, key)
    assert it is not None
    next(it)
    it.close()
    (tmp_path / f".partial-{key}" / "ready.json").write_text("{not json", encoding="utf-8")
    assert cache.open_partial(key) is None
    again = separator.into_cache(cache, key)
    assert again is not None
    assert [c.index for c in again] == [0, 1, 2, 3, 4]
    assert cache.load(key).status == "found"


def song_writer(cache: SeparationCache, separator: ChunkedSeparator, key: str) -> ChunkWriter:
    """An entry ``key`` of ``separator``'s track, chunk by chunk."""
    writer = cache.chunk_writer(
        key,
        separator.names,
        separator.shape[1:],
        W=separator.W,
        frames=separator.plan.frames,
        meta=separator.entry_meta(),
    )
    assert writer is not None
    return writer


def test_an_incomplete_entry_is_never_sealed(song: np.ndarray, tmp_path) -> None:
    cache = SeparationCache(tmp_path)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    writer = song_writer(cache, separator, "d" * 40)
    c = separator.chunk(1)
    writer.add_chunk(c.start, c.stop, c.channels, c.frames, c.H)
    message = "cache entry dddddddddddd is missing chunks: ready [(110080, 220160)]"
    with pytest.raises(CacheError, match=f"^{re.escape(message)}$"):
        writer.finish()
    assert cache.load("d" * 40).status == "absent"


@pytest.mark.parametrize("resumed", [False, True])
def test_the_seal_has_every_blocks_checksum_taken_as_its_chunks_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed: bool
) -> None:
    """The chunk writer takes each block's checksum once every sample of the block is
    in (blocks of 4 KiB here: they cross rows and chunks' edges), so the seal reads no
    block of the channels again; a dead writer's chunks, kept by the next one, are read
    at the seal. Either way the checksums are the file's, and the entry verifies."""
    from stemdeck.core.separation import chunk_writer, entry

    monkeypatch.setattr(chunk_writer, "CHECK_BLOCK", 4096)
    monkeypatch.setattr(entry, "CHECK_BLOCK", 4096)
    read_whole: list[str] = []
    real_checksums = entry.block_checksums

    def checksums(path: Path, block: int = 4096) -> list[int]:
        read_whole.append(path.name)
        return real_checksums(path, block)

    monkeypatch.setattr(entry, "block_checksums", checksums)
    cache = SeparationCache(tmp_path)
    names, length, key = ["a", "b", "c"], 5003, "e" * 40
    rng = np.random.default_rng(3)
    channels = rng.standard_normal((3, 2, length)).astype(np.float32)
    W, frames = np.ones((5, 2), np.float32), 10
    edges = [0, 700, 1900, 2100, 3333, 5003]  # five chunks, landing out of order
    order = [4, 2, 0, 3, 1]

    def start() -> ChunkWriter:
        writer = cache.chunk_writer(
            key, names, (2, length), W=W, frames=frames, meta={"sr": 8000, "extra": {}}
        )
        assert writer is not None
        return writer

    def add(writer: ChunkWriter, i: int) -> None:
        a, b = edges[i], edges[i + 1]
        writer.add_chunk(a, b, channels[:, :, a:b], (2 * i, 2 * i + 2), np.ones((2, 2), np.float32))

    writer = start()
    for i in order[: 3 if resumed else 5]:
        add(writer, i)
    if resumed:
        writer.close()  # killed: the next writer keeps its three chunks
        writer = start()
        assert writer.ready == [(0, 700), (1900, 2100), (3333, 5003)]
        for i in order[3:]:
            add(writer, i)
    writer.finish()
    assert "channels.f32" not in read_whole  # read block by block, not again whole
    sealed = cache.root / key
    meta = json.loads((sealed / "meta.json").read_text(encoding="utf-8"))
    info = meta["files"]["channels.f32"]
    assert info["block"] == 4096
    assert info["crc"] == real_checksums(sealed / "channels.f32", 4096)
    assert len(info["crc"]) == -(-(3 * 2 * length * 4) // 4096) == 30
    np.testing.assert_array_equal(
        np.fromfile(sealed / "channels.f32", np.float32).reshape(3, 2, length), channels
    )
    found = cache.load(key)
    assert found.status == "found" and found.entry is not None


def test_a_block_written_again_after_its_checksum_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of this run written over part of one a dead writer left (other chunk
    edges: ``chunk_seconds`` changed): the blocks it touches are checksummed anew,
    so the seal's checksums are the file's (the old one was kept: a damaged entry)."""
    from stemdeck.core.separation import chunk_writer, entry

    monkeypatch.setattr(chunk_writer, "CHECK_BLOCK", 4096)
    monkeypatch.setattr(entry, "CHECK_BLOCK", 4096)
    cache = SeparationCache(tmp_path)
    key, W, H = "f" * 40, np.ones((5, 2), np.float32), np.ones((2, 2), np.float32)

    def start() -> ChunkWriter:
        writer = cache.chunk_writer(key, ["a"], (1, 2000), W=W, frames=10, meta={"sr": 8000})
        assert writer is not None
        return writer

    writer = start()
    writer.add_chunk(0, 1000, np.full((1, 1, 1000), 0.25, np.float32), (0, 2), H)
    writer.close()  # killed, with its chunk's edges
    writer = start()
    assert writer.ready == [(0, 1000)]
    writer.add_chunk(1000, 2000, np.full((1, 1, 1000), 0.5, np.float32), (2, 4), H)
    writer.add_chunk(500, 1000, np.full((1, 1, 500), 0.75, np.float32), (4, 6), H)
    writer.finish()
    meta = json.loads((cache.root / key / "meta.json").read_text(encoding="utf-8"))
    channels = cache.root / key / "channels.f32"
    assert meta["files"]["channels.f32"]["crc"] == entry.block_checksums(channels, 4096)
    assert np.fromfile(channels, np.float32).tolist() == [0.25] * 500 + [0.75] * 500 + [0.5] * 1000
    assert cache.load(key).status == "found"


def test_a_chunk_on_two_threads_is_the_chunk_on_one(song: np.ndarray) -> None:
    """The last chunk of a run is separated on every thread (the worker's): the same
    bits as on one, in both modes."""
    for spec in (None, SeparationSpec("components")):
        separator = ChunkedSeparator(song, 22050, spec, chunk_seconds=5.0)
        for i in (0, separator.plan.n_chunks - 1):
            one, two = separator.chunk(i), separator.chunk(i, threads=2)
            assert one.channels.tobytes() == two.channels.tobytes()
            assert one.H.tobytes() == two.H.tobytes()


def test_a_chunks_samples_are_written_in_pieces_of_at_most_write_piece(
    song: np.ndarray, tmp_path: Path, pwrites: list[int]
) -> None:
    from stemdeck.core.audiofile.scratch import WRITE_PIECE

    cache = SeparationCache(tmp_path)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    writer = song_writer(cache, separator, "e" * 40)
    c = separator.chunk(1)
    del pwrites[:]
    writer.add_chunk(c.start, c.stop, c.channels, c.frames, c.H)
    row = 4 * (c.stop - c.start)  # one channel's samples of the chunk, in bytes
    assert row > WRITE_PIECE
    whole, rest = divmod(row, WRITE_PIECE)
    pieces = [WRITE_PIECE] * whole + ([rest] if rest else [])
    activations = [4 * (c.frames[1] - c.frames[0])] * c.H.shape[0]  # a row of H each
    assert pwrites == pieces * (c.channels.shape[0] * c.channels.shape[1]) + activations
    writer.close()


def test_an_entry_is_written_without_waiting_for_the_disk(
    song: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    monkeypatch.setattr(np.memmap, "flush", lambda self: synced.append("memmap.flush"))
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append("fsync"))
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append("fdatasync"))
    cache = SeparationCache(tmp_path)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    writer = song_writer(cache, separator, "f" * 40)
    H = np.full((separator.W.shape[1], separator.plan.frames), np.nan, np.float32)
    for c in separator.stream():
        writer.add_chunk(c.start, c.stop, c.channels, c.frames, c.H)
        H[:, c.frames[0] : c.frames[1]] = c.H
    writer.finish()
    assert synced == []
    found = cache.load("f" * 40)
    assert found.entry is not None
    assert np.array_equal(np.asarray(found.entry.channels), assemble(separator)[0])
    assert np.array_equal(np.load(found.entry.path / "H.npy"), H)  # read back, not mapped


@pytest.mark.parametrize("where", ["samples", "activations"])
def test_a_disk_that_fills_while_a_chunk_is_written_is_one_cache_error(
    song: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from conftest import fail_pwrite_after, open_fds
    from stemdeck.core.audiofile.scratch import WRITE_PIECE

    cache = SeparationCache(tmp_path)
    separator = ChunkedSeparator(song, 22050, chunk_seconds=5.0)
    before = open_fds()
    writer = song_writer(cache, separator, "g" * 40)
    c = separator.chunk(1)
    rows = c.channels.shape[0] * c.channels.shape[1]
    samples = rows * -(-4 * (c.stop - c.start) // WRITE_PIECE)  # their pwrites
    # 430 KiB a row, seven pieces: in the second row; or in the third row of H (a
    # store into a writable map of it would have been a SIGBUS on a full disk)
    fail_pwrite_after(monkeypatch, 9 if where == "samples" else samples + 2)
    message = (
        f"disk full writing the cache in {str(tmp_path)!r}; "
        "free space or point STEMDECK_CACHE at another disk"
    )
    with pytest.raises(CacheError, match=f"^{re.escape(message)}$"):
        writer.add_chunk(c.start, c.stop, c.channels, c.frames, c.H)
    writer.close()
    assert open_fds() == before
    assert cache.load("g" * 40).status == "absent"
