"""Real-time scheduling and locked memory for the audio thread, where allowed.

On a busy machine a normal (SCHED_OTHER) audio thread waits behind CPU-bound
processes and misses its deadline. :func:`make_realtime` asks the kernel to
run the calling thread under SCHED_FIFO; :func:`lock_memory` locks the pages
in memory so far (the engine's buffers, written once before, the interpreter) so
the callback never waits for a page to come back. Both need privileges (CAP_SYS_NICE and
CAP_IPC_LOCK, or ``rtprio``/``memlock`` limits from the system's audio group);
without them they change nothing and say why, in words the status line shows.

The callback runs Python, so it also waits for whichever thread holds the GIL, and
CPython's garbage collector holds it for a whole pass: a full pass over the ~100,000
objects the imports leave behind takes 30-40 ms here, several audio blocks, at an
unforeseeable moment (whenever enough allocations accumulate, in any thread).
:func:`settle_heap` moves those objects out of the collector's sight once, before the
audio starts, so later passes only look at what the daemon made since;
:class:`GcWatch` times every pass, and the status line shows the longest.

Outside the collector, the callback waits for the GIL whenever numpy hands it over
(every call on more than 500 elements does) and another thread takes it meanwhile:
CPython lets that thread run for up to the *switch interval* before it must give
the GIL back. The default, 5 ms, is a whole block; :data:`SWITCH_INTERVAL_S` is
0.1 ms. With 10 browser clients and 200 fader moves a second, the callback's p99
split into CPU time and waiting showed ~0.5 ms of waiting at the 0.5 ms interval
used before, and none beyond noise at 0.1 ms (``bench/web.py`` prints the split).
A thread holding the GIL that the kernel preempts for a busy neighbour holds up the
callback as long, so every thread that takes the GIL in steady state (OSC in, the
bundle scheduler, feedback, the web server) runs at :data:`CONTROL_NICE`.

The switch interval cuts both ways: a control thread woken while the callback runs
(a WebSocket frame, an OSC datagram) waits one interval, then forces the callback to
hand the GIL over at its next bytecode, and keeps it until its own next release. The
callback's Python between its compiled calls is enough for that: with 10 browser
clients the callback's p99 was 1.5 to 2 times the p99 with none. So once the audio
thread runs under SCHED_FIFO, :func:`pin_threads` puts every thread of the process on
one CPU: there, a control thread cannot run at all while the callback does (SCHED_FIFO
is never preempted by a time-shared thread), so it cannot time out and force a switch;
it runs between blocks. When the callback wakes while a control thread holds the GIL,
the callback's timed wait lets that thread run to its next bytecode, as before. The
process keeps one core's worth of Python, which is all the GIL ever gave it; work
outside the GIL (the separation) runs in child processes, which get the process's
CPUs back (:func:`children_on_every_cpu`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import gc
import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

__all__ = [
    "CONTROL_NICE",
    "DEFAULT_PRIORITY",
    "SWITCH_INTERVAL_S",
    "GcWatch",
    "children_on_every_cpu",
    "keep_freed_memory",
    "lock_memory",
    "make_realtime",
    "name_os_thread",
    "one_blas_thread",
    "open_files_limits",
    "pin_threads",
    "raise_open_files",
    "raise_priority",
    "settle_heap",
    "unpin_threads",
]

DEFAULT_PRIORITY = 70  # above most of the system, below JACK's own threads (80+)
#: The control threads (OSC in, the bundle scheduler, feedback, the web server): still
#: time-shared, so a flood cannot take a core from the rest of the system, but weighted
#: ten times a normal process, so a fader move is not queued behind a CPU-bound job
#: beside the daemon, nor the callback behind a preempted thread holding the GIL.
CONTROL_NICE = -10
#: How long another thread may keep the GIL once the audio thread asks for it.
SWITCH_INTERVAL_S = 1e-4
_MCL_CURRENT = 1
_MCL_ONFAULT = 4  # Linux >= 4.4
log = logging.getLogger(__name__)
_PR_SET_NAME = 15


def make_realtime(priority: int = DEFAULT_PRIORITY) -> str:
    """Run the calling thread under SCHED_FIFO at ``priority``.

    Returns a short description: ``"SCHED_FIFO 70"`` on success, else
    ``"not real-time (...)"`` with the reason.
    """
    if not hasattr(os, "sched_setscheduler"):
        return "not real-time (no SCHED_FIFO on this system)"
    try:
        if os.sched_getscheduler(0) == os.SCHED_FIFO:
            return f"SCHED_FIFO {os.sched_getparam(0).sched_priority} (from the audio server)"
        high = os.sched_get_priority_max(os.SCHED_FIFO)
        prio = max(1, min(priority, high))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
    except PermissionError:
        return "not real-time (SCHED_FIFO not allowed: needs CAP_SYS_NICE or an rtprio limit)"
    except OSError as exc:
        return f"not real-time ({exc.strerror or exc})"
    return f"SCHED_FIFO {prio}"


_pin_lock = threading.Lock()
_pin_users = 0
_pin_from: set[int] | None = None  # the process's CPUs before it was pinned
_pin_cpu = -1  # the CPU they are on meanwhile


def _set_every_thread(cpus: set[int]) -> None:
    """Give every thread of this process the CPU set ``cpus``. A thread made while the
    sweep runs takes its creator's set, which may not be set yet: sweep until all are."""
    for _ in range(5):
        moved = False
        for tid in os.listdir("/proc/self/task"):
            try:
                if os.sched_getaffinity(int(tid)) != cpus:
                    os.sched_setaffinity(int(tid), cpus)
                    moved = True
            except OSError:  # the thread ended meanwhile
                pass
        if not moved:
            return


def pin_threads() -> str:
    """Put every thread of this process, and every thread it makes from now on, on one
    CPU, the one the calling thread runs on (so two daemons on one machine are not put
    on the same CPU by rule) unless that is the first, until as many
    :func:`unpin_threads` calls. Call it from the audio thread once it runs under
    SCHED_FIFO (the module's docstring says why). Returns ``"threads on CPU 1"``, or
    ``""`` where there is nothing to do (one CPU) or it failed."""
    global _pin_users, _pin_from, _pin_cpu
    with _pin_lock:
        if _pin_from is None:
            try:
                cpus = os.sched_getaffinity(0)
            except (AttributeError, OSError):
                return ""
            if len(cpus) < 2:
                return ""
            cpu = _current_cpu()
            if cpu not in cpus or cpu == min(cpus):
                # The first CPU takes most of the system's interrupts and housekeeping
                # by default: in one web bench run pinned there, the callback's p99
                # with clients was 1.22-1.43x the p99 without, round by round, against
                # 0.94-1.11x in four runs on the other CPU (docs/web.md).
                cpu = max(cpus)
            try:
                _set_every_thread({cpu})
            except OSError as exc:  # /proc unreadable
                log.warning("threads not pinned to one CPU: %s", exc)
                return ""
            _pin_from, _pin_cpu = cpus, cpu
        _pin_users += 1
        return f"threads on CPU {_pin_cpu}"


def unpin_threads() -> None:
    """Undo one :func:`pin_threads`; the last one gives every thread the process's
    CPUs back."""
    global _pin_users, _pin_from
    with _pin_lock:
        if _pin_from is None:
            return
        _pin_users -= 1
        if _pin_users == 0:
            try:
                _set_every_thread(_pin_from)
            except OSError as exc:
                log.warning("threads not unpinned: %s", exc)
            _pin_from = None


def _current_cpu() -> int:
    """The CPU the calling thread runs on now (glibc's sched_getcpu), or -1."""
    try:
        return int(_libc().sched_getcpu())
    except (OSError, AttributeError):
        return -1


@contextmanager
def children_on_every_cpu() -> Iterator[None]:
    """Around starting a child process: a child takes the CPU set of the thread that
    starts it, and sizes its thread pools (BLAS) from it as it imports them, so the
    calling thread has the process's CPUs back meanwhile, then its pin again."""
    with _pin_lock:
        cpus = _pin_from
        if cpus is not None:
            try:
                os.sched_setaffinity(0, cpus)
            except OSError:
                pass
    try:
        yield
    finally:
        with _pin_lock:
            if _pin_from is not None:
                try:
                    os.sched_setaffinity(0, {_pin_cpu})
                except OSError:
                    pass


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, as the process has it loaded: the program's own symbols
    (``dlopen(NULL)``), where ``find_library("c")`` ran ``ldconfig -p`` in a child
    process (5-13 ms of the start, before the first sound)."""
    return ctypes.CDLL(None, use_errno=True)


def raise_priority(nice: int = CONTROL_NICE) -> str:
    """Give the calling thread (only it: Linux keeps a nice value per thread) the nice
    value ``nice``. Returns ``"nice -10"``, or ``"normal priority (...)"`` with the reason."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except PermissionError:
        return "normal priority (raising it needs CAP_SYS_NICE or a nice limit)"
    except (OSError, AttributeError) as exc:
        return f"normal priority ({exc})"
    return f"nice {nice}"


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: What a worker process's allocator keeps of what it frees (:func:`keep_freed_memory`).
KEPT_FREE_BYTES = 1 << 30
#: How much more than asked for each growth of its heap takes.
HEAP_PAD_BYTES = 256 << 20
#: Blocks at least this large are mapped on their own (glibc's most: 32 MiB).
OWN_MAP_BYTES = 32 << 20


def keep_freed_memory() -> bool:
    """This process's allocator keeps what it frees for its next allocations, and
    maps only blocks of :data:`OWN_MAP_BYTES` or more on their own: a worker that
    gave each chunk's arrays back to the system took them again as new pages, each
    a page fault, with a page cleared (a huge page: 2 MiB) at each, 150,000 faults in
    a 3-minute track's first 8 s against 77,000 so; on a virtual machine a page the
    system gave back to its host is the host's fault too, which stops that CPU
    (docs/architecture.md, "The GIL and the scheduler"). glibc only: False elsewhere,
    or where a parameter was refused."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):
        return False
    done = True
    for param, value in (
        (_M_TRIM_THRESHOLD, KEPT_FREE_BYTES),
        (_M_TOP_PAD, HEAP_PAD_BYTES),
        (_M_MMAP_THRESHOLD, OWN_MAP_BYTES),
    ):
        done = bool(mallopt(ctypes.c_int(param), ctypes.c_int(value))) and done
    return done


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name (or ``name``) in the OS too (15 bytes, as
    ``top -H`` and /proc/PID/task/TID/comm show it; a process's main thread names the
    process in ``ps`` and ``top``); silently nothing where prctl is missing."""
    name = name if name is not None else threading.current_thread().name
    encoded = name.encode("ascii", "replace")[:15]
    try:
        _libc().prctl(_PR_SET_NAME, ctypes.c_char_p(encoded), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def one_blas_thread() -> None:
    """The daemon's own BLAS calls (the beat analysis's products) run in the thread
    that makes them, for the daemon's life.

    OpenBLAS's helper threads would run them at niceness 0 whatever the analysis
    thread's niceness (daemon/track_beats.py), beside the separation worker, a
    process with pools of its own. Taken from the main thread (core/separation/blas.py
    says why) once the audio runs: threadpoolctl's look at every library loaded took
    10-20 ms before the first sound. Said in a debug line, from the pools themselves.
    """
    from threadpoolctl import threadpool_info

    from stemdeck.core.separation.blas import keep_one_blas_thread

    keep_one_blas_thread(products=0)  # the separation's own limit: until the process ends
    if not log.isEnabledFor(logging.DEBUG):
        return  # another look at every library loaded (10 ms) for a line not shown
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    log.debug(
        "BLAS: %s (the daemon's own calls)",
        ", ".join(
            f"{p['internal_api']} {p['num_threads']} thread{'' if p['num_threads'] == 1 else 's'}"
            for p in pools
        ),
    )


def lock_memory() -> str:
    """Lock the process's pages in RAM: those in memory now, and the rest of what
    is mapped now once first touched (``mlockall(MCL_CURRENT | MCL_ONFAULT)``).

    Not ``MCL_CURRENT`` alone: that also fills every page mapped and never touched,
    and a started daemon maps a lot it never touches: OpenBLAS reserves a 64 MiB
    work buffer as it loads and a 32 MiB one at the first product, and each of its
    helper threads an 8 MiB stack. Filled and locked, they were ~150 of the ~200 MB
    the daemon held (``bench/memory.py``). The callback's own buffers are in memory
    before the lock (:meth:`Mixer.fault_in <stemdeck.core.mixer.engine.Mixer.fault_in>`).
    On a kernel older than 4.4 (no ``MCL_ONFAULT``): ``MCL_CURRENT`` alone.

    The code is filled, as ``MCL_CURRENT`` filled it: every library's executable
    pages and its read-only data (:func:`code_ranges`), so that a path the audio
    thread runs for the first time (a tempo change, a locate) never waits for a
    page of code from the disk.

    Pages mapped later (a new track's memory map) are not locked: locking
    gigabytes of cached audio is not the point, the prefetcher keeps those in.
    """
    try:
        libc = _libc()
        if libc.mlockall(_MCL_CURRENT | _MCL_ONFAULT) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL and libc.mlockall(_MCL_CURRENT) == 0:
                return "memory locked"
            return f"memory not locked ({os.strerror(ctypes.get_errno())})"
        for start, end in code_ranges():
            libc.mlock(ctypes.c_void_p(start), ctypes.c_size_t(end - start))  # fills them
    except (OSError, AttributeError) as exc:
        return f"memory not locked ({exc})"
    return "memory locked"


def code_ranges(maps: str = "/proc/self/maps") -> list[tuple[int, int]]:
    """The address ranges of the process's code: each file mapped executable, with
    its read-only private mappings (the library's constants and tables). Files
    mapped without any executable part (a track's memory map) are left out."""
    rows: list[tuple[int, int, str, str]] = []
    with open(maps, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            rows.append((lo, hi, parts[1], parts[5].rstrip("\n")))
    code = {path for _, _, perms, path in rows if "x" in perms}
    return [
        (lo, hi)
        for lo, hi, perms, path in rows
        if path in code and ("x" in perms or perms == "r--p")
    ]


def _resource() -> ModuleType | None:
    """The POSIX ``resource`` module, or ``None`` where there is none (Windows)."""
    try:
        return importlib.import_module("resource")
    except ImportError:
        return None


def open_files_limits() -> tuple[int, int] | None:
    """The soft and hard limits on open files (``RLIMIT_NOFILE``), unlimited as
    ``1 << 30``; ``None`` where the platform has no such limit (Windows)."""
    res = _resource()
    if res is None:
        return None
    soft, hard = res.getrlimit(res.RLIMIT_NOFILE)
    unlimited = res.RLIM_INFINITY
    return (1 << 30 if soft == unlimited else soft, 1 << 30 if hard == unlimited else hard)


def raise_open_files() -> str:
    """Raise the soft limit on open files (``RLIMIT_NOFILE``) to the hard limit, the
    most an unprivileged process may have: the usual soft limit, 1,024, is few for a
    daemon serving web connections beside its tracks, scenes, cache and recording.
    The web server still keeps descriptors free for those (``daemon/web/gate.py``).
    Returns what the limit is now, for the log: ``"open files: at most 524288 (raised
    from 1024)"``."""
    res = _resource()
    if res is None:
        return "open files: no per-process limit on this platform"
    soft, hard = res.getrlimit(res.RLIMIT_NOFILE)
    if hard == res.RLIM_INFINITY or soft == res.RLIM_INFINITY:
        return "open files: no limit"
    if soft >= hard:
        return f"open files: at most {soft} (the hard limit)"
    try:
        res.setrlimit(res.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        return f"open files: at most {soft} (raising it to {hard} failed: {exc})"
    return f"open files: at most {hard} (raised from {soft})"


def settle_heap() -> int:
    """Freeze every object alive (``gc.freeze``): the modules, classes and functions
    of a started process live until it exits, and frozen objects are never traversed
    again. No collection first: after the imports it finds nothing (0 objects) and
    would cost 40 ms before the first sound. Returns the number of objects frozen."""
    gc.freeze()
    return gc.get_freeze_count()


class GcWatch:
    """Times the garbage collector's passes, in whatever thread they run.

    ``longest_s`` is the longest pass since :meth:`start`, ``full`` the number of
    full (generation 2) passes. The callbacks run under the GIL, one at a time.
    """

    def __init__(self) -> None:
        self.longest_s = 0.0
        self.full = 0
        self._began = 0.0

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        self.longest_s = max(self.longest_s, took)
        if info.get("generation") == 2:
            self.full += 1
