"""Xruns in the first seconds of a load, through a real audio server (jackd, dummy driver).

    .venv/bin/python bench/start_xruns.py [--runs 5] [--beside TREE]

For each run, ``stemdeck serve`` plays a 3-minute track (the demo, 44.1 kHz) through
PortAudio into JACK (48 kHz, 256-frame periods, real-time where allowed), with an empty
cache (uncached: the separation worker runs beside the audio) and then with the entry
the first run wrote (cached); ``/status``'s xrun count (PortAudio's output underflows
after the first blocks, ``daemon/audio/sinks.py``) is read at 2, 4 and 8 s.
``--beside TREE`` alternates this checkout with another's code on ``PYTHONPATH`` (as
``bench/memory.py --beside``: ``TREE/stemdeck`` with its kernel built), the two in one run.

Target: none in any run (a dropout is a click). ``--runs 3 --beside TREE`` at 1927bff on
this project's 2-core machine (TREE: 49182a3's code), xruns at 8 s: this code uncached 7,
6, 4, cached 0, 0, 1; 49182a3's uncached 0, 0, 0, cached 2, 1, 2. Two causes were found
and removed (docs/architecture.md, "The GIL and the scheduler"): the beat analysis's
thread, stopped by the scheduler holding the GIL, and the worker's page faults. This
bench still counted as many as before them (e4a292b: 11 in 3 uncached loads, 49182a3's
none). A third, the worker's writes holding the audio thread's CPU in the kernel 2.5 to
3.5 ms at a time, is removed too ("Writes and the kernel's preemption"); what is left
is the first half-second of a load and stalls of the whole virtual CPU. A stall of the
whole machine (every core idle, JACK's own timer late) drops a block now and then, in
any code, often several at once: at 8370fb2, this code beside a copy of itself (6 runs
each) counted 11 against 23 uncached (4 and 6 loads with any), so counts this far apart
say nothing about two codes; ``perf`` traces of single loads do (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from daemon_helpers import Client, free_udp_port  # noqa: E402
from jack_helpers import env_for, start_jack  # noqa: E402
from live import serve  # noqa: E402

from stemdeck.core.audiofile.files import write  # noqa: E402
from stemdeck.core.material.demo import demo_track  # noqa: E402

READ_AT_S = (2.0, 4.0, 8.0)


def xruns(track: Path, env: dict[str, str]) -> list[int | None]:
    """One daemon on ``track``: its xrun count at each of :data:`READ_AT_S` (None: no
    answer)."""
    port = free_udp_port()
    started = time.monotonic()
    proc = serve(track, env, port)
    counts: list[int | None] = []
    try:
        for at in READ_AT_S:
            time.sleep(max(0.0, started + at - time.monotonic()))
            client = Client(port)
            try:
                client.send("/status")
                lines = [a[0] for m, a in client.receive(2.0, settle=0.0) if m == "/status"]
            finally:
                client.close()
            found = re.findall(r"xruns (\d+)", lines[0]) if lines else []
            counts.append(int(found[0]) if found else None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--beside", metavar="TREE", help="another checkout's code, alternating")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stemdeck-start-xruns-"))
    atexit.register(shutil.rmtree, work, True)  # the track and the cache entries
    name = f"stemdeck-xruns-{os.getpid()}"
    jackd = start_jack(name, rate=48000, period=256)
    if jackd is None:
        raise SystemExit("needs jackd (apt-get install jackd2)")
    try:
        track = work / "three-minutes.wav"
        demo = demo_track(seconds=180)
        write(track, demo.mix, demo.sr)
        codes = [("this checkout", "")]
        if args.beside:
            codes.append((args.beside, str(Path(args.beside).resolve())))
        print(
            "serve a 3-minute WAV through JACK (dummy, 48 kHz, 256 frames); "
            f"xruns at {', '.join(f'{t:g}' for t in READ_AT_S)} s; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
        )
        totals: dict[tuple[str, str], list[int]] = {}
        for run in range(args.runs):
            for label, path in codes:
                for state in ("uncached", "cached"):
                    env = {
                        **env_for(name),
                        "STEMDECK_CACHE": str(work / f"cache-{label != 'this checkout'}-{run}"),
                    }
                    if path:
                        env["PYTHONPATH"] = path
                    counts = xruns(track, env)
                    print(f"run {run + 1}, {label}, {state}: xruns {counts}", flush=True)
                    final = counts[-1]
                    if final is not None:
                        totals.setdefault((label, state), []).append(final)
        for (label, state), finals in totals.items():
            print(
                f"{label}, {state}: {sum(finals)} xruns in {len(finals)} runs "
                f"({sum(1 for n in finals if n)} with any), at {READ_AT_S[-1]:g} s"
            )
    finally:
        jackd.terminate()
        jackd.wait(timeout=30)


if __name__ == "__main__":
    main()
