"""Memory and time to stems of the daemon, by the track's length (issue #22).

    .venv/bin/python bench/memory.py [--minutes 3 10 60] [--rate 44100] [--stem-file]

For each length a track is generated (tones and noise bursts, 16-bit WAV, so any
machine can run it) and served by ``stemdeck serve TRACK --no-audio`` as a
subprocess (the null clock runs at 48 kHz), with an empty cache (uncached) and
again with the entry the first run wrote (cached). Measured from the process's
start:

- first stems: ``/track/progress`` says ``stems`` with a share above 0 (the chunk
  under the play head plays its stems), or ``ready``;
- all stems: ``/track/progress`` says ``ready`` (every channel plays from the cache);
- peak and steady RssAnon (``/proc/PID/status``, sampled every 0.1 s) of the daemon
  and of its separation worker (the largest of its descendants: the fork server, the
  worker it forks, the beat analysis it forks, the resource tracker): steady is the daemon's last
  sample, 2 s after all stems. RssAnon is each process's own heap: the cache entry
  (a memory map of a file) and the worker's audio in shared memory are RssFile and
  RssShmem, which the kernel can drop or which stand once for the track.

``--stem-file``: the track is a four-stem file instead (ALAC, the generated track's
low tone, high tone, noise bursts and a quiet hum as its stems), which is not
separated: "first stems" and "all stems" are both the time it plays its stems.

Targets (the issue): first stems <= 2 s for every length; all stems for 3 minutes
<= 3 s; daemon steady RssAnon <= 150 MB and peak <= 300 MB; worker peak <= 600 MB.
``--beside TREE --runs N``: the uncached 3-minute (first ``--minutes``) case only,
``N`` times each, alternating this checkout with another one's code (``TREE`` on
``PYTHONPATH``: a folder holding a ``stemdeck`` package with its kernel built, as
``git archive REV core daemon presets | tar -x -C TREE/stemdeck`` and the kernel
compiled there), and their medians side by side: the run-to-run spread here is
+-0.4 s, more than most changes.

``--rate`` is the generated track's rate: 44100 (default, the issue's case) plays
at its own rate through the mixer's read head on the 48 kHz null clock, as any rate
from 8 to 192 kHz does (no resampled copy, the stems as they come alike); 48000
reads frame for frame.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import Client, free_udp_port  # noqa: E402

POLL_S = 0.05


def generate(path: Path, minutes: float, sr: int) -> None:
    """A stereo track of tones and noise bursts, written in blocks (16-bit WAV)."""
    rng = np.random.default_rng(int(minutes * 10))
    block = 30 * sr
    total = int(minutes * 60 * sr)
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / sr
            low = 0.3 * np.sin(2 * np.pi * 55 * t)
            high = 0.15 * np.sin(2 * np.pi * 880 * t + 0.3 * np.sin(2 * np.pi * 0.5 * t))
            beat = (np.floor(t * 2) % 2 == 0) & ((t * 2) % 1 < 0.05)
            noise = 0.2 * rng.standard_normal(n) * beat
            f.write(np.stack([low + high + noise, 0.9 * low + high + noise], axis=1))


def settle() -> None:
    """The generated track on the disk before the daemon starts: a 60-minute WAV is
    635 MB of dirty pages, whose writeback (the kernel's threads and the disk) ran beside
    the load that followed: its first stems read 2.28-2.39 s in runs right after the
    generation, 1.53 s after a sync, 1.2-1.7 s in twelve loads of one settled track. That
    measured the generator, not the load (a track a user loads has long been written)."""
    os.sync()
    time.sleep(0.5)


def rss_anon_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        return None
    return 0


def descendants(pid: int) -> list[int]:
    """``pid``'s children, theirs, and so on: the separation worker is a child of the
    daemon's fork server (daemon/separation_worker.py)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out + [d for child in out for d in descendants(child)]


class Sampler(threading.Thread):
    """RssAnon of a process and of its children every 0.1 s: peaks and the last sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.daemon_peak = self.worker_peak = self.daemon_last = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            own = rss_anon_kb(self.pid)
            if own is None:
                return
            self.daemon_last = own
            self.daemon_peak = max(self.daemon_peak, own)
            for child in descendants(self.pid):
                kb = rss_anon_kb(child)
                if kb:
                    self.worker_peak = max(self.worker_peak, kb)


def generate_stem_file(path: Path, minutes: float, sr: int) -> None:
    """A four-stem ALAC file of the generated track's parts (written whole: the writer
    takes whole arrays)."""
    from stemdeck.core.audiofile.stemfile_write import write_stem_file

    rng = np.random.default_rng(int(minutes * 10))
    total = int(minutes * 60 * sr)
    t = np.arange(total) / sr
    stems = np.empty((4, 2, total), np.float32)
    stems[0] = 0.3 * np.sin(2 * np.pi * 55 * t)
    stems[1] = 0.15 * np.sin(2 * np.pi * 880 * t + 0.3 * np.sin(2 * np.pi * 0.5 * t))
    beat = (np.floor(t * 2) % 2 == 0) & ((t * 2) % 1 < 0.05)
    stems[2] = 0.2 * rng.standard_normal(total) * beat
    stems[3] = 0.02 * np.sin(2 * np.pi * 100 * t)
    del t, beat
    write_stem_file(path, stems.sum(axis=0), stems, sr, codec="alac")


def serve_once(track: Path, cache: Path) -> dict[str, float]:
    port = free_udp_port()
    env = {**os.environ, "STEMDECK_CACHE": str(cache)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stemdeck.daemon.cli",
            "serve",
            str(track),
            "--no-audio",
            "--osc-port",
            str(port),
            "--http",
            "off",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    client = Client(port)
    first = every = float("nan")
    try:
        deadline = started + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({proc.returncode})")
            client.drain()
            client.send("/track/progress")
            # A short wait: a query sent before the daemon listens is lost, and a long
            # one would count its whole wait (0.3 s here once cost a cached load 0.35 s).
            for addr, args in client.receive(POLL_S, settle=0.0):
                if addr != "/track/progress":
                    continue
                stage, fraction = args[0], float(args[1])
                now = time.monotonic() - started
                if first != first and (stage == "ready" or (stage == "stems" and fraction > 0)):
                    first = now
                if stage == "ready":
                    every = now
            if every == every:
                break
            time.sleep(POLL_S)
        time.sleep(2.0)  # steady: playing, every channel from the cache
    finally:
        sampler.stop.set()
        sampler.join()
        client.close()
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "first": first,
        "all": every,
        "daemon_peak": sampler.daemon_peak / 1024,
        "daemon_steady": sampler.daemon_last / 1024,
        "worker_peak": sampler.worker_peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[3.0, 10.0, 60.0])
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--stem-file", action="store_true", help="a four-stem file, not a WAV")
    parser.add_argument("--beside", metavar="TREE", help="another checkout's code, side by side")
    parser.add_argument("--runs", type=int, default=7, help="runs of each with --beside")
    args = parser.parse_args()
    if args.beside:
        beside(Path(args.beside), args.minutes[0], args.rate, args.runs)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="stemdeck-memory-") as tmp:
        for minutes in args.minutes:
            if args.stem_file:
                track = Path(tmp) / f"track-{minutes:g}min.stem.m4a"
                generate_stem_file(track, minutes, args.rate)
            else:
                track = Path(tmp) / f"track-{minutes:g}min.wav"
                generate(track, minutes, args.rate)
            settle()
            cache = Path(tmp) / f"cache-{minutes:g}"
            for state in ("uncached", "cached"):
                r = serve_once(track, cache)
                rows.append((minutes, state, r))
                print(
                    f"{minutes:g} min {state}: first stems {r['first']:.2f} s, all "
                    f"{r['all']:.2f} s, daemon RssAnon peak {r['daemon_peak']:.0f} MB steady "
                    f"{r['daemon_steady']:.0f} MB, worker peak {r['worker_peak']:.0f} MB",
                    flush=True,
                )
            track.unlink()
    print()
    kind = "a four-stem ALAC file" if args.stem_file else "a WAV"
    print(f"source {kind} at {args.rate} Hz, served on the 48 kHz null clock (--no-audio)")
    print(
        "| length | cache | first stems (s) | all stems (s) | daemon RssAnon peak (MB) "
        "| daemon steady (MB) | worker peak (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for minutes, state, r in rows:
        print(
            f"| {minutes:g} min | {state} | {r['first']:.2f} | {r['all']:.2f} "
            f"| {r['daemon_peak']:.0f} | {r['daemon_steady']:.0f} | {r['worker_peak']:.0f} |"
        )
    print(
        "targets: first stems <= 2 s; all stems <= 3 s for 3 min; daemon steady <= 150 MB, "
        "peak <= 300 MB; worker peak <= 600 MB"
    )


def beside(tree: Path, minutes: float, rate: int, runs: int) -> None:
    """Uncached loads of one track, alternating this checkout and ``tree``: medians."""
    cli = tree / "stemdeck" / "daemon" / "cli"
    if not (cli.is_dir() or cli.with_suffix(".py").is_file()):  # a package since the renovation
        raise SystemExit(f"{tree} holds no stemdeck package (TREE/stemdeck/daemon/cli)")
    if runs < 1:
        raise SystemExit(f"--runs must be at least 1, got {runs}")
    found: dict[str, list[dict[str, float]]] = {"this checkout": [], str(tree): []}
    with tempfile.TemporaryDirectory(prefix="stemdeck-memory-") as tmp:
        track = Path(tmp) / f"track-{minutes:g}min.wav"
        generate(track, minutes, rate)
        settle()
        saved = os.environ.get("PYTHONPATH")
        try:
            for i in range(runs):
                # Each goes first in every other pair: no order bias.
                for name in list(found)[:: 1 if i % 2 == 0 else -1]:
                    if name == str(tree):
                        os.environ["PYTHONPATH"] = str(tree)
                    elif saved is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = saved
                    cache = Path(tmp) / "cache"
                    r = serve_once(track, cache)
                    shutil.rmtree(cache, ignore_errors=True)  # uncached each time
                    found[name].append(r)
                    print(f"{name}: first stems {r['first']:.2f}, all {r['all']:.2f} s", flush=True)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    print()
    print(f"{minutes:g} min uncached, {runs} runs each, alternating; medians")
    print("| code | first stems (s) | all stems (s) | worker peak (MB) |")
    print("|---|---|---|---|")
    for name, rs in found.items():
        done = [r for r in rs if r["all"] == r["all"]]  # a load that never got there: NaN
        if not done:
            print(f"| {name} | no load reached all stems | | |")
            continue
        med = {k: statistics.median(r[k] for r in done) for k in ("first", "all", "worker_peak")}
        missed = ""
        if len(done) < len(rs):
            missed = f" ({len(rs) - len(done)} of {len(rs)} never got there)"
        print(
            f"| {name} | {med['first']:.2f} | {med['all']:.2f}{missed} | {med['worker_peak']:.0f} |"
        )


if __name__ == "__main__":
    main()
