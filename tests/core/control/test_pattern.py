"""OSC 1.0 address patterns (core/control/pattern.py): semantics, errors, linear time."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stemdeck.core.control.pattern import MAX_PATTERN, compile_pattern
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import ParameterError


@pytest.mark.parametrize(
    ("pattern", "address", "hit"),
    [
        ("/ch/*/mute", "/ch/2/mute", True),
        ("/ch/*/mute", "/ch/2/x/mute", False),  # * never matches /
        ("/ch/?/mute", "/ch/12/mute", False),
        ("/ch/[1-3]/pan", "/ch/3/pan", True),
        ("/ch/[!1-3]/pan", "/ch/3/pan", False),
        ("/ch/[!1-3]/pan", "/ch/4/pan", True),
        ("/ch/[a-]/x", "/ch/-/x", True),  # a trailing - is literal
        ("/ch/{bass,drums}/solo", "/ch/drums/solo", True),
        ("/ch/{bass,drums}/solo", "/ch/bas/solo", False),
        ("/ch/{,b}x", "/ch/x", True),  # an empty alternative
        ("*", "", True),
        ("/a**b", "/ab", True),
    ],
)
def test_semantics(pattern: str, address: str, hit: bool) -> None:
    assert compile_pattern(pattern).match(address) is hit


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[]", r"empty class '\[\]'"),
        ("[!]", r"empty class '\[!\]'"),
        ("[z-a]", "reversed range 'z-a'"),
        ("[ab", r"unclosed '\['"),
        ("{a,b", "unclosed '{'"),
        ("a]", r"unmatched '\]'"),
        ("a}", "unmatched '}'"),
        ("{a*,b}", "a wildcard or '/' inside"),
        ("[a/]", r"'/' or '\[' inside a class"),
        ("*" * (MAX_PATTERN + 1), "at most 256"),
    ],
)
def test_malformed_patterns_are_errors(pattern: str, reason: str) -> None:
    with pytest.raises(ParameterError, match=reason):
        compile_pattern(pattern)


def _reference(pattern: str) -> re.Pattern[str]:
    """A regex for the simple patterns below (only ?, * and literals)."""
    return re.compile(
        "".join("[^/]" if c == "?" else "[^/]*" if c == "*" else re.escape(c) for c in pattern)
        + r"\Z"
    )


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.text("ab/?*", max_size=12), st.text("ab/", max_size=12))
def test_agrees_with_a_reference_matcher(pattern: str, address: str) -> None:
    assert compile_pattern(pattern).match(address) == bool(_reference(pattern).match(address))


def test_no_pattern_is_slow() -> None:
    # Backtracking took 2.7 s for the first and over 15 s for a 1000-character one.
    cases = [("*?" * 120, True), ("*a" * 120 + "b", False), ("{a,aa,aaa}" * 25, False)]
    for pattern, hit in [*cases, ("?*" * 125 + "x", False)]:
        started = time.process_time()
        assert compile_pattern(pattern).match("a" * 200) is hit
        assert time.process_time() - started < 1.0  # CPU time: about 10 ms here


def test_indices_are_ascii_digits() -> None:
    reg = Registry(["drums", "bass"])
    for token in ("１", "١", "²"):
        with pytest.raises(ParameterError, match="unknown channel"):
            reg.resolve(f"/ch/{token}/fader")
    assert reg.match("/ch/02/fader") == [("/ch/2/fader", "/ch/02/fader")]
