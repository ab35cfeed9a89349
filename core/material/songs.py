"""Synthesized multitrack songs with true stems: the demo track and training material.

A :class:`SongSpec` describes a song (tempo, key, chord progression, drum kit and
pattern, bass line style, accompaniment instrument, singer); :func:`render_song`
synthesizes each stem separately, so the mixture is exactly their sum.
:func:`random_song` draws a spec from a seed, giving as many different songs as
wanted for training and for held-out evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from ..separation.stem_model import STEM_NAMES

__all__ = ["STEM_NAMES", "Song", "SongSpec", "random_song", "render_song"]


MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)


@dataclass(frozen=True)
class SongSpec:
    """Everything that decides a synthesized song; same spec, same audio."""

    seed: int = 7
    bars: int = 15
    bpm: float = 120.0
    key: int = 57  # MIDI note of the tonic (A3)
    minor: bool = True
    progression: tuple[int, ...] = (0, 5, 2, 6)  # scale degrees, one chord a bar
    kick_hz: float = 45.0
    kick_decay: float = 7.5
    snare_hz: float = 185.0
    hat_cutoff: float = 7000.0
    drum_pattern: int = 0
    bass_pattern: int = 0
    bass_cutoff: float = 700.0
    bass_saw: float = 0.6
    other: str = "pad+pluck"  # pad+pluck | organ | keys | strings
    other_cutoff: float = 2200.0
    voice_octave: int = 0  # 0 around A4, -1 an octave lower
    formant_shift: float = 1.0
    vibrato_hz: float = 5.5
    melody_seed: int = 0
    sing_phrases: tuple[int, ...] = (1, 2, 3)  # which of every 4 phrases are sung
    levels: dict[str, float] = field(
        default_factory=lambda: {"drums": 1.0, "bass": 1.0, "vocals": 1.0, "other": 1.0}
    )


@dataclass(frozen=True)
class Song:
    """Mixture and true stems, each of shape (2, samples), float32; ``mix`` is their sum."""

    mix: np.ndarray
    stems: dict[str, np.ndarray]
    sr: int
    name: str


def _midi_hz(note: float | np.ndarray) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note) - 69) / 12.0)


def _polyblep_saw(freq: np.ndarray, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Band-limited sawtooth for a per-sample frequency track (PolyBLEP)."""
    dt = freq / sr
    phase = (phase0 + np.cumsum(dt)) % 1.0
    out = 2.0 * phase - 1.0
    near_start = phase < dt
    t = phase[near_start] / dt[near_start]
    out[near_start] -= t + t - t * t - 1.0
    near_end = phase > 1.0 - dt
    t = (phase[near_end] - 1.0) / dt[near_end]
    out[near_end] -= t * t + t + t + 1.0
    return out


def _adsr(n: int, sr: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    na, nd, nr = int(a * sr), int(d * sr), int(r * sr)
    ns = max(n - na - nd - nr, 0)
    env = np.concatenate(
        [
            np.linspace(0.0, 1.0, na, endpoint=False),
            np.linspace(1.0, s, nd, endpoint=False),
            np.full(ns, s),
            np.linspace(s, 0.0, nr),
        ]
    )
    return env[:n] if len(env) >= n else np.pad(env, (0, n - len(env)))


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    angle = (pan + 1.0) * np.pi / 4.0  # constant power, pan -1 (left) .. 1 (right)
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)])


def _chord(spec: SongSpec, degree: int) -> tuple[int, tuple[int, int, int]]:
    """Root (bass register) and a close-voiced triad (mid register) for a degree."""
    scale = MINOR if spec.minor else MAJOR

    def note(step: int) -> int:
        octave, idx = divmod(step, 7)
        return spec.key + 12 * octave + scale[idx]

    triad = (note(degree), note(degree + 2), note(degree + 4))
    root = note(degree) - 12
    while root > spec.key - 8:
        root -= 12
    return root, triad


_DRUM_PATTERNS: list[
    list[tuple[float, float, float]]
] = [  # per eighth note of a bar: (kick, snare, hat) velocities
    [(1, 0, 1), (0, 0, 0.6), (0, 1, 1), (0, 0, 0.6), (1, 0, 1), (0, 0, 0.6), (0, 1, 1), (0, 0, 1)],
    [
        (1, 0, 1),
        (0, 0, 0.6),
        (0, 1, 1),
        (1, 0, 0.6),
        (0, 0, 1),
        (1, 0, 0.6),
        (0, 1, 1),
        (0, 0, 0.6),
    ],
    [(1, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 1, 1), (0, 0, 1), (1, 0, 1), (0, 0, 1)],
    [
        (1, 0, 0.8),
        (0, 0, 0.5),
        (0, 1, 0.8),
        (0, 0, 0.5),
        (1, 0, 0.8),
        (1, 0, 0.5),
        (0, 1, 0.8),
        (0, 0.5, 0.5),
    ],
]


def _drums(spec: SongSpec, n: int, sr: int, beat: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((2, n))

    def place(hit: np.ndarray, t: float, pan: float, gain: float) -> None:
        i = int(t * sr)
        if i >= n or gain <= 0:
            return
        m = min(len(hit), n - i)
        out[:, i : i + m] += gain * _pan(hit[:m], pan)

    tk = np.arange(int(0.45 * sr)) / sr
    kick_f = spec.kick_hz + 2.4 * spec.kick_hz * np.exp(-tk * 28)
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / sr) * np.exp(-tk * spec.kick_decay)
    click = int(0.003 * sr)
    kick[:click] += rng.standard_normal(click) * 0.3
    ts = np.arange(int(0.25 * sr)) / sr
    sos_snare = signal.butter(2, [900, 7000], btype="bandpass", fs=sr, output="sos")
    snare = 0.9 * signal.sosfilt(sos_snare, rng.standard_normal(len(ts))) * np.exp(-ts * 20)
    snare += 0.5 * np.sin(2 * np.pi * spec.snare_hz * ts) * np.exp(-ts * 30)
    sos_hat = signal.butter(4, spec.hat_cutoff, btype="highpass", fs=sr, output="sos")
    th = np.arange(int(0.09 * sr)) / sr
    to = np.arange(int(0.35 * sr)) / sr
    pattern = _DRUM_PATTERNS[spec.drum_pattern % len(_DRUM_PATTERNS)]
    for bar in range(spec.bars):
        t0 = bar * 4 * beat
        fill = bar % 4 == 3
        for e, (k, s, h) in enumerate(pattern):
            t = t0 + e * beat / 2
            place(kick, t, 0.0, k)
            place(snare, t, 0.1, 0.55 * s)
            is_open = e == 7 and not fill
            hit_t = to if is_open else th
            noise = signal.sosfilt(sos_hat, rng.standard_normal(len(hit_t)))
            place(
                noise * np.exp(-hit_t * (9 if is_open else 60)),
                t,
                -0.35,
                (0.35 if e % 2 == 0 else 0.22) * h,
            )
        if fill:
            for j in range(4):
                place(snare * 0.6, t0 + 3 * beat + j * beat / 4, 0.25 - 0.15 * j, 0.35)
    return out


_BASS_PATTERNS: list[
    list[tuple[int, float, float, float]]
] = [  # (semitones above root, start beat, length in beats, velocity)
    [
        (0, 0.0, 0.9, 1),
        (0, 0.75, 0.4, 0.8),
        (12, 1.5, 0.4, 0.8),
        (0, 2.0, 0.8, 1),
        (7, 3.0, 0.45, 0.9),
        (10, 3.5, 0.4, 0.8),
    ],
    [(0, 0.0, 1.9, 1), (0, 2.0, 0.9, 0.9), (7, 3.0, 0.9, 0.9)],
    [(0, e * 0.5, 0.4, 1 if e % 2 == 0 else 0.7) for e in range(8)],
    [
        (0, 0.0, 0.7, 1),
        (12, 1.0, 0.4, 0.7),
        (0, 1.5, 0.4, 0.9),
        (5, 2.5, 0.4, 0.8),
        (7, 3.0, 0.9, 0.9),
    ],
]


def _bass(spec: SongSpec, n: int, sr: int, beat: float) -> np.ndarray:
    mono = np.zeros(n)
    sos = signal.butter(2, spec.bass_cutoff, btype="lowpass", fs=sr, output="sos")
    pattern = _BASS_PATTERNS[spec.bass_pattern % len(_BASS_PATTERNS)]
    for bar in range(spec.bars):
        root, _ = _chord(spec, spec.progression[bar % len(spec.progression)])
        for interval, pos, length, vel in pattern:
            start = int((bar * 4 + pos) * beat * sr)
            if start >= n:
                continue
            m = min(int(length * beat * sr), n - start)
            f = np.full(m, _midi_hz(root + interval))
            tone = spec.bass_saw * _polyblep_saw(f, sr) + 0.8 * np.sin(
                2 * np.pi * np.cumsum(f) / sr
            )
            mono[start : start + m] += vel * tone * _adsr(m, sr, 0.005, 0.08, 0.7, 0.04)
    return _pan(signal.sosfilt(sos, mono) * 0.7, 0.0)


def _other(spec: SongSpec, n: int, sr: int, beat: float) -> np.ndarray:
    left = np.zeros(n)
    right = np.zeros(n)
    sos = signal.butter(2, spec.other_cutoff, btype="lowpass", fs=sr, output="sos")
    bar_len = int(4 * beat * sr)
    for bar in range(spec.bars):
        _, tones = _chord(spec, spec.progression[bar % len(spec.progression)])
        start = bar * bar_len
        m = min(bar_len, n - start)
        t = np.arange(m) / sr
        if spec.other in ("pad+pluck", "strings"):
            attack = 0.12 if spec.other == "pad+pluck" else 0.3
            env = _adsr(m, sr, attack, 0.3, 0.6, 0.25)
            for i, note in enumerate(tones):
                for detune, side in ((-0.08, left), (0.08, right)):
                    vib = 1 + (
                        0.003 * np.sin(2 * np.pi * 5.0 * t) if spec.other == "strings" else 0
                    )
                    f = _midi_hz(note + detune) * vib * np.ones(m)
                    side[start : start + m] += 0.11 * _polyblep_saw(f, sr, 0.13 * i) * env
        elif spec.other == "organ":
            env = _adsr(m, sr, 0.01, 0.05, 0.9, 0.05)
            for note in tones:
                f0 = _midi_hz(note)
                tone = sum(
                    g * np.sin(2 * np.pi * f0 * h * t)
                    for h, g in ((0.5, 0.5), (1, 1.0), (2, 0.6), (3, 0.4), (4, 0.3), (6, 0.15))
                )
                left[start : start + m] += 0.09 * tone * env
                right[start : start + m] += 0.07 * tone * env
        if spec.other in ("pad+pluck", "keys"):
            # Plucked / electric-piano notes on sixteenths, alternating sides.
            decay = 14 if spec.other == "pad+pluck" else 6
            for j in range(16):
                if j % 3 == 2 and spec.other == "pad+pluck":
                    continue
                if spec.other == "keys" and j % 4 != 0 and j % 4 != 3:
                    continue
                note = tones[j % 3] + (12 if spec.other == "pad+pluck" else 0)
                s = start + int(j * beat / 4 * sr)
                k = min(int(0.4 * sr), n - s)
                if k <= 0:
                    continue
                tt = np.arange(k) / sr
                f0 = _midi_hz(note)
                pluck = (
                    (
                        np.sin(2 * np.pi * f0 * tt)
                        + 0.3 * np.sin(4 * np.pi * f0 * tt)
                        + 0.1 * np.sin(6 * np.pi * f0 * tt)
                    )
                    * np.exp(-tt * decay)
                    * 0.12
                )
                (left if j % 2 else right)[s : s + k] += pluck
    return np.stack([signal.sosfilt(sos, left), signal.sosfilt(sos, right)])


_VOWELS = {  # formant frequencies and bandwidths (Hz), sung adult voice
    "a": ((800, 1150, 2900, 3900), (80, 90, 120, 130)),
    "e": ((400, 1600, 2700, 3300), (60, 80, 120, 150)),
    "i": ((350, 1700, 2700, 3700), (50, 100, 120, 150)),
    "o": ((450, 800, 2830, 3500), (70, 80, 100, 130)),
    "u": ((325, 700, 2530, 3500), (50, 60, 170, 180)),
}

_DEMO_MELODY = [  # (scale step from the tonic's octave above, start beat, beats, vowel)
    (7, 0.0, 1.5, "a"),
    (9, 1.5, 0.5, "e"),
    (8, 2.0, 1.0, "o"),
    (7, 3.0, 1.0, "a"),
    (5, 4.5, 1.5, "i"),
    (4, 6.0, 2.0, "e"),
    (6, 8.0, 1.0, "o"),
    (9, 9.0, 1.0, "a"),
    (11, 10.0, 2.0, "e"),
    (10, 12.5, 1.0, "u"),
    (8, 13.5, 0.5, "o"),
    (7, 14.0, 1.75, "a"),
]


def _melody(spec: SongSpec) -> list[tuple[int, float, float, str]]:
    if spec.melody_seed == 0:
        return _DEMO_MELODY
    rng = np.random.default_rng(spec.melody_seed)
    notes = []
    pos = 0.0
    step = 7
    while pos < 15.0:
        length = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        if rng.random() < 0.15:
            pos += 0.5  # a breath
            continue
        step = int(np.clip(step + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), 3, 12))
        notes.append((step, pos, min(length, 16.0 - pos), str(rng.choice(list(_VOWELS)))))
        pos += length
    return notes


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    return signal.lfilter([1 - r], [1.0, -2 * r * np.cos(theta), r * r], x)


def _vocals(spec: SongSpec, n: int, sr: int, beat: float) -> np.ndarray:
    mono = np.zeros(n)
    scale = MINOR if spec.minor else MAJOR
    tilt = signal.butter(1, 300, btype="lowpass", fs=sr, output="sos")
    phrases = spec.bars // 4
    for p in range(phrases):
        if p % 4 not in spec.sing_phrases:
            continue
        for step, pos, length, vowel in _melody(spec):
            octave, idx = divmod(step, 7)
            note = spec.key + 12 * (octave + spec.voice_octave) + scale[idx]
            start = int((p * 16 + pos) * beat * sr)
            if start >= n:
                continue
            m = min(int((length + 0.08) * beat * sr), n - start)
            t = np.arange(m) / sr
            depth = 0.35 * np.clip((t - 0.25) / 0.3, 0.0, 1.0)
            f = _midi_hz(note + depth * np.sin(2 * np.pi * spec.vibrato_hz * t))
            source = signal.sosfilt(tilt, _polyblep_saw(np.asarray(f), sr))
            formants, bws = _VOWELS[vowel]
            voiced = np.zeros(m)
            for fr, bw, g in zip(formants, bws, (1.0, 0.6, 0.3, 0.2), strict=True):
                voiced += _resonator(source, fr * spec.formant_shift, bw, sr) * g
            breath = int(0.03 * sr)
            voiced[:breath] *= np.linspace(0, 1, min(breath, m))
            mono[start : start + m] += voiced * _adsr(m, sr, 0.04, 0.1, 0.85, 0.09)
    peak = np.abs(mono).max()
    if peak > 0:
        mono *= 0.8 / peak
    return _pan(mono, 0.0)


def render_song(spec: SongSpec, *, sr: int = 44100, name: str | None = None) -> Song:
    """Synthesize a song's four stems and their mix.

    Returns
    -------
    Song
        Stems ``drums``, ``bass``, ``vocals``, ``other`` of shape (2, samples),
        float32, scaled together so the mix peaks at -1 dBFS; ``mix`` is their sum.
    """
    beat = 60.0 / spec.bpm
    n = int(spec.bars * 4 * beat * sr)
    rng = np.random.default_rng(spec.seed)
    raw = {
        "drums": _drums(spec, n, sr, beat, rng),
        "bass": _bass(spec, n, sr, beat),
        "vocals": _vocals(spec, n, sr, beat),
        "other": _other(spec, n, sr, beat),
    }
    stems = {k: (v * spec.levels.get(k, 1.0)).astype(np.float32) for k, v in raw.items()}
    mix = np.zeros((2, n), np.float32)
    for v in stems.values():
        mix += v
    gain = np.float32(10 ** (-1 / 20) / max(float(np.abs(mix).max()), 1e-9))
    stems = {k: np.ascontiguousarray(v * gain) for k, v in stems.items()}
    mix = np.zeros((2, n), np.float32)
    for v in stems.values():
        mix += v
    return Song(mix=mix, stems=stems, sr=sr, name=name or f"song-{spec.seed}")


def random_song(seed: int, *, bars: int = 16) -> SongSpec:
    """A song spec drawn from ``seed``: tempo, key, progression, sounds, singer, levels."""
    rng = np.random.default_rng(seed + 1_000_003)
    progressions = [
        (0, 5, 2, 6),
        (0, 3, 4, 4),
        (0, 5, 3, 4),
        (5, 3, 0, 4),
        (0, 4, 5, 3),
        (1, 4, 0, 0),
    ]
    return SongSpec(
        seed=seed,
        bars=bars,
        bpm=float(rng.uniform(85, 140)),
        key=int(rng.integers(50, 62)),
        minor=bool(rng.random() < 0.5),
        progression=progressions[int(rng.integers(len(progressions)))],
        kick_hz=float(rng.uniform(40, 60)),
        kick_decay=float(rng.uniform(5, 11)),
        snare_hz=float(rng.uniform(160, 240)),
        hat_cutoff=float(rng.uniform(5000, 9000)),
        drum_pattern=int(rng.integers(4)),
        bass_pattern=int(rng.integers(4)),
        bass_cutoff=float(rng.uniform(400, 1200)),
        bass_saw=float(rng.uniform(0.2, 1.0)),
        other=str(rng.choice(["pad+pluck", "organ", "keys", "strings"])),
        other_cutoff=float(rng.uniform(1500, 5000)),
        voice_octave=int(rng.choice([-1, 0, 0])),
        formant_shift=float(rng.uniform(0.85, 1.15)),
        vibrato_hz=float(rng.uniform(4.5, 6.5)),
        melody_seed=int(rng.integers(1, 2**31)),
        sing_phrases=(0, 1, 2, 3) if rng.random() < 0.5 else (1, 2, 3),
        levels={k: float(10 ** (rng.uniform(-6, 3) / 20)) for k in STEM_NAMES},
    )
