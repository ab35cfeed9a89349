"""The beat analysis in a process of its own (daemon/beats_worker.py): the same
analysis as in the daemon's thread, the samples shared with no copy, its errors one
line each, its end without an answer an error, nothing of it left behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import poll
from threadpoolctl import threadpool_limits

from conftest import scratch_map
from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.errors import AudioFileError, ParameterError
from stemdeck.core.material.demo import demo_track
from stemdeck.daemon import beats_worker
from stemdeck.daemon.beats_worker import BeatProcessError, analyze_apart
from stemdeck.daemon.forkserver import worker_context
from stemdeck.daemon.track_beats import TrackBeats

pytestmark = pytest.mark.e2e  # processes

SECONDS = 12


@pytest.fixture(scope="module")
def track() -> tuple[np.ndarray, int]:
    demo = demo_track(seconds=SECONDS)
    return np.ascontiguousarray(demo.mix, np.float32), demo.sr


def _here(y: np.ndarray, sr: int) -> Any:
    with threadpool_limits(1, user_api="blas"):  # as the daemon and the process run it
        return analyze_beats(y, sr)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _segments() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"stemdeck-{os.getpid()}-*"))


def test_a_mapped_track_and_its_view_are_analysed_as_here(
    tmp_path: Path, track: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    y, sr = track
    mapped = scratch_map(tmp_path, y)
    shared: list[object] = []
    real = beats_worker.share_audio

    def share(a: np.ndarray) -> Any:
        shared.append(a)
        return real(a)

    monkeypatch.setattr(beats_worker, "share_audio", share)
    assert analyze_apart(mapped, sr) == _here(y, sr)
    before = _fds()  # the fork server's own descriptors are there from the first start
    assert analyze_apart(mapped, sr) == _here(y, sr)
    view = mapped[:, sr : sr * (SECONDS - 2)]  # not contiguous: rows of the whole file
    assert analyze_apart(view, sr) == _here(np.ascontiguousarray(view), sr)
    assert shared == []  # the file went, not a copy
    assert _fds() == before  # no descriptor left


def test_samples_of_the_heap_go_through_a_segment_or_with_the_start(
    track: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    y, sr = track
    expected = _here(y, sr)
    assert analyze_apart(y.copy(), sr) == expected
    assert _segments() == []  # released

    def no_room(a: np.ndarray) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(beats_worker, "share_audio", no_room)  # an unlinked file then
    before = _fds()
    assert analyze_apart(y.copy(), sr) == expected
    assert _fds() == before


def test_a_spawned_process_is_niced_too(
    track: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no fork server: the niceness is start_child's, not inherited."""
    y, sr = track
    seen: list[int] = []
    real = beats_worker.start_child

    def start(context: Any, process: Any, nice: int) -> None:
        real(context, process, nice)
        seen.append(os.getpriority(os.PRIO_PROCESS, process.pid))

    monkeypatch.setattr(beats_worker, "start_child", start)
    assert analyze_apart(y, sr, context=mp.get_context("spawn")) == _here(y, sr)
    assert seen == [10]


def test_a_superseded_analysis_is_ended(
    track: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer track's start ends the older track's process (killed, no warning), and
    the newer grid is published."""
    y, sr = track
    long = np.tile(y, 20)  # four minutes: seconds of analysis
    codes: list[int | None] = []
    real = beats_worker._reap

    def reap(process: Any) -> None:
        process.join(5)
        codes.append(process.exitcode)
        real(process)

    monkeypatch.setattr(beats_worker, "_reap", reap)
    started: list[int] = []
    start = beats_worker.start_child

    def count(context: Any, process: Any, nice: int) -> None:
        start(context, process, nice)
        started.append(process.pid)

    monkeypatch.setattr(beats_worker, "start_child", count)
    beats = TrackBeats(None, analyze=analyze_apart)
    first = beats.start(long, sr, 1, "long")
    poll(lambda: len(started), lambda n: n == 1, "the first analysis started")
    second = beats.start(y, sr, 2, "short")
    first.join(30)
    second.join(30)
    assert codes == [-signal.SIGKILL, 0]
    assert beats.grid() == _here(y, sr).grid.normalized()
    assert [r.getMessage() for r in caplog.records if "no beat grid" in r.getMessage()] == []


def test_the_process_is_forked_from_the_server_and_niced(
    track: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    y, sr = track
    seen: list[tuple[int, int]] = []
    real = beats_worker.start_child

    def start(context: Any, process: Any, nice: int) -> None:
        real(context, process, nice)
        ppid = int(Path(f"/proc/{process.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
        seen.append((os.getpriority(os.PRIO_PROCESS, process.pid), ppid))

    monkeypatch.setattr(beats_worker, "start_child", start)
    analyze_apart(y, sr, context=worker_context())
    ((nice, parent),) = seen
    assert nice == 10
    assert parent != os.getpid()  # the fork server's child, not ours
    assert b"multiprocessing.forkserver" in Path(f"/proc/{parent}/cmdline").read_bytes()


def test_the_analysis_errors_come_back_as_themselves(track: tuple[np.ndarray, int]) -> None:
    y, sr = track
    with pytest.raises(ParameterError) as short:
        analyze_apart(y[:, :sr], sr)
    assert str(short.value) == "track is 1.00 s long: a beat grid needs at least 2 s of audio"
    bad = y.copy()
    bad[1, 5:8] = np.nan
    with pytest.raises(AudioFileError) as nan:
        analyze_apart(bad, sr)
    assert str(nan.value) == "track: 3 samples are NaN or infinite; re-export the file"
    assert _segments() == []


def test_a_process_that_ends_without_an_answer_is_an_error(
    track: tuple[np.ndarray, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    y, sr = track
    real = beats_worker.start_child

    def start_and_kill(context: Any, process: Any, nice: int) -> None:
        real(context, process, nice)
        os.kill(process.pid, 9)

    monkeypatch.setattr(beats_worker, "start_child", start_and_kill)
    with pytest.raises(BeatProcessError) as ended:
        analyze_apart(y.copy(), sr)
    assert str(ended.value) == ("the beat analysis process ended without an answer (exit code -9)")
    assert _segments() == []
