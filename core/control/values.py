"""A control's values: their states, the checks of a new value, and what they become.

Pure functions on immutable states, shared by the :class:`~stemdeck.core.control.registry.Registry`
and its :class:`~stemdeck.core.control.registry.Transaction`:

- the states the registry holds: :class:`StripState` (a channel's or the master's),
  :class:`EchoState` (the echo bus), :class:`ReverbState` (the reverb bus); a
  scene's tables: :class:`SceneState` with :class:`ChannelState`,
  :class:`MasterState`, :class:`EchoSceneState` and :class:`ReverbSceneState`;
- a message's arguments checked and applied to a state (:func:`strip_updated`,
  :func:`echo_updated`, :func:`reverb_updated`), a parameter's value as a reply
  carries it (:func:`strip_value`, :func:`bus_value`); the echo's delay in beats
  turned into milliseconds at a tempo (:func:`echo_followed`);
- a scene's table read back into states, every value checked (:func:`strip_from_scene`,
  :func:`echo_from_scene`, :func:`reverb_from_scene`), and states written as one
  (:func:`scene_of`);
- the engine command that aims a strip or the master at a state (:func:`strip_command`).

Every check raises :class:`~stemdeck.core.errors.ParameterError` quoting the bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypedDict

from ..errors import ParameterError
from ..mixer.commands import Command, MasterTarget, StripTarget
from ..mixer.params import (
    ECHO_FEEDBACK,
    ECHO_MAX_BEATS,
    ECHO_MAX_MS,
    ECHO_MIN_BEATS,
    ECHO_MIN_MS,
    ECHO_MS,
    ECHO_RETURN,
    MAX_DB,
    MAX_GAIN,
    OFF_DB,
    REVERB_LOWCUT,
    REVERB_MAX_LOWCUT,
    REVERB_MIN_LOWCUT,
    REVERB_RETURN,
    REVERB_SIZE,
    db_to_gain,
    fader_to_gain,
    gain_to_db,
    gain_to_fader,
)

__all__ = [
    "MAX_SCENE_FADE_S",
    "SCENE_NAME",
    "ChannelState",
    "EchoSceneState",
    "EchoState",
    "MasterState",
    "ReverbSceneState",
    "ReverbState",
    "SceneState",
    "StripState",
    "bus_value",
    "echo_followed",
    "echo_from_scene",
    "echo_updated",
    "reverb_from_scene",
    "reverb_updated",
    "scene_of",
    "strip_command",
    "strip_from_scene",
    "strip_updated",
    "strip_value",
]


#: A scene's name: a file name on every system (letters, digits, space, _ . -).
SCENE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}\Z")
#: The longest fade (a morph) a scene recall takes, seconds.
MAX_SCENE_FADE_S = 600.0


@dataclass(frozen=True)
class StripState:
    """A channel's (or the master's) values; ``filter`` is the DJ filter's knob
    (-1..1, 0 off) and ``res`` its resonance (0..1); ``echo`` and ``reverb`` the
    sends (0..1; the master has none)."""

    gain: float = 1.0
    mute: bool = False
    solo: bool = False
    pan: float = 0.0
    filter: float = 0.0
    res: float = 0.0
    echo: float = 0.0
    echo_pre: bool = False
    reverb: float = 0.0


@dataclass(frozen=True)
class EchoState:
    """The echo bus: delay (ms), feedback, the DJ filter on its return, return level,
    and the delay in beats.

    ``beats`` 0 means the delay is set in milliseconds (``/fx/echo/ms``); above 0
    (1/16..4) it is set in beats (``/fx/echo/beats``) and ``ms`` is the delay in
    force, followed from the grid and the rate (:func:`echo_followed`), or the last
    one kept while there is no grid."""

    ms: float = ECHO_MS
    feedback: float = ECHO_FEEDBACK
    filter: float = 0.0
    level: float = ECHO_RETURN
    beats: float = 0.0


@dataclass(frozen=True)
class ReverbState:
    """The reverb bus: room size (0..1), the low-cut on its input (Hz), return level."""

    size: float = REVERB_SIZE
    lowcut: float = REVERB_LOWCUT
    level: float = REVERB_RETURN


class ChannelState(TypedDict):
    """One channel in a :class:`SceneState`."""

    gain: float
    mute: bool
    solo: bool
    pan: float
    filter: float
    res: float
    echo: float
    echo_pre: bool
    reverb: float


class EchoSceneState(TypedDict):
    """The echo bus in a :class:`SceneState` (``level`` is its return level;
    ``beats`` 0: the delay is ``ms``, else ``beats`` on the grid, ``ms`` the delay it
    gave when saved)."""

    ms: float
    beats: float
    feedback: float
    filter: float
    level: float


class ReverbSceneState(TypedDict):
    """The reverb bus in a :class:`SceneState` (``level`` is its return level)."""

    size: float
    lowcut: float
    level: float


class MasterState(TypedDict):
    """The master in a :class:`SceneState`."""

    gain: float
    mute: bool
    filter: float
    res: float


class SceneState(TypedDict):
    """Every channel's state by name, the master's, the echo bus's and the reverb
    bus's: what
    :meth:`Registry.snapshot <stemdeck.core.control.registry.Registry.snapshot>` gives
    and :meth:`Transaction.restore <stemdeck.core.control.registry.Transaction.restore>`
    takes back (a scene)."""

    channels: dict[str, ChannelState]
    master: MasterState
    echo: EchoSceneState
    reverb: ReverbSceneState


def _number(args: Sequence[object], address: str) -> float:
    if len(args) != 1:
        raise ParameterError(f"{address} takes one number, got {len(args)} arguments")
    value = args[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"{address} takes a number, got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise ParameterError(f"{address} got NaN")
    return float(value)


def _switch(args: Sequence[object], address: str) -> bool:
    if len(args) != 1:
        raise ParameterError(f"{address} takes one of 1/0/T/F, got {len(args)} arguments")
    value = args[0]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        if value in (0, 1):
            return bool(value)
    raise ParameterError(f"{address} takes 1/0 or T/F, got {value!r}")


def strip_updated(state: StripState, param: str, args: Sequence[object], key: str) -> StripState:
    """``state`` with parameter ``param`` (``fader``, ``gain``, ``db``, ``mute``...) set
    from a message's ``args``, sent to canonical key ``key`` (quoted in errors).

    Raises
    ------
    ParameterError
        Wrong argument count or type, NaN, out of range, unknown parameter.
    """
    if param == "fader":
        f = _number(args, key)
        if not 0.0 <= f <= 1.0:
            raise ParameterError(f"{key} takes 0..1, got {f:g}")
        return replace(state, gain=fader_to_gain(f))
    if param == "gain":
        g = _number(args, key)
        if not 0.0 <= g <= MAX_GAIN * (1 + 1e-9):
            raise ParameterError(f"{key} takes 0..{MAX_GAIN:.3f} (+{MAX_DB:g} dB), got {g:g}")
        return replace(state, gain=min(g, MAX_GAIN))
    if param == "db":
        db = _number(args, key)
        if db > MAX_DB + 1e-9:
            raise ParameterError(f"{key} takes at most +{MAX_DB:g} dB, got {db:g}")
        return replace(state, gain=0.0 if db <= OFF_DB else db_to_gain(db))
    if param in ("mute", "solo"):
        return replace(state, **{param: _switch(args, key)})
    if param == "pan":
        p = _number(args, key)
        if not -1.0 <= p <= 1.0:
            raise ParameterError(f"{key} takes -1..1, got {p:g}")
        return replace(state, pan=p)
    if param == "filter":
        f = _number(args, key)
        if not -1.0 <= f <= 1.0:
            raise ParameterError(
                f"{key} takes -1..1 (below 0 low-pass, above 0 high-pass), got {f:g}"
            )
        return replace(state, filter=f)
    if param == "filter/res":
        r = _number(args, key)
        if not 0.0 <= r <= 1.0:
            raise ParameterError(f"{key} takes 0..1, got {r:g}")
        return replace(state, res=r)
    if param == "echo":
        e = _number(args, key)
        if not 0.0 <= e <= 1.0:
            raise ParameterError(f"{key} takes 0..1, got {e:g}")
        return replace(state, echo=e)
    if param == "echo/pre":
        return replace(state, echo_pre=_switch(args, key))
    if param == "reverb":
        r = _number(args, key)
        if not 0.0 <= r <= 1.0:
            raise ParameterError(f"{key} takes 0..1, got {r:g}")
        return replace(state, reverb=r)
    raise ParameterError(f"unknown address {key}")


def scene_of(
    names: Sequence[str],
    strips: Sequence[StripState],
    master: StripState,
    echo: EchoState,
    reverb: ReverbState,
) -> SceneState:
    """The scene of these states: channels by name (``names`` and ``strips`` in
    channel order), the master, the echo bus and the reverb bus."""
    return {
        "channels": {
            n: {
                "gain": s.gain,
                "mute": s.mute,
                "solo": s.solo,
                "pan": s.pan,
                "filter": s.filter,
                "res": s.res,
                "echo": s.echo,
                "echo_pre": s.echo_pre,
                "reverb": s.reverb,
            }
            for n, s in zip(names, strips, strict=True)
        },
        "master": {
            "gain": master.gain,
            "mute": master.mute,
            "filter": master.filter,
            "res": master.res,
        },
        "echo": {
            "ms": echo.ms,
            "beats": echo.beats,
            "feedback": echo.feedback,
            "filter": echo.filter,
            "level": echo.level,
        },
        "reverb": {"size": reverb.size, "lowcut": reverb.lowcut, "level": reverb.level},
    }


def _scene_number(
    values: Mapping[str, object], key: str, lo: float, hi: float, default: float, what: str
) -> float:
    """A scene table's number ``key`` clamped to ``lo..hi`` (``default`` when absent);
    ``what`` prefixes the key in the error (``"echo "``)."""
    v = values.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        raise ParameterError(f"scene value {what}{key}={v!r} is not a number")
    return min(max(float(v), lo), hi)


def strip_from_scene(values: Mapping[str, object], current: StripState) -> StripState:
    """A channel's (or the master's) state from its scene table ``values`` (as read
    from a file: any types), clamped to range; what it does not name stays ``current``.

    Raises
    ------
    ParameterError
        A value of the wrong type, or NaN.
    """

    def num(key: str, lo: float, hi: float, default: float) -> float:
        return _scene_number(values, key, lo, hi, default, "")

    def flag(key: str, default: bool) -> bool:
        v = values.get(key, default)
        if not isinstance(v, bool):
            raise ParameterError(f"scene value {key}={v!r} is not true/false")
        return v

    return StripState(
        gain=num("gain", 0.0, MAX_GAIN, current.gain),
        mute=flag("mute", current.mute),
        solo=flag("solo", current.solo),
        pan=num("pan", -1.0, 1.0, current.pan),
        filter=num("filter", -1.0, 1.0, current.filter),
        res=num("res", 0.0, 1.0, current.res),
        echo=num("echo", 0.0, 1.0, current.echo),
        echo_pre=flag("echo_pre", current.echo_pre),
        reverb=num("reverb", 0.0, 1.0, current.reverb),
    )


def echo_from_scene(values: Mapping[str, object], current: EchoState) -> EchoState:
    """The echo bus's state from its scene table, as :func:`strip_from_scene`; the
    delay in beats if the table's ``beats`` is above 0 (clamped to 1/16..4), in
    milliseconds if it is 0, or if the table names ``ms`` and no ``beats`` (a scene
    saved before the delay had beats).

    Raises
    ------
    ParameterError
        A value of the wrong type, or NaN.
    """

    def num(key: str, lo: float, hi: float, default: float) -> float:
        return _scene_number(values, key, lo, hi, default, "echo ")

    beats = current.beats
    if "beats" in values:
        beats = num("beats", 0.0, ECHO_MAX_BEATS, beats)
        beats = max(beats, ECHO_MIN_BEATS) if beats > 0.0 else 0.0
    elif "ms" in values:
        beats = 0.0
    return EchoState(
        ms=num("ms", ECHO_MIN_MS, ECHO_MAX_MS, current.ms),
        feedback=num("feedback", 0.0, 1.0, current.feedback),
        filter=num("filter", -1.0, 1.0, current.filter),
        level=num("level", 0.0, 1.0, current.level),
        beats=beats,
    )


def reverb_from_scene(values: Mapping[str, object], current: ReverbState) -> ReverbState:
    """The reverb bus's state from its scene table, as :func:`strip_from_scene`.

    Raises
    ------
    ParameterError
        A value of the wrong type, or NaN.
    """

    def num(key: str, lo: float, hi: float, default: float) -> float:
        return _scene_number(values, key, lo, hi, default, "reverb ")

    return ReverbState(
        size=num("size", 0.0, 1.0, current.size),
        lowcut=num("lowcut", REVERB_MIN_LOWCUT, REVERB_MAX_LOWCUT, current.lowcut),
        level=num("level", 0.0, 1.0, current.level),
    )


def reverb_updated(state: ReverbState, param: str, args: Sequence[object], key: str) -> ReverbState:
    """``state`` with the reverb bus's ``param`` set from a message's ``args``, as
    :func:`strip_updated`.

    Raises
    ------
    ParameterError
        Wrong argument count or type, NaN, out of range.
    """
    x = _number(args, key)
    if param == "lowcut":
        lo, hi = REVERB_MIN_LOWCUT, REVERB_MAX_LOWCUT
        if not lo <= x <= hi:
            raise ParameterError(f"{key} takes {lo:g}..{hi:g} Hz, got {x:g}")
        return replace(state, lowcut=x)
    if not 0.0 <= x <= 1.0:
        raise ParameterError(f"{key} takes 0..1, got {x:g}")
    return replace(state, size=x) if param == "size" else replace(state, level=x)


def bus_value(state: EchoState | ReverbState, param: str) -> float:
    """An FX bus's ``param``: the echo's ``ms`` (the delay in force), ``beats`` (0
    while the delay is set in ms), ``feedback``, ``filter``, the reverb's ``size``,
    ``lowcut``, and either's ``return`` (its ``level``)."""
    if param == "return":
        return state.level
    value: float = getattr(state, param)
    return value


def echo_updated(state: EchoState, param: str, args: Sequence[object], key: str) -> EchoState:
    """``state`` with the echo bus's ``param`` set from a message's ``args``, as
    :func:`strip_updated`. ``ms`` and ``beats`` are one setting in two units:
    setting either puts the delay in its unit (``beats`` keeps ``ms`` until
    :func:`echo_followed` gives the tempo's).

    Raises
    ------
    ParameterError
        Wrong argument count or type, NaN, infinite, out of range.
    """
    x = _number(args, key)
    if param == "ms":
        if not ECHO_MIN_MS <= x <= ECHO_MAX_MS:
            raise ParameterError(f"{key} takes {ECHO_MIN_MS:g}..{ECHO_MAX_MS:g} ms, got {x:g}")
        return replace(state, ms=x, beats=0.0)
    if param == "beats":
        if not ECHO_MIN_BEATS <= x <= ECHO_MAX_BEATS:
            raise ParameterError(
                f"{key} takes 1/16..{ECHO_MAX_BEATS:g} beats ({ECHO_MIN_BEATS:g}.."
                f"{ECHO_MAX_BEATS:g}), got {x:g}"
            )
        return replace(state, beats=x)
    if param == "filter":
        if not -1.0 <= x <= 1.0:
            raise ParameterError(
                f"{key} takes -1..1 (below 0 low-pass, above 0 high-pass), got {x:g}"
            )
        return replace(state, filter=x)
    if not 0.0 <= x <= 1.0:
        raise ParameterError(f"{key} takes 0..1, got {x:g}")
    return replace(state, feedback=x) if param == "feedback" else replace(state, level=x)


def echo_followed(state: EchoState, bpm: float | None, rate: float) -> EchoState:
    """``state`` with its delay in beats as milliseconds at the tempo: ``beats`` ×
    60000 / (``bpm`` × ``rate``), the grid's tempo at the transport's vinyl rate,
    within the delay's range (1..4000 ms). The state as it is while the delay is in
    ms, or without a grid (``bpm`` None: the last delay is kept)."""
    if not state.beats or bpm is None:
        return state
    ms = state.beats * 60000.0 / (bpm * rate)
    return replace(state, ms=min(max(ms, ECHO_MIN_MS), ECHO_MAX_MS))


def strip_value(state: StripState, param: str) -> float | int:
    """A channel's (or the master's) ``param`` as its OSC reply carries it: ``fader``
    and ``db`` are views of the gain, switches are 0 or 1."""
    if param == "gain":
        return state.gain
    if param == "db":
        return gain_to_db(state.gain)
    if param == "fader":
        return gain_to_fader(state.gain)
    if param in ("mute", "solo"):
        return int(getattr(state, param))
    if param == "filter":
        return state.filter
    if param == "filter/res":
        return state.res
    if param == "echo":
        return state.echo
    if param == "echo/pre":
        return int(state.echo_pre)
    if param == "reverb":
        return state.reverb
    return state.pan


def strip_command(index: int | None, state: StripState) -> Command:
    """The engine command that aims strip ``index`` (None: the master) at ``state``."""
    if index is None:
        return MasterTarget(state.gain, state.mute, state.filter, state.res)
    return StripTarget(
        index,
        state.gain,
        state.mute,
        state.solo,
        state.pan,
        state.filter,
        state.res,
        state.echo,
        state.echo_pre,
        state.reverb,
    )
