"""MIDI clock in and out, side by side: ``python bench/sync.py [--seconds S] [--runs N]``.

Clock in (the algorithm, :class:`~stemdeck.daemon.clock_follow.ClockFollower`, fed a
made-up clock with uniform ±1 ms jitter on every tick): segments of 16 beats at
120, 126 (a step up), 90 (a step down), 121 (a step up) and 120 BPM (a small
step down, whose knee the jitter hides best). Per run: the
tempo error once locked (mean and max of the steady half of each segment), the
lock time after each step (beats until the tempo stays within 0.1 BPM and the
phase within 2 ms for the rest of the segment), and the phase error (the
estimated beat against the true one, in ms, p50/p99/max), sampled half-way
between ticks. Clock in costs no real time, so ``--clocks N`` more made-up
clocks (other seeds) give the spread of the lock time: its median, p90 and
worst, and how many clocks locked within two beats after every step.

Clock out (the daemon's thread, :class:`~stemdeck.daemon.clock_out.MidiClockOut`,
on a JACK MIDI port of its own, ``jackd -d dummy``): a play head rolling at 120 BPM
times 1.0, moved block by block (256 frames) as the mixer moves it; a second
JACK client records the ticks with their frame times (``last_frame_time`` plus
the event's offset). Jitter is each tick's distance from a straight line through
all the ticks (p50/p99/max, ms), and the tempo that line gives.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from statistics import median

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jack_helpers import start_jack  # noqa: E402

from stemdeck.core.beats.grid import BeatGrid  # noqa: E402
from stemdeck.core.mixer.commands import Track  # noqa: E402
from stemdeck.daemon.clock_follow import PPQN, ClockFollower  # noqa: E402

SEGMENTS = ((120.0, 16), (126.0, 16), (90.0, 16), (121.0, 16), (120.0, 16))
SR, BLOCK = 48000, 256


def clock_in(seed: int, jitter: float = 0.001) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    f = ClockFollower()
    f.start(-0.01)
    t, i = 0.0, 0
    tempo_err: list[float] = []
    phase: list[float] = []
    locks: list[float] = []
    for n, (bpm, beats) in enumerate(SEGMENTS):
        period = 60.0 / bpm / PPQN
        ok = []
        for j in range(beats * PPQN):
            f.tick(t + rng.uniform(-jitter, jitter))
            state = f.state(t + 0.5 * period)
            if state.bpm is None or state.beat is None:  # the first tick: no tempo yet
                e_t = e_p = float("inf")
            else:
                e_t = abs(state.bpm - bpm)
                e_p = abs(state.beat - (i + 0.5) / PPQN) * 60.0 / bpm * 1000
            ok.append(e_t <= 0.1 and e_p <= 2.0)
            if j >= beats * PPQN // 2:
                tempo_err.append(e_t)
                phase.append(e_p)
            t += period
            i += 1
        if n:
            bad = [j for j, good in enumerate(ok) if not good]
            locks.append((bad[-1] + 1) / PPQN if bad else 0.0)
    return {
        "tempo_mean": float(np.mean(tempo_err)),
        "tempo_max": float(np.max(tempo_err)),
        "lock_max": max(locks),
        "phase_p50": float(np.percentile(phase, 50)),
        "phase_p99": float(np.percentile(phase, 99)),
        "phase_max": float(np.max(phase)),
    }


class RollingEngine:
    """A play head rolling at rate 1 from 0 s, moved a block at a time."""

    sr = SR
    rate = 1.0
    rolling = True

    def __init__(self) -> None:
        self.track: Track | None = Track(np.zeros((1, 2, SR * 600), np.float32), SR, ("mix",))
        self.t0 = time.perf_counter()
        self.position = 0
        self._stop = threading.Event()
        threading.Thread(target=self._blocks, daemon=True).start()

    def _blocks(self) -> None:
        """The mixer's pace: a block's worth of frames at each block's deadline."""
        period = BLOCK / SR
        n = 0
        while not self._stop.wait(max(0.0, self.t0 + (n + 1) * period - time.perf_counter())):
            n += 1
            self.position = n * BLOCK

    def seconds(self, frames: int) -> float:
        return frames / SR


class Grid:
    def grid(self) -> BeatGrid:
        return BeatGrid(120.0, 0.0)


def clock_out(server: str, seconds: float) -> dict[str, float]:
    import jack

    from stemdeck.daemon.clock_out import JackClockPort, MidiClockOut

    rec = jack.Client("bench-rx", servername=server, no_start_server=True)
    inport = rec.midi_inports.register("in")
    frames: list[int] = []

    @rec.set_process_callback
    def _process(n: int) -> None:
        base = rec.last_frame_time
        for offset, data in inport.incoming_midi_events():
            if bytes(data) == b"\xf8":
                frames.append(base + offset)

    rec.activate()
    sender = JackClockPort("virtual:clock")
    rec.connect(sender.name, inport.name)
    engine = RollingEngine()
    out = MidiClockOut(engine, Grid(), sender, block_s=BLOCK / SR)
    out.start()
    time.sleep(seconds)
    out.stop()
    engine._stop.set()
    rec.deactivate()
    rec.close()
    f = np.array(frames[PPQN:], np.float64) / SR  # the first beat: the line settles
    k = np.arange(len(f))
    slope, icpt = np.polyfit(k, f, 1)
    dev = np.abs(f - (icpt + slope * k)) * 1000
    return {
        "ticks": float(len(f)),
        "bpm": 60.0 / (PPQN * slope),
        "jitter_p50": float(np.percentile(dev, 50)),
        "jitter_p99": float(np.percentile(dev, 99)),
        "jitter_max": float(np.max(dev)),
        "late": float(sender.late),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="clock out run length")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clocks", type=int, default=100, help="clock in: more clocks' lock times")
    args = ap.parse_args()
    server = f"stemdeck-bench-sync-{os.getpid()}"
    jackd = start_jack(server, rate=SR, period=BLOCK)
    if jackd is None:
        raise SystemExit("needs jackd (apt-get install jackd2)")
    os.environ["JACK_DEFAULT_SERVER"] = server
    try:
        ins, outs = [], []
        for run in range(args.runs):
            ins.append(clock_in(run))
            outs.append(clock_out(server, args.seconds))
            threading.Event().wait(0.2)
    finally:
        jackd.terminate()
        jackd.wait()
    print(
        f"{'run':>4} | {'clock in: tempo err mean/max (BPM)':>36} {'lock (beats)':>12} "
        f"{'phase p50/p99/max (ms)':>24} | {'clock out: jitter p50/p99/max (ms)':>36} "
        f"{'BPM':>9} {'late':>5}"
    )
    for n, (i, o) in enumerate(zip(ins, outs, strict=True)):
        print(
            f"{n + 1:>4} | {i['tempo_mean']:>17.4f} / {i['tempo_max']:<16.4f} "
            f"{i['lock_max']:>12.2f} "
            f"{i['phase_p50']:>8.3f}/{i['phase_p99']:.3f}/{i['phase_max']:<7.3f} | "
            f"{o['jitter_p50']:>12.3f} / {o['jitter_p99']:.3f} / {o['jitter_max']:<13.3f} "
            f"{o['bpm']:>9.3f} {int(o['late']):>5}"
        )
    med = {k: median(r[k] for r in ins) for k in ins[0]}
    med_o = {k: median(r[k] for r in outs) for k in outs[0]}
    print(
        f" med | {med['tempo_mean']:>17.4f} / {med['tempo_max']:<16.4f} {med['lock_max']:>12.2f} "
        f"{med['phase_p50']:>8.3f}/{med['phase_p99']:.3f}/{med['phase_max']:<7.3f} | "
        f"{med_o['jitter_p50']:>12.3f} / {med_o['jitter_p99']:.3f} / "
        f"{med_o['jitter_max']:<13.3f} {med_o['bpm']:>9.3f} {int(med_o['late']):>5}"
    )
    if args.clocks:
        locks = np.array([clock_in(1000 + seed)["lock_max"] for seed in range(args.clocks)])
        print(
            f"clock in, {args.clocks} more clocks: lock p50 {np.median(locks):.2f} "
            f"p90 {np.percentile(locks, 90):.2f} max {locks.max():.2f} beats; "
            f"{int(np.sum(locks <= 2.0))} of {args.clocks} within 2 beats after every step"
        )
    print(
        "targets: tempo err <= 0.1 BPM, lock <= 2 beats, phase <= 2 ms; clock out jitter <= 0.5 ms"
    )


if __name__ == "__main__":
    main()
