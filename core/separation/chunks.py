"""Separation of a track in overlapping chunks: bounded memory, any order, both cores.

Both modes work on short contexts, so a chunk of a track, analysed with a margin
of frames on each side that is dropped on output, separates to the same samples
as the whole track:

- stems mode: the HPSS medians span ``hpss_kernel`` frames, the maps see
  ``context`` frames each side, and an output sample is made of ``n_fft / hop``
  frames; the margin covers all three plus the frames the STFT of a slice pads
  with zeros. The only whole-track statistic of the stems model, the mean mel
  magnitude that floors the model spectra, is taken in a bounded first pass (on
  the frames of the track's first minute, :func:`~.stems.track_level`); the mask
  floor is relative to each frame's largest model sum rather than to a block of
  1024 frames (whose start depends on the chunk).
- components mode: the templates are learned on at most ``fit_frames`` frames
  spread over the track (as :func:`~.separate.factorize` does), computed alone in
  the first pass; each chunk then solves its activations with the templates
  fixed (every frame's activations depend on that frame alone). The flush of
  tiny activations is relative to the largest learned one.

Chunks fall on the hop grid of the whole track's STFT, so a chunk's frames are
the whole track's frames; each chunk's last channel is its slice of the track
minus the other channels, so the channels add up to the track exactly as the
whole-track separation's do. ``tests/core/separation/test_chunks.py`` checks
chunked against one chunk spanning the track, and against
:func:`~.separate.separate`.

:class:`ChunkedSeparator` prepares a track (the first pass) and separates any
chunk (:meth:`~ChunkedSeparator.chunk`), or streams them in play order on
threads (:meth:`~ChunkedSeparator.stream`);
:func:`iter_chunks` yields ``(start, stop, channels)`` in one call. A track still
being decoded can be separated as it comes (``available``): in stems mode the
first pass needs the first minute, and each chunk waits for its own samples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audiofile.samples import validate_audio
from ..errors import ParameterError
from .blas import keep_one_blas_thread, with_one_blas_thread
from .cache import SeparationCache
from .chunk_writer import ChunkWriter
from .keys import SeparationSpec
from .nmf import nmf, solve_activations
from .separate import component_centroids, reconstruct, reconstruct_spectra
from .spectral import magnitude
from .stem_model import StemModel, load_stem_model
from .stems import estimate_stems, level_samples, track_level
from .stft import n_frames, spread_frames, stft, stft_frames

__all__ = [
    "CHUNK_SECONDS",
    "Chunk",
    "ChunkPlan",
    "ChunkedSeparator",
    "iter_chunks",
]

#: Length of a chunk's output. 15 s: the margins (27 frames each side in stems
#: mode, 0.6 s at 44.1 kHz) cost 8 % more work, 4 % at 30 s but 16 % at 7.5 s;
#: one chunk of stems takes about 0.4 s on one core, so the stems under a play
#: head are ready well within 2 s; and a chunk's working set (spectra, masks) is
#: tens of MB whatever the track's length.
CHUNK_SECONDS = 15.0


@dataclass(frozen=True)
class ChunkPlan:
    """Where a track's chunks start and stop, in samples and STFT frames.

    Chunk ``i`` owns frames ``[i * chunk_frames, (i + 1) * chunk_frames)`` (the
    last one also the frames past the end) and outputs the samples those frames
    are centred on, ``[i * chunk_frames * hop, (i + 1) * chunk_frames * hop)``
    clipped to the track; it is analysed on ``margin`` more frames each side.
    """

    length: int
    hop: int
    chunk_frames: int
    margin: int

    @property
    def frames(self) -> int:
        """Frames of the whole track's STFT."""
        return -(-self.length // self.hop) + 1

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.length // (self.chunk_frames * self.hop)))

    def samples(self, i: int) -> tuple[int, int]:
        """Samples ``[start, stop)`` chunk ``i`` outputs."""
        step = self.chunk_frames * self.hop
        return min(self.length, i * step), min(self.length, (i + 1) * step)

    def owned(self, i: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` whose activations chunk ``i`` reports."""
        last = i == self.n_chunks - 1
        return i * self.chunk_frames, self.frames if last else (i + 1) * self.chunk_frames

    def analysed(self, i: int) -> tuple[int, int]:
        """Frames ``[start, stop)`` chunk ``i`` is analysed on (owned plus margins)."""
        start, stop = self.owned(i)
        return max(0, start - self.margin), min(self.frames, stop + self.margin)

    def chunk_at(self, sample: int) -> int:
        """The chunk that outputs ``sample`` (clipped to the track)."""
        sample = min(max(0, int(sample)), self.length - 1)
        return min(self.n_chunks - 1, sample // (self.chunk_frames * self.hop))

    def order(self, sample: int = 0) -> list[int]:
        """Chunks in play order from ``sample``: its chunk, those after it, then
        those before it, nearest first (where a performer scrubbing back goes)."""
        first = self.chunk_at(sample)
        return [*range(first, self.n_chunks), *range(first - 1, -1, -1)]


@dataclass
class Chunk:
    """One separated chunk.

    Attributes
    ----------
    index : int
    start, stop : int
        The samples it covers, ``[start, stop)``.
    channels : np.ndarray, shape (n_channels, audio_channels, stop - start), float32
        ``channels.sum(axis=0)`` equals the track's samples ``start:stop``.
    frames : tuple of int
        The STFT frames ``[start, stop)`` whose activations ``H`` holds.
    H : np.ndarray, shape (K, frames[1] - frames[0]), float32
    """

    index: int
    start: int
    stop: int
    channels: np.ndarray
    frames: tuple[int, int]
    H: np.ndarray


class ChunkedSeparator:
    """A track prepared for separation chunk by chunk.

    Construction runs the bounded first pass (the stems mode's level, or the
    components mode's templates); :meth:`chunk` then separates any chunk
    independently and :meth:`stream` separates them all in play order.

    Parameters
    ----------
    y : np.ndarray, shape (channels, samples) or (samples,)
        The track, float32.
    sr : int
    spec : SeparationSpec, optional
        As :func:`~.separate.separate`'s (default: stems mode).
    chunk_seconds : float
        Output length of a chunk (default :data:`CHUNK_SECONDS`), rounded to whole
        frames; a chunk as long as the track separates it in one piece.
    threads : int, optional
        Threads of the components mode's template fit (the first pass).
    available : callable, optional
        For a track still being decoded into ``y`` (its full length, the samples
        not decoded yet zeros): ``available(n)`` returns once the first ``n``
        samples are in, or raises to stop. Each read of ``y`` waits for it, and
        ``y`` is not checked for NaN here (the decoder checks each block before
        it lands). Stems mode only: the components mode's first pass reads the
        whole track, so it waits for all of it.

    Attributes
    ----------
    plan : ChunkPlan
    names : list of str
    W : np.ndarray, shape (bins, K)
        The templates, as :attr:`~.separate.Separation.W`.
    groups : list of list of int
        The columns of ``W`` each channel is made of, in channel order.
    shape : tuple of int
        ``(n_channels, audio_channels, samples)`` of the whole separation.

    Raises
    ------
    AudioFileError
        Empty signal or NaN/inf samples.
    ParameterError
        Bad sample rate or chunk length.
    PresetError
        The stems model cannot be loaded.
    """

    def __init__(
        self,
        y: np.ndarray,
        sr: int,
        spec: SeparationSpec | None = None,
        *,
        chunk_seconds: float = CHUNK_SECONDS,
        threads: int | None = None,
        available: Callable[[int], None] | None = None,
    ) -> None:
        if available is None:
            y = validate_audio(y, name="track")
        elif not (isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 2):
            raise ParameterError("a track being decoded is a float32 (channels, samples) array")
        self._available = available
        if not isinstance(sr, int | np.integer) or sr <= 0:
            raise ParameterError(f"sample rate must be a positive integer, got {sr!r}")
        if not (isinstance(chunk_seconds, int | float) and 0 < chunk_seconds < float("inf")):
            raise ParameterError(f"chunk_seconds must be a positive number, got {chunk_seconds!r}")
        self.y = y
        self.sr = int(sr)
        self.spec = spec or SeparationSpec()
        self.params = self.spec.settings_at(self.sr)
        self.names = self.spec.channel_names()
        p = self.params
        overlap = p.n_fft // p.hop
        self.model: StemModel | None = None
        self.level = 0.0
        frames = n_frames(y.shape[1], p.n_fft, p.hop)
        chunk_frames = max(1, round(chunk_seconds * sr / p.hop))
        if self.spec.mode == "stems":
            model = self.model = load_stem_model(p.stems_model)
            # Output samples need n_fft/hop frames each side; the maps `context`
            # frames; the HPSS medians half their span; a slice's STFT pads its
            # first and last n_fft/hop frames with zeros.
            margin = 2 * overlap + model.context + model.hpss_kernel // 2 + 2
            self._wait(level_samples(y.shape[1], sr=self.sr, n_fft=p.n_fft, hop=p.hop))
            self.level = track_level(model, y, sr=self.sr, n_fft=p.n_fft, hop=p.hop)
            self.W = model.templates_for(self.sr, p.n_fft)
            self.groups = [list(g) for g in model.groups]
        else:
            margin = 2 * overlap
            self._wait(y.shape[1])
            self._fit(frames, threads)
            self.groups = [[k] for k in range(p.n_components)]
        # Computed in the model's order, stored in the order of every source
        # (:meth:`~.keys.SeparationSpec.channel_order`): computed stem i is channel
        # _slots[i], as separate() stores it.
        order = self.spec.channel_order()
        self._slots = [order.index(i) for i in range(len(order))]
        self._computed_groups = self.groups
        self.groups = [self.groups[i] for i in order]
        self.plan = ChunkPlan(y.shape[1], p.hop, chunk_frames, margin)
        self.shape = (len(self.names), *y.shape)

    def _wait(self, samples: int) -> None:
        """Return once the first ``samples`` of the track are in (at once unless it is
        being decoded)."""
        if self._available is not None:
            self._available(samples)

    def _fit(self, frames: int, threads: int | None) -> None:
        """Components mode's first pass: templates as :func:`~.separate.factorize` learns them."""
        p = self.params
        picked = spread_frames(frames, p.fit_frames)
        self._subset = len(picked) < frames
        V_fit = np.asfortranarray(magnitude(stft_frames(self.y, picked, n_fft=p.n_fft, hop=p.hop)))
        result = nmf(
            V_fit,
            p.n_components,
            beta=p.beta,
            n_iter=p.n_iter,
            tol=p.tol,
            seed=p.seed,
            threads=threads,
        )
        del V_fit
        scale = result.W.sum(axis=0)
        scale[scale <= 0] = 1.0
        W = result.W / scale
        self._order = np.argsort(
            component_centroids(W, self.sr, p.n_fft), kind="stable"
        )  # low to high
        self._scale = scale
        self._raw_W = result.W
        self.W = np.ascontiguousarray(W[:, self._order])
        self._picked = picked
        self._H_fit = result.H
        if self._subset:
            # The whole-track fit flushes activations relative to its largest; a
            # chunk cannot know the refined ones' largest, so the learned ones' stands in.
            self._h_peak = float((result.H * scale[:, np.newaxis]).max(initial=0.0))
        else:
            self._H_all = np.ascontiguousarray((result.H * scale[:, np.newaxis])[self._order])
            self._h_peak = float(self._H_all.max(initial=0.0))

    # -- one chunk ---------------------------------------------------------------
    @with_one_blas_thread
    def chunk(self, i: int, *, threads: int = 1) -> Chunk:
        """Separate chunk ``i`` (any order, any thread or process), its activations'
        fit and its inverse FFTs on ``threads`` threads (the same result on any
        number: each frame's fit is its own).

        Raises
        ------
        ParameterError
            ``i`` is not a chunk of this track.
        """
        plan = self.plan
        if not 0 <= i < plan.n_chunks:
            raise ParameterError(f"chunk {i} is not one of the track's {plan.n_chunks}")
        p = self.params
        first, last = plan.analysed(i)
        s0 = first * p.hop
        s1 = self.y.shape[1] if last == plan.frames else (last - 1) * p.hop
        self._wait(s1)
        yc = self.y[:, s0:s1]
        X = stft(yc, n_fft=p.n_fft, hop=p.hop)
        own0, own1 = plan.owned(i)
        start, stop = plan.samples(i)
        if self.model is not None:
            # Only the frames the output's samples are made of (an overlap's worth
            # each side of the chunk's own) are fitted, mapped, masked and inverted:
            # the margin's other frames serve the medians and the STFT's padding.
            r = p.n_fft // p.hop
            o0, o1 = max(first, own0 - r), min(last, own1 + r)
            estimate = estimate_stems(
                self.model,
                magnitude(X),
                sr=self.sr,
                n_fft=p.n_fft,
                n_iter=p.stems_iter,
                threads=threads,
                level=self.level,
                span=(o0 - first, o1 - first),
            )
            H, h0 = estimate.H, o0
            # The samples from frame o0's centre on: the output is a slice of them.
            s0 = o0 * p.hop
            parts = reconstruct_spectra(
                X[:, :, o0 - first : o1 - first],
                estimate,
                y=self.y[:, s0:stop],
                n_fft=p.n_fft,
                hop=p.hop,
                frame_floor=True,
                threads=threads,
                first_frame=o0,
            )
        else:
            H, h0 = self._activations(X, first, last, threads), first
            parts = reconstruct(
                X,
                self.W,
                H,
                self._computed_groups,
                y=yc,
                n_fft=p.n_fft,
                hop=p.hop,
                mask_power=p.mask_power,
                h_peak=self._h_peak,
                threads=threads,
                first_frame=first,
            )
        out = np.empty((len(self.names), yc.shape[0], stop - start), dtype=np.float32)
        for j, audio in zip(self._slots, parts, strict=True):
            out[j] = audio[:, start - s0 : stop - s0]
        return Chunk(
            index=i,
            start=start,
            stop=stop,
            channels=out,
            frames=(own0, own1),
            H=np.ascontiguousarray(H[:, own0 - h0 : own1 - h0]),
        )

    def _activations(self, X: np.ndarray, first: int, last: int, threads: int) -> np.ndarray:
        """Components mode: the activations of frames ``first:last``, ordered and scaled."""
        if not self._subset:
            return self._H_all[:, first:last]
        p = self.params
        nearest = np.interp(np.arange(first, last), self._picked, np.arange(len(self._picked)))
        H = self._H_fit[:, np.rint(nearest).astype(np.intp)]
        if p.refine_iter > 0:
            H = solve_activations(
                magnitude(X),
                self._raw_W,
                beta=p.beta,
                n_iter=p.refine_iter,
                H_init=H,
                threads=threads,
            )
        H = H * self._scale[:, np.newaxis]
        return np.ascontiguousarray(H[self._order])

    # -- all chunks --------------------------------------------------------------
    def stream(
        self,
        *,
        position: int = 0,
        workers: int = 2,
        chunks: Sequence[int] | None = None,
    ) -> Iterator[Chunk]:
        """Separate chunks in play order from sample ``position``, ``workers`` at a time.

        The workers are threads: the heavy parts (FFTs, BLAS products, the
        medians' array work) release the GIL, and two threads separate a
        3-minute track in 2.7 s against 4.2 s for two forked processes, which
        pay for sending every chunk back (``bench/separate.py``). Memory stays
        bounded: at most ``workers + 1`` chunks are in flight or waiting to be
        taken. Chunks are yielded in the order asked for, whichever finishes first.

        Parameters
        ----------
        position : int
            The play head, in samples: its chunk comes first, then the chunks after
            it, then those before it (:meth:`ChunkPlan.order`).
        workers : int
            Chunks separated at once; 1 runs them in the calling thread.
        chunks : sequence of int, optional
            Only these chunks, in this order (a resumed entry's missing ones).

        Raises
        ------
        ParameterError
            ``workers`` is not a positive integer, or a chunk is not the track's.
        """
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ParameterError(f"workers must be a positive integer, got {workers!r}")
        order = list(self.plan.order(position) if chunks is None else chunks)
        for i in order:
            if not isinstance(i, int | np.integer) or not 0 <= i < self.plan.n_chunks:
                raise ParameterError(f"chunk {i!r} is not one of the track's {self.plan.n_chunks}")
        if workers == 1 or len(order) <= 1:
            for i in order:
                yield self.chunk(i)
            return
        keep_one_blas_thread()  # in this thread, before the chunks' threads
        with ThreadPoolExecutor(workers, thread_name_prefix="stemdeck-chunk") as pool:
            pending: deque[Future[Chunk]] = deque()
            todo = iter(order)
            try:
                for i in todo:
                    pending.append(pool.submit(self.chunk, i))
                    if len(pending) >= workers:
                        break
                while pending:
                    done = pending.popleft().result()
                    for i in todo:
                        pending.append(pool.submit(self.chunk, i))
                        break
                    yield done
            finally:
                for f in pending:
                    f.cancel()

    # -- into the cache ----------------------------------------------------------
    def entry_meta(self) -> dict[str, Any]:
        """The fields of a cache entry's ``meta.json`` for this separation (the same
        as :func:`~.separate.separate`'s entries carry)."""
        return {
            "sr": self.sr,
            "extra": {
                "groups": self.groups,
                "mode": self.spec.mode,
                "params": self.params.as_dict(),
            },
        }

    def into_cache(
        self, cache: SeparationCache, key: str, *, position: int = 0, workers: int = 2
    ) -> Generator[Chunk, None, None] | None:
        """Separate the chunks this entry still lacks into the cache, in play order.

        Iterate over the result to do the work: each chunk is yielded once it is
        written and recorded ready, so a reader
        (:meth:`~.cache.SeparationCache.open_partial`) can play it; after the
        last one the entry is sealed and in place (:meth:`~.cache.SeparationCache.load`
        serves it). An entry left partial by a killed process is resumed: only
        its missing or damaged chunks are separated. Stopping early (closing the
        iterator) leaves the entry partial, to resume.

        Parameters
        ----------
        key : str
            The entry's key (:meth:`~.keys.SeparationSpec.key` of the track).
        position, workers : int
            As :meth:`stream`'s.

        Returns
        -------
        generator of Chunk, or None
            None when another live process is writing this entry (read it with
            :meth:`~.cache.SeparationCache.open_partial`).

        Raises
        ------
        CacheError
            The cache folder cannot be written (also while iterating).
        """
        writer = cache.chunk_writer(
            key,
            self.names,
            (self.y.shape[0], self.y.shape[1]),
            W=self.W,
            frames=self.plan.frames,
            meta=self.entry_meta(),
        )
        if writer is None:
            return None
        return self._write(writer, position, workers)

    def _write(
        self, writer: ChunkWriter, position: int, workers: int
    ) -> Generator[Chunk, None, None]:
        with writer:
            ready = writer.ready

            def done(i: int) -> bool:
                start, stop = self.plan.samples(i)
                return any(a <= start and stop <= b for a, b in ready)

            missing = [i for i in self.plan.order(position) if not done(i)]
            for c in self.stream(position=position, workers=workers, chunks=missing):
                writer.add_chunk(c.start, c.stop, c.channels, c.frames, c.H)
                yield c
            writer.finish()


def iter_chunks(
    y: np.ndarray,
    sr: int,
    spec: SeparationSpec | None = None,
    *,
    position: int = 0,
    workers: int = 2,
    chunk_seconds: float = CHUNK_SECONDS,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Separate a track chunk by chunk: yields ``(start, stop, channels)`` in play
    order from sample ``position`` (:meth:`ChunkedSeparator.stream`).

    ``start, stop`` are samples; ``channels`` has shape
    ``(n_channels, audio_channels, stop - start)`` and sums to ``y[:, start:stop]``.
    """
    separator = ChunkedSeparator(y, sr, spec, chunk_seconds=chunk_seconds)
    for c in separator.stream(position=position, workers=workers):
        yield c.start, c.stop, c.channels
