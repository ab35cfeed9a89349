"""Engine cost per block at 48 kHz / 256 frames, for 4, 16 and 64 stereo channels.

    .venv/bin/python bench/engine.py [--blocks 4000] [--runs 5]

Prints the median and 99th percentile of Mixer.process as a fraction of the
block's time budget (256 / 48000 s = 5.33 ms), with a gain change every 50
blocks so ramps are part of the load. Baseline, timed side by side: the least
a mixer must do, one numpy sum of the channels' block (no gains, no ramps).
Target: 16 channels <= 10 % of the budget (median).
"""

from __future__ import annotations

import argparse
import os
import time
from statistics import median

import numpy as np

from stemdeck.core.engine import Mixer, Play, SetTrack, StripTarget, Track

SR, BLOCK = 48000, 256


def run(n: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    seconds = blocks * BLOCK / SR + 1
    channels = (0.1 * rng.standard_normal((n, 2, int(seconds * SR)))).astype(np.float32)
    m = Mixer(max_channels=n)
    m.prepare(SR, BLOCK)
    m.post(SetTrack(Track(channels, SR, tuple(f"c{i}" for i in range(n)))))
    m.post(Play())
    out = np.zeros((BLOCK, 2), np.float32)
    for _ in range(50):
        m.process(out)
    engine = np.empty(blocks)
    base = np.empty(blocks)
    pos = 0
    for b in range(blocks):
        if b % 50 == 0:
            m.post(StripTarget(b % n, float(rng.uniform(0.2, 1.0)), False, False, 0.0))
        t0 = time.perf_counter()
        m.process(out)
        t1 = time.perf_counter()
        channels[:, :, pos : pos + BLOCK].sum(axis=0, out=out.T)
        t2 = time.perf_counter()
        engine[b] = t1 - t0
        base[b] = t2 - t1
        pos += BLOCK
    return engine, base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--blocks", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    budget = BLOCK / SR
    print(
        f"block budget {budget * 1000:.2f} ms (48 kHz, {BLOCK} frames); "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
        f"medians of {args.runs} runs of {args.blocks} blocks"
    )
    print(
        f"{'channels':>8} {'median':>9} {'p99':>9} {'median %':>9} {'p99 %':>7} "
        f"{'baseline':>9} {'x baseline':>10}"
    )
    for n in (4, 16, 64):
        meds, p99s, bases = [], [], []
        for _ in range(args.runs):
            engine, base = run(n, args.blocks)
            meds.append(float(np.median(engine)))
            p99s.append(float(np.percentile(engine, 99)))
            bases.append(float(np.median(base)))
        med, p99, b = median(meds), median(p99s), median(bases)
        print(
            f"{n:>8} {med * 1e3:>7.3f}ms {p99 * 1e3:>7.3f}ms {med / budget * 100:>8.1f}% "
            f"{p99 / budget * 100:>6.1f}% {b * 1e3:>7.3f}ms {med / b:>9.1f}x"
        )
    print("target: 16 channels <= 10 % median")


if __name__ == "__main__":
    main()
