"""One error hierarchy for everything stemdeck reports to a user.

Every message quotes the offending value and says how to fix it; the CLI and
the daemon print ``str(error)`` as one line, never a traceback.
"""

from __future__ import annotations


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
