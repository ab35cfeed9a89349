"""Stems mode: the four stems a DJ knows, from NMF with pre-learned dictionaries.

Each stem (``drums``, ``bass``, ``vocals``, ``other``) has a dictionary of
spectral templates learned offline by KL-NMF on isolated stems of real and
generated songs (:mod:`stemdeck.core.separation.training`, run by
``scripts/train_stems.py``; the model ships as ``presets/stems/<name>.npz``).
A track is separated in five steps (``docs/separation.md`` has the measurements
behind each one):

1. The mixture's magnitude spectrogram is projected onto mel bands, and split
   into a harmonic and a percussive part by median filtering (HPSS; both in
   :mod:`stemdeck.core.separation.spectral`).
2. The activations of all dictionaries are fitted to each part with the
   templates fixed (KL-NMF, templates projected onto the same mel bands).
3. A learned linear map (ridge regression, fitted on training mixtures against
   their true stems) turns the activations of five neighbouring frames into
   each stem's mel spectrum. It corrects what the dictionaries alone get wrong:
   a bass template that also explains a kick, a voice template that explains a
   lead guitar (discriminative NMF).
4. Each stem's model spectrum is its dictionary's reconstruction at full
   frequency resolution, reweighted band by band to the mel spectrum of step 3.
5. Soft masks ``S_j^p / sum_k S_k^p`` of the complex STFT (in
   :func:`stemdeck.core.separation.separate.reconstruct_spectra`); the masks sum to one, so
   the stems add up to the track.

Templates are spectra in Hz: a model trained at 44.1 kHz is resampled along
frequency to any other rate, and its mel bands are fixed in Hz, so the map
applies at any rate.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse

from ..errors import PresetError
from .nmf import solve_activations
from .spectral import BandExpansion, hpss, magnitude, mel_filterbank
from .stft import n_frames, spread_frames, stft_frames

__all__ = [
    "LEVEL_FRAMES",
    "MODEL_FORMAT",
    "STEM_NAMES",
    "Activations",
    "StemEstimate",
    "StemModel",
    "load_stem_model",
]

#: The model's stems, in the order it computes them (the last is the remainder). The
#: mixer's channels come in the order of every source of stems (drums, bass, other,
#: vocals: :meth:`~.keys.SeparationSpec.channel_order`).
STEM_NAMES = ("drums", "bass", "vocals", "other")
#: Frames at most a track's level is taken on (:meth:`StemModel.track_level`).
LEVEL_FRAMES = 3000
MODEL_FORMAT = 2
_FLUSH = np.float32(1e-15)
_FLUSH_GAIN = np.float32(1e-12)


def _context(F: np.ndarray, width: int) -> np.ndarray:
    """Features of frames ``t - width ... t + width`` stacked (edges repeated)."""
    if width == 0:
        return F
    frames = F.shape[1]
    padded = np.pad(F, ((0, 0), (width, width)), mode="edge")
    return np.concatenate([padded[:, i : i + frames] for i in range(2 * width + 1)], axis=0)


@dataclass
class Activations:
    """The dictionaries fitted to one track (:meth:`StemModel.activations`).

    Attributes
    ----------
    features : np.ndarray, shape (2 * K * (2 * context + 1), frames), float32
        The input of the maps: harmonic and percussive activations, with context.
    H : np.ndarray, shape (K, frames)
        Harmonic plus percussive activations.
    W, W_mel : np.ndarray, shape (bins, K) and (n_mels, K)
        Templates at this analysis, and projected onto the mel bands.
    mel : np.ndarray, shape (n_mels, bins)
        The mel filterbank (``mel_sparse`` the same, sparse).
    V_mel : np.ndarray, shape (n_mels, frames)
        The mixture's mel magnitudes.
    """

    features: np.ndarray
    H: np.ndarray
    W: np.ndarray
    W_mel: np.ndarray
    mel: np.ndarray
    mel_sparse: scipy.sparse.csr_matrix
    V_mel: np.ndarray


@dataclass
class StemEstimate:
    """What the model explains of one track: each stem's model spectrum, frame block by block.

    Attributes
    ----------
    W : np.ndarray, shape (bins, K)
        The templates at the track's analysis, columns summing to one.
    H : np.ndarray, shape (K, frames)
        Their activations (harmonic plus percussive fit).
    gains : np.ndarray, shape (stems, frames, n_mels)
        Per-band factor bringing each stem's reconstruction to the mapped spectrum.
    """

    W: np.ndarray
    H: np.ndarray
    groups: list[list[int]]
    gains: np.ndarray
    expand: BandExpansion
    power: float

    def __post_init__(self) -> None:
        # Each stem's factors, transposed and contiguous: one plain GEMM per block.
        self._HT = [np.ascontiguousarray(self.H[g].T) for g in self.groups]
        self._WT = [np.ascontiguousarray(self.W[:, g].T) for g in self.groups]

    def stem_power(self, stem: int, start: int, stop: int) -> np.ndarray:
        """``S_stem^p`` for frames ``start:stop``, shape (stop - start, bins), float32."""
        # Subnormal floats make every product ~100x slower (x86 microcode assists);
        # a model spectrum 300 dB below full scale is silence, so it is set to zero
        # before each product that could make it subnormal.
        S = self._HT[stem][start:stop] @ self._WT[stem]
        S[S < _FLUSH] = 0.0
        S *= self.expand(self.gains[stem, start:stop])
        S[S < _FLUSH] = 0.0
        if self.power == 2.0:
            np.square(S, out=S)
        elif self.power != 1.0:
            np.power(S, self.power, out=S)
        return S


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
    def _maps_T(self) -> np.ndarray:
        """The maps side by side, shape (features, stems * n_mels)."""
        return np.ascontiguousarray(self.maps.reshape(-1, self.maps.shape[2]).T)

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

    def activations(
        self, V: np.ndarray, *, sr: int, n_fft: int, n_iter: int, threads: int | None = None
    ) -> Activations:
        """Fit the dictionaries to a track's harmonic and percussive parts.

        Parameters
        ----------
        V : np.ndarray, shape (n_fft // 2 + 1, frames)
            The mixture's magnitude spectrogram.
        threads : int, optional
            Threads of the fit (:func:`~stemdeck.core.separation.nmf.solve_activations`).
        """
        W = self.templates_for(sr, n_fft)
        mel = mel_filterbank(sr, n_fft, self.n_mels, self.fmax)
        # Each bin feeds at most two bands: a sparse product is ~50x fewer operations.
        mel_sparse = scipy.sparse.csr_matrix(mel)
        V_mel = np.asarray(mel_sparse @ V, dtype=np.float32)
        harmonic, percussive = hpss(V_mel, self.hpss_kernel, stride=self.hpss_stride)
        frames = V.shape[1]
        # One fit of both parts side by side: the same templates, twice the frames.
        both = np.asfortranarray(np.concatenate([harmonic, percussive], axis=1))
        W_mel = np.asarray(mel_sparse @ W, dtype=np.float32)
        H2 = solve_activations(both, W_mel, n_iter=n_iter, threads=threads)
        H_h, H_p = H2[:, :frames], H2[:, frames:]
        return Activations(
            features=_context(np.concatenate([H_h, H_p]), self.context),
            H=H_h + H_p,
            W=W,
            W_mel=W_mel,
            mel=mel,
            mel_sparse=mel_sparse,
            V_mel=V_mel,
        )

    def estimate(
        self,
        V: np.ndarray,
        *,
        sr: int,
        n_fft: int,
        n_iter: int,
        threads: int | None = None,
        level: float | None = None,
    ) -> StemEstimate:
        """Each stem's model spectrum for a track (see the module docstring).

        Parameters
        ----------
        V : np.ndarray, shape (n_fft // 2 + 1, frames)
        threads : int, optional
            Threads of the activation fit (:meth:`activations`).
        level : float, optional
            The track's mean mel magnitude, which sets the floor of the models the
            maps are divided by; default the mean of ``V``'s. A separation passes
            :meth:`track_level`, so a chunk of a track divides by the same floor as
            the whole track.
        """
        fit = self.activations(V, sr=sr, n_fft=n_fft, n_iter=n_iter, threads=threads)
        features, H, W_mel = fit.features, fit.H, fit.W_mel
        frames = V.shape[1]
        if level is None:
            level = float(fit.V_mel.mean())
        floor = np.float32(1e-7 * max(level, 1e-20))
        gains = np.empty((len(self.groups), frames, self.n_mels), dtype=np.float32)
        # All stems' maps in one product (frames-major): one large GEMM, rows ready
        # for the frame blocks of the masks.
        mapped = features.T @ self._maps_T
        np.maximum(mapped, 0.0, out=mapped)
        for j, idx in enumerate(self.groups):
            model = H[idx].T @ W_mel[:, idx].T
            model += floor
            np.divide(mapped[:, j * self.n_mels : (j + 1) * self.n_mels], model, out=gains[j])
        gains[gains < _FLUSH_GAIN] = 0.0  # no subnormal products downstream
        return StemEstimate(
            W=fit.W,
            H=H,
            groups=[list(g) for g in self.groups],
            gains=gains,
            expand=BandExpansion(fit.mel),
            power=self.mask_power,
        )

    def track_level(self, y: np.ndarray, *, sr: int, n_fft: int, hop: int) -> float:
        """A track's mean mel magnitude, the ``level`` of :meth:`estimate`.

        Taken on at most :data:`LEVEL_FRAMES` frames spread evenly over the track
        (every frame of a shorter one), computed alone: the cost and the memory
        are bounded whatever the track's length, and the same whether the track
        is separated whole or chunk by chunk.

        Parameters
        ----------
        y : np.ndarray, shape (channels, samples), float32
        """
        frames = spread_frames(n_frames(y.shape[-1], n_fft, hop), LEVEL_FRAMES)
        V = magnitude(stft_frames(y, frames, n_fft=n_fft, hop=hop))
        mel = scipy.sparse.csr_matrix(mel_filterbank(sr, n_fft, self.n_mels, self.fmax))
        return float(np.asarray(mel @ V, dtype=np.float32).mean())

    def save(self, path: str | Path) -> None:
        meta = {**self._described(), "info": self.info}
        np.savez_compressed(
            path,
            W=self.W.astype(np.float32),
            maps=self.maps.astype(np.float16),
            meta=np.array(json.dumps(meta)),
        )


def _from_npz(data: bytes | Path, source: str) -> StemModel:
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data) as npz:
            W = np.asarray(npz["W"], dtype=np.float32)
            maps = np.asarray(npz["maps"], dtype=np.float32)
            meta = json.loads(str(npz["meta"]))
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"format {meta.get('format')} is not {MODEL_FORMAT}")
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
