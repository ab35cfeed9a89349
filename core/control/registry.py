"""One parameter registry for OSC, MIDI, scenes and tests.

Every controllable value has a key (its OSC address, 1-based channel index),
a type, a range and a 0..1 view. Channels may also be named in an address
(``/ch/bass/mute`` is ``/ch/2/mute``), and OSC 1.0 address patterns select
several keys at once (``/ch/*/mute``).

The registry is the control side's truth, and it has one write path: every
writer (OSC, the WebSocket, MIDI, a scene recall or morph, the track loader)
stages its changes in a :class:`Transaction`, which validates them, then
:meth:`Transaction.commit` posts their engine commands as one command and the
registry keeps the change only if the engine accepted it. So the registry never
runs ahead of the audio, even when the engine's queue is full. A lock
serializes control threads (never the audio thread).

The echo's delay may be set in beats (``/fx/echo/beats``): the registry keeps the
tempo it follows (the grid's BPM, told by :meth:`Transaction.set_grid`, and the
vinyl rate of the last ``Rate`` a commit posted), and a commit that changes either
re-aims the echo in the same command (:func:`.values.echo_followed`).

Each kept commit gets the next :attr:`Registry.generation` and stamps the values
it wrote with it, so a writer that takes its time (a scene morph) asks
:meth:`Registry.written_since` which of its values someone else has written
since its own last commit, and leaves those to them.

The values themselves (the states, the check of a new value, the scene tables, the
engine command of a state) are pure functions in :mod:`.values`; this module is the
address space and the write path.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from ..audiofile.roles import find_channel
from ..errors import ParameterError
from ..mixer.commands import Batch, Command, EchoTarget, Quantized, Rate, ReverbTarget
from ..mixer.params import (
    ECHO_DIVISIONS,
    ECHO_MAX_MS,
    ECHO_MIN_MS,
    MAX_RATE,
    MIN_RATE,
    REVERB_MAX_LOWCUT,
    REVERB_MIN_LOWCUT,
)
from .pattern import MAX_PATTERN, compile_pattern, is_pattern
from .values import (
    EchoState,
    ReverbState,
    SceneState,
    StripState,
    bus_value,
    echo_followed,
    echo_from_scene,
    echo_updated,
    reverb_from_scene,
    reverb_updated,
    scene_of,
    strip_command,
    strip_from_scene,
    strip_updated,
    strip_value,
)

__all__ = [
    "CHANNEL_PARAMS",
    "ECHO_PARAMS",
    "MASTER_PARAMS",
    "PARAM_ALIASES",
    "REVERB_PARAMS",
    "Registry",
    "Transaction",
]

CHANNEL_PARAMS = (
    "fader",
    "gain",
    "db",
    "mute",
    "solo",
    "pan",
    "filter",
    "filter/res",
    "echo",
    "echo/pre",
    "reverb",
)
# Second names of the parameters that have parameters below them (/ch/N/filter has
# filter/res): the value one level down, as OSCQuery lists it (no node there is both
# a value and a container). Plain addresses only; patterns match the first names.
PARAM_ALIASES = {"filter/knob": "filter", "echo/send": "echo"}
ECHO_PARAMS = ("ms", "beats", "feedback", "filter", "return")  # /fx/echo/<param>
ECHO = -1  # the echo bus's index in a (index, param) target (None is the master)
REVERB_PARAMS = ("size", "lowcut", "return")  # /fx/reverb/<param>
REVERB = -2  # the reverb bus's index in a (index, param) target
_BUSES = {"echo": ECHO_PARAMS, "reverb": REVERB_PARAMS}  # /fx/<bus>/<param>
MASTER_PARAMS = ("fader", "gain", "db", "mute", "filter", "filter/res")
# The values behind the parameters: fader, gain and db are three views of one gain.
_VALUE_OF = {
    "fader": "gain",
    "gain": "gain",
    "db": "gain",
    "mute": "mute",
    "solo": "solo",
    "pan": "pan",
    "filter": "filter",
    "filter/res": "filter/res",
    "echo": "echo",
    "echo/pre": "echo/pre",
    "reverb": "reverb",
    "ms": "ms",
    "beats": "beats",
    "feedback": "feedback",
    "return": "return",
    "size": "size",
    "lowcut": "lowcut",
}
# A channel's value keys (Registry.written_since), after /ch/N/.
_CHANNEL_VALUES = (
    "gain",
    "mute",
    "solo",
    "pan",
    "filter",
    "filter/res",
    "echo",
    "echo/pre",
    "reverb",
)
# The values a scene may name (SceneState keys) and their value keys.
_SCENE_VALUES = {
    "gain": "gain",
    "mute": "mute",
    "solo": "solo",
    "pan": "pan",
    "filter": "filter",
    "res": "filter/res",
    "echo": "echo",
    "echo_pre": "echo/pre",
    "reverb": "reverb",
}
_ECHO_SCENE = {
    "ms": "ms",
    "beats": "beats",
    "feedback": "feedback",
    "filter": "filter",
    "level": "return",
}
_REVERB_SCENE = {"size": "size", "lowcut": "lowcut", "level": "return"}
_MASTER_SCENE_VALUES = {"gain": "gain", "mute": "mute", "filter": "filter", "res": "filter/res"}


class Registry:
    """Controls of ``names`` channels and the master.

    Parameters
    ----------
    names : sequence of str
        Channel names, in channel order (``/ch/1`` is ``names[0]``).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._lock = threading.RLock()
        self.names: list[str] = []
        self.strips: list[StripState] = []
        self.master = StripState()
        self.echo = EchoState()
        self.reverb = ReverbState()
        #: The tempo the echo's delay in beats follows: the playing track's grid's
        #: BPM (None: no grid; the echo keeps its last delay) and the vinyl rate.
        self.grid_bpm: float | None = None
        self.rate = 1.0
        self._generation = 0
        self._stamps: dict[str, int] = {}  # value key -> generation of its last write
        self._renamed = 0  # generation from which every channel value counts as written
        self.set_names(names)

    # -- structure ------------------------------------------------------------------
    def set_names(self, names: Sequence[str]) -> None:
        """New channel names; states of channels that remain are kept, new ones start
        at the defaults. The engine is not told: a daemon changes channels with a
        track, through :meth:`Transaction.set_names`.

        Different names count as a write of every channel value
        (:meth:`written_since`): what a channel index meant has changed."""
        with self._lock:
            if list(names) != self.names:
                self._generation += 1
                self._renamed = self._generation
                self._stamps = {k: g for k, g in self._stamps.items() if k.startswith("/master/")}
            old = len(self.strips)
            self.names = list(names)
            self.strips = self.strips[: len(names)] + [StripState()] * max(0, len(names) - old)
            self._addresses = [
                f"/ch/{i}/{p}" for i in range(1, len(names) + 1) for p in CHANNEL_PARAMS
            ]
            self._addresses += [f"/master/{p}" for p in MASTER_PARAMS]
            self._addresses += [f"/fx/{b}/{p}" for b, params in _BUSES.items() for p in params]
            self._address_set = frozenset(self._addresses)
            self._match_cache: dict[str, tuple[tuple[str, str], ...]] = {}

    def addresses(self) -> list[str]:
        """Every control key, canonical form (channels by 1-based index)."""
        return list(self._addresses)

    def _channel_index(self, token: str) -> int | None:
        # ASCII digits only: "１" or "١" is not channel 1 (str.isdigit says it is).
        if token.isascii() and token.isdigit():
            i = int(token)
            return i if 1 <= i <= len(self.names) else None
        if token in self.names:
            return self.names.index(token) + 1
        return None

    def match(self, address: str) -> list[tuple[str, str]]:
        """The controls an address or pattern names: (canonical key, address as used).

        The address as used is what a reply carries: a plain address exactly as
        sent (``/ch/bass/fader`` stays so), a pattern expanded to the form that
        matched (the index form if the pattern matches it, else the name).

        Raises
        ------
        ParameterError
            Malformed or too long a pattern; no control matches (unknown address,
            channel or parameter).
        """
        cache = self._match_cache
        hit = cache.get(address)
        if hit is not None:
            return list(hit)
        result = self._match(address)
        if len(cache) >= 4096:
            cache.clear()
        cache[address] = tuple(result)
        return result

    def _match(self, address: str) -> list[tuple[str, str]]:
        parts = address.split("/")
        if not is_pattern(address):
            if len(parts) >= 4 and parts[0] == "" and parts[1] == "ch":
                i = self._channel_index(parts[2])
                if i is None:
                    raise ParameterError(
                        f"unknown channel {parts[2]!r} in {address}; channels are "
                        f"1..{len(self.names)} or {', '.join(self.names)}"
                    )
                param = "/".join(parts[3:])
                key = f"/ch/{i}/{PARAM_ALIASES.get(param, param)}"
                if key in self._address_set:
                    return [(key, address)]
            elif address in self._address_set:
                return [(address, address)]
            elif address.startswith("/master/"):
                key = f"/master/{PARAM_ALIASES.get(address[8:], '')}"
                if key in self._address_set:
                    return [(key, address)]
            raise ParameterError(f"unknown address {address}")
        if len(address) > MAX_PATTERN:
            raise ParameterError(
                f"address pattern is {len(address)} characters; at most {MAX_PATTERN}"
            )
        # Compile every part first: a malformed part is an error even if another
        # part already rules every control out.
        matchers = [compile_pattern(p) if is_pattern(p) else None for p in parts]

        def fits(level: int, candidate: str) -> bool:
            m = matchers[level]
            return m.match(candidate) if m is not None else parts[level] == candidate

        def fits_param(level: int, param: str) -> bool:
            # A parameter may have parts of its own (filter/res): each fits its level.
            steps = param.split("/")
            return len(parts) == level + len(steps) and all(
                fits(level + k, step) for k, step in enumerate(steps)
            )

        out: list[tuple[str, str]] = []
        if parts[0] == "" and len(parts) >= 4 and fits(1, "ch"):
            params = [p for p in CHANNEL_PARAMS if fits_param(3, p)]
            for i, name in enumerate(self.names, 1):
                if fits(2, str(i)):
                    token = str(i)
                elif fits(2, name):
                    token = name
                else:
                    continue
                out += [(f"/ch/{i}/{p}", f"/ch/{token}/{p}") for p in params]
        elif parts[0] == "" and len(parts) >= 3 and fits(1, "master"):
            out = [(f"/master/{p}", f"/master/{p}") for p in MASTER_PARAMS if fits_param(2, p)]
        elif parts[0] == "" and len(parts) == 4 and fits(1, "fx"):
            out = [
                (f"/fx/{b}/{p}", f"/fx/{b}/{p}")
                for b, params in _BUSES.items()
                if fits(2, b)
                for p in params
                if fits(3, p)
            ]
        if not out:
            raise ParameterError(f"no control matches {address}")
        return out

    def resolve(self, address: str) -> list[str]:
        """Canonical keys an address or pattern names (see :meth:`match`)."""
        return [key for key, _ in self.match(address)]

    # -- who wrote what -----------------------------------------------------------------
    @property
    def generation(self) -> int:
        """A count of the commits kept (and renames) so far: the stamp of the latest.

        Read it in the same transaction as the commit it should stand for."""
        with self._lock:
            return self._generation

    def written_since(self, generation: int) -> set[str]:
        """Value keys written by a commit after ``generation``.

        A value key is the canonical key of one stored value: ``/ch/N/gain`` (for
        the fader, gain and db views alike), ``/ch/N/mute``, ``/ch/N/solo``,
        ``/ch/N/pan``, ``/ch/N/filter``, ``/ch/N/filter/res``, ``/ch/N/echo``,
        ``/ch/N/echo/pre``, ``/ch/N/reverb``, ``/master/gain``,
        ``/master/mute``, ``/master/filter``, ``/master/filter/res``, and the
        buses' keys as they are (``/fx/echo/ms``, ``/fx/reverb/size``...). A value is written when
        a kept commit staged it by :meth:`Transaction.set`, :meth:`Transaction.set_norm`
        or, if the scene names it, :meth:`Transaction.restore` (even to the value it
        had); every channel value is written when the channel names change."""
        with self._lock:
            out = {key for key, g in self._stamps.items() if g > generation}
            if self._renamed > generation:
                out.update(
                    f"/ch/{i}/{p}" for i in range(1, len(self.names) + 1) for p in _CHANNEL_VALUES
                )
            return out

    def value_key(self, key: str) -> str:
        """The value key (see :meth:`written_since`) behind a canonical key."""
        index, param = self._target(key)
        if index in (ECHO, REVERB):
            return key
        head = "/master" if index is None else f"/ch/{index + 1}"
        return f"{head}/{_VALUE_OF[param]}"

    # -- values -----------------------------------------------------------------------
    def _target(self, key: str) -> tuple[int | None, str]:
        parts = key.split("/", 3)
        if parts[1] == "master":
            return None, key[len("/master/") :]
        if parts[1] == "fx":
            return ECHO if parts[2] == "echo" else REVERB, parts[3]
        return int(parts[2]) - 1, parts[3]

    def get(self, key: str) -> float | int:
        """Current value of a canonical key, as its OSC reply carries it."""
        with self._lock:
            index, param = self._target(key)
            if index in (ECHO, REVERB):
                return bus_value(self.echo if index == ECHO else self.reverb, param)
            return strip_value(self.master if index is None else self.strips[index], param)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Stage changes, then :meth:`Transaction.commit` them with their engine
        commands in one step: the only way a value changes. The lock is held
        throughout, so the registry and what the engine was sent never disagree."""
        with self._lock:
            yield Transaction(self)

    # -- 0..1 views (MIDI) ----------------------------------------------------------------
    def get_norm(self, key: str) -> float:
        """The 0..1 view: fader position for levels, -1..1 mapped to 0..1 for pan, a
        filter with its 0 at 64/127, the echo's delay and the reverb's low-cut
        exponentially over their ranges, the echo's beats as the step of the nearest
        of ``ECHO_DIVISIONS`` (0 while the delay is in ms; the inverses of
        :meth:`Transaction.set_norm`)."""
        index, param = self._target(key)
        value = self.get(key)
        if param in ("fader", "gain", "db"):
            return float(self.get(key.rsplit("/", 1)[0] + "/fader"))
        if param == "pan":
            return (float(value) + 1.0) / 2.0
        if param == "filter":
            f = float(value)
            return (64.0 + (63.0 if f >= 0.0 else 64.0) * f) / 127.0
        if index == ECHO and param == "ms":
            return math.log(float(value) / ECHO_MIN_MS) / math.log(ECHO_MAX_MS / ECHO_MIN_MS)
        if index == ECHO and param == "beats":
            if not value:
                return 0.0
            steps = [abs(math.log(float(value) / d)) for d in ECHO_DIVISIONS]
            return steps.index(min(steps)) / (len(ECHO_DIVISIONS) - 1)
        if index == REVERB and param == "lowcut":
            lo, hi = REVERB_MIN_LOWCUT, REVERB_MAX_LOWCUT
            return math.log(float(value) / lo) / math.log(hi / lo)
        return float(value)

    # -- snapshots (scenes, /state) ---------------------------------------------------------
    def snapshot(self) -> SceneState:
        """Every channel's and the master's state, by channel name, and the buses': a scene."""
        with self._lock:
            return scene_of(self.names, self.strips, self.master, self.echo, self.reverb)


class Transaction:
    """Changes to a :class:`Registry` staged under its lock (see ``Registry.transaction``):
    the one way a value changes.

    :meth:`set`, :meth:`set_norm`, :meth:`restore` and :meth:`set_names` validate
    and stage; :meth:`get` and :meth:`snapshot` read the staged state;
    :meth:`commit` posts one engine command for everything staged (plus ``extra``
    commands) and keeps the staged state only if the post succeeds. Leaving the
    ``with`` block without committing changes nothing.

    Examples
    --------
    >>> registry = Registry(["drums", "bass"])
    >>> with registry.transaction() as txn:
    ...     txn.set("/ch/bass/mute", [1])
    ...     posted = txn.commit(lambda command: True)  # Mixer.post in the daemon
    >>> registry.get("/ch/2/mute")
    1
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.staged: dict[int | None, StripState] = {}
        self.staged_echo: EchoState | None = None  # the echo bus, if staged
        self.staged_reverb: ReverbState | None = None  # the reverb bus, if staged
        self.staged_tempo: tuple[float | None, float] | None = None  # (grid bpm, rate)
        self.names: list[str] | None = None  # new channel names, staged by set_names
        self._written: set[str] = set()  # value keys staged (Registry.written_since)

    @property
    def written(self) -> frozenset[str]:
        """Value keys (see :meth:`Registry.written_since`) staged so far: what the
        commit will stamp as written."""
        return frozenset(self._written)

    def _state(self, index: int | None) -> StripState:
        if index in self.staged:
            return self.staged[index]
        reg = self.registry
        return reg.master if index is None else reg.strips[index]

    def _resolve(self, address: str) -> list[str]:
        if self.names is not None:
            # Addresses resolve against the committed channels, not the staged ones.
            raise RuntimeError("stage values before set_names, not after")
        return self.registry.resolve(address)

    def get(self, key: str) -> float | int:
        """Value of a canonical key, staged or else current."""
        index, param = self.registry._target(key)
        if index in (ECHO, REVERB):
            return bus_value(self._echo() if index == ECHO else self._reverb(), param)
        return strip_value(self._state(index), param)

    def _echo(self) -> EchoState:
        return self.staged_echo if self.staged_echo is not None else self.registry.echo

    def _reverb(self) -> ReverbState:
        return self.staged_reverb if self.staged_reverb is not None else self.registry.reverb

    def _tempo(self) -> tuple[float | None, float]:
        if self.staged_tempo is not None:
            return self.staged_tempo
        return self.registry.grid_bpm, self.registry.rate

    def _follow(self, tempo: tuple[float | None, float]) -> None:
        """Stage ``tempo`` and, if the echo's delay is in beats and moves, its delay at
        it (an unchanged delay posts nothing: the MIDI clock's small nudges of the
        rate re-aim the echo only when they move it)."""
        self.staged_tempo = tempo
        echo = self._echo()
        followed = echo_followed(echo, *tempo)
        if followed.ms != echo.ms:
            self.staged_echo = followed

    def set_grid(self, bpm: float | None) -> None:
        """Stage the playing track's grid tempo (None: no grid, the echo keeps its
        delay): an echo delay in beats follows it. Not a written value (the daemon's
        grid follower calls it when a grid is published, edited, or gone)."""
        self._follow((bpm, self._tempo()[1]))

    def set_rate(self, rate: float) -> None:
        """Stage the vinyl rate a follower in the audio thread set without a registry
        commit (the JACK timebase follower): an echo delay in beats follows it. Not a
        written value; nothing else is posted for it."""
        self._follow((self._tempo()[0], float(rate)))

    def set(self, address: str, args: Sequence[object]) -> None:
        """Validate and stage one message (an address or pattern and its arguments).

        Raises
        ------
        ParameterError
            Unknown address or channel, wrong argument count or type, NaN, out of range.
            Nothing of the message is staged then, for any of the matched keys.
        """
        reg = self.registry
        updates: dict[int | None, StripState] = {}
        echo: EchoState | None = None
        reverb: ReverbState | None = None
        keys = self._resolve(address)
        for key in keys:
            index, param = reg._target(key)
            if index == ECHO:
                echo = echo_updated(echo or self._echo(), param, args, key)
                continue
            if index == REVERB:
                reverb = reverb_updated(reverb or self._reverb(), param, args, key)
                continue
            state = updates[index] if index in updates else self._state(index)
            updates[index] = strip_updated(state, param, args, key)
        self.staged.update(updates)
        if echo is not None:
            self.staged_echo = echo_followed(echo, *self._tempo())
        if reverb is not None:
            self.staged_reverb = reverb
        self._written.update(reg.value_key(key) for key in keys)

    def set_norm(self, address: str, x: float) -> None:
        """Stage from a 0..1 view (clamped; MIDI): levels through the fader taper, pan
        from -1..1, a filter with its 0 (off, a true bypass) at 64/127, a 7-bit
        knob's centre (-1 at 0, 1 at 1, linear on each side), the resonance as it
        is, switches on at 0.5 and above; the echo's delay exponentially over its
        range (1 ms at 0, 4 s at 1), its beats in the steps of ``ECHO_DIVISIONS``
        (1/16 at 0, 4 at 1), its feedback and return as they are; the
        reverb's low-cut exponentially (20 Hz at 0, 1 kHz at 1), its size, return
        and the sends as they are."""
        x = min(max(float(x), 0.0), 1.0)
        for key in self._resolve(address):
            index, param = self.registry._target(key)
            if index == ECHO and param == "ms":
                ms = ECHO_MIN_MS * (ECHO_MAX_MS / ECHO_MIN_MS) ** x
                self.set(key, [min(max(ms, ECHO_MIN_MS), ECHO_MAX_MS)])
            elif index == ECHO and param == "beats":
                self.set(key, [ECHO_DIVISIONS[round(x * (len(ECHO_DIVISIONS) - 1))]])
            elif index == REVERB and param == "lowcut":
                lo, hi = REVERB_MIN_LOWCUT, REVERB_MAX_LOWCUT
                self.set(key, [min(max(lo * (hi / lo) ** x, lo), hi)])
            elif param in ("fader", "gain", "db"):
                self.set(key.rsplit("/", 1)[0] + "/fader", [x])
            elif param == "pan":
                self.set(key, [x * 2.0 - 1.0])
            elif param == "filter":
                c = x * 127.0 - 64.0  # 64 of a 7-bit knob's 0..127 is the centre
                self.set(key, [max(-1.0, min(1.0, c / (63.0 if c >= 0.0 else 64.0)))])
            elif param in ("filter/res", "echo", "feedback", "return", "reverb", "size"):
                self.set(key, [x])
            else:
                self.set(key, [x >= 0.5])

    def restore(self, scene: Mapping[str, object]) -> list[str]:
        """Stage a snapshot (a scene: a :class:`~.values.SceneState`, or a table read
        from a file, so every value is checked here): channels matched by name, or by
        role (a scene saved on a file that named its vocals "Vox" sets ``vocals``:
        :func:`~stemdeck.core.audiofile.roles.stem_role`); values it does not name
        kept. Every strip and the master are staged, so the commit sends the whole
        state; the values the scene names count as written (:attr:`written`).

        Returns
        -------
        list of str
            The scene's channels this track has none for (nothing staged for them),
            in the scene's order.

        Raises
        ------
        ParameterError
            A value of the wrong type anywhere: nothing is staged then.
        """
        reg = self.registry
        channels = scene.get("channels", {})
        if not isinstance(channels, Mapping):
            raise ParameterError("scene 'channels' must be a table")
        names = self.names if self.names is not None else reg.names
        strips = [self._state(i) for i in range(len(names))]
        written: list[str] = []
        missing: list[str] = []
        for name, values in channels.items():
            i = find_channel(str(name), names)
            if i is None:
                missing.append(str(name))
            elif isinstance(values, Mapping):
                strips[i] = strip_from_scene(values, strips[i])
                written += [f"/ch/{i + 1}/{v}" for p, v in _SCENE_VALUES.items() if p in values]
        master = scene.get("master")
        current = self._state(None)
        new_master = current
        if isinstance(master, Mapping):
            new_master = strip_from_scene(master, current)
            written += [f"/master/{v}" for p, v in _MASTER_SCENE_VALUES.items() if p in master]
        echo = scene.get("echo")
        new_echo = None
        if isinstance(echo, Mapping):  # the echo bus is staged only if the scene has it
            new_echo = echo_followed(echo_from_scene(echo, self._echo()), *self._tempo())
            # ms and beats are one setting: the scene writes the one in force.
            unit = "ms" if new_echo.beats else "beats"
            written += [
                f"/fx/echo/{_ECHO_SCENE[p]}" for p in _ECHO_SCENE if p in echo and p != unit
            ]
        reverb = scene.get("reverb")
        new_reverb = None
        if isinstance(reverb, Mapping):  # the reverb bus too, only if the scene has it
            new_reverb = reverb_from_scene(reverb, self._reverb())
            written += [f"/fx/reverb/{_REVERB_SCENE[p]}" for p in _REVERB_SCENE if p in reverb]
        self.staged.update(enumerate(strips))
        self.staged[None] = new_master
        if new_echo is not None:
            self.staged_echo = new_echo
        if new_reverb is not None:
            self.staged_reverb = new_reverb
        self._written.update(written)
        return missing

    def set_names(self, names: Sequence[str]) -> None:
        """Stage the channels of a new track: strips that remain keep their state, new
        ones start at the defaults, and every strip and the master are staged, so the
        commit sends the whole state (with the ``SetTrack`` passed as ``extra``)."""
        reg = self.registry
        kept = min(len(names), len(reg.strips))
        strips = [self._state(i) for i in range(kept)] + [StripState()] * (len(names) - kept)
        master = self._state(None)
        self.names = list(names)
        self.staged = dict(enumerate(strips))
        self.staged[None] = master

    def snapshot(self) -> SceneState:
        """The state a commit would leave, as :meth:`Registry.snapshot` gives it."""
        names = self.names if self.names is not None else self.registry.names
        strips = [self._state(i) for i in range(len(names))]
        return scene_of(names, strips, self._state(None), self._echo(), self._reverb())

    def commands(self) -> list[Command]:
        """One engine command per strip (and the master) staged, from the staged state."""
        order = sorted(self.staged, key=lambda index: -1 if index is None else index)
        out = [strip_command(index, self.staged[index]) for index in order]
        e = self.staged_echo
        if e is not None:  # ms is the delay in force (a delay in beats followed)
            out.append(EchoTarget(e.ms, e.feedback, e.filter, e.level))
        r = self.staged_reverb
        if r is not None:
            out.append(ReverbTarget(r.size, r.lowcut, r.level))
        return out

    def commit(self, post: Callable[[Command], bool], extra: Sequence[Command] = ()) -> bool:
        """Post the staged state and ``extra`` as one command, then keep the staged
        state; if the post is refused (queue full) nothing changes. True if posted.

        A kept commit takes the next :attr:`Registry.generation` and stamps the
        values it wrote (:attr:`written`) with it. A ``Rate`` in ``extra`` (the last
        one, in a ``Batch`` or ``Quantized`` too) is the rate the echo's delay in
        beats follows from then: the echo is re-aimed in the same command.

        Parameters
        ----------
        post : callable
            Hands one command to the engine (``Mixer.post``); False if refused.
        extra : sequence of Command
            Applied in the same block, after the staged state (transport commands,
            a ``SetTrack``).
        """
        rate = _rate_of(extra)
        if rate is not None and rate != self._tempo()[1]:
            self._follow((self._tempo()[0], rate))
        commands = self.commands() + list(extra)
        if commands and not post(commands[0] if len(commands) == 1 else Batch(tuple(commands))):
            return False
        reg = self.registry
        if self.names is not None and self.names != reg.names:
            reg.set_names(self.names)
        for index, state in self.staged.items():
            if index is None:
                reg.master = state
            else:
                reg.strips[index] = state
        if self.staged_echo is not None:
            reg.echo = self.staged_echo
        if self.staged_reverb is not None:
            reg.reverb = self.staged_reverb
        if self.staged_tempo is not None:
            reg.grid_bpm, reg.rate = self.staged_tempo
        reg._generation += 1
        for key in self._written:
            reg._stamps[key] = reg._generation
        self.staged = {}
        self.staged_echo = None
        self.staged_reverb = None
        self.staged_tempo = None
        self.names = None
        self._written = set()
        return True


def _rate_of(commands: Sequence[Command]) -> float | None:
    """The rate the last ``Rate`` among ``commands`` (in a ``Batch`` or a
    ``Quantized`` too) sets, as the engine takes it (clamped; NaN: none), or None."""
    rate = None
    for c in commands:
        if isinstance(c, Batch):
            rate = _rate_of(c.commands) or rate
        elif isinstance(c, Quantized):
            rate = _rate_of((c.command,)) or rate
        elif isinstance(c, Rate) and c.rate == c.rate:
            rate = min(max(float(c.rate), MIN_RATE), MAX_RATE)
    return rate
