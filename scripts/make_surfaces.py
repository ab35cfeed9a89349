#!/usr/bin/env python3
"""Write the shipped control-surface layouts from one table of controls.

    .venv/bin/python scripts/make_surfaces.py           # rewrite presets/surfaces/
    .venv/bin/python scripts/make_surfaces.py --check   # exit 1 if a file is stale

Both layouts carry the same controls (:data:`CONTROLS`): for each stem, in the order
NI Stems, MUSDB18 and Demucs share (drums, bass, other, vocals), a fader
``/ch/NAME/fader`` 0..1, a pan ``/ch/NAME/pan`` -1..1 and mute and solo toggles; the
master fader and mute; transport buttons that send 1 on press and 0 on release
(``/transport/toggle``, ``/play``, ``/stop``); and one button for each shipped scene
(``/scene/recall s NAME``, on press only). On load each layout asks for feedback until
the daemon stops: ``/subscribe 9001 names 0`` (:data:`FEEDBACK_PORT`, the port the
surface listens on; docs/surfaces.md).

- ``presets/surfaces/stemdeck.tosc``: TouchOSC (the current app, not Mk1): a
  zlib-compressed XML document ``<lexml version='3'>`` of nodes, each with its
  ``properties``, ``values``, ``messages`` and ``children``, written exactly as the
  TouchOSC editor writes them (properties sorted by key, single-quoted attributes,
  CDATA text). The subscription is the root's Lua ``init()``.
- ``presets/surfaces/stemdeck-open-stage-control.json``: an Open Stage Control 1.x
  session (``createdWith``, ``version``, ``type``, ``content``), every widget with the
  properties its class declares, in their order. The subscription is the root's
  ``onCreate`` script.

The generated files are committed; ``tests/presets/test_surfaces.py`` checks that they
equal what this script writes now, and replays every control's messages against the
daemon.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stemdeck.core.audiofile.manifest import NI_STEMS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "presets" / "surfaces"
TOUCHOSC_FILE = "stemdeck.tosc"
OPEN_STAGE_CONTROL_FILE = "stemdeck-open-stage-control.json"
#: The UDP port the surface receives feedback on (TouchOSC's receive port, Open Stage
#: Control's ``--osc-port``), named in the ``/subscribe`` each layout sends on load.
FEEDBACK_PORT = 9001
#: The Open Stage Control release whose session format is written (its ``version``):
#: the one the session was opened in (tests/presets/test_surfaces_e2e.py).
OPEN_STAGE_CONTROL_VERSION = "1.29.8"
SCENES = ("unity", "acapella", "instrumental")
#: A channel fader's position at unity gain (the console taper of docs/osc.md).
UNITY = 0.75

Kind = Literal["fader", "pan", "toggle", "push", "scene"]
Props = dict[str, Any]


@dataclass(frozen=True)
class Control:
    """One control of both layouts.

    ``kind`` says what it sends: ``fader`` f 0..1, ``pan`` f -1..1, ``toggle`` i 1 / i 0,
    ``push`` i 1 on press and i 0 on release, ``scene`` s ``scene`` on press only.
    ``strip`` is the column it sits in (a stem or ``master``), or ``""`` for the
    buttons below the strips.
    """

    name: str
    kind: Kind
    address: str
    label: str
    strip: str = ""
    colour: str = ""
    scene: str = ""


def _controls() -> tuple[Control, ...]:
    out: list[Control] = []
    for stem, colour in NI_STEMS:
        ch = f"/ch/{stem}"
        out += [
            Control(f"{stem}_pan", "pan", f"{ch}/pan", "pan", stem, colour),
            Control(f"{stem}_fader", "fader", f"{ch}/fader", stem, stem, colour),
            Control(f"{stem}_mute", "toggle", f"{ch}/mute", "mute", stem, colour),
            Control(f"{stem}_solo", "toggle", f"{ch}/solo", "solo", stem, colour),
        ]
    out += [
        Control("master_fader", "fader", "/master/fader", "master", "master"),
        Control("master_mute", "toggle", "/master/mute", "mute", "master"),
        Control("transport_toggle", "push", "/transport/toggle", "play/pause"),
        Control("transport_play", "push", "/transport/play", "play"),
        Control("transport_stop", "push", "/transport/stop", "stop"),
    ]
    out += [Control(f"scene_{s}", "scene", "/scene/recall", s, scene=s) for s in SCENES]
    return tuple(out)


#: Every control of both layouts, strips left to right, then the buttons.
CONTROLS = _controls()
STRIPS = (*(stem for stem, _ in NI_STEMS), "master")


def _rgb(colour: str) -> tuple[float, float, float]:
    """``#RRGGBB`` as three fractions 0..1 (rounded: the files stay short and stable)."""
    value = colour.lstrip("#") if colour else "808080"
    r, g, b = (round(int(value[i : i + 2], 16) / 255, 4) for i in (0, 2, 4))
    return r, g, b


def _id(name: str) -> str:
    """A node's ID: the same for the same control in every run (the files never drift)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stemdeck:surface:{name}"))


# -- TouchOSC ---------------------------------------------------------------------------
TOSC_WIDTH, TOSC_HEIGHT = 1024, 768
_MARGIN = 12


def _num(value: float) -> str:
    """A number as TouchOSC writes it: ``1``, ``0``, ``0.75``."""
    return f"{value:.6g}"


def _cdata(text: str) -> str:
    return f"<![CDATA[{text}]]>"


def _prop(kind: str, key: str, value: Any) -> tuple[str, str]:
    """One ``<property>`` (its key, for sorting, and its XML)."""
    if kind == "c":
        r, g, b, a = value
        body = f"<r>{_num(r)}</r><g>{_num(g)}</g><b>{_num(b)}</b><a>{_num(a)}</a>"
    elif kind == "r":
        x, y, w, h = value
        body = f"<x>{x}</x><y>{y}</y><w>{w}</w><h>{h}</h>"
    elif kind == "s":
        body = _cdata(value)
    elif kind == "b":
        body = "1" if value else "0"
    else:
        body = _num(value)
    return key, (
        f"<property type='{kind}'><key>{_cdata(key)}</key><value>{body}</value></property>"
    )


def _value(key: str, default: str, *, locked_default_current: int = 0) -> str:
    return (
        f"<value><key>{_cdata(key)}</key><locked>0</locked>"
        f"<lockedDefaultCurrent>{locked_default_current}</lockedDefaultCurrent>"
        f"<default>{_cdata(default)}</default><defaultPull>0</defaultPull></value>"
    )


_TOUCH = _value("touch", "false")


def _common(name: str, frame: tuple[int, int, int, int], colour: tuple[float, ...]) -> list:
    """The properties every node has."""
    return [
        _prop("b", "background", True),
        _prop("c", "color", colour),
        _prop("f", "cornerRadius", 1),
        _prop("r", "frame", frame),
        _prop("b", "grabFocus", True),
        _prop("b", "interactive", True),
        _prop("b", "locked", False),
        _prop("s", "name", name),
        _prop("i", "orientation", 0),
        _prop("b", "outline", True),
        _prop("i", "outlineStyle", 1),
        _prop("i", "pointerPriority", 0),
        _prop("i", "shape", 1),
        _prop("b", "visible", True),
    ]


def _properties(props: list[tuple[str, str]], **override: tuple[str, str]) -> str:
    """``<properties>``, sorted by key as TouchOSC writes them; ``override`` replaces
    a common property by key."""
    merged = {key: xml for key, xml in props}
    merged.update({key: xml for key, xml in override.values()})
    return "<properties>" + "".join(merged[k] for k in sorted(merged)) + "</properties>"


def _partial(kind: str, conversion: str, value: str, lo: float = 0, hi: float = 1) -> str:
    return (
        f"<partial><type>{kind}</type><conversion>{conversion}</conversion>"
        f"<value>{_cdata(value)}</value><scaleMin>{_num(lo)}</scaleMin>"
        f"<scaleMax>{_num(hi)}</scaleMax></partial>"
    )


def _osc(control: Control) -> str:
    """The control's one OSC message: when it is sent (``triggers``), its path and its
    arguments (the control's value ``x`` scaled, or a constant)."""
    if control.kind == "scene":
        condition, receive = "RISE", False  # a press recalls; the release sends nothing
        argument = _partial("CONSTANT", "STRING", control.scene)
    elif control.kind == "pan":
        condition, receive = "ANY", True
        argument = _partial("VALUE", "FLOAT", "x", -1, 1)
    elif control.kind == "fader":
        condition, receive = "ANY", True
        argument = _partial("VALUE", "FLOAT", "x")
    else:  # toggle, push: 1 on, 0 off (a push button's release: the daemon ignores it)
        condition, receive = "ANY", control.kind == "toggle"
        argument = _partial("VALUE", "INTEGER", "x")
    return (
        "<osc><enabled>1</enabled><send>1</send>"
        f"<receive>{int(receive)}</receive><feedback>0</feedback>"
        "<connections>00001</connections><triggers><trigger>"
        f"<var>{_cdata('x')}</var><condition>{condition}</condition></trigger></triggers>"
        f"<path>{_partial('CONSTANT', 'STRING', control.address)}</path>"
        f"<arguments>{argument}</arguments></osc>"
    )


def _node(name: str, kind: str, properties: str, values: str, rest: str = "") -> str:
    return (
        f"<node ID='{_id(name)}' type='{kind}'>{properties}<values>{values}</values>{rest}</node>"
    )


def _label(name: str, text: str, frame: tuple[int, int, int, int], size: int) -> str:
    props = [
        *_common(name, frame, (0, 0, 0, 0)),
        _prop("i", "font", 0),
        _prop("i", "textAlignH", 2),
        _prop("i", "textAlignV", 2),
        _prop("b", "textClip", True),
        _prop("c", "textColor", (1, 1, 1, 1)),
        _prop("i", "textLength", 0),
        _prop("i", "textSize", size),
    ]
    properties = _properties(
        props,
        background=_prop("b", "background", False),
        interactive=_prop("b", "interactive", False),
        outline=_prop("b", "outline", False),
    )
    values = _value("text", text, locked_default_current=1) + _TOUCH
    return _node(name, "LABEL", properties, values)


def _tosc_control(control: Control, frame: tuple[int, int, int, int]) -> Iterator[str]:
    colour = (*_rgb(control.colour), 1.0)
    messages = f"<messages>{_osc(control)}</messages>"
    if control.kind == "fader":
        props = [
            *_common(control.name, frame, colour),
            _prop("b", "bar", True),
            _prop("i", "barDisplay", 0),
            _prop("b", "cursor", True),
            _prop("i", "cursorDisplay", 0),
            _prop("b", "grid", True),
            _prop("i", "gridSteps", 8),
            _prop("i", "response", 0),
            _prop("i", "responseFactor", 100),
        ]
        values = _TOUCH + _value("x", _num(UNITY))
        yield _node(control.name, "FADER", _properties(props), values, messages)
        return
    if control.kind == "pan":
        props = [
            *_common(control.name, frame, colour),
            _prop("b", "centered", True),
            _prop("b", "grid", False),
            _prop("i", "gridSteps", 10),
            _prop("b", "inverted", False),
            _prop("i", "response", 0),
            _prop("i", "responseFactor", 100),
        ]
        properties = _properties(props, shape=_prop("i", "shape", 2))
        values = _TOUCH + _value("x", _num(0.5))
        yield _node(control.name, "RADIAL", properties, values, messages)
        yield _label(f"{control.name}_label", control.label, frame, 14)
        return
    # BUTTON buttonType: 0 momentary (1 while held), 2 toggle on press.
    props = [
        *_common(control.name, frame, colour),
        _prop("i", "buttonType", 2 if control.kind == "toggle" else 0),
        _prop("b", "press", True),
        _prop("b", "release", True),
        _prop("b", "valuePosition", False),
    ]
    values = _TOUCH + _value("x", "0")
    yield _node(control.name, "BUTTON", _properties(props), values, messages)
    yield _label(f"{control.name}_label", control.label, frame, 18)


def _tosc_frames() -> Iterator[tuple[Control, tuple[int, int, int, int]]]:
    """Each control's frame: five strips side by side, the buttons in a row below."""
    width = (TOSC_WIDTH - _MARGIN * (len(STRIPS) + 1)) // len(STRIPS)
    rows = {"pan": (60, 90), "fader": (160, 390), "mute": (560, 60), "solo": (630, 60)}
    for control in CONTROLS:
        if control.strip:
            x = _MARGIN + STRIPS.index(control.strip) * (width + _MARGIN)
            row = control.kind if control.kind in ("pan", "fader") else control.label
            y, h = rows[row]
            yield control, (x, y, width, h)
    buttons = [c for c in CONTROLS if not c.strip]
    bwidth = (TOSC_WIDTH - _MARGIN * (len(buttons) + 1)) // len(buttons)
    for i, control in enumerate(buttons):
        yield control, (_MARGIN + i * (bwidth + _MARGIN), 700, bwidth, 56)


def _lua_subscribe() -> str:
    """The root's script: one ``/subscribe PORT names 0`` when the layout loads (typed
    arguments: a Lua number alone would be sent as a float, and the port is an int)."""
    return (
        "-- stemdeck: feedback to this device until the daemon stops (docs/surfaces.md)\n"
        "function init()\n"
        f"  sendOSC({{'/subscribe', {{{{tag = 'i', value = {FEEDBACK_PORT}}}, "
        "{tag = 's', value = 'names'}, {tag = 'i', value = 0}}})\n"
        "end\n"
    )


def touchosc_xml() -> str:
    """The TouchOSC document (uncompressed)."""
    children: list[str] = []
    width = (TOSC_WIDTH - _MARGIN * (len(STRIPS) + 1)) // len(STRIPS)
    for i, strip in enumerate(STRIPS):
        x = _MARGIN + i * (width + _MARGIN)
        children.append(_label(f"{strip}_name", strip, (x, 12, width, 40), 20))
    for control, frame in _tosc_frames():
        children.extend(_tosc_control(control, frame))
    props = [
        *_common("stemdeck", (0, 0, TOSC_WIDTH, TOSC_HEIGHT), (0, 0, 0, 1)),
        _prop("s", "script", _lua_subscribe()),
    ]
    properties = _properties(
        props,
        grabFocus=_prop("b", "grabFocus", False),
        interactive=_prop("b", "interactive", False),
        outlineStyle=_prop("i", "outlineStyle", 0),
    )
    root = _node(
        "root", "GROUP", properties, _TOUCH, "<children>" + "".join(children) + "</children>"
    )
    return f"<?xml version='1.0' encoding='UTF-8'?><lexml version='3'>{root}</lexml>"


def touchosc_file() -> bytes:
    """``stemdeck.tosc``: the document, zlib-compressed as TouchOSC stores it."""
    return zlib.compress(touchosc_xml().encode("utf-8"), 6)


# -- Open Stage Control -------------------------------------------------------------------
# Each widget class's properties in the order the class declares them (its defaults,
# category by category: widget, geometry, style, class-specific, value, osc, scripting).
_WIDGET: Props = {"lock": False, "id": "", "visible": True, "interaction": True, "comments": ""}
_GEOMETRY: Props = {
    "left": "auto",
    "top": "auto",
    "width": "auto",
    "height": "auto",
    "expand": False,
}
_STYLE: Props = {
    "colorText": "auto",
    "colorWidget": "auto",
    "colorStroke": "auto",
    "colorFill": "auto",
    "alphaStroke": "auto",
    "alphaFillOff": "auto",
    "alphaFillOn": "auto",
    "lineWidth": "auto",
    "borderRadius": "auto",
    "padding": "auto",
    "html": "",
    "css": "",
}
_VALUE: Props = {"value": "", "default": "", "linkId": ""}
_OSC: Props = {
    "address": "auto",
    "preArgs": "",
    "typeTags": "",
    "decimals": 2,
    "target": "",
    "ignoreDefaults": False,
    "bypass": False,
}
_SCRIPTING: Props = {"onCreate": "", "onValue": ""}
_PANEL_STYLE: Props = {
    "colorBg": "auto",
    "layout": "default",
    "justify": "start",
    "gridTemplate": "",
    "contain": True,
    "scroll": True,
    "innerPadding": True,
    "tabsPosition": "top",
}


def _widget(kind: str, sections: list[Props], **values: Any) -> Props:
    """A widget: ``type`` first (as the editor saves it), then its class's properties
    in order, with ``values`` set."""
    out: Props = {"type": kind}
    for section in sections:
        out.update(section)
    unknown = set(values) - set(out)
    if unknown:
        raise KeyError(f"{kind} has no properties {sorted(unknown)}")
    out.update(values)
    return out


def _fader(**values: Any) -> Props:
    style: Props = {
        **_STYLE,
        "design": "default",
        "knobSize": "auto",
        "colorKnob": "auto",
        "horizontal": False,
        "pips": False,
        "dashed": False,
        "gradient": [],
    }
    specific: Props = {
        "snap": False,
        "touchZone": "all",
        "spring": False,
        "doubleTap": False,
        "range": {"min": 0, "max": 1},
        "logScale": False,
        "sensitivity": 1,
        "steps": "",
        "origin": "auto",
    }
    scripting: Props = {**_SCRIPTING, "onTouch": ""}
    sections = [_WIDGET, _GEOMETRY, style, specific, _VALUE, _OSC, scripting]
    return _widget("fader", sections, **values)


def _button(**values: Any) -> Props:
    style: Props = {
        **_STYLE,
        "colorTextOn": "auto",
        "label": "auto",
        "vertical": False,
        "wrap": False,
    }
    specific: Props = {"on": 1, "off": 0, "mode": "toggle", "doubleTap": False, "decoupled": False}
    sections = [_WIDGET, _GEOMETRY, style, specific, _VALUE, _OSC, _SCRIPTING]
    return _widget("button", sections, **values)


def _text(**values: Any) -> Props:
    widget: Props = {**_WIDGET, "interaction": False}
    style: Props = {**_STYLE, "vertical": False, "wrap": False, "align": "center"}
    osc: Props = {k: v for k, v in _OSC.items() if k not in ("typeTags", "ignoreDefaults")}
    return _widget("text", [widget, _GEOMETRY, style, _VALUE, osc, _SCRIPTING], **values)


def _panel(**values: Any) -> Props:
    specific: Props = {"variables": "@{parent.variables}", "traversing": False}
    scripting: Props = {**_SCRIPTING, "onTouch": ""}
    children: Props = {"widgets": [], "tabs": []}
    sections = [_WIDGET, _GEOMETRY, {**_STYLE, **_PANEL_STYLE}, specific, _VALUE, _OSC]
    return _widget("panel", [*sections, scripting, children], **values)


def _root(**values: Any) -> Props:
    geometry: Props = {k: v for k, v in _GEOMETRY.items() if k not in ("left", "top", "expand")}
    dropped = ("colorFill", "colorStroke", "alphaStroke", "alphaFillOff", "lineWidth")
    style: Props = {k: v for k, v in _STYLE.items() if k not in dropped}
    style = {**style, **_PANEL_STYLE, "hideMenu": False}
    specific: Props = {"variables": "@{parent.variables}", "traversing": False}
    scripting: Props = {**_SCRIPTING, "onTouch": "", "onPreload": ""}
    children: Props = {"widgets": [], "tabs": []}
    sections = [_WIDGET, geometry, style, specific, _VALUE, _OSC, scripting, children]
    return _widget("root", sections, **values)


def _osc_control(control: Control) -> Props:
    colour = control.colour or "auto"
    common = {"id": control.name, "address": control.address, "colorWidget": colour}
    if control.kind == "fader":
        # A double tap puts the fader back at unity.
        return _fader(
            **common, expand=True, doubleTap=True, default=UNITY, typeTags="f", decimals=3
        )
    if control.kind == "pan":
        return _fader(
            **common,
            height=60,
            horizontal=True,
            doubleTap=True,
            range={"min": -1, "max": 1},
            origin=0,
            default=0,
            typeTags="f",
            decimals=3,
            html=f"<label>{control.label}</label>",
        )
    if control.kind == "scene":
        # tap: a press sends `on` (the scene's name), a release nothing.
        return _button(
            **common,
            expand=True,
            label=control.label,
            on=control.scene,
            mode="tap",
            typeTags="s",
            decimals=0,
        )
    mode = "toggle" if control.kind == "toggle" else "push"  # push: 1 pressed, 0 released
    size = {"height": 60} if control.strip else {"expand": True}
    return _button(**common, **size, label=control.label, mode=mode, typeTags="i", decimals=0)


def _value_queries() -> list[str]:
    """One pattern query per strip for the values its widgets show, by name
    (``/ch/vocals/{pan,fader,mute,solo}``): one per strip, not one for all, as the
    replies to a datagram may be at most 4 bytes per byte sent plus 96 (docs/osc.md)."""
    out = []
    for strip in STRIPS:
        addresses = [c.address for c in CONTROLS if c.strip == strip]
        prefix = addresses[0].rsplit("/", 1)[0]
        assert all(a.rsplit("/", 1)[0] == prefix for a in addresses), addresses
        out.append(prefix + "/{" + ",".join(a.rsplit("/", 1)[1] for a in addresses) + "}")
    return out


def _osc_on_create() -> str:
    """The root's ``onCreate``, run by every client that opens the page: subscribe,
    then ask for the current values. Only a new subscriber is sent the full state; a
    renewal (a second page, a reload, Open Stage Control restarted) is not, so without
    the queries its widgets would show their defaults. The replies go to the sender,
    Open Stage Control's ``--osc-port``, and from there to every client's widgets."""
    lines = [
        "// stemdeck: feedback to this client until the daemon stops (docs/surfaces.md)",
        f"send('/subscribe', {{type: 'i', value: {FEEDBACK_PORT}}}, 'names', "
        "{type: 'i', value: 0})",
        "// the values now: a renewed subscription brings no full state",
        *(f"send('{query}')" for query in _value_queries()),
    ]
    return "\n".join(lines) + "\n"


def open_stage_control_session() -> str:
    """The Open Stage Control session, as the app saves it (two-space JSON)."""
    strips = []
    for strip in STRIPS:
        colour = next((c.colour for c in CONTROLS if c.strip == strip and c.colour), "auto")
        widgets = [_text(id=f"{strip}_name", height=40, default=strip, colorWidget=colour)]
        widgets += [_osc_control(c) for c in CONTROLS if c.strip == strip]
        strips.append(_panel(id=f"{strip}_strip", expand=True, layout="vertical", widgets=widgets))
    # The buttons three to a row: six in one row clip "play/pause" and "instrumental"
    # on a phone held upright.
    buttons = [_osc_control(c) for c in CONTROLS if not c.strip]
    content = _root(
        id="root",
        layout="vertical",
        onCreate=_osc_on_create(),
        widgets=[
            _panel(id="strips", expand=True, layout="horizontal", widgets=strips),
            _panel(id="buttons", height=140, layout="grid", gridTemplate=3, widgets=buttons),
        ],
    )
    session = {
        "createdWith": "Open Stage Control",
        "version": OPEN_STAGE_CONTROL_VERSION,
        "type": "session",
        "content": content,
    }
    return json.dumps(session, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, bytes]:
    """Each shipped file's name and content."""
    return {
        TOUCHOSC_FILE: touchosc_file(),
        OPEN_STAGE_CONTROL_FILE: open_stage_control_session().encode("utf-8"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, data in render().items():
        path = OUT / name
        if path.is_file() and path.read_bytes() == data:
            continue
        stale.append(name)
        if not args.check:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run scripts/make_surfaces.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
