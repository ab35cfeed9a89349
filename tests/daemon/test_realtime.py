"""The garbage collector cannot hold the GIL (and so the audio callback) for long."""

import subprocess
import sys

import pytest

PROBE = r"""
import gc, json
# Everything a started daemon has imported: serve, and the OSC server it imports once
# its audio runs.
import stemdeck.daemon.serve
import stemdeck.daemon.osc.dispatch, stemdeck.daemon.osc.feedback, stemdeck.daemon.osc.server
from stemdeck.daemon.realtime import GcWatch, settle_heap

before = len(gc.get_objects())
frozen = settle_heap()
watch = GcWatch()
watch.start()
garbage = []
for _ in range(3):
    cycle = [{}]
    cycle[0]["self"] = cycle  # a reference cycle only the collector frees
    garbage.append(cycle)
del garbage, cycle
gc.collect()  # one full pass, watched
watch.stop()
gc.collect()  # not watched
print(json.dumps({
    "before": before, "frozen": frozen, "after": len(gc.get_objects()),
    "full": watch.full, "timed": watch.longest_s > 0.0,
}))
"""


@pytest.mark.e2e
def test_settled_heap_leaves_the_collector_little_to_traverse() -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout)
    # The imports leave tens of thousands of objects; after settling, a full pass
    # traverses only the handful made since (the probe's own few).
    assert got["before"] > 20_000
    assert got["frozen"] >= got["before"] // 2
    assert got["after"] < 200
    assert got["full"] == 1 and got["timed"] is True


# In a fresh interpreter: the suite's own threads would be pinned with the probe's.
PIN_PROBE = r"""
import json, os, sys, threading, time
import stemdeck.daemon.audio.sinks as audio
from stemdeck.daemon.realtime import children_on_every_cpu

if sys.argv[1] == "unpinned":
    audio.pin_threads = lambda: ""

count = [0]
stop = threading.Event()


def spin():  # CPU-bound Python: it gives the GIL up only when made to
    while not stop.is_set():
        count[0] += 1


class Engine:
    max_block = 480
    moved = blocks = 0
    cpu = -1

    def process(self, out):
        if not Engine.blocks:
            Engine.cpu = cpu_now()
        before = count[0]
        # 2 ms of Python (20 switch intervals); 7 ms, an overload, in "overloaded"
        until = time.perf_counter() + (0.007 if sys.argv[1] == "overloaded" else 0.002)
        while time.perf_counter() < until:
            pass
        Engine.moved += count[0] != before
        Engine.blocks += 1

    def master_view(self, frames):
        raise AssertionError("no recorder")


def cpu_now():  # the processor field of this thread's stat
    tid = threading.get_native_id()
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def affinities():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            out[tid] = sorted(os.sched_getaffinity(int(tid)))
        except OSError:
            pass
    return out


sys.setswitchinterval(1e-4)  # the daemon's (daemon/realtime.py)
original = sorted(os.sched_getaffinity(0))
spinner = threading.Thread(target=spin, daemon=True)
spinner.start()
while count[0] < 1000:
    time.sleep(0)
sink = audio.NullSink(Engine(), 48000, 480, 2, None, realtime=True)  # 10 ms blocks
sink.start()
while Engine.blocks < 100:
    time.sleep(0.01)
during = affinities()
with children_on_every_cpu():  # how the loader starts the separation's process
    widened = sorted(os.sched_getaffinity(0))
repinned = sorted(os.sched_getaffinity(0))
sink.stop()
after = affinities()
stop.set()
print(json.dumps({
    "scheduling": sink.scheduling, "original": original, "moved": Engine.moved,
    "during": sorted(set(map(tuple, during.values()))), "threads": len(during),
    "after": sorted(set(map(tuple, after.values()))),
    "widened": widened, "repinned": repinned,
    "clock_cpu": Engine.cpu,
}))
"""


def _pin_probe(mode: str) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", PIN_PROBE, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(out.stdout)
    if not got["scheduling"].startswith("SCHED_FIFO"):
        pytest.skip(f"the audio thread is {got['scheduling']}")
    if len(got["original"]) < 2:
        pytest.skip("one CPU: nothing to pin")
    return got


@pytest.mark.e2e
def test_no_thread_takes_the_gil_from_the_callback_in_a_block() -> None:
    """A thread that waits for the GIL one switch interval forces the holder to hand
    it over: a control thread woken mid-block took it from the callback (the web
    bench's callback p99 with 10 clients was 1.5-2x the p99 with none). Once the
    audio thread runs under SCHED_FIFO, every thread of the process is on its CPU,
    where none can run, and so none can force a switch, while a block runs. Here
    a CPU-bound thread wants the GIL all the time; it must not run during any of
    100 blocks of 2 ms of Python, and it does without the pin."""
    got = _pin_probe("pinned")
    cpu = got["clock_cpu"]  # the audio thread's CPU in its first block, once pinned
    assert cpu in got["original"] and cpu != min(got["original"])  # not the first CPU
    assert got["scheduling"] == f"SCHED_FIFO 70, threads on CPU {cpu}"
    assert got["moved"] == 0
    assert got["threads"] >= 3  # the main thread, the spinner and the clock, at least
    assert got["during"] == [[cpu]]
    assert got["widened"] == got["original"]  # what a child process is started with
    assert got["repinned"] == [cpu]  # and the starting thread is pinned again
    assert got["after"] == [got["original"]]  # stopped: every thread has its CPUs back

    control = _pin_probe("unpinned")
    assert control["scheduling"] == "SCHED_FIFO 70"
    assert control["during"] == [control["original"]]
    assert control["moved"] > 0  # the probe sees the switch the pin prevents


@pytest.mark.e2e
def test_an_overloaded_callback_gives_the_cpus_back() -> None:
    """Pinned, a callback that takes most of each block would leave every other thread
    of the daemon (OSC, web, the main loop) only the kernel's real-time allowance,
    about 5 % of a CPU, just when a performer must reach it to lower the load. A
    block over half its period gives the threads every CPU back."""
    got = _pin_probe("overloaded")
    assert got["scheduling"] == ("SCHED_FIFO 70, threads on every CPU (the audio was overloaded)")
    assert got["during"] == [got["original"]]
    assert got["widened"] == got["repinned"] == got["original"]  # no pin left to restore
    assert got["after"] == [got["original"]]


# In a fresh interpreter: mlockall would lock the test process's memory for the suite.
LOCK_PROBE = r"""
import json, os
import numpy as np
from stemdeck.daemon.realtime import lock_memory

PAGE = os.sysconf("SC_PAGE_SIZE")

def present(array):  # [in memory, in all] of the array's pages (/proc/self/pagemap: bit 63)
    first = array.ctypes.data // PAGE
    last = (array.ctypes.data + array.nbytes - 1) // PAGE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = np.frombuffer(f.read((last - first + 1) * 8), np.uint64)
    return [int((entries >> np.uint64(63)).sum()), len(entries)]

def locked(array):  # kB locked in the mappings over the array (numpy splits them)
    lo_at, hi_at = array.ctypes.data, array.ctypes.data + array.nbytes
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < hi_at and lo_at < hi
        elif inside and head == "Locked:":
            total += int(line.split()[1])
    return total

def code_present():  # [in memory, in all] of the pages of numpy's core library's code
    lib = np._core._multiarray_umath.__file__
    got = [0, 0]
    with open("/proc/self/pagemap", "rb") as pagemap:
        for line in open("/proc/self/maps"):
            parts = line.split()
            if len(parts) == 6 and parts[5] == lib and "x" in parts[1]:
                lo, hi = (int(x, 16) // PAGE for x in parts[0].split("-"))
                pagemap.seek(lo * 8)
                entries = np.frombuffer(pagemap.read((hi - lo) * 8), np.uint64)
                got[0] += int((entries >> np.uint64(63)).sum())
                got[1] += len(entries)
    return got

untouched = np.zeros(16 << 20, np.float32)  # 64 MiB mapped, no page written
written = np.ones(4 << 20, np.float32)  # 16 MiB, every page written
code_before = code_present()
status = lock_memory()
print(json.dumps({
    "status": status,
    "untouched": present(untouched),
    "written": present(written),
    "locked": locked(written) * 1024 >= written.nbytes,
    "code_before": code_before,
    "code": code_present(),
}))
"""


@pytest.mark.e2e
def test_the_memory_lock_fills_no_page_never_touched() -> None:
    """The lock keeps what is in memory and fills nothing else: the daemon maps a
    lot it never touches (OpenBLAS's 64 MiB work buffers, helper threads' stacks),
    and ``mlockall(MCL_CURRENT)`` filled it: ~150 of the daemon's ~200 MB."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", LOCK_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout)
    if got["status"] != "memory locked":
        pytest.skip(got["status"])  # no CAP_IPC_LOCK nor memlock limit here
    pages = got["untouched"][1]
    assert got["untouched"] == [1, pages]  # the first page only: the allocator's header's
    assert got["written"][0] == got["written"][1]
    assert got["locked"] is True
    # The code is filled as MCL_CURRENT filled it: a path run first in the audio
    # thread (a tempo change) never waits for a page of code from the disk.
    code = got["code"][1]
    assert got["code_before"][0] < code  # numpy has code it has not run yet
    assert got["code"] == [code, code]
