"""Real-time tests under a host that takes the CPU away (CPU steal).

On a virtual machine the host may stop running the guest for tens of
milliseconds at a time ("steal" in ``/proc/stat``). Nothing inside the guest can
keep a real-time deadline through that: the JACK dummy driver's frames and the
MIDI clock's ticks then measure the host, not stemdeck. A test marked
``realtime`` whose test body fails with an AssertionError (as ``poll``'s
timeouts do) while the host took at least :data:`STEAL_TICKS` of CPU time within
one :data:`WINDOW_S` window during the attempt (its fixtures' setup and teardown
included) is run again, whole (its function fixtures made anew; those of a
module or the session too where pytest would tear them down after it), its
timeout set again, at most :data:`RERUNS` times, with a line in the output and
in the terminal summary that says so. A failure
with less steal than that, any other exception, a failing fixture, or the last
attempt fails as it is. The steal is read every :data:`SAMPLE_S` while an
attempt runs, so a slow steady trickle over a long test does not add up to a
rerun: only a burst does. ``tests/conftest.py`` installs the hooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol

STEAL_TICKS = 10  # clock ticks (USER_HZ, 1/100 s): 0.1 s of CPU taken ...
WINDOW_S = 1.0  # ... within one second
SAMPLE_S = 0.1
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


def worst_burst(samples: list[tuple[float, int]], window: float = WINDOW_S) -> int:
    """The most ticks stolen between two samples (time, count) at most ``window``
    seconds apart, or between two samples in a row however far apart (the sampler
    stops with the machine: a pause longer than the window is one burst); 0 for
    fewer than two samples."""
    worst = 0
    start = 0
    for i, (t, count) in enumerate(samples):
        while start < i - 1 and t - samples[start][0] > window:
            start += 1
        worst = max(worst, count - samples[start][1])
    return worst


class StealWatch:
    """Reads the steal count every ``interval`` seconds in a thread, from
    ``__enter__`` to ``__exit__``; :meth:`burst` is :func:`worst_burst` of them
    (None where there is no count)."""

    def __init__(self, interval: float = SAMPLE_S) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.counted = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steal-watch", daemon=True)

    def _read(self) -> None:
        ticks = globals()["steal_ticks"]()  # looked up here: tests replace it
        if ticks is None:
            self.counted = False
        else:
            self.samples.append((time.monotonic(), ticks))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def __enter__(self) -> StealWatch:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def burst(self) -> int | None:
        return worst_burst(self.samples) if self.counted else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Marks the body's failure by an AssertionError (what a timing check raises)."""
    outcome = yield
    report = outcome.get_result()
    report.timing_failure = (
        call.when == "call"
        and call.excinfo is not None
        and call.excinfo.errisinstance(AssertionError)
    )


def _rerun_reason(reports: list[pytest.TestReport], burst: int | None) -> str | None:
    failed = [r for r in reports if r.failed]
    if not failed or burst is None or burst < STEAL_TICKS:
        return None
    if not all(getattr(r, "timing_failure", False) for r in failed):
        return None
    crash = getattr(failed[0].longrepr, "reprcrash", None)
    message = getattr(crash, "message", "") or "failed"
    return message.splitlines()[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Tests marked ``realtime``: run, and again after a failure under a steal burst."""
    if item.get_closest_marker("realtime") is None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(RERUNS + 1):
        if attempt:
            _rearm_timeout(item)
            item._report_sections = []  # the final report shows its own attempt's output
        with StealWatch() as watch:
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
        burst = watch.burst()
        reason = _rerun_reason(reports, burst) if attempt < RERUNS else None
        if reason is None or burst is None:
            for report in reports:
                item.ihook.pytest_runtest_logreport(report=report)
            break
        _say(
            item,
            f"{item.nodeid}: failed while the host took {burst / 100:.2f} s of CPU "
            f"within {WINDOW_S:g} s (steal): run again ({attempt + 1} of {RERUNS}): {reason}",
        )
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _rearm_timeout(item: pytest.Item) -> None:
    """pytest-timeout sets its timer once around the protocol and cancels it when
    an attempt fails (``pytest_exception_interact``): set it again for a rerun, so
    a rerun that hangs still fails after the timeout."""
    plugin = item.config.pluginmanager.get_plugin("timeout")
    settings_of = getattr(plugin, "_get_item_settings", None)
    if settings_of is None:
        return
    settings = settings_of(item)
    # func_only: the timer is set around each call already
    if settings.timeout is not None and settings.timeout > 0 and not settings.func_only:
        item.config.pluginmanager.hook.pytest_timeout_set_timer(item=item, settings=settings)


def _say(item: pytest.Item, message: str) -> None:
    """A line in the terminal's output (not a warning: ``-W error`` would end the
    session from inside the protocol), and in the final report's sections."""
    RERUN_LOG.append(message)
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"steal: {message}", yellow=True)


#: Every rerun's message, in order (for the summary and the tests).
RERUN_LOG: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reruns again at the end, where a CI log is read."""
    if RERUN_LOG:
        terminalreporter.section("realtime tests run again after CPU steal (tests/steal.py)")
        for message in RERUN_LOG:
            terminalreporter.write_line(message)
