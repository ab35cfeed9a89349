"""One BLAS thread for the separation, held process-wide while any thread separates.

The separation brings its own parallelism (the NMF's frame ranges, chunks on two
threads) and asks BLAS for one thread per call: a product's result then does not
depend on how many threads BLAS had. That matters: OpenBLAS 0.3.31 (numpy 2.4)
rounds a float32 matrix product differently on one thread and on two (a product
of 700 x 200 by 200 x 256 differs in the last bit), so a chunk separated while
another thread's limit was lifted differed from the same chunk separated alone,
and a cache entry from the worker from ``separate``'s.

``threadpoolctl``'s limit is the process's, not a thread's: two threads each
taking it and giving it back (as the NMF did per call) lift it while the other
still computes. :func:`one_blas_thread` counts its holders: the first takes the
limit, the last gives it back. OpenBLAS 0.3.31 may ignore a limit set from a
thread other than the main one (seen here once the main thread had set one), so
the separation's entry points hold it from the thread that starts their threads
(``separate``, ``ChunkedSeparator.stream``, the worker's ``stream_into_cache``),
and the worker process holds it for its whole life (``separation_run.run``).
``tests/core/separation/test_blas.py`` checks products computed in pool threads
under a hold against the one-thread product.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["one_blas_thread", "with_one_blas_thread"]

_lock = threading.Lock()
_holders = 0
_limit: Any = None

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS runs one thread per call while any thread is inside (reentrant)."""
    global _holders, _limit
    with _lock:
        if _holders == 0:
            _limit = threadpool_limits(1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                limit, _limit = _limit, None
                limit.restore_original_limits()


def with_one_blas_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run inside :func:`one_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper
