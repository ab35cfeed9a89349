"""The OSCQuery namespace: the OSC address space of docs/osc.md as JSON nodes.

Built from the live state on every request (the Vidvox OSCQuery proposal:
``FULL_PATH``, ``CONTENTS``, ``TYPE``, ``ACCESS``, ``VALUE``, ``RANGE``,
``DESCRIPTION``, ``UNIT``), so it always follows the track: channels appear by
index (``/ch/2``) and by name (``/ch/bass``), and a track with other channels
gives another tree. ``docs/web.md`` lists it.

``ACCESS`` is a mask: 1 the value can be read (a query, or LISTEN), 2 it can be
set; 0 for an action without a value (``/transport/play``). An action takes no
arguments and its ``TYPE`` is the empty type tag string.

No node is both a value and a container, as clients such as python-oscquery
require: where an OSC address has a value and addresses below it, the tree
lists the value one level down (:data:`VALUE_CHILDREN`: ``/transport/loop`` as
``/transport/loop/region``, ``/meter`` as ``/meter/peak``, ``/channels`` as
``/channels/names``, ``/track/grid`` as ``/track/grid/current``, ``/cue/N`` as
``/cue/N/position``, ``/ch/N/filter`` as
``/ch/N/filter/knob`` and ``/ch/N/echo`` as ``/ch/N/echo/send``); OSC answers on
both. A write-only node (``ACCESS`` 2)
carries a placeholder ``VALUE`` of its ``TYPE`` (0, 0.0, ""): such clients take
a method's types from its ``VALUE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from stemdeck.core.beats.grid import BPM_LIMITS, MAX_BEATJUMP, MAX_LOOP_BEATS, MIN_LOOP_BEATS
from stemdeck.core.beats.store import MAX_CUES
from stemdeck.core.control.registry import CHANNEL_PARAMS, MASTER_PARAMS, PARAM_ALIASES
from stemdeck.core.mixer.keylock import MAX_PITCH
from stemdeck.core.mixer.params import (
    ECHO_MAX_BEATS,
    ECHO_MAX_MS,
    ECHO_MIN_BEATS,
    ECHO_MIN_MS,
    MAX_DB,
    MAX_GAIN,
    MAX_RATE,
    MIN_RATE,
    OFF_DB,
    REVERB_MAX_LOWCUT,
    REVERB_MIN_LOWCUT,
)

from ..osc.grid import GRID_VALUE, MAX_SHIFT_MS

__all__ = [
    "ATTRIBUTES",
    "EXTENSIONS",
    "METER_FLOOR_DB",
    "VALUE_CHILDREN",
    "Snapshot",
    "build",
    "find",
]

METER_FLOOR_DB = -120.0

#: The attributes this server gives (HOST_INFO's EXTENSIONS says the same).
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "ACCESS", "VALUE", "RANGE", "DESCRIPTION", "UNIT")
EXTENSIONS = {
    "ACCESS": True,
    "VALUE": True,
    "RANGE": True,
    "DESCRIPTION": True,
    "UNIT": True,
    "TAGS": False,
    "EXTENDED_TYPE": False,
    "CRITICAL": False,
    "CLIPMODE": False,
    "OVERLOADS": False,
    "HTML": False,
    "LISTEN": True,
    "PATH_CHANGED": True,
    "PATH_ADDED": True,
    "PATH_REMOVED": True,
    "PATH_RENAMED": False,
}

#: OSC addresses with a value and children, and the child that carries the value in
#: the tree (OSC answers on both; LISTEN takes both).
VALUE_CHILDREN = {
    "/transport/loop": "/transport/loop/region",
    "/meter": "/meter/peak",
    "/channels": "/channels/names",
    "/track/grid": GRID_VALUE,
    **{f"/cue/{n}": f"/cue/{n}/position" for n in range(1, MAX_CUES + 1)},
}

# A parameter with parameters below it (filter has filter/res) -> the child that
# carries its own value in the tree: /ch/N/filter/knob, /ch/N/echo/send.
_VALUE_LEAF = {alias.split("/")[0]: alias.split("/")[1] for alias in PARAM_ALIASES}
_PLACEHOLDER = {"i": 0, "f": 0.0, "s": ""}


class Snapshot:
    """What a namespace is built from: every value as the OSC replies carry it.

    ``values`` maps addresses to argument lists (channels by index: ``/ch/2/db``);
    ``names`` are the channels; meters and status come from the last feedback round.
    """

    def __init__(
        self,
        values: dict[str, list[Any]],
        names: Sequence[str],
        *,
        peak_db: Sequence[float] = (),
        rms_db: Sequence[float] = (),
        status: str = "",
        tracks: Sequence[str] = (),
        scenes: Sequence[str] = (),
    ) -> None:
        self.values = values
        self.names = list(names)
        self.peak_db = list(peak_db)
        self.rms_db = list(rms_db)
        self.status = status
        self.tracks = list(tracks)
        self.scenes = list(scenes)


def _json_number(x: Any) -> Any:
    """JSON has no infinity: an off level (``-inf`` dB) is null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _method(
    path: str,
    type_: str,
    access: int,
    description: str,
    *,
    value: Sequence[Any] | None = None,
    range_: Sequence[dict[str, Any] | None] | None = None,
    unit: Sequence[str] | None = None,
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "FULL_PATH": path,
        "TYPE": type_,
        "ACCESS": access,
        "DESCRIPTION": description,
    }
    if value is not None and access & 1:
        node["VALUE"] = [_json_number(v) for v in value]
    elif access == 2:
        node["VALUE"] = [_PLACEHOLDER[t] for t in type_]
    if range_ is not None:
        node["RANGE"] = list(range_)
    if unit is not None:
        node["UNIT"] = list(unit)
    return node


def _cue_node(n: int, v: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Hot cue ``n``: its position (the value of ``/cue/N``) and verbs."""
    base = f"/cue/{n}"
    return _container(
        base,
        f"hot cue {n}",
        {
            "position": _method(
                f"{base}/position",
                "f",
                1,
                f"where cue {n} is, in seconds (-1.0: not set; also {base})",
                value=v.get(base, [-1.0]),
                unit=["time.second"],
            ),
            "set": _method(
                f"{base}/set", "", 0, "set the cue at the play head (snapped when quantized)"
            ),
            "jump": _method(
                f"{base}/jump", "", 0, "jump to the cue (on the next grid point when quantized)"
            ),
            "clear": _method(f"{base}/clear", "", 0, "clear the cue"),
            "scene": _method(
                f"{base}/scene",
                "s",
                3,
                "the scene a jump to the cue recalls ('' none)",
                value=v.get(f"{base}/scene", [""]),
            ),
        },
    )


def _container(path: str, description: str, contents: dict[str, Any]) -> dict[str, Any]:
    return {"FULL_PATH": path, "ACCESS": 0, "DESCRIPTION": description, "CONTENTS": contents}


_LEVEL = {
    "fader": (
        "f",
        [{"MIN": 0.0, "MAX": 1.0}],
        None,
        "fader position on the console taper: unity at 0.75, +10 dB at 1, 0 is off",
    ),
    "gain": ("f", [{"MIN": 0.0, "MAX": MAX_GAIN}], None, "linear gain, at most +10 dB"),
    "db": (
        "f",
        [{"MIN": OFF_DB, "MAX": MAX_DB}],
        ["gain.db"],
        f"gain in dB, at most +{MAX_DB:g}; -inf or <= {OFF_DB:g} is off (VALUE null)",
    ),
    "mute": ("i", [{"MIN": 0, "MAX": 1}], None, "1 mutes (a fade); takes 1/0 or T/F"),
    "solo": (
        "i",
        [{"MIN": 0, "MAX": 1}],
        None,
        "1 solos: any solo mutes every channel not soloed; takes 1/0 or T/F",
    ),
    "pan": ("f", [{"MIN": -1.0, "MAX": 1.0}], None, "balance, -1 left .. 1 right"),
    "filter": (
        "f",
        [{"MIN": -1.0, "MAX": 1.0}],
        None,
        "DJ filter: below 0 low-pass, above 0 high-pass, 0 off (a true bypass)",
    ),
    "filter/res": ("f", [{"MIN": 0.0, "MAX": 1.0}], None, "the DJ filter's resonance"),
    "echo": (
        "f",
        [{"MIN": 0.0, "MAX": 1.0}],
        None,
        "send to the echo bus, after the fader and mute (unless echo/pre)",
    ),
    "echo/pre": (
        "i",
        [{"MIN": 0, "MAX": 1}],
        None,
        "1 taps the echo send before the fader, mute and filter; takes 1/0 or T/F",
    ),
    "reverb": (
        "f",
        [{"MIN": 0.0, "MAX": 1.0}],
        None,
        "send to the reverb bus, after the fader, mute and filter",
    ),
}

_ECHO = {
    "ms": (
        "f",
        [{"MIN": ECHO_MIN_MS, "MAX": ECHO_MAX_MS}],
        ["time.millisecond"],
        "the echo's delay in milliseconds, in force (set here, or followed from "
        "/fx/echo/beats); setting it puts the delay in ms; a change glides",
    ),
    "beats": (
        "f",
        [{"MIN": ECHO_MIN_BEATS, "MAX": ECHO_MAX_BEATS}],
        None,
        "the echo's delay in beats of the grid, following the rate (1/16..4); setting "
        "it puts the delay in beats; 0 while it is set in ms",
    ),
    "feedback": ("f", [{"MIN": 0.0, "MAX": 1.0}], None, "each repeat's level: the tail"),
    "filter": (
        "f",
        [{"MIN": -1.0, "MAX": 1.0}],
        None,
        "DJ filter on the echo's return and in its feedback: thins the tail, 0 off",
    ),
    "return": ("f", [{"MIN": 0.0, "MAX": 1.0}], None, "the echo's level in the master"),
}

_REVERB = {
    "size": (
        "f",
        [{"MIN": 0.0, "MAX": 1.0}],
        None,
        "room size: how long the tail rings (0 short, 1 about 10 s to fall 60 dB)",
    ),
    "lowcut": (
        "f",
        [{"MIN": REVERB_MIN_LOWCUT, "MAX": REVERB_MAX_LOWCUT}],
        ["time.hz"],
        "low-cut on the reverb's input in Hz (12 dB/octave), so the bass stays dry",
    ),
    "return": ("f", [{"MIN": 0.0, "MAX": 1.0}], None, "the reverb's level in the master"),
}


def _bus(bus: str, text: str, params: dict[str, Any], snap: Snapshot) -> dict[str, Any]:
    """The container of FX bus ``bus`` (``/fx/echo``...) with its parameters' nodes."""
    return _container(
        f"/fx/{bus}",
        text,
        {
            p: _method(
                f"/fx/{bus}/{p}",
                type_,
                3,
                desc,
                value=snap.values.get(f"/fx/{bus}/{p}"),
                range_=range_,
                unit=unit,
            )
            for p, (type_, range_, unit, desc) in params.items()
        },
    )


def _strip(base: str, params: Sequence[str], snap: Snapshot, key_base: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in params:
        type_, range_, unit, text = _LEVEL[p]
        node = _method(
            f"{base}/{p}",
            type_,
            3,
            text,
            value=snap.values.get(f"{key_base}/{p}"),
            range_=range_,
            unit=unit,
        )
        parent, _, leaf = p.rpartition("/")
        if parent:  # filter/res: a node inside the filter's container
            out[parent]["CONTENTS"][leaf] = node
        elif p in _VALUE_LEAF:  # filter: a container, its value one level down
            node["FULL_PATH"] = f"{base}/{p}/{_VALUE_LEAF[p]}"
            out[p] = _container(f"{base}/{p}", text, {_VALUE_LEAF[p]: node})
        else:
            out[p] = node
    return out


def build(snap: Snapshot) -> dict[str, Any]:
    """The whole namespace, root node first (one JSON object)."""
    v = snap.values
    names = snap.names
    n = len(names)
    length = float((v.get("/transport/length") or [0.0])[0])
    seconds = {"MIN": 0.0, "MAX": length}

    labels = v.get("/channels/labels") or names
    channels: dict[str, Any] = {}
    for i, name in enumerate(names, 1):
        label = labels[i - 1] if len(labels) == n else name
        shown = f"{name!r}" if label == name else f"{name!r} ({label!r} in the track)"
        for token in (str(i), name):
            channels[token] = _container(
                f"/ch/{token}",
                f"channel {i}, {shown} (also /ch/{name if token == str(i) else i})",
                _strip(f"/ch/{token}", CHANNEL_PARAMS, snap, f"/ch/{i}"),
            )
    transport: dict[str, Any] = {
        verb: _method(f"/transport/{verb}", "", 0, text)
        for verb, text in (
            ("play", "play, fading in"),
            ("pause", "pause, fading out"),
            ("stop", "stop: fade out, rewind, clear the loop"),
            ("toggle", "pause if playing, else play"),
        )
    }
    position = v.get("/transport/position", [0.0])
    transport["seek"] = _method(
        "/transport/seek",
        "f",
        3,
        "jump to a time, with a 5 ms crossfade; a query answers the position",
        value=position,
        range_=[seconds],
        unit=["time.second"],
    )
    loop = {
        "region": _method(
            "/transport/loop/region",
            "ff",
            3,
            "loop region start, end (at least 20 ms); 0 0 when there is none "
            "(also /transport/loop)",
            value=v.get("/transport/loop"),
            range_=[seconds, seconds],
            unit=["time.second", "time.second"],
        ),
        "off": _method("/transport/loop/off", "", 0, "clear the loop region"),
        "beats": _method(
            "/transport/loop/beats",
            "f",
            2,
            "loop f beats (1/32..64): from the play head, or with quantize on from the "
            "grid point at or before it",
            range_=[{"MIN": MIN_LOOP_BEATS, "MAX": MAX_LOOP_BEATS}],
        ),
        "halve": _method("/transport/loop/halve", "", 0, "half the loop, its start kept"),
        "double": _method("/transport/loop/double", "", 0, "twice the loop, its start kept"),
    }
    transport["loop"] = _container("/transport/loop", "the loop region", loop)
    transport["beatjump"] = _method(
        "/transport/beatjump",
        "f",
        2,
        "move the play head f beats (negative: back), the loop with it",
        range_=[{"MIN": -MAX_BEATJUMP, "MAX": MAX_BEATJUMP}],
    )
    transport["roll"] = _method(
        "/transport/roll",
        "f",
        2,
        "a loop roll of f beats (1/32..64) while held; 0 ends it, back where the head "
        "would have been",
        range_=[{"MIN": 0.0, "MAX": MAX_LOOP_BEATS}],
    )
    transport["position"] = _method(
        "/transport/position",
        "f",
        1,
        "play head position",
        value=position,
        range_=[seconds],
        unit=["time.second"],
    )
    transport["playing"] = _method(
        "/transport/playing",
        "i",
        1,
        "1 while playing (not fading out to a pause or stop)",
        value=v.get("/transport/playing"),
        range_=[{"MIN": 0, "MAX": 1}],
    )
    transport["rate"] = _method(
        "/transport/rate",
        "f",
        3,
        "vinyl rate: speed and pitch together, gliding (1 the track's own speed)",
        value=v.get("/transport/rate", [1.0]),
        range_=[{"MIN": MIN_RATE, "MAX": MAX_RATE}],
    )
    transport["keylock"] = _method(
        "/transport/keylock",
        "i",
        3,
        "1: keylock, the rate changes the tempo and the pitch stays (one pitch shifter "
        "of the master, 24 ms of latency; 48 ms with serve --keylock-quality fine); 0: vinyl",
        value=v.get("/transport/keylock", [0]),
        range_=[{"MIN": 0, "MAX": 1}],
    )
    transport["pitch"] = _method(
        "/transport/pitch",
        "f",
        3,
        "pitch shift in semitones, keylock on or off (0: none)",
        value=v.get("/transport/pitch", [0.0]),
        range_=[{"MIN": -MAX_PITCH, "MAX": MAX_PITCH}],
    )
    transport["bpm"] = _method(
        "/transport/bpm",
        "f",
        3,
        "the tempo the track plays at: the beat grid's tempo times the rate (0.0: no grid "
        "yet); setting it sets the rate (0.5..2; vinyl: the pitch follows)",
        value=v.get("/transport/bpm", [0.0]),
    )
    transport["beat"] = _method(
        "/transport/beat",
        "f",
        1,
        "the play head's position on the beat grid, in beats from the first bar start "
        "(negative before it; VALUE 0.0 with no grid); streamed with the position while "
        "there is a grid",
        value=v.get("/transport/beat", [0.0]),
    )
    transport["length"] = _method(
        "/transport/length",
        "f",
        1,
        "length of the track",
        value=[length],
        unit=["time.second"],
    )
    sync = {
        "source": _method(
            "/sync/source",
            "s",
            3,
            "who leads the play head: off, jack (the JACK transport; serve --audio jack), "
            "midi (a MIDI clock; serve --sync-midi PORT) or link (an Ableton Link session; "
            "pip install 'stemdeck[link]'); the status says the leader's tempo and the "
            "phase error",
            value=v.get("/sync/source"),
            range_=[{"VALS": ["off", "jack", "midi", "link"]}],
        ),
        "anchor": _method(
            "/sync/anchor",
            "f",
            3,
            "the second of the track at the session's frame 0 (a JACK timebase's "
            "or a MIDI clock's bar 1)",
            value=v.get("/sync/anchor"),
            unit=["time.second"],
        ),
        "tempo": _method(
            "/sync/tempo",
            "f",
            1,
            "the leader's tempo in BPM: the JACK timebase master's under jack, the Link "
            "session's under link, else the MIDI clock's (0 while none is heard)",
            value=v.get("/sync/tempo", [0.0]),
        ),
        "phase": _method(
            "/sync/phase",
            "f",
            1,
            "how far the play head is ahead of the leader, in ms (0 while not following)",
            value=v.get("/sync/phase", [0.0]),
        ),
        "peers": _method(
            "/sync/peers",
            "i",
            1,
            "the Link session's peers (0 without one)",
            value=v.get("/sync/peers", [0]),
        ),
    }
    track = {
        "load": _method(
            "/track/load",
            "s",
            2,
            "load a track from a --library folder (/track/list); the last request wins",
            range_=[{"VALS": list(snap.tracks)}] if snap.tracks else None,
        ),
        "name": _method("/track/name", "s", 1, "the track playing", value=v.get("/track/name")),
        "progress": _method(
            "/track/progress",
            "sf",
            1,
            "separation stage and fraction done ('stems' and the share of chunks ready while "
            "the stems play as they are separated; 'ready' 1 when the channels play)",
            value=v.get("/track/progress"),
            range_=[None, {"MIN": 0.0, "MAX": 1.0}],
        ),
        "bpm": _method(
            "/track/bpm",
            "f",
            3,
            "the beat grid's tempo (0.0: no grid yet); setting it keeps the bar start "
            "nearest the play head in place, and is stored with the track",
            value=v.get("/track/bpm"),
            range_=[{"MIN": BPM_LIMITS[0], "MAX": BPM_LIMITS[1]}],
        ),
        "key": _method(
            "/track/key",
            "s",
            1,
            "the musical key ('' while unknown: not estimated yet)",
            value=v.get("/track/key"),
        ),
        "grid": _container(
            "/track/grid",
            "the beat grid and its edits (each stored with the track, answered with /track/grid)",
            {
                "current": _method(
                    GRID_VALUE,
                    "ffi",
                    1,
                    "bpm, first downbeat (s), beats per bar (0.0 0.0 0: no grid yet; "
                    "also /track/grid)",
                    value=v.get("/track/grid"),
                    unit=["", "time.second", ""],
                ),
                "halve": _method("/track/grid/halve", "", 0, "half the tempo"),
                "double": _method("/track/grid/double", "", 0, "twice the tempo"),
                "shift": _method(
                    "/track/grid/shift",
                    "f",
                    2,
                    "move the grid later by f ms (earlier if negative)",
                    range_=[{"MIN": -MAX_SHIFT_MS, "MAX": MAX_SHIFT_MS}],
                ),
                "downbeat": _method(
                    "/track/grid/downbeat",
                    "f",
                    2,
                    "a bar starts at f seconds (optional; default the play head)",
                    range_=[seconds],
                    unit=["time.second"],
                ),
                "tap": _method(
                    "/track/grid/tap",
                    "",
                    0,
                    "tap tempo: from three taps that agree, the tempo is the tapped one",
                ),
                "reset": _method(
                    "/track/grid/reset", "", 0, "drop the edits: the analysis's grid again"
                ),
            },
        ),
        "list": _method(
            "/track/list",
            "s" * len(snap.tracks),
            1,
            "the tracks /track/load can open",
            value=snap.tracks,
        ),
    }
    scene = {
        "save": _method("/scene/save", "s", 2, "save every value as a scene"),
        "recall": _method(
            "/scene/recall",
            "sf",
            2,
            "recall a scene, morphing over f seconds (optional, 0..600)",
            range_=[{"VALS": list(snap.scenes)}, {"MIN": 0.0, "MAX": 600.0}],
            unit=["", "time.second"],
        ),
        "list": _method(
            "/scene/list",
            "s" * len(snap.scenes),
            1,
            "saved and shipped scenes",
            value=snap.scenes,
        ),
    }
    meter_range = [{"MIN": METER_FLOOR_DB, "MAX": 0.0}] * (n + 1)
    silent = [METER_FLOOR_DB] * (n + 1)  # before the first feedback round
    meter = {
        "peak": _method(
            "/meter/peak",
            "f" * (n + 1),
            1,
            "peak dBFS of every channel (what it sends to the master) then the master, "
            "about 25 a second (LISTEN; /meter over UDP with /subscribe)",
            value=snap.peak_db or silent,
            range_=meter_range,
            unit=["gain.db"] * (n + 1),
        ),
        "rms": _method(
            "/meter/rms",
            "f" * (n + 1),
            1,
            "RMS dBFS of every channel then the master, about 25 a second (LISTEN)",
            value=snap.rms_db or silent,
            range_=meter_range,
            unit=["gain.db"] * (n + 1),
        ),
    }
    chan = {
        "names": _method(
            "/channels/names",
            "s" * n,
            1,
            "channel names, in index order (also /channels)",
            value=names,
        )
    }
    chan["labels"] = _method(
        "/channels/labels",
        "s" * n,
        1,
        "channel labels to show, in index order: a stem file's own stem names "
        "('Vox' for /ch/vocals), else the names",
        value=list(labels) if len(labels) == n else names,
    )
    colours = v.get("/channels/colors")
    if colours is not None:
        chan["colors"] = _method(
            "/channels/colors",
            "s" * n,
            1,
            "channel colours, #RRGGBB",
            value=colours,
        )
    contents: dict[str, Any] = {
        "ch": _container("/ch", "channels, by index and by name", channels),
        "master": _container(
            "/master", "master bus", _strip("/master", MASTER_PARAMS, snap, "/master")
        ),
        "fx": _container(
            "/fx",
            "the FX buses",
            {
                "echo": _bus("echo", "the echo bus: every channel's echo send", _ECHO, snap),
                "reverb": _bus(
                    "reverb", "the reverb bus: every channel's reverb send", _REVERB, snap
                ),
            },
        ),
        "transport": _container("/transport", "transport", transport),
        "sync": _container("/sync", "who leads the play head", sync),
        "cue": _container(
            "/cue",
            "hot cues 1 to 8, stored with the track (docs/quantize.md)",
            {str(n): _cue_node(n, v) for n in range(1, MAX_CUES + 1)},
        ),
        "quantize": _method(
            "/quantize",
            "s",
            3,
            "when mutes, solos and scene recalls act: off (at once), beat, bar, or a "
            "number of beats as a string (1/32..64): on the next grid point",
            value=v.get("/quantize", ["off"]),
            range_=[{"VALS": ["off", "beat", "bar", "0.25", "0.5", "1", "2", "4", "8"]}],
        ),
        "track": _container("/track", "the track", track),
        "scene": _container("/scene", "scenes (snapshots of every level)", scene),
        "channels": _container("/channels", "the channels", chan),
        "meter": _container("/meter", "levels", meter),
        "state": _method("/state", "", 0, "replies every value, one message each, then /state/end"),
        "subscribe": _method(
            "/subscribe",
            "isf",
            2,
            "UDP feedback to (your host, port) for 10 s or f seconds (0: until "
            "/unsubscribe): [i port] [s 'names'|'index'] [f seconds], each optional",
        ),
        "unsubscribe": _method("/unsubscribe", "i", 2, "stop UDP feedback: [i port], optional"),
        "ping": _method("/ping", "", 0, "replies /pong"),
        "status": _method("/status", "s", 1, "the status line", value=[snap.status]),
        "midi": _container(
            "/midi",
            "MIDI",
            {
                "learn": _method(
                    "/midi/learn", "s", 2, "bind the next moved MIDI control to an address"
                )
            },
        ),
    }
    return _container("/", "stemdeck: live stem mixer", contents)


def find(root: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The node at an OSC path (``/``, ``/ch/bass``, ``/ch/2/fader``), or None."""
    node = root
    for part in (p for p in path.split("/") if p):
        contents = node.get("CONTENTS")
        if contents is None or part not in contents:
            return None
        node = contents[part]
    return node
