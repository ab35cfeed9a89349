"""Stems mode: the four stems a DJ knows, from NMF with pre-learned dictionaries.

Each stem (``drums``, ``bass``, ``vocals``, ``other``) has a dictionary of
spectral templates learned offline by NMF on the isolated stems of training
songs (``scripts/train_stems.py``; the result ships as
``presets/stems/<name>.npz``). A track is explained with all dictionaries at
once: the templates stay fixed, only their activations ``H`` are fitted to the
track's spectrogram (KL-NMF), and each stem's share of the model becomes its
soft mask. The masks of the four stems sum to one, so the stems add up to the
track.

Templates are spectra in Hz: a model trained at 44.1 kHz with a 2048-point
FFT is resampled along frequency to any other rate or FFT size.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import PresetError
from .nmf import nmf

__all__ = ["STEM_NAMES", "StemModel", "load_stem_model", "train_stem_model"]

STEM_NAMES = ("drums", "bass", "vocals", "other")
MODEL_FORMAT = 1


@dataclass(frozen=True)
class StemModel:
    """Per-stem template dictionaries.

    Attributes
    ----------
    W : np.ndarray, shape (bins, K), float32
        All templates side by side, each column summing to one.
    groups : list of list of int
        Columns of ``W`` that belong to each stem, in the order of ``names``.
    names : tuple of str
    sr, n_fft : int
        Analysis the templates were learned with.
    info : dict
        Provenance: training material, atoms per stem, script version.
    gains : tuple of float
        Weight of each stem in the soft masks, calibrated on validation songs:
        stem ``s`` gets ``g_s V_s^p / sum_j g_j V_j^p``. Ones mean plain masks.
    """

    W: np.ndarray
    groups: list[list[int]]
    names: tuple[str, ...]
    sr: int
    n_fft: int
    info: dict[str, object]
    gains: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def mask_templates(self, W: np.ndarray, mask_power: float) -> np.ndarray:
        """``W`` with each stem's columns scaled so its masks carry the stem's gain.

        Masks use ``(W_k H_k)^p``; scaling stem ``s``'s columns by ``g_s^(1/p)``
        multiplies its share by ``g_s``. Apply after fitting ``H``, never before.
        """
        scale = np.ones(W.shape[1], dtype=np.float32)
        for group, gain in zip(self.groups, self.gains, strict=True):
            scale[group] = gain ** (1.0 / mask_power)
        return W * scale

    @property
    def digest(self) -> str:
        """Hash of the templates and grouping: part of every stems-mode cache key."""
        h = hashlib.blake2b(digest_size=12)
        described = [self.groups, list(self.names), self.sr, self.n_fft, list(self.gains)]
        h.update(json.dumps(described).encode())
        h.update(np.ascontiguousarray(self.W).data)
        return h.hexdigest()

    def templates_for(self, sr: int, n_fft: int) -> np.ndarray:
        """Templates resampled to the bins of an ``n_fft``-point FFT at ``sr`` Hz.

        Linear interpolation in Hz; bins above the training Nyquist frequency get
        the value of the last trained bin scaled down (there is little there).

        Returns
        -------
        W : np.ndarray, shape (n_fft // 2 + 1, K), float32, columns summing to one
        """
        if sr == self.sr and n_fft == self.n_fft:
            return self.W
        src = np.arange(self.W.shape[0]) * self.sr / self.n_fft
        dst = np.arange(n_fft // 2 + 1) * sr / n_fft
        out = np.empty((len(dst), self.W.shape[1]), dtype=np.float32)
        for k in range(self.W.shape[1]):
            out[:, k] = np.interp(dst, src, self.W[:, k], right=self.W[-1, k] * 0.01)
        out = np.maximum(out, 0.0)
        out /= np.maximum(out.sum(axis=0, keepdims=True), 1e-30)
        return out

    def save(self, path: str | Path) -> None:
        meta = {
            "format": MODEL_FORMAT,
            "groups": self.groups,
            "names": list(self.names),
            "sr": self.sr,
            "n_fft": self.n_fft,
            "info": self.info,
            "gains": list(self.gains),
        }
        np.savez_compressed(path, W=self.W.astype(np.float32), meta=np.array(json.dumps(meta)))


def _from_npz(data: bytes | Path, source: str) -> StemModel:
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data) as npz:
            W = np.asarray(npz["W"], dtype=np.float32)
            meta = json.loads(str(npz["meta"]))
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"format {meta.get('format')} is not {MODEL_FORMAT}")
        groups = [list(map(int, g)) for g in meta["groups"]]
        if sorted(i for g in groups for i in g) != list(range(W.shape[1])):
            raise ValueError("groups do not cover the templates exactly once")
        if W.ndim != 2 or not np.isfinite(W).all() or (W < 0).any():
            raise ValueError("templates must be finite and non-negative")
        W[W < 1e-15] = 0.0  # unit-sum templates: below this is silence, and subnormals are slow
        gains = tuple(float(g) for g in meta.get("gains", [1.0] * len(groups)))
        if len(gains) != len(groups) or not all(np.isfinite(g) and g > 0 for g in gains):
            raise ValueError(f"gains must be one positive number per stem, got {gains}")
        return StemModel(
            W=W,
            groups=groups,
            names=tuple(meta["names"]),
            sr=int(meta["sr"]),
            n_fft=int(meta["n_fft"]),
            info=dict(meta.get("info", {})),
            gains=gains,
        )
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise PresetError(f"{source}: not a valid stems model ({exc})") from None


@functools.cache
def load_stem_model(name_or_path: str = "default") -> StemModel:
    """A shipped stems model (``presets/stems/<name>.npz``) or an ``.npz`` file.

    Raises
    ------
    PresetError
        Unknown name, unreadable or malformed file.
    """
    path = Path(name_or_path)
    if path.suffix == ".npz" or path.exists():
        if not path.is_file():
            raise PresetError(f"no stems model file {str(path)!r}")
        return _from_npz(path, str(path))
    resource = resources.files("stemdeck.presets").joinpath("stems", f"{name_or_path}.npz")
    if not resource.is_file():
        raise PresetError(f"no stems model {name_or_path!r} in presets/stems/")
    return _from_npz(resource.read_bytes(), f"stems/{name_or_path}.npz")


def train_stem_model(
    spectrograms: dict[str, Sequence[np.ndarray]],
    *,
    atoms: dict[str, int],
    sr: int,
    n_fft: int,
    n_iter: int = 200,
    max_frames: int = 20000,
    seed: int = 0,
    info: dict[str, object] | None = None,
) -> StemModel:
    """Learn one template dictionary per stem by KL-NMF on its training spectrograms.

    Parameters
    ----------
    spectrograms : dict of str to list of np.ndarray, each shape (bins, frames)
        Magnitude spectrograms of isolated stems, keyed by stem name.
    atoms : dict of str to int
        Templates per stem.
    max_frames : int
        Frames kept per stem (the loudest-first are not favoured: frames are
        taken evenly across the material after dropping near-silent ones).

    Returns
    -------
    StemModel
    """
    blocks = []
    groups = []
    start = 0
    for name in STEM_NAMES:
        frames = []
        for V in spectrograms[name]:
            energy = V.sum(axis=0)
            if energy.max() <= 0:
                continue
            frames.append(V[:, energy > energy.max() * 1e-3])
        data = np.concatenate(frames, axis=1)
        if data.shape[1] > max_frames:
            keep = np.linspace(0, data.shape[1] - 1, max_frames).round().astype(np.intp)
            data = data[:, keep]
        result = nmf(np.asfortranarray(data), atoms[name], n_iter=n_iter, tol=1e-6, seed=seed)
        W = result.W / np.maximum(result.W.sum(axis=0, keepdims=True), 1e-30)
        blocks.append(W.astype(np.float32))
        groups.append(list(range(start, start + W.shape[1])))
        start += W.shape[1]
    return StemModel(
        W=np.concatenate(blocks, axis=1),
        groups=groups,
        names=STEM_NAMES,
        sr=sr,
        n_fft=n_fft,
        info=dict(info or {}),
    )
