"""The WebSocket side: each connection an OSC sender, LISTENed values streamed back.

A WebSocket connection is an OSC sender of its own, ``("ws:<ip>", <tcp port>)``:
binary frames are OSC packets in, replies and streamed values are OSC packets
out; text frames are OSCQuery commands (``LISTEN``, ``IGNORE``) as JSON. Control
goes through :meth:`~stemdeck.daemon.osc.server.OscServer.datagram` like UDP
(strict decoding, all-or-nothing bundles, ``/error`` replies, limits), and values
come back from :class:`~stemdeck.daemon.osc.feedback.Feedback` rounds, handed to
the web loop with ``call_soon_threadsafe`` and fanned out by :meth:`WebSockets.on_frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from stemdeck.core.beats.store import MAX_CUES
from stemdeck.core.control.pattern import is_pattern
from stemdeck.core.errors import ParameterError, StemdeckError

from ..osc.feedback import Feedback, FeedbackFrame
from ..osc.limits import ERROR_BUDGET, Reply, Sender, TokenBucket
from ..osc.server import OscServer
from ..osc.wire import OscEncodeError, encode_bundle, encode_message
from .namespace import VALUE_CHILDREN
from .security import error_response, json_text, origin_ok

__all__ = [
    "CLOSE_TIMEOUT",
    "FRAMES_BURST",
    "FRAMES_PER_SECOND",
    "HEARTBEAT",
    "MAX_CONNECTIONS",
    "MAX_FRAME",
    "MAX_LISTENS",
    "MAX_PER_ADDRESS",
    "SEND_QUEUE",
    "STREAMS",
    "VALUE_ADDRESSES",
    "Connection",
    "Pong",
    "WebSockets",
    "packet",
]

MAX_FRAME = 65536  # bytes in one WebSocket message (as a UDP datagram at most)
FRAMES_BURST, FRAMES_PER_SECOND = 200, 100.0  # per connection, text and binary together
MAX_LISTENS = 512  # LISTENed addresses per connection
MAX_CONNECTIONS = 64
MAX_PER_ADDRESS = 16  # WebSocket clients from one IP address: one device cannot take all
SEND_QUEUE = 256  # packets waiting for a slow client; then it is closed (it reconnects)
CLOSE_TIMEOUT = 2.0  # seconds a slow client gets to take the close frame; then it is cut
HEARTBEAT = 20.0  # seconds between pings; no pong in half of it closes the connection

# Addresses that can be LISTENed to besides the controls: values that change now and
# then (sent when they change) and streams (sent every feedback round).
VALUE_ADDRESSES = (
    "/transport/playing",
    "/transport/loop",
    "/transport/length",
    "/transport/rate",
    "/transport/keylock",
    "/transport/pitch",
    "/transport/bpm",
    "/track/name",
    "/track/progress",
    "/channels",
    "/channels/colors",
    "/track/bpm",
    "/track/grid",
    "/track/key",
    "/channels/labels",
    "/sync/tempo",
    "/sync/phase",
    "/sync/peers",
    "/quantize",
    *(f"/cue/{n}{part}" for n in range(1, MAX_CUES + 1) for part in ("", "/scene")),
)
STREAMS = ("/meter", "/meter/rms", "/transport/position", "/transport/beat", "/status")
# The tree's names for addresses with children (namespace.VALUE_CHILDREN): the same values.
_ALIASES = {child: address for address, child in VALUE_CHILDREN.items()}


def packet(
    replies: Sequence[Reply], on_error: Callable[[str], Reply] = lambda text: ("/error", [text])
) -> bytes:
    """One OSC packet: the message itself, or a bundle of several (sent at once). A
    message that cannot be encoded is replaced by ``on_error(reason)`` (an ``/error``)."""

    def encoded(address: str, args: Sequence[Any]) -> bytes:
        try:
            return encode_message(address, args)
        except OscEncodeError as exc:
            return encode_message(*on_error(f"{address}: reply not sent: {exc}"))

    if len(replies) == 1:
        return encoded(replies[0][0], replies[0][1])
    return encode_bundle([encoded(a, v) for a, v in replies])


class Pong(bytes):
    """A pong's payload in a connection's queue (it waits its turn like any reply)."""


@dataclass(eq=False)
class Connection:
    """One WebSocket client: an OSC sender, its LISTENs and its outgoing queue."""

    ws: web.WebSocketResponse
    sender: Sender
    queue: asyncio.Queue[bytes | str | Pong] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SEND_QUEUE)
    )
    # canonical key (/ch/2/fader, /meter...) -> the addresses it was LISTENed as
    listens: dict[str, set[str]] = field(default_factory=dict)
    warned_at: float = -1e9  # last "too many messages" reply
    closing: bool = False
    stuck: bool = False  # seen closed by a sweep (WebSockets.sweep) and still here
    transport: asyncio.Transport | None = None
    _closer: asyncio.Task[None] | None = None

    def count_listens(self) -> int:
        return sum(len(v) for v in self.listens.values())

    def put(self, item: bytes | str | Pong) -> None:
        """Queue a frame; a client that cannot keep up is closed (it reconnects and
        starts again from the full state)."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.closing = True
            self._closer = asyncio.get_running_loop().create_task(self._drop())

    async def _drop(self) -> None:
        """Close with 1013; a client that does not even take the close frame (its TCP
        window is shut) is cut, else its handler and its slot would stay forever."""
        try:
            await asyncio.wait_for(
                self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"client too slow"),
                CLOSE_TIMEOUT,
            )
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if self.transport is not None:
                self.transport.abort()

    async def write(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, str):
                await self.ws.send_str(item)
            elif isinstance(item, Pong):
                await self.ws.pong(item)
            else:
                await self.ws.send_bytes(item)


class WebSockets:
    """The WebSocket clients of one web app: their connections, the OSC they send,
    what they LISTEN to, and the feedback fan-out. Runs in the web loop, except
    :meth:`attach`'s listener (the feedback thread).

    Parameters
    ----------
    osc : OscServer
        Binary OSC from the clients goes through its ``datagram``.

    ``refused`` counts handshakes turned away and messages over the rate limit.
    """

    def __init__(self, osc: OscServer) -> None:
        self.osc = osc
        self.control = osc.control
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_frame: FeedbackFrame | None = None
        self.refused = 0
        self._names: list[str] | None = None
        # keyed by conn.sender, not the Connection: it keeps a key until 4096 of them
        self._buckets = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)

    # -- feedback (called in the feedback thread) -------------------------------------
    def attach(self, feedback: Feedback) -> None:
        """Take feedback rounds while any client is connected."""
        feedback.add_listener(self._from_feedback, lambda: bool(self.connections))

    def _from_feedback(self, frame: FeedbackFrame) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self.on_frame, frame)

    # -- lifetime (in the web loop) ---------------------------------------------------
    async def sweep(self) -> None:
        """Cut connections aiohttp closed but could not finish: its own closes (no pong
        to a heartbeat) call ``transport.close()``, which waits for the write buffer to
        drain, so a peer that never reads (pings and never takes the pongs) would keep
        its handler and its place among the MAX_CONNECTIONS forever. Runs until
        cancelled."""
        while True:
            await asyncio.sleep(CLOSE_TIMEOUT)
            for conn in list(self.connections):
                transport = conn.transport
                if not conn.ws.closed and not (transport is not None and transport.is_closing()):
                    continue
                if conn.stuck and transport is not None:
                    transport.abort()
                conn.stuck = True

    async def close_all(self) -> None:
        """Say goodbye to every client (the server stops)."""
        for conn in list(self.connections):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stemdeck stopped")

    # -- one connection ---------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.StreamResponse:
        """A WebSocket upgrade: checked, then served until the client goes."""
        if not origin_ok(request):
            self.refused += 1
            return error_response(
                403,
                f"WebSocket from the page {request.headers.get('Origin')!r} refused: "
                "only the mixer's own page may connect",
            )
        if len(self.connections) >= MAX_CONNECTIONS:
            self.refused += 1
            return error_response(503, f"{MAX_CONNECTIONS} WebSocket clients already")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip = peer[0] if peer else "unknown"
        if sum(c.sender[0] == f"ws:{ip}" for c in self.connections) >= MAX_PER_ADDRESS:
            self.refused += 1
            return error_response(503, f"{MAX_PER_ADDRESS} WebSocket clients from {ip} already")
        # autoping off: a ping is a message like any other, under the rate limit
        ws = web.WebSocketResponse(
            max_msg_size=MAX_FRAME, heartbeat=HEARTBEAT, compress=False, autoping=False
        )
        try:
            await ws.prepare(request)
        except web.HTTPException:
            self.refused += 1
            return error_response(
                400,
                "not a WebSocket handshake: it needs Connection: Upgrade, "
                "Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
            )
        port = peer[1] if peer else id(ws) & 0xFFFF
        conn = Connection(ws, (f"ws:{ip}", port), transport=request.transport)
        loop = asyncio.get_running_loop()

        def deliver(replies: list[Reply]) -> None:  # scheduled bundles, /subscribe feedback
            loop.call_soon_threadsafe(self.send, conn, list(replies))

        self.connections.add(conn)
        self.osc.route(conn.sender, deliver)
        writer = asyncio.create_task(conn.write())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    self._binary(conn, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    if self._admit(conn, True):
                        conn.put(Pong(msg.data))
                elif msg.type == WSMsgType.PONG:
                    pass  # to the heartbeat's ping (aiohttp notes any data received)
                else:
                    if msg.type == WSMsgType.ERROR:  # too big (1009), bad UTF-8, bad frame
                        self.refused += 1
                    break
        finally:
            self.connections.discard(conn)
            self.osc.unroute(conn.sender)  # and its subscription
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await writer
        return ws

    def _admit(self, conn: Connection, binary: bool) -> bool:
        """Per-connection message rate limit; over it, one reply a second says so."""
        now = time.monotonic()
        if self._buckets.available(conn.sender, now):
            self._buckets.take(conn.sender, now)
            return True
        self.refused += 1
        self.control.count("refused")
        if now - conn.warned_at >= 1.0:
            conn.warned_at = now
            text = (
                f"too many messages: at most {FRAMES_PER_SECOND:g} a second per connection; "
                "some were dropped"
            )
            if binary:
                self.send(conn, [("/error", [text])])
            else:
                self._command(conn, "ERROR", text)
        return False

    def _binary(self, conn: Connection, data: bytes) -> None:
        if not self._admit(conn, True):
            return
        try:
            replies = self.osc.datagram(data, conn.sender, check_allow=False)
        except Exception as exc:  # never let one packet stop the connection
            self.control.count("errors")
            replies = [("/error", [f"internal error: {exc!r}"])]
        self.send(conn, replies)

    def send(self, conn: Connection, replies: list[Reply]) -> None:
        """Queue ``replies`` for ``conn`` as one OSC packet (in the web loop); one that
        cannot be encoded is an ``/error`` (counted) in its place."""
        if replies:
            conn.put(packet(replies, partial(self._error, conn.sender)))

    def _error(self, sender: Sender, text: str) -> Reply:
        return self.control.error(text, sender, ERROR_BUDGET)

    def _command(self, conn: Connection, command: str, data: Any) -> None:
        conn.put(json_text({"COMMAND": command, "DATA": data}))

    def _text(self, conn: Connection, text: str) -> None:
        if not self._admit(conn, False):
            return
        try:
            try:
                request = json.loads(text)
            except ValueError as exc:
                raise ParameterError(f"not JSON: {exc}") from None
            except RecursionError:  # '[[[[...': would end the connection without a word
                raise ParameterError("not JSON: nested too deeply") from None
            if not isinstance(request, dict) or not isinstance(request.get("COMMAND"), str):
                raise ParameterError('expected {"COMMAND": "LISTEN"|"IGNORE", "DATA": "/address"}')
            command = request["COMMAND"]
            path = request.get("DATA")
            if command not in ("LISTEN", "IGNORE"):
                raise ParameterError(f"unknown COMMAND {command!r}: LISTEN or IGNORE")
            if not isinstance(path, str):
                raise ParameterError(f"{command} takes an OSC address as DATA, got {path!r}")
            if command == "LISTEN":
                if conn.count_listens() >= MAX_LISTENS:
                    raise ParameterError(f"at most {MAX_LISTENS} LISTENs per connection")
                conn.listens.setdefault(self.listen_key(path), set()).add(path)
            else:
                for key in list(conn.listens):
                    conn.listens[key].discard(path)
                    if not conn.listens[key]:
                        del conn.listens[key]
        except (StemdeckError, ValueError, TypeError) as exc:
            self.control.count("errors")
            self._command(conn, "ERROR", str(exc))

    def listen_key(self, path: str) -> str:
        """The key values of ``path`` are found under (controls: the index form).

        Raises
        ------
        ParameterError
            A pattern, an unknown address, or one without a value to stream.
        """
        if is_pattern(path):
            raise ParameterError(f"LISTEN takes one address, not a pattern: {path!r}")
        if path in VALUE_ADDRESSES or path in STREAMS:
            return path
        if path in _ALIASES:
            return _ALIASES[path]
        if path.startswith(("/ch/", "/master/", "/fx/")):
            matches = self.control.host.registry.match(path)
            if len(matches) == 1:
                return matches[0][0]
        raise ParameterError(f"cannot LISTEN to {path!r}: no such address with a value")

    # -- feedback rounds (in the web loop) --------------------------------------------
    def on_frame(self, frame: FeedbackFrame) -> None:
        """Send every connection what it LISTENs to from one feedback round; tell it
        when the namespace changed (another track's channels)."""
        self.last_frame = frame
        if self._names is not None and frame.names != self._names:
            self._namespace_changed(self._names, frame.names)
        self._names = list(frame.names)
        streams: dict[str, list[Any]] = {
            "/meter": frame.peak_db,
            "/meter/rms": frame.rms_db,
            "/transport/position": [frame.position],
            "/status": [frame.status],
        }
        if frame.beat is not None:  # no grid: nothing to stream
            streams["/transport/beat"] = [frame.beat]
        # Every client gets its own packet, made of messages encoded once per round.
        changes = dict(frame.changes)
        encoded: dict[str, bytes] = {}

        def message(address: str, args: Sequence[Any]) -> bytes:
            data = encoded.get(address)
            if data is None:
                data = encoded[address] = packet([(address, args)], self._round_error)
            return data

        for conn in list(self.connections):
            if not conn.listens:
                continue
            out: list[bytes] = []
            for key, used_as in conn.listens.items():
                args = changes.get(key)
                if args is None:
                    args = streams.get(key)
                    if args is None:
                        continue
                for used in used_as:
                    out.append(message(used, args))
            if out:
                conn.put(out[0] if len(out) == 1 else encode_bundle(out))

    def _round_error(self, text: str) -> Reply:
        """The ``/error`` that stands for a streamed value that could not be encoded."""
        self.control.count("errors")
        self.control.bad_log("WebSocket feedback: %s", text)
        return ("/error", [text[:ERROR_BUDGET]])

    def _namespace_changed(self, old: list[str], new: list[str]) -> None:
        def nodes(names: list[str]) -> list[str]:
            return [f"/ch/{i}" for i in range(1, len(names) + 1)] + [f"/ch/{n}" for n in names]

        before, after = nodes(old), nodes(new)
        removed = [p for p in before if p not in after]
        added = [p for p in after if p not in before]
        for conn in list(self.connections):
            for p in removed:
                self._command(conn, "PATH_REMOVED", p)
            for p in added:
                self._command(conn, "PATH_ADDED", p)
            # /channels and /meter change type with the channels; one message says so.
            self._command(conn, "PATH_CHANGED", "/")
            listens: dict[str, set[str]] = {}
            for used in {u for s in conn.listens.values() for u in s}:
                try:
                    listens.setdefault(self.listen_key(used), set()).add(used)
                except ParameterError:
                    pass  # its node is gone (PATH_REMOVED said so)
            conn.listens = listens
