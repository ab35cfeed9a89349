"""The NI Stems manifest and the stems' names: what a ``stem`` box says and what
stemdeck shows of it.

The ``stem`` box in ``moov/udta`` holds a JSON manifest with the stems' names and
colours and the master's mastering DSP (``docs/stemfiles.md``). Here: the manifest
made (:func:`make_manifest`) and checked against NI's rules
(:func:`manifest_problems`) for writing; read from a file with its size and nesting
bounded (:func:`parse_manifest`), and turned into the names and colours a player
shows (:func:`stem_names`, :func:`display_name`), whatever a hostile or broken
writer put there.
"""

from __future__ import annotations

import colorsys
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AudioFileError, ParameterError

__all__ = [
    "MANIFEST_DEPTH_MAX",
    "MANIFEST_MAX",
    "MANIFEST_VERSION",
    "NAME_MAX",
    "NI_COLOURS",
    "NI_NAMES",
    "NI_STEMS",
    "channel_colours",
    "display_name",
    "make_manifest",
    "manifest_problems",
    "parse_manifest",
    "stem_names",
]

log = logging.getLogger(__name__)

#: The four stems of an NI Stems file, in track order (tracks 2-5), with the
#: colours stemdeck writes (the palette Mixxx also falls back to).
NI_STEMS: tuple[tuple[str, str], ...] = (
    ("drums", "#009E73"),
    ("bass", "#D55E00"),
    ("other", "#CC79A7"),
    ("vocals", "#56B4E9"),
)
#: The names and colours stemdeck writes into a four-stem manifest.
NI_NAMES = tuple(n.capitalize() for n, _ in NI_STEMS)
NI_COLOURS = tuple(c for _, c in NI_STEMS)
_STEM_COLOURS = dict(NI_STEMS)
MANIFEST_VERSION = 1

#: Most characters of a stem's display name (longer ones end in an ellipsis).
NAME_MAX = 64
#: Most bytes, and most levels of nesting, of a ``stem`` box's JSON. NI's manifest is
#: about 600 bytes and 4 levels deep; these leave room for other tools' additions and
#: keep a hostile manifest from exhausting the parser (100,000 nested lists overflowed
#: the stack of Python's JSON decoder).
MANIFEST_MAX = 1 << 20
MANIFEST_DEPTH_MAX = 32

_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}\Z")
# A string, possessive and open-ended so an unterminated one costs one pass, not one per quote.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# C0 and C1 control characters and lone surrogates: what breaks a log line or an encoder.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# The bidirectional controls: invisible, and a right-to-left override reverses what follows.
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# -- the manifest -------------------------------------------------------------------------
def channel_colours(names: Sequence[str], given: Sequence[str] = ()) -> list[str]:
    """``#RRGGBB`` per channel: the track's own (a stem file's manifest), else the NI
    Stems colours (which Mixxx uses too) for stem names, else a ramp from red (the
    lowest component) to violet (the highest)."""
    if len(given) == len(names) and all(isinstance(c, str) for c in given):
        return [str(c) for c in given]
    out = []
    n = len(names)
    for i, name in enumerate(names):
        colour = _STEM_COLOURS.get(name.lower())
        if colour is None:
            hue = (0.0 if n < 2 else i / (n - 1)) * 0.78
            r, g, b = colorsys.hls_to_rgb(hue, 0.55, 0.75)
            colour = f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}"
        out.append(colour)
    return out


def make_manifest(names: Sequence[str], colours: Sequence[str]) -> dict[str, Any]:
    """The JSON manifest of the ``stem`` box, as NI's format defines it.

    The mastering DSP (compressor and limiter on the master when a player mixes
    the stems) is present, as NI's readers expect, and disabled: stemdeck's stems
    add up to the master as they are.
    """
    if len(names) != len(colours):
        raise ParameterError(f"{len(names)} names but {len(colours)} colours")
    return {
        "version": MANIFEST_VERSION,
        "stems": [{"name": n, "color": c} for n, c in zip(names, colours, strict=True)],
        "mastering_dsp": {
            "compressor": {
                "enabled": False,
                "input_gain": 0.5,
                "output_gain": 0.5,
                "threshold": 0,
                "dry_wet": 50,
                "attack": 0.003,
                "release": 0.3,
                "ratio": 3,
                "hp_cutoff": 300,
            },
            "limiter": {"enabled": False, "threshold": 0, "ceiling": -0.35, "release": 0.05},
        },
    }


def manifest_problems(manifest: object, *, n_stems: int | None = None) -> list[str]:
    """What breaks NI's rules (and Mixxx's reader) in a manifest; empty when it is valid.

    NI's format: a JSON object with an integer ``version`` of at least 1, a
    ``stems`` list with one ``{"name", "color"}`` object per stem track, colours
    as ``#RRGGBB``, and ``mastering_dsp`` with a ``compressor`` and a ``limiter``
    each carrying a boolean ``enabled``. Mixxx ignores a file whose version is
    missing or below 1 or whose ``stems`` is not a list of objects.
    """
    if not isinstance(manifest, dict):
        return [f"the manifest is a JSON {type(manifest).__name__}, not an object"]
    problems = []
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append(f"version must be an integer >= 1, got {version!r}")
    stems = manifest.get("stems")
    if not isinstance(stems, list):
        problems.append(f"stems must be a list, got {stems!r}")
    else:
        if n_stems is not None and len(stems) != n_stems:
            problems.append(f"{len(stems)} stems named for {n_stems} stem tracks")
        for i, stem in enumerate(stems, 1):
            if not isinstance(stem, dict):
                problems.append(f"stem {i} is not an object: {stem!r}")
                continue
            name, colour = stem.get("name"), stem.get("color")
            if not isinstance(name, str) or not name.strip():
                problems.append(f"stem {i} has no name: {name!r}")
            if not isinstance(colour, str) or not _COLOUR.match(colour):
                problems.append(f"stem {i} colour must be #RRGGBB, got {colour!r}")
    dsp = manifest.get("mastering_dsp")
    if not isinstance(dsp, dict):
        problems.append(f"mastering_dsp must be an object, got {dsp!r}")
    else:
        for unit in ("compressor", "limiter"):
            part = dsp.get(unit)
            if not isinstance(part, dict) or not isinstance(part.get("enabled"), bool):
                problems.append(f"mastering_dsp.{unit} needs a boolean 'enabled', got {part!r}")
    return problems


def _json_depth(text: bytes) -> int:
    """How deep arrays and objects nest in ``text``, brackets inside strings aside.

    Linear in the length and without recursion, so it is safe on any input; on
    text that is not JSON the figure means nothing (the parser then says why).
    """
    brackets = _JSON_STRING.sub(b'""', text).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return max(0, int(np.cumsum(steps).max()))


def parse_manifest(payload: bytes, *, where: str, path: Path) -> dict[str, Any]:
    """Decode the ``stem`` box of the file at ``path`` (``where``: its name for the
    errors); the parts a player needs must be there and sound.

    Its size and nesting are checked before it is parsed (:data:`MANIFEST_MAX`,
    :data:`MANIFEST_DEPTH_MAX`). A version newer than :data:`MANIFEST_VERSION` is
    read, and said once in the log.

    Raises
    ------
    AudioFileError
        The box is too large or nests too deep, is not JSON, not an object, has
        no version of at least 1, or no ``stems`` list of objects.
    """
    text = payload.rstrip(b"\0")  # some writers end the JSON with a NUL
    if len(text) > MANIFEST_MAX:
        raise AudioFileError(
            f"{where}: broken stem box ({len(text)} bytes of JSON; a manifest has at most "
            f"{MANIFEST_MAX})"
        )
    depth = _json_depth(text)
    if depth > MANIFEST_DEPTH_MAX:
        raise AudioFileError(
            f"{where}: broken stem box (its JSON nests {depth} levels deep; a manifest "
            f"has at most {MANIFEST_DEPTH_MAX})"
        )
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AudioFileError(f"{where}: broken stem box (not JSON: {exc})") from None
    if not isinstance(manifest, dict):
        raise AudioFileError(f"{where}: broken stem box (a JSON {type(manifest).__name__})")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise AudioFileError(f"{where}: broken stem box (version {_short(version)}, expected >= 1)")
    if version > MANIFEST_VERSION:
        _warn_once(
            path,
            "%s: stem manifest version %s is newer than 1; reading it anyway",
            where,
            _short(version),
        )
    stems = manifest.get("stems")
    if not isinstance(stems, list) or not all(isinstance(s, dict) for s in stems):
        raise AudioFileError(f"{where}: broken stem box ('stems' is not a list of objects)")
    return manifest


# What _warn_once said already: (path, size and mtime, message), the latest 256.
_WARNED: OrderedDict[tuple[str, tuple[int, int] | None, str], None] = OrderedDict()
_WARNED_LOCK = threading.Lock()


def _warn_once(path: Path, fmt: str, *args: object) -> None:
    """``log.warning(fmt, *args)``, once for one version (size, mtime) of the file at
    ``path``: a load probes a stem file up to three times (header, limits, decode)."""
    try:
        st = path.stat()
        version: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
    except OSError:
        version = None
    key = (str(path), version, fmt % args)
    with _WARNED_LOCK:
        if key in _WARNED:
            _WARNED.move_to_end(key)
            return
        _WARNED[key] = None
        if len(_WARNED) > 256:
            _WARNED.popitem(last=False)
    log.warning(fmt, *args)


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: a log line stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- names for the mixer (keys and roles: roles.py) -----------------------------------------
def display_name(name: str) -> str:
    """A stem's name as shown: control characters become spaces, a lone surrogate
    U+FFFD, bidirectional controls (U+202E...) are dropped, the ends are stripped,
    and a name longer than :data:`NAME_MAX` characters is cut to that length, its
    last character an ellipsis.

    Empty when nothing printable is left.
    """
    text = _BIDI.sub("", _SURROGATE.sub("\ufffd", _UNPRINTABLE.sub(" ", name))).strip()
    if len(text) > NAME_MAX:
        text = text[: NAME_MAX - 1].rstrip() + "\u2026"
    return text


def stem_names(
    manifest: dict[str, Any] | None, n_stems: int, *, path: Path, where: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names and ``#RRGGBB`` colours of a stem file's ``n_stems`` stems, in track
    order, from its parsed ``manifest`` (:func:`parse_manifest`).

    Without a manifest (MUSDB18) four stems take NI's names, other counts ``stem1``,
    ``stem2``...; both take NI's colours. A stem the manifest leaves unnamed is
    ``stem<n>``, a colour that is not ``#RRGGBB`` NI's; each said once in the log
    for the file at ``path`` (``where``: its name in the message).
    """
    if manifest is None:
        if n_stems == len(NI_STEMS):
            return tuple(n for n, _ in NI_STEMS), tuple(c for _, c in NI_STEMS)
        names = tuple(f"stem{i}" for i in range(1, n_stems + 1))
        return names, tuple(NI_STEMS[i][1] for i in range(n_stems))
    names_l, colours_l = [], []
    for i, stem in enumerate(manifest["stems"]):
        name, colour = stem.get("name"), stem.get("color")
        if isinstance(name, str):
            name = display_name(name)
        if not isinstance(name, str) or not name:
            _warn_once(
                path,
                "%s: stem %d has no name in the manifest; calling it stem%d",
                where,
                i + 1,
                i + 1,
            )
            name = f"stem{i + 1}"
        if not isinstance(colour, str) or not _COLOUR.match(colour):
            _warn_once(
                path, "%s: stem %r has colour %s; using the default", where, name, _short(colour)
            )
            colour = NI_STEMS[i][1]
        names_l.append(name)
        colours_l.append(colour.upper())
    return tuple(names_l), tuple(colours_l)
