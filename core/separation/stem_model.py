"""The stems model as data: its templates, maps and analysis, its digest, its file.

:class:`StemModel` and :func:`load_stem_model` (``presets/stems/<name>.npz``) need
numpy alone: what a cache key, the settings at a rate and the channel names need
of the model (:mod:`.keys`), in the daemon too, whose process never imports the
separation's stack (scipy). Applying the model to a track is :mod:`.stems`;
training it, :mod:`.training`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import PresetError

__all__ = ["MODEL_FORMAT", "STEM_NAMES", "StemModel", "load_stem_model", "stem_model_names"]

#: The model's stems, in the order it computes them (the last is the remainder). The
#: mixer's channels come in the order of every source of stems (drums, bass, other,
#: vocals: :meth:`~.keys.SeparationSpec.channel_order`).
STEM_NAMES = ("drums", "bass", "vocals", "other")
MODEL_FORMAT = 2


@dataclass(frozen=True)
class StemModel:
    """Per-stem template dictionaries and the map from their activations to the stems.

    Attributes
    ----------
    W : np.ndarray, shape (bins, K), float32
        All templates side by side, each column summing to one.
    groups : list of list of int
        Columns of ``W`` that belong to each stem, in the order of ``names``.
    names : tuple of str
    sr, n_fft, hop : int
        Analysis the model was learned with (at other rates the FFT size scales
        by the nearest power of two, so a frame lasts about as long).
    n_mels : int
        Mel bands of the activation fits and of the maps, 0 to ``fmax`` Hz.
    hpss_kernel, hpss_stride : int
        Median filter span (frames and bands) of the harmonic/percussive split,
        and the step between the values it takes.
    context : int
        The maps see frames ``t - context ... t + context``.
    maps : np.ndarray, shape (stems, n_mels, 2 * K * (2 * context + 1)), float32
        Ridge regression from the stacked activations to each stem's mel spectrum.
    mask_power : float
        Exponent ``p`` of the soft masks.
    info : dict
        Provenance: training material, sizes, validation figures, script.
    """

    W: np.ndarray
    groups: list[list[int]]
    names: tuple[str, ...]
    sr: int
    n_fft: int
    hop: int
    maps: np.ndarray
    n_mels: int = 256
    fmax: float = 22050.0
    hpss_kernel: int = 31
    hpss_stride: int = 3
    context: int = 2
    mask_power: float = 2.0
    info: dict[str, object] = field(default_factory=dict)

    def _described(self) -> dict[str, object]:
        return {
            "format": MODEL_FORMAT,
            "groups": self.groups,
            "names": list(self.names),
            "sr": self.sr,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "n_mels": self.n_mels,
            "fmax": self.fmax,
            "hpss_kernel": self.hpss_kernel,
            "hpss_stride": self.hpss_stride,
            "context": self.context,
            "mask_power": self.mask_power,
        }

    @functools.cached_property
    def digest(self) -> str:
        """Hash of everything that changes a separation: part of every stems-mode cache key."""
        h = hashlib.blake2b(digest_size=12)
        h.update(json.dumps(self._described(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.W).data)
        h.update(np.ascontiguousarray(self.maps).data)
        return h.hexdigest()

    @functools.cached_property
    def maps_by_feature(self) -> np.ndarray:
        """The maps side by side, shape (features, stems * n_mels)."""
        return np.ascontiguousarray(self.maps.reshape(-1, self.maps.shape[2]).T)

    @functools.cached_property
    def derived(self) -> dict[object, object]:
        """What the separation computes from the model once and keeps with it (its
        templates and mel bands at an analysis: ``stems.py``), by key."""
        return {}

    def analysis_for(self, sr: int) -> tuple[int, int]:
        """``(n_fft, hop)`` for a track at ``sr``: the model's, scaled by a power of two."""
        scale = 2.0 ** round(float(np.log2(sr / self.sr)))
        return max(64, int(self.n_fft * scale)), max(16, int(self.hop * scale))

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
        meta = {**self._described(), "info": self.info}
        np.savez_compressed(
            path,
            W=self.W.astype(np.float32),
            maps=self.maps.astype(np.float16),
            meta=np.array(json.dumps(meta)),
        )


def _meta(npz: Any) -> dict[str, Any]:
    """A model file's description (its ``meta`` member), format and names checked."""
    meta = json.loads(str(npz["meta"]))
    if not isinstance(meta, dict):
        raise ValueError("its description is not a JSON object")
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"format {meta.get('format')} is not {MODEL_FORMAT}")
    names = meta.get("names")
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or not isinstance(meta.get("groups"), list)
        or len(meta["groups"]) != len(names)
    ):
        raise ValueError("names must be one non-empty string for each group")
    return meta


def _from_npz(npz: Any) -> StemModel:
    """The model in an open model file (:func:`_model_npz` says what is wrong)."""
    meta = _meta(npz)
    W = np.asarray(npz["W"], dtype=np.float32)
    maps = np.asarray(npz["maps"], dtype=np.float32)
    if W.ndim != 2 or not np.isfinite(W).all() or (W < 0).any():
        raise ValueError("templates must be finite and non-negative")
    groups = [list(map(int, g)) for g in meta["groups"]]
    if sorted(i for g in groups for i in g) != list(range(W.shape[1])):
        raise ValueError("groups do not cover the templates exactly once")
    n_mels, context = int(meta["n_mels"]), int(meta["context"])
    features = 2 * W.shape[1] * (2 * context + 1)
    if maps.shape != (len(groups), n_mels, features) or not np.isfinite(maps).all():
        raise ValueError(f"maps must be finite, shape {(len(groups), n_mels, features)}")
    W[W < 1e-15] = 0.0  # unit-sum templates: below this is silence, and subnormals are slow
    return StemModel(
        W=W,
        groups=groups,
        names=tuple(meta["names"]),
        sr=int(meta["sr"]),
        n_fft=int(meta["n_fft"]),
        hop=int(meta["hop"]),
        maps=maps,
        n_mels=n_mels,
        fmax=float(meta["fmax"]),
        hpss_kernel=int(meta["hpss_kernel"]),
        hpss_stride=int(meta["hpss_stride"]),
        context=context,
        mask_power=float(meta["mask_power"]),
        info=dict(meta.get("info", {})),
    )


@contextmanager
def _model_npz(name_or_path: str) -> Iterator[Any]:
    """A shipped model's file (``presets/stems/<name>.npz``) or an ``.npz`` file, open
    (its members read as they are asked for) for the ``with`` block, closed after.

    Raises
    ------
    PresetError
        Unknown name, a path that is not a file, or whatever reading the file raises
        in the block (a hostile or damaged file: a truncated zip, a corrupt member,
        JSON nested past the parser, a value out of range...), as one error.
    """
    path = Path(name_or_path)
    data: IO[bytes] | Path
    if path.suffix == ".npz" or path.exists():
        if not path.is_file():
            raise PresetError(f"no stems model file {str(path)!r}")
        data, source = path, str(path)
    else:
        resource = resources.files("stemdeck.presets").joinpath("stems", f"{name_or_path}.npz")
        if not resource.is_file():
            raise PresetError(f"no stems model {name_or_path!r} in presets/stems/")
        data, source = resource.open("rb"), f"stems/{name_or_path}.npz"
    try:
        with np.load(data) as npz:
            yield npz
    except MemoryError:
        raise
    except Exception as exc:  # a hostile file: whatever reading it raises is one error
        raise PresetError(f"{source}: not a valid stems model ({exc})") from None
    finally:
        if not isinstance(data, Path):
            data.close()


@functools.cache
def stem_model_names(name_or_path: str = "default") -> tuple[str, ...]:
    """The stem names of a model (as :func:`load_stem_model` gives them), read from its
    description alone: what the daemon needs of its model before its first sound (a
    millisecond, where loading the arrays takes tens). Its arrays are checked where
    the model is loaded (the loader, the worker).

    Raises
    ------
    PresetError
        Unknown name, unreadable file, or a description without the format or names.
    """
    with _model_npz(name_or_path) as npz:
        return tuple(_meta(npz)["names"])


@functools.cache
def load_stem_model(name_or_path: str = "default") -> StemModel:
    """A shipped stems model (``presets/stems/<name>.npz``) or an ``.npz`` file.

    Raises
    ------
    PresetError
        Unknown name, unreadable or malformed file.
    """
    with _model_npz(name_or_path) as npz:
        return _from_npz(npz)
