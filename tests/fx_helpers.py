"""Signals, mixers and measures the FX tests share (tests/core/mixer/test_fx*.py)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import signal

from stemdeck.core.mixer.commands import Command, Play, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer

__all__ = [
    "HIGHS",
    "SR",
    "burst_track",
    "click_energy",
    "hard_step_energy",
    "mixer",
    "noise",
    "run",
    "tones",
]

SR = 48000


def tones(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """Two stereo strips of low tones (nothing above 200 Hz)."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.empty((2, 2, len(t)), np.float32)
    out[0] = 0.3 * np.sin(2 * np.pi * 110 * t + 0.3)
    out[1] = 0.3 * np.sin(2 * np.pi * 165 * t + 1.1)
    return out


def noise(n: int, seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 2, int(seconds * sr))) * 0.2).astype(np.float32)


def mixer(
    channels: np.ndarray,
    *,
    block: int = 256,
    sr: int = SR,
    outputs: str = "mix",
    **kwargs: object,
) -> Mixer:
    m = Mixer(max_channels=8, **kwargs)  # type: ignore[arg-type]
    m.prepare(sr, block, outputs=outputs)
    m.post(SetTrack(Track(channels, sr, tuple(f"s{i}" for i in range(len(channels))))))
    m.post(Play())
    return m


def run(
    m: Mixer, frames: int, block: int, events: Mapping[int, Sequence[Command]] | None = None
) -> np.ndarray:
    """``frames`` samples in blocks of ``block``, posting ``events[t]`` at sample t."""
    events = events or {}
    out = np.zeros((frames, m.out_channels), np.float32)
    cuts = sorted({*range(0, frames, block), *events, frames})
    for a, b in itertools.pairwise(cuts):
        for cmd in events.get(a, []):
            m.post(cmd)
        while a < b:
            n = min(block, b - a)
            m.process(out[a : a + n])
            a += n
    return out


HIGHS = signal.butter(8, 4000, "highpass", fs=SR, output="sos")


def click_energy(out: np.ndarray) -> float:
    """The largest energy above 4 kHz in a 64-sample frame, left side. The test
    tones have nothing above 200 Hz: anything up there is made by the mixer (a
    step, a zipper), and a glide moves too slowly to put energy there."""
    highs = signal.sosfilt(HIGHS, out[:, 0].astype(np.float64))
    frames = highs[2048 : len(highs) // 64 * 64].reshape(-1, 64)
    return float((frames**2).sum(axis=1).max())


def hard_step_energy() -> float:
    """The calibration: the same tones with a gain step from 1 to 0.25 in one sample."""
    hard = mixer(tones(), ramp_ms=1000 / SR)
    return click_energy(run(hard, SR, 256, {25600: [StripTarget(0, 0.25, False, False, 0.0)]}))


def burst_track(seconds: float = 3.0) -> Track:
    """Strip 0: a 20 ms burst of 440 Hz at the start, then silence; strip 1: a quiet
    steady tone (what a mute or fader move leaves playing, or not)."""
    n = int(seconds * SR)
    ch = np.zeros((2, 2, n), np.float32)
    t = np.arange(int(0.02 * SR)) / SR
    ch[0, :, : len(t)] = 0.5 * np.sin(2 * np.pi * 440 * t)
    ch[1] = 0.05 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)
    return Track(ch, SR, ("burst", "bed"))
