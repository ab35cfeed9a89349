"""One error hierarchy for everything stemdeck reports to a user.

Every message quotes the offending value and says how to fix it; the CLI and
the daemon print ``str(error)`` as one line, never a traceback.
"""

from __future__ import annotations

import copy


class StemdeckError(Exception):
    """Base class of every error stemdeck raises on purpose."""


class AudioFileError(StemdeckError):
    """A track cannot be read: missing, not audio, empty, or with invalid samples."""


class ParameterError(StemdeckError):
    """A parameter (CLI flag, preset value, OSC argument) is out of range or of the wrong type."""


class CacheError(StemdeckError):
    """The separation cache cannot be written or read (full disk, permissions)."""


class PresetError(StemdeckError):
    """A shipped or user preset file cannot be loaded."""


class BeatStoreError(StemdeckError):
    """A beat sidecar is damaged or cannot be read or written, or holds no grid to edit."""


def bare_error(exc: BaseException) -> BaseException:
    """``exc`` stripped of its traceback and chained exceptions, and a copy of it:
    what holds no frame. An error kept to be raised later (a background decode's)
    is kept bare and raised as a bare copy each time: its traceback would hold the
    frames of the code that kept it, and with them what that code holds (a decode
    and its map of a track), in a cycle only a full collection frees (never, for an
    object frozen with the heap at start), and every raise would add its callers'
    frames. ``exc`` itself is stripped too (whatever else holds it, another
    thread's list of errors, holds no frame through it); it is what is returned
    where it cannot be copied (a class that cannot be rebuilt from its args)."""
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    try:
        return copy.copy(exc)
    except Exception:
        return exc
