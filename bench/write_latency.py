"""How late a real-time thread wakes beside processes writing files, by write size.

    .venv/bin/python bench/write_latency.py [--seconds 20] [--rounds 2]

A SCHED_FIFO thread (as the audio thread runs) sleeps 1 ms at a time on one CPU for
``--seconds``, while two niced processes write 256 MB files (new files each time,
removed after), one on that CPU and one on the others, in pieces of ``WRITE_PIECE``
(``core/audiofile/scratch.py``, 64 KiB) or 4 MiB (a chunk's row written whole, as the
worker did before), alternating, ``--rounds`` times each. Prints how often the thread
woke more than 2 and 5 ms late, and its latest wake. The kernel fills the page cache a
folio at a time, folios as large as the write, and a kernel without full preemption
runs nothing else on that CPU meanwhile (docs/architecture.md, "Writes and the
kernel's preemption"). Needs SCHED_FIFO (root, or an ``rtprio`` limit) and two CPUs.

At e7f5892 on this project's 2-core VM (PREEMPT_NONE), 20 s each, two rounds: 4 MiB
pieces woke late by more than 2 ms 948 and 905 times (p99 3.16, 3.24 ms); 64 KiB pieces
8 and 9 times (p99 0.15 ms), each of those more than 5 ms late: stalls of the whole
virtual CPU (up to 100 ms, as beside fresh memory alone: not the writes). Before the
writers were pinned (one of them on the thread's CPU), 303 and 252 against 18 and 9.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stemdeck.core.audiofile.scratch import WRITE_PIECE

FILE_BYTES = 256 << 20

WRITER = """
import os, sys
import numpy as np
folder, piece = sys.argv[1], int(sys.argv[2])
os.sched_setaffinity(0, {{int(c) for c in sys.argv[3].split(",")}})
data = np.random.default_rng(0).random(piece // 4, dtype=np.float32)
name = os.path.join(folder, str(os.getpid()))
while True:
    fd = os.open(name, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    for offset in range(0, {size}, piece):
        os.pwrite(fd, data.data, offset)
    os.close(fd)
    os.unlink(name)
"""


def late_wakes(seconds: float, cpu: int) -> np.ndarray:
    """How late (ms) each 1 ms sleep of this thread woke, under SCHED_FIFO on ``cpu``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(70))
    late = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            time.sleep(0.001)
            late.append(time.perf_counter() - t - 0.001)
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, before)
    return 1e3 * np.array(late)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(70))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except PermissionError:
        raise SystemExit("needs SCHED_FIFO (root, or an rtprio limit)") from None
    folder = Path(tempfile.mkdtemp(prefix="stemdeck-write-latency-"))
    atexit.register(shutil.rmtree, folder, True)
    code = WRITER.format(size=FILE_BYTES)
    print(
        f"SCHED_FIFO thread sleeping 1 ms on CPU {cpus[-1]} for {args.seconds:g} s beside two "
        f"processes writing {FILE_BYTES >> 20} MB files; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    for round_ in range(args.rounds):
        for label, piece in (("WRITE_PIECE", WRITE_PIECE), ("4 MiB", 4 << 20)):
            writers = [
                subprocess.Popen(
                    ["nice", "-n", "10", sys.executable, "-c", code, str(folder), str(piece), on]
                )
                for on in (str(cpus[-1]), ",".join(map(str, cpus[:-1])))
            ]
            try:
                time.sleep(0.5)  # both writing
                late = late_wakes(args.seconds, cpus[-1])
            finally:
                for w in writers:
                    w.kill()
                    w.wait()
            print(
                f"round {round_ + 1}, pieces of {label} ({piece >> 10} KiB): {len(late)} wakes, "
                f"late > 2 ms {int(np.sum(late > 2))}, > 5 ms {int(np.sum(late > 5))}, "
                f"p99 {np.percentile(late, 99):.3f} ms, latest {late.max():.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
