"""Beat analysis on songs with exact beat truth, beside librosa's plain beat tracker.

The songs are core/material/songs.py's: ``random_song(seed)`` for seeds 0..N-1
(tempi 85-140 BPM, four drum patterns, one of them half-time), plus songs of the
same seeds moved to tempi outside that range (70, 75, 150, 165, 175 BPM) with
``dataclasses.replace``, so the octave choice is tested where it is hard. Their
beats are exact: beat k at k * 60 / bpm, a bar every four beats from 0 s.

Per method, on the mix (and ours also with the true drums stem added, standing
in for a perfect separation):
- beat F-measure (mir_eval, +-70 ms), both lists trimmed to [5 s, end - 0.5 s]
  (mir_eval's usual 5-second trim, and the last half second where a grid's last
  beat and the truth's differ by a rounding of the track's length);
- tempo within 2 %, octave errors (x1/2 or x2 within 2 %), other errors;
- downbeat F-measure (+-70 ms; librosa has no downbeats);
- seconds of analysis per minute of audio (warm, in process), and the first
  call in a fresh process for a 3-minute track (imports and all).

``--real DIR`` also scores every ``NAME.wav`` that has a ``NAME.beats`` beside
it (one beat time in seconds per line, a beat number after it optional).
``--tempi DIR`` prints the tempo of every ``mixture.wav`` and stem file
(``*.stem.*``) under DIR, with no truth: real music whose tempo an analysis
change must not move without a reason (run it before and after).

    .venv/bin/python bench/beats.py [--songs 40] [--real DIR] [--tempi DIR]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.beats.features import ANALYSIS_SR
from stemdeck.core.material.songs import SongSpec, random_song, render_song

EXTRA_TEMPI = (70.0, 75.0, 150.0, 165.0, 175.0)
WINDOW = 0.07  # mir_eval's beat F-measure window (s)


@dataclass
class Score:
    """One method's figures over a set of songs."""

    beat_f: list[float] = field(default_factory=list)
    downbeat_f: list[float] = field(default_factory=list)
    tempo_ok: int = 0
    octave: int = 0
    other: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def add_tempo(self, name: str, est: float, true: float) -> None:
        ratio = est / true
        if abs(ratio - 1) <= 0.02:
            self.tempo_ok += 1
            return
        if any(abs(ratio / r - 1) <= 0.02 for r in (0.5, 2.0)):
            self.octave += 1
            kind = "octave"
        else:
            self.other += 1
            kind = "other"
        self.failures.append(f"{name}: {est:.2f} BPM for {true:.2f} ({kind})")

    def line(self, label: str, n: int) -> str:
        per_min = self.seconds / (self.audio_seconds / 60) if self.audio_seconds else math.nan
        db = f"{np.mean(self.downbeat_f):.3f}" if self.downbeat_f else "  n/a"
        return (
            f"{label:<28} beat F {np.mean(self.beat_f):.3f}  tempo ok {self.tempo_ok}/{n} "
            f"({100 * self.tempo_ok / n:.1f} %)  octave err {self.octave} "
            f"({100 * self.octave / n:.1f} %)  other err {self.other}  downbeat F {db}  "
            f"{per_min:.3f} s/min"
        )


def f_measure(truth: np.ndarray, est: np.ndarray, end: float, *, start: float = 5.0) -> float:
    """mir_eval's beat F-measure of the beats in [start, end - 0.5 s]."""
    import mir_eval

    def trim(b: np.ndarray) -> np.ndarray:
        return b[(b >= start) & (b <= end - 0.5)]

    return float(mir_eval.beat.f_measure(trim(truth), trim(est), f_measure_threshold=WINDOW))


def song_specs(
    n: int,
    *,
    first_seed: int = 0,
    extra_tempi: tuple[float, ...] = EXTRA_TEMPI,
    moved_seed: int = 1000,
    per_tempo: int = 2,
) -> list[tuple[str, SongSpec]]:
    """``random_song`` of seeds ``first_seed`` .. + n - 1, then ``per_tempo`` songs
    moved to each of ``extra_tempi``, of seeds from ``moved_seed`` on."""
    specs = [(f"seed {s}", random_song(s)) for s in range(first_seed, first_seed + n)]
    for i, bpm in enumerate(extra_tempi):
        for j in range(per_tempo):
            seed = moved_seed + per_tempo * i + j
            specs.append((f"seed {seed} @ {bpm:g}", replace(random_song(seed), bpm=bpm)))
    return specs


def librosa_track(mono: np.ndarray) -> tuple[float, np.ndarray]:
    import librosa

    tempo, frames = librosa.beat.beat_track(y=mono, sr=ANALYSIS_SR)
    return float(np.atleast_1d(tempo)[0]), librosa.frames_to_time(frames, sr=ANALYSIS_SR)


def first_call_seconds() -> float:
    """A fresh process: import, then the first analysis of a 3-minute track."""
    code = (
        "import time, numpy as np\n"
        "from stemdeck.core.material.songs import random_song, render_song\n"
        "y = np.tile(render_song(random_song(0)).mix, 6)[:, : 180 * 44100]\n"
        "t = time.perf_counter()\n"
        "from stemdeck.core.beats.analysis import analyze_beats\n"
        "analyze_beats(y, 44100)\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def real_set(folder: Path, ours: Score, base: Score) -> int:
    from stemdeck.core.audiofile.files import load
    from stemdeck.core.audiofile.samples import resample

    n = 0
    for beats_file in sorted(folder.glob("*.beats")):
        wav = beats_file.with_suffix(".wav")
        if not wav.exists():
            continue
        rows = [
            line.split()[0]
            for line in beats_file.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        truth = np.array([float(r) for r in rows])
        y, sr = load(wav)
        end = y.shape[1] / sr
        t0 = time.perf_counter()
        a = analyze_beats(y, sr)
        ours.seconds += time.perf_counter() - t0
        ours.audio_seconds += end
        # a clip may be shorter than the usual 5 s trim: scored from its start
        ours.beat_f.append(f_measure(truth, a.beats(), end + 0.5, start=0.0))
        true_bpm = 60.0 / float(np.median(np.diff(truth)))
        ours.add_tempo(wav.name, a.bpm, true_bpm)
        mono = resample(y.mean(axis=0, keepdims=True), sr, ANALYSIS_SR)[0]
        t0 = time.perf_counter()
        tempo, beats = librosa_track(mono)
        base.seconds += time.perf_counter() - t0
        base.audio_seconds += end
        base.beat_f.append(f_measure(truth, beats, end + 0.5, start=0.0))
        base.add_tempo(wav.name, tempo, true_bpm)
        print(
            f"  {wav.name}: true {true_bpm:.2f} BPM ({len(truth)} beats); ours {a.bpm:.2f}, "
            f"librosa {tempo:.2f}"
        )
        n += 1
    return n


def print_tempi(folder: Path) -> None:
    """The tempo of every ``mixture.wav`` and ``*.stem.*`` file under ``folder``."""
    from stemdeck.core.audiofile.files import load

    files = sorted(folder.rglob("mixture.wav")) + sorted(folder.rglob("*.stem.*"))
    seconds = audio = 0.0
    for path in files:
        y, sr = load(path)
        t0 = time.perf_counter()
        a = analyze_beats(y, sr)
        seconds += time.perf_counter() - t0
        audio += y.shape[1] / sr
        name = path.parent.name if path.name == "mixture.wav" else path.name
        print(f"  {name}\t{y.shape[1] / sr:.1f} s\t{a.bpm:.2f} BPM")
    if files:
        print(f"real tracks: {len(files)}, {seconds / (audio / 60):.3f} s per min of audio")
    else:
        print(f"real tracks: none found in {folder}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--songs", type=int, default=40, help="random songs (seeds 0..N-1)")
    ap.add_argument("--real", type=Path, metavar="DIR", help="NAME.wav + NAME.beats pairs")
    ap.add_argument("--first-seed", type=int, default=0, help="the random songs' first seed")
    ap.add_argument(
        "--extra-tempi", type=float, nargs="*", default=list(EXTRA_TEMPI), metavar="BPM"
    )
    ap.add_argument("--moved-seed", type=int, default=1000, help="the moved songs' first seed")
    ap.add_argument("--per-tempo", type=int, default=2, help="moved songs per extra tempo")
    ap.add_argument("--tempi", type=Path, metavar="DIR", help="real tracks' tempi, no truth")
    ap.add_argument("--verbose", action="store_true", help="one line per song")
    args = ap.parse_args()

    from stemdeck.core.audiofile.samples import resample

    extra = tuple(args.extra_tempi)
    specs = song_specs(
        args.songs,
        first_seed=args.first_seed,
        extra_tempi=extra,
        moved_seed=args.moved_seed,
        per_tempo=args.per_tempo,
    )
    ours, with_drums, base = Score(), Score(), Score()
    # the same figures for the random songs alone (85-140 BPM) and the moved ones
    split = {k: (Score(), Score(), Score()) for k in ("random", "moved")}
    analyze_beats(render_song(random_song(0)).mix, 44100)  # warm: imports, caches
    for name, spec in specs:
        song = render_song(spec)
        sr = song.sr
        end = song.mix.shape[1] / sr
        period = 60.0 / spec.bpm
        truth = period * np.arange(spec.bars * 4)
        truth_db = truth[::4]
        part = split["moved" if "@" in name else "random"]
        mix_bpm = math.nan
        for scores, drums in (
            ((ours, part[0]), None),
            ((with_drums, part[1]), song.stems["drums"]),
        ):
            t0 = time.perf_counter()
            a = analyze_beats(song.mix, sr, drums=drums)
            if drums is None:
                mix_bpm = a.bpm
            took = time.perf_counter() - t0
            beat_f = f_measure(truth, a.beats(), end)
            downbeat_f = f_measure(truth_db, a.downbeats(), end)
            for score in scores:
                score.seconds += took
                score.audio_seconds += end
                score.beat_f.append(beat_f)
                score.downbeat_f.append(downbeat_f)
                score.add_tempo(name, a.bpm, spec.bpm)
        mono = resample(song.mix.mean(axis=0, keepdims=True), sr, ANALYSIS_SR)[0]
        t0 = time.perf_counter()
        tempo, beats = librosa_track(mono)
        took = time.perf_counter() - t0
        beat_f = f_measure(truth, beats, end)
        for score in (base, part[2]):
            score.seconds += took
            score.audio_seconds += end
            score.beat_f.append(beat_f)
            score.add_tempo(name, tempo, spec.bpm)
        if args.verbose:
            print(
                f"  {name}: true {spec.bpm:.2f}; ours {mix_bpm:.2f} (with the drums "
                f"{a.bpm:.2f}), librosa {tempo:.2f}"
            )
    n = len(specs)
    print(
        f"generated songs: {n} ({args.songs} random at 85-140 BPM from seed "
        f"{args.first_seed}, {n - args.songs} at {', '.join(f'{t:g}' for t in extra)} BPM "
        f"from seed {args.moved_seed})"
    )
    print(ours.line("stemdeck (mix)", n))
    print(with_drums.line("stemdeck (mix + true drums)", n))
    print(base.line("librosa beat_track (mix)", n))
    for part_name, label in (("random", "85-140 BPM"), ("moved", "70-175 BPM")):
        m = len(split[part_name][0].beat_f)
        if not m:
            continue
        print(f"of which {m} at {label}:")
        for method, score in zip(
            ("stemdeck", "stemdeck + drums", "librosa"), split[part_name], strict=True
        ):
            print("  " + score.line(method, m))
    for label, score in (("stemdeck", ours), ("with drums", with_drums), ("librosa", base)):
        for failure in score.failures:
            print(f"  {label} tempo error: {failure}")
    print(f"first call in a fresh process, 3-minute track: {first_call_seconds():.2f} s")
    if args.real:
        r_ours, r_base = Score(), Score()
        m = real_set(args.real, r_ours, r_base)
        if m:
            print(f"real annotated clips: {m}")
            print(r_ours.line("stemdeck (real)", m))
            print(r_base.line("librosa beat_track (real)", m))
        else:
            print(f"real annotated clips: none found in {args.real}")
    if args.tempi:
        print_tempi(args.tempi)


if __name__ == "__main__":
    main()
