"""Cost of writing an NI Stems file against the separation it carries.

A 3-minute stereo 44.1 kHz track is separated in stems mode with the default preset,
uncached. The track is real music where the MUSDB18 previews are on this machine
(``--material real``, the default then: the validation songs' mixtures one after
another, repeated to the length), else the demo song made that long
(``--material demo``). The material matters: FFmpeg's AAC encoder re-encodes a frame
up to five times while it spends fewer bits than the rate asks, which sparse
synthetic stems always do, so the demo costs it about three times what real songs
cost. Then then its master and four stems are
written as a ``.stem.mp4``, AAC at 256 kb/s and ALAC. Everything runs in this one
process, side by side, and each figure is the median of --runs repeats. The target
is an encoding ratio below 1: writing the file costs less than separating.

Also reported: reading the file back (decode of all five tracks).

    .venv/bin/python bench/stemfile.py [--seconds 180] [--runs 3] [--preset default]
                                       [--material real|demo]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--material", choices=("real", "demo"), default=None)
    args = ap.parse_args()

    import av
    import numpy as np

    from stemdeck.core.audiofile.decode import read_stem_file
    from stemdeck.core.audiofile.manifest import NI_STEMS
    from stemdeck.core.audiofile.stemfile_write import write_stem_file
    from stemdeck.core.material.demo import demo_track
    from stemdeck.core.separation.keys import SeparationSpec
    from stemdeck.core.separation.presets import load_separation_preset
    from stemdeck.core.separation.separate import separate

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, PyAV {av.__version__} (FFmpeg "
        f"{getattr(av, 'ffmpeg_version_info', '?')}), "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import musdb

    have_real = musdb.DATA.is_dir() and bool(musdb.song_names())
    material = args.material or ("real" if have_real else "demo")
    if material == "real":
        if not have_real:
            raise SystemExit(f"no MUSDB18 previews in {musdb.DATA}: see scripts/musdb.py")
        names = musdb.split()[1]
        sr = 44100
        n = int(args.seconds * sr)
        parts: list[np.ndarray] = []
        while sum(p.shape[1] for p in parts) < n:
            parts += [musdb.load(name).mix for name in names]
        y = np.ascontiguousarray(np.concatenate(parts, axis=1)[:, :n])
        what = f"real: the {len(names)} MUSDB18 validation previews in turn"
    else:
        song = demo_track(seconds=args.seconds)
        y, sr = song.mix, song.sr
        what = "the demo song"
    print(
        f"track ({what}): {y.shape[1] / sr:.1f} s, {y.shape[0]} channels, {sr} Hz; {args.runs} runs"
    )
    params = load_separation_preset(args.preset)
    times: dict[str, list[float]] = {"separate": [], "aac": [], "alac": [], "read aac": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = separate(y, sr, spec=SeparationSpec(params=params), cache=None)
            times["separate"].append(time.perf_counter() - t0)
            names = list(result.names)
            stems = np.stack([result.channels[names.index(n)] for n, _ in NI_STEMS])
            for codec in ("aac", "alac"):
                path = Path(tmp) / f"{codec}.stem.mp4"
                t0 = time.perf_counter()
                write_stem_file(path, y, stems, sr, codec=codec)
                times[codec].append(time.perf_counter() - t0)
                sizes[codec] = path.stat().st_size
            t0 = time.perf_counter()
            read_stem_file(Path(tmp) / "aac.stem.mp4")
            times["read aac"].append(time.perf_counter() - t0)
    sep = median(times["separate"])
    print(f"{'step':<28}{'median s':>10}{'x separate':>12}{'runs (s)':>30}")
    rows = [
        ("separate (stems, uncached)", "separate", ""),
        ("write stem.mp4, AAC 256k", "aac", f"  {sizes['aac'] / 1e6:.1f} MB"),
        ("write stem.mp4, ALAC", "alac", f"  {sizes['alac'] / 1e6:.1f} MB"),
        ("read stem.mp4 (AAC), all", "read aac", ""),
    ]
    for label, key, extra in rows:
        m = median(times[key])
        runs = " ".join(f"{t:.2f}" for t in times[key])
        print(f"{label:<28}{m:>10.2f}{m / sep:>12.2f}{runs:>30}{extra}")
    ratio = median(times["aac"]) / sep
    verdict = "met" if ratio < 1 else "NOT met"
    print(f"target (AAC encoding costs less than separating): {verdict}, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
