"""The beat analysis's streamed front end (core/beats/features.py): fed in pieces of
any size it gives the whole track's values, and it holds no copy of the track."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soxr

from stemdeck.core.beats.analysis import analyze_beats
from stemdeck.core.beats.features import (
    ANALYSIS_SR,
    BLOCK_FRAMES,
    BankedSTFT,
    mono_pieces,
    stream_features,
)
from stemdeck.core.beats.filters import chroma_filters, mel_filters


def _signal(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Tones and seeded noise bursts twice a second, float32 (channels, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    burst = (t * 2) % 1 < 0.05
    out = []
    for c in range(channels):
        tone = 0.3 * np.sin(2 * np.pi * (55 + 20 * c) * t) + 0.1 * np.sin(2 * np.pi * 880 * t)
        out.append(tone + 0.2 * rng.standard_normal(len(t)) * burst)
    return np.asarray(out, dtype=np.float32)


def _pieces(x: np.ndarray, seed: int) -> list[np.ndarray]:
    """``x`` cut at seeded random points, pieces of one sample to tens of thousands."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=min(len(x) - 1, 40), replace=False))
    return np.split(x, np.concatenate([[1, 2], cuts[cuts > 2]]))


def _whole_stft(x: np.ndarray, n_fft: int, hop: int, bank: np.ndarray) -> np.ndarray:
    """``bank @ |STFT|**2`` of the whole signal at once: np.pad's reflection (zeros
    around a signal too short to reflect), every frame in one product."""
    pad = n_fft // 2
    padded = np.pad(x, pad, mode="reflect" if len(x) > pad else "constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return bank @ np.ascontiguousarray(power.T)


@pytest.mark.parametrize("sr", [44100, 48000, 8000, ANALYSIS_SR])
@pytest.mark.parametrize("block", [997, 4096, 65536, BLOCK_FRAMES])
def test_the_mono_mix_in_pieces_is_the_whole_tracks_resampled_at_once(sr: int, block: int) -> None:
    y = _signal(3.0, sr)
    mean = y.mean(axis=0)
    whole = mean if sr == ANALYSIS_SR else soxr.resample(mean, sr, ANALYSIS_SR, quality="VHQ")
    got = np.concatenate(list(mono_pieces(y, sr, block=block)))
    assert got.dtype == np.float32
    assert np.array_equal(got, whole)  # the stream is seamless: no sample differs


@pytest.mark.parametrize(
    ("n_fft", "bank"),
    [
        (1024, mel_filters(ANALYSIS_SR, 1024, 64, 8000.0)),
        (2048, chroma_filters(5512, 2048, ctroct=3.0, octwidth=1.0)),
    ],
)
@pytest.mark.parametrize("length", [100, 512, 1024, 1025, 700_001])
def test_the_stft_in_pieces_is_the_whole_signals(n_fft: int, bank: np.ndarray, length: int) -> None:
    x = _signal(length / ANALYSIS_SR + 1e-9, ANALYSIS_SR, channels=1)[0][:length]
    assert len(x) == length
    once = BankedSTFT(n_fft, 256, bank)
    whole = np.concatenate([once.process(x), once.flush()], axis=1)
    stream = BankedSTFT(n_fft, 256, bank)
    parts = [stream.process(p) for p in _pieces(x, seed=length)] + [stream.flush()]
    got = np.concatenate(parts, axis=1)
    # Any pieces: the same blocks of frames, so the very same values.
    assert got.dtype == np.float32 and np.array_equal(got, whole)
    # Against one product over every frame of the whole signal: a product's sums
    # round by its width (BLAS), a few float32 ulps.
    expected = _whole_stft(x, n_fft, 256, bank)
    assert got.shape == expected.shape == (bank.shape[0], 1 + length // 256)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))


def test_the_bass_chroma_is_the_whole_mono_mixs_resampled_at_once() -> None:
    y = _signal(40.0, 44100)  # two chroma blocks, many mono pieces
    features = stream_features(y, 44100, chroma=True)
    mono = soxr.resample(y.mean(axis=0), 44100, ANALYSIS_SR, quality="VHQ")
    low = soxr.resample(mono, ANALYSIS_SR, 5512, quality="VHQ")
    expected = _whole_stft(low, 2048, 256, chroma_filters(5512, 2048, ctroct=3.0, octwidth=1.0))
    assert features.chroma is not None and features.chroma.shape == expected.shape
    np.testing.assert_allclose(features.chroma, expected, rtol=1e-5, atol=1e-6 * expected.max())
    assert (
        features.full.shape == features.low.shape == features.mid.shape == (1 + len(mono) // 256,)
    )
    assert stream_features(y, 44100, chroma=False).chroma is None


@pytest.mark.slow  # about 6 s: ten minutes of audio analysed
def test_the_analysis_of_a_long_track_holds_no_copy_of_it(tmp_path: Path) -> None:
    """A 10-minute 44.1 kHz track in a memory map, as the daemon holds it: the
    analysis's heap peaks well below one mono copy at 22.05 kHz (53 MB). Measured
    22.5 MiB; holding the mono mix whole, as the analysis did, peaked at 119 MiB,
    and its mel spectrogram alone would add 13 MB."""
    sr, seconds = 44100, 600
    n = sr * seconds
    path = tmp_path / "track.npy"
    y = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2, n))
    for a in range(0, n, 30 * sr):
        y[:, a : a + 30 * sr] = _signal(30.0, sr, seed=a)
    y.flush()
    del y
    track = np.load(path, mmap_mode="r")
    mono_bytes = n * ANALYSIS_SR // sr * 4
    tracemalloc.start()
    try:
        analysis = analyze_beats(track, sr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(analysis.bpm - 120.0) < 0.01, analysis.bpm
    assert peak < 0.6 * mono_bytes, f"{peak / 2**20:.1f} MiB"
