"""The web port's limits against floods of plain TCP connections (issue 21, item 3).

Connections beyond the per-address and total limits, or that would take one of the
descriptors kept free, are closed at once with a 503; the rest are closed when they
have not sent a request's headers in time (idle and slowloris alike); the log says
so once per window. ``daemon/web/gate.py``; ``bench/faults.py`` runs the full flood.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from daemon_helpers import Client, Daemon, poll, separated
from osc_host import make_server

from conftest import tone_mix
from stemdeck.daemon.osc import Feedback, OscServer
from stemdeck.daemon.osc.wire import Message, decode, encode_message
from stemdeck.daemon.web.gate import Gate, address_group, quiet_exceptions
from stemdeck.daemon.web.server import WebServer

SLOW_HEADER = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def refusal(why: str) -> bytes:
    """The whole answer to a connection refused at once (daemon/web/gate.py)."""
    body = json.dumps({"error": f"connection refused: {why}"}).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" % len(body) + body
    )


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def start_slow(slow: set[socket.socket]) -> None:
    """Begin a request on each socket of ``slow`` (its headers follow slowly)."""
    for s in slow:
        try:
            s.sendall(SLOW_HEADER)
        except OSError:
            pass  # closed already (refused at once): seen when read


def until_closed(
    socks: list[socket.socket], slow: set[socket.socket], timeout: float
) -> dict[socket.socket, tuple[float, bytes]]:
    """Wait until the server closes every socket in ``socks``, dribbling a header line
    to the ``slow`` ones (begun with :func:`start_slow`) every 0.1 s, as a slowloris
    does; for each, the time it was closed (``time.monotonic()``) and everything it
    received."""
    got: dict[socket.socket, bytes] = {s: b"" for s in socks}
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    deadline = time.monotonic() + timeout
    next_dribble = time.monotonic() + 0.1
    while len(closed) < len(socks):
        now = time.monotonic()
        assert now < deadline, f"{len(socks) - len(closed)} sockets still open"
        if now >= next_dribble:
            next_dribble = now + 0.1
            for s in slow - closed.keys():
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass  # closed: seen by the read below
        ready, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.05)
        for s in ready:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got[s] += data
            else:
                closed[s] = (time.monotonic(), got[s])
    return closed


def web_server(gate: Gate) -> tuple[OscServer, WebServer]:
    _host, osc = make_server()
    feedback = Feedback(osc)
    server = WebServer(osc, feedback, host="127.0.0.1", port=0, gate=gate)
    osc.start()
    server.start()
    return osc, server


def osc_reply(osc: OscServer, address: str, *args: object) -> list[tuple[str, list]]:
    """Send over UDP; the replies before the answer to a ``/track/name`` sent after it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        s.sendto(encode_message(address, args), osc.address)
        s.sendto(encode_message("/track/name"), osc.address)
        out: list[tuple[str, list]] = []
        while True:
            msg = decode(s.recvfrom(65536)[0])
            assert isinstance(msg, Message)
            if msg.address == "/track/name":
                return out
            out.append((msg.address, list(msg.args)))


def evicted_answer() -> bytes:
    """What a connection closed to make room receives (daemon/web/gate.py)."""
    why = "a newer connection took its place (no request was sent)"
    body = json.dumps({"error": f"connection closed: {why}"}).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" % len(body) + body
    )


def open_idle(server: WebServer, port: int, source: str) -> socket.socket:
    """A connection that sends nothing, once the gate has set it up."""

    def seen() -> int:  # set up, whether still open or closed to make room since
        return server.gate.waiting + server.gate.evicted

    before = seen()
    s = connect(port, source)
    poll(seen, lambda n: n > before, "the connection set up")
    return s


def open_requested(server: WebServer, port: int, source: str) -> socket.socket:
    """A keep-alive connection that has sent one request and read its answer."""
    s = connect(port, source)
    s.sendall(b"GET /master/mute?VALUE HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    s.settimeout(30)
    got = b""
    while not got.endswith(b'{"VALUE": [0]}'):
        got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    return s


def test_at_a_limit_the_oldest_silent_connection_makes_room(
    caplog: pytest.LogCaptureFixture,
) -> None:
    osc, server = web_server(Gate(total=8, per_address=4, idle_timeout=60.0))
    port = server.address[1]
    socks: list[socket.socket] = []
    try:
        with caplog.at_level(logging.INFO, logger="stemdeck.daemon.web.gate"):
            # One device opens 8 silent connections: each past its 4 closes its oldest.
            flood = [open_idle(server, port, "127.0.0.1") for _ in range(4)]
            for _ in range(4):
                flood.append(open_idle(server, port, "127.0.0.1"))
            socks += flood
            evicted = until_closed(flood[:4], set(), timeout=30)
            assert [evicted[s][1] for s in flood[:4]] == [evicted_answer()] * 4
            assert (server.gate.evicted, server.gate.refused) == (4, 0)
            assert server.gate.connections == 4
            # Connections that made requests are served, never closed for room: past
            # the address's 4 of them, a newcomer is refused at once.
            for s in flood[4:]:
                s.close()
            poll(lambda: server.gate.connections, lambda n: n == 0, "the flood closed")
            kept = [open_requested(server, port, "127.0.0.1") for _ in range(4)]
            socks += kept
            fifth = connect(port)
            socks.append(fifth)
            refused = until_closed([fifth], set(), timeout=30)
            assert refused[fifth][1] == refusal("4 connections from 127.0.0.1 already")
            assert (server.gate.evicted, server.gate.refused) == (4, 1)
            # The total: silent ones from 2 more addresses fill it; a client from a
            # fourth address closes the oldest silent one and is served.
            silent = [open_idle(server, port, f"127.0.0.{2 + k % 2}") for k in range(4)]
            socks += silent
            other = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=30, source_address=("127.0.0.4", 0)
            )
            other.request("GET", "/master/mute?VALUE")
            assert json.load(other.getresponse()) == {"VALUE": [0]}
            other.close()
            gone = until_closed(silent[:1], set(), timeout=30)
            assert gone[silent[0]][1] == evicted_answer()
            assert (server.gate.evicted, server.gate.refused) == (5, 1)
            # Every place taken by a served request: a newcomer is refused at once.
            poll(lambda: server.gate.connections, lambda n: n == 7, "7 connections")
            for s in silent[1:]:
                s.close()
            poll(lambda: server.gate.connections, lambda n: n == 4, "4 connections")
            kept += [open_requested(server, port, f"127.0.0.{2 + k}") for k in range(4)]
            socks += kept[4:]
            last = connect(port, "127.0.0.9")
            socks.append(last)
            total = until_closed([last], set(), timeout=30)
            assert total[last][1] == refusal("8 connections to the web port already")
            assert (server.gate.evicted, server.gate.refused) == (5, 2)
            assert server.refused == 2
            assert osc_reply(osc, "/ping") == [("/pong", [])]
            for s in kept:
                s.close()
            poll(lambda: server.gate.connections, lambda n: n == 0, "no connection left")
        # One log line for the whole window, not one per connection.
        assert [r.getMessage() for r in caplog.records] == [
            "web: connection from 127.0.0.1 closed: a newer connection took its place "
            "(no request was sent)"
        ]
    finally:
        for s in socks:
            s.close()
        server.stop()
        osc.stop()


def keep_up(server: WebServer, port: int, flood: dict[socket.socket, str]) -> None:
    """Reopen every flood connection the gate closed (as a script keeping a flood up
    does), until the total is full of them again and none is being closed."""
    deadline = time.monotonic() + 60
    while True:
        ready, _, _ = select.select(list(flood), [], [], 0.1)
        for s in ready:  # its 503, then its end
            source = flood.pop(s)
            s.close()
            flood[connect(port, source)] = source
        if not ready and server.gate.waiting == server.gate.connections == server.gate.total:
            return
        assert time.monotonic() < deadline, "the flood did not fill the total again"


@pytest.mark.slow  # about 2 s
def test_four_addresses_flooding_silent_connections_never_lock_a_client_out() -> None:
    # The hostile review's lockout: 4 addresses keep the total full of connections
    # that send nothing, reopening each one the gate closes; a client from a fifth
    # address (a phone reconnecting) must still be served, every time.
    osc, server = web_server(Gate(total=16, per_address=4, idle_timeout=60.0))
    port = server.address[1]
    sources = [f"127.0.0.{2 + k}" for k in range(4)]
    flood: dict[socket.socket, str] = {}
    try:
        for source in sources:
            for _ in range(4):
                flood[connect(port, source)] = source
        poll(lambda: server.gate.waiting, lambda n: n == 16, "the total full")
        served = 0
        for _ in range(20):
            client = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=30, source_address=("127.0.0.9", 0)
            )
            client.request("GET", "/master/mute?VALUE")
            response = client.getresponse()
            served += (response.status, json.load(response)) == (200, {"VALUE": [0]})
            client.close()
            keep_up(server, port, flood)
        assert served == 20  # (the flood's own reopenings may be refused: its business)
    finally:
        for s in flood:
            s.close()
        server.stop()
        osc.stop()


@pytest.mark.parametrize(
    ("peer", "group"),
    [
        (("192.0.2.7", 5000), "192.0.2.7"),
        (("::ffff:192.0.2.7", 5000, 0, 0), "192.0.2.7"),
        (("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:3::1", 5000, 0, 0), "2001:db8:1:3::/64"),
        (("fe80::1%lo", 5000, 0, 1), "fe80::/64"),
        (("::1", 5000, 0, 0), "::1"),
        (("127.0.0.5", 5000), "127.0.0.5"),
        ("/run/socket", "unknown"),
    ],
)
def test_an_ipv6_host_counts_once_for_its_whole_64(peer: object, group: str) -> None:
    assert address_group(peer) == group


def test_idle_and_slow_connections_are_closed_after_the_idle_timeout() -> None:
    timeout = 0.5
    osc, server = web_server(Gate(idle_timeout=timeout))
    port = server.address[1]
    try:
        opened = time.monotonic()
        idle = [connect(port) for _ in range(3)]
        slow = [connect(port) for _ in range(3)]
        # A client that sent one request and keeps the connection: idle after the reply.
        kept = connect(port)
        kept.sendall(b"GET /master/mute?VALUE HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        start_slow(set(slow))
        closed = until_closed([*idle, *slow, kept], set(slow), timeout=30)
        for s in idle + slow + [kept]:
            at, data = closed[s]
            # Closed by the timeout, whatever the socket sent meanwhile: not at once,
            # and not an hour later (aiohttp's own default is 3,630 s).
            assert timeout - 0.05 <= at - opened <= timeout + 10, at - opened
            assert data == (b"" if s is not kept else data)
        assert closed[kept][1].startswith(b"HTTP/1.1 200 OK\r\n")
        assert closed[kept][1].endswith(b'{"VALUE": [0]}')
        assert server.gate.refused == 0
        poll(lambda: server.gate.connections, lambda n: n == 0, "no connection left")
    finally:
        server.stop()
        osc.stop()


def test_descriptors_kept_free_are_never_taken_by_a_connection() -> None:
    # Every descriptor is within the headroom: each connection is refused, and
    # accepting pauses (the next ones wait in the backlog, then are refused too).
    osc, server = web_server(Gate(headroom=64, files_limit=lambda: 64))
    port = server.address[1]
    try:
        socks = [connect(port) for _ in range(3)]
        closed = until_closed(socks, set(), timeout=30)
        why = "the daemon keeps its last 64 of 64 file descriptors for its tracks and scenes"
        assert [closed[s][1] for s in socks] == [refusal(why)] * 3
        assert server.gate.connections == 0 and server.gate.refused == 3
        for s in socks:
            s.close()
    finally:
        server.stop()
        osc.stop()


def test_malformed_requests_are_one_log_line_not_a_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    osc, server = web_server(Gate())
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(50):
                with connect(server.address[1]) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nbad header\r\n\r\n")
                    assert s.recv(100).startswith(b"HTTP/1.0 400 Bad Request\r\n")
        assert [(r.name, r.getMessage(), r.exc_info) for r in caplog.records] == [
            (
                "stemdeck.daemon.web.gate",
                "web: Error handling request from 127.0.0.1: BadHttpMessage: 400, message: "
                "Invalid header token: b'bad header' ^",
                None,
            )
        ]
    finally:
        server.stop()
        osc.stop()


def test_event_loop_errors_are_one_line_a_window(caplog: pytest.LogCaptureFixture) -> None:
    window = 0.2
    handler = quiet_exceptions(window)
    error = OSError(24, "Too many open files")
    loop = asyncio.new_event_loop()
    loop.close()  # the handler never uses it
    with caplog.at_level(logging.INFO, logger="stemdeck.daemon.web.gate"):
        began = time.monotonic()
        for _ in range(1000):
            handler(loop, {"message": "socket.accept() out of system resource", "exception": error})
        assert time.monotonic() - began < window  # else the count below spans windows
        while time.monotonic() - began < window:
            time.sleep(0.01)
        handler(loop, {"message": "Task exception was never retrieved"})
    assert [r.getMessage() for r in caplog.records] == [
        "web: socket.accept() out of system resource: OSError: [Errno 24] Too many open files",
        "web: 999 more event loop errors in the last window",
        "web: Task exception was never retrieved",
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "import resource\n"
        "from stemdeck.daemon.realtime import raise_open_files\n"
        "print(raise_open_files())\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    for soft, hard, said in (
        (256, 512, "open files: at most 512 (raised from 256)"),
        (256, 256, "open files: at most 256 (the hard limit)"),
    ):

        def lower(soft: int = soft, hard: int = hard) -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=lower,
        ).stdout
        now = f"({hard}, {hard})"
        assert out.splitlines() == [said, now]


def test_a_platform_without_rlimits_starts_and_says_so() -> None:
    # Windows has no ``resource`` module: the daemon must still import and say plainly
    # that there is no limit to raise, and the web gate must not refuse connections.
    code = (
        "import sys\n"
        "sys.modules['resource'] = None\n"
        "import stemdeck.daemon.serve\n"
        "from stemdeck.daemon.realtime import open_files_limits, raise_open_files\n"
        "from stemdeck.daemon.web.gate import open_files_limit\n"
        "print(raise_open_files())\n"
        "print(open_files_limits())\n"
        "print(open_files_limit())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "open files: no per-process limit on this platform",
        "None",
        str(1 << 30),
    ]


# -- a real daemon under a low descriptor limit --------------------------------------------
@pytest.fixture
def library(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "library"
    folder.mkdir()
    sf.write(folder / "song.wav", tone_mix(3.0, sr=48000).T, 48000, subtype="FLOAT")
    sf.write(folder / "next.wav", tone_mix(3.0, sr=48000, seed=5).T, 48000, subtype="FLOAT")
    yield folder


@pytest.mark.e2e
@pytest.mark.slow
def test_a_flood_under_a_low_descriptor_limit_never_fails_a_load(
    tmp_path: Path, library: Path
) -> None:
    """Issue 21, item 3 scaled down: 128 descriptors in all (set before the daemon
    starts, so it cannot raise them), a flood of 200 connections from 5 addresses,
    half idle and half slowloris. A valid load, a scene save and /ping still work."""
    limit = 128

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    env = {"STEMDECK_CACHE": str(tmp_path / "cache"), "STEMDECK_CONFIG": str(tmp_path / "cfg")}
    daemon = Daemon(  # -v: the open-files line is a debug line
        [str(library / "song.wav"), "--no-audio"], env, tmp_path, preexec=low_limit, verbose=True
    )
    socks: list[socket.socket] = []
    try:
        daemon.wait_ready()
        port = int(daemon.http_url().rsplit(":", 1)[1].strip("/"))
        before = len(daemon.lines)
        flood = [connect(port, f"127.0.0.{1 + k % 5}") for k in range(200)]
        socks += flood
        slow = set(flood[::2])
        start_slow(slow)
        client = Client(daemon.port)
        assert client.ask("/ping") == [("/pong", [])]
        assert client.ask("/scene/save", "flood") == [("/scene/save", ["flood"])]
        path = str(library / "next.wav")
        assert client.ask("/track/load", path) == [("/track/load", [path])]
        poll(
            lambda: client.ask("/status")[0][1][0],
            lambda status: separated(status, "next"),
            "the next track separated and playing",
            every=0.2,  # /status is rate-limited
        )
        client.close()
        closed = until_closed(flood, slow, timeout=60)  # 503 at once, or the 5 s timeout
        refused = sum(data.startswith(b"HTTP/1.1 503 ") for _, data in closed.values())
        assert 0 < refused < len(flood)
        flood_log = daemon.lines[before:]
    finally:
        for s in socks:
            s.close()
        code, err = daemon.stop()
    assert code == 0, err
    assert "Traceback" not in err and "Too many open files" not in err
    refusals = [line for line in flood_log if "web: " in line]
    assert 1 <= len(refusals) <= 4, flood_log  # one line per 10 s window, with counts
    assert "open files: at most 128 (the hard limit)" in err
