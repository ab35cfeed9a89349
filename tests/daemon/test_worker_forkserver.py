"""The separation worker forked from a fork server that imported the separation once
(daemon/separation_worker.py): never a fork of the daemon, gone with its server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import poll

from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.daemon.forkserver import PRELOAD, warm_up, worker_context
from stemdeck.daemon.separation_worker import SeparationWorker

pytestmark = pytest.mark.e2e  # processes

SR = 8000


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_worker_is_forked_from_the_warm_fork_server() -> None:
    context = worker_context()
    assert getattr(context, "_name", None) == "forkserver"
    assert PRELOAD == [
        "__main__",
        "stemdeck.daemon.separation_run",
        "stemdeck.daemon.beats_worker",
    ]
    warm_up(context)
    y = (np.random.default_rng(0).standard_normal((2, 4 * SR)) * 0.1).astype(np.float32)
    spec = SeparationSpec("stems", SeparationParams())
    worker = SeparationWorker.start(context, y, SR, spec=spec, key=None, cache_root=None)
    try:
        pid = worker.process.pid
        assert pid is not None
        server = _ppid(pid)
        assert server != os.getpid() and _ppid(server) == os.getpid()  # not our own fork
        assert b"multiprocessing.forkserver" in Path(f"/proc/{server}/cmdline").read_bytes()
        assert os.getpriority(os.PRIO_PROCESS, pid) == 10  # niced as a spawned one was
        # The server too: its imports took a core from the daemon's threads at its start.
        assert os.getpriority(os.PRIO_PROCESS, server) == 10
        first = worker.recv()
        assert first[0] == "progress"
        # Its name in ps and top, given before its first message.
        assert Path(f"/proc/{pid}/comm").read_text() == "stemdeck-worker\n"
        # A second worker comes from the same server.
        other = SeparationWorker.start(context, y, SR, spec=spec, key=None, cache_root=None)
        try:
            assert other.process.pid is not None and _ppid(other.process.pid) == server
        finally:
            other.end()
        # Its server gone (as it goes with the daemon), the worker ends within 0.1 s.
        os.kill(server, signal.SIGKILL)
        poll(lambda: _alive(pid), lambda alive: not alive, "the worker ended with its server")
    finally:
        worker.end()


def test_a_child_is_named_and_keeps_the_memory_it_frees() -> None:
    """``follow_parent`` (each child's first step: daemon/forkserver.py) names the
    process and has its allocator keep what it frees: a second 24 MiB allocation
    takes the pages of the first, where glibc's default gave them back and faulted
    them in again (6,144 page faults: on a virtual machine, the host's too)."""
    script = """
import ctypes, os, resource
from stemdeck.daemon.forkserver import follow_parent
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
follow_parent(os.getppid(), "stemdeck-probe")
def faults() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(24 << 20)
    ctypes.memset(block, 1, 24 << 20)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
first, second = faults(), faults()
print(open("/proc/self/comm").read().strip(), round(first / 1024), second < 64)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["stemdeck-probe", "6", "True"]  # 6,144 pages, then none
