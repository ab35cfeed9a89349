"""`stemdeck prep`: a library separated in parallel by Dask, on this machine only.

Every cluster here listens on 127.0.0.1 (checked on the sockets themselves), the
tracks are a few seconds long and separated with the tiny test preset.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil
import pytest
import soundfile as sf
from prep_hold import hold_env

from conftest import SR, TINY, tone_mix
from stemdeck.core.audiofile.files import load
from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.beats.store import BeatRecord, BeatStore, audio_hash
from stemdeck.core.separation import prep as core_prep
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import load_separation_preset
from stemdeck.daemon.prep import PrepOptions, find_tracks, run_prep, summary_lines
from stemdeck.daemon.prep import cluster as prep_cluster
from stemdeck.daemon.prep import job as prep_job
from stemdeck.daemon.prep.index import INDEX_NAME

FAST = TINY
COMMON = ["--preset", str(FAST), "--components", "3"]
NAMES = ["component_01", "component_02", "component_03"]
TRACKS = ["a/one.wav", "a/deeper/two.flac", "three.wav"]
BROKEN = {
    "broken.wav": "'broken.wav' is not a readable audio file (Format not recognised.); "
    "use wav, flac, ogg or mp3",
    "empty.flac": "'empty.flac' is not a readable audio file (Format not recognised.); "
    "use wav, flac, ogg or mp3",
}


def make_library(root: Path, *, broken: bool = True, tracks: list[str] = TRACKS) -> Path:
    lib = root / "lib"
    for i, rel in enumerate(tracks):
        path = lib / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        subtype = "PCM_24" if path.suffix == ".flac" else "FLOAT"
        sf.write(path, tone_mix(2.0 + i, seed=i + 20).T, SR, subtype=subtype)
    if broken:
        (lib / "broken.wav").write_bytes(b"no header at all" + bytes(64))
        (lib / "empty.flac").write_bytes(b"")
    (lib / "notes.txt").write_text("not audio")
    (lib / ".hidden.wav").write_bytes(b"never looked at")
    return lib


def prep_cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "prep", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def separate_reference(track: Path, out: Path) -> Path:
    """What `stemdeck separate` writes for ``track``: in a process of its own (its
    default NMF threads) and with a cache of its own (so it separates by itself
    rather than reading what prep stored)."""
    done = subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "separate", str(track), "-o", str(out),
         *COMMON],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "STEMDECK_CACHE": str(out / "own-cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out / track.name.split(".")[0]


def assert_same_audio_file(a: Path, b: Path) -> None:
    """Same format and the very same samples (a float wav's PEAK chunk holds the time
    it was written, so the bytes of two runs differ there)."""
    ia, ib = sf.info(a), sf.info(b)
    assert (ia.format, ia.subtype, ia.samplerate, ia.channels, ia.frames) == (
        ib.format, ib.subtype, ib.samplerate, ib.channels, ib.frames
    )  # fmt: skip
    assert np.array_equal(sf.read(a, dtype="float32")[0], sf.read(b, dtype="float32")[0])


def listening(pids: list[int]) -> list[str]:
    """Every listening TCP/UDP address of these processes."""
    found = []
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr):
                found.append(f"{c.laddr.ip}:{c.laddr.port}")
    return found


def blas_threads() -> list[int]:
    """Threads of each BLAS/OpenMP pool loaded in this process (threadpoolctl): run
    on each worker."""
    from threadpoolctl import threadpool_info

    import stemdeck.core.separation.nmf  # noqa: F401  (loads numpy's BLAS)

    return [int(p["num_threads"]) for p in threadpool_info()]


def wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_find_tracks_recursive_skips_hidden_outputs_and_loops(tmp_path: Path) -> None:
    lib = make_library(tmp_path)
    (lib / "out").mkdir()
    sf.write(lib / "out" / "old.wav", tone_mix(0.5).T, SR)
    (lib / "loop").symlink_to(lib)  # a folder link is not followed
    found, problems = find_tracks([str(lib), str(tmp_path / "missing")], exclude=[lib / "out"])
    rels = [str(rel) for _, rel in found]
    assert rels == ["a/deeper/two.flac", "a/one.wav", "broken.wav", "empty.flac", "three.wav"]
    assert problems == [f"{str(tmp_path / 'missing')!r}: no such file or folder"]


@pytest.mark.e2e
def test_in_process_cluster_workers_without_the_cache_send_results_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers that do not see the client's cache folder (another machine) return
    the separation; the client stores it and writes the same files as `separate`."""
    import dask
    from distributed import LocalCluster

    lib = make_library(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setattr(core_prep, "sees_cache", lambda root, token: False)
    params = load_separation_preset(str(FAST)).with_overrides(n_components=3)
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",  # a real socket, on loopback
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=True,
    ) as cluster:
        (worker,) = cluster.scheduler.workers  # its address, as the report names it
        opts = PrepOptions(
            paths=[str(lib)],
            spec=SeparationSpec("components", params),
            fmt="wav",
            output=str(tmp_path / "out"),
            scheduler=cluster.scheduler_address,
            report=str(tmp_path / "report.json"),
            cache_root=str(cache),
        )
        # Tasks carry their track's bytes on purpose (a task must run again after a
        # worker died): Dask's large-graph warning must not fire, even set very low.
        with (
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "1kB"}),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            summary = run_prep(opts)
    assert [str(w.message) for w in caught if "graph" in str(w.message)] == []
    assert [(r.source, r.outcome) for r in sorted(summary.records, key=lambda r: r.index)] == [
        (str(lib / "a/deeper/two.flac"), "separated"),
        (str(lib / "a/one.wav"), "separated"),
        (str(lib / "broken.wav"), "failed"),
        (str(lib / "empty.flac"), "failed"),
        (str(lib / "three.wav"), "separated"),
    ]
    lines = summary_lines(summary)
    assert lines[0].endswith("3 separated, 0 cached, 0 up to date, 0 stem files, 2 failed"), lines
    assert lines[1:] == [f"failed: {lib / name}: {why}" for name, why in BROKEN.items()]
    report = json.loads((tmp_path / "report.json").read_text())
    store = SeparationCache(cache)
    beats = BeatStore(cache)
    for rec in report["tracks"]:
        if rec["outcome"] != "separated":
            assert rec["error"] == BROKEN[Path(rec["source"]).name]
            assert rec["beats"] is None
            continue
        y, sr = load(rec["source"])
        key = SeparationSpec("components", params).key(y, sr)
        assert rec["hash"] == key and rec["worker"] == worker
        assert rec["duration"] == round(y.shape[1] / sr, 3)
        assert store.load(key).found  # the client stored what came back
        # the beat grid came back with it, was kept in the beat store, and is reported
        analysis = analyze_beats(y, sr)
        assert beats.load(audio_hash(y, sr)) == BeatRecord(analysis)
        assert rec["beats"] == {
            "bpm": round(analysis.grid.bpm, 4),
            "downbeat": round(analysis.grid.downbeat, 4),
            "beats_per_bar": 4,
            "key": None,
        }
    # The same files `stemdeck separate` writes: format and every sample.
    for rel in TRACKS:
        ref = separate_reference(lib / rel, tmp_path / "ref")
        mine = tmp_path / "out" / Path(rel).parent / Path(rel).stem
        assert sorted(p.name for p in mine.iterdir()) == [f"{n}.wav" for n in NAMES]
        for name in NAMES:
            assert_same_audio_file(mine / f"{name}.wav", ref / f"{name}.wav")


@pytest.mark.e2e
def test_local_cluster_listens_on_loopback_with_single_threaded_blas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = make_library(tmp_path, broken=False, tracks=TRACKS[:1])
    seen: dict[str, Any] = {}

    def inspect(client) -> None:
        # Before any task: a worker comes up with the separation imported (forked from
        # this process, or importing it as it starts), not importing it in its first task.
        seen["ready"] = client.run(lambda: "stemdeck.core.separation.separate" in sys.modules)
        pids = list(client.run(os.getpid).values())
        seen["blas"] = client.run(blas_threads)
        seen["env"] = client.run(lambda: os.environ.get("OPENBLAS_NUM_THREADS"))
        seen["trim"] = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        seen["listening"] = listening([os.getpid(), *pids])
        seen["workers"] = list(client.scheduler_info()["workers"])
        seen["pids"] = pids
        seen["folders"] = list(client.run(lambda dask_worker: dask_worker.local_directory).values())
        # An exit handler of the worker's interpreter leaves a file: the process ends
        # without them (daemon/prep/worker.py), but only once its worker has closed.
        seen["handlers"] = client.run(_leave_a_file_at_exit, str(tmp_path / "exit-handler"))

    params = load_separation_preset(str(FAST)).with_overrides(n_components=3)
    opts = PrepOptions(paths=[str(lib)], spec=SeparationSpec("components", params), workers=2)
    summary = run_prep(opts, on_client=inspect)
    assert [r.outcome for r in summary.records] == ["separated"]
    assert summary.workers == 2 and len(seen["workers"]) == 2
    for threads in seen["blas"].values():
        assert threads and set(threads) == {1}
    assert set(seen["env"].values()) == {"1"}
    assert set(seen["ready"].values()) == {True}
    assert set(seen["trim"].values()) == {None}  # glibc's own: Dask's costs 10-20 % a track
    addresses = seen["listening"]
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    for w in seen["workers"]:
        assert w.startswith("tcp://127.0.0.1:")
    # The close: every worker's process is gone, its work folder removed by the worker
    # itself, and its interpreter never ran its exit handlers (nor, so, the 0.25-0.4 s
    # of finalizing every module it imported).
    assert set(seen["handlers"].values()) == {True}
    for pid in seen["pids"]:
        assert not Path(f"/proc/{pid}").exists()  # ended, and reaped by its nanny
    assert [Path(f).exists() for f in seen["folders"]] == [False, False]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("exit-handler")) == []


def _leave_a_file_at_exit(prefix: str) -> bool:
    import atexit

    atexit.register(lambda: Path(f"{prefix}-{os.getpid()}").write_text("ran"))
    return True


def test_a_worker_in_this_process_leaves_its_exit_alone() -> None:
    """The fast exit is for the process the nanny started, never for one that hosts a
    worker among other things (``processes=False``, as the tests' clusters do)."""
    import atexit

    from stemdeck.daemon.prep.worker import WorkerSetup

    before = atexit._ncallbacks()
    WorkerSetup().teardown(SimpleNamespace(nanny=None))  # no nanny, as processes=False
    WorkerSetup().teardown(SimpleNamespace(nanny="tcp://127.0.0.1:1"))  # not its child
    assert atexit._ncallbacks() == before


def _scheduler_address(info: Path) -> str | None:
    """The address in a scheduler file, or None while it is missing or half written."""
    try:
        address = json.loads(info.read_text()).get("address")
    except (OSError, ValueError, AttributeError):
        return None
    return address if isinstance(address, str) else None


@pytest.fixture
def scheduler_pair(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """A real `dask scheduler` and `dask worker` on 127.0.0.1."""
    info = tmp_path / "scheduler.json"
    quiet = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    common = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    sched = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--scheduler-file", str(info), *common],
        env=quiet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs = [sched]
    try:
        # Dask writes the file in place, not atomically: wait until it parses whole (the
        # worker reads it too).
        wait_for(lambda: _scheduler_address(info) is not None, what="the scheduler file")
        worker = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(info),
             "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1", *common],
            env=quiet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(worker)
        address = _scheduler_address(info)
        assert address is not None
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
            pids = list(client.run(os.getpid).values())
        yield address, [sched.pid, worker.pid, *pids]
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.e2e
@pytest.mark.slow
def test_scheduler_and_worker_pair_rerun_does_nothing(
    tmp_path: Path, scheduler_pair: tuple[str, list[int]]
) -> None:
    address, pids = scheduler_pair
    addresses = listening(pids)
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    assert address.startswith("tcp://127.0.0.1:")
    lib = make_library(tmp_path)
    env = {"STEMDECK_CACHE": str(tmp_path / "cache")}
    missing = str(tmp_path / "no such folder")
    args = [str(lib), missing, "--scheduler", address, "--report", str(tmp_path / "r.json")]
    first = prep_cli(*args, *COMMON, env=env)
    assert first.returncode == 1, first.stderr  # two broken files, one missing folder
    lines = first.stdout.splitlines()
    assert lines[0].endswith("3 separated, 0 cached, 0 up to date, 0 stem files, 2 failed")
    assert lines[1:] == [
        *(f"failed: {lib / name}: {why}" for name, why in BROKEN.items()),
        f"failed: {missing!r}: no such file or folder",
    ]
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(0 < r["finished"] <= report["seconds"] for r in report["tracks"])
    workers = {r["worker"] for r in report["tracks"] if r["outcome"] == "separated"}
    assert len(workers) == 1 and workers.pop().startswith("tcp://127.0.0.1:")
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries[0] == INDEX_NAME  # the rerun below stats the files, decodes none
    entries = [e for e in entries[1:] if e != "beats"]  # beats/: the grids, apart
    assert len(entries) == 3 and not any(e.startswith(".") for e in entries)
    assert len(list((tmp_path / "cache" / "beats").iterdir())) == 3
    again = prep_cli(*args, *COMMON, env=env)
    assert again.stdout.splitlines()[0].endswith(
        "0 separated, 3 cached, 0 up to date, 0 stem files, 2 failed"
    ), again.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["workers"] == 0  # nothing to do: the cluster was not even used
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [INDEX_NAME, *entries, "beats"]
    )


@pytest.mark.e2e
def test_a_worker_killed_mid_task_the_track_comes_out_once(tmp_path: Path) -> None:
    lib = make_library(tmp_path, broken=False, tracks=TRACKS[:1])
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), **hold_env(hold)}
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stemdeck.daemon.cli", "prep", str(lib), "--workers", "2",
         "--format", "wav", "-o", str(out), "--report", str(report), *COMMON],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: any(hold.iterdir()), what="the task to start")
        (first,) = hold.iterdir()
        victim = int(first.name.removeprefix("started-"))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(victim), what="the worker to die")
        (hold / "release").touch()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    started = sorted(p.name for p in hold.iterdir() if p.name.startswith("started-"))
    assert len(started) == 2 and f"started-{victim}" in started  # run again elsewhere
    (line,) = stdout.splitlines()
    assert line.endswith(": 1 separated, 0 cached, 0 up to date, 0 stem files, 0 failed")
    records = json.loads(report.read_text())["tracks"]
    assert [(r["source"], r["outcome"]) for r in records] == [(str(lib / TRACKS[0]), "separated")]
    assert sorted(p.name for p in (out / "a" / "one").iterdir()) == [f"{n}.wav" for n in NAMES]
    cache = tmp_path / "cache"
    assert len([p for p in cache.iterdir() if p.name[0] != "." and p.name != "beats"]) == 1
    assert len(list((cache / "beats").iterdir())) == 1  # the track's beat grid, once


def with_sigint(disposition: str) -> list[str]:
    """A command prefix: runs the command after it with SIGINT set to ``disposition``
    (``SIG_DFL`` or ``SIG_IGN``), which exec keeps."""
    return [
        sys.executable, "-c",
        f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{disposition}); "
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]  # fmt: skip


#: SIGINT at its default, as in a terminal's foreground job. A shell without job control
#: (a script, CI, ``pytest ... &``) starts a background command with SIGINT ignored;
#: that is inherited across fork and exec, and Python then leaves SIGINT ignored: a
#: Ctrl-C would reach prep and its workers and do nothing.
AS_FOREGROUND = with_sigint("SIG_DFL")


def sigint_in(mask: str, pid: int) -> bool:
    """Whether SIGINT is in the ``mask`` (SigIgn: ignored, SigBlk: blocked in its main
    thread) of the process ``pid`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{mask}:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError(f"no {mask} line for pid {pid}")


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_as_foreground_takes_ctrl_c_even_when_pytest_ignores_it() -> None:
    """The test below must not depend on how pytest was started: from a process
    that ignores SIGINT (as a background job does), AS_FOREGROUND still gives
    Python's KeyboardInterrupt handler."""
    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    python = [sys.executable, "-c", code]
    background = subprocess.run([*with_sigint("SIG_IGN"), *python], capture_output=True, text=True)
    assert background.stdout.split() == ["False"], background.stderr
    fixed = subprocess.run(
        [*with_sigint("SIG_IGN"), *AS_FOREGROUND, *python], capture_output=True, text=True
    )
    assert fixed.stdout.split() == ["True"], fixed.stderr


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_ctrl_c_while_the_cluster_starts_waits_and_what_starts_never_takes_it() -> None:
    """What ``PrepCluster`` starts the LocalCluster in: a Ctrl-C (here sent to this
    thread, so no other thread of pytest can take it) is raised only once the block
    is done, and a thread and a process started inside never take SIGINT."""
    import threading

    procs: list[subprocess.Popen] = []
    got_here = False

    def start() -> None:
        procs.append(subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                      stdin=subprocess.PIPE))  # fmt: skip

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with prep_cluster._no_ctrl_c():
                thread = threading.Thread(target=start)
                thread.start()
                thread.join()
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
                for _ in range(1000):  # bytecodes at which Python would raise it
                    pass
                got_here = True
        assert got_here
        (child,) = procs
        assert sigint_in("SigBlk", child.pid)
        assert not sigint_in("SigBlk", os.getpid())  # as it was
    finally:
        signal.signal(signal.SIGINT, old)
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(tmp_path: Path) -> None:
    lib = make_library(tmp_path, broken=False)
    hold = tmp_path / "hold"
    hold.mkdir()
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = {"STEMDECK_CACHE": str(cache)}
    args = [str(lib), "--workers", "2", "--format", "flac", "-o", str(out), *COMMON]
    proc = subprocess.Popen(
        [*AS_FOREGROUND, sys.executable, "-m", "stemdeck.daemon.cli", "prep", *args,
         "--report", str(tmp_path / "r.json")],
        env={**os.environ, **env, **hold_env(hold)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: any(hold.iterdir()), what="a task to start")
        workers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        # Ctrl-C is prep's to handle: the workers (those holding a task here) never
        # take it, or they print tracebacks as they stop.
        assert not sigint_in("SigIgn", proc.pid) and not sigint_in("SigBlk", proc.pid)
        for pid in [int(p.name.removeprefix("started-")) for p in hold.iterdir()]:
            assert sigint_in("SigBlk", pid), f"worker {pid} would take Ctrl-C"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "stemdeck: interrupted"
    assert "Traceback" not in stderr
    assert len(workers) >= 2  # the worker processes (and multiprocessing's helper)
    wait_for(lambda: not any(psutil.pid_exists(p) for p in workers), what="workers to end")
    assert not out.exists() or not any(out.rglob("*"))  # no partial output
    assert list(cache.iterdir()) == []  # no entry, no temporary folder, no token left
    records = json.loads((tmp_path / "r.json").read_text())["tracks"]
    assert {r["outcome"] for r in records} == {"cancelled"}
    again = prep_cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].endswith(
        "3 separated, 0 cached, 0 up to date, 0 stem files, 0 failed"
    )
    for rel in TRACKS:
        folder = out / Path(rel).parent / Path(rel).stem
        assert sorted(p.name for p in folder.iterdir()) == [f"{n}.flac" for n in NAMES]
        for name in NAMES:
            data, sr = sf.read(folder / f"{name}.flac", dtype="float32")
            assert sr == SR and np.isfinite(data).all()


@pytest.mark.e2e
def test_stem_files_are_those_separate_writes(tmp_path: Path) -> None:
    """Stems mode into NI Stems files, on an in-process cluster: the same file as
    `stemdeck separate --format stem.mp4` (every decoded sample, names, colours, tags),
    the rerun finds it up to date, and a rerun after the track changed redoes it."""

    from stemdeck.core.audiofile.decode import read_stem_file

    lib = make_library(tmp_path, broken=False, tracks=["album/song.wav"])
    params = load_separation_preset(str(FAST))
    out = tmp_path / "out"
    with in_process_cluster() as cluster:
        opts = PrepOptions(
            paths=[str(lib)],
            spec=SeparationSpec(params=params),
            fmt="stem.mp4",
            output=str(out),
            scheduler=cluster.scheduler_address,
            cache_root=str(tmp_path / "cache"),
        )
        assert [r.outcome for r in run_prep(opts).records] == ["separated"]
        assert [r.outcome for r in run_prep(opts).records] == ["up-to-date"]
        track = lib / "album" / "song.wav"
        os.utime(track, (time.time() + 5, time.time() + 5))  # the track is newer now
        assert [r.outcome for r in run_prep(opts).records] == ["cached"]  # rewritten
    done = subprocess.run(
        [sys.executable, "-m", "stemdeck.daemon.cli", "separate", str(track),
         "-o", str(tmp_path / "ref"), "--preset", str(FAST), "--format", "stem.mp4"],
        capture_output=True, text=True, timeout=120,
        # One BLAS thread, as the worker task runs: a sum split across threads rounds
        # differently (1e-5 apart, alone; the suite order used to hide it).
        env={**os.environ, "STEMDECK_CACHE": str(tmp_path / "ref-cache"),
             "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    mine = read_stem_file(out / "album" / "song.stem.mp4")
    ref = read_stem_file(tmp_path / "ref" / "song.stem.mp4")
    assert (mine.names, mine.colours, mine.sr, mine.tags) == (
        ref.names, ref.colours, ref.sr, ref.tags
    )  # fmt: skip
    assert np.array_equal(mine.stems, ref.stems)
    assert mine.master is not None and ref.master is not None
    assert np.array_equal(mine.master, ref.master)


def in_process_cluster():
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=True,
    )


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the client decodes from now on."""
    decoded: list[str] = []
    real = prep_job.decode_bytes

    def counting(data: bytes, *, suffix: str, name: str = "track"):
        decoded.append(name)
        return real(data, suffix=suffix, name=name)

    monkeypatch.setattr(prep_job, "decode_bytes", counting)
    return decoded


def outcomes(summary) -> list[tuple[str, str, str]]:
    return [
        (Path(r.source).name, r.outcome, r.hash)
        for r in sorted(summary.records, key=lambda r: r.index)
    ]


def components_job(lib: Path, cache: Path, **options: Any) -> PrepOptions:
    """Prep of ``lib`` into ``cache``: 3 components with the fast test preset."""
    params = load_separation_preset(str(FAST)).with_overrides(n_components=3)
    return PrepOptions(
        paths=[str(lib)],
        spec=SeparationSpec("components", params),
        cache_root=str(cache),
        **options,
    )


@pytest.mark.e2e
def test_a_rerun_only_stats_files_and_a_changed_file_is_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = make_library(tmp_path, broken=False)
    with in_process_cluster() as cluster:
        opts = components_job(lib, tmp_path / "cache", scheduler=cluster.scheduler_address)
        first = outcomes(run_prep(opts))
        assert [o for _, o, _ in first] == ["separated"] * 3
        decoded = count_decodes(monkeypatch)
        again = run_prep(opts)
        assert outcomes(again) == [(name, "cached", key) for name, _, key in first]
        assert decoded == [] and again.workers == 0
        assert [r.duration for r in sorted(again.records, key=lambda r: r.index)] == [3.0, 2.0, 4.0]

        one, three = lib / "a" / "one.wav", lib / "three.wav"
        st = one.stat()
        os.utime(one, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same audio
        sf.write(three, tone_mix(1.5, seed=99).T, SR, subtype="FLOAT")  # another song
        third = outcomes(run_prep(opts))
        assert decoded == ["one.wav", "three.wav"]
        assert third[:2] == [(name, "cached", key) for name, _, key in first[:2]]
        assert third[2][:2] == ("three.wav", "separated") and third[2][2] != first[2][2]
        decoded.clear()
        assert outcomes(run_prep(opts)) == [(n, "cached", k) for n, _, k in third]
        assert decoded == []


def _hostile_index(lib: Path, settings: str) -> dict:
    """A well-formed index whose record matches one.wav exactly, but whose key would
    lead out of the cache folder."""
    one = (lib / "a" / "one.wav").resolve()
    st = one.stat()
    escape = "../" * 3 + "x" * 40
    rec = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "duration": 4.0,
        "keys": {settings: escape},
    }
    return {"version": 1, "files": {str(one): rec}}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "damage",
    ["not json", "binary", "nested", "wrong types", "key out of the cache", "too large"],
)
def test_a_corrupt_or_hostile_index_is_ignored_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    from stemdeck.daemon.prep import index as prep_index

    lib = make_library(tmp_path, broken=False, tracks=TRACKS[:2])
    cache = tmp_path / "cache"
    with in_process_cluster() as cluster:
        opts = components_job(lib, cache, scheduler=cluster.scheduler_address)
        first = outcomes(run_prep(opts))

    index = cache / INDEX_NAME
    good = index.read_bytes()
    settings = opts.spec.digest
    wrong_types = {"size": "1", "mtime_ns": 1, "duration": 1.0, "keys": {}}
    damaged = {
        "not json": b'{"version": 1, "files": {',
        "binary": b"\xff\xfe\x00\x01" * 100,
        "nested": b"[" * 100_000,
        "wrong types": json.dumps({"version": 1, "files": {"/a.wav": wrong_types}}).encode(),
        "key out of the cache": json.dumps(_hostile_index(lib, settings)).encode(),
        "too large": good + b" " * 4096,
    }[damage]
    index.write_bytes(damaged)
    if damage == "too large":
        monkeypatch.setattr(prep_index, "MAX_INDEX_BYTES", len(good) + 1000)
    decoded = count_decodes(monkeypatch)
    monkeypatch.setattr(
        prep_cluster.PrepCluster, "connect", lambda self: pytest.fail("no cluster needed")
    )
    caplog.set_level("WARNING", logger="stemdeck")
    summary = run_prep(opts)
    assert outcomes(summary) == [(name, "cached", key) for name, _, key in first]
    assert decoded == ["two.flac", "one.wav"]  # hashed again
    warnings_ = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings_) == 1 and warnings_[0].startswith(f"prep index {str(index)!r} ignored (")
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == [INDEX_NAME]
    assert json.loads(index.read_bytes()) == json.loads(good)  # rewritten whole
    decoded.clear()
    assert outcomes(run_prep(opts)) == [(name, "cached", key) for name, _, key in first]
    assert decoded == []


@pytest.mark.e2e
def test_the_local_cluster_workers_take_the_keys_and_the_client_decodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its own LocalCluster the client only reads each file: the workers decode,
    hash, look the key up in the shared cache and separate. A broken file fails on a
    worker with the same line; a track already in the cache comes back `cached`; the
    files are those `stemdeck separate` writes."""
    lib = make_library(tmp_path, tracks=TRACKS[:2])
    cache, out = tmp_path / "cache", tmp_path / "out"
    opts = components_job(lib, cache, fmt="wav", output=str(out), workers=1)
    decoded = count_decodes(monkeypatch)
    first = run_prep(opts)
    records = sorted(first.records, key=lambda r: r.index)
    assert [(Path(r.source).name, r.outcome, r.error) for r in records] == [
        ("two.flac", "separated", None),
        ("one.wav", "separated", None),
        *((name, "failed", why) for name, why in BROKEN.items()),
    ]
    assert decoded == [] and {r.worker for r in records} == {records[0].worker}
    assert records[0].worker.startswith("tcp://127.0.0.1:")
    for r in records[:2]:
        y, sr = load(r.source)
        assert r.hash == opts.spec.key(y, sr)
        assert r.duration == y.shape[1] / sr
    ref = separate_reference(lib / TRACKS[0], tmp_path / "ref")
    for name in NAMES:
        assert_same_audio_file(out / "a" / "one" / f"{name}.wav", ref / f"{name}.wav")
    # In the cache, not in the index, the files gone: a worker finds the key.
    (cache / INDEX_NAME).unlink()
    shutil.rmtree(out)
    again = sorted(run_prep(opts).records, key=lambda r: r.index)
    assert [(r.outcome, r.hash) for r in again[:2]] == [("cached", r.hash) for r in records[:2]]
    assert decoded == [] and sorted(p.name for p in (out / "a" / "one").iterdir()) == [
        f"{n}.wav" for n in NAMES
    ]


@pytest.mark.e2e
def test_the_dashboard_is_served_on_loopback(tmp_path: Path) -> None:
    """`--dashboard`: Dask's dashboard answers on 127.0.0.1 while the job runs, and
    nothing of the job listens anywhere else."""
    pytest.importorskip("bokeh", reason="the dashboard needs bokeh")
    import urllib.request

    lib = make_library(tmp_path, broken=False, tracks=TRACKS[:1])
    seen: dict[str, Any] = {}

    def fetch(client) -> None:
        link = client.dashboard_link  # 8787, or a free port when that one is taken
        seen["link"] = link
        with urllib.request.urlopen(link, timeout=60) as page:
            seen["status"], seen["html"] = page.status, page.read().decode("utf-8", "replace")
        pids = list(client.run(os.getpid).values())
        seen["listening"] = listening([os.getpid(), *pids])

    opts = components_job(lib, tmp_path / "cache", workers=1, dashboard=True)
    assert [r.outcome for r in run_prep(opts, on_client=fetch).records] == ["separated"]
    assert str(seen["link"]).startswith("http://127.0.0.1:")
    assert seen["status"] == 200 and "Dask" in str(seen["html"])
    addresses = seen["listening"]
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses


def _bytes_path(folder: Path, name: bytes) -> Path:
    """``folder/name`` for a name that need not be UTF-8 (as Python gives it back)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["wav", "cache"])
def test_a_name_that_is_not_utf8_is_one_note_and_prep_goes_on(tmp_path: Path, fmt: str) -> None:
    """A Latin-1 name (from an old disk or a zip) was a UnicodeEncodeError traceback that
    stopped the whole library at that file, on every rerun."""
    lib = tmp_path / "lib"
    (lib / "x").mkdir(parents=True)
    os.rename(lib / "x", _bytes_path(lib, b"\xff dir"))
    names = [b"a.wav", b"caf\xe9 live.wav", b"\xff dir/song.wav"]
    for i, name in enumerate(names):
        sf.write(os.fsencode(lib) + b"/" + name, tone_mix(1.0 + i, seed=40 + i).T, SR)
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = [str(lib), "--format", fmt, "--report", str(report), "--workers", "1", *COMMON]
    if fmt != "cache":
        args += ["-o", str(out)]
    # A terminal's strict UTF-8, not the C locale's surrogateescape: nothing raw may reach it.
    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "PYTHONIOENCODING": "utf-8:strict"}
    shown = [f"{lib}/a.wav", f"{lib}/caf\\xe9 live.wav", f"{lib}/\\xff dir/song.wav"]
    note = (
        "its name is not UTF-8: a byte that is not is shown as \\xNN, and is _ in the names "
        "of its output files"
    )
    for outcome in ("separated", "up-to-date" if fmt == "wav" else "cached"):
        done = prep_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stdout.splitlines()
        counts = {"separated": "3 separated, 0 cached, 0 up to date",
                  "cached": "0 separated, 3 cached, 0 up to date",
                  "up-to-date": "0 separated, 0 cached, 3 up to date"}[outcome]  # fmt: skip
        assert lines[0].endswith(f"{counts}, 0 stem files, 0 failed"), lines
        assert lines[1:] == [f"note: {shown[1]}: {note}", f"note: {shown[2]}: {note}"]
        warned = [ln for ln in done.stderr.splitlines() if "UTF-8" in ln]
        assert warned == [f"stemdeck: warning: {s}: {note}" for s in shown[1:]]
        tracks = json.loads(report.read_text(encoding="utf-8"))["tracks"]
        assert [(t["source"], t["outcome"], t.get("note")) for t in tracks] == [
            (shown[0], outcome, None),
            (shown[1], outcome, note),
            (shown[2], outcome, note),
        ]
    if fmt == "wav":
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*.wav")) == [
            f"{folder}/{n}.wav" for folder in ("_ dir/song", "a", "caf_ live") for n in NAMES
        ]


@pytest.mark.e2e
@pytest.mark.slow
def test_two_tracks_whose_outputs_differ_only_in_case_are_one_failure(tmp_path: Path) -> None:
    """Hostile review, issue 21: Song.wav and SONG.wav were written to out/Song and
    out/SONG, one folder on a case-insensitive disk, the second set over the first."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, name in enumerate(["SONG.flac", "Song.wav"]):
        sf.write(lib / name, tone_mix(1.0, seed=60 + i).T, SR)
    out, report = tmp_path / "out", tmp_path / "report.json"
    env = {"STEMDECK_CACHE": str(tmp_path / "cache")}
    args = [str(lib), "--format", "wav", "-o", str(out), "--report", str(report)]
    done = prep_cli(*args, "--workers", "1", *COMMON, env=env)
    assert done.returncode == 1, done.stderr
    tracks = json.loads(report.read_text(encoding="utf-8"))["tracks"]
    assert [(t["source"], t["outcome"], t.get("error")) for t in tracks] == [
        (f"{lib}/SONG.flac", "separated", None),
        (f"{lib}/Song.wav", "failed", f"same output as {str(lib / 'SONG.flac')!r}; rename one"),
    ]
    assert [p.name for p in out.iterdir()] == ["SONG"]


def test_the_report_and_the_closing_lines_never_hold_a_raw_name(tmp_path: Path) -> None:
    from stemdeck.daemon.prep.report import NOT_UTF8, PrepSummary, Record, write_report

    bad = os.fsdecode(b"lib/caf\xe9 live.wav")
    summary = PrepSummary(
        records=[
            Record(bad, outcome="failed", error=os.fsdecode(b"caf\xe9 broke"), index=1),
            Record("lib/ok.wav", outcome="separated", index=0),
        ],
        problems=[os.fsdecode(b"lib/\xff: cannot be listed")],
    )
    lines = summary_lines(summary)
    assert lines[1:] == [
        "failed: lib/caf\\xe9 live.wav: caf\\xe9 broke",
        "failed: lib/\\xff: cannot be listed",
        f"note: lib/caf\\xe9 live.wav: {NOT_UTF8}",
    ]
    "\n".join(lines).encode("utf-8")  # what a strict terminal does
    write_report(str(tmp_path / "r.json"), summary)
    doc = json.loads((tmp_path / "r.json").read_bytes().decode("utf-8"))
    assert [(t["source"], t.get("error"), t.get("note")) for t in doc["tracks"]] == [
        ("lib/ok.wav", None, None),
        ("lib/caf\\xe9 live.wav", "caf\\xe9 broke", NOT_UTF8),
    ]
    assert doc["problems"] == ["lib/\\xff: cannot be listed"]
