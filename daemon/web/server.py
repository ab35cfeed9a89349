"""HTTP and WebSocket on one port: the browser mixer, OSCQuery, binary OSC.

:class:`WebApp` is the aiohttp application (tests run it with aiohttp's test
server); :class:`WebServer` runs it in its own thread with its own asyncio loop
(``stemdeck-web``). The audio thread never waits on it: control goes through
:meth:`OscServer.datagram` like UDP (strict decoding, all-or-nothing bundles,
``/error`` replies, limits), which posts to the engine's bounded queue, and
values come back from :class:`~stemdeck.daemon.osc.feedback.Feedback` rounds, handed to
this loop with ``call_soon_threadsafe``.

A WebSocket connection is an OSC sender of its own, ``("ws:<ip>", <tcp port>)``:
binary frames are OSC packets in, replies and streamed values are OSC packets out;
text frames are OSCQuery commands (``LISTEN``, ``IGNORE``) as JSON. The page in
``static/`` speaks exactly this. ``docs/web.md`` describes the protocol and the
security rules (token, Host and Origin checks, limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from stemdeck.core.control.pattern import is_pattern
from stemdeck.core.errors import ParameterError, StemdeckError

from ..osc.feedback import Feedback, FeedbackFrame
from ..osc.limits import Reply, TokenBucket
from ..osc.server import OscServer
from ..osc.wire import encode_bundle, encode_message
from ..realtime import name_os_thread, raise_priority
from . import namespace

__all__ = ["WebApp", "WebServer"]

log = logging.getLogger(__name__)

MAX_FRAME = 65536  # bytes in one WebSocket message (as a UDP datagram at most)
FRAMES_BURST, FRAMES_PER_SECOND = 200, 100.0  # per connection, text and binary together
MAX_LISTENS = 512  # LISTENed addresses per connection
MAX_CONNECTIONS = 64
MAX_PER_ADDRESS = 16  # WebSocket clients from one IP address: one device cannot take all
# HTTP requests per client address (the page's files, OSCQuery reads, WebSocket upgrades):
# a flood cannot keep the web thread, and so the GIL, busy building replies.
HTTP_BURST, HTTP_PER_SECOND = 200, 50.0
SEND_QUEUE = 256  # packets waiting for a slow client; then it is closed (it reconnects)
CLOSE_TIMEOUT = 2.0  # seconds a slow client gets to take the close frame; then it is cut
HEARTBEAT = 20.0  # seconds between pings; no pong in half of it closes the connection
COOKIE = "stemdeck_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

# Addresses that can be LISTENed to besides the controls: values that change now and
# then (sent when they change) and streams (sent every feedback round).
VALUE_ADDRESSES = (
    "/transport/playing",
    "/transport/loop",
    "/transport/length",
    "/track/name",
    "/track/progress",
    "/channels",
    "/channels/colors",
)
STREAMS = ("/meter", "/meter/rms", "/transport/position", "/status")

STATIC_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, allow_nan=False),
        status=status,
        content_type="application/json",
    )


def _error(status: int, text: str) -> web.Response:
    return _json({"error": text}, status)


def packet(replies: Sequence[Reply]) -> bytes:
    """One OSC packet: the message itself, or a bundle of several (sent at once)."""
    if len(replies) == 1:
        return encode_message(replies[0][0], replies[0][1])
    return encode_bundle([encode_message(a, v) for a, v in replies])


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name in a Host header: ``[::1]:8080`` and ``[::1]`` give ``::1``,
    ``localhost:8080`` gives ``localhost``; anything malformed gives ``""``."""
    host = host.lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        return name if bracket and (not rest or rest.startswith(":")) else ""
    return host.rsplit(":", 1)[0]


class Pong(bytes):
    """A pong's payload in a connection's queue (it waits its turn like any reply)."""


@dataclass(eq=False)
class Connection:
    """One WebSocket client: an OSC sender, its LISTENs and its outgoing queue."""

    ws: web.WebSocketResponse
    sender: tuple[str, int]
    queue: asyncio.Queue[bytes | str | Pong] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SEND_QUEUE)
    )
    # canonical key (/ch/2/fader, /meter...) -> the addresses it was LISTENed as
    listens: dict[str, set[str]] = field(default_factory=dict)
    warned_at: float = -1e9  # last "too many messages" reply
    closing: bool = False
    stuck: bool = False  # seen closed by a sweep (_sweep) and still here
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


class WebApp:
    """The aiohttp application on top of the OSC server (and so of the daemon).

    Parameters
    ----------
    osc : OscServer
        Binary OSC from WebSocket clients goes through its ``datagram``.
    token : str, optional
        Required on every request and WebSocket (``?token=``, the cookie set after
        the first visit, or ``Authorization: Bearer``), when set.
    loopback : bool
        Bound to a loopback address: then the Host header must name loopback too
        (a page on another site cannot reach the mixer by DNS rebinding).
    name : str
        ``NAME`` in ``HOST_INFO``.
    """

    def __init__(
        self,
        osc: OscServer,
        *,
        token: str | None = None,
        loopback: bool = True,
        name: str = "stemdeck",
    ) -> None:
        self.osc = osc
        self.control = osc.control
        self.token = token
        self.loopback = loopback
        self.name = name
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.last_frame: FeedbackFrame | None = None
        self._names: list[str] | None = None
        # keyed by conn.sender, not the Connection: it keeps a key until 4096 of them
        self._buckets = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)
        self._http_buckets = TokenBucket(HTTP_BURST, HTTP_PER_SECOND)  # by client address
        self.refused = 0  # HTTP requests and WebSockets turned away, frames over the limit
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_FRAME)
        self.app.router.add_get("/_mixer/{name}", self._static)
        self.app.router.add_route("GET", "/{path:.*}", self._get)
        self.app.router.add_route("*", "/{path:.*}", self._method_not_allowed)
        self.app.on_startup.append(self._started)
        self.app.on_shutdown.append(self._closing)
        static = resources.files("stemdeck.daemon.web").joinpath("static")
        self._static_files = {
            item.name: item.read_bytes()
            for item in (static.iterdir() if static.is_dir() else ())
            if "." + item.name.rsplit(".", 1)[-1] in STATIC_TYPES
        }

    # -- feedback (called in the feedback thread) -------------------------------------
    def attach(self, feedback: Feedback) -> None:
        """Take feedback rounds from ``feedback`` while any WebSocket client is connected."""
        feedback.add_listener(self._from_feedback, lambda: bool(self.connections))

    def _from_feedback(self, frame: FeedbackFrame) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self.on_frame, frame)

    async def _started(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Cut connections aiohttp closed but could not finish: its own closes (no pong
        to a heartbeat) call ``transport.close()``, which waits for the write buffer to
        drain, so a peer that never reads (pings and never takes the pongs) would keep
        its handler and its place among the MAX_CONNECTIONS forever."""
        while True:
            await asyncio.sleep(CLOSE_TIMEOUT)
            for conn in list(self.connections):
                transport = conn.transport
                if not conn.ws.closed and not (transport is not None and transport.is_closing()):
                    continue
                if conn.stuck and transport is not None:
                    transport.abort()
                conn.stuck = True

    async def _closing(self, app: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stemdeck stopped")

    # -- security ---------------------------------------------------------------------
    def _token_ok(self, request: web.Request) -> tuple[bool, bool]:
        """(allowed, came in the query string)."""
        if self.token is None:
            return True, False
        given = request.query.get("token")
        if given is not None:
            return hmac.compare_digest(given.encode(), self.token.encode()), True
        cookie = request.cookies.get(COOKIE)
        if cookie is not None:
            return hmac.compare_digest(cookie.encode(), self.token.encode()), False
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:].encode(), self.token.encode()), False
        return False, False

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        now, address = time.monotonic(), request.remote or "unknown"
        if not self._http_buckets.available(address, now):
            self.refused += 1
            response = _error(
                429,
                f"too many requests: at most {HTTP_PER_SECOND:g} a second from one address",
            )
            response.headers["Retry-After"] = "1"
            return response
        self._http_buckets.take(address, now)
        if self.loopback:
            if not is_loopback(host_name(request.host or "")):
                self.refused += 1
                return _error(
                    403, f"Host {request.host!r} is not this machine: open http://127.0.0.1"
                )
        ok, in_query = self._token_ok(request)
        if not ok:
            self.refused += 1
            return _error(
                401,
                "this mixer needs its token: open the URL stemdeck printed "
                "(http://HOST:PORT/?token=...)",
            )
        response = await handler(request)
        if not response.prepared:  # not a WebSocket
            # No other site may frame the page: framed, it is its own origin, so
            # clicks meant for that site would drive the mixer (clickjacking).
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
            if in_query and self.token is not None:
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    def _origin_ok(self, request: web.Request) -> bool:
        """A browser's WebSocket says which page opened it: only our own page may."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser (an OSCQuery tool)
        parts = urlsplit(origin)
        return (
            parts.scheme in ("http", "https")
            and parts.netloc.lower() == (request.host or "").lower()
        )

    # -- HTTP -------------------------------------------------------------------------
    async def _method_not_allowed(self, request: web.Request) -> web.Response:
        return _json(
            {
                "error": f"{request.method} is not served: the namespace is read with GET, "
                "values are set over OSC or the WebSocket"
            },
            405,
        )

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._static_files.get(name)
        if body is None:
            return _error(404, f"no file {name!r}")
        kind = STATIC_TYPES["." + name.rsplit(".", 1)[-1]]
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        attrs = [
            part.split("=", 1)[0]
            for part in request.query_string.split("&")
            if part and not part.startswith("token=")
        ]
        path = request.path
        if (
            not attrs
            and path == "/"
            and "text/html" in request.headers.get("Accept", "")
            and "index.html" in self._static_files
        ):
            return web.Response(
                body=self._static_files["index.html"],
                content_type="text/html",
                headers={"Cache-Control": "no-cache"},
            )
        if len(attrs) > 1:
            return _error(400, f"ask for one attribute at a time, got {', '.join(attrs)}")
        attr = attrs[0] if attrs else None
        if attr == "HOST_INFO":
            return _json(self.host_info(request))
        if attr is not None and attr not in namespace.ATTRIBUTES:
            return _error(
                400,
                f"unknown attribute {attr!r}: this server gives "
                f"{', '.join(namespace.ATTRIBUTES)} and HOST_INFO",
            )
        if "//" in path or (len(path) > 1 and path.endswith("/")):
            return _error(404, f"no OSC node at {path!r}")
        node = namespace.find(namespace.build(self.snapshot()), path)
        if node is None:
            return _error(404, f"no OSC node at {path!r}")
        if attr is None:
            return _json(node)
        if attr == "VALUE" and not node.get("ACCESS", 0) & 1:
            return web.Response(status=204)
        return _json({attr: node[attr]} if attr in node else {})

    def host_info(self, request: web.Request | None = None) -> dict[str, Any]:
        osc_host, osc_port = self.osc.address[:2]
        info: dict[str, Any] = {
            "NAME": self.name,
            "EXTENSIONS": dict(namespace.EXTENSIONS),
            "OSC_PORT": osc_port,
            "OSC_TRANSPORT": "UDP",
        }
        if osc_host not in ("0.0.0.0", "::"):
            info["OSC_IP"] = osc_host
        if request is not None and request.transport is not None:
            sock = request.transport.get_extra_info("sockname")
            if sock:
                info["WS_PORT"] = sock[1]
        return info

    def snapshot(self) -> namespace.Snapshot:
        state = self.control.state("index")
        values = {address: list(args) for address, args in state}
        frame = self.last_frame
        names = values.get("/channels", [])
        host = self.control.host
        n = len(names) + 1
        return namespace.Snapshot(
            values,
            names,
            peak_db=frame.peak_db if frame and len(frame.peak_db) == n else (),
            rms_db=frame.rms_db if frame and len(frame.rms_db) == n else (),
            status=host.status(),
            tracks=host.library_tracks(),
            scenes=host.scene_names(),
        )

    # -- WebSocket --------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_ok(request):
            self.refused += 1
            return _error(
                403,
                f"WebSocket from the page {request.headers.get('Origin')!r} refused: "
                "only the mixer's own page may connect",
            )
        if len(self.connections) >= MAX_CONNECTIONS:
            self.refused += 1
            return _error(503, f"{MAX_CONNECTIONS} WebSocket clients already")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip = peer[0] if peer else "unknown"
        if sum(c.sender[0] == f"ws:{ip}" for c in self.connections) >= MAX_PER_ADDRESS:
            self.refused += 1
            return _error(503, f"{MAX_PER_ADDRESS} WebSocket clients from {ip} already")
        # autoping off: a ping is a message like any other, under the rate limit
        ws = web.WebSocketResponse(
            max_msg_size=MAX_FRAME, heartbeat=HEARTBEAT, compress=False, autoping=False
        )
        try:
            await ws.prepare(request)
        except web.HTTPException:
            self.refused += 1
            return _error(
                400,
                "not a WebSocket handshake: it needs Connection: Upgrade, "
                "Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
            )
        port = peer[1] if peer else id(ws) & 0xFFFF
        conn = Connection(ws, (f"ws:{ip}", port), transport=request.transport)
        loop = asyncio.get_running_loop()

        def route(replies: list[Reply]) -> None:  # scheduled bundles, /subscribe feedback
            loop.call_soon_threadsafe(self._send, conn, list(replies))

        self.connections.add(conn)
        self.osc.route(conn.sender, route)
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
                self._send(conn, [("/error", [text])])
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
        self._send(conn, replies)

    def _send(self, conn: Connection, replies: list[Reply]) -> None:
        if replies:
            conn.put(packet(replies))

    def _command(self, conn: Connection, command: str, data: Any) -> None:
        conn.put(json.dumps({"COMMAND": command, "DATA": data}))

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
        if path.startswith(("/ch/", "/master/")):
            matches = self.control.host.registry.match(path)
            if len(matches) == 1:
                return matches[0][0]
        raise ParameterError(f"cannot LISTEN to {path!r}: no such address with a value")

    # -- feedback rounds (in this loop) -----------------------------------------------
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
        # Every client gets its own packet, made of messages encoded once per round.
        changes = dict(frame.changes)
        encoded: dict[str, bytes] = {}

        def message(address: str, args: Sequence[Any]) -> bytes:
            data = encoded.get(address)
            if data is None:
                data = encoded[address] = encode_message(address, args)
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


class WebServer:
    """:class:`WebApp` served on ``host:port`` from the ``stemdeck-web`` thread.

    A bind that is not loopback gets a random token (``secrets.token_urlsafe``)
    unless one is given; :attr:`url` carries it.
    """

    def __init__(
        self,
        osc: OscServer,
        feedback: Feedback,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
    ) -> None:
        loopback = is_loopback(host)
        if token is None and not loopback:
            token = secrets.token_urlsafe(16)
        self.host = host
        self.port = port
        self.app = WebApp(osc, token=token, loopback=loopback)
        self.app.attach(feedback)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="stemdeck-web", daemon=True)
        self.address: tuple[str, int] = (host, port)

    @property
    def token(self) -> str | None:
        return self.app.token

    @property
    def clients(self) -> int:
        """WebSocket clients connected now (any thread)."""
        return len(self.app.connections)

    @property
    def refused(self) -> int:
        """HTTP requests and WebSockets turned away, frames over the limit (any thread)."""
        return self.app.refused

    @property
    def url(self) -> str:
        """The page's address, with the token when one is needed."""
        host, port = self.address
        shown = _lan_address() if host in ("0.0.0.0", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"
        query = f"?token={self.token}" if self.token else ""
        return f"http://{shown}:{port}/{query}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise ParameterError("the web server did not start in 30 s")

    def _run(self) -> None:
        name_os_thread()
        nice = self.app.osc.nice
        if nice is not None:
            raise_priority(nice)  # a control thread like OSC in (daemon/realtime.py)
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start(); the daemon goes on without it
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.warning("web server stopped: %r", exc)
        finally:
            loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(
            self.app.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ParameterError(
                f"cannot serve HTTP on {self.host}:{self.port} ({exc.strerror}); "
                "pick another --http PORT, or --http off"
            ) from None
        for address in runner.addresses:  # the port chosen, for --http 0
            self.address = (self.host, int(address[1]))
            break
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=5)


def _lan_address() -> str:
    """This machine's address on its LAN (a UDP socket's route choice; nothing is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostname()
