"""One BLAS thread for the separation, kept (core/separation/blas.py)."""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from stemdeck.core.separation import blas
from stemdeck.core.separation.blas import keep_one_blas_thread, with_one_blas_thread


def _blas_threads() -> list[int]:
    np.ones((2, 2), np.float32) @ np.ones((2, 2), np.float32)  # numpy's BLAS loaded
    return sorted({int(x["num_threads"]) for x in threadpool_info() if x["user_api"] == "blas"})


def test_the_first_separation_keeps_blas_to_one_thread_and_threads_compute_alike() -> None:
    """What the chunks rely on: once a separation has run in a process, a product in
    any thread is the one-thread product, whichever thread computes it and whatever
    ran before (the limit is taken once and never given back)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((700, 200)).astype(np.float32)
    b = rng.standard_normal((200, 256)).astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        alone = a @ b

    @with_one_blas_thread
    def product() -> np.ndarray:
        return a @ b

    out: dict[str, np.ndarray] = {}
    keep_one_blas_thread()
    threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, product())) for k in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert blas._limit is not None
    assert _blas_threads() == [1]  # kept
    np.testing.assert_array_equal(out["x"], alone)
    np.testing.assert_array_equal(out["y"], alone)
    np.testing.assert_array_equal(product(), alone)
