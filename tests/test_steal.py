"""tests/steal.py: a real-time test runs again only after a failure while the host
took the CPU, at most twice, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from steal import RERUNS, STEAL_TICKS, run_with_reruns, steal_ticks


def test_steal_is_the_eighth_number_of_the_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 20 300 4 0 1 77 0 0\ncpu0 5 0 10 150 2 0 1 40 0 0\n")
    assert steal_ticks(stat) == 77
    for text in ("", "cpu 1 2 3\n", "intr 1 2 3 4 5 6 7 8 9\n", "cpu 1 2 3 4 5 6 7 x 9\n"):
        stat.write_text(text)
        assert steal_ticks(stat) is None, text
    assert steal_ticks(tmp_path / "missing") is None
    assert isinstance(steal_ticks(), int)  # this machine's (Linux)


class _Host:
    """Steal ticks that grow by ``per_call`` each time they are read."""

    def __init__(self, per_call: int) -> None:
        self.now = 1000
        self.per_call = per_call

    def __call__(self) -> int:
        self.now += self.per_call
        return self.now


def test_a_failure_under_steal_runs_again_at_most_twice() -> None:
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise AssertionError("tick 0.8 ms off")

    with pytest.warns(pytest.PytestWarning) as caught:
        with pytest.raises(AssertionError, match=r"tick 0\.8 ms off"):
            run_with_reruns(fails, "t", ticks=_Host(STEAL_TICKS))
    assert len(calls) == 1 + RERUNS == 3
    assert [str(w.message) for w in caught] == [
        "t: failed while the host took 0.10 s of CPU (steal): run again (1 of 2): tick 0.8 ms off",
        "t: failed while the host took 0.10 s of CPU (steal): run again (2 of 2): tick 0.8 ms off",
    ]


def test_a_failure_without_steal_fails_at_once() -> None:
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise AssertionError("wrong")

    with pytest.raises(AssertionError, match="wrong"):
        run_with_reruns(fails, "t", ticks=_Host(STEAL_TICKS - 1))
    assert len(calls) == 1
    with pytest.raises(AssertionError, match="wrong"):
        run_with_reruns(fails, "t", ticks=lambda: None)  # no count: no rerun
    assert len(calls) == 2


def test_a_rerun_that_passes_passes_and_other_errors_are_not_rerun() -> None:
    calls: list[int] = []

    def once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise AssertionError("late")
        return "ok"

    with pytest.warns(pytest.PytestWarning, match=r"run again \(1 of 2\): late"):
        assert run_with_reruns(once, "t", ticks=_Host(50)) == "ok"
    assert len(calls) == 2

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("a bug, not timing")

    with pytest.raises(RuntimeError):
        run_with_reruns(broken, "t", ticks=_Host(500))
    assert len(calls) == 3


pytest_plugins = ["pytester"]


def test_the_hook_reruns_only_tests_marked_realtime(pytester: pytest.Pytester) -> None:
    """Through pytest itself: a ``realtime`` test that fails once while the host
    took the CPU passes on its rerun, with its fixture; an unmarked one fails."""
    pytester.makeconftest(
        """
        import pytest
        import steal

        pytest_plugins = ["steal"]
        count = [0]

        def host():
            count[0] += 20
            return count[0]

        @pytest.fixture(autouse=True)
        def _stealing(monkeypatch):
            monkeypatch.setattr(steal, "steal_ticks", host)

        @pytest.fixture
        def rig():
            return {"runs": 0}
        """
    )
    pytester.makeini("[pytest]\nmarkers =\n    realtime: timing\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.realtime
        def test_timed(rig):
            rig["runs"] += 1
            assert rig["runs"] == 2, "first attempt late"

        def test_plain(rig):
            rig["runs"] += 1
            assert rig["runs"] == 2, "not rerun"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: not rerun",
            "*::test_timed: failed while the host took 0.20 s of CPU (steal): run again (1 of 2): "
            "first attempt late",
            "FAILED *::test_plain - *",
        ]
    )
