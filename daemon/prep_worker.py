"""What every ``stemdeck prep`` LocalCluster worker does as it starts: a Dask worker plugin.

Apart from ``daemon/prep.py`` because it imports distributed, which the client
imports only when a track needs a worker.
"""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

__all__ = ["WorkerSetup"]


class WorkerSetup(WorkerPlugin):
    """Run by every worker as it starts (and by the nanny's replacement of a dead
    one), before it takes a task.

    The worker imports the separation here, as it starts, rather than in its
    first task, and sets one thread for its BLAS pools and the NMF for its whole
    life (its environment already asks for one BLAS thread; this also holds
    should the worker be started another way, such as forked from a process
    whose pools are sized already).
    """

    name = "stemdeck-prep-setup"

    def setup(self, worker: Any) -> None:
        from threadpoolctl import threadpool_limits

        from stemdeck.core.separation import nmf, separate  # noqa: F401

        threadpool_limits(limits=1)  # not a context: for the worker's life
        nmf.set_threads(1)
