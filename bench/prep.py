"""Library prep throughput: Dask with 1 and 2 workers against a plain loop.

Twelve one-minute stereo 44.1 kHz songs from stemdeck's synthesizer
(``core/material/songs.py``, seeds 301-312) are written as wav files, then
separated (stems mode, the ``default`` preset, into a fresh cache each time)
three ways, side by side in this one run:

- **loop**: a plain loop over the same task function the workers run
  (``daemon/prep/cluster.py``, one thread, single-threaded BLAS), in a fresh process
  like each worker, its imports done before its clock starts;
- **dask 1**, **dask 2**: ``stemdeck prep`` as a user runs it (``run_prep``:
  a LocalCluster of 1 or 2 worker processes, the client's hashing, the
  transfers, the progress), cluster start-up included.

Printed: tracks per minute for each; Dask's overhead against the loop (target
<= 5 %), with and without the cluster's start-up, and in the steady state (from
the first track out to the last, per track); peak RSS of each worker
process (its kernel high-water mark); the BLAS threads each worker reports
(threadpoolctl); and what 10,000 tracks would take from the measured rate. With
``--rounds N`` each figure is the median of N rounds.

    .venv/bin/python bench/prep.py [--rounds 1] [--tracks 12] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Any


def make_tracks(folder: Path, n: int, seconds: float) -> list[Path]:
    import soundfile as sf

    from stemdeck.core.material.songs import random_song, render_song

    paths = []
    for i in range(n):
        spec = random_song(301 + i)
        bars = int(seconds * spec.bpm / 240) + 1  # 4 beats a bar
        song = render_song(replace(spec, bars=bars), sr=44100)
        path = folder / f"song-{301 + i}.wav"
        sf.write(path, song.mix[:, : int(seconds * 44100)].T, 44100, subtype="PCM_16")
        paths.append(path)
    return paths


class PeakRss:
    """Peak resident memory of the worker processes: the kernel's high-water mark
    (VmHWM), read every 0.5 s from ``/proc`` for the pids given (cheap: the bench
    must not take CPU from the workers it measures)."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/status", encoding="ascii") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            kib = int(line.split()[1])
                            self.peaks[pid] = max(self.peaks.get(pid, 0), kib * 1024)
            except OSError:  # the worker has ended: its last reading stands
                continue

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._read()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def plain_loop(paths: list[Path], preset: str, cache_root: Path) -> tuple[float, float]:
    """Seconds for all the tracks, and until the first was done, in a fresh process.

    A plain loop as a user would run it: its own interpreter, one thread,
    single-threaded BLAS (the workers' environment), the imports done before the
    clock starts (as the client's are). Fresh, like each Dask worker: a process's
    first track is 0.3-0.5 s slower than the rest (its heap and caches are cold),
    and a loop run in this process after the others would not pay that."""
    import json
    import subprocess
    import sys

    from stemdeck.daemon.prep.cluster import SINGLE_THREAD_ENV

    cmd = [sys.executable, __file__, "--loop-process", preset, str(cache_root)]
    cmd += [str(p) for p in paths]
    done = subprocess.run(
        cmd, env={**os.environ, **SINGLE_THREAD_ENV}, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the loop's process failed:\n{done.stderr}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return got["total"], got["first"]


def loop_process(preset: str, cache_root: Path, paths: list[Path]) -> None:
    """The loop's process: the same task function the workers run, track after track."""
    import json

    import distributed  # noqa: F401  (a worker has it imported before its first task)
    from threadpoolctl import threadpool_limits

    from stemdeck.core.separation import nmf, separate  # noqa: F401  (as the worker plugin)
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.core.separation.prep import TOKEN_PREFIX
    from stemdeck.core.separation.presets import load_separation_preset
    from stemdeck.daemon.prep.cluster import prep_task

    params = load_separation_preset(preset)
    threadpool_limits(limits=1)
    cache_root.mkdir(parents=True)
    token = "bench"
    (cache_root / f"{TOKEN_PREFIX}{token}").write_text(token)
    t0 = time.perf_counter()
    first = 0.0
    for path in paths:
        _, result = prep_task(
            path.read_bytes(),
            suffix=path.suffix,
            name=path.name,
            spec=SeparationSpec(params=params),
            cache_root=str(cache_root),
            cache_token=token,
        )
        assert result.error is None and result.entry is not None, result.error
        first = first or time.perf_counter() - t0
    print(json.dumps({"total": time.perf_counter() - t0, "first": first}))


def blas_threads() -> list[int]:
    """Threads of each BLAS/OpenMP pool loaded in this process (threadpoolctl): run on
    each worker."""
    from threadpoolctl import threadpool_info

    import stemdeck.core.separation.nmf  # noqa: F401  (loads numpy's BLAS)

    return [int(p["num_threads"]) for p in threadpool_info()]


def dask_run(paths: list[Path], params: Any, cache_root: Path, workers: int) -> dict[str, Any]:
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.daemon.prep import PrepOptions, run_prep

    seen: dict[str, Any] = {}

    def on_client(client: Any) -> None:
        seen["up"] = time.perf_counter()
        seen["blas"] = sorted(client.run(blas_threads).values())
        rss.pids = list(client.run(os.getpid).values())

    opts = PrepOptions(
        paths=[str(paths[0].parent)],
        spec=SeparationSpec(params=params),
        workers=workers,
        cache_root=str(cache_root),
    )
    rss = PeakRss()
    with rss:
        t0 = time.perf_counter()
        summary = run_prep(opts, on_client=on_client)
        total = time.perf_counter() - t0
    outcomes = {r.outcome for r in summary.records}
    assert outcomes == {"separated"} and len(summary.records) == len(paths), outcomes
    finished = sorted(r.finished for r in summary.records)
    return {
        "total": total,
        "after_start": total - (seen["up"] - t0),
        # Between the first track out and the last: no start-up, warm-up or close.
        "per_track_steady": (finished[-1] - finished[0]) / (len(finished) - 1),
        # Where the time goes, from the start of run_prep: the cluster up (workers
        # registered), the first track out, the last, and the end (closed).
        "timeline": (seen["up"] - t0, finished[0], finished[-1], total),
        "rss": sorted(rss.peaks.values()),
        "blas": seen["blas"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tracks", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--loop-process", nargs="+", metavar=("PRESET", "CACHE TRACK"))
    args = ap.parse_args()
    if args.loop_process:
        preset, cache, *tracks = args.loop_process
        loop_process(preset, Path(cache), [Path(t) for t in tracks])
        return

    # The client's imports, like the loop's, are done before any clock starts.
    import distributed  # noqa: F401

    from stemdeck.core.separation.presets import load_separation_preset

    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; OPENBLAS_CORETYPE is "
        f"{'set: ' + coretype if coretype else 'unset'}; "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    params = load_separation_preset(args.preset)
    rows: dict[str, list[float]] = {"loop": [], "dask 1": [], "dask 2": []}
    after_start: dict[str, list[float]] = {"dask 1": [], "dask 2": []}
    per_track: dict[str, list[float]] = {"dask 1": [], "dask 2": []}
    rss: dict[str, list[int]] = {"dask 1": [], "dask 2": []}
    blas: dict[str, list[int]] = {}
    loop_first: list[float] = []
    timeline: dict[str, list[tuple[float, float, float, float]]] = {"dask 1": [], "dask 2": []}
    with tempfile.TemporaryDirectory(prefix="stemdeck-bench-prep-") as tmp:
        root = Path(tmp)
        (root / "tracks").mkdir()
        t0 = time.perf_counter()
        paths = make_tracks(root / "tracks", args.tracks, args.seconds)
        print(
            f"{len(paths)} tracks of {args.seconds:.0f} s (stereo, 44.1 kHz) made in "
            f"{time.perf_counter() - t0:.1f} s; stems mode, preset {args.preset}; "
            f"{args.rounds} round(s), each loop, dask 1, dask 2 side by side"
        )
        for r in range(args.rounds):
            loop_total, first = plain_loop(paths, args.preset, root / f"loop-{r}")
            rows["loop"].append(loop_total)
            loop_first.append(first)
            for workers in (1, 2):
                name = f"dask {workers}"
                res = dask_run(paths, params, root / f"dask{workers}-{r}", workers)
                rows[name].append(res["total"])
                after_start[name].append(res["after_start"])
                per_track[name].append(res["per_track_steady"])
                rss[name].extend(res["rss"])
                blas[name] = res["blas"]
                timeline[name].append(res["timeline"])
            print(
                f"  round {r + 1}: loop {rows['loop'][-1]:.1f} s, dask 1 "
                f"{rows['dask 1'][-1]:.1f} s, dask 2 {rows['dask 2'][-1]:.1f} s"
            )
    n = len(paths)
    loop = median(rows["loop"])

    def vs_loop(times: list[float], *, per: float = 1.0) -> float:
        """Median over the rounds of (time / the same round's loop time) - 1, in %."""
        return (median(t / (lp / per) for t, lp in zip(times, rows["loop"], strict=True)) - 1) * 100

    print(f"\n{'run':<8} {'wall s':>8} {'tracks/min':>11} {'vs loop':>9} {'after start':>12}")
    for name, times in rows.items():
        wall = median(times)
        extra = ""
        if name in after_start:
            extra = f"{vs_loop(times):+8.1f}% {vs_loop(after_start[name]):+11.1f}%"
        print(f"{name:<8} {wall:8.1f} {n / wall * 60:11.2f} {extra}")
    print(
        f"\nDask overhead with 1 worker (medians of per-round ratios): "
        f"{vs_loop(rows['dask 1']):+.1f} % in all (target <= 5 %), "
        f"{vs_loop(after_start['dask 1']):+.1f} % after the cluster's start-up, "
        f"{vs_loop(per_track['dask 1'], per=n):+.1f} % in the steady state "
        f"({median(per_track['dask 1']):.2f} s a track between the first out and the last, "
        f"loop {loop / n:.2f} s)"
    )
    print(f"timeline, medians (s): loop first track out {median(loop_first):.2f}, all {loop:.2f}")
    for name, marks in timeline.items():
        up, first_out, last_out, end = (median(m[i] for m in marks) for i in range(4))
        print(
            f"  {name}: cluster up {up:.2f}, first track out {first_out:.2f}, last "
            f"{last_out:.2f}, closed {end:.2f} (close {end - last_out:.2f})"
        )
    print(
        "speed-up of 2 workers over 1: "
        f"{median(a / b for a, b in zip(rows['dask 1'], rows['dask 2'], strict=True)):.2f}x"
    )
    for name, peaks in rss.items():
        mib = ", ".join(f"{p / 2**20:.0f}" for p in sorted(peaks))
        print(f"peak RSS per worker process, {name}: {mib} MiB; BLAS threads: {blas[name]}")
    rate = n / median(rows["dask 2"]) * 60  # tracks a minute, one-minute tracks
    audio_rate = rate * args.seconds / 60  # audio minutes separated per minute
    print(
        f"\n10,000 tracks from this rate ({audio_rate:.1f} audio minutes a minute, "
        f"2 workers): {args.seconds:.0f}-second tracks {10_000 / rate / 60:.1f} h; "
        f"4-minute tracks {10_000 * 4 / audio_rate / 60:.1f} h on this machine, "
        f"{10_000 * 4 / audio_rate / 60:.1f}/K h on K machines like it"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
