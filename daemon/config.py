"""The user's config folder: where MIDI learn saves maps and scenes are saved."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["config_dir"]


def config_dir(kind: str) -> Path:
    """``$STEMDECK_CONFIG/<kind>``, else ``<kind>`` in the platform's user config folder
    (``~/.config/stemdeck/<kind>`` on Linux); read at each call.

    Parameters
    ----------
    kind : str
        The subfolder: ``"scenes"`` or ``"midi"``.
    """
    env = os.environ.get("STEMDECK_CONFIG")
    if env:
        return Path(env).expanduser() / kind
    return Path(platformdirs.user_config_dir("stemdeck")) / kind
