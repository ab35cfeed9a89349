"""Separation of a track into mixer channels: STFT, NMF, soft masks, inverse STFT.

The channels always add up to the input: masks of all channels sum to one in
every time-frequency bin, and the last channel is computed as the input minus
the others, which is the same signal without the rounding of one more inverse
transform.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..audiofile.samples import validate_audio
from ..errors import CacheError, ParameterError
from .blas import with_one_blas_thread
from .cache import SeparationCache
from .entry import CacheEntry
from .keys import SeparationSpec
from .nmf import nmf, solve_activations
from .presets import SeparationParams
from .spectral import magnitude
from .stem_model import load_stem_model
from .stems import StemEstimate, estimate_stems, track_level
from .stft import InverseSTFT, frame_blocks, istft, spread_frames, stft

__all__ = [
    "ChannelSink",
    "Separation",
    "component_centroids",
    "factorize",
    "reconstruct",
    "reconstruct_spectra",
    "separate",
    "store_separation",
]

log = logging.getLogger(__name__)

#: Told a separation's stage (``stft``, ``nmf``...) and that stage's fraction done.
StageProgress = Callable[[str, float], None]
ChannelSink = Callable[[int, str, np.ndarray], None]

# Threads that invert the masked spectra, one (group, audio channel) job each; the
# FFT releases the GIL.
_RECONSTRUCT_THREADS = 2


@dataclass
class Separation:
    """A track separated into channels.

    Attributes
    ----------
    channels : np.ndarray, shape (n_channels, audio_channels, samples), float32
        Each mixer channel's audio; a read-only memory map when served from the cache.
        ``channels.sum(axis=0)`` equals the input track.
    names : list of str
        One name per channel (``component_01``... or the stem names).
    sr : int
    W : np.ndarray, shape (bins, K)
        Component templates, columns summing to one, ordered by spectral centroid.
    H : np.ndarray, shape (K, frames)
        Activations matching ``W``.
    groups : list of list of int
        Which columns of ``W`` make each channel.
    spec : SeparationSpec
        The separation as requested (its key is the cache key); what ran is
        :attr:`settings`.
    from_cache : bool
        Served from a cache entry made before.
    info : dict
        ``cache_path``: the entry's folder, when the channels are its memory map.
    """

    channels: np.ndarray
    names: list[str]
    sr: int
    W: np.ndarray
    H: np.ndarray
    groups: list[list[int]]
    spec: SeparationSpec
    from_cache: bool = False
    info: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_entry(
        cls, entry: CacheEntry, spec: SeparationSpec, *, from_cache: bool = True
    ) -> Separation:
        """The separation a cache entry holds; ``spec`` is what it was filed under."""
        return cls(
            channels=entry.channels,
            names=entry.names,
            sr=entry.sr,
            W=entry.W,
            H=entry.H,
            groups=[list(g) for g in entry.extra.get("groups", [])],
            spec=spec,
            from_cache=from_cache,
            info={"cache_path": str(entry.path)},
        )

    @property
    def settings(self) -> SeparationParams:
        """The parameters the separation ran with (:meth:`SeparationSpec.settings_at`)."""
        return self.spec.settings_at(self.sr)


def component_centroids(W: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """Spectral centroid in Hz of each template (column of ``W``)."""
    freqs = np.arange(W.shape[0], dtype=np.float64) * sr / n_fft
    mass = W.sum(axis=0, dtype=np.float64)
    return (freqs @ W) / np.maximum(mass, 1e-30)


def factorize(
    V: np.ndarray,
    params: SeparationParams,
    *,
    sr: int,
    progress: StageProgress | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Learn templates and activations, ordered low to high by spectral centroid.

    Templates are learned on at most ``params.fit_frames`` evenly spread frames;
    the activations of all frames are then refined with the templates fixed,
    which costs a fraction of learning on every frame and separates as well on
    music, whose spectra repeat. ``threads``: the NMF's (:func:`~.nmf.nmf`).

    Returns
    -------
    W : np.ndarray, shape (bins, K), columns summing to one
    H : np.ndarray, shape (K, frames)
    """
    frames = V.shape[1]
    k = params.n_components
    picked = spread_frames(frames, params.fit_frames)
    subset = len(picked) < frames
    V_fit = np.asfortranarray(V[:, picked]) if subset else V
    result = nmf(
        V_fit,
        k,
        beta=params.beta,
        n_iter=params.n_iter,
        tol=params.tol,
        seed=params.seed,
        progress=(lambda f: progress("nmf", f)) if progress else None,
        threads=threads,
    )
    W, H = result.W, result.H
    if subset:
        # Warm start: each frame takes the activations of the nearest learned frame.
        nearest = np.interp(np.arange(frames), picked, np.arange(len(picked)))
        H_init = H[:, np.rint(nearest).astype(np.intp)]
        if params.refine_iter > 0:
            H = solve_activations(
                V, W, beta=params.beta, n_iter=params.refine_iter, H_init=H_init, threads=threads
            )
        else:
            H = H_init
    if progress:
        progress("activations", 1.0)
    scale = W.sum(axis=0)
    scale[scale <= 0] = 1.0
    W = W / scale
    H = H * scale[:, np.newaxis]
    order = np.argsort(component_centroids(W, sr, params.n_fft), kind="stable")
    return np.ascontiguousarray(W[:, order]), np.ascontiguousarray(H[order])


def reconstruct(
    X: np.ndarray,
    W: np.ndarray,
    H: np.ndarray,
    groups: Sequence[Sequence[int]],
    *,
    y: np.ndarray,
    n_fft: int,
    hop: int,
    mask_power: float = 2.0,
    progress: StageProgress | None = None,
    h_peak: float | None = None,
    threads: int = _RECONSTRUCT_THREADS,
    first_frame: int = 0,
) -> Iterator[np.ndarray]:
    """Yield each group's audio, shape (channels, samples), in order.

    Group ``g`` gets the soft mask ``sum_{k in g} (W_k H_k)^p / sum_j (W_j H_j)^p``
    applied to every channel's complex STFT. The last group is ``y`` minus the
    others: the same signal, and the channels add up to ``y`` to float rounding.
    Two groups are inverted at a time on ``threads`` threads (the FFT releases the GIL).
    ``h_peak``: the largest activation the flush of tiny ones is relative to
    (default ``H``'s own; a chunk of a track passes the track's). ``first_frame``:
    index of ``X``'s first frame in the track it is a chunk of (:func:`~.stft.istft`'s).
    """
    length = y.shape[1]
    WpT = np.ascontiguousarray((W**mask_power).T, dtype=np.float32)  # (K, bins)
    HpT = np.ascontiguousarray((H**mask_power).T, dtype=np.float32)  # (frames, K)
    # Subnormal floats make every product ~100x slower; at these levels a
    # template or activation is silent anyway (masks are ratios of sums).
    WpT[WpT < WpT.max(initial=0.0) * 1e-15] = 0.0
    h_top = HpT.max(initial=0.0) if h_peak is None else np.float32(h_peak) ** mask_power
    HpT[HpT < h_top * 1e-15] = 0.0
    # Z = X / sum_j (W_j H_j)^p, once; each group then only multiplies by its numerator.
    Z = np.empty_like(X)
    tiny = np.finfo(np.float32).tiny
    frames = X.shape[2]
    for s, e in frame_blocks(frames, first_frame, 1024):
        den = HpT[s:e] @ WpT
        den += tiny
        np.reciprocal(den, out=den)
        for c in range(X.shape[0]):
            np.multiply(X[c].T[s:e], den, out=Z[c].T[s:e])

    def render(g: int, c: int) -> np.ndarray:
        group = groups[g]
        Zc = Z[c : c + 1]
        if len(group) == 1:  # a rank-one mask: weight the bins, then scale each frame
            k = group[0]
            return istft(
                Zc,
                n_fft=n_fft,
                hop=hop,
                length=length,
                bin_weights=WpT[k],
                frame_weights=HpT[:, k].copy(),
                first_frame=first_frame,
            )[0]
        idx = np.asarray(group, dtype=np.intp)
        Wg = np.ascontiguousarray(WpT[idx])
        Hg = np.ascontiguousarray(HpT[:, idx])
        return istft(
            Zc,
            n_fft=n_fft,
            hop=hop,
            length=length,
            mask=lambda s, e: Hg[s:e] @ Wg,
            first_frame=first_frame,
        )[0]

    yield from _render_all(render, len(groups), y, progress, threads)


def _render_all(
    render: Callable[[int, int], np.ndarray],
    n: int,
    y: np.ndarray,
    progress: StageProgress | None,
    threads: int = _RECONSTRUCT_THREADS,
) -> Iterator[np.ndarray]:
    """Yield groups ``0 ... n - 2`` (``render(g, c)`` gives audio channel ``c`` of group
    ``g``), then ``y`` minus their sum: the channels add up to ``y`` to float rounding.

    Each audio channel of each group is one job, ``threads`` at a time (the FFT
    releases the GIL): a stereo track keeps two threads busy to the end.
    """
    channels = y.shape[0]
    jobs = [(g, c) for g in range(n - 1) for c in range(channels)]
    total = np.zeros(y.shape, dtype=np.float32)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[Future[np.ndarray]] = deque()
        submitted = 0
        for g in range(n - 1):
            audio = np.empty(y.shape, dtype=np.float32)
            for c in range(channels):
                while submitted < len(jobs) and len(pending) < threads + 1:
                    pending.append(pool.submit(render, *jobs[submitted]))
                    submitted += 1
                audio[c] = pending.popleft().result()
            total += audio
            if progress:
                progress("reconstruct", (g + 1) / n)
            yield audio
    last = np.subtract(y, total, out=total)
    if progress:
        progress("reconstruct", 1.0)
    yield last


def reconstruct_spectra(
    X: np.ndarray,
    estimate: StemEstimate,
    *,
    y: np.ndarray,
    n_fft: int,
    hop: int,
    progress: StageProgress | None = None,
    frame_floor: bool = False,
    threads: int = _RECONSTRUCT_THREADS,
    first_frame: int = 0,
) -> Iterator[np.ndarray]:
    """Yield each stem's audio, shape (channels, samples), in order.

    Stem ``j`` gets the soft mask ``S_j^p / sum_k S_k^p`` of every channel's
    complex STFT, with ``S_j`` the estimate's model spectrum (``X``'s frames are
    the estimate's). The last stem is ``y`` minus the others. A bin whose model
    sum is below ``1e-10`` of the largest of its block (256 frames on the track's
    grid) goes to the last stem; with
    ``frame_floor``, of its own frame's largest (which does not depend on where a
    block starts: what a chunk of a track uses). ``first_frame`` places a chunk
    (:func:`reconstruct`'s).

    The masks are made one block of frames at a time and that block of every
    stem and audio channel is inverted at once, while the masks and the spectra
    are in the CPU's cache: no mask of the whole spectrogram is written out and
    read back (a quarter less time for a chunk of a track, whose masks were
    17 MB). A block's inverse FFTs run on ``threads`` threads (they release the GIL).
    So every stem is ready at once, after the last block (progress ``reconstruct``
    reaches 1 then): the generator yields them in order from one buffer.
    """
    n = len(estimate.groups)
    channels, frames = X.shape[0], X.shape[2]
    inverse = InverseSTFT((n - 1, channels), frames, n_fft=n_fft, hop=hop, first_frame=first_frame)
    jobs = [(j, c) for j in range(n - 1) for c in range(channels)]

    def invert(job: tuple[int, int], start: int, stop: int, masks: list[np.ndarray]) -> None:
        j, c = job
        inverse.add(job, start, np.multiply(X[c].T[start:stop], masks[j]))

    with ThreadPoolExecutor(max(1, min(threads, len(jobs)))) as pool:
        for b, (s, e) in enumerate(inverse.blocks):
            powers = [estimate.stem_power(j, s, e) for j in range(n)]
            den = powers[0].copy()
            for P in powers[1:]:
                den += P
            # A bin the model leaves (nearly) empty gets no share: its masks are zero
            # and the last stem, the remainder, takes it.
            if frame_floor:
                np.maximum(den, den.max(axis=1, initial=0.0, keepdims=True) * 1e-10, out=den)
            else:
                np.maximum(den, den.max(initial=0.0) * 1e-10, out=den)
            np.reciprocal(den, out=den, where=den > 0)
            masks = [np.multiply(powers[j], den, out=powers[j]) for j in range(n - 1)]
            if threads > 1 and len(jobs) > 1:
                for f in [pool.submit(invert, job, s, e, masks) for job in jobs]:
                    f.result()
            else:
                for job in jobs:
                    invert(job, s, e, masks)
            if progress:
                progress("reconstruct", (b + 1) / len(inverse.blocks))
    audio = inverse.result(y.shape[1])
    total = np.zeros(y.shape, dtype=np.float32)
    for j in range(n - 1):
        total += audio[j]
        yield audio[j]
    yield np.subtract(y, total, out=total)


def _write_entry(
    cache: SeparationCache,
    key: str,
    names: Sequence[str],
    channels: Iterable[np.ndarray],
    audio_shape: tuple[int, ...],
    *,
    W: np.ndarray,
    H: np.ndarray,
    sr: int,
    groups: list[list[int]],
    spec: SeparationSpec,
    on_channel: Callable[[int, np.ndarray], None] | None = None,
    slots: Sequence[int] | None = None,
) -> None:
    """One cache entry, written atomically, channel by channel as they come; its
    metadata records the settings that ran. The ``i``-th audio ``channels`` yields
    is channel ``slots[i]`` (default ``i``): computed in one order, stored in another."""
    shape = (int(audio_shape[0]), int(audio_shape[1]))
    places = list(range(len(names))) if slots is None else list(slots)
    with cache.writer(key, len(names), shape) as w:
        for j, audio in zip(places, channels, strict=True):
            w.add_channel(names[j], audio, index=j)
            if on_channel is not None:
                on_channel(j, audio)
        w.add_array("W", W)
        w.add_array("H", H)
        w.meta["sr"] = sr
        w.meta["extra"] = {
            "groups": groups,
            "mode": spec.mode,
            "params": spec.settings_at(sr).as_dict(),
        }


def store_separation(cache: SeparationCache, key: str, result: Separation) -> Separation:
    """Store a separation computed elsewhere (a ``stemdeck prep`` worker that does
    not share this cache folder) under ``key``; returns it served from the entry.

    Atomic like every entry: an interrupted store leaves nothing, and a key
    already stored (by a retried task, or another process) is kept as it is.

    Raises
    ------
    CacheError
        The cache folder cannot be written.
    """
    channels = np.asarray(result.channels)
    _write_entry(
        cache,
        key,
        result.names,
        iter(channels),
        channels.shape[1:],
        W=result.W,
        H=result.H,
        sr=result.sr,
        groups=result.groups,
        spec=result.spec,
    )
    stored = cache.load(key)
    if stored.entry is None:
        if stored.problem:
            log.warning(stored.problem)
        raise CacheError(f"cache entry {key[:12]} vanished right after it was written")
    return Separation.from_entry(stored.entry, result.spec)


@with_one_blas_thread
def separate(
    y: np.ndarray,
    sr: int,
    *,
    spec: SeparationSpec | None = None,
    cache: SeparationCache | None = None,
    key: str | None = None,
    progress: StageProgress | None = None,
    on_channel: ChannelSink | None = None,
    nmf_threads: int | None = None,
) -> Separation:
    """Separate a track into mixer channels.

    Parameters
    ----------
    y : np.ndarray, shape (channels, samples) or (samples,)
        The track, mono or stereo, float32.
    sr : int
        Its sample rate.
    spec : SeparationSpec, optional
        The mode and parameters. Default: stems mode with the ``default``
        preset's values: four channels ``drums``, ``bass``, ``other``,
        ``vocals`` (the order of every source of stems) from the shipped stems
        model (:mod:`stemdeck.core.separation.stems`);
        components mode gives one channel per NMF component, low to high by centroid.
    cache : SeparationCache, optional
        Served from and stored into this cache. A cache that cannot be written
        (disk full) is reported with a warning and the separation is still returned.
    key : str, optional
        With ``cache``: the key of ``y`` under ``spec`` (:meth:`SeparationSpec.key`),
        when the caller has taken it already; it is then not taken again. The
        caller answers for it: the entry is filed under this key.
    progress : callable, optional
        ``progress(stage, fraction)`` for stages ``stft``, ``nmf``,
        ``activations``, ``reconstruct``.
    on_channel : callable, optional
        ``on_channel(index, name, audio)`` is called once per channel as soon as
        its audio is ready, so a caller can write files meanwhile: in components
        mode while the next channels are computed; in stems mode every stem is
        ready at once, after the last block is inverted (the stems are inverted
        block by block together: :func:`reconstruct_spectra`); from the cache
        right away. ``audio`` is never reused.
    nmf_threads : int, optional
        Threads of the NMF and the activation fits (default
        :data:`~stemdeck.core.separation.nmf.DEFAULT_THREADS`; the separation is
        the same on any number). The inverse STFTs run on two threads.

    Returns
    -------
    Separation

    Raises
    ------
    AudioFileError
        Empty signal or NaN/inf samples.
    ParameterError
        Bad sample rate.
    PresetError
        The stems model cannot be loaded.
    """
    y = validate_audio(y, name="track")
    if not isinstance(sr, int | np.integer) or sr <= 0:
        raise ParameterError(f"sample rate must be a positive integer, got {sr!r}")
    spec = spec or SeparationSpec()
    if cache is not None:
        if key is None:
            key = spec.key(y, sr)
        found = cache.load(key)
        if found.entry is not None:
            cached = Separation.from_entry(found.entry, spec)
            if on_channel is not None:
                for i, name in enumerate(cached.names):
                    on_channel(i, name, cached.channels[i])
            return cached
        if found.problem:
            log.warning(found.problem)
    params = spec.settings_at(sr)
    model = load_stem_model(params.stems_model) if spec.mode == "stems" else None

    t0 = time.perf_counter()
    X = stft(y, n_fft=params.n_fft, hop=params.hop)
    if progress:
        progress("stft", 1.0)
    V = magnitude(X)
    t1 = time.perf_counter()
    estimate: StemEstimate | None = None
    if model is None:
        W, H = factorize(V, params, sr=sr, progress=progress, threads=nmf_threads)
        groups = [[k] for k in range(params.n_components)]
    else:
        level = track_level(model, y, sr=sr, n_fft=params.n_fft, hop=params.hop)
        estimate = estimate_stems(
            model,
            V,
            sr=sr,
            n_fft=params.n_fft,
            n_iter=params.stems_iter,
            threads=nmf_threads,
            level=level,
        )
        W, H = estimate.W, estimate.H
        if progress:
            progress("nmf", 1.0)
            progress("activations", 1.0)
        groups = [list(g) for g in model.groups]
    names = spec.channel_names()
    # The stems are computed in the model's order (its last stem is the remainder)
    # and stored in the order of every source (roles.py): computed stem i is channel
    # slots[i]; the stored groups follow the channels.
    order = spec.channel_order()
    slots = [order.index(i) for i in range(len(order))]
    groups = [groups[i] for i in order]
    del V
    log.debug("stft %.2f s, nmf %.2f s", t1 - t0, time.perf_counter() - t1)

    delivered: set[int] = set()

    def deliver(i: int, audio: np.ndarray) -> None:
        if on_channel is not None and i not in delivered:
            delivered.add(i)
            on_channel(i, names[i], audio)

    def channels() -> Iterator[np.ndarray]:
        if estimate is not None:
            return reconstruct_spectra(
                X,
                estimate,
                y=y,
                n_fft=params.n_fft,
                hop=params.hop,
                progress=progress,
                frame_floor=True,
            )
        return reconstruct(
            X,
            W,
            H,
            groups,
            y=y,
            n_fft=params.n_fft,
            hop=params.hop,
            mask_power=params.mask_power,
            progress=progress,
        )

    if cache is not None:
        assert key is not None
        try:
            _write_entry(
                cache,
                key,
                names,
                channels(),
                y.shape,
                W=W,
                H=H,
                sr=sr,
                groups=groups,
                spec=spec,
                on_channel=deliver,
                slots=slots,
            )
            log.debug("reconstructed into the cache in %.2f s", time.perf_counter() - t0)
            written = cache.load(key)
            if written.entry is not None:
                return Separation.from_entry(written.entry, spec, from_cache=False)
            if written.problem:
                log.warning(written.problem)
        except CacheError as exc:
            log.warning("%s (continuing without the cache)", exc)
    out = np.empty((len(names), *y.shape), dtype=np.float32)
    for j, audio in zip(slots, channels(), strict=True):
        out[j] = audio
        deliver(j, out[j])
    return Separation(channels=out, names=names, sr=sr, W=W, H=H, groups=groups, spec=spec)
