"""The web port's door: which TCP connections the web server takes, and for how long.

aiohttp takes every connection the kernel hands it and keeps an idle one for an
hour, so plain TCP connections, which need no token (they are accepted before any
request is read), could take every file descriptor of the daemon: then a scene
could not be saved and a good track was refused as unreadable. :class:`Gate` runs
the listening sockets' accept loop itself, ahead of aiohttp (``docs/web.md``):

- at most ``total`` connections at once, ``per_address`` of them from one IP
  address (an IPv6 host counts by its /64: it may choose any address in it). At a
  limit, the oldest connection of the full group (all, or that address) that has
  not yet sent a whole request's headers is closed with a short ``503`` to make
  room: a flood of idle or slow connections, from however many addresses, cannot
  keep a real client (whose request comes in its first packet) out. Only when
  every connection of the group is a request or a WebSocket being served is the
  newcomer itself closed at once with the ``503`` (before aiohttp spends anything
  on it);
- a connection whose descriptor is among the last ``headroom`` of the process's
  limit (``RLIMIT_NOFILE``) is closed the same way and accepting stops for
  :data:`ACCEPT_PAUSE`: the kernel hands out the lowest free descriptor, so web
  connections never hold those, and they stay free for scenes, loads, the cache
  and the recording;
- refusals past :data:`REFUSALS_BURST` at once, then :data:`REFUSALS_PER_SECOND`,
  pause accepting too (a connect storm cannot keep the web thread busy);
- out of descriptors anyway (``accept`` fails), accepting pauses and one log line
  says so, with a count, once per :data:`LOG_WINDOW`;
- ``idle_timeout`` is aiohttp's keep-alive timeout (``AppRunner(keepalive_timeout=)``),
  which aiohttp also starts when a connection opens: a connection that has not sent
  the complete headers of a request within ``idle_timeout`` of opening, or of its
  last reply, is closed (slow headers, idle keep-alive). A request being served (a
  WebSocket) is not idle.

:func:`quiet_exceptions` is the web loop's exception handler and :class:`QuietLog`
aiohttp's request log: one line per window with a count, never a traceback per event
(aiohttp logs every malformed request with its traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from stemdeck.core.errors import ParameterError

from ..osc.limits import RateLimitedLog, TokenBucket
from ..realtime import open_files_limits

__all__ = [
    "ACCEPT_BATCH",
    "ACCEPT_PAUSE",
    "BACKLOG",
    "CONNECTIONS_PER_ADDRESS",
    "CONNECTIONS_TOTAL",
    "FD_HEADROOM",
    "IDLE_TIMEOUT",
    "LOG_WINDOW",
    "REFUSALS_BURST",
    "REFUSALS_PER_SECOND",
    "Gate",
    "QuietLog",
    "address_group",
    "open_files_limit",
    "quiet_exceptions",
]

log = logging.getLogger(__name__)

CONNECTIONS_TOTAL = 128  # TCP connections to the web port at once, WebSockets included
CONNECTIONS_PER_ADDRESS = 32  # from one IP address: one device cannot take every place
IDLE_TIMEOUT = 5.0  # s to send a request's headers, from the connection or the last reply
# Descriptors web connections never take. A load takes about 10 (the file, the
# worker's pipes and process, the cache entry's files and maps), a scene save 2, the
# recording 1; 64 leaves room for several at once and for what the libraries open.
FD_HEADROOM = 64
ACCEPT_PAUSE = 0.25  # s without accepting when near the descriptor limit or out of it
ACCEPT_BATCH = 32  # connections accepted per wake-up before the loop runs the rest
REFUSALS_BURST, REFUSALS_PER_SECOND = 100, 200.0  # beyond: accepting pauses
BACKLOG = 128
LOG_WINDOW = 10.0  # s: refusals and accept errors are logged once per window


def open_files_limit() -> int:
    """The process's soft limit on open files (``RLIMIT_NOFILE``); ``1 << 30`` where
    it is unlimited or the platform has none (Windows)."""
    limits = open_files_limits()
    return 1 << 30 if limits is None else limits[0]


def _refusal(text: str) -> bytes:
    body = json.dumps({"error": text}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one admitted connection; tells the gate when it ends,
    and whether it has sent a whole request's headers yet (until then the gate may
    close it to make room)."""

    def __init__(self, gate: Gate, inner: asyncio.Protocol, address: str) -> None:
        self.gate, self.inner, self.address = gate, inner, address
        self.made = False
        self.requested = False  # a blank line ended a request's headers
        self.evicted = False  # closed by the gate: its place is given back already
        self.transport: asyncio.Transport | None = None
        self._tail = b""  # the last 3 bytes, for a blank line split between packets

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.gate.opened(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.requested:
            seen = self._tail + data
            self.requested = b"\r\n\r\n" in seen or b"\n\n" in seen
            self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            if not self.evicted:
                self.gate.release(self)


class Gate:
    """The accept loop of the web port's listening sockets, with the limits of the
    module docstring. Runs in the web loop; the counters may be read from any thread.

    Parameters
    ----------
    total, per_address : int
        Connections at once, in all and from one IP address.
    headroom : int
        Descriptors below the process's limit that web connections never take.
    idle_timeout : float
        Seconds to send a request's headers (the server passes it to aiohttp).
    files_limit : callable
        The process's limit on open files (:func:`open_files_limit`).
    """

    def __init__(
        self,
        *,
        total: int = CONNECTIONS_TOTAL,
        per_address: int = CONNECTIONS_PER_ADDRESS,
        headroom: int = FD_HEADROOM,
        idle_timeout: float = IDLE_TIMEOUT,
        files_limit: Callable[[], int] = open_files_limit,
    ) -> None:
        self.total, self.per_address = total, per_address
        self.headroom, self.idle_timeout = headroom, idle_timeout
        self.files_limit = files_limit
        self.connections = 0  # open now
        self.refused = 0  # closed at once: a limit, or too few descriptors left
        self.evicted = 0  # closed to make room: the oldest that had sent no request
        self.accept_errors = 0  # accept() failed (out of descriptors or memory)
        self.address: tuple[str, int] = ("", 0)  # the first socket's, once listening
        self._by_address: dict[str, int] = {}
        self._open: dict[_Tracked, None] = {}  # made connections, oldest first
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._paused: asyncio.TimerHandle | None = None
        self._closed = False
        self._refusals = TokenBucket(REFUSALS_BURST, REFUSALS_PER_SECOND)
        self._refused_log = RateLimitedLog(
            log, 1, LOG_WINDOW, "web: %d more connections refused in the last window"
        )
        self._error_log = RateLimitedLog(
            log, 1, LOG_WINDOW, "web: accepting failed %d more times in the last window"
        )

    # -- listening ------------------------------------------------------------------
    def listen(self, factory: Callable[[], asyncio.Protocol], host: str, port: int) -> None:
        """Bind ``host:port`` (every address the name resolves to) and accept there,
        giving admitted connections to ``factory``'s protocols (in the web loop).

        Raises
        ------
        ParameterError
            The address cannot be bound (in use, not this machine's).
        """
        self._loop = asyncio.get_running_loop()
        self._factory = factory
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, sockaddr in dict.fromkeys((f, a) for f, _, _, _, a in found):
                sock = socket.create_server(sockaddr, family=family, backlog=BACKLOG)
                sock.setblocking(False)
                self._sockets.append(sock)
        except OSError as exc:
            self.close()
            raise ParameterError(
                f"cannot serve HTTP on {host}:{port} ({exc.strerror or exc}); "
                "pick another --http PORT, or --http off"
            ) from None
        self.address = (host, int(self._sockets[0].getsockname()[1]))
        self._resume()

    def close(self) -> None:
        """Stop accepting and close the listening sockets (connections stay)."""
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        for sock in self._sockets:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []

    def _resume(self) -> None:
        self._paused = None
        if self._closed or self._loop is None:
            return
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _pause(self) -> None:
        """Accept nothing for :data:`ACCEPT_PAUSE` (connections wait in the backlog)."""
        if self._paused is not None or self._loop is None:
            return
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(ACCEPT_PAUSE, self._resume)

    # -- accepting --------------------------------------------------------------------
    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of descriptors (EMFILE, ENFILE) or memory
                self.accept_errors += 1
                self._error_log("web: cannot accept connections (%s): waiting", exc.strerror)
                self._pause()
                return
            self._admit(conn, peer)
            if self._paused is not None:
                return

    def _admit(self, conn: socket.socket, peer: Any) -> None:
        address = address_group(peer)
        limit = self.files_limit()
        if conn.fileno() >= limit - self.headroom:
            self._pause()
            self._refuse(
                conn,
                address,
                f"the daemon keeps its last {self.headroom} of {limit} file descriptors "
                "for its tracks and scenes",
            )
            return
        if self.connections >= self.total and not self._evict(None):
            self._refuse(conn, address, f"{self.total} connections to the web port already")
            return
        if self._by_address.get(address, 0) >= self.per_address and not self._evict(address):
            self._refuse(conn, address, f"{self.per_address} connections from {address} already")
            return
        self.connections += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        assert self._loop is not None
        self._loop.create_task(self._connect(conn, address))

    def _evict(self, address: str | None) -> bool:
        """Close the oldest connection (from ``address``, or any) that has not sent a
        whole request's headers, with a ``503``; False if there is none."""
        for tracked in self._open:
            if tracked.requested or (address is not None and tracked.address != address):
                continue
            tracked.evicted = True
            self.evicted += 1
            self._release(tracked.address)
            del self._open[tracked]
            assert tracked.transport is not None
            why = "a newer connection took its place (no request was sent)"
            with contextlib.suppress(OSError, RuntimeError):
                tracked.transport.write(_refusal(f"connection closed: {why}"))
            tracked.transport.close()
            self._refused_log("web: connection from %s closed: %s", tracked.address, why)
            return True
        return False

    async def _connect(self, conn: socket.socket, address: str) -> None:
        assert self._loop is not None and self._factory is not None
        factory = self._factory
        protocol: _Tracked | None = None

        def make() -> _Tracked:
            nonlocal protocol
            protocol = _Tracked(self, factory(), address)
            return protocol

        try:
            conn.setblocking(False)
            await self._loop.connect_accepted_socket(make, conn)
        except (OSError, RuntimeError) as exc:  # gone before its transport was made
            if protocol is None or not protocol.made:
                conn.close()
                self._release(address)
            log.debug("web connection from %s not set up: %r", address, exc)

    @property
    def waiting(self) -> int:
        """Connections set up that have not sent a whole request's headers yet."""
        return sum(not tracked.requested for tracked in list(self._open))

    def opened(self, tracked: _Tracked) -> None:
        """``tracked``'s transport is made: it may be evicted from now on."""
        self._open[tracked] = None

    def release(self, tracked: _Tracked) -> None:
        """``tracked`` ended (not by eviction, which gave its place back already)."""
        self._open.pop(tracked, None)
        self._release(tracked.address)

    def _release(self, address: str) -> None:
        self.connections -= 1
        left = self._by_address.get(address, 1) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)

    def _refuse(self, conn: socket.socket, address: str, why: str) -> None:
        """Close at once, with a ``503`` saying why (one write; never waits)."""
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_refusal(f"connection refused: {why}"))
        conn.close()
        self._refused_log("web: connection from %s refused: %s", address, why)
        now = time.monotonic()
        if self._refusals.available("all", now):
            self._refusals.take("all", now)
        else:
            self._pause()


def address_group(peer: Any) -> str:
    """Whom a connection counts against: its IPv4 address, or its IPv6 address's /64
    (one host may use any address of its /64), an IPv4-mapped IPv6 one as IPv4."""
    host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line: its type and its message, lines joined, at most 200
    characters of it."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def quiet_exceptions(
    window: float = LOG_WINDOW,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler that logs one line per ``window`` (the message
    and the exception in one line, no traceback), then how many more there were: a
    flood of failing connections cannot flood the log."""
    lines = RateLimitedLog(log, 1, window, "web: %d more event loop errors in the last window")

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = context.get("message", "error")
        lines("web: %s%s", message, f": {_one_line(exc)}" if exc is not None else "")

    return handler


class QuietLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's request log (``AppRunner(logger=...)``): it logs every malformed
    request with a traceback, so a client sending garbage could fill a disk. Here,
    what it says at INFO or above is one line per ``window`` (the exception in one
    line), then how many more there were; its debug lines pass unchanged."""

    def __init__(self, logger: logging.Logger = log, window: float = LOG_WINDOW) -> None:
        super().__init__(logger, {})
        self._lines = RateLimitedLog(logger, 1, window, "web: %d more request errors not logged")

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level < logging.INFO:
            self.logger.log(level, msg, *args, **kwargs)
            return
        exc_info = kwargs.get("exc_info")
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if exc is None and exc_info:
            exc = sys.exc_info()[1]
        text = str(msg) % args if args else str(msg)
        self._lines("web: %s%s", text, f": {_one_line(exc)}" if exc is not None else "")
