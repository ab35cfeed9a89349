"""Time to verify every block checksum of a cached 3-minute four-stem track.

    .venv/bin/python bench/cache.py [--runs 5] [--seconds 180] [--sr 44100]

Writes one cache entry (four stereo float32 channels, 254 MB at 3 minutes and
44.1 kHz) in a temporary folder, then times ``SeparationCache.verify`` on it:
"warm" with the file in the page cache (a track played or separated recently),
and "cold" after ``posix_fadvise(DONTNEED)`` dropped this file's pages (the
disk's speed then dominates). Prints medians over ``--runs``.
Budget: 0.3 s warm, for 3 minutes of four stems.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from stemdeck.core.separation.cache import SeparationCache

BUDGET_S = 0.3


def _drop(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--sr", type=int, default=44100)
    args = ap.parse_args()
    samples = int(args.seconds * args.sr)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="stemdeck-bench-") as tmp:
        cache = SeparationCache(Path(tmp), verify_on_load=False)
        key = "0" * 40
        block = (0.1 * rng.standard_normal((2, 1 << 16))).astype(np.float32)
        with cache.writer(key, 4, (2, samples)) as w:
            for i in range(4):
                reps = -(-samples // block.shape[1])
                w.add_channel(f"stem{i}", np.tile(block * (i + 1), reps)[:, :samples])
            w.add_array("W", np.ones((1025, 64), np.float32))
            w.add_array("H", np.ones((64, samples // 512), np.float32))
            w.meta["sr"] = args.sr
        entry = cache.load(key).entry
        assert entry is not None
        size = sum(p.stat().st_size for p in entry.path.iterdir())
        timings: dict[str, list[float]] = {"warm": [], "cold": []}
        for _ in range(args.runs):
            for kind in ("warm", "cold"):
                if kind == "cold":
                    for p in entry.path.iterdir():
                        _drop(p)
                else:
                    cache.verify(entry)  # bring it into the page cache
                t0 = time.perf_counter()
                checked = cache.verify(entry)
                timings[kind].append(time.perf_counter() - t0)
                assert checked.found, checked.problem
        print(
            f"entry {size / 1e6:.0f} MB ({args.seconds:g} s, 4 stereo stems, {args.sr} Hz); "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
            f"medians of {args.runs} runs"
        )
        for kind, values in timings.items():
            t = median(values)
            print(f"{kind:>5}: {t:.3f} s  ({size / t / 1e9:.2f} GB/s)")
        warm = median(timings["warm"])
        print(
            f"budget {BUDGET_S} s (warm): {'met' if warm <= BUDGET_S else 'MISSED'}; "
            f"share {warm / BUDGET_S * 100:.0f} %"
        )


if __name__ == "__main__":
    main()
