"""Train the stems model shipped as presets/stems/default.npz.

    .venv/bin/python scripts/train_stems.py            # reproduces the shipped model

Material (never the validation or evaluation songs):
- real: the MUSDB18 preview train songs outside the validation split
  (scripts/musdb.py; the audio stays outside the repository);
- generated: our synthesizer's training seeds and General MIDI songs rendered
  with fluidsynth (scripts/material.py: seeds 100 onwards).

Steps (core/separation/training.py; core/separation/stems.py fits every track the same way):
1. per-stem KL-NMF dictionaries on the isolated stems;
2. activations of the training mixtures, harmonic and percussive parts apart;
3. ridge maps from the activations (five frames of context) to each stem's mel
   spectrum, from statistics accumulated over the training mixtures.
Deterministic: the same material and settings give the same model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import material
import musdb

from stemdeck.core.material.songs import Song
from stemdeck.core.separation.training import train_stem_model

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def training_songs(args: argparse.Namespace) -> tuple[list[Song], list[Song]]:
    """(real, generated) training songs."""
    train, _validation = musdb.split(args.data)
    if not train:
        raise SystemExit(
            f"no real training songs in {args.data}: extract the MUSDB18 previews first "
            "(see scripts/musdb.py)"
        )
    real = [musdb.load(n, args.data) for n in train]
    seeds = list(material.TRAIN_SEEDS)
    generated = material.songs("synth", seeds[: args.synth])
    if args.gm:
        generated += material.songs("gm", seeds[: args.gm], cache_dir=args.material_cache)
    return real, generated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=musdb.DATA, help="extracted MUSDB18 previews")
    ap.add_argument("--synth", type=int, default=30, help="synthesized training songs")
    ap.add_argument("--gm", type=int, default=30, help="General MIDI training songs")
    ap.add_argument(
        "--generated-weight",
        type=float,
        default=0.25,
        help="weight of the generated frames, as a share of the real ones",
    )
    ap.add_argument("--atoms", type=int, default=32, help="templates per stem")
    ap.add_argument("--iters", type=int, default=150, help="NMF iterations per dictionary")
    ap.add_argument("--fit-iter", type=int, default=40, help="activation fit iterations")
    ap.add_argument("--n-mels", type=int, default=256)
    ap.add_argument("--kernel", type=int, default=31, help="HPSS median filter length")
    ap.add_argument("--context", type=int, default=2, help="frames of context each side")
    ap.add_argument("--alpha", type=float, default=1e-3, help="ridge regularization")
    ap.add_argument("--material-cache", type=Path, default=ROOT / "bench" / "out" / "material")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "presets" / "stems" / "default.npz")
    args = ap.parse_args()
    t0 = time.perf_counter()
    real, generated = training_songs(args)
    for song in real + generated:
        assert song.sr == SR, song.name
    n_real = sum(s.mix.shape[1] for s in real)
    n_gen = sum(s.mix.shape[1] for s in generated)
    # Generated songs are long and many; weigh them to their share of the real frames.
    gen_weight = args.generated_weight * n_real / n_gen if n_gen else 0.0
    print(
        f"material: {len(real)} real songs ({n_real / SR:.0f} s), {len(generated)} generated "
        f"({n_gen / SR:.0f} s, weight {gen_weight:.3f}) in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    info: dict[str, object] = {
        "real": f"MUSDB18 7 s previews, {len(real)} train songs (validation split held out)",
        "synth_seeds": list(material.TRAIN_SEEDS)[: args.synth],
        "gm_seeds": list(material.TRAIN_SEEDS)[: args.gm],
        "generated_weight": args.generated_weight,
        "script": "scripts/train_stems.py",
    }
    model = train_stem_model(
        real + generated,
        weights=[1.0] * len(real) + [gen_weight] * len(generated),
        atoms=args.atoms,
        n_iter=args.iters,
        fit_iter=args.fit_iter,
        n_mels=args.n_mels,
        hpss_kernel=args.kernel,
        context=args.context,
        alpha=args.alpha,
        info=info,
        log=lambda msg: print(f"{msg} ({time.perf_counter() - t0:.0f} s)", flush=True),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
