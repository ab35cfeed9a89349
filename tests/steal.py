"""Real-time tests under a host that takes the CPU away (CPU steal).

On a virtual machine the host may stop running the guest for tens of
milliseconds at a time ("steal" in ``/proc/stat``). Nothing inside the guest can
keep a real-time deadline through that: the JACK dummy driver's frames, the
MIDI clock's ticks and Link's beats then measure the host, not stemdeck. A test
marked ``realtime`` whose attempt fails (an assertion, as ``poll``'s timeouts
are too) while the host took at least :data:`STEAL_TICKS` of CPU time from this
machine is run again, at most :data:`RERUNS` times, with a warning that says so;
a failure with less steal than that, or on the last attempt, fails as it is.
``tests/conftest.py`` installs the hook.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

STEAL_TICKS = 10  # clock ticks (USER_HZ, 1/100 s): 0.1 s of CPU taken in one attempt
RERUNS = 2
PROC_STAT = Path("/proc/stat")


def steal_ticks(stat: Path = PROC_STAT) -> int | None:
    """The CPU time the host has taken from this machine since it booted, in
    ticks (all CPUs: the 8th number of /proc/stat's ``cpu`` line); None where
    there is no such count."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if len(first) < 9 or first[0] != "cpu" or not first[8].isdigit():
        return None
    return int(first[8])


def run_with_reruns(
    call: Callable[[], Any],
    name: str,
    *,
    ticks: Callable[[], int | None] | None = None,
    reruns: int = RERUNS,
    threshold: int = STEAL_TICKS,
) -> Any:
    """``call()``; after an AssertionError, again while the host took at least
    ``threshold`` ticks during the attempt (at most ``reruns`` more times);
    ``ticks`` reads the steal count (default :func:`steal_ticks`, looked up at
    the call)."""
    read = ticks if ticks is not None else globals()["steal_ticks"]
    attempt = 0
    while True:
        before = read()
        try:
            return call()
        except AssertionError as exc:
            after = read()
            stolen = None if before is None or after is None else after - before
            if attempt >= reruns or stolen is None or stolen < threshold:
                raise
            attempt += 1
            warnings.warn(
                pytest.PytestWarning(
                    f"{name}: failed while the host took {stolen / 100:.2f} s of CPU "
                    f"(steal): run again ({attempt} of {reruns}): {exc}"
                ),
                stacklevel=2,
            )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Tests marked ``realtime``: :func:`run_with_reruns`; the others as pytest runs them."""
    if pyfuncitem.get_closest_marker("realtime") is None:
        return None
    names = pyfuncitem._fixtureinfo.argnames
    args = {name: pyfuncitem.funcargs[name] for name in names}
    run_with_reruns(lambda: pyfuncitem.obj(**args), pyfuncitem.nodeid)
    return True
