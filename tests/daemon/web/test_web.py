"""The web side with aiohttp's test client: OSCQuery namespace, HOST_INFO, LISTEN/IGNORE,
binary OSC through the same dispatch as UDP, and the security rules (docs/web.md)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import socket
import time
import urllib.request
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from osc_host import FakeHost, LibraryHost, latin1_library, make_server

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.daemon.osc import Feedback, OscServer
from stemdeck.daemon.osc.wire import Bundle, Message, decode, encode_bundle, encode_message
from stemdeck.daemon.web import namespace, security, websocket
from stemdeck.daemon.web.server import WebApp, WebServer
from stemdeck.daemon.web.websocket import FRAMES_BURST, SEND_QUEUE

Run = Callable[[TestClient, FakeHost, OscServer, Feedback, WebApp], Awaitable[None]]


def run(test: Run, *, fake: FakeHost | None = None, **app_kwargs: Any) -> None:
    async def main() -> None:
        host, osc = make_server(host=fake)
        feedback = Feedback(osc)
        app = WebApp(osc, **app_kwargs)
        app.attach(feedback)
        try:
            async with TestClient(TestServer(app.app, host="127.0.0.1")) as client:
                await test(client, host, osc, feedback, app)
        finally:
            osc.sock.close()

    asyncio.run(main())


def messages(data: bytes) -> list[tuple[str, list[Any]]]:
    packet = decode(data)
    items = packet.elements if isinstance(packet, Bundle) else [packet]
    out = []
    for m in items:
        assert isinstance(m, Message)
        out.append((m.address, list(m.args)))
    return out


async def receive_osc(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[str, list[Any]]]:
    msg = await ws.receive(timeout=10)
    assert msg.type == WSMsgType.BINARY, msg
    return messages(msg.data)


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def listen(ws: aiohttp.ClientWebSocketResponse, *paths: str) -> None:
    """LISTEN to ``paths``; they are in place once a /ping after them is answered."""
    for path in paths:
        await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": path}))
    await ws.send_bytes(encode_message("/ping"))
    assert await receive_osc(ws) == [("/pong", [])]


async def tick(host: FakeHost, feedback: Feedback, app: WebApp) -> None:
    """One audio block and one feedback round, handed to the web loop and run."""
    host.block()
    await asyncio.get_running_loop().run_in_executor(None, feedback.tick)
    await asyncio.sleep(0)  # the round was posted with call_soon_threadsafe
    await asyncio.sleep(0)


# -- the namespace ------------------------------------------------------------------------
def test_method_node_is_exact() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        r = await client.get("/ch/bass/fader")
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == {
            "FULL_PATH": "/ch/bass/fader",
            "TYPE": "f",
            "ACCESS": 3,
            "DESCRIPTION": "fader position on the console taper: unity at 0.75, +10 dB at 1, "
            "0 is off",
            "VALUE": [0.75],
            "RANGE": [{"MIN": 0.0, "MAX": 1.0}],
        }
        r = await client.get("/ch/2/db")
        assert (await r.json())["VALUE"] == [0.0] and (await r.json())["UNIT"] == ["gain.db"]

    run(body)


def test_channels_by_index_and_name_and_values_follow_osc() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        root = await (await client.get("/")).json()
        assert root["FULL_PATH"] == "/" and root["ACCESS"] == 0
        assert list(root["CONTENTS"]) == [
            "ch",
            "master",
            "fx",
            "transport",
            "sync",
            "cue",
            "quantize",
            "track",
            "scene",
            "channels",
            "meter",
            "state",
            "subscribe",
            "unsubscribe",
            "ping",
            "status",
            "midi",
        ]
        sync = root["CONTENTS"]["sync"]["CONTENTS"]
        assert sync["source"]["VALUE"] == ["off"]
        assert sync["source"]["RANGE"] == [{"VALS": ["off", "jack", "midi", "link"]}]
        assert sync["anchor"]["VALUE"] == [0.0]
        ch = root["CONTENTS"]["ch"]["CONTENTS"]
        assert list(ch) == ["1", "drums", "2", "bass", "3", "vocals", "4", "other"]
        assert list(ch["vocals"]["CONTENTS"]) == [
            "fader",
            "gain",
            "db",
            "mute",
            "solo",
            "pan",
            "filter",
            "echo",
            "reverb",
        ]
        master = root["CONTENTS"]["master"]["CONTENTS"]
        assert list(master) == ["fader", "gain", "db", "mute", "filter"]
        res = ch["vocals"]["CONTENTS"]["filter"]["CONTENTS"]["res"]
        assert (res["FULL_PATH"], res["RANGE"]) == (
            "/ch/vocals/filter/res",
            [{"MIN": 0.0, "MAX": 1.0}],
        )
        # filter has filter/res below it: its own value is one level down, so no node
        # is both a value and a container (python-oscquery refuses such a tree).
        knob = ch["2"]["CONTENTS"]["filter"]["CONTENTS"]["knob"]
        assert (knob["FULL_PATH"], knob["RANGE"]) == (
            "/ch/2/filter/knob",
            [{"MIN": -1.0, "MAX": 1.0}],
        )
        assert list(ch["2"]["CONTENTS"]["filter"]["CONTENTS"]) == ["knob", "res"]
        assert "VALUE" not in ch["2"]["CONTENTS"]["filter"]
        assert list(ch["2"]["CONTENTS"]["echo"]["CONTENTS"]) == ["send", "pre"]
        assert list(master["filter"]["CONTENTS"]) == ["knob", "res"]
        echo = root["CONTENTS"]["fx"]["CONTENTS"]["echo"]["CONTENTS"]
        assert list(echo) == ["ms", "beats", "feedback", "filter", "return"]
        assert echo["ms"]["RANGE"] == [{"MIN": 1.0, "MAX": 4000.0}]
        assert echo["beats"]["RANGE"] == [{"MIN": 0.0625, "MAX": 4.0}]
        assert echo["beats"]["VALUE"] == [0.0]  # the delay is set in ms
        assert echo["ms"]["VALUE"] == [500.0] and echo["return"]["VALUE"] == [1.0]
        reverb = root["CONTENTS"]["fx"]["CONTENTS"]["reverb"]["CONTENTS"]
        assert list(reverb) == ["size", "lowcut", "return"]
        assert reverb["lowcut"]["RANGE"] == [{"MIN": 20.0, "MAX": 1000.0}]
        assert reverb["lowcut"]["UNIT"] == ["time.hz"] and reverb["lowcut"]["VALUE"] == [200.0]
        assert (reverb["size"]["RANGE"], reverb["size"]["VALUE"]) == (
            [{"MIN": 0.0, "MAX": 1.0}],
            [0.5],
        )
        send = ch["bass"]["CONTENTS"]["reverb"]
        assert (send["FULL_PATH"], send["TYPE"], send["ACCESS"]) == ("/ch/bass/reverb", "f", 3)
        assert (send["RANGE"], send["VALUE"]) == ([{"MIN": 0.0, "MAX": 1.0}], [0.0])
        pre = ch["bass"]["CONTENTS"]["echo"]["CONTENTS"]["pre"]
        assert (pre["FULL_PATH"], pre["TYPE"], pre["VALUE"]) == ("/ch/bass/echo/pre", "i", [0])
        assert osc.datagram(encode_message("/ch/drums/fader", [0.0]), ("127.0.0.1", 9)) == []
        # An off level is -inf dB: JSON has no infinity, so VALUE is null.
        assert await (await client.get("/ch/1/db?VALUE")).json() == {"VALUE": [None]}
        assert await (await client.get("/ch/drums/fader?VALUE")).json() == {"VALUE": [0.0]}
        assert await (await client.get("/channels/names?VALUE")).json() == {
            "VALUE": ["drums", "bass", "vocals", "other"]
        }
        assert await (await client.get("/track/list?VALUE")).json() == {
            "VALUE": ["/music/song.wav", "/music/other.flac"]
        }
        assert await (await client.get("/scene/recall?RANGE")).json() == {
            "RANGE": [{"VALS": ["acapella", "instrumental", "unity"]}, {"MIN": 0.0, "MAX": 600.0}]
        }
        assert await (await client.get("/transport/play")).json() == {
            "FULL_PATH": "/transport/play",
            "TYPE": "",
            "ACCESS": 0,
            "DESCRIPTION": "play, fading in",
        }

    run(body)


def test_every_namespace_method_is_an_osc_address() -> None:
    """The namespace describes exactly the address space: every method answers over OSC
    (a query for readable ones), none is unknown to dispatch."""

    async def body(client, host, osc, feedback, app) -> None:
        host.give_grid(BeatGrid(120.0, 0.5, 4))  # /track/bpm, /track/grid answer
        root = await (await client.get("/")).json()
        methods = []

        def walk(node: dict[str, Any]) -> None:
            if "TYPE" in node:
                methods.append(node)
            for child in node.get("CONTENTS", {}).values():
                walk(child)

        walk(root)
        # ch (by index and name, filters, echo and reverb sends included), master, fx/echo
        # (ms and beats included), fx/reverb, transport (/transport/bpm, loops and jumps in
        # beats, keylock and pitch included), sync
        # (source, anchor, tempo, phase, peers), 8 hot cues, quantize, track (the beat
        # grid's 9 included), scene, channels (names, labels), meter,
        # state/subscribe/unsubscribe/ping/status, midi
        assert len(methods) == (
            8 * 11 + 6 + 5 + 3 + 15 + 5 + 5 + 8 * 5 + 1 + 4 + 9 + 3 + 2 + 2 + 5 + 1
        )
        sender = ("127.0.0.1", 7)
        for node in methods:
            if node["ACCESS"] & 1 and node["FULL_PATH"] not in ("/meter/peak", "/meter/rms"):
                path = node["FULL_PATH"]
                replies = osc.datagram(encode_message(path), sender)
                assert replies, path
                assert replies[0][0] != "/error", (path, replies)
                if path not in ("/status", "/transport/seek"):
                    assert replies[0][0] == path
                osc.control._state_sender._tokens.clear()  # lists are rate-limited
                osc.control._state_host._tokens.clear()

    run(body)


@pytest.mark.parametrize(
    ("url", "status", "reply"),
    [
        ("/ch/bass/fader?TYPE", 200, {"TYPE": "f"}),
        ("/ch?TYPE", 200, {}),
        ("/transport/seek?UNIT", 200, {"UNIT": ["time.second"]}),
        (
            "/nowhere",
            404,
            {"error": "no OSC node at '/nowhere'"},
        ),
        ("/ch/9/fader", 404, {"error": "no OSC node at '/ch/9/fader'"}),
        ("/ch//fader", 404, {"error": "no OSC node at '/ch//fader'"}),
        (
            "/ch?COLOUR",
            400,
            {
                "error": "unknown attribute 'COLOUR': this server gives FULL_PATH, CONTENTS, "
                "TYPE, ACCESS, VALUE, RANGE, DESCRIPTION, UNIT and HOST_INFO"
            },
        ),
        ("/ch?VALUE&TYPE", 400, {"error": "ask for one attribute at a time, got VALUE, TYPE"}),
    ],
)
def test_attribute_queries_and_errors(url: str, status: int, reply: dict) -> None:
    async def body(client, host, osc, feedback, app) -> None:
        r = await client.get(url)
        assert r.status == status
        assert await r.json() == reply

    run(body)


def test_value_of_an_action_is_no_content() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        assert (await client.get("/transport/play?VALUE")).status == 204
        assert (await client.get("/track/load?VALUE")).status == 204

    run(body)


def test_host_info() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        r = await client.get("/anything?HOST_INFO")
        assert r.status == 200
        assert await r.json() == {
            "NAME": "stemdeck",
            "EXTENSIONS": namespace.EXTENSIONS,
            "OSC_PORT": osc.address[1],
            "OSC_TRANSPORT": "UDP",
            "OSC_IP": "127.0.0.1",
            "WS_PORT": client.port,
        }
        assert namespace.EXTENSIONS["LISTEN"] is True
        assert namespace.EXTENSIONS["PATH_CHANGED"] is True
        assert namespace.EXTENSIONS["PATH_RENAMED"] is False

    run(body)


def test_page_and_static_files() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        r = await client.get("/", headers={"Accept": "text/html,*/*"})
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        assert '<script src="/_mixer/mixer.js">' in page
        assert '<script src="/_mixer/osc.js">' in page
        assert "https://" not in page  # no CDN: everything ships in the package
        r = await client.get("/_mixer/mixer.js")
        assert r.status == 200 and r.content_type == "text/javascript"
        r = await client.get("/_mixer/secret.txt")
        assert r.status == 404 and await r.json() == {"error": "no file 'secret.txt'"}
        # Without text/html, / is the namespace's root (OSCQuery tools).
        assert (await (await client.get("/")).json())["FULL_PATH"] == "/"

    run(body)


# -- WebSocket: LISTEN / IGNORE --------------------------------------------------------------
def test_listen_streams_changes_from_any_source_and_ignore_stops_them() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        for path in ("/ch/bass/fader", "/ch/1/mute", "/meter", "/transport/playing"):
            await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": path}))
        await ws.send_bytes(encode_message("/ping"))  # LISTENs are in once this is answered
        assert await receive_osc(ws) == [("/pong", [])]
        await tick(host, feedback, app)  # the first round: every listened value
        first = await receive_osc(ws)  # in the order of the LISTENs
        assert [a for a, _ in first] == [
            "/ch/bass/fader",
            "/ch/1/mute",
            "/meter",
            "/transport/playing",
        ]
        assert first[:2] == [("/ch/bass/fader", [0.75]), ("/ch/1/mute", [0])]
        assert first[3] == ("/transport/playing", [1])
        assert len(first[2][1]) == 5  # four channels and the master
        # A change from UDP OSC reaches the page on the address it listened to.
        udp = ("127.0.0.1", 40000)
        assert osc.datagram(encode_message("/ch/2/fader", [0.5]), udp) == []
        assert osc.datagram(encode_message("/ch/drums/mute", [1]), udp) == []
        await tick(host, feedback, app)
        got = await receive_osc(ws)
        assert got[:2] == [("/ch/bass/fader", [0.5]), ("/ch/1/mute", [1])]
        assert [a for a, _ in got] == ["/ch/bass/fader", "/ch/1/mute", "/meter"]
        await ws.send_str(json.dumps({"COMMAND": "IGNORE", "DATA": "/meter"}))
        await ws.send_str(json.dumps({"COMMAND": "IGNORE", "DATA": "/ch/1/mute"}))
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        assert osc.datagram(encode_message("/ch/1/mute", [0]), udp) == []
        assert osc.datagram(encode_message("/ch/2/fader", [0.25]), udp) == []
        await tick(host, feedback, app)
        assert await receive_osc(ws) == [("/ch/bass/fader", [0.25])]
        await ws.close()

    run(body)


def test_the_tree_names_of_values_with_children_are_listened_and_answered() -> None:
    """/transport/loop, /meter and /channels are listed one level down in the tree
    (docs/web.md): LISTEN and OSC take those names, on the name used."""

    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await listen(ws, "/transport/loop/region", "/meter/peak", "/channels/names")
        await tick(host, feedback, app)
        first = await receive_osc(ws)
        assert [a for a, _ in first] == [
            "/transport/loop/region",
            "/meter/peak",
            "/channels/names",
        ]
        assert first[0] == ("/transport/loop/region", [0.0, 0.0])
        assert first[2] == ("/channels/names", ["drums", "bass", "vocals", "other"])
        assert len(first[1][1]) == 5  # four channels and the master
        udp = ("127.0.0.1", 40000)
        region = encode_message("/transport/loop/region", [0.5, 1.5])
        assert osc.datagram(region, udp) == []
        await tick(host, feedback, app)
        got = await receive_osc(ws)
        assert got[0] == ("/transport/loop/region", [0.5, 1.5])
        assert [a for a, _ in got] == ["/transport/loop/region", "/meter/peak"]
        for address in ("/transport/loop/region", "/transport/loop"):
            assert osc.datagram(encode_message(address), udp) == [(address, [0.5, 1.5])]
        assert osc.datagram(encode_message("/channels/names"), udp) == [
            ("/channels/names", ["drums", "bass", "vocals", "other"])
        ]
        assert osc.datagram(encode_message("/transport/loop/region", [1.0]), udp) == [
            ("/error", ["/transport/loop/region takes start and end seconds"])
        ]
        assert osc.datagram(encode_message("/channels/names", [1]), udp) == [
            ("/error", ["/channels/names takes no arguments, got 1"])
        ]
        await ws.close()

    run(body)


def test_a_change_from_one_browser_shows_in_another() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        a = await client.ws_connect("/")
        b = await client.ws_connect("/")
        await b.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/ch/3/pan"}))
        await b.send_bytes(encode_message("/ping"))
        assert await receive_osc(b) == [("/pong", [])]
        await tick(host, feedback, app)
        assert await receive_osc(b) == [("/ch/3/pan", [0.0])]
        await a.send_bytes(encode_message("/ch/vocals/pan", [-0.5]))
        await a.send_bytes(encode_message("/ch/vocals/pan"))
        assert await receive_osc(a) == [("/ch/vocals/pan", [-0.5])]  # the query's reply only
        await tick(host, feedback, app)
        assert await receive_osc(b) == [("/ch/3/pan", [-0.5])]
        await a.close()
        await b.close()

    run(body)


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        (
            "{",
            "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("[1]", 'expected {"COMMAND": "LISTEN"|"IGNORE", "DATA": "/address"}'),
        ('{"COMMAND": "DELETE", "DATA": "/"}', "unknown COMMAND 'DELETE': LISTEN or IGNORE"),
        ('{"COMMAND": "LISTEN", "DATA": 5}', "LISTEN takes an OSC address as DATA, got 5"),
        (
            '{"COMMAND": "LISTEN", "DATA": "/ch/*/fader"}',
            "LISTEN takes one address, not a pattern: '/ch/*/fader'",
        ),
        (
            '{"COMMAND": "LISTEN", "DATA": "/ch/9/fader"}',
            "unknown channel '9' in /ch/9/fader; channels are 1..4 or drums, bass, vocals, other",
        ),
        (
            '{"COMMAND": "LISTEN", "DATA": "/transport/play"}',
            "cannot LISTEN to '/transport/play': no such address with a value",
        ),
    ],
)
def test_bad_text_frames_get_an_error_and_change_nothing(text: str, reply: str) -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        before = host.registry.snapshot()
        await ws.send_str(text)
        assert await receive_json(ws) == {"COMMAND": "ERROR", "DATA": reply}
        assert host.registry.snapshot() == before
        (conn,) = app.connections
        assert conn.listens == {}
        await ws.close()

    run(body)


def test_deeply_nested_json_is_an_error_not_a_dropped_connection() -> None:
    # json.loads raises RecursionError (not ValueError) on '[[[[...': the connection
    # used to end with 1011 and no reply.
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        before = host.registry.snapshot()
        await ws.send_str("[" * 60000)
        assert await receive_json(ws) == {"COMMAND": "ERROR", "DATA": "not JSON: nested too deeply"}
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        assert host.registry.snapshot() == before
        (conn,) = app.connections
        assert conn.listens == {}
        await ws.close()

    run(body)


# -- WebSocket: binary OSC, the same handling as UDP ---------------------------------------
def test_binary_osc_sets_queries_and_replies_on_the_websocket() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await ws.send_bytes(encode_message("/ch/bass/db", [-6.0]))
        await ws.send_bytes(encode_message("/ch/bass/db"))
        assert await receive_osc(ws) == [("/ch/bass/db", [pytest.approx(-6.0, abs=1e-5)])]
        assert host.registry_as_engine() == host.engine_state()[:8]
        # /state: every value in one bundle, exactly what UDP gets.
        await ws.send_bytes(encode_message("/state"))
        got = await receive_osc(ws)
        expected = [*osc.control.state("index"), ("/state/end", [])]
        assert [a for a, _ in got] == [a for a, _ in expected]
        for (_, args), (_, want) in zip(got, expected, strict=True):
            assert args == pytest.approx(list(want), abs=1e-6)  # OSC floats are 32-bit
        await ws.close()

    run(body)


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"/ch/", "malformed OSC: datagram size 4... "),
        (
            encode_message("/ch/bass/fader", ["loud"]),
            "/ch/bass/fader: /ch/2/fader takes a number, got str 'loud'",
        ),
        (encode_message("/ch/bass/fader", [2.0]), "/ch/bass/fader: /ch/2/fader takes 0..1, got 2"),
        (encode_message("/nope", [1]), "/nope: unknown address"),
        (
            encode_bundle([encode_message("/ch/1/mute", [1]), encode_message("/ch/9/mute", [1])]),
            "unknown channel '9' in /ch/9/mute; channels are 1..4 or drums, bass, vocals, other",
        ),
    ],
)
def test_bad_binary_osc_is_one_error_and_changes_nothing(data: bytes, reply: str) -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        udp = osc.datagram(data, ("127.0.0.1", 5))  # the same packet over UDP
        before = host.registry.snapshot()
        await ws.send_bytes(data)
        got = await receive_osc(ws)
        assert got == [("/error", udp[0][1])]
        if not reply.endswith("... "):
            assert got == [("/error", [reply])]
        else:
            assert got[0][1][0].startswith("malformed OSC: ")
        assert host.registry.snapshot() == before
        assert host.registry_as_engine() == host.engine_state()[:8]
        await ws.close()

    run(body)


def test_websocket_subscribe_cannot_name_another_port() -> None:
    # /subscribe 9000 from a WebSocket made a subscriber ("ws:127.0.0.1", 9000) with
    # no route: every feedback round sent UDP to the host name "ws:127.0.0.1" (a
    # resolver lookup in the feedback thread), it outlived the connection, and a
    # client could take over or /unsubscribe another tab's subscription by its port.
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        (conn,) = app.connections
        for address in ("/subscribe", "/unsubscribe"):
            await ws.send_bytes(encode_message(address, [9000]))
            assert await receive_osc(ws) == [
                (
                    "/error",
                    [
                        f"{address} over the WebSocket takes no port: values come back "
                        "on this connection"
                    ],
                )
            ]
        assert osc.control.subscribed() == []
        await ws.send_bytes(encode_message("/subscribe", [conn.sender[1], "index"]))
        assert await receive_osc(ws) == [("/subscribe", [conn.sender[1], "index"])]
        assert osc.control.subscribed() == [conn.sender]
        await ws.close()

    run(body)


def test_scheduled_bundle_replies_come_back_on_the_websocket() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        from stemdeck.daemon.osc.wire import unix_to_timetag

        ws = await client.ws_connect("/")
        later = unix_to_timetag(time.time() + 0.3)
        await ws.send_bytes(encode_bundle([encode_message("/ch/1/mute")], later))
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        assert osc.pending == 1
        osc.start()  # the scheduler thread runs it and replies through the route
        try:
            assert await receive_osc(ws) == [("/ch/1/mute", [0])]
        finally:
            osc.stop()
        await ws.close()

    run(body)


def test_per_connection_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    class Frozen:  # no refill while the frames arrive, however slow the machine
        @staticmethod
        def monotonic() -> float:
            return 1000.0

    monkeypatch.setattr(websocket, "time", Frozen)

    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        for _ in range(FRAMES_BURST + 50):
            await ws.send_bytes(encode_message("/ping"))
        got: list[tuple[str, list[Any]]] = []
        while len(got) < FRAMES_BURST + 1:
            got += await receive_osc(ws)
        errors = [m for m in got if m[0] == "/error"]
        assert errors == [
            (
                "/error",
                ["too many messages: at most 100 a second per connection; some were dropped"],
            )
        ]
        assert got.count(("/pong", [])) == FRAMES_BURST
        assert got[-1][0] == "/error"
        await ws.close()

    run(body)


def test_http_requests_from_one_address_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing limited HTTP: a flood of namespace reads kept the web thread, and so the
    # GIL the audio callback needs, busy building replies.
    clock = [1000.0]

    class Clock:  # no refill unless the test moves it, however slow the machine
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    monkeypatch.setattr(security, "time", Clock)

    async def body(client, host, osc, feedback, app) -> None:
        for _ in range(security.HTTP_BURST):
            async with client.get("/?HOST_INFO") as r:
                assert r.status == 200
        async with client.get("/?HOST_INFO") as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "1"
            assert await r.json() == {
                "error": "too many requests: at most 50 a second from one address"
            }
        assert app.refused == 1
        clock[0] += 1.0  # a second later, 50 more
        for _ in range(50):
            async with client.get("/ch/1/fader?VALUE") as r:
                assert r.status == 200
        async with client.get("/ch/1/fader?VALUE") as r:
            assert r.status == 429
        assert app.refused == 2

    run(body)


def test_websocket_clients_from_one_address_are_capped() -> None:
    # One device (or one script) could take every one of the 64 places.
    async def body(client, host, osc, feedback, app) -> None:
        sockets = [await client.ws_connect("/") for _ in range(websocket.MAX_PER_ADDRESS)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/")
        assert refused.value.status == 503
        key = base64.b64encode(b"0123456789abcdef").decode()
        upgrade = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": key,
        }
        async with client.get("/", headers=upgrade) as r:
            assert r.status == 503
            assert await r.json() == {"error": "16 WebSocket clients from 127.0.0.1 already"}
        assert app.refused == 2
        assert len(app.connections) == websocket.MAX_PER_ADDRESS
        await sockets.pop().close()
        deadline = asyncio.get_running_loop().time() + 30
        while len(app.connections) == websocket.MAX_PER_ADDRESS:  # the server sees the close
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        again = await client.ws_connect("/")  # a place is free again
        await again.send_bytes(encode_message("/ping"))
        assert await receive_osc(again) == [("/pong", [])]
        for ws in [*sockets, again]:
            await ws.close()

    run(body)


def test_a_client_that_falls_behind_is_closed_with_1013() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        (conn,) = app.connections
        for _ in range(SEND_QUEUE + 10):  # faster than any writer: the queue overflows
            app.sockets.send(conn, [("/status", ["x"])])
        got = 0
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != WSMsgType.BINARY:
                break
            assert messages(msg.data) == [("/status", ["x"])]
            got += 1
        assert msg.type == WSMsgType.CLOSE and msg.data == 1013
        assert msg.extra == "client too slow"
        assert got <= SEND_QUEUE

    run(body)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_a_client_that_never_reads_is_cut_when_the_heartbeat_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client that reads nothing and answers no ping, with its queue not full: the
    # heartbeat gives up with transport.close(), which waits for the write buffer to
    # drain, so the handler and the client's slot used to stay forever.
    monkeypatch.setattr(websocket, "HEARTBEAT", 0.5)
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 0.5)

    async def body(client, host, osc, feedback, app) -> None:
        loop = asyncio.get_running_loop()
        sock = await _raw_websocket(client.port)
        try:
            deadline = loop.time() + 60
            while not app.connections:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            (conn,) = app.connections
            for _ in range(SEND_QUEUE // 2):  # more than socket buffers hold; no 1013
                app.sockets.send(conn, [("/status", ["x" * 16000])])
            while conn in app.connections:
                assert loop.time() < deadline, "the client that never reads still holds its slot"
                await asyncio.sleep(0.05)
            assert not conn.closing  # not the slow-client close: the heartbeat's
            ws = await client.ws_connect("/")
            await ws.send_bytes(encode_message("/ping"))
            assert await receive_osc(ws) == [("/pong", [])]
            await ws.close()
        finally:
            sock.close()

    run(body)


def test_a_closed_connection_is_not_kept_by_the_rate_limiter() -> None:
    # The rate limiter was keyed by the Connection itself and forgets keys only past
    # 4096 of them: every closed connection stayed, with its WebSocket, transport
    # and up to SEND_QUEUE unsent packets (connect, fill, drop, repeat).
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        (conn,) = app.connections
        ref = weakref.ref(conn)
        del conn
        await ws.close()
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            gc.collect()
            if ref() is None:
                break
            assert asyncio.get_running_loop().time() < deadline, gc.get_referrers(ref())
            await asyncio.sleep(0.05)

    run(body)


def test_pings_are_under_the_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # aiohttp answered every ping by itself: a client could make the loop write
    # pongs as fast as it could send pings, past the per-connection limit.
    class Frozen:  # no refill while the frames arrive, however slow the machine
        @staticmethod
        def monotonic() -> float:
            return 1000.0

    monkeypatch.setattr(websocket, "time", Frozen)

    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/", autoping=False)
        for i in range(FRAMES_BURST + 50):
            await ws.ping(b"%d" % i)
        pongs: list[bytes] = []
        errors: list[tuple[str, list[Any]]] = []
        while not errors:
            msg = await ws.receive(timeout=30)
            if msg.type == WSMsgType.PONG:
                pongs.append(msg.data)
            else:
                assert msg.type == WSMsgType.BINARY, msg
                errors += messages(msg.data)
        assert errors == [
            (
                "/error",
                ["too many messages: at most 100 a second per connection; some were dropped"],
            )
        ]
        await ws.close()  # after the last ping: any pong to it would come before this
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != WSMsgType.PONG:
                break
            pongs.append(msg.data)
        assert msg.type == WSMsgType.CLOSED
        assert pongs == [b"%d" % i for i in range(FRAMES_BURST)]

    run(body)


def test_oversize_frame_closes_with_1009() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        before = host.registry.snapshot()
        await ws.send_bytes(encode_message("/ch/1/fader", [0.1]) + b"\0" * 70000)
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.CLOSE and msg.data == 1009
        assert ws.close_code == 1009
        assert host.registry.snapshot() == before
        # It counts as refused (the status line's "web ... refused").
        deadline = asyncio.get_running_loop().time() + 60
        while app.connections:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert app.refused == 1

    run(body)


def _masked_text(text: str) -> bytes:
    """One client-to-server WebSocket text frame (masked, under 126 bytes)."""
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


async def _raw_websocket(port: int) -> socket.socket:
    """A WebSocket client on a bare socket with a tiny receive buffer, that reads
    nothing after the handshake."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    assert (await loop.sock_recv(sock, 12)) == b"HTTP/1.1 101"
    return sock


@pytest.mark.slow  # about 2 s
def test_a_client_that_never_reads_is_dropped_and_frees_its_slot() -> None:
    # A client that stops reading fills its queue; it used to be "closed" with a close
    # frame that could never be sent (its TCP window is shut), so its handler, its
    # queue and its place among the MAX_CONNECTIONS stayed forever.
    async def body(client, host, osc, feedback, app) -> None:
        loop = asyncio.get_running_loop()
        sock = await _raw_websocket(client.port)
        try:
            await loop.sock_sendall(sock, _masked_text('{"COMMAND": "LISTEN", "DATA": "/status"}'))
            deadline = loop.time() + 60
            while not app.connections or not next(iter(app.connections)).listens:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            (conn,) = app.connections
            # Feedback rounds the client never reads: far more than socket buffers hold.
            for _ in range(SEND_QUEUE * 8):
                app.sockets.send(conn, [("/status", ["x" * 4000])])
                await asyncio.sleep(0)
            while conn in app.connections:
                assert loop.time() < deadline, "the slow client still holds its slot"
                await asyncio.sleep(0.05)
            assert conn.queue.qsize() <= SEND_QUEUE
            # The daemon goes on serving others.
            ws = await client.ws_connect("/")
            await ws.send_bytes(encode_message("/ping"))
            assert await receive_osc(ws) == [("/pong", [])]
            await ws.close()
        finally:
            sock.close()

    run(body)


def test_namespace_change_is_announced_and_listens_follow() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await listen(ws, "/ch/vocals/mute", "/ch/other/mute", "/channels")
        await tick(host, feedback, app)
        assert [a for a, _ in await receive_osc(ws)] == [
            "/ch/vocals/mute",
            "/ch/other/mute",
            "/channels",
        ]
        host.registry.set_names(["drums", "bass", "other", "fx"])  # a stem file's channels
        await tick(host, feedback, app)
        assert [await receive_json(ws) for _ in range(3)] == [
            {"COMMAND": "PATH_REMOVED", "DATA": "/ch/vocals"},
            {"COMMAND": "PATH_ADDED", "DATA": "/ch/fx"},
            {"COMMAND": "PATH_CHANGED", "DATA": "/"},
        ]
        assert await receive_osc(ws) == [("/channels", ["drums", "bass", "other", "fx"])]
        (conn,) = app.connections
        assert conn.listens == {"/ch/3/mute": {"/ch/other/mute"}, "/channels": {"/channels"}}
        r = await client.get("/ch/fx/mute?VALUE")
        assert r.status == 200 and (await client.get("/ch/vocals")).status == 404
        await ws.close()

    run(body)


# -- security --------------------------------------------------------------------------------
def test_token_is_required_on_a_lan_bind() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        r = await client.get("/?HOST_INFO")
        assert r.status == 401
        assert await r.json() == {
            "error": "this mixer needs its token: open the URL stemdeck printed "
            "(http://HOST:PORT/?token=...)"
        }
        assert (await client.get("/?token=wrong")).status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect("/")
        assert err.value.status == 401
        r = await client.get("/?token=s3cret&HOST_INFO")
        assert r.status == 200 and (await r.json())["NAME"] == "stemdeck"
        assert r.cookies["stemdeck_token"].value == "s3cret"
        # The cookie set by the first visit lets the rest and the WebSocket in.
        assert (await client.get("/ch/bass/mute?VALUE")).status == 200
        ws = await client.ws_connect("/")
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        await ws.close()
        client.session.cookie_jar.clear()
        r = await client.get("/ch/1/mute?VALUE", headers={"Authorization": "Bearer s3cret"})
        assert await r.json() == {"VALUE": [0]}

    run(body, token="s3cret", loopback=False)


def test_a_broken_websocket_handshake_is_a_json_400_and_counted() -> None:
    # aiohttp's own text/plain 400 ("No CONNECTION upgrade hdr: None") used to come
    # back, not counted as refused.
    async def body(client, host, osc, feedback, app) -> None:
        for headers in (
            {"Upgrade": "websocket"},
            {"Upgrade": "websocket", "Connection": "Upgrade"},
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "short",
                "Sec-WebSocket-Version": "13",
            },
        ):
            r = await client.get("/", headers=headers)
            assert r.status == 400, headers
            assert await r.json() == {
                "error": "not a WebSocket handshake: it needs Connection: Upgrade, "
                "Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key"
            }
        assert app.refused == 3
        assert app.connections == set()

    run(body)


def test_the_page_cannot_be_framed_by_another_site() -> None:
    # Framed by another site, the mixer page is its own origin on 127.0.0.1: Host
    # and Origin checks pass (and no token on loopback), so clicks meant for the
    # other site (an invisible frame on top) would drive the mixer.
    async def body(client, host, osc, feedback, app) -> None:
        for path, accept in (("/", "text/html"), ("/_mixer/mixer.js", "*/*"), ("/", "*/*")):
            r = await client.get(path, headers={"Accept": accept})
            assert r.status == 200
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        r = await client.get("/nowhere")
        assert r.status == 404 and r.headers["X-Frame-Options"] == "DENY"

    run(body)


def test_websocket_from_another_page_is_refused() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await client.ws_connect("/", headers={"Origin": "http://evil.example"})
        assert err.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect("/", headers={"Origin": "null"})
        own = f"http://127.0.0.1:{client.port}"
        ws = await client.ws_connect("/", headers={"Origin": own})
        await ws.send_bytes(encode_message("/ping"))
        assert await receive_osc(ws) == [("/pong", [])]
        await ws.close()

    run(body)


def test_dns_rebinding_host_is_refused_on_loopback() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        r = await client.get("/?HOST_INFO", headers={"Host": f"evil.example:{client.port}"})
        assert r.status == 403
        assert await r.json() == {
            "error": f"Host 'evil.example:{client.port}' is not this machine: open http://127.0.0.1"
        }
        r = await client.get("/?HOST_INFO", headers={"Host": f"localhost:{client.port}"})
        assert r.status == 200
        # An IPv6 literal without a port (the default port) is loopback too; a name
        # that merely starts with one is not.
        for name, status in (("[::1]", 200), (f"[::1]:{client.port}", 200), ("localhost", 200)):
            r = await client.get("/?HOST_INFO", headers={"Host": name})
            assert r.status == status, name
        r = await client.get("/?HOST_INFO", headers={"Host": "[::1].evil.example"})
        assert r.status == 403

    run(body)


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("127.0.0.1", 200),
        ("LOCALHOST:{port}", 200),
        ("[::1]:{port}", 200),
        ("127.0.0.1:{port}@evil.example", 403),  # user info after the port
        ("evil.example@127.0.0.1:{port}", 403),
        ("127.0.0.1:{port}:{port}", 403),
        ("127.0.0.1:{port}/x", 403),
        ("127.0.0.1:", 403),
        ("127.0.0.1:123456", 403),
        ("127.0.0.1.evil.example", 403),
        ("::1", 403),  # IPv6 only in brackets
        ("[::1]x", 403),
        ("[127.0.0.1]", 403),
    ],
)
def test_the_host_header_is_parsed_strictly(header: str, status: int) -> None:
    async def body(client, host, osc, feedback, app) -> None:
        sent = header.format(port=client.port)
        r = await client.get("/?HOST_INFO", headers={"Host": sent})
        assert r.status == status
        if status == 403:
            assert await r.json() == {
                "error": f"Host {sent!r} is not this machine: open http://127.0.0.1"
            }

    run(body)


def test_a_library_name_that_is_not_utf8_over_the_websocket_and_oscquery(
    tmp_path: Path,
) -> None:
    library, latin1 = latin1_library(tmp_path)
    shown, song = f"{library}/caf\\xe9 live.wav", f"{library}/song.wav"

    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await listen(ws, "/track/name")
        await tick(host, feedback, app)
        assert await receive_osc(ws) == [("/track/name", ["song"])]
        await ws.send_bytes(encode_message("/track/list"))
        assert await receive_osc(ws) == [("/track/list", [shown, song])]
        await ws.send_bytes(encode_message("/track/load", [shown]))
        assert await receive_osc(ws) == [("/track/load", [shown])]
        assert host.calls == [("load", latin1)]
        await tick(host, feedback, app)  # the name streamed as the encoder writes it
        assert await receive_osc(ws) == [("/track/name", ["caf\\xe9 live"])]
        await ws.send_bytes(encode_message("/track/name"))
        assert await receive_osc(ws) == [("/track/name", ["caf\\xe9 live"])]
        assert await (await client.get("/track/list?VALUE")).json() == {"VALUE": [shown, song]}
        assert await (await client.get("/track/name?VALUE")).json() == {"VALUE": ["caf\\xe9 live"]}
        await ws.send_bytes(encode_message("/ping"))  # the connection lives on
        assert await receive_osc(ws) == [("/pong", [])]
        await ws.close()
        assert osc.control.counts().errors == 0

    run(body, fake=LibraryHost(root=library))


# -- the server thread and zeroconf ---------------------------------------------------------
def test_web_server_thread_serves_and_stops() -> None:
    _host, osc = make_server()
    feedback = Feedback(osc)
    server = WebServer(osc, feedback, host="127.0.0.1", port=0)
    server.start()
    try:
        port = server.address[1]
        assert port > 0 and server.url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/master/mute?VALUE") as r:
            assert json.load(r) == {"VALUE": [0]}
        # Feedback rounds reach the server's own loop from the feedback thread.
        feedback.add_listener(lambda frame: None)  # a round even with no WebSocket client
        feedback.tick()
        deadline = time.monotonic() + 10
        while server.app.last_frame is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.app.last_frame is not None
    finally:
        server.stop()
        osc.sock.close()
    assert not server._thread.is_alive()
    taken = WebServer(osc, feedback, host="127.0.0.1", port=port)
    blocker = WebServer(osc, feedback, host="127.0.0.1", port=0)
    blocker.start()
    try:
        taken.port = blocker.address[1]
        from stemdeck.core.errors import ParameterError

        with pytest.raises(ParameterError, match=r"cannot serve HTTP on 127\.0\.0\.1:\d+ .*--http"):
            taken.start()
    finally:
        blocker.stop()


def test_lan_bind_gets_a_token_url() -> None:
    _host, osc = make_server()
    server = WebServer(osc, Feedback(osc), host="10.0.0.7", port=8080)  # not started
    assert server.token is not None and len(server.token) >= 20
    assert server.url == f"http://10.0.0.7:8080/?token={server.token}"
    assert WebServer(osc, Feedback(osc), host="127.0.0.1").token is None
    osc.sock.close()


@pytest.fixture
def zeroconf_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Zeroconf mocked: multicast must not leave the machine in tests. What the
    advertiser asked of it, in order."""
    import zeroconf

    calls: list[tuple[str, Any]] = []

    class FakeZeroconf:
        def register_service(self, info: Any) -> None:
            calls.append(("register", info))

        def unregister_service(self, info: Any) -> None:
            calls.append(("unregister", info))

        def close(self) -> None:
            calls.append(("close", None))

    monkeypatch.setattr(zeroconf, "Zeroconf", FakeZeroconf)
    return calls


def advertise(**kwargs: Any) -> None:
    """Announce, wait for the registration, withdraw."""
    from stemdeck.daemon.web.advertise import Advertiser

    ad = Advertiser(http_port=8080, osc_port=9000, host="192.168.1.20", **kwargs)
    ad.start()
    ad._thread.join(10)
    ad.stop()


def test_advertise_registers_both_services(zeroconf_calls: list[tuple[str, Any]]) -> None:
    calls = zeroconf_calls
    advertise(osc_host="192.168.1.20", name="stemdeck test")
    kinds = [(c[0], c[1].type if c[1] else None, c[1].port if c[1] else None) for c in calls]
    assert kinds == [
        ("register", "_oscjson._tcp.local.", 8080),
        ("register", "_osc._udp.local.", 9000),
        ("unregister", "_oscjson._tcp.local.", 8080),
        ("unregister", "_osc._udp.local.", 9000),
        ("close", None, None),
    ]
    assert calls[0][1].name == "stemdeck test._oscjson._tcp.local."
    assert calls[0][1].addresses == [bytes([192, 168, 1, 20])]
    assert calls[1][1].addresses == [bytes([192, 168, 1, 20])]


def test_advertise_leaves_out_an_osc_port_the_network_cannot_reach(
    zeroconf_calls: list[tuple[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    # The mixer on the LAN with OSC on 127.0.0.1 (the default) announced _osc._udp at
    # the LAN address: a tool there sent to a port that could not hear it.
    with caplog.at_level(logging.INFO, logger="stemdeck"):
        advertise(osc_host="127.0.0.1")
    registered = [info for what, info in zeroconf_calls if what == "register"]
    assert [(i.type, i.port) for i in registered] == [("_oscjson._tcp.local.", 8080)]
    assert [r.getMessage() for r in caplog.records] == [
        "--advertise: OSC listens on 127.0.0.1 only, so _osc._udp is not announced; other "
        "machines use the WebSocket (or start with --osc-host 0.0.0.0 --osc-allow ADDRESSES)",
        f"advertised 'stemdeck on {socket.gethostname()}': _oscjson._tcp port 8080",
    ]


def test_other_methods_get_a_json_405() -> None:
    async def body(client, host, osc, feedback, app) -> None:
        before = host.registry.snapshot()
        r = await client.post("/ch/bass/fader", data=b"0.1")
        assert r.status == 405
        assert await r.json() == {
            "error": "POST is not served: the namespace is read with GET, "
            "values are set over OSC or the WebSocket"
        }
        assert host.registry.snapshot() == before

    run(body)


def test_tracks_and_scenes_over_the_websocket() -> None:
    """What the page's track picker and scene buttons send, answered on the WebSocket."""

    async def body(client, host, osc, feedback, app) -> None:
        ws = await client.ws_connect("/")
        await ws.send_bytes(encode_message("/track/list"))
        assert await receive_osc(ws) == [("/track/list", ["/music/song.wav", "/music/other.flac"])]
        await ws.send_bytes(encode_message("/scene/list"))
        assert await receive_osc(ws) == [("/scene/list", ["acapella", "instrumental", "unity"])]
        await ws.send_bytes(encode_message("/track/load", ["/music/song.wav"]))
        assert await receive_osc(ws) == [("/track/load", ["/music/song.wav"])]
        await ws.send_bytes(encode_message("/track/load", ["/bad/x.wav"]))
        assert await receive_osc(ws) == [
            ("/error", ["/track/load: refused '/bad/x.wav': no such file"])
        ]
        await ws.send_bytes(encode_message("/scene/recall", ["acapella", 2.0]))
        assert await receive_osc(ws) == [("/scene/recall", ["acapella", 2.0])]
        await ws.send_bytes(encode_message("/scene/save", ["mine"]))
        assert await receive_osc(ws) == [("/scene/save", ["mine"])]
        assert host.calls == [
            ("load", "/music/song.wav"),
            ("recall", ("acapella", 2.0)),
            ("save", "mine"),
        ]
        await ws.close()

    run(body)
