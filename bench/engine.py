"""Engine cost per block at 48 kHz, for 4 to 64 stereo channels and 32 to 256 frames.

    .venv/bin/python bench/engine.py [--blocks 4000] [--runs 5]

Prints the median and 99th percentile of Mixer.process as a fraction of the
block's time budget (frames / 48000 s), with a gain change every 50 blocks
and a solo toggled on every strip every 400 blocks, so ramps are part of the
load. The audio thread set-up of the daemon (``enter_audio_thread``) is
applied. Baseline, timed side by side: the least a mixer must do, one numpy
sum of the channels' block (no gains, no ramps).
Targets (p99 share of the block budget): 64 channels at 64 frames <= 25 %,
4 channels at 32 frames <= 25 %.
"""

from __future__ import annotations

import argparse
import os
import time
from statistics import median

import numpy as np

from stemdeck.core.mixer.commands import Batch, Play, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

SR = 48000
CASES = ((4, 32), (4, 256), (16, 256), (64, 64), (64, 256))
TARGETS = {(64, 64): 0.25, (4, 32): 0.25}


def run(n: int, block: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    seconds = blocks * block / SR + 1
    channels = (0.1 * rng.standard_normal((n, 2, int(seconds * SR)))).astype(np.float32)
    m = Mixer(max_channels=n)
    m.prepare(SR, block)
    m.post(SetTrack(Track(channels, SR, tuple(f"c{i}" for i in range(n)))))
    m.post(Play())
    out = np.zeros((block, 2), np.float32)
    for _ in range(50):
        m.process(out)
    engine = np.empty(blocks)
    base = np.empty(blocks)
    pos = 0
    for b in range(blocks):
        if b % 50 == 0:
            m.post(StripTarget(b % n, float(rng.uniform(0.2, 1.0)), False, False, 0.0))
        if b % 400 == 200:  # /ch/*/solo 1, then 0: every strip re-aimed
            solo = b % 800 == 200
            m.post(Batch(tuple(StripTarget(i, 1.0, False, solo, 0.0) for i in range(n))))
        t0 = time.perf_counter()
        m.process(out)
        t1 = time.perf_counter()
        channels[:, :, pos : pos + block].sum(axis=0, out=out.T)
        t2 = time.perf_counter()
        engine[b] = t1 - t0
        base[b] = t2 - t1
        pos += block
    return engine, base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blocks", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="run under SCHED_FIFO, as the daemon's audio thread does where allowed",
    )
    args = ap.parse_args()
    enter_audio_thread()
    scheduling = "SCHED_OTHER"
    if args.realtime:
        from stemdeck.daemon.realtime import make_realtime

        scheduling = make_realtime()
    print(
        f"48 kHz; {scheduling}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
        f"medians of {args.runs} runs of {args.blocks} blocks"
    )
    print(
        f"{'channels':>8} {'frames':>6} {'median':>9} {'p99':>9} {'median %':>9} {'p99 %':>7} "
        f"{'baseline':>9} {'x baseline':>10} target"
    )
    for n, block in CASES:
        budget = block / SR
        meds, p99s, bases = [], [], []
        for _ in range(args.runs):
            engine, base = run(n, block, args.blocks)
            meds.append(float(np.median(engine)))
            p99s.append(float(np.percentile(engine, 99)))
            bases.append(float(np.median(base)))
        med, p99, b = median(meds), median(p99s), median(bases)
        target = TARGETS.get((n, block))
        verdict = ""
        if target is not None:
            ok = p99 / budget <= target
            verdict = f"p99 <= {target * 100:.0f} %: {'met' if ok else 'MISSED'}"
        print(
            f"{n:>8} {block:>6} {med * 1e3:>7.3f}ms {p99 * 1e3:>7.3f}ms "
            f"{med / budget * 100:>8.1f}% {p99 / budget * 100:>6.1f}% {b * 1e3:>7.3f}ms "
            f"{med / b:>9.1f}x {verdict}"
        )


if __name__ == "__main__":
    main()
