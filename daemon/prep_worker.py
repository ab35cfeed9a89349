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

    A worker forked from the client (``daemon/prep.py``, ``START_METHOD``)
    inherits the client's BLAS pools, sized before the single-thread environment
    was set: they are limited here, once for the worker's life. A spawned worker
    imports the separation here, while the client still decodes and hashes,
    rather than in its first task.
    """

    name = "stemdeck-prep-setup"

    def setup(self, worker: Any) -> None:
        from threadpoolctl import threadpool_limits

        from stemdeck.core.separation import nmf, separate  # noqa: F401

        threadpool_limits(limits=1)  # not a context: for the worker's life
        nmf.set_threads(1)
