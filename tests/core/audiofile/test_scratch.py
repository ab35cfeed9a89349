"""Scratch files' maps found again from their arrays (core/audiofile/scratch.py): what
another process maps to read a track with no copy (daemon/beats_worker.py)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np

from conftest import scratch_map
from stemdeck.core.audiofile.scratch import mapped_file


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_map_and_its_views_are_found_at_their_offsets(tmp_path: Path) -> None:
    y = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)
    a = scratch_map(tmp_path, y)
    for view, offset in ((a, 0), (a[1], 4 * 1000), (a[:, 100:], 4 * 100), (a[1, 250:], 4 * 1250)):
        found = mapped_file(view)
        assert found is not None
        fd, at = found
        try:
            assert at == offset
            first = np.frombuffer(os.pread(fd, 4, at), np.float32)[0]
            assert first == view.flat[0]
            assert os.fstat(fd).st_size == y.nbytes
        finally:
            os.close(fd)


def test_an_array_of_the_heap_or_another_map_is_not_found(tmp_path: Path) -> None:
    assert mapped_file(np.zeros((2, 10), np.float32)) is None
    path = tmp_path / "raw.f32"
    np.zeros(20, np.float32).tofile(path)
    assert mapped_file(np.memmap(path, np.float32, "r")) is None  # not a scratch map


def test_the_kept_descriptor_goes_with_the_map(tmp_path: Path) -> None:
    gc.collect()  # what earlier tests left for the collector closes nothing in between
    before = _open_fds()
    a = scratch_map(tmp_path, np.ones((2, 500), np.float32))
    assert _open_fds() == before + 2  # the map's own and the one kept for mapped_file
    found = mapped_file(a)
    assert found is not None
    os.close(found[0])
    del a
    gc.collect()
    assert _open_fds() == before
