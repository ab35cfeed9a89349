"""A grammar of stemdeck's OSC address space, for fuzzing (hypothesis strategies).

Datagrams are built from the address space (``Registry.addresses``, channel
names, the transport verbs and the other addresses of docs/osc.md) with valid
and invalid arguments, then often mutated the ways issue 9 found harmful. Each
datagram comes with its verdict as the generator knows it:

- ``"ok"``: well-formed and valid; no ``/error``, and a query is answered on the
  address as sent;
- ``"error"``: certainly bad; exactly one ``/error`` and nothing changes;
- ``"any"``: either (a mutation that may or may not leave a valid datagram, or a
  request a rate limit may refuse).

Used by ``tests/daemon/osc/test_osc_fuzz.py`` (a short, deterministic budget) and by
``bench/fuzz.py`` (long runs against a live daemon).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from hypothesis import strategies as st

from stemdeck.core.control.registry import (
    CHANNEL_PARAMS,
    ECHO_PARAMS,
    MASTER_PARAMS,
    REVERB_PARAMS,
)
from stemdeck.daemon.osc.wire import encode_bundle, encode_message, unix_to_timetag

NAMES = ("drums", "bass", "vocals", "other")
TRACK_SECONDS = 4.0  # the track the harness plays: loops must end inside it


@dataclass(frozen=True)
class Case:
    data: bytes
    verdict: str  # "ok", "error" or "any"
    query: str | None = None  # a plain query: the one reply comes on this address
    what: str = ""


def _f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def channel_token(names: tuple[str, ...] = NAMES) -> st.SearchStrategy[str]:
    n = len(names)
    return st.one_of(st.integers(1, n).map(str), st.sampled_from(names))


def channel_pattern(names: tuple[str, ...] = NAMES) -> st.SearchStrategy[str]:
    n = len(names)
    return st.one_of(
        st.just("*"),
        st.just("?"),
        st.integers(1, n).map(lambda i: f"[1-{i}]"),
        st.integers(1, n).map(lambda i: f"[!{i}]"),
        st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True).map(
            lambda xs: "{" + ",".join(xs) + "}"
        ),
        st.sampled_from(names).map(lambda s: s[:2] + "*"),
    )


def valid_value(param: str) -> st.SearchStrategy[object]:
    if param == "fader":
        return st.floats(0.0, 1.0, width=32)
    if param == "gain":
        return st.floats(0.0, 3.0, width=32)
    if param == "db":
        return st.one_of(st.floats(-120.0, 10.0, width=32), st.just(float("-inf")))
    if param in ("mute", "solo", "echo/pre"):
        return st.sampled_from([0, 1, True, False])
    if param in ("filter/res", "echo", "reverb"):
        return st.floats(0.0, 1.0, width=32)
    return st.floats(-1.0, 1.0, width=32)  # pan, filter


def bad_value(param: str) -> st.SearchStrategy[object]:
    if param in ("mute", "solo", "echo/pre"):
        return st.sampled_from([2, -1, 0.5, "on", float("nan")])
    high = {
        "fader": 1.0,
        "gain": 3.2,
        "db": 10.0,
        "pan": 1.0,
        "filter": 1.0,
        "filter/res": 1.0,
        "echo": 1.0,
        "reverb": 1.0,
    }[param]
    return st.one_of(
        st.just(float("nan")),
        st.floats(_f32(high + 0.01), _f32(1e30), width=32),
        st.just("loud"),
        st.just(float("inf")),
    )


@st.composite
def control_set(draw: st.DrawFn, names: tuple[str, ...] = NAMES) -> tuple[str, list, bool]:
    """(address, args, valid) for a control change, by index, name or pattern."""
    if draw(st.integers(0, 5)) == 0:  # the echo bus
        param = draw(st.sampled_from(ECHO_PARAMS))
        address = f"/fx/echo/{param}"
        low, high = {"ms": (1.0, 4000.0), "beats": (0.0625, 4.0), "filter": (-1.0, 1.0)}.get(
            param, (0.0, 1.0)
        )
        if draw(st.integers(0, 4)) == 0:
            bad = st.floats(_f32(high + 0.01), _f32(1e30), width=32)
            return address, [draw(st.one_of(st.just(float("nan")), bad, st.just("x")))], False
        return address, [draw(st.floats(low, high, width=32))], True
    if draw(st.integers(0, 5)) == 0:  # the reverb bus
        param = draw(st.sampled_from(REVERB_PARAMS))
        address = f"/fx/reverb/{param}"
        low, high = {"lowcut": (20.0, 1000.0)}.get(param, (0.0, 1.0))
        if draw(st.integers(0, 4)) == 0:
            bad = st.floats(_f32(high + 0.01), _f32(1e30), width=32)
            return address, [draw(st.one_of(st.just(float("nan")), bad, st.just("x")))], False
        return address, [draw(st.floats(low, high, width=32))], True
    if draw(st.booleans()):
        param = draw(st.sampled_from(CHANNEL_PARAMS))
        token = draw(st.one_of(channel_token(names), channel_pattern(names)))
        address = f"/ch/{token}/{param}"
    else:
        param = draw(st.sampled_from(MASTER_PARAMS))
        address = f"/master/{param}"
    if param == "gain" and draw(st.booleans()):
        return address, [draw(st.floats(0.0, 3.0, width=32))], True
    if draw(st.integers(0, 4)) == 0:
        return address, [draw(bad_value(param))], False
    return address, [draw(valid_value(param))], True


@st.composite
def query(draw: st.DrawFn, names: tuple[str, ...] = NAMES) -> tuple[str, bool]:
    """(address, is_pattern) of a control query."""
    param = draw(st.sampled_from(CHANNEL_PARAMS))
    if draw(st.booleans()):
        return f"/ch/{draw(channel_token(names))}/{param}", False
    return f"/ch/{draw(channel_pattern(names))}/{param}", True


@st.composite
def transport(draw: st.DrawFn) -> tuple[str, list, bool]:
    verb = draw(st.sampled_from(["play", "pause", "stop", "toggle", "seek", "loop", "loop/off"]))
    if verb == "seek":
        return "/transport/seek", [draw(st.floats(0.0, TRACK_SECONDS, width=32))], True
    if verb == "loop":
        start = draw(st.floats(0.0, TRACK_SECONDS / 2, width=32))
        end = draw(st.floats(_f32(TRACK_SECONDS / 2 + 0.1), TRACK_SECONDS, width=32))
        if draw(st.integers(0, 3)) == 0:
            return "/transport/loop", [start, draw(st.sampled_from([1e306, 1e9, -1.0]))], False
        return "/transport/loop", [start, end], True
    return f"/transport/{verb}", [], True


def _message_case(address: str, args: list, valid: bool, q: str | None = None) -> Case:
    return Case(encode_message(address, args), "ok" if valid else "error", q, address)


@st.composite
def valid_or_bad_message(draw: st.DrawFn, subscribe: bool = True) -> Case:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return _message_case(*draw(control_set()))
    if kind == 4:
        address, is_pat = draw(query())
        return Case(encode_message(address), "ok", None if is_pat else address, address)
    if kind == 5:
        return _message_case(*draw(transport()))
    if kind == 6:
        which = draw(st.sampled_from(["/ping", "/status", "/unsubscribe", "/state"]))
        extras: list[list[object]] = [[], [1, 2], ["x"], [0.5]]
        extra = draw(st.sampled_from(extras))
        if which == "/unsubscribe" and not subscribe:
            extra = [1, 2]
        if not extra:
            return Case(encode_message(which), "ok" if which == "/ping" else "any", None, which)
        return Case(encode_message(which, extra), "error", None, which)
    if kind == 7:
        # Unicode digits, malformed classes, long patterns.
        address = draw(
            st.sampled_from(
                [
                    "/ch/１/fader",
                    "/ch/١/gain",
                    "/ch/[]/mute",
                    "/ch/[!]/mute",
                    "/ch/[z-a]/mute",
                    "/ch/{a,b/mute",
                    "/ch/a]/mute",
                    "/ch/" + "*" * 300 + "/mute",
                    "/ch/***********/***********x",
                    "/nope",
                    "/ch/9/fader",
                ]
            )
        )
        return Case(encode_message(address, [1]), "error", None, address)
    if kind == 8 and subscribe:
        port = draw(st.integers(1024, 65535))
        return Case(encode_message("/subscribe", [port]), "any", None, "/subscribe")
    which = draw(st.sampled_from(["/scene/recall", "/track/load"]))
    return Case(encode_message(which, []), "error", None, which)


def _mutate(data: bytes, how: int, where: int, junk: bytes) -> tuple[bytes, str]:
    """A mutation of a message that is certainly malformed."""
    if how == 0:
        return data[: max(0, len(data) - 1 - where % 3)], "truncated off a 4-byte boundary"
    if how == 1:
        return data + (junk or b"\x01\x02\x03\x04")[:4].ljust(4, b"\x01"), "trailing garbage"
    comma = (data.index(b"\x00") + 4) & ~3  # the type tags follow the address
    if how == 2:
        tags_end = data.index(b"\x00", comma)
        letters = b"xyzgjkloquvwAEGHKLMOPQRUVWXYZ"
        pos = comma + 1 + where % max(1, tags_end - comma - 1)
        if pos >= tags_end:  # no tags yet: add an unknown one
            tags = data[comma:tags_end] + letters[where % len(letters) : where % len(letters) + 1]
            return data[:comma] + tags + b"\x00" * (4 - len(tags) % 4) + data[
                (tags_end + 4) & ~3 :
            ], "unknown type tag"
        b = bytearray(data)
        b[pos] = letters[where % len(letters)]
        return bytes(b), "unknown type tag"
    if how == 3:  # one more float tag than there is data
        tags_end = data.index(b"\x00", comma)
        tags = data[comma:tags_end] + b"f"
        return (
            data[:comma] + tags + b"\x00" * (4 - len(tags) % 4) + data[(tags_end + 4) & ~3 :],
            "missing argument",
        )
    if how == 4:  # non-zero padding after the address
        nul = data.index(b"\x00")
        stop = (nul + 4) & ~3
        if stop - nul > 1:
            b = bytearray(data)
            b[stop - 1] = 0x41
            return bytes(b), "padding not zero"
        return data[:-2], "truncated"
    size = [-4, 0, 0x7FFFFFFF, len(data) + 4, 3][where % 5]
    return (
        b"#bundle\x00" + struct.pack(">Qi", 1, size) + data,
        f"bundle element size {size}",
    )


@st.composite
def datagram(draw: st.DrawFn, subscribe: bool = True, future: bool = True) -> Case:
    """One datagram and its verdict. ``subscribe=False`` leaves out /subscribe (its
    feedback would mix with replies); ``future=False`` leaves out bundles for later."""
    shape = draw(st.integers(0, 10 if future else 9))
    if shape == 10:
        # A bundle for 30 s from now: validated now, all or nothing, no reply if good.
        parts = draw(st.lists(valid_or_bad_message(subscribe), min_size=1, max_size=4))
        parts = [p for p in parts if p.verdict != "any" and p.query is None]
        parts = parts or [_message_case("/ch/1/pan", [0.0], True)]
        verdict = "ok" if all(p.verdict == "ok" for p in parts) else "error"
        tag = unix_to_timetag(time.time() + 30)
        return Case(encode_bundle([p.data for p in parts], tag), verdict, None, "future bundle")
    if shape <= 3:
        return draw(valid_or_bad_message(subscribe))
    if shape <= 6:
        base = draw(valid_or_bad_message(subscribe))
        how = draw(st.integers(0, 5))
        mutated, what = _mutate(
            base.data, how, draw(st.integers(0, 1000)), draw(st.binary(min_size=4, max_size=4))
        )
        # A bundle wrapper may leave a valid datagram only for size len+4? never: it
        # points past the end. Every mutation above is certainly malformed.
        return Case(mutated, "error", None, f"{base.what}: {what}")
    if shape <= 8:
        # An immediate bundle: all or nothing.
        parts = draw(st.lists(valid_or_bad_message(subscribe), min_size=1, max_size=6))
        parts = [p for p in parts if p.verdict != "any"] or [
            _message_case("/ch/1/pan", [0.0], True)
        ]
        verdict = "ok" if all(p.verdict == "ok" for p in parts) else "error"
        if sum(p.what.startswith("/transport/") for p in parts) > 16:
            verdict = "error"
        return Case(encode_bundle([p.data for p in parts]), verdict, None, "bundle")
    # Stress: many messages, far-future and big bundles.
    kind = draw(st.integers(0, 3))
    if kind == 0:
        n = draw(st.integers(129, 400))
        return Case(encode_bundle([encode_message("/state")] * n), "error", None, "many /state")
    if kind == 1:
        return Case(
            encode_bundle([encode_message("/ch/1/fader", [0.5])], 0xFFFFFFF000000000),
            "error",
            None,
            "bundle for 2036",
        )
    if kind == 2:
        n = draw(st.integers(2, 128))
        gain = draw(st.floats(0.0, 3.0, width=32))
        return Case(
            encode_bundle([encode_message("/ch/*/gain", [gain])] * n), "ok", None, "gain flood"
        )
    return Case(encode_bundle([encode_message("/state")] * 2), "error", None, "two /state")


__all__ = ["NAMES", "TRACK_SECONDS", "Case", "datagram"]
