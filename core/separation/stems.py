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

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from .nmf import flush_below, solve_activations
from .spectral import BandExpansion, MelBands, hpss, magnitude, mel_bands
from .stem_model import StemModel
from .stft import n_frames, spread_frames, stft_frames

__all__ = [
    "LEVEL_FRAMES",
    "LEVEL_SECONDS",
    "Activations",
    "StemEstimate",
    "estimate_stems",
    "fit_activations",
    "level_samples",
    "track_level",
]

#: Frames at most a track's level is taken on (:func:`track_level`), spread evenly
#: over its first minute: 30 ms, where the minute's 2,600 frames took 0.3 s in a
#: worker's first moments (its FFTs and 80 MB of fresh pages), before any chunk;
#: the level sets a floor 140 dB down, so its sampling error (a few percent)
#: moves a stem 110-140 dB below itself (``docs/separation.md``).
LEVEL_FRAMES = 512
#: A track's level is taken on its first this many seconds (:func:`track_level`):
#: all of a song up to a minute, and what a separation of a longer track being
#: decoded has at hand within a fraction of a second, whatever its length.
LEVEL_SECONDS = 60.0
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
    """The dictionaries fitted to one track (:func:`fit_activations`).

    Attributes
    ----------
    features : np.ndarray, shape (2 * K * (2 * context + 1), frames), float32
        The input of the maps: harmonic and percussive activations, with context.
    H : np.ndarray, shape (K, frames)
        Harmonic plus percussive activations.
    W, W_mel : np.ndarray, shape (bins, K) and (n_mels, K)
        Templates at this analysis, and projected onto the mel bands.
    bands : MelBands
        The mel bands.
    V_mel : np.ndarray, shape (n_mels, all frames)
        The mixture's mel magnitudes (of every frame of ``V``, ``span`` or not).
    """

    features: np.ndarray
    H: np.ndarray
    W: np.ndarray
    W_mel: np.ndarray
    bands: MelBands
    V_mel: np.ndarray


@dataclass(frozen=True)
class _Analysis:
    """The model at one analysis: its templates, the mel bands, the templates on them."""

    W: np.ndarray
    bands: MelBands
    W_mel: np.ndarray


#: Analyses kept with a model at most (3 MB each at 44.1-48 kHz, 12 MB at 192 kHz):
#: a process that separates tracks at many rates (a prep worker) keeps the latest.
_ANALYSES_KEPT = 3


def _analysis(model: StemModel, sr: int, n_fft: int) -> _Analysis:
    """The model at ``sr`` and ``n_fft``, computed once and kept with the model (each
    chunk of a track, and every track at that rate, uses the same; at most
    :data:`_ANALYSES_KEPT` rates, the oldest dropped). Two threads asking at once
    may both compute it: the same values, one of them kept."""
    key = ("stems", sr, n_fft)
    derived = model.derived
    found = derived.get(key)
    if isinstance(found, _Analysis):
        return found
    while len(derived) >= _ANALYSES_KEPT:
        try:
            derived.pop(next(iter(derived)), None)
        except (StopIteration, RuntimeError):  # emptied or changed by another thread
            break
    W = np.array(model.templates_for(sr, n_fft), dtype=np.float32)
    bands = mel_bands(sr, n_fft, model.n_mels, model.fmax)
    W_mel = bands.project(W)
    for a in (W, W_mel):
        a.flags.writeable = False
    made = _Analysis(W=W, bands=bands, W_mel=W_mel)
    derived[key] = made
    return made


def _span(frames: int, span: tuple[int, int] | None) -> tuple[int, int]:
    """``span`` checked against ``frames`` (None: all of them)."""
    if span is None:
        return 0, frames
    a, b = int(span[0]), int(span[1])
    if not 0 <= a < b <= frames:
        raise ParameterError(f"span {span} is not within {frames} frames")
    return a, b


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
        flush_below(S, _FLUSH)
        S *= self.expand(self.gains[stem, start:stop])
        flush_below(S, _FLUSH)
        if self.power == 2.0:
            np.square(S, out=S)
        elif self.power != 1.0:
            np.power(S, self.power, out=S)
        return S


def fit_activations(
    model: StemModel,
    V: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    n_iter: int,
    threads: int | None = None,
    span: tuple[int, int] | None = None,
) -> Activations:
    """Fit the dictionaries to a track's harmonic and percussive parts.

    Parameters
    ----------
    model : StemModel
    V : np.ndarray, shape (n_fft // 2 + 1, frames)
        The mixture's magnitude spectrogram.
    threads : int, optional
        Threads of the fit (:func:`~stemdeck.core.separation.nmf.solve_activations`).
    span : (int, int), optional
        Only frames ``[a, b)`` of ``V`` are wanted (``features`` and ``H`` have
        ``b - a`` frames): the split into parts still reads all of ``V`` (its
        medians span ``hpss_kernel`` frames), the fit only ``[a, b)`` and the
        ``context`` frames each side the features stack. Each frame's fit is its
        own, so the frames wanted come out as a fit of all of ``V`` makes them.
        A chunk of a track asks for the frames its output needs.
    """
    analysis = _analysis(model, sr, n_fft)
    V_mel = analysis.bands.project(V)
    harmonic, percussive = hpss(V_mel, model.hpss_kernel, stride=model.hpss_stride)
    a, b = _span(V.shape[1], span)
    c = model.context
    f0, f1 = max(0, a - c), min(V.shape[1], b + c)
    frames = f1 - f0
    # One fit of both parts side by side: the same templates, twice the frames.
    both = np.asfortranarray(np.concatenate([harmonic[:, f0:f1], percussive[:, f0:f1]], axis=1))
    H2 = solve_activations(both, analysis.W_mel, n_iter=n_iter, threads=threads)
    H_h, H_p = H2[:, :frames], H2[:, frames:]
    # The context at the fit's edges repeats its edge frames: those of V's own
    # edges (as a fit of all of V), never one that the frames wanted see.
    features = _context(np.concatenate([H_h, H_p]), c)[:, a - f0 : b - f0]
    return Activations(
        features=np.ascontiguousarray(features),
        H=(H_h + H_p)[:, a - f0 : b - f0],
        W=analysis.W,
        W_mel=analysis.W_mel,
        bands=analysis.bands,
        V_mel=V_mel,
    )


def estimate_stems(
    model: StemModel,
    V: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    n_iter: int,
    threads: int | None = None,
    level: float | None = None,
    span: tuple[int, int] | None = None,
) -> StemEstimate:
    """Each stem's model spectrum for a track (see the module docstring).

    Parameters
    ----------
    model : StemModel
    V : np.ndarray, shape (n_fft // 2 + 1, frames)
    threads : int, optional
        Threads of the activation fit (:func:`fit_activations`).
    level : float, optional
        The track's mean mel magnitude, which sets the floor of the models the
        maps are divided by; default the mean of ``V``'s. A separation passes
        :func:`track_level`, so a chunk of a track divides by the same floor as
        the whole track.
    span : (int, int), optional
        Only frames ``[a, b)`` of ``V`` (:func:`fit_activations`'): the estimate's
        frame ``i`` is ``V``'s frame ``a + i``.
    """
    fit = fit_activations(model, V, sr=sr, n_fft=n_fft, n_iter=n_iter, threads=threads, span=span)
    features, H, W_mel = fit.features, fit.H, fit.W_mel
    frames = H.shape[1]
    if level is None:
        level = float(fit.V_mel.mean())
    floor = np.float32(1e-7 * max(level, 1e-20))
    gains = np.empty((len(model.groups), frames, model.n_mels), dtype=np.float32)
    # All stems' maps in one product (frames-major): one large GEMM, rows ready
    # for the frame blocks of the masks.
    mapped = features.T @ model.maps_by_feature
    np.maximum(mapped, 0.0, out=mapped)
    for j, idx in enumerate(model.groups):
        fitted = H[idx].T @ W_mel[:, idx].T
        fitted += floor
        np.divide(mapped[:, j * model.n_mels : (j + 1) * model.n_mels], fitted, out=gains[j])
    flush_below(gains, _FLUSH_GAIN)  # no subnormal products downstream
    return StemEstimate(
        W=fit.W,
        H=H,
        groups=[list(g) for g in model.groups],
        gains=gains,
        expand=fit.bands.expand,
        power=model.mask_power,
    )


def track_level(model: StemModel, y: np.ndarray, *, sr: int, n_fft: int, hop: int) -> float:
    """A track's mean mel magnitude, the ``level`` of :func:`estimate_stems`.

    Taken on the frames of the track's first :data:`LEVEL_SECONDS` (at most
    :data:`LEVEL_FRAMES` of them, spread evenly), computed alone: the cost and
    the memory are bounded whatever the track's length, the same whether the
    track is separated whole or chunk by chunk, and a separation of a track
    still being decoded needs only its first minute (:func:`level_samples`).

    Parameters
    ----------
    model : StemModel
    y : np.ndarray, shape (channels, samples), float32
    """
    count = _level_frames(y.shape[-1], sr=sr, n_fft=n_fft, hop=hop)
    V = magnitude(stft_frames(y, spread_frames(count, LEVEL_FRAMES), n_fft=n_fft, hop=hop))
    return float(_analysis(model, sr, n_fft).bands.project(V).mean())


def _level_frames(length: int, *, sr: int, n_fft: int, hop: int) -> int:
    """How many of a track's first frames :func:`track_level` takes."""
    return min(n_frames(length, n_fft, hop), n_frames(int(LEVEL_SECONDS * sr), n_fft, hop))


def level_samples(length: int, *, sr: int, n_fft: int, hop: int) -> int:
    """How many of a track's first samples (of ``length``) :func:`track_level` reads:
    a separation of a track being decoded waits for these before it starts."""
    last = _level_frames(length, sr=sr, n_fft=n_fft, hop=hop) - 1
    return min(length, last * hop + n_fft // 2)
