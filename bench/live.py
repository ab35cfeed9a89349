"""The live daemon through a real audio server (jackd, dummy driver).

    .venv/bin/python bench/live.py [--trials 20] [--load-seconds 10] [--rate 5000]
        [--sound-trials N] [--sound-formats wav mp3] [--sound-only] [--busy-only]

Prints, from one run:
- control latency: an OSC /master/fader 0 sent to the change in the JACK-recorded
  output (onset of the ramp, and the ramp's end); target <= one block + ramp time;
- load: --rate OSC messages a second for --load-seconds while playing: crashes,
  xruns, engine queue drops, last value of every channel arrived, daemon RSS before
  and after;
- time to first sound: process start to the first non-silent sample in JACK, for a
  3-minute track uncached and cached (``--sound-trials`` of each, and their medians;
  ``--sound-only`` runs this part alone), as a WAV and as an MP3 (``--sound-formats``:
  wav, flac, mp3; a compressed file's first seconds are decoded before it plays);
  target <= 0.5 s either way (issue #22);
- a busy machine: two CPU-bound processes beside the daemon for --busy-seconds, with
  and without real-time scheduling (SCHED_FIFO + locked memory, or --no-realtime),
  on the null clock (--no-audio) and through JACK: xruns during the load and the
  slowest block during it (the daemon's own measure of Mixer.process over its last
  5 s; --busy-seconds must be at least 5).
  ``--busy-only`` runs this part alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import Client, free_udp_port  # noqa: E402
from daemon_helpers import burners as make_burners  # noqa: E402
from jack_helpers import (  # noqa: E402
    JackRecorder,
    change_latency_ms,
    env_for,
    start_jack,
)

from stemdeck.core.audiofile.files import write  # noqa: E402
from stemdeck.core.material.demo import demo_track  # noqa: E402

SR, BLOCK, RAMP_MS = 48000, 256, 10.0


def rss_kb(pid: int, kind: str = "RssAnon") -> int:
    """Resident memory of a process: RssAnon is its own heap; RssFile counts the
    memory-mapped track, which grows as playback touches it (page cache, not a leak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1])
    return 0


def serve(track: Path, env: dict[str, str], port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stemdeck.daemon.cli",
            "serve",
            str(track),
            "--block",
            str(BLOCK),
            "--osc-port",
            str(port),
            "--http",
            "off",  # the OSC path alone (bench/web.py measures the web side)
            *extra,
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def first_sound(
    rec: JackRecorder, track: Path, env: dict[str, str], port: int
) -> tuple[float, subprocess.Popen]:
    """Start a daemon on ``track``: seconds from its start to its first non-silent
    sample in JACK (nan if none within 10 s), and the daemon."""
    start = rec.now()
    rec.blocks = []
    rec.recording = True
    proc = serve(track, env, port)
    # Looked for every 2 ms: the daemon's ports are silent in the recording until
    # they are connected (every 0.1 s made the figure a multiple of 0.1 s, give or take).
    rec.connect_from("PortAudio", timeout=30, poll=0.002)
    deadline = time.monotonic() + 10
    heard = None
    while time.monotonic() < deadline and heard is None:
        time.sleep(0.05)
        for t, block in list(rec.blocks):
            loud = np.nonzero(np.abs(block).max(axis=1) > 1e-4)[0]
            if len(loud):
                heard = t + int(loud[0])
                break
    rec.recording = False
    return ((heard - start) / SR if heard else float("nan")), proc


def wait_ready(client: Client, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.drain()
        client.send("/status")
        for addr, args in client.receive(0.3, settle=0.0):
            state = args[0].split(" | ")[0]  # ready: not "stems N% ready"
            if addr == "/status" and state.endswith(" ready") and not state.endswith("% ready"):
                return args[0]
    raise SystemExit("daemon not ready")


def _field(text: str, key: str, kind: type = int) -> float:
    parts = text.replace("|", " ").split()
    i = parts.index(key.split()[-1])
    return float(kind(parts[i + (3 if key == "(last" else 1)]))  # "(last 5 s X ms)"


def busy(track: Path, env: dict[str, str], seconds: float) -> None:
    """xruns and the slowest block with two CPU-bound processes beside the daemon."""
    for sink, extra in (("null clock", ["--no-audio"]), ("JACK", [])):
        for rt in (True, False):
            port = free_udp_port()
            args = [*extra, *([] if rt else ["--no-realtime"])]
            proc = serve(track, env, port, *args)
            client = Client(port)
            burners: list[subprocess.Popen] = []
            try:
                wait_ready(client)
                time.sleep(1.0)
                before = client.query("/status")
                burners = make_burners()
                time.sleep(seconds)
                after = client.query("/status")
            finally:
                for b in burners:
                    b.kill()
                    b.wait()
                client.close()
                proc.terminate()
                proc.wait(timeout=15)
            scheduling = after.rsplit("|", 1)[-1].strip()
            print(
                f"busy, {sink}, {'real-time' if rt else 'no real-time'}: "
                f"xruns +{_field(after, 'xruns') - _field(before, 'xruns'):.0f} in {seconds:g} s "
                f"beside 2 CPU-bound processes; slowest block during the load "
                f"{_field(after, '(last', float):.2f} ms "
                f"(since start {_field(after, 'slowest block', float):.2f} ms); "
                f"audio thread: {scheduling}"
            )


def latency(client: Client, rec: JackRecorder, trials: int) -> tuple[list[float], list[float]]:
    onsets, ends = [], []
    for _ in range(trials):
        client.send("/master/fader", 0.75)
        time.sleep(0.25)
        rec.blocks = []
        rec.recording = True
        time.sleep(0.1)
        sent = rec.now()
        client.send("/master/fader", 0.0)
        time.sleep(0.15)
        rec.recording = False
        first, audio = rec.take()
        onset, end = change_latency_ms(first, sent, audio, SR)
        onsets.append(onset)
        ends.append(end)
    return onsets, ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--busy-seconds", type=float, default=5.0)
    ap.add_argument("--busy-only", action="store_true", help="only the busy-machine runs")
    ap.add_argument(
        "--sound-trials", type=int, default=1, help="time to first sound: trials of each state"
    )
    ap.add_argument("--sound-only", action="store_true", help="only the time to first sound")
    ap.add_argument(
        "--sound-formats",
        nargs="+",
        choices=["wav", "flac", "mp3"],
        default=["wav", "mp3"],
        help="time to first sound: the track written in each of these",
    )
    args = ap.parse_args()
    if args.busy_seconds < 5:
        raise SystemExit("--busy-seconds must be at least 5 (the daemon's window)")
    work = Path(tempfile.mkdtemp(prefix="stemdeck-live-"))
    try:
        measure(args, work)
    finally:  # the tracks and every trial's cache entry: 2.5 GB a run
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    """The benchmark's parts (the module's docstring), its files in ``work``."""
    name = f"stemdeck-bench-{os.getpid()}"
    jackd = start_jack(name, rate=SR, period=BLOCK)
    if jackd is None:
        raise SystemExit("needs jackd (apt-get install jackd2)")
    env = {**env_for(name), "STEMDECK_CACHE": str(work / "cache")}
    track = work / "three-minutes.wav"
    demo = demo_track(seconds=180)
    write(track, demo.mix, demo.sr)
    print(
        f"track: 3 min stereo 44.1 kHz, served at {SR} Hz, block {BLOCK}, ramp {RAMP_MS} ms; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    if args.busy_only:
        try:
            busy(track, env, args.busy_seconds)
        finally:
            jackd.terminate()
        return
    rec = JackRecorder(name)
    try:
        # -- time to first sound ---------------------------------------------------------
        # Each uncached trial on a cache of its own; the cached ones on the first's.
        # The daemon of the last cached trial stays up for the parts below.
        # The WAV's trials come last, on the caches they had before the other formats
        # (work/cache is the cached one, which busy() uses too): its last daemon is
        # the one the parts below drive.
        heard_s: dict[str, list[float]] = {}
        proc = client = None
        for form in sorted(set(args.sound_formats), key=lambda f: (f == "wav", f)):
            sounded = track if form == "wav" else work / f"three-minutes.{form}"
            if form != "wav":
                sf.write(sounded, demo.mix.T, demo.sr, format=form.upper())
            caches = work if form == "wav" else work / form
            for trial in range(args.sound_trials):
                for state in ("uncached", "cached"):
                    label = f"{form}, {state}"
                    folder = "cache" if state == "cached" or trial == 0 else f"cache-{trial}"
                    cache = caches / folder
                    if proc is not None and client is not None:
                        proc.terminate()
                        proc.wait(timeout=15)
                        client.close()
                    port = free_udp_port()
                    seconds, proc = first_sound(
                        rec, sounded, {**env, "STEMDECK_CACHE": str(cache)}, port
                    )
                    client = Client(port)
                    ready = wait_ready(client)
                    heard_s.setdefault(label, []).append(seconds)
                    print(
                        f"time to first sound, {label}: {seconds:.2f} s  target <= 0.5 s  "
                        f"({ready.split(' xruns')[0]})"
                    )
        assert proc is not None and client is not None
        for label, values in heard_s.items():
            heard = [v for v in values if v == v]  # nan: no sound within 10 s
            silent = len(values) - len(heard)
            print(
                f"time to first sound, {label}, median of {len(heard)}"
                f"{f' ({silent} silent for 10 s)' if silent else ''}: "
                f"{median(heard) if heard else float('nan'):.2f} s "
                f"({', '.join(f'{v:.2f}' for v in values)})"
            )
        if args.sound_only:
            proc.terminate()
            proc.wait(timeout=15)
            client.close()
            return

        # -- control latency ---------------------------------------------------------------
        onsets, ends = latency(client, rec, args.trials)
        budget = BLOCK / SR * 1000 + RAMP_MS
        print(
            f"control latency OSC -> JACK output, {len(onsets)} trials: onset median "
            f"{median(onsets):.0f} ms (max {max(onsets):.0f}), ramp end median "
            f"{median(ends):.0f} ms (max {max(ends):.0f}); target <= {budget:.1f} ms "
            "(one block + ramp), 1 ms resolution"
        )
        client.send("/master/fader", 0.75)

        # -- load --------------------------------------------------------------------------
        def status() -> str:
            client.drain()
            client.send("/status")
            got = [a for m, a in client.receive(1.0, settle=0.0) if m == "/status"]
            return got[0][0] if got else ""

        def field(text: str, key: str) -> int:
            parts = text.split()
            return int(parts[parts.index(key) + 1])

        before = status()
        rss_before = rss_kb(proc.pid)
        sender = Client(port)
        rng = np.random.default_rng(0)
        last: dict[int, float] = {}
        sent = 0
        period = 1.0 / args.rate
        t0 = time.perf_counter()
        next_t = t0
        rss_series = [rss_before]
        next_sample = t0 + 1.0
        while time.perf_counter() - t0 < args.load_seconds:
            if time.perf_counter() >= next_sample:
                rss_series.append(rss_kb(proc.pid))
                next_sample += 1.0
            ch = int(rng.integers(1, 5))
            value = float(np.float32(rng.uniform(0.0, 1.0)))
            sender.send(f"/ch/{ch}/fader", value)
            last[ch] = value
            sent += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        took = time.perf_counter() - t0
        time.sleep(0.5)
        after = status()
        alive = bool(client.ask("/ping"))
        arrived = all(abs(client.query(f"/ch/{ch}/fader") - v) < 1e-6 for ch, v in last.items())
        rss_after = rss_kb(proc.pid)
        print(
            f"load: {sent} messages in {took:.1f} s ({sent / took:.0f}/s): alive {alive}, "
            f"xruns +{field(after, 'xruns') - field(before, 'xruns')}, engine drops "
            f"+{field(after, 'drops') - field(before, 'drops')}, last values arrived "
            f"{arrived}, heap (RssAnon) {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB, "
            f"mapped track (RssFile) now {rss_kb(proc.pid, 'RssFile') / 1024:.0f} MB"
        )
        print("  RssAnon each second (MB):", [round(r / 1024) for r in [*rss_series, rss_after]])
        sender.close()
        client.close()
        proc.terminate()
        proc.wait(timeout=15)
        busy(track, env, args.busy_seconds)
    finally:
        rec.close()
        jackd.terminate()


if __name__ == "__main__":
    main()
