"""A deterministic demo track with its four true stems.

About 30 s of music at 120 BPM in A minor: a drum kit (kick, snare, hats), a
bass line, a chord pad with an arpeggio, and a voice-like lead (a glottal pulse
train through vowel formants, with vibrato and legato phrasing). Every stem is
synthesized separately, so the mixture is exactly their sum: the ground truth
for tests, benchmarks and the quality table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

__all__ = ["STEM_NAMES", "DemoTrack", "demo_track"]

STEM_NAMES = ("drums", "bass", "vocals", "other")


@dataclass(frozen=True)
class DemoTrack:
    """Mixture and true stems, each of shape (2, samples), float32."""

    mix: np.ndarray
    stems: dict[str, np.ndarray]
    sr: int

    @property
    def name(self) -> str:
        return "stemdeck-demo"


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _polyblep_saw(freq: np.ndarray, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Band-limited sawtooth for a per-sample frequency track (PolyBLEP)."""
    dt = freq / sr
    phase = (phase0 + np.cumsum(dt)) % 1.0
    out = 2.0 * phase - 1.0
    # Smooth the discontinuity at each wrap with a 2-sample polynomial.
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
    # Constant-power pan, pan in -1 (left) .. 1 (right).
    angle = (pan + 1.0) * np.pi / 4.0
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)])


def _drums(n: int, sr: int, beat: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((2, n))
    bars = int(n / sr / (4 * beat))

    def place(hit: np.ndarray, t: float, pan: float, gain: float) -> None:
        i = int(t * sr)
        if i >= n:
            return
        m = min(len(hit), n - i)
        out[:, i : i + m] += gain * _pan(hit[:m], pan)

    tk = np.arange(int(0.45 * sr)) / sr
    kick_f = 45 + 110 * np.exp(-tk * 28)
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / sr) * np.exp(-tk * 7.5)
    kick[: int(0.003 * sr)] += rng.standard_normal(int(0.003 * sr)) * 0.3  # beater click

    ts = np.arange(int(0.25 * sr)) / sr
    sos_snare = signal.butter(2, [900, 7000], btype="bandpass", fs=sr, output="sos")
    snare_noise = signal.sosfilt(sos_snare, rng.standard_normal(len(ts)))
    snare = 0.9 * snare_noise * np.exp(-ts * 20) + 0.5 * np.sin(2 * np.pi * 185 * ts) * np.exp(
        -ts * 30
    )

    sos_hat = signal.butter(4, 7000, btype="highpass", fs=sr, output="sos")
    th = np.arange(int(0.09 * sr)) / sr
    to = np.arange(int(0.35 * sr)) / sr
    for bar in range(bars):
        t0 = bar * 4 * beat
        fill = bar % 4 == 3
        for b in range(4):
            if b in (0, 2) or (fill and b == 3):
                place(kick, t0 + b * beat, 0.0, 1.0)
            if b in (1, 3):
                place(snare, t0 + b * beat, 0.1, 0.55)
            if bar % 2 == 1 and b == 2:
                place(kick, t0 + (b + 0.5) * beat, 0.0, 0.7)
        for e in range(8):
            is_open = e % 4 == 3 and not fill
            hit_t = to if is_open else th
            noise = signal.sosfilt(sos_hat, rng.standard_normal(len(hit_t)))
            decay = 9 if is_open else 60
            accent = 0.35 if e % 2 == 0 else 0.22
            place(noise * np.exp(-hit_t * decay), t0 + e * beat / 2, -0.35, accent)
        if fill:
            for j in range(4):
                place(snare * 0.6, t0 + 3 * beat + j * beat / 4, 0.25 - 0.15 * j, 0.35)
    return out


_PROGRESSION = [  # A minor: Am F C G, one bar each (root MIDI note, chord tones)
    (45, (57, 60, 64)),
    (41, (57, 60, 65)),
    (48, (55, 60, 64)),
    (43, (55, 59, 62)),
]


def _bass(n: int, sr: int, beat: float) -> np.ndarray:
    mono = np.zeros(n)
    pattern = [
        (0, 0.0, 0.9),
        (0, 0.75, 0.4),
        (12, 1.5, 0.4),
        (0, 2.0, 0.8),
        (7, 3.0, 0.45),
        (10, 3.5, 0.4),
    ]
    sos = signal.butter(2, 700, btype="lowpass", fs=sr, output="sos")
    bars = int(n / sr / (4 * beat))
    for bar in range(bars):
        root = _PROGRESSION[bar % 4][0]
        for interval, pos, length in pattern:
            start = int((bar * 4 + pos) * beat * sr)
            m = int(length * beat * sr)
            if start >= n:
                continue
            m = min(m, n - start)
            f = np.full(m, _midi_hz(root + interval - 12))
            tone = 0.6 * _polyblep_saw(f, sr) + 0.8 * np.sin(2 * np.pi * np.cumsum(f) / sr)
            mono[start : start + m] += tone * _adsr(m, sr, 0.005, 0.08, 0.7, 0.04)
    return _pan(signal.sosfilt(sos, mono) * 0.7, 0.0)


def _other(n: int, sr: int, beat: float) -> np.ndarray:
    left = np.zeros(n)
    right = np.zeros(n)
    sos = signal.butter(2, 2200, btype="lowpass", fs=sr, output="sos")
    bars = int(n / sr / (4 * beat))
    bar_len = int(4 * beat * sr)
    for bar in range(bars):
        tones = _PROGRESSION[bar % 4][1]
        start = bar * bar_len
        m = min(bar_len, n - start)
        env = _adsr(m, sr, 0.12, 0.3, 0.6, 0.25)
        for i, note in enumerate(tones):
            for detune, side in ((-0.08, left), (0.08, right)):
                f = np.full(m, _midi_hz(note + detune))
                side[start : start + m] += 0.11 * _polyblep_saw(f, sr, phase0=0.13 * i) * env
        # Plucked arpeggio on sixteenth notes, upper octave, alternating sides.
        for j in range(16):
            if j % 3 == 2:
                continue
            note = tones[j % 3] + 12
            s = start + int(j * beat / 4 * sr)
            k = min(int(0.2 * sr), n - s)
            if k <= 0:
                continue
            t = np.arange(k) / sr
            pluck = (
                (
                    np.sin(2 * np.pi * _midi_hz(note) * t)
                    + 0.3 * np.sin(4 * np.pi * _midi_hz(note) * t)
                )
                * np.exp(-t * 14)
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

# (MIDI note, start beat within a 4-bar phrase, length in beats, vowel)
_MELODY = [
    (69, 0.0, 1.5, "a"),
    (72, 1.5, 0.5, "e"),
    (71, 2.0, 1.0, "o"),
    (69, 3.0, 1.0, "a"),
    (65, 4.5, 1.5, "i"),
    (64, 6.0, 2.0, "e"),
    (67, 8.0, 1.0, "o"),
    (72, 9.0, 1.0, "a"),
    (76, 10.0, 2.0, "e"),
    (74, 12.5, 1.0, "u"),
    (71, 13.5, 0.5, "o"),
    (69, 14.0, 1.75, "a"),
]


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    b = [1 - r]
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return signal.lfilter(b, a, x)


def _vocals(n: int, sr: int, beat: float) -> np.ndarray:
    mono = np.zeros(n)
    phrase_beats = 16
    phrases = int(n / sr / beat / phrase_beats)
    tilt = signal.butter(1, 300, btype="lowpass", fs=sr, output="sos")
    for p in range(phrases):
        if p % 4 == 0:  # the first phrase of every four is instrumental
            continue
        for note, pos, length, vowel in _MELODY:
            start = int((p * phrase_beats + pos) * beat * sr)
            m = int((length + 0.08) * beat * sr)  # slight legato overlap
            if start >= n:
                continue
            m = min(m, n - start)
            t = np.arange(m) / sr
            depth = 0.35 * np.clip((t - 0.25) / 0.3, 0.0, 1.0)  # vibrato after onset
            semis = note + depth * np.sin(2 * np.pi * 5.5 * t)
            f = 440.0 * 2.0 ** ((semis - 69) / 12.0)
            source = signal.sosfilt(tilt, _polyblep_saw(f, sr))
            formants, bws = _VOWELS[vowel]
            voiced = sum(
                _resonator(source, fr, bw, sr) * g
                for fr, bw, g in zip(formants, bws, (1.0, 0.6, 0.3, 0.2), strict=True)
            )
            mono[start : start + m] += voiced * _adsr(m, sr, 0.04, 0.1, 0.85, 0.09)
    mono *= 0.8 / (np.abs(mono).max() + 1e-12)
    return _pan(mono, 0.0)


def demo_track(*, sr: int = 44100, seconds: float = 30.0, seed: int = 7) -> DemoTrack:
    """Synthesize the demo track and its true stems.

    Parameters
    ----------
    sr : int
        Sample rate.
    seconds : float
        Length; rounded down to whole bars (2 s at 120 BPM), at least one bar.
    seed : int
        Seed of the noise sources (drums); same seed, same track, bit for bit.

    Returns
    -------
    DemoTrack
        ``mix`` equals the sum of ``stems`` exactly; peaks at -1 dBFS.
    """
    beat = 0.5
    bars = max(1, int(seconds / (4 * beat)))
    n = int(bars * 4 * beat * sr)
    rng = np.random.default_rng(seed)
    stems = {
        "drums": _drums(n, sr, beat, rng),
        "bass": _bass(n, sr, beat),
        "vocals": _vocals(n, sr, beat),
        "other": _other(n, sr, beat),
    }
    stems = {k: v.astype(np.float32) for k, v in stems.items()}
    mix = sum(stems.values(), start=np.zeros((2, n), np.float32))
    gain = np.float32(10 ** (-1 / 20) / max(float(np.abs(mix).max()), 1e-9))
    stems = {k: np.ascontiguousarray(v * gain) for k, v in stems.items()}
    mix = np.zeros((2, n), np.float32)
    for v in stems.values():
        mix += v
    return DemoTrack(mix=mix, stems=stems, sr=sr)
