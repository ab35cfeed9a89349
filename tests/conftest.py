"""Shared fixtures: seeded signals, an isolated cache folder for every test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemdeck.core.separation.presets import SeparationParams

pytest_plugins = ["steal"]  # real-time tests run again after the host took the CPU

SR = 22050
ROOT = Path(__file__).resolve().parents[1]  # the repository
TINY = ROOT / "tests" / "data" / "tiny.toml"  # a separation preset that runs in a blink


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads or writes the user's real cache."""
    monkeypatch.setenv("STEMDECK_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def pwrites(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every ``os.pwrite`` the test makes, in order (each is made)."""
    import os

    sizes: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        sizes.append(memoryview(data).nbytes)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return sizes


def fail_pwrite_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Every ``os.pwrite`` after the first ``calls`` raises ENOSPC (a disk that fills)."""
    import errno
    import os

    real, made = os.pwrite, [0]

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        made[0] += 1
        if made[0] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


def open_fds() -> int:
    """How many descriptors this process has open."""
    import os

    return len(os.listdir("/proc/self/fd"))


def scratch_map(folder: Path, y: np.ndarray) -> np.ndarray:
    """``y`` (channels, samples) float32 in an unlinked scratch file of ``folder``, mapped
    read-only as the daemon's decoded tracks are (core/audiofile/scratch.py)."""
    import os

    from stemdeck.core.audiofile.scratch import map_file, new_file, write_at

    fd = new_file(folder, y.nbytes)
    try:
        for c in range(y.shape[0]):
            write_at(fd, y[c], 4 * c * y.shape[1])
        return map_file(fd, y.shape)
    finally:
        os.close(fd)  # the map keeps the file


def tone_mix(
    seconds: float = 2.0, *, sr: int = SR, stereo: bool = True, seed: int = 0
) -> np.ndarray:
    """A small musical test signal: a low tone, a high tone and noise bursts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    low = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    high = 0.2 * np.sin(2 * np.pi * 1760 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    bursts = np.zeros(n)
    for start in range(0, n, sr // 4):
        m = min(sr // 40, n - start)
        bursts[start : start + m] = 0.3 * rng.standard_normal(m) * np.exp(-np.arange(m) / 200)
    if not stereo:
        return (low + high + bursts)[np.newaxis].astype(np.float32)
    left = low + 0.8 * high + 0.5 * bursts
    right = low + 0.3 * high + 1.0 * bursts
    return np.stack([left, right]).astype(np.float32)


@pytest.fixture
def small_params() -> SeparationParams:
    """Fast parameters for tests: small FFT, few components and iterations."""
    return SeparationParams(
        n_fft=512, hop=128, n_components=4, n_iter=30, fit_frames=0, refine_iter=0, tol=0.0
    )
