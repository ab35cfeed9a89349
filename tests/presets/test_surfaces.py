"""The shipped surface layouts, replayed against the daemon (issue 26).

Each file in ``presets/surfaces/`` is read here with a parser of its own (zlib + XML for
TouchOSC, JSON for Open Stage Control), independent of ``scripts/make_surfaces.py``:
every control's OSC address and the values it sends (a fader's ends and default, a
button's press and release, a toggle's on and off) are sent to an in-process daemon,
which must answer exactly as the address space says and set exactly the value each
message names. The files must also equal what the script writes now.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from osc_host import FakeHost, make_server

from stemdeck.core.control.values import strip_value
from stemdeck.daemon.osc import Feedback, OscServer, Reply
from stemdeck.daemon.osc.wire import encode_message

ROOT = Path(__file__).resolve().parents[2]
STEMS = ("drums", "bass", "other", "vocals")  # NI Stems, MUSDB18 and Demucs share it
SCENES = {"unity", "acapella", "instrumental"}
FEEDBACK_PORT = 9001
SURFACE = ("127.0.0.1", FEEDBACK_PORT)  # the surface, as the daemon sees it
#: A fader position → the linear gain it sets (docs/osc.md: unity at 0.75, +10 dB at 1,
#: off at 0). Only the positions the layouts send are here: another one fails loudly.
FADER_GAIN = {0.0: 0.0, 0.75: 1.0, 1.0: 10 ** (10 / 20)}
ADDRESSES = {
    *(f"/ch/{s}/{k}" for s in STEMS for k in ("fader", "pan", "mute", "solo")),
    "/master/fader",
    "/master/mute",
    "/transport/toggle",
    "/transport/play",
    "/transport/stop",
    "/scene/recall",
}
#: The controls whose widgets follow the daemon's values (feedback, and on load).
FOLLOWS = {a for a in ADDRESSES if a.startswith(("/ch/", "/master/"))}


@dataclass(frozen=True)
class Sent:
    """What one gesture on one control sends: ``args`` is None when it sends nothing."""

    control: str
    gesture: str
    address: str
    args: tuple[Any, ...] | None


def shipped(name: str) -> bytes:
    """A file of the installed package data (``stemdeck.presets``)."""
    return resources.files("stemdeck.presets").joinpath("surfaces", name).read_bytes()


# -- TouchOSC -----------------------------------------------------------------------------
def _child(element: ElementTree.Element, tag: str) -> ElementTree.Element:
    found = element.find(tag)
    assert found is not None, f"<{element.tag}> has no <{tag}>"
    return found


def _convert(text: str, conversion: str) -> Any:
    return {"STRING": str, "INTEGER": int, "FLOAT": float}[conversion](text)


def _scaled(x: float, partial: ElementTree.Element) -> Any:
    lo, hi = float(partial.findtext("scaleMin", "")), float(partial.findtext("scaleMax", ""))
    value = lo + x * (hi - lo)
    conversion = partial.findtext("conversion", "")
    if conversion == "INTEGER":
        return round(value)
    if conversion == "BOOLEAN":
        return value != 0
    assert conversion == "FLOAT", conversion
    return value


def _partials(parent: ElementTree.Element, x: float, props: dict[str, str]) -> list[Any]:
    out: list[Any] = []
    for partial in parent.iterfind("partial"):
        kind, value = partial.findtext("type"), partial.findtext("value", "")
        conversion = partial.findtext("conversion", "")
        if kind == "CONSTANT":
            out.append(_convert(value, conversion))
        elif kind == "PROPERTY":
            out.append(_convert(props[value], conversion))
        elif kind == "VALUE":
            assert value == "x", value
            out.append(_scaled(x, partial))
        else:
            raise AssertionError(f"partial type {kind} is not replayed")
    return out


def touchosc_messages(data: bytes) -> tuple[list[Sent], str]:
    """Every control's gestures and what each sends; and the root's script."""
    root = ElementTree.fromstring(zlib.decompress(data))
    assert (root.tag, root.attrib) == ("lexml", {"version": "3"})
    [document] = list(root)
    sent: list[Sent] = []
    for node in document.iter("node"):
        props = {
            p.findtext("key", ""): p.findtext("value", "") for p in node.iterfind("properties/")
        }
        values = {v.findtext("key"): v.findtext("default", "") for v in node.iterfind("values/")}
        kind = node.get("type")
        if kind in ("FADER", "RADIAL"):
            # x runs 0..1 along the control; it starts at its default.
            gestures = [("min", 0.0, 0.0), ("max", 0.0, 1.0), ("default", 1.0, float(values["x"]))]
        elif kind == "BUTTON":
            # momentary (0): press and release; toggles (1, 2): on, then off.
            names = ("press", "release") if props["buttonType"] == "0" else ("on", "off")
            gestures = [(names[0], 0.0, 1.0), (names[1], 1.0, 0.0)]
        else:
            assert node.find("messages/osc") is None, kind
            continue
        for osc in node.iterfind("messages/osc"):
            if (osc.findtext("enabled"), osc.findtext("send")) != ("1", "1"):
                continue
            address = "".join(_partials(_child(osc, "path"), 0.0, props))
            conditions = {t.findtext("condition") for t in osc.iter("trigger")}
            assert {t.findtext("var") for t in osc.iter("trigger")} == {"x"}
            for gesture, before, x in gestures:
                fires = (
                    "ANY" in conditions
                    or ("RISE" in conditions and x > before)
                    or ("FALL" in conditions and x < before)
                )
                args = tuple(_partials(_child(osc, "arguments"), x, props)) if fires else None
                sent.append(Sent(props["name"], gesture, address, args))
    script = next(
        p.findtext("value", "")
        for p in document.iterfind("properties/")
        if p.findtext("key") == "script"
    )
    return sent, script


def lua_sendosc(script: str) -> tuple[str, tuple[Any, ...]]:
    """The one ``sendOSC({path, {{tag = 't', value = v}, ...}})`` of a Lua ``init()``."""
    assert re.search(r"^function init\(\)$", script, re.M), script
    [(path, body)] = re.findall(r"sendOSC\(\{'([^']*)', \{(.*)\}\}\)", script)
    args: list[Any] = []
    for tag, value in re.findall(r"\{tag = '(\w)', value = ([^}]*)\}", body):
        args.append(value.strip("'") if tag == "s" else {"i": int, "f": float}[tag](value))
    return path, tuple(args)


# -- Open Stage Control --------------------------------------------------------------------
def _typed(value: Any, tag: str) -> Any:
    return {"i": int, "f": float, "s": str}[tag](value)


def open_stage_control_messages(text: str) -> tuple[list[Sent], str]:
    """Every widget's gestures and what each sends; and the root's ``onCreate``."""
    session = json.loads(text)
    assert (session["createdWith"], session["type"]) == ("Open Stage Control", "session")
    assert re.fullmatch(r"1\.\d+\.\d+", session["version"]), session["version"]
    root = session["content"]
    assert root["type"] == "root"
    sent: list[Sent] = []

    def walk(widget: dict[str, Any]) -> None:
        for child in widget.get("widgets", []):
            walk(child)
        kind = widget["type"]
        if kind in ("root", "panel", "text"):
            return  # containers and labels send nothing
        address = widget["address"]
        if address == "auto":
            address = "/" + widget["id"]
        pre = widget["preArgs"] if isinstance(widget["preArgs"], list) else []
        pre += [] if widget["preArgs"] in ("", []) or pre else [widget["preArgs"]]
        tags = widget["typeTags"]

        def message(*values: Any) -> tuple[Any, ...]:
            out = [*pre, *values]
            return tuple(
                _typed(v, (tags[i] if i < len(tags) else tags[-1])) for i, v in enumerate(out)
            )

        if kind == "fader":
            lo, hi = widget["range"]["min"], widget["range"]["max"]
            for gesture, value in (("min", lo), ("max", hi), ("default", widget["default"])):
                sent.append(Sent(widget["id"], gesture, address, message(value)))
        elif kind == "button":
            mode = widget["mode"]
            gestures: list[tuple[str, tuple[Any, ...] | None]]
            on, off = widget["on"], widget["off"]
            if mode == "toggle":
                gestures = [("on", message(on)), ("off", message(off))]
            elif mode == "push":
                gestures = [("press", message(on)), ("release", message(off))]
            elif mode == "tap":
                gestures = [("press", message(on)), ("release", None)]
            else:
                assert mode == "momentary", mode
                gestures = [("press", tuple(pre)), ("release", None)]
            sent.extend(Sent(widget["id"], g, address, a) for g, a in gestures)
        else:
            raise AssertionError(f"widget type {kind} is not replayed")

    walk(root)
    return sent, root["onCreate"]


def js_sends(script: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every ``send(address, ...args)`` of an ``onCreate`` script, in order."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    for address, body in re.findall(r"^send\('([^']*)'(?:, (.*))?\)$", script, re.M):
        args: list[Any] = []
        for tag, typed, string in re.findall(r"\{type: '(\w)', value: ([^}]*)\}|'([^']*)'", body):
            args.append(_typed(typed, tag) if tag else string)
        out.append((address, tuple(args)))
    sends = [line for line in script.splitlines() if line.startswith("send(")]
    assert len(out) == len(sends), sends  # every send parsed
    return out


# -- the replay ------------------------------------------------------------------------------
@pytest.fixture
def daemon():
    host, server = make_server()
    replies: list[Reply] = []
    server.route(SURFACE, replies.extend)  # feedback to the surface, kept for the test
    yield host, server
    server.sock.close()


def _send(server: OscServer, host: FakeHost, address: str, args: tuple[Any, ...]) -> list[Reply]:
    replies = server.datagram(encode_message(address, list(args)), SURFACE)
    host.block()  # the engine takes what was posted
    return replies


def _playing(server: OscServer, host: FakeHost) -> int:
    [(address, [value])] = _send(server, host, "/transport/playing", ())
    assert address == "/transport/playing"
    return int(value)


def _strip(host: FakeHost, address: str) -> Any:
    parts = address.split("/")
    if parts[1] == "master":
        return host.registry.master
    return host.registry.strips[host.registry.names.index(parts[2])]


def replay(host: FakeHost, server: OscServer, sent: Sent) -> None:
    """Send one gesture's message; assert the exact reply and the value it set."""
    if sent.args is None:
        return  # nothing sent (a scene button's release): nothing to check at the daemon
    address, args = sent.address, sent.args
    before_playing = _playing(server, host)
    before_calls = list(host.calls)
    replies = _send(server, host, address, args)
    where = (sent.control, sent.gesture, address, args)
    if address == "/scene/recall":
        assert replies == [("/scene/recall", list(args))], where
        assert host.calls == [*before_calls, ("recall", (args[0], 0.0))], where
        return
    assert replies == [], where  # a value set, or a transport verb: no reply, no /error
    assert host.calls == before_calls, where
    if address.startswith("/transport/"):
        verb = address.rsplit("/", 1)[1]
        assert args in ((1,), (0,)), where
        if args == (0,):  # the release: nothing changes
            expected = before_playing
        else:
            expected = {"toggle": 1 - before_playing, "play": 1, "stop": 0}[verb]
        assert _playing(server, host) == expected, where
        if verb == "stop" and args == (1,):
            assert _send(server, host, "/transport/position", ()) == [
                ("/transport/position", [0.0])
            ]
        return
    [value] = args
    strip = _strip(host, address)
    key = address.rsplit("/", 1)[1]
    if key == "fader":
        assert strip.gain == pytest.approx(FADER_GAIN[value], rel=1e-12, abs=1e-12), where
    elif key == "pan":
        assert strip.pan == value, where
    else:
        assert isinstance(value, int) and value in (0, 1), where  # i 1 / i 0, not a float
        assert getattr(strip, key) is bool(value), where
    assert host.engine_state()[:5] == host.registry_as_engine()[:5], where  # what plays


def check_layout(sent: list[Sent]) -> None:
    """The controls a layout must have, in the stems' order, sending what they should."""
    assert {s.address for s in sent} == ADDRESSES
    faders = [s.address for s in sent if s.address.endswith("/fader") and s.gesture == "min"]
    assert faders == [*(f"/ch/{stem}/fader" for stem in STEMS), "/master/fader"]
    for s in sent:
        want: tuple[Any, ...] | None
        key = s.address.rsplit("/", 1)[1]
        if key == "fader":
            want = {"min": (0.0,), "max": (1.0,), "default": (0.75,)}[s.gesture]
        elif key == "pan":
            want = {"min": (-1.0,), "max": (1.0,), "default": (0.0,)}[s.gesture]
        elif key in ("mute", "solo"):
            want = {"on": (1,), "off": (0,)}[s.gesture]
        elif s.address.startswith("/transport/"):
            want = {"press": (1,), "release": (0,)}[s.gesture]  # press acts, release is ignored
        else:  # a scene: its name on press, nothing on release
            assert s.address == "/scene/recall", s
            scene = s.control.removeprefix("scene_")
            want = {"press": (scene,), "release": None}[s.gesture]
        assert s.args == want, s
        assert all(type(a) is type(w) for a, w in zip(s.args or (), want or (), strict=True)), s
    scenes = {s.args[0] for s in sent if s.address == "/scene/recall" and s.args}
    assert scenes == SCENES


def test_touchosc_layout_replays_against_the_daemon(daemon) -> None:
    host, server = daemon
    sent, script = touchosc_messages(shipped("stemdeck.tosc"))
    check_layout(sent)
    assert [s.gesture for s in sent if s.control == "scene_unity"] == ["press", "release"]
    assert [s.args for s in sent if s.control == "scene_unity"] == [("unity",), None]
    for message in sent:
        replay(host, server, message)
    # On load, the layout subscribes until the daemon stops.
    path, args = lua_sendosc(script)
    assert (path, args) == ("/subscribe", (FEEDBACK_PORT, "names", 0))
    assert _send(server, host, path, args) == [("/subscribe", [FEEDBACK_PORT, "names", 0])]
    assert server.control.subscribed() == [SURFACE]


def test_open_stage_control_session_replays_against_the_daemon(daemon) -> None:
    host, server = daemon
    sent, on_create = open_stage_control_messages(
        shipped("stemdeck-open-stage-control.json").decode("utf-8")
    )
    check_layout(sent)
    assert [s.args for s in sent if s.control == "scene_acapella"] == [("acapella",), None]
    for message in sent:
        replay(host, server, message)
    (address, args), *queries = js_sends(on_create)
    assert (address, args) == ("/subscribe", (FEEDBACK_PORT, "names", 0))
    assert _send(server, host, address, args) == [("/subscribe", [FEEDBACK_PORT, "names", 0])]
    assert server.control.subscribed() == [SURFACE]
    # Then it asks for the values its widgets show, by name: together, every control
    # that follows feedback, each answered once with the daemon's value.
    asked: list[str] = []
    for address, args in queries:
        assert args == (), address
        replies = _send(server, host, address, args)
        assert replies == [(a, [_value(host, a)]) for a, _ in replies], address
        assert all(type(v[0]) is type(_value(host, a)) for a, v in replies), replies
        asked += [a for a, _ in replies]
    assert sorted(asked) == sorted(FOLLOWS)


def _value(host: FakeHost, address: str) -> Any:
    """The value the daemon holds for a control (``/ch/NAME/KEY``, ``/master/KEY``),
    typed as its reply carries it."""
    return strip_value(_strip(host, address), address.rsplit("/", 1)[1])


def test_open_stage_control_session_shows_the_daemons_values_on_every_load(daemon) -> None:
    """A second page, a reload or Open Stage Control restarted renews the surface's
    subscription, and a renewal brings no full state (only a new subscriber gets one):
    the session must ask for the values itself, or its widgets show their defaults
    while the daemon plays other values (a fader then jumps from the wrong place)."""
    host, server = daemon
    _, on_create = open_stage_control_messages(
        shipped("stemdeck-open-stage-control.json").decode("utf-8")
    )
    elsewhere = ("127.0.0.1", 9)  # another client: the browser mixer, a MIDI map
    for address, value in (
        ("/ch/vocals/mute", 1),
        ("/ch/bass/fader", 0.0),
        ("/ch/drums/pan", -1.0),
        ("/master/fader", 1.0),
    ):
        assert server.datagram(encode_message(address, [value]), elsewhere) == []
    host.block()
    feedback = Feedback(server)
    for load in ("first", "second"):
        received: list[Reply] = []
        server.route(SURFACE, received.extend)
        for address, args in js_sends(on_create):
            received += _send(server, host, address, args)
        feedback.tick()  # a fresh subscriber's full state, or what changed since
        shown = dict(received)  # the last value each address got
        for address in sorted(FOLLOWS):
            assert shown.get(address) == [_value(host, address)], (load, address, shown)


def test_the_shipped_files_are_what_the_script_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """presets/surfaces/ cannot drift from scripts/make_surfaces.py's table."""
    spec = importlib.util.spec_from_file_location(
        "make_surfaces", ROOT / "scripts" / "make_surfaces.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    written = module.render()
    assert sorted(written) == ["stemdeck-open-stage-control.json", "stemdeck.tosc"]
    for name, data in written.items():
        assert shipped(name) == data, f"{name} is stale: run scripts/make_surfaces.py"
