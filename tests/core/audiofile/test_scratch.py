"""Scratch files' maps found again from their arrays (core/audiofile/scratch.py): what
another process maps to read a track with no copy (daemon/beats_worker.py)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import open_fds, scratch_map
from stemdeck.core.audiofile.scratch import WRITE_PIECE, mapped_file, new_file, write_at


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
    before = open_fds()
    a = scratch_map(tmp_path, np.ones((2, 500), np.float32))
    assert open_fds() == before + 2  # the map's own and the one kept for mapped_file
    found = mapped_file(a)
    assert found is not None
    os.close(found[0])
    del a
    gc.collect()
    assert open_fds() == before


def test_a_write_goes_in_pieces_of_at_most_write_piece(tmp_path: Path, pwrites: list[int]) -> None:
    y = np.arange(2 * WRITE_PIECE + 100, dtype=np.float32)  # 8 pieces and 400 bytes
    assert np.array_equal(written_back(tmp_path, y, 8), y)
    assert pwrites == [WRITE_PIECE] * 8 + [400]


def written_back(folder: Path, y: np.ndarray, offset: int) -> np.ndarray:
    """``y`` written by :func:`write_at` at ``offset`` of a new scratch file, read back."""
    fd = new_file(folder, offset + y.nbytes)
    try:
        write_at(fd, y, offset)
        return np.frombuffer(os.pread(fd, y.nbytes, offset), np.float32)
    finally:
        os.close(fd)


def test_a_short_write_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: real(fd, memoryview(data)[:1000], at))
    y = np.arange(3000, dtype=np.float32)
    assert np.array_equal(written_back(tmp_path, y, 0), y)


def test_a_write_that_takes_nothing_is_an_error_not_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def nothing(fd: int, data: memoryview, at: int) -> int:
        calls.append(at)
        if len(calls) > 3:  # a loop: fail here rather than at the suite's timeout
            raise AssertionError("write_at went on writing")
        return 0

    monkeypatch.setattr(os, "pwrite", nothing)
    fd = new_file(tmp_path, 400)
    try:
        with pytest.raises(OSError, match=r"^\[Errno 5\] write of 400 bytes at 12 took none$"):
            write_at(fd, np.zeros(100, np.float32), 12)
        assert calls == [12]
    finally:
        os.close(fd)
