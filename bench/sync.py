"""JACK transport, MIDI clock in and out, Ableton Link, side by side: ``python
bench/sync.py [--seconds S] [--runs N] [--link-seconds S]``.

JACK transport (the follower in stemdeck's own JACK sink,
:class:`~stemdeck.daemon.timebase.BbtFollower` in
:class:`~stemdeck.daemon.audio.jack.JackSink` with the real mixer, ``jackd -d
dummy``): a track of clicks on every beat at 120 BPM; a second JACK client is the
timebase master (a tempo map of its own, 1920 ticks a beat) and records the sink's
port with the transport frame. Every 2.5 s of JACK time it changes the tempo (to
90..150 BPM) or locates (to a beat between 8 and 150, between beats), in turn.
The position error is each click's distance (found by its peak) from the
session's beat it stands for (ms, p50/p99/max): of every click, and of those a beat or more after a
change; and the sink's xruns.

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

Ableton Link (``tests/link_session.py`` in a network namespace of its own, ``unshare
-n``: ``stemdeck serve --audio jack --sync link`` and a Link peer on ``jackd -d
dummy``): the peer starts the session mid-bar, changes the tempo from 120 to 126 BPM,
stops and starts it again, each part ``--link-seconds`` long; the phase error is each
click's distance from the peer's beat at the host time it left stemdeck's port (ms,
p50/p99/max; from 4 beats after the start to the change, including the half beat
before it, and from 2 beats after the change and after the restart).
Skipped with the reason when the bindings (``stemdeck[link]``) or ``unshare -n`` are
missing.
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
#: The JACK transport's track: clicks on every beat at this tempo.
TRACK_BPM = 120.0


def jack_transport(server: str, seconds: float, seed: int) -> dict[str, float]:
    from jack_helpers import TimebaseSession

    from stemdeck.core.mixer.commands import Play, SetTrack
    from stemdeck.core.mixer.engine import Mixer
    from stemdeck.daemon.audio.jack import JackSink, open_client
    from stemdeck.daemon.sync import SyncControl
    from stemdeck.daemon.timebase import BbtFollower

    rng = np.random.default_rng(seed)
    period = 60.0 / TRACK_BPM
    y = np.zeros((1, 2, round(200 * period * SR)), np.float32)
    click = (0.8 * np.exp(-np.arange(480) / 60.0) * np.sin(np.arange(480) * 0.3)).astype(np.float32)
    for beat in range(int(y.shape[2] / SR / period) - 1):
        at = round(beat * period * SR)
        y[0, :, at : at + 480] += click
    engine = Mixer(max_channels=1)
    engine.prepare(SR, BLOCK)
    engine.post(SetTrack(Track(y, SR, ("mix",))))
    engine.post(Play())
    sync = SyncControl(jack=True)
    sync.set_source("jack")
    grid = BeatGrid(TRACK_BPM, 0.0)
    sink = JackSink(
        engine,
        SR,
        BLOCK,
        2,
        None,
        client=open_client("bench-stemdeck"),
        names=["mix"],
        outputs="mix",
        connect=False,
        follower=BbtFollower(engine, sync, lambda: grid),
    )
    sink.start()
    session = TimebaseSession(server, sr=SR)
    try:
        session.connect([sink.ports[0].name, sink.ports[1].name])
        session.reset(120.0, 4)
        session.client.transport_start()
        session.blocks = []
        session.written = {}
        session.recording = True
        t0, n = int(session.client.frame_time), 0
        while (elapsed := int(session.client.frame_time) - t0) < seconds * SR:
            frame = session.state()[1]
            if elapsed >= (n + 1) * 2.5 * SR:  # JACK time: the transport's jumps with locates
                n += 1
                if n % 2:
                    at = frame + SR // 10
                    session.tempo_from(at, float(rng.uniform(90.0, 150.0)))
                else:
                    to = float(rng.integers(8, 150)) + float(rng.uniform(0.2, 0.8))
                    session.client.transport_frame = round(session.frame_of(to))
            time.sleep(0.01)
        session.recording = False
        session.client.transport_stop()
        blocks = list(session.blocks)
        # A block whose frame does not follow on (the recorder's own missed cycle) is -1.
        frames, audio = session.take()
    finally:
        session.close()
        sink.stop()
    x = np.abs(audio[:, 0])
    # The beat and tempo the master said at each block's first sample, per sample (a
    # tempo change rewrites the map under frames a later locate comes back to).
    nan = (np.nan, np.nan)
    said = [session.written.get(f, nan) if r else nan for f, r, _ in blocks]
    sizes = [len(d) for _, _, d in blocks]
    # Where the tempo changed or a locate landed (recording samples).
    starts = np.cumsum([0, *sizes[:-1]])
    marks = [
        int(starts[k])
        for k in range(1, len(blocks))
        if blocks[k][1]
        and (blocks[k][0] != blocks[k - 1][0] + sizes[k - 1] or said[k][1] != said[k - 1][1])
    ]
    first = np.repeat([f for f, _, _ in blocks], sizes)
    beat0 = np.repeat([b for b, _ in said], sizes)
    tempo = np.repeat([t for _, t in said], sizes)
    peak_at = int(np.argmax(np.abs(click)))
    errors: list[float] = []
    settled: list[float] = []
    last = -SR
    for i in map(int, np.flatnonzero(x > 0.4)):
        # A click's peak (its first samples, read between frames at a rate other than
        # 1, rise gradually), less where the peak is in the click at the session's rate.
        if i - last < SR // 10:
            continue
        last = i
        peak = i + int(np.argmax(x[i : i + SR // 500]))
        bpm = float(tempo[peak])
        if frames[i] < 0 or frames[peak] < 0 or not bpm == bpm:
            continue
        onset = float(frames[peak]) - peak_at * TRACK_BPM / bpm
        said_beat = float(beat0[peak]) + (onset - float(first[peak])) / SR * bpm / 60.0
        error = (said_beat - round(said_beat)) * 60.0 / bpm * 1000
        errors.append(abs(error))
        since = [peak - m for m in marks if m <= peak]
        if not since or min(since) >= 60.0 / bpm * SR:
            settled.append(abs(error))
    e, s_ = np.array(errors), np.array(settled)
    return {
        "clicks": float(len(e)),
        "changes": float(len(marks)),
        "p50": float(np.percentile(e, 50)),
        "p99": float(np.percentile(e, 99)),
        "max": float(e.max()),
        "settled_p50": float(np.percentile(s_, 50)),
        "settled_p99": float(np.percentile(s_, 99)),
        "settled_max": float(s_.max()),
        "xruns": float(sink.xruns),
    }


def link_session(seconds: float) -> dict[str, float] | str:
    """One run of tests/link_session.py in a network namespace: the phase errors'
    p50/p99/max (ms, absolute) over its four parts, or why it cannot run."""
    import json
    import subprocess

    script = ROOT / "tests" / "link_session.py"
    try:
        done = subprocess.run(
            ["unshare", "-n", sys.executable, str(script), "--seconds", str(seconds)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
    except FileNotFoundError:
        return "no unshare (util-linux)"
    if done.returncode != 0:
        return f"unshare -n or the session failed: {done.stderr.strip()[-300:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        return str(result["skip"])
    errors = np.abs(
        np.array(
            [
                e
                for part in ("at_120", "at_change", "at_new", "after_restart")
                for e in result[part]["errors_ms"]
            ]
        )
    )
    status = result["status_after"][0][1][0]
    xruns = float(status.split("xruns ")[1].split()[0]) if "xruns " in status else -1.0
    return {
        "clicks": float(len(errors)),
        "p50": float(np.percentile(errors, 50)),
        "p99": float(np.percentile(errors, 99)),
        "max": float(errors.max()),
        "xruns": xruns,
    }


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
        self.jumps = 0
        self.seq = 0
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
    ap.add_argument(
        "--jack-seconds", type=float, default=60.0, help="JACK transport run length (JACK time)"
    )
    ap.add_argument(
        "--link-seconds",
        type=float,
        default=8.0,
        help="Link: each part of the session (0: no Link runs)",
    )
    args = ap.parse_args()
    server = f"stemdeck-bench-sync-{os.getpid()}"
    jackd = start_jack(server, rate=SR, period=BLOCK)
    if jackd is None:
        raise SystemExit("needs jackd (apt-get install jackd2)")
    os.environ["JACK_DEFAULT_SERVER"] = server
    try:
        ins, outs, jacks = [], [], []
        for run in range(args.runs):
            jacks.append(jack_transport(server, args.jack_seconds, run))
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
    print(
        f"{'run':>4} | {'JACK transport: position error p50/p99/max (ms)':>48} "
        f"{'a beat after a change':>24} {'clicks':>7} {'changes':>8} {'xruns':>6}"
    )
    for n, j in enumerate(jacks):
        print(
            f"{n + 1:>4} | {j['p50']:>24.3f} / {j['p99']:.3f} / {j['max']:<14.3f} "
            f"{j['settled_p50']:>8.3f}/{j['settled_p99']:.3f}/{j['settled_max']:<7.3f} "
            f"{int(j['clicks']):>7} {int(j['changes']):>8} {int(j['xruns']):>6}"
        )
    med_j = {k: median(r[k] for r in jacks) for k in jacks[0]}
    print(
        f" med | {med_j['p50']:>24.3f} / {med_j['p99']:.3f} / {med_j['max']:<14.3f} "
        f"{med_j['settled_p50']:>8.3f}/{med_j['settled_p99']:.3f}/{med_j['settled_max']:<7.3f} "
        f"{int(med_j['clicks']):>7} {int(med_j['changes']):>8} {int(med_j['xruns']):>6}"
    )
    if args.link_seconds > 0:
        links = [link_session(args.link_seconds) for _ in range(args.runs)]
        print(
            f"{'run':>4} | {'Ableton Link: phase error p50/p99/max (ms)':>48} "
            f"{'clicks':>7} {'xruns':>6}"
        )
        done = [r for r in links if isinstance(r, dict)]
        for n, r in enumerate(links):
            if isinstance(r, str):
                print(f"{n + 1:>4} | skipped: {r}")
                continue
            print(
                f"{n + 1:>4} | {r['p50']:>24.3f} / {r['p99']:.3f} / {r['max']:<14.3f} "
                f"{int(r['clicks']):>7} {int(r['xruns']):>6}"
            )
        if done:
            med_l = {k: median(r[k] for r in done) for k in done[0]}
            print(
                f" med | {med_l['p50']:>24.3f} / {med_l['p99']:.3f} / {med_l['max']:<14.3f} "
                f"{int(med_l['clicks']):>7} {int(med_l['xruns']):>6}"
            )
    if args.clocks:
        locks = np.array([clock_in(1000 + seed)["lock_max"] for seed in range(args.clocks)])
        print(
            f"clock in, {args.clocks} more clocks: lock p50 {np.median(locks):.2f} "
            f"p90 {np.percentile(locks, 90):.2f} max {locks.max():.2f} beats; "
            f"{int(np.sum(locks <= 2.0))} of {args.clocks} within 2 beats after every step"
        )
    print(
        "targets: JACK transport position <= 1 ms; clock in tempo err <= 0.1 BPM, lock <= 2 "
        "beats, phase <= 2 ms; clock out jitter <= 0.5 ms; Link phase <= 2 ms"
    )


if __name__ == "__main__":
    main()
