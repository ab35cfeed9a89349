"""What a separation is asked to be, and the cache key its entry is filed under.

A :class:`SeparationSpec` is the request: the mode and the parameters as asked.
Its key hashes the decoded track at its own rate and everything in the request
that changes the separation: every parameter, the mode, the stems model's digest
in stems mode, and the cache's ``FORMAT_VERSION``. What really runs at a rate is
:meth:`SeparationSpec.settings_at`: in stems mode the model's FFT size, hop and
mask exponent replace the requested ones. Keys are taken from the request,
never from those settings (a :class:`~.presets.SeparationParams` has no key), so
every rate finds the same entry. ``tests/core/separation/test_cache_keys.py`` pins the
keys of the shipped presets, so no change turns a prepared library cold unnoticed.
``stemdeck prep`` and the daemon take keys without separating anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..audiofile.roles import stem_layout
from ..audiofile.samples import validate_audio
from ..errors import ParameterError
from .cache import cache_key
from .entry import FORMAT_VERSION
from .presets import SeparationParams
from .stem_model import load_stem_model, stem_model_names

__all__ = ["MODES", "STAGES", "Mode", "SeparationSpec"]

Mode = Literal["stems", "components"]
#: The separation modes: the stems model's four stems, or NMF components.
MODES: tuple[Mode, ...] = ("stems", "components")
#: The stages a separation reports its progress in, and the share of the whole job
#: each takes, for one overall progress figure (the status line's, and the page's:
#: daemon/web/static/mixer.js mirrors these weights).
STAGES = {"stft": 0.05, "nmf": 0.55, "activations": 0.15, "reconstruct": 0.25}


@dataclass(frozen=True)
class SeparationSpec:
    """A separation as requested: its mode and parameters.

    Two fields, both immutable: it pickles in a few hundred bytes (it crosses to
    the separation worker process and to Dask workers). The stems model it names
    is loaded, once per process, only when a key, a digest, the settings or the
    channel names are asked for.

    Parameters
    ----------
    mode : {"stems", "components"}
        ``stems`` (default): four channels ``drums``, ``bass``, ``vocals``,
        ``other`` from the stems model ``params.stems_model``;
        ``components``: ``params.n_components`` NMF components.
    params : SeparationParams
        As requested (default: the ``default`` preset's values).

    Raises
    ------
    ParameterError
        ``mode`` is not one of :data:`MODES`, or ``params`` is not a
        :class:`~.presets.SeparationParams`.
    """

    mode: Mode = "stems"
    params: SeparationParams = field(default_factory=SeparationParams)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ParameterError(
                f"unknown separation mode {self.mode!r}; use 'stems' or 'components'"
            )
        if not isinstance(self.params, SeparationParams):
            raise ParameterError(
                f"separation parameters must be SeparationParams, got {self.params!r}"
            )

    def _described(self) -> dict[str, object]:
        """Everything but the audio that a key hashes: the parameters as requested,
        the mode, and in stems mode the model's digest."""
        described: dict[str, object] = {**self.params.as_dict(), "mode": self.mode}
        if self.mode == "stems":
            described["model"] = load_stem_model(self.params.stems_model).digest
        return described

    @property
    def digest(self) -> str:
        """Hex digest of everything but the audio that goes into :meth:`key`: two
        keys of the same audio are equal exactly when these digests are.

        Raises
        ------
        PresetError
            The stems model cannot be loaded.
        """
        described = {"format": FORMAT_VERSION, "params": self._described()}
        text = json.dumps(described, sort_keys=True).encode()
        return hashlib.blake2b(text, digest_size=16).hexdigest()

    def key(self, y: np.ndarray, sr: int) -> str:
        """The cache key the separation of ``y`` is filed under: one hash of the audio.

        ``y`` is the track at its own rate ``sr`` (as decoded from its file), so a
        track is found in the cache whatever rate it is played at.

        Raises
        ------
        AudioFileError
            Empty signal or NaN/inf samples.
        PresetError
            The stems model cannot be loaded.
        """
        y = validate_audio(y, name="track")
        return cache_key(y, sr, self._described())

    def settings_at(self, sr: int) -> SeparationParams:
        """The parameters a separation at rate ``sr`` really runs with.

        Components mode: the parameters as requested. Stems mode: the model's
        analysis at this rate (FFT size, hop, mask exponent) replaces the
        requested one; ``stems_iter`` and the rest are as requested.
        """
        if self.mode == "components":
            return self.params
        model = load_stem_model(self.params.stems_model)
        n_fft, hop = model.analysis_for(sr)
        return self.params.with_overrides(n_fft=n_fft, hop=hop, mask_power=model.mask_power)

    def channel_names(self) -> list[str]:
        """Names of the channels the separation gives, known before it runs: the
        model's stem names in the order of every source of stems (drums, bass,
        other, vocals: :data:`~stemdeck.core.audiofile.roles.ROLES`), or
        ``component_01`` ... in components mode."""
        if self.mode == "stems":
            names = stem_model_names(self.params.stems_model)
            return stem_layout(names).arrange(names)
        return [f"component_{i + 1:02d}" for i in range(self.params.n_components)]

    def channel_order(self) -> list[int]:
        """For each channel of :meth:`channel_names`, in order, the index of the stem
        (or component group) the separation computes it as: the stems model keeps
        its own order (drums, bass, vocals, other: the last is the remainder), and
        the channels are put in the order of every source where they are written."""
        if self.mode == "stems":
            return list(stem_layout(stem_model_names(self.params.stems_model)).order)
        return list(range(self.params.n_components))
