"""One BLAS thread for the separation, kept (core/separation/blas.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
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


def test_the_product_buffers_are_written_by_products_running_at_once() -> None:
    """Each thread's product holds a buffer of its own only while the others' run:
    all ``count`` products are under way together (a barrier), none after another."""
    count = 3
    inside = 0
    most = 0
    lock = threading.Lock()
    all_in = threading.Event()

    def product() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
            if inside == count:
                all_in.set()
        all_in.wait(10)  # a product ends only once every one has started
        with lock:
            inside -= 1

    blas._write_product_buffers(count, product)
    assert (most, inside) == (count, 0)


def test_a_separating_process_writes_them_once_and_the_daemon_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """keep_one_blas_thread() writes the buffers the first time only, one product per
    product the separation may run at once; the daemon's limit (separates=False,
    daemon/realtime.py) writes none."""
    from stemdeck.daemon.realtime import one_blas_thread

    calls: list[int] = []
    monkeypatch.setattr(blas, "_written", False)
    monkeypatch.setattr(blas, "_write_product_buffers", lambda count: calls.append(count))
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 2)
    one_blas_thread()
    assert calls == []
    keep_one_blas_thread()
    keep_one_blas_thread()
    assert calls == [3]  # two chunks and the last one's second NMF thread
    assert blas._written is True


def test_a_thread_that_cannot_start_leaves_the_separation_going(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writing the buffers only makes products faster: with no room for a thread
    (RuntimeError from start, as the thread limit gives it), the threads started run
    their products at once and the call returns, no error, no wait on the barrier."""
    real_start = threading.Thread.start
    starts = 0

    def start(self: threading.Thread) -> None:
        nonlocal starts
        starts += 1
        if starts > 1:
            raise RuntimeError("can't start new thread")
        real_start(self)

    ran: list[str] = []
    monkeypatch.setattr(threading.Thread, "start", start)
    blas._write_product_buffers(3, lambda: ran.append(threading.current_thread().name))
    assert (starts, ran) == (2, ["stemdeck-blas-write"])
