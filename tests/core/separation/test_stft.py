import numpy as np
import pytest

from stemdeck.core.errors import ParameterError
from stemdeck.core.separation.stft import istft, n_frames, spread_frames, stft, stft_frames


@pytest.mark.parametrize("length", [1, 7, 255, 256, 257, 4097])
@pytest.mark.parametrize(("n_fft", "hop"), [(512, 128), (512, 256), (1024, 256), (64, 8)])
def test_perfect_reconstruction(
    rng: np.random.Generator, length: int, n_fft: int, hop: int
) -> None:
    y = rng.standard_normal((2, length)).astype(np.float32)
    X = stft(y, n_fft=n_fft, hop=hop)
    assert X.shape[:2] == (2, n_fft // 2 + 1) and X.dtype == np.complex64
    out = istft(X, n_fft=n_fft, hop=hop, length=length)
    assert out.shape == y.shape
    np.testing.assert_allclose(out, y, atol=2e-6)


def test_mono_1d_roundtrip(rng: np.random.Generator) -> None:
    y = rng.standard_normal(1000).astype(np.float32)
    X = stft(y, n_fft=256, hop=64)
    np.testing.assert_allclose(istft(X[0], n_fft=256, hop=64, length=1000), y, atol=2e-6)


def test_chunked_mask_equals_full_mask(rng: np.random.Generator) -> None:
    y = rng.standard_normal((2, 20000)).astype(np.float32)
    X = stft(y, n_fft=256, hop=64)
    M = rng.random(X.shape[1:]).astype(np.float32)  # (bins, frames)
    full = istft(X * M, n_fft=256, hop=64, length=20000)
    chunked = istft(X, n_fft=256, hop=64, length=20000, mask=lambda s, e: M[:, s:e].T)
    np.testing.assert_allclose(chunked, full, atol=1e-5)
    w, h = M[:, 0].copy(), M[0].copy()
    rank1 = istft(X * np.outer(w, h), n_fft=256, hop=64, length=20000)
    weighted = istft(X, n_fft=256, hop=64, length=20000, bin_weights=w, frame_weights=h)
    np.testing.assert_allclose(weighted, rank1, atol=1e-5)


@pytest.mark.parametrize(("n_fft", "hop"), [(500, 300), (512, 300), (512, 512), (15, 5)])
def test_bad_parameters(n_fft: int, hop: int) -> None:
    with pytest.raises(ParameterError):
        stft(np.zeros((1, 100), np.float32), n_fft=n_fft, hop=hop)


@pytest.mark.parametrize("length", [1, 700, 22050 * 3 + 77])
def test_frames_alone_equal_the_whole_stft(length: int) -> None:
    """Every frame, the first and last (padded with zeros) included, bit for bit."""
    rng = np.random.default_rng(length)
    y = rng.standard_normal((2, length)).astype(np.float32)
    X = stft(y, n_fft=512, hop=128)
    frames = np.array([0, 1, X.shape[2] // 2, X.shape[2] - 2, X.shape[2] - 1])
    frames = np.unique(np.clip(frames, 0, X.shape[2] - 1))
    np.testing.assert_array_equal(stft_frames(y, frames, n_fft=512, hop=128), X[:, :, frames])


def test_frames_alone_hold_no_copy_of_the_track() -> None:
    """A few frames of a long track allocate in proportion to the frames, not the
    track (a padded copy of each channel made the separation worker's first pass
    grow with the track's length: 635 MB for an hour at 44.1 kHz)."""
    import tracemalloc

    y = np.zeros((2, 20_000_000), np.float32)  # 80 MB a channel
    frames = spread_frames(n_frames(y.shape[1], 2048, 512), 300)
    tracemalloc.start()
    try:
        stft_frames(y, frames, n_fft=2048, hop=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak
