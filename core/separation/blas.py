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
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["keep_one_blas_thread", "with_one_blas_thread"]

_lock = threading.Lock()
_limit: Any = None  # taken once, never given back

P = ParamSpec("P")
R = TypeVar("R")


def keep_one_blas_thread() -> None:
    """BLAS runs one thread per call in this process from now on (once; kept)."""
    global _limit
    with _lock:
        if _limit is None:
            _limit = threadpool_limits(1, user_api="blas")


def with_one_blas_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run after :func:`keep_one_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        keep_one_blas_thread()
        return fn(*args, **kwargs)

    return wrapper
