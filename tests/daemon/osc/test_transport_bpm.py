"""``/transport/bpm`` (issue 23): the rate that plays the grid at a tempo; the query,
``/state``, feedback, and one exact ``/error`` for each bad tempo, nothing changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from osc_host import SENDER, FakeHost, make_server
from osc_replay import Recorder, osc

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.mixer.commands import Rate
from stemdeck.daemon.osc import Feedback, OscServer
from stemdeck.daemon.osc.wire import encode_bundle

GRID = BeatGrid(120.0, 0.5, 4)


@pytest.fixture
def served() -> Iterator[tuple[FakeHost, OscServer, Recorder]]:
    host, server = make_server()
    host.give_grid(GRID)
    yield host, server, Recorder(host)
    server.sock.close()


def send(server: OscServer, *messages: bytes) -> list[tuple[str, list]]:
    data = messages[0] if len(messages) == 1 else encode_bundle(list(messages))
    return [(a, list(v)) for a, v in server.datagram(data, SENDER)]


def test_transport_bpm_sets_the_rate_that_plays_the_grid_at_that_tempo(served) -> None:
    host, server, posted = served
    assert send(server, osc("/transport/bpm")) == [("/transport/bpm", [120.0])]
    assert send(server, osc("/transport/bpm", "f", 128.0)) == []
    assert posted.take() == [Rate(128.0 / 120.0)]
    host.block()
    assert host.engine.rate == 128.0 / 120.0
    assert send(server, osc("/transport/bpm")) == [("/transport/bpm", [128.0])]
    assert send(server, osc("/transport/bpm", "i", 60)) == []  # an int is a number
    assert posted.take() == [Rate(0.5)]
    host.block()
    state = server.control.state()
    i = state.index(("/transport/rate", [0.5]))
    assert state[i + 1] == ("/transport/bpm", [60.0])
    # /transport/rate moves the tempo; a grid edit too (the rate stays)
    assert send(server, osc("/transport/rate", "f", 1.5)) == []
    host.block()
    assert send(server, osc("/transport/bpm")) == [("/transport/bpm", [180.0])]
    assert send(server, osc("/track/bpm", "f", 100.0)) == [("/track/grid", [100.0, 0.5, 4])]
    assert send(server, osc("/transport/bpm")) == [("/transport/bpm", [150.0])]


def test_transport_bpm_reads_the_grid_as_the_bundle_leaves_it(served) -> None:
    _, server, posted = served
    bundle = [osc("/track/bpm", "f", 100.0), osc("/transport/bpm", "f", 150.0)]
    assert send(server, *bundle) == [("/track/grid", [100.0, 0.5, 4])]
    assert posted.take() == [Rate(1.5)]


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (
            osc("/transport/bpm", "f", 300.0),
            "/transport/bpm 300 needs rate 2.5 on the grid's 120 BPM; the rate must be "
            "within 0.5..2 (60..240 BPM for this track)",
        ),
        (
            osc("/transport/bpm", "f", 0.0),
            "/transport/bpm 0 needs rate 0 on the grid's 120 BPM; the rate must be "
            "within 0.5..2 (60..240 BPM for this track)",
        ),
        (
            osc("/transport/bpm", "f", -128.0),
            "/transport/bpm -128 needs rate -1.067 on the grid's 120 BPM; the rate must be "
            "within 0.5..2 (60..240 BPM for this track)",
        ),
        (osc("/transport/bpm", "f", float("nan")), "/transport/bpm got nan"),
        (osc("/transport/bpm", "f", float("inf")), "/transport/bpm got inf"),
        (osc("/transport/bpm", "s", "fast"), "/transport/bpm takes a number, got ['fast']"),
        (
            osc("/transport/bpm", "ff", 128.0, 1.0),
            "/transport/bpm takes a number, got [128.0, 1.0]",
        ),
        (osc("/transport/bpm", "T"), "/transport/bpm takes a number, got [True]"),
    ],
)
def test_a_bad_tempo_is_one_error_and_nothing_changes(served, message: bytes, reply: str) -> None:
    host, server, posted = served
    before = host.engine_state()
    assert send(server, message) == [("/error", [reply])]
    assert send(server, message, osc("/ch/1/mute", "i", 1)) == [("/error", [reply])]
    assert posted.take() == []
    assert host.engine_state() == before
    assert host.registry.get("/ch/1/mute") == 0


@pytest.mark.parametrize("message", [osc("/transport/bpm"), osc("/transport/bpm", "f", 128.0)])
def test_transport_bpm_without_a_grid_is_the_track_bpm_error(message: bytes) -> None:
    host, server = make_server()
    try:
        assert send(server, message) == [
            ("/error", ["/transport/bpm: no beat grid yet for the track"])
        ]
        assert host.engine.rate == 1.0
        state = server.control.state()
        assert state[state.index(("/transport/rate", [1.0])) + 1] == ("/transport/bpm", [0.0])
    finally:
        server.sock.close()


def test_feedback_sends_the_tempo_when_the_rate_or_the_grid_changes(served) -> None:
    host, server, _ = served
    feedback = Feedback(server)
    feedback.changes(server.control.state())
    send(server, osc("/transport/rate", "f", 1.25))
    host.block()
    changes = feedback.changes(server.control.state())
    assert [c for c in changes if c[0] != "/transport/position"] == [
        ("/transport/rate", [1.25]),
        ("/transport/bpm", [150.0]),
    ]
    send(server, osc("/track/grid/halve"))
    assert feedback.changes(server.control.state()) == [
        ("/transport/bpm", [75.0]),
        ("/track/bpm", [60.0]),
        ("/track/grid", [60.0, 0.5, 4]),
    ]
