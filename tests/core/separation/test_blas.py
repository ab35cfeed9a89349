"""One BLAS thread for the separation, kept (core/separation/blas.py)."""

from __future__ import annotations

import threading
import time

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


def test_the_products_start_together_once_every_thread_has_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each product holds a buffer of its own only while the others run: no product
    starts before the last thread has (a barrier), even when starting the later
    threads is slow, so none takes a buffer another product already gave back."""
    count = 3
    real_start = threading.Thread.start
    started = 0
    seen: list[int] = []

    def slow_start(self: threading.Thread) -> None:
        nonlocal started
        if started:
            time.sleep(0.05)  # the first thread's product would run meanwhile
        started += 1
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", slow_start)
    blas._write_product_buffers(count, lambda: seen.append(started))
    assert seen == [count] * count


def test_a_thread_that_cannot_start_leaves_the_others_going_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writing the buffers only makes products faster: with no room for a thread
    (RuntimeError from start, as the thread limit gives it), the threads started run
    their products at once (the barrier broken, not waited out) and the call
    returns, no error."""
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
    monkeypatch.setattr(blas, "_START_WAIT_S", 3600.0)  # waited out: the test hangs
    call = threading.Thread(
        target=blas._write_product_buffers,
        args=(3, lambda: ran.append(threading.current_thread().name)),
    )
    real_start(call)
    call.join(30)
    assert not call.is_alive()
    assert (starts, ran) == (2, ["stemdeck-blas-write"])


def test_a_separating_process_writes_them_once_and_the_daemon_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first keep_one_blas_thread() writes the buffers, as many as products run
    at once (default: the NMF's threads, at most four), never again; the daemon's
    limit (daemon/realtime.py) writes none, and the worker's as many as its chunks
    and the last chunk's second NMF thread (daemon/separation_run.py)."""
    from stemdeck.daemon import separation_run
    from stemdeck.daemon.realtime import one_blas_thread

    calls: list[int] = []
    monkeypatch.setattr(blas, "_write_product_buffers", lambda count: calls.append(count))
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(blas, "_written", False)
    one_blas_thread()
    keep_one_blas_thread()
    assert calls == []  # the daemon's call was the first: none, and never after
    monkeypatch.setattr(blas, "_written", False)
    keep_one_blas_thread()
    keep_one_blas_thread()
    assert calls == [4]
    monkeypatch.setattr(blas, "_written", False)
    keep_one_blas_thread(products=separation_run.WORKERS + 1)
    assert calls == [4, 3]
    assert blas._written is True
