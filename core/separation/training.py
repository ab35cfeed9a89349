"""Training the stems model: dictionaries by KL-NMF, then the ridge-regression maps.

Used by ``scripts/train_stems.py`` (which reproduces the shipped model,
``presets/stems/default.npz``) and the tests; a separation never trains.
:mod:`stemdeck.core.separation.stem_model` describes the model,
:mod:`stemdeck.core.separation.stems` applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from ..errors import ParameterError
from .nmf import nmf
from .spectral import magnitude
from .stem_model import STEM_NAMES, StemModel
from .stems import fit_activations
from .stft import stft

__all__ = ["Multitrack", "fit_maps", "train_dictionaries", "train_stem_model"]


def train_dictionaries(
    spectrograms: Mapping[str, Sequence[np.ndarray]],
    *,
    atoms: int,
    n_iter: int = 150,
    max_frames: int = 16000,
    seed: int = 0,
) -> tuple[np.ndarray, list[list[int]]]:
    """Learn one template dictionary per stem by KL-NMF on its training spectrograms.

    Parameters
    ----------
    spectrograms : dict of str to list of np.ndarray, each shape (bins, frames)
        Magnitude spectrograms of isolated stems, keyed by stem name.
    atoms : int
        Templates per stem.
    max_frames : int
        Frames kept per stem: near-silent frames are dropped, then frames are
        taken evenly across the material.

    Returns
    -------
    W : np.ndarray, shape (bins, atoms * 4), columns summing to one
    groups : list of list of int
    """
    blocks = []
    groups = []
    for s, name in enumerate(STEM_NAMES):
        frames = []
        for V in spectrograms[name]:
            energy = V.sum(axis=0)
            if energy.max() > 0:
                frames.append(V[:, energy > energy.max() * 1e-3])
        if not frames:
            raise ParameterError(f"no audible training material for {name!r}")
        data = np.concatenate(frames, axis=1)
        if data.shape[1] > max_frames:
            keep = np.linspace(0, data.shape[1] - 1, max_frames).round().astype(np.intp)
            data = data[:, keep]
        result = nmf(np.asfortranarray(data), atoms, n_iter=n_iter, tol=1e-6, seed=seed)
        W = result.W / np.maximum(result.W.sum(axis=0, keepdims=True), 1e-30)
        blocks.append(W.astype(np.float32))
        groups.append(list(range(s * atoms, (s + 1) * atoms)))
    return np.concatenate(blocks, axis=1), groups


class Multitrack(Protocol):
    """A training song: ``mix`` and ``stems[name]``, each (channels, samples), at ``sr``.

    Read only, so a frozen dataclass (``stemdeck.core.material.songs.Song``) is one.
    """

    @property
    def mix(self) -> np.ndarray: ...
    @property
    def stems(self) -> Mapping[str, np.ndarray]: ...
    @property
    def sr(self) -> int: ...


def train_stem_model(
    songs: Sequence[Multitrack],
    *,
    weights: Sequence[float],
    atoms: int = 32,
    n_iter: int = 150,
    fit_iter: int = 40,
    sr: int = 44100,
    n_fft: int = 4096,
    hop: int = 1024,
    n_mels: int = 256,
    hpss_kernel: int = 31,
    hpss_stride: int = 3,
    context: int = 2,
    alpha: float = 1e-3,
    info: dict[str, object] | None = None,
    log: Callable[[str], None] | None = None,
) -> StemModel:
    """Learn a stems model from multitracks: dictionaries, then the maps.

    Parameters
    ----------
    songs : sequence of Multitrack
        Training songs at ``sr``, each with the four stems of ``STEM_NAMES``.
    weights : sequence of float
        Weight of each song's frames (the dictionaries keep about one frame in
        ``1 / weight`` of songs weighted below one).
    fit_iter : int
        Activation fit iterations on the training mixtures; use the
        ``stems_iter`` the model will run with.

    Returns
    -------
    StemModel
    """

    def spectrum(audio: np.ndarray) -> np.ndarray:
        return magnitude(stft(audio, n_fft=n_fft, hop=hop))

    for song in songs:
        if song.sr != sr:
            raise ParameterError(f"training songs must be at {sr} Hz, got {song.sr}")
    spectrograms: dict[str, list[np.ndarray]] = {k: [] for k in STEM_NAMES}
    for song, weight in zip(songs, weights, strict=True):
        step = 1 if weight >= 1 else max(1, round(1 / weight))
        for k in STEM_NAMES:
            spectrograms[k].append(spectrum(song.stems[k])[:, ::step])
    W, groups = train_dictionaries(spectrograms, atoms=atoms, n_iter=n_iter)
    del spectrograms
    if log:
        log(f"dictionaries: {W.shape[1]} templates")
    features = 2 * W.shape[1] * (2 * context + 1)
    model = StemModel(
        W=W,
        groups=groups,
        names=STEM_NAMES,
        sr=sr,
        n_fft=n_fft,
        hop=hop,
        maps=np.zeros((len(STEM_NAMES), n_mels, features), np.float32),
        n_mels=n_mels,
        hpss_kernel=hpss_kernel,
        hpss_stride=hpss_stride,
        context=context,
        info={
            **(info or {}),
            "atoms": atoms,
            "n_iter": n_iter,
            "fit_iter": fit_iter,
            "alpha": alpha,
        },
    )
    gram = np.zeros((features, features))
    cross = [np.zeros((n_mels, features)) for _ in STEM_NAMES]
    for song, weight in zip(songs, weights, strict=True):
        fit = fit_activations(model, spectrum(song.mix), sr=sr, n_fft=n_fft, n_iter=fit_iter)
        F64 = fit.features.astype(np.float64)
        gram += weight * (F64 @ F64.T)
        for j, k in enumerate(STEM_NAMES):
            target = fit.bands.project(spectrum(song.stems[k])).astype(np.float64)
            cross[j] += weight * (target @ F64.T)
    # The model ships its maps as float16: train with exactly what ships.
    maps = fit_maps(gram, cross, alpha=alpha).astype(np.float16).astype(np.float32)
    model = replace(model, maps=maps)
    if log:
        log(f"maps: {model.maps.shape}")
    return model


def fit_maps(gram: np.ndarray, cross: Sequence[np.ndarray], *, alpha: float) -> np.ndarray:
    """Ridge regression maps from accumulated statistics.

    Parameters
    ----------
    gram : np.ndarray, shape (D, D)
        ``sum F F^T`` over the training frames (``F`` the features).
    cross : list of np.ndarray, each shape (n_mels, D)
        ``sum T_j F^T`` for each stem's target mel spectrum ``T_j``.
    alpha : float
        Regularization relative to the mean feature energy (``trace(gram) / D``).

    Returns
    -------
    maps : np.ndarray, shape (stems, n_mels, D), float32
    """
    D = gram.shape[0]
    lam = alpha * np.trace(gram) / D
    inverse = np.linalg.inv(gram + lam * np.eye(D))
    return np.stack([(c @ inverse).astype(np.float32) for c in cross])
