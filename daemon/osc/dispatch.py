"""The OSC address space of ``docs/osc.md``: validated messages in, engine commands out.

:class:`OscControl` maps each address to a small handler, as python-osc's
``Dispatcher.map`` and Ardour's surface register theirs: exact addresses
(``/ping``, ``/scene/recall``...) in one table, then the prefixes ``/ch/``,
``/master/``, ``/fx/`` (and any OSC pattern) for the registry's controls,
``/transport/`` for the transport verbs, and the DAWs' dialects: ``/track/`` for
REAPER's track addresses (``reaper.py``) and ``/strip/`` for Ardour's (``ardour.py``).

A group of messages (a datagram, or one time-tagged bundle in it) is all or
nothing: every message is validated and staged in a
:class:`~stemdeck.core.control.registry.Transaction` first, then the registry's
new state and the transport commands go to the engine as one command, posted
under the registry's lock, so the registry and the audio never disagree. A bad
message answers one ``/error`` with the reason, is counted, and changes nothing.
``/track/load`` is checked with its group and answered when the load ends
(:class:`LateReply`, sent through the server's deliver callback).

``/subscribe`` and ``/unsubscribe`` change :class:`~.subscriptions.Subscriptions`
(``subscriptions.py``), which the feedback thread reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

from stemdeck.core.beats.grid import BeatGrid
from stemdeck.core.control.bindings import check_learn
from stemdeck.core.control.pattern import is_pattern
from stemdeck.core.control.registry import Transaction
from stemdeck.core.control.values import MAX_SCENE_FADE_S
from stemdeck.core.errors import ParameterError, StemdeckError
from stemdeck.core.mixer.commands import Command

from ..host import Host
from ..quantize import parse_quantize
from ..transport import Led
from .ardour import Ardour, ardour_feedback
from .args import no_args, number, own_port, scene_name, string
from .cues import CueHandlers, cue_state
from .grid import GRID_EDITS, GRID_VALUE, GridHandlers, grid_args
from .limits import (
    ERROR_BUDGET,
    HOST_BURST,
    HOST_PER_SECOND,
    MAX_MESSAGES,
    MAX_TRANSPORT_COMMANDS,
    REPLY_BYTES_BASE,
    REPLY_BYTES_PER_BYTE,
    STATE_BURST,
    STATE_PER_SECOND,
    STATUS_BURST,
    STATUS_PER_SECOND,
    RateLimitedLog,
    Refused,
    Reply,
    Sender,
    TokenBucket,
    reply_size,
)
from .reaper import Reaper, reaper_feedback
from .subscriptions import SUBSCRIPTION_SECONDS, Subscriptions, subscribe_args
from .tempo import TempoHandlers, current_bpm
from .wire import Message, text_bytes

__all__ = [
    "Counter",
    "Counters",
    "Group",
    "Handler",
    "LateDeliver",
    "LateReply",
    "OscControl",
    "Plan",
]

log = logging.getLogger(__name__)

Counter = Literal["received", "errors", "refused", "scheduled"]


@dataclass
class Counters:
    """What OSC has seen since the start (the status line shows it)."""

    received: int = 0  # datagrams
    errors: int = 0  # /error replies
    refused: int = 0  # senders outside --osc-allow, rate limits, caps, full scheduler
    scheduled: int = 0  # bundles scheduled for later


@dataclass
class Plan:
    """What one group of messages will do, gathered before anything is applied."""

    replies: list[Reply] = field(default_factory=list)
    bulk: list[Reply] = field(default_factory=list)  # /state: rate-limited, not budgeted
    commands: list[Command] = field(default_factory=list)  # transport commands
    # Run once the group is posted: the reply now, or None when it comes later.
    after: list[tuple[str, Callable[[], Reply | None]]] = field(default_factory=list)

    led: int = 0  # the sync leader's actions among ``after`` (capped as commands are)

    def transport(self, address: str, command: Command | Led | None) -> None:
        """A transport verb's outcome: an engine command joins the group's, a sync
        leader's action runs once the group is applied, a release does nothing."""
        if isinstance(command, Led):
            self.after.append((address, command.run))
            self.led += 1
        elif command is not None:
            self.commands.append(command)


@dataclass
class Group:
    """One group of messages being dispatched: who sent it, where its control values
    are staged, and what it will do (a handler adds to ``plan``)."""

    sender: Sender
    txn: Transaction
    plan: Plan
    dry: bool  # validate only: take no rate-limit tokens
    grid: BeatGrid | None = None  # the beat grid as this group's edits leave it
    source: str | None = None  # the sync source as this group's /sync/source leaves it
    # A family's own state as this group's messages leave it, by family (reaper.py)
    staged: dict[str, Any] = field(default_factory=dict)


LateDeliver = Callable[[Sender, Reply], None]
"""Sends one reply to a sender, after :meth:`OscControl.handle` has returned."""


class LateReply:
    """The one reply to a request that ends later (``/track/load``), as a callback:
    ``reply(None)`` answers ``address echo``, ``reply(reason)`` an ``/error``.

    Called before :meth:`settle`, the reply joins the group's replies; after it, it
    goes through the control's deliver callback. Only the first call counts.
    """

    def __init__(self, control: OscControl, sender: Sender, address: str, echo: list[Any]):
        self.control = control
        self.sender = sender
        self.address = address
        self.echo = echo
        self._lock = threading.Lock()
        self._answered = False
        self._settled = False
        self._now: Reply | None = None

    def __call__(self, failure: str | None) -> None:
        with self._lock:
            if self._answered:
                return
            self._answered = True
        if failure is None:
            reply: Reply = (self.address, self.echo)
        else:
            text = f"{self.address}: {failure}"
            # The loader logged the failure once; the reply is counted, not logged again.
            reply = self.control.error(text, self.sender, ERROR_BUDGET, logged=False)
        with self._lock:
            if not self._settled:
                self._now = reply
                return
        self.control.deliver(self.sender, reply)

    def settle(self) -> Reply | None:
        """The reply if it came already; from now on it is delivered when it comes."""
        with self._lock:
            self._settled = True
            return self._now


Handler = Callable[[str, list[Any], Group], None]
"""Validates one message (address, arguments) and adds what it does to the group;
raises :class:`~stemdeck.core.errors.StemdeckError` (or ValueError) to refuse it."""


class OscControl:
    """The OSC address space of docs/osc.md on top of a :class:`~stemdeck.daemon.host.Host`.

    Parameters
    ----------
    host : Host
        The daemon (or a fake of it).
    feedback_form : {"names", "index"}
        The default address form of feedback: ``"names"`` (stems) or ``"index"``
        (components).
    subscription_seconds : float
        How long feedback goes to a subscriber that does not renew (docs/osc.md).
    """

    def __init__(
        self,
        host: Host,
        *,
        feedback_form: str = "names",
        subscription_seconds: float = SUBSCRIPTION_SECONDS,
    ) -> None:
        self.host = host
        self.feedback_form = feedback_form
        self.bad_log = RateLimitedLog(log)
        self._counters = Counters()
        self._counters_lock = threading.Lock()
        self.subscriptions = Subscriptions(subscription_seconds)
        self._state_sender = TokenBucket(STATE_BURST, STATE_PER_SECOND)
        self._status_sender = TokenBucket(STATUS_BURST, STATUS_PER_SECOND)
        self._state_host = TokenBucket(HOST_BURST, HOST_PER_SECOND)
        self._deliver: LateDeliver | None = None
        self._exact: dict[str, Handler] = {}
        self._prefixes: list[tuple[str, Handler]] = []
        self.map("/ping", self._ping)
        self.map("/status", self._status)
        self.map("/state", self._state)
        self.map("/subscribe", self._subscribe)
        self.map("/unsubscribe", self._unsubscribe)
        self.map("/track/load", self._track_load)
        self.map("/scene/save", self._scene_save)
        self.map("/scene/recall", self._scene_recall)
        self.map("/midi/learn", self._midi_learn)
        for address in (
            "/track/name",
            "/track/progress",
            "/channels",
            "/channels/colors",
            "/channels/labels",
        ):
            self.map(address, self._track_query)
        self.map("/channels/names", self._track_query)  # /channels, as OSCQuery lists it
        for address in ("/track/list", "/scene/list"):
            self.map(address, self._list)
        self.map("/sync/source", self._sync_source)
        self.map("/sync/anchor", self._sync_anchor)
        for address in ("/sync/tempo", "/sync/phase", "/sync/peers"):
            self.map(address, self._sync_query)
        self.map("/quantize", self._quantize)
        grid = GridHandlers(self.host)
        self.map("/track/bpm", grid.track_bpm)
        self.map("/track/key", grid.track_key)
        for address in ("/track/grid", GRID_VALUE):
            self.map(address, grid.query)
        for verb in GRID_EDITS:
            self.map(f"/track/grid/{verb}", grid.edit)
        self.map("/transport/bpm", TempoHandlers(self.host).bpm)
        self.reaper = Reaper(self.host)  # REAPER's transport, as its feedback said
        for address, handler in self.reaper.handlers().items():
            self.map(address, handler)
        self.map_prefix("/track/", self.reaper.track)
        self.map_prefix("/strip/", Ardour(self.host).strip)
        self.map_prefix("/ch/", self._control)
        self.map_prefix("/master/", self._control)
        self.map_prefix("/fx/", self._control)
        self.map_prefix("/transport/", self._transport)
        self.map_prefix("/cue/", CueHandlers(self.host).handle)

    def map(self, address: str, handler: Handler) -> None:
        """Send messages to exactly ``address`` to ``handler(address, args, group)``."""
        self._exact[address] = handler

    def map_prefix(self, prefix: str, handler: Handler) -> None:
        """Send messages to any address starting with ``prefix`` to ``handler``."""
        self._prefixes.append((prefix, handler))

    def handler(self, address: str) -> Handler:
        """The handler of ``address``: an exact one, else the controls for an OSC
        pattern, else the first matching prefix's.

        Raises
        ------
        ParameterError
            No handler takes ``address``.
        """
        found = self._exact.get(address)
        if found is not None:
            return found
        if is_pattern(address):
            return self._control  # patterns select controls (docs/osc.md)
        for prefix, handler in self._prefixes:
            if address.startswith(prefix):
                return handler
        raise ParameterError("unknown address")

    # -- counters -----------------------------------------------------------------------
    def count(self, counter: Counter) -> None:
        """One more of ``counter`` (any thread)."""
        with self._counters_lock:
            setattr(self._counters, counter, getattr(self._counters, counter) + 1)

    def counts(self) -> Counters:
        """A snapshot of the counters."""
        with self._counters_lock:
            return replace(self._counters)

    # -- subscribers --------------------------------------------------------------------
    def subscriber_count(self) -> int:
        """Subscribers now (some may have expired since the last feedback round)."""
        return self.subscriptions.count()

    def subscribed(self) -> list[Sender]:
        """Who is subscribed now, in the order they first subscribed."""
        return self.subscriptions.senders()

    def add_feedback_target(self, address: Sender, form: str | None = None) -> None:
        """Send feedback to ``address`` until the daemon stops (``serve --feedback``):
        a fixed subscriber, in address form ``form`` (one of
        :data:`~.subscriptions.FORMS`; None: the default), outside the subscriber caps.
        Its own ``/subscribe`` may change its form, not its lifetime; ``/unsubscribe``
        ends it."""
        self.subscriptions.add_fixed(address, form or self.feedback_form)

    def unsubscribe(self, address: Sender) -> None:
        """Stop feedback to ``address`` (nothing if it has none)."""
        self.subscriptions.remove(address)

    def feedback_targets(self, now: float) -> list[tuple[Sender, str, bool]]:
        """:meth:`Subscriptions.targets <.subscriptions.Subscriptions.targets>`."""
        return self.subscriptions.targets(now)

    # -- requests -----------------------------------------------------------------------
    def error(
        self, text: str, sender: Sender, budget: int | None = None, *, logged: bool = True
    ) -> Reply:
        """An ``/error`` reply (counted, logged at a limited rate unless ``logged`` is
        False), cut to ``budget`` bytes."""
        self.count("errors")
        if logged:
            self.bad_log("OSC from %s:%d: %s", sender[0], sender[1], text)
        if budget is not None:
            room = max(budget - 16, 16)
            raw = text_bytes(text)
            if len(raw) > room:
                text = raw[: room - 3].decode("utf-8", "ignore") + "..."
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
        plan = Plan()
        with self.host.registry.transaction() as txn:
            group = Group(sender, txn, plan, dry)
            current = ""
            try:
                if len(msgs) > MAX_MESSAGES:
                    raise Refused(f"{len(msgs)} messages in one bundle; at most {MAX_MESSAGES}")
                states = sum(m.address == "/state" for m in msgs)
                if states > 1:
                    raise Refused(f"{states} /state requests in one bundle; at most one")
                for m in msgs:
                    current = m.address
                    self.handler(m.address)(m.address, list(m.args), group)
                current = ""
                moves = len(plan.commands) + plan.led  # a leader's actions count too
                if moves > MAX_TRANSPORT_COMMANDS:
                    raise Refused(
                        f"{moves} transport commands in one bundle; "
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
                    self.count("refused")
                text = str(exc)
                if current and current not in text:
                    text = f"{current}: {text}"
                return [self.error(text, sender, budget)]
            if dry:
                return []
            # A group that mutes or solos waits whole for the grid point (quantize).
            post = self.host.quantize.poster(txn.written, self.host.post)
            if not txn.commit(post, plan.commands):
                return [self.error("engine queue full: nothing applied; send slower", sender)]
        replies = plan.replies + plan.bulk
        for address, action in plan.after:
            try:
                reply = action()
            except (StemdeckError, ValueError, TypeError, OSError) as exc:
                reply = self.error(f"{address}: {exc}", sender, budget)
            except MemoryError:
                reply = self.error(f"{address}: not enough memory", sender, budget)
            if reply is not None:
                replies.append(reply)
        return replies

    def set_deliver(self, deliver: LateDeliver) -> None:
        """How a reply that comes after :meth:`handle` returned reaches its sender
        (the OSC server sets it: UDP, or the WebSocket of a routed sender)."""
        self._deliver = deliver

    def deliver(self, sender: Sender, reply: Reply) -> None:
        """Send ``reply`` to ``sender`` now, through the deliver callback (any thread)."""
        deliver = self._deliver
        if deliver is None:
            log.warning("reply %s to %s:%d not sent: no server", reply[0], *sender)
            return
        deliver(sender, reply)

    # -- handlers: each validates now, and applies now or once the group is posted ------
    @staticmethod
    def _later(group: Group, address: str, action: Callable[[], object], echo: list[Any]) -> None:
        """Run ``action`` once the group's values are posted; answer ``address echo``."""

        def run() -> Reply:
            action()
            return (address, echo)

        group.plan.after.append((address, run))

    def _control(self, address: str, args: list[Any], group: Group) -> None:
        if args:
            group.txn.set(address, args)
            return
        # A query is answered on the address as sent; a pattern, one reply per
        # control on the form it matched (docs/osc.md).
        reg = self.host.registry
        group.plan.replies += [(used, [group.txn.get(key)]) for key, used in reg.match(address)]

    def _transport(self, address: str, args: list[Any], group: Group) -> None:
        transport = self.host.transport
        verb = address[len("/transport/") :]
        if verb == "position" or (verb == "seek" and not args):
            no_args(address, args)
            group.plan.replies.append((address, [transport.position()]))
        elif verb == "beat":
            no_args(address, args)
            grid = self.host.beats.require().grid
            group.plan.replies.append((address, [grid.beat_at(transport.position())]))
        elif verb in ("playing", "length") or (
            verb in ("loop", "loop/region", "rate", "keylock", "pitch") and not args
        ):
            group.plan.replies.append((address, transport.value(verb)))
        else:
            grid_bpm = group.grid.bpm if group.grid is not None else None
            group.plan.transport(
                address, transport.command(verb, args, grid_bpm=grid_bpm, source=group.source)
            )

    def _sync_source(self, address: str, args: list[Any], group: Group) -> None:
        """``/sync/source``: the leader (a query answers it); a change is echoed."""
        sync = self.host.sync
        if not args:
            group.plan.replies.append((address, [sync.source]))
            return
        source = string(address, args)
        sync.check_source(source)
        group.source = source  # the rest of the group is judged under it
        self._later(group, address, partial(sync.set_source, source), [source])

    def _sync_anchor(self, address: str, args: list[Any], group: Group) -> None:
        """``/sync/anchor``: the track's second at the session's frame 0 (a query: the
        anchor in force, :meth:`~.sync.SyncControl.anchor_in_force`); echoed."""
        sync = self.host.sync
        if not args:
            group.plan.replies.append((address, [sync.anchor_in_force()]))
            return
        seconds = number(address, args)
        sync.check_anchor(seconds)
        self._later(group, address, partial(sync.set_anchor, seconds), [seconds])

    def _sync_query(self, address: str, args: list[Any], group: Group) -> None:
        """``/sync/tempo``, ``/sync/phase``, ``/sync/peers``: read-only, answered from
        :meth:`sync_state`."""
        no_args(address, args)
        group.plan.replies += [(a, v) for a, v in self.sync_state() if a == address]

    def _quantize(self, address: str, args: list[Any], group: Group) -> None:
        """``/quantize s``: when mutes, solos and scene recalls act (a query answers
        the mode); a change is answered with the canonical mode."""
        quantize = self.host.quantize
        if not args:
            group.plan.replies.append((address, [quantize.mode]))
            return
        if len(args) != 1:
            raise ParameterError(f"/quantize takes one mode, got {len(args)} arguments")
        mode = parse_quantize(args[0])
        self._later(group, address, partial(quantize.set_mode, mode), [mode])

    def _ping(self, address: str, args: list[Any], group: Group) -> None:
        no_args(address, args)
        group.plan.replies.append(("/pong", []))

    def _status(self, address: str, args: list[Any], group: Group) -> None:
        no_args(address, args)
        self._bulk_allowed(group, self._status_sender, "/status")
        group.plan.bulk.append(("/status", [self.host.status()]))

    def _state(self, address: str, args: list[Any], group: Group) -> None:
        no_args(address, args)
        self._bulk_allowed(group)
        group.plan.bulk += self.state(form="index")
        group.plan.bulk.append(("/state/end", []))

    def _track_query(self, address: str, args: list[Any], group: Group) -> None:
        no_args(address, args)
        key = "/channels" if address == "/channels/names" else address
        group.plan.replies += [(address, v) for a, v in self.track_state() if a == key]

    def _list(self, address: str, args: list[Any], group: Group) -> None:
        # Lists answer more than they were sent: rate-limited like /state.
        no_args(address, args)
        self._bulk_allowed(group, what=address)
        host = self.host
        names = host.library_tracks() if address == "/track/list" else host.scene_names()
        group.plan.bulk.append((address, list(names)))

    def _track_load(self, address: str, args: list[Any], group: Group) -> None:
        """Checked now (a refusal is the group's ``/error``); the reply, ``/track/load
        path`` or ``/error``, comes once the track plays or failed: in the group's
        replies if that is before :meth:`handle` returns, else delivered later."""
        path = string(address, args)
        sender = group.sender

        def run() -> Reply | None:
            reply = LateReply(self, sender, address, [path])
            self.host.load_track(path, reply)
            return reply.settle()

        group.plan.after.append((address, run))

    def _scene_save(self, address: str, args: list[Any], group: Group) -> None:
        name = scene_name(address, args)
        if len(args) != 1:
            raise ParameterError("/scene/save takes one name")
        self._later(group, address, partial(self.host.save_scene, name), [name])

    def _scene_recall(self, address: str, args: list[Any], group: Group) -> None:
        name = scene_name(address, args)
        fade = 0.0
        if len(args) == 2:
            fade = number(address, args[1:])
            if not 0.0 <= fade <= MAX_SCENE_FADE_S:
                raise ParameterError(f"fade must be 0..{MAX_SCENE_FADE_S:g} s, got {fade:g}")
        elif len(args) > 2:
            raise ParameterError("/scene/recall takes a name and an optional fade time")
        self._later(group, address, partial(self.host.recall_scene, name, fade), list(args))

    def _midi_learn(self, address: str, args: list[Any], group: Group) -> None:
        """``/midi/learn s [args...]``: the target, then an action's arguments (a loop's
        or a jump's beats, a scene's name); echoed once the learn is armed."""
        if not args or not isinstance(args[0], str):
            raise ParameterError(
                f"{address} takes an address, then an action's arguments, got {args!r}"
            )
        target, extra = args[0], tuple(args[1:])
        check_learn(target, extra, self.host.registry.resolve)  # refused whole, as any error
        self._later(group, address, partial(self.host.midi_learn, target, extra), list(args))

    def _unsubscribe(self, address: str, args: list[Any], group: Group) -> None:
        sender = group.sender
        port = sender[1]
        if args:
            port = own_port(address, args[0], sender)
            if len(args) > 1:
                raise ParameterError(
                    f"/unsubscribe takes an optional port, got {len(args)} arguments"
                )
        self._later(group, address, partial(self.unsubscribe, (sender[0], port)), [port])

    def _subscribe(self, address: str, args: list[Any], group: Group) -> None:
        port, form, seconds = subscribe_args(args, group.sender, self.feedback_form)
        key = (group.sender[0], port)
        if self.subscriptions.check_room(key):
            self._bulk_allowed(group)  # a new subscriber is sent the whole state
        echo: list[Any] = [port, form] if seconds is None else [port, form, seconds]
        add = partial(self.subscriptions.add, key, form, seconds)
        self._later(group, "/subscribe", add, echo)

    def _bulk_allowed(
        self, group: Group, bucket: TokenBucket | None = None, what: str = "/state"
    ) -> None:
        """/state, /status and new subscriptions answer more than they were sent (the
        byte budget does not cover them): rate-limited per sender and per host."""
        now = time.monotonic()
        sender = group.sender
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
        if not group.dry:
            bucket.take(sender, now)
            self._state_host.take(sender[0], now)

    # -- state --------------------------------------------------------------------------
    def state(self, form: str = "index") -> list[Reply]:
        """Every current value, one message per address (the /state reply), with
        channels by index or, ``form="names"``, by name."""
        reg = self.host.registry
        with reg.transaction():
            values = [(key, [reg.get(key)]) for key in reg.addresses()]
            names = list(reg.names)
        out: list[Reply] = [(self.form(key, form, names), v) for key, v in values]
        transport = self.host.transport
        out.append(("/transport/playing", transport.value("playing")))
        out.append(("/transport/position", [transport.position()]))
        out.append(("/transport/loop", transport.value("loop")))
        out.append(("/transport/length", transport.value("length")))
        out.append(("/transport/rate", transport.value("rate")))
        out.append(("/transport/bpm", [current_bpm(self.host) or 0.0]))
        out += self.sync_state()
        out.append(("/quantize", [self.host.quantize.mode]))
        out.append(("/transport/keylock", transport.value("keylock")))
        out.append(("/transport/pitch", transport.value("pitch")))
        out += cue_state(self.host)
        out += self.track_state(names)
        out += self.beat_state()
        return out

    def sync_state(self) -> list[Reply]:
        """What the leader says: ``/sync/tempo``, its tempo in BPM (under ``jack`` the
        timebase master's, under ``link`` the session's, else the MIDI clock's; 0.0
        while none is heard), ``/sync/phase``, how far what is heard is ahead of the
        leader in ms (the play head less the keylock's delay; 0.0 while it does not
        follow one), and ``/sync/peers``, the
        Link session's peers (0 without one)."""
        sync = self.host.sync
        bpm, error = sync.tempo(), sync.phase()
        return [
            ("/sync/tempo", [float(bpm) if bpm is not None else 0.0]),
            ("/sync/phase", [float(error) * 1000.0 if error is not None else 0.0]),
            ("/sync/peers", [sync.peers()]),
        ]

    def beat_state(self) -> list[Reply]:
        """The beat grid's values: ``/track/bpm`` (0.0 with no grid), ``/track/grid``
        (``0.0 0.0 0`` with none) and ``/track/key`` (``""`` while unknown)."""
        beats = self.host.beats
        grid = beats.grid()
        return [
            ("/track/bpm", [grid.bpm if grid is not None else 0.0]),
            ("/track/grid", grid_args(grid)),
            ("/track/key", [beats.key()]),
        ]

    def track_state(self, names: Sequence[str] | None = None) -> list[Reply]:
        """The track's name, separation progress, channel names, their labels (the
        display names: a stem file's own) and colours."""
        names = list(self.host.registry.names) if names is None else list(names)
        track, stage, fraction = self.host.track_info()
        out: list[Reply] = [
            ("/track/name", [track]),
            ("/track/progress", [stage, fraction]),
            ("/channels", names),
        ]
        labels = self.host.labels
        out.append(("/channels/labels", [*labels] if len(labels) == len(names) else [*names]))
        colours = self.host.colours
        if colours and len(colours) == len(names):
            out.append(("/channels/colors", [*colours]))
        return out

    def in_form(self, replies: Sequence[Reply], form: str, names: Sequence[str]) -> list[Reply]:
        """``replies`` (channels by index) as a subscriber of ``form`` gets them: by
        name or index (:meth:`form`), or in REAPER's or Ardour's dialect
        (``reaper.py``, ``ardour.py``)."""
        if form == "reaper":
            return reaper_feedback(replies)
        if form == "ardour":
            return ardour_feedback(replies)
        return [(self.form(address, form, names), args) for address, args in replies]

    @staticmethod
    def form(key: str, form: str, names: Sequence[str]) -> str:
        """A canonical key (``/ch/2/mute``) in the address form a client asked for."""
        if form == "names" and key.startswith("/ch/"):
            _, _, index, param = key.split("/", 3)
            i = int(index) - 1
            if 0 <= i < len(names):
                return f"/ch/{names[i]}/{param}"
        return key
