"""Separation quality: SDR per stem, stems mode against baselines, on held-out material.

    .venv/bin/python bench/quality.py [--synth 3] [--gm 3] [--sdr museval|fast] [--model FILE]

Two groups, side by side, both never used for training:
- real: the validation songs of the MUSDB18 previews (scripts/musdb.py; skipped,
  with a line saying so, when the data is not on the machine);
- generated (scripts/material.py): the demo track, our synthesizer's evaluation
  seeds and General MIDI songs rendered with fluidsynth.
SDR is BSSEval v4 as museval computes it (1 s windows, the median over windows
of a track, then the median over tracks); ``--sdr fast`` uses a plain
energy-ratio SDR on the same windows for quick iterations.

Methods, side by side:
- stemdeck    stems mode as shipped (no oracle help)
- seed        librosa.decompose.decompose, 4 components, soft masks, every component
              given to the true stem it matches best, and a stem left without one
              given its best-matching component (oracle assignment: optimistic)
- mixture     the mixture copied as every stem
- IRM         ideal ratio (Wiener) mask from the true stems: an upper bound
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import material  # noqa: E402
import musdb  # noqa: E402

from stemdeck.core.audiofile.roles import ROLES  # noqa: E402
from stemdeck.core.material.demo import demo_track  # noqa: E402
from stemdeck.core.separation.keys import SeparationSpec  # noqa: E402
from stemdeck.core.separation.presets import SeparationParams  # noqa: E402
from stemdeck.core.separation.separate import separate  # noqa: E402
from stemdeck.core.separation.spectral import magnitude  # noqa: E402
from stemdeck.core.separation.stem_model import STEM_NAMES  # noqa: E402
from stemdeck.core.separation.stft import istft, stft  # noqa: E402


def _museval_metrics():
    """museval's metrics module, loaded without the package __init__ (which imports
    musdb and stempeg and so needs ffmpeg, irrelevant here)."""
    import importlib.util

    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("museval is not installed: pip install -e '.[test]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    mspec = importlib.util.spec_from_file_location("museval_metrics", path)
    if mspec is None or mspec.loader is None:
        raise SystemExit(f"museval's {path} cannot be loaded")
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    return module


def sdr_museval(refs: np.ndarray, ests: np.ndarray, sr: int) -> np.ndarray:
    """Median-over-windows SDR of each source; refs/ests shape (src, channels, samples).

    Exactly museval.evaluate(mode="v4", win=hop=1 s): bss_eval with time-invariant
    distortion filters, no permutation.
    """
    metrics = _museval_metrics()
    sdr, _isr, _sir, _sar, _ = metrics.bss_eval(
        refs.transpose(0, 2, 1),
        ests.transpose(0, 2, 1),
        compute_permutation=False,
        window=sr,
        hop=sr,
        framewise_filters=False,
        bsseval_sources_version=False,
    )
    return np.nanmedian(sdr, axis=1)


def sdr_fast(refs: np.ndarray, ests: np.ndarray, sr: int) -> np.ndarray:
    out = []
    for r, e in zip(refs.astype(np.float64), ests.astype(np.float64), strict=True):
        values = []
        for i in range(r.shape[1] // sr):
            rw, ew = r[:, i * sr : (i + 1) * sr], e[:, i * sr : (i + 1) * sr]
            if np.sum(rw**2) < 1e-9:
                continue  # museval gives NaN for silent reference windows
            values.append(10 * np.log10(np.sum(rw**2) / max(np.sum((rw - ew) ** 2), 1e-12)))
        out.append(np.median(values) if values else np.nan)
    return np.array(out)


def masked(
    X: np.ndarray, models: list[np.ndarray], length: int, p: float, n_fft: int, hop: int
) -> list[np.ndarray]:
    den = sum(m**p for m in models) + 1e-20
    return [istft(X * (m**p / den), n_fft=n_fft, hop=hop, length=length) for m in models]


def seed_method(y: np.ndarray, refs: np.ndarray, sdr, sr: int) -> np.ndarray:
    import librosa

    n_fft, hop = 2048, 512
    X = stft(y, n_fft=n_fft, hop=hop)
    V = magnitude(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W, H = librosa.decompose.decompose(V, n_components=4, sort=True)
    comps = masked(X, [np.outer(W[:, i], H[i]) for i in range(4)], y.shape[1], 1.0, n_fft, hop)
    # Oracle: each component goes to the true stem it matches best; a stem that
    # got none borrows the component that matches it best (so no stem is silent,
    # which BSSEval cannot score, and the seed is judged optimistically).
    est = np.zeros_like(refs)
    match = np.stack([sdr_fast(refs, np.broadcast_to(c, refs.shape), sr) for c in comps])
    for i, c in enumerate(comps):
        est[int(np.nanargmax(match[i]))] += c
    for j in range(len(refs)):
        if not est[j].any():
            est[j] = comps[int(np.nanargmax(match[:, j]))]
    return sdr(refs, est, sr)


def irm(y: np.ndarray, refs: np.ndarray, sdr, sr: int) -> np.ndarray:
    n_fft, hop = 2048, 512
    X = stft(y, n_fft=n_fft, hop=hop)
    mags = [magnitude(stft(r, n_fft=n_fft, hop=hop)) for r in refs]
    return sdr(refs, np.stack(masked(X, mags, y.shape[1], 2.0, n_fft, hop)), sr)


def score_group(label: str, songs, sdr, params: SeparationParams) -> dict[str, np.ndarray]:
    """Per-stem medians over the group's songs, for every method."""
    methods = ["stemdeck", "seed (oracle)", "mixture", "IRM (bound)"]
    scores: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for song in songs:
        refs = np.stack([song.stems[k] for k in STEM_NAMES])
        y = song.mix
        result = separate(y, song.sr, spec=SeparationSpec(params=params))
        # The channels come in the mixer's order (drums, bass, other, vocals); the
        # scores in the model's (STEM_NAMES), as the other methods give them.
        assert list(result.names) == list(ROLES)
        ours = np.stack([result.channels[result.names.index(k)] for k in STEM_NAMES])
        scores["stemdeck"].append(sdr(refs, ours, song.sr))
        scores["seed (oracle)"].append(seed_method(y, refs, sdr, song.sr))
        scores["mixture"].append(sdr(refs, np.broadcast_to(y, refs.shape), song.sr))
        scores["IRM (bound)"].append(irm(y, refs, sdr, song.sr))
        row = "  ".join(f"{m} {np.nanmedian(scores[m][-1]):6.2f}" for m in methods)
        print(f"[{label}] {song.name[:28]:28s} {row}", flush=True)
    return {m: np.nanmedian(np.stack(v), axis=0) for m, v in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", type=int, default=0, help="real validation songs (0: all)")
    ap.add_argument("--synth", type=int, default=3, help="held-out synthesized songs")
    ap.add_argument("--gm", type=int, default=3, help="held-out General MIDI songs")
    ap.add_argument("--sdr", choices=("museval", "fast"), default="museval")
    ap.add_argument("--model", default="default", help="stems model: shipped name or .npz file")
    ap.add_argument("--material-cache", type=Path, default=ROOT / "bench" / "out" / "material")
    args = ap.parse_args()
    sdr = sdr_museval if args.sdr == "museval" else sdr_fast
    params = SeparationParams(stems_model=args.model)
    groups = {}
    _train, validation = musdb.split()
    if validation:
        names = validation[: args.real] if args.real else validation
        groups["real"] = [musdb.load(n) for n in names]
    else:
        print(f"real: no MUSDB18 previews in {musdb.DATA} (see scripts/musdb.py); skipped")
    seeds = list(material.EVAL_SEEDS)
    generated = [demo_track(), *material.songs("synth", seeds[: args.synth])]
    if args.gm:
        generated += material.songs("gm", seeds[: args.gm], cache_dir=args.material_cache)
    groups["generated"] = generated
    t0 = time.perf_counter()
    results = {label: score_group(label, songs, sdr, params) for label, songs in groups.items()}
    took = time.perf_counter() - t0
    print(f"\nSDR (dB, {args.sdr}): median over windows, then over songs ({took:.0f} s)")
    for label, per_method in results.items():
        print(f"\n{label} ({len(groups[label])} songs)")
        print(f"{'method':16s}" + "".join(f"{k:>9s}" for k in STEM_NAMES) + "      all")
        for m, per_stem in per_method.items():
            cells = "".join(f"{v:9.2f}" for v in per_stem)
            print(f"{m:16s}{cells}{np.median(per_stem):9.2f}")


if __name__ == "__main__":
    main()
