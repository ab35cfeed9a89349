"""Multitrack material with true stems, for training the stems model and for evaluation.

Two generators, both driven by a seed:

- ``synth``: songs from :mod:`stemdeck.core.material.songs` (our own synthesizer);
- ``gm``: songs written as MIDI, one file per stem, rendered with fluidsynth
  and the FluidR3 General MIDI soundfont from Debian (``apt-get install
  fluidsynth fluid-soundfont-gm``): GM drum kits, basses, voices and a range of
  accompaniment instruments.

Training uses seeds 100-199, evaluation seeds 1-99 and the demo track: the sets
never overlap. Debian's OpenTTD music (openttd-openmsx...) is never used here;
it is kept for independent evaluation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from stemdeck.core.material.songs import (
    _BASS_PATTERNS,
    _DRUM_PATTERNS,
    MAJOR,
    MINOR,
    STEM_NAMES,
    Song,
    _chord,
    _melody,
    random_song,
    render_song,
)

SOUNDFONT = Path(os.environ.get("STEMDECK_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
TRAIN_SEEDS = range(100, 200)
EVAL_SEEDS = range(1, 100)

GM_BASS = [32, 33, 34, 35, 36, 38, 39]  # acoustic, finger, pick, fretless, slap, synth
GM_VOICE = [52, 53, 54, 85]  # choir aahs, voice oohs, synth voice, lead voice
GM_OTHER = [0, 1, 2, 4, 5, 16, 17, 19, 24, 25, 26, 27, 29, 48, 49, 50, 61, 88, 89, 90, 91]
TICKS = 480


def synth_song(seed: int) -> Song:
    return render_song(random_song(seed), name=f"synth-{seed}")


def _gm_tracks(seed: int) -> tuple[dict[str, mido.MidiFile], float]:
    spec = random_song(seed)
    rng = np.random.default_rng(seed + 7_000_001)
    tempo = mido.bpm2tempo(spec.bpm)
    files = {}
    beat = TICKS

    def new_file(channel: int, program: int | None) -> tuple[mido.MidiFile, list]:
        f = mido.MidiFile(ticks_per_beat=TICKS)
        track = mido.MidiTrack()
        f.tracks.append(track)
        track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
        if program is not None:
            track.append(mido.Message("program_change", program=program, channel=channel))
        return f, []

    def finish(f: mido.MidiFile, events: list) -> None:
        events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
        now = 0
        for t, msg in events:
            f.tracks[0].append(msg.copy(time=int(t - now)))
            now = int(t)

    def note(events: list, ch: int, n: int, start: float, length: float, vel: int) -> None:
        events.append((start, mido.Message("note_on", channel=ch, note=n, velocity=vel)))
        events.append((start + length, mido.Message("note_off", channel=ch, note=n)))

    # drums (channel 10)
    f, ev = new_file(9, None)
    pattern = _DRUM_PATTERNS[spec.drum_pattern % len(_DRUM_PATTERNS)]
    for bar in range(spec.bars):
        t0 = bar * 4 * beat
        if bar % 4 == 0:
            note(ev, 9, 49, t0, beat, 90)
        for e, (k, s, h) in enumerate(pattern):
            t = t0 + e * beat / 2
            if k:
                note(ev, 9, 36, t, beat / 4, int(110 * k))
            if s:
                note(ev, 9, 38, t, beat / 4, int(105 * s))
            if h:
                note(ev, 9, 46 if e == 7 else 42, t, beat / 4, int(80 * h))
    finish(f, ev)
    files["drums"] = f

    # bass
    f, ev = new_file(0, int(rng.choice(GM_BASS)))
    bass = _BASS_PATTERNS[spec.bass_pattern % len(_BASS_PATTERNS)]
    for bar in range(spec.bars):
        root, _ = _chord(spec, spec.progression[bar % len(spec.progression)])
        while root < 28:
            root += 12
        for interval, pos, length, vel in bass:
            note(ev, 0, root + interval, (bar * 4 + pos) * beat, length * beat, int(100 * vel))
    finish(f, ev)
    files["bass"] = f

    # vocals: the melody on a voice-like patch
    f, ev = new_file(1, int(rng.choice(GM_VOICE)))
    scale = MINOR if spec.minor else MAJOR
    for p in range(spec.bars // 4):
        if p % 4 not in spec.sing_phrases:
            continue
        for step, pos, length, _vowel in _melody(spec):
            octave, idx = divmod(step, 7)
            n = spec.key + 12 * (octave + spec.voice_octave) + scale[idx]
            note(ev, 1, n, (p * 16 + pos) * beat, length * beat, 100)
    finish(f, ev)
    files["vocals"] = f

    # other: chords, and broken chords on a second instrument half of the time
    f, ev = new_file(2, int(rng.choice(GM_OTHER)))
    arp = rng.random() < 0.5
    program2 = int(rng.choice(GM_OTHER))
    f.tracks[0].append(mido.Message("program_change", program=program2, channel=3))
    for bar in range(spec.bars):
        _, tones = _chord(spec, spec.progression[bar % len(spec.progression)])
        t0 = bar * 4 * beat
        for n in tones:
            note(ev, 2, n, t0, 4 * beat - 10, 70)
        if arp:
            for j in range(8):
                note(ev, 3, tones[j % 3] + 12, t0 + j * beat / 2, beat / 2, 60)
    finish(f, ev)
    files["other"] = f
    return files, spec.bpm


def gm_song(seed: int, *, cache_dir: Path | None = None) -> Song:
    """Render a General MIDI song's stems with fluidsynth (cached as wav in ``cache_dir``)."""
    if cache_dir is not None:
        folder = cache_dir / f"gm-{seed}"
        if all((folder / f"{k}.wav").exists() for k in STEM_NAMES):
            return _read_song(folder, f"gm-{seed}")
    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        raise RuntimeError("gm material needs: apt-get install fluidsynth fluid-soundfont-gm")
    files, _ = _gm_tracks(seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name, mid in files.items():
            mid.save(out / f"{name}.mid")
            subprocess.run(
                [
                    "fluidsynth",
                    "-ni",
                    "-q",
                    "-r",
                    "44100",
                    "-g",
                    "0.5",
                    "-O",
                    "float",
                    "-T",
                    "wav",
                    "-F",
                    str(out / f"{name}.wav"),
                    str(SOUNDFONT),
                    str(out / f"{name}.mid"),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        song = _read_song(out, f"gm-{seed}")
        if cache_dir is not None:
            folder = cache_dir / f"gm-{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, v in song.stems.items():
                sf.write(folder / f"{k}.wav", v.T, song.sr, subtype="FLOAT")
    return song


def _read_song(folder: Path, name: str) -> Song:
    stems = {}
    for k in STEM_NAMES:
        data, sr = sf.read(folder / f"{k}.wav", dtype="float32", always_2d=True)
        stems[k] = data.T
    n = max(v.shape[1] for v in stems.values())
    stems = {
        k: np.ascontiguousarray(np.pad(v, ((0, 0), (0, n - v.shape[1])))) for k, v in stems.items()
    }
    mix = np.zeros((2, n), np.float32)
    for v in stems.values():
        mix += v
    peak = float(np.abs(mix).max())
    if peak > 0.89:  # keep the mix under -1 dBFS, stems scaled alike
        g = np.float32(0.89 / peak)
        stems = {k: v * g for k, v in stems.items()}
        mix = mix * g
    return Song(mix=mix, stems=stems, sr=sr, name=name)


def songs(kind: str, seeds: range | list[int], *, cache_dir: Path | None = None) -> list[Song]:
    if kind == "synth":
        return [synth_song(s) for s in seeds]
    if kind == "gm":
        return [gm_song(s, cache_dir=cache_dir) for s in seeds]
    raise ValueError(f"unknown material {kind!r}")
