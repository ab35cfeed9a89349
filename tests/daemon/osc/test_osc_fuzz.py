"""Grammar-aware fuzzing of the OSC server (``tests/osc_grammar.py``), a short budget.

Deterministic (derandomized, no example database). Every datagram is checked
from outside the dispatch code: one ``/error`` and nothing changed, or the
documented reply; and after every datagram the registry equals what the audio
thread holds. ``bench/fuzz.py`` runs the same grammar against a live daemon.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from osc_grammar import Case, datagram
from osc_host import make_server

SENDER = ("127.0.0.1", 41000)


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@pytest.mark.slow  # about a second: the fast tier stays under a minute
@given(st.lists(datagram(), min_size=1, max_size=12))
def test_fuzzed_datagrams_get_their_verdict(cases: list[Case]) -> None:
    host, server = make_server()
    try:
        for case in cases:
            before = (host.registry.snapshot(), host.engine_state())
            started = time.process_time()
            replies = server.datagram(case.data, SENDER)
            # CPU time, not wall time: a loaded machine does not fail this, a hang does.
            assert time.process_time() - started < 1.0, case
            errors = [r for r in replies if r[0] == "/error"]
            if errors:
                assert replies == errors and len(errors) == 1, (case, replies)
                assert case.verdict != "ok", (case, replies)
                assert (host.registry.snapshot(), host.engine_state()) == before, case
            else:
                assert case.verdict != "error", (case, replies)
                if case.query is not None:
                    assert [a for a, _ in replies] == [case.query], (case, replies)
            # The registry and the audio never disagree.
            assert host.registry_as_engine() == host.engine_state()[:8], case
    finally:
        server.sock.close()
