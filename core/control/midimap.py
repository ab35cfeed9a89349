"""MIDI controller maps and the state machine that turns MIDI into control changes.

A map (TOML, ``presets/midi/*.toml`` or a user file) binds a control, a CC or a
note on a MIDI channel, to a key of the parameter registry (``/ch/2/fader``,
``/ch/bass/mute``, ``/master/fader``) or an action (``/transport/toggle``,
``/scene/recall`` with a name). :class:`MidiMapper` is pure: it takes decoded
messages and returns what to do, so every mode is tested without a device. What
one binding may hold (its modes, actions and transport values) is
:mod:`.bindings`'s.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audiofile.roles import ROLES, stem_role
from ..errors import ParameterError, PresetError
from ..mixer.keylock import MAX_PITCH
from ..separation.presets import read_preset_text
from .bindings import (
    TRANSPORT_VALUES,
    Binding,
    learn_binding,
    map_error,
    parse_binding,
)

__all__ = ["MidiMap", "MidiMapper", "load_midi_map", "parse_midi_map", "track_target"]

LONG_PRESS_S = 0.3
TAKEOVER = 3 / 127  # a fader this close to the value picks it up
RELATIVE_STEP = 1 / 127  # one encoder tick


def track_target(target: str, names: Sequence[str]) -> str:
    """A binding's target on a track with channels ``names``.

    The shipped maps address stems by role (``/ch/vocals/fader``), so a fader
    controls the same stem on every file. On a track none of whose channels has a
    role (components mode: ``component_01``...), a role target addresses the
    channel at the role's place in :data:`~stemdeck.core.audiofile.roles.ROLES`
    (drums 1, bass 2, other 3, vocals 4), as an index map would. Any other target
    is returned as it is.

    Examples
    --------
    >>> track_target("/ch/vocals/mute", ["component_01"] * 8)
    '/ch/4/mute'
    >>> track_target("/ch/vocals/mute", ["drums", "bass", "vocals"])
    '/ch/vocals/mute'
    """
    parts = target.split("/", 3)
    if len(parts) < 4 or parts[1] != "ch" or parts[2] not in ROLES or parts[2] in names:
        return target
    if any(stem_role(n) is not None for n in names):
        return target  # a stem track without this stem: the target names nothing
    return f"/ch/{ROLES.index(parts[2]) + 1}/{parts[3]}"


@dataclass
class MidiMap:
    name: str
    bindings: list[Binding]
    programs: dict[int, str] = field(default_factory=dict)  # program 1..128 -> scene
    program_channel: int | None = None  # None: any channel
    source: str = ""

    def find(self, kind: str, channel: int, number: int) -> list[Binding]:
        return [
            b
            for b in self.bindings
            if b.kind == kind and b.channel == channel and b.number == number
        ]


def parse_midi_map(text: str, source: str) -> MidiMap:
    """Parse and validate a map; errors name the file, the entry and the reason."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{source}: not valid TOML ({exc})") from None
    bindings: list[Binding] = []
    seen: dict[tuple[str, int, int], int] = {}
    for i, entry in enumerate(data.get("binding", []), 1):
        where = f"binding {i}"
        binding = parse_binding(entry, source, where)
        key = (binding.kind, binding.channel, binding.number)
        if key in seen:
            raise map_error(
                source,
                where,
                f"{binding.kind} {binding.number} on channel {binding.channel + 1} "
                f"is already bound by binding {seen[key]}",
            )
        seen[key] = i
        bindings.append(binding)
    programs: dict[int, str] = {}
    table = data.get("programs", {})
    if not isinstance(table, dict):
        raise map_error(source, "programs", 'must be a table of program = "scene"')
    for key, scene in table.items():
        if not key.isdigit() or not 1 <= int(key) <= 128 or not isinstance(scene, str):
            raise map_error(source, f"programs.{key}", 'use program number (1..128) = "scene name"')
        programs[int(key)] = scene
    name = data.get("name", Path(source).stem)
    return MidiMap(name=str(name), bindings=bindings, programs=programs, source=source)


def load_midi_map(name_or_path: str = "generic") -> MidiMap:
    """A shipped map (``presets/midi/<name>.toml``) or a map file."""
    source, text = read_preset_text("midi", name_or_path)
    return parse_midi_map(text, source)


@dataclass
class _State:
    picked_up: bool = False
    last_in: float | None = None  # last incoming position 0..1
    last_set: float | None = None  # value we set last (detects changes from elsewhere)
    msb: int | None = None
    pressed_at: float | None = None
    held_value: bool = False
    # A transport value is applied by the engine a block later: the values this
    # binding set (and the one it took over from) within PENDING_S are its own, not
    # a move from elsewhere, while the engine catches up.
    ours: list[tuple[float, float]] = field(default_factory=list)  # (value, when)


PENDING_S = 0.25  # longer than any audio block: the engine has applied a value by then


def _centre_offset(value: int, bits: int) -> float:
    """A fader's value as -1..1 around its centre (64; 8192 in 14 bits), the
    centre's detent (the centre and one step either side) exactly 0."""
    centre = 1 << (bits - 1)
    d = value - centre
    if abs(d) <= 1:
        return 0.0
    return d / centre if d < 0 else d / (centre - 1)


class MidiMapper:
    """Decoded MIDI in, control changes out.

    Parameters
    ----------
    midi_map : MidiMap
    get_norm : callable(key) -> float
        The current 0..1 value of a registry key (for soft takeover and encoders).
    get_playing : callable() -> bool, optional
        Transport state, for the LEDs of play, stop and toggle buttons.
    get_transport : callable(name) -> float, optional
        The current ``rate``, ``pitch`` (semitones) or ``keylock`` (1.0 or 0.0), for
        the bindings of transport values; without it they are an error.
    """

    def __init__(
        self,
        midi_map: MidiMap,
        get_norm: Callable[[str], float],
        get_playing: Callable[[], bool] | None = None,
        get_transport: Callable[[str], float] | None = None,
    ) -> None:
        self.map = midi_map
        self.get_norm = get_norm
        self.get_playing = get_playing
        self.get_transport = get_transport
        self._state: dict[Binding, _State] = {}
        #: MIDI learn: the target the next control moved is bound to, and its args.
        self.learning: str | None = None
        self.learning_args: tuple[Any, ...] = ()
        self.learned: Binding | None = None

    def _st(self, b: Binding) -> _State:
        return self._state.setdefault(b, _State())

    def handle(
        self, kind: str, channel: int, number: int, value: int, now: float
    ) -> list[tuple[str, str, list[Any]]]:
        """One message: ``kind`` is cc, note_on, note_off or program_change.

        Returns actions ``(verb, address, args)``: verb ``norm`` (set a registry key
        from 0..1), ``set`` (registry key with OSC arguments) or ``action``.
        """
        if kind == "program_change":
            # Programs are numbered 1..128 as controllers display them (0..127 on the wire).
            scene = self.map.programs.get(number + 1, f"program-{number + 1}")
            return [("action", "/scene/recall", [scene])]
        if self.learning is not None and kind in ("cc", "note_on"):
            learned = learn_binding(
                self.learning,
                self.learning_args,
                "cc" if kind == "cc" else "note",
                channel,
                number,
            )
            if learned is not None:  # else a pad moved for a fader: it does its own job
                self.learned = learned
                self.learning = None
                self.learning_args = ()
                self.map.bindings = [
                    b
                    for b in self.map.bindings
                    if not (b.kind == learned.kind and b.channel == channel and b.number == number)
                ] + [learned]
                return [("learned", learned.target, [])]
        out: list[tuple[str, str, list[Any]]] = []
        if kind == "cc":
            for b in self.map.find("cc", channel, number):
                out += self._cc(b, value, now)
            for b in self.map.bindings:  # LSB of a 14-bit pair
                if b.mode == "absolute14" and b.lsb == number and b.channel == channel:
                    out += self._lsb(b, value, now)
        elif kind in ("note_on", "note_off"):
            pressed = kind == "note_on" and value > 0
            for b in self.map.find("note", channel, number):
                out += self._button(b, pressed, now)
        return out

    # -- continuous controls ----------------------------------------------------------
    def _cc(self, b: Binding, value: int, now: float) -> list[tuple[str, str, list[Any]]]:
        if b.mode in ("toggle", "momentary", "press", "trigger"):
            return self._button(b, value >= 64, now)
        if b.target in TRANSPORT_VALUES:
            return self._value_cc(b, value, now)
        if b.mode == "absolute":
            return self._absolute(b, value / 127.0)
        if b.mode == "absolute14":
            self._st(b).msb = value
            return []  # waits for the LSB, which completes the value
        step = value if value < 64 else value - 128  # two's complement
        if b.mode == "relative64":
            step = value - 64
        if step == 0:
            return []
        current = float(self.get_norm(b.target))
        target = min(1.0, max(0.0, current + step * RELATIVE_STEP))
        st = self._st(b)
        st.last_set = target
        return [("norm", b.target, [target])]

    def _lsb(self, b: Binding, value: int, now: float) -> list[tuple[str, str, list[Any]]]:
        st = self._st(b)
        if st.msb is None:
            return []
        if b.target in TRANSPORT_VALUES:
            return self._value_absolute(b, _centre_offset((st.msb << 7) | value, 14), now)
        position = ((st.msb << 7) | value) / 16383.0
        return self._absolute(b, position)

    def _absolute(self, b: Binding, position: float) -> list[tuple[str, str, list[Any]]]:
        """Soft takeover: ignore a control until it meets the current value."""
        st = self._st(b)
        current = float(self.get_norm(b.target))
        if st.last_set is None or abs(current - st.last_set) > 1e-6:
            st.picked_up = False  # the value moved elsewhere (OSC, scene, track load)
        if not st.picked_up:
            crossed = st.last_in is not None and (
                (st.last_in - current) * (position - current) <= 0
            )
            if abs(position - current) <= TAKEOVER or crossed:
                st.picked_up = True
        st.last_in = position
        if not st.picked_up:
            return []
        st.last_set = position
        return [("norm", b.target, [position])]

    # -- transport values ---------------------------------------------------------------
    def _transport(self, b: Binding) -> float:
        """The current value of ``b``'s transport value (rate, pitch, keylock)."""
        if self.get_transport is None:
            raise ParameterError(f"{b.target}: no transport to drive")
        return float(self.get_transport(b.target[len("/transport/") :]))

    @staticmethod
    def _is_ours(st: _State, current: float, now: float) -> bool:
        """Whether the engine's ``current`` is this binding's own doing."""
        if st.last_set is not None and abs(current - st.last_set) <= 1e-9:
            return True
        return any(abs(current - v) <= 1e-9 and now - t <= PENDING_S for v, t in st.ours)

    def _send(
        self, b: Binding, st: _State, value: float, now: float
    ) -> list[tuple[str, str, list[Any]]]:
        st.last_set = value
        st.ours = [(v, t) for v, t in st.ours if now - t <= PENDING_S] + [(value, now)]
        return [("action", b.target, [value])]

    def _value_cc(self, b: Binding, value: int, now: float) -> list[tuple[str, str, list[Any]]]:
        """A rate fader or a pitch knob (7 bits), or a pitch encoder's ticks."""
        if b.mode == "absolute":
            return self._value_absolute(b, _centre_offset(value, 7), now)
        if b.mode == "absolute14":
            self._st(b).msb = value
            return []  # waits for the LSB, which completes the value
        step = value - 64 if b.mode == "relative64" else (value if value < 64 else value - 128)
        if step == 0:
            return []
        # /transport/pitch: one semitone a tick, from the last one this encoder set
        # while the engine has not applied it yet
        st = self._st(b)
        current = self._transport(b)
        base = current
        if st.last_set is not None and self._is_ours(st, current, now):
            base = st.last_set
        else:
            st.ours = [(current, now)]
        target = min(MAX_PITCH, max(-MAX_PITCH, base + step))
        if target == base:
            return []  # at the end of the range
        return self._send(b, st, target, now)

    def _value_absolute(
        self, b: Binding, offset: float, now: float
    ) -> list[tuple[str, str, list[Any]]]:
        """A fader's ``offset`` (-1..1 around its centre) as a rate or a pitch, with soft
        takeover as :meth:`_absolute`, in the fader's -1..1."""
        sign = -1.0 if b.invert else 1.0
        if b.target == "/transport/rate":
            assert b.range is not None
            scale, centre = b.range, 1.0
            value = 1.0 + scale * offset * sign
        else:
            scale, centre = MAX_PITCH, 0.0
            value = scale * offset * sign + 0.0  # never -0.0
            if not b.fine:
                value = float(round(value))
        st = self._st(b)
        current = self._transport(b)
        # where the value is on the fader: a rate beyond its range at its nearer end
        here = min(1.0, max(-1.0, (current - centre) / scale * sign))
        if not self._is_ours(st, current, now):
            st.picked_up = False  # the value moved elsewhere (OSC, the page, a track load)
        if not st.picked_up:
            crossed = st.last_in is not None and (st.last_in - here) * (offset - here) <= 0
            if abs(offset - here) <= 2 * TAKEOVER or crossed:
                st.picked_up = True
                st.ours = [(current, now)]
        st.last_in = offset
        if not st.picked_up:
            return []
        return self._send(b, st, value, now)

    # -- buttons ------------------------------------------------------------------------
    def _button(self, b: Binding, pressed: bool, now: float) -> list[tuple[str, str, list[Any]]]:
        st = self._st(b)
        if b.mode == "trigger":
            return [("action", b.target, list(b.args))] if pressed else []
        if b.target == "/transport/roll":  # momentary: 0 beats on the release ends it
            return [("action", b.target, list(b.args) if pressed else [0.0])]
        if b.target == "/transport/keylock":  # an action: the OSC message's 1 or 0
            current = self._transport(b) >= 0.5

            def out(on: bool) -> list[tuple[str, str, list[Any]]]:
                return [("action", b.target, [int(on)])]
        else:
            current = float(self.get_norm(b.target)) >= 0.5

            def out(on: bool) -> list[tuple[str, str, list[Any]]]:
                return [("set", b.target, [on])]

        if b.mode == "toggle":
            return out(not current) if pressed else []
        if b.mode == "momentary":
            return out(pressed)
        # press: flip at once; on release, flip back if it was held long
        if pressed:
            st.pressed_at = now
            st.held_value = current
            return out(not current)
        if st.pressed_at is not None and now - st.pressed_at >= LONG_PRESS_S:
            st.pressed_at = None
            return out(st.held_value)
        st.pressed_at = None
        return []

    # -- LEDs -----------------------------------------------------------------------------
    def led_messages(self) -> list[tuple[str, int, int, int]]:
        """(kind, channel, number, value) for every LED binding: the full state."""
        out = []
        playing = bool(self.get_playing()) if self.get_playing is not None else None
        for b in self.map.bindings:
            if (
                b.led
                and b.mode == "trigger"
                and playing is not None
                and b.target
                in ("/transport/play", "/transport/toggle", "/transport/stop", "/transport/pause")
            ):
                lit = (
                    playing if b.target in ("/transport/play", "/transport/toggle") else not playing
                )
                out.append((b.kind, b.channel, b.number, 127 if lit else 0))
                continue
            if b.led and b.target == "/transport/keylock" and self.get_transport is not None:
                on = float(self.get_transport("keylock")) >= 0.5
                out.append((b.kind, b.channel, b.number, 127 if on else 0))
                continue
            if not b.led or not b.is_switch:
                continue
            try:
                on = float(self.get_norm(b.target)) >= 0.5
            except Exception:  # a binding for a channel this track does not have
                continue
            out.append((b.kind, b.channel, b.number, 127 if on else 0))
        return out
