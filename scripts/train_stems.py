"""Train the stems model shipped as presets/stems/default.npz.

    .venv/bin/python scripts/train_stems.py            # reproduces the shipped model

Material: training seeds only (scripts/material.py: 100 onwards) of both
generators, our synthesizer and General MIDI songs rendered with fluidsynth.
The demo track and the evaluation seeds are never used. Deterministic: the same
material, atoms and seed give the same model.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import material

from stemdeck.core.nmf import solve_activations
from stemdeck.core.presets import SeparationParams
from stemdeck.core.separate import magnitude, reconstruct
from stemdeck.core.stems import STEM_NAMES, StemModel, train_stem_model
from stemdeck.core.stft import stft

ROOT = Path(__file__).resolve().parents[1]
SR, N_FFT, HOP = 44100, 2048, 512


def _score(refs: list[np.ndarray], ests: list[np.ndarray], sr: int) -> np.ndarray:
    """Median over 1 s windows of the energy-ratio SDR of each stem (fast, no museval)."""
    out = []
    for r, e in zip(refs, ests, strict=True):
        n = r.shape[1] // sr
        rw = r[:, : n * sr].reshape(r.shape[0], n, sr).astype(np.float64)
        ew = e[:, : n * sr].reshape(e.shape[0], n, sr).astype(np.float64)
        num = (rw**2).sum(axis=(0, 2))
        den = ((rw - ew) ** 2).sum(axis=(0, 2))
        ok = num > 1e-9
        out.append(
            np.median(10 * np.log10(num[ok] / np.maximum(den[ok], 1e-12))) if ok.any() else np.nan
        )
    return np.array(out)


def calibrate_gains(
    model: StemModel,
    songs: list,
    *,
    mask_power: float = 1.0,
    steps_db: tuple[float, ...] = (-6, -4, -2, 0, 2, 4, 6),
) -> tuple[float, ...]:
    """Per-stem mask gains maximizing the median SDR over stems on validation songs.

    Coordinate search in dB, two passes; the activations are fitted once per song
    (they do not depend on the gains).
    """
    params = SeparationParams(mask_power=mask_power)
    prepared = []
    for song in songs:
        X = stft(song.mix, n_fft=N_FFT, hop=HOP)
        V = magnitude(X)
        H = solve_activations(V, model.W, n_iter=params.stems_iter)
        refs = [song.stems[k] for k in STEM_NAMES]
        prepared.append((song, X, H, refs))

    def objective(gains_db: list[float]) -> float:
        trial = replace(model, gains=tuple(10 ** (g / 20) for g in gains_db))
        W = trial.mask_templates(model.W, mask_power)
        per_song = []
        for song, X, H, refs in prepared:
            ests = list(
                reconstruct(
                    X, W, H, model.groups, y=song.mix, n_fft=N_FFT, hop=HOP, mask_power=mask_power
                )
            )
            per_song.append(_score(refs, ests, song.sr))
        return float(np.median(np.nanmedian(np.stack(per_song), axis=0)))

    best_db = [0.0] * len(STEM_NAMES)
    best = objective(best_db)
    print(f"mask gains: start {best:.2f} dB median SDR on {len(songs)} validation songs")
    for _ in range(2):
        for i in range(len(STEM_NAMES)):
            for step in steps_db:
                trial = list(best_db)
                trial[i] = step
                if trial == best_db:
                    continue
                value = objective(trial)
                if value > best + 1e-3:
                    best, best_db = value, trial
        print(f"mask gains (dB) {dict(zip(STEM_NAMES, best_db, strict=True))}: {best:.2f} dB")
    return tuple(10 ** (g / 20) for g in best_db)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--synth", type=int, default=30, help="synthesized training songs")
    ap.add_argument("--gm", type=int, default=30, help="General MIDI training songs")
    ap.add_argument(
        "--validation",
        type=int,
        default=3,
        help="songs of each generator, after the training ones, for the mask gains",
    )
    ap.add_argument("--atoms", default="drums=24,bass=32,vocals=32,other=32")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--material-cache", type=Path, default=ROOT / "bench" / "out" / "material")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "presets" / "stems" / "default.npz")
    args = ap.parse_args()
    atoms = {k: int(v) for k, v in (item.split("=") for item in args.atoms.split(","))}
    seeds = list(material.TRAIN_SEEDS)
    t0 = time.perf_counter()
    spectrograms: dict[str, list[np.ndarray]] = {k: [] for k in STEM_NAMES}
    songs = material.songs("synth", seeds[: args.synth])
    if args.gm:
        songs += material.songs("gm", seeds[: args.gm], cache_dir=args.material_cache)
    for song in songs:
        assert song.sr == SR
        for name in STEM_NAMES:
            spectrograms[name].append(magnitude(stft(song.stems[name], n_fft=N_FFT, hop=HOP)))
    print(f"material: {len(songs)} songs in {time.perf_counter() - t0:.0f} s", flush=True)
    model = train_stem_model(
        spectrograms,
        atoms=atoms,
        sr=SR,
        n_fft=N_FFT,
        n_iter=args.iters,
        info={
            "synth_seeds": seeds[: args.synth],
            "gm_seeds": seeds[: args.gm] if args.gm else [],
            "atoms": atoms,
            "n_iter": args.iters,
            "hop": HOP,
            "script": "scripts/train_stems.py",
        },
    )
    validation = seeds[50 : 50 + args.validation]
    val_songs = material.songs("synth", validation)
    if args.gm:
        val_songs += material.songs("gm", validation, cache_dir=args.material_cache)
    gains = calibrate_gains(model, val_songs)
    model = replace(model, gains=gains, info={**model.info, "validation_seeds": validation})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    print(f"wrote {args.output} ({model.W.shape[1]} templates) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
