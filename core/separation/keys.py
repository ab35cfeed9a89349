"""Cache keys of separations: what a separation's entry is filed under.

A key hashes the decoded track at its own rate and everything that changes its
separation: every parameter, the mode, the stems model's digest in stems mode,
and the cache's ``FORMAT_VERSION``. ``tests/core/separation/test_cache_keys.py`` pins the keys of
the shipped presets, so no change turns a prepared library cold unnoticed.
``stemdeck prep`` and the daemon take keys without separating anything.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..audiofile.samples import validate_audio
from ..errors import ParameterError
from .cache import FORMAT_VERSION, cache_key
from .presets import SeparationParams
from .stems import load_stem_model

__all__ = ["described_settings", "key_of_validated", "separation_key", "settings_digest"]


def described_settings(params: SeparationParams, mode: str) -> dict[str, object]:
    """Everything but the audio that a key hashes: the parameters as requested, the
    mode, and in stems mode the model's digest.

    Raises
    ------
    ParameterError
        ``mode`` is neither 'stems' nor 'components'.
    PresetError
        The stems model cannot be loaded.
    """
    if mode not in ("stems", "components"):
        raise ParameterError(f"unknown separation mode {mode!r}; use 'stems' or 'components'")
    described: dict[str, object] = {**params.as_dict(), "mode": mode}
    if mode == "stems":
        described["model"] = load_stem_model(params.stems_model).digest
    return described


def key_of_validated(y: np.ndarray, sr: int, params: SeparationParams, mode: str) -> str:
    """:func:`separation_key` of a track already checked by
    :func:`~stemdeck.core.audiofile.samples.validate_audio` (not checked again)."""
    return cache_key(y, sr, described_settings(params, mode))


def settings_digest(params: SeparationParams | None = None, *, mode: str = "stems") -> str:
    """Hex digest of everything but the audio that goes into :func:`separation_key`:
    two keys of the same audio are equal exactly when these digests are.

    Raises
    ------
    ParameterError
        ``mode`` is neither 'stems' nor 'components'.
    """
    described = {
        "format": FORMAT_VERSION,
        "params": described_settings(params or SeparationParams(), mode),
    }
    text = json.dumps(described, sort_keys=True).encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def separation_key(
    y: np.ndarray, sr: int, *, params: SeparationParams | None = None, mode: str = "stems"
) -> str:
    """The cache key :func:`~stemdeck.core.separation.separate.separate` files the
    separation of ``y`` under.

    ``y`` is the track at its own rate ``sr`` (as decoded from its file), so a
    track is found in the cache whatever rate it is played at.

    Raises
    ------
    AudioFileError
        Empty signal or NaN/inf samples.
    ParameterError
        Unknown mode.
    """
    y = validate_audio(y, name="track")
    return key_of_validated(y, sr, params or SeparationParams(), mode)
