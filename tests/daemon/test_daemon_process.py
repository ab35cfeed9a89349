"""The daemon killed: what it leaves behind (a playable recording, no worker)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_helpers import Daemon, poll, wait_played

from conftest import tone_mix

SR = 48000
pytestmark = pytest.mark.e2e  # `stemdeck serve` subprocesses


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _fork_servers(pid: int) -> set[int]:
    """``pid``'s children that are multiprocessing fork servers (the separation's)."""
    return {c for c in _children(pid) if b"multiprocessing.forkserver" in _cmdline(c)}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _workers(pid: int) -> set[int]:
    """The separation workers of the daemon ``pid``: its fork server's children named
    so (daemon/separation_run.py; a beat analysis is another: daemon/beats_worker.py)."""
    return {
        w
        for server in _fork_servers(pid)
        for w in _children(server)
        if _comm(w) == "stemdeck-worker"
    }


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkill_leaves_a_playable_recording_and_no_worker(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    # Long enough that separation is still running when the daemon is killed.
    sf.write(library / "long.wav", tone_mix(90.0, sr=SR).T, SR, subtype="FLOAT")
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    rec = tmp_path / "rec.wav"
    daemon = Daemon([str(library / "long.wav"), "--no-audio", "--record", str(rec)], env, tmp_path)
    try:
        daemon.wait_ready(separated=False)
        deadline = time.monotonic() + 30
        workers: set[int] = set()
        while not workers and time.monotonic() < deadline:
            workers = _workers(daemon.proc.pid)
            time.sleep(0.05)
        assert len(workers) == 1, "no separation worker"
        servers = _fork_servers(daemon.proc.pid)
        status = daemon.client.query("/status")
        # Still separating: before the first chunk (``separating N% (STAGE M%)``) or with
        # the stems under the play head playing (``stems N% ready``, N < 100), by the
        # worker's pace (daemon/status.py).
        state = status.split(" | ")[0]
        assert re.fullmatch(
            r"long playing \d+:\d\d\.\d/1:30\.0 (120\.0 BPM )?"  # the grid, once analysed
            r"(separating \d+% \(\w+( \d+%)?\)|stems \d% ready|stems [1-9]\d% ready)",
            state,
        ), status
        cpus = os.sched_getaffinity(0)
        if "SCHED_FIFO" in status and len(cpus) > 1:
            # The audio thread pinned the daemon's threads to one CPU
            # (daemon/realtime.py); the separation, a child, has every CPU back.
            found = re.search(r"threads on CPU (\d+)\b", status)
            assert found is not None, status
            cpu = int(found[1])
            assert cpu in cpus
            tasks = list(Path(f"/proc/{daemon.proc.pid}/task").iterdir())
            assert {frozenset(os.sched_getaffinity(int(t.name))) for t in tasks} == {
                frozenset({cpu})
            }
            (separation,) = workers
            assert os.sched_getaffinity(separation) == cpus
        # A track longer than the first piece crosses to the worker as the file it is
        # decoded into, not in shared memory (daemon/separation_worker.py).
        shared = Path("/dev/shm")
        pattern = f"stemdeck-{daemon.proc.pid}-*"
        assert list(shared.glob(pattern)) == []
        (worker,) = workers
        maps = Path(f"/proc/{worker}/maps").read_text()
        assert re.search(r"/\.tmp-original-\d+-[0-9a-f]{8} \(deleted\)$", maps, re.M), maps
        # 2 s played: a header every 0.5 s leaves at least a second in the file (below)
        wait_played(daemon.client, 2.0)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        deadline = time.monotonic() + 3
        while any(_alive(w) for w in workers | servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "the worker outlived the daemon"
        assert not any(_alive(s) for s in servers), "the fork server outlived the daemon"
        # multiprocessing's resource tracker outlives both and releases the memory.
        poll(lambda: list(shared.glob(pattern)), lambda left: left == [], "shared memory released")
        daemon._reader.join(timeout=10)  # stderr ends when the worker (sharing it) is gone
        err = daemon.stderr
        assert "Traceback" not in err, err
    finally:
        daemon.stop()
    info = sf.info(rec)
    assert info.samplerate == SR and info.channels == 2
    assert info.frames >= SR  # at most a second lost (header every 0.5 s)
    data, _ = sf.read(rec, dtype="float32")
    assert len(data) == info.frames and np.isfinite(data).all()
    assert np.abs(data[SR // 2 :]).max() > 0.05  # the music, not silence
    assert os.path.getsize(rec) >= 58 + info.frames * 8


def test_a_damaged_cache_entry_is_never_played(tmp_path: Path) -> None:
    """4 KiB of NaN in the middle of a cached track: found before it plays, rebuilt."""
    from stemdeck.core.separation.cache import SeparationCache
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.core.separation.presets import SeparationParams
    from stemdeck.core.separation.separate import separate

    library = tmp_path / "library"
    library.mkdir()
    y = tone_mix(10.0, sr=SR)
    sf.write(library / "song.wav", y.T, SR, subtype="FLOAT")
    cache = SeparationCache(tmp_path / "cache")
    separate(y, SR, spec=SeparationSpec("stems", SeparationParams()), cache=cache)
    (entry,) = [p for p in cache.root.iterdir() if not p.name.startswith(".")]
    data = entry / "channels.f32"
    assert data.stat().st_size > 8 * 2**20
    with data.open("r+b") as f:  # the middle of the second channel's left side
        f.seek(data.stat().st_size // 4 + 4 * SR * 2)
        f.write(np.full(1024, np.nan, np.float32).tobytes())
    env = {"STEMDECK_CACHE": str(cache.root), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    rec = tmp_path / "rec.wav"
    daemon = Daemon([str(library / "song.wav"), "--no-audio", "--record", str(rec)], env, tmp_path)
    try:
        daemon.wait_ready()
        daemon.client.send("/transport/seek", 1.9)  # play across the damaged samples
        # the seek applied (the play head was anywhere before it), then a second played
        poll(
            lambda: daemon.client.query("/transport/position"),
            lambda p: 1.9 <= p < 2.5,
            "the play head at 1.9 s",
        )
        wait_played(daemon.client, 1.0)
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    assert "damaged" in err and "checksum mismatch" in err, err
    audio, _ = sf.read(rec, dtype="float32")
    assert len(audio) > SR and np.isfinite(audio).all()
    rebuilt = SeparationCache(cache.root).load(entry.name).entry
    assert rebuilt is not None and np.isfinite(np.asarray(rebuilt.channels)).all()


def _has_thread(pid: int, name: str) -> bool:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    found = False
    for task in tasks:
        try:
            found |= (task / "comm").read_text().strip() == name
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_sigterm_during_the_beat_analysis_exits_at_once(tmp_path: Path) -> None:
    """Stopped while the beat analysis runs: out within seconds, with status 0.

    The analysis is a daemon thread, left running at exit. Python's finalization
    around it ended the daemon once in a few stops with SIGABRT (the thread inside
    libsoxr's C++ when the interpreter forced it to exit: std::terminate) or never
    (OpenBLAS's exit handler waiting for a helper thread the analysis had left
    mid-product, after ``stopped``): the daemon now ends its process itself once it
    has shut down (daemon/cli/commands.py). Each stop lands somewhere else in the
    analysis, so the test stops four daemons."""
    track = tmp_path / "long.wav"
    # 8 minutes: the analysis takes over a second even alone on a fast machine
    sf.write(track, np.tile(tone_mix(60.0, sr=SR), 8).T, SR, subtype="PCM_16")
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    for run in range(4):
        daemon = Daemon([str(track), "--no-audio", "--no-cache"], env, tmp_path, verbose=True)
        try:
            daemon.wait_ready(separated=False)
            pid = daemon.proc.pid
            poll(lambda: _has_thread(pid, "stemdeck-beats"), bool, "analysis runs")  # noqa: B023
            time.sleep(0.15 * run)  # at another point of the analysis each time
            assert _has_thread(pid, "stemdeck-beats"), "the analysis ended first"
            daemon.proc.terminate()
            code = daemon.proc.wait(timeout=20)
        finally:
            daemon.stop()
        assert code == 0, daemon.stderr
        blas = [line for line in daemon.stderr.splitlines() if "BLAS: " in line]
        assert len(blas) == 1, daemon.stderr
        pools = blas[0].count("openblas")  # numpy's, and scipy's where it is loaded
        one = ", ".join(["openblas 1 thread"] * pools)
        assert pools >= 1 and blas == [f"stemdeck: debug: BLAS: {one} (the daemon's own calls)"]


def _mapped_files(pid: int) -> set[str]:
    """The files ``pid`` has mapped (its libraries among them)."""
    return {
        line.split(maxsplit=5)[5]
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if len(line.split(maxsplit=5)) == 6 and line.split(maxsplit=5)[5].startswith("/")
    }


def _scipy_files(pid: int) -> list[str]:
    return sorted(f for f in _mapped_files(pid) if "/scipy" in f)


def test_the_daemon_never_loads_the_separation_stack(tmp_path: Path) -> None:
    """The separation (scipy's compiled FFT, ``core/separation/fft.py``; scipy whole
    held ~18 MB of the daemon's memory for nothing) runs in the worker, never in the
    daemon. Seen in the libraries the daemon's process maps, once a track was loaded,
    separated (uncached) and its beats analysed; the fork server maps scipy's FFT
    module alone (the check sees it), and no more of scipy: not its OpenBLAS."""
    library = tmp_path / "library"
    library.mkdir()
    sf.write(library / "song.wav", tone_mix(10.0, sr=SR).T, SR, subtype="FLOAT")
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    daemon = Daemon([str(library / "song.wav"), "--no-audio"], env, tmp_path)

    def bpm() -> float | None:
        try:
            return float(daemon.client.query("/track/bpm"))
        except AssertionError:  # no grid yet: an /error
            return None

    try:
        daemon.wait_ready()  # separated: the fork server's imports are long done
        poll(bpm, lambda v: v is not None, "the beat grid")
        assert _scipy_files(daemon.proc.pid) == []
        (server,) = _fork_servers(daemon.proc.pid)
        assert [Path(f).parent.name for f in _scipy_files(server)] == ["_pocketfft"]
    finally:
        code, err = daemon.stop()
    assert code == 0, err
