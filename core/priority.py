"""A thread's own niceness (Linux: ``setpriority`` takes a thread's id)."""

from __future__ import annotations

import os
import threading

__all__ = ["nice_this_thread"]


def nice_this_thread(nice: int) -> None:
    """The calling thread alone at niceness ``nice``, or nicer if it is already: a
    background job (the rest of a decode) that should not take the CPU from a
    separation or the audio. Never a thread that holds the GIL for long: the scheduler
    stops it there, and the audio callback waits (docs/architecture.md, "The GIL and
    the scheduler"). Elsewhere than Linux (a process's niceness), or
    refused, as it was."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except (OSError, AttributeError):
        pass
