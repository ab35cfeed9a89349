"""The OSC server's transport: the UDP socket loop and the bundle scheduler.

:class:`OscServer` decodes each datagram strictly (``daemon/osc/wire.py``),
applies it through :class:`~stemdeck.daemon.osc.dispatch.OscControl`, or
schedules its future bundles, and sends the replies to the sender. Senders that
are not UDP addresses (a WebSocket connection, ``daemon/web/``) are routed to a
callable instead (:meth:`OscServer.route`).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stemdeck.core.errors import ParameterError

from ..realtime import name_os_thread, raise_priority
from .dispatch import OscControl
from .limits import (
    ERROR_BUDGET,
    HORIZON_SECONDS,
    MAX_DATAGRAM,
    MAX_MESSAGES,
    MAX_PENDING,
    MAX_PENDING_PER_HOST,
    REPLY_BYTES_BASE,
    REPLY_BYTES_PER_BYTE,
    Refused,
    Reply,
    Sender,
)
from .wire import (
    IMMEDIATELY,
    Message,
    OscDecodeError,
    OscEncodeError,
    decode,
    encode_message,
    groups,
    iter_messages,
    timetag_to_unix,
)

__all__ = ["Deliver", "OscServer"]

Deliver = Callable[[list[Reply]], None]
"""Takes replies and feedback for a sender that is not a UDP address."""


@dataclass(order=True)
class _Timed:
    when: float  # Unix time
    seq: int
    messages: list[Message] = field(compare=False)
    sender: Sender = field(compare=False)
    budget: int = field(compare=False)


class OscServer:
    """UDP socket loop around :class:`~stemdeck.daemon.osc.dispatch.OscControl`, plus
    the bundle scheduler.

    Parameters
    ----------
    control : OscControl
        The address space.
    host, port : str, int
        Bind address (127.0.0.1 unless told otherwise) and port (0 picks a free one).
    allow : list of str
        Client addresses or networks allowed to control; empty allows everyone
        (sensible only on 127.0.0.1).
    nice : int, optional
        The threads' nice value (``daemon/realtime.py``); None leaves it unchanged.
    """

    def __init__(
        self,
        control: OscControl,
        *,
        host: str = "127.0.0.1",
        port: int = 9000,
        allow: Sequence[str] = (),
        nice: int | None = None,
    ) -> None:
        self.control = control
        control.set_deliver(self._late)  # a /track/load's reply, once the track plays
        self.nice = nice
        self.scheduling = "normal priority"
        try:
            self._allow = [ipaddress.ip_network(a, strict=False) for a in allow]
        except ValueError as exc:
            raise ParameterError(f"--osc-allow: {exc}") from None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ParameterError(
                f"cannot listen for OSC on {host}:{port} ({exc.strerror}); pick another --osc-port"
            ) from None
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()[:2]
        self._routes: dict[Sender, Deliver] = {}
        self._routes_lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: list[_Timed] = []
        self._seq = 0
        self._wake = threading.Condition()
        self._threads = [
            threading.Thread(target=self._serve, name="stemdeck-osc", daemon=True),
            threading.Thread(target=self._schedule, name="stemdeck-osc-sched", daemon=True),
        ]

    @property
    def pending(self) -> int:
        """Scheduled bundles waiting for their time."""
        return len(self._pending)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()

    # -- senders that are not UDP addresses ---------------------------------------------
    def route(self, sender: Sender, deliver: Deliver) -> None:
        """Send what goes to ``sender`` (replies, scheduled bundles' replies, feedback)
        to ``deliver`` instead of a UDP socket (any thread; ``deliver`` must not block)."""
        with self._routes_lock:
            self._routes[sender] = deliver

    def unroute(self, sender: Sender) -> None:
        """``sender`` is gone: forget its route and its subscription."""
        with self._routes_lock:
            self._routes.pop(sender, None)
        self.control.unsubscribe(sender)

    def _route(self, sender: Sender) -> Deliver | None:
        with self._routes_lock:
            return self._routes.get(sender)

    def send(self, address: Sender, message: str, args: Sequence[Any] = ()) -> None:
        """Send one message to ``address`` (a reply or feedback). One that cannot be
        encoded, or is larger than a UDP datagram, is answered by one ``/error``
        saying so (counted) instead: never dropped without a word."""
        route = self._route(address)
        if route is not None:
            route([(message, args)])
            return
        try:
            data = encode_message(message, args)
        except OscEncodeError as exc:
            error = self.control.error(f"{message}: reply not sent: {exc}", address, ERROR_BUDGET)
            data = encode_message(*error)
        if len(data) > MAX_DATAGRAM:
            text = f"more than a UDP datagram holds ({MAX_DATAGRAM})"
            error = self.control.error(_not_sent(message, len(data), text), address, ERROR_BUDGET)
            data = encode_message(*error)
        try:
            self.sock.sendto(data, address)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                return  # a vanished client is not our problem
            # A socket that takes less than an IPv4 datagram: say so, as above.
            text = "more than this socket sends in one datagram"
            error = self.control.error(_not_sent(message, len(data), text), address, ERROR_BUDGET)
            with contextlib.suppress(OSError):
                self.sock.sendto(encode_message(*error), address)

    def resolve(self, host: str, port: int, *, what: str = "address") -> Sender:
        """The address this server's socket sends to for ``host`` (a name or an IP)
        and ``port``, looked up once.

        Raises
        ------
        ParameterError
            ``host`` has no address of the socket's family (IPv4 or IPv6).
        """
        try:
            found = socket.getaddrinfo(host, port, self.sock.family, socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as exc:
            why = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
            raise ParameterError(f"{what} {host}:{port}: cannot resolve {host!r} ({why})") from None
        address = found[0][4]
        return (str(address[0]), int(address[1]))

    def _late(self, sender: Sender, reply: Reply) -> None:
        """A reply that comes after its datagram was answered (any thread)."""
        try:
            self._reply([reply], sender)
        except Exception as exc:  # a vanished client, a closed socket
            self.control.bad_log("OSC late reply to %s failed: %r", sender, exc)

    def _allowed(self, ip: str) -> bool:
        if not self._allow:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._allow)

    def _serve(self) -> None:
        name_os_thread()
        if self.nice is not None:
            self.scheduling = raise_priority(self.nice)
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            sender = sender[:2]
            try:
                self._reply(self.datagram(data, sender), sender)
            except Exception as exc:  # never let one datagram stop the server
                self.control.count("errors")
                self.control.bad_log("OSC datagram from %s failed: %r", sender, exc)

    def datagram(
        self, data: bytes, sender: Sender, now: float | None = None, *, check_allow: bool = True
    ) -> list[Reply]:
        """Decode, validate and apply (or schedule) one datagram; the replies to send.

        ``check_allow=False`` for a sender the caller has admitted itself (a WebSocket
        client past the web server's token and Origin checks): ``--osc-allow`` is about
        UDP addresses."""
        control = self.control
        if check_allow and not self._allowed(sender[0]):
            control.count("refused")
            return []
        control.count("received")
        budget = REPLY_BYTES_PER_BYTE * len(data) + REPLY_BYTES_BASE
        try:
            packet = decode(data)
            count = sum(1 for _ in iter_messages(packet))
            if count > MAX_MESSAGES:
                raise Refused(f"{count} messages in one datagram; at most {MAX_MESSAGES}")
        except OscDecodeError as exc:
            return [control.error(f"malformed OSC: {exc}", sender, budget)]
        except Refused as exc:
            control.count("refused")
            return [control.error(str(exc), sender, budget)]
        now = time.time() if now is None else now
        timed = [(self._when(tag, now), msgs) for tag, msgs in groups(packet)]
        if len(timed) == 1 and timed[0][0] == 0.0:
            return control.handle(timed[0][1], sender, budget=budget)
        # Several groups, or a future one: validate all of them before any runs.
        try:
            later = [w for w, _ in timed if w]
            if later:
                self._room(len(later), sender, max(later) - now)
        except Refused as exc:
            control.count("refused")
            return [control.error(str(exc), sender, budget)]
        for _, msgs in timed:
            replies = control.handle(msgs, sender, budget=budget, dry=True)
            if replies:
                return replies
        out: list[Reply] = []
        for when, msgs in timed:
            if when:
                self._at(when, msgs, sender, budget)
            else:
                out += control.handle(msgs, sender, budget=budget)
        return out

    @staticmethod
    def _when(tag: int, now: float) -> float:
        """Unix time a group runs at; 0.0 for now (immediately, or already due)."""
        if tag == IMMEDIATELY:
            return 0.0
        t = timetag_to_unix(tag)
        return t if t > now + 0.002 else 0.0

    def _room(self, n: int, sender: Sender, ahead: float) -> None:
        if ahead > HORIZON_SECONDS:
            raise Refused(f"bundle time tag is {ahead:.0f} s ahead; at most {HORIZON_SECONDS:g} s")
        with self._wake:
            if len(self._pending) + n > MAX_PENDING:
                raise Refused(
                    f"{len(self._pending)} bundles scheduled already; at most {MAX_PENDING}"
                )
            mine = sum(1 for t in self._pending if t.sender[0] == sender[0])
            if mine + n > MAX_PENDING_PER_HOST:
                raise Refused(
                    f"{mine} bundles from {sender[0]} scheduled already; "
                    f"at most {MAX_PENDING_PER_HOST} per host"
                )

    def _reply(self, replies: list[Reply], sender: Sender) -> None:
        route = self._route(sender)
        if route is not None:
            if replies:
                route(replies)
            return
        for address, args in replies:
            self.send(sender, address, args)

    def _at(self, when: float, messages: list[Message], sender: Sender, budget: int) -> None:
        """A bundle for later: queued, never slept on in the server thread."""
        self.control.count("scheduled")
        with self._wake:
            self._seq += 1
            heapq.heappush(self._pending, _Timed(when, self._seq, messages, sender, budget))
            self._wake.notify()

    def _schedule(self) -> None:
        name_os_thread()
        if self.nice is not None:
            raise_priority(self.nice)  # timed bundles are control too; same outcome as _serve
        while not self._stop.is_set():
            try:
                with self._wake:
                    if not self._pending:
                        self._wake.wait(0.5)
                        continue
                    delay = self._pending[0].when - time.time()
                    if delay > 0:
                        self._wake.wait(min(delay, 0.5))
                        continue
                    item = heapq.heappop(self._pending)
                # Checked again now: the state may have changed since it was scheduled.
                self._reply(
                    self.control.handle(item.messages, item.sender, budget=item.budget),
                    item.sender,
                )
            except Exception as exc:  # the scheduler must outlive any bundle
                self.control.count("errors")
                self.control.bad_log("OSC scheduled bundle failed: %r", exc)


def _not_sent(message: str, size: int, why: str) -> str:
    return f"{message}: reply not sent: {size} bytes, {why}"
