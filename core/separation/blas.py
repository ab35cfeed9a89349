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
its packed operands (32 MB, mapped on first use; products side by side take one
each), and until a product of 384 x 384 by 384 x 384 or more (float64 too) has
run in a buffer, the NMF's small products (512 x 128 by 128 x 256) run in it
2.4-2.9x slower: measured here (OpenBLAS 0.3.31, its Haswell kernels on an AMD
EPYC of the first Zen generation) in fresh processes, the same kernel on the same
operands at the same addresses, 0.35 s for a chunk's NMF against 0.14 s, whatever
the thread or the operands' alignment; a 256 x 256 product first halved it. The
likeliest cause: the kernel prefetches into pages of the buffer that the small
products never touch, which are not mapped yet; each such prefetch costs a page
walk that finds nothing, again on every pass (a read of every page of the buffer,
mapping them all to the zero page, cured it as well: a review's measurement, by
``/proc/self/pagemap``). A fresh process took 0.75 s from its first separation call
to its first chunk and 0.53 s for the next two side by side; with three buffers
written first (10-40 ms of it), 0.57 and 0.47 s (``bench/separate.py --only fresh``).
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
#: 384 was the smallest measured to do it, 256 did half.
_WRITE_SIDE = 512
#: How long a thread writing a buffer waits for the others to start (then goes on).
_START_WAIT_S = 5.0

P = ParamSpec("P")
R = TypeVar("R")


def keep_one_blas_thread(*, products: int | None = None) -> None:
    """BLAS runs one thread per call in this process from now on (once; kept).

    The first call also writes as many of BLAS's product buffers as the process
    runs products at once (:func:`_write_product_buffers`): ``products``, default
    the NMF's threads (``min(4, CPUs)``: core/separation/nmf.py); the separation
    worker says its own (daemon/separation_run.py), the daemon, whose products are
    few and small (the beat analysis), 0."""
    global _limit, _written
    with _lock:
        if _limit is None:
            _limit = threadpool_limits(1, user_api="blas")
        if not _written:
            _written = True
            count = min(4, os.cpu_count() or 1) if products is None else products
            if count > 0:
                _write_product_buffers(count)


def _write_product_buffers(count: int, product: Callable[[], object] | None = None) -> None:
    """One product large enough to write an OpenBLAS buffer (the module's docstring
    says why), in each of ``count`` threads at once: each call holds a buffer of its
    own while it runs, so ``count`` buffers are written. The threads start their
    products together (a barrier): a thread that started after another's product
    ended would take that one's buffer again. Nothing here may fail a separation:
    a thread that cannot be started, or a product without memory, leaves its buffer
    as it is (the products run slower, the same bits). ``product``: what each
    thread runs (a test's), default the square product."""
    if product is None:
        a = np.ones((_WRITE_SIDE, _WRITE_SIDE), dtype=np.float32)

        def product() -> object:
            return a @ a

    start = threading.Barrier(count)

    def write() -> None:
        try:
            start.wait(timeout=_START_WAIT_S)
        except threading.BrokenBarrierError:
            pass  # a thread not started in time, or not at all: the others go on
        try:
            product()
        except MemoryError:
            pass

    started: list[threading.Thread] = []
    for _ in range(count):
        thread = threading.Thread(target=write, name="stemdeck-blas-write", daemon=True)
        try:
            thread.start()
        except (RuntimeError, MemoryError):  # no room for a thread
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
