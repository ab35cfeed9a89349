"""OSC server: UDP datagrams in, validated engine commands out, replies to the sender.

Transport (the socket loop, :class:`OscServer`) is kept apart from dispatch
(:class:`OscControl`, which knows the address space): tests drive dispatch
directly and the server over real UDP. What arrives is decoded strictly
(``daemon/oscwire.py``); a datagram that is malformed, or any message of it that
is bad, answers one ``/error`` with the reason, is counted, and changes nothing.

A datagram, and each time-tagged bundle in it, is all or nothing: every message
is validated and staged in a :class:`~stemdeck.core.control.registry.Transaction`
first, then the registry's new state and the transport commands go to the
engine as one command, posted under the registry's lock, so the registry and
the audio never disagree.

Limits keep a hostile or broken client from hurting the set (``docs/osc.md``):
messages per datagram, transport commands per bundle, the reply bytes per
request byte, ``/state`` per sender, subscribers per host and in total, and the
count and horizon of scheduled bundles.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stemdeck.core.control.pattern import is_pattern
from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.mixer.params import gain_to_db

from .oscwire import (
    IMMEDIATELY,
    Message,
    OscDecodeError,
    decode,
    encode_message,
    groups,
    iter_messages,
    timetag_to_unix,
)
from .realtime import name_os_thread, raise_priority
from .transport import TransportControl

log = logging.getLogger("stemdeck")

# Feedback goes to a subscriber for this long unless it renews (docs/osc.md: 10 s).
# STEMDECK_SUBSCRIPTION_SECONDS shortens it for tests.
SUBSCRIPTION_SECONDS = float(os.environ.get("STEMDECK_SUBSCRIPTION_SECONDS", "10"))

MAX_MESSAGES = 128  # messages in one datagram
MAX_TRANSPORT_COMMANDS = 16  # transport commands in one bundle
REPLY_BYTES_PER_BYTE = 4  # replies to a datagram: at most 4 bytes per byte received...
REPLY_BYTES_BASE = 96  # ...plus this much, so an /error with its reason always fits
MAX_PENDING = 256  # scheduled bundles waiting, in all
MAX_PENDING_PER_HOST = 64
HORIZON_SECONDS = 60.0  # how far ahead a bundle may be scheduled
SUBSCRIBERS_PER_HOST = 8
SUBSCRIBERS_TOTAL = 64
STATE_BURST, STATE_PER_SECOND = 4, 2.0  # /state and new subscriptions, per sender
STATUS_BURST, STATUS_PER_SECOND = 20, 10.0  # /status, per sender
HOST_BURST, HOST_PER_SECOND = 32, 16.0  # the same, per host (all its ports)
LOG_LINES, LOG_WINDOW = 5, 10.0  # bad-input log lines per window

Reply = tuple[str, Sequence[Any]]
Sender = tuple[str, int]


def build(address: str, args: Iterable[Any] = ()) -> bytes:
    """One OSC message as bytes (floats as f, ints as i, strings as s, bools as T/F)."""
    return encode_message(address, args)


def reply_size(address: str, args: Sequence[Any]) -> int:
    """Bytes of the encoded message, without encoding it."""
    n = (len(address.encode()) + 4) & ~3
    n += (len(args) + 2 + 3) & ~3
    for a in args:
        if isinstance(a, bool) or a is None:
            continue
        if isinstance(a, int | float):
            n += 4
        else:
            n += (len(str(a).encode()) + 4) & ~3
    return n


@dataclass
class Counters:
    received: int = 0  # datagrams
    errors: int = 0  # /error replies
    refused: int = 0  # senders outside --osc-allow, rate limits, caps, full scheduler
    scheduled: int = 0  # bundles scheduled for later


@dataclass
class Subscriber:
    address: Sender
    expires: float
    form: str = "names"  # feedback addresses by channel name or by index
    fresh: bool = True  # the full state is still to be sent


class Host(Protocol):
    """What dispatch needs from the daemon (a seam tests can fake)."""

    registry: Any
    engine: Any
    transport: TransportControl

    def post(self, command: Any) -> bool: ...
    def load_track(self, path: str) -> None: ...
    def save_scene(self, name: str) -> None: ...
    def recall_scene(self, name: str, fade: float) -> None: ...
    def status(self) -> str: ...

    def midi_learn(self, address: str) -> None: ...
    def track_info(self) -> tuple[str, str, float]: ...
    def library_tracks(self) -> list[str]: ...
    def scene_names(self) -> list[str]: ...


class Refused(ParameterError):
    """A well-formed request turned away by a limit (counted as refused)."""


class TokenBucket:
    """``burst`` requests at once, then ``rate`` a second, per key (bounded memory)."""

    def __init__(self, burst: float, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self._tokens: dict[Any, tuple[float, float]] = {}

    def available(self, key: Any, now: float) -> bool:
        tokens, then = self._tokens.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate) >= 1.0

    def take(self, key: Any, now: float) -> None:
        tokens, then = self._tokens.get(key, (self.burst, now))
        if len(self._tokens) > 4096:  # forget full buckets; a full one is the default
            self._tokens = {
                k: v
                for k, v in self._tokens.items()
                if v[0] + (now - v[1]) * self.rate < self.burst
            }
        self._tokens[key] = (min(self.burst, tokens + (now - then) * self.rate) - 1.0, now)


class RateLimitedLog:
    """At most ``lines`` log lines per ``window`` seconds; then one line says how many
    were left out. A flood of bad datagrams cannot fill a disk."""

    def __init__(self, lines: int = LOG_LINES, window: float = LOG_WINDOW) -> None:
        self.lines, self.window = lines, window
        self._start = -float("inf")
        self._count = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def __call__(self, text: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.window:
                if self._dropped:
                    log.info("OSC: %d more bad messages not logged", self._dropped)
                self._start, self._count, self._dropped = now, 0, 0
            if self._count >= self.lines:
                self._dropped += 1
                return
            self._count += 1
        log.info(text, *args)


@dataclass
class _Plan:
    """What one group of messages will do, gathered before anything is applied."""

    replies: list[Reply] = field(default_factory=list)
    bulk: list[Reply] = field(default_factory=list)  # /state: rate-limited, not budgeted
    commands: list[Any] = field(default_factory=list)  # transport commands
    after: list[tuple[str, Callable[[], Reply]]] = field(default_factory=list)


@dataclass
class OscControl:
    """The OSC address space of docs/osc.md on top of a :class:`Host`.

    ``feedback_form`` is the default address form of feedback: ``"names"``
    (stems) or ``"index"`` (components).
    """

    host: Host
    feedback_form: str = "names"
    counters: Counters = field(default_factory=Counters)
    subscribers: dict[Sender, Subscriber] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bad_log: RateLimitedLog = field(default_factory=RateLimitedLog)
    _state_sender: TokenBucket = field(
        default_factory=lambda: TokenBucket(STATE_BURST, STATE_PER_SECOND)
    )
    _status_sender: TokenBucket = field(
        default_factory=lambda: TokenBucket(STATUS_BURST, STATUS_PER_SECOND)
    )
    _state_host: TokenBucket = field(
        default_factory=lambda: TokenBucket(HOST_BURST, HOST_PER_SECOND)
    )

    def error(self, text: str, sender: Sender, budget: int | None = None) -> Reply:
        """An ``/error`` reply (counted, logged at a limited rate), cut to ``budget`` bytes."""
        self.counters.errors += 1
        self.bad_log("OSC from %s:%d: %s", sender[0], sender[1], text)
        if budget is not None:
            room = max(budget - 16, 16)
            if len(text.encode()) > room:
                text = text.encode()[: room - 3].decode("utf-8", "ignore") + "..."
        return ("/error", [text])

    def handle(
        self,
        messages: Sequence[Message | tuple[str, Sequence[Any]]],
        sender: Sender,
        *,
        budget: int | None = None,
        dry: bool = False,
    ) -> list[Reply]:
        """Apply one group of messages all together; return the replies for the sender.

        Every message is validated and staged first; if any is bad, or the replies
        would pass ``budget`` bytes, the answer is one ``/error`` and nothing
        changes. Otherwise the staged control values and the transport commands go
        to the engine as one command (one audio block), then the other requests run
        (track load, scenes, subscriptions). ``dry`` validates only.
        """
        msgs = [m if isinstance(m, Message) else Message(m[0], tuple(m[1])) for m in messages]
        plan = _Plan()
        reg = self.host.registry
        with reg.transaction() as txn:
            current = ""
            try:
                if len(msgs) > MAX_MESSAGES:
                    raise Refused(f"{len(msgs)} messages in one bundle; at most {MAX_MESSAGES}")
                states = sum(m.address == "/state" for m in msgs)
                if states > 1:
                    raise Refused(f"{states} /state requests in one bundle; at most one")
                for m in msgs:
                    current = m.address
                    self._dispatch(m.address, list(m.args), sender, txn, plan, dry)
                current = ""
                if len(plan.commands) > MAX_TRANSPORT_COMMANDS:
                    raise Refused(
                        f"{len(plan.commands)} transport commands in one bundle; "
                        f"at most {MAX_TRANSPORT_COMMANDS}"
                    )
                if budget is not None:
                    size = sum(reply_size(a, v) for a, v in plan.replies)
                    if size > budget:
                        raise Refused(
                            f"{size} bytes of replies, over the {budget} allowed "
                            f"({REPLY_BYTES_PER_BYTE}/byte sent + {REPLY_BYTES_BASE}); "
                            "ask for fewer controls"
                        )
            except (StemdeckError, ValueError, TypeError, OverflowError) as exc:
                if isinstance(exc, Refused):
                    self.counters.refused += 1
                text = str(exc)
                if current and current not in text:
                    text = f"{current}: {text}"
                return [self.error(text, sender, budget)]
            if dry:
                return []
            if not txn.commit(self.host.post, plan.commands):
                return [self.error("engine queue full: nothing applied; send slower", sender)]
        replies = plan.replies + plan.bulk
        for address, action in plan.after:
            try:
                replies.append(action())
            except (StemdeckError, ValueError, TypeError, OSError) as exc:
                replies.append(self.error(f"{address}: {exc}", sender, budget))
        return replies

    # -- dispatch ---------------------------------------------------------------------
    def _dispatch(
        self,
        address: str,
        args: list[Any],
        sender: Sender,
        txn: Any,
        plan: _Plan,
        dry: bool,
    ) -> None:
        reg = self.host.registry
        host = self.host
        if address.startswith(("/ch/", "/master/")) or is_pattern(address):
            if not args:
                # A query is answered on the address as sent; a pattern, one reply per
                # control on the form it matched (docs/osc.md).
                plan.replies += [(used, [txn.get(key)]) for key, used in reg.match(address)]
            else:
                txn.set(address, args)
            return
        if address.startswith("/transport/"):
            transport = host.transport
            verb = address[len("/transport/") :]
            if verb == "position" or (verb == "seek" and not args):
                _no_args(address, args)
                plan.replies.append((address, [transport.position()]))
            elif verb in ("playing", "length") or (verb == "loop" and not args):
                plan.replies.append((address, _transport_value(host, verb)))
            else:
                plan.commands.append(transport.command(verb, args))
            return
        if address == "/ping":
            _no_args(address, args)
            plan.replies.append(("/pong", []))
            return
        if address == "/status":
            _no_args(address, args)
            self._bulk_allowed(sender, dry, self._status_sender, "/status")
            plan.bulk.append(("/status", [host.status()]))
            return
        if address == "/state":
            _no_args(address, args)
            self._bulk_allowed(sender, dry)
            plan.bulk += self.state(form="index")
            plan.bulk.append(("/state/end", []))
            return
        if address == "/subscribe":
            self._subscribe(args, sender, plan, dry)
            return
        if address == "/unsubscribe":
            port = sender[1]
            if args:
                port = _own_port(address, args[0], sender)
                if len(args) > 1:
                    raise ParameterError(
                        f"/unsubscribe takes an optional port, got {len(args)} arguments"
                    )

            def unsubscribe() -> Reply:
                with self.lock:
                    self.subscribers.pop((sender[0], port), None)
                return ("/unsubscribe", [port])

            plan.after.append((address, unsubscribe))
            return
        if address == "/track/load":
            path = _string(address, args)

            def load() -> Reply:
                host.load_track(path)
                return ("/track/load", [path])

            plan.after.append((address, load))
            return
        if address in ("/scene/save", "/scene/recall"):
            if not args or not isinstance(args[0], str):
                raise ParameterError(f"{address} takes a scene name (string)")
            name = args[0]
            if address == "/scene/save":
                if len(args) != 1:
                    raise ParameterError("/scene/save takes one name")

                def save() -> Reply:
                    host.save_scene(name)
                    return ("/scene/save", [name])

                plan.after.append((address, save))
                return
            fade = 0.0
            if len(args) == 2:
                fade = _float(address, args[1:])
                if not 0.0 <= fade <= 600.0:
                    raise ParameterError(f"fade must be 0..600 s, got {fade:g}")
            elif len(args) > 2:
                raise ParameterError("/scene/recall takes a name and an optional fade time")
            echo = list(args)

            def recall() -> Reply:
                host.recall_scene(name, fade)
                return ("/scene/recall", echo)

            plan.after.append((address, recall))
            return
        if address == "/midi/learn":
            target = _string(address, args)

            def learn() -> Reply:
                host.midi_learn(target)
                return ("/midi/learn", [target])

            plan.after.append((address, learn))
            return
        if address in ("/track/name", "/track/progress", "/channels", "/channels/colors"):
            _no_args(address, args)
            plan.replies += [r for r in self.track_state() if r[0] == address]
            return
        if address in ("/track/list", "/scene/list"):
            # Lists answer more than they were sent: rate-limited like /state.
            _no_args(address, args)
            self._bulk_allowed(sender, dry, what=address)
            names = host.library_tracks() if address == "/track/list" else host.scene_names()
            plan.bulk.append((address, list(names)))
            return
        raise ParameterError("unknown address")

    def _bulk_allowed(
        self, sender: Sender, dry: bool, bucket: TokenBucket | None = None, what: str = "/state"
    ) -> None:
        """/state, /status and new subscriptions answer more than they were sent (the
        byte budget does not cover them): rate-limited per sender and per host."""
        now = time.monotonic()
        bucket = bucket or self._state_sender
        if not bucket.available(sender, now):
            raise Refused(
                f"too many {what} requests from {sender[0]}:{sender[1]}: "
                f"at most {bucket.rate:g} a second"
            )
        if not self._state_host.available(sender[0], now):
            raise Refused(
                f"too many {what} requests from {sender[0]}: at most {HOST_PER_SECOND:g} a second"
            )
        if not dry:
            bucket.take(sender, now)
            self._state_host.take(sender[0], now)

    def _subscribe(self, args: list[Any], sender: Sender, plan: _Plan, dry: bool) -> None:
        port, form = sender[1], self.feedback_form
        rest = list(args)
        if rest and not isinstance(rest[0], str):
            port = _own_port("/subscribe", rest.pop(0), sender)
        if rest:
            if not isinstance(rest[0], str) or rest[0] not in ("names", "index"):
                raise ParameterError(
                    f"/subscribe takes [port] ['names' or 'index'], got {rest[0]!r}"
                )
            form = rest.pop(0)
        if rest:
            raise ParameterError(f"/subscribe takes [port] [form], got {len(args)} arguments")
        key = (sender[0], port)
        with self.lock:
            new = key not in self.subscribers
            if new:
                from_host = sum(1 for k in self.subscribers if k[0] == sender[0])
                if from_host >= SUBSCRIBERS_PER_HOST:
                    raise Refused(
                        f"{from_host} subscribers from {sender[0]} already; "
                        f"at most {SUBSCRIBERS_PER_HOST} per host"
                    )
                if len(self.subscribers) >= SUBSCRIBERS_TOTAL:
                    raise Refused(f"{SUBSCRIBERS_TOTAL} subscribers already; no room for more")
        if new:
            self._bulk_allowed(sender, dry)

        def subscribe() -> Reply:
            with self.lock:
                old = self.subscribers.get(key)
                fresh = old is None or old.form != form or old.fresh
                self.subscribers[key] = Subscriber(
                    key, time.monotonic() + SUBSCRIPTION_SECONDS, form, fresh
                )
            return ("/subscribe", [port, form])

        plan.after.append(("/subscribe", subscribe))

    def state(self, form: str = "index") -> list[Reply]:
        """Every current value, one message per address (the /state reply), with
        channels by index or, ``form="names"``, by name."""
        reg = self.host.registry
        with reg.transaction():
            values = [(key, [reg.get(key)]) for key in reg.addresses()]
            names = list(reg.names)
        out: list[Reply] = [(self.form(key, form, names), v) for key, v in values]
        out.append(("/transport/playing", _transport_value(self.host, "playing")))
        out.append(("/transport/position", [self.host.transport.position()]))
        out.append(("/transport/loop", _transport_value(self.host, "loop")))
        out.append(("/transport/length", _transport_value(self.host, "length")))
        out += self.track_state(names)
        return out

    def track_state(self, names: Sequence[str] | None = None) -> list[Reply]:
        """The track's name, separation progress, channel names (and colours, for a
        stem file that names them)."""
        names = list(self.host.registry.names) if names is None else list(names)
        track, stage, fraction = self.host.track_info()
        out: list[Reply] = [
            ("/track/name", [track]),
            ("/track/progress", [stage, fraction]),
            ("/channels", names),
        ]
        colours = getattr(self.host, "colours", None)  # a stem file names its channels' colours
        if colours and len(colours) == len(names):
            out.append(("/channels/colors", [*colours]))
        return out

    @staticmethod
    def form(key: str, form: str, names: Sequence[str]) -> str:
        """A canonical key (``/ch/2/mute``) in the address form a client asked for."""
        if form == "names" and key.startswith("/ch/"):
            _, _, index, param = key.split("/")
            i = int(index) - 1
            if 0 <= i < len(names):
                return f"/ch/{names[i]}/{param}"
        return key


def _transport_value(host: Host, verb: str) -> list[Any]:
    """``/transport/playing`` (1/0), ``/length`` (seconds) or ``/loop`` (start and end
    seconds; 0 0 when there is no loop)."""
    engine = host.engine
    if verb == "playing":
        return [int(bool(engine.rolling))]
    sr = engine.sr
    if verb == "length":
        track = engine.track
        return [track.length / sr if track is not None and sr else 0.0]
    loop = engine.loop
    return [loop[0] / sr, loop[1] / sr] if loop is not None and sr else [0.0, 0.0]


def _no_args(address: str, args: Sequence[Any]) -> None:
    if args:
        raise ParameterError(f"{address} takes no arguments, got {len(args)}")


def _port(address: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{address} port must be an int, got {value!r}")
    if not 1 <= value <= 65535:
        raise ParameterError(f"{address} port must be 1..65535, got {value}")
    return value


def _own_port(address: str, value: Any, sender: Sender) -> int:
    """A port for /subscribe or /unsubscribe; a WebSocket sender (``"ws:<ip>"``) has
    no UDP port to name: values come back on its connection, keyed by its own port."""
    port = _port(address, value)
    if sender[0].startswith("ws:") and port != sender[1]:
        raise ParameterError(
            f"{address} over the WebSocket takes no port: values come back on this connection"
        )
    return port


def _float(address: str, args: Sequence[Any]) -> float:
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int | float):
        raise ParameterError(f"{address} takes a number, got {list(args)!r}")
    value = float(args[0])
    if value != value or value in (float("inf"), float("-inf")):
        raise ParameterError(f"{address} got {value}")
    return value


def _string(address: str, args: Sequence[Any]) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ParameterError(f"{address} takes one string, got {list(args)!r}")
    return args[0]


@dataclass(order=True)
class _Timed:
    when: float  # Unix time
    seq: int
    messages: list[Message] = field(compare=False)
    sender: Sender = field(compare=False)
    budget: int = field(compare=False)


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
        nice: int | None = None,
    ) -> None:
        self.control = control
        self.nice = nice  # the threads' nice value (daemon/realtime.py); None: unchanged
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
        # Senders that are not UDP addresses (a WebSocket connection, daemon/web/): their
        # replies and feedback go through the callable, everything else is the same.
        self.routes: dict[Sender, Callable[[list[Reply]], None]] = {}
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

    def send(self, address: Sender, message: str, args: Sequence[Any] = ()) -> None:
        route = self.routes.get(address)
        if route is not None:
            route([(message, args)])
            return
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
                self.control.counters.errors += 1
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
            control.counters.refused += 1
            return []
        control.counters.received += 1
        budget = REPLY_BYTES_PER_BYTE * len(data) + REPLY_BYTES_BASE
        try:
            packet = decode(data)
            count = sum(1 for _ in iter_messages(packet))
            if count > MAX_MESSAGES:
                raise Refused(f"{count} messages in one datagram; at most {MAX_MESSAGES}")
        except OscDecodeError as exc:
            return [control.error(f"malformed OSC: {exc}", sender, budget)]
        except Refused as exc:
            control.counters.refused += 1
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
            control.counters.refused += 1
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
        route = self.routes.get(sender)
        if route is not None:
            if replies:
                route(replies)
            return
        for address, args in replies:
            self.send(sender, address, args)

    def _at(self, when: float, messages: list[Message], sender: Sender, budget: int) -> None:
        """A bundle for later: queued, never slept on in the server thread."""
        self.control.counters.scheduled += 1
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
                self.control.counters.errors += 1
                self.control.bad_log("OSC scheduled bundle failed: %r", exc)


@dataclass(frozen=True)
class FeedbackFrame:
    """One feedback round, for listeners in other threads (the web server).

    ``state`` is every value (channels by index, no position), ``changes`` the part
    of it that changed since the last round; meters are dBFS (floor -120), one per
    channel then the master.
    """

    state: list[Reply]
    changes: list[Reply]
    peak_db: list[float]
    rms_db: list[float]
    position: float
    names: list[str]
    status: str


class Feedback:
    """Sends changes, meters and position to subscribers, about 25 times a second.

    A new subscriber (or one that changed its address form) first gets every
    current value; then all subscribers get what changed. ``listeners`` are called
    with a :class:`FeedbackFrame` every round (in this thread: they must not block);
    ``wanted`` says whether any listener wants one now.
    """

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
        self.listeners: list[Callable[[FeedbackFrame], None]] = []
        self.wanted: Callable[[], bool] = lambda: bool(self.listeners)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stemdeck-feedback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        name_os_thread()
        if self.server.nice is not None:
            raise_priority(self.server.nice)  # it takes the GIL 25 times a second
        while not self._stop.wait(self.period):
            try:
                self.tick()
            except Exception as exc:  # feedback must never take the daemon down
                self.server.control.bad_log("feedback: %r", exc)

    def tick(self) -> None:
        """One round of feedback to every subscriber."""
        control = self.server.control
        now = time.monotonic()
        with control.lock:
            for key in [k for k, s in control.subscribers.items() if s.expires < now]:
                del control.subscribers[key]
            targets = [(s.address, s.form, s.fresh) for s in control.subscribers.values()]
            for s in control.subscribers.values():
                s.fresh = False
        meters = control.host.engine.read_meters()
        wanted = self.wanted()
        if not targets and not wanted:
            return
        state = [r for r in control.state("index") if r[0] != "/transport/position"]
        changes = self.changes(state)
        names = list(control.host.registry.names)
        peak_db = [max(gain_to_db(float(p)), -120.0) for p in meters.peak]
        tail: list[Reply] = [
            ("/meter", peak_db),
            ("/transport/position", [float(meters.position)]),
        ]
        if self.extra is not None:
            tail += self.extra()
        if wanted:
            frame = FeedbackFrame(
                state=state,
                changes=changes,
                peak_db=peak_db,
                rms_db=[max(gain_to_db(float(r)), -120.0) for r in meters.rms],
                position=float(meters.position),
                names=names,
                status=next((a[0] for k, a in tail if k == "/status"), ""),
            )
            for listener in list(self.listeners):
                listener(frame)
        for target, form, fresh in targets:
            for address, args in (state if fresh else changes) + tail:
                self.server.send(target, control.form(address, form, names), args)

    def changes(self, state: list[Reply]) -> list[Reply]:
        """Values that changed since the last call (all of them the first time)."""
        out = []
        for address, args in state:
            if self._last.get(address) != args:
                self._last[address] = args
                out.append((address, args))
        return out
