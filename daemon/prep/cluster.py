"""The Dask side of a library prep: the task the workers run, and the cluster.

By default a ``LocalCluster`` on 127.0.0.1: N worker processes, one thread
each, single-threaded BLAS (set before each worker starts, ``worker.py`` sets
the rest as it starts); ``--scheduler`` uses an existing cluster whose workers
have stemdeck installed. ``distributed`` is imported only when the first track
needs a worker: a rerun with nothing left to do starts nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from typing import Any

from threadpoolctl import threadpool_limits

from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.separation.prep import TrackResult, prepare_track

__all__ = ["SINGLE_THREAD_ENV", "PrepCluster", "prep_task"]

log = logging.getLogger(__name__)

#: Environment of every LocalCluster worker, set before the process starts (BLAS
#: libraries read it once, when loaded): one core per worker, no oversubscription.
SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def prep_task(data: bytes, **kwargs: Any) -> tuple[str, TrackResult]:
    """:func:`~stemdeck.core.separation.prep.prepare_track` on a worker, one thread,
    single-threaded BLAS; returns the worker's address with the result."""
    with threadpool_limits(limits=1):
        result = prepare_track(data, nmf_threads=1, **kwargs)
    try:
        # Not at the top: every prep run imports this module, distributed only once a
        # worker is needed; on a worker it is imported already.
        from distributed import get_worker

        worker = str(get_worker().address)
    except ValueError:  # not inside a Dask worker (the in-process loop of bench/prep.py)
        worker = f"pid {os.getpid()}"
    return worker, result


class PrepCluster:
    """The client and its cluster, started when the first track needs a worker.

    Parameters
    ----------
    scheduler : str or None
        Address of an existing cluster (``--scheduler``); None starts a LocalCluster.
    workers : int or None
        Worker processes of the LocalCluster (default: one per core).
    dashboard : bool
        Serve Dask's dashboard on 127.0.0.1:8787 (needs bokeh).
    on_client : callable, optional
        ``on_client(client)``, once the cluster is up (tests check its addresses).
    """

    def __init__(
        self,
        *,
        scheduler: str | None,
        workers: int | None,
        dashboard: bool,
        on_client: Callable[[Any], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.n_workers = workers
        self.dashboard = dashboard
        self.on_client = on_client
        self.client: Any = None
        self.cluster: Any = None  # the LocalCluster this owns; None with --scheduler
        self.workers = 0  # workers the scheduler knew when connected

    def connect(self) -> Any:
        """The Dask client; the first call starts (or reaches) the cluster."""
        if self.client is None:
            self.client, self.cluster = self._start()
            self.workers = len(self.client.scheduler_info()["workers"])
            if self.on_client is not None:
                self.on_client(self.client)
        return self.client

    def window(self) -> int:
        """Tracks in flight: enough to keep every worker busy, few enough that the
        client holds only a handful of files' bytes."""
        try:
            threads = sum(
                w["nthreads"] for w in self.connect().scheduler_info()["workers"].values()
            )
        except (KeyError, TypeError):
            threads = 1
        return max(2, 2 * threads)

    def close(self) -> None:
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def _start(self) -> tuple[Any, Any]:
        """A Dask client, and the LocalCluster it owns (None with ``--scheduler``)."""
        # distributed takes about a second to import: only a run that needs a worker pays.
        import dask
        from distributed import Client, LocalCluster

        from .worker import WorkerSetup  # imports distributed

        if self.scheduler:
            try:
                return Client(self.scheduler, timeout="20s", set_as_default=False), None
            except (OSError, TimeoutError) as exc:
                raise ParameterError(
                    f"cannot reach the scheduler {self.scheduler!r}: {exc}"
                ) from None
        if self.dashboard:
            if importlib.util.find_spec("bokeh") is None:
                raise ParameterError("--dashboard needs bokeh: pip install 'bokeh>=3.1'")
        n = self.n_workers or os.cpu_count() or 1
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
        # Dask's default MALLOC_TRIM_THRESHOLD_ makes glibc hand memory back at once, so
        # every large numpy temporary is a fresh mmap paid in page faults: a track took
        # 10-20 % longer (bench/prep.py). A worker holds one track at a time; keep glibc's
        # own threshold.
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        environ.update(SINGLE_THREAD_ENV)
        cluster = None
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), _no_ctrl_c():
                cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    # Without --dashboard the scheduler's HTTP server (health checks only)
                    # still listens: on loopback, on a free port.
                    dashboard_address="127.0.0.1:8787" if self.dashboard else "127.0.0.1:0",
                    scheduler_kwargs={"dashboard": self.dashboard},
                    silence_logs=logging.ERROR,
                    plugins=(WorkerSetup(),),
                )
            client = Client(cluster, set_as_default=False)
        except BaseException as exc:  # a Ctrl-C held back while the cluster started, too
            if cluster is not None:
                cluster.close()
            if isinstance(exc, (OSError, RuntimeError)):  # no free port, a worker that cannot start
                raise StemdeckError(f"cannot start the local Dask cluster: {exc}") from None
            raise
        if self.dashboard:
            log.info("dashboard: %s", client.dashboard_link)
        return client, cluster


@contextmanager
def _no_ctrl_c() -> Iterator[None]:
    """Hold SIGINT back in this thread while the LocalCluster starts.

    A terminal's Ctrl-C goes to the whole process group: this process and every
    worker. A worker that takes it raises KeyboardInterrupt wherever it is (in its
    imports, starting, closing) and prints a traceback; Ctrl-C is this process's
    to handle, and it closes the cluster. The threads started here (Dask's event
    loop, from which the nannies start their workers, now and when one dies) and
    the worker processes inherit the blocked SIGINT, which fork and exec keep, so
    they never take it. A Ctrl-C while the cluster starts is raised here once it is
    up.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    # multiprocessing starts its resource tracker with SIGINT blocked, then unblocks
    # SIGINT in the thread that started it: let that be this one, now, not Dask's
    # event loop as its first nanny starts (its workers would take Ctrl-C again).
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
