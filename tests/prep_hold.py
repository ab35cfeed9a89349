"""A Dask worker preload for tests/daemon/prep/test_prep.py: every prep task waits before it starts.

A `stemdeck prep` started with :func:`hold_env` in its environment gives each of
its LocalCluster's workers this file as a preload (Dask's own
``distributed.worker.preload``, read from ``DASK_DISTRIBUTED__WORKER__PRELOAD``).
In the worker, the task's call of ``prepare_track`` then leaves a
``started-<pid>`` file in the hold folder and waits for a ``release`` file there,
so a test can kill a worker or interrupt the client while a track is certainly
being prepared. Nothing of this is in the production code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

FOLDER_ENV = "STEMDECK_TEST_PREP_HOLD"


def hold_env(folder: Path) -> dict[str, str]:
    """The environment that makes a `stemdeck prep`'s workers hold in ``folder``."""
    return {
        "DASK_DISTRIBUTED__WORKER__PRELOAD": repr([str(Path(__file__).resolve())]),
        FOLDER_ENV: str(folder),
    }


def dask_setup(worker: Any) -> None:
    """Run by each worker as it starts: wrap the task's ``prepare_track``."""
    from stemdeck.daemon.prep import cluster

    folder = Path(os.environ[FOLDER_ENV])
    prepare = cluster.prepare_track

    def held(data: bytes, **kwargs: Any) -> Any:
        (folder / f"started-{os.getpid()}").touch()
        deadline = time.monotonic() + 120.0
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return prepare(data, **kwargs)

    cluster.prepare_track = held
