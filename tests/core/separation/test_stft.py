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


@pytest.mark.parametrize("n", [16, 96, 1024, 4096])
def test_the_bare_ffts_give_scipys_bits(rng: np.random.Generator, n: int) -> None:
    """scipy's pocketfft loaded alone gives what ``scipy.fft`` gives, bit for bit, on
    rows read through strides too; without it (another scipy) ``scipy.fft`` does it."""
    import scipy.fft

    from stemdeck.core.separation import fft

    assert fft.BARE
    x = rng.standard_normal((70, n)).astype(np.float32)
    strided = x[::3]
    for rows in (x, strided):
        want = scipy.fft.rfft(rows, axis=1, workers=1)
        got = np.empty(want.shape, np.complex64)
        fft.rfft_rows(rows, got)
        assert got.dtype == want.dtype == np.complex64
        assert got.tobytes() == want.tobytes()
        back = fft.irfft_rows(want[:, :], n)
        assert back.dtype == np.float32 and back.shape == rows.shape
        assert back.tobytes() == scipy.fft.irfft(want, n=n, axis=1, workers=1).tobytes()


def test_without_the_bare_module_scipy_fft_does_the_same(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scipy.fft

    from stemdeck.core.separation import fft

    x = rng.standard_normal((9, 512)).astype(np.float32)
    bare = np.empty((9, 257), np.complex64)
    fft.rfft_rows(x, bare)
    monkeypatch.setattr(fft, "_pocketfft", None)
    fallback = np.empty((9, 257), np.complex64)
    fft.rfft_rows(x, fallback)
    assert fallback.tobytes() == bare.tobytes() == scipy.fft.rfft(x, axis=1).tobytes()
    assert fft.irfft_rows(bare, 512).tobytes() == scipy.fft.irfft(bare, n=512, axis=1).tobytes()


def test_the_bare_module_is_refused_when_it_is_not_what_scipy_fft_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No scipy to find, or a module whose answer is not the FFT's (another scipy's
    arguments): no bare module, ``scipy.fft`` then."""
    import importlib.util

    from stemdeck.core.separation import fft

    assert fft._bare_pocketfft() is not None
    real_find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real_find(name)
    )
    assert fft._bare_pocketfft() is None
    monkeypatch.setattr(importlib.util, "find_spec", real_find)
    monkeypatch.setattr(np.fft, "rfft", lambda x: np.fft.irfft(x))  # a wrong reference
    assert fft._bare_pocketfft() is None


def test_a_separation_worker_imports_no_scipy() -> None:
    """The fork server imports the worker's body once per daemon, before the first
    worker of a load can start: without scipy (0.25 s of its 0.5 s, ``fft.py``)."""
    import subprocess
    import sys

    code = (
        "import sys, stemdeck.daemon.separation_run; "
        "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout == "[]\n"


def test_the_row_ffts_refuse_what_the_compiled_module_would_misread() -> None:
    """An ``out`` of the wrong shape would be written past its end by the compiled
    module; another type or bin count is not what ``scipy.fft`` would make of it."""
    from stemdeck.core.separation import fft

    x = np.zeros((4, 16), np.float32)
    for rows, out in (
        (x, np.zeros((3, 9), np.complex64)),
        (x, np.zeros((4, 8), np.complex64)),
        (x, np.zeros((4, 9), np.complex128)),
        (x.astype(np.float64), np.zeros((4, 9), np.complex64)),
        (x[0], np.zeros(9, np.complex64)),
    ):
        with pytest.raises(ValueError, match=r"^rfft_rows takes float32 rows into complex64"):
            fft.rfft_rows(rows, out)
    for X in (np.zeros((4, 10), np.complex64), np.zeros((4, 9), np.float32)):
        with pytest.raises(ValueError, match=r"^irfft_rows takes complex rows of"):
            fft.irfft_rows(X, 16)
    assert fft.irfft_rows(np.zeros((4, 9), np.complex128), 16).dtype == np.float64


def test_the_normalization_is_the_whole_norms_without_a_track_long_array(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlap-add's normalization from a short overlap-add's head, interior hop
    and tail is the whole norm's product bit for bit, at every frame count; an
    inverse of a long signal asks for no norm longer than that short one."""
    from stemdeck.core.separation import stft as stft_module

    for n_fft, hop in ((4096, 1024), (512, 128), (512, 256), (64, 8), (15, 5), (500, 250)):
        for frames in (1, 2, 3, 9, 10, 11, 12, 17, 33, 257, 1001):
            length = (frames - 1) * hop + n_fft
            x = rng.standard_normal((2, 3, length)).astype(np.float32)
            whole = x * stft_module._ola_norm(n_fft, hop, frames)
            stft_module._normalize(x, n_fft, hop, frames)
            assert x.tobytes() == whole.tobytes(), (n_fft, hop, frames)
    with pytest.raises(ValueError, match=r"^the overlap-add to normalize is not C-contiguous$"):
        stft_module._normalize(np.zeros((40, 2), np.float32).T, 8, 4, 9)
    asked: list[int] = []
    real = stft_module._ola_norm

    def norm(n_fft: int, hop: int, frames: int) -> np.ndarray:
        asked.append(frames)
        return real(n_fft, hop, frames)

    monkeypatch.setattr(stft_module, "_ola_norm", norm)
    y = rng.standard_normal((2, 300_000)).astype(np.float32)
    out = istft(stft(y, n_fft=512, hop=128), n_fft=512, hop=128, length=y.shape[1])
    np.testing.assert_allclose(out, y, atol=2e-6)
    assert asked == [10]  # 2 * 512 / 128 + 2 frames, not the signal's 2,345
