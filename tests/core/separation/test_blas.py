"""One BLAS thread while any thread separates (core/separation/blas.py)."""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from stemdeck.core.separation.blas import one_blas_thread, with_one_blas_thread


def _blas_threads() -> list[int]:
    """BLAS's thread counts, as this (the main) thread reads them."""
    np.ones((2, 2), np.float32) @ np.ones((2, 2), np.float32)  # numpy's BLAS loaded
    return sorted({int(x["num_threads"]) for x in threadpool_info() if x["user_api"] == "blas"})


def _in_a_thread(enter: threading.Event, leave: threading.Event) -> threading.Thread:
    """A thread that holds the limit from ``enter`` until ``leave``."""

    def hold() -> None:
        with one_blas_thread():
            enter.set()
            assert leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def test_a_hold_is_not_lifted_by_another_threads_end_and_the_last_gives_it_back() -> None:
    with threadpool_limits(2, user_api="blas"):
        assert _blas_threads() == [2]
        with one_blas_thread():
            entered, left = threading.Event(), threading.Event()
            other = _in_a_thread(entered, left)
            assert entered.wait(10)
            left.set()
            other.join(10)
            assert _blas_threads() == [1]  # the other's end lifted nothing
        assert _blas_threads() == [2]  # the last holder gave it back


def test_products_in_threads_under_the_hold_are_the_one_thread_products() -> None:
    """What the chunks rely on: a product computed in a pool thread while the thread
    that started the pool holds the limit is the product on one BLAS thread."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((700, 200)).astype(np.float32)
    b = rng.standard_normal((200, 256)).astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        alone = a @ b
    out: dict[str, np.ndarray] = {}
    with threadpool_limits(2, user_api="blas"), one_blas_thread():
        threads = [threading.Thread(target=lambda k=k: out.__setitem__(k, a @ b)) for k in "xy"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    np.testing.assert_array_equal(out["x"], alone)
    np.testing.assert_array_equal(out["y"], alone)


def test_holds_nest_and_a_wrapped_call_holds_it() -> None:
    with threadpool_limits(2, user_api="blas"):

        @with_one_blas_thread
        def inside() -> list[int]:
            with one_blas_thread():
                pass
            return _blas_threads()  # the inner hold's end lifted nothing

        assert inside() == [1]
        assert _blas_threads() == [2]
