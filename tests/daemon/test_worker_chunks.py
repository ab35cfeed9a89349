"""The separation worker's chunks: written into the cache in play order from a play
head it re-reads before each chunk, each reported as it lands (in-process, no worker)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from conftest import SR, tone_mix
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.daemon.separation_run import stream_into_cache
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


def test_chunks_land_in_play_order_from_the_head_read_before_each(tmp_path: Path) -> None:
    y = tone_mix(5.5, seed=5)
    cache = SeparationCache(tmp_path / "cache", verify_on_load=False)
    key = SPEC.key(y, SR)
    head = SimpleNamespace(value=int(1.2 * SR))  # in chunk 1
    size = round(CHUNK_S * SR / PARAMS.hop) * PARAMS.hop

    def seek(message: tuple[Any, ...]) -> None:
        if message[1] == size:  # chunk 1 landed: the performer jumps to chunk 4
            head.value = 4 * size + 10

    pipe: Any = Pipe(seek)  # what the worker uses of a Connection
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
