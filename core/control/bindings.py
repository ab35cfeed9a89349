"""One binding of a MIDI map: what a ``[[binding]]`` entry (or a MIDI learn) may
hold, checked once (:func:`parse_binding`, :func:`learn_binding`), and the TOML it
is saved as (:func:`binding_toml`).

Modes
-----
absolute     7-bit value 0..127 -> 0..1, with soft takeover
absolute14   14-bit CC pair (MSB on ``number``, LSB on ``lsb``), with soft takeover
relative2c   encoder, two's complement (1..63 up, 127..65 down)
relative64   encoder, offset 64 (65.. up, 63.. down)
toggle       each press flips the switch
momentary    on while held (a loop roll: rolls while held)
press        a short press toggles; held past 300 ms it is momentary
trigger      each press fires the action (transport, scenes, loops, hot cues)

Actions in beats take their number from ``args``: ``/transport/loop/beats`` and
``/transport/roll`` 1/32 to 64 beats, ``/transport/beatjump`` non-zero beats (negative
back); ``/cue/N/set``, ``/cue/N/jump`` and ``/cue/N/clear`` (N = 1..8) work hot cues.
They act as the same OSC messages do (``docs/quantize.md``).

Transport values
----------------
``/transport/rate`` takes a fader (``absolute``, ``absolute14``): ``range`` (default
0.08, +/-8 %; at most 0.5) around 1.0, CC 64 (8192 in 14 bits) the centre, whose detent
(the centre and one step either side) gives exactly 1.0; ``invert = true`` puts + at the
bottom. ``/transport/pitch`` takes a knob (-12..12 semitones, snapped to whole ones
unless ``fine = true``; ``invert`` too) or an encoder (one semitone a tick).
``/transport/keylock`` takes a button (``toggle``, ``momentary``, ``press``; its LED
follows keylock). Faders and knobs pick the value up as the level faders do (a rate
beyond the fader's range at the fader's nearer end). They act as the same OSC
messages do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..beats.grid import MAX_BEATJUMP, MAX_LOOP_BEATS, MIN_LOOP_BEATS
from ..beats.store import MAX_CUES
from ..errors import ParameterError, PresetError
from ..mixer.params import MIN_RATE
from .pattern import is_pattern
from .values import MAX_SCENE_FADE_S, SCENE_NAME

__all__ = [
    "ACTIONS",
    "CONTINUOUS",
    "CUE_ACTION",
    "MODES",
    "RATE_RANGE",
    "TRANSPORT_VALUES",
    "Binding",
    "binding_toml",
    "check_learn",
    "learn_binding",
    "map_error",
    "parse_binding",
]

MODES = (
    "absolute",
    "absolute14",
    "relative2c",
    "relative64",
    "toggle",
    "momentary",
    "press",
    "trigger",
)
CONTINUOUS = ("absolute", "absolute14", "relative2c", "relative64")
ACTIONS = (
    "/transport/play",
    "/transport/pause",
    "/transport/stop",
    "/transport/toggle",
    "/scene/recall",
    "/scene/save",
    "/track/grid/tap",
    "/transport/loop/beats",
    "/transport/loop/halve",
    "/transport/loop/double",
    "/transport/loop/off",
    "/transport/beatjump",
    "/transport/roll",
)
#: The transport values a control drives, with the modes that can drive each.
TRANSPORT_VALUES = {
    "/transport/rate": ("absolute", "absolute14"),
    "/transport/pitch": ("absolute", "absolute14", "relative2c", "relative64"),
    "/transport/keylock": ("toggle", "momentary", "press"),
}
RATE_RANGE = 0.08  # a rate fader's default range: +/-8 %
MAX_RATE_RANGE = 1.0 - MIN_RATE  # +/-50 %: the fader's bottom is the slowest rate
#: A hot cue's action: ``/cue/N/set``, ``/cue/N/jump``, ``/cue/N/clear``.
CUE_ACTION = re.compile(rf"/cue/([1-{MAX_CUES}])/(set|jump|clear)")


@dataclass(frozen=True)
class Binding:
    """One control of a controller bound to a target."""

    kind: str  # "cc" or "note"
    channel: int  # 0..15
    number: int  # CC or note number
    target: str  # registry key or action address
    mode: str = "absolute"
    args: tuple[Any, ...] = ()  # e.g. the scene name of /scene/recall
    lsb: int | None = None  # absolute14: the LSB controller
    led: bool = False  # echo the switch state to the controller
    range: float | None = None  # /transport/rate: the fader's range around 1.0
    invert: bool = False  # /transport/rate, /transport/pitch: + at the bottom
    fine: bool = False  # /transport/pitch from a knob: not snapped to whole semitones

    @property
    def is_switch(self) -> bool:
        """A switch of the registry (a mute, a solo), not an action held (a roll)."""
        return self.mode in ("toggle", "momentary", "press") and not self.target.startswith(
            "/transport/"
        )


def check_learn(target: str, args: Sequence[Any], resolve: Callable[[str], object]) -> None:
    """Raise ParameterError now for a MIDI learn of ``target`` with ``args`` that no
    control could complete: a target or arguments no map may hold, or a channel the
    track lacks (``resolve``, the registry's, raises for it)."""
    learn_binding(target, args, "cc", 0, 0)
    if target.startswith(("/ch/", "/master/", "/fx/")):
        resolve(target)


def map_error(source: str, where: str, reason: str) -> PresetError:
    """A map's error: the file, the entry and the reason."""
    return PresetError(f"{source}: {where}: {reason}")


def parse_binding(entry: Any, source: str, where: str) -> Binding:
    """One ``[[binding]]`` table of a map (or one MIDI learn made), validated; errors
    name ``source``, ``where`` and the reason."""
    if not isinstance(entry, dict):
        raise map_error(source, where, "must be a table")
    unknown = set(entry) - {
        "cc",
        "note",
        "channel",
        "target",
        "mode",
        "args",
        "lsb",
        "led",
        "range",
        "invert",
        "fine",
    }
    if unknown:
        raise map_error(source, where, f"unknown key {sorted(unknown)[0]!r}")
    if ("cc" in entry) == ("note" in entry):
        raise map_error(source, where, "give exactly one of cc = N or note = N")
    kind = "cc" if "cc" in entry else "note"
    number = entry[kind]
    channel = entry.get("channel", 1)
    for label, value, lo, hi in (("cc/note", number, 0, 127), ("channel", channel, 1, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise map_error(source, where, f"{label} must be {lo}..{hi}, got {value!r}")
    target = entry.get("target")
    if not isinstance(target, str) or not target.startswith("/"):
        raise map_error(source, where, f"target must be an address, got {target!r}")
    mode = entry.get("mode", "absolute" if kind == "cc" else "toggle")
    if mode not in MODES:
        raise map_error(source, where, f"mode {mode!r} is not one of {', '.join(MODES)}")
    is_value = target in TRANSPORT_VALUES
    is_action = not is_value and (
        target.split("/")[1] in ("transport", "scene", "cue") or target in ACTIONS
    )
    if is_action and target not in ACTIONS and not CUE_ACTION.fullmatch(target):
        if target.startswith("/transport/") and mode in CONTINUOUS:
            raise map_error(
                source,
                where,
                f"unknown transport value {target!r}: a continuous control drives "
                "/transport/rate or /transport/pitch",
            )
        raise map_error(source, where, f"unknown action {target!r}")
    if is_value and mode not in TRANSPORT_VALUES[target]:
        raise map_error(
            source,
            where,
            f"mode {mode!r} cannot drive {target}: use " + ", ".join(TRANSPORT_VALUES[target]),
        )
    if is_action:
        # a roll plays while its pad is held: it ends on the release
        mode = "momentary" if target == "/transport/roll" else "trigger"
    if not is_action and not is_value and not target.startswith(("/ch/", "/master/", "/fx/")):
        raise map_error(source, where, f"unknown target {target!r}")
    if target.startswith("/scene/"):
        why = _scene_error(target, entry.get("args"))
        if why:
            raise map_error(source, where, why)
    lsb = entry.get("lsb")
    if mode == "absolute14":
        if kind != "cc" or not isinstance(lsb, int) or not 0 <= lsb <= 127 or lsb == number:
            raise map_error(source, where, "absolute14 needs cc = MSB and lsb = LSB (0..127)")
    args = entry.get("args", [])
    if not isinstance(args, list):
        raise map_error(source, where, "args must be a list")
    if target in _IN_BEATS:
        why = _beats_error(target, args)
        if why:
            raise map_error(source, where, why)
    if args and (is_value or (target not in _IN_BEATS and not target.startswith("/scene/"))):
        raise map_error(source, where, f"{target} takes no args")
    why = _value_error(target, mode, entry)
    if why:
        raise map_error(source, where, why)
    return Binding(
        kind=kind,
        channel=channel - 1,
        number=number,
        target=target,
        mode=mode,
        args=tuple(args),
        lsb=lsb,
        led=bool(entry.get("led", kind == "note")),
        range=entry.get("range", RATE_RANGE) if target == "/transport/rate" else None,
        invert=entry.get("invert", False),
        fine=entry.get("fine", False),
    )


#: The transport values a rate fader or pitch knob drives: a continuous control only.
_FADER_VALUES = ("/transport/rate", "/transport/pitch")


def learn_binding(
    target: str, args: Sequence[Any], kind: str, channel: int, number: int
) -> Binding | None:
    """The binding MIDI learn makes when a control of ``kind`` (``cc`` or ``note``)
    on ``channel`` (0..15) with ``number`` is moved for ``target`` (and its ``args``:
    a loop's or a jump's beats, a scene's name), as a map file would hold it; None
    when such a control cannot drive the target (a pad for a rate fader).

    A fader or knob drives a value (absolute), a pad or button toggles a switch
    (with its LED), fires an action (a roll while held) or toggles keylock (lit
    while on). Raises ParameterError for a target or arguments no map may hold.
    """
    if is_pattern(target):
        raise ParameterError(f"{target}: MIDI learn binds one control, not a pattern")
    entry: dict[str, Any] = {kind: number, "channel": channel + 1, "target": target}
    if target in _FADER_VALUES:
        if kind != "cc":
            return None
        entry["mode"] = "absolute"
    elif target == "/transport/keylock" or target.startswith(("/ch/", "/master/", "/fx/")):
        entry["mode"] = "absolute" if kind == "cc" and target != "/transport/keylock" else "toggle"
        entry["led"] = kind == "note"
    else:  # an action: the parser checks it is one and gives it its mode
        entry["mode"] = "trigger"
        entry["led"] = False
    for value in args:
        ok = isinstance(value, str) or (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
        if not ok:
            raise ParameterError(f"{target}: an argument must be a number or a name, got {value!r}")
    if args:
        entry["args"] = list(args)
    source = "MIDI learn"
    try:
        return parse_binding(entry, source, target)
    except PresetError as exc:
        why = str(exc).removeprefix(f"{source}: {target}: ")
        raise ParameterError(why if target in why else f"{target}: {why}") from None


#: The actions in beats, with the beats they may take (bounds included).
_IN_BEATS = {
    "/transport/loop/beats": (MIN_LOOP_BEATS, MAX_LOOP_BEATS),
    "/transport/roll": (MIN_LOOP_BEATS, MAX_LOOP_BEATS),
    "/transport/beatjump": (-MAX_BEATJUMP, MAX_BEATJUMP),
}


def _beats_error(target: str, args: list[Any]) -> str:
    """Why ``args`` is not the one number of beats ``target`` takes ("" when it is)."""
    lo, hi = _IN_BEATS[target]
    beats = args[0] if len(args) == 1 else None
    if (
        isinstance(beats, bool)
        or not isinstance(beats, int | float)
        or not math.isfinite(beats)
        or not lo <= beats <= hi
        or beats == 0
    ):
        what = "non-zero beats" if lo < 0 else "beats"
        return f"{target} needs args = [{what}] within {lo:g}..{hi:g}, got {args!r}"
    return ""


def _scene_error(target: str, args: Any) -> str:
    """Why ``args`` are not what ``target`` (``/scene/recall``: a name and an optional
    fade in seconds; ``/scene/save``: a name) takes ("" when they are)."""
    fades = target == "/scene/recall"
    shape = '["scene name", fade s]' if fades else '["scene name"]'
    if not isinstance(args, list) or not 1 <= len(args) <= (2 if fades else 1):
        return f"{target} needs args = {shape}"
    name = args[0]
    if not isinstance(name, str) or not SCENE_NAME.match(name) or ".." in name:
        return f"{target}: scene name {name!r}: use letters, digits, space, _ . -"
    if len(args) == 2:
        fade = args[1]
        if (
            isinstance(fade, bool)
            or not isinstance(fade, int | float)
            or not 0 <= fade <= MAX_SCENE_FADE_S
        ):
            return f"{target}: fade must be 0..{MAX_SCENE_FADE_S:g} s, got {fade!r}"
    return ""


def _value_error(target: str, mode: str, entry: dict[str, Any]) -> str:
    """Why a binding's ``range``, ``invert`` or ``fine`` is wrong ("" when they are right)."""
    if "range" in entry:
        if target != "/transport/rate":
            return "range applies to /transport/rate only"
        value = entry["range"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_RATE_RANGE
        ):
            return (
                f"/transport/rate range must be a number above 0 and at most "
                f"{MAX_RATE_RANGE:g} (+/-{MAX_RATE_RANGE * 100:g} %), got {value!r}"
            )
    for key, allowed, where in (
        (
            "invert",
            target in ("/transport/rate", "/transport/pitch"),
            "/transport/rate and /transport/pitch",
        ),
        (
            "fine",
            target == "/transport/pitch" and mode in ("absolute", "absolute14"),
            "/transport/pitch from a knob or fader (absolute, absolute14)",
        ),
    ):
        if key not in entry:
            continue
        if not allowed:
            return f"{key} applies to {where} only"
        if not isinstance(entry[key], bool):
            return f"{key} must be true or false, got {entry[key]!r}"
    return ""


def binding_toml(b: Binding) -> str:
    """A binding as a TOML array-of-tables entry (for MIDI learn)."""
    lines = [
        "[[binding]]",
        f"{b.kind} = {b.number}",
        f"channel = {b.channel + 1}",
        f"target = {_toml_value(b.target)}",
        f'mode = "{b.mode}"',
    ]
    if b.args:  # a scene's name is a string, a loop's beats a number
        lines.append("args = [" + ", ".join(_toml_value(a) for a in b.args) + "]")
    if b.lsb is not None:
        lines.append(f"lsb = {b.lsb}")
    lines.append(f"led = {str(b.led).lower()}")
    if b.range is not None:
        lines.append(f"range = {b.range!r}")
    if b.invert:
        lines.append("invert = true")
    if b.fine:
        lines.append("fine = true")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """A string or a number of a binding's ``args`` as TOML writes it."""
    if isinstance(value, str):
        # a TOML basic string: JSON's escapes are TOML's, but not its surrogate pairs
        return json.dumps(value, ensure_ascii=False)
    return repr(value)
