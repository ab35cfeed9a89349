"""OSC 1.0 on the wire: a strict decoder for what arrives, an encoder for what leaves.

The decoder accepts a datagram only if every byte of it is accounted for: the
size is a multiple of 4, strings end with a NUL and are padded with NULs to a
4-byte boundary, the type tag string starts with ``,`` and names only known
types, each argument fits, nothing follows the last argument, and every bundle
element has a positive size that is a multiple of 4 and fits inside its bundle.
Anything else raises :class:`OscDecodeError` with a reason that names the byte
offset and what is wrong; the server answers it with one ``/error`` and applies
nothing. No loop here can run longer than the datagram is long.

The encoder takes any string: one that UTF-8 cannot hold (a lone surrogate, as
Python reads a file name that is not UTF-8) is sent with each such character
replaced (:func:`text_bytes`). A value it cannot encode at all (an integer beyond
64 bits) raises :class:`OscEncodeError`, which the senders answer with ``/error``.
:func:`message_size` is the size of an encoded message, computed without encoding it.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from stemdeck.core.errors import ParameterError

__all__ = [
    "IMMEDIATELY",
    "MAX_DEPTH",
    "Bundle",
    "Char",
    "Impulse",
    "Message",
    "Midi",
    "OscDecodeError",
    "OscEncodeError",
    "Rgba",
    "TimeTag",
    "decode",
    "encode_bundle",
    "encode_message",
    "groups",
    "message_size",
    "text_bytes",
    "timetag_to_unix",
    "unix_to_timetag",
]

IMMEDIATELY = 1  # the OSC time tag "now"
MAX_DEPTH = 8  # bundles inside bundles, at most
_NTP_EPOCH = 2208988800
_FLOAT32_MAX = 3.4028234663852886e38  # seconds from 1900-01-01 to 1970-01-01


class OscDecodeError(ParameterError):
    """The datagram is not well-formed OSC 1.0 (the message says where and why)."""


class OscEncodeError(ParameterError):
    """A reply holds a value OSC cannot carry (the message says which)."""


@dataclass(frozen=True)
class Char:
    """An OSC ``c`` argument (an ASCII character sent as 32 bits)."""

    value: int


@dataclass(frozen=True)
class Rgba:
    value: int


@dataclass(frozen=True)
class Midi:
    value: bytes


@dataclass(frozen=True)
class TimeTag:
    value: int


class Impulse:
    """The OSC ``I`` (infinitum / impulse) argument."""

    def __repr__(self) -> str:
        return "Impulse"


IMPULSE = Impulse()


@dataclass(frozen=True)
class Message:
    address: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Bundle:
    timetag: int  # raw 64-bit NTP time tag (1 = immediately)
    elements: tuple[Message | Bundle, ...]


def timetag_to_unix(tag: int) -> float:
    return (tag >> 32) - _NTP_EPOCH + (tag & 0xFFFFFFFF) / 2**32


def unix_to_timetag(t: float) -> int:
    """The NTP time tag of a Unix time: :func:`timetag_to_unix`'s inverse, for senders.

    The daemon only reads time tags; this stays beside its inverse so a client (the
    tests' scheduled bundles) builds them with the same arithmetic.
    """
    seconds = math.floor(t)
    frac = round((t - seconds) * 2**32)
    return ((seconds + _NTP_EPOCH) << 32) + min(frac, 0xFFFFFFFF)


# -- decoding ---------------------------------------------------------------------------


def _string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    """An OSC-string at ``pos``: NUL-terminated, NUL-padded to 4 bytes."""
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise OscDecodeError(f"{what} at byte {pos} has no terminating NUL")
    stop = (nul + 4) & ~3
    if stop > end:
        raise OscDecodeError(f"{what} at byte {pos} is not padded to 4 bytes")
    if data[nul:stop].strip(b"\x00"):
        raise OscDecodeError(f"{what} at byte {pos}: padding after the NUL is not zero")
    try:
        text = data[pos:nul].decode("utf-8")
    except UnicodeDecodeError:
        raise OscDecodeError(f"{what} at byte {pos} is not UTF-8") from None
    return text, stop


_FIXED = {"i": 4, "f": 4, "c": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8}
_NO_DATA = {"T": True, "F": False, "N": None, "I": IMPULSE}


def _message(data: bytes, pos: int, end: int) -> Message:
    start = pos
    address, pos = _string(data, pos, end, "address")
    for k, ch in enumerate(address):
        if not "\x21" <= ch <= "\x7e":
            raise OscDecodeError(
                f"address {address!r} has a character that is not printable ASCII at {k}"
            )
    if pos == end:
        return Message(address, ())  # no type tag string: OSC 1.0 reads it as no arguments
    if data[pos] != ord(","):
        raise OscDecodeError(f"type tags at byte {pos} must start with ','")
    tags, pos = _string(data, pos, end, "type tag string")
    args: list[Any] = []
    for k, tag in enumerate(tags[1:], 1):
        if tag in _NO_DATA:
            args.append(_NO_DATA[tag])
            continue
        if tag in ("s", "S"):
            text, pos = _string(data, pos, end, f"string argument {k}")
            args.append(text)
            continue
        size = _FIXED.get(tag)
        if size is None and tag != "b":
            raise OscDecodeError(f"unknown type tag {tag!r} in {tags!r} of {address}")
        if tag == "b":
            if pos + 4 > end:
                raise OscDecodeError(f"blob argument {k} of {address}: size missing at byte {pos}")
            (n,) = struct.unpack_from(">i", data, pos)
            pos += 4
            stop = pos + ((n + 3) & ~3) if n >= 0 else -1
            if n < 0 or stop > end:
                raise OscDecodeError(
                    f"blob argument {k} of {address}: size {n} does not fit in the datagram"
                )
            if data[pos + n : stop].strip(b"\x00"):
                raise OscDecodeError(f"blob argument {k} of {address}: padding is not zero")
            args.append(bytes(data[pos : pos + n]))
            pos = stop
            continue
        assert size is not None
        if pos + size > end:
            raise OscDecodeError(
                f"argument {k} ({tag!r}) of {address} is missing: the datagram ends at byte {end}"
            )
        if tag == "i":
            args.append(struct.unpack_from(">i", data, pos)[0])
        elif tag == "f":
            args.append(struct.unpack_from(">f", data, pos)[0])
        elif tag == "h":
            args.append(struct.unpack_from(">q", data, pos)[0])
        elif tag == "d":
            args.append(struct.unpack_from(">d", data, pos)[0])
        elif tag == "t":
            args.append(TimeTag(struct.unpack_from(">Q", data, pos)[0]))
        elif tag == "c":
            args.append(Char(struct.unpack_from(">I", data, pos)[0]))
        elif tag == "r":
            args.append(Rgba(struct.unpack_from(">I", data, pos)[0]))
        else:  # "m"
            args.append(Midi(bytes(data[pos : pos + 4])))
        pos += size
    if pos != end:
        raise OscDecodeError(
            f"{end - pos} bytes after the last argument of {address} (at byte {pos}; "
            f"message from byte {start})"
        )
    return Message(address, tuple(args))


def _packet(data: bytes, pos: int, end: int, depth: int) -> Message | Bundle:
    if end - pos < 4 or (end - pos) % 4:
        raise OscDecodeError(f"packet at byte {pos} is {end - pos} bytes, not a multiple of 4")
    if data[pos] == ord("/"):
        return _message(data, pos, end)
    if data[pos : pos + 8] != b"#bundle\x00":
        raise OscDecodeError(
            f"packet at byte {pos} is neither a message ('/...') nor a bundle ('#bundle')"
        )
    if depth >= MAX_DEPTH:
        raise OscDecodeError(f"bundles nested deeper than {MAX_DEPTH} (at byte {pos})")
    if end - pos < 16:
        raise OscDecodeError(f"bundle at byte {pos} has no time tag")
    (tag,) = struct.unpack_from(">Q", data, pos + 8)
    pos += 16
    elements: list[Message | Bundle] = []
    while pos < end:
        if end - pos < 4:
            raise OscDecodeError(f"bundle element size at byte {pos} is cut off")
        (size,) = struct.unpack_from(">i", data, pos)
        if size <= 0 or size % 4:
            raise OscDecodeError(
                f"bundle element size {size} at byte {pos} is not a positive multiple of 4"
            )
        if size > end - pos - 4:
            raise OscDecodeError(
                f"bundle element size {size} at byte {pos} is larger than the "
                f"{end - pos - 4} bytes left"
            )
        element = _packet(data, pos + 4, pos + 4 + size, depth + 1)
        if isinstance(element, Bundle) and element.timetag < tag and element.timetag != 1:
            raise OscDecodeError(
                f"bundle at byte {pos + 4} is timed before the bundle that holds it"
            )
        elements.append(element)
        pos += 4 + size
    return Bundle(tag, tuple(elements))


def decode(data: bytes) -> Message | Bundle:
    """One datagram, strictly (see the module docstring).

    Raises
    ------
    OscDecodeError
        Anything malformed; the message says what and where.
    """
    if not data:
        raise OscDecodeError("empty datagram")
    return _packet(data, 0, len(data), 0)


def groups(packet: Message | Bundle) -> list[tuple[int, list[Message]]]:
    """The messages of a packet grouped by the time tag they run at, in order.

    A message alone runs now (``IMMEDIATELY``); a nested bundle tagged
    ``IMMEDIATELY`` runs with the bundle that holds it.
    """
    out: dict[int, list[Message]] = {}

    def walk(p: Message | Bundle, tag: int) -> None:
        if isinstance(p, Message):
            out.setdefault(tag, []).append(p)
            return
        own = tag if p.timetag == IMMEDIATELY else p.timetag
        for e in p.elements:
            walk(e, own)

    walk(packet, IMMEDIATELY)
    return list(out.items())


def iter_messages(packet: Message | Bundle) -> Iterator[Message]:
    if isinstance(packet, Message):
        yield packet
    else:
        for e in packet.elements:
            yield from iter_messages(e)


# -- encoding ---------------------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unpaired(match: re.Match[str]) -> str:
    n = ord(match.group())
    # U+DC80..U+DCFF is how Python holds a byte that was not UTF-8 (surrogateescape):
    # written \xNN, as daemon/pathnames.py lists file names.
    return f"\\x{n - 0xDC00:02x}" if 0xDC80 <= n <= 0xDCFF else "\ufffd"


def text_bytes(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate, which UTF-8 cannot hold, is replaced: a
    byte Python read from a name that is not UTF-8 (U+DC80..U+DCFF) by ``\\xNN``,
    any other by U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_unpaired, text).encode("utf-8")


def _pad(b: bytes) -> bytes:
    return b + b"\x00" * (4 - len(b) % 4)


def _padded(n: int) -> int:
    """Bytes of an OSC-string of ``n`` bytes: NUL-terminated, padded to 4."""
    return (n + 4) & ~3


def _blob(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b + b"\x00" * (-len(b) % 4)


def encode_message(address: str, args: Iterable[Any] = ()) -> bytes:
    """One message: bools as T/F, ints as i (h beyond 32 bits), floats as f (d beyond
    32 bits), bytes as b, None as N, everything else as a string (:func:`text_bytes`).

    Raises
    ------
    OscEncodeError
        An integer beyond 64 bits.
    """
    tags = [","]
    body: list[bytes] = []
    for a in args:
        if isinstance(a, bool):
            tags.append("T" if a else "F")
        elif isinstance(a, int):
            if -(2**31) <= a < 2**31:
                tags.append("i")
                body.append(struct.pack(">i", a))
            elif -(2**63) <= a < 2**63:
                tags.append("h")
                body.append(struct.pack(">q", a))
            else:
                raise OscEncodeError(f"the integer {a} does not fit in 64 bits")
        elif isinstance(a, float):
            if math.isfinite(a) and abs(a) > _FLOAT32_MAX:
                tags.append("d")  # too large for 32 bits
                body.append(struct.pack(">d", a))
            else:
                tags.append("f")
                body.append(struct.pack(">f", a))
        elif isinstance(a, bytes):
            tags.append("b")
            body.append(_blob(a))
        elif a is None:
            tags.append("N")
        else:
            tags.append("s")
            body.append(_pad(text_bytes(str(a))))
    return _pad(text_bytes(address)) + _pad("".join(tags).encode()) + b"".join(body)


def message_size(address: str, args: Sequence[Any]) -> int:
    """Bytes :func:`encode_message` gives for ``address`` and ``args``, without
    building them (an integer it cannot encode counts as 8)."""
    n = _padded(len(text_bytes(address))) + _padded(1 + len(args))
    for a in args:
        if isinstance(a, bool) or a is None:
            continue
        if isinstance(a, int):
            n += 4 if -(2**31) <= a < 2**31 else 8
        elif isinstance(a, float):
            n += 8 if math.isfinite(a) and abs(a) > _FLOAT32_MAX else 4
        elif isinstance(a, bytes):
            n += 4 + len(a) + (-len(a) % 4)
        else:
            n += _padded(len(text_bytes(str(a))))
    return n


def encode_bundle(elements: Sequence[bytes], timetag: int = IMMEDIATELY) -> bytes:
    """A bundle of already encoded elements (messages or bundles)."""
    out = [b"#bundle\x00", struct.pack(">Q", timetag)]
    for e in elements:
        out += [struct.pack(">i", len(e)), e]
    return b"".join(out)
