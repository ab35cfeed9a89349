"""The reply to ``/track/load`` comes when the track plays or failed, not when it was
checked: late, on the address the request came from (UDP or the WebSocket), exactly
once (#21 item 1)."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from osc_host import FakeHost, make_server

from stemdeck.daemon.osc import Feedback
from stemdeck.daemon.osc.wire import Bundle, Message, decode, encode_bundle, encode_message
from stemdeck.daemon.track_source import LoadDone
from stemdeck.daemon.web.server import WebApp

pytestmark = pytest.mark.e2e  # a UDP server thread, a web server


@dataclass
class LateHost(FakeHost):
    """A host whose loads end when the test says so (``done`` kept, not called)."""

    loads: list[LoadDone] = field(default_factory=list)

    def load_track(self, path: str, done: LoadDone) -> None:
        self.calls.append(("load", path))
        self.loads.append(done)


def _receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10.0)
    return s


def _until_pong(sock: socket.socket) -> list[tuple[str, list]]:
    """Every message before the next ``/pong``."""
    out: list[tuple[str, list]] = []
    while True:
        msg = decode(sock.recvfrom(65536)[0])
        assert isinstance(msg, Message)
        if msg.address == "/pong":
            return out
        out.append((msg.address, list(msg.args)))


def test_the_track_load_reply_comes_when_the_load_ends_over_udp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, server = make_server(host=LateHost())
    assert isinstance(host, LateHost)
    client = _receiver()
    server.start()

    def ask(data: bytes) -> list[tuple[str, list]]:
        client.sendto(data, server.address)
        client.sendto(encode_message("/ping"), server.address)
        return _until_pong(client)

    def later(call: LoadDone, failure: str | None) -> list[tuple[str, list]]:
        call(failure)  # from the test's thread: the loader's, in the daemon
        client.sendto(encode_message("/ping"), server.address)
        return _until_pong(client)

    try:
        with caplog.at_level(logging.INFO):
            # Checked, not loaded yet: no reply; the rest of its bundle answers now.
            load = encode_message("/track/load", ["/music/a.wav"])
            bundle = encode_bundle([load, encode_message("/ch/1/mute")])
            assert ask(bundle) == [("/ch/1/mute", [0])]
            assert later(host.loads[0], None) == [("/track/load", ["/music/a.wav"])]
            assert later(host.loads[0], "too late") == []  # told once only
            assert ask(encode_message("/track/load", ["/music/b.wav"])) == []
            assert ask(encode_message("/track/load", ["/music/c.wav"])) == []
            assert later(host.loads[1], "superseded by c") == [
                ("/error", ["/track/load: superseded by c"])
            ]
            reason = "'/music/c.wav': 1 samples are NaN or infinite; re-export the file"
            assert later(host.loads[2], reason) == [("/error", [f"/track/load: {reason}"])]
        assert server.control.counts().errors == 2
        # The loader logs a failure once; the OSC layer does not log it again.
        assert not [r for r in caplog.records if r.name.startswith("stemdeck.daemon.osc")]
    finally:
        server.stop()
        client.close()


async def receive_osc(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[str, list[Any]]]:
    """The messages of the next binary frame (one OSC message or bundle)."""
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    packet = decode(msg.data)
    items = packet.elements if isinstance(packet, Bundle) else [packet]
    out = []
    for m in items:
        assert isinstance(m, Message)
        out.append((m.address, list(m.args)))
    return out


def test_the_track_load_reply_comes_when_the_load_ends_over_the_websocket() -> None:
    async def main() -> None:
        host, osc = make_server(host=LateHost())
        assert isinstance(host, LateHost)
        app = WebApp(osc)
        app.attach(Feedback(osc))
        loop = asyncio.get_running_loop()
        try:
            async with TestClient(TestServer(app.app, host="127.0.0.1")) as client:
                ws = await client.ws_connect("/")
                await ws.send_bytes(encode_message("/track/load", ["/music/a.wav"]))
                await ws.send_bytes(encode_message("/ping"))
                assert await receive_osc(ws) == [("/pong", [])]  # nothing before it
                await loop.run_in_executor(None, host.loads[0], "'/music/a.wav': damaged")
                assert await receive_osc(ws) == [
                    ("/error", ["/track/load: '/music/a.wav': damaged"])
                ]
                await ws.send_bytes(encode_message("/track/load", ["/music/b.wav"]))
                await ws.send_bytes(encode_message("/ping"))
                assert await receive_osc(ws) == [("/pong", [])]
                await loop.run_in_executor(None, host.loads[1], None)
                assert await receive_osc(ws) == [("/track/load", ["/music/b.wav"])]
        finally:
            osc.sock.close()

    asyncio.run(main())
