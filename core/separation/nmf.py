"""Non-negative matrix factorization with beta-divergence, float32, cache-blocked.

``V ≈ W @ H`` with ``V`` of shape ``(bins, frames)``, templates ``W`` of shape
``(bins, K)`` and activations ``H`` of shape ``(K, frames)``.

The multiplicative updates (Lee & Seung; Févotte & Idier 2011 for general beta)
are computed one block of frames at a time: the model ``W @ H`` and the ratio
``V / (W @ H)`` of a block stay in the CPU cache instead of being written out as
full-size temporaries, and every product is a BLAS call on contiguous memory.
For beta < 1 and beta > 2 the update is raised to the exponent that keeps the
divergence non-increasing (Févotte & Idier, Neural Computation 23(9), 2011).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from ..errors import ParameterError
from .blas import keep_one_blas_thread

__all__ = ["DEFAULT_THREADS", "NMFResult", "beta_divergence", "nmf", "solve_activations"]

_EPS = np.float32(1e-9)  # floor added to the model so V / WH is always finite
# Values below these are set to zero. Multiplicative updates drive unused
# activations towards zero geometrically; once subnormal, every product with
# them costs ~100x (x86 microcode assists). Templates are kept at unit sum, so
# a non-zero product W * H stays >= 1e-35, a normal float32; against the model
# floor _EPS these values are nothing.
_FLUSH_H = np.float32(1e-20)
_FLUSH_W = np.float32(1e-15)
_BLOCK = 128  # frames per block at most bins (the ranges' unit): bins * 128 * 4 bytes ~ L2
# A block's model and ratio in this many bytes at most: fewer bins (the stems model's
# 256 mel bands), longer blocks (512 frames), for fewer, larger products: 12 % less
# time for a chunk's activations than 128-frame blocks (61 against 69 ms).
_BLOCK_BYTES = 512 * 1024


def _step(bins: int) -> int:
    """Frames per block for spectra of ``bins`` rows: a multiple of :data:`_BLOCK`."""
    return max(_BLOCK, min(8 * _BLOCK, _BLOCK_BYTES // (4 * max(bins, 1)) // _BLOCK * _BLOCK))


# Frame ranges per update, whatever the thread count: partial sums are added in
# the same order on 1 thread or 4, so a track separates to the same bits in the
# daemon's worker, in `stemdeck separate` and in a single-threaded prep worker.
_RANGES = 4

#: Threads an update runs on when the caller names none: one per frame range,
#: at most one per core.
DEFAULT_THREADS = min(_RANGES, os.cpu_count() or 1)

#: Told the fraction of an NMF fit done (0..1).
FitProgress = Callable[[float], None]
_T = TypeVar("_T")


@contextmanager
def _workers(threads: int | None) -> Iterator[ThreadPoolExecutor | None]:
    """The threads of one factorization: a pool, or None to run in the caller's thread.

    A pool per call, not per process: each call runs on the threads it asks for,
    and a forked child (a ``stemdeck prep`` worker) never inherits a pool whose
    threads it lacks.
    """
    n = DEFAULT_THREADS if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ParameterError(f"threads must be a positive integer, got {threads!r}")
    if n == 1:
        yield None
        return
    with ThreadPoolExecutor(
        max_workers=min(int(n), _RANGES), thread_name_prefix="stemdeck-nmf"
    ) as pool:
        yield pool


@dataclass
class NMFResult:
    """Outcome of :func:`nmf`.

    Attributes
    ----------
    W : np.ndarray, shape (bins, K), float32
    H : np.ndarray, shape (K, frames), float32
    divergence : list of (iteration, value)
        Beta-divergence ``D(V | WH)`` at the checked iterations (iteration 0 is the
        initialization).
    n_iter : int
        Iterations run (fewer than asked when the tolerance was met).
    """

    W: np.ndarray
    H: np.ndarray
    divergence: list[tuple[int, float]] = field(default_factory=list)
    n_iter: int = 0


def _check_beta(beta: float) -> float:
    if not isinstance(beta, int | float) or not np.isfinite(beta):
        raise ParameterError(f"beta must be a finite number, got {beta!r}")
    return float(beta)


def _gamma(beta: float) -> float:
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


def _prepare_V(V: np.ndarray) -> np.ndarray:
    """Return V transposed to (frames, bins), C-contiguous float32, validated."""
    V = np.asarray(V)
    if V.ndim != 2 or 0 in V.shape:
        raise ParameterError(f"V must be a non-empty 2-D (bins, frames) array, got shape {V.shape}")
    VT = np.ascontiguousarray(V.T, dtype=np.float32)
    if not np.isfinite(VT).all() or (VT < 0).any():
        raise ParameterError("V must be finite and non-negative (a magnitude spectrogram)")
    tiny = (VT > 0) & (VT < _FLUSH_H)  # no subnormals (see _FLUSH_H)
    if tiny.any():
        if np.shares_memory(VT, V):
            VT = VT.copy()  # never change the caller's array
        VT[tiny] = 0.0
    return VT


def _elementwise_div(VT: np.ndarray, WH: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (numerator factor, denominator factor) for general beta, in place in WH."""
    # numerator uses V * WH^(beta-2), denominator WH^(beta-1)
    den = np.power(WH, beta - 1.0, dtype=np.float32)
    WH **= beta - 2.0
    WH *= VT
    return WH, den


def _divergence_block(VT: np.ndarray, WH: np.ndarray, beta: float) -> float:
    """Sum of the elementwise beta-divergence d(V | WH) over one block (float64)."""
    if beta == 1.0:
        ratio = VT / WH
        np.maximum(ratio, np.finfo(np.float32).tiny, out=ratio)
        np.log(ratio, out=ratio)
        ratio *= VT
        return float(
            np.sum(ratio, dtype=np.float64)
            - np.sum(VT, dtype=np.float64)
            + np.sum(WH, dtype=np.float64)
        )
    if beta == 0.0:
        ratio = VT / WH
        tiny = np.finfo(np.float32).tiny
        return float(np.sum(ratio - np.log(np.maximum(ratio, tiny)) - 1.0, dtype=np.float64))
    if beta == 2.0:
        diff = VT - WH
        return float(0.5 * np.sum(diff * diff, dtype=np.float64))
    V64 = VT.astype(np.float64)
    WH64 = WH.astype(np.float64)
    return float(
        np.sum(
            (V64**beta + (beta - 1) * WH64**beta - beta * V64 * WH64 ** (beta - 1))
            / (beta * (beta - 1))
        )
    )


def beta_divergence(
    V: np.ndarray,
    W: np.ndarray,
    H: np.ndarray,
    *,
    beta: float = 1.0,
    threads: int | None = None,
) -> float:
    """Beta-divergence ``D(V | W @ H + eps)`` summed over all bins and frames.

    ``beta`` = 2 is half the squared Euclidean distance, 1 Kullback-Leibler,
    0 Itakura-Saito. The same ``eps`` floor the updates use is added to the model.
    ``threads``: as :func:`nmf`'s.
    """
    beta = _check_beta(beta)
    VT = _prepare_V(V)
    WT = np.ascontiguousarray(np.asarray(W, dtype=np.float32).T)
    HT = np.ascontiguousarray(np.asarray(H, dtype=np.float32).T)
    step = _step(VT.shape[1])

    def work(lo: int, hi: int) -> float:
        total = 0.0
        for s in range(lo, hi, step):
            e = min(s + step, hi)
            WH = HT[s:e] @ WT
            WH += _EPS
            total += _divergence_block(VT[s:e], WH, beta)
        return total

    keep_one_blas_thread()
    with _workers(threads) as pool:
        return float(sum(_run(work, VT.shape[0], pool)))


def flush_below(a: np.ndarray, floor: float | np.floating) -> None:
    """Set the values of ``a`` below ``floor`` to zero, in place, so that no subnormal
    float slows the products downstream (x86 microcode assists, ~100x): ``a * (a >=
    floor)``, the values ``a[a < floor] = 0`` gives for the non-negative arrays of the
    separation, in a tenth of its time (a masked assignment gathers and scatters). A
    negative value or -0.0 would keep its sign bit here (zero times a negative is
    -0.0): none reaches the call sites, whose arrays are products of non-negative
    factors."""
    np.multiply(a, a >= floor, out=a)


def _split(frames: int) -> list[tuple[int, int]]:
    """Frame ranges for the worker threads, each a whole number of blocks."""
    n = max(1, min(_RANGES, frames // _BLOCK))
    blocks = -(-frames // _BLOCK)
    edges = [min(frames, (blocks * i // n) * _BLOCK) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n) if edges[i] < edges[i + 1]]


def _run(fn: Callable[[int, int], _T], frames: int, pool: ThreadPoolExecutor | None) -> list[_T]:
    """Run ``fn(lo, hi)`` on every range of :func:`_split`, on the pool's threads
    (in this thread without one).

    Each thread does its own small BLAS calls single-threaded: for these thin
    products (inner size K) that is about twice as fast as one thread calling a
    multi-threaded BLAS.
    """
    ranges = _split(frames)
    if pool is None or len(ranges) == 1:
        return [fn(*r) for r in ranges]
    return list(pool.map(lambda r: fn(*r), ranges))


def _update_H(
    VT: np.ndarray,
    WT: np.ndarray,
    HT: np.ndarray,
    beta: float,
    gamma: float,
    want_divergence: bool,
    pool: ThreadPoolExecutor | None,
) -> float:
    """One multiplicative update of all activations, block by block; returns D before it."""
    w_sum = WT.sum(axis=1) + _EPS  # (K,): the KL denominator W^T 1
    bins = VT.shape[1]
    step = _step(bins)

    def work(lo: int, hi: int) -> float:
        total = 0.0
        buf = np.empty((step, bins), dtype=np.float32)
        for s in range(lo, hi, step):
            e = min(s + step, hi)
            Vb, Hb, WH = VT[s:e], HT[s:e], buf[: e - s]
            np.matmul(Hb, WT, out=WH)
            WH += _EPS
            if want_divergence:
                total += _divergence_block(Vb, WH, beta)
            if beta == 1.0:
                np.divide(Vb, WH, out=WH)
                ratio = WH @ WT.T
                ratio /= w_sum
            elif beta == 2.0:
                ratio = Vb @ WT.T
                ratio /= (WH @ WT.T) + _EPS
            else:
                num, den = _elementwise_div(Vb, WH, beta)
                ratio = num @ WT.T
                ratio /= (den @ WT.T) + _EPS
            if gamma != 1.0:
                ratio **= gamma
            Hb *= ratio
            flush_below(Hb, _FLUSH_H)
        return total

    keep_one_blas_thread()
    return float(sum(_run(work, VT.shape[0], pool)))


def _update_W(
    VT: np.ndarray,
    WT: np.ndarray,
    HT: np.ndarray,
    beta: float,
    gamma: float,
    pool: ThreadPoolExecutor | None,
) -> None:
    """One multiplicative update of the templates; W's numerator summed over blocks."""
    bins = VT.shape[1]
    step = _step(bins)

    def work(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
        num = np.zeros_like(WT)
        den = np.zeros_like(WT) if beta != 1.0 else None
        buf = np.empty((step, bins), dtype=np.float32)
        for s in range(lo, hi, step):
            e = min(s + step, hi)
            Vb, Hb, WH = VT[s:e], HT[s:e], buf[: e - s]
            np.matmul(Hb, WT, out=WH)
            WH += _EPS
            if beta == 1.0:
                np.divide(Vb, WH, out=WH)
                num += Hb.T @ WH
            elif beta == 2.0:
                assert den is not None
                num += Hb.T @ Vb
                den += Hb.T @ WH
            else:
                assert den is not None
                n, d = _elementwise_div(Vb, WH, beta)
                num += Hb.T @ n
                den += Hb.T @ d
        return num, den

    keep_one_blas_thread()
    parts = _run(work, VT.shape[0], pool)
    num = parts[0][0]
    for n, _ in parts[1:]:
        num += n
    if beta == 1.0:
        ratio = num / (HT.sum(axis=0)[:, np.newaxis] + _EPS)
    else:
        den = parts[0][1]
        assert den is not None
        for _, d in parts[1:]:
            assert d is not None
            den += d
        ratio = num / (den + _EPS)
    if gamma != 1.0:
        ratio **= gamma
    WT *= ratio
    _normalize(WT, HT)


def _normalize(WT: np.ndarray, HT: np.ndarray | None) -> None:
    """Scale each template to unit sum (the activations take the scale) and flush
    template values too small to matter to zero. W @ H is unchanged."""
    scale = WT.sum(axis=1)
    scale[scale <= 0] = 1.0
    WT /= scale[:, np.newaxis]
    if HT is not None:
        HT *= scale
        flush_below(HT, _FLUSH_H)
    flush_below(WT, _FLUSH_W)


def _init_factors(VT: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames, bins = VT.shape
    # Scale so the initial model has the data's mean level (as scikit-learn does).
    scale = np.sqrt(max(float(VT.mean()), 1e-12) / k)
    WT = (scale * rng.uniform(0.5, 1.5, size=(k, bins))).astype(np.float32)
    HT = (scale * rng.uniform(0.5, 1.5, size=(frames, k))).astype(np.float32)
    return WT, HT


def nmf(
    V: np.ndarray,
    n_components: int,
    *,
    beta: float = 1.0,
    n_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    W_init: np.ndarray | None = None,
    H_init: np.ndarray | None = None,
    check_every: int = 10,
    progress: FitProgress | None = None,
    threads: int | None = None,
) -> NMFResult:
    """Factorize a non-negative matrix by multiplicative updates.

    Parameters
    ----------
    V : np.ndarray, shape (bins, frames)
        Non-negative data, usually a magnitude spectrogram.
    n_components : int
        Number of components K.
    beta : float
        Divergence: 2 Euclidean, 1 Kullback-Leibler (default), 0 Itakura-Saito;
        any real value works.
    n_iter : int
        Iteration cap.
    tol : float
        Stop when the relative decrease of the divergence over the last
        ``check_every`` iterations falls below ``tol``; 0 runs all ``n_iter``.
    seed : int
        Seed of the random initialization; the same seed gives the same result.
    W_init, H_init : np.ndarray, optional, shapes (bins, K) and (K, frames)
        Initial factors instead of random ones.
    check_every : int
        Iterations between divergence evaluations (each costs one pass of logs).
    progress : callable, optional
        Called with the fraction done, 0..1.
    threads : int, optional
        Threads the updates run on (default :data:`DEFAULT_THREADS`); 1 runs in
        the calling thread. The result is the same, bit for bit, on any number.

    Returns
    -------
    NMFResult

    Raises
    ------
    ParameterError
        Negative or non-finite ``V``, bad shapes or out-of-range options.
    """
    beta = _check_beta(beta)
    VT = _prepare_V(V)
    frames, bins = VT.shape
    if not isinstance(n_components, int | np.integer) or n_components < 1:
        raise ParameterError(f"n_components must be a positive integer, got {n_components!r}")
    if not isinstance(n_iter, int | np.integer) or n_iter < 0:
        raise ParameterError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    if not tol >= 0:
        raise ParameterError(f"tol must be >= 0, got {tol!r}")
    k = int(n_components)
    WT, HT = _init_factors(VT, k, seed)
    if W_init is not None:
        WT = _checked_factor(W_init, (bins, k), "W_init").T.copy()
    if H_init is not None:
        HT = _checked_factor(H_init, (k, frames), "H_init").T.copy()
    _normalize(WT, HT)
    gamma = _gamma(beta)
    check_every = max(1, int(check_every))
    history: list[tuple[int, float]] = []
    last = None
    it = 0
    with _workers(threads) as pool:
        for it in range(1, n_iter + 1):
            check = (it - 1) % check_every == 0
            d = _update_H(VT, WT, HT, beta, gamma, want_divergence=check, pool=pool)
            if check:
                history.append((it - 1, d))
                if last is not None and tol > 0 and (last - d) <= tol * abs(last):
                    it -= 1  # this iteration's H update is kept; W is already converged
                    break
                last = d
            _update_W(VT, WT, HT, beta, gamma, pool)
            if progress is not None:
                progress(it / n_iter)
    history.append((it, beta_divergence(V, WT.T, HT.T, beta=beta, threads=threads)))
    if progress is not None:
        progress(1.0)
    return NMFResult(
        W=np.ascontiguousarray(WT.T), H=np.ascontiguousarray(HT.T), divergence=history, n_iter=it
    )


def _checked_factor(A: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    A = np.asarray(A, dtype=np.float32)
    if A.shape != shape:
        raise ParameterError(f"{name} must have shape {shape}, got {A.shape}")
    if not np.isfinite(A).all() or (A < 0).any():
        raise ParameterError(f"{name} must be finite and non-negative")
    return A


def solve_activations(
    V: np.ndarray,
    W: np.ndarray,
    *,
    beta: float = 1.0,
    n_iter: int = 30,
    H_init: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Activations ``H`` for fixed templates ``W`` on a block of frames.

    The live engine uses this to follow a track with templates learned offline.

    Parameters
    ----------
    V : np.ndarray, shape (bins, frames)
    W : np.ndarray, shape (bins, K)
    n_iter : int
        Multiplicative updates of H (the divergence never increases).
    H_init : np.ndarray, shape (K, frames), optional
        Warm start, e.g. the previous block's last column repeated.
    threads : int, optional
        As :func:`nmf`'s.

    Returns
    -------
    H : np.ndarray, shape (K, frames), float32
    """
    beta = _check_beta(beta)
    VT = _prepare_V(V)
    frames, bins = VT.shape
    W = np.asarray(W, dtype=np.float32)
    if W.ndim != 2 or W.shape[0] != bins:
        raise ParameterError(f"W must have shape ({bins}, K), got {W.shape}")
    k = W.shape[1]
    WT = _checked_factor(W, (bins, k), "W").T.copy()
    scale = WT.sum(axis=1)
    scale[scale <= 0] = 1.0
    _normalize(WT, None)  # unit-sum templates; H is scaled back on return
    if H_init is None:
        # Least-squares-free start: each frame's energy spread evenly over components.
        level = VT.sum(axis=1, keepdims=True) / (WT.sum() + _EPS)
        HT = np.repeat(level, k, axis=1).astype(np.float32) + _EPS
    else:
        HT = _checked_factor(H_init, (k, frames), "H_init").T * scale
    flush_below(HT, _FLUSH_H)
    gamma = _gamma(beta)
    with _workers(threads) as pool:
        for _ in range(n_iter):
            _update_H(VT, WT, HT, beta, gamma, want_divergence=False, pool=pool)
    return np.ascontiguousarray((HT / scale).T)
