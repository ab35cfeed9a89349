"""tests/steal.py: a real-time test runs again, whole, only after its body failed
an assertion during a burst of CPU steal, at most twice, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from steal import STEAL_TICKS, StealWatch, steal_ticks, worst_burst

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent


def test_steal_is_the_eighth_number_of_the_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 20 300 4 0 1 77 0 0\ncpu0 5 0 10 150 2 0 1 40 0 0\n")
    assert steal_ticks(stat) == 77
    for text in ("", "cpu 1 2 3\n", "intr 1 2 3 4 5 6 7 8 9\n", "cpu 1 2 3 4 5 6 7 x 9\n"):
        stat.write_text(text)
        assert steal_ticks(stat) is None, text
    assert steal_ticks(tmp_path / "missing") is None
    assert isinstance(steal_ticks(), int)  # this machine's (Linux)


def test_a_burst_is_the_most_stolen_within_the_window() -> None:
    samples = [(0.0, 100), (0.5, 105), (1.0, 112), (2.5, 113), (3.0, 130), (3.6, 131)]
    assert worst_burst(samples) == 17  # 113 -> 130 within a second, not 100 -> 131
    # No two samples within 0.4 s: the largest step between two in a row.
    assert worst_burst(samples, window=0.4) == 17
    steady = [(0.1 * k, 100 + 2 * k // 10) for k in range(300)]  # 2 ticks a second
    assert worst_burst(steady) == 2
    assert worst_burst([]) == 0 and worst_burst([(0.0, 5)]) == 0
    # The sampler stops with the machine: a 3-second pause is one burst, not none.
    assert worst_burst([(0.0, 100), (0.1, 100), (3.1, 400), (3.2, 401)]) == 300


def test_the_watch_samples_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import steal

    count = iter(range(100_000))  # a tick a reading: a steady trickle
    monkeypatch.setattr(steal, "steal_ticks", lambda: next(count))
    with StealWatch(interval=0.01) as watch:
        time.sleep(1.5)
    assert len(watch.samples) >= 20
    total = watch.samples[-1][1] - watch.samples[0][1]
    burst = watch.burst()
    assert burst == worst_burst(watch.samples) >= STEAL_TICKS
    assert burst < total  # the most within a second, not the whole attempt's
    monkeypatch.setattr(steal, "steal_ticks", lambda: None)
    with StealWatch(interval=0.01) as none:
        pass
    assert none.burst() is None


_CONFTEST = """
import os
import pytest

pytest_plugins = ["steal"]
_count = [0]

def _host():
    _count[0] += int(os.environ["FAKE_STEAL"])
    return _count[0]

def pytest_configure(config):
    import steal  # the plugin, imported by now

    steal.steal_ticks = _host

made = []

@pytest.fixture
def rig():
    made.append(1)
    return {"runs": 0, "made": len(made)}

@pytest.fixture
def broken_teardown():
    yield
    raise OSError("teardown")
"""

_TESTS = """
import pytest

attempts = []

@pytest.mark.realtime
def test_timed(rig):
    attempts.append(rig["made"])
    assert rig["runs"] == 0  # a fresh fixture every attempt
    rig["runs"] += 1
    assert len(attempts) == 2, "first attempt late"

@pytest.mark.realtime
def test_always():
    assert False, "always late"

@pytest.mark.realtime
def test_broken():
    raise RuntimeError("a bug, not timing")

@pytest.mark.realtime
def test_teardown_and_body(broken_teardown):
    assert False, "late, and a broken teardown"

def test_plain(rig):
    assert False, "not rerun"
"""


@pytest.mark.parametrize("fake", [20, 0])
def test_the_hook_reruns_a_timing_failure_under_steal_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake: int
) -> None:
    """Through pytest itself (a subprocess): under a steal burst a ``realtime``
    test whose body failed an assertion runs again with a fresh fixture and
    passes; one that always fails runs three times and fails; another exception,
    a failing teardown beside the assertion, an unmarked test, and any failure
    without steal are not run again. Each rerun is said twice: in the output and
    in the summary."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("FAKE_STEAL", str(fake))
    pytester.makeconftest(_CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    realtime: timing\n")
    pytester.makepyfile(test_it=_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    out = result.stdout.str()
    if fake:
        result.assert_outcomes(passed=1, failed=4, errors=1)
        assert out.count("test_it.py::test_timed: failed while the host took") == 2
        assert out.count("test_it.py::test_always: failed while the host took") == 4
        result.stdout.fnmatch_lines(
            [
                "steal: test_it.py::test_timed: failed while the host took * s of CPU within "
                "1 s (steal): run again (1 of 2): AssertionError: first attempt late",
                "*realtime tests run again after CPU steal*",
                "test_it.py::test_always: * run again (2 of 2): AssertionError: always late",
            ]
        )
        assert "(3 of 2)" not in out
    else:
        result.assert_outcomes(failed=5, errors=1)
        assert "failed while the host took" not in out
    for name in ("test_broken", "test_teardown_and_body", "test_plain"):
        assert f"test_it.py::{name}: failed while" not in out
    result.stdout.fnmatch_lines(["FAILED *test_broken - RuntimeError*"])


def test_a_rerun_that_hangs_still_times_out(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest-timeout cancels its timer when an attempt fails: the rerun sets it
    again, so a rerun that hangs fails after the timeout (here 2 s, not 30)."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("FAKE_STEAL", "20")
    pytester.makeconftest(_CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    realtime: timing\n")
    pytester.makepyfile(
        test_hang="""
        import time
        import pytest

        attempts = []

        @pytest.mark.realtime
        def test_hang():
            attempts.append(1)
            assert len(attempts) > 1, "late"
            time.sleep(30)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED *test_hang - Failed: Timeout (>2.0s)*"])
    assert result.duration < 20
