"""OSC server: UDP datagrams in, validated engine commands out, replies to the sender.

Transport (the socket loop) is kept apart from dispatch (:class:`OscControl`,
which knows the address space): tests drive dispatch directly and the server
over real UDP. A bad datagram of any kind changes nothing, answers ``/error``
with the reason, is counted, and the loop goes on.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pythonosc import osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder

from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.mixer.commands import Batch
from stemdeck.core.mixer.params import gain_to_db

from .transport import TransportControl

log = logging.getLogger("stemdeck")

# Feedback goes to a subscriber for this long unless it renews (docs/osc.md: 10 s).
# STEMDECK_SUBSCRIPTION_SECONDS shortens it for tests.
SUBSCRIPTION_SECONDS = float(os.environ.get("STEMDECK_SUBSCRIPTION_SECONDS", "10"))
Reply = tuple[str, Sequence[Any]]


def build(address: str, args: Iterable[Any] = ()) -> bytes:
    """One OSC message as bytes (floats as f, ints as i, strings as s, bools as T/F)."""
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool):
            b.add_arg(a, b.ARG_TYPE_TRUE if a else b.ARG_TYPE_FALSE)
        elif isinstance(a, int):
            b.add_arg(a, b.ARG_TYPE_INT)
        elif isinstance(a, float):
            b.add_arg(a, b.ARG_TYPE_FLOAT)
        else:
            b.add_arg(str(a), b.ARG_TYPE_STRING)
    return b.build().dgram


@dataclass
class Counters:
    received: int = 0
    errors: int = 0
    refused: int = 0  # senders outside --osc-allow
    scheduled: int = 0


@dataclass
class Subscriber:
    address: tuple[str, int]
    expires: float


class Host(Protocol):
    """What dispatch needs from the daemon (a seam tests can fake)."""

    registry: Any
    engine: Any
    transport: TransportControl

    def post(self, command: object) -> bool: ...
    def load_track(self, path: str) -> None: ...
    def save_scene(self, name: str) -> None: ...
    def recall_scene(self, name: str, fade: float) -> None: ...
    def status(self) -> str: ...

    def midi_learn(self, address: str) -> None: ...


@dataclass
class OscControl:
    """The OSC address space of docs/osc.md on top of a :class:`Host`."""

    host: Host
    counters: Counters = field(default_factory=Counters)
    subscribers: dict[tuple[str, int], Subscriber] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(
        self, messages: Sequence[tuple[str, Sequence[Any]]], sender: tuple[str, int]
    ) -> list[Reply]:
        """Apply the messages of one packet together; return the replies for the sender.

        Control changes of all messages are posted as one batch, so a bundle lands
        in a single audio block. An error in one message answers ``/error`` and
        drops that message only.
        """
        replies: list[Reply] = []
        commands: list[object] = []
        for address, args in messages:
            self.counters.received += 1
            try:
                commands += self._dispatch(address, list(args), sender, replies)
            except (StemdeckError, ValueError, TypeError) as exc:
                self.counters.errors += 1
                replies.append(("/error", [f"{address}: {exc}"]))
        if commands:
            if not self.host.post(commands[0] if len(commands) == 1 else Batch(tuple(commands))):
                self.counters.errors += 1
                replies.append(("/error", ["engine queue full: command dropped; send slower"]))
        return replies

    # -- dispatch ---------------------------------------------------------------------
    def _dispatch(
        self, address: str, args: list[Any], sender: tuple[str, int], replies: list[Reply]
    ) -> list[object]:
        reg = self.host.registry
        if address.startswith(("/ch/", "/master/")) or address in ("/ch", "/master"):
            if not args:
                keys = reg.resolve(address)
                if len(keys) == 1 and not any(c in address for c in "?*[{"):
                    # A query is answered on the address exactly as sent (name or index).
                    replies.append((address, [reg.get(keys[0])]))
                else:
                    replies += [(key, [reg.get(key)]) for key in keys]
                return []
            return list(reg.set(address, args))
        if address.startswith("/transport/"):
            return self._transport(address, args, replies)
        if address == "/ping":
            replies.append(("/pong", []))
            return []
        if address == "/state":
            _no_args(address, args)
            replies += self.state()
            replies.append(("/state/end", []))
            return []
        if address == "/subscribe":
            port = sender[1]
            if args:
                if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int):
                    raise ParameterError("/subscribe takes an optional int port")
                if not 1 <= args[0] <= 65535:
                    raise ParameterError(f"/subscribe port must be 1..65535, got {args[0]}")
                port = args[0]
            with self.lock:
                key = (sender[0], port)
                self.subscribers[key] = Subscriber(key, time.monotonic() + SUBSCRIPTION_SECONDS)
            replies.append(("/subscribe", [port]))
            return []
        if address == "/unsubscribe":
            with self.lock:
                for key in [k for k in self.subscribers if k[0] == sender[0]]:
                    del self.subscribers[key]
            return []
        if address == "/track/load":
            path = _string(address, args)
            self.host.load_track(path)
            replies.append(("/track/load", [path]))
            return []
        if address in ("/scene/save", "/scene/recall"):
            if not args or not isinstance(args[0], str):
                raise ParameterError(f"{address} takes a scene name (string)")
            if address == "/scene/save":
                if len(args) != 1:
                    raise ParameterError("/scene/save takes one name")
                self.host.save_scene(args[0])
            else:
                fade = 0.0
                if len(args) == 2:
                    fade = _float(address, args[1:])
                    if not 0.0 <= fade <= 600.0:
                        raise ParameterError(f"fade must be 0..600 s, got {fade:g}")
                elif len(args) > 2:
                    raise ParameterError("/scene/recall takes a name and an optional fade time")
                self.host.recall_scene(args[0], fade)
            replies.append((address, list(args)))
            return []
        if address == "/status":
            replies.append(("/status", [self.host.status()]))
            return []
        if address == "/midi/learn":
            target = _string(address, args)
            self.host.midi_learn(target)
            replies.append((address, [target]))
            return []
        raise ParameterError("unknown address")

    def _transport(self, address: str, args: list[Any], replies: list[Reply]) -> list[object]:
        transport = self.host.transport
        verb = address[len("/transport/") :]
        if verb == "position" or (verb == "seek" and not args):
            _no_args(address, args)
            replies.append((address, [transport.position()]))
            return []
        return [transport.command(verb, args)]

    def state(self) -> list[Reply]:
        """Every current value, one message per address (the /state reply)."""
        reg = self.host.registry
        out: list[Reply] = [(key, [reg.get(key)]) for key in reg.addresses()]
        out.append(("/transport/playing", [int(bool(self.host.engine.rolling))]))
        out.append(("/transport/position", [self.host.transport.position()]))
        out.append(("/channels", [*reg.names]))
        colours = getattr(self.host, "colours", None)  # a stem file names its channels' colours
        if colours and len(colours) == len(reg.names):
            out.append(("/channels/colors", [*colours]))
        return out


def _no_args(address: str, args: Sequence[Any]) -> None:
    if args:
        raise ParameterError(f"{address} takes no arguments, got {len(args)}")


def _float(address: str, args: Sequence[Any]) -> float:
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int | float):
        raise ParameterError(f"{address} takes a number, got {list(args)!r}")
    value = float(args[0])
    if math.isnan(value) or math.isinf(value):
        raise ParameterError(f"{address} got {value}")
    return value


def _string(address: str, args: Sequence[Any]) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ParameterError(f"{address} takes one string, got {list(args)!r}")
    return args[0]


class OscServer:
    """UDP socket loop around :class:`OscControl`, plus the bundle scheduler.

    Parameters
    ----------
    host, port : str, int
        Bind address (127.0.0.1 unless told otherwise) and port (0 picks a free one).
    allow : list of str
        Client addresses or networks allowed to control; empty allows everyone
        (sensible only on 127.0.0.1).
    """

    def __init__(
        self,
        control: OscControl,
        *,
        host: str = "127.0.0.1",
        port: int = 9000,
        allow: Sequence[str] = (),
    ) -> None:
        self.control = control
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
        self._stop = threading.Event()
        self._pending: list[tuple[float, int, list[tuple[str, list[Any]]], tuple[str, int]]] = []
        self._seq = 0
        self._wake = threading.Condition()
        self._threads = [
            threading.Thread(target=self._serve, name="stemdeck-osc", daemon=True),
            threading.Thread(target=self._schedule, name="stemdeck-osc-sched", daemon=True),
        ]

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

    def send(self, address: tuple[str, int], message: str, args: Sequence[Any] = ()) -> None:
        try:
            self.sock.sendto(build(message, args), address)
        except OSError:
            pass  # a vanished client is not our problem

    def _allowed(self, ip: str) -> bool:
        if not self._allow:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._allow)

    def _serve(self) -> None:
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
                self._datagram(data, sender)
            except Exception as exc:  # never let one datagram stop the server
                self.control.counters.errors += 1
                log.debug("OSC datagram from %s failed: %r", sender, exc)

    def _datagram(self, data: bytes, sender: tuple[str, int]) -> None:
        if not self._allowed(sender[0]):
            self.control.counters.refused += 1
            return
        try:
            packet = osc_packet.OscPacket(data)
        except Exception:  # python-osc raises several types on garbage
            self.control.counters.received += 1
            self.control.counters.errors += 1
            self.send(sender, "/error", ["not an OSC packet"])
            return
        now = time.time()
        groups: dict[float, list[tuple[str, list[Any]]]] = {}
        for timed in packet.messages:
            when = timed.time if timed.time > now + 0.002 else 0.0
            groups.setdefault(when, []).append((timed.message.address, list(timed.message.params)))
        for when, messages in groups.items():
            if when:
                self._at(when, messages, sender)
            else:
                self._reply(self.control.handle(messages, sender), sender)

    def _reply(self, replies: list[Reply], sender: tuple[str, int]) -> None:
        for address, args in replies:
            self.send(sender, address, args)

    def _at(
        self, when: float, messages: list[tuple[str, list[Any]]], sender: tuple[str, int]
    ) -> None:
        """A bundle for later: queued, never slept on in the server thread."""
        self.control.counters.scheduled += 1
        with self._wake:
            self._seq += 1
            heapq.heappush(self._pending, (when, self._seq, messages, sender))
            self._wake.notify()

    def _schedule(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                if not self._pending:
                    self._wake.wait(0.5)
                    continue
                when = self._pending[0][0]
                delay = when - time.time()
                if delay > 0:
                    self._wake.wait(min(delay, 0.5))
                    continue
                _, _, messages, sender = heapq.heappop(self._pending)
            self._reply(self.control.handle(messages, sender), sender)


class Feedback:
    """Sends changes, meters and position to subscribers, about 25 times a second."""

    def __init__(
        self,
        server: OscServer,
        *,
        rate_hz: float = 25.0,
        extra: Callable[[], list[Reply]] | None = None,
    ) -> None:
        self.server = server
        self.period = 1.0 / rate_hz
        self.extra = extra
        self._last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-feedback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        control = self.server.control
        while not self._stop.wait(self.period):
            try:
                now = time.monotonic()
                with control.lock:
                    for key in [k for k, s in control.subscribers.items() if s.expires < now]:
                        del control.subscribers[key]
                    targets = list(control.subscribers)
                meters = control.host.engine.read_meters()
                if not targets:
                    continue
                messages = self.changes(control)
                peaks = [max(gain_to_db(float(p)), -120.0) for p in meters.peak]
                messages.append(("/meter", peaks))
                messages.append(("/transport/position", [float(meters.position)]))
                if self.extra is not None:
                    messages += self.extra()
                for target in targets:
                    for address, args in messages:
                        self.server.send(target, address, args)
            except Exception as exc:  # feedback must never take the daemon down
                log.debug("feedback: %r", exc)

    def changes(self, control: OscControl) -> list[Reply]:
        """Control values that changed since the last call (all of them the first time)."""
        out = []
        for address, args in control.state():
            if self._last.get(address) != args:
                self._last[address] = args
                out.append((address, args))
        return out
