"""Feedback that stays (issue 26): ``/subscribe ... seconds`` and ``serve --feedback``.

A control surface such as TouchOSC cannot renew ``/subscribe`` every 10 s without
scripting: it subscribes once with 0 seconds (until ``/unsubscribe``), or the
daemon is started with ``--feedback HOST:PORT`` and sends it feedback from the
start. In-process on the real registry and mixer (``tests/osc_host.py``); the
subscription time is the server's constructor argument, and expiry is checked
by asking which subscribers are left at a time far ahead.
"""

from __future__ import annotations

import socket
import time

import pytest
from osc_host import SENDER, m, make_server, received

from stemdeck.core.errors import ParameterError
from stemdeck.daemon.cli.parser import build_parser
from stemdeck.daemon.osc import Feedback, limits

LATER = 1e6  # seconds: past any subscription but one until /unsubscribe


def left_at(server, seconds_ahead: float) -> list[tuple[str, int]]:
    """The subscribers that still get feedback ``seconds_ahead`` from now."""
    return [t for t, _, _ in server.control.feedback_targets(time.monotonic() + seconds_ahead)]


def receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5.0)
    return s


@pytest.fixture
def served():
    host, server = make_server(subscription_seconds=10.0)
    yield host, server
    server.sock.close()


def test_seconds_0_subscribes_until_unsubscribe(served) -> None:
    _host, server = served
    assert server.datagram(m("/subscribe", 50000, "names", 0), SENDER) == [
        ("/subscribe", [50000, "names", 0])
    ]
    assert server.datagram(m("/subscribe", 50001), SENDER) == [("/subscribe", [50001, "names"])]
    assert server.datagram(m("/subscribe", 50002, 2.5), SENDER) == [
        ("/subscribe", [50002, "names", 2.5])
    ]
    assert left_at(server, 5.0) == [("127.0.0.1", 50000), ("127.0.0.1", 50001)]
    assert left_at(server, LATER) == [("127.0.0.1", 50000)]
    assert server.datagram(m("/unsubscribe", 50000), SENDER) == [("/unsubscribe", [50000])]
    assert left_at(server, 0.0) == []


def test_a_repeated_subscribe_until_unsubscribe_gets_the_full_state_again(served) -> None:
    """A surface that subscribes until /unsubscribe says /subscribe again only when it
    starts again (a reload): it gets every value again. A renewal with a lifetime (a
    client renewing every few seconds) gets only the changes."""
    _host, server = served

    def fresh() -> list[tuple[tuple[str, int], bool]]:
        return [(t, f) for t, _, f in server.control.feedback_targets(time.monotonic())]

    server.datagram(m("/subscribe", 50000, "names", 0), SENDER)
    server.datagram(m("/subscribe", 50001, "names"), SENDER)
    assert fresh() == [(("127.0.0.1", 50000), True), (("127.0.0.1", 50001), True)]
    assert fresh() == [(("127.0.0.1", 50000), False), (("127.0.0.1", 50001), False)]
    server.datagram(m("/subscribe", 50000, "names", 0), SENDER)  # reloaded
    server.datagram(m("/subscribe", 50001, "names"), SENDER)  # renewed
    assert fresh() == [(("127.0.0.1", 50000), True), (("127.0.0.1", 50001), False)]


def test_the_latest_subscribe_sets_the_lifetime(served) -> None:
    _host, server = served
    server.datagram(m("/subscribe", "index", 0), SENDER)  # the sender's own port
    assert left_at(server, LATER) == [SENDER]
    assert server.datagram(m("/subscribe", "index"), SENDER) == [
        ("/subscribe", [SENDER[1], "index"])
    ]
    assert left_at(server, LATER) == []  # back to the 10 s of a plain /subscribe
    server.datagram(m("/subscribe", "index", 0), SENDER)
    assert left_at(server, LATER) == [SENDER]


def test_subscriptions_until_unsubscribe_count_in_the_caps(served) -> None:
    _host, server = served
    for port in range(50000, 50000 + limits.SUBSCRIBERS_PER_HOST):
        assert server.datagram(m("/subscribe", port, "names", 0), (SENDER[0], port)) == [
            ("/subscribe", [port, "names", 0])
        ]
    assert server.datagram(m("/subscribe", 60000, "names", 0), SENDER) == [
        ("/error", ["/subscribe: 8 subscribers from 127.0.0.1 already; at most 8 per host"])
    ]
    assert server.control.subscriber_count() == limits.SUBSCRIBERS_PER_HOST


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((9001, "names", -1), "/subscribe seconds must be a number >= 0 (0: until /unsubscribe), "
         "got -1"),
        ((9001, -0.5), "/subscribe seconds must be a number >= 0 (0: until /unsubscribe), "
         "got -0.5"),
        ((9001, "names", float("inf")), "/subscribe seconds must be a number >= 0 "
         "(0: until /unsubscribe), got inf"),
        ((9001, "names", float("nan")), "/subscribe seconds must be a number >= 0 "
         "(0: until /unsubscribe), got nan"),
        ((9001, "names", True), "/subscribe seconds must be a number >= 0 "
         "(0: until /unsubscribe), got True"),
        ((9001, "names", "index"), "/subscribe seconds must be a number >= 0 "
         "(0: until /unsubscribe), got 'index'"),
        ((9001, "names", 0, 1), "/subscribe takes [port] [form] [seconds], got 4 arguments"),
        (("forever",), "/subscribe takes [port] ['names', 'index', 'reaper' or 'ardour'] "
         "[seconds], got 'forever'"),
    ],
)  # fmt: skip
def test_bad_seconds_are_refused_and_subscribe_nothing(served, args: tuple, error: str) -> None:
    _host, server = served
    assert server.datagram(m("/subscribe", *args), SENDER) == [("/error", [error])]
    assert server.control.subscriber_count() == 0


def test_a_fixed_target_never_expires_and_is_outside_the_caps(served) -> None:
    _host, server = served
    fixed = ("127.0.0.1", 9001)
    server.control.add_feedback_target(fixed)
    for port in range(50000, 50000 + limits.SUBSCRIBERS_PER_HOST):
        assert server.datagram(m("/subscribe", port), (SENDER[0], port)) == [
            ("/subscribe", [port, "names"])
        ]
    assert left_at(server, LATER) == [fixed]
    # Its own /subscribe changes the form, not the lifetime; /unsubscribe ends it.
    assert server.datagram(m("/subscribe", "index", 5), fixed) == [
        ("/subscribe", [9001, "index", 5])
    ]
    assert server.control.feedback_targets(time.monotonic() + LATER) == [(fixed, "index", True)]
    assert server.datagram(m("/unsubscribe"), fixed) == [("/unsubscribe", [9001])]
    assert left_at(server, 0.0) == []


def test_a_fixed_target_in_reapers_form_gets_reapers_addresses() -> None:
    """``--feedback HOST:PORT,reaper``: a surface laid out for REAPER (TouchOSC's
    REAPER layouts) gets the channels as REAPER's tracks, with no /subscribe."""
    _host, server = make_server()
    surface = receiver()
    try:
        server.control.add_feedback_target(surface.getsockname(), "reaper")
        assert server.control.feedback_targets(time.monotonic() + LATER) == [
            (surface.getsockname(), "reaper", True)
        ]
        feedback = Feedback(server)
        feedback.tick()
        first = received(surface, "/time")  # the full state, as REAPER sends it
        assert ("/track/3/name", ["vocals"]) in first and ("/track/1/volume", [0.75]) in first
        server.datagram(m("/ch/vocals/mute", 1), SENDER)  # channel 3 here (osc_host.py)
        feedback.tick()
        change = received(surface, "/time")[0]
        assert change == ("/track/3/mute", [1]) and type(change[1][0]) is int
    finally:
        surface.close()
        server.sock.close()


def test_a_fixed_target_gets_the_state_then_every_change() -> None:
    _host, server = make_server(subscription_seconds=0.0)  # a /subscribe would end at once
    surface = receiver()
    try:
        server.control.add_feedback_target(surface.getsockname())
        server.datagram(m("/subscribe", 50000), SENDER)  # expires at once: 0 s here
        assert left_at(server, 1.0) == [surface.getsockname()]
        feedback = Feedback(server)
        feedback.tick()
        first = received(surface, "/transport/position")
        assert ("/ch/vocals/mute", [0]) in first and ("/master/fader", [0.75]) in first
        server.datagram(m("/ch/vocals/mute", 1), SENDER)
        feedback.tick()
        assert received(surface, "/transport/position")[0] == ("/ch/vocals/mute", [1])
    finally:
        surface.close()
        server.sock.close()


def test_resolve_gives_the_address_the_socket_sends_to(served) -> None:
    _host, server = served
    assert server.resolve("localhost", 9001) == ("127.0.0.1", 9001)
    assert server.resolve("127.0.0.1", 9001) == ("127.0.0.1", 9001)
    with pytest.raises(ParameterError) as err:
        server.resolve("::1", 9001, what="--feedback")
    assert str(err.value) == (
        "--feedback ::1:9001: cannot resolve '::1' (Address family for hostname not supported)"
    )


@pytest.mark.parametrize(
    ("argv", "targets"),
    [
        ([], []),
        (["--feedback", "9001"], [("127.0.0.1", 9001, None)]),
        (
            ["--feedback", "192.168.1.20:9001", "--feedback", "[::1]:8000"],
            [("192.168.1.20", 9001, None), ("::1", 8000, None)],
        ),
        (
            ["--feedback", "127.0.0.1:9001,reaper", "--feedback", "8000,index"],
            [("127.0.0.1", 9001, "reaper"), ("127.0.0.1", 8000, "index")],
        ),
    ],
)
def test_serve_takes_feedback_targets(
    argv: list[str], targets: list[tuple[str, int, str | None]]
) -> None:
    args = build_parser().parse_args(["serve", "song.wav", *argv])
    assert args.feedback == targets


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("host:0", "port must be 1..65535, got 'host:0'"),
        ("host:port", "expected [HOST:]PORT, got 'host:port'"),
        (
            "host:9001,cubase",
            "the form after the comma is one of names, index, reaper, ardour, got "
            "'host:9001,cubase'",
        ),
        (
            "host:9001,",
            "the form after the comma is one of names, index, reaper, ardour, got 'host:9001,'",
        ),
        (
            "host:9001,reaper,x",
            "the form after the comma is one of names, index, reaper, "
            "ardour, got 'host:9001,reaper,x'",
        ),
    ],
)
def test_serve_refuses_a_bad_feedback_target(
    capsys: pytest.CaptureFixture[str], value: str, error: str
) -> None:
    with pytest.raises(SystemExit) as code:
        build_parser().parse_args(["serve", "song.wav", "--feedback", value])
    assert code.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"stemdeck serve: error: argument --feedback: {error}"
    )
