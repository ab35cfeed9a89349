"""OSC 1.0 address patterns, matched in time linear in address × pattern.

``?`` matches one character, ``*`` any run (none included), ``[a-z]`` and
``[!a-z]`` one character of (not of) a class, ``{foo,bar}`` one of the strings.
Wildcards never match ``/``. The matcher simulates the pattern's automaton on a
set of states (no backtracking), so no pattern can make it slow: each character
of the address steps each state of the pattern at most once.

A malformed pattern (an empty class ``[]`` or ``[!]``, a reversed range
``[z-a]``, an unclosed ``[`` or ``{``, a stray ``]`` or ``}``, a wildcard or ``/``
inside ``{}``, ``/`` inside ``[]``) or one longer than :data:`MAX_PATTERN`
characters raises :class:`~stemdeck.core.errors.ParameterError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from ..errors import ParameterError

__all__ = ["MAX_PATTERN", "Pattern", "compile_pattern", "is_pattern"]

MAX_PATTERN = 256
_SPECIAL = frozenset("?*[]{}")


def is_pattern(address: str) -> bool:
    """True if ``address`` holds any OSC pattern character."""
    return any(c in _SPECIAL for c in address)


# Token kinds (tuples keep the automaton cheap to step).
_LIT, _ANY, _STAR, _CLASS, _ALT = range(5)


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern: :meth:`match` tells whether a whole address matches."""

    text: str
    tokens: tuple[tuple[int, object], ...]

    def match(self, address: str) -> bool:
        tokens = self.tokens
        n = len(tokens)
        # A state is (token index, alternative, characters of it consumed).
        states: set[tuple[int, int, int]] = set()
        end = [False]

        def enter(ti: int, out: set[tuple[int, int, int]], seen: set[int]) -> None:
            while True:
                if ti in seen:
                    return
                seen.add(ti)
                if ti == n:
                    end[0] = True
                    return
                kind, data = tokens[ti]
                if kind == _STAR:
                    out.add((ti, 0, 0))
                    ti += 1
                    continue
                if kind == _ALT:
                    assert isinstance(data, tuple)
                    empty = False
                    for ai, s in enumerate(data):
                        if s:
                            out.add((ti, ai, 0))
                        else:
                            empty = True
                    if empty:
                        ti += 1
                        continue
                    return
                out.add((ti, 0, 0))
                return

        enter(0, states, set())
        for c in address:
            if not states:
                return False
            end[0] = False
            nxt: set[tuple[int, int, int]] = set()
            seen: set[int] = set()
            for ti, ai, k in states:
                kind, data = tokens[ti]
                if kind == _LIT:
                    if c == data:
                        enter(ti + 1, nxt, seen)
                elif kind == _ANY:
                    if c != "/":
                        enter(ti + 1, nxt, seen)
                elif kind == _STAR:
                    if c != "/":
                        nxt.add((ti, 0, 0))
                        enter(ti + 1, nxt, seen)
                elif kind == _CLASS:
                    negate, ranges = cast(tuple[bool, tuple[tuple[str, str], ...]], data)
                    inside = any(lo <= c <= hi for lo, hi in ranges)
                    if c != "/" and inside != negate:
                        enter(ti + 1, nxt, seen)
                else:
                    alts = data
                    assert isinstance(alts, tuple)
                    s = alts[ai]
                    if s[k] == c:
                        if k + 1 == len(s):
                            enter(ti + 1, nxt, seen)
                        else:
                            nxt.add((ti, ai, k + 1))
            states = nxt
        return end[0]


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Pattern:
    """Parse an OSC 1.0 address pattern.

    Raises
    ------
    ParameterError
        Malformed (see the module docstring) or longer than :data:`MAX_PATTERN`.
    """
    if len(pattern) > MAX_PATTERN:
        raise ParameterError(f"address pattern is {len(pattern)} characters; at most {MAX_PATTERN}")
    tokens: list[tuple[int, object]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "?":
            tokens.append((_ANY, None))
        elif c == "*":
            if not tokens or tokens[-1][0] != _STAR:  # ** is *
                tokens.append((_STAR, None))
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ParameterError(f"unclosed '[' at {i} in address pattern {pattern!r}")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            if not body:
                raise ParameterError(f"empty class '{pattern[i : end + 1]}' in {pattern!r}")
            if "/" in body or "[" in body:
                raise ParameterError(f"'/' or '[' inside a class in {pattern!r}")
            ranges = []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    if lo > hi:
                        raise ParameterError(f"reversed range '{lo}-{hi}' in {pattern!r}")
                    ranges.append((lo, hi))
                    j += 3
                else:
                    ranges.append((body[j], body[j]))
                    j += 1
            tokens.append((_CLASS, (negate, tuple(ranges))))
            i = end
        elif c == "{":
            end = pattern.find("}", i + 1)
            if end < 0:
                raise ParameterError(f"unclosed '{{' at {i} in address pattern {pattern!r}")
            body = pattern[i + 1 : end]
            if any(ch in body for ch in "?*[]{/"):
                raise ParameterError(f"a wildcard or '/' inside '{{}}' in {pattern!r}")
            tokens.append((_ALT, tuple(dict.fromkeys(body.split(",")))))
            i = end
        elif c in "]}":
            raise ParameterError(f"unmatched {c!r} at {i} in address pattern {pattern!r}")
        else:
            tokens.append((_LIT, c))
        i += 1
    return Pattern(pattern, tuple(tokens))
