"""The separation's fork server: where every separation worker is forked from.

A worker is forked from a server process that imported the separation once
(multiprocessing's forkserver), so it starts separating in tens of milliseconds,
not the 0.9 s a spawned one spends importing, and never from the daemon, whose
threads (the audio, OSC, JACK's) a fork would copy mid-step.

``stemdeck serve`` starts the server (:func:`warm_up`) once its own modules are
imported (``daemon/cli/__init__.py``), so the server's imports run on the other
core while the daemon starts and decodes the track, and the first worker does not
wait for them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.forkserver
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from .realtime import children_on_every_cpu

__all__ = ["PRELOAD", "ProcessContext", "warm_up", "worker_context"]

log = logging.getLogger(__name__)

#: What the fork server imports once, so that each worker it forks has them: the
#: main module (the ``stemdeck`` command, light: ``daemon/cli/__init__.py`` imports
#: a command's modules only when it runs), and the worker's body with the
#: separation and numpy, no scipy (about 0.23 s, paid again by every spawned worker:
#: ``core/separation/fft.py``).
PRELOAD = ["__main__", f"{__package__}.separation_run"]


class ProcessContext(Protocol):
    """What a worker's start uses of a multiprocessing context (``get_context``)."""

    @property
    def Process(self) -> Callable[..., BaseProcess]: ...

    def Pipe(self, duplex: bool = True) -> tuple[Connection, Connection]: ...

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any: ...


def worker_context() -> ProcessContext:
    """How the daemon starts its workers: forked from the fork server (started by
    :func:`warm_up`, or by the first worker's start). Where there is no forkserver,
    spawn."""
    try:
        context = mp.get_context("forkserver")
    except ValueError:
        return mp.get_context("spawn")
    context.set_forkserver_preload(PRELOAD)
    return context


def warm_up(context: ProcessContext) -> None:
    """Start ``context``'s fork server now, if it has one, with the process's CPUs
    (not the audio's pin): its imports run beside the daemon's start and the track's
    decode, so the first worker does not wait for them. Nothing where it is not a
    forkserver context."""
    if getattr(context, "_name", None) != "forkserver":
        return
    try:
        with children_on_every_cpu():
            multiprocessing.forkserver.ensure_running()
    except OSError as exc:  # no room for a process: the worker's start says it again
        log.debug("separation fork server not started: %s", exc)
