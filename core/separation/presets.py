"""Presets shipped in ``presets/`` (read with importlib.resources) or given as files."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ParameterError, PresetError

__all__ = [
    "SeparationParams",
    "check_stft_params",
    "list_presets",
    "load_separation_preset",
    "read_preset_text",
]


def check_stft_params(n_fft: int, hop: int) -> None:
    """Raise ParameterError unless ``hop`` divides ``n_fft`` into 2..16 overlaps."""
    if not isinstance(n_fft, int) or n_fft < 16 or n_fft % 2:
        raise ParameterError(f"n_fft must be an even integer >= 16, got {n_fft!r}")
    if not isinstance(hop, int) or hop < 1 or n_fft % hop or not 2 <= n_fft // hop <= 16:
        raise ParameterError(
            f"hop must divide n_fft={n_fft} into 2 to 16 overlapping frames, got {hop!r}"
        )


@dataclass(frozen=True)
class SeparationParams:
    """Every parameter that changes a separation's result (and so its cache key)."""

    n_fft: int = 2048
    hop: int = 512
    n_components: int = 16
    beta: float = 1.0
    n_iter: int = 150
    tol: float = 1e-4
    fit_frames: int = 3000
    refine_iter: int = 40
    mask_power: float = 1.0
    seed: int = 0
    stems_model: str = "default"
    stems_iter: int = 25

    def __post_init__(self) -> None:
        check_stft_params(self.n_fft, self.hop)
        _require(self.n_components, int, 1, 256, "n_components")
        _require(self.n_iter, int, 1, 100_000, "n_iter")
        _require(self.fit_frames, int, 0, 10_000_000, "fit_frames")
        _require(self.refine_iter, int, 0, 100_000, "refine_iter")
        _require(self.seed, int, 0, 2**63 - 1, "seed")
        _require(self.beta, float, -10.0, 10.0, "beta")
        _require(self.tol, float, 0.0, 1.0, "tol")
        _require(self.mask_power, float, 0.25, 8.0, "mask_power")
        _require(self.stems_iter, int, 1, 100_000, "stems_iter")
        if not isinstance(self.stems_model, str) or not self.stems_model:
            raise ParameterError(f"stems_model must be a model name, got {self.stems_model!r}")

    def with_overrides(self, **changes: Any) -> SeparationParams:
        """A copy with the given fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _require(value: Any, kind: type, lo: float, hi: float, name: str) -> None:
    ok_type = isinstance(value, int | float) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok_type or not (lo <= value <= hi):
        raise ParameterError(f"{name} must be a {kind.__name__} in [{lo}, {hi}], got {value!r}")


def _preset_dir(kind: str) -> Any:
    return resources.files("stemdeck.presets").joinpath(kind)


def list_presets(kind: str = "separation") -> list[str]:
    """Names of the shipped presets of one kind (``separation``, ``midi``, ``scenes``)."""
    folder = _preset_dir(kind)
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_preset_text(kind: str, name_or_path: str) -> tuple[str, str]:
    """Return (source description, TOML text) of a shipped preset name or a file path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        try:
            return str(candidate), candidate.read_text(encoding="utf-8")
        except OSError as exc:
            raise PresetError(
                f"cannot read preset file {str(candidate)!r}: {exc.strerror}"
            ) from None
    resource = _preset_dir(kind).joinpath(f"{name_or_path}.toml")
    if not resource.is_file():
        raise PresetError(
            f"no {kind} preset {name_or_path!r}; shipped: {', '.join(list_presets(kind))}"
        )
    return f"{kind}/{name_or_path}.toml", resource.read_text(encoding="utf-8")


def load_separation_preset(name_or_path: str = "default") -> SeparationParams:
    """Separation parameters from a shipped preset name or a TOML file.

    Raises
    ------
    PresetError
        Unknown name, unreadable file, bad TOML, unknown key or bad value.
    """
    source, text = read_preset_text("separation", name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{source}: not valid TOML ({exc})") from None
    data.pop("description", None)
    known = {f.name for f in fields(SeparationParams)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PresetError(
            f"{source}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )
    if isinstance(data.get("beta"), int):
        data["beta"] = float(data["beta"])
    if isinstance(data.get("mask_power"), int):
        data["mask_power"] = float(data["mask_power"])
    try:
        return SeparationParams(**data)
    except ParameterError as exc:
        raise PresetError(f"{source}: {exc}") from None
