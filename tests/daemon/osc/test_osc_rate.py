"""``/transport/rate`` over OSC: set, query, patterns, bundles, ``/state`` and
feedback, and one exact error for each bad value (nothing applied)."""

from __future__ import annotations

import pytest
from osc_host import SENDER, FakeHost, m, make_server

from stemdeck.daemon.osc import OscServer
from stemdeck.daemon.osc.wire import encode_bundle


@pytest.fixture
def served():
    host, server = make_server()
    yield host, server
    server.sock.close()


def test_rate_is_set_and_queried(served: tuple[FakeHost, OscServer]) -> None:
    host, server = served
    assert server.datagram(m("/transport/rate"), SENDER) == [("/transport/rate", [1.0])]
    assert server.datagram(m("/transport/rate", 1.08), SENDER) == []
    host.block()
    assert host.engine.rate == pytest.approx(1.08)
    assert server.datagram(m("/transport/rate"), SENDER) == [
        ("/transport/rate", [pytest.approx(1.08)])
    ]
    # In a bundle with another transport verb: applied in one block.
    bundle = encode_bundle([m("/transport/rate", 0.5), m("/transport/seek", 1.0)])
    assert server.datagram(bundle, SENDER) == []
    host.block()
    assert host.engine.rate == 0.5
    assert ("/transport/rate", [0.5]) in server.control.state("index")


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ((2.5,), "/transport/rate must be within 0.5..2, got 2.5"),
        ((0.0,), "/transport/rate must be within 0.5..2, got 0"),
        ((float("inf"),), "/transport/rate got inf"),
        (("fast",), "/transport/rate takes a number, got ['fast']"),
    ],
)
def test_a_bad_rate_is_one_error_and_nothing_applied(
    served: tuple[FakeHost, OscServer], args: tuple, reply: str
) -> None:
    host, server = served
    before = host.engine_state()
    assert server.datagram(m("/transport/rate", *args), SENDER) == [("/error", [reply])]
    assert host.engine_state() == before
    assert host.engine.rate == 1.0
