"""HTTP and WebSocket on one port: the browser mixer, OSCQuery, binary OSC.

:class:`WebApp` is the aiohttp application (tests run it with aiohttp's test
server): the page's files, the OSCQuery namespace over HTTP, and WebSocket
upgrades handed to :class:`~stemdeck.daemon.web.websocket.WebSockets`; every
request passes :class:`~stemdeck.daemon.web.security.Guard` first.
:class:`WebServer` runs it in its own thread with its own asyncio loop
(``stemdeck-web``), behind :class:`~stemdeck.daemon.web.gate.Gate`, which takes
the TCP connections (limits, timeouts, descriptors kept free). The audio thread
never waits on it: control goes through the OSC server's ``datagram`` like UDP,
which posts to the engine's bounded queue.

The page in ``static/`` speaks exactly this. ``docs/web.md`` describes the
protocol and the security rules (token, Host and Origin checks, limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from importlib import resources
from typing import Any

from aiohttp import web

from stemdeck.core.errors import ParameterError

from ..osc.feedback import Feedback, FeedbackFrame
from ..osc.server import OscServer
from ..realtime import name_os_thread, raise_priority
from . import namespace
from .gate import Gate, QuietLog, quiet_exceptions
from .lan import lan_address
from .overview import Overviews
from .security import Guard, error_response, is_loopback, json_response
from .websocket import MAX_FRAME, Connection, WebSockets

__all__ = ["STATIC_TYPES", "WebApp", "WebServer"]

log = logging.getLogger(__name__)

STATIC_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


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
        self.name = name
        self.guard = Guard(token=token, loopback=loopback)
        self.sockets = WebSockets(osc)
        self._sweeper: asyncio.Task[None] | None = None
        self.app = web.Application(middlewares=[self.guard.middleware], client_max_size=MAX_FRAME)
        self.overviews = Overviews()
        self.app.router.add_get("/_mixer/overview", self._overview)
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

    @property
    def token(self) -> str | None:
        return self.guard.token

    @property
    def connections(self) -> set[Connection]:
        """The WebSocket clients connected now (read it in the web loop)."""
        return self.sockets.connections

    @property
    def refused(self) -> int:
        """HTTP requests and WebSockets turned away, frames over the limit."""
        return self.guard.refused + self.sockets.refused

    @property
    def last_frame(self) -> FeedbackFrame | None:
        """The last feedback round that reached the web loop."""
        return self.sockets.last_frame

    def attach(self, feedback: Feedback) -> None:
        """Take feedback rounds from ``feedback`` while any WebSocket client is connected."""
        self.sockets.attach(feedback)

    async def _started(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self.sockets.loop = loop
        self._sweeper = loop.create_task(self.sockets.sweep())

    async def _closing(self, app: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.sockets.close_all()

    # -- HTTP -------------------------------------------------------------------------
    async def _method_not_allowed(self, request: web.Request) -> web.Response:
        return json_response(
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
            return error_response(404, f"no file {name!r}")
        kind = STATIC_TYPES["." + name.rsplit(".", 1)[-1]]
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def _overview(self, request: web.Request) -> web.Response:
        """The playing track's overview as JSON (:mod:`.overview`): read in a worker
        thread the first time, so the loop serves everyone else meanwhile."""
        track = self.control.host.engine.track
        if track is None:
            return error_response(404, "no track plays")
        loop = asyncio.get_running_loop()
        try:
            overview = await loop.run_in_executor(None, self.overviews.get, track)
        except (OSError, MemoryError) as exc:  # a file gone or truncated under its map
            log.warning("the track overview could not be read: %r", exc)
            return error_response(503, f"the overview could not be read: {exc}")
        return json_response(overview.as_json())

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.sockets.serve(request)
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
            return error_response(400, f"ask for one attribute at a time, got {', '.join(attrs)}")
        attr = attrs[0] if attrs else None
        if attr == "HOST_INFO":
            return json_response(self.host_info(request))
        if attr is not None and attr not in namespace.ATTRIBUTES:
            return error_response(
                400,
                f"unknown attribute {attr!r}: this server gives "
                f"{', '.join(namespace.ATTRIBUTES)} and HOST_INFO",
            )
        if "//" in path or (len(path) > 1 and path.endswith("/")):
            return error_response(404, f"no OSC node at {path!r}")
        node = namespace.find(namespace.build(self.snapshot()), path)
        if node is None:
            return error_response(404, f"no OSC node at {path!r}")
        if attr is None:
            return json_response(node)
        if attr == "VALUE" and not node.get("ACCESS", 0) & 1:
            return web.Response(status=204)
        return json_response({attr: node[attr]} if attr in node else {})

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
        values["/sync/source"] = [host.sync.source]
        values["/sync/anchor"] = [host.sync.anchor_in_force()]
        beat = host.beats.beat(host.transport.position())
        if beat is not None:
            values["/transport/beat"] = [beat]
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


class WebServer:
    """:class:`WebApp` served on ``host:port`` from the ``stemdeck-web`` thread.

    A bind that is not loopback gets a random token (``secrets.token_urlsafe``)
    unless one is given; :attr:`url` carries it. ``gate`` (a
    :class:`~stemdeck.daemon.web.gate.Gate` with the default limits unless given)
    accepts the connections: how many, from where, and for how long.
    """

    def __init__(
        self,
        osc: OscServer,
        feedback: Feedback,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        gate: Gate | None = None,
    ) -> None:
        loopback = is_loopback(host)
        self.gate = gate or Gate()
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
        """Connections, HTTP requests and WebSockets turned away, frames over the
        limit (any thread)."""
        return self.gate.refused + self.app.refused

    @property
    def url(self) -> str:
        """The page's address, with the token when one is needed."""
        host, port = self.address
        shown = lan_address() if host in ("0.0.0.0", "::") else host
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
        loop.set_exception_handler(quiet_exceptions())  # never a traceback per connection
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
        # keepalive_timeout: aiohttp starts it when a connection opens too, so it is
        # the header timeout as well (daemon/web/gate.py).
        runner = web.AppRunner(
            self.app.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=self.gate.idle_timeout,
            logger=QuietLog(),  # never a traceback per malformed request
        )
        await runner.setup()
        assert runner.server is not None
        try:
            self.gate.listen(runner.server, self.host, self.port)
        except ParameterError:
            await runner.cleanup()
            raise
        self.address = self.gate.address  # the port chosen, for --http 0
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        self.gate.close()
        await runner.cleanup()

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=5)
