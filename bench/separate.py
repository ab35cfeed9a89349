"""Separation speed on a 3-minute stereo 44.1 kHz track, K = 16.

Prints, from one run (medians of --runs repeats):
- load to written files, a fresh `stemdeck separate` process, uncached (wall time, peak RSS);
- the cached repeat inside the process (load + hash + open the memory-mapped entry);
- the NMF solver against scikit-learn's KL multiplicative-update solver, same spectrogram,
  same K, same start, same number of iterations, and the ratio;
- the seed's baseline, librosa.decompose.decompose, on the same spectrogram (reference);
- separation in chunks (core/separation/chunks.py): stems mode's time on 1 and 2 threads
  beside the whole-track code's, the time to the first chunk, and the chunked result's
  SDR against the whole-track one, per mode;
- a fresh process's first chunk, then its first two chunks side by side (what a
  separation worker does first), with BLAS's product buffers written first as the
  separation does (core/separation/blas.py) and without, alternating.

    .venv/bin/python bench/separate.py [--seconds 180] [--runs 3] [--iters 20]
    .venv/bin/python bench/separate.py --only fresh [--runs 7]
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from statistics import median

import numpy as np


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info

        info = [
            f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}"
            for i in threadpool_info()
        ]
        return ", ".join(sorted(set(info)))
    except ImportError:
        return "threadpoolctl missing"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20, help="NMF iterations for the solver race")
    ap.add_argument("--skip-librosa", action="store_true")
    ap.add_argument("--only", choices=("fresh",), help="only a fresh process's first chunks")
    args = ap.parse_args()

    from stemdeck.core.audiofile.files import load, write
    from stemdeck.core.material.demo import demo_track
    from stemdeck.core.separation.cache import SeparationCache
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.core.separation.nmf import _init_factors, nmf
    from stemdeck.core.separation.presets import load_separation_preset
    from stemdeck.core.separation.separate import separate
    from stemdeck.core.separation.spectral import magnitude
    from stemdeck.core.separation.stft import stft

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(
        f"BLAS: {blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    work = Path(tempfile.mkdtemp(prefix="stemdeck-bench-"))
    atexit.register(shutil.rmtree, work, True)  # its tracks and cache entries: GBs
    track = work / "track.wav"
    demo = demo_track(seconds=args.seconds)
    write(track, demo.mix, demo.sr)
    print(f"track: {demo.mix.shape[1] / demo.sr:.0f} s stereo {demo.sr} Hz (the demo, extended)")
    if args.only == "fresh":
        fresh_chunks(track, args.runs)
        return
    params = load_separation_preset("default")
    print(
        f"preset default: K={params.n_components}, n_fft {params.n_fft}, hop {params.hop}, "
        f"{params.n_iter} iterations on {params.fit_frames} frames + {params.refine_iter} "
        "refining activations"
    )

    # 1. load to written files, uncached, fresh process each run, both modes
    peak_rss = 0.0
    mode_medians = []
    for label, flags in (
        ("stems mode (default)", []),
        (f"components mode, K={params.n_components}", ["--components", str(params.n_components)]),
    ):
        walls = []
        for run in range(args.runs):
            env = dict(os.environ, STEMDECK_CACHE=str(work / f"cache-{len(flags)}-{run}"))
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "stemdeck.daemon.cli",
                    "separate",
                    str(track),
                    "-o",
                    str(work / f"out{run}"),
                    *flags,
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            walls.append(time.perf_counter() - t0)
            peak_rss = max(peak_rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        target = "6" if not flags else "10"
        print(
            f"uncached `stemdeck separate`, {label}, process start to files written: "
            f"median {median(walls):.2f} s  runs {[round(w, 2) for w in walls]}  "
            f"target <= {target} s"
        )
        print(f"  peak RSS of the processes so far: {peak_rss:.0f} MB  target <= 2048 MB")
        mode_medians.append(median(walls))
    print(f"stems / components time, same run: {mode_medians[0] / mode_medians[1]:.2f}")
    stems_stages(load(track)[0], demo.sr, args.runs)
    chunked(load(track)[0], demo.sr, args.runs)
    fresh_chunks(track, args.runs)

    # 2. cached repeat inside this process
    cache = SeparationCache(work / "cache-2-0")
    hits = []
    for _ in range(max(args.runs, 3)):
        t0 = time.perf_counter()
        y, sr = load(track)
        result = separate(y, sr, spec=SeparationSpec("components", params), cache=cache)
        hits.append(time.perf_counter() - t0)
        assert result.from_cache
    print(
        f"cached repeat in process (load + hash + open entry): median {median(hits):.3f} s  "
        f"target <= 0.5 s"
    )

    # 3. NMF solver race on the same spectrogram
    y, sr = load(track)
    V = magnitude(stft(y, n_fft=params.n_fft, hop=params.hop))
    k = params.n_components
    WT, HT = _init_factors(np.ascontiguousarray(V.T), k, 0)
    W0, H0 = np.ascontiguousarray(WT.T), np.ascontiguousarray(HT.T)
    from sklearn.decomposition import NMF

    ours, theirs = [], []
    Vc = np.ascontiguousarray(V)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        nmf(V, k, n_iter=args.iters, tol=0, W_init=W0, H_init=H0, check_every=10)
        ours.append(time.perf_counter() - t0)
        model = NMF(
            k, solver="mu", beta_loss="kullback-leibler", init="custom", max_iter=args.iters, tol=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model.fit_transform(Vc, W=W0.copy(), H=H0.copy())
            theirs.append(time.perf_counter() - t0)
    print(f"\nNMF, KL, K={k}, {args.iters} iterations on {V.shape[0]} x {V.shape[1]} (float32):")
    print(
        f"  stemdeck nmf          median {median(ours):.2f} s  "
        f"({median(ours) / args.iters * 1000:.0f} ms/iteration)"
    )
    print(
        f"  scikit-learn NMF(mu)  median {median(theirs):.2f} s  "
        f"({median(theirs) / args.iters * 1000:.0f} ms/iteration)"
    )
    ratios = [b / a for a, b in zip(ours, theirs, strict=True)]
    print(
        f"  speed-up, per run {[round(r, 2) for r in ratios]}, median {median(ratios):.2f}x  "
        "target >= 3x"
    )

    if not args.skip_librosa:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            librosa.decompose.decompose(V, n_components=k, sort=True)
            took = time.perf_counter() - t0
        print(
            f"  seed baseline librosa.decompose.decompose (sklearn defaults: cd solver, "
            f"Frobenius, to convergence): {took:.2f} s, once"
        )


def stems_stages(y: np.ndarray, sr: int, runs: int) -> None:
    """Where stems mode spends its time, in this process (medians of ``runs``)."""
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.core.separation.separate import reconstruct_spectra
    from stemdeck.core.separation.spectral import magnitude
    from stemdeck.core.separation.stem_model import load_stem_model
    from stemdeck.core.separation.stems import estimate_stems
    from stemdeck.core.separation.stft import stft

    model = load_stem_model()
    params = SeparationSpec().settings_at(sr)
    stages: dict[str, list[float]] = {}

    def timed(name: str, t0: float) -> float:
        now = time.perf_counter()
        stages.setdefault(name, []).append(now - t0)
        return now

    for _ in range(runs):
        t = time.perf_counter()
        X = stft(y, n_fft=params.n_fft, hop=params.hop)
        V = magnitude(X)
        t = timed("stft", t)
        estimate = estimate_stems(model, V, sr=sr, n_fft=params.n_fft, n_iter=params.stems_iter)
        t = timed("HPSS + activations + maps", t)
        for _audio in reconstruct_spectra(X, estimate, y=y, n_fft=params.n_fft, hop=params.hop):
            pass
        timed("masks + inverse STFT", t)
    total = sum(median(v) for v in stages.values())
    print(f"stems mode in process, {params.n_fft}/{params.hop}, {params.stems_iter} iterations:")
    for name, values in stages.items():
        print(f"  {name:28s} median {median(values):5.2f} s  ({median(values) / total:4.0%})")


def chunked(y: np.ndarray, sr: int, runs: int) -> None:
    """Chunked against whole-track separation, in this process: time and SDR."""
    from stemdeck.core.separation.chunks import ChunkedSeparator
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.core.separation.presets import load_separation_preset
    from stemdeck.core.separation.separate import separate

    def run(spec: SeparationSpec, workers: int) -> tuple[np.ndarray, float, float]:
        t0 = time.perf_counter()
        separator = ChunkedSeparator(y, sr, spec)
        out = np.empty(separator.shape, dtype=np.float32)
        first = None
        for c in separator.stream(workers=workers):
            out[:, :, c.start : c.stop] = c.channels
            first = first if first is not None else time.perf_counter() - t0
        assert first is not None
        return out, first, time.perf_counter() - t0

    print(f"chunks ({y.shape[1] / sr:.0f} s track, 15-s chunks, in process, no cache):")
    stems = SeparationSpec()
    times: dict[str, list[float]] = {}
    firsts: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(runs):
        t0 = time.perf_counter()
        whole = separate(y, sr, spec=stems).channels
        times.setdefault("whole-track separate()", []).append(time.perf_counter() - t0)
        for workers in (1, 2):
            out, first, took = run(stems, workers)
            times.setdefault(f"chunked, {workers} thread(s)", []).append(took)
            firsts[workers].append(first)
    base = median(times["whole-track separate()"])
    for name, values in times.items():
        print(
            f"  stems {name:24s} median {median(values):5.2f} s  ({median(values) / base:4.0%} "
            f"of whole)  runs {[round(v, 2) for v in values]}"
        )
    for workers, values in firsts.items():
        print(f"  stems first chunk, {workers} thread(s): median {median(values):.2f} s")
    components = SeparationSpec("components", load_separation_preset("default"))
    for label, spec, reference in (
        ("stems", stems, whole),
        ("components", components, separate(y, sr, spec=components).channels),
    ):
        out, _, _ = run(spec, 2)
        sdr = [_sdr_db(reference[j], out[j]) for j in range(len(out))]
        exact = "equal bit for bit" if np.array_equal(reference, out) else "not bit-equal"
        print(
            f"  {label}: chunked against whole-track SDR, worst channel "
            f"{min(sdr):.1f} dB, median {median(sdr):.1f} dB ({exact}; 300 dB+ is exact)  "
            "target >= 60 dB"
        )


#: A fresh process's first chunk, timed from its first separation call (the BLAS
#: limit and, where written, the product buffers: as the worker, three), then chunks
#: 1 and 2 side by side; with argv[2] == "unwritten", BLAS's product buffers are left
#: as the process finds them (the code before core/separation/blas.py wrote them).
_FRESH = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
from stemdeck.core.audiofile.files import load
from stemdeck.core.separation import blas
from stemdeck.core.separation.chunks import ChunkedSeparator
if sys.argv[2] == "unwritten":
    blas._write_product_buffers = lambda count: None
y, sr = load(sys.argv[1])
t0 = time.perf_counter()
blas.keep_one_blas_thread(products=3)
separator = ChunkedSeparator(y, sr)
separator.chunk(0)
t1 = time.perf_counter()
with ThreadPoolExecutor(2) as pool:
    list(pool.map(separator.chunk, (1, 2)))
print(t1 - t0, time.perf_counter() - t1)
"""


def fresh_chunks(track: Path, runs: int) -> None:
    """A fresh process's first chunk and first pair of chunks, BLAS's product buffers
    written first (as the separation does) or not, alternating (medians of ``runs``)."""
    figures: dict[str, list[tuple[float, float]]] = {"written": [], "unwritten": []}
    for _ in range(runs):
        for state, values in figures.items():
            out = subprocess.run(
                [sys.executable, "-c", _FRESH, str(track), state],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            values.append((float(out[0]), float(out[1])))
    print(
        "a fresh process's first chunks (stems mode, one thread each; the first from the "
        "process's first separation call, the buffers' writing included), medians:"
    )
    firsts = {k: median(v[0] for v in vs) for k, vs in figures.items()}
    pairs = {k: median(v[1] for v in vs) for k, vs in figures.items()}
    for state in figures:
        print(
            f"  product buffers {state:9s}: first chunk {firsts[state]:.3f} s, "
            f"the next two side by side {pairs[state]:.3f} s"
        )
    print(
        f"  written / unwritten: first chunk {firsts['written'] / firsts['unwritten']:.2f}, "
        f"first pair {pairs['written'] / pairs['unwritten']:.2f}"
    )


def _sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    err = float(np.sum((ref - estimate) ** 2))
    return float(10 * np.log10(max(float(np.sum(ref**2)), 1e-300) / max(err, 1e-300)))


if __name__ == "__main__":
    main()
