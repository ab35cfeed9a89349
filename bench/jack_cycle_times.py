"""What JACK says of its cycles' times after a stalled driver, against when they began.

    .venv/bin/python bench/jack_cycle_times.py [--stall-ms 60] [--seconds 6]

Starts ``jackd -d dummy`` (48 kHz, 256 frames; tests/jack_helpers.py), a client
whose callback reads, for each cycle, its first frame (``jack_last_frame_time``),
JACK's time of that frame (``jack_frames_to_time``) and the time the callback began
(``jack_get_time``), then stops the server for ``--stall-ms`` (SIGSTOP, SIGCONT): a
driver stalled as a virtual machine's host or a busy kernel stalls it. Prints, at
moments after the stall, JACK's time of the cycle and the callback's start, each
less the time the frames say (the cycles' times before the stall carried on at
48 kHz), ms; and then the Link follower's time of each cycle
(``stemdeck.daemon.link.CycleTime``) less the callback's start.

The callback's start is within a fraction of a ms of when its cycle began; JACK 2
smooths its times with a delay-locked loop, which the stall throws off. On this
project's 2-core VM (jackd 1.9.21), two runs with a 60 ms stall: the cycles 53.3-53.6
ms behind the frames' line from the stall on, JACK's times of them 0.36 ms at once,
19.7 at 0.37 s, 43.5 at 1 s, 61.4 at 2 s, 64.5 at 2.9 s (past it), 54.9 at 6 s;
``CycleTime`` 52.0 from 0.05 s on (within its 1.5 ms slack), 53.4-53.5 from 2 s.
A 12 ms stall: 5.3 ms behind, JACK's times 0.3 at 0.05 s, 4.3 at 1 s, 6.3 at 2.9 s;
``CycleTime`` 3.8-4.0 from 0.05 s on (docs/sync.md). Needs jackd (scripts/setup
installs jackd2).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from jack_helpers import env_for, start_jack

from stemdeck.daemon.link import CycleTime

SR = 48000
PERIOD = 256
AT_S = (0.0, 0.01, 0.05, 0.37, 1.0, 2.0, 2.9, 4.0, 6.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stall-ms", type=float, default=60.0, help="how long jackd is stopped")
    ap.add_argument("--seconds", type=float, default=6.0, help="how long to watch after")
    args = ap.parse_args()
    name = f"stemdeck-cycles-{os.getpid()}"
    jackd = start_jack(name, rate=SR, period=PERIOD)
    if jackd is None:
        sys.exit("jackd is not installed (scripts/setup installs jackd2)")
    os.environ.update(env_for(name))
    import jack
    from jack import _ffi, _lib

    libjack = ctypes.PyDLL("libjack.so.0")
    to_time = libjack.jack_frames_to_time
    to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    to_time.restype = ctypes.c_uint64
    now = libjack.jack_get_time
    now.argtypes = []
    now.restype = ctypes.c_uint64
    client = jack.Client("cycles", servername=name, no_start_server=True)
    ptr = int(_ffi.cast("uintptr_t", client._ptr))
    rows: list[tuple[int, int, int]] = []

    @client.set_process_callback
    def process(frames: int) -> None:
        started = now()
        frame = _lib.jack_last_frame_time(client._ptr)
        rows.append((frame, to_time(ptr, frame), started))

    try:
        client.activate()
        time.sleep(2.0)
        stall = len(rows)
        os.kill(jackd.pid, signal.SIGSTOP)
        time.sleep(args.stall_ms / 1000.0)
        os.kill(jackd.pid, signal.SIGCONT)
        time.sleep(args.seconds)
        client.deactivate()
    finally:
        client.close()
        jackd.terminate()
        jackd.wait(timeout=10)
    a = np.array(rows, np.float64)
    frame, jack_us, started = a[:, 0], a[:, 1], a[:, 2]
    ref = stall - 50  # the frames' line from before the stall
    line = jack_us[ref] + (frame - frame[ref]) * 1e6 / SR
    clock = CycleTime()
    ours = np.array([clock.time(j, s) for j, s in zip(jack_us, started, strict=True)])
    print(f"jackd stopped {args.stall_ms:g} ms; ms against the frames' line from before")
    print(f"{'after':>7} {'JACK says':>10} {'callback':>9} {'CycleTime':>10}")
    for at in AT_S:
        i = min(stall + int(at * SR / PERIOD), len(rows) - 1)
        print(
            f"{at:6.2f}s {(jack_us[i] - line[i]) / 1e3:10.2f} {(started[i] - line[i]) / 1e3:9.2f}"
            f" {(ours[i] - line[i]) / 1e3:10.2f}"
        )


if __name__ == "__main__":
    main()
