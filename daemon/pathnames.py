"""File names as OSC and the web list them: lossless text for names that are not UTF-8.

A file name on Linux is bytes. Python reads one that is not UTF-8 (``caf\\xe9 live.wav``
in Latin-1, copied from an old disk or a zip) as a string holding lone surrogates
(``'caf\\udce9 live.wav'``), which no UTF-8 encoder takes: OSC strings and JSON must
carry text. :func:`listed` writes such a name the way bash's ``$'...'`` does, and
:func:`unlisted` reads it back, so ``/track/list`` can show every file and
``/track/load`` can open it (``docs/osc.md``, "File names"):

- a name that is UTF-8, holds no escape sequence (below) and no control or format
  character is listed as it is: every ordinary name is unchanged;
- any other name is escaped: each byte that is not part of a UTF-8 character, and
  each byte of a control or format character (a newline, an escape, a right-to-left
  override: what would forge a log line or garble a display), becomes ``\\xNN`` (two
  lowercase hex digits), and each backslash becomes ``\\\\``.

An escape sequence is a backslash followed by a backslash, or by ``x`` and two
lowercase hex digits. So a listed name holds an escape sequence exactly when it was
escaped, and escaping is one-to-one: two files never share a listed name (a file
literally called ``caf\\xe9.wav`` is listed as ``caf\\\\xe9.wav``).

:func:`library_files` lists the audio files of the library folders that way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from stemdeck.core.audiofile.files import AUDIO_SUFFIXES, is_inert

__all__ = ["library_files", "listed", "resolve_listed", "unlisted"]

_ESCAPE = re.compile(r"\\(?:\\|x[0-9a-f]{2})")
_SEQUENCE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def listed(path: str) -> str:
    """``path`` as text every encoder takes (see the module docstring)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate no file name can hold
        raw = path.encode("utf-8", "surrogatepass")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not _ESCAPE.search(text) and is_inert(text):
            return text
    escaped = raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    if is_inert(escaped):
        return escaped
    return "".join(c if is_inert(c) else _bytes_escaped(c) for c in escaped)


def _bytes_escaped(c: str) -> str:
    """``c``'s UTF-8 bytes as ``\\xNN`` escape sequences."""
    return "".join(f"\\x{b:02x}" for b in c.encode("utf-8"))


def unlisted(text: str) -> str | None:
    """The file name ``text`` lists (:func:`listed`), or None when ``text`` is no
    escaped name: it holds no escape sequence, or a backslash that starts none."""
    if not _ESCAPE.search(text):
        return None
    raw = text.encode("utf-8", "surrogatepass")
    parts = _SEQUENCE.split(raw)
    # split() alternates text and the captured sequence: text, seq, text, seq, ..., text
    out = bytearray()
    for k, part in enumerate(parts):
        if k % 2:
            out += b"\\" if part == b"\\" else bytes([int(part[1:], 16)])
        elif b"\\" in part:
            return None  # a backslash that starts no sequence: not a listed name
        else:
            out += part
    return os.fsdecode(bytes(out))


def resolve_listed(text: str) -> str:
    """The path a ``/track/load`` request names: the file :func:`unlisted` gives when
    one of that name exists, else ``text`` as it is (a client that sends a name it
    did not take from the list)."""
    name = unlisted(text)
    if name is not None and os.path.lexists(os.path.expanduser(name)):
        return name
    return text


def library_files(roots: Sequence[Path], limit: int) -> list[str]:
    """Every file under the folders ``roots`` with an audio suffix
    (:data:`~stemdeck.core.audiofile.files.AUDIO_SUFFIXES`), hidden files and folders
    left out, sorted folder by folder, at most ``limit``, each as :func:`listed`
    writes it."""
    found: list[str] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if Path(name).suffix.lower() in AUDIO_SUFFIXES and not name.startswith("."):
                    found.append(listed(os.path.join(dirpath, name)))
                    if len(found) >= limit:
                        return found
    return found
