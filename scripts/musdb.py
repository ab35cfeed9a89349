"""Real multitracks: the MUSDB18 7-second previews of the train split, as ``Song`` objects.

The audio is never part of this repository (MUSDB18 is for non-commercial
research). Bring it onto the machine once: fetch the public repository that
keeps the previews, then run the extraction script the project's data notes
give; it writes ``<song>/{mixture,drums,bass,other,vocals}.wav`` folders. This
module reads them from ``$STEMDECK_DATA/musdb7`` (default
``~/.cache/stemdeck-data/musdb7``).

Only the 94 train songs are ever extracted. They are split here, once and for
all, into training songs and validation songs: every fifth song in name order,
starting with the third, is held out for validation (19 songs), and
``scripts/train_stems.py`` never sees them. ``bench/quality.py`` scores on them.
The MUSDB18 test split stays unseen: it is the blind test set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from stemdeck.core.material.songs import STEM_NAMES, Song

DATA = Path(os.environ.get("STEMDECK_DATA", Path.home() / ".cache" / "stemdeck-data")) / "musdb7"


def song_names(data: Path = DATA) -> list[str]:
    """Every extracted song, in name order (empty when the data is absent)."""
    if not data.is_dir():
        return []
    return sorted(p.name for p in data.iterdir() if (p / "mixture.wav").is_file())


def split(data: Path = DATA) -> tuple[list[str], list[str]]:
    """(training names, validation names): every fifth song from the third is validation."""
    names = song_names(data)
    validation = names[2::5]
    return [n for n in names if n not in validation], validation


def load(name: str, data: Path = DATA) -> Song:
    """One song: its four stems and their sum as the mixture, (2, samples) float32, 44.1 kHz."""
    stems = {}
    sr = 0
    for k in STEM_NAMES:
        audio, sr = sf.read(data / name / f"{k}.wav", dtype="float32", always_2d=True)
        stems[k] = np.ascontiguousarray(audio.T)
    mix = np.zeros_like(stems[STEM_NAMES[0]])
    for v in stems.values():
        mix += v
    return Song(mix=mix, stems=stems, sr=sr, name=name)
