"""Signals, mixers and measures the mixer tests share (tests/core/mixer/test_*.py)."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import signal

from stemdeck.core.mixer.commands import Command, Pause, Play, Seek, SetTrack, StripTarget, Track
from stemdeck.core.mixer.engine import Mixer, enter_audio_thread

__all__ = [
    "HIGHS",
    "SR",
    "block_allocations",
    "burst_track",
    "bus_events",
    "cents",
    "click_energy",
    "frequency",
    "hard_step_energy",
    "kernels_alike",
    "mixer",
    "noise",
    "record",
    "ring_out",
    "run",
    "tones",
]

SR = 48000


def frequency(x: np.ndarray, sr: int = SR) -> float:
    """A steady tone's frequency from its upward zero crossings (interpolated),
    the first to the last: exact to a small fraction of a cent over a second."""
    x = x.astype(np.float64)
    neg = np.signbit(x)
    idx = np.nonzero(neg[:-1] & ~neg[1:])[0]
    at = idx + x[idx] / (x[idx] - x[idx + 1])
    return float((len(at) - 1) * sr / (at[-1] - at[0]))


def cents(f: float, ref: float) -> float:
    return float(1200 * np.log2(f / ref))


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


def kernels_alike(
    channels: np.ndarray,
    events: Mapping[int, Sequence[Command]],
    *,
    length: int,
    block: int,
    outputs: str,
) -> tuple[np.ndarray, list[Mixer]]:
    """The same events through the compiled kernel and its numpy reference: asserts
    that outputs and recorded masters are equal bit for bit, and returns the master
    and both mixers (compiled first)."""
    outs, masters, mixers = [], [], []
    for compiled in (True, False):
        m = mixer(channels, block=256, outputs=outputs, compiled=compiled)
        recorded = np.zeros((length, 2), np.float32)
        out = np.zeros((length, m.out_channels), np.float32)
        cuts = sorted({*range(0, length, block), *events, length})
        for a, b in itertools.pairwise(cuts):
            for cmd in events.get(a, []):
                m.post(cmd)
            m.process(out[a:b])
            recorded[a:b] = m.master_view(b - a)
        outs.append(out)
        masters.append(recorded)
        mixers.append(m)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(masters[0], masters[1])
    return masters[0], mixers


def block_allocations(
    m: Mixer, out: np.ndarray, post: Callable[[int], bool], blocks: int = 100
) -> tuple[int, int]:
    """Bytes of Python allocation per block, measured by tracemalloc in the audio
    thread's numpy set-up (``enter_audio_thread``, undone after): the most any
    block took, and the most a block took that had no command. ``post(i)`` posts
    block ``i``'s commands and says whether it posted any."""
    enter_audio_thread()
    tracemalloc.start()
    worst = steady = 0
    try:
        for i in range(blocks):
            posted = post(i)
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            m.process(out)
            took = tracemalloc.get_traced_memory()[1] - base
            worst = max(worst, took)
            if not posted:
                steady = max(steady, took)
    finally:
        tracemalloc.stop()
        np.setbufsize(8192)
    return worst, steady


def record(m: Mixer, frames: int, at: int, commands: Sequence[Command]) -> np.ndarray:
    """``frames`` of the master in blocks of 256, posting ``commands`` before the
    block that starts at sample ``at`` (a multiple of 256)."""
    master = np.zeros((frames, 2), np.float32)
    out = np.zeros((256, m.out_channels), np.float32)
    for b in range(0, frames, 256):
        if b == at:
            for cmd in commands:
                m.post(cmd)
        m.process(out)
        master[b : b + 256] = m.master_view(min(256, frames - b))
    return master


def ring_out(m: Mixer, running: Callable[[], bool], seconds: float = 5.0) -> None:
    """Silent blocks until ``running()`` turns false, ``seconds`` at the most."""
    quiet = np.zeros((256, m.out_channels), np.float32)
    for _ in range(int(seconds * SR) // 256):
        m.process(quiet)
        if not running():
            return


def bus_events(
    rng: np.random.Generator,
    length: int,
    other: Track,
    first: Command,
    send: Callable[[], Command],
    bus: Callable[[], Command],
    aside: Callable[[], Command],
) -> dict[int, list[Command]]:
    """Forty random commands for a send bus (echo or reverb) over ``length`` samples,
    after ``first`` at sample 0: three eighths sends, an eighth each a bus move,
    something beside the bus (``aside``: a filter, the other bus), a seek, a track
    change (to ``other``), and a pause or play."""
    events: dict[int, list[Command]] = {0: [first]}
    for _ in range(40):
        t = int(rng.integers(0, length - 1))
        kind = rng.integers(0, 8)
        cmd: Command
        if kind < 3:
            cmd = send()
        elif kind == 3:
            cmd = bus()
        elif kind == 4:
            cmd = aside()
        elif kind == 5:
            cmd = Seek(float(rng.uniform(0, length / SR)))
        elif kind == 6:
            cmd = SetTrack(other)
        elif rng.random() < 0.5:
            cmd = Pause()
        else:
            cmd = Play()
        events.setdefault(t, []).append(cmd)
    return events
