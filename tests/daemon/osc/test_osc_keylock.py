"""``/transport/keylock`` and ``/transport/pitch`` over OSC: set, query, bundles,
``/state`` and feedback, and one exact ``/error`` for each bad value (nothing
applied, no NaN or infinity ever reaches the engine)."""

from __future__ import annotations

import pytest
from osc_host import SENDER, FakeHost, m, make_server

from stemdeck.daemon.osc import Feedback, OscServer
from stemdeck.daemon.osc.wire import encode_bundle


@pytest.fixture
def served():
    host, server = make_server()
    yield host, server
    server.sock.close()


def test_keylock_and_pitch_are_set_and_queried(served: tuple[FakeHost, OscServer]) -> None:
    host, server = served
    assert server.datagram(m("/transport/keylock"), SENDER) == [("/transport/keylock", [0])]
    assert server.datagram(m("/transport/pitch"), SENDER) == [("/transport/pitch", [0.0])]
    assert server.datagram(m("/transport/keylock", 1), SENDER) == []
    assert server.datagram(m("/transport/pitch", -3.5), SENDER) == []
    host.block()
    assert host.engine.keylock is True
    assert host.engine.pitch == -3.5
    assert server.datagram(m("/transport/keylock"), SENDER) == [("/transport/keylock", [1])]
    assert server.datagram(m("/transport/pitch"), SENDER) == [("/transport/pitch", [-3.5])]
    # Like /transport/rate, they are transport values, not controls: no pattern matches them.
    assert server.datagram(m("/transport/{keylock,pitch}"), SENDER) == [
        ("/error", ["no control matches /transport/{keylock,pitch}"])
    ]
    # In a bundle with the rate: applied in one block.
    bundle = encode_bundle(
        [m("/transport/rate", 1.25), m("/transport/keylock", 0), m("/transport/pitch", 12)]
    )
    assert server.datagram(bundle, SENDER) == []
    host.block()
    assert (host.engine.rate, host.engine.keylock, host.engine.pitch) == (1.25, False, 12.0)
    state = server.control.state("index")
    at = state.index(("/transport/keylock", [0]))
    assert state[at + 1] == ("/transport/pitch", [12.0])
    # True and False (OSC T and F) are 1 and 0.
    assert server.datagram(m("/transport/keylock", True), SENDER) == []
    host.block()
    assert host.engine.keylock is True


@pytest.mark.parametrize(
    ("address", "args", "reply"),
    [
        ("/transport/keylock", (2,), "/transport/keylock takes 0 or 1, got [2]"),
        ("/transport/keylock", (1.0,), "/transport/keylock takes 0 or 1, got [1.0]"),
        ("/transport/keylock", ("on",), "/transport/keylock takes 0 or 1, got ['on']"),
        ("/transport/keylock", (1, 1), "/transport/keylock takes 0 or 1, got [1, 1]"),
        (
            "/transport/pitch",
            (12.5,),
            "/transport/pitch must be within -12..12 semitones, got 12.5",
        ),
        (
            "/transport/pitch",
            (-13,),
            "/transport/pitch must be within -12..12 semitones, got -13",
        ),
        ("/transport/pitch", (float("nan"),), "/transport/pitch got nan"),
        ("/transport/pitch", (float("inf"),), "/transport/pitch got inf"),
        ("/transport/pitch", (float("-inf"),), "/transport/pitch got -inf"),
        ("/transport/pitch", ("up",), "/transport/pitch takes a number, got ['up']"),
    ],
)
def test_a_bad_value_is_one_error_and_nothing_applied(
    served: tuple[FakeHost, OscServer], address: str, args: tuple, reply: str
) -> None:
    host, server = served
    before = host.engine_state()
    assert server.datagram(m(address, *args), SENDER) == [("/error", [reply])]
    host.block()
    assert host.engine_state() == before
    assert (host.engine.keylock, host.engine.pitch) == (False, 0.0)


def test_feedback_sends_keylock_and_pitch_when_they_change(
    served: tuple[FakeHost, OscServer],
) -> None:
    host, server = served
    feedback = Feedback(server)
    feedback.changes(server.control.state())
    assert server.datagram(m("/transport/keylock", 1), SENDER) == []
    host.block()
    changes = feedback.changes(server.control.state())
    assert [c for c in changes if c[0] != "/transport/position"] == [("/transport/keylock", [1])]
    assert server.datagram(m("/transport/pitch", 7), SENDER) == []
    host.block()
    changes = feedback.changes(server.control.state())
    assert [c for c in changes if c[0] != "/transport/position"] == [("/transport/pitch", [7.0])]
