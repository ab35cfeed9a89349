"""What every ``stemdeck prep`` LocalCluster worker does as it starts: a Dask worker plugin.

A module of its own because it imports distributed, which the client imports
only when a track needs a worker (``cluster.py`` imports this module then).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import sys
from typing import Any

from distributed import WorkerPlugin
from threadpoolctl import threadpool_limits

__all__ = ["WorkerSetup"]


class WorkerSetup(WorkerPlugin):
    """Run by every worker as it starts (and by the nanny's replacement of a dead
    one), before it takes a task.

    The worker imports the separation here, as it starts, rather than in its
    first task, and sets one thread for its BLAS pools for its whole life (its
    environment already asks for one BLAS thread; this also holds should the
    worker be started another way, such as forked from a process whose pools are
    sized already). Each task runs its NMF on one thread (``nmf_threads=1``).
    """

    name = "stemdeck-prep-setup"

    def setup(self, worker: Any) -> None:
        # The import is this method's work: loading the separation as the worker starts.
        from stemdeck.core.separation import nmf, separate  # noqa: F401

        threadpool_limits(limits=1)  # not a context: for the worker's life

    def teardown(self, worker: Any) -> None:
        """The worker is closing: its process then ends without the interpreter's
        teardown, as multiprocessing ends the children it forks.

        A spawned worker's process returns from its target and calls
        ``sys.exit``; the interpreter then finalizes every module it imported
        (distributed, numpy, scipy, the separation), which took 0.25 to 0.4 s of
        every run's close while the client waited. Nothing is left to do by then:
        the worker has closed its connections and released its work folder, the
        threads have been joined and multiprocessing's own exit handlers have run
        (all before the interpreter's exit handlers). The logs and the standard
        streams are flushed, then the process exits with status 0, which a closing
        worker's process exits with anyway. Only in a process a nanny started (the
        worker has a nanny): a worker in someone's own process (``processes=False``,
        even in a child process) leaves its exit alone.
        """
        nanny = getattr(worker, "nanny", None)
        if nanny is not None and multiprocessing.parent_process() is not None:
            atexit.register(_exit_now)  # the last registered: the first to run


def _exit_now() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(0)
