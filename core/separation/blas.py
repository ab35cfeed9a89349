"""One BLAS thread for the separation, from its first product on, for the process's life.

The separation brings its own parallelism (the NMF's frame ranges, chunks on two
threads) and asks BLAS for one thread per call: a product's result then does not
depend on how many threads BLAS had. That matters: OpenBLAS 0.3.31 (numpy 2.4)
rounds a float32 matrix product differently on one thread and on two (a product
of 700 x 200 by 200 x 256 differs in the last bit), so a chunk separated while
another thread's limit was lifted differed from the same chunk separated alone,
and a cache entry from the worker from ``separate``'s.

``threadpoolctl``'s limit is the process's, not a thread's, and taking it and
giving it back per call (as the NMF did) lifted it under another thread still
computing. Worse, this OpenBLAS ignored a limit set from a thread other than the
main one once the main thread had set one (``prep``'s Dask tasks run in such
threads). So the limit is taken once, by the first separation in the process, and
kept: every process that separates (the worker, ``separate``, ``prep``'s workers)
separates and nothing else; the daemon, which never separates, holds its own BLAS
to one thread already. ``tests/core/separation/test_blas.py`` checks products
computed in pool threads against the one-thread product.

A process that separates also writes OpenBLAS's product buffers once, first
(:func:`_write_product_buffers`). A product takes one of OpenBLAS's buffers for
its packed operands (32 MB, mapped fresh on first use; products side by side take
one each), and a buffer whose first products were small (the NMF's: 512 x 128 by
128 x 256) ran every product 2.4-2.9x slower for the process's life. Measured here
(OpenBLAS 0.3.31, its Haswell kernels on an AMD EPYC), in fresh processes: the
same kernel on the same operands at the same addresses took 0.35 s for a chunk's
NMF, and 0.14 s once one product of 384 x 384 by 384 x 384 or more (float64 too)
had run in that buffer; 256 x 256 did not do it, nor did the thread or the operands'
alignment matter. The likeliest cause: the kernel reads ahead into pages of the
buffer that the small products never write, all mapped to the kernel's one zero
page, whose aliases defeat this CPU's first-level cache, which predicts ways by
virtual address. A worker's first chunk took 0.59 s instead of 0.39, and its first
two chunks side by side 0.53 s instead of 0.46 (``bench/separate.py --only fresh``).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = ["keep_one_blas_thread", "with_one_blas_thread"]

_lock = threading.Lock()
_limit: Any = None  # taken once, never given back
_written = False  # the product buffers (_write_product_buffers), once
#: The side of the square float32 product that writes a buffer (134 MFLOP, 8 ms):
#: 384 was the smallest measured to do it, 256 did not.
_WRITE_SIDE = 512

P = ParamSpec("P")
R = TypeVar("R")


def keep_one_blas_thread(*, separates: bool = True) -> None:
    """BLAS runs one thread per call in this process from now on (once; kept). A
    process that ``separates`` has its product buffers written first, once
    (:func:`_write_product_buffers`); the daemon, whose products are few and small
    (the beat analysis), passes False."""
    global _limit, _written
    with _lock:
        if _limit is None:
            _limit = threadpool_limits(1, user_api="blas")
        if separates and not _written:
            _written = True
            _write_product_buffers(_side_by_side())


def _side_by_side() -> int:
    """How many products a separating process runs at once at most: a chunk on each
    core and the last chunk's second NMF thread (core/separation/chunks.py), up to
    the NMF's four ranges beside one another (core/separation/nmf.py)."""
    return min(8, (os.cpu_count() or 1) + 1)


def _write_product_buffers(count: int, product: Callable[[], object] | None = None) -> None:
    """One product large enough to write an OpenBLAS buffer (the module's docstring
    says why), in each of ``count`` threads at once, so that each call holds a
    buffer of its own: as many buffers as products the separation runs side by side
    (two chunks, the last one's NMF on two threads beside the other). A thread that
    starts after another's product ended reuses its buffer: one buffer fewer
    written, the products the same (only how fast they run depends on it); a thread
    that cannot be started leaves its buffer as it is, and the separation goes on.
    ``product``: what each thread runs (a test's), default the square product."""
    if product is None:
        a = np.ones((_WRITE_SIDE, _WRITE_SIDE), dtype=np.float32)

        def product() -> object:
            return a @ a

    start = threading.Barrier(count)

    def write() -> None:
        try:
            start.wait(timeout=5.0)
        except threading.BrokenBarrierError:
            pass  # a thread not started within 5 s: the others go on
        product()

    started: list[threading.Thread] = []
    for _ in range(count):
        thread = threading.Thread(target=write, name="stemdeck-blas-write", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no room for a thread: the products run slower, no worse
            start.abort()  # the started ones go on at once
            break
        started.append(thread)
    for thread in started:
        thread.join()


def with_one_blas_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run after :func:`keep_one_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        keep_one_blas_thread()
        return fn(*args, **kwargs)

    return wrapper
