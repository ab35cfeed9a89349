"""The separation's fork server: where every separation worker and beat analysis
(``beats_worker.py``) is forked from.

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
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from .realtime import children_on_every_cpu, keep_freed_memory, name_os_thread

__all__ = [
    "PRELOAD",
    "WORKER_NICE",
    "ProcessContext",
    "follow_parent",
    "start_child",
    "warm_up",
    "worker_context",
]

log = logging.getLogger(__name__)

#: What the fork server imports once, so that each worker it forks has them: the
#: main module (the ``stemdeck`` command, light: ``daemon/cli/__init__.py`` imports
#: a command's modules only when it runs), the worker's body with the separation
#: and numpy, no scipy (about 0.23 s, paid again by every spawned worker:
#: ``core/separation/fft.py``), and the beat analysis's (soxr: 43 ms a process).
PRELOAD = ["__main__", f"{__package__}.separation_run", f"{__package__}.beats_worker"]


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
        return
    # The server's imports, and every process it forks, at the workers' niceness: at
    # the daemon's, its imports took a core from the daemon's threads in the first
    # second, one of them holding the GIL the audio callback waited for.
    pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    if pid is not None:
        _nice(pid, WORKER_NICE)


#: The niceness of the fork server and of what it forks: the audio thread and the
#: daemon's own work come first.
WORKER_NICE = 10


def _nice(pid: int, nice: int) -> None:
    """Process ``pid`` at niceness ``nice`` (or as it is, where that is refused)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (OSError, AttributeError):
        pass


def start_child(context: ProcessContext, process: BaseProcess, nice: int) -> None:
    """Start ``process`` (of ``context``), then give it niceness ``nice``: forked from
    the fork server (started now if it is not running), or with the process's CPUs
    (not the audio's pin: realtime.py)."""
    if getattr(context, "_name", None) == "forkserver":
        # The child takes the fork server's CPUs, not this thread's: only the
        # server's own start (if it is not running) must leave the audio's pin.
        warm_up(context)
        process.start()
    else:
        with children_on_every_cpu():
            process.start()
    if process.pid is not None:
        _nice(process.pid, nice)  # spawned: niced from its first instruction, imports included


def follow_parent(expected: int, name: str) -> None:
    """In a child of :func:`start_child`, called ``name`` in ``ps`` and ``top`` from now
    on, its allocator keeping what it frees (:func:`~.realtime.keep_freed_memory`):
    end at once if its parent is gone, and from now on within 0.1 s of its parent's
    end (even by SIGKILL). ``expected`` is the daemon's pid: the parent is the daemon
    (spawned) or the fork server, whose parent is the daemon and which ends with it."""
    name_os_thread(name)
    keep_freed_memory()
    parent = os.getppid()
    if parent == 1 or (parent != expected and _parent_of(parent) not in (expected, None)):
        os._exit(0)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.1)


def _parent_of(pid: int) -> int | None:
    """``pid``'s parent (``/proc``), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
