"""DAWs and their surfaces over OSC (docs/daw.md): REAPER's transport feedback and track
dialect; Ardour's strips; feedback in their dialects.

Each message is replayed as the DAW or surface sends it, type tags included (REAPER's
``Default.ReaperOSC`` and Ardour's OSC surface source, quoted in docs/daw.md), through
the OSC server's datagram path, and the test asserts what stemdeck did: the commands
the engine was posted, the registry, the replies.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from osc_host import BLOCK, SR, FakeHost, make_server
from osc_replay import Recorder, osc

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.mixer.commands import Pause, Play, Rate, Seek
from stemdeck.core.mixer.params import fader_to_gain
from stemdeck.daemon.osc import Feedback, OscServer, Reply
from stemdeck.daemon.osc.ardour import ardour_feedback
from stemdeck.daemon.osc.reaper import Following, reaper_feedback
from stemdeck.daemon.osc.wire import Message, decode, encode_bundle

SENDER = ("127.0.0.1", 8000)  # REAPER's (or the surface's) address
GRID = BeatGrid(120.0, 0.5, 4)
PATTERN_FILE = Path(__file__).parents[3] / "presets" / "daw" / "stemdeck.ReaperOSC"


@pytest.fixture
def served() -> Iterator[tuple[FakeHost, OscServer, Recorder]]:
    host, server = make_server()
    host.give_grid(GRID)
    yield host, server, Recorder(host)
    server.sock.close()


def send(server: OscServer, *messages: bytes) -> list[tuple[str, list]]:
    data = messages[0] if len(messages) == 1 else encode_bundle(list(messages))
    return [(a, list(v)) for a, v in server.datagram(data, SENDER)]


# -- REAPER: the shipped pattern file --------------------------------------------------------
def test_the_pattern_file_asks_reaper_for_the_transport_only() -> None:
    actions = {}
    for line in PATTERN_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, *patterns = line.split()
            actions[name] = patterns
    assert {name: p for name, p in actions.items() if p and not p[0].isdigit()} == {
        "REAPER_TRACK_FOLLOWS": ["REAPER"],
        "DEVICE_TRACK_FOLLOWS": ["DEVICE"],
        "DEVICE_TRACK_BANK_FOLLOWS": ["DEVICE"],
        "DEVICE_FX_FOLLOWS": ["DEVICE"],
        "TIME": ["f/time"],
        "PLAY": ["t/play"],
        "STOP": ["t/stop"],
        "PAUSE": ["t/pause"],
        "PLAY_RATE": ["f/playrate/raw"],
        "TEMPO": ["f/tempo/raw"],
    }


def test_every_address_of_the_pattern_file_is_taken(served) -> None:
    host, server, posted = served
    text = PATTERN_FILE.read_text().replace("#TRACK_", "TRACK_")  # the optional lines too
    patterns = [p for line in text.splitlines() if line[:1].isupper() for p in line.split()[1:]]
    addresses = [p[1:].replace("@", "1") for p in patterns if p[0] in "tfnb"]
    values = {
        "/time": 1.0,
        "/play": 1.0,
        "/stop": 1.0,
        "/pause": 1.0,
        "/playrate/raw": 1.0,
        "/tempo/raw": 120.0,
        "/track/1/volume": 0.5,
        "/track/1/mute": 1.0,
        "/track/1/solo": 1.0,
        "/track/1/pan": 0.25,
    }
    assert addresses == list(values)
    for address, value in values.items():
        assert send(server, osc(address, "f", value)) == []
        host.block()
    # stemdeck rolled on from 1 s (a FakeHost plays); REAPER starts from where it stood,
    # and a tempo while it stands maps its time again (the pause fade moved stemdeck on)
    assert posted.take() == [
        Seek(1.0),
        Seek(1.0),
        Play(),
        Pause(),
        Pause(),
        Rate(1.0),
        Rate(1.0),
        Seek(1.0),
    ]
    assert host.registry_as_engine()[:4] == (
        (fader_to_gain(0.5), 1.0, 1.0, 1.0),
        (True, False, False, False),
        (True, False, False, False),
        (-0.5, 0.0, 0.0, 0.0),
    )


# -- REAPER's transport ---------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reaper(served) -> tuple[FakeHost, Callable[..., list], Recorder, Clock]:
    host, server, posted = served
    clock = Clock()
    server.control.reaper.clock = clock
    return host, lambda *m: send(server, *m), posted, clock


def test_reaper_play_stop_pause_drive_the_transport(served) -> None:
    host, reaper_sends, posted, _ = reaper(served)
    # REAPER's stop: /stop 1 and /play 0 (t feedback is 1 or 0, as floats)
    assert reaper_sends(osc("/stop", "f", 1.0), osc("/play", "f", 0.0)) == []
    assert posted.take() == [Pause()]
    for _ in range(20):
        host.block()
    assert host.transport.value("playing") == [0]
    assert reaper_sends(osc("/stop", "f", 0.0), osc("/play", "f", 1.0)) == []
    assert posted.take() == [Play()]
    host.block()
    assert host.transport.value("playing") == [1]
    assert reaper_sends(osc("/play", "f", 0.0), osc("/pause", "f", 1.0)) == []
    assert posted.take() == [Pause()]
    assert reaper_sends(osc("/pause", "i", 0)) == []  # an end of a state: nothing
    assert posted.take() == []
    assert reaper_sends(osc("/play")) == []  # a surface's trigger (t with no argument)
    assert posted.take() == [Play()]
    host.block()
    assert host.transport.value("playing") == [1]


def test_reaper_time_follows_a_locate_not_every_tick(served) -> None:
    host, reaper_sends, posted, clock = reaper(served)
    # Stopped at 2.5 s: the first /time is followed
    assert reaper_sends(osc("/stop", "f", 1.0), osc("/time", "f", 2.5)) == []
    assert posted.take() == [Pause(), Seek(2.5)]
    for _ in range(20):
        host.block()
    assert host.transport.position() == 2.5 + BLOCK / SR  # the pause fade read one block
    assert reaper_sends(osc("/time", "f", 2.5)) == []  # the same: nothing
    assert posted.take() == []
    # REAPER plays from where it stood: stemdeck too
    assert reaper_sends(osc("/play", "f", 1.0)) == []
    assert posted.take() == [Seek(2.5), Play()]
    host.block()
    assert host.transport.position() == 2.5 + BLOCK / SR
    # Rolling: reports along REAPER's clock are ticks, not locates
    for step in range(1, 6):
        clock.now += 0.03
        reaper_sends(osc("/time", "f", 2.5 + 0.03 * step))
    clock.now += 0.03
    reaper_sends(osc("/time", "f", 2.5 + 0.18 + 0.2))  # 0.2 s off: jitter, not a locate
    assert posted.take() == []
    clock.now += 0.03
    assert reaper_sends(osc("/time", "f", 1.0)) == []  # back to 1 s: a locate
    assert posted.take() == [Seek(1.0)]
    clock.now += 0.03
    assert reaper_sends(osc("/time", "f", 1.5)) == []  # 0.47 s ahead of REAPER's clock
    assert posted.take() == [Seek(1.5)]


def test_reaper_tempo_and_play_rate_set_the_rate_and_map_a_locate(served) -> None:
    _, reaper_sends, posted, _ = reaper(served)
    assert reaper_sends(osc("/tempo/raw", "f", 128.0)) == []
    assert posted.take() == [Rate(128.0 / 120.0)]
    assert reaper_sends(osc("/playrate/raw", "f", 1.5)) == []
    assert posted.take() == [Rate(128.0 * 1.5 / 120.0)]
    assert reaper_sends(osc("/playrate/raw", "f", 1.0)) == []
    assert posted.take() == [Rate(128.0 / 120.0)]
    # REAPER's 3 s at 128 BPM are 6.4 beats: the track's 3.2 s at 120 BPM
    assert reaper_sends(osc("/stop", "f", 1.0), osc("/time", "f", 3.0)) == []
    assert posted.take() == [Pause(), Seek(3.0 * (128.0 / 120.0))]
    # ... from the anchor
    assert send_anchor(reaper_sends, 0.25) == [("/sync/anchor", [0.25])]
    assert reaper_sends(osc("/time", "f", 1.5)) == []
    assert posted.take() == [Seek(0.25 + 1.5 * (128.0 / 120.0))]
    # a new tempo while REAPER stands: its last time on the new mapping
    assert reaper_sends(osc("/tempo/raw", "f", 96.0)) == []
    assert posted.take() == [Rate(96.0 / 120.0), Seek(0.25 + 1.5 * (96.0 / 120.0))]
    # past the track's end: its end
    assert reaper_sends(osc("/time", "f", 100.0)) == []
    assert posted.take() == [Seek(4.0)]


def test_reapers_whole_state_in_one_bundle_counts_in_order(served) -> None:
    _, reaper_sends, posted, _ = reaper(served)
    # as a device starts: the play state, the time, then the rate and tempo
    start = [
        osc("/stop", "f", 1.0),
        osc("/play", "f", 0.0),
        osc("/pause", "f", 0.0),
        osc("/time", "f", 3.0),
        osc("/playrate/raw", "f", 1.0),
        osc("/tempo/raw", "f", 128.0),
    ]
    assert reaper_sends(*start) == []
    # the tempo maps the time the bundle gave: the last seek wins, in the same block
    assert posted.take() == [
        Pause(),
        Seek(3.0),
        Rate(1.0),
        Rate(128.0 / 120.0),
        Seek(3.0 * (128.0 / 120.0)),
    ]
    assert served[1].control.reaper.following() == Following(
        rolling=False, time=(3.0, 1000.0), tempo=128.0, playrate=1.0
    )
    host = served[0]
    for _ in range(20):
        host.block()
    frame = round(3.0 * (128.0 / 120.0) * SR)  # the pause fade reads one block on
    assert host.transport.position() == (frame + BLOCK) / SR


def send_anchor(reaper_sends: Callable[..., list], seconds: float) -> list:
    return reaper_sends(osc("/sync/anchor", "f", seconds))


def test_reaper_without_a_grid_follows_the_play_rate_and_the_seconds() -> None:
    host, server = make_server()
    posted = Recorder(host)
    try:
        assert send(server, osc("/tempo/raw", "f", 128.0)) == [
            ("/error", ["/tempo/raw: no beat grid yet for the track"])
        ]
        assert send(server, osc("/playrate/raw", "f", 0.75)) == []
        assert send(server, osc("/stop", "f", 1.0), osc("/time", "f", 3.0)) == []
        assert posted.take() == [Rate(0.75), Pause(), Seek(3.0)]
    finally:
        server.sock.close()


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (
            osc("/tempo/raw", "f", 300.0),
            "/tempo/raw 300 needs rate 2.5 on the grid's 120 BPM; the rate must be within "
            "0.5..2 (60..240 BPM for this track)",
        ),
        (osc("/tempo/raw", "f", 0.0), "/tempo/raw takes a tempo above 0 BPM, got 0"),
        (osc("/tempo/raw", "f", float("nan")), "/tempo/raw got nan"),
        (osc("/tempo/raw", "s", "120"), "/tempo/raw takes a number, got ['120']"),
        (osc("/playrate/raw", "f", 4.0), "/playrate/raw must be within 0.5..2, got 4"),
        (osc("/time", "f", float("nan")), "/time got nan"),
        (osc("/time", "f", float("-inf")), "/time got -inf"),
        (osc("/time", "s", "0:01.000"), "/time takes a number, got ['0:01.000']"),
        (osc("/time"), "/time takes a number, got []"),
        (
            osc("/play", "s", "1"),
            "/play takes no arguments or one button value (1 press, 0 release), got ['1']",
        ),
        (osc("/stop", "f", float("nan")), "/stop got nan"),
        (
            osc("/pause", "ii", 1, 1),
            "/pause takes no arguments or one button value (1 press, 0 release), got [1, 1]",
        ),
    ],
)
def test_bad_reaper_feedback_is_one_error_and_nothing_changes(
    served, message: bytes, reply: str
) -> None:
    host, reaper_sends, posted, _ = reaper(served)
    before = host.engine_state()
    assert reaper_sends(osc("/play", "f", 1.0), message) == [("/error", [reply])]
    assert posted.take() == []
    assert host.engine_state() == before
    assert served[1].control.reaper.following() == Following()


# -- REAPER's track dialect (TouchOSC's REAPER layouts) -------------------------------------
def test_reaper_track_messages_set_the_channels(served) -> None:
    host, server, _ = served
    reg = host.registry
    assert send(server, osc("/track/2/volume", "f", 0.5)) == []
    assert reg.get("/ch/2/fader") == 0.5
    assert send(server, osc("/track/3/volume/db", "f", -6.0)) == []
    assert reg.get("/ch/3/db") == pytest.approx(-6.0, abs=1e-12)
    assert send(server, osc("/track/3/mute", "f", 1.0)) == []
    assert send(server, osc("/track/1/solo", "i", 1)) == []
    assert send(server, osc("/track/4/pan", "f", 0.25)) == []
    assert send(server, osc("/track/1/pan", "f", 1.0)) == []
    assert (reg.get("/ch/3/mute"), reg.get("/ch/1/solo")) == (1, 1)
    assert (reg.get("/ch/4/pan"), reg.get("/ch/1/pan")) == (-0.5, 1.0)
    assert send(server, osc("/track/3/mute", "f", 0.0)) == []
    assert reg.get("/ch/3/mute") == 0
    # toggles: t, no argument or 1 flips; 0 does nothing; two in a bundle cancel
    assert send(server, osc("/track/2/mute/toggle")) == []
    assert reg.get("/ch/2/mute") == 1
    assert send(server, osc("/track/2/mute/toggle", "f", 0.0)) == []
    assert reg.get("/ch/2/mute") == 1
    assert send(server, osc("/track/2/mute/toggle", "f", 1.0)) == []
    assert reg.get("/ch/2/mute") == 0
    toggles = [osc("/track/1/solo/toggle"), osc("/track/1/solo/toggle")]
    assert send(server, *toggles) == []
    assert reg.get("/ch/1/solo") == 1
    # queries answer on the address as sent, in the dialect's units
    assert send(server, osc("/track/2/volume"), osc("/track/4/pan"), osc("/track/3/mute")) == [
        ("/track/2/volume", [0.5]),
        ("/track/4/pan", [0.25]),
        ("/track/3/mute", [0]),
    ]
    assert host.engine_state()[:4] == host.registry_as_engine()[:4]
    assert host.engine_state()[0][1] == fader_to_gain(0.5)


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (
            osc("/track/5/volume", "f", 0.5),
            "/track/5/volume: track '5' is not a channel; tracks are 1..4 "
            "(drums, bass, vocals, other)",
        ),
        (
            osc("/track/0/mute", "i", 1),
            "/track/0/mute: track '0' is not a channel; tracks are 1..4 "
            "(drums, bass, vocals, other)",
        ),
        (
            osc("/track/bass/mute", "i", 1),
            "/track/bass/mute: track 'bass' is not a channel; tracks are 1..4 "
            "(drums, bass, vocals, other)",
        ),
        (osc("/track/2/volume", "f", 1.5), "/track/2/volume takes 0..1, got 1.5"),
        (osc("/track/2/volume", "f", float("nan")), "/track/2/volume got nan"),
        (osc("/track/2/volume", "s", "loud"), "/track/2/volume takes a number, got ['loud']"),
        (osc("/track/2/volume/db", "f", 12.0), "/track/2/volume/db takes at most +10 dB, got 12"),
        (osc("/track/2/pan", "f", -0.5), "/track/2/pan takes 0..1, got -0.5"),
        (osc("/track/2/mute", "f", 0.5), "/track/2/mute takes 1/0 or T/F, got 0.5"),
        (osc("/track/2/solo", "ii", 1, 0), "/track/2/solo takes one of 1/0/T/F, got 2 arguments"),
        (
            osc("/track/2/mute/toggle", "s", "x"),
            "/track/2/mute/toggle takes no arguments or one button value (1 press, 0 release), "
            "got ['x']",
        ),
        (osc("/track/2/recarm", "i", 1), "/track/2/recarm: unknown address"),
        (osc("/track/volume", "f", 0.5), "/track/volume: unknown address"),
    ],
)
def test_bad_track_messages_are_one_error_and_nothing_changes(
    served, message: bytes, reply: str
) -> None:
    host, server, posted = served
    before = (host.engine_state(), host.registry_as_engine())
    assert send(server, osc("/track/1/mute", "i", 1), message) == [("/error", [reply])]
    assert posted.take() == []
    assert (host.engine_state(), host.registry_as_engine()) == before


# -- Ardour's strips --------------------------------------------------------------------------
def test_ardour_strip_messages_set_the_channels(served) -> None:
    host, server, _ = served
    reg = host.registry
    assert send(server, osc("/strip/fader", "if", 1, 0.5)) == []
    assert reg.get("/ch/1/fader") == 0.5
    assert send(server, osc("/strip/gain", "if", 2, -6.0)) == []
    assert reg.get("/ch/2/db") == pytest.approx(-6.0, abs=1e-12)
    assert send(server, osc("/strip/gain", "ff", 2.0, -200.0)) == []  # below -192: off
    assert reg.get("/ch/2/gain") == 0.0
    assert send(server, osc("/strip/mute", "ii", 3, 1)) == []
    assert send(server, osc("/strip/solo", "if", 4, 1.0)) == []
    assert (reg.get("/ch/3/mute"), reg.get("/ch/4/solo")) == (1, 1)
    assert send(server, osc("/strip/mute", "if", 3, 0.5)) == []  # Ardour: (int) 0.5 is 0
    assert reg.get("/ch/3/mute") == 0
    assert send(server, osc("/strip/pan_stereo_position", "if", 1, 0.0)) == []
    assert reg.get("/ch/1/pan") == 1.0  # Ardour's 0 is hard right
    assert send(server, osc("/strip/pan_stereo_position", "if", 2, 0.75)) == []
    assert reg.get("/ch/2/pan") == -0.5
    # the strip number in the path, either place
    assert send(server, osc("/strip/3/fader", "f", 0.25)) == []
    assert send(server, osc("/strip/fader/4", "f", 1.0)) == []
    assert (reg.get("/ch/3/fader"), reg.get("/ch/4/fader")) == (0.25, 1.0)
    # queries: the value alone, on the address as sent (as Ardour answers)
    assert send(
        server,
        osc("/strip/fader", "i", 1),
        osc("/strip/pan_stereo_position", "i", 2),
        osc("/strip/solo/4"),
        osc("/strip/gain", "i", 2),
    ) == [
        ("/strip/fader", [0.5]),
        ("/strip/pan_stereo_position", [0.75]),
        ("/strip/solo/4", [1]),
        ("/strip/gain", [float("-inf")]),
    ]
    assert host.engine_state()[:4] == host.registry_as_engine()[:4]


STRIPS = "strips are 1..4 (drums, bass, vocals, other)"


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        (osc("/strip/fader", "if", 5, 0.5), f"/strip/fader: strip '5' is not a channel; {STRIPS}"),
        (osc("/strip/mute", "ii", 0, 1), f"/strip/mute: strip '0' is not a channel; {STRIPS}"),
        (osc("/strip/9/fader", "f", 0.5), f"/strip/9/fader: strip '9' is not a channel; {STRIPS}"),
        (osc("/strip/fader", "ff", 1.5, 0.5), "/strip/fader takes a whole strip number, got 1.5"),
        (
            osc("/strip/fader", "ff", float("nan"), 0.5),
            "/strip/fader takes a whole strip number, got nan",
        ),
        (
            osc("/strip/fader", "sf", "one", 0.5),
            "/strip/fader takes a strip number first, got 'one'",
        ),
        (osc("/strip/fader"), "/strip/fader takes a strip number, then the value"),
        (
            osc("/strip/fader", "ff", 1e30, 0.5),
            "/strip/fader takes a 32-bit strip number, got 1.0000000150474662e+30",
        ),
        (
            osc("/strip/fader", "iff", 1, 0.5, 0.7),
            "/strip/fader takes a strip number and one value, got [1, 0.5, 0.699999988079071]",
        ),
        (osc("/strip/fader", "if", 1, float("nan")), "/strip/fader got nan"),
        (osc("/strip/fader", "if", 1, 1.5), "/strip/fader takes 0..1, got 1.5"),
        (osc("/strip/gain", "if", 1, 11.0), "/strip/gain takes at most +10 dB, got 11"),
        (osc("/strip/gain", "if", 1, float("inf")), "/strip/gain got inf"),
        (
            osc("/strip/pan_stereo_position", "if", 1, -0.1),
            "/strip/pan_stereo_position takes 0..1, got -0.1",
        ),
        (osc("/strip/mute", "is", 1, "yes"), "/strip/mute takes a number, got ['yes']"),
        (osc("/strip/trimdB", "if", 1, 0.0), "/strip/trimdB: unknown address"),
        (osc("/strip/1/2/fader", "f", 0.5), "/strip/1/2/fader: unknown address"),
    ],
)
def test_bad_strip_messages_are_one_error_and_nothing_changes(
    served, message: bytes, reply: str
) -> None:
    host, server, posted = served
    before = (host.engine_state(), host.registry_as_engine())
    assert send(server, osc("/strip/mute", "ii", 1, 1), message) == [("/error", [reply])]
    assert posted.take() == []
    assert (host.engine_state(), host.registry_as_engine()) == before


# -- feedback in the dialects -------------------------------------------------------------------
def test_the_dialects_translate_every_value_they_have_an_address_for() -> None:
    replies: list[Reply] = [
        ("/ch/2/fader", [0.5]),
        ("/ch/2/gain", [0.25]),
        ("/ch/2/db", [-12.0]),
        ("/ch/2/mute", [1]),
        ("/ch/2/solo", [0]),
        ("/ch/2/pan", [-0.5]),
        ("/ch/2/filter", [0.3]),
        ("/master/fader", [0.75]),
        ("/master/db", [0.0]),
        ("/master/mute", [0]),
        ("/transport/playing", [1]),
        ("/transport/position", [1.25]),
        ("/transport/rate", [1.0]),
        ("/transport/bpm", [120.0]),
        ("/channels", ["drums", "bass"]),
        ("/meter", [-6.0, -7.0, -3.0]),
    ]
    assert reaper_feedback(replies) == [
        ("/track/2/volume", [0.5]),
        ("/track/2/volume/db", [-12.0]),
        ("/track/2/mute", [1]),
        ("/track/2/solo", [0]),
        ("/track/2/pan", [0.25]),
        ("/master/volume", [0.75]),
        ("/play", [1]),
        ("/stop", [0]),
        ("/time", [1.25]),
        ("/playrate/raw", [1.0]),
        ("/tempo/raw", [120.0]),
        ("/track/1/name", ["drums"]),
        ("/track/2/name", ["bass"]),
    ]
    assert reaper_feedback([("/transport/bpm", [0.0])]) == []  # no grid: no tempo
    assert ardour_feedback(replies) == [
        ("/strip/fader", [2, 0.5]),
        ("/strip/gain", [2, -12.0]),
        ("/strip/mute", [2, 1.0]),
        ("/strip/solo", [2, 0.0]),
        ("/strip/pan_stereo_position", [2, 0.75]),
        ("/master/fader", [0.75]),
        ("/master/gain", [0.0]),
        ("/master/mute", [0.0]),
        ("/transport_play", [1.0]),
        ("/transport_stop", [0.0]),
        ("/strip/name", [1, "drums"]),
        ("/strip/name", [2, "bass"]),
    ]
    off: list[Reply] = [("/ch/3/db", [float("-inf")]), ("/master/db", [float("-inf")])]
    assert ardour_feedback(off) == [("/strip/gain", [3, -200.0]), ("/master/gain", [-200.0])]
    assert [type(v) for _, args in ardour_feedback(replies) for v in args] == [
        *[int, float] * 5,
        *[float] * 5,
        *[int, str] * 2,
    ]


def _until(sock: socket.socket, address: str) -> list[tuple[str, list]]:
    out: list[tuple[str, list]] = []
    while True:
        msg = decode(sock.recvfrom(65536)[0])
        assert isinstance(msg, Message)
        out.append((msg.address, list(msg.args)))
        if msg.address == address:
            return out


@pytest.mark.parametrize(
    ("form", "last", "changed"),
    [
        ("reaper", "/time", [("/track/2/volume", [0.5]), ("/track/2/volume/db", [-10.0])]),
        ("ardour", "/strip/gain", [("/strip/fader", [2, 0.5]), ("/strip/gain", [2, -10.0])]),
    ],
)
def test_a_subscriber_gets_feedback_in_its_dialect(form: str, last: str, changed: list) -> None:
    host, server = make_server()
    surface = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    surface.bind(("127.0.0.1", 0))
    surface.settimeout(5.0)
    port = surface.getsockname()[1]
    try:
        sender = ("127.0.0.1", port)
        assert server.datagram(osc("/subscribe", "is", port, form), sender) == [
            ("/subscribe", [port, form])
        ]
        feedback = Feedback(server)
        feedback.tick()
        first = _until(surface, "/time" if form == "reaper" else "/strip/name")
        if form == "reaper":
            assert ("/track/4/name", ["other"]) in first and ("/play", [1]) in first
            assert not [a for a, _ in first if a.startswith(("/ch/", "/meter", "/transport/"))]
        else:
            assert ("/strip/name", [1, "drums"]) in first and ("/transport_play", [1.0]) in first
        while True:  # the rest of the round
            try:
                surface.settimeout(0.2)
                surface.recvfrom(65536)
            except TimeoutError:
                break
        surface.settimeout(5.0)
        server.datagram(osc("/ch/2/fader", "f", 0.5), ("127.0.0.1", 9))
        feedback.tick()
        got = _until(surface, last)
        position = float(np.float32(host.engine.read_meters().position))
        tail = [("/time", [position])] if form == "reaper" else []
        assert got == changed + tail
    finally:
        surface.close()
        server.sock.close()
