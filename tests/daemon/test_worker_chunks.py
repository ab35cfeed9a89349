"""The separation worker's chunks: written into the cache in play order from a play
head it re-reads before each chunk, each reported as it lands (in-process, no worker)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from conftest import SR, tone_mix
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.chunk_writer import ChunkWriter
from stemdeck.core.separation.chunks import ChunkedSeparator
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.core.separation.stems import level_samples
from stemdeck.daemon.separation_run import KeyLater, stream_into_cache
from stemdeck.daemon.separation_worker import WorkerJob

PARAMS = SeparationParams(
    n_fft=512, hop=128, n_components=4, n_iter=10, fit_frames=0, refine_iter=0, tol=0.0
)
SPEC = SeparationSpec("components", PARAMS)
CHUNK_S = 1.0


class Pipe:
    """Records what the worker sends; ``on_chunk`` runs after each chunk's message."""

    def __init__(self, on_chunk: Any = None) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.on_chunk = on_chunk

    def send(self, message: tuple[Any, ...]) -> None:
        self.sent.append(message)
        if message[0] == "chunk" and self.on_chunk is not None:
            self.on_chunk(message)


def _job(y: np.ndarray, head: SimpleNamespace, key: str, root: Path) -> WorkerJob:
    return WorkerJob(y, SR, SPEC, key, str(root), 0, head)


def test_chunks_land_in_play_order_from_the_head_read_before_each(
    tmp_path: Path, monkeypatch: Any
) -> None:
    y = tone_mix(5.5, seed=5)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    key = SPEC.key(y, SR)
    head = SimpleNamespace(value=int(1.2 * SR))  # in chunk 1
    size = round(CHUNK_S * SR / PARAMS.hop) * PARAMS.hop
    real = ChunkedSeparator.chunk

    def chunk(self: ChunkedSeparator, i: int, **kwargs: Any) -> Any:
        out = real(self, i, **kwargs)
        if i == 1:  # chunk 1 separated: the performer jumps to chunk 4
            head.value = 4 * size + 10
        return out

    monkeypatch.setattr(ChunkedSeparator, "chunk", chunk)
    pipe: Any = Pipe()  # what the worker uses of a Connection
    done = stream_into_cache(
        y, _job(y, head, key, cache.root), cache, key, pipe, workers=1, chunk_seconds=CHUNK_S
    )
    assert done
    starts = [m[1] for m in pipe.sent if m[0] == "chunk"]
    # 1 (the head), then 4 and 5 (after the new head), then 3, 2, 0 (behind it, nearest first)
    assert starts == [i * size for i in (1, 4, 5, 3, 2, 0)]
    assert pipe.sent[0] == ("progress", "starting", 0.0)
    assert pipe.sent[1] == ("entry", key, 6, size)
    assert pipe.sent[-1] == ("done", key)
    assert [m[2] for m in pipe.sent if m[0] == "chunk"][-1] == size
    entry = cache.load(key).entry
    assert entry is not None
    np.testing.assert_allclose(np.asarray(entry.channels).sum(axis=0), y, atol=1e-5)


def test_chunks_a_killed_writer_left_are_reported_first_and_kept(tmp_path: Path) -> None:
    y = tone_mix(3.5, seed=6)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    key = SPEC.key(y, SR)
    size = round(CHUNK_S * SR / PARAMS.hop) * PARAMS.hop

    class Killed(Exception):
        pass

    def die(message: tuple[Any, ...]) -> None:
        if len([m for m in first.sent if m[0] == "chunk"]) == 2:
            raise Killed

    first: Any = Pipe(die)
    head = SimpleNamespace(value=0)
    try:
        stream_into_cache(
            y, _job(y, head, key, cache.root), cache, key, first, workers=1, chunk_seconds=CHUNK_S
        )
    except Killed:
        pass
    assert cache.load(key).entry is None
    second: Any = Pipe()
    head.value = 3 * size  # the kept chunks first, then from the head: 3, then 2
    assert stream_into_cache(
        y, _job(y, head, key, cache.root), cache, key, second, workers=1, chunk_seconds=CHUNK_S
    )
    chunks = [m for m in second.sent if m[0] == "chunk"]
    assert chunks == [
        ("chunk", 0, size),
        ("chunk", size, 2 * size),
        ("chunk", 3 * size, len(y[0])),
        ("chunk", 2 * size, 3 * size),
    ]
    assert second.sent[-1] == ("done", key)


class KeyPipe:
    """The daemon's end of the key's pipe, as ``KeyLater`` reads it: the key is there
    once ``ready`` holds."""

    def __init__(self, key: str | None, ready: Any) -> None:
        self.key, self.ready, self.closed = key, ready, False

    def poll(self) -> bool:
        return bool(self.ready())

    def recv(self) -> str | None:
        assert self.ready(), "the worker waited for the key before its last chunk"
        return self.key

    def close(self) -> None:
        self.closed = True


def _partials(cache: SeparationCache) -> list[str]:
    return sorted(p.name for p in cache.root.glob(".partial-*"))


def test_a_key_taken_later_renames_the_provisional_entry_once_it_comes(tmp_path: Path) -> None:
    """The entry is announced and written under a provisional name from the first chunk
    (the daemon plays it), takes the key's name when the key comes (a killed worker is
    resumed from then on), and is sealed under the key."""
    y = tone_mix(3.5, seed=7)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    key = SPEC.key(y, SR)
    size = round(CHUNK_S * SR / PARAMS.hop) * PARAMS.hop
    seen: list[list[str]] = []

    def look(message: tuple[Any, ...]) -> None:
        seen.append(_partials(cache))

    pipe: Any = Pipe(look)
    later = KeyLater(cast(Any, KeyPipe(key, lambda: len(seen) >= 2)))  # as a Connection
    job = WorkerJob(y, SR, SPEC, None, str(cache.root), 0, SimpleNamespace(value=0))
    assert stream_into_cache(y, job, cache, later, pipe, workers=1, chunk_seconds=CHUNK_S)
    _, provisional, chunks, chunk_size = pipe.sent[1]
    assert pipe.sent[1][0] == "entry" and (chunks, chunk_size) == (4, size)
    assert re.fullmatch(r"new-[0-9a-f]{32}", provisional)
    # Chunks 0 and 1 land under the provisional name; the key is there after chunk 1,
    # taken before chunk 2 starts: chunks 2 and 3 land in the entry under the key.
    assert seen == [[f".partial-{provisional}"]] * 2 + [[f".partial-{key}"]] * 2
    assert pipe.sent[-1] == ("done", key)
    assert _partials(cache) == []
    entry = cache.load(key).entry
    assert entry is not None
    np.testing.assert_allclose(np.asarray(entry.channels).sum(axis=0), y, atol=1e-5)


def test_a_key_that_never_comes_leaves_no_entry(tmp_path: Path) -> None:
    """No key (the daemon could not take it): the provisional entry is removed and the
    worker goes the way of a separation without an entry (False)."""
    y = tone_mix(2.5, seed=8)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    pipe: Any = Pipe()
    later = KeyLater(cast(Any, KeyPipe(None, lambda: True)))
    job = WorkerJob(y, SR, SPEC, None, str(cache.root), 0, SimpleNamespace(value=0))
    assert not stream_into_cache(y, job, cache, later, pipe, workers=1, chunk_seconds=CHUNK_S)
    assert [m[0] for m in pipe.sent] == ["progress", "entry"]  # stopped at the first look
    assert _partials(cache) == [] and list(cache.root.iterdir()) == []


def test_a_key_whose_partial_name_is_taken_seals_under_it_all_the_same(tmp_path: Path) -> None:
    """Another writer's partial entry under the key (a prep of the same audio): this
    one goes on under its provisional name and is sealed under the key."""
    y = tone_mix(2.5, seed=9)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    key = SPEC.key(y, SR)
    other = cache.root / f".partial-{key}"
    other.mkdir(parents=True)
    (other / "ready.json").write_text("{}")
    pipe: Any = Pipe()
    later = KeyLater(cast(Any, KeyPipe(key, lambda: True)))
    job = WorkerJob(y, SR, SPEC, None, str(cache.root), 0, SimpleNamespace(value=0))
    assert stream_into_cache(y, job, cache, later, pipe, workers=1, chunk_seconds=CHUNK_S)
    assert pipe.sent[-1] == ("done", key)
    assert _partials(cache) == [f".partial-{key}"]  # the other's, untouched
    assert (other / "ready.json").read_text() == "{}"
    assert cache.load(key).entry is not None


def test_a_track_being_decoded_is_read_only_where_it_is_in(tmp_path: Path) -> None:
    """Stems mode on a track that lands as it is separated: each read waits for the
    samples it needs, the level for the first minute, and the entry equals the one
    of the track decoded whole."""
    y = tone_mix(80.0, seed=10)
    spec = SeparationSpec()
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    growing = np.zeros_like(y)
    asked: list[int] = []

    def available(samples: int) -> None:  # the decode lands what is asked, no more
        asked.append(samples)
        at = max(asked)
        growing[:, :at] = y[:, :at]

    key = spec.key(y, SR)
    job = WorkerJob(growing, SR, spec, key, str(cache.root), 0, SimpleNamespace(value=0))
    assert stream_into_cache(
        growing,
        job,
        cache,
        key,
        cast(Any, Pipe()),
        workers=1,
        available=available,
    )
    plan = ChunkedSeparator(y, SR, spec).plan
    params = spec.settings_at(SR)
    reads = [
        y.shape[1] if plan.analysed(i)[1] == plan.frames else (plan.analysed(i)[1] - 1) * plan.hop
        for i in plan.order(0)
    ]
    level = level_samples(y.shape[1], sr=SR, n_fft=params.n_fft, hop=params.hop)
    assert level < 61 * SR  # the first minute, and a half window
    assert asked == [level, *reads] and reads[-1] == y.shape[1]
    # The same entry as the track's decoded whole gives.
    whole = SeparationCache(tmp_path / "whole", verify_on_load=False)
    job = WorkerJob(y, SR, spec, key, str(whole.root), 0, SimpleNamespace(value=0))
    assert stream_into_cache(y, job, whole, key, cast(Any, Pipe()), workers=1)
    grown, decoded = cache.load(key).entry, whole.load(key).entry
    assert grown is not None and decoded is not None
    np.testing.assert_array_equal(np.asarray(grown.channels), np.asarray(decoded.channels))


def test_the_chunk_under_the_play_head_goes_alone_then_two_at_a_time(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The first chunk of a run is separated alone (the first stems sooner: the other
    core is the daemon's decode, hash and beat analysis), the rest ``workers`` at once,
    each once, the next started before one is written, the last on every thread."""
    import threading
    import time

    y = tone_mix(5.5, seed=5)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    key = SPEC.key(y, SR)
    lock = threading.Lock()
    running: list[int] = []
    beside: dict[int, list[int]] = {}  # each chunk: the chunks running when it started
    calls: list[tuple[int, int]] = []  # (chunk, threads), each separation
    started_at_write: dict[int, list[int]] = {}  # each chunk written: those started by then
    real = ChunkedSeparator.chunk
    real_add = ChunkWriter.add_chunk
    size = round(CHUNK_S * SR / PARAMS.hop) * PARAMS.hop

    def chunk(self: ChunkedSeparator, i: int, *, threads: int = 1) -> Any:
        with lock:
            beside[i] = sorted(running)
            running.append(i)
            calls.append((i, threads))
        try:
            time.sleep(0.2)  # long enough for a second chunk to start, were it let
            return real(self, i, threads=threads)
        finally:
            with lock:
                running.remove(i)

    def add_chunk(self: ChunkWriter, start: int, *args: Any) -> None:
        # The chunks after it have started by the time chunk 2 is written (they were
        # submitted first: their threads are given up to 5 s to begin).
        deadline = time.monotonic() + (5.0 if start // size == 2 else 0.0)
        while True:
            with lock:
                started_at_write[start // size] = sorted(i for i, _ in calls)
            if len(started_at_write[start // size]) >= 3 or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        real_add(self, start, *args)

    monkeypatch.setattr(ChunkedSeparator, "chunk", chunk)
    monkeypatch.setattr(ChunkWriter, "add_chunk", add_chunk)
    head = SimpleNamespace(value=int(2.5 * SR))  # in chunk 2
    pipe: Any = Pipe()
    assert stream_into_cache(
        y, _job(y, head, key, cache.root), cache, key, pipe, workers=2, chunk_seconds=CHUNK_S
    )
    assert beside[2] == [] and not any(2 in others for others in beside.values())  # alone
    started_with_another = [i for i, others in beside.items() if others]
    assert len(beside) == 6 and started_with_another  # then two at a time
    assert all(len(others) == 1 for others in beside.values() if others)
    # Each chunk separated once; the last of the play order (2, 3, 4, 5, 1, 0) on
    # both threads, the others on one.
    assert sorted(calls) == [(0, 2), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    # The next chunks start before one is written: chunk 2's write (alone, then
    # two at a time) comes once 3 and 4 are under way.
    assert started_at_write[2] == [2, 3, 4]
    assert sorted(started_at_write) == [0, 1, 2, 3, 4, 5]
    first = next(m for m in pipe.sent if m[0] == "chunk")
    assert first[1] == 2 * round(CHUNK_S * SR / PARAMS.hop) * PARAMS.hop
